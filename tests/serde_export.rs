//! The `serde` feature: what the crate measures, exported as JSON. Control
//! messages of real packets, a reactor's and a socket's counters, and a
//! feed's counters and events serialize with their Rust field names and
//! the values the kernel and the reactor gave, and read back equal.
//!
//! Network safety: unicast only between sockets bound to 127.0.0.1;
//! multicast only through `util::lo_sender` and the checked `util::send`
//! (lo, 127.0.0.1), to groups 239.255.176.x on ephemeral ports.

#![cfg(feature = "serde")]

mod util;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::feed::{Arbiter, Delivery, FeedEvent, SeqFormat};
use ipv4_reactor::reactor::{Context, FeedHandler, Reactor};
use ipv4_reactor::{ControlFlags, ControlMessage, Packet, RecvMeta};
use serde_json::{json, Value};
use util::reactor::turn_until;
use util::{
    addr, asm_group, collect, dst_of, lo_index, lo_receiver, lo_sender, recv_one, send, udp,
    DEADLINE, QUIET, SETTLE,
};

/// Third octet of this file's groups: 239.255.176.x.
const TAG: u8 = 176;

/// `value` as JSON, and read back from that JSON: equal to `value`.
fn json_round_trip<T>(value: &T) -> Value
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_string(value).expect("serialize");
    let back: T = serde_json::from_str(&text).expect("deserialize");
    assert_eq!(&back, value, "{text}");
    serde_json::from_str(&text).expect("valid JSON")
}

/// The keys of a JSON object, in order.
fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// A unicast packet's `RecvMeta` and control message carry the TTL, the
/// destination, the arrival interface and the local address in JSON fields
/// named as in Rust, and read back equal.
#[test]
fn unicast_control_message_serializes_with_its_values() {
    let flags = ControlFlags::TTL
        | ControlFlags::DST
        | ControlFlags::INTERFACE
        | ControlFlags::LOCAL
        | ControlFlags::SRC
        | ControlFlags::DROPS;
    let rx = udp();
    rx.set_control_flags(flags).expect("control flags");
    let tx = udp();
    tx.set_ttl(42).expect("IP_TTL");
    send(&tx, b"json", addr(&rx));

    rx.socket()
        .set_read_timeout(Some(DEADLINE))
        .expect("SO_RCVTIMEO");
    let mut buf = [0u8; 64];
    let meta: RecvMeta = rx.recv_from(&mut buf).expect("recv_from");
    assert_eq!(&buf[..meta.len], b"json");

    let cm = json_round_trip(&meta.cm);
    assert_eq!(
        keys(&cm),
        [
            "ttl",
            "tos",
            "src",
            "dst",
            "ifindex",
            "local",
            "timestamp",
            "drops",
            "gro_segment",
            "hw_timestamp"
        ]
    );
    assert_eq!(cm["ttl"], 42);
    assert_eq!(cm["dst"], "127.0.0.1");
    assert_eq!(cm["local"], "127.0.0.1");
    assert_eq!(cm["src"], "127.0.0.1");
    assert_eq!(cm["ifindex"], lo_index());
    // Asked for, not delivered (no drop yet), or not asked for: null.
    assert_eq!(cm["drops"], Value::Null);
    assert_eq!(cm["tos"], Value::Null);
    assert_eq!(cm["timestamp"], Value::Null);

    let m = json_round_trip(&meta);
    assert_eq!(keys(&m), ["len", "src", "cm", "flags"]);
    assert_eq!(m["len"], 4);
    assert_eq!(m["src"], addr(&tx).to_string());
    assert_eq!(m["cm"], cm);
    assert_eq!(
        m["flags"],
        json!({"truncated": false, "control_truncated": false})
    );

    // The socket's flags, as names in bit order.
    let f = json_round_trip(&rx.control_flags());
    assert_eq!(
        f,
        json!(["TTL", "SRC", "DST", "INTERFACE", "LOCAL", "DROPS"])
    );
}

