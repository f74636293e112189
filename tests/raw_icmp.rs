//! ICMP through `RawConn` (whole packets, `IP_HDRINCL`): an echo reply
//! with the right header, and the ICMP filter (blocking, unblocking, types
//! 32 and above refused). (`ip-sniff` is tested with the tools, in
//! tools/tests/ip_sniff.rs.)
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
use std::net::Ipv4Addr;
use std::time::Duration;

use ipv4_reactor::header::Protocol;
use ipv4_reactor::icmp::{self, IcmpFilter, IcmpType};
use ipv4_reactor::{ControlFlags, PacketConn, RawConn};
use util::raw::{
    checksum_recomputed_ok, default_ttl, is_echo, marker, ping, read_raw_until, unique_id, ICMP,
};
use util::{can_use_raw_sockets, DEADLINE};

#[test]
fn icmp_echo_reply_has_the_right_header() {
    if !can_use_raw_sockets("icmp_echo_reply_has_the_right_header") {
        return;
    }
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
    if !can_use_raw_sockets("icmp_filter_blocks_and_unblocks_echo_replies") {
        return;
    }
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
