//! A reactor nested in an outer mio `Poll` (issue 15): the outer loop polls
//! the reactor's epoll descriptor and turns it without blocking; every
//! packet is delivered (also with a tiny budget, whose leftovers raise no
//! readiness), a timer alone wakes the outer loop, and handle calls are
//! answered.
//!
//! Network safety: multicast only through
//! `PacketConn::multicast_sender(&Interface::loopback())`, to 239.255.158.x.

mod util;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::{from_fn, Reactor};
use ipv4_reactor::{ControlFlags, Interface, PacketConn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

const REACTOR: Token = Token(7);

struct Outer {
    poll: Poll,
    events: Events,
}

impl Outer {
    fn new(reactor: &Reactor) -> Outer {
        let poll = Poll::new().unwrap();
        assert_eq!(reactor.as_fd().as_raw_fd(), reactor.as_raw_fd());
        poll.registry()
            .register(
                &mut SourceFd(&reactor.as_raw_fd()),
                REACTOR,
                Interest::READABLE,
            )
            .unwrap();
        Outer {
            poll,
            events: Events::with_capacity(8),
        }
    }

    /// One outer iteration; returns whether the reactor's descriptor was
    /// reported readable.
    fn once(&mut self, reactor: &mut Reactor, idle: Duration) -> bool {
        let mut timeout = reactor
            .next_deadline()
            .map(|at| at.saturating_duration_since(Instant::now()))
            .map_or(idle, |t| t.min(idle));
        if reactor.needs_turn() {
            timeout = Duration::ZERO;
        }
        self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        let readable = self.events.iter().any(|e| e.token() == REACTOR);
        reactor.turn(Some(Duration::ZERO)).unwrap();
        readable
    }
}

#[test]
fn a_reactor_nested_in_an_outer_mio_poll_delivers_every_packet() {
    util::reactor::each_backend(|| {
        const PACKETS: u64 = 20_000;
        let group = Ipv4Addr::new(239, 255, 158, 1);
        let rx = PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), Interface::loopback())
            .recv_buffer(16 << 20)
            .control(ControlFlags::DROPS)
            .build()
            .unwrap();
        let dst = SocketAddrV4::new(group, rx.local_addr().unwrap().port());
        // A tiny budget and a small batch: most turns end with the socket left
        // on the ready list, which only needs_turn reports.
        let mut reactor = util::reactor::builder()
            .budget(16)
            .batch_slots(8)
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(vec![false; PACKETS as usize]));
        let dups = Arc::new(Mutex::new(0u64));
        let (s, d) = (Arc::clone(&seen), Arc::clone(&dups));
        let key = reactor
            .register(
                rx,
                from_fn(move |p, _ctx| {
                    let i = u64::from_be_bytes(p.payload[..8].try_into().unwrap()) as usize;
                    let mut s = s.lock().unwrap();
                    if std::mem::replace(&mut s[i], true) {
                        *d.lock().unwrap() += 1;
                    }
                }),
            )
            .unwrap();
        let mut outer = Outer::new(&reactor);

        let sender = thread::spawn(move || {
            let tx = PacketConn::multicast_sender(&Interface::loopback()).unwrap();
            assert_eq!(tx.multicast_interface().unwrap().unwrap().name, "lo");
            thread::sleep(Duration::from_millis(250)); // let the join settle
            for i in 0..PACKETS {
                tx.send_to(&i.to_be_bytes(), None, dst).unwrap();
                if i % 512 == 511 {
                    thread::sleep(Duration::from_micros(300));
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut readable = 0;
        loop {
            let delivered = reactor.socket_counters(key).unwrap().recv.packets;
            if delivered >= PACKETS || Instant::now() > deadline {
                break;
            }
            readable += outer.once(&mut reactor, Duration::from_millis(50)) as usize;
        }
        sender.join().unwrap();
        let c = reactor.socket_counters(key).unwrap();
        assert_eq!(c.recv.kernel_drops, 0, "the kernel dropped packets: {c:?}");
        let missing = seen.lock().unwrap().iter().filter(|&&s| !s).count();
        assert_eq!(missing, 0, "{missing} packets never delivered ({c:?})");
        assert_eq!(*dups.lock().unwrap(), 0);
        assert!(
            readable > 0,
            "the outer poll never saw the reactor readable"
        );
        assert!(
            c.budget_stops > 0,
            "the test meant to exercise budget stops: {c:?}"
        );
    });
}

#[test]
fn a_due_timer_wakes_the_outer_loop_through_the_reactor_descriptor() {
    util::reactor::each_backend(|| {
        let mut reactor = util::reactor::builder().build().unwrap();
        let fired = Arc::new(Mutex::new(None));
        let f = Arc::clone(&fired);
        reactor
            .add_timer(Duration::from_millis(40), move |ctx| {
                *f.lock().unwrap() = Some(ctx.now());
            })
            .unwrap();
        // Arm the timerfd: the reactor arms it on a turn.
        reactor.turn(Some(Duration::ZERO)).unwrap();
        let mut outer = Outer::new(&reactor);
        // The outer loop waits without a deadline of its own: only the
        // reactor's descriptor can wake it before its long timeout.
        let timeout = Duration::from_secs(120);
        let start = Instant::now();
        outer.poll.poll(&mut outer.events, Some(timeout)).unwrap();
        let woke = start.elapsed();
        assert!(
            outer.events.iter().any(|e| e.token() == REACTOR),
            "woke without the reactor's descriptor after {woke:?}"
        );
        assert!(woke < timeout / 4, "woke after {woke:?}");
        reactor.turn(Some(Duration::ZERO)).unwrap();
        assert!(fired.lock().unwrap().is_some(), "the timer did not fire");
    });
}

#[test]
fn handle_calls_are_answered_while_nested() {
    util::reactor::each_backend(|| {
        let mut reactor = util::reactor::builder().build().unwrap();
        let handle = reactor.handle();
        let mut outer = Outer::new(&reactor);
        let caller = thread::spawn(move || handle.counters().map(|c| c.sockets));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !caller.is_finished() && Instant::now() < deadline {
            outer.once(&mut reactor, Duration::from_millis(50));
        }
        assert_eq!(caller.join().unwrap().unwrap(), 0);
    });
}
