//! Reactor timers (issue 15): one-shot, periodic, cancel (from the reactor,
//! a handle and the timer itself), spin mode, lateness bounded loosely
//! (speed is measured by examples/timer_lateness.rs), panics, and no
//! allocation per firing in steady state (a counting allocator, counting
//! only on the reactor's thread while switched on).
//!
//! Network safety: no traffic, except lo multicast in the fairness test of
//! tests/reactor_sources.rs.

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::Reactor;

struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Turns the reactor until `done` or `limit` passes.
fn turn_until(reactor: &mut Reactor, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not done within {limit:?}");
        reactor.turn(Some(Duration::from_millis(100))).unwrap();
    }
}

fn p(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

#[test]
fn a_one_shot_timer_fires_once_at_its_deadline() {
    util::reactor::each_backend(|| {
        let mut reactor = util::reactor::builder().build().unwrap();
        let fired = Arc::new(Mutex::new(Vec::new()));
        let f = Arc::clone(&fired);
        let start = Instant::now();
        let key = reactor
            .add_timer(Duration::from_millis(30), move |ctx| {
                assert!(!ctx.is_periodic());
                f.lock().unwrap().push((ctx.deadline(), ctx.now()));
            })
            .unwrap();
        assert!(reactor.timer_deadline(key).is_some());
        assert_eq!(reactor.next_deadline(), reactor.timer_deadline(key));
        // One blocking turn with a long timeout: the timer's deadline, not the
        // timeout, ends the wait. The bound is far from both (the memory
        // checker runs this with other tests, threads taking turns, slowly).
        let timeout = Duration::from_secs(120);
        reactor.turn(Some(timeout)).unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(30) && waited < timeout / 4,
            "turn returned after {waited:?}"
        );
        let fired = fired.lock().unwrap().clone();
        assert_eq!(fired.len(), 1);
        assert!(fired[0].1 >= fired[0].0, "fired before its deadline");
        // Done: its key is stale, nothing more fires.
        assert_eq!(reactor.timer_deadline(key), None);
        assert!(!reactor.cancel_timer(key));
        reactor.turn(Some(Duration::from_millis(50))).unwrap();
        assert_eq!(reactor.counters().timer_firings, 1);
        assert_eq!(reactor.counters().timers, 0);
    });
}

