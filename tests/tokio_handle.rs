//! Handle calls for async code (feature `tokio`): `*_async` forms awaited
//! without blocking the task's thread, and `try_*` forms that queue a call
//! and return a `PendingCall` at once.
//!
//! Network safety: unicast UDP on 127.0.0.1, multicast joined on lo only.

#![cfg(feature = "tokio")]

mod tokio_util;

use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::{from_fn, Reactor};
use ipv4_reactor::{ControlFlags, Interface};

use tokio_util::{runtime, udp, PATIENCE};

#[test]
fn async_calls_steer_a_reactor_thread() {
    let rt = runtime();
    let (handle, join) = Reactor::builder().spawn().unwrap();
    rt.block_on(async {
        let lo = Interface::loopback();
        let rx = udp();
        let dst = rx.local_addr().unwrap();
        let key = handle.register_async(rx, from_fn(|_, _| {})).await.unwrap();
        handle
            .join_group_async(key, &lo, Ipv4Addr::new(239, 255, 21, 9))
            .await
            .unwrap();
        // Leaving twice is an error, carried back.
        handle
            .leave_group_async(key, &lo, Ipv4Addr::new(239, 255, 21, 9))
            .await
            .unwrap();
        assert!(handle
            .leave_group_async(key, &lo, Ipv4Addr::new(239, 255, 21, 9))
            .await
            .is_err());
        handle
            .set_control_flags_async(key, ControlFlags::TTL)
            .await
            .unwrap();
        assert_eq!(
            handle
                .with_conn_async(key, |c| Ok(c.control_flags()))
                .await
                .unwrap(),
            ControlFlags::TTL
        );

        udp().send_to(b"one", None, dst).unwrap();
        let deadline = Instant::now() + PATIENCE;
        while handle
            .socket_counters_async(key)
            .await
            .unwrap()
            .recv
            .packets
            < 1
        {
            assert!(Instant::now() < deadline, "the packet never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(handle.counters_async().await.unwrap().turns > 0);
        let conn = handle.deregister_async(key).await.unwrap();
        assert_eq!(conn.local_addr().unwrap(), dst);
        let err = handle.deregister_async(key).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    });
    handle.stop();
    join.join().unwrap().unwrap();
}

#[test]
fn try_call_never_blocks_even_on_the_thread_that_turns_the_reactor() {
    // The embedding case: one thread turns the reactor and queues calls.
    let mut reactor = Reactor::builder().build().unwrap();
    let handle = reactor.handle();
    reactor.turn(Some(Duration::ZERO)).unwrap(); // this thread is its home now
    let started = Instant::now();
    let mut pending = handle.try_call(|r| r.counters().turns).unwrap();
    let mut registered = handle.try_register(udp(), from_fn(|_, _| {})).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "try_call waited"
    );
    assert!(pending.try_result().is_none(), "answered before any turn?");
    // The blocking form refuses here (it would wait for itself).
    assert_eq!(
        handle.counters().unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    reactor.turn(Some(Duration::from_millis(10))).unwrap();
    let turns = pending.try_result().expect("answered by the turn").unwrap();
    assert!(turns >= 1);
    let key = registered.try_result().unwrap().unwrap().unwrap();
    assert!(reactor.conn(key).is_some());
    // A result is given once.
    assert_eq!(
        pending.try_result().unwrap().unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn a_dropped_pending_call_is_withdrawn() {
    let mut reactor = Reactor::builder().build().unwrap();
    let handle = reactor.handle();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let pending = handle
        .try_call(move |_| flag.store(true, Ordering::SeqCst))
        .unwrap();
    drop(pending);
    let kept = handle.try_call(|_| 7).unwrap();
    assert!(kept.withdraw(), "not taken yet: withdrawn");
    reactor.turn(Some(Duration::from_millis(10))).unwrap();
    assert!(!ran.load(Ordering::SeqCst), "a dropped call ran");
    drop(kept);
}

#[test]
fn try_call_from_a_handler_runs_on_a_later_turn() {
    let mut reactor = Reactor::builder().build().unwrap();
    let handle = reactor.handle();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let rx = udp();
    let dst = rx.local_addr().unwrap();
    let mut pendings = Vec::new();
    let (tx_p, rx_p) = std::sync::mpsc::channel();
    reactor
        .register(
            rx,
            from_fn(move |_, _| {
                let flag = Arc::clone(&flag);
                // From inside a handler: queued, not waited for.
                let p = handle
                    .try_call(move |r| {
                        flag.store(true, Ordering::SeqCst);
                        r.counters().turns
                    })
                    .unwrap();
                tx_p.send(p).unwrap();
            }),
        )
        .unwrap();
    udp().send_to(b"go", None, dst).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !ran.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the queued call never ran");
        reactor.turn(Some(Duration::from_millis(10))).unwrap();
        pendings.extend(rx_p.try_iter());
    }
    let mut p = pendings.pop().unwrap();
    assert!(p.try_result().unwrap().unwrap() >= 1);
}

#[test]
fn call_async_times_out_on_a_reactor_nothing_turns_and_the_call_never_runs() {
    let mut reactor = Reactor::builder().build().unwrap();
    let handle = reactor
        .handle()
        .with_call_timeout(Duration::from_millis(100));
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let started = Instant::now();
    let err = runtime()
        .block_on(handle.call_async(move |_| flag.store(true, Ordering::SeqCst)))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(started.elapsed() < PATIENCE);
    reactor.turn(Some(Duration::from_millis(10))).unwrap();
    assert!(!ran.load(Ordering::SeqCst), "a timed-out call ran later");
}

#[test]
fn calls_on_a_stopped_reactor_fail_at_once() {
    let (handle, join) = Reactor::builder().spawn().unwrap();
    handle.stop();
    join.join().unwrap().unwrap();
    let err = handle.try_call(|_| ()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
    let err = runtime().block_on(handle.counters_async()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
}

#[test]
fn a_pending_call_whose_reactor_is_dropped_ends_in_an_error() {
    let reactor = Reactor::builder().build().unwrap();
    let handle = reactor.handle();
    let pending = handle.try_call(|_| 1).unwrap();
    drop(reactor);
    let err = runtime()
        .block_on(async { tokio::time::timeout(PATIENCE, pending).await })
        .expect("the end of the reactor ends the wait")
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
}

#[test]
fn a_panicking_call_is_an_error_and_the_reactor_goes_on() {
    let rt = runtime();
    let (handle, join) = Reactor::builder().spawn().unwrap();
    rt.block_on(async {
        let err = handle
            .call_async(|_| -> u32 { panic!("boom in a call") })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("boom in a call"), "{err}");
        assert_eq!(handle.counters_async().await.unwrap().command_panics, 1);
    });
    handle.stop();
    join.join().unwrap().unwrap();
}

#[test]
fn call_async_outside_a_runtime_is_a_clear_error() {
    let reactor = Reactor::builder().build().unwrap();
    let handle = reactor.handle();
    let mut fut = std::pin::pin!(handle.call_async(|_| ()));
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::Other);
            assert!(e.to_string().contains("outside a tokio runtime"), "{e}");
        }
        other => panic!("expected an error at once, got {other:?}"),
    }
    drop(reactor);
}
