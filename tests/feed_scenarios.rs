//! The scenarios of issue 13, pure (no sockets): payloads in, deliveries,
//! events and counters out.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ipv4_reactor::feed::{Arbiter, FeedEvent, SeqFormat, SeqTracker, Verdict};

fn u64be(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn mold(session: &[u8; 10], seq: u64, count: u16) -> Vec<u8> {
    let mut p = session.to_vec();
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&count.to_be_bytes());
    for i in 0..count.min(64) {
        // message blocks: u16 BE length + bytes
        p.extend_from_slice(&2u16.to_be_bytes());
        p.extend_from_slice(&i.to_be_bytes());
    }
    p
}

fn mdp3(seq: u32, sent_ns: u64) -> Vec<u8> {
    let mut p = seq.to_le_bytes().to_vec();
    p.extend_from_slice(&sent_ns.to_le_bytes());
    p.extend_from_slice(&[0; 20]); // messages
    p
}

#[test]
fn one_line_10_12_11_13() {
    let mut t = SeqTracker::new(SeqFormat::default());
    let mut delivered = Vec::new();
    for seq in [10, 12, 11, 13] {
        t.on_packet(&u64be(seq), |e| {
            if let FeedEvent::Deliver(d) = e {
                delivered.push(d.first);
            }
        });
    }
    t.finish(|_| {});
    let c = t.counters();
    assert_eq!(delivered, [10, 12, 11, 13]);
    assert_eq!((c.reordered, c.lost, c.gaps), (1, 0, 0));
}

#[test]
fn two_lines_each_missing_a_different_range_deliver_everything_once() {
    let mut arb = Arbiter::new(SeqFormat::default(), 2).unwrap();
    let t0 = Instant::now();
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    for seq in 1..=10_000u64 {
        let now = t0 + Duration::from_micros(seq);
        // A misses 2000..=2999, B misses 6000..=6499; B runs a little late.
        if !(2000..3000).contains(&seq) {
            arb.on_packet(0, &u64be(seq), 0, now, |e| {
                if let FeedEvent::Deliver(d) = e {
                    assert!(seen.insert(d.first), "{} twice", d.first);
                    order.push(d.first);
                }
            })
            .unwrap();
        }
        if !(6000..6500).contains(&seq) {
            arb.on_packet(1, &u64be(seq), 0, now, |e| {
                if let FeedEvent::Deliver(d) = e {
                    assert!(seen.insert(d.first), "{} twice", d.first);
                    order.push(d.first);
                }
            })
            .unwrap();
        }
    }
    let mut lost_events = 0;
    arb.finish(|e| lost_events += matches!(e, FeedEvent::Lost { .. }) as u32);
    assert_eq!(order, (1..=10_000).collect::<Vec<_>>());
    let c = arb.counters();
    assert_eq!(
        (c.messages, c.lost, c.gaps, c.duplicates),
        (10_000, 0, 0, 8_500)
    );
    assert_eq!(lost_events, 0);
    let (a, b) = (arb.line(0).unwrap(), arb.line(1).unwrap());
    assert_eq!((a.gaps, a.lost), (1, 1000));
    assert_eq!((b.gaps, b.lost), (1, 500));
    assert_eq!(a.first + b.first, 10_000);
    assert_eq!(b.first, 1000);
    assert!(!a.stale && !b.stale);
}

