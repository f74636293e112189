// mcast-dump 239.255.0.1:5000 --iface lo --json
//
// The receive side of a sequence-numbered multicast feed, built on the
// library's Reactor: joins GROUP on one named interface (any source, or
// source-specific with --source / --exclude), reads each packet's sequence
// number (--seq: a big-endian u64 at offset 0 by default, or the CME MDP
// 3.0 packet header), and shows every packet (a line for people, or JSON),
// a rate line each second and a summary at the end: packets, bytes,
// sequence gaps, lost sequence numbers, the socket's kernel drop counter
// (SO_RXQ_OVFL) and, for feeds that carry their send time, the latency
// from that stamp to the kernel's receive time. --quiet asks the kernel
// for nothing but the payload and the drop counter, for catch-up
// measurements with --stall-ms. --pcap writes what it receives to a
// capture file. SIGINT and SIGTERM end it with its summary.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use hdrhistogram::Histogram;
use serde::Serialize;

use ipv4_reactor::reactor::{Context, Reactor};
use ipv4_reactor::{ControlFlags, Packet, PacketConn};
use ipv4_reactor_tools::capture::Capture;
use ipv4_reactor_tools::cli::{self, Failure, Iface};
use ipv4_reactor_tools::output::{self, diag, diag_line};
use ipv4_reactor_tools::seq::{SeqFormat, SeqLayout};
use ipv4_reactor_tools::signals::StopSignal;

const TOOL: &str = "mcast-dump";

const AFTER_HELP: &str = "\
Output: packets, rate lines (each second) and the summary go to stdout; with
--json, stdout has only JSON lines and the rate lines go to stderr. Once the
socket is joined and set up, stderr gets one line starting with `listening`
(group, port, interface, effective receive buffer).

Latency: with --seq mdp3, or --stamp for payloads that mcast-send --stamp
wrote, each packet's send time is read from the payload and the latency is
the kernel's receive time minus it (a stamp ahead of the receive time counts
as 0): per packet, in the rate lines and as `latency_ns` percentiles in the
summary.

The summary is printed at every normal end: --count, --idle-exit-ms,
--timeout-ms, or SIGINT (Ctrl-C) / SIGTERM. A second signal while stopping
ends the program at once.

Exit status: 0 at a normal end (count reached, idle, timeout, signal), 1
when a socket call or the capture file fails, 2 for bad arguments.";

/// The receive side of a multicast feed (mdump's job).
///
/// Joins the multicast GROUP on IFACE, receives it on PORT and shows each
/// packet with its sequence number, gaps and kernel drops, a rate line each
/// second and a summary at the end.
#[derive(Parser, Debug)]
#[command(name = TOOL, version, after_help = AFTER_HELP)]
struct Args {
    /// Group and port to receive (port 0: the kernel picks one; the
    /// `listening` line tells which)
    #[arg(value_name = "GROUP:PORT", value_parser = cli::group_port_any)]
    group: SocketAddrV4,

    /// Interface to join on: name (lo), index (1) or one of its addresses
    /// (127.0.0.1)
    #[arg(long, value_name = "IFACE", value_parser = cli::iface)]
    iface: Iface,

    /// Receive only from ADDR (source-specific, include mode; repeatable)
    #[arg(long, value_name = "ADDR", value_parser = cli::source, conflicts_with = "exclude")]
    source: Vec<Ipv4Addr>,

    /// Receive from every source but ADDR (exclude mode; repeatable)
    #[arg(long, value_name = "ADDR", value_parser = cli::source)]
    exclude: Vec<Ipv4Addr>,

    /// Exit after N packets
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    count: Option<u64>,

    /// Exit when no packet was read for MS since the last one (the timer
    /// starts with the first packet)
    #[arg(long = "idle-exit-ms", value_name = "MS", value_parser = cli::millis)]
    idle_exit: Option<Duration>,

    /// Exit after MS in all (counted from the join)
    #[arg(long = "timeout-ms", value_name = "MS", value_parser = cli::millis)]
    timeout: Option<Duration>,

    /// Sleep MS after joining, before the first read (measures catch-up
    /// after a stall)
    #[arg(long = "stall-ms", value_name = "MS", value_parser = cli::millis)]
    stall: Option<Duration>,

    /// Receive buffer: SO_RCVBUFFORCE when allowed (root), else SO_RCVBUF
    /// capped by net.core.rmem_max
    #[arg(long, value_name = "BYTES", value_parser = rcvbuf)]
    rcvbuf: Option<u64>,

