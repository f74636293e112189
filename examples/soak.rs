// cargo run --release --example soak [-- --duration 60 --rate 0 --churn-ms 500 --json]
//
// A bounded soak of the whole receive path on the loopback interface
// (nothing leaves the machine): a sender floods a sequence-numbered
// multicast feed as fast as the machine takes it (or at --rate), the reactor
// receives it, and a second registered socket joins and leaves another group
// through the reactor's Handle every --churn-ms while a second sender feeds
// that group. At the end every sent packet of the main feed must be either
// received or counted as a kernel drop, and the process's file descriptors
// and resident memory must be flat from the end of the warm-up to the end.
// Exit status 1 when any of that fails. Stops by itself after --duration
// seconds (at most 600).

mod feed;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

use feed::{send_feed, FeedHandler, FeedStats, Live};
use ipv4_reactor::reactor::{Context, Reactor};
use ipv4_reactor::{ControlFlags, Interface, Packet, PacketConn};

/// A bounded soak of the whole receive path on lo: unpaced feed, join/leave
/// churn, exact accounting, descriptors and memory flat.
#[derive(Parser, Debug)]
#[command(name = "soak")]
struct Args {
    /// How long to run, 1 to 600 seconds
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    duration: u64,
    /// Packets per second of the main feed (0: unpaced)
    #[arg(long, value_name = "PPS", default_value_t = 0)]
    rate: u64,
    /// Payload size, 8 to 65000
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(8..=65_000))]
    size: u64,
    /// Join or leave the churn group every MS milliseconds (at least 10)
    #[arg(long = "churn-ms", value_name = "MS", default_value_t = 500)]
    churn_ms: u64,
    /// Print the summary as one JSON line
    #[arg(long)]
    json: bool,
}

