//! Handle calls and deregistration: `ctx.deregister()` from a callback,
//! `Handle::deregister` while running (the socket comes back and works),
//! `Handle::join_group` / `leave_group` while traffic flows, `Handle::stop`
//! under load, and a handle call from inside a handler (an error, not a
//! deadlock).
//!
//! Network safety: multicast only through `util::lo_sender` and the checked
//! `util::send` (lo, 127.0.0.1), to groups 239.255.153.x on ephemeral
//! ports; unicast only to 127.0.0.1.

mod util;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use ipv4_reactor::reactor::{Context, Handle};
use ipv4_reactor::{ControlFlags, Interface, Packet, PacketConn};
use util::reactor::{turn_for, turn_until, Flood};
use util::{
    asm_group, join_within, lo_receiver, lo_sender, port_of, send, seq_of, wait_until, DEADLINE,
    SETTLE,
};

/// Third octet of this file's groups: 239.255.153.x, x unique per test.
const TAG: u8 = 153;

/// `ctx.deregister()` after the 5th packet: nothing more is delivered to
/// that handler, the socket is gone and its handler dropped, and the other
/// socket keeps working.
#[test]
fn deregister_from_inside_a_callback() {
    util::reactor::each_backend(|| {
        let g = asm_group(TAG);
        let g_other = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::DST);
        let other = lo_receiver(g_other, ControlFlags::DST);
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let other_dst = SocketAddrV4::new(g_other, port_of(&other));

        let mut reactor = util::reactor::builder().build().expect("reactor");
        let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let key = {
            let seen = Arc::clone(&seen);
            reactor
                .register(rx, move |p: &Packet<'_>, ctx: &mut Context<'_>| {
                    let mut s = seen.lock().unwrap();
                    s.push(seq_of(p.payload));
                    if s.len() == 5 {
                        ctx.deregister();
                    }
                })
                .expect("register")
        };
        let other_seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let ko = {
            let seen = Arc::clone(&other_seen);
            reactor
                .register(other, move |p: &Packet<'_>, _: &mut Context<'_>| {
                    seen.lock().unwrap().push(seq_of(p.payload));
                })
                .expect("register other")
        };
        assert_ne!(key, ko);

        thread::sleep(SETTLE);
        let tx = lo_sender();
        for seq in 0..10u64 {
            send(&tx, &seq.to_be_bytes(), dst);
        }
        let gone = turn_until(&mut reactor, DEADLINE, |r| r.counters().sockets == 1);
        assert!(
            gone,
            "the socket was not deregistered; seen {:?}",
            seen.lock().unwrap()
        );
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert!(reactor.conn(key).is_none());
        assert!(reactor.socket_counters(key).is_none());
        assert!(
            reactor.deregister(key).is_err(),
            "deregistering twice must fail"
        );
        assert_eq!(
            Arc::strong_count(&seen),
            1,
            "the deregistered socket's handler was not dropped"
        );
        assert!(reactor.conn(ko).is_some());

        // More traffic: nothing for the deregistered handler, the other works.
        for seq in 10..20u64 {
            send(&tx, &seq.to_be_bytes(), dst);
            send(&tx, &seq.to_be_bytes(), other_dst);
        }
        let got = turn_until(&mut reactor, DEADLINE, |_| {
            other_seen.lock().unwrap().len() >= 10
        });
        turn_for(&mut reactor, Duration::from_millis(200));
        assert!(got, "other socket got {:?}", other_seen.lock().unwrap());
        assert_eq!(*other_seen.lock().unwrap(), (10..20).collect::<Vec<u64>>());
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        let c = reactor.counters();
        assert_eq!(c.sockets, 1);
        // The retired socket's counters stay in the total.
        assert!(c.total.recv.packets >= 15, "{c:?}");
    });
}

