//! Spin mode (issue 16): turns read every registered socket without asking
//! epoll, and consult epoll only once in a while; what epoll brings (foreign
//! sources), what handles bring (commands, registrations, stop), timers,
//! fairness between sockets and several sockets at once must all still
//! work. And the lean `run` of both modes while only sockets are
//! registered.
//!
//! Network safety: multicast only through `util::lo_sender` and
//! `util::send` (checked), to groups 239.255.171.x on ephemeral ports;
//! Unix socketpairs.

mod util;

use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ipv4_reactor::reactor::from_fn;
use ipv4_reactor::ControlFlags;
use mio::net::UnixStream;
use mio::Interest;
use util::{
    asm_group, dst_of, join_within, lo_receiver, lo_sender, send, wait_until, DEADLINE, SETTLE,
};

const TAG: u8 = 171;

/// `n` receivers, each joined on lo to a group of its own, and where to
/// send to each.
fn lo_lines(n: usize) -> (Vec<SocketAddrV4>, Vec<ipv4_reactor::PacketConn>) {
    (0..n)
        .map(|_| {
            let g = asm_group(TAG);
            let rx = lo_receiver(g, ControlFlags::NONE);
            (dst_of(g, &rx), rx)
        })
        .unzip()
}

fn payload(seq: u64) -> [u8; 64] {
    let mut p = [0u8; 64];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Three sockets on one spinning reactor: each gets its packets, in order,
/// and a flooded socket with a small budget leaves room for the others
/// (budget stops counted).
#[test]
fn every_socket_is_read_in_order_and_the_budget_still_holds() {
    util::reactor::each_backend(|| {
        let mut reactor = util::reactor::builder()
            .spin(true)
            .budget(8)
            .build()
            .unwrap();
        let mut dsts = Vec::new();
        let mut keys = Vec::new();
        let seen: Vec<Arc<Mutex<Vec<u64>>>> = (0..3).map(|_| Arc::default()).collect();
        for s in &seen {
            let g = asm_group(TAG);
            let rx = lo_receiver(g, ControlFlags::NONE);
            dsts.push(dst_of(g, &rx));
            let s = Arc::clone(s);
            keys.push(
                reactor
                    .register(
                        rx,
                        from_fn(move |p, _ctx| {
                            let seq = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                            s.lock().unwrap().push(seq);
                        }),
                    )
                    .unwrap(),
            );
        }
        thread::sleep(SETTLE);
        let tx = lo_sender();
        // Socket 0 gets a burst far past the budget, the others a few.
        for i in 0..200 {
            send(&tx, &payload(i), dsts[0]);
        }
        for i in 0..20 {
            send(&tx, &payload(i), dsts[1]);
            send(&tx, &payload(i), dsts[2]);
        }
        // The first turn reads every socket; socket 0 stops at its budget.
        reactor.turn(Some(Duration::ZERO)).unwrap();
        assert_eq!(
            seen[0].lock().unwrap().len(),
            8,
            "socket 0 read past its budget"
        );
        assert!(
            !seen[1].lock().unwrap().is_empty() && !seen[2].lock().unwrap().is_empty(),
            "the first turn did not read the other sockets"
        );
        let done = wait_until(DEADLINE, || {
            reactor.turn(Some(Duration::ZERO)).unwrap();
            seen[0].lock().unwrap().len() == 200
                && seen[1].lock().unwrap().len() == 20
                && seen[2].lock().unwrap().len() == 20
        });
        let lens: Vec<usize> = seen.iter().map(|s| s.lock().unwrap().len()).collect();
        assert!(done, "delivered {lens:?} of [200, 20, 20]");
        for (i, s) in seen.iter().enumerate() {
            let s = s.lock().unwrap();
            assert!(
                s.windows(2).all(|w| w[1] == w[0] + 1) && s[0] == 0,
                "socket {i} out of order"
            );
        }
        let c = reactor.socket_counters(keys[0]).unwrap();
        assert!(c.budget_stops > 0, "no budget stop counted on socket 0");
        // Idle turns keep every socket registered and readable.
        for _ in 0..200 {
            reactor.turn(Some(Duration::ZERO)).unwrap();
        }
        send(&tx, &payload(20), dsts[2]);
        let done = wait_until(DEADLINE, || {
            reactor.turn(Some(Duration::ZERO)).unwrap();
            seen[2].lock().unwrap().len() == 21
        });
        assert!(done, "a packet after idle turns was not delivered");
    });
}

/// `run` in spin mode with nothing but sockets registered reads them
/// without the rest of a turn; what a drain brings is still carried out as
/// in a full turn (see [`only_sockets_run_settles_every_drain`]).
#[test]
fn a_spinning_run_with_only_sockets_still_settles_every_drain() {
    only_sockets_run_settles_every_drain(true);
}

/// `run` in epoll mode with nothing but sockets registered reads each
/// socket epoll reports at once, without the rest of a turn; what a drain
/// brings is still carried out as in a full turn (see
/// [`only_sockets_run_settles_every_drain`]).
#[test]
fn an_epoll_run_with_only_sockets_still_settles_every_drain() {
    only_sockets_run_settles_every_drain(false);
}

/// A `run` (spin or epoll mode) with nothing but sockets registered: a
/// flooded socket stops at its budget (counted) and gets every packet in
/// order, a handler that deregisters its socket gets no more packets and
/// its socket is gone, a handler that panics loses its socket and the
/// panic is recorded, handle calls are answered meanwhile, and a
/// handler's stop ends `run`.
fn only_sockets_run_settles_every_drain(spin: bool) {
    // The mio backend: the io_uring one always takes full turns.
    let (handle, join) = ipv4_reactor::reactor::Reactor::builder()
        .spin(spin)
        .budget(8)
        .spawn()
        .unwrap();
    let flooded = Arc::new(Mutex::new(Vec::new()));
    let quitter = Arc::new(AtomicU64::new(0));
    let stopper = Arc::new(AtomicU64::new(0));
    let (dsts, receivers) = lo_lines(4);
    thread::sleep(SETTLE);
    let tx = lo_sender();
    // Queued before the socket is registered: far past its budget of 8
    // whatever the speed of the reader.
    for i in 0..200 {
        send(&tx, &payload(i), dsts[0]);
    }
    let mut keys = Vec::new();
    for (role, rx) in receivers.into_iter().enumerate() {
        let (flooded, quitter, stopper) = (
            Arc::clone(&flooded),
            Arc::clone(&quitter),
            Arc::clone(&stopper),
        );
        let key = handle
            .register(
                rx,
                from_fn(move |p, ctx| {
                    let seq = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                    match role {
                        0 => flooded.lock().unwrap().push(seq),
                        1 => {
                            if quitter.fetch_add(1, Ordering::Relaxed) + 1 == 3 {
                                ctx.deregister();
                            }
                        }
                        2 => panic!("the panicking socket's handler"),
                        _ => {
                            stopper.fetch_add(1, Ordering::Relaxed);
                            ctx.stop();
                        }
                    }
                }),
            )
            .unwrap();
        keys.push(key);
    }
    assert!(
        wait_until(DEADLINE, || flooded.lock().unwrap().len() == 200),
        "{} of 200 packets on the flooded socket",
        flooded.lock().unwrap().len()
    );
    assert!(
        flooded
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .all(|(i, &s)| s == i as u64),
        "the flooded socket's packets out of order"
    );
    let key0 = keys[0];
    let stops = handle
        .call(move |r| r.socket_counters(key0).map(|c| c.budget_stops))
        .unwrap();
    assert!(stops > Some(0), "no budget stop counted: {stops:?}");

    // Deregistration from inside the handler, on the third packet.
    for i in 0..3 {
        send(&tx, &payload(i), dsts[1]);
    }
    assert!(wait_until(DEADLINE, || quitter.load(Ordering::Relaxed) == 3));
    let key1 = keys[1];
    assert!(
        wait_until(DEADLINE, || handle
            .call(move |r| r.conn(key1).is_none())
            .unwrap()),
        "the socket whose handler deregistered it is still registered"
    );
    for i in 3..6 {
        send(&tx, &payload(i), dsts[1]);
    }
    // A panic: the socket is dropped, the panic recorded.
    send(&tx, &payload(0), dsts[2]);
    let key2 = keys[2];
    let mut panics = Vec::new();
    assert!(
        wait_until(DEADLINE, || {
            panics.extend(handle.call(|r| r.take_panics()).unwrap());
            !panics.is_empty()
        }),
        "the handler's panic was not recorded"
    );
    assert!(
        panics[0].contains("the panicking socket's handler"),
        "{panics:?}"
    );
    assert!(handle.call(move |r| r.conn(key2).is_none()).unwrap());
    assert_eq!(
        quitter.load(Ordering::Relaxed),
        3,
        "a deregistered socket's handler got more packets"
    );
    // The handler's stop ends run.
    send(&tx, &payload(0), dsts[3]);
    join_within(join, DEADLINE, "the reactor's thread").unwrap();
    assert_eq!(stopper.load(Ordering::Relaxed), 1);
}

/// A spinning reactor on its own thread: a socket registered through a
/// handle is read, a handle call is answered, a foreign source's readiness
/// (which only epoll reports) reaches its handler, a timer fires, and stop
/// ends `run`.
#[test]
fn handles_sources_and_timers_work_while_spinning() {
    util::reactor::each_backend(|| {
        let (handle, join) = util::reactor::builder().spin(true).spawn().unwrap();
        let g = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::NONE);
        let dst = dst_of(g, &rx);
        let packets = Arc::new(AtomicU64::new(0));
        let p = Arc::clone(&packets);
        handle
            .register(
                rx,
                from_fn(move |_p, _ctx| {
                    p.fetch_add(1, Ordering::Relaxed);
                }),
            )
            .unwrap();

        // A foreign source, registered through a call.
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g2 = Arc::clone(&got);
        handle
            .call(move |r| {
                r.register_source(ours, Interest::READABLE, move |s, _readiness, _ctx| {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        g2.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                })
                .map(|_| ())
            })
            .unwrap()
            .unwrap();

        // A timer, added through a call.
        let fired = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&fired);
        handle
            .call(move |r| {
                r.add_timer(Duration::from_millis(20), move |_ctx| {
                    f.store(true, Ordering::Relaxed);
                })
                .map(|_| ())
            })
            .unwrap()
            .unwrap();

        thread::sleep(SETTLE);
        let tx = lo_sender();
        for i in 0..50 {
            send(&tx, &payload(i), dst);
        }
        theirs.write_all(b"hello").unwrap();

        assert!(
            wait_until(DEADLINE, || packets.load(Ordering::Relaxed) == 50),
            "{} of 50 packets delivered",
            packets.load(Ordering::Relaxed)
        );
        assert!(
            wait_until(DEADLINE, || got.lock().unwrap().as_slice() == b"hello"),
            "the source's handler got {:?}",
            got.lock().unwrap()
        );
        assert!(
            wait_until(DEADLINE, || fired.load(Ordering::Relaxed)),
            "the timer did not fire"
        );
        let turns = handle.call(|r| r.counters().turns).unwrap();
        assert!(turns > 0);
        handle.stop();
        join_within(join, DEADLINE, "the spinning reactor's thread").unwrap();
    });
}

