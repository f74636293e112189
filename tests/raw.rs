//! Integration tests of raw IPv4: `RawConn` (whole packets, `IP_HDRINCL`),
//! raw `ip4:PROTO` `PacketConn`s, the ICMP filter, classic BPF filters, and
//! raw sockets in the reactor. (`ip-sniff` is tested with the tools, in
//! tools/tests/ip_sniff.rs.)
//!
//! Every test that needs a raw socket first checks that it can make one;
//! without CAP_NET_RAW it says so through `util::skipped_needs_root` (past
//! the harness's capture) and returns. CI runs as root and fails on that
//! line, so there every test really runs.
//!
//! Network safety: every packet goes to 127.0.0.0/8. Raw sockets see every
//! packet of their protocol on the host, and the tests of this file run in
//! parallel, so each test picks its own packets out by ICMP id, payload
//! marker or destination address.

mod util;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipv4_reactor::header::{Header, HeaderError, Protocol, MAX_OPTIONS_LEN};
use ipv4_reactor::icmp::{self, IcmpFilter, IcmpType};
use ipv4_reactor::netns;
use ipv4_reactor::reactor::{Context, Reactor};
use ipv4_reactor::{
    ControlFlags, ControlMessage, Packet, PacketConn, RawConn, RawPacket, SockFilter,
};
use util::DEADLINE;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The experimental IP protocol number (RFC 3692) used by these tests.
const EXP: u8 = 253;
const ICMP: u8 = 1;

macro_rules! require_raw {
    ($name:expr) => {
        if !util::can_use_raw_sockets($name) {
            return;
        }
    };
}

/// An ICMP echo id (or marker seed) no other test of this run uses.
fn unique_id() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    (std::process::id() as u16)
        .wrapping_mul(101)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(7))
}

