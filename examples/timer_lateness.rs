//! Lateness of a periodic 1 ms reactor timer, in epoll mode (timerfd) and
//! spin mode, beside a plain `thread::sleep` loop: p50, p99 and max of
//! (when the handler ran - when it was due), alternating the sides.
//!
//! Run: `cargo run --release --example timer_lateness -- [--firings N]
//! [--rounds N]` (defaults 2000 and 5). Pin it for steadier figures:
//! `taskset -c 1 cargo run --release --example timer_lateness`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ipv4_reactor::reactor::Reactor;

/// Lateness of a periodic 1 ms reactor timer (epoll mode, spin mode)
/// beside a plain thread::sleep loop.
#[derive(Parser)]
struct Args {
    /// Firings per round and side
    #[arg(long, default_value_t = 2000)]
    firings: usize,
    /// Rounds (the sides alternate)
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

const PERIOD: Duration = Duration::from_millis(1);

/// One side of the comparison: the lateness of each of N firings.
type Side = fn(usize) -> Vec<Duration>;

fn reactor_side(spin: bool, firings: usize) -> Vec<Duration> {
    let mut reactor = Reactor::builder().spin(spin).build().expect("reactor");
    let late = Arc::new(Mutex::new(Vec::with_capacity(firings)));
    let l = Arc::clone(&late);
    reactor
        .add_periodic(PERIOD, move |ctx| {
            let mut l = l.lock().unwrap();
            l.push(ctx.lateness());
            if l.len() == firings {
                ctx.stop();
            }
        })
        .expect("timer");
    reactor.run().expect("run");
    let v = late.lock().unwrap().clone();
    v
}

/// The baseline: sleep until the next deadline, measure when it woke.
fn sleep_side(firings: usize) -> Vec<Duration> {
    let mut v = Vec::with_capacity(firings);
    let mut due = Instant::now() + PERIOD;
    for _ in 0..firings {
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        v.push(Instant::now().saturating_duration_since(due));
        due += PERIOD;
    }
    v
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let Args { firings, rounds } = Args::parse();
    let sides: [(&str, Side); 3] = [
        ("reactor epoll (timerfd)", |n| reactor_side(false, n)),
        ("reactor spin", |n| reactor_side(true, n)),
        ("thread::sleep loop", sleep_side),
    ];
    let mut all: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    for _ in 0..rounds {
        for (i, (_, side)) in sides.iter().enumerate() {
            all[i].extend(side(firings));
        }
    }
    println!(
        "periodic {PERIOD:?} timer, {firings} firings x {rounds} rounds per side (alternated)"
    );
    println!("{:<26} {:>10} {:>10} {:>10}", "side", "p50", "p99", "max");
    for ((name, _), v) in sides.iter().zip(all.iter_mut()) {
        v.sort();
        println!(
            "{:<26} {:>10.1?} {:>10.1?} {:>10.1?}",
            name,
            percentile(v, 0.5),
            percentile(v, 0.99),
            v[v.len() - 1]
        );
    }
}
