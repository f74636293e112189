//! Scenario 2 of the crate docs: multicasting. A receiver joins a group on
//! lo and reads per-packet control messages; a sender sends through lo.
//! Every multicast packet here leaves through lo only (see `util::send`).

mod util;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread::sleep;
use std::time::{Duration, SystemTime};

use ipv4_reactor::{ControlFlags, Interface, PacketConn};

use util::{recv_one, send, SETTLE};

/// Third octet of this file's groups (239.255.101.x).
const TAG: u8 = 101;
const AF11: u8 = 0x28;

/// A receiver on `0.0.0.0:<ephemeral>` joined to a fresh group on lo, and a
/// sender through lo. Returns (rx, tx, destination).
fn joined_pair(flags: ControlFlags) -> (PacketConn, PacketConn, SocketAddrV4) {
    let group = util::asm_group(TAG);
    let rx = util::unicast_bound_receiver();
    rx.join_group(&Interface::loopback(), group).unwrap();
    rx.set_control_message(flags, true).unwrap();
    assert_eq!(rx.control_flags(), flags);
    let tx = util::lo_sender();
    sleep(SETTLE);
    let dst = SocketAddrV4::new(group, util::port_of(&rx));
    (rx, tx, dst)
}

const ALL_IP: ControlFlags = ControlFlags::TTL
    .union(ControlFlags::TOS)
    .union(ControlFlags::DST)
    .union(ControlFlags::INTERFACE)
    .union(ControlFlags::SRC);

#[test]
fn packet_carries_ttl_tos_group_interface_and_source() {
    let (rx, tx, dst) = joined_pair(ALL_IP);
    tx.set_multicast_ttl(3).unwrap();
    assert_eq!(tx.multicast_ttl().unwrap(), 3);
    assert_eq!(tx.socket().multicast_ttl_v4().unwrap(), 3);
    tx.set_tos(AF11).unwrap();
    let lo = Interface::loopback().resolve().unwrap();
    assert_eq!(lo.index, 1);

    send(&tx, b"tick", dst);
    let p = recv_one(&rx, "the multicast tick");
    assert_eq!(p.payload, b"tick");
    assert_eq!(p.cm.ttl, Some(3), "multicast TTL");
    assert_eq!(p.cm.tos, Some(AF11), "TOS");
    assert_eq!(p.cm.dst, Some(*dst.ip()), "destination must be the group");
    assert_eq!(p.cm.ifindex, Some(lo.index), "arrival interface must be lo");
    assert_eq!(p.cm.src, Some(Ipv4Addr::LOCALHOST), "source address");
    assert_eq!(p.src, tx.local_addr().unwrap());
    assert!(!p.flags.truncated && !p.flags.control_truncated);

    // The unicast TTL is a different option: it does not leak into multicast.
    tx.set_ttl(99).unwrap();
    tx.set_multicast_ttl(5).unwrap();
    send(&tx, b"tock", dst);
    let p = recv_one(&rx, "the multicast tock");
    assert_eq!(p.payload, b"tock");
    assert_eq!(p.cm.ttl, Some(5));
}

#[test]
fn control_flags_switched_on_off_on_between_reads_take_effect() {
    let (rx, tx, dst) = joined_pair(ALL_IP);
    tx.set_multicast_ttl(4).unwrap();
    tx.set_tos(AF11).unwrap();

    send(&tx, b"1 on", dst);
    let p = recv_one(&rx, "packet 1");
    assert_eq!(p.payload, b"1 on");
    assert_eq!(p.cm.ttl, Some(4));
    assert_eq!(p.cm.tos, Some(AF11));
    assert_eq!(p.cm.dst, Some(*dst.ip()));
    assert_eq!(p.cm.ifindex, Some(1));
    assert_eq!(p.cm.src, Some(Ipv4Addr::LOCALHOST));

    rx.set_control_message(ALL_IP, false).unwrap();
    assert_eq!(rx.control_flags(), ControlFlags::NONE);
    send(&tx, b"2 off", dst);
    let p = recv_one(&rx, "packet 2");
    assert_eq!(p.payload, b"2 off");
    assert!(p.cm.is_empty(), "flags are off but got {:?}", p.cm);
    // Had the kernel options stayed on, their messages would not have fit
    // the (empty) control buffer.
    assert!(
        !p.flags.control_truncated,
        "kernel control messages still switched on"
    );
    assert_eq!(
        p.src,
        tx.local_addr().unwrap(),
        "the source address is always returned"
    );

    rx.set_control_message(ALL_IP, true).unwrap();
    assert_eq!(rx.control_flags(), ALL_IP);
    send(&tx, b"3 on again", dst);
    let p = recv_one(&rx, "packet 3");
    assert_eq!(p.payload, b"3 on again");
    assert_eq!(p.cm.ttl, Some(4));
    assert_eq!(p.cm.tos, Some(AF11));
    assert_eq!(p.cm.dst, Some(*dst.ip()));
    assert_eq!(p.cm.ifindex, Some(1));
    assert_eq!(p.cm.src, Some(Ipv4Addr::LOCALHOST));

    // set_control_flags sets exactly what it is given.
    rx.set_control_flags(ControlFlags::TTL).unwrap();
    send(&tx, b"4 ttl only", dst);
    let p = recv_one(&rx, "packet 4");
    assert_eq!(p.cm.ttl, Some(4));
    assert_eq!(
        (p.cm.tos, p.cm.dst, p.cm.ifindex, p.cm.src),
        (None, None, None, None)
    );
    assert!(!p.flags.control_truncated);
}

