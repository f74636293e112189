//! Scenario 3 of the crate docs: more multicasting. Several groups on one
//! socket, several sockets on one port, leaving and rejoining, errors on
//! leave, and `IP_MULTICAST_ALL`. All multicast goes through lo only.

mod util;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread::sleep;

use ipv4_reactor::{ControlFlags, Error, Interface, PacketConn};

use util::{collect_through, lo, send, texts, SETTLE};

/// Third octet of this file's groups (239.255.102.x).
const TAG: u8 = 102;

#[test]
fn two_groups_on_one_socket_told_apart_by_destination() {
    let (g1, g2, other) = (
        util::asm_group(TAG),
        util::asm_group(TAG),
        util::asm_group(TAG),
    );
    let rx = util::unicast_bound_receiver();
    rx.join_group(&lo(), g1).unwrap();
    rx.join_group(&lo(), g2).unwrap();
    rx.set_control_message(ControlFlags::DST, true).unwrap();
    let port = util::port_of(&rx);
    let tx = util::lo_sender();
    sleep(SETTLE);

    send(&tx, b"to g1", SocketAddrV4::new(g1, port));
    send(&tx, b"to other", SocketAddrV4::new(other, port));
    send(&tx, b"to g2", SocketAddrV4::new(g2, port));
    send(&tx, b"to g1 again", SocketAddrV4::new(g1, port));
    let got = collect_through(&rx, b"to g1 again");
    let by_dst: Vec<(String, Option<Ipv4Addr>)> =
        got.iter().map(|p| (p.text(), p.cm.dst)).collect();
    assert_eq!(
        by_dst,
        vec![
            ("to g1".to_string(), Some(g1)),
            ("to g2".to_string(), Some(g2)),
            ("to g1 again".to_string(), Some(g1)),
        ],
        "each packet tagged with its group; the group not joined stays out"
    );
}

fn reusing_pair(reuse_port: bool) {
    let group = util::asm_group(TAG);
    let builder = |port: u16| {
        PacketConn::multicast_receiver(SocketAddrV4::new(group, port), lo())
            .control(ControlFlags::DST)
            .reuse_port(reuse_port)
            .nonblocking(false)
    };
    let a = builder(0).build().unwrap();
    let port = util::port_of(&a);
    let b = builder(port).build().unwrap();
    assert_eq!(a.local_addr().unwrap(), SocketAddrV4::new(group, port));
    assert_eq!(b.local_addr().unwrap(), SocketAddrV4::new(group, port));
    assert!(!a.multicast_all().unwrap() && !b.multicast_all().unwrap());
    assert_eq!(a.control_flags(), ControlFlags::DST);
    let tx = util::lo_sender();
    sleep(SETTLE);

    let dst = SocketAddrV4::new(group, port);
    for payload in ["one", "two", "three"] {
        send(&tx, payload.as_bytes(), dst);
    }
    for (name, rx) in [("a", &a), ("b", &b)] {
        let got = collect_through(rx, b"three");
        assert_eq!(
            texts(&got),
            ["one", "two", "three"],
            "socket {name} (reuse_port {reuse_port})"
        );
        assert!(got.iter().all(|p| p.cm.dst == Some(group)));
        assert!(got.iter().all(|p| p.src == tx.local_addr().unwrap()));
    }
}

#[test]
fn two_sockets_on_one_port_with_reuse_address_both_get_every_packet() {
    reusing_pair(false);
}

#[test]
fn two_sockets_on_one_port_with_reuse_port_both_get_every_packet() {
    reusing_pair(true);
}

#[test]
fn leave_then_rejoin() {
    let group = util::asm_group(TAG);
    let marker_group = util::asm_group(TAG);
    let rx = util::unicast_bound_receiver();
    rx.join_group(&lo(), group).unwrap();
    // A second group that stays joined carries the markers.
    rx.join_group(&lo(), marker_group).unwrap();
    let port = util::port_of(&rx);
    let (dst, marker) = (
        SocketAddrV4::new(group, port),
        SocketAddrV4::new(marker_group, port),
    );
    let tx = util::lo_sender();
    sleep(SETTLE);

    send(&tx, b"joined", dst);
    send(&tx, b"marker 1", marker);
    assert_eq!(
        texts(&collect_through(&rx, b"marker 1")),
        ["joined", "marker 1"]
    );

    rx.leave_group(&lo(), group).unwrap();
    send(&tx, b"left", dst);
    send(&tx, b"marker 2", marker);
    assert_eq!(
        texts(&collect_through(&rx, b"marker 2")),
        ["marker 2"],
        "a packet to a group that was left arrived"
    );

    rx.join_group(&lo(), group).unwrap();
    sleep(SETTLE);
    send(&tx, b"rejoined", dst);
    send(&tx, b"marker 3", marker);
    assert_eq!(
        texts(&collect_through(&rx, b"marker 3")),
        ["rejoined", "marker 3"]
    );
}

