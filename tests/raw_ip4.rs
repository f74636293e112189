//! Raw `ip4:PROTO` sockets and where raw packets go: classic BPF filters,
//! `ip4:PROTO` `PacketConn`s (header stripped, control messages), and
//! `RawConn::write_to` with a control-message destination (kept in the
//! header, used for routing).
//!
//! Every test that needs a raw socket first checks that it can make one;
//! without CAP_NET_RAW it says so (`util::skipped_needs_root`) and returns.
//! CI runs as root and fails on that line, so there every test really runs.
//!
//! Network safety: every packet goes to 127.0.0.0/8 (or stays inside a
//! private namespace a test made). Raw sockets see every packet of their
//! protocol on the host, and tests run in parallel, so each test picks its
//! own packets out by ICMP id, payload marker or destination address.

mod util;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;

use ipv4_reactor::header::{Header, Protocol};
use ipv4_reactor::netns;
use ipv4_reactor::{ControlFlags, ControlMessage, PacketConn, RawConn, SockFilter};
use util::raw::{checksum_recomputed_ok, marker, read_conn_until, read_raw_until, EXP};
use util::{can_use_raw_sockets, DEADLINE};

// ---------------------------------------------------------------------------
// Classic BPF
// ---------------------------------------------------------------------------

/// Keeps UDP datagrams whose first payload byte is even. A UDP socket's
/// filter sees the packet from the UDP header on: payload byte 0 is at 8.
const KEEP_EVEN_FIRST_BYTE: [SockFilter; 4] = [
    SockFilter::new(0x30, 0, 0, 8),           // ldb [8]
    SockFilter::new(0x45, 1, 0, 1),           // jset #1, drop, keep
    SockFilter::new(0x06, 0, 0, 0xffff_ffff), // keep: ret #-1
    SockFilter::new(0x06, 0, 0, 0),           // drop: ret #0
];

/// Sends datagrams with first bytes 0..20 and then an end marker (first
/// byte 100, even), and returns the first bytes received before the marker.
fn send_0_to_19_and_collect(tx: &PacketConn, rx: &PacketConn) -> Vec<u8> {
    let dst = rx.local_addr().unwrap();
    for i in 0..20u8 {
        tx.send_to(&[i, 0xab, 0xcd, i], None, dst).unwrap();
    }
    tx.send_to(&[100, b'E', b'N', b'D'], None, dst).unwrap();
    let mut firsts = Vec::new();
    let done = read_conn_until(rx, DEADLINE, |p, _, _| {
        if p == [100, b'E', b'N', b'D'] {
            return Some(());
        }
        assert_eq!(p.len(), 4, "unexpected datagram {p:?}");
        firsts.push(p[0]);
        None
    });
    assert!(done.is_some(), "the end marker never arrived");
    firsts
}

#[test]
fn bpf_filter_keeps_only_even_first_bytes() {
    // SO_ATTACH_FILTER needs no privilege: this test runs as any user.
    let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    rx.attach_filter(&KEEP_EVEN_FIRST_BYTE).unwrap();
    let evens: Vec<u8> = (0..20).step_by(2).collect();
    assert_eq!(send_0_to_19_and_collect(&tx, &rx), evens);

    rx.detach_filter().unwrap();
    let all: Vec<u8> = (0..20).collect();
    assert_eq!(send_0_to_19_and_collect(&tx, &rx), all);

    // Attaching again works, and so does replacing a program.
    rx.attach_filter(&KEEP_EVEN_FIRST_BYTE).unwrap();
    rx.attach_filter(&[SockFilter::new(0x06, 0, 0, 0xffff_ffff)])
        .unwrap();
    assert_eq!(send_0_to_19_and_collect(&tx, &rx), all);
}

#[test]
fn bpf_bad_programs_are_errors_not_panics() {
    let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let err = rx.attach_filter(&[]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("at least one"), "{err}");

    let too_long: Vec<SockFilter> = (0..=ipv4_reactor::BPF_MAX_INSTRUCTIONS)
        .map(|_| SockFilter::new(0x06, 0, 0, 0))
        .collect();
    let err = rx.attach_filter(&too_long).unwrap_err();
    assert!(err.to_string().contains("4097"), "{err}");

    // The kernel's verifier refuses these; the error says what was done.
    let no_return = [SockFilter::new(0x30, 0, 0, 8)]; // ldb [8], no ret
    assert!(rx.attach_filter(&no_return).is_err());
    let jump_out = [
        SockFilter::new(0x15, 9, 9, 0), // jeq #0, +9, +9: past the end
        SockFilter::new(0x06, 0, 0, 0),
    ];
    let err = rx.attach_filter(&jump_out).unwrap_err();
    assert!(err.to_string().contains("BPF"), "{err}");

    // The socket still works with no filter.
    let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let all: Vec<u8> = (0..20).collect();
    assert_eq!(send_0_to_19_and_collect(&tx, &rx), all);
}

