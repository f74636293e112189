//! Integration tests of the reactor: many sockets, fairness, deregistration,
//! membership changes through a Handle, stopping, channel sinks, handler
//! panics, pools, and the `mio::event::Source` impl.
//!
//! Network safety: every multicast send goes through a sender whose
//! interface is lo (`PacketConn::multicast_sender(&Interface::loopback())`,
//! checked in [`send`]); every group is in 239.255.150.0/24 – 239.255.151.0/24
//! (this file's own range) and every port is ephemeral.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::{
    ChannelSink, Context, Handle, Key, Overflow, PanicPolicy, Reactor, ReactorPool,
};
use ipv4_reactor::{ControlFlags, ControlMessage, Interface, Packet, PacketConn, RecvBatch};

// ---------------------------------------------------------------------------
// Helpers (kept in this file on purpose: tests/util is owned elsewhere).
// ---------------------------------------------------------------------------

/// Third octet of this file's single groups: 239.255.150.x, x unique per test.
const TAG: u8 = 150;
/// Third octet of the 200 groups of the many-sockets test: 239.255.151.1-200.
const MANY_TAG: u8 = 151;

/// How long to wait after a join on lo before the first send.
const SETTLE: Duration = Duration::from_millis(300);
/// Bound for anything that must happen (generous: the VM is noisy).
const DEADLINE: Duration = Duration::from_secs(5);
/// The timeout of one `turn` when the test drives the reactor itself.
const TURN: Duration = Duration::from_millis(50);

fn lo() -> Interface {
    Interface::loopback()
}

/// Group 239.255.150.`n` (each test uses its own `n`).
fn group(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(239, 255, TAG, n)
}

/// A multicast sender through lo, checked to be safe.
fn sender() -> PacketConn {
    let tx = PacketConn::multicast_sender(&lo()).expect("multicast sender on lo");
    let local = tx.local_addr().expect("sender local_addr");
    assert!(
        local.ip().is_loopback(),
        "NETWORK SAFETY: sender bound to {local}, not 127.0.0.0/8"
    );
    assert_eq!(
        tx.socket().multicast_if_v4().expect("IP_MULTICAST_IF"),
        Ipv4Addr::LOCALHOST,
        "NETWORK SAFETY: multicast sender must send through lo"
    );
    tx
}

/// Checks that `dst` is one of this file's groups or a loopback address.
fn assert_safe_dst(dst: SocketAddrV4) {
    let ip = dst.ip();
    let ours =
        ip.octets()[0..2] == [239, 255] && (ip.octets()[2] == TAG || ip.octets()[2] == MANY_TAG);
    assert!(
        ours || ip.is_loopback(),
        "NETWORK SAFETY: refusing to send to {dst}"
    );
}

/// Sends one datagram that must be sent whole.
fn send(tx: &PacketConn, payload: &[u8], dst: SocketAddrV4) {
    assert_safe_dst(dst);
    let n = tx
        .send_to(payload, None, dst)
        .unwrap_or_else(|e| panic!("send_to {dst}: {e}"));
    assert_eq!(n, payload.len(), "short send to {dst}");
}

/// Sends one datagram, returning whether it was sent (for floods).
fn try_send(tx: &PacketConn, payload: &[u8], dst: SocketAddrV4) -> bool {
    assert_safe_dst(dst);
    matches!(tx.send_to(payload, None, dst), Ok(n) if n == payload.len())
}

/// A receiver bound to `group:0` (ephemeral port), joined on lo.
fn receiver(group: Ipv4Addr, flags: ControlFlags) -> PacketConn {
    PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), lo())
        .control(flags)
        .recv_buffer(1 << 20)
        .build()
        .unwrap_or_else(|e| panic!("receiver for {group}: {e}"))
}

fn port_of(conn: &PacketConn) -> u16 {
    conn.local_addr().expect("local_addr").port()
}

/// Turns the reactor (at most [`TURN`] per wait) until `done` holds or
/// `limit` passes; returns whether `done` held.
fn turn_until(
    reactor: &mut Reactor,
    limit: Duration,
    mut done: impl FnMut(&Reactor) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done(reactor) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        reactor.turn(Some(TURN)).expect("turn");
    }
}

/// Turns the reactor for `window`, whatever happens.
fn turn_for(reactor: &mut Reactor, window: Duration) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        reactor.turn(Some(Duration::from_millis(10))).expect("turn");
    }
}

/// Waits (sleeping) until `done` holds or `limit` passes.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Joins a reactor thread, failing the test if it does not end within
/// `limit` (the join runs on a helper thread so that a hang is bounded).
fn join_within<T: Send + 'static>(join: thread::JoinHandle<T>, limit: Duration, what: &str) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(join.join());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(_)) => panic!("{what}: the thread panicked"),
        Err(_) => panic!("{what}: the thread did not end within {limit:?}"),
    }
}

/// A sender thread that sends to each of `dsts` in turn, `seq` as payload,
/// pausing `pause` after each round, until told to stop.
struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    join: Option<thread::JoinHandle<()>>,
}

