//! Scenario 4 of the crate docs: source-specific multicast. On lo, senders
//! bound to 127.0.0.2 and 127.0.0.3 are two distinct sources. Include mode
//! (join a (source, group) pair), exclude mode (join, then block), leaving
//! clears the filters, and the builder's `source` / `exclude`.

mod util;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread::sleep;

use ipv4_reactor::{ControlFlags, Error, PacketConn};

use util::{collect_through, lo, send, Received, SETTLE};

/// Second octet of this file's SSM groups (232.103.0.x).
const TAG: u8 = 103;
const S2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const S3: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// Two senders on lo: one bound to 127.0.0.2, one to 127.0.0.3.
struct Senders {
    s2: PacketConn,
    s3: PacketConn,
}

impl Senders {
    fn new() -> Senders {
        Senders {
            s2: util::lo_sender_from(S2),
            s3: util::lo_sender_from(S3),
        }
    }

    /// One packet from each source (127.0.0.3 first) to every destination,
    /// then a marker from `marker_from`, a source every receiver accepts.
    /// Returns the marker's payload.
    fn round(&self, tag: &str, dsts: &[SocketAddrV4], marker_from: Ipv4Addr) -> String {
        for &dst in dsts {
            send(&self.s3, format!("{tag} from .3").as_bytes(), dst);
            send(&self.s2, format!("{tag} from .2").as_bytes(), dst);
        }
        let marker = format!("{tag} marker");
        let from = if marker_from == S2 {
            &self.s2
        } else {
            &self.s3
        };
        for &dst in dsts {
            send(from, marker.as_bytes(), dst);
        }
        marker
    }
}

/// (payload, source address) of each packet, marker excluded, checking
/// that `cm.src` (ControlFlags::SRC) agrees with the returned source.
fn by_source(got: &[Received], marker: &str) -> Vec<(String, Ipv4Addr)> {
    got.iter()
        .filter(|p| p.text() != marker)
        .map(|p| {
            assert_eq!(
                p.cm.src,
                Some(*p.src.ip()),
                "cm.src disagrees with the source address"
            );
            (p.text(), *p.src.ip())
        })
        .collect()
}

fn pairs(items: &[(&str, Ipv4Addr)]) -> Vec<(String, Ipv4Addr)> {
    items.iter().map(|&(t, a)| (t.to_string(), a)).collect()
}

fn ssm_receiver() -> PacketConn {
    let rx = util::unicast_bound_receiver();
    rx.set_control_message(ControlFlags::SRC | ControlFlags::DST, true)
        .unwrap();
    rx
}

#[test]
fn include_mode_receives_only_the_chosen_sources() {
    let group = util::ssm_group(TAG);
    let rx = ssm_receiver();
    rx.join_source_group(&lo(), group, S2).unwrap();
    // Control: an any-source receiver shows that both sources really send,
    // each with its own address.
    let ctl = ssm_receiver();
    ctl.join_group(&lo(), group).unwrap();
    let (dst, ctl_dst) = (
        SocketAddrV4::new(group, util::port_of(&rx)),
        SocketAddrV4::new(group, util::port_of(&ctl)),
    );
    let tx = Senders::new();
    sleep(SETTLE);

    let marker = tx.round("r1", &[dst, ctl_dst], S2);
    assert_eq!(
        by_source(&collect_through(&ctl, marker.as_bytes()), &marker),
        pairs(&[("r1 from .3", S3), ("r1 from .2", S2)]),
        "the any-source control receiver"
    );
    assert_eq!(
        by_source(&collect_through(&rx, marker.as_bytes()), &marker),
        pairs(&[("r1 from .2", S2)]),
        "include mode with 127.0.0.2 only"
    );

    // Add 127.0.0.3: both arrive.
    rx.join_source_group(&lo(), group, S3).unwrap();
    let marker = tx.round("r2", &[dst], S2);
    assert_eq!(
        by_source(&collect_through(&rx, marker.as_bytes()), &marker),
        pairs(&[("r2 from .3", S3), ("r2 from .2", S2)]),
        "include mode with both sources"
    );

    // Drop 127.0.0.2: only 127.0.0.3.
    rx.leave_source_group(&lo(), group, S2).unwrap();
    let marker = tx.round("r3", &[dst], S3);
    assert_eq!(
        by_source(&collect_through(&rx, marker.as_bytes()), &marker),
        pairs(&[("r3 from .3", S3)]),
        "include mode with 127.0.0.3 only"
    );

    // Leaving a source that is not included is an error naming it.
    let e = rx
        .leave_source_group(&lo(), group, S2)
        .expect_err("leaving a source twice");
    assert_eq!(Error::raw_os_error(&e), Some(libc::EADDRNOTAVAIL), "{e}");
    assert!(
        e.to_string().contains("127.0.0.2") && e.to_string().contains(&group.to_string()),
        "{e}"
    );
}

#[test]
fn exclude_mode_blocks_and_unblocking_lets_the_source_through_again() {
    let group = util::ssm_group(TAG);
    let rx = ssm_receiver();
    rx.join_group(&lo(), group).unwrap();
    let dst = SocketAddrV4::new(group, util::port_of(&rx));
    let tx = Senders::new();
    sleep(SETTLE);

    let marker = tx.round("before", &[dst], S2);
    assert_eq!(
        by_source(&collect_through(&rx, marker.as_bytes()), &marker),
        pairs(&[("before from .3", S3), ("before from .2", S2)]),
        "any-source join gets both"
    );

    rx.block_source(&lo(), group, S3).unwrap();
    let marker = tx.round("blocked", &[dst], S2);
    assert_eq!(
        by_source(&collect_through(&rx, marker.as_bytes()), &marker),
        pairs(&[("blocked from .2", S2)]),
        "127.0.0.3 is blocked"
    );

    rx.unblock_source(&lo(), group, S3).unwrap();
    let marker = tx.round("unblocked", &[dst], S2);
    assert_eq!(
        by_source(&collect_through(&rx, marker.as_bytes()), &marker),
        pairs(&[("unblocked from .3", S3), ("unblocked from .2", S2)]),
        "127.0.0.3 is unblocked"
    );

    // Unblocking a source that is not blocked is an error.
    let e = rx
        .unblock_source(&lo(), group, S3)
        .expect_err("unblocking twice");
    assert_eq!(Error::raw_os_error(&e), Some(libc::EADDRNOTAVAIL), "{e}");
}