/// Go's `SetControlMessage(FlagDst, false)` also stops `FlagInterface`
/// (they share `IP_PKTINFO`); here each flag is independent.
#[test]
fn dst_off_alone_keeps_the_interface_reported() {
    let flags = ControlFlags::DST | ControlFlags::INTERFACE;
    let (rx, tx, dst) = joined_pair(flags);

    rx.set_control_message(ControlFlags::DST, false).unwrap();
    assert_eq!(rx.control_flags(), ControlFlags::INTERFACE);
    send(&tx, b"interface only", dst);
    let p = recv_one(&rx, "the interface-only packet");
    assert_eq!(p.cm.dst, None);
    assert_eq!(
        p.cm.ifindex,
        Some(1),
        "INTERFACE is still on: ifindex must be reported"
    );

    // The other way round: INTERFACE off alone keeps DST.
    rx.set_control_flags(flags).unwrap();
    rx.set_control_message(ControlFlags::INTERFACE, false)
        .unwrap();
    send(&tx, b"dst only", dst);
    let p = recv_one(&rx, "the dst-only packet");
    assert_eq!(
        p.cm.dst,
        Some(*dst.ip()),
        "DST is still on: the group must be reported"
    );
    assert_eq!(p.cm.ifindex, None);

    // Both off: the shared IP_PKTINFO switch goes off too.
    rx.set_control_message(ControlFlags::DST, false).unwrap();
    assert!(rx.control_flags().is_empty());
    send(&tx, b"neither", dst);
    let p = recv_one(&rx, "the bare packet");
    assert!(p.cm.is_empty());
    assert!(
        !p.flags.control_truncated,
        "IP_PKTINFO was left on in the kernel"
    );
}

#[test]
fn multicast_interface_getter_returns_what_was_set() {
    let lo = Interface::loopback().resolve().unwrap();
    assert_eq!(
        (lo.index, lo.name.as_str(), lo.addr),
        (1, "lo", Some(Ipv4Addr::LOCALHOST))
    );

    for how in [
        Interface::name("lo"),
        Interface::index(1),
        Interface::addr(Ipv4Addr::LOCALHOST),
        "lo".parse().unwrap(),
        "1".parse().unwrap(),
    ] {
        let conn = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(
            conn.multicast_interface().unwrap(),
            None,
            "nothing set yet ({how})"
        );
        conn.set_multicast_interface(&how).unwrap();
        let got = conn.multicast_interface().unwrap();
        assert_eq!(got.as_ref(), Some(&lo), "set by {how}");
        // The kernel really holds lo's address.
        assert_eq!(
            conn.socket().multicast_if_v4().unwrap(),
            Ipv4Addr::LOCALHOST,
            "set by {how}"
        );
        // Routed clears it again.
        conn.set_multicast_interface(&Interface::Routed).unwrap();
        assert_eq!(
            conn.multicast_interface().unwrap(),
            None,
            "cleared after {how}"
        );
        assert_eq!(
            conn.socket().multicast_if_v4().unwrap(),
            Ipv4Addr::UNSPECIFIED
        );
    }

    // Set without the crate: the getter still reads the kernel.
    let conn = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    conn.socket()
        .set_multicast_if_v4(&Ipv4Addr::LOCALHOST)
        .unwrap();
    assert_eq!(conn.multicast_interface().unwrap(), Some(lo.clone()));

    // The sender helper sets lo.
    let tx = PacketConn::multicast_sender(&Interface::loopback()).unwrap();
    assert_eq!(tx.multicast_interface().unwrap(), Some(lo));
    assert_eq!(*tx.local_addr().unwrap().ip(), Ipv4Addr::LOCALHOST);
}