/// A payload that identifies one packet of one test.
fn marker(test: &str, n: usize) -> Vec<u8> {
    format!("{test}/{}/{}/{n}", std::process::id(), unique_id()).into_bytes()
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads whole packets from `raw` until `pick` accepts one or `within`
/// passes (then `None`). Packets `pick` rejects are other tests' traffic.
fn read_raw_until<T>(
    raw: &RawConn,
    within: Duration,
    mut pick: impl FnMut(&Header, &[u8], &ControlMessage) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        raw.socket()
            .set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .expect("SO_RCVTIMEO");
        match raw.read_from(&mut buf) {
            Ok(p) => {
                if let Some(t) = pick(&p.header, p.payload, &p.meta.cm) {
                    return Some(t);
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("reading a raw packet: {e}"),
        }
    }
}

/// Like [`read_raw_until`] for a `PacketConn` (UDP or `ip4:PROTO`).
fn read_conn_until<T>(
    conn: &PacketConn,
    within: Duration,
    mut pick: impl FnMut(&[u8], &ControlMessage, SocketAddrV4) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        conn.socket()
            .set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .expect("SO_RCVTIMEO");
        match conn.recv_from(&mut buf) {
            Ok(meta) => {
                if let Some(t) = pick(&buf[..meta.len], &meta.cm, meta.src) {
                    return Some(t);
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("receiving: {e}"),
        }
    }
}

/// Whether a header's checksum field is the one a correct emit computes.
fn checksum_recomputed_ok(h: &Header) -> bool {
    let bytes = h.to_bytes().expect("re-emitting a received header");
    u16::from_be_bytes([bytes[10], bytes[11]]) == h.checksum
}

/// Writes one ICMP echo request to 127.0.0.1 through `raw`.
fn ping(raw: &RawConn, id: u16, seq: u16, data: &[u8], tos: u8) {
    let request = icmp::build_echo_request(id, seq, data);
    let mut h = Header::new(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, Protocol::Icmp);
    h.tos = tos;
    h.ttl = 64;
    let n = raw
        .write_to(&h, &request, None)
        .expect("writing an echo request");
    assert_eq!(n, 20 + request.len(), "bytes written, header included");
}

/// Picks the echo message of type `ty` with our id, seq and data.
fn is_echo(ty: IcmpType, id: u16, seq: u16, data: &[u8]) -> impl Fn(&Header, &[u8]) -> bool {
    let data = data.to_vec();
    move |h, payload| {
        h.protocol == Protocol::Icmp
            && icmp::parse_echo(payload)
                .is_ok_and(|e| e.ty == ty && e.id == id && e.seq == seq && e.data == data)
    }
}

fn default_ttl() -> u8 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_default_ttl")
        .expect("reading net.ipv4.ip_default_ttl")
        .trim()
        .parse()
        .expect("net.ipv4.ip_default_ttl is a number")
}

// ---------------------------------------------------------------------------
// ICMP echo through RawConn
// ---------------------------------------------------------------------------

#[test]
fn icmp_echo_reply_has_the_right_header() {
    require_raw!("icmp_echo_reply_has_the_right_header");
    let raw = RawConn::new(ICMP, Ipv4Addr::UNSPECIFIED).unwrap();
    raw.set_control_message(ControlFlags::DST | ControlFlags::INTERFACE, true)
        .unwrap();
    let id = unique_id();
    let data = marker("echo", 1);
    ping(&raw, id, 1, &data, 0x10);

    let matches_reply = is_echo(IcmpType::EchoReply, id, 1, &data);
    let (h, echo_data, echo_ok, payload_len, cm) = read_raw_until(&raw, DEADLINE, |h, p, cm| {
        matches_reply(h, p).then(|| {
            let e = icmp::parse_echo(p).unwrap();
            (h.clone(), e.data.to_vec(), e.checksum_ok, p.len(), *cm)
        })
    })
    .expect("no echo reply from 127.0.0.1 within 3 s");

    assert_eq!(h.version, 4);
    assert_eq!(h.src, Ipv4Addr::LOCALHOST);
    assert_eq!(h.dst, Ipv4Addr::LOCALHOST);
    assert_eq!(h.protocol, Protocol::Icmp);
    assert_eq!(h.header_len(), 20, "the kernel's reply has no options");
    assert_eq!(usize::from(h.total_len), 20 + payload_len);
    assert_eq!(payload_len, icmp::ECHO_HEADER_LEN + data.len());
    assert_eq!(
        h.ttl,
        default_ttl(),
        "the kernel answers with net.ipv4.ip_default_ttl"
    );
    assert_eq!(
        h.tos, 0x10,
        "the kernel's echo reply keeps the request's TOS"
    );
    assert_eq!(h.frag_offset, 0);
    assert!(!h.flags.more_fragments());
    assert!(
        checksum_recomputed_ok(&h),
        "bad header checksum {:#x}",
        h.checksum
    );
    assert!(echo_ok, "bad ICMP checksum in the reply");
    assert_eq!(echo_data, data);
    assert_eq!(cm.dst, Some(Ipv4Addr::LOCALHOST));
    assert_eq!(cm.ifindex, Some(1), "arrived on lo");
}

#[test]
fn icmp_filter_blocks_and_unblocks_echo_replies() {
    require_raw!("icmp_filter_blocks_and_unblocks_echo_replies");
    let filtered = RawConn::new(ICMP, Ipv4Addr::UNSPECIFIED).unwrap();
    let control = RawConn::new(ICMP, Ipv4Addr::UNSPECIFIED).unwrap();
    assert_eq!(
        filtered.icmp_filter().unwrap(),
        IcmpFilter::accept_all(),
        "a new socket filters nothing"
    );

    let mut filter = IcmpFilter::accept_all();
    filter.block(IcmpType::EchoReply).unwrap();
    filtered.set_icmp_filter(&filter).unwrap();
    assert_eq!(filtered.icmp_filter().unwrap(), filter, "read back");
    assert_eq!(filtered.icmp_filter().unwrap().mask(), 1);

    // Blocked: the positive control sees the reply, the filtered socket
    // sees the request (so it is alive) but never the reply.
    let id = unique_id();
    ping(&control, id, 1, b"blocked?", 0);
    let reply = is_echo(IcmpType::EchoReply, id, 1, b"blocked?");
    assert!(
        read_raw_until(&control, DEADLINE, |h, p, _| reply(h, p).then_some(())).is_some(),
        "positive control: the unfiltered socket got no echo reply"
    );
    let request = is_echo(IcmpType::Echo, id, 1, b"blocked?");
    let mut saw_request = false;
    let leaked = read_raw_until(&filtered, Duration::from_millis(500), |h, p, _| {
        saw_request |= request(h, p);
        reply(h, p).then_some(())
    });
    assert!(
        leaked.is_none(),
        "an echo reply went through a filter that blocks it"
    );
    assert!(
        saw_request,
        "the filtered socket should still see the echo request, which is not blocked"
    );

    // Unblocked: the reply comes through.
    filter.accept(IcmpType::EchoReply).unwrap();
    filtered.set_icmp_filter(&filter).unwrap();
    assert_eq!(filtered.icmp_filter().unwrap(), IcmpFilter::accept_all());
    ping(&control, id, 2, b"let through", 0);
    let reply2 = is_echo(IcmpType::EchoReply, id, 2, b"let through");
    assert!(
        read_raw_until(&filtered, DEADLINE, |h, p, _| reply2(h, p).then_some(())).is_some(),
        "after accepting echo replies again, none came through"
    );

    // Blocking everything but echo replies, as the icmp_echo example does.
    let mut only_replies = IcmpFilter::block_all();
    only_replies.accept(0u8).unwrap();
    filtered.set_icmp_filter(&only_replies).unwrap();
    assert_eq!(filtered.icmp_filter().unwrap().mask(), !1u32);
    ping(&control, id, 3, b"only replies", 0);
    let reply3 = is_echo(IcmpType::EchoReply, id, 3, b"only replies");
    let request3 = is_echo(IcmpType::Echo, id, 3, b"only replies");
    let got = read_raw_until(&filtered, DEADLINE, |h, p, _| {
        assert!(!request3(h, p), "an echo request went through block_all");
        reply3(h, p).then_some(())
    });
    assert!(
        got.is_some(),
        "the accepted echo reply did not come through"
    );
}

#[test]
fn icmp_filter_rejects_types_32_and_above() {
    let mut f = IcmpFilter::accept_all();
    for t in [32u8, 42, 43, 255] {
        let err = f.block(t).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains(&format!("ICMP type {t}")),
            "error should name type {t}: {err}"
        );
        let err = f.accept(t).unwrap_err();
        assert!(err.to_string().contains(&t.to_string()), "{err}");
        assert!(!f.will_block(t));
    }
    let err = f.block(IcmpType::ExtendedEcho).unwrap_err();
    assert!(err.to_string().contains("42"), "{err}");
    assert_eq!(f, IcmpFilter::accept_all(), "failed calls change nothing");
    f.block(31u8).unwrap();
    assert_eq!(f.mask(), 1 << 31);

    // ICMP_FILTER is for raw ICMP sockets only; elsewhere it is an error,
    // not a silent no-op.
    let udp = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let err = udp.set_icmp_filter(&f).unwrap_err();
    assert!(err.to_string().contains("ICMP_FILTER"), "{err}");
    assert!(udp.icmp_filter().is_err());
}

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
    require_raw!("ip4_packet_conn_strips_the_header_and_reports_control_messages");
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
    require_raw!("write_to_with_cm_dst_keeps_the_header_dst");
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
    require_raw!("write_to_routes_by_cm_dst");
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

// ---------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------

#[test]
fn malformed_input_is_an_error_never_a_panic() {
    require_raw!("malformed_input_is_an_error_never_a_panic");
    let reader = RawConn::new(EXP, Ipv4Addr::UNSPECIFIED).unwrap();
    let writer = RawConn::new(EXP, Ipv4Addr::LOCALHOST).unwrap();
    let base = Header::new(
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::LOCALHOST,
        Protocol::from(EXP),
    );

    // Options: 41 bytes is one too many.
    let mut h = base.clone();
    h.options = vec![1; MAX_OPTIONS_LEN + 1];
    let err = writer.write_to(&h, b"x", None).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("41"), "{err}");
    // Other bad headers.
    let mut h = base.clone();
    h.version = 6;
    assert!(writer.write_to(&h, b"x", None).is_err());
    let mut h = base.clone();
    h.frag_offset = 0x2000;
    assert!(writer.write_to(&h, b"x", None).is_err());
    let err = writer.write_to(&base, &vec![0u8; 65516], None).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

    // 40 bytes of options (NOPs) are fine and arrive as written.
    let mut h = base.clone();
    h.options = vec![1; MAX_OPTIONS_LEN];
    let payload = marker("options", 1);
    assert_eq!(
        writer.write_to(&h, &payload, None).unwrap(),
        60 + payload.len()
    );
    let got = read_raw_until(&reader, DEADLINE, |h, p, _| {
        (p == payload.as_slice()).then(|| h.clone())
    })
    .expect("the packet with 40 bytes of options did not arrive");
    assert_eq!(got.options, vec![1; MAX_OPTIONS_LEN]);
    assert_eq!(got.header_len(), 60);

    // Header::parse of every truncation of a real packet.
    let mut h = base.clone();
    h.options = vec![0x94, 0x04, 0, 0];
    h.set_payload_len(10).unwrap();
    let mut packet = h.to_bytes().unwrap();
    packet.extend_from_slice(&[7; 10]);
    assert!(Header::parse(&packet).is_ok());
    for n in 0..packet.len() {
        let err = Header::parse(&packet[..n]).unwrap_err();
        match n {
            0..20 => assert_eq!(err, HeaderError::Truncated { needed: 20, got: n }),
            20..24 => assert!(matches!(err, HeaderError::IhlBeyondBuffer { .. }), "{err}"),
            _ => assert!(
                matches!(err, HeaderError::TotalLenBeyondBuffer { .. }),
                "{err}"
            ),
        }
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
    }

    // A read buffer too small for the packet: cut payloads are reported by
    // their flags; a buffer that cannot even hold the header is an error.
    let payload = marker("short-buffer", 1);
    writer.write_to(&base, &payload, None).unwrap();
    writer.write_to(&base, &payload, None).unwrap();
    reader
        .socket()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut cut_seen = false;
    let mut short_seen = false;
    while !(cut_seen && short_seen) && Instant::now() < deadline {
        if !cut_seen {
            let mut small = [0u8; 24];
            match reader.read_from(&mut small) {
                Ok(RawPacket {
                    header: h,
                    payload: p,
                    meta,
                    ..
                }) => {
                    if h.protocol == Protocol::from(EXP) && p == &payload[..4] {
                        assert!(meta.truncated());
                        assert_eq!(meta.len, 24, "the bytes read, header included");
                        assert_eq!(usize::from(h.total_len), 20 + payload.len());
                        cut_seen = true;
                    }
                }
                Err(e) if is_timeout(&e) => {}
                // Another packet whose header (with options) needs more
                // than 24 bytes: cut, not malformed.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
                Err(e) => panic!("a cut packet should be Ok with flags: {e}"),
            }
        } else {
            let mut tiny = [0u8; 8];
            match reader.read_from(&mut tiny) {
                Ok(p) => panic!("8 bytes cannot hold a header, got {}", p.header),
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    // The kernel cut the packet: reported as truncated.
                    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
                    assert!(e.to_string().contains("truncated"), "{e}");
                    short_seen = true;
                }
            }
        }
    }
    assert!(cut_seen, "never read our packet into a 24-byte buffer");
    assert!(short_seen, "never read a packet into an 8-byte buffer");
}

