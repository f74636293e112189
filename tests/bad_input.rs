//! Bad input gives clear, typed errors and never panics: unicast groups,
//! multicast sources, unknown interfaces, membership limits, TTL 0, and
//! garbage control buffers. Nothing here sends a packet.

mod util;

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::OwnedFd;

use ipv4_reactor::{Conn, ControlFlags, ControlMessage, Error, Interface, Limit, PacketConn};
use util::lo;

/// Third octet of this file's groups (239.255.104.x); the limit tests use
/// 239.255.105.x and 232.104.x.
const TAG: u8 = 104;

fn socket() -> PacketConn {
    util::unicast_bound_receiver()
}

/// A `PacketConn` whose descriptor is not a socket at all (/dev/null): any
/// system call on it fails with ENOTSOCK, so an argument error from it
/// proves the argument was checked before any system call.
fn not_a_socket() -> PacketConn {
    PacketConn::from(OwnedFd::from(File::open("/dev/null").unwrap()))
}

fn assert_not_multicast(r: io::Result<impl std::fmt::Debug>, group: Ipv4Addr, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{what}: {e}");
    match Error::of(&e) {
        Some(Error::NotMulticast { group: g }) => assert_eq!(*g, group, "{what}"),
        other => panic!("{what}: expected NotMulticast, got {other:?} ({e})"),
    }
    assert!(
        e.to_string().contains(&group.to_string()),
        "{what}: message does not name {group}: {e}"
    );
}

fn assert_not_unicast_source(r: io::Result<impl std::fmt::Debug>, source: Ipv4Addr, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{what}: {e}");
    match Error::of(&e) {
        Some(Error::NotUnicastSource { source: s }) => assert_eq!(*s, source, "{what}"),
        other => panic!("{what}: expected NotUnicastSource, got {other:?} ({e})"),
    }
    assert!(
        e.to_string().contains(&source.to_string()),
        "{what}: message does not name {source}: {e}"
    );
}

#[test]
fn unicast_group_is_refused_before_any_system_call() {
    let ok_source = Ipv4Addr::new(127, 0, 0, 2);
    for conn in [socket(), not_a_socket()] {
        for group in [
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(240, 0, 0, 1),
        ] {
            assert_not_multicast(conn.join_group(&lo(), group), group, "join_group");
            assert_not_multicast(conn.leave_group(&lo(), group), group, "leave_group");
            assert_not_multicast(
                conn.join_source_group(&lo(), group, ok_source),
                group,
                "join_source_group",
            );
            assert_not_multicast(
                conn.leave_source_group(&lo(), group, ok_source),
                group,
                "leave_source_group",
            );
            assert_not_multicast(
                conn.block_source(&lo(), group, ok_source),
                group,
                "block_source",
            );
            assert_not_multicast(
                conn.unblock_source(&lo(), group, ok_source),
                group,
                "unblock_source",
            );
        }
    }
    // The not-a-socket really fails on a system call: the checks above did
    // not get that far.
    let e = not_a_socket().set_multicast_ttl(3).unwrap_err();
    assert_eq!(Error::raw_os_error(&e), Some(libc::ENOTSOCK), "{e}");

    let group = Ipv4Addr::new(10, 1, 2, 3);
    assert_not_multicast(
        PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), lo()).build(),
        group,
        "multicast_receiver",
    );
}

/// An interface lookup that fails for another reason than "no such
/// interface" must say so: on a descriptor that is not a socket the lookup
/// ioctl fails (ENOTTY), and lo exists all the same.
#[test]
fn interface_lookup_on_a_non_socket_reports_the_os_error() {
    let group = util::asm_group(TAG);
    for (what, r) in [
        (
            "join_group by name",
            not_a_socket().join_group(&lo(), group),
        ),
        (
            "join_group by index",
            not_a_socket().join_group(&Interface::index(1), group),
        ),
        (
            "set_multicast_interface",
            not_a_socket().set_multicast_interface(&lo()),
        ),
    ] {
        let e = r.expect_err(what);
        assert!(
            !matches!(
                Error::of(&e),
                Some(Error::UnknownInterfaceName(_) | Error::UnknownInterfaceIndex(_))
            ),
            "{what}: lo exists, yet the error says it does not: {e}"
        );
        assert!(
            matches!(
                Error::raw_os_error(&e),
                Some(libc::ENOTTY) | Some(libc::ENOTSOCK)
            ),
            "{what}: the kernel's error is lost: {e:?}"
        );
    }
}