/// The `--json` summary.
#[derive(Serialize)]
struct Summary {
    duration_s: f64,
    sent: u64,
    received: u64,
    kernel_drops: u64,
    unaccounted: i64,
    pps: f64,
    batch_fill: f64,
    churn_ops: u64,
    churn_sent: u64,
    churn_received: u64,
    fds_start: usize,
    fds_end: usize,
    fds_before: usize,
    fds_after: usize,
    rss_start: u64,
    rss_end: u64,
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> std::io::Result<bool> {
    let duration = Duration::from_secs(args.duration);
    let churn = Duration::from_millis(args.churn_ms.max(10));
    let fds_before = open_fds();
    let lo = Interface::loopback();
    let main_group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 78, 1), 30011);
    let churn_group = Ipv4Addr::new(239, 255, 78, 2);

    let rx = PacketConn::multicast_receiver(main_group, lo.clone())
        .control(ControlFlags::TIMESTAMP | ControlFlags::DROPS)
        .recv_buffer(32 << 20)
        .build()?;
    let churn_rx = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    churn_rx.set_multicast_all(false)?;
    let churn_dst = SocketAddrV4::new(churn_group, churn_rx.local_addr()?.port());

    let (handle, reactor_thread) = Reactor::builder().spawn()?;
    let live = Arc::new(Live::default());
    let (done_tx, done_rx) = crossbeam_channel::bounded::<FeedStats>(1);
    let key = handle.register(
        rx,
        FeedHandler {
            stats: Some(FeedStats::new(Arc::clone(&live))),
            done: done_tx,
        },
    )?;
    let churn_received = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&churn_received);
    let churn_key = handle.register(churn_rx, move |_p: &Packet<'_>, _c: &mut Context<'_>| {
        counted.fetch_add(1, Ordering::Relaxed);
    })?;
    thread::sleep(Duration::from_millis(300));

    let sent = Arc::new(AtomicU64::new(0));
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let (sent, sending, lo) = (Arc::clone(&sent), Arc::clone(&sending), lo.clone());
        let (rate, size) = (args.rate, args.size as usize);
        thread::spawn(move || send_feed(&lo, main_group, rate, size, duration, &sent, &sending))
    };
    let churn_sender = {
        let (sending, lo) = (Arc::clone(&sending), lo.clone());
        thread::spawn(move || -> std::io::Result<u64> {
            let tx = PacketConn::multicast_sender(&lo)?;
            let mut n = 0u64;
            while sending.load(Ordering::Acquire) {
                tx.send_to(&n.to_be_bytes(), None, churn_dst)?;
                n += 1;
                thread::sleep(Duration::from_millis(1));
            }
            Ok(n)
        })
    };

    eprintln!(
        "soak: main feed {main_group} on lo ({}), churn group {churn_group} every {} ms, {} s",
        if args.rate == 0 {
            "unpaced".to_string()
        } else {
            format!("{} pps", args.rate)
        },
        churn.as_millis(),
        args.duration
    );
    let start = Instant::now();
    let warmup = Duration::from_secs(2).min(duration / 4);
    let mut baseline: Option<(usize, u64)> = None;
    let mut joined = false;
    let mut churn_ops = 0u64;
    let mut next_churn = start;
    let mut next_print = start + Duration::from_secs(1);
    let mut last_received = 0;
    let mut steady_end = (open_fds(), rss_bytes());
    while sending.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= next_churn {
            if joined {
                handle.leave_group(churn_key, &lo, churn_group)?;
            } else {
                handle.join_group(churn_key, &lo, churn_group)?;
            }
            joined = !joined;
            churn_ops += 1;
            next_churn += churn;
        }
        if baseline.is_none() && now.duration_since(start) >= warmup {
            baseline = Some((open_fds(), rss_bytes()));
        }
        if now >= next_print {
            let received = live.received.load(Ordering::Relaxed);
            eprintln!(
                "[{:>4}s] {:>9} pps  received {:>11}  kernel drops {:>9}  churn ops {:>5}  fds {:>3}  rss {:>6} KiB",
                now.duration_since(start).as_secs(),
                received - last_received,
                received,
                live.kernel_drops.load(Ordering::Relaxed),
                churn_ops,
                open_fds(),
                rss_bytes() / 1024
            );
            last_received = received;
            steady_end = (open_fds(), rss_bytes());
            next_print += Duration::from_secs(1);
        }
        thread::sleep(Duration::from_millis(5));
    }
    let elapsed = sender.join().expect("sender thread panicked")?;
    let churn_sent = churn_sender.join().expect("churn sender panicked")?;
    let sent = sent.load(Ordering::Acquire);
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.received.load(Ordering::Relaxed) + live.kernel_drops.load(Ordering::Relaxed) < sent
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(10));
    }
    let (fds_end, rss_end) = steady_end;
    let (fds_start, rss_start) = baseline.unwrap_or(steady_end);
    let counters = handle.socket_counters(key)?;
    handle.deregister(key)?;
    handle.deregister(churn_key)?;
    handle.stop();
    reactor_thread.join().expect("reactor thread panicked")?;
    let stats = done_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| std::io::Error::other("the handler did not report"))?;
    // Everything is closed now (the handle holds the reactor's waker):
    // no descriptor may outlive its owner.
    drop(handle);
    let fds_after = open_fds();

    let unaccounted = sent as i64 - stats.received as i64 - stats.kernel_drops as i64;
    // Memory may move by allocator noise; a leak per packet or per churn
    // would show as megabytes over a run of millions of packets.
    let rss_growth = rss_end as i64 - rss_start as i64;
    let fds_flat = fds_end == fds_start && fds_after == fds_before;
    let rss_flat = rss_growth < 4 << 20;
    let pps = stats.received as f64 / elapsed.as_secs_f64();
    if args.json {
        let summary = Summary {
            duration_s: (elapsed.as_secs_f64() * 10.0).round() / 10.0,
            sent,
            received: stats.received,
            kernel_drops: stats.kernel_drops,
            unaccounted,
            pps: pps.round(),
            batch_fill: (counters.recv.average_batch() * 100.0).round() / 100.0,
            churn_ops,
            churn_sent,
            churn_received: churn_received.load(Ordering::Relaxed),
            fds_start,
            fds_end,
            fds_before,
            fds_after,
            rss_start,
            rss_end,
        };
        println!(
            "{}",
            serde_json::to_string(&summary).expect("a serializable summary")
        );
    } else {
        println!("soak summary");
        println!("  duration          {:>12.1} s", elapsed.as_secs_f64());
        println!("  sent              {sent:>12}");
        println!("  received          {:>12}", stats.received);
        println!("  kernel drops      {:>12}", stats.kernel_drops);
        println!("  unaccounted       {unaccounted:>12}");
        println!("  packets/s         {pps:>12.0}");
        println!(
            "  batch fill        {:>12.2}",
            counters.recv.average_batch()
        );
        println!("  churn ops         {churn_ops:>12}   ({} of {churn_sent} churn packets received while joined)", churn_received.load(Ordering::Relaxed));
        println!("  fds start/end     {fds_start:>5} / {fds_end}   (before setup {fds_before}, after teardown {fds_after})");
        println!(
            "  rss start/end     {:>5} / {} KiB",
            rss_start / 1024,
            rss_end / 1024
        );
    }
    let ok = unaccounted == 0 && fds_flat && rss_flat;
    if !ok {
        eprintln!(
            "soak: FAILED: unaccounted {unaccounted}, fds {fds_start} -> {fds_end} (before {fds_before}, after {fds_after}), rss growth {} KiB",
            rss_growth / 1024
        );
    }
    Ok(ok)
}