/// `Handle::deregister` from another thread while the reactor runs on its
/// own: returns the socket, which still works (and can be registered again).
#[test]
fn deregister_through_a_handle_while_running() {
    util::reactor::each_backend(|| {
        let g = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::DST);
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let (handle, join) = util::reactor::builder().spawn().expect("spawn reactor");

        let count = Arc::new(AtomicU64::new(0));
        let key = {
            let count = Arc::clone(&count);
            handle
                .register(rx, move |_: &Packet<'_>, _: &mut Context<'_>| {
                    count.fetch_add(1, Ordering::SeqCst);
                })
                .expect("register through handle")
        };
        thread::sleep(SETTLE);
        let tx = lo_sender();
        for seq in 0..5u64 {
            send(&tx, &seq.to_be_bytes(), dst);
        }
        assert!(
            wait_until(DEADLINE, || count.load(Ordering::SeqCst) == 5),
            "got {} of 5 packets before deregistering",
            count.load(Ordering::SeqCst)
        );

        let conn = handle.deregister(key).expect("Handle::deregister");
        assert_eq!(handle.counters().expect("counters").sockets, 0);
        assert!(handle.socket_counters(key).is_err());
        assert!(
            handle.deregister(key).is_err(),
            "deregistering twice must fail"
        );

        // The socket is ours again and usable: it still has its membership.
        assert_eq!(port_of(&conn), dst.port());
        send(&tx, b"after-1", dst);
        send(&tx, b"after-2", dst);
        conn.set_nonblocking(false).expect("blocking");
        conn.socket()
            .set_read_timeout(Some(DEADLINE))
            .expect("SO_RCVTIMEO");
        let mut buf = [0u8; 64];
        for want in [&b"after-1"[..], b"after-2"] {
            let meta = conn
                .recv_from(&mut buf)
                .expect("recv on the returned socket");
            assert_eq!(&buf[..meta.len], want);
            assert_eq!(meta.cm.dst, Some(g));
        }
        thread::sleep(Duration::from_millis(100));
        assert_eq!(
            count.load(Ordering::SeqCst),
            5,
            "handler called after deregistration"
        );

        // And it can go back in.
        let again = Arc::new(AtomicU64::new(0));
        {
            let again = Arc::clone(&again);
            handle
                .register(conn, move |_: &Packet<'_>, _: &mut Context<'_>| {
                    again.fetch_add(1, Ordering::SeqCst);
                })
                .expect("register again");
        }
        send(&tx, b"again", dst);
        assert!(wait_until(DEADLINE, || again.load(Ordering::SeqCst) == 1));

        handle.stop();
        join_within(join, DEADLINE, "reactor thread").expect("run result");
    });
}

// ---------------------------------------------------------------------------
// Membership changes through a Handle
// ---------------------------------------------------------------------------

/// With traffic flowing to A and B on one port, a socket joined to A only
/// gets B after `Handle::join_group` and stops getting it after
/// `Handle::leave_group`.
#[test]
fn join_and_leave_through_a_handle_while_traffic_flows() {
    util::reactor::each_backend(|| {
        let lo = Interface::loopback();
        let ga = asm_group(TAG);
        let gb = asm_group(TAG);
        let conn = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        conn.set_multicast_all(false).expect("IP_MULTICAST_ALL off");
        conn.join_group(&lo, ga).expect("join A");
        conn.set_control_flags(ControlFlags::DST).expect("DST");
        let port = port_of(&conn);

        let (handle, join) = util::reactor::builder().spawn().expect("spawn reactor");
        let a = Arc::new(AtomicU64::new(0));
        let b = Arc::new(AtomicU64::new(0));
        let other = Arc::new(AtomicU64::new(0));
        let key = {
            let (a, b, other) = (Arc::clone(&a), Arc::clone(&b), Arc::clone(&other));
            handle
                .register(conn, move |p: &Packet<'_>, _: &mut Context<'_>| {
                    match p.cm.dst {
                        Some(d) if d == ga => a.fetch_add(1, Ordering::SeqCst),
                        Some(d) if d == gb => b.fetch_add(1, Ordering::SeqCst),
                        _ => other.fetch_add(1, Ordering::SeqCst),
                    };
                })
                .expect("register")
        };
        thread::sleep(SETTLE);
        let mut flood = Flood::start(
            vec![SocketAddrV4::new(ga, port), SocketAddrV4::new(gb, port)],
            Some(Duration::from_millis(1)),
        );

        assert!(
            wait_until(DEADLINE, || a.load(Ordering::SeqCst) >= 20),
            "A packets do not arrive"
        );
        assert_eq!(b.load(Ordering::SeqCst), 0, "B arrived before joining it");

        handle
            .join_group(key, &lo, gb)
            .expect("join B through the handle");
        assert!(
            wait_until(DEADLINE, || b.load(Ordering::SeqCst) >= 20),
            "B packets do not arrive after the join ({} so far)",
            b.load(Ordering::SeqCst)
        );

        handle
            .leave_group(key, &lo, gb)
            .expect("leave B through the handle");
        thread::sleep(SETTLE);
        let (a1, b1) = (a.load(Ordering::SeqCst), b.load(Ordering::SeqCst));
        thread::sleep(Duration::from_millis(500));
        let (a2, b2) = (a.load(Ordering::SeqCst), b.load(Ordering::SeqCst));
        assert_eq!(b2, b1, "B packets still arrive after the leave");
        assert!(
            a2 > a1,
            "A stopped too (A {a1} -> {a2}); the check above proves nothing"
        );
        // Leaving twice is an error, through the handle as well.
        assert!(handle.leave_group(key, &lo, gb).is_err());

        flood.finish();
        assert!(flood.sent() > 0);
        assert_eq!(other.load(Ordering::SeqCst), 0, "packets for neither group");
        handle.stop();
        join_within(join, DEADLINE, "reactor thread").expect("run result");
    });
}