#[test]
fn multicast_or_unspecified_source_is_refused() {
    let group = util::ssm_group(TAG);
    for conn in [socket(), not_a_socket()] {
        for source in [
            Ipv4Addr::new(239, 1, 2, 3),
            Ipv4Addr::new(224, 0, 0, 1),
            Ipv4Addr::BROADCAST,
            Ipv4Addr::UNSPECIFIED,
        ] {
            assert_not_unicast_source(
                conn.join_source_group(&lo(), group, source),
                source,
                "join_source_group",
            );
            assert_not_unicast_source(
                conn.leave_source_group(&lo(), group, source),
                source,
                "leave_source_group",
            );
            assert_not_unicast_source(
                conn.block_source(&lo(), group, source),
                source,
                "block_source",
            );
            assert_not_unicast_source(
                conn.unblock_source(&lo(), group, source),
                source,
                "unblock_source",
            );
        }
    }
    let source = Ipv4Addr::new(239, 9, 9, 9);
    let b = PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), lo());
    assert_not_unicast_source(
        b.clone().source(source).build(),
        source,
        "builder .source()",
    );
    assert_not_unicast_source(b.exclude(source).build(), source, "builder .exclude()");
}

#[test]
fn unknown_interface_name_is_named_in_the_error() {
    assert!(
        !std::path::Path::new("/sys/class/net/nosuchif0").exists(),
        "this host has an interface nosuchif0"
    );
    let bad = Interface::name("nosuchif0");
    let group = util::asm_group(TAG);
    let conn = socket();
    let check = |r: io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{what}: {e}");
        assert!(
            matches!(Error::of(&e), Some(Error::UnknownInterfaceName(n)) if n == "nosuchif0"),
            "{what}: {e:?}"
        );
        assert!(e.to_string().contains("nosuchif0"), "{what}: {e}");
    };
    check(bad.resolve().map(drop), "resolve");
    check(conn.join_group(&bad, group), "join_group");
    check(conn.leave_group(&bad, group), "leave_group");
    check(
        conn.join_source_group(&bad, group, Ipv4Addr::new(127, 0, 0, 2)),
        "join_source_group",
    );
    check(
        conn.block_source(&bad, group, Ipv4Addr::new(127, 0, 0, 2)),
        "block_source",
    );
    check(
        conn.set_multicast_interface(&bad),
        "set_multicast_interface",
    );
    check(
        PacketConn::multicast_sender(&bad).map(drop),
        "multicast_sender",
    );
    check(
        PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), bad.clone())
            .build()
            .map(drop),
        "builder",
    );
    // The failed set left nothing behind.
    assert_eq!(conn.multicast_interface().unwrap(), None);

    // Names that cannot be interface names at all.
    for name in ["", "a-name-longer-than-15", "nul\0inside"] {
        let e = conn.join_group(&Interface::name(name), group).unwrap_err();
        assert!(
            matches!(Error::of(&e), Some(Error::InvalidInterfaceName(n)) if n == name),
            "{name:?}: {e:?}"
        );
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}

#[test]
fn unknown_interface_index_is_named_in_the_error() {
    let bad = Interface::index(999_999);
    let group = util::asm_group(TAG);
    let conn = socket();
    for (what, r) in [
        ("resolve", bad.resolve().map(drop)),
        ("join_group", conn.join_group(&bad, group)),
        (
            "set_multicast_interface",
            conn.set_multicast_interface(&bad),
        ),
        (
            "join_source_group",
            conn.join_source_group(&bad, group, Ipv4Addr::new(127, 0, 0, 2)),
        ),
    ] {
        let e = r.expect_err(what);
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{what}: {e}");
        assert!(
            matches!(Error::of(&e), Some(Error::UnknownInterfaceIndex(999_999))),
            "{what}: {e:?}"
        );
        assert!(e.to_string().contains("999999"), "{what}: {e}");
    }
}

