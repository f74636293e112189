//! The reactor's steady state allocates nothing per packet (callback and
//! channel modes), and nothing it opens outlives it (file descriptors).
//!
//! This binary installs a counting global allocator that counts only on the
//! current thread while a thread-local flag is on. Its tests are serialized
//! with a static mutex: the fd-count test must not see another test's
//! sockets.
//!
//! Network safety: multicast is sent only through `util::lo_sender` and
//! `util::send` (checked), to groups 239.255.152.x on ephemeral ports.

mod util;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::{ChannelSink, Context, Overflow, ReactorPool};
use ipv4_reactor::{ControlFlags, Packet, PacketConn};
use util::{
    asm_group, counted, dst_of, join_within, lo_receiver, lo_sender, send, wait_until, within,
    DEADLINE, SETTLE,
};

#[global_allocator]
static GLOBAL: util::CountingAlloc = util::CountingAlloc;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Serializes the tests of this binary.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Third octet of this file's groups: 239.255.152.x.
const TAG: u8 = 152;
/// Packets that must be delivered while counting.
const MEASURED: u64 = 1000;

fn payload(seq: u64) -> [u8; 64] {
    let mut p = [0xa5u8; 64];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Sends rounds of `per_round` packets (counting off), then calls `turn`
/// (the caller counts around it), until `want` packets were delivered or
/// the deadline passes. `turn` returns the packets it delivered.
fn pump(
    tx: &PacketConn,
    dst: SocketAddrV4,
    first_seq: u64,
    want: u64,
    per_round: u64,
    mut turn: impl FnMut() -> u64,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = first_seq;
    let mut delivered = 0;
    let mut sent = 0;
    while delivered < want {
        assert!(
            Instant::now() < deadline,
            "only {delivered} of {want} packets delivered"
        );
        // Keep at most a few rounds in flight.
        if sent < delivered + 4 * per_round {
            for _ in 0..per_round {
                send(tx, &payload(seq), dst);
                seq += 1;
                sent += 1;
            }
        }
        delivered += turn();
    }
    delivered
}

// ---------------------------------------------------------------------------
// Zero allocations per packet
// ---------------------------------------------------------------------------

/// The allocator counts this thread's allocations inside the window: the
/// zero-allocation tests below can fail.
#[test]
fn the_counting_allocator_counts() {
    util::reactor::each_backend(|| {
        let _serial = serial();
        let (v, a, _) = counted(|| std::hint::black_box(Vec::<u8>::with_capacity(100)));
        assert_eq!(a, 1);
        let (_, _, d) = counted(|| drop(v));
        assert_eq!(d, 1);
        let (_, a, _) = counted(|| std::hint::black_box(1 + 1));
        assert_eq!(a, 0);
    });
}

// ---------------------------------------------------------------------------
// Zero allocations per packet (reactor)
// ---------------------------------------------------------------------------

/// Callback mode: after warm-up, `turn` delivers 1000+ packets to a handler
/// without a single heap allocation.
#[test]
fn callback_mode_allocates_nothing_per_packet() {
    util::reactor::each_backend(|| {
        callback_mode_case(false);
    });
}

/// The same in spin mode, whose turns read the socket without asking epoll
/// (and consult epoll once in a while): idle and busy turns allocate
/// nothing either.
#[test]
fn spin_mode_allocates_nothing_per_packet_or_idle_turn() {
    util::reactor::each_backend(|| {
        callback_mode_case(true);
    });
}

fn callback_mode_case(spin: bool) {
    let _serial = serial();
    let g = asm_group(TAG);
    let rx = lo_receiver(
        g,
        ControlFlags::DST | ControlFlags::DROPS | ControlFlags::SRC,
    );
    let dst = dst_of(g, &rx);
    let mut reactor = util::reactor::builder()
        .spin(spin)
        .build()
        .expect("reactor");
    let count = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let key = {
        let (count, bytes, bad) = (Arc::clone(&count), Arc::clone(&bytes), Arc::clone(&bad));
        reactor
            .register(rx, move |p: &Packet<'_>, _: &mut Context<'_>| {
                count.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                if p.cm.dst != Some(g) || p.src.is_none() {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            })
            .expect("register")
    };
    thread::sleep(SETTLE);
    let tx = lo_sender();

    // Warm-up, not counted.
    let warm = pump(&tx, dst, 0, 200, 50, || {
        reactor.turn(Some(Duration::from_millis(20))).expect("turn") as u64
    });

    let mut allocs = 0;
    let mut deallocs = 0;
    let measured = pump(&tx, dst, 1_000_000, MEASURED, 50, || {
        let (n, a, d) = counted(|| reactor.turn(Some(Duration::ZERO)).expect("turn"));
        allocs += a;
        deallocs += d;
        n as u64
    });
    assert!(measured >= MEASURED);
    // Idle turns too (in spin mode, each reads the socket and finds
    // nothing; one in 64 consults epoll).
    // (Packets still in flight when `pump` stopped are delivered here: with
    // io_uring the kernel runs the receive work when the reactor turns.)
    let (idle, idle_allocs, idle_deallocs) = counted(|| {
        let mut late = 0u64;
        for _ in 0..1000 {
            late += reactor.turn(Some(Duration::ZERO)).expect("turn") as u64;
        }
        late
    });
    assert_eq!(
        (idle_allocs, idle_deallocs),
        (0, 0),
        "heap allocations and frees in 1000 idle turns (spin {spin})"
    );
    assert_eq!(
        allocs, 0,
        "{allocs} heap allocations ({deallocs} frees) while delivering {measured} packets in callback mode (spin {spin})"
    );
    assert_eq!(
        deallocs, 0,
        "{deallocs} frees while delivering {measured} packets"
    );
    assert_eq!(count.load(Ordering::Relaxed), warm + measured + idle);
    assert_eq!(bytes.load(Ordering::Relaxed), 64 * (warm + measured + idle));
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "packets with a wrong dst or no src"
    );
    let c = reactor.socket_counters(key).expect("registered");
    assert_eq!(c.recv.packets, warm + measured + idle);
    assert_eq!(c.recv.kernel_drops, 0);
}

/// Channel mode: after warm-up, `turn` plus a consumer that drains the
/// channel and drops the packets on the same thread (by `try_recv` and by
/// `try_recv_batch`, in turn), both inside the counting window, allocate
/// nothing.
#[test]
fn channel_mode_allocates_nothing_per_packet() {
    util::reactor::each_backend(|| {
        let _serial = serial();
        let g = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::DST | ControlFlags::DROPS);
        let dst = dst_of(g, &rx);
        let mut reactor = util::reactor::builder().build().expect("reactor");
        let (sink, packets) = ChannelSink::bounded(1024, 2048, Overflow::DropNewest).expect("sink");
        let key = reactor.register(rx, sink.clone()).expect("register");
        thread::sleep(SETTLE);
        let tx = lo_sender();

        let mut consumed = 0u64;
        let mut bad = 0u64;
        // Packet by packet, and every other call whole hand-overs.
        let mut calls = 0u64;
        let mut drain = |consumed: &mut u64, bad: &mut u64| {
            calls += 1;
            let mut check = |len: usize, cm: &ipv4_reactor::ControlMessage, k| {
                *consumed += 1;
                if len != 64 || cm.dst != Some(g) || k != key {
                    *bad += 1;
                }
            };
            if calls.is_multiple_of(2) {
                while let Ok(batch) = packets.try_recv_batch() {
                    for p in &batch {
                        check(p.len(), p.cm(), p.key());
                    }
                }
            } else {
                while let Ok(p) = packets.try_recv() {
                    check(p.len(), p.cm(), p.key());
                    drop(p);
                }
            }
        };

        // Warm-up: cycle the buffer pool and the channel, not counted.
        let warm = pump(&tx, dst, 0, 400, 64, || {
            let n = reactor.turn(Some(Duration::from_millis(20))).expect("turn") as u64;
            drain(&mut consumed, &mut bad);
            n
        });
        let pool_before = sink.buffers_allocated();

        let mut allocs = 0;
        let mut deallocs = 0;
        let measured = pump(&tx, dst, 1_000_000, MEASURED, 64, || {
            let (n, a, d) = counted(|| {
                let n = reactor.turn(Some(Duration::ZERO)).expect("turn");
                drain(&mut consumed, &mut bad);
                n
            });
            allocs += a;
            deallocs += d;
            n as u64
        });
        assert!(measured >= MEASURED);
        assert_eq!(
        allocs, 0,
        "{allocs} heap allocations ({deallocs} frees) while delivering and consuming {measured} packets in channel mode"
    );
        assert_eq!(
            deallocs, 0,
            "{deallocs} frees while delivering {measured} packets"
        );
        assert_eq!(consumed, warm + measured);
        assert_eq!(bad, 0, "packets with a wrong length, dst or key");
        assert_eq!(sink.dropped(), 0);
        assert_eq!(sink.buffers_allocated(), pool_before, "the pool grew");
        let c = reactor.socket_counters(key).expect("registered");
        assert_eq!(c.recv.kernel_drops, 0);
        assert_eq!(c.overflow_drops, 0);
    });
}