/// `IP_MULTICAST_LOOP` is read and written through the kernel.
///
/// Its effect cannot be observed on lo: Linux gives routes out of a
/// loopback device `ip_output`, not `ip_mc_output`, so `IP_MULTICAST_LOOP`
/// (and the "TTL 0 stays on the host" rule) is never consulted there, and a
/// receiver on this host gets the packet with the option on or off.
/// Observing it needs a non-loopback interface (a dummy interface in a
/// private network namespace), which these tests do not send on.
#[test]
fn multicast_loop_is_set_and_read_back() {
    let tx = util::lo_sender();
    assert!(
        tx.multicast_loop().unwrap(),
        "multicast_sender turns loop on"
    );
    tx.set_multicast_loop(false).unwrap();
    assert!(!tx.multicast_loop().unwrap());
    assert!(
        !tx.socket().multicast_loop_v4().unwrap(),
        "the kernel still has loop on"
    );
    tx.set_multicast_loop(true).unwrap();
    assert!(tx.multicast_loop().unwrap());
    assert!(tx.socket().multicast_loop_v4().unwrap());
    tx.socket().set_multicast_loop_v4(false).unwrap();
    assert!(!tx.multicast_loop().unwrap());

    // A fresh socket has the kernel default, on.
    let fresh = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    assert!(fresh.multicast_loop().unwrap());
    assert_eq!(fresh.multicast_ttl().unwrap(), 1);
    assert!(
        fresh.multicast_all().unwrap(),
        "IP_MULTICAST_ALL is on by default in Linux"
    );
}

/// Every flag at once: the control buffer sized from the flags holds every
/// message the kernel sends, and each field is filled.
#[test]
fn all_flags_fit_the_control_buffer() {
    let (rx, tx, dst) = joined_pair(ControlFlags::ALL);
    tx.set_multicast_ttl(6).unwrap();
    tx.set_tos(AF11).unwrap();
    let before = SystemTime::now();
    send(&tx, b"everything", dst);
    let p = recv_one(&rx, "the packet with every control message");
    assert_eq!(p.payload, b"everything");
    assert!(
        !p.flags.control_truncated,
        "control messages were lost: {}",
        p.cm
    );
    assert_eq!(p.cm.ttl, Some(6));
    assert_eq!(p.cm.tos, Some(AF11));
    assert_eq!(p.cm.dst, Some(*dst.ip()));
    assert_eq!(p.cm.ifindex, Some(1));
    assert_eq!(p.cm.src, Some(Ipv4Addr::LOCALHOST));
    assert!(p.cm.local.is_some(), "LOCAL asked for: {}", p.cm);
    assert_eq!(p.cm.drops, None, "nothing was dropped");
    assert_eq!(p.cm.gro_segment, None, "nothing was coalesced");
    let ts = p.cm.timestamp.expect("TIMESTAMP asked for");
    // A sanity bound only (the clock is the kernel's realtime clock).
    let slack = Duration::from_secs(60);
    assert!(
        ts + slack > before && ts < SystemTime::now() + slack,
        "timestamp {ts:?}"
    );
    assert!(p.cm.timestamp_nanos().is_some());
}

#[test]
fn truncated_payload_is_reported() {
    let (rx, tx, dst) = joined_pair(ControlFlags::DST);
    let big: Vec<u8> = (0..100u8).collect();

    send(&tx, &big, dst);
    let p = util::recv_timeout_buf(&rx, util::DEADLINE, 10).expect("the 100-byte packet");
    assert_eq!(p.payload, &big[..10], "the first 10 bytes");
    assert!(
        p.flags.truncated,
        "a 100-byte payload in a 10-byte buffer must be reported as truncated"
    );
    assert!(!p.flags.control_truncated);
    assert_eq!(
        p.cm.dst,
        Some(*dst.ip()),
        "the control message survives truncation"
    );

    // Exactly fitting is not truncated.
    send(&tx, &big[..10], dst);
    let p = util::recv_timeout_buf(&rx, util::DEADLINE, 10).expect("the 10-byte packet");
    assert_eq!(p.payload, &big[..10]);
    assert!(!p.flags.truncated);
}
