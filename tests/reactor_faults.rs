//! The reactor under faults (issue 11): a consumer that stops reading a
//! blocking sink, handle calls that nobody can answer, call closures that
//! panic, sockets whose every receive fails, channel receivers that go away,
//! and absurd sizes. Each test is bounded by a watchdog so that a hang fails
//! the test instead of the suite.
//!
//! Network safety: unicast only, every socket bound to 127.0.0.1 and every
//! destination checked to be a loopback address.

mod util;

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::{ChannelSink, Handle, Key, Overflow, PacketReceiver};
use ipv4_reactor::{Packet, PacketConn};
use util::{send, udp, wait_until, within, DEADLINE};

/// A spawned reactor whose one socket feeds a `bounded(1)` blocking sink
/// that nobody reads: after four packets, one sits in the channel and the
/// reactor waits inside the sink with the next one.
struct Blocked {
    handle: Handle,
    join: Option<thread::JoinHandle<io::Result<()>>>,
    sink: ChannelSink,
    packets: PacketReceiver,
    key: Key,
}

fn blocked_reactor() -> Blocked {
    let rx = udp();
    let dst = rx.local_addr().expect("local_addr");
    let (sink, packets) = ChannelSink::bounded(1, 2048, Overflow::Block).expect("sink");
    let (handle, join) = util::reactor::builder().spawn().expect("spawn reactor");
    let key = handle.register(rx, sink.clone()).expect("register");
    let tx = udp();
    for seq in 0..4u8 {
        send(&tx, &[seq; 8], dst);
    }
    assert!(
        wait_until(DEADLINE, || packets.len() == 1),
        "the first packet never reached the channel"
    );
    // Let the reactor get into the sink's wait with the second packet.
    thread::sleep(Duration::from_millis(100));
    Blocked {
        handle,
        join: Some(join),
        sink,
        packets,
        key,
    }
}

// ---------------------------------------------------------------------------
// 5. Deadlocks
// ---------------------------------------------------------------------------

/// `Handle::stop` ends a reactor that waits inside a full `Overflow::Block`
/// sink; the packet it held is counted as dropped, the one in the channel
/// stays there.
#[test]
fn stop_ends_a_reactor_blocked_in_a_full_block_sink() {
    util::reactor::each_backend(|| {
        let mut b = blocked_reactor();
        b.handle.stop();
        let join = b.join.take().expect("join handle");
        within(
            DEADLINE,
            "run after stop while the sink was full",
            move || join.join().expect("reactor thread panicked"),
        )
        .expect("run result");
        assert_eq!(b.packets.len(), 1, "the packet in the channel stays there");
        let dropped = b.sink.dropped();
        assert!(
            (1..=3).contains(&dropped),
            "the packet the sink held (and any later one of its batch) is counted: {dropped}"
        );
        drop(b.packets);
    });
}

/// A handle call on a reactor that waits in a full blocking sink returns
/// `TimedOut` within its timeout instead of waiting for ever; a call that
/// timed out is withdrawn and never runs, even after the reactor is freed.
#[test]
fn calls_to_a_blocked_reactor_time_out_and_are_withdrawn() {
    util::reactor::each_backend(|| {
        let mut b = blocked_reactor();
        let h = b.handle.clone();
        let err = within(
            ipv4_reactor::reactor::DEFAULT_CALL_TIMEOUT + DEADLINE,
            "Handle::counters on a blocked reactor",
            move || h.counters(),
        )
        .expect_err("counters cannot be answered while the reactor is blocked");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");

        let ran = Arc::new(AtomicBool::new(false));
        let h = b.handle.clone();
        let flag = Arc::clone(&ran);
        let err = within(DEADLINE, "call_timeout on a blocked reactor", move || {
            h.call_timeout(Duration::from_millis(100), move |_| {
                flag.store(true, Ordering::SeqCst)
            })
        })
        .expect_err("call_timeout on a blocked reactor");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");

        // Free the reactor: it delivers the rest and answers again.
        let mut got = 0;
        while got < 4 {
            match b.packets.recv_timeout(DEADLINE) {
                Ok(_) => got += 1,
                Err(e) => panic!("only {got} of 4 packets after the consumer came back: {e}"),
            }
        }
        let c = b
            .handle
            .socket_counters(b.key)
            .expect("counters once freed");
        assert_eq!(c.recv.packets, 4);
        assert_eq!(c.overflow_drops, 0);
        // A few more turns: the withdrawn call must not run.
        for _ in 0..3 {
            b.handle.counters().expect("counters");
        }
        assert!(
            !ran.load(Ordering::SeqCst),
            "a call that returned TimedOut ran later"
        );
        b.handle.stop();
        let join = b.join.take().expect("join");
        within(DEADLINE, "join", move || join.join().expect("no panic")).expect("run result");
    });
}