// ---------------------------------------------------------------------------
// RawConn in the reactor
// ---------------------------------------------------------------------------

#[test]
fn reactor_delivers_whole_raw_packets() {
    require_raw!("reactor_delivers_whole_raw_packets");
    let raw = RawConn::new(EXP, Ipv4Addr::UNSPECIFIED).unwrap();
    raw.set_control_message(ControlFlags::DST, true).unwrap();
    let mut reactor = Reactor::builder().build().unwrap();
    let (tx, rx) = mpsc::channel::<(Vec<u8>, ControlMessage)>();
    reactor
        .register(
            raw.into_packet_conn(),
            move |p: &Packet<'_>, _ctx: &mut Context<'_>| {
                let _ = tx.send((p.payload.to_vec(), p.cm));
            },
        )
        .unwrap();

    let writer = RawConn::new(EXP, Ipv4Addr::LOCALHOST).unwrap();
    let payloads: Vec<Vec<u8>> = (0..3).map(|i| marker("reactor", i)).collect();
    for (i, p) in payloads.iter().enumerate() {
        let mut h = Header::new(
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
            Protocol::from(EXP),
        );
        h.ttl = 30 + i as u8;
        writer.write_to(&h, p, None).unwrap();
    }

    let mut got: HashMap<usize, (Header, ControlMessage)> = HashMap::new();
    let deadline = Instant::now() + DEADLINE;
    while got.len() < payloads.len() && Instant::now() < deadline {
        reactor.turn(Some(Duration::from_millis(50))).unwrap();
        while let Ok((bytes, cm)) = rx.try_recv() {
            // Every packet of the raw socket starts with its IPv4 header.
            let (h, info) = Header::parse(&bytes)
                .unwrap_or_else(|e| panic!("a raw packet from the reactor: {e}"));
            assert!(info.checksum_ok, "bad header checksum in {h}");
            let body = &bytes[info.payload_range()];
            if let Some(i) = payloads.iter().position(|p| p.as_slice() == body) {
                got.insert(i, (h, cm));
            }
        }
    }
    assert_eq!(got.len(), 3, "the reactor delivered {} of 3", got.len());
    for (i, (h, cm)) in &got {
        assert_eq!(h.protocol, Protocol::from(EXP));
        assert_eq!(h.src, Ipv4Addr::LOCALHOST);
        assert_eq!(h.dst, Ipv4Addr::LOCALHOST);
        assert_eq!(h.ttl, 30 + *i as u8);
        assert_eq!(usize::from(h.total_len), 20 + payloads[*i].len());
        assert_eq!(cm.dst, Some(Ipv4Addr::LOCALHOST));
    }
}

