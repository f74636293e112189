//! Across hosts: a sender and a receiver in private network namespaces,
//! joined by two veth links (see `tests/topology/mod.rs`). Needs root; each
//! test says loudly that it did not run without it, and CI (root) fails then.

mod topology;
mod util;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use ipv4_reactor::header::Header;
use ipv4_reactor::{netns, ControlFlags, ControlMessage, Interface, PacketConn, RawConn};
use topology::{Topology, EN0, EN0_SECOND, S0};
use util::SETTLE;

fn in_ns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
    netns::in_namespace(ns, f).expect("entering a test namespace")
}

/// Receives until `timeout` passes with nothing new; returns (payload, cm).
fn collect(conn: &PacketConn, timeout: Duration) -> Vec<(Vec<u8>, ControlMessage)> {
    conn.socket().set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(meta) = conn.recv_from(&mut buf) {
        out.push((buf[..meta.len].to_vec(), meta.cm));
    }
    out
}

fn texts(got: &[(Vec<u8>, ControlMessage)]) -> Vec<String> {
    got.iter()
        .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
        .collect()
}

fn sender(topo: &Topology, iface: &str) -> PacketConn {
    in_ns(&topo.snd, || {
        PacketConn::multicast_sender(&Interface::name(iface))
    })
    .unwrap()
}

fn ifindex(ns: &str, name: &str) -> u32 {
    in_ns(ns, || Interface::name(name).resolve()).unwrap().index
}

#[test]
fn one_socket_joined_on_two_interfaces_tells_them_apart() {
    let Some(topo) = Topology::new("twoif") else {
        return;
    };
    let group = Ipv4Addr::new(239, 255, 90, 1);
    let rx = in_ns(&topo.rcv, || -> std::io::Result<PacketConn> {
        let rx = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        rx.set_multicast_all(false)?;
        rx.join_group(&Interface::name("en0"), group)?;
        rx.join_group(&Interface::name("en1"), group)?;
        rx.set_control_flags(ControlFlags::DST | ControlFlags::INTERFACE)?;
        Ok(rx)
    })
    .unwrap();
    let dst = SocketAddrV4::new(group, rx.local_addr().unwrap().port());
    let (en0, en1) = (ifindex(&topo.rcv, "en0"), ifindex(&topo.rcv, "en1"));
    assert_ne!(en0, en1);
    let (tx0, tx1) = (sender(&topo, "s0"), sender(&topo, "s1"));
    std::thread::sleep(SETTLE);

    tx0.send_to(b"via-s0", None, dst).unwrap();
    tx1.send_to(b"via-s1", None, dst).unwrap();
    let got = collect(&rx, Duration::from_millis(500));
    assert_eq!(got.len(), 2, "got {:?}", texts(&got));
    for (payload, cm) in &got {
        assert_eq!(cm.dst, Some(group));
        match payload.as_slice() {
            b"via-s0" => assert_eq!(cm.ifindex, Some(en0)),
            b"via-s1" => assert_eq!(cm.ifindex, Some(en1)),
            other => panic!("unexpected payload {other:?}"),
        }
    }

    // Leave on en0: only en1's copy keeps coming.
    rx.leave_group(&Interface::name("en0"), group).unwrap();
    std::thread::sleep(SETTLE);
    tx0.send_to(b"via-s0", None, dst).unwrap();
    tx1.send_to(b"via-s1", None, dst).unwrap();
    let got = collect(&rx, Duration::from_millis(500));
    assert_eq!(texts(&got), ["via-s1"]);
    assert_eq!(got[0].1.ifindex, Some(en1));
}

/// A receiver of `group` across the link (on en0), one on the sending host
/// itself (on s0, same port), and a sender on s0; returns them with the
/// destination, after the joins settled.
fn both_sides(
    topo: &Topology,
    group: Ipv4Addr,
) -> (PacketConn, PacketConn, PacketConn, SocketAddrV4) {
    let remote = in_ns(&topo.rcv, || {
        PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), Interface::name("en0"))
            .nonblocking(false)
            .build()
    })
    .unwrap();
    let port = remote.local_addr().unwrap().port();
    let local = in_ns(&topo.snd, || {
        PacketConn::multicast_receiver(SocketAddrV4::new(group, port), Interface::name("s0"))
            .nonblocking(false)
            .build()
    })
    .unwrap();
    let tx = sender(topo, "s0");
    std::thread::sleep(SETTLE);
    let dst = SocketAddrV4::new(group, port);
    (remote, local, tx, dst)
}

#[test]
fn multicast_ttl_zero_stays_on_the_host_and_one_crosses_the_link() {
    let Some(topo) = Topology::new("ttl") else {
        return;
    };
    let group = Ipv4Addr::new(239, 255, 90, 2);
    let (remote, local, tx, dst) = both_sides(&topo, group);

    tx.set_multicast_ttl(0).unwrap();
    tx.send_to(b"ttl0", None, dst).unwrap();
    assert_eq!(
        texts(&collect(&local, Duration::from_millis(400))),
        ["ttl0"]
    );
    assert!(collect(&remote, Duration::from_millis(400)).is_empty());

    tx.set_multicast_ttl(1).unwrap();
    tx.send_to(b"ttl1", None, dst).unwrap();
    assert_eq!(
        texts(&collect(&remote, Duration::from_millis(400))),
        ["ttl1"]
    );
    assert_eq!(
        texts(&collect(&local, Duration::from_millis(400))),
        ["ttl1"]
    );
}