/// After `run` returned, the reactor is still alive but nobody turns it: a
/// call from another thread and one from the reactor's own thread both fail
/// at once instead of waiting (for ever before the fix).
#[test]
fn calls_after_run_returned_fail_at_once() {
    util::reactor::each_backend(|| {
        within(DEADLINE, "calls after run returned", || {
            let mut reactor = util::reactor::builder().build().expect("reactor");
            let handle = reactor.handle();
            handle.stop();
            reactor.run().expect("run");
            let own = handle.counters().expect_err("own thread, after run");
            assert_ne!(own.kind(), io::ErrorKind::TimedOut, "{own}");
            let h = handle.clone();
            let other = thread::spawn(move || h.counters())
                .join()
                .expect("caller thread")
                .expect_err("other thread, after run");
            assert_ne!(other.kind(), io::ErrorKind::TimedOut, "{other}");
            assert!(other.to_string().contains("stopped"), "{other}");
            // Once reset_stop is called, a call waits for the next run, even
            // one made before run starts turning.
            reactor.reset_stop();
            let h = handle.clone();
            let caller = thread::spawn(move || {
                let r = h.counters();
                h.stop();
                r
            });
            thread::sleep(Duration::from_millis(50));
            reactor.run().expect("second run");
            let c = caller.join().expect("caller").expect("counters during run");
            assert!(c.turns >= 1);
        });
    });
}

/// A call from the reactor's own thread before `run` can never be answered:
/// it fails (after at most the default timeout) instead of hanging.
#[test]
fn call_from_the_reactor_thread_before_run_fails() {
    util::reactor::each_backend(|| {
        let err = within(
            ipv4_reactor::reactor::DEFAULT_CALL_TIMEOUT + DEADLINE,
            "a call from the reactor's own thread before run",
            || {
                let reactor = util::reactor::builder().build().expect("reactor");
                let r = reactor.handle().counters();
                drop(reactor);
                r
            },
        )
        .expect_err("nobody can answer");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    });
}

/// While the user drives `turn` on their own thread, calls from another
/// thread are answered (the running state must not refuse them), also
/// between turns.
#[test]
fn calls_are_answered_while_the_user_drives_turn() {
    util::reactor::each_backend(|| {
        within(DEADLINE * 2, "user-driven turns", || {
            let mut reactor = util::reactor::builder().build().expect("reactor");
            let handle = reactor.handle();
            let caller = thread::spawn(move || {
                let mut answered = 0;
                for _ in 0..20 {
                    handle.counters().expect("counters while turned");
                    answered += 1;
                }
                handle.stop();
                answered
            });
            while !reactor.is_stopped() {
                reactor.turn(Some(Duration::from_millis(5))).expect("turn");
                // Time between turns, as a user loop has.
                thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(caller.join().expect("caller"), 20);
        });
    });
}

/// A call closure that panics is caught like a handler: the caller gets an
/// error with the message, the panic is counted, and the reactor goes on.
#[test]
fn panicking_call_closure_is_caught() {
    util::reactor::each_backend(|| {
        let (handle, join) = util::reactor::builder().spawn().expect("spawn");
        let h = handle.clone();
        let err = within(DEADLINE, "a panicking call", move || {
            h.call(|_| -> u32 { panic!("deliberate panic in a call") })
        })
        .expect_err("a panicking call returns an error");
        assert!(
            err.to_string().contains("deliberate panic in a call"),
            "{err}"
        );
        let h = handle.clone();
        let c = within(DEADLINE, "counters after a panicking call", move || {
            h.counters()
        })
        .expect("the reactor still answers");
        assert_eq!(c.command_panics, 1);
        assert_eq!(c.handler_panics, 0);
        handle.stop();
        within(DEADLINE, "join", move || join.join())
            .expect("the reactor thread did not panic")
            .expect("run result");
    });
}

/// A turn that a panicking call used to unwind left the thread marked as
/// turning, so a later call from that thread was refused as if it came from
/// inside a handler. Now the panic is caught and the turn ends normally;
/// the mark is restored either way.
#[test]
fn turning_mark_does_not_outlive_a_turn() {
    util::reactor::each_backend(|| {
        within(DEADLINE, "turning mark", || {
            let mut reactor = util::reactor::builder().build().expect("reactor");
            let handle = reactor.handle();
            let h = handle.clone();
            let caller = thread::spawn(move || h.call(|_| panic!("deliberate panic in a call")));
            while !caller.is_finished() {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    reactor.turn(Some(Duration::from_millis(5)))
                }));
            }
            assert!(caller.join().expect("caller").is_err());
            // Outside any turn, on the reactor's own thread.
            let err = handle.counters().expect_err("nobody turns the reactor now");
            assert!(
                !err.to_string().contains("inside one of its own handlers"),
                "the thread is still marked as turning: {err}"
            );
        });
    });
}