// ---------------------------------------------------------------------------
// ip4:PROTO PacketConn
// ---------------------------------------------------------------------------

#[test]
fn ip4_packet_conn_strips_the_header_and_reports_control_messages() {
    if !can_use_raw_sockets("ip4_packet_conn_strips_the_header_and_reports_control_messages") {
        return;
    }
    let reader = PacketConn::ip4(EXP, Ipv4Addr::LOCALHOST).unwrap();
    assert!(reader.strips_ip_header());
    reader
        .set_control_message(
            ControlFlags::TTL | ControlFlags::TOS | ControlFlags::DST | ControlFlags::INTERFACE,
            true,
        )
        .unwrap();
    let writer = RawConn::new(EXP, Ipv4Addr::LOCALHOST).unwrap();
    assert!(!writer.strips_ip_header());

    let payload = marker("ip4", 1);
    let mut h = Header::new(
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::LOCALHOST,
        Protocol::from(EXP),
    );
    h.ttl = 42;
    h.tos = 0x28;
    writer.write_to(&h, &payload, None).unwrap();

    let (cm, src) = read_conn_until(&reader, DEADLINE, |p, cm, src| {
        (p == payload.as_slice()).then_some((*cm, src))
    })
    .expect("the ip4:253 socket did not get the packet, or got it with its header");
    assert_eq!(cm.ttl, Some(42));
    assert_eq!(cm.tos, Some(0x28));
    assert_eq!(cm.dst, Some(Ipv4Addr::LOCALHOST));
    assert_eq!(cm.ifindex, Some(1));
    assert_eq!(src, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));

    // Writing on the ip4 socket: the kernel makes the header, from the
    // socket's options and the control message.
    let header_reader = RawConn::new(EXP, Ipv4Addr::UNSPECIFIED).unwrap();
    let payload2 = marker("ip4", 2);
    reader.set_ttl(9).unwrap();
    let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    assert_eq!(
        reader.send_to(&payload2, None, dst).unwrap(),
        payload2.len(),
        "an ip4 socket writes the payload only"
    );
    let mut cm = ControlMessage::default();
    cm.ttl = Some(3);
    let payload3 = marker("ip4", 3);
    reader.send_to(&payload3, Some(&cm), dst).unwrap();
    for (p, ttl) in [(&payload2, 9), (&payload3, 3)] {
        let h = read_raw_until(&header_reader, DEADLINE, |h, got, _| {
            (got == p.as_slice()).then(|| h.clone())
        })
        .expect("the raw reader did not see the ip4 socket's packet");
        assert_eq!(h.ttl, ttl);
        assert_eq!(h.protocol, Protocol::from(EXP));
        assert_eq!(h.dst, Ipv4Addr::LOCALHOST);
        assert!(checksum_recomputed_ok(&h));
    }
}

// ---------------------------------------------------------------------------
// RawConn::write_to with a control message destination
// ---------------------------------------------------------------------------