#[test]
fn multicast_all_off_keeps_a_wildcard_socket_to_its_own_groups() {
    let Some(topo) = Topology::new("mcall") else {
        return;
    };
    let group = Ipv4Addr::new(239, 255, 90, 3);
    let (joined, bystander) = in_ns(
        &topo.rcv,
        || -> std::io::Result<(PacketConn, PacketConn)> {
            let joined =
                PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), Interface::name("en0"))
                    .nonblocking(false)
                    .build()?;
            let port = joined.local_addr()?.port();
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
            socket.set_reuse_address(true)?;
            socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
            Ok((joined, PacketConn::from(socket)))
        },
    )
    .unwrap();
    let dst = SocketAddrV4::new(group, joined.local_addr().unwrap().port());
    let tx = sender(&topo, "s0");
    std::thread::sleep(SETTLE);

    // Linux's default: the wildcard socket sees a group it never joined.
    assert!(bystander.multicast_all().unwrap());
    tx.send_to(b"all-on", None, dst).unwrap();
    assert_eq!(
        texts(&collect(&joined, Duration::from_millis(400))),
        ["all-on"]
    );
    assert_eq!(
        texts(&collect(&bystander, Duration::from_millis(400))),
        ["all-on"]
    );

    bystander.set_multicast_all(false).unwrap();
    tx.send_to(b"all-off", None, dst).unwrap();
    assert_eq!(
        texts(&collect(&joined, Duration::from_millis(400))),
        ["all-off"]
    );
    assert!(collect(&bystander, Duration::from_millis(400)).is_empty());
}

#[test]
fn replies_leave_from_the_address_the_request_arrived_on() {
    let Some(topo) = Topology::new("reply") else {
        return;
    };
    let server = in_ns(&topo.rcv, || -> std::io::Result<PacketConn> {
        let s = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        s.set_control_flags(ControlFlags::DST | ControlFlags::INTERFACE | ControlFlags::LOCAL)?;
        s.socket().set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(s)
    })
    .unwrap();
    let port = server.local_addr().unwrap().port();
    let client = in_ns(&topo.snd, || PacketConn::bind_udp(SocketAddrV4::new(S0, 0))).unwrap();
    client
        .socket()
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();

    let mut buf = [0u8; 64];
    for (target, with_cm, expect_src) in [
        (EN0_SECOND, true, EN0_SECOND),
        (EN0_SECOND, false, EN0),
        (EN0, true, EN0),
    ] {
        client
            .send_to(b"request", None, SocketAddrV4::new(target, port))
            .unwrap();
        let req = server.recv_from(&mut buf).unwrap();
        let (cm, from) = (req.cm, req.src);
        assert_eq!(cm.dst, Some(target));
        assert_eq!(cm.local, Some(target), "the local address it arrived on");
        let reply_cm = ControlMessage::send_from(cm.local.unwrap(), None);
        server
            .send_to(b"reply", with_cm.then_some(&reply_cm), from)
            .unwrap();
        let reply_from = client.recv_from(&mut buf).unwrap().src;
        assert_eq!(
            *reply_from.ip(),
            expect_src,
            "request to {target}, reply with control message: {with_cm}"
        );
    }
}

/// One IGMPv3 group record: (record type, group, sources).
type Record = (u8, Ipv4Addr, BTreeSet<Ipv4Addr>);

const ALLOW_NEW_SOURCES: u8 = 5;
const BLOCK_OLD_SOURCES: u8 = 6;
const CHANGE_TO_INCLUDE: u8 = 3;
const CHANGE_TO_EXCLUDE: u8 = 4;

/// Parses the group records of an IGMPv3 membership report (type 0x22).
fn parse_igmpv3(msg: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    if msg.len() < 8 || msg[0] != 0x22 {
        return out;
    }
    let records = u16::from_be_bytes([msg[6], msg[7]]) as usize;
    let mut at = 8;
    for _ in 0..records {
        if msg.len() < at + 8 {
            break;
        }
        let kind = msg[at];
        let aux = msg[at + 1] as usize * 4;
        let nsrc = u16::from_be_bytes([msg[at + 2], msg[at + 3]]) as usize;
        let group = Ipv4Addr::new(msg[at + 4], msg[at + 5], msg[at + 6], msg[at + 7]);
        let mut sources = BTreeSet::new();
        for i in 0..nsrc {
            let s = at + 8 + 4 * i;
            if let Some(b) = msg.get(s..s + 4) {
                sources.insert(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            }
        }
        out.push((kind, group, sources));
        at += 8 + 4 * nsrc + aux;
    }
    out
}

/// Reads the IGMP reports arriving on the sender's s0 for `window`, keeping
/// records of `groups` only (other groups, such as all-hosts, are ignored).
fn reports(igmp: &RawConn, groups: &[Ipv4Addr], window: Duration) -> Vec<Record> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if let Ok(p) = igmp.read_from(&mut buf) {
            let (header, payload): (Header, &[u8]) = (p.header, p.payload);
            assert_eq!(header.ttl, 1, "IGMP reports carry TTL 1");
            assert_eq!(header.dst, Ipv4Addr::new(224, 0, 0, 22));
            out.extend(
                parse_igmpv3(payload)
                    .into_iter()
                    .filter(|(_, g, _)| groups.contains(g)),
            );
        }
    }
    out
}