// ---------------------------------------------------------------------------
// 8. A socket whose every receive fails
// ---------------------------------------------------------------------------

/// An unconnected TCP socket wrapped as a PacketConn fails every receive
/// with `ENOTCONN`. Registered with no traffic, it must not make the reactor
/// spin: over 300 ms of `run` the turns stay few (before the fix, the socket
/// was re-queued with a zero poll timeout on every turn: hundreds of
/// thousands of turns). The errors are counted and a healthy socket beside
/// it is still served.
#[test]
fn socket_that_always_fails_does_not_spin_the_reactor() {
    util::reactor::each_backend(|| {
        let tcp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("tcp socket");
        let bad = PacketConn::from(tcp);
        let good = udp();
        let dst = good.local_addr().expect("local_addr");
        let mut reactor = util::reactor::builder().build().expect("reactor");
        let bad_key = reactor
            .register(
                bad,
                |_: &Packet<'_>, _: &mut ipv4_reactor::reactor::Context<'_>| {},
            )
            .expect("register failing socket");
        let got = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let g = Arc::clone(&got);
        reactor
            .register(
                good,
                move |_: &Packet<'_>, _: &mut ipv4_reactor::reactor::Context<'_>| {
                    g.fetch_add(1, Ordering::SeqCst);
                },
            )
            .expect("register healthy socket");
        let handle = reactor.handle();
        let (turns, errors, got) = within(DEADLINE, "run with a failing socket", move || {
            let stopper = thread::spawn(move || {
                thread::sleep(Duration::from_millis(150));
                send(&udp(), b"still served", dst);
                thread::sleep(Duration::from_millis(150));
                handle.stop();
            });
            reactor.run().expect("run");
            stopper.join().expect("stopper");
            let c = reactor.counters();
            let errors = reactor
                .socket_counters(bad_key)
                .expect("still registered")
                .recv_errors;
            (c.turns, errors, got.load(Ordering::SeqCst))
        });
        assert!(errors >= 1, "the receive errors are counted");
        assert_eq!(got, 1, "the healthy socket is served");
        assert!(
        turns < 1000,
        "{turns} turns in 300 ms with no traffic: the reactor spins on the failing socket ({errors} errors)"
    );
    });
}

// ---------------------------------------------------------------------------
// 9. Channel sinks and pools
// ---------------------------------------------------------------------------

/// Packets that find the receiver gone are counted (`dropped`, with
/// `disconnected_drops` saying why, and the socket's `overflow_drops`), and
/// the socket is deregistered and dropped.
#[test]
fn channel_sink_counts_packets_after_the_receiver_is_gone() {
    util::reactor::each_backend(|| {
        let rx = udp();
        let dst = rx.local_addr().expect("local_addr");
        let (sink, packets) = ChannelSink::bounded(16, 2048, Overflow::DropNewest).expect("sink");
        drop(packets);
        let mut reactor = util::reactor::builder().build().expect("reactor");
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
    });
}

/// The same with a blocking sink.
#[test]
fn blocking_channel_sink_counts_packets_after_the_receiver_is_gone() {
    util::reactor::each_backend(|| {
        let rx = udp();
        let dst = rx.local_addr().expect("local_addr");
        let (sink, packets) = ChannelSink::bounded(16, 2048, Overflow::Block).expect("sink");
        drop(packets);
        let mut reactor = util::reactor::builder().build().expect("reactor");
        reactor.register(rx, sink.clone()).expect("register");
        send(&udp(), b"nobody listens", dst);
        let deadline = Instant::now() + DEADLINE;
        while reactor.counters().sockets > 0 && Instant::now() < deadline {
            reactor.turn(Some(Duration::from_millis(20))).expect("turn");
        }
        assert_eq!(reactor.counters().sockets, 0);
        assert_eq!(sink.disconnected_drops(), 1);
        assert_eq!(sink.dropped(), 1);
    });
}