impl Flood {
    fn start(dsts: Vec<SocketAddrV4>, pause: Option<Duration>) -> Flood {
        for d in &dsts {
            assert_safe_dst(*d);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let tx = sender();
        let join = {
            let stop = Arc::clone(&stop);
            let sent = Arc::clone(&sent);
            thread::spawn(move || {
                let mut seq = 0u64;
                let started = Instant::now();
                // Bounded even if nobody stops it.
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                    for d in &dsts {
                        if try_send(&tx, &seq.to_be_bytes(), *d) {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        seq += 1;
                    }
                    if let Some(p) = pause {
                        thread::sleep(p);
                    }
                }
            })
        };
        Flood {
            stop,
            sent,
            join: Some(join),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            join_within(j, DEADLINE, "sender thread");
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn seq_of(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload[..8].try_into().expect("8-byte sequence number"))
}

// ---------------------------------------------------------------------------
// Many sockets
// ---------------------------------------------------------------------------

/// 200 groups over 10 sockets (20 each, the kernel's per-socket limit):
/// every packet reaches the handler of the socket that joined its group,
/// with the right destination and payload, exactly once.
#[test]
fn two_hundred_groups_over_ten_sockets() {
    const SOCKETS: usize = 10;
    const PER_SOCKET: usize = 20;
    let lo = lo();
    let mut reactor = Reactor::builder().build().expect("reactor");
    type Log = Arc<Mutex<Vec<(Key, Option<Ipv4Addr>, Vec<u8>)>>>;
    let log: Log = Arc::default();

    // (key, port, groups) per socket.
    let mut plan: Vec<(Key, u16, Vec<Ipv4Addr>)> = Vec::new();
    for s in 0..SOCKETS {
        let conn = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        conn.set_multicast_all(false).expect("IP_MULTICAST_ALL off");
        let groups: Vec<Ipv4Addr> = (0..PER_SOCKET)
            .map(|i| Ipv4Addr::new(239, 255, MANY_TAG, (s * PER_SOCKET + i + 1) as u8))
            .collect();
        for g in &groups {
            conn.join_group(&lo, *g)
                .unwrap_or_else(|e| panic!("socket {s} joining {g}: {e}"));
        }
        if s == 0
            && std::fs::read_to_string("/proc/sys/net/ipv4/igmp_max_memberships")
                .map(|v| v.trim() == "20")
                .unwrap_or(false)
        {
            // The 21st group on one socket is refused: hence 10 sockets.
            assert!(
                conn.join_group(&lo, Ipv4Addr::new(239, 255, MANY_TAG, 250))
                    .is_err(),
                "a 21st membership on one socket should fail"
            );
        }
        conn.set_control_flags(ControlFlags::DST | ControlFlags::DROPS)
            .expect("control flags");
        let port = port_of(&conn);
        let log2 = Arc::clone(&log);
        let key = reactor
            .register(conn, move |p: &Packet<'_>, ctx: &mut Context<'_>| {
                log2.lock()
                    .unwrap()
                    .push((ctx.key(), p.cm.dst, p.payload.to_vec()));
            })
            .expect("register");
        plan.push((key, port, groups));
    }
    assert_eq!(reactor.counters().sockets, SOCKETS);

    thread::sleep(SETTLE);
    let tx = sender();
    let mut owner: HashMap<Ipv4Addr, (Key, Vec<u8>)> = HashMap::new();
    for (key, port, groups) in &plan {
        for g in groups {
            let payload = format!("to {g} port {port}").into_bytes();
            send(&tx, &payload, SocketAddrV4::new(*g, *port));
            owner.insert(*g, (*key, payload));
        }
    }
    assert_eq!(owner.len(), SOCKETS * PER_SOCKET);

    let total = SOCKETS * PER_SOCKET;
    let all = turn_until(&mut reactor, DEADLINE, |_| {
        log.lock().unwrap().len() >= total
    });
    // A little longer, so that a duplicate would show.
    turn_for(&mut reactor, Duration::from_millis(200));
    let log = log.lock().unwrap().clone();
    assert!(all, "only {} of {total} packets delivered", log.len());
    assert_eq!(log.len(), total, "duplicates delivered");

    let mut seen = HashSet::new();
    for (key, dst, payload) in &log {
        let dst = dst.expect("ControlFlags::DST gives the group");
        let (want_key, want_payload) = owner
            .get(&dst)
            .unwrap_or_else(|| panic!("packet for unknown group {dst}"));
        assert_eq!(key, want_key, "packet for {dst} went to the wrong handler");
        assert_eq!(payload, want_payload, "payload for {dst}");
        assert!(seen.insert(dst), "group {dst} seen twice");
    }
    assert_eq!(seen.len(), total);

    for (key, _, groups) in &plan {
        let c = reactor.socket_counters(*key).expect("registered");
        assert_eq!(c.recv.packets, groups.len() as u64, "packets on {key}");
        assert_eq!(c.recv.kernel_drops, 0);
    }
    let c = reactor.counters();
    assert_eq!(c.total.recv.packets, total as u64);
    assert_eq!(c.sockets, SOCKETS);
}

// ---------------------------------------------------------------------------
// Fairness
// ---------------------------------------------------------------------------

#[derive(Default)]
struct BusyState {
    delivered: u64,
    last: Option<u64>,
    out_of_order: u64,
    tail_seen: bool,
}

/// A flooded socket stopped by its budget does not starve a quiet one, and
/// neither loses readiness: the busy one keeps being served without new
/// events until everything queued is delivered.
#[test]
fn budget_keeps_a_busy_socket_from_starving_a_quiet_one() {
    const BUDGET: usize = 64;
    const FLOOD: u64 = 20_000;
    const TAIL: u64 = u64::MAX;
    let g_busy = group(1);
    let g_quiet = group(2);

    let busy = PacketConn::multicast_receiver(SocketAddrV4::new(g_busy, 0), lo())
        .control(ControlFlags::DROPS)
        .recv_buffer(64 << 20)
        .build()
        .expect("busy receiver");
    let quiet = receiver(g_quiet, ControlFlags::DROPS);
    let busy_dst = SocketAddrV4::new(g_busy, port_of(&busy));
    let quiet_dst = SocketAddrV4::new(g_quiet, port_of(&quiet));

    let mut reactor = Reactor::builder().budget(BUDGET).build().expect("reactor");
    let bstate: Arc<Mutex<BusyState>> = Arc::default();
    let qlog: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let kb = {
        let st = Arc::clone(&bstate);
        reactor
            .register(busy, move |p: &Packet<'_>, _: &mut Context<'_>| {
                let mut st = st.lock().unwrap();
                let seq = seq_of(p.payload);
                if seq == TAIL {
                    st.tail_seen = true;
                } else {
                    if st.last.is_some_and(|l| seq <= l) {
                        st.out_of_order += 1;
                    }
                    st.last = Some(seq);
                }
                st.delivered += 1;
            })
            .expect("register busy")
    };
    let kq = {
        let log = Arc::clone(&qlog);
        reactor
            .register(quiet, move |p: &Packet<'_>, _: &mut Context<'_>| {
                log.lock().unwrap().push(p.payload.to_vec());
            })
            .expect("register quiet")
    };

    thread::sleep(SETTLE);
    let tx = sender();
    let mut sent = 0u64;
    for seq in 0..FLOOD {
        if try_send(&tx, &seq.to_be_bytes(), busy_dst) {
            sent += 1;
        }
    }
    assert!(sent > FLOOD / 2, "only {sent} of {FLOOD} sends succeeded");
    send(&tx, b"quiet-0", quiet_dst);

    // Wait until the quiet packet is queued on its socket (peek, no read).
    let queued = wait_until(DEADLINE, || {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 16];
        reactor
            .conn(kq)
            .expect("quiet registered")
            .socket()
            .peek(&mut buf)
            .is_ok()
    });
    assert!(queued, "the quiet packet never got queued");

    // The quiet packet is delivered within the first two turns, while the
    // busy socket still has most of its flood queued.
    let mut turns = 0;
    while qlog.lock().unwrap().is_empty() && turns < 2 {
        let before = bstate.lock().unwrap().delivered;
        reactor.turn(Some(TURN)).expect("turn");
        let after = bstate.lock().unwrap().delivered;
        assert!(
            after - before <= BUDGET as u64,
            "busy socket delivered {} packets in one turn, budget {BUDGET}",
            after - before
        );
        turns += 1;
    }
    let busy_then = bstate.lock().unwrap().delivered;
    assert_eq!(
        qlog.lock().unwrap().len(),
        1,
        "quiet packet not delivered within {turns} turns (busy delivered {busy_then})"
    );
    assert!(
        busy_then < sent,
        "busy socket already drained ({busy_then} of {sent}): nothing was left to starve anyone"
    );
    let bc = reactor.socket_counters(kb).expect("busy registered");
    assert!(
        bc.budget_stops > 0,
        "busy socket never stopped at its budget: {bc:?}"
    );

    // More quiet packets after the budget stop, nothing new for the busy
    // socket: both must still be fully served.
    for i in 1..=5 {
        send(&tx, format!("quiet-{i}").as_bytes(), quiet_dst);
    }
    let mut max_per_turn = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let drops = reactor.socket_counters(kb).expect("busy").recv.kernel_drops;
        let delivered = bstate.lock().unwrap().delivered;
        if qlog.lock().unwrap().len() >= 6 && delivered + drops >= sent {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        reactor.turn(Some(TURN)).expect("turn");
        let now = bstate.lock().unwrap().delivered;
        max_per_turn = max_per_turn.max(now - delivered);
    }
    let delivered_before_tail = bstate.lock().unwrap().delivered;
    assert!(
        max_per_turn <= BUDGET as u64,
        "a turn delivered {max_per_turn} busy packets"
    );

    // One last busy packet carries the socket's final drop count
    // (SO_RXQ_OVFL is reported on the next packet queued after drops).
    send(&tx, &TAIL.to_be_bytes(), busy_dst);
    let tail = turn_until(&mut reactor, DEADLINE, |_| bstate.lock().unwrap().tail_seen);
    assert!(tail, "the busy socket's tail packet never arrived");
    let bc = reactor.socket_counters(kb).expect("busy registered");
    let drops = bc.recv.kernel_drops;
    assert!(
        drops < sent / 2,
        "the kernel dropped {drops} of {sent}: receive buffer too small"
    );
    assert_eq!(
        delivered_before_tail,
        sent - drops,
        "busy socket lost readiness: {delivered_before_tail} delivered of {sent} sent, {drops} dropped by the kernel"
    );
    let st = bstate.lock().unwrap();
    assert_eq!(st.delivered, sent + 1 - drops);
    assert_eq!(st.out_of_order, 0, "busy packets out of order");
    assert_eq!(bc.recv.packets, sent + 1 - drops);
    assert!(
        bc.budget_stops >= (sent - drops) / BUDGET as u64 / 2,
        "too few budget stops for {} packets: {bc:?}",
        sent - drops
    );

    let q = qlog.lock().unwrap();
    let want: Vec<Vec<u8>> = (0..=5).map(|i| format!("quiet-{i}").into_bytes()).collect();
    assert_eq!(*q, want, "quiet socket's packets");
    let qc = reactor.socket_counters(kq).expect("quiet registered");
    assert_eq!(qc.recv.kernel_drops, 0);
}

// ---------------------------------------------------------------------------
// Deregistration
// ---------------------------------------------------------------------------

/// `ctx.deregister()` after the 5th packet: nothing more is delivered to
/// that handler, the socket is gone and its handler dropped, and the other
/// socket keeps working.
#[test]
fn deregister_from_inside_a_callback() {
    let g = group(3);
    let g_other = group(4);
    let rx = receiver(g, ControlFlags::DST);
    let other = receiver(g_other, ControlFlags::DST);
    let dst = SocketAddrV4::new(g, port_of(&rx));
    let other_dst = SocketAddrV4::new(g_other, port_of(&other));

    let mut reactor = Reactor::builder().build().expect("reactor");
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
    let tx = sender();
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
}

/// `Handle::deregister` from another thread while the reactor runs on its
/// own: returns the socket, which still works (and can be registered again).
#[test]
fn deregister_through_a_handle_while_running() {
    let g = group(5);
    let rx = receiver(g, ControlFlags::DST);
    let dst = SocketAddrV4::new(g, port_of(&rx));
    let (handle, join) = Reactor::builder().spawn().expect("spawn reactor");

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
    let tx = sender();
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
}

// ---------------------------------------------------------------------------
// Membership changes through a Handle
// ---------------------------------------------------------------------------

/// With traffic flowing to A and B on one port, a socket joined to A only
/// gets B after `Handle::join_group` and stops getting it after
/// `Handle::leave_group`.
#[test]
fn join_and_leave_through_a_handle_while_traffic_flows() {
    let lo = lo();
    let ga = group(6);
    let gb = group(7);
    let conn = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
    conn.set_multicast_all(false).expect("IP_MULTICAST_ALL off");
    conn.join_group(&lo, ga).expect("join A");
    conn.set_control_flags(ControlFlags::DST).expect("DST");
    let port = port_of(&conn);

    let (handle, join) = Reactor::builder().spawn().expect("spawn reactor");
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
}

// ---------------------------------------------------------------------------
// Stop
// ---------------------------------------------------------------------------

/// `Handle::stop` from another thread while a sender floods: `run`
/// returns (Ok) within a generous bound, and the handle then reports the
/// reactor gone instead of hanging.
#[test]
fn stop_under_load_returns() {
    let g = group(8);
    let rx = receiver(g, ControlFlags::NONE);
    let dst = SocketAddrV4::new(g, port_of(&rx));
    let (handle, join) = Reactor::builder().spawn().expect("spawn reactor");
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
}

// ---------------------------------------------------------------------------
// Channel sinks
// ---------------------------------------------------------------------------

/// A bounded(8) DropNewest sink that nobody reads: of 100 packets, 8 are in
/// the channel (the first 8) and exactly 92 are counted as dropped, in the
/// sink and in the socket's counters.
#[test]
fn channel_overflow_is_counted_exactly() {
    let g = group(9);
    let rx = receiver(g, ControlFlags::DROPS | ControlFlags::DST);
    let dst = SocketAddrV4::new(g, port_of(&rx));
    let (sink, packets) = ChannelSink::bounded(8, 2048, Overflow::DropNewest).expect("sink");
    let mut reactor = Reactor::builder().build().expect("reactor");
    let key = reactor.register(rx, sink.clone()).expect("register");

    thread::sleep(SETTLE);
    let tx = sender();
    for seq in 0..100u64 {
        send(&tx, &seq.to_be_bytes(), dst);
    }
    let all = turn_until(&mut reactor, DEADLINE, |r| {
        r.socket_counters(key).expect("registered").recv.packets >= 100
    });
    let c = reactor.socket_counters(key).expect("registered");
    assert!(
        all,
        "the reactor received {} of 100 packets",
        c.recv.packets
    );
    turn_for(&mut reactor, Duration::from_millis(100));
    let c = reactor.socket_counters(key).expect("registered");
    assert_eq!(c.recv.packets, 100);
    assert_eq!(
        c.recv.kernel_drops, 0,
        "the kernel dropped packets: the test proves nothing"
    );
    assert_eq!(sink.dropped(), 92);
    assert_eq!(c.overflow_drops, 92);
    assert_eq!(reactor.counters().total.overflow_drops, 92);
    assert_eq!(packets.len(), 8);
    let got: Vec<u64> = packets.try_iter().map(|p| seq_of(&p)).collect();
    assert_eq!(
        got,
        (0..8).collect::<Vec<u64>>(),
        "the channel keeps the first 8"
    );
    // The socket stays registered.
    assert_eq!(reactor.counters().sockets, 1);
}

/// An `Overflow::Block` sink with a slow consumer drops nothing.
#[test]
fn blocking_channel_sink_drops_nothing() {
    const N: u64 = 200;
    let g = group(10);
    let rx = receiver(g, ControlFlags::DROPS);
    let dst = SocketAddrV4::new(g, port_of(&rx));
    let (sink, packets) = ChannelSink::bounded(4, 2048, Overflow::Block).expect("sink");
    let (handle, join) = Reactor::builder().spawn().expect("spawn reactor");
    let key = handle.register(rx, sink.clone()).expect("register");

    thread::sleep(SETTLE);
    let tx = sender();
    for seq in 0..N {
        send(&tx, &seq.to_be_bytes(), dst);
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (got.len() as u64) < N && Instant::now() < deadline {
        match packets.recv_timeout(Duration::from_millis(500)) {
            Ok(p) => {
                got.push(seq_of(&p));
                thread::sleep(Duration::from_millis(1)); // a slow consumer
            }
            Err(_) => continue,
        }
    }
    assert_eq!(got, (0..N).collect::<Vec<u64>>(), "slow consumer's packets");
    assert_eq!(sink.dropped(), 0);
    let c = handle.socket_counters(key).expect("counters");
    assert_eq!(c.overflow_drops, 0);
    assert_eq!(c.recv.kernel_drops, 0);
    assert_eq!(c.recv.packets, N);

    drop(packets); // never leave a Block sink's reactor waiting on a full channel
    handle.stop();
    join_within(join, DEADLINE, "reactor thread").expect("run result");
}

/// Two lines (A and B: two sockets, two groups) into one cloned sink; a
/// consumer thread gets key, payload and destination of both.
#[test]
fn channel_mode_end_to_end_with_two_lines() {
    const PER_LINE: u64 = 20;
    let ga = group(11);
    let gb = group(12);
    let ra = receiver(ga, ControlFlags::DST);
    let rb = receiver(gb, ControlFlags::DST);
    let da = SocketAddrV4::new(ga, port_of(&ra));
    let db = SocketAddrV4::new(gb, port_of(&rb));
    let (sink, packets) = ChannelSink::bounded(1024, 2048, Overflow::DropNewest).expect("sink");
    let (handle, join) = Reactor::builder().spawn().expect("spawn reactor");
    let ka = handle.register(ra, sink.clone()).expect("register A");
    let kb = handle.register(rb, sink.clone()).expect("register B");
    assert_ne!(ka, kb);

    let consumer = thread::spawn(move || {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while (out.len() as u64) < 2 * PER_LINE && Instant::now() < deadline {
            if let Ok(p) = packets.recv_timeout(Duration::from_millis(200)) {
                out.push((p.key, p.payload().to_vec(), p.cm.dst));
            }
        }
        out
    });
    thread::sleep(SETTLE);
    let tx = sender();
    for seq in 0..PER_LINE {
        send(&tx, format!("A{seq}").as_bytes(), da);
        send(&tx, format!("B{seq}").as_bytes(), db);
    }
    let out = join_within(consumer, Duration::from_secs(15), "consumer thread");
    assert_eq!(out.len() as u64, 2 * PER_LINE, "consumer got {out:?}");
    let mut a = Vec::new();
    let mut b = Vec::new();
    for (key, payload, dst) in out {
        if key == ka {
            assert_eq!(dst, Some(ga), "A line packet with destination {dst:?}");
            a.push(String::from_utf8(payload).unwrap());
        } else {
            assert_eq!(key, kb, "packet from an unknown key");
            assert_eq!(dst, Some(gb), "B line packet with destination {dst:?}");
            b.push(String::from_utf8(payload).unwrap());
        }
    }
    assert_eq!(
        a,
        (0..PER_LINE).map(|i| format!("A{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        b,
        (0..PER_LINE).map(|i| format!("B{i}")).collect::<Vec<_>>()
    );
    assert_eq!(sink.dropped(), 0);

    handle.stop();
    join_within(join, DEADLINE, "reactor thread").expect("run result");
}

// ---------------------------------------------------------------------------
// Handler panics
// ---------------------------------------------------------------------------

const PANIC_TEXT: &str = "deliberate handler panic for the reactor test";

/// Default policy: the panic is caught and counted, its message kept, the
/// panicking socket deregistered, and the other socket keeps receiving.
#[test]
fn panicking_handler_is_deregistered_and_others_continue() {
    let gp = group(13);
    let gq = group(14);
    let rp = receiver(gp, ControlFlags::NONE);
    let rq = receiver(gq, ControlFlags::NONE);
    let dp = SocketAddrV4::new(gp, port_of(&rp));
    let dq = SocketAddrV4::new(gq, port_of(&rq));

    let mut reactor = Reactor::builder().build().expect("reactor");
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
    let tx = sender();
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
}

/// `PanicPolicy::Stop`: `run` returns an error carrying the panic message.
#[test]
fn panic_policy_stop_ends_run_with_the_message() {
    let gp = group(15);
    let gq = group(16);
    let rp = receiver(gp, ControlFlags::NONE);
    let rq = receiver(gq, ControlFlags::NONE);
    let dp = SocketAddrV4::new(gp, port_of(&rp));

    let mut reactor = Reactor::builder()
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
    let tx = sender();
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
}

/// After a `PanicPolicy::Stop` error, `reset_stop` and a new `run` that
/// ends through `Handle::stop` (no new panic) returns Ok, not the old
/// panic again.
#[test]
fn panic_policy_stop_error_is_not_reported_again_by_a_later_run() {
    let gp = group(17);
    let rp = receiver(gp, ControlFlags::NONE);
    let dp = SocketAddrV4::new(gp, port_of(&rp));
    let mut reactor = Reactor::builder()
        .on_handler_panic(PanicPolicy::Stop)
        .build()
        .expect("reactor");
    let handle = reactor.handle();
    reactor
        .register(rp, |_: &Packet<'_>, _: &mut Context<'_>| {
            panic!("{PANIC_TEXT} (first run)")
        })
        .expect("register panicking");
    let run = thread::spawn(move || {
        let r = reactor.run();
        (r, reactor)
    });
    thread::sleep(SETTLE);
    send(&sender(), b"boom", dp);
    let (first, mut reactor) = join_within(run, DEADLINE, "first run");
    assert!(first.is_err(), "the first run must end with the panic");

    // Second run: no panic, stopped through the handle.
    reactor.reset_stop();
    let run = thread::spawn(move || {
        let r = reactor.run();
        (r, reactor)
    });
    thread::sleep(Duration::from_millis(50));
    handle.stop();
    let (second, _reactor) = join_within(run, DEADLINE, "second run");
    assert!(
        second.is_ok(),
        "a run stopped by its handle, with no handler panic, returned {second:?}"
    );
}

// ---------------------------------------------------------------------------
// Handle calls from inside a handler
// ---------------------------------------------------------------------------

/// A handler calling its own reactor's Handle gets an error, not a
/// deadlock (the test is bounded by a channel timeout).
#[test]
fn handle_call_from_inside_a_handler_fails_instead_of_deadlocking() {
    let g = group(18);
    let rx = receiver(g, ControlFlags::NONE);
    let dst = SocketAddrV4::new(g, port_of(&rx));
    let (handle, join) = Reactor::builder().spawn().expect("spawn reactor");
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
                    inner.join_group(
                        ctx.key(),
                        &Interface::loopback(),
                        Ipv4Addr::new(239, 255, TAG, 19),
                    ),
                ),
                ("deregister", inner.deregister(ctx.key()).map(|_| ())),
            ];
            let _ = res_tx.send(results);
        })
        .expect("register");
    thread::sleep(SETTLE);
    send(&sender(), b"call me", dst);
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
}

// ---------------------------------------------------------------------------
// Pool
// ---------------------------------------------------------------------------

/// `ReactorPool::spawn(2, ..)`: groups sharded by `shard_of` onto two
/// reactor threads, every socket's packets delivered, `shutdown` Ok.
#[test]
fn reactor_pool_shards_groups_and_shuts_down() {
    const PER_GROUP: usize = 5;
    let pool = ReactorPool::spawn(2, Reactor::builder()).expect("pool");
    assert_eq!(pool.handles().len(), 2);

    // Four groups for each shard (shard_of is stable, so pick by it).
    let mut groups = Vec::new();
    let mut per_shard = [0; 2];
    for n in 20..=60u8 {
        let g = group(n);
        let s = pool.shard_of(g);
        assert!(s < 2);
        assert_eq!(s, pool.shard_of(g), "shard_of is not stable");
        if per_shard[s] < 4 {
            per_shard[s] += 1;
            groups.push(g);
        }
        if per_shard == [4, 4] {
            break;
        }
    }
    assert_eq!(per_shard, [4, 4], "could not find 4 groups per shard");

    type Seen = Arc<Mutex<HashMap<Ipv4Addr, (Vec<Vec<u8>>, HashSet<thread::ThreadId>)>>>;
    let seen: Seen = Arc::default();
    let mut dsts = Vec::new();
    for &g in &groups {
        let rx = receiver(g, ControlFlags::DST);
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let seen = Arc::clone(&seen);
        let (shard, _key) = pool
            .register(g, rx, move |p: &Packet<'_>, _: &mut Context<'_>| {
                let dst = p.cm.dst.expect("DST");
                let mut m = seen.lock().unwrap();
                let e = m.entry(dst).or_default();
                e.0.push(p.payload.to_vec());
                e.1.insert(thread::current().id());
            })
            .expect("pool register");
        assert_eq!(shard, pool.shard_of(g));
        dsts.push((shard, dst));
    }
    for h in pool.handles() {
        assert_eq!(h.counters().expect("counters").sockets, 4);
    }

    thread::sleep(SETTLE);
    let tx = sender();
    for i in 0..PER_GROUP {
        for (_, dst) in &dsts {
            send(&tx, format!("{}#{i}", dst.ip()).as_bytes(), *dst);
        }
    }
    let total = PER_GROUP * groups.len();
    let all = wait_until(DEADLINE, || {
        seen.lock()
            .unwrap()
            .values()
            .map(|v| v.0.len())
            .sum::<usize>()
            >= total
    });
    thread::sleep(Duration::from_millis(100));
    let seen = seen.lock().unwrap().clone();
    assert!(all, "not every packet delivered: {seen:?}");

    let mut thread_of_shard: HashMap<usize, thread::ThreadId> = HashMap::new();
    for (shard, dst) in &dsts {
        let (payloads, threads) = seen
            .get(dst.ip())
            .unwrap_or_else(|| panic!("nothing for {dst}"));
        let want: Vec<Vec<u8>> = (0..PER_GROUP)
            .map(|i| format!("{}#{i}", dst.ip()).into_bytes())
            .collect();
        assert_eq!(payloads, &want, "packets of {dst}");
        assert_eq!(threads.len(), 1, "one group served by several threads");
        let t = *threads.iter().next().unwrap();
        assert_ne!(t, thread::current().id());
        let prev = thread_of_shard.entry(*shard).or_insert(t);
        assert_eq!(*prev, t, "shard {shard} served by two threads");
    }
    assert_ne!(
        thread_of_shard[&0], thread_of_shard[&1],
        "both shards ran on the same thread"
    );
    for h in pool.handles() {
        let c = h.counters().expect("counters");
        assert_eq!(c.total.recv.packets, (4 * PER_GROUP) as u64);
    }

    let (tx_done, rx_done) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx_done.send(pool.shutdown());
    });
    rx_done
        .recv_timeout(DEADLINE)
        .expect("shutdown did not return")
        .expect("shutdown returned an error");
}

