//! Handler panics: caught, counted and the socket deregistered by default;
//! `PanicPolicy::Stop` ends `run` with the message, and a later run does
//! not report it again.
//!
//! Network safety: multicast only through `util::lo_sender` and the checked
//! `util::send` (lo, 127.0.0.1), to groups 239.255.155.x on ephemeral
//! ports; unicast only to 127.0.0.1.

mod util;

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ipv4_reactor::reactor::{Context, PanicPolicy};
use ipv4_reactor::{ControlFlags, Packet};
use util::reactor::{turn_for, turn_until};
use util::{asm_group, join_within, lo_receiver, lo_sender, port_of, send, DEADLINE, SETTLE};

/// Third octet of this file's groups: 239.255.155.x, x unique per test.
const TAG: u8 = 155;

const PANIC_TEXT: &str = "deliberate handler panic for the reactor test";

/// Default policy: the panic is caught and counted, its message kept, the
/// panicking socket deregistered, and the other socket keeps receiving.
#[test]
fn panicking_handler_is_deregistered_and_others_continue() {
    util::reactor::each_backend(|| {
        let gp = asm_group(TAG);
        let gq = asm_group(TAG);
        let rp = lo_receiver(gp, ControlFlags::NONE);
        let rq = lo_receiver(gq, ControlFlags::NONE);
        let dp = SocketAddrV4::new(gp, port_of(&rp));
        let dq = SocketAddrV4::new(gq, port_of(&rq));

        let mut reactor = util::reactor::builder().build().expect("reactor");
        let kp = reactor
            .register(rp, |_: &Packet<'_>, _: &mut Context<'_>| {
                panic!("{PANIC_TEXT} (default policy)")
            })
            .expect("register panicking");
        let q = Arc::new(AtomicU64::new(0));
        let kq = {
            let q = Arc::clone(&q);
            reactor
                .register(rq, move |_: &Packet<'_>, _: &mut Context<'_>| {
                    q.fetch_add(1, Ordering::SeqCst);
                })
                .expect("register quiet")
        };

        thread::sleep(SETTLE);
        let tx = lo_sender();
        send(&tx, b"boom", dp);
        send(&tx, b"boom again", dp);
        send(&tx, b"q1", dq);
        let done = turn_until(&mut reactor, DEADLINE, |r| {
            r.counters().handler_panics >= 1 && q.load(Ordering::SeqCst) >= 1
        });
        assert!(done, "{:?}", reactor.counters());
        let c = reactor.counters();
        assert_eq!(c.handler_panics, 1);
        assert_eq!(c.sockets, 1);
        assert!(
            reactor.conn(kp).is_none(),
            "the panicking socket is still registered"
        );
        assert!(reactor.conn(kq).is_some());
        let panics = reactor.take_panics();
        assert_eq!(panics.len(), 1, "{panics:?}");
        assert!(
            panics[0].contains(PANIC_TEXT),
            "panic message {:?}",
            panics[0]
        );
        assert!(reactor.take_panics().is_empty(), "take_panics takes");

        for i in 0..5 {
            send(&tx, format!("q{i}").as_bytes(), dq);
        }
        send(&tx, b"boom 3", dp);
        let more = turn_until(&mut reactor, DEADLINE, |_| q.load(Ordering::SeqCst) >= 6);
        assert!(
            more,
            "the other socket stopped receiving ({})",
            q.load(Ordering::SeqCst)
        );
        turn_for(&mut reactor, Duration::from_millis(100));
        assert_eq!(reactor.counters().handler_panics, 1);
        assert!(reactor.take_panics().is_empty());
    });
}

/// `PanicPolicy::Stop`: `run` returns an error carrying the panic message.
#[test]
fn panic_policy_stop_ends_run_with_the_message() {
    util::reactor::each_backend(|| {
        let gp = asm_group(TAG);
        let gq = asm_group(TAG);
        let rp = lo_receiver(gp, ControlFlags::NONE);
        let rq = lo_receiver(gq, ControlFlags::NONE);
        let dp = SocketAddrV4::new(gp, port_of(&rp));

        let mut reactor = util::reactor::builder()
            .on_handler_panic(PanicPolicy::Stop)
            .build()
            .expect("reactor");
        let handle = reactor.handle();
        let kp = reactor
            .register(rp, |_: &Packet<'_>, _: &mut Context<'_>| {
                panic!("{PANIC_TEXT} (stop policy)")
            })
            .expect("register panicking");
        let kq = reactor
            .register(rq, |_: &Packet<'_>, _: &mut Context<'_>| {})
            .expect("register other");
        let run = thread::spawn(move || {
            let r = reactor.run();
            (r, reactor)
        });
        thread::sleep(SETTLE);
        let tx = lo_sender();
        send(&tx, b"boom", dp);
        let (result, mut reactor) = join_within(run, DEADLINE, "run with PanicPolicy::Stop");
        let err = result.expect_err("run must fail after a handler panic with PanicPolicy::Stop");
        assert!(err.to_string().contains(PANIC_TEXT), "error {err}");
        assert_eq!(reactor.counters().handler_panics, 1);
        let panics = reactor.take_panics();
        assert_eq!(panics.len(), 1, "{panics:?}");
        assert!(panics[0].contains(PANIC_TEXT), "{panics:?}");
        assert!(
            reactor.conn(kp).is_none(),
            "the panicking socket stays registered"
        );
        assert!(reactor.conn(kq).is_some(), "the other socket was dropped");
        drop(handle);
    });
}

/// After a `PanicPolicy::Stop` error, `reset_stop` and a new `run` that
/// ends through `Handle::stop` (no new panic) returns Ok, not the old
/// panic again.
#[test]
fn panic_policy_stop_error_is_not_reported_again_by_a_later_run() {
    util::reactor::each_backend(|| {
        let gp = asm_group(TAG);
        let rp = lo_receiver(gp, ControlFlags::NONE);
        let dp = SocketAddrV4::new(gp, port_of(&rp));
        let mut reactor = util::reactor::builder()
            .on_handler_panic(PanicPolicy::Stop)
            .build()
            .expect("reactor");
        let handle = reactor.handle();
        reactor
            .register(rp, |_: &Packet<'_>, _: &mut Context<'_>| {
                panic!("{PANIC_TEXT} (first run)")
            })
            .expect("register panicking");
        // Both runs on one thread (the io_uring backend serves a reactor
        // from the thread that turned it first).
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let (again_tx, again_rx) = std::sync::mpsc::channel::<()>();
        let run = thread::spawn(move || {
            let first = reactor.run();
            let _ = first_tx.send(first);
            let _ = again_rx.recv();
            // Second run: no panic, stopped through the handle.
            reactor.reset_stop();
            let r = reactor.run();
            (r, reactor)
        });
        thread::sleep(SETTLE);
        send(&lo_sender(), b"boom", dp);
        let first = first_rx.recv_timeout(DEADLINE).expect("first run");
        assert!(first.is_err(), "the first run must end with the panic");
        again_tx.send(()).expect("second run");
        thread::sleep(Duration::from_millis(50));
        handle.stop();
        let (second, _reactor) = join_within(run, DEADLINE, "second run");
        assert!(
            second.is_ok(),
            "a run stopped by its handle, with no handler panic, returned {second:?}"
        );
    });
}
