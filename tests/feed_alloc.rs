//! The feed module allocates at construction only: a counting global
//! allocator watches trackers and an arbiter through loss, reordering,
//! copies, very late fills, lost-record overflow, restarts, sessions,
//! staleness and finish().
//!
//! Its own test binary because it installs a `#[global_allocator]`. Only
//! allocations made by the current thread while its flag is set are counted.

mod util;

use std::time::{Duration, Instant};

use ipv4_reactor::feed::{Arbiter, FeedEvent, SeqFormat, SeqTracker, TrackerConfig};
use util::counted;

#[global_allocator]
static GLOBAL: util::CountingAlloc = util::CountingAlloc;

/// A mixed sequence: runs with holes, reordering, copies, far-late packets.
fn seqs() -> Vec<u64> {
    let mut v = Vec::new();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in 0..200_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 100 {
            0..=4 => {}                                 // lost on the wire
            5..=9 => v.extend([i + 3, i]),              // reordered
            10..=11 => v.extend([i, i]),                // copy
            12 => v.extend([i, i.saturating_sub(300)]), // far late (window 128)
            _ => v.push(i),
        }
    }
    v
}

#[test]
fn tracker_allocates_nothing_per_packet() {
    let seqs = seqs();
    let payloads: Vec<[u8; 8]> = seqs.iter().map(|s| s.to_be_bytes()).collect();
    // A small window and record: far-late fills, record overflow and bulk
    // jumps all happen.
    let config = TrackerConfig::for_format(SeqFormat::default())
        .with_window(128)
        .with_lost_record(4);
    let mut t = SeqTracker::with_config(SeqFormat::default(), config).unwrap();
    let mut events = 0u64;
    let ((), n, _) = counted(|| {
        for p in &payloads {
            t.on_packet(p, |_| events += 1);
        }
        t.on_packet(&[1, 2], |_| events += 1); // malformed
        t.on_packet(&(1u64 << 40).to_be_bytes(), |_| events += 1); // restart
        t.on_packet(&((1u64 << 40) + 5000).to_be_bytes(), |_| events += 1); // jump
        t.finish(|_| events += 1);
    });
    assert_eq!(n, 0, "allocations while tracking");
    let c = t.counters();
    assert!(c.lost > 0 && c.reordered > 0 && c.duplicates > 0 && c.restarts == 1);
    assert!(events > 0);
}

#[test]
fn arbiter_allocates_nothing_per_packet() {
    let s1 = b"SESSION001";
    let s2 = b"SESSION002";
    let mold = |session: &[u8; 10], seq: u64, count: u16| {
        let mut p = [0u8; 20];
        p[..10].copy_from_slice(session);
        p[10..18].copy_from_slice(&seq.to_be_bytes());
        p[18..20].copy_from_slice(&count.to_be_bytes());
        p
    };
    let mut packets = Vec::new();
    for (i, s) in seqs().iter().enumerate() {
        let line = i % 3;
        let count = if i % 17 == 0 { 0 } else { 1 + (i % 3) as u16 };
        packets.push((line, mold(s1, s * 3 + 1, count)));
    }
    packets.push((1, mold(s2, 1, 4)));
    packets.push((0, mold(s2, 5, 0xFFFF)));
    let config = TrackerConfig::for_format(SeqFormat::MoldUdp64).with_window(256);
    let mut arb =
        Arbiter::with_config(SeqFormat::MoldUdp64, 3, config, Duration::from_micros(50)).unwrap();
    let t0 = Instant::now();
    let mut delivered = 0u64;
    let ((), n, _) = counted(|| {
        for (i, (line, p)) in packets.iter().enumerate() {
            // Line 2 goes silent for a while: stale, then recovered.
            if *line == 2 && (50_000..60_000).contains(&i) {
                continue;
            }
            let now = t0 + Duration::from_micros(i as u64);
            arb.on_packet(*line, p, 1, now, |e| {
                if let FeedEvent::Deliver(d) = e {
                    delivered += d.count;
                }
            })
            .unwrap();
            if i % 1000 == 0 {
                arb.poll(now, |_| {});
            }
        }
        arb.on_packet(0, &[0; 3], 0, t0, |_| {}).unwrap();
        arb.finish(|_| {});
    });
    assert_eq!(n, 0, "allocations while arbitrating");
    assert!(delivered > 0);
    assert!(arb.line(2).unwrap().stale_events > 0);
}