// ---------------------------------------------------------------------------
// Stop
// ---------------------------------------------------------------------------

/// `Handle::stop` from another thread while a sender floods: `run`
/// returns (Ok) within a generous bound, and the handle then reports the
/// reactor gone instead of hanging.
#[test]
fn stop_under_load_returns() {
    util::reactor::each_backend(|| {
        let g = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::NONE);
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let (handle, join) = util::reactor::builder().spawn().expect("spawn reactor");
        let count = Arc::new(AtomicU64::new(0));
        {
            let count = Arc::clone(&count);
            handle
                .register(rx, move |_: &Packet<'_>, _: &mut Context<'_>| {
                    count.fetch_add(1, Ordering::Relaxed);
                })
                .expect("register");
        }
        thread::sleep(SETTLE);
        let mut flood = Flood::start(vec![dst], None);
        assert!(
            wait_until(DEADLINE, || count.load(Ordering::Relaxed) >= 2000),
            "the flood does not reach the reactor ({} packets)",
            count.load(Ordering::Relaxed)
        );

        let stopper = {
            let handle = handle.clone();
            thread::spawn(move || handle.stop())
        };
        join_within(stopper, DEADLINE, "stopper thread");
        let result = join_within(join, DEADLINE, "reactor thread after stop under load");
        result.expect("run returned an error");
        flood.finish();

        let err = handle
            .counters()
            .expect_err("a stopped and dropped reactor cannot answer");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
    });
}

// ---------------------------------------------------------------------------
// Handle calls from inside a handler
// ---------------------------------------------------------------------------

/// A handler calling its own reactor's Handle gets an error, not a
/// deadlock (the test is bounded by a channel timeout).
#[test]
fn handle_call_from_inside_a_handler_fails_instead_of_deadlocking() {
    util::reactor::each_backend(|| {
        let g = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::NONE);
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let (handle, join) = util::reactor::builder().spawn().expect("spawn reactor");
        let (res_tx, res_rx) = mpsc::channel::<Vec<(&'static str, Result<(), io::Error>)>>();
        let inner: Handle = handle.clone();
        let key = handle
            .register(rx, move |_: &Packet<'_>, ctx: &mut Context<'_>| {
                let results = vec![
                    ("counters", inner.counters().map(|_| ())),
                    (
                        "socket_counters",
                        inner.socket_counters(ctx.key()).map(|_| ()),
                    ),
                    (
                        "join_group",
                        inner.join_group(ctx.key(), &Interface::loopback(), asm_group(TAG)),
                    ),
                    ("deregister", inner.deregister(ctx.key()).map(|_| ())),
                ];
                let _ = res_tx.send(results);
            })
            .expect("register");
        thread::sleep(SETTLE);
        send(&lo_sender(), b"call me", dst);
        let results = res_rx.recv_timeout(DEADLINE).expect(
        "the handler never finished: a Handle call from inside it deadlocked (or no packet came)",
    );
        for (what, r) in &results {
            let err = r.as_ref().expect_err(what);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{what}: {err}");
        }
        // The reactor still answers from outside, and the socket is still there.
        let c = handle.socket_counters(key).expect("counters from outside");
        assert_eq!(c.recv.packets, 1);
        handle.stop();
        join_within(join, DEADLINE, "reactor thread").expect("run result");
    });
}
