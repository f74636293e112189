//! Catch-up (drain) throughput with criterion: the receive queue is filled
//! with N packets (not timed), then each receive path drains it (timed).
//! Throughput is reported in packets/s; compare the sides of one run.
//! `examples/drain_compare.rs` prints the same comparison as ratios.
//!
//! cargo bench --bench drain   (as root, for a receive buffer that holds N)

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipv4_reactor::PacketConn;

#[path = "support/drain_sides.rs"]
mod drain_sides;

use drain_sides::{prepare, receiver, Drainer, Side};

fn catch_up(c: &mut Criterion) {
    let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let wanted = 20_000;
    let mut group = c.benchmark_group("catch_up_drain");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for &side in Side::ALL {
        let (_, n) = receiver(side, wanted).unwrap();
        let n = match side {
            Side::ReactorBare2x | Side::ReactorAbCopies => 2 * n,
            _ => n,
        };
        group.throughput(Throughput::Elements(n as u64));
        let mut drainer = Drainer::new(side).unwrap();
        group.bench_function(side.key(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (rxs, n) = prepare(side, &tx, wanted).unwrap();
                    let (_, elapsed) = drainer.drain_lines(rxs, n).unwrap();
                    total += elapsed;
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, catch_up);
criterion_main!(benches);