#[test]
fn cancelled_timers_do_not_fire() {
    util::reactor::each_backend(|| {
        let mut reactor = util::reactor::builder().build().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let (h1, h2, h3) = (Arc::clone(&hits), Arc::clone(&hits), Arc::clone(&hits));
        let one_shot = reactor
            .add_timer(Duration::from_millis(20), move |_| {
                h1.fetch_add(100, Ordering::Relaxed);
            })
            .unwrap();
        let periodic = reactor
            .add_periodic(Duration::from_millis(5), move |_| {
                h2.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        // A periodic timer that cancels itself on its third firing.
        let mut n = 0;
        let self_cancel = reactor
            .add_periodic(Duration::from_millis(2), move |ctx| {
                n += 1;
                h3.fetch_add(1_000, Ordering::Relaxed);
                if n == 3 {
                    ctx.cancel();
                }
            })
            .unwrap();
        assert!(reactor.cancel_timer(one_shot));
        assert!(!reactor.cancel_timer(one_shot), "cancelling twice says so");
        let start = Instant::now();
        turn_until(&mut reactor, Duration::from_secs(5), || {
            hits.load(Ordering::Relaxed) % 1_000 >= 4
        });
        assert!(reactor.cancel_timer(periodic));
        let at_cancel = hits.load(Ordering::Relaxed);
        while start.elapsed() < Duration::from_millis(100) {
            reactor.turn(Some(Duration::from_millis(10))).unwrap();
        }
        let now = hits.load(Ordering::Relaxed);
        assert_eq!(now, at_cancel, "a cancelled timer fired");
        assert_eq!(now / 1_000, 3, "the self-cancelling timer fired 3 times");
        assert_eq!(now % 1_000 / 100, 0, "the cancelled one-shot fired");
        assert!(reactor.timer_deadline(self_cancel).is_none());
        assert_eq!(reactor.counters().timers, 0);
        assert_eq!(reactor.next_deadline(), None);
    });
}

#[test]
fn timers_through_a_handle_are_cancellable() {
    util::reactor::each_backend(|| {
        let (handle, join) = util::reactor::builder().spawn().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let h = Arc::clone(&hits);
        let key = handle
            .add_periodic(Duration::from_millis(2), move |_| {
                h.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        let h = Arc::clone(&hits);
        let late = handle
            .add_timer(Duration::from_secs(60), move |_| {
                h.fetch_add(1_000_000, Ordering::Relaxed);
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while hits.load(Ordering::Relaxed) < 5 {
            assert!(Instant::now() < deadline, "periodic timer did not fire");
            thread::sleep(Duration::from_millis(2));
        }
        assert!(handle.cancel_timer(key).unwrap());
        assert!(handle.cancel_timer(late).unwrap());
        assert!(!handle.cancel_timer(key).unwrap());
        let after = hits.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(30));
        assert_eq!(hits.load(Ordering::Relaxed), after);
        let err = handle
            .add_periodic(Duration::ZERO, |_| {})
            .expect_err("a zero period");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        handle.stop();
        join.join().unwrap().unwrap();
    });
}

fn periodic_lateness(spin: bool) -> Vec<Duration> {
    let mut reactor = util::reactor::builder().spin(spin).build().unwrap();
    let late = Arc::new(Mutex::new(Vec::with_capacity(200)));
    let l = Arc::clone(&late);
    reactor
        .add_periodic(Duration::from_millis(2), move |ctx| {
            let mut l = l.lock().unwrap();
            l.push(ctx.lateness());
            if l.len() == 100 {
                ctx.stop();
            }
        })
        .unwrap();
    reactor.run().unwrap();
    let mut v = late.lock().unwrap().clone();
    v.sort();
    v
}

#[test]
fn periodic_timer_lateness_is_bounded_loosely_in_epoll_and_spin_mode() {
    util::reactor::each_backend(|| {
        for spin in [false, true] {
            let v = periodic_lateness(spin);
            assert_eq!(v.len(), 100);
            // Loose: a shared VM may stall and the memory checker runs
            // this many times slower; speed goes in the example. A timer
            // that waited for anything but its own deadline would be later.
            assert!(
                p(&v, 0.5) < Duration::from_millis(200),
                "spin={spin}: p50 lateness {:?}",
                p(&v, 0.5)
            );
        }
    });
}

#[test]
fn a_panicking_timer_is_caught_and_removed() {
    util::reactor::each_backend(|| {
        let mut reactor = util::reactor::builder().build().unwrap();
        let key = reactor
            .add_periodic(Duration::from_millis(1), |_| panic!("timer bug"))
            .unwrap();
        for _ in 0..20 {
            reactor.turn(Some(Duration::from_millis(5))).unwrap();
        }
        assert_eq!(reactor.counters().handler_panics, 1);
        assert!(reactor.take_panics()[0].contains("timer bug"));
        assert!(!reactor.cancel_timer(key));
    });
}

#[test]
fn timer_firings_allocate_nothing_in_steady_state() {
    util::reactor::each_backend(|| {
        for spin in [false, true] {
            let mut reactor = util::reactor::builder().spin(spin).build().unwrap();
            let fired = Arc::new(AtomicU64::new(0));
            for period_us in [300u64, 500, 700] {
                let f = Arc::clone(&fired);
                reactor
                    .add_periodic(Duration::from_micros(period_us), move |ctx| {
                        f.fetch_add(1, Ordering::Relaxed);
                        let _ = ctx.lateness();
                    })
                    .unwrap();
            }
            // A one-shot timer far away, and one cancelled: stale heap entries.
            let far = reactor
                .add_timer(Duration::from_secs(3600), |_| {})
                .unwrap();
            let gone = reactor.add_timer(Duration::from_millis(1), |_| {}).unwrap();
            assert!(reactor.cancel_timer(gone));
            // Warm up (the first firings may size things).
            turn_until(&mut reactor, Duration::from_secs(5), || {
                fired.load(Ordering::Relaxed) > 30
            });
            let before = fired.load(Ordering::Relaxed);
            ALLOCATIONS.store(0, Ordering::Relaxed);
            COUNTING.with(|c| c.set(true));
            // 200 firings (about 0.1 s at full speed; the memory checker is
            // many times slower), whatever the time they take.
            let deadline = Instant::now() + Duration::from_secs(60);
            while fired.load(Ordering::Relaxed) - before < 200 && Instant::now() < deadline {
                reactor.turn(Some(Duration::from_millis(10))).unwrap();
            }
            COUNTING.with(|c| c.set(false));
            let firings = fired.load(Ordering::Relaxed) - before;
            let allocs = ALLOCATIONS.load(Ordering::Relaxed);
            assert!(
                firings >= 200,
                "spin={spin}: only {firings} firings in 60 s"
            );
            assert_eq!(
                allocs, 0,
                "spin={spin}: {allocs} allocations over {firings} timer firings"
            );
            assert!(reactor.cancel_timer(far));
        }
    });
}