fn assert_not_joined_error(e: &io::Error, group: Ipv4Addr) {
    assert_eq!(Error::raw_os_error(e), Some(libc::EADDRNOTAVAIL), "{e}");
    assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable, "{e}");
    assert!(matches!(Error::of(e), Some(Error::Os { .. })), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&group.to_string()),
        "error does not name the group: {msg}"
    );
    assert!(
        msg.contains("lo"),
        "error does not name the interface: {msg}"
    );
    assert!(
        msg.contains("leaving"),
        "error does not say what was being done: {msg}"
    );
}

#[test]
fn leaving_twice_is_an_error_naming_group_and_interface() {
    let group = util::asm_group(TAG);
    let rx = util::unicast_bound_receiver();
    rx.join_group(&lo(), group).unwrap();
    rx.leave_group(&lo(), group).unwrap();
    let e = rx
        .leave_group(&lo(), group)
        .expect_err("leaving twice must fail");
    assert_not_joined_error(&e, group);

    // Leaving a group never joined, named by index this time.
    let never = util::asm_group(TAG);
    let e = rx
        .leave_group(&Interface::index(1), never)
        .expect_err("leaving a group never joined must fail");
    assert_eq!(Error::raw_os_error(&e), Some(libc::EADDRNOTAVAIL), "{e}");
    assert!(e.to_string().contains(&never.to_string()), "{e}");

    // Joining twice is an error too (EADDRINUSE), and the socket is still usable.
    rx.join_group(&lo(), group).unwrap();
    let e = rx
        .join_group(&lo(), group)
        .expect_err("joining twice must fail");
    assert_eq!(Error::raw_os_error(&e), Some(libc::EADDRINUSE), "{e}");
    assert!(e.to_string().contains(&group.to_string()), "{e}");
    rx.leave_group(&lo(), group).unwrap();
}

#[test]
fn multicast_all_off_keeps_another_sockets_group_out() {
    let (theirs, ours) = (util::asm_group(TAG), util::asm_group(TAG));
    // Another socket on the host joins `theirs`.
    let other = util::unicast_bound_receiver();
    other.join_group(&lo(), theirs).unwrap();
    // Our socket joins only `ours` (which carries the markers).
    let rx = util::unicast_bound_receiver();
    rx.join_group(&lo(), ours).unwrap();
    rx.set_control_message(ControlFlags::DST, true).unwrap();
    let port = util::port_of(&rx);
    let tx = util::lo_sender();
    sleep(SETTLE);

    // Positive control: with IP_MULTICAST_ALL on, `theirs` reaches us.
    rx.set_multicast_all(true).unwrap();
    assert!(rx.multicast_all().unwrap());
    send(&tx, b"theirs, all on", SocketAddrV4::new(theirs, port));
    send(&tx, b"marker on", SocketAddrV4::new(ours, port));
    let got = collect_through(&rx, b"marker on");
    assert_eq!(texts(&got), ["theirs, all on", "marker on"]);
    assert_eq!(got[0].cm.dst, Some(theirs));

    rx.set_multicast_all(false).unwrap();
    assert!(!rx.multicast_all().unwrap());
    send(&tx, b"theirs, all off", SocketAddrV4::new(theirs, port));
    send(&tx, b"marker off", SocketAddrV4::new(ours, port));
    assert_eq!(
        texts(&collect_through(&rx, b"marker off")),
        ["marker off"],
        "IP_MULTICAST_ALL off must keep another socket's group out"
    );

    // The builder turns it off, and keeps other groups on the port out by
    // binding its own group.
    let built = PacketConn::multicast_receiver(SocketAddrV4::new(ours, 0), lo())
        .nonblocking(false)
        .build()
        .unwrap();
    assert!(!built.multicast_all().unwrap());
    let port = util::port_of(&built);
    sleep(SETTLE);
    send(&tx, b"theirs to built", SocketAddrV4::new(theirs, port));
    send(&tx, b"marker built", SocketAddrV4::new(ours, port));
    assert_eq!(
        texts(&collect_through(&built, b"marker built")),
        ["marker built"]
    );
}
