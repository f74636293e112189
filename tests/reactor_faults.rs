//! The reactor under faults (issue 11): a consumer that stops reading a
//! blocking sink, handle calls that nobody can answer, call closures that
//! panic, sockets whose every receive fails, channel receivers that go away,
//! and absurd sizes. Each test is bounded by a watchdog so that a hang fails
//! the test instead of the suite.
//!
//! Network safety: unicast only, every socket bound to 127.0.0.1 and every
//! destination checked to be a loopback address.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::{ChannelSink, Overflow, Reactor};
use ipv4_reactor::PacketConn;

/// Bound for anything that must happen (generous: the VM is noisy).
const DEADLINE: Duration = Duration::from_secs(5);

fn udp() -> PacketConn {
    PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0")
}

fn send(tx: &PacketConn, payload: &[u8], dst: SocketAddrV4) {
    assert!(
        dst.ip().is_loopback(),
        "NETWORK SAFETY: refusing to send to {dst}"
    );
    let n = tx
        .send_to(payload, None, dst)
        .unwrap_or_else(|e| panic!("send_to {dst}: {e}"));
    assert_eq!(n, payload.len(), "short send to {dst}");
}

/// Runs `f` on a thread of its own and returns its result, failing the test
/// if it does not return within `limit` (a hang is a failure, not a stuck
/// suite; the stuck thread is left behind).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("{what}: did not return within {limit:?} (hang)"),
    }
}

// ---------------------------------------------------------------------------
// 9. Channel sinks and pools
// ---------------------------------------------------------------------------

/// Packets that find the receiver gone are counted (`dropped`, with
/// `disconnected_drops` saying why, and the socket's `overflow_drops`), and
/// the socket is deregistered and dropped.
#[test]
fn channel_sink_counts_packets_after_the_receiver_is_gone() {
    let rx = udp();
    let dst = rx.local_addr().expect("local_addr");
    let (sink, packets) = ChannelSink::bounded(16, 2048, Overflow::DropNewest).expect("sink");
    drop(packets);
    let mut reactor = Reactor::builder().build().expect("reactor");
    reactor.register(rx, sink.clone()).expect("register");
    let tx = udp();
    send(&tx, b"nobody listens", dst);
    let deadline = Instant::now() + DEADLINE;
    while reactor.counters().sockets > 0 && Instant::now() < deadline {
        reactor.turn(Some(Duration::from_millis(20))).expect("turn");
    }
    let c = reactor.counters();
    assert_eq!(
        c.sockets, 0,
        "the socket is deregistered once the receiver is gone"
    );
    assert_eq!(c.total.overflow_drops, 1);
    assert_eq!(sink.disconnected_drops(), 1);
    assert_eq!(
        sink.dropped(),
        1,
        "dropped() counts every packet the sink dropped"
    );
}

/// The same with a blocking sink.
#[test]
fn blocking_channel_sink_counts_packets_after_the_receiver_is_gone() {
    let rx = udp();
    let dst = rx.local_addr().expect("local_addr");
    let (sink, packets) = ChannelSink::bounded(16, 2048, Overflow::Block).expect("sink");
    drop(packets);
    let mut reactor = Reactor::builder().build().expect("reactor");
    reactor.register(rx, sink.clone()).expect("register");
    send(&udp(), b"nobody listens", dst);
    let deadline = Instant::now() + DEADLINE;
    while reactor.counters().sockets > 0 && Instant::now() < deadline {
        reactor.turn(Some(Duration::from_millis(20))).expect("turn");
    }
    assert_eq!(reactor.counters().sockets, 0);
    assert_eq!(sink.disconnected_drops(), 1);
    assert_eq!(sink.dropped(), 1);
}

/// Absurd sink sizes are refused with `InvalidInput` and a message naming
/// the argument, instead of an overflow, a panic or an allocation failure.
#[test]
fn channel_sink_refuses_absurd_sizes() {
    for (capacity, payload, what) in [
        (usize::MAX, 2048, "capacity"),
        (usize::MAX - 100, 2048, "capacity"),
        (1 << 40, 2048, "capacity"),
        (1024, usize::MAX, "payload"),
        (1 << 20, 60_000, "bytes"),
    ] {
        let err = within(DEADLINE, "ChannelSink::bounded", move || {
            ChannelSink::bounded(capacity, payload, Overflow::DropNewest).map(|_| ())
        })
        .expect_err("absurd size accepted");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(
            err.to_string().contains(what),
            "{capacity} x {payload}: {err}"
        );
    }
    // Ordinary sizes still work.
    ChannelSink::bounded(65_536, 2048, Overflow::Block).expect("ordinary sink");
}

/// Absurd pool sizes are refused before any thread starts.
#[test]
fn reactor_pool_refuses_absurd_sizes() {
    use ipv4_reactor::reactor::ReactorPool;
    let err = within(DEADLINE, "ReactorPool::spawn(usize::MAX)", || {
        ReactorPool::spawn(usize::MAX, Reactor::builder()).map(|_| ())
    })
    .expect_err("a pool of usize::MAX reactors");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    let err = within(
        DEADLINE,
        "ReactorPool::spawn pinned past usize::MAX",
        || ReactorPool::spawn(2, Reactor::builder().pin_to_cpu(usize::MAX)).map(|_| ()),
    )
    .expect_err("CPUs past usize::MAX");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
}
