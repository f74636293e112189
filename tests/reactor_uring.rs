//! What only the io_uring backend has: running out of provided buffers
//! (`ENOBUFS`) loses nothing and is counted, truncation reported from the
//! buffer's header, the clear error (and the fallback to mio) where
//! io_uring is refused, and one thread per reactor. The rest of the
//! reactor suite runs against both backends (`util::reactor::each_backend`).
//!
//! Network safety: multicast only through `util::lo_sender` and the checked
//! `util::send` (lo, 127.0.0.1), to groups 239.255.158.x on ephemeral
//! ports; unicast only to 127.0.0.1.

mod util;

use std::io;

use ipv4_reactor::reactor::{Backend, Reactor};

/// Without the feature, asking for io_uring by name is a clear error and
/// the fallback runs mio.
#[cfg(not(feature = "io-uring"))]
#[test]
fn without_the_feature_io_uring_is_a_clear_error_and_the_fallback_is_mio() {
    let err = Reactor::builder()
        .backend(Backend::IoUring)
        .build()
        .expect_err("io_uring without the feature");
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    assert!(err.to_string().contains("io-uring"), "{err}");
    let r = Reactor::builder()
        .backend(Backend::IoUringOrMio)
        .build()
        .expect("fallback");
    assert_eq!(r.backend(), Backend::Mio);
    assert!(r.backend_fallback().is_some());
}

#[cfg(feature = "io-uring")]
mod uring {
    use super::*;

    use std::net::SocketAddrV4;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use ipv4_reactor::reactor::Context;
    use ipv4_reactor::{ControlFlags, Error, Interface, Packet, PacketConn};

    use crate::util::reactor::turn_until;
    use crate::util::{asm_group, lo_sender, port_of, send, seq_of, try_send, DEADLINE, SETTLE};

    /// Third octet of this file's groups: 239.255.158.x, x unique per test.
    const TAG: u8 = 158;

    /// A burst far larger than the socket's 4 provided buffers, sent while
    /// the reactor does not turn: the receive runs out of buffers (counted
    /// in `no_buffers`), the rest stays queued in the socket, and every
    /// packet sent is delivered, in order, or counted as a kernel drop.
    #[test]
    fn running_out_of_buffers_loses_nothing_and_is_counted() {
        const BURST: u64 = 2000;
        let g = asm_group(TAG);
        let rx = PacketConn::multicast_receiver(SocketAddrV4::new(g, 0), Interface::loopback())
            .control(ControlFlags::DROPS)
            .recv_buffer(16 << 20)
            .build()
            .expect("receiver");
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let mut reactor = Reactor::builder()
            .backend(Backend::IoUring)
            .uring_buffers(4)
            .budget(16)
            .build()
            .expect("io_uring reactor");
        assert_eq!(reactor.backend(), Backend::IoUring);
        let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let s = Arc::clone(&seen);
        let key = reactor
            .register(rx, move |p: &Packet<'_>, _: &mut Context<'_>| {
                s.lock().unwrap().push(seq_of(p.payload));
            })
            .expect("register");
        // The first turn enables the ring and arms the receive.
        reactor.turn(Some(Duration::ZERO)).expect("turn");
        std::thread::sleep(SETTLE);
        let tx = lo_sender();
        let mut sent = 0;
        for seq in 0..BURST {
            if try_send(&tx, &seq.to_be_bytes(), dst) {
                sent += 1;
            }
        }
        assert!(sent > BURST / 2, "only {sent} of {BURST} sends succeeded");
        // A last packet carries the final drop count (SO_RXQ_OVFL).
        send(&tx, &u64::MAX.to_be_bytes(), dst);
        let done = turn_until(&mut reactor, DEADLINE, |_| {
            seen.lock().unwrap().last() == Some(&u64::MAX)
        });
        assert!(done, "the last packet never arrived");
        let c = reactor.socket_counters(key).expect("registered");
        let seen = seen.lock().unwrap();
        let delivered = seen.len() as u64 - 1;
        assert!(
            c.no_buffers > 0,
            "4 buffers never ran out under a burst of {sent}: {c:?}"
        );
        assert_eq!(
            delivered + c.recv.kernel_drops,
            sent,
            "delivered {delivered} + kernel drops {} != sent {sent}: {c:?}",
            c.recv.kernel_drops
        );
        assert!(
            seen[..seen.len() - 1].windows(2).all(|w| w[0] < w[1]),
            "out of order"
        );
        assert_eq!(c.recv.packets, delivered + 1);
    }