// ---------------------------------------------------------------------------
// mio::event::Source
// ---------------------------------------------------------------------------

fn assert_is_source<S: mio::event::Source>(_: &S) {}

/// A PacketConn registered in our own `mio::Poll` raises a readable event
/// after a send, and `RecvBatch::recv` reads the packet.
#[test]
fn packet_conn_is_a_mio_source() {
    use mio::{Events, Interest, Poll, Token};
    let g = group(61);
    let mut rx = receiver(g, ControlFlags::DST);
    assert_is_source(&rx);
    let dst = SocketAddrV4::new(g, port_of(&rx));
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    poll.registry()
        .register(&mut rx, Token(7), Interest::READABLE)
        .expect("register in mio");
    thread::sleep(SETTLE);
    let tx = sender();
    let mut batch = RecvBatch::new(8, 2048, rx.control_flags()).unwrap();

    for round in 0..2u64 {
        send(&tx, &round.to_be_bytes(), dst);
        let deadline = Instant::now() + DEADLINE;
        let mut readable = false;
        while !readable && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .expect("poll");
            readable = events
                .iter()
                .any(|e| e.token() == Token(7) && e.is_readable());
        }
        assert!(readable, "no readable event for round {round}");
        let n = batch.recv(&rx).expect("recv after the event");
        assert_eq!(n, 1);
        let p = batch.get(0).expect("packet 0");
        assert_eq!(seq_of(p.payload), round);
        assert_eq!(p.cm.dst, Some(g));
        let err = batch.recv(&rx).expect_err("drained");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
    poll.registry()
        .deregister(&mut rx)
        .expect("deregister from mio");
}

