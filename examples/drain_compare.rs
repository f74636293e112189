// cargo run --release --example drain_compare [-- --packets 50000 --rounds 7 --json]
//
// Catch-up (drain) throughput, side by side in one run: the receive queue is
// filled with N packets while nobody reads, then each receive path drains it;
// rate = packets / (last read - first read). Sides alternate, round after
// round, and the median of each is compared with a plain libc recvmmsg loop
// doing the same per-packet work (`ipv4_reactor::baseline::LibcDrain`).
// Traffic is unicast UDP over 127.0.0.1 only. Run as root for a receive
// buffer large enough to hold N packets (SO_RCVBUFFORCE); without it N is
// cut to what net.core.rmem_max allows.

use ipv4_reactor::PacketConn;

#[path = "../benches/support/drain_sides.rs"]
mod drain_sides;

use drain_sides::{fill, receiver, Drainer, Side, PAYLOAD};

fn main() -> std::io::Result<()> {
    let mut packets = 50_000usize;
    let mut rounds = 7usize;
    let mut json = false;
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--packets" => {
                packets = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--json" => json = true,
            "--only" => {
                only = Some(
                    args.next()
                        .unwrap_or_else(|| usage())
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            _ => usage(),
        }
    }

    let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
    // A side's baseline always runs with it, so every ratio has its reference.
    let wanted = |s: Side| {
        only.as_ref().is_none_or(|keys| {
            Side::ALL
                .iter()
                .any(|&w| keys.iter().any(|k| k == w.key()) && (w == s || w.baseline() == s))
        })
    };
    let mut results: Vec<(Side, Vec<f64>, Drainer)> = Side::ALL
        .iter()
        .filter(|&&s| wanted(s))
        .map(|&s| Ok((s, Vec::new(), Drainer::new(s)?)))
        .collect::<std::io::Result<_>>()?;
    let mut effective_packets = packets;
    for round in 0..rounds {
        // Start each round with a different side, so no side always runs
        // first (or right after the same neighbour).
        let start = round % results.len();
        results.rotate_left(start);
        for (side, rates, drainer) in results.iter_mut() {
            let (rx, fits) = receiver(*side, packets)?;
            effective_packets = fits;
            fill(&tx, rx.local_addr()?, effective_packets)?;
            let (got, elapsed) = drainer.drain(rx, effective_packets)?;
            if got != effective_packets {
                eprintln!(
                    "round {round}: {} got {got} of {effective_packets} packets",
                    side.name()
                );
            }
            rates.push(got as f64 / elapsed.as_secs_f64());
        }
        results.rotate_right(start);
    }

    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let base = |s: Side| {
        median(
            &results
                .iter()
                .find(|(x, _, _)| *x == s.baseline())
                .unwrap()
                .1,
        )
    };
    if json {
        let body: Vec<String> = results
            .iter()
            .map(|(s, r, _)| {
                format!(
                    "\"{}\":{{\"pps\":{:.0},\"ratio\":{:.3}}}",
                    s.key(),
                    median(r),
                    median(r) / base(*s)
                )
            })
            .collect();
        println!(
            "{{\"packets\":{effective_packets},\"rounds\":{rounds},{}}}",
            body.join(",")
        );
    } else {
        println!("catch-up drain of {effective_packets} queued {PAYLOAD}-byte packets, median of {rounds} alternating rounds");
        println!("{:<44} {:>12} {:>9}", "receive path", "packets/s", "ratio");
        for (s, r, _) in &results {
            println!(
                "{:<44} {:>12.0} {:>9.3}",
                s.name(),
                median(r),
                median(r) / base(*s)
            );
        }
        println!("(ratio: against the libc loop doing the same per-packet work)");
    }
    Ok(())
}

fn usage() -> ! {
    eprintln!("usage: drain_compare [--packets N] [--rounds N] [--only KEY,KEY] [--json]");
    eprintln!("keys: libc_cmsg batch_cmsg reactor_cmsg batch1_cmsg std_recv_from libc_quiet reactor_quiet");
    std::process::exit(2)
}