    /// Packets per recvmmsg call (reactor slots)
    #[arg(long, value_name = "N", default_value = "64", value_parser = batch)]
    batch: u64,

    /// Poll without sleeping: lower latency, one core at 100%
    #[arg(long)]
    spin: bool,

    /// A JSON object per packet and a JSON summary
    #[arg(long)]
    json: bool,

    /// No per-packet output; ask the kernel only for the drop counter (the
    /// fastest receive path; --seq mdp3, --stamp and --pcap ask for what
    /// they need on top)
    #[arg(long)]
    quiet: bool,

    /// Where the payload keeps its sequence number (and send time)
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = SeqFormat::U64Be)]
    seq: SeqFormat,

    /// Payloads carry their send time after the sequence number (as
    /// mcast-send --stamp writes them): report the latency
    #[arg(long)]
    stamp: bool,

    /// Write every packet received to FILE: pcap, nanosecond timestamps
    /// (the kernel's receive time), IPv4 + UDP headers as received
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
}

fn at_least_one(s: &str) -> Result<u64, String> {
    cli::whole_in(s, 1, u64::MAX)
}

fn rcvbuf(s: &str) -> Result<u64, String> {
    cli::whole_in(s, 1, i32::MAX as u64)
}

fn batch(s: &str) -> Result<u64, String> {
    cli::whole_in(s, 1, 1024)
}

/// A counter with one writer: the handler, which the reactor calls on this
/// same thread. Relaxed loads and stores compile to plain moves (no locked
/// instruction), so counting costs what a plain field would. It is shared
/// (in an `Arc`) only because the reactor owns the handler (`Send +
/// 'static`) while the main loop reads the figures between turns.
#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed)
    }

    /// Saturates instead of wrapping: a figure stuck at `u64::MAX` is
    /// visibly absurd, a wrapped one looks plausible.
    #[inline(always)]
    fn add(&self, v: u64) {
        self.set(self.get().saturating_add(v))
    }
}

/// The largest forward jump taken for loss (2^31 sequence numbers: over
/// three minutes of a 10 Mpps feed without one packet); a larger one starts
/// a new baseline. Below 2^32 - 1 on purpose: that is the smallest jump
/// between two consecutive iperf2 datagrams (their id is the upper half of
/// the 8 bytes read here).
const MAX_GAP: u64 = 1 << 31;

/// What the handler counts.
///
/// Sequence accounting: the first sequence number seen is the baseline
/// (packets before it are not counted as lost: the receiver cannot know
/// where the sender started). A number past the expected one is a gap of
/// `seq - expected` lost numbers. A number below the expected one means the
/// sender restarted (a new stream): it becomes the new baseline, with no
/// gap and no loss. So does a number more than [`MAX_GAP`] past the
/// expected one: no real feed loses that many in one gap, but a foreign
/// payload (whose first 8 bytes are not our sequence number, like iperf2's
/// 32-bit datagram id followed by a timestamp) jumps that far on every
/// packet.
struct Tally {
    /// `--count`, or `u64::MAX`: packets past it are ignored.
    limit: u64,
    layout: SeqLayout,
    packets: Counter,
    bytes: Counter,
    gaps: Counter,
    lost: Counter,
    truncated: Counter,
    restarts: Counter,
    /// The sequence number expected next, plus one, so that 0 can mean
    /// "no packet yet" without a second field to load.
    expected_plus_one: Counter,
    /// When the first packet was read.
    first: OnceLock<Instant>,
}

/// What [`Tally::record`] made of a packet.
#[derive(Clone, Copy)]
struct Record {
    seq: Option<u64>,
    /// Sequence numbers missing just before this packet.
    missing: u64,
    /// This packet reached `--count`.
    last: bool,
}

impl Tally {
    fn new(limit: u64, layout: SeqLayout) -> Tally {
        Tally {
            limit,
            layout,
            packets: Counter::default(),
            bytes: Counter::default(),
            gaps: Counter::default(),
            lost: Counter::default(),
            truncated: Counter::default(),
            restarts: Counter::default(),
            expected_plus_one: Counter::default(),
            first: OnceLock::new(),
        }
    }