/// Without foreign sources a spinning reactor never asks epoll: its idle
/// turns make no system call but the receives (so a packet never waits
/// behind an `epoll_wait`), and a packet sent after thousands of them is
/// still read. With a foreign source registered, epoll is asked about once
/// in 64 turns.
#[test]
fn spin_mode_asks_epoll_only_for_foreign_sources() {
    util::reactor::each_backend(|| {
        let mut reactor = util::reactor::builder().spin(true).build().unwrap();
        let g = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::NONE);
        let dst = dst_of(g, &rx);
        let got = Arc::new(AtomicU64::new(0));
        let n = Arc::clone(&got);
        reactor
            .register(
                rx,
                from_fn(move |_p, _ctx| {
                    n.fetch_add(1, Ordering::Relaxed);
                }),
            )
            .unwrap();
        // The turn after the registration asks epoll once.
        reactor.turn(Some(Duration::ZERO)).unwrap();
        let polls = reactor.counters().polls;
        for _ in 0..10_000 {
            reactor.turn(Some(Duration::ZERO)).unwrap();
        }
        assert_eq!(
            reactor.counters().polls,
            polls,
            "idle spin turns polled epoll"
        );
        thread::sleep(SETTLE);
        send(&lo_sender(), &payload(1), dst);
        let done = wait_until(DEADLINE, || {
            reactor.turn(Some(Duration::ZERO)).unwrap();
            got.load(Ordering::Relaxed) == 1
        });
        assert!(done, "the packet was not read");
        assert_eq!(reactor.counters().polls, polls, "a read polled epoll");

        // A foreign source: epoll is asked once in 64 turns.
        let (source, _peer) = UnixStream::pair().unwrap();
        reactor
            .register_source(source, Interest::READABLE, |_, _, _| {})
            .unwrap();
        reactor.turn(Some(Duration::ZERO)).unwrap();
        let polls = reactor.counters().polls;
        for _ in 0..6_400 {
            reactor.turn(Some(Duration::ZERO)).unwrap();
        }
        let asked = reactor.counters().polls - polls;
        assert!(
            (99..=101).contains(&asked),
            "{asked} polls in 6400 spin turns with a foreign source"
        );
    });
}

