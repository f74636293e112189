// cargo run --release --example drain_compare [-- --packets 50000 --rounds 7 --json]
//
// Catch-up (drain) throughput, side by side in one run: the receive queue is
// filled with N packets while nobody reads, then each receive path drains it;
// rate = packets / (last read - first read). Sides alternate, round after
// round, and the median of each is compared with a plain libc recvmmsg loop
// doing the same per-packet work (`benches/support/libc_drain.rs`).
// Traffic is unicast UDP over 127.0.0.1 only. Run as root for a receive
// buffer large enough to hold N packets (SO_RCVBUFFORCE); without it N is
// cut to what net.core.rmem_max allows.

use clap::Parser;
use ipv4_reactor::PacketConn;
use serde::Serialize;

#[path = "../benches/support/drain_sides.rs"]
mod drain_sides;

use drain_sides::{prepare, thread_cpu_ns, Drainer, Side, PAYLOAD};

/// Catch-up (drain) throughput of each receive path, side by side, against
/// a plain libc recvmmsg loop doing the same per-packet work.
#[derive(Parser, Debug)]
#[command(name = "drain_compare")]
struct Args {
    /// Packets queued before each drain
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    packets: usize,
    /// Rounds (the sides alternate; medians are reported)
    #[arg(long, value_name = "N", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Only these sides (and their baselines): libc_cmsg batch_cmsg
    /// reactor_cmsg reactor_channel_cmsg reactor_channel_thread
    /// reactor_channel_batch reactor_channel_batch_thread (compare them
    /// with reactor_cmsg: ask for it too; a _thread side's consumer runs
    /// on CPU 0 and its CPU time is the reactor thread's only) batch1_cmsg
    /// std_recv_from libc_quiet reactor_quiet reactor_bare reactor_bare_2x
    /// reactor_ab (baseline reactor_bare) reactor_ab_copies (2N packets;
    /// baseline reactor_bare_2x); with the io-uring feature
    /// reactor_uring_quiet reactor_uring_bare (baseline libc_quiet)
    #[arg(long, value_name = "KEY,KEY", value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Print the result as one JSON line
    #[arg(long)]
    json: bool,
}

/// One side's figures in the `--json` line.
#[derive(Serialize)]
struct SideJson {
    pps: f64,
    ratio: f64,
    pps_per_cpu: f64,
    cpu_ratio: f64,
}

fn main() -> std::io::Result<()> {
    let Args {
        packets,
        rounds,
        only,
        json,
    } = Args::parse();
    let rounds = rounds as usize;

    let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
    // A side's baseline always runs with it, so every ratio has its reference.
    let wanted = |s: Side| {
        only.as_ref().is_none_or(|keys| {
            Side::ALL
                .iter()
                .any(|&w| keys.iter().any(|k| k == w.key()) && (w == s || w.baseline() == s))
        })
    };
    struct Row {
        side: Side,
        wall: Vec<f64>,
        cpu: Vec<f64>,
        drainer: Drainer,
    }
    let mut rows: Vec<Row> = Side::ALL
        .iter()
        .filter(|&&s| wanted(s))
        .map(|&side| {
            Ok(Row {
                side,
                wall: Vec::new(),
                cpu: Vec::new(),
                drainer: Drainer::new(side)?,
            })
        })
        .collect::<std::io::Result<_>>()?;
    if let Some(keys) = &only {
        if let Some(k) = keys
            .iter()
            .find(|k| !Side::ALL.iter().any(|s| s.key() == k.as_str()))
        {
            let known: Vec<&str> = Side::ALL.iter().map(|s| s.key()).collect();
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("--only: no side {k:?}; the sides are {}", known.join(", ")),
            ));
        }
    }
    let mut effective_packets = packets;
    for round in 0..rounds {
        // Start each round with a different side, so no side always runs
        // first (or right after the same neighbour).
        let start = round % rows.len();
        rows.rotate_left(start);
        for row in rows.iter_mut() {
            let (rxs, queued) = prepare(row.side, &tx, packets)?;
            if !matches!(row.side, Side::ReactorBare2x | Side::ReactorAbCopies) {
                effective_packets = queued;
            }
            let cpu_before = thread_cpu_ns();
            let (got, elapsed) = row.drainer.drain_lines(rxs, queued)?;
            let cpu = thread_cpu_ns().saturating_sub(cpu_before).max(1);
            if got != queued {
                eprintln!(
                    "round {round}: {} got {got} of {queued} packets",
                    row.side.name()
                );
            }
            row.wall.push(got as f64 / elapsed.as_secs_f64());
            row.cpu.push(got as f64 * 1e9 / cpu as f64);
        }
        rows.rotate_right(start);
    }

    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let base = |s: Side| rows.iter().find(|r| r.side == s.baseline()).unwrap();
    let ratios = |r: &Row| {
        let b = base(r.side);
        (
            median(&r.wall),
            median(&r.wall) / median(&b.wall),
            median(&r.cpu),
            median(&r.cpu) / median(&b.cpu),
        )
    };
    if json {
        // {"packets":..,"rounds":..,"<side>":{..},...}, sides in table order.
        let mut out = serde_json::Map::new();
        out.insert("packets".into(), effective_packets.into());
        out.insert("rounds".into(), rounds.into());
        for r in &rows {
            let (wall, wall_ratio, cpu, cpu_ratio) = ratios(r);
            let side = SideJson {
                pps: wall.round(),
                ratio: (wall_ratio * 1e3).round() / 1e3,
                pps_per_cpu: cpu.round(),
                cpu_ratio: (cpu_ratio * 1e3).round() / 1e3,
            };
            out.insert(
                r.side.key().into(),
                serde_json::to_value(side).expect("a serializable side"),
            );
        }
        println!("{}", serde_json::Value::Object(out));
    } else {
        println!("catch-up drain of {effective_packets} queued {PAYLOAD}-byte packets (2N sides: twice that), median of {rounds} alternating rounds");
        println!(
            "{:<44} {:>10} {:>7} {:>12} {:>7}",
            "receive path", "pkts/s", "ratio", "pkts/cpu-s", "ratio"
        );
        for r in &rows {
            let (wall, wall_ratio, cpu, cpu_ratio) = ratios(r);
            println!(
                "{:<44} {wall:>10.0} {wall_ratio:>7.3} {cpu:>12.0} {cpu_ratio:>7.3}",
                r.side.name()
            );
        }
        println!(
            "(ratios: against the libc loop doing the same per-packet work; pkts/s by the wall"
        );
        println!(" clock from first to last read, pkts/cpu-s by the receiving thread's CPU time,");
        println!(" which leaves out time spent waiting for a CPU on a shared machine)");
    }
    Ok(())
}