// ---------------------------------------------------------------------------
// Control flags changed on a registered socket
// ---------------------------------------------------------------------------

/// `Reactor::set_control_flags` on a socket that already saw kernel drops
/// does not count those drops a second time: `SO_RXQ_OVFL` is cumulative,
/// so the new receive slots must keep the last value seen.
#[test]
fn changing_control_flags_does_not_count_old_drops_again() {
    let g = group(62);
    let rx = receiver(g, ControlFlags::DROPS);
    rx.set_recv_buffer_size(4096).expect("small SO_RCVBUF");
    let dst = SocketAddrV4::new(g, port_of(&rx));
    let mut reactor = Reactor::builder().build().expect("reactor");
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let key = {
        let seen = Arc::clone(&seen);
        reactor
            .register(rx, move |p: &Packet<'_>, _: &mut Context<'_>| {
                seen.lock().unwrap().push(seq_of(p.payload));
            })
            .expect("register")
    };
    thread::sleep(SETTLE);
    let tx = sender();
    // Overflow the tiny buffer before the reactor reads anything.
    for seq in 0..300u64 {
        send(&tx, &[seq.to_be_bytes(), [0; 8]].concat(), dst);
    }
    let drained = turn_until(&mut reactor, DEADLINE, |_| !seen.lock().unwrap().is_empty());
    assert!(drained, "nothing delivered");
    turn_for(&mut reactor, Duration::from_millis(50));
    // A packet queued after the drops carries the final count.
    send(&tx, &1000u64.to_be_bytes(), dst);
    assert!(turn_until(&mut reactor, DEADLINE, |_| seen
        .lock()
        .unwrap()
        .contains(&1000)));
    let c1 = reactor.socket_counters(key).expect("registered");
    let delivered = seen.lock().unwrap().len() as u64;
    assert!(
        c1.recv.kernel_drops > 0,
        "no drops: the buffer was not small enough"
    );
    assert_eq!(delivered + c1.recv.kernel_drops, 301, "{c1:?}");

    reactor
        .set_control_flags(key, ControlFlags::DROPS | ControlFlags::DST)
        .expect("set_control_flags");
    send(&tx, &1001u64.to_be_bytes(), dst);
    assert!(turn_until(&mut reactor, DEADLINE, |_| seen
        .lock()
        .unwrap()
        .contains(&1001)));
    let c2 = reactor.socket_counters(key).expect("registered");
    assert_eq!(
        c2.recv.kernel_drops, c1.recv.kernel_drops,
        "no packet was dropped after the flag change, yet the drop count moved"
    );
}

