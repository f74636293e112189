//! Cost per packet of the feed module, side by side with the C-style
//! baseline a feed handler would write by hand: `if seq == expected`.
//!
//! cargo bench --bench feed
//!
//! Every variant reads a u64 BE sequence number from an 8-byte payload it
//! has just written, so the payload work is the same on both sides.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipv4_reactor::feed::{Arbiter, FeedEvent, SeqFormat, SeqTracker};

/// In order, except that one pair in 16 is swapped (one packet in 8 is late).
#[inline]
fn reordered(i: u64) -> u64 {
    match i % 16 {
        0 => i + 1,
        1 => i - 1,
        _ => i,
    }
}

/// The hand-written loop: counts gaps and lost, knows nothing of late
/// packets or copies.
#[derive(Default)]
struct Baseline {
    expected: u64,
    delivered: u64,
    gaps: u64,
    lost: u64,
}

impl Baseline {
    #[inline]
    fn on_packet(&mut self, payload: &[u8]) {
        let Some(b) = payload.get(..8) else { return };
        let seq = u64::from_be_bytes(b.try_into().unwrap());
        if seq == self.expected {
            self.delivered += 1;
            self.expected = seq + 1;
        } else if seq > self.expected {
            self.gaps += 1;
            self.lost += seq - self.expected;
            self.delivered += 1;
            self.expected = seq + 1;
        }
    }
}

fn feed(c: &mut Criterion) {
    let mut group = c.benchmark_group("feed_per_packet");
    group.throughput(Throughput::Elements(1));

    for (name, order) in [
        ("in_order", (|i| i) as fn(u64) -> u64),
        ("reordered_1_in_8", reordered),
    ] {
        group.bench_function(format!("baseline_expected_eq_seq/{name}"), |b| {
            let mut base = Baseline::default();
            let mut i = 0u64;
            b.iter(|| {
                let p = order(i).to_be_bytes();
                i += 1;
                base.on_packet(black_box(&p));
            });
            black_box(base.delivered + base.gaps + base.lost);
        });
        group.bench_function(format!("tracker/{name}"), |b| {
            let mut t = SeqTracker::new(SeqFormat::default());
            let mut delivered = 0u64;
            let mut i = 0u64;
            b.iter(|| {
                let p = order(i).to_be_bytes();
                i += 1;
                t.on_packet(black_box(&p), |e| {
                    if let FeedEvent::Deliver(d) = e {
                        delivered += d.count;
                    }
                })
            });
            black_box(delivered);
        });
    }

    // Two lines, A and B, each packet arriving on both: an iteration is one
    // packet of one line (half of them copies).
    group.bench_function("baseline_two_lines_seq_ge_expected", |b| {
        let mut expected = 0u64;
        let mut delivered = 0u64;
        let mut copies = [0u64; 2];
        let mut i = 0u64;
        b.iter(|| {
            let p = (i / 2).to_be_bytes();
            let line = (i % 2) as usize;
            i += 1;
            let seq = u64::from_be_bytes(black_box(p));
            if seq >= expected {
                delivered += 1;
                expected = seq + 1;
            } else {
                copies[line] += 1;
            }
        });
        black_box((delivered, copies));
    });
    group.bench_function("arbiter_two_lines", |b| {
        let mut arb = Arbiter::new(SeqFormat::default(), 2).unwrap();
        // A reactor hands one time per batch; a fixed one keeps the clock
        // out of the figure.
        let now = Instant::now();
        let mut delivered = 0u64;
        let mut i = 0u64;
        b.iter(|| {
            let p = (i / 2).to_be_bytes();
            let line = (i % 2) as usize;
            i += 1;
            arb.on_packet(line, black_box(&p), 0, now, |e| {
                if let FeedEvent::Deliver(d) = e {
                    delivered += d.count;
                }
            })
        });
        black_box(delivered);
    });
    group.finish();
}

criterion_group!(benches, feed);
criterion_main!(benches);