    /// Counts one packet; `None` when `--count` was already reached (a
    /// stop takes effect after the current batch, whose remaining packets
    /// are ignored). The quiet path is this function and nothing else: no
    /// allocation, no formatting, no clock read but for the first packet.
    #[inline(always)]
    fn record(&self, payload: &[u8], truncated: bool) -> Option<Record> {
        let packets = self.packets.get();
        if packets >= self.limit {
            return None;
        }
        if packets == 0 {
            let _ = self.first.set(Instant::now());
        }
        self.packets.set(packets + 1);
        self.bytes.add(payload.len() as u64);
        if truncated {
            self.truncated.add(1);
        }
        let seq = self.layout.seq(payload);
        let missing = match seq {
            Some(seq) => self.track(seq),
            None => 0,
        };
        Some(Record {
            seq,
            missing,
            last: packets + 1 == self.limit,
        })
    }

    /// Gap accounting for one sequence number; returns how many are
    /// missing just before it.
    #[inline(always)]
    fn track(&self, seq: u64) -> u64 {
        let expected_plus_one = self.expected_plus_one.get();
        self.expected_plus_one.set(seq.wrapping_add(2));
        let expected = expected_plus_one.wrapping_sub(1);
        if expected_plus_one == 0 || seq == expected {
            return 0;
        }
        if seq > expected && seq - expected <= MAX_GAP {
            let missing = seq - expected;
            self.gaps.add(1);
            self.lost.add(missing);
            missing
        } else {
            self.restarts.add(1);
            0
        }
    }
}

/// Latency from the feed's send stamp to the kernel's receive time: one
/// histogram for the whole run, one for the current rate line.
struct Latency {
    total: Histogram<u64>,
    interval: Histogram<u64>,
}

/// The largest latency told apart (an hour, in ns); larger ones count as
/// this much.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

impl Latency {
    fn new() -> Latency {
        // Three significant digits from 1 ns to an hour.
        let h = Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds");
        Latency {
            total: h.clone(),
            interval: h,
        }
    }

    /// Records the latency of one packet, if it carries a send time and
    /// the kernel a receive time.
    fn record(&mut self, layout: SeqLayout, p: &Packet<'_>) -> Option<u64> {
        let sent = layout.send_time(p.payload)?;
        let received = p.cm.timestamp_nanos()?;
        let ns = received.saturating_sub(sent);
        self.total.saturating_record(ns);
        self.interval.saturating_record(ns);
        Some(ns)
    }
}

/// Percentiles of a latency histogram, for the JSON summary (`null` when
/// no packet carried a stamp).
#[derive(Serialize, Default)]
struct Percentiles {
    p50: Option<u64>,
    p90: Option<u64>,
    p99: Option<u64>,
    p999: Option<u64>,
    max: Option<u64>,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: Some(h.value_at_quantile(0.50)),
            p90: Some(h.value_at_quantile(0.90)),
            p99: Some(h.value_at_quantile(0.99)),
            p999: Some(h.value_at_quantile(0.999)),
            max: Some(h.max()),
        }
    }
}

/// Microseconds with one decimal, or `-`.
fn micros(ns: Option<u64>) -> String {
    ns.map_or_else(
        || "-".to_string(),
        |ns| format!("{:.1} us", ns as f64 / 1e3),
    )
}