#[test]
fn handler_time_is_measured_only_when_asked() {
    for measure in [true, false] {
        let mut reactor = Reactor::builder()
            .measure_handler_time(measure)
            .build()
            .unwrap();
        let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let dst = rx.local_addr().unwrap();
        let key = reactor
            .register(rx, |_p: &Packet<'_>, _ctx: &mut Context<'_>| {
                // A handler that takes 2 ms per packet.
                std::thread::sleep(Duration::from_millis(2));
            })
            .unwrap();
        let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i], None, dst).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while reactor.socket_counters(key).unwrap().recv.packets < 5 {
            assert!(Instant::now() < deadline, "the 5 packets never came");
            reactor.turn(Some(Duration::from_millis(50))).unwrap();
        }
        let c = reactor.socket_counters(key).unwrap();
        if measure {
            assert!(
                c.handler_time >= Duration::from_millis(10),
                "5 packets x 2 ms, measured {:?}",
                c.handler_time
            );
            assert_eq!(reactor.counters().total.handler_time, c.handler_time);
        } else {
            assert_eq!(c.handler_time, Duration::ZERO);
        }
    }
}

/// A socket deregistered and registered again keeps its drop accounting:
/// the cumulative `SO_RXQ_OVFL` value seen before is not counted again by
/// the new registration's receive slots.
#[test]
fn reregistering_a_socket_does_not_count_its_old_drops_again() {
    let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    rx.set_recv_buffer_size(4096).expect("small SO_RCVBUF");
    rx.set_control_flags(ControlFlags::DROPS).unwrap();
    let dst = rx.local_addr().unwrap();
    let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut reactor = Reactor::builder().build().expect("reactor");
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let handler = |seen: &Arc<Mutex<Vec<u64>>>| {
        let seen = Arc::clone(seen);
        move |p: &Packet<'_>, _: &mut Context<'_>| seen.lock().unwrap().push(seq_of(p.payload))
    };
    // Overflow the tiny buffer before the reactor reads anything.
    for seq in 0..300u64 {
        tx.send_to(&[seq.to_be_bytes(), [0; 8]].concat(), None, dst)
            .unwrap();
    }
    let key = reactor.register(rx, handler(&seen)).expect("register");
    assert!(turn_until(&mut reactor, DEADLINE, |_| !seen
        .lock()
        .unwrap()
        .is_empty()));
    turn_for(&mut reactor, Duration::from_millis(50));
    // A packet queued after the drops carries the count.
    tx.send_to(&1000u64.to_be_bytes(), None, dst).unwrap();
    assert!(turn_until(&mut reactor, DEADLINE, |_| seen
        .lock()
        .unwrap()
        .contains(&1000)));
    let drops = reactor.counters().total.recv.kernel_drops;
    let delivered = seen.lock().unwrap().len() as u64;
    assert!(drops > 0, "no drops: the buffer was not small enough");
    assert_eq!(delivered + drops, 301);

    // Out and in again; no packet is dropped after this.
    let rx = reactor.deregister(key).expect("deregister");
    let key = reactor
        .register(rx, handler(&seen))
        .expect("register again");
    tx.send_to(&1001u64.to_be_bytes(), None, dst).unwrap();
    assert!(turn_until(&mut reactor, DEADLINE, |_| seen
        .lock()
        .unwrap()
        .contains(&1001)));
    let c = reactor.socket_counters(key).expect("registered");
    assert_eq!(c.recv.packets, 1);
    assert_eq!(
        c.recv.kernel_drops, 0,
        "the new registration counted drops that happened before it"
    );
    assert_eq!(
        reactor.counters().total.recv.kernel_drops,
        drops,
        "nothing was dropped after re-registering, yet the total moved"
    );
}