/// The IPv4 addresses configured on this host's interfaces, as iproute2
/// lists them (not through the crate). One line per address:
/// `1: lo    inet 127.0.0.1/8 scope host lo\       valid_lft forever ...`.
fn configured_addrs() -> Vec<Ipv4Addr> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .unwrap_or_else(|e| panic!("running `ip -o -4 addr show` (iproute2 needed): {e}"));
    assert!(
        out.status.success(),
        "ip -o -4 addr show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("ip prints UTF-8");
    text.lines()
        .map(|line| {
            let mut words = line.split_whitespace();
            words
                .by_ref()
                .find(|w| *w == "inet")
                .and_then(|_| words.next())
                .and_then(|cidr| cidr.split('/').next())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no `inet ADDR/LEN` in {line:?}"))
        })
        .collect()
}

#[test]
fn address_that_is_local_but_not_an_interface_address_is_refused() {
    let addr = Ipv4Addr::new(127, 9, 9, 9);
    let addrs = configured_addrs();
    assert!(addrs.contains(&Ipv4Addr::LOCALHOST), "{addrs:?}");
    assert!(
        !addrs.contains(&addr),
        "127.9.9.9 is configured on this host: {addrs:?}"
    );
    // It is a local address (all of 127/8 is), yet no interface holds it.
    PacketConn::bind_udp(SocketAddrV4::new(addr, 0)).expect("127.9.9.9 is local");

    // Positive control: lo's own address names lo.
    let lo_info = Interface::addr(Ipv4Addr::LOCALHOST).resolve().unwrap();
    assert_eq!((lo_info.index, lo_info.name.as_str()), (1, "lo"));

    let bad = Interface::addr(addr);
    let group = util::asm_group(TAG);
    let conn = socket();
    for (what, r) in [
        ("resolve", bad.resolve().map(drop)),
        ("join_group", conn.join_group(&bad, group)),
        (
            "set_multicast_interface",
            conn.set_multicast_interface(&bad),
        ),
        (
            "multicast_sender",
            PacketConn::multicast_sender(&bad).map(drop),
        ),
    ] {
        let e = r.expect_err(what);
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{what}: {e}");
        assert!(
            matches!(Error::of(&e), Some(Error::UnknownInterfaceAddr(a)) if *a == addr),
            "{what}: {e:?}"
        );
        assert!(e.to_string().contains("127.9.9.9"), "{what}: {e}");
    }
}

/// Checks a MembershipLimit error for `limit` whose message also names `group`.
fn assert_limit(e: &io::Error, limit: Limit, max: u32, group: Ipv4Addr) {
    match Error::of(e) {
        Some(Error::MembershipLimit {
            limit: l, max: m, ..
        }) => {
            assert_eq!(*l, limit, "{e}");
            assert_eq!(*m, Some(max), "{e}");
        }
        other => panic!("expected MembershipLimit, got {other:?} ({e})"),
    }
    assert_eq!(Error::raw_os_error(e), Some(libc::ENOBUFS), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(limit.sysctl()),
        "message does not name {}: {msg}",
        limit.sysctl()
    );
    assert!(
        msg.contains(&max.to_string()),
        "message does not give the limit {max}: {msg}"
    );
    assert!(
        msg.contains(&group.to_string()),
        "message does not name the group: {msg}"
    );
}

