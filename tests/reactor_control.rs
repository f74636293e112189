//! Control flags and drop accounting of registered sockets: a flag change
//! (`Reactor::set_control_flags`) or a re-registration does not count old
//! kernel drops again, and flags raised behind the reactor's back (from a
//! handler, through `Handle::with_conn`) arrive whole.
//!
//! Network safety: multicast only through `util::lo_sender` and the checked
//! `util::send` (lo, 127.0.0.1), to groups 239.255.157.x on ephemeral
//! ports; unicast only to 127.0.0.1.

mod util;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ipv4_reactor::reactor::Context;
use ipv4_reactor::{ControlFlags, ControlMessage, Packet, PacketConn, RecvBatch};
use util::reactor::{turn_for, turn_until};
use util::{
    asm_group, join_within, lo_receiver, lo_sender, port_of, send, seq_of, try_send, udp,
    wait_until, DEADLINE, SETTLE,
};

/// Third octet of this file's groups: 239.255.157.x, x unique per test.
const TAG: u8 = 157;

/// `Reactor::set_control_flags` on a socket that already saw kernel drops
/// does not count those drops a second time: `SO_RXQ_OVFL` is cumulative,
/// so the new receive slots must keep the last value seen.
#[test]
fn changing_control_flags_does_not_count_old_drops_again() {
    util::reactor::each_backend(|| {
        let g = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::DROPS);
        rx.set_recv_buffer_size(4096).expect("small SO_RCVBUF");
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let mut reactor = util::reactor::builder().build().expect("reactor");
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
        let tx = lo_sender();
        // Overflow the tiny buffer before the reactor reads anything.
        for seq in 0..300u64 {
            send(&tx, &[seq.to_be_bytes(), [0; 8]].concat(), dst);
        }
        drain_then_send_the_count(&mut reactor, &seen, &tx, dst);
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
    });
}

/// A socket deregistered and registered again keeps its drop accounting:
/// the cumulative `SO_RXQ_OVFL` value seen before is not counted again by
/// the new registration's receive slots.
#[test]
fn reregistering_a_socket_does_not_count_its_old_drops_again() {
    util::reactor::each_backend(|| {
        let (rx, tx, dst) = small_buffer_pair();
        let mut reactor = util::reactor::builder().build().expect("reactor");
        let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        // Overflow the tiny buffer before the reactor reads anything.
        for seq in 0..300u64 {
            send(&tx, &[seq.to_be_bytes(), [0; 8]].concat(), dst);
        }
        let key = reactor
            .register(rx, recording_seqs(&seen))
            .expect("register");
        drain_then_send_the_count(&mut reactor, &seen, &tx, dst);
        let drops = reactor.counters().total.recv.kernel_drops;
        let delivered = seen.lock().unwrap().len() as u64;
        assert!(drops > 0, "no drops: the buffer was not small enough");
        assert_eq!(delivered + drops, 301);

        // Out and in again; no packet is dropped after this.
        let rx = reactor.deregister(key).expect("deregister");
        let key = reactor
            .register(rx, recording_seqs(&seen))
            .expect("register again");
        send(&tx, &1001u64.to_be_bytes(), dst);
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
    });
}