// ---------------------------------------------------------------------------
// Control flags changed behind the reactor's back
// ---------------------------------------------------------------------------

/// Everything the tests below raise on a socket registered without any.
const RAISED: ControlFlags = ControlFlags::TTL
    .union(ControlFlags::TOS)
    .union(ControlFlags::DST)
    .union(ControlFlags::INTERFACE)
    .union(ControlFlags::LOCAL)
    .union(ControlFlags::TIMESTAMP)
    .union(ControlFlags::DROPS)
    .union(ControlFlags::SRC);

/// What a handler saw of one packet.
#[derive(Debug, Clone)]
struct Seen {
    seq: u64,
    cm: ControlMessage,
    src: Option<SocketAddrV4>,
    control_truncated: bool,
}

/// A receiver on 127.0.0.1 with no control flags and a sender (TTL 42,
/// TOS 0x28) on 127.0.0.1; the receiver has dropped packets already, so
/// that packets queued once `DROPS` is on carry `SO_RXQ_OVFL`.
fn unicast_pair_after_drops() -> (PacketConn, PacketConn) {
    let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    tx.set_ttl(42).unwrap();
    tx.set_tos(0x28).unwrap();
    assert_eq!(rx.control_flags(), ControlFlags::NONE);
    let dst = rx.local_addr().unwrap();
    rx.set_recv_buffer_size(4096).unwrap();
    for seq in 0..300u64 {
        try_send(&tx, &[seq.to_be_bytes(), [0; 8]].concat(), dst);
    }
    thread::sleep(Duration::from_millis(10));
    rx.set_nonblocking(true).unwrap();
    let mut scratch = RecvBatch::new(64, 2048, ControlFlags::NONE).unwrap();
    while scratch.recv(&rx).is_ok() {}
    rx.set_recv_buffer_size(1 << 20).unwrap();
    (rx, tx)
}