/// What the full handler shares with the main loop: lines to print,
/// latency histograms and the capture file, behind one lock taken once per
/// packet (on the reactor's thread, so never contended but by the main
/// loop between turns).
struct Shared {
    /// Per-packet lines, written out by the main loop after each turn.
    out: Vec<u8>,
    latency: Option<Latency>,
    capture: Option<Capture>,
    /// The first error writing the capture; the loop stops on it.
    capture_error: Option<std::io::Error>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why the loop ended.
#[derive(Clone, Copy)]
enum End {
    Count(u64),
    Idle(Duration),
    Timeout(Duration),
    Signal(&'static str),
    CaptureFailed,
}

fn main() {
    let args = Args::parse();
    let stop = StopSignal::install().unwrap_or_else(|e| {
        diag(TOOL, format_args!("catching SIGINT and SIGTERM: {e}"));
        process::exit(cli::EXIT_FAILURE)
    });
    if let Err(f) = run(&args, &stop) {
        diag(TOOL, &f.msg);
        process::exit(f.status);
    }
}

/// The per-packet extras asked of the kernel.
fn control_flags(a: &Args, layout: SeqLayout) -> ControlFlags {
    // --quiet asks for the drop counter only: every other extra (source
    // address, IP_PKTINFO, TTL, TOS, timestamps) costs kernel work on each
    // packet.
    let mut flags = if a.quiet {
        ControlFlags::DROPS
    } else {
        ControlFlags::SRC
            | ControlFlags::DST
            | ControlFlags::INTERFACE
            | ControlFlags::TTL
            | ControlFlags::TOS
            | ControlFlags::DROPS
    };
    if layout.stamped() {
        flags |= ControlFlags::TIMESTAMP;
    }
    if a.pcap.is_some() {
        // What the rebuilt headers need.
        flags |= ControlFlags::SRC
            | ControlFlags::DST
            | ControlFlags::TTL
            | ControlFlags::TOS
            | ControlFlags::TIMESTAMP;
    }
    flags
}

fn run(a: &Args, stop: &StopSignal) -> Result<(), Failure> {
    let layout = SeqLayout::new(a.seq, a.stamp);
    let mut builder = PacketConn::multicast_receiver(a.group, a.iface.iface.clone())
        .control(control_flags(a, layout));
    if let Some(bytes) = a.rcvbuf {
        builder = builder.recv_buffer(bytes as usize);
    }
    for &s in &a.source {
        builder = builder.source(s);
    }
    for &s in &a.exclude {
        builder = builder.exclude(s);
    }
    let conn = builder.build().map_err(|e| {
        Failure::classify(
            &format!("joining {} on {}", a.group.ip(), a.iface.info.name),
            e,
        )
    })?;
    let port = conn
        .local_addr()
        .map_err(|e| Failure::runtime("reading the bound port", e))?
        .port();
    let rcvbuf = conn
        .recv_buffer_size()
        .map_err(|e| Failure::runtime("reading SO_RCVBUF", e))?;
    let capture = match &a.pcap {
        Some(path) => Some(
            Capture::create(path)
                .map_err(|e| Failure::runtime(&format!("creating {}", path.display()), e))?,
        ),
        None => None,
    };

    let mut reactor = Reactor::builder()
        .batch_slots(a.batch as usize)
        .spin(a.spin)
        .build()
        .map_err(|e| Failure::runtime("creating the reactor", e))?;
    let tally = Arc::new(Tally::new(a.count.unwrap_or(u64::MAX), layout));
    let shared = Arc::new(Mutex::new(Shared {
        out: Vec::new(),
        latency: layout.stamped().then(Latency::new),
        capture,
        capture_error: None,
    }));
    let registered = if a.quiet && !layout.stamped() && a.pcap.is_none() {
        // The fastest path: counting and nothing else.
        let tally = Arc::clone(&tally);
        reactor.register(conn, move |p: &Packet<'_>, ctx: &mut Context<'_>| {
            if let Some(r) = tally.record(p.payload, p.flags.truncated) {
                if r.last {
                    ctx.stop();
                }
            }
        })
    } else {
        let tally = Arc::clone(&tally);
        let shared = Arc::clone(&shared);
        let (lines, json) = (!a.quiet, a.json);
        let local = SocketAddrV4::new(*a.group.ip(), port);
        reactor.register(conn, move |p: &Packet<'_>, ctx: &mut Context<'_>| {
            let Some(r) = tally.record(p.payload, p.flags.truncated) else {
                return;
            };
            let mut sh = lock(&shared);
            let sh = &mut *sh;
            let latency = sh.latency.as_mut().and_then(|l| l.record(layout, p));
            if let Some(cap) = &mut sh.capture {
                if let Err(e) = write_capture(cap, p, local) {
                    sh.capture = None;
                    sh.capture_error = Some(e);
                    ctx.stop();
                }
            }
            if lines {
                let stamped = layout.stamped();
                if json {
                    output::push_json_line(&mut sh.out, &PacketJson::new(p, r, stamped, latency));
                } else {
                    packet_line(&mut sh.out, p, r, stamped.then_some(latency));
                }
            }
            if r.last {
                ctx.stop();
            }
        })
    };
    registered.map_err(|e| Failure::runtime("registering the socket with the reactor", e))?;

    let filter = if !a.source.is_empty() {
        format!(" include={}", join_addrs(&a.source))
    } else if !a.exclude.is_empty() {
        format!(" exclude={}", join_addrs(&a.exclude))
    } else {
        String::new()
    };
    diag_line(&format!(
        "listening {}:{port} iface={} ifindex={} rcvbuf={rcvbuf}{filter} batch={}{}{}",
        a.group.ip(),
        a.iface.info.name,
        a.iface.info.index,
        a.batch,
        if a.spin { " spin" } else { "" },
        if a.quiet { " quiet" } else { "" },
    ));

    let joined = Instant::now();
    let deadline = a.timeout.map(|t| joined + t);
    if let Some(stall) = a.stall {
        stall_for(stall, deadline, stop);
    }

    let (end, last_read) = receive_loop(a, deadline, stop, &mut reactor, &tally, &shared)?;
    flush(&shared);

    let counters = reactor.counters();
    let panics = reactor.take_panics();
    if !panics.is_empty() {
        return Err(Failure::runtime(
            "the packet handler panicked",
            panics.join("; "),
        ));
    }
    match end {
        End::Count(n) => diag(TOOL, format_args!("done: {n} packets")),
        End::Idle(d) => diag(TOOL, format_args!("done: idle for {} ms", d.as_millis())),
        End::Timeout(d) => diag(
            TOOL,
            format_args!("done: timeout after {} ms", d.as_millis()),
        ),
        End::Signal(name) => diag(TOOL, format_args!("done: stopped by {name}")),
        End::CaptureFailed => diag(TOOL, "done: the capture file failed"),
    }
    // The reactor owns the handler, and with it a reference to the shared
    // state: drop it so that the capture can be finished.
    drop(reactor);
    let elapsed = match (tally.first.get(), last_read) {
        (Some(&first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    let mut sh = lock(&shared);
    let summary = Summary {
        packets: tally.packets.get(),
        bytes: tally.bytes.get(),
        gaps: tally.gaps.get(),
        lost: tally.lost.get(),
        kernel_drops: counters.total.recv.kernel_drops,
        truncated: tally.truncated.get(),
        restarts: tally.restarts.get(),
        elapsed,
        latency: sh.latency.as_ref().map(|l| Percentiles::of(&l.total)),
    };
    let text = if a.json {
        output::json_line(&summary.json())
    } else {
        summary
            .table(&format!("{}:{port} on {}", a.group.ip(), a.iface.info.name))
            .into_bytes()
    };
    output::out(TOOL, &text);

    if let Some(path) = &a.pcap {
        let what = format!("writing {}", path.display());
        if let Some(e) = sh.capture_error.take() {
            return Err(Failure::runtime(&what, e));
        }
        if let Some(cap) = sh.capture.take() {
            let n = cap.finish().map_err(|e| Failure::runtime(&what, e))?;
            diag(
                TOOL,
                format_args!("{n} packets written to {}", path.display()),
            );
        }
    }
    Ok(())
}

/// Writes one received datagram to the capture: from its source to the
/// group and the bound port, stamped with the kernel's receive time.
fn write_capture(cap: &mut Capture, p: &Packet<'_>, local: SocketAddrV4) -> std::io::Result<()> {
    let src = p.src.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    let dst = SocketAddrV4::new(p.cm.dst.unwrap_or(*local.ip()), local.port());
    let at = p.cm.timestamp.unwrap_or_else(SystemTime::now);
    cap.write_udp(
        at,
        src,
        dst,
        p.cm.ttl.unwrap_or(0),
        p.cm.tos.unwrap_or(0),
        p.payload,
    )
}

/// Sleeps `stall`, bounded by the deadline and cut short by a signal.
fn stall_for(stall: Duration, deadline: Option<Instant>, stop: &StopSignal) {
    let until = Instant::now() + stall;
    let until = deadline.map_or(until, |d| d.min(until));
    while stop.requested().is_none() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Turns the reactor until an exit condition holds; returns why, and when
/// the last packet was read.
fn receive_loop(
    a: &Args,
    deadline: Option<Instant>,
    stop: &StopSignal,
    reactor: &mut Reactor,
    tally: &Tally,
    shared: &Mutex<Shared>,
) -> Result<(End, Option<Instant>), Failure> {
    let limit = a.count.unwrap_or(u64::MAX);
    let mut seen = 0u64;
    let mut last_read: Option<Instant> = None;
    let mut rate = RateLine::default();
    loop {
        if let Some(name) = stop.requested() {
            return Ok((End::Signal(name), last_read));
        }
        let now = Instant::now();
        if tally.packets.get() >= limit {
            return Ok((End::Count(limit), last_read));
        }
        if lock(shared).capture_error.is_some() {
            return Ok((End::CaptureFailed, last_read));
        }
        if let (Some(d), Some(t)) = (deadline, a.timeout) {
            if now >= d {
                return Ok((End::Timeout(t), last_read));
            }
        }
        let idle_at = match (a.idle_exit, last_read) {
            (Some(idle), Some(last)) => Some(last + idle),
            _ => None,
        };
        if let (Some(at), Some(idle)) = (idle_at, a.idle_exit) {
            if now >= at {
                return Ok((End::Idle(idle), last_read));
            }
        }
        if let Some(at) = rate.next {
            if now >= at {
                rate.print(a.json, tally, reactor, shared, now);
            }
        }

        // A signal interrupts the wait (epoll_wait is never restarted).
        let mut wake = now + Duration::from_millis(500);
        for at in [deadline, idle_at, rate.next].into_iter().flatten() {
            wake = wake.min(at);
        }
        reactor
            .turn(Some(wake.saturating_duration_since(now)))
            .map_err(|e| Failure::runtime("receiving", e))?;

        let packets = tally.packets.get();
        if packets != seen {
            let now = Instant::now();
            if seen == 0 {
                rate.start(now);
            }
            seen = packets;
            last_read = Some(now);
            flush(shared);
        }
    }
}

/// The once-a-second line: packets and bytes since the previous one, and
/// the latency of that second's packets when the feed carries stamps.
#[derive(Default)]
struct RateLine {
    next: Option<Instant>,
    since: Option<Instant>,
    packets: u64,
    bytes: u64,
}

impl RateLine {
    fn start(&mut self, now: Instant) {
        self.since = Some(now);
        self.next = Some(now + Duration::from_secs(1));
    }

    fn print(
        &mut self,
        json: bool,
        tally: &Tally,
        reactor: &Reactor,
        shared: &Mutex<Shared>,
        now: Instant,
    ) {
        let Some(since) = self.since else { return };
        let secs = now.saturating_duration_since(since).as_secs_f64().max(1e-9);
        let (packets, bytes) = (tally.packets.get(), tally.bytes.get());
        let mut line = format!(
            "rate: {:.0} pps, {:.2} MB/s | total {packets} packets, {} lost, {} kernel drops",
            (packets - self.packets) as f64 / secs,
            (bytes - self.bytes) as f64 / secs / 1e6,
            tally.lost.get(),
            reactor.counters().total.recv.kernel_drops,
        );
        if let Some(l) = &mut lock(shared).latency {
            let p = Percentiles::of(&l.interval);
            line.push_str(&format!(
                " | latency p50 {} p99 {} max {}",
                micros(p.p50),
                micros(p.p99),
                micros(p.max)
            ));
            l.interval.reset();
        }
        // With --json, stdout carries JSON only.
        if json {
            diag_line(&line);
        } else {
            line.push('\n');
            output::out(TOOL, line.as_bytes());
        }
        self.packets = packets;
        self.bytes = bytes;
        self.since = Some(now);
        self.next = Some(now + Duration::from_secs(1));
    }
}

fn flush(shared: &Mutex<Shared>) {
    let mut sh = lock(shared);
    if !sh.out.is_empty() {
        output::out(TOOL, &sh.out);
        sh.out.clear();
    }
}

fn join_addrs(addrs: &[Ipv4Addr]) -> String {
    addrs
        .iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// One packet as JSON: `{"seq":..,"len":..,"src":"a.b.c.d:port",
/// "dst":"a.b.c.d","ifindex":..,"ttl":..,"tos":..,"truncated":..}`, with
/// `null` for what the kernel did not deliver, and `latency_ns` last when
/// the feed carries send stamps.
#[derive(Serialize)]
struct PacketJson {
    seq: Option<u64>,
    len: usize,
    src: Option<SocketAddrV4>,
    dst: Option<Ipv4Addr>,
    ifindex: Option<u32>,
    ttl: Option<u8>,
    tos: Option<u8>,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ns: Option<Option<u64>>,
}

impl PacketJson {
    fn new(p: &Packet<'_>, r: Record, stamped: bool, latency: Option<u64>) -> PacketJson {
        PacketJson {
            seq: r.seq,
            len: p.payload.len(),
            src: p.src,
            dst: p.cm.dst,
            ifindex: p.cm.ifindex,
            ttl: p.cm.ttl,
            tos: p.cm.tos,
            truncated: p.flags.truncated,
            latency_ns: stamped.then_some(latency),
        }
    }
}

/// `seq 17  64 B  from 127.0.0.1:40000  to 239.255.0.1  if 1  ttl 1  tos 0x00`,
/// then the latency for stamped feeds, then what is unusual about the
/// packet.
fn packet_line(out: &mut Vec<u8>, p: &Packet<'_>, r: Record, latency: Option<Option<u64>>) {
    fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
        v.map_or_else(|| "-".to_string(), |v| v.to_string())
    }
    let _ = write!(
        out,
        "seq {}  {} B  from {}  to {}  if {}  ttl {}  tos {}",
        opt(r.seq),
        p.payload.len(),
        opt(p.src),
        opt(p.cm.dst),
        opt(p.cm.ifindex),
        opt(p.cm.ttl),
        p.cm.tos
            .map_or_else(|| "-".to_string(), |t| format!("{t:#04x}")),
    );
    if let Some(latency) = latency {
        let _ = write!(out, "  latency {}", micros(latency));
    }
    if r.missing > 0 {
        let _ = write!(out, "  GAP: {} missing", r.missing);
    }
    if p.drops_before > 0 {
        let _ = write!(out, "  KERNEL DROPPED {} before this", p.drops_before);
    }
    if p.flags.truncated {
        let _ = write!(out, "  TRUNCATED");
    }
    if p.flags.control_truncated {
        let _ = write!(out, "  CONTROL TRUNCATED");
    }
    out.push(b'\n');
}

/// The figures printed at exit.
struct Summary {
    packets: u64,
    bytes: u64,
    gaps: u64,
    lost: u64,
    kernel_drops: u64,
    truncated: u64,
    restarts: u64,
    /// From the first packet read to the last.
    elapsed: Duration,
    /// For feeds with send stamps.
    latency: Option<Percentiles>,
}

/// `{"summary":{...}}`.
#[derive(Serialize)]
struct SummaryJson<'a> {
    summary: SummaryFields<'a>,
}

#[derive(Serialize)]
struct SummaryFields<'a> {
    packets: u64,
    bytes: u64,
    gaps: u64,
    lost: u64,
    kernel_drops: u64,
    truncated: u64,
    elapsed_s: f64,
    pps: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ns: Option<&'a Percentiles>,
}

impl Summary {
    fn pps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.packets as f64 / secs
        } else {
            0.0
        }
    }

    fn json(&self) -> SummaryJson<'_> {
        SummaryJson {
            summary: SummaryFields {
                packets: self.packets,
                bytes: self.bytes,
                gaps: self.gaps,
                lost: self.lost,
                kernel_drops: self.kernel_drops,
                truncated: self.truncated,
                elapsed_s: output::round(self.elapsed.as_secs_f64(), 6),
                pps: output::round(self.pps(), 1),
                latency_ns: self.latency.as_ref(),
            },
        }
    }