#[test]
fn moldudp64_heartbeats_blocks_a_lost_packet_and_the_end() {
    let s = b"NASDAQ0001";
    let mut t = SeqTracker::new(SeqFormat::MoldUdp64);
    let mut messages = Vec::new();
    let mut events = Vec::new();
    let packets = [
        mold(s, 1, 0), // heartbeat: next is 1
        mold(s, 1, 3), // 1..=3
        mold(s, 4, 1), // 4
        mold(s, 5, 0), // heartbeat
        // 5..=9 (5 messages) lost
        mold(s, 10, 2),      // 10, 11
        mold(s, 12, 0),      // heartbeat
        mold(s, 12, 4),      // 12..=15
        mold(s, 16, 0xFFFF), // end of session
    ];
    let mut verdicts = Vec::new();
    for p in &packets {
        verdicts.push(t.on_packet(p, |e| match e {
            FeedEvent::Deliver(d) => messages.extend(d.first..d.first + d.count),
            e => events.push(e),
        }));
    }
    t.finish(|e| events.push(e));
    use Verdict::*;
    assert_eq!(
        verdicts,
        [
            Heartbeat,
            New,
            New,
            Heartbeat,
            New,
            Heartbeat,
            New,
            EndOfSession
        ]
    );
    assert_eq!(messages, [1, 2, 3, 4, 10, 11, 12, 13, 14, 15]);
    assert_eq!(
        events,
        [
            FeedEvent::GapOpened { from: 5, to: 9 },
            FeedEvent::EndOfSession { next: 16 },
            FeedEvent::Lost { from: 5, to: 9 },
        ]
    );
    let c = t.counters();
    assert_eq!((c.messages, c.lost, c.gaps), (10, 5, 1));
    assert_eq!((c.heartbeats, c.sessions_ended, c.packets), (3, 1, 8));
}

#[test]
fn moldudp64_a_heartbeat_reveals_a_lost_tail() {
    let s = b"NASDAQ0001";
    let mut t = SeqTracker::new(SeqFormat::MoldUdp64);
    t.on_packet(&mold(s, 1, 2), |_| {});
    // 3..=5 lost, then only heartbeats: the heartbeat says 6 is next.
    t.on_packet(&mold(s, 6, 0), |_| {});
    t.finish(|_| {});
    assert_eq!(t.counters().lost, 3);
}

#[test]
fn moldudp64_a_new_session_restarts() {
    let mut arb = Arbiter::new(SeqFormat::MoldUdp64, 2).unwrap();
    let now = Instant::now();
    let mut events = Vec::new();
    for (line, p) in [
        (0, mold(b"SESSION001", 100, 2)),
        (1, mold(b"SESSION001", 100, 2)),
        (0, mold(b"SESSION002", 1, 3)),
        (1, mold(b"SESSION002", 1, 3)),
    ] {
        arb.on_packet(line, &p, 0, now, |e| events.push(e)).unwrap();
    }
    assert!(events.contains(&FeedEvent::Restart { from: 102, to: 1 }));
    let delivered: u64 = events
        .iter()
        .filter_map(|e| match e {
            FeedEvent::Deliver(d) => Some(d.count),
            _ => None,
        })
        .sum();
    assert_eq!(delivered, 5);
    assert_eq!(arb.counters().restarts, 1);
}

#[test]
fn mdp3_with_a_lost_packet() {
    let mut t = SeqTracker::new(SeqFormat::Mdp3);
    let t0 = 1_700_000_000_000_000_000u64;
    let mut latest_sent = None;
    for seq in [500u32, 501, 503, 504] {
        let p = mdp3(seq, t0 + u64::from(seq) * 1000);
        // tools read the sending time for latency
        latest_sent = SeqFormat::Mdp3.parse(&p).unwrap().sending_time();
        t.on_packet(&p, |_| {});
    }
    t.finish(|_| {});
    let c = t.counters();
    assert_eq!((c.messages, c.lost, c.gaps), (4, 1, 1));
    assert!(latest_sent.is_some());
}

#[test]
fn a_short_packet_counts_malformed() {
    for (format, short) in [
        (SeqFormat::default(), vec![0u8; 7]),
        ("u32le@10".parse().unwrap(), vec![0u8; 13]),
        (SeqFormat::MoldUdp64, vec![0u8; 19]),
        (SeqFormat::Mdp3, vec![0u8; 11]),
    ] {
        let mut t = SeqTracker::new(format);
        assert_eq!(
            t.on_packet(&short, |_| panic!("no event")),
            Verdict::Malformed
        );
        let mut arb = Arbiter::new(format, 2).unwrap();
        let v = arb
            .on_packet(1, &short, 0, Instant::now(), |_| panic!("no event"))
            .unwrap();
        assert_eq!(v, Verdict::Malformed);
        assert_eq!((t.counters().malformed, t.counters().packets), (1, 1));
        assert_eq!(arb.counters().malformed, 1);
        assert_eq!(arb.line(1).unwrap().malformed, 1);
    }
}