#[test]
fn write_to_with_cm_dst_keeps_the_header_dst() {
    if !can_use_raw_sockets("write_to_with_cm_dst_keeps_the_header_dst") {
        return;
    }
    let reader = RawConn::new(EXP, Ipv4Addr::UNSPECIFIED).unwrap();
    reader
        .set_control_message(ControlFlags::DST | ControlFlags::INTERFACE, true)
        .unwrap();
    let writer = RawConn::new(EXP, Ipv4Addr::UNSPECIFIED).unwrap();

    // With IP_HDRINCL the header goes out as written: the packet is routed
    // by cm.dst (here 127.0.0.3), the header still says 127.0.0.2, and
    // that is what arrives (and what IP_PKTINFO reports).
    let payload = marker("cmdst", 1);
    let h = Header::new(
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(127, 0, 0, 2),
        Protocol::from(EXP),
    );
    let mut cm = ControlMessage::default();
    cm.dst = Some(Ipv4Addr::new(127, 0, 0, 3));
    let n = writer.write_to(&h, &payload, Some(&cm)).unwrap();
    assert_eq!(n, 20 + payload.len());
    let (got, got_cm) = read_raw_until(&reader, DEADLINE, |h, p, cm| {
        (p == payload.as_slice()).then(|| (h.clone(), *cm))
    })
    .expect("the packet written with cm.dst did not arrive");
    assert_eq!(
        got.dst,
        Ipv4Addr::new(127, 0, 0, 2),
        "header dst as written"
    );
    assert_eq!(got.src, Ipv4Addr::LOCALHOST);
    assert_eq!(got_cm.dst, Some(Ipv4Addr::new(127, 0, 0, 2)));
    assert_eq!(got_cm.ifindex, Some(1));
    assert!(checksum_recomputed_ok(&got));

    // A zero source is filled in by the kernel, from the route to cm.dst.
    let payload = marker("cmdst", 2);
    let h = Header::new(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(127, 0, 0, 2),
        Protocol::from(EXP),
    );
    writer.write_to(&h, &payload, Some(&cm)).unwrap();
    let got = read_raw_until(&reader, DEADLINE, |h, p, _| {
        (p == payload.as_slice()).then(|| h.clone())
    })
    .expect("the packet with a zero source did not arrive");
    assert!(got.src.is_loopback(), "source filled in: {}", got.src);
}

/// A network namespace made by `ip netns add` for one test, deleted when
/// dropped (also when the test panics).
struct PrivateNetns(String);

impl Drop for PrivateNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `f` on a new thread inside a fresh network namespace (only `lo`,
/// down), made with `ip netns add` and entered with
/// [`netns::in_namespace`]: the sockets `f` makes live there, and so do the
/// `ip` commands it runs. The namespace is deleted afterwards. A panic in
/// `f` is resumed on the calling thread.
fn in_private_netns<T: Send>(test: &str, f: impl FnOnce() -> T + Send) -> T {
    let name = format!("ipv4r{}-{test}", std::process::id());
    ip(&["netns", "add", &name]);
    let _delete = PrivateNetns(name.clone());
    netns::in_namespace(&name, f).unwrap_or_else(|e| panic!("entering {name}: {e}"))
}

/// Runs `ip ARGS` (iproute2) in the calling thread's network namespace.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running `ip {}` (iproute2 needed): {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn write_to_routes_by_cm_dst() {
    if !can_use_raw_sockets("write_to_routes_by_cm_dst") {
        return;
    }
    // In a private namespace whose only local route is 127.0.0.1 and
    // 127.0.0.3, the header's 127.0.0.2 is unroutable: a write that still
    // arrives was routed by cm.dst. Nothing here can leave the namespace
    // (it has no other interface).
    in_private_netns("cmdst", || {
        ip(&["link", "set", "lo", "up"]);
        ip(&[
            "route",
            "del",
            "local",
            "127.0.0.0/8",
            "dev",
            "lo",
            "table",
            "local",
        ]);
        ip(&[
            "route",
            "add",
            "local",
            "127.0.0.3/32",
            "dev",
            "lo",
            "table",
            "local",
        ]);
        let reader = RawConn::new(EXP, Ipv4Addr::UNSPECIFIED).unwrap();
        let writer = RawConn::new(EXP, Ipv4Addr::UNSPECIFIED).unwrap();
        let h = Header::new(
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::new(127, 0, 0, 2),
            Protocol::from(EXP),
        );

        // Without cm: the header's destination is used, and has no route.
        let err = writer.write_to(&h, b"no route", None).unwrap_err();
        assert_eq!(
            ipv4_reactor::Error::raw_os_error(&err),
            Some(libc::ENETUNREACH),
            "{err}"
        );
        assert!(err.to_string().contains("127.0.0.2"), "{err}");

        // With cm.dst: routed to 127.0.0.3, arrives with the header as written.
        let payload = marker("netns", 1);
        let mut cm = ControlMessage::default();
        cm.dst = Some(Ipv4Addr::new(127, 0, 0, 3));
        writer.write_to(&h, &payload, Some(&cm)).unwrap();
        let got = read_raw_until(&reader, DEADLINE, |h, p, _| {
            (p == payload.as_slice()).then(|| h.clone())
        })
        .expect("the packet routed by cm.dst did not arrive");
        assert_eq!(got.dst, Ipv4Addr::new(127, 0, 0, 2));
    });
}