fn set(addrs: &[Ipv4Addr]) -> BTreeSet<Ipv4Addr> {
    addrs.iter().copied().collect()
}

#[test]
fn igmpv3_reports_carry_exactly_the_groups_and_sources_set() {
    let Some(topo) = Topology::new("igmp") else {
        return;
    };
    // The sender host listens for reports on s0 (all IGMPv3 routers group).
    let igmp = in_ns(&topo.snd, || -> std::io::Result<RawConn> {
        let raw = RawConn::new(2, Ipv4Addr::UNSPECIFIED)?;
        raw.join_group(&Interface::name("s0"), Ipv4Addr::new(224, 0, 0, 22))?;
        raw.socket()
            .set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(raw)
    })
    .unwrap();
    let rx = in_ns(&topo.rcv, || {
        PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
    })
    .unwrap();
    let en0 = Interface::name("en0");
    let window = Duration::from_millis(1500);
    let (a, b) = (S0, Ipv4Addr::new(192, 0, 2, 77));

    // Include mode: join (G1, a) then add b; leave a.
    let g1 = Ipv4Addr::new(232, 1, 1, 1);
    rx.join_source_group(&en0, g1, a).unwrap();
    let got = reports(&igmp, &[g1], window);
    assert!(got.contains(&(ALLOW_NEW_SOURCES, g1, set(&[a]))), "{got:?}");
    assert!(
        got.iter().all(|r| r == &(ALLOW_NEW_SOURCES, g1, set(&[a]))),
        "{got:?}"
    );

    rx.join_source_group(&en0, g1, b).unwrap();
    let got = reports(&igmp, &[g1], window);
    assert!(got.contains(&(ALLOW_NEW_SOURCES, g1, set(&[b]))), "{got:?}");

    rx.leave_source_group(&en0, g1, a).unwrap();
    let got = reports(&igmp, &[g1], window);
    assert!(got.contains(&(BLOCK_OLD_SOURCES, g1, set(&[a]))), "{got:?}");

    // Exclude mode: join G2 (any source), block b, unblock b, leave.
    let g2 = Ipv4Addr::new(239, 255, 91, 2);
    rx.join_group(&en0, g2).unwrap();
    let got = reports(&igmp, &[g2], window);
    assert!(got.contains(&(CHANGE_TO_EXCLUDE, g2, set(&[]))), "{got:?}");
    assert!(got.iter().all(|(_, _, s)| s.is_empty()), "{got:?}");

    rx.block_source(&en0, g2, b).unwrap();
    let got = reports(&igmp, &[g2], window);
    assert!(got.contains(&(BLOCK_OLD_SOURCES, g2, set(&[b]))), "{got:?}");

    rx.unblock_source(&en0, g2, b).unwrap();
    let got = reports(&igmp, &[g2], window);
    assert!(got.contains(&(ALLOW_NEW_SOURCES, g2, set(&[b]))), "{got:?}");

    rx.leave_group(&en0, g2).unwrap();
    let got = reports(&igmp, &[g2], window);
    assert!(got.contains(&(CHANGE_TO_INCLUDE, g2, set(&[]))), "{got:?}");
}

#[test]
fn multicast_loop_off_keeps_own_packets_from_local_receivers() {
    // On lo the kernel loops every multicast packet whatever this option
    // says; on a real interface it decides whether the sending host's own
    // sockets get a copy.
    let Some(topo) = Topology::new("loop") else {
        return;
    };
    let group = Ipv4Addr::new(239, 255, 90, 4);
    let (remote, local, tx, dst) = both_sides(&topo, group);

    tx.set_multicast_loop(false).unwrap();
    assert!(!tx.multicast_loop().unwrap());
    tx.send_to(b"loop-off", None, dst).unwrap();
    assert_eq!(
        texts(&collect(&remote, Duration::from_millis(400))),
        ["loop-off"]
    );
    assert!(collect(&local, Duration::from_millis(400)).is_empty());

    tx.set_multicast_loop(true).unwrap();
    tx.send_to(b"loop-on", None, dst).unwrap();
    assert_eq!(
        texts(&collect(&remote, Duration::from_millis(400))),
        ["loop-on"]
    );
    assert_eq!(
        texts(&collect(&local, Duration::from_millis(400))),
        ["loop-on"]
    );
}