/// A handler that records every packet in `seen`, and raises [`RAISED`]
/// on its own socket through `ctx.conn()` when `raise_at` arrives.
fn recording(
    seen: &Arc<Mutex<Vec<Seen>>>,
    raise_at: Option<u64>,
) -> impl FnMut(&Packet<'_>, &mut Context<'_>) + Send + 'static {
    let seen = Arc::clone(seen);
    move |p: &Packet<'_>, ctx: &mut Context<'_>| {
        let seq = seq_of(p.payload);
        seen.lock().unwrap().push(Seen {
            seq,
            cm: p.cm,
            src: p.src,
            control_truncated: p.control_truncated(),
        });
        if Some(seq) == raise_at {
            ctx.conn()
                .set_control_flags(RAISED)
                .expect("raising control flags from inside the handler");
        }
    }
}

/// Checks that every packet after `after` carried each field of [`RAISED`]
/// whole.
fn assert_every_field_after(seen: &[Seen], after: u64, tx: &PacketConn) {
    let later: Vec<&Seen> = seen.iter().filter(|s| s.seq > after).collect();
    assert!(!later.is_empty(), "no packet after the change");
    for s in later {
        let (seq, cm) = (s.seq, &s.cm);
        assert!(
            !s.control_truncated,
            "packet {seq}: control truncated: {s:?}"
        );
        assert_eq!(cm.ttl, Some(42), "packet {seq}: {cm}");
        assert_eq!(cm.tos, Some(0x28), "packet {seq}: {cm}");
        assert_eq!(cm.dst, Some(Ipv4Addr::LOCALHOST), "packet {seq}: {cm}");
        assert_eq!(cm.ifindex, Some(1), "packet {seq}: {cm}");
        assert_eq!(cm.local, Some(Ipv4Addr::LOCALHOST), "packet {seq}: {cm}");
        assert!(cm.timestamp.is_some(), "packet {seq}: no timestamp: {cm}");
        assert!(
            cm.drops.is_some_and(|d| d > 0),
            "packet {seq}: no drop counter: {cm}"
        );
        assert_eq!(s.src, Some(tx.local_addr().unwrap()), "packet {seq}");
    }
}