    /// A packet longer than the buffer's payload room is cut and reported
    /// as truncated, per packet and in the counters.
    #[test]
    fn a_long_packet_is_reported_truncated() {
        let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).expect("rx");
        let dst = rx.local_addr().expect("addr");
        let mut reactor = Reactor::builder()
            .backend(Backend::IoUring)
            .payload_size(16)
            .build()
            .expect("io_uring reactor");
        let got: Arc<Mutex<Vec<(usize, bool)>>> = Arc::default();
        let g = Arc::clone(&got);
        let key = reactor
            .register(rx, move |p: &Packet<'_>, _: &mut Context<'_>| {
                g.lock().unwrap().push((p.payload.len(), p.truncated()));
            })
            .expect("register");
        reactor.turn(Some(Duration::ZERO)).expect("turn");
        let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).expect("tx");
        tx.send_to(&[7u8; 100], None, dst).expect("send long");
        tx.send_to(&[8u8; 10], None, dst).expect("send short");
        assert!(turn_until(&mut reactor, DEADLINE, |_| got
            .lock()
            .unwrap()
            .len()
            == 2));
        assert_eq!(*got.lock().unwrap(), vec![(16, true), (10, false)]);
        let c = reactor.socket_counters(key).expect("registered");
        assert_eq!(c.recv.truncated, 1, "{c:?}");
        assert_eq!(c.recv.bytes, 26, "{c:?}");
    }

    /// Where `io_uring_setup` is refused (here by a seccomp filter on this
    /// thread, as container runtimes install), asking for io_uring fails
    /// with the typed error naming it, and `IoUringOrMio` runs mio and
    /// says why.
    #[test]
    fn refused_io_uring_is_a_clear_error_and_the_fallback_is_mio() {
        let (err, fallback) = std::thread::spawn(|| {
            refuse_io_uring_setup_on_this_thread();
            let err = Reactor::builder()
                .backend(Backend::IoUring)
                .build()
                .expect_err("io_uring refused by seccomp");
            let r = Reactor::builder()
                .backend(Backend::IoUringOrMio)
                .build()
                .expect("the fallback builds");
            (err, (r.backend(), r.backend_fallback().map(str::to_string)))
        })
        .join()
        .expect("thread");
        assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
        match Error::of(&err) {
            Some(Error::BackendUnavailable {
                backend, missing, ..
            }) => {
                assert_eq!(*backend, "io_uring");
                assert!(missing.contains("io_uring_setup"), "{missing}");
            }
            other => panic!("not BackendUnavailable: {other:?} ({err})"),
        }
        assert!(err.to_string().contains("Backend::Mio"), "{err}");
        assert_eq!(fallback.0, Backend::Mio);
        let why = fallback.1.expect("the fallback says why");
        assert!(why.contains("io_uring_setup"), "{why}");
    }

    /// The backend serves a reactor from the thread that turned it first:
    /// a turn from another thread is a clear error, not a hang or a crash.
    #[test]
    fn a_turn_from_another_thread_is_a_clear_error() {
        let mut reactor = Reactor::builder()
            .backend(Backend::IoUring)
            .build()
            .expect("io_uring reactor");
        let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).expect("rx");
        let key = reactor
            .register(rx, |_: &Packet<'_>, _: &mut Context<'_>| {})
            .expect("register");
        reactor.turn(Some(Duration::ZERO)).expect("first turn");
        let err = std::thread::spawn(move || {
            // A completion waits: the turn must run the ring's work.
            let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).expect("tx");
            let dst = reactor
                .conn(key)
                .expect("registered")
                .local_addr()
                .expect("addr");
            tx.send_to(b"x", None, dst).expect("send");
            std::thread::sleep(Duration::from_millis(50));
            reactor
                .turn(Some(Duration::ZERO))
                .expect_err("turn elsewhere")
        })
        .join()
        .expect("thread");
        assert!(err.to_string().contains("one thread"), "{err}");
    }

    /// Installs a seccomp filter on the calling thread that fails
    /// `io_uring_setup` with `EPERM` and allows everything else.
    fn refuse_io_uring_setup_on_this_thread() {
        let nr = libc::SYS_io_uring_setup as u32;
        let filter = [
            // A = seccomp_data.nr
            libc::sock_filter {
                code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                jt: 0,
                jf: 0,
                k: 0,
            },
            libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt: 0,
                jf: 1,
                k: nr,
            },
            libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            },
            libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            },
        ];
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: plain prctl calls; `prog` points at `filter`, both alive
        // for the call (the kernel copies the program).
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            assert_eq!(
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog
                ),
                0,
                "seccomp: {}",
                io::Error::last_os_error()
            );
        }
    }
}