#[test]
fn one_group_past_igmp_max_memberships_is_a_membership_limit() {
    assert_eq!(Limit::Groups.sysctl(), "net.ipv4.igmp_max_memberships");
    let max = Limit::Groups
        .current()
        .expect("reading /proc/sys/net/ipv4/igmp_max_memberships");
    assert!(
        max < 60_000,
        "igmp_max_memberships = {max} is too large to test"
    );
    let base = u32::from(Ipv4Addr::new(239, 255, 105, 1));
    let group = |i: u32| Ipv4Addr::from(base + i);
    let conn = socket();
    for i in 0..max {
        conn.join_group(&lo(), group(i))
            .unwrap_or_else(|e| panic!("join {} of {max}: {e}", i + 1));
    }
    let e = conn
        .join_group(&lo(), group(max))
        .expect_err("one join past the limit");
    assert_limit(&e, Limit::Groups, max, group(max));

    // The limit counts this socket's memberships: leave one, and it fits.
    conn.leave_group(&lo(), group(0)).unwrap();
    conn.join_group(&lo(), group(max)).unwrap();
    // An any-source-less (include mode) join counts too.
    let e = conn
        .join_source_group(&lo(), group(max + 1), Ipv4Addr::new(127, 0, 0, 2))
        .expect_err("a source join past the group limit");
    assert!(
        matches!(Error::of(&e), Some(Error::MembershipLimit { .. })),
        "{e:?}"
    );
    assert_eq!(Error::raw_os_error(&e), Some(libc::ENOBUFS));
}

#[test]
fn one_source_past_igmp_max_msf_is_a_membership_limit() {
    assert_eq!(Limit::SourcesPerGroup.sysctl(), "net.ipv4.igmp_max_msf");
    let max = Limit::SourcesPerGroup
        .current()
        .expect("reading /proc/sys/net/ipv4/igmp_max_msf");
    assert!(max < 60_000, "igmp_max_msf = {max} is too large to test");
    let base = u32::from(Ipv4Addr::new(127, 1, 0, 1));
    let source = |i: u32| Ipv4Addr::from(base + i);

    // Include mode.
    let group = Ipv4Addr::new(232, 104, 1, 1);
    let conn = socket();
    for i in 0..max {
        conn.join_source_group(&lo(), group, source(i))
            .unwrap_or_else(|e| panic!("source {} of {max}: {e}", i + 1));
    }
    let e = conn
        .join_source_group(&lo(), group, source(max))
        .expect_err("one source past the limit");
    assert_limit(&e, Limit::SourcesPerGroup, max, group);
    assert!(e.to_string().contains(&source(max).to_string()), "{e}");

    // Exclude mode.
    let group = Ipv4Addr::new(232, 104, 1, 2);
    let conn = socket();
    conn.join_group(&lo(), group).unwrap();
    for i in 0..max {
        conn.block_source(&lo(), group, source(i))
            .unwrap_or_else(|e| panic!("block {} of {max}: {e}", i + 1));
    }
    let e = conn
        .block_source(&lo(), group, source(max))
        .expect_err("one blocked source past the limit");
    assert_limit(&e, Limit::SourcesPerGroup, max, group);
}

#[test]
fn ttl_out_of_range_is_invalid_ttl() {
    let check = |r: io::Result<()>, ttl: u8, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{what}: {e}");
        assert!(
            matches!(Error::of(&e), Some(Error::InvalidTtl(t)) if *t == ttl),
            "{what}: {e:?}"
        );
        assert!(e.to_string().contains(&ttl.to_string()), "{what}: {e}");
    };
    let conn = socket();
    conn.set_ttl(9).unwrap();
    // 0 is the one TTL the type (u8) lets through and the kernel refuses.
    check(conn.set_ttl(0), 0, "PacketConn::set_ttl");
    check(not_a_socket().set_ttl(0), 0, "set_ttl on a non-socket");
    assert_eq!(conn.ttl().unwrap(), 9, "a refused TTL changed the socket");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = Conn::new(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
    tcp.set_ttl(9).unwrap();
    check(tcp.set_ttl(0), 0, "Conn::set_ttl");
    assert_eq!(tcp.ttl().unwrap(), 9);

    // Multicast TTL 0 is legal: it keeps packets on the host.
    conn.set_multicast_ttl(0).unwrap();
    assert_eq!(conn.multicast_ttl().unwrap(), 0);
}