/// Absurd sink sizes are refused with `InvalidInput` and a message naming
/// the argument, instead of an overflow, a panic or an allocation failure.
#[test]
fn channel_sink_refuses_absurd_sizes() {
    util::reactor::each_backend(|| {
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
    });
}

/// Absurd pool sizes are refused before any thread starts.
#[test]
fn reactor_pool_refuses_absurd_sizes() {
    util::reactor::each_backend(|| {
        use ipv4_reactor::reactor::ReactorPool;
        let err = within(DEADLINE, "ReactorPool::spawn(usize::MAX)", || {
            ReactorPool::spawn(usize::MAX, util::reactor::builder()).map(|_| ())
        })
        .expect_err("a pool of usize::MAX reactors");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let err = within(
            DEADLINE,
            "ReactorPool::spawn pinned past usize::MAX",
            || ReactorPool::spawn(2, util::reactor::builder().pin_to_cpu(usize::MAX)).map(|_| ()),
        )
        .expect_err("CPUs past usize::MAX");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    });
}

/// An absurd readiness-event capacity is refused instead of failing the
/// allocation.
#[test]
fn reactor_refuses_an_absurd_event_capacity() {
    util::reactor::each_backend(|| {
        let err = within(DEADLINE, "events_capacity(usize::MAX)", || {
            util::reactor::builder()
                .events_capacity(usize::MAX)
                .build()
                .map(|_| ())
        })
        .expect_err("usize::MAX events accepted");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("events"), "{err}");
        util::reactor::builder()
            .events_capacity(4096)
            .build()
            .expect("ordinary capacity");
    });
}

#[test]
fn stale_key_after_a_panic_deregistration_names_no_other_socket() {
    util::reactor::each_backend(|| {
        // A handler panics on its first packet: the reactor deregisters its
        // socket (the default policy). The next registration takes the same
        // slot; the old key must not reach it.
        let mut reactor = util::reactor::builder().build().unwrap();
        let doomed = udp();
        let doomed_addr = doomed.local_addr().unwrap();
        let old_key = reactor
            .register(
                doomed,
                |_: &Packet<'_>, _: &mut ipv4_reactor::reactor::Context<'_>| {
                    panic!("this handler fails on purpose")
                },
            )
            .unwrap();
        let tx = udp();
        send(&tx, b"boom", doomed_addr);
        assert!(
            wait_until(DEADLINE, || {
                reactor.turn(Some(Duration::from_millis(10))).unwrap();
                reactor.counters().handler_panics == 1
            }),
            "the handler never panicked"
        );
        assert!(
            reactor.conn(old_key).is_none(),
            "the panicking socket is gone"
        );

        let fresh = udp();
        let fresh_addr = fresh.local_addr().unwrap();
        let new_key = reactor
            .register(
                fresh,
                |_: &Packet<'_>, _: &mut ipv4_reactor::reactor::Context<'_>| {},
            )
            .unwrap();
        assert_eq!(new_key.index(), old_key.index(), "the slot is reused");
        assert_ne!(new_key, old_key);

        // Every call with the stale key fails and leaves the new socket alone.
        assert!(reactor.conn(old_key).is_none());
        assert!(reactor.socket_counters(old_key).is_none());
        let e = reactor
            .set_control_flags(old_key, ipv4_reactor::ControlFlags::TTL)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("not registered"), "{e}");
        let e = reactor.deregister(old_key).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert_eq!(
            reactor.conn(new_key).unwrap().local_addr().unwrap(),
            fresh_addr,
            "the new socket is still registered under its own key"
        );
        assert_eq!(
            reactor.conn(new_key).unwrap().control_flags(),
            ipv4_reactor::ControlFlags::NONE,
            "the stale key changed the new socket's flags"
        );
        // And through a handle from another thread.
        let handle = reactor.handle();
        let caller = thread::spawn(move || handle.socket_counters(old_key));
        let deadline = Instant::now() + DEADLINE;
        while !caller.is_finished() && Instant::now() < deadline {
            reactor.turn(Some(Duration::from_millis(10))).unwrap();
        }
        let e = caller.join().unwrap().unwrap_err();
        assert!(e.to_string().contains("not registered"), "{e}");
    });
}
