//! The reactor nested in tokio (`ipv4_reactor::tokio::run_reactor`, feature
//! `tokio`): a task turns it whenever its epoll descriptor is readable.
//!
//! Network safety: unicast UDP between sockets bound to 127.0.0.1.

#![cfg(feature = "tokio")]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ipv4_reactor::reactor::{from_fn, Reactor};
use ipv4_reactor::{ControlFlags, PacketConn};

const LIMIT: Duration = Duration::from_secs(10);

fn udp() -> PacketConn {
    PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0")
}

/// Sends `n` sequence-numbered datagrams to `dst` (a loopback address) in
/// bursts, pausing so that the receive buffer never overflows.
fn send_from_a_thread(dst: SocketAddrV4, n: u64) -> thread::JoinHandle<()> {
    assert!(dst.ip().is_loopback(), "NETWORK SAFETY: refusing {dst}");
    thread::spawn(move || {
        let tx = udp();
        for seq in 0..n {
            tx.send_to(&seq.to_be_bytes(), None, dst).expect("send_to");
            if seq % 256 == 255 {
                thread::sleep(Duration::from_micros(500));
            }
        }
    })
}

#[test]
fn a_reactor_nested_in_tokio_delivers_every_packet() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = 20_000u64;
    let mut reactor = Reactor::builder().budget(16).build().unwrap();
    let rx = udp();
    rx.set_control_flags(ControlFlags::DROPS).unwrap();
    rx.set_recv_buffer_size(4 << 20).unwrap();
    let dst = rx.local_addr().unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let out_of_order = Arc::new(AtomicU64::new(0));
    let key = {
        let (next, out_of_order) = (Arc::clone(&next), Arc::clone(&out_of_order));
        reactor
            .register(
                rx,
                from_fn(move |p, ctx| {
                    let seq = u64::from_be_bytes(p.payload.try_into().unwrap());
                    let want = next.fetch_add(1, Ordering::Relaxed);
                    if seq != want {
                        out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    if want + 1 == n {
                        ctx.stop();
                    }
                }),
            )
            .unwrap()
    };
    let sender = send_from_a_thread(dst, n);
    rt.block_on(async {
        tokio::time::timeout(LIMIT, ipv4_reactor::tokio::run_reactor(&mut reactor))
            .await
            .expect("the nested reactor did not finish in time")
            .expect("run_reactor");
    });
    sender.join().unwrap();
    assert_eq!(next.load(Ordering::Relaxed), n, "every packet");
    assert_eq!(
        out_of_order.load(Ordering::Relaxed),
        0,
        "in order, none missing"
    );
    let c = reactor.socket_counters(key).unwrap();
    assert_eq!((c.recv.packets, c.recv.kernel_drops), (n, 0), "{c:?}");
}

#[test]
fn a_nested_reactor_answers_handle_calls_and_fires_timers() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut reactor = Reactor::builder().build().unwrap();
    let handle = reactor.handle();
    let firings = Arc::new(AtomicU64::new(0));
    {
        let firings = Arc::clone(&firings);
        reactor
            .add_periodic(Duration::from_millis(2), move |_ctx| {
                firings.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
    }
    // Another thread steers the nested reactor, waits for the timer to
    // fire a few times (its timerfd wakes the task through the reactor's
    // descriptor, with no packet), then stops it.
    let fired = Arc::clone(&firings);
    let steer = thread::spawn(move || {
        let rx = udp();
        let dst = rx.local_addr().unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let s = Arc::clone(&seen);
        let key = handle
            .register(
                rx,
                from_fn(move |_p, _ctx| {
                    s.fetch_add(1, Ordering::Relaxed);
                }),
            )
            .expect("register through the handle while nested");
        let tx = udp();
        for i in 0..10u8 {
            tx.send_to(&[i], None, dst).unwrap();
        }
        let deadline = std::time::Instant::now() + LIMIT;
        while seen.load(Ordering::Relaxed) < 10 && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
        let counters = handle.socket_counters(key).expect("counters while nested");
        while fired.load(Ordering::Relaxed) < 5 && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
        handle.stop();
        (seen.load(Ordering::Relaxed), counters.recv.packets)
    });
    rt.block_on(async {
        tokio::time::timeout(LIMIT, ipv4_reactor::tokio::run_reactor(&mut reactor))
            .await
            .expect("the nested reactor did not stop in time")
            .expect("run_reactor");
    });
    let (seen, counted) = steer.join().unwrap();
    assert_eq!((seen, counted), (10, 10));
    assert!(
        firings.load(Ordering::Relaxed) >= 5,
        "the periodic timer fired {} times",
        firings.load(Ordering::Relaxed)
    );
    // Once it returned, handle calls fail at once, as after `run`.
    let e = reactor.handle().counters().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
}

#[test]
fn run_reactor_outside_a_runtime_is_a_clear_error() {
    let mut reactor = Reactor::builder().build().unwrap();
    // A future polled by hand, with no runtime around it.
    let fut = ipv4_reactor::tokio::run_reactor(&mut reactor);
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(e)) => {
            assert!(e.to_string().contains("outside a tokio runtime"), "{e}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
}
