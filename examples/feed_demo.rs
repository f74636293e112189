// cargo run --release --example feed_demo [-- --rate 100000 --duration 10 --mode callback|channel --spin --json]
//
// The main job of ipv4-reactor, end to end on one machine: a sender thread
// publishes a sequence-numbered multicast feed on the loopback interface
// (nothing leaves the machine) with SendBatch, while a reactor receives it
// with control messages and kernel receive timestamps. It prints a live line
// every second and a summary at the end: sent, received, lost, kernel drops,
// packets/s and the latency from the kernel's receive timestamp to the
// handler. It exits with status 1 if any loss is not accounted for by the
// socket's kernel drop counter.

mod feed;

use std::io::Write;
use std::net::SocketAddrV4;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use serde::Serialize;

use feed::{send_feed, FeedHandler, FeedStats, Live};
use ipv4_reactor::reactor::{ChannelSink, Overflow, Reactor};
use ipv4_reactor::{ControlFlags, Interface, PacketConn};

/// A loopback multicast feed (interface lo) sent by one thread and received
/// by the reactor on another, with live figures and a latency summary.
#[derive(Parser, Debug)]
#[command(name = "feed_demo")]
struct Args {
    /// Packets per second to send
    #[arg(long, value_name = "PPS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Payload size, 8 to 65000
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(8..=65_000))]
    size: u64,
    /// How long to send, in seconds
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = duration)]
    duration: Duration,
    /// callback: the handler borrows each packet; channel: packets go
    /// through a ChannelSink to a consumer thread
    #[arg(long, value_enum, default_value_t = Mode::Callback)]
    mode: Mode,
    /// Multicast group and port (sent on lo only)
    #[arg(long, value_name = "A.B.C.D:PORT", default_value = "239.255.77.1:30001",
          value_parser = group)]
    group: SocketAddrV4,
    /// Reactor slots per recvmmsg
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    batch: u64,
    /// The reactor spins instead of sleeping in epoll
    #[arg(long)]
    spin: bool,
    /// Print the summary as one JSON line
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Callback,
    Channel,
}

fn duration(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs < 86_400.0 => Ok(Duration::from_secs_f64(secs)),
        Ok(_) => Err(format!(
            "{s} is out of range (more than 0, less than 86400)"
        )),
        Err(_) => Err(format!("{s:?} is not a number of seconds")),
    }
}

fn group(s: &str) -> Result<SocketAddrV4, String> {
    let g: SocketAddrV4 = s
        .parse()
        .map_err(|_| format!("{s:?} is not A.B.C.D:PORT"))?;
    if !g.ip().is_multicast() {
        return Err(format!("{} is not a multicast address", g.ip()));
    }
    Ok(g)
}

/// The `--json` summary.
#[derive(Serialize)]
struct Summary {
    mode: Mode,
    sent: u64,
    received: u64,
    lost: u64,
    gaps: u64,
    kernel_drops: u64,
    unaccounted: i64,
    elapsed_s: f64,
    pps: f64,
    batch_fill: f64,
    latency_ns: Latency,
}

#[derive(Serialize)]
struct Latency {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("feed_demo: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> std::io::Result<bool> {
    let channel = args.mode == Mode::Channel;
    let (size, batch) = (args.size as usize, args.batch as usize);
    let lo = Interface::loopback();
    let flags = ControlFlags::TIMESTAMP | ControlFlags::DROPS | ControlFlags::DST;
    let rx = PacketConn::multicast_receiver(args.group, lo.clone())
        .control(flags)
        .recv_buffer(32 << 20)
        .build()?;
    let rcvbuf = rx.recv_buffer_size()?;

    let live = Arc::new(Live::default());
    let (done_tx, done_rx) = crossbeam_channel::bounded(2);
    let (handle, reactor_thread) = Reactor::builder()
        .batch_slots(batch)
        .payload_size(size.max(2048))
        .spin(args.spin)
        .spawn()?;

    let mut consumer = None;
    let key = if channel {
        let (sink, packets) = ChannelSink::bounded(65_536, size.max(2048), Overflow::Block)?;
        let mut stats = FeedStats::new(Arc::clone(&live));
        let done = done_tx.clone();
        consumer = Some(thread::spawn(move || {
            for p in packets.iter() {
                stats.on_packet(&p, p.cm(), p.drops_before(), SystemTime::now());
            }
            stats.finish();
            let _ = done.send(stats);
        }));
        handle.register(rx, sink)?
    } else {
        handle.register(
            rx,
            FeedHandler {
                stats: Some(FeedStats::new(Arc::clone(&live))),
                done: done_tx.clone(),
            },
        )?
    };
    drop(done_tx);

    eprintln!(
        "feed_demo: group {} on lo, {} pps of {} bytes for {:.1} s, {} mode{}, receive buffer {} bytes",
        args.group,
        args.rate,
        size,
        args.duration.as_secs_f64(),
        if channel { "channel" } else { "callback" },
        if args.spin { ", spinning" } else { "" },
        rcvbuf
    );
    // A fresh flow's first packets can be dropped on lo right after a join.
    thread::sleep(Duration::from_millis(300));

    let sent = Arc::new(AtomicU64::new(0));
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let sent = Arc::clone(&sent);
        let sending = Arc::clone(&sending);
        let (group, rate, duration) = (args.group, args.rate, args.duration);
        thread::spawn(move || send_feed(&lo, group, rate, size, duration, &sent, &sending))
    };