// ---------------------------------------------------------------------------
// A read buffer shorter than the IP header
// ---------------------------------------------------------------------------

/// Reads from `read` until it fails with something other than a timeout
/// (packets it accepts are other tests' traffic, or fit); panics after
/// `DEADLINE`.
fn first_error<T>(mut read: impl FnMut() -> io::Result<T>) -> io::Error {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match read() {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return e,
        }
        assert!(Instant::now() < deadline, "no read failed");
    }
}

fn assert_truncated_error(e: &io::Error, buf_len: usize) {
    assert_eq!(
        e.kind(),
        io::ErrorKind::InvalidInput,
        "a packet cut by a short buffer is not malformed: {e}"
    );
    let text = e.to_string();
    assert!(text.contains("truncated"), "{text}");
    assert!(text.contains(&format!("{buf_len}-byte buffer")), "{text}");
}

#[test]
fn a_buffer_shorter_than_the_ip_header_reports_truncation_not_malformed() {
    require_raw!("a_buffer_shorter_than_the_ip_header_reports_truncation_not_malformed");
    let raw = RawConn::new(EXP, Ipv4Addr::LOCALHOST).unwrap();
    let ip4 = PacketConn::ip4(EXP, Ipv4Addr::LOCALHOST).unwrap();
    for s in [raw.socket(), ip4.socket()] {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    let writer = RawConn::new(EXP, Ipv4Addr::LOCALHOST).unwrap();
    let mut h = Header::new(
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::LOCALHOST,
        Protocol::from(EXP),
    );
    writer.write_to(&h, &marker("short", 1), None).unwrap();
    // 10 bytes: not even the fixed header.
    let e = first_error(|| raw.read_from(&mut [0u8; 10]).map(drop));
    assert_truncated_error(&e, 10);
    let e = first_error(|| ip4.recv_from(&mut [0u8; 10]));
    assert_truncated_error(&e, 10);

    // 22 bytes and a 24-byte header (4 bytes of options): the fixed part
    // fits, the options do not.
    h.options = vec![1, 1, 1, 0];
    writer.write_to(&h, &marker("short", 2), None).unwrap();
    let e = first_error(|| raw.read_from(&mut [0u8; 22]).map(drop));
    assert_truncated_error(&e, 22);
    let e = first_error(|| ip4.recv_from(&mut [0u8; 22]));
    assert_truncated_error(&e, 22);

    // A buffer that holds the header reads it, with the payload cut.
    writer.write_to(&h, &marker("short", 3), None).unwrap();
    let mut buf = [0u8; 30];
    let deadline = Instant::now() + DEADLINE;
    loop {
        match raw.read_from(&mut buf) {
            Ok(p) if p.header.options == h.options => {
                assert!(p.meta.truncated());
                assert_eq!(p.payload.len(), 6);
                assert_eq!(p.meta.len, 30);
                break;
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "the 30-byte read never came");
    }
}
