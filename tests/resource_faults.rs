//! Resource exhaustion under the reactor (issue 15): a receive buffer
//! overrun while the reactor does not read (kernel drops counted, no panic,
//! delivery resumes) and a full descriptor table (clear errors naming the
//! limit, no panic, recovery once descriptors are freed).
//!
//! The descriptor test runs in a child process (this test binary again,
//! under `ulimit -n`), so that the limit never reaches the other tests.
//!
//! Network safety: unicast only, to 127.0.0.1.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipv4_reactor::reactor::{from_fn, Reactor};
use ipv4_reactor::{ControlFlags, PacketConn};

#[test]
fn an_overrun_receive_buffer_is_counted_and_delivery_resumes() {
    let rx = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
    rx.set_control_flags(ControlFlags::DROPS).unwrap();
    rx.set_recv_buffer_size(4096).unwrap(); // the kernel's minimum, about
    let dst = rx.local_addr().unwrap();
    assert!(dst.ip().is_loopback());
    let mut reactor = Reactor::builder().build().unwrap();
    let (got, drops) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (g, d) = (Arc::clone(&got), Arc::clone(&drops));
    let key = reactor
        .register(
            rx,
            from_fn(move |p, _ctx| {
                g.fetch_add(1, Ordering::Relaxed);
                d.fetch_add(u64::from(p.drops_before), Ordering::Relaxed);
            }),
        )
        .unwrap();
    // The reactor does not turn while 2000 packets of 1 KB arrive: most
    // cannot fit.
    let tx = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
    let payload = [1u8; 1024];
    for _ in 0..2000 {
        tx.send_to(&payload, None, dst).unwrap();
    }
    for _ in 0..5 {
        reactor.turn(Some(Duration::from_millis(20))).unwrap();
    }
    let delivered = got.load(Ordering::Relaxed);
    assert!(delivered > 0 && delivered < 2000, "delivered {delivered}");
    // SO_RXQ_OVFL rides on the packets queued after the drops: they show
    // with the next packets, which are delivered once there is room.
    for _ in 0..3 {
        tx.send_to(b"after", None, dst).unwrap();
    }
    reactor.turn(Some(Duration::from_millis(200))).unwrap();
    assert_eq!(
        got.load(Ordering::Relaxed),
        delivered + 3,
        "delivery resumed"
    );
    let c = reactor.socket_counters(key).unwrap();
    assert!(c.recv.kernel_drops > 0, "drops not counted: {c:?}");
    assert_eq!(
        c.recv.kernel_drops + delivered,
        2000,
        "every packet is delivered or counted as dropped: {c:?}"
    );
    assert_eq!(drops.load(Ordering::Relaxed), c.recv.kernel_drops);
    assert_eq!(c.recv_errors, 0);
    assert_eq!(reactor.counters().handler_panics, 0);
}

const CHILD: &str = "IPV4R_EMFILE_CHILD";

/// Run with a descriptor limit by `a_full_descriptor_table_gives_clear_errors`.
#[test]
fn emfile_child() {
    if std::env::var_os(CHILD).is_none() {
        return; // only as the child
    }
    let conn = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut hog = Vec::new();
    let exhausted = loop {
        match UdpSocket::bind("127.0.0.1:0") {
            Ok(s) => hog.push(s),
            Err(e) => break e,
        }
        assert!(hog.len() < 100_000, "the descriptor limit did not apply");
    };
    assert_eq!(exhausted.raw_os_error(), Some(24), "EMFILE: {exhausted}");

    let err = Reactor::builder().build().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("epoll") && msg.contains("RLIMIT_NOFILE"),
        "unclear: {msg}"
    );
    let err = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap_err();
    assert!(err.to_string().contains("RLIMIT_NOFILE"), "unclear: {err}");

    // Two descriptors free: the reactor (epoll + waker) fits, its timerfd
    // does not; registering a socket needs none.
    hog.truncate(hog.len() - 2);
    let mut reactor = Reactor::builder().build().unwrap();
    let err = reactor
        .add_timer(Duration::from_millis(1), |_| {})
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("timerfd") && msg.contains("RLIMIT_NOFILE"),
        "unclear: {msg}"
    );
    let key = reactor.register(conn, from_fn(|_p, _c| {})).unwrap();
    reactor.turn(Some(Duration::ZERO)).unwrap();

    // Descriptors freed: timers work.
    hog.clear();
    reactor
        .add_timer(Duration::from_millis(1), |ctx| ctx.stop())
        .unwrap();
    reactor.run().unwrap();
    reactor.deregister(key).unwrap();
    let _ = io::stdout().write_all(b"EMFILE-CHILD-OK\n");
}

#[test]
fn a_full_descriptor_table_gives_clear_errors() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 48 && exec "$0" --exact emfile_child --nocapture --test-threads=1"#)
        .arg(&exe)
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(
        text.contains("EMFILE-CHILD-OK"),
        "child did not run:\n{text}"
    );
}
