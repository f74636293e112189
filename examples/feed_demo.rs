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
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use feed::{send_feed, FeedHandler, FeedStats, Live};
use ipv4_reactor::reactor::{ChannelSink, Overflow, Reactor};
use ipv4_reactor::{ControlFlags, Interface, PacketConn};

const USAGE: &str = "\
usage: feed_demo [--rate PPS] [--size BYTES] [--duration SECS] [--mode callback|channel]
                 [--group A.B.C.D:PORT] [--batch N] [--spin] [--json]

A loopback multicast feed (interface lo) sent by one thread and received by
the reactor on another, with live figures and a latency summary.

  --rate PPS        packets per second to send (default 100000)
  --size BYTES      payload size, at least 8 (default 64)
  --duration SECS   how long to send (default 10)
  --mode M          callback: the handler borrows each packet (default);
                    channel: packets go through a ChannelSink to a consumer thread
  --group G:P       multicast group and port (default 239.255.77.1:30001)
  --batch N         reactor slots per recvmmsg (default 64)
  --spin            reactor spins instead of sleeping in epoll
  --json            print the summary as one JSON line
";

struct Args {
    rate: u64,
    size: usize,
    duration: Duration,
    channel: bool,
    group: SocketAddrV4,
    batch: usize,
    spin: bool,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        rate: 100_000,
        size: 64,
        duration: Duration::from_secs(10),
        channel: false,
        group: SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 1), 30001),
        batch: 64,
        spin: false,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--rate" => a.rate = num(&value("--rate")?, "--rate")?,
            "--size" => a.size = num(&value("--size")?, "--size")? as usize,
            "--duration" => {
                let v = value("--duration")?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--duration: {v:?} is not a number of seconds"))?;
                if !(secs > 0.0 && secs < 86_400.0) {
                    return Err(format!("--duration: {v} is out of range"));
                }
                a.duration = Duration::from_secs_f64(secs);
            }
            "--mode" => {
                a.channel = match value("--mode")?.as_str() {
                    "callback" => false,
                    "channel" => true,
                    other => {
                        return Err(format!("--mode: {other:?} is neither callback nor channel"))
                    }
                }
            }
            "--group" => {
                let v = value("--group")?;
                a.group = v
                    .parse()
                    .map_err(|_| format!("--group: {v:?} is not A.B.C.D:PORT"))?;
                if !a.group.ip().is_multicast() {
                    return Err(format!(
                        "--group: {} is not a multicast address",
                        a.group.ip()
                    ));
                }
            }
            "--batch" => a.batch = num(&value("--batch")?, "--batch")? as usize,
            "--spin" => a.spin = true,
            "--json" => a.json = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.size < 8 || a.size > 65_000 {
        return Err(format!("--size: {} is out of range (8 to 65000)", a.size));
    }
    if a.rate == 0 {
        return Err("--rate must be at least 1".into());
    }
    if a.batch == 0 || a.batch > 1024 {
        return Err(format!("--batch: {} is out of range (1 to 1024)", a.batch));
    }
    Ok(a)
}

fn num(v: &str, name: &str) -> Result<u64, String> {
    v.parse()
        .map_err(|_| format!("{name}: {v:?} is not a whole number"))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("feed_demo: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
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
        .batch_slots(args.batch)
        .payload_size(args.size.max(2048))
        .spin(args.spin)
        .spawn()?;

    let mut consumer = None;
    let key = if args.channel {
        let (sink, packets) = ChannelSink::bounded(65_536, args.size.max(2048), Overflow::Block)?;
        let mut stats = FeedStats::new(Arc::clone(&live));
        let done = done_tx.clone();
        consumer = Some(thread::spawn(move || {
            for p in packets.iter() {
                stats.on_packet(&p, &p.cm, p.drops_before, SystemTime::now());
            }
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
        args.size,
        args.duration.as_secs_f64(),
        if args.channel { "channel" } else { "callback" },
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
        let (group, rate, size, duration) = (args.group, args.rate, args.size, args.duration);
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
    let (p50, p99, p999) = (
        stats.latency.percentile(50.0),
        stats.latency.percentile(99.0),
        stats.latency.percentile(99.9),
    );
    if args.json {
        println!(
            "{{\"mode\":\"{}\",\"sent\":{sent},\"received\":{received},\"lost\":{missing},\"gaps\":{},\"kernel_drops\":{},\"unaccounted\":{unaccounted},\"elapsed_s\":{:.3},\"pps\":{pps:.0},\"batch_fill\":{:.2},\"latency_ns\":{{\"p50\":{p50},\"p99\":{p99},\"p999\":{p999},\"max\":{}}}}}",
            if args.channel { "channel" } else { "callback" },
            stats.gaps,
            stats.kernel_drops,
            send_elapsed.as_secs_f64(),
            counters.recv.average_batch(),
            stats.latency.max,
        );
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "feed_demo summary ({} mode)",
            if args.channel { "channel" } else { "callback" }
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
        let _ = writeln!(out, "    p50             {:>9.1} us", p50 as f64 / 1e3);
        let _ = writeln!(out, "    p99             {:>9.1} us", p99 as f64 / 1e3);
        let _ = writeln!(out, "    p99.9           {:>9.1} us", p999 as f64 / 1e3);
        let _ = writeln!(
            out,
            "    max             {:>9.1} us",
            stats.latency.max as f64 / 1e3
        );
    }
    if unaccounted != 0 {
        eprintln!(
            "feed_demo: {unaccounted} packets lost without a kernel drop to account for them"
        );
    }
    Ok(unaccounted == 0)
}
