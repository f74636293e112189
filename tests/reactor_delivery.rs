//! Delivery through the reactor: 200 groups over 10 sockets each reach the
//! right handler exactly once, a busy socket stopped by its budget neither
//! starves a quiet one nor loses readiness, handler time is measured only
//! when asked, a packet that arrives while the handler runs is read in the
//! same turn (unless `read_until_empty(false)`), and `PacketConn` is a
//! `mio::event::Source`.
//!
//! Network safety: multicast only through `util::lo_sender` and the checked
//! `util::send` (lo, 127.0.0.1), to groups 239.255.150.x (239.255.151.1-200 for the
//! 200 groups) on ephemeral
//! ports; unicast only to 127.0.0.1.

mod util;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::{Backend, Context, Key, Reactor};
use ipv4_reactor::{ControlFlags, Interface, Packet, PacketConn, RecvBatch};
use util::reactor::{turn_for, turn_until, TURN};
use util::{
    asm_group, lo_receiver, lo_sender, port_of, send, seq_of, try_send, udp, wait_until, DEADLINE,
    SETTLE,
};

/// Third octet of this file's groups: 239.255.150.x, x unique per test.
const TAG: u8 = 150;
/// Third octet of the 200 groups of the many-sockets test: 239.255.151.1-200.
const MANY_TAG: u8 = 151;