    fn table(&self, what: &str) -> String {
        use std::fmt::Write as _;
        let mut s = format!("summary of {what}\n");
        let rows: [(&str, String); 8] = [
            ("packets", self.packets.to_string()),
            ("bytes", self.bytes.to_string()),
            ("gaps", self.gaps.to_string()),
            ("lost", format!("{} (missing sequence numbers)", self.lost)),
            (
                "kernel drops",
                format!("{} (SO_RXQ_OVFL)", self.kernel_drops),
            ),
            ("truncated", self.truncated.to_string()),
            (
                "elapsed",
                format!("{} s (first to last packet)", output::secs(self.elapsed)),
            ),
            ("rate", format!("{:.1} pps", self.pps())),
        ];
        for (name, value) in rows {
            let _ = writeln!(s, "  {name:<13} {value}");
        }
        if self.restarts > 0 {
            let _ = writeln!(
                s,
                "  {:<13} {} (sequence went backwards or jumped ahead by more than {MAX_GAP})",
                "restarts", self.restarts
            );
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                s,
                "  {:<13} p50 {}  p90 {}  p99 {}  p99.9 {}  max {} (send stamp to kernel receive time)",
                "latency",
                micros(l.p50),
                micros(l.p90),
                micros(l.p99),
                micros(l.p999),
                micros(l.max)
            );
        }
        s
    }
}