// ---------------------------------------------------------------------------
// File descriptors
// ---------------------------------------------------------------------------

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Nothing the reactor opens (epoll, waker, sockets) stays open once the
/// reactor, its sockets and its handles are dropped: deregistered sockets,
/// sockets dropped by `ctx.deregister()` and by a panic, a spawned reactor
/// and a pool included.
#[test]
fn no_file_descriptor_outlives_the_reactor() {
    util::reactor::each_backend(|| {
        let _serial = serial();
        let before = open_fds();
        {
            let tx = lo_sender();
            let mut reactor = util::reactor::builder().build().expect("reactor");
            let handle = reactor.handle();
            let count = Arc::new(AtomicU64::new(0));
            let mut dsts = Vec::new();
            let mut keys = Vec::new();
            for _ in 0..4 {
                let g = asm_group(TAG);
                let rx = lo_receiver(g, ControlFlags::DST);
                dsts.push(dst_of(g, &rx));
                let count = Arc::clone(&count);
                keys.push(
                    reactor
                        .register(rx, move |_: &Packet<'_>, ctx: &mut Context<'_>| {
                            count.fetch_add(1, Ordering::SeqCst);
                            if ctx.key().index() % 2 == 1 {
                                ctx.deregister();
                            }
                        })
                        .expect("register"),
                );
            }
            // One socket whose handler panics (dropped by the default policy).
            let gp = asm_group(TAG);
            let rp = lo_receiver(gp, ControlFlags::NONE);
            let dp = dst_of(gp, &rp);
            reactor
                .register(rp, |_: &Packet<'_>, _: &mut Context<'_>| {
                    panic!("deliberate panic in the fd test")
                })
                .expect("register panicking");
            // A channel sink on a unicast socket.
            let (sink, chan) = ChannelSink::bounded(16, 2048, Overflow::DropNewest).expect("sink");
            let ru = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind");
            let du = ru.local_addr().expect("local_addr");
            reactor.register(ru, sink).expect("register sink");
            assert!(open_fds() > before);

            thread::sleep(SETTLE);
            for d in &dsts {
                send(&tx, b"x", *d);
            }
            send(&tx, b"boom", dp);
            send(&tx, b"u", du);
            let deadline = Instant::now() + DEADLINE;
            while (count.load(Ordering::SeqCst) < 4
                || reactor.counters().handler_panics < 1
                || chan.is_empty())
                && Instant::now() < deadline
            {
                reactor.turn(Some(Duration::from_millis(50))).expect("turn");
            }
            assert_eq!(count.load(Ordering::SeqCst), 4);
            assert_eq!(reactor.counters().handler_panics, 1);
            assert_eq!(reactor.take_panics().len(), 1);
            assert_eq!(chan.len(), 1);
            // Two were deregistered by their handlers, one by its panic.
            assert_eq!(reactor.counters().sockets, 3);
            // Deregister one more ourselves and drop it.
            let conn = reactor.deregister(keys[0]).expect("deregister");
            drop(conn);
            drop(chan);
            drop(handle);
            drop(reactor);

            // A spawned reactor and a pool, stopped and joined.
            let (h2, join) = util::reactor::builder().spawn().expect("spawn");
            let g = asm_group(TAG);
            let rx = lo_receiver(g, ControlFlags::NONE);
            let d2 = dst_of(g, &rx);
            let got = Arc::new(AtomicU64::new(0));
            {
                let got = Arc::clone(&got);
                h2.register(rx, move |_: &Packet<'_>, _: &mut Context<'_>| {
                    got.fetch_add(1, Ordering::SeqCst);
                })
                .expect("register on spawned reactor");
            }
            let pool = ReactorPool::spawn(2, util::reactor::builder()).expect("pool");
            let gp2 = asm_group(TAG);
            let rx = lo_receiver(gp2, ControlFlags::NONE);
            let d3 = dst_of(gp2, &rx);
            {
                let got = Arc::clone(&got);
                pool.register(gp2, rx, move |_: &Packet<'_>, _: &mut Context<'_>| {
                    got.fetch_add(1, Ordering::SeqCst);
                })
                .expect("register on pool");
            }
            thread::sleep(SETTLE);
            send(&tx, b"y", d2);
            send(&tx, b"z", d3);
            assert!(wait_until(DEADLINE, || got.load(Ordering::SeqCst) == 2));
            h2.stop();
            join_within(join, DEADLINE, "spawned reactor").expect("run result");
            drop(h2);
            within(DEADLINE, "pool shutdown", move || pool.shutdown()).expect("pool shutdown");
            drop(tx);
        }
        let after = open_fds();
        assert_eq!(
            after, before,
            "file descriptors open before: {before}, after dropping everything: {after}"
        );
    });
}