/// 200 groups over 10 sockets (20 each, the kernel's per-socket limit):
/// every packet reaches the handler of the socket that joined its group,
/// with the right destination and payload, exactly once.
#[test]
fn two_hundred_groups_over_ten_sockets() {
    util::reactor::each_backend(|| {
        const SOCKETS: usize = 10;
        const PER_SOCKET: usize = 20;
        let lo = Interface::loopback();
        let mut reactor = util::reactor::builder().build().expect("reactor");
        type Log = Arc<Mutex<Vec<(Key, Option<Ipv4Addr>, Vec<u8>)>>>;
        let log: Log = Arc::default();

        // (key, port, groups) per socket.
        let mut plan: Vec<(Key, u16, Vec<Ipv4Addr>)> = Vec::new();
        for s in 0..SOCKETS {
            let conn =
                PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
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
        let tx = lo_sender();
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
    });
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
    util::reactor::each_backend(|| {
        const BUDGET: usize = 64;
        const FLOOD: u64 = 20_000;
        const TAIL: u64 = u64::MAX;
        let g_busy = asm_group(TAG);
        let g_quiet = asm_group(TAG);

        let busy =
            PacketConn::multicast_receiver(SocketAddrV4::new(g_busy, 0), Interface::loopback())
                .control(ControlFlags::DROPS)
                .recv_buffer(64 << 20)
                .build()
                .expect("busy receiver");
        let quiet = lo_receiver(g_quiet, ControlFlags::DROPS);
        let busy_dst = SocketAddrV4::new(g_busy, port_of(&busy));
        let quiet_dst = SocketAddrV4::new(g_quiet, port_of(&quiet));

        let mut reactor = util::reactor::builder()
            .budget(BUDGET)
            .build()
            .expect("reactor");
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
        let tx = lo_sender();
        let mut sent = 0u64;
        for seq in 0..FLOOD {
            if try_send(&tx, &seq.to_be_bytes(), busy_dst) {
                sent += 1;
            }
        }
        assert!(sent > FLOOD / 2, "only {sent} of {FLOOD} sends succeeded");
        send(&tx, b"quiet-0", quiet_dst);

        // Wait until the quiet packet is queued on its socket (peek, no read).
        // (With io_uring the kernel takes it into one of the socket's
        // buffers at once: then the ring has a completion waiting.)
        let queued = wait_until(DEADLINE, || {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 16];
            reactor
                .conn(kq)
                .expect("quiet registered")
                .socket()
                .peek(&mut buf)
                .is_ok()
                || (util::reactor::backend() == Backend::IoUring && reactor.needs_turn())
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
    });
}

// ---------------------------------------------------------------------------
// Handler time
// ---------------------------------------------------------------------------

#[test]
fn handler_time_is_measured_only_when_asked() {
    util::reactor::each_backend(|| {
        for measure in [true, false] {
            let mut reactor = util::reactor::builder()
                .measure_handler_time(measure)
                .build()
                .unwrap();
            let rx = udp();
            let dst = rx.local_addr().unwrap();
            let key = reactor
                .register(rx, |_p: &Packet<'_>, _ctx: &mut Context<'_>| {
                    // A handler that takes 2 ms per packet.
                    std::thread::sleep(Duration::from_millis(2));
                })
                .unwrap();
            let tx = udp();
            for i in 0..5u8 {
                send(&tx, &[i], dst);
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
    });
}

// ---------------------------------------------------------------------------
// mio::event::Source
/// A packet that arrives while the handler runs (here, sent by the handler
/// itself through lo; the handler waits until it is queued) is read in
/// the same turn by default (`read_until_empty`, the C loop's read until
/// `EAGAIN`), and in the next turn when `read_until_empty(false)` lets a
/// short batch end the drain. The mio backend: the io_uring backend's
/// multishot receive has no receive call to repeat.
#[test]
fn a_packet_arriving_while_the_handler_runs_is_read_in_the_same_turn_by_default() {
    for until_empty in [true, false] {
        let g = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::NONE);
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let tx = lo_sender();
        let echo = lo_sender();
        let mut reactor = Reactor::builder()
            .read_until_empty(until_empty)
            .build()
            .expect("reactor");
        let seqs = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&seqs);
        reactor
            .register(rx, move |p: &Packet<'_>, ctx: &mut Context<'_>| {
                let seq = seq_of(p.payload);
                seen.lock().unwrap().push(seq);
                if seq == 0 {
                    send(&echo, &1u64.to_be_bytes(), dst);
                    // Queued before the handler returns, however busy the
                    // machine (lo may leave the delivery to ksoftirqd).
                    assert!(
                        util::batch::wait_readable(ctx.conn(), DEADLINE),
                        "the packet sent from the handler never arrived"
                    );
                }
            })
            .expect("register");
        thread::sleep(SETTLE);
        send(&tx, &0u64.to_be_bytes(), dst);
        let mut first = 0;
        let deadline = Instant::now() + DEADLINE;
        while first == 0 && Instant::now() < deadline {
            first = reactor.turn(Some(TURN)).expect("turn");
        }
        let expected = if until_empty { 2 } else { 1 };
        assert_eq!(
            first, expected,
            "read_until_empty({until_empty}): packets delivered by the turn that read packet 0"
        );
        if !until_empty {
            let second = reactor.turn(Some(DEADLINE)).expect("turn");
            assert_eq!(
                second, 1,
                "the next turn reads the packet sent by the handler"
            );
        }
        assert_eq!(
            *seqs.lock().unwrap(),
            vec![0, 1],
            "read_until_empty({until_empty})"
        );
    }
}

// ---------------------------------------------------------------------------

fn assert_is_source<S: mio::event::Source>(_: &S) {}

/// A PacketConn registered in our own `mio::Poll` raises a readable event
/// after a send, and `RecvBatch::recv` reads the packet.
#[test]
fn packet_conn_is_a_mio_source() {
    util::reactor::each_backend(|| {
        use mio::{Events, Interest, Poll, Token};
        let g = asm_group(TAG);
        let mut rx = lo_receiver(g, ControlFlags::DST);
        assert_is_source(&rx);
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let mut poll = Poll::new().expect("poll");
        let mut events = Events::with_capacity(8);
        poll.registry()
            .register(&mut rx, Token(7), Interest::READABLE)
            .expect("register in mio");
        thread::sleep(SETTLE);
        let tx = lo_sender();
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
    });
}

/// A handler that takes each batch whole (`Handler::on_packets`): it sees
/// the packets of every `recvmmsg` in order, at most a batch's slots at a
/// time, and the reactor counts as delivered exactly the packets it took,
/// also when it leaves some of a batch untaken (they are not delivered,
/// and the socket is deregistered with them, as the handler asked).
#[test]
fn a_handler_can_take_whole_batches() {
    util::reactor::each_backend(|| {
        use ipv4_reactor::reactor::Handler;
        use ipv4_reactor::Packets;

        struct Batches {
            seqs: Arc<Mutex<Vec<Vec<u64>>>>,
            /// Deregister after taking this many packets in all.
            take_at_most: usize,
            taken: usize,
        }
        impl Handler for Batches {
            fn on_packet(&mut self, _: &Packet<'_>, _: &mut Context<'_>) {
                unreachable!("on_packets takes them all");
            }
            fn on_packets(&mut self, packets: &mut Packets<'_>, ctx: &mut Context<'_>) {
                let mut batch = Vec::new();
                for p in packets {
                    batch.push(seq_of(p.payload));
                    self.taken += 1;
                    if self.taken == self.take_at_most {
                        ctx.deregister();
                        break;
                    }
                }
                self.seqs.lock().unwrap().push(batch);
            }
        }

        let g = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::NONE);
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let mut reactor = util::reactor::builder()
            .batch_slots(8)
            .build()
            .expect("reactor");
        let seqs = Arc::new(Mutex::new(Vec::new()));
        let key = reactor
            .register(
                rx,
                Batches {
                    seqs: Arc::clone(&seqs),
                    take_at_most: 30,
                    taken: 0,
                },
            )
            .expect("register");
        thread::sleep(SETTLE);
        let tx = lo_sender();
        // 40 queued before the first turn: batches of 8, the fourth cut at 30.
        for seq in 0..40u64 {
            send(&tx, &seq.to_be_bytes(), dst);
        }
        let mut delivered = 0;
        let deadline = Instant::now() + DEADLINE;
        while reactor.socket_counters(key).is_some() && Instant::now() < deadline {
            delivered += reactor.turn(Some(TURN)).expect("turn");
        }
        assert!(reactor.socket_counters(key).is_none(), "deregistered");
        assert_eq!(delivered, 30, "turn counts the packets handed out");
        let seqs = seqs.lock().unwrap();
        assert!(
            seqs.iter().all(|b| !b.is_empty() && b.len() <= 8),
            "{seqs:?}"
        );
        assert_eq!(
            seqs.concat(),
            (0..30).collect::<Vec<u64>>(),
            "in order, each once"
        );
    });
}