/// Drops at the very end of a burst travel with no packet (`SO_RXQ_OVFL`
/// comes with the packet after them): `take_unreported_drops` counts them
/// from the socket's own count, once; a packet after them does not count
/// them again; deregistration counts those of a second burst.
#[test]
fn drops_at_the_end_of_a_burst_are_counted_once_on_demand_and_at_deregistration() {
    util::reactor::each_backend(|| {
        let (rx, tx, dst) = small_buffer_pair();
        let mut reactor = util::reactor::builder().build().expect("reactor");
        let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let key = reactor
            .register(rx, recording_seqs(&seen))
            .expect("register");
        let burst = |reactor: &mut ipv4_reactor::reactor::Reactor, from: u64| {
            let before = seen.lock().unwrap().len();
            for seq in from..from + 300 {
                send(&tx, &[seq.to_be_bytes(), [0; 8]].concat(), dst);
            }
            let drained = turn_until(reactor, DEADLINE, |_| seen.lock().unwrap().len() > before);
            assert!(drained, "nothing delivered");
            turn_for(reactor, Duration::from_millis(50));
        };
        let delivered = || seen.lock().unwrap().len() as u64;
        let kernel_drops =
            |r: &ipv4_reactor::reactor::Reactor| r.counters().total.recv.kernel_drops;

        burst(&mut reactor, 0);
        assert!(
            delivered() + kernel_drops(&reactor) < 300,
            "the drops at the end of the burst were reported by no packet, yet counted"
        );
        let late = reactor.take_unreported_drops(key).expect("SO_MEMINFO");
        assert!(late > 0, "a 4 KiB buffer must overflow");
        assert_eq!(delivered() + kernel_drops(&reactor), 300);
        assert_eq!(reactor.take_unreported_drops(key).expect("again"), 0);

        // The packet after the drops carries the count already taken.
        send(&tx, &1000u64.to_be_bytes(), dst);
        assert!(turn_until(&mut reactor, DEADLINE, |_| seen
            .lock()
            .unwrap()
            .contains(&1000)));
        assert_eq!(
            delivered() + kernel_drops(&reactor),
            301,
            "drops counted twice"
        );

        burst(&mut reactor, 2000);
        reactor.deregister(key).expect("deregister");
        assert_eq!(
            delivered() + kernel_drops(&reactor),
            601,
            "deregistration did not count the second burst's last drops"
        );
    });
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

/// A receiver on 127.0.0.1 with a 4 KiB buffer and `DROPS`, a sender, and
/// the receiver's address.
fn small_buffer_pair() -> (PacketConn, PacketConn, SocketAddrV4) {
    let rx = udp();
    rx.set_recv_buffer_size(4096).expect("small SO_RCVBUF");
    rx.set_control_flags(ControlFlags::DROPS).unwrap();
    let dst = rx.local_addr().unwrap();
    (rx, udp(), dst)
}

/// A handler that records each packet's sequence number in `seen`.
fn recording_seqs(
    seen: &Arc<Mutex<Vec<u64>>>,
) -> impl FnMut(&Packet<'_>, &mut Context<'_>) + Send + 'static {
    let seen = Arc::clone(seen);
    move |p: &Packet<'_>, _: &mut Context<'_>| seen.lock().unwrap().push(seq_of(p.payload))
}

/// Turns until the overflowed socket delivered something, then sends one
/// more packet (sequence 1000), which carries the kernel's drop count
/// (`SO_RXQ_OVFL` travels with the packet after the drops), and turns until
/// it arrives.
fn drain_then_send_the_count(
    reactor: &mut ipv4_reactor::reactor::Reactor,
    seen: &Mutex<Vec<u64>>,
    tx: &PacketConn,
    dst: SocketAddrV4,
) {
    let drained = turn_until(reactor, DEADLINE, |_| !seen.lock().unwrap().is_empty());
    assert!(drained, "nothing delivered");
    turn_for(reactor, Duration::from_millis(50));
    send(tx, &1000u64.to_be_bytes(), dst);
    assert!(
        turn_until(reactor, DEADLINE, |_| seen.lock().unwrap().contains(&1000)),
        "the packet after the drops did not arrive"
    );
}

/// A receiver on 127.0.0.1 with no control flags and a sender (TTL 42,
/// TOS 0x28) on 127.0.0.1; the receiver has dropped packets already, so
/// that packets queued once `DROPS` is on carry `SO_RXQ_OVFL`.
fn unicast_pair_after_drops() -> (PacketConn, PacketConn) {
    let rx = udp();
    let tx = udp();
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
    util::reactor::each_backend(|| {
        let (rx, tx) = unicast_pair_after_drops();
        let dst = rx.local_addr().unwrap();
        let mut reactor = util::reactor::builder().build().expect("reactor");
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
    });
}

#[test]
fn control_flags_raised_through_handle_with_conn_arrive_whole() {
    util::reactor::each_backend(|| {
        let (rx, tx) = unicast_pair_after_drops();
        let dst = rx.local_addr().unwrap();
        let (handle, join) = util::reactor::builder().spawn().expect("spawn reactor");
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
    });
}