    let start = Instant::now();
    let mut last = (0u64, start);
    let mut tick = 1;
    while sending.load(Ordering::Acquire) {
        thread::sleep(Duration::from_millis(50));
        if start.elapsed() >= Duration::from_secs(tick) {
            let now = Instant::now();
            let received = live.received.load(Ordering::Relaxed);
            let rate = (received - last.0) as f64 / now.duration_since(last.1).as_secs_f64();
            let fill = handle
                .socket_counters(key)
                .map(|c| c.recv.average_batch())
                .unwrap_or(0.0);
            eprintln!(
                "[{tick:>3}s] rate {rate:>9.0} pps  received {received:>9}  gaps {:>5}  lost {:>7}  kernel drops {:>7}  batch fill {fill:>5.1}",
                live.gaps.load(Ordering::Relaxed),
                live.lost.load(Ordering::Relaxed),
                live.kernel_drops.load(Ordering::Relaxed),
            );
            last = (received, now);
            tick += 1;
        }
    }
    let send_result = sender.join().expect("sender thread panicked");
    let send_elapsed = send_result?;
    let sent = sent.load(Ordering::Acquire);

    // Wait until everything sent is received or counted as dropped.
    let deadline = Instant::now() + Duration::from_secs(3);
    while live.received.load(Ordering::Relaxed) + live.kernel_drops.load(Ordering::Relaxed) < sent
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(10));
    }
    let counters = handle.socket_counters(key)?;
    handle.deregister(key)?; // drops the handler or the sink: figures come back
    handle.stop();
    reactor_thread.join().expect("reactor thread panicked")?;
    let stats = done_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| std::io::Error::other("the receiving side did not report"))?;
    if let Some(c) = consumer {
        c.join().expect("consumer thread panicked");
    }

    let received = stats.received;
    let missing = sent.saturating_sub(received);
    let unaccounted = missing as i64 - stats.kernel_drops as i64;
    let pps = received as f64 / send_elapsed.as_secs_f64();
    let latency = Latency {
        p50: stats.latency.value_at_quantile(0.50),
        p99: stats.latency.value_at_quantile(0.99),
        p999: stats.latency.value_at_quantile(0.999),
        max: stats.latency.max(),
    };
    if args.json {
        let summary = Summary {
            mode: args.mode,
            sent,
            received,
            lost: missing,
            gaps: stats.gaps,
            kernel_drops: stats.kernel_drops,
            unaccounted,
            elapsed_s: (send_elapsed.as_secs_f64() * 1e3).round() / 1e3,
            pps: pps.round(),
            batch_fill: (counters.recv.average_batch() * 100.0).round() / 100.0,
            latency_ns: latency,
        };
        println!(
            "{}",
            serde_json::to_string(&summary).expect("a serializable summary")
        );
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "feed_demo summary ({} mode)",
            if channel { "channel" } else { "callback" }
        );
        let _ = writeln!(out, "  sent              {sent:>12}");
        let _ = writeln!(out, "  received          {received:>12}");
        let _ = writeln!(
            out,
            "  lost              {missing:>12}   (in {} gaps)",
            stats.gaps
        );
        let _ = writeln!(out, "  kernel drops      {:>12}", stats.kernel_drops);
        let _ = writeln!(out, "  unaccounted loss  {unaccounted:>12}");
        let _ = writeln!(out, "  packets/s         {pps:>12.0}");
        let _ = writeln!(
            out,
            "  batch fill        {:>12.2}",
            counters.recv.average_batch()
        );
        let _ = writeln!(out, "  latency, kernel receive timestamp to handler:");
        for (name, ns) in [
            ("p50", latency.p50),
            ("p99", latency.p99),
            ("p99.9", latency.p999),
            ("max", latency.max),
        ] {
            let _ = writeln!(out, "    {name:<15} {:>9.1} us", ns as f64 / 1e3);
        }
    }
    if unaccounted != 0 {
        eprintln!(
            "feed_demo: {unaccounted} packets lost without a kernel drop to account for them"
        );
    }
    Ok(unaccounted == 0)
}