/// A handler's stop in a `run` with only sockets registered (both modes):
/// `run` returns without reading the other socket that became ready with
/// it, and that socket is not forgotten: the next `run` reads it (epoll
/// reports a socket once per arrival, so a socket dropped from the ready
/// list would never be read again). Both arrive while a third socket's
/// handler holds the reactor, so that one wait reports them together.
#[test]
fn a_handlers_stop_leaves_the_other_ready_sockets_for_the_next_run() {
    for spin in [false, true] {
        let mut reactor = ipv4_reactor::reactor::Reactor::builder()
            .spin(spin)
            .build()
            .unwrap();
        let (dsts, receivers) = lo_lines(3);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (holding_tx, holding) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let mut release_rx = Some(release_rx);
        for (line, rx) in receivers.into_iter().enumerate() {
            let seen = Arc::clone(&seen);
            let holding_tx = holding_tx.clone();
            let release_rx = if line == 2 { release_rx.take() } else { None };
            reactor
                .register(
                    rx,
                    from_fn(move |_p, ctx| {
                        if let Some(release) = &release_rx {
                            // The holder: lets the test send, waits until
                            // it has.
                            holding_tx.send(()).unwrap();
                            let _ = release.recv_timeout(DEADLINE);
                        } else {
                            seen.lock().unwrap().push(line);
                            ctx.stop();
                        }
                    }),
                )
                .unwrap();
        }
        let seen_by_runs = Arc::clone(&seen);
        let runs = thread::spawn(move || {
            reactor.run().unwrap();
            let first = seen_by_runs.lock().unwrap().clone();
            reactor.reset_stop();
            reactor.run().unwrap();
            let both = seen_by_runs.lock().unwrap().clone();
            (first, both)
        });
        // The registrations' first turn is over and the reactor waits (or
        // spins) on its sockets alone.
        thread::sleep(SETTLE);
        let tx = lo_sender();
        send(&tx, &payload(0), dsts[2]);
        holding
            .recv_timeout(DEADLINE)
            .expect("the holding handler ran");
        send(&tx, &payload(0), dsts[0]);
        send(&tx, &payload(0), dsts[1]);
        thread::sleep(Duration::from_millis(20));
        release.send(()).unwrap();
        let (first, mut both) = join_within(runs, DEADLINE, "the reactor's two runs");
        assert_eq!(first.len(), 1, "spin {spin}: the first run read {first:?}");
        both.sort_unstable();
        assert_eq!(both, [0, 1], "spin {spin}: the two runs read {both:?}");
    }
}