#[test]
fn leaving_the_group_clears_its_source_filters() {
    let group = util::ssm_group(TAG);
    let rx = ssm_receiver();
    let dst = SocketAddrV4::new(group, util::port_of(&rx));
    let tx = Senders::new();

    // Exclude mode: block 127.0.0.3, leave, join again: it is back.
    rx.join_group(&lo(), group).unwrap();
    rx.block_source(&lo(), group, S3).unwrap();
    sleep(SETTLE);
    let marker = tx.round("blocked", &[dst], S2);
    assert_eq!(
        by_source(&collect_through(&rx, marker.as_bytes()), &marker),
        pairs(&[("blocked from .2", S2)])
    );
    rx.leave_group(&lo(), group).unwrap();
    rx.join_group(&lo(), group).unwrap();
    sleep(SETTLE);
    let marker = tx.round("rejoined", &[dst], S2);
    assert_eq!(
        by_source(&collect_through(&rx, marker.as_bytes()), &marker),
        pairs(&[("rejoined from .3", S3), ("rejoined from .2", S2)]),
        "the block on 127.0.0.3 survived leave_group"
    );
    // Nothing is blocked any more: unblocking is an error.
    assert!(rx.unblock_source(&lo(), group, S3).is_err());
    rx.leave_group(&lo(), group).unwrap();

    // Include mode: only 127.0.0.2, leave the group, join any-source.
    rx.join_source_group(&lo(), group, S2).unwrap();
    sleep(SETTLE);
    let marker = tx.round("included", &[dst], S2);
    assert_eq!(
        by_source(&collect_through(&rx, marker.as_bytes()), &marker),
        pairs(&[("included from .2", S2)])
    );
    rx.leave_group(&lo(), group).unwrap();
    rx.join_group(&lo(), group).unwrap();
    sleep(SETTLE);
    let marker = tx.round("any again", &[dst], S2);
    assert_eq!(
        by_source(&collect_through(&rx, marker.as_bytes()), &marker),
        pairs(&[("any again from .3", S3), ("any again from .2", S2)]),
        "the include filter survived leave_group"
    );
}

#[test]
fn builder_source_and_exclude_filter_like_the_calls() {
    let lo_flags = ControlFlags::SRC | ControlFlags::DST;
    let build = |group: Ipv4Addr, port: u16| {
        PacketConn::multicast_receiver(SocketAddrV4::new(group, port), lo())
            .control(lo_flags)
            .nonblocking(false)
    };

    // Include mode: .source(127.0.0.2), with an any-source control on the same port.
    let g_in = util::ssm_group(TAG);
    let inc = build(g_in, 0).source(S2).build().unwrap();
    let port = util::port_of(&inc);
    let ctl = build(g_in, port).build().unwrap();
    // Exclude mode: .exclude(127.0.0.3), with a control on the same port.
    let g_ex = util::ssm_group(TAG);
    let exc = build(g_ex, 0).exclude(S3).build().unwrap();
    let ex_port = util::port_of(&exc);
    let ex_ctl = build(g_ex, ex_port).build().unwrap();
    let tx = Senders::new();
    sleep(SETTLE);

    let marker = tx.round("inc", &[SocketAddrV4::new(g_in, port)], S2);
    let both = pairs(&[("inc from .3", S3), ("inc from .2", S2)]);
    assert_eq!(
        by_source(&collect_through(&ctl, marker.as_bytes()), &marker),
        both,
        "control"
    );
    assert_eq!(
        by_source(&collect_through(&inc, marker.as_bytes()), &marker),
        pairs(&[("inc from .2", S2)]),
        "builder .source(127.0.0.2)"
    );

    let marker = tx.round("exc", &[SocketAddrV4::new(g_ex, ex_port)], S2);
    let both = pairs(&[("exc from .3", S3), ("exc from .2", S2)]);
    assert_eq!(
        by_source(&collect_through(&ex_ctl, marker.as_bytes()), &marker),
        both,
        "control"
    );
    assert_eq!(
        by_source(&collect_through(&exc, marker.as_bytes()), &marker),
        pairs(&[("exc from .2", S2)]),
        "builder .exclude(127.0.0.3)"
    );

    // The builder's filters are ordinary filters: unblocking lets .3 in.
    exc.unblock_source(&lo(), g_ex, S3).unwrap();
    let marker = tx.round("exc2", &[SocketAddrV4::new(g_ex, ex_port)], S2);
    assert_eq!(
        by_source(&collect_through(&exc, marker.as_bytes()), &marker),
        pairs(&[("exc2 from .3", S3), ("exc2 from .2", S2)])
    );
}

#[test]
fn builder_refuses_include_and_exclude_together() {
    let group = util::ssm_group(TAG);
    let e = PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), lo())
        .source(S2)
        .exclude(S3)
        .build()
        .expect_err("include and exclude mode at once");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(
        matches!(Error::of(&e), Some(Error::InvalidArgument(_))),
        "{e:?}"
    );
}