#[test]
fn control_flags_raised_from_inside_a_handler_arrive_whole() {
    let (rx, tx) = unicast_pair_after_drops();
    let dst = rx.local_addr().unwrap();
    let mut reactor = Reactor::builder().build().expect("reactor");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let key = reactor
        .register(rx, recording(&seen, Some(1000)))
        .expect("register");

    send(&tx, &1000u64.to_be_bytes(), dst);
    assert!(turn_until(&mut reactor, DEADLINE, |_| seen
        .lock()
        .unwrap()
        .len()
        == 1));
    {
        let first = &seen.lock().unwrap()[0];
        assert!(first.cm.is_empty() && first.src.is_none(), "{first:?}");
        assert!(!first.control_truncated, "nothing asked, nothing lost");
    }
    assert_eq!(reactor.conn(key).unwrap().control_flags(), RAISED);

    for seq in 1001..=1006u64 {
        send(&tx, &seq.to_be_bytes(), dst);
    }
    assert!(
        turn_until(&mut reactor, DEADLINE, |_| seen.lock().unwrap().len() == 7),
        "got {} of 7 packets",
        seen.lock().unwrap().len()
    );
    assert_every_field_after(&seen.lock().unwrap(), 1000, &tx);
    let c = reactor.socket_counters(key).expect("registered");
    assert_eq!(c.recv.control_truncated, 0, "{c:?}");
    assert_eq!(c.recv.packets, 7);
}

#[test]
fn control_flags_raised_through_handle_with_conn_arrive_whole() {
    let (rx, tx) = unicast_pair_after_drops();
    let dst = rx.local_addr().unwrap();
    let (handle, join) = Reactor::builder().spawn().expect("spawn reactor");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let key = handle
        .register(rx, recording(&seen, None))
        .expect("register through the handle");

    send(&tx, &1000u64.to_be_bytes(), dst);
    assert!(wait_until(DEADLINE, || seen.lock().unwrap().len() == 1));
    assert!(!seen.lock().unwrap()[0].control_truncated);

    // Behind the reactor's back: the socket itself, not Reactor::set_control_flags.
    handle
        .with_conn(key, |c| c.set_control_flags(RAISED))
        .expect("Handle::with_conn");
    for seq in 1001..=1006u64 {
        send(&tx, &seq.to_be_bytes(), dst);
    }
    assert!(
        wait_until(DEADLINE, || seen.lock().unwrap().len() == 7),
        "got {} of 7 packets",
        seen.lock().unwrap().len()
    );
    assert_every_field_after(&seen.lock().unwrap(), 1000, &tx);
    let c = handle.socket_counters(key).expect("registered");
    assert_eq!(c.recv.control_truncated, 0, "{c:?}");
    handle.stop();
    join_within(join, DEADLINE, "reactor thread").expect("run result");
}