/// A multicast packet on lo: the group is `dst`, the multicast TTL is
/// `ttl`; after kernel drops, `drops` is the socket's cumulative count.
#[test]
fn multicast_control_message_carries_group_ttl_and_drops() {
    let g = asm_group(TAG);
    let rx = lo_receiver(
        g,
        ControlFlags::DST | ControlFlags::TTL | ControlFlags::DROPS,
    );
    let dst = dst_of(g, &rx);
    thread::sleep(SETTLE);
    let tx = lo_sender();
    tx.set_multicast_ttl(3).expect("IP_MULTICAST_TTL");
    send(&tx, b"first", dst);
    let p = recv_one(&rx, "the first packet");
    let v = json_round_trip(&p.cm);
    assert_eq!(v["dst"], g.to_string());
    assert_eq!(v["ttl"], 3);
    assert_eq!(v["drops"], Value::Null);
    assert_eq!(v["ifindex"], Value::Null, "INTERFACE was not asked for");

    // Overflow a tiny receive buffer, read what it kept, then one more
    // packet carries the drop count.
    rx.set_recv_buffer_size(4096).expect("small SO_RCVBUF");
    const FLOOD: usize = 300;
    for seq in 0..FLOOD as u64 {
        send(&tx, &[seq.to_be_bytes(), [0; 8]].concat(), dst);
    }
    let kept = collect(&rx, QUIET).len();
    assert!(kept < FLOOD, "nothing dropped: the buffer was not small");
    send(&tx, b"after", dst);
    let p = recv_one(&rx, "the packet after the drops");
    assert_eq!(p.payload, b"after");
    let dropped = (FLOOD - kept) as u64;
    assert_eq!(p.cm.drops.map(u64::from), Some(dropped));
    let v = json_round_trip(&p.cm);
    assert_eq!(v["drops"], dropped);
    assert_eq!(v["dst"], g.to_string());
    assert_eq!(v["ttl"], 3);
}

/// A reactor's and a socket's counters as JSON carry the packets and
/// bytes the reactor received, under the Rust field names.
#[test]
fn reactor_and_socket_counters_serialize_with_the_packet_count() {
    const PACKETS: u64 = 5;
    let rx = udp();
    let dst = addr(&rx);
    let mut reactor = Reactor::builder().build().expect("reactor");
    let seen = Arc::new(Mutex::new(0u64));
    let key = {
        let seen = Arc::clone(&seen);
        reactor
            .register(rx, move |_: &Packet<'_>, _: &mut Context<'_>| {
                *seen.lock().unwrap() += 1;
            })
            .expect("register")
    };
    let tx = udp();
    for seq in 0..PACKETS {
        send(&tx, &seq.to_be_bytes(), dst);
    }
    assert!(
        turn_until(&mut reactor, DEADLINE, |_| *seen.lock().unwrap() == PACKETS),
        "only {} of {PACKETS} packets arrived",
        seen.lock().unwrap()
    );

    let socket = reactor.socket_counters(key).expect("registered");
    let s = json_round_trip(&socket);
    assert_eq!(
        keys(&s),
        [
            "recv",
            "overflow_drops",
            "recv_errors",
            "budget_stops",
            "no_buffers",
            "handler_time"
        ]
    );
    assert_eq!(
        keys(&s["recv"]),
        [
            "packets",
            "bytes",
            "batches",
            "truncated",
            "control_truncated",
            "kernel_drops"
        ]
    );
    assert_eq!(s["recv"]["packets"], PACKETS);
    assert_eq!(s["recv"]["bytes"], PACKETS * 8);
    assert_eq!(s["recv"]["batches"], socket.recv.batches);
    assert_eq!(s["recv"]["kernel_drops"], 0);
    // Not measured by default: a zero Duration.
    assert_eq!(s["handler_time"], json!({"secs": 0, "nanos": 0}));

    let counters = reactor.counters();
    let r = json_round_trip(&counters);
    assert_eq!(r["sockets"], 1);
    assert_eq!(r["turns"], counters.turns);
    assert!(counters.turns > 0);
    assert_eq!(r["events"], counters.events);
    assert_eq!(r["polls"], counters.polls);
    assert!(counters.polls > 0, "an epoll-mode reactor polled");
    assert_eq!(r["total"], s, "one socket: the total is its counters");
    assert_eq!(r["total"]["recv"]["packets"], PACKETS);

    // Counters written by an older version, without the fields added
    // since, read as zero.
    let partial: ipv4_reactor::RecvCounters =
        serde_json::from_value(json!({"packets": 7})).expect("partial counters");
    assert_eq!((partial.packets, partial.bytes), (7, 0));
}

/// Records a feed's events.
struct Events(Arc<Mutex<Vec<FeedEvent>>>);

impl FeedHandler for Events {
    fn on_data(&mut self, _line: usize, _p: &Packet<'_>, d: Delivery, _ctx: &mut Context<'_>) {
        self.0.lock().unwrap().push(FeedEvent::Deliver(d));
    }

    fn on_event(&mut self, event: FeedEvent) {
        self.0.lock().unwrap().push(event);
    }
}