/// A feed of two redundant lines through one arbiter: after warm-up, the
/// reactor delivers 1000+ packets of each line (every sequence once to the
/// feed handler, each copy dropped) without a heap allocation.
#[test]
fn feed_lines_allocate_nothing_per_packet() {
    util::reactor::each_backend(|| {
        use ipv4_reactor::feed::{Arbiter, Delivery, SeqFormat};
        use ipv4_reactor::reactor::FeedHandler;

        struct Count(Arc<AtomicU64>);
        impl FeedHandler for Count {
            fn on_data(&mut self, _: usize, _: &Packet<'_>, d: Delivery, _: &mut Context<'_>) {
                self.0.fetch_add(d.count, Ordering::Relaxed);
            }
        }

        let _serial = serial();
        let (ga, gb) = (asm_group(TAG), asm_group(TAG));
        let (a, b) = (
            lo_receiver(ga, ControlFlags::DROPS),
            lo_receiver(gb, ControlFlags::DROPS),
        );
        let dsts = [dst_of(ga, &a), dst_of(gb, &b)];
        let mut reactor = util::reactor::builder().build().expect("reactor");
        let delivered = Arc::new(AtomicU64::new(0));
        let arbiter = Arbiter::new(SeqFormat::default(), 2).expect("arbiter");
        let feed = reactor
            .register_feed(vec![a, b], arbiter, Count(Arc::clone(&delivered)))
            .expect("register_feed");
        thread::sleep(SETTLE);
        let tx = lo_sender();

        let mut seq = 0u64;
        let mut run = |packets: u64, count: bool| -> (u64, u64) {
            let start = delivered.load(Ordering::Relaxed);
            let (mut allocs, mut frees) = (0, 0);
            let deadline = Instant::now() + Duration::from_secs(10);
            while delivered.load(Ordering::Relaxed) - start < packets {
                assert!(Instant::now() < deadline, "feed stalled");
                for _ in 0..50 {
                    for dst in dsts {
                        send(&tx, &payload(seq), dst);
                    }
                    seq += 1;
                }
                let mut turn = || reactor.turn(Some(Duration::from_millis(20))).expect("turn");
                if count {
                    let (_, a, d) = counted(turn);
                    allocs += a;
                    frees += d;
                } else {
                    turn();
                }
            }
            (allocs, frees)
        };
        run(200, false);
        let (allocs, frees) = run(MEASURED, true);
        assert_eq!(allocs, 0, "{allocs} allocations delivering feed packets");
        assert_eq!(frees, 0, "{frees} frees delivering feed packets");

        let c = reactor.feed_counters(feed).expect("feed registered");
        assert_eq!(c.total.messages, delivered.load(Ordering::Relaxed));
        assert!(c.total.duplicates > 0, "{c:?}");
        assert_eq!(
            c.lines[0].first + c.lines[1].first,
            c.total.packets - c.total.duplicates
        );
    });
}