/// A control message as the kernel lays it out: header (len, level, type),
/// data, padding to 8 bytes.
fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let len = hdr + data.len();
    let mut out = Vec::new();
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&level.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    while out.len() % 8 != 0 {
        out.push(0);
    }
    out
}

#[test]
fn decoding_garbage_control_buffers_does_not_panic() {
    // Crafted cases.
    let ttl64 = cmsg(libc::IPPROTO_IP, libc::IP_TTL, &64i32.to_ne_bytes());
    assert_eq!(
        ControlMessage::decode(&ttl64, ControlFlags::ALL).ttl,
        Some(64),
        "sanity"
    );
    assert_eq!(
        ControlMessage::decode(&ttl64, ControlFlags::TOS).ttl,
        None,
        "not asked for"
    );
    let ttl300 = cmsg(libc::IPPROTO_IP, libc::IP_TTL, &300i32.to_ne_bytes());
    assert_eq!(
        ControlMessage::decode(&ttl300, ControlFlags::ALL).ttl,
        None,
        "TTL 300 is no TTL"
    );
    let ttl_neg = cmsg(libc::IPPROTO_IP, libc::IP_TTL, &(-1i32).to_ne_bytes());
    assert_eq!(
        ControlMessage::decode(&ttl_neg, ControlFlags::ALL).ttl,
        None
    );
    let short_pktinfo = cmsg(
        libc::IPPROTO_IP,
        libc::IP_PKTINFO,
        &[1, 0, 0, 0, 127, 0, 0, 1],
    );
    let cm = ControlMessage::decode(&short_pktinfo, ControlFlags::ALL);
    assert_eq!(
        (cm.dst, cm.ifindex, cm.local),
        (None, None, None),
        "short IP_PKTINFO"
    );
    // A good message followed by one whose length runs past the buffer.
    let mut two = ttl64.clone();
    let mut bad = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0x28]);
    bad[..8].copy_from_slice(&usize::MAX.to_ne_bytes());
    two.extend_from_slice(&bad);
    let cm = ControlMessage::decode(&two, ControlFlags::ALL);
    assert_eq!((cm.ttl, cm.tos), (Some(64), None));
    for len in [0usize, 1, 15, 16, 17, 1 << 20, usize::MAX, usize::MAX - 7] {
        let mut b = ttl64.clone();
        b[..8].copy_from_slice(&len.to_ne_bytes());
        let _ = ControlMessage::decode(&b, ControlFlags::ALL);
        let _ = ControlMessage::decode(&b[..b.len() - 1], ControlFlags::ALL);
    }
    for n in 0..64 {
        let _ = ControlMessage::decode(&ttl64[..n.min(ttl64.len())], ControlFlags::ALL);
    }

    // Pseudo-random bytes, and pseudo-random mutations of real messages.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let real: Vec<u8> = [
        cmsg(
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            &[1, 0, 0, 0, 127, 0, 0, 1, 239, 255, 0, 1],
        ),
        ttl64,
        cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0x28]),
        cmsg(libc::SOL_SOCKET, 35, &[7; 16]),
        cmsg(libc::SOL_SOCKET, 40, &[1, 0, 0, 0]),
        cmsg(libc::IPPROTO_UDP, 104, &[0, 5, 0, 0]),
    ]
    .concat();
    let mut buf = vec![0u8; 300];
    for i in 0..20_000 {
        let len = (next() % 300) as usize;
        if i % 2 == 0 {
            for b in &mut buf[..len] {
                *b = next() as u8;
            }
        } else {
            let len = len.min(real.len());
            buf[..len].copy_from_slice(&real[..len]);
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % real.len().max(1);
                if at < len {
                    buf[at] = next() as u8;
                }
            }
        }
        let start = (next() % 9) as usize;
        let flags = ControlFlags::from_bits_truncate(next() as u32);
        let cm = ControlMessage::decode(&buf[start.min(len)..len], flags);
        let _ = cm.to_string();
        let mut into = ControlMessage::default();
        into.decode_into(&buf[..len], ControlFlags::ALL);
    }
}