/// A feed of two lines (A/B) over lo: its counters as JSON carry the
/// merged stream's messages, copies and gap, and each line's packets; its
/// events serialize as plain data.
#[test]
fn feed_counters_and_events_serialize() {
    let (g0, g1) = (asm_group(TAG), asm_group(TAG));
    let (r0, r1) = (
        lo_receiver(g0, ControlFlags::DROPS),
        lo_receiver(g1, ControlFlags::DROPS),
    );
    let dsts = [dst_of(g0, &r0), dst_of(g1, &r1)];
    let mut reactor = Reactor::builder().build().expect("reactor");
    let events = Arc::new(Mutex::new(Vec::new()));
    let arbiter = Arbiter::new(SeqFormat::default(), 2).expect("arbiter");
    let feed = reactor
        .register_feed(vec![r0, r1], arbiter, Events(Arc::clone(&events)))
        .expect("register_feed");
    thread::sleep(SETTLE);
    let tx = lo_sender();
    // 1, 2, 3, 5 on both lines: 4 is missing from both.
    let seqs = [1u64, 2, 3, 5];
    for dst in dsts {
        for seq in seqs {
            send(&tx, &seq.to_be_bytes(), dst);
        }
    }
    let sent = 2 * seqs.len() as u64;
    let deadline = Instant::now() + DEADLINE;
    let counters = loop {
        let c = reactor.feed_counters(feed).expect("feed");
        if c.lines.iter().map(|l| l.packets).sum::<u64>() == sent {
            break c;
        }
        assert!(Instant::now() < deadline, "packets missing: {c:?}");
        reactor.turn(Some(Duration::from_millis(20))).expect("turn");
    };

    let v = json_round_trip(&counters);
    assert_eq!(keys(&v), ["total", "lines"]);
    let total = &v["total"];
    assert_eq!(total["packets"], sent);
    assert_eq!(total["messages"], 4);
    assert_eq!(total["duplicates"], 4);
    assert_eq!(total["malformed"], 0);
    let lines = v["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 2);
    let mut first = 0;
    for line in lines {
        assert_eq!(line["packets"], 4);
        assert_eq!(line["malformed"], 0);
        assert_eq!(line["stale"], false);
        assert_eq!(line["seq"]["packets"], 4);
        first += line["first"].as_u64().expect("first");
    }
    assert_eq!(first, 4, "each new sequence number won by one line");

    let events = events.lock().unwrap().clone();
    assert!(events.contains(&FeedEvent::GapOpened { from: 4, to: 4 }));
    let e = json_round_trip(&events);
    let e = e.as_array().expect("events");
    assert!(
        e.contains(&json!({"GapOpened": {"from": 4, "to": 4}})),
        "{e:?}"
    );
    assert!(
        e.contains(&json!({"Deliver": {"first": 5, "count": 1, "skip": 0, "late": false}})),
        "{e:?}"
    );

    // The finished arbiter declares 4 lost; the lines' counters read back.
    let parts = reactor.deregister_feed(feed).expect("deregister_feed");
    let finished = json_round_trip(&parts.arbiter.counters());
    assert_eq!(finished["lost"], 1);
    assert_eq!(finished["gaps"], 1);
    json_round_trip(&parts.arbiter.line(0).expect("line 0"));
}

/// `ControlFlags` as JSON: a list of names in bit order; an unknown name
/// is an error, not dropped.
#[test]
fn control_flags_serialize_as_names() {
    assert_eq!(json_round_trip(&ControlFlags::NONE), json!([]));
    assert_eq!(
        json_round_trip(&(ControlFlags::DROPS | ControlFlags::TTL)),
        json!(["TTL", "DROPS"])
    );
    let all = json_round_trip(&ControlFlags::ALL);
    assert_eq!(all.as_array().map(Vec::len), Some(10));
    let err = serde_json::from_value::<ControlFlags>(json!(["TTL", "NOPE"])).unwrap_err();
    assert!(err.to_string().contains("NOPE"), "{err}");
    assert!(serde_json::from_value::<ControlFlags>(json!(8)).is_err());

    // A message built for sending reads back from hand-written JSON;
    // fields left out are None.
    let cm: ControlMessage =
        serde_json::from_value(json!({"ttl": 9, "local": "127.0.0.5", "ifindex": 1}))
            .expect("a sparse message");
    assert_eq!(
        cm,
        ControlMessage::send_from(Ipv4Addr::new(127, 0, 0, 5), Some(1)).with_ttl(9)
    );
}
