// mcast-dump 239.255.0.1:5000 [239.255.0.2:5000 ...] --iface lo --json
//
// The receive side of a sequence-numbered multicast feed, built on the
// library's Reactor and its feed module: joins each GROUP on one named
// interface (any source, or source-specific with --source / --exclude).
// Two or more GROUP:PORTs are redundant lines (A/B) of one feed, merged by
// the library's Arbiter (Reactor::register_feed): each sequence number is
// delivered once, from whichever line brought it first. Sequence numbers
// are read as --seq says (integers of any width and byte order at an
// offset, NASDAQ MoldUDP64, CME MDP 3.0, or none) and followed by a
// reorder-aware SeqTracker: late packets fill holes (reordered), copies
// are dropped (duplicates), and a hole is lost only when no line filled it
// within --reorder-window sequence numbers or by the end of the run. It
// shows every delivered packet (a line for people, or JSON), a rate line
// each second and a summary at the end: packets, messages, duplicates,
// reordered, gaps, lost, malformed, restarts, the sockets' kernel drop
// counters (SO_RXQ_OVFL), per-line figures and, for feeds that carry their
// send time, the latency from that stamp to the kernel's receive time.
// --quiet asks the kernel for nothing but the payload and the drop counter,
// for catch-up measurements with --stall-ms, and still does all the
// sequence accounting. --pcap writes the delivered packets to a capture
// file. SIGINT and SIGTERM end it with its summary.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;

use ipv4_reactor::feed::{
    Arbiter, Delivery, FeedEvent, LineCounters, SeqCounters, SeqFormat, SeqTracker, TrackerConfig,
    DEFAULT_STALE_AFTER, MAX_LINES, MOLDUDP64_HEADER_LEN,
};
use ipv4_reactor::reactor::{Backend, Context, FeedHandler, FeedKey, Handler, Key, Reactor};
use ipv4_reactor::{ControlFlags, Packet, PacketConn};
use ipv4_reactor_tools::capture::Capture;
use ipv4_reactor_tools::cli::{self, Failure, Iface};
use ipv4_reactor_tools::output::{self, diag, diag_line};
use ipv4_reactor_tools::payload::{self, Layout};
use ipv4_reactor_tools::signals::StopSignal;

const TOOL: &str = "mcast-dump";

const AFTER_HELP: &str = "\
Output: packets, rate lines (each second) and the summary go to stdout; with
--json, stdout has only JSON lines and the rate lines go to stderr. Once
every line is joined and set up, stderr gets one line starting with
`listening` (each GROUP:PORT, interface, effective receive buffer, format,
window).

Lines: two or more GROUP:PORTs are redundant lines of one feed (A/B): each
sequence number is delivered once, from whichever line brought it first;
copies are dropped and counted (duplicates). A packet line is printed for
each delivered packet (a copy, a packet too short for --seq, a heartbeat
are counted in the summary, not printed), with `line`, the index of its
GROUP:PORT argument. Without --json, the packet lines say in words what
the tracker saw (GAP: N missing, LATE: fills A (reordered), RESTART) and
lines starting with `feed:` report losses, line silence and ends of
session as they happen.

Sequence numbers (--seq): u64be (default), u64le, u32be, u32le, u16be,
u16le, each with an optional @OFFSET in bytes (u64be@10), moldudp64
(NASDAQ MoldUDP64: each packet carries COUNT messages, numbered from its
sequence number), mdp3 (CME MDP 3.0 binary packet header), none (packets
counted, never judged; one line only). 16- and 32-bit numbers wrap and are
extended to 64 bits.

Reordering: a hole stays open for --reorder-window sequence numbers after
it opened (default 65536, 8192 for 16-bit formats: 65 ms at 1 Mpps); a late
packet or the other line's copy that fills it counts as reordered. Holes
not filled by then, or by the end of the run, are lost; a packet that fills
a hole after it was declared lost still counts as reordered and comes off
`lost`. A jump of more than 2^24 sequence numbers either way (2^14 for
16-bit formats), or a new MoldUDP64 session, is a restart.

Summary (JSON): packets (datagrams delivered, copies excluded), bytes (of
those), messages (sequence numbers delivered), duplicates (sequence numbers
received again, from any line), reordered, gaps, lost, malformed (too short
for --seq), restarts, kernel_drops, truncated, elapsed_s, pps, lines (per
GROUP:PORT in argument order: group, packets received, first = packets it
delivered first, its own gaps and lost, kernel_drops), then latency_ns for
stamped feeds. kernel_drops are the packets the kernel dropped on the
sockets: as their packets reported them (SO_RXQ_OVFL), and at the end those
no packet reported, from the sockets' own counts (SO_MEMINFO), since drops
at the end of a burst are reported by no packet.

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
/// packet with its sequence number, gaps, reordering and kernel drops, a
/// rate line each second and a summary at the end. Two or more GROUP:PORTs
/// are redundant lines (A/B) of one feed, arbitrated.
#[derive(Parser, Debug)]
#[command(name = TOOL, version, after_help = AFTER_HELP)]
struct Args {
    /// Group and port to receive (port 0: the kernel picks one; the
    /// `listening` line tells which); two or more: redundant lines of one
    /// feed
    #[arg(value_name = "GROUP:PORT", required = true, num_args = 1..,
          value_parser = cli::group_port_any)]
    groups: Vec<SocketAddrV4>,

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

    /// Exit after N delivered packets
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

    /// How the reactor reads its sockets: epoll and recvmmsg (mio),
    /// io_uring multishot receives (io-uring; an error where the kernel,
    /// the system or this build refuses it: install with --features
    /// io-uring), or io_uring where it can, else mio (auto)
    #[arg(long, value_enum, value_name = "BACKEND", default_value = "mio")]
    backend: BackendArg,

    /// A JSON object per packet and a JSON summary
    #[arg(long)]
    json: bool,

    /// No per-packet output; ask the kernel only for the drop counter (the
    /// fastest receive path; --seq mdp3, --stamp and --pcap ask for what
    /// they need on top)
    #[arg(long)]
    quiet: bool,

    /// Where the payload keeps its sequence numbers: u64be, u64le, u32be,
    /// u32le, u16be, u16le (each with an optional @OFFSET), moldudp64,
    /// mdp3 or none
    #[arg(long, value_name = "FORMAT", default_value = "u64be", value_parser = payload::seq_format)]
    seq: SeqFormat,

    /// How many sequence numbers a hole stays open for late packets and
    /// the other lines' copies before it is lost: a power of two from 64
    /// to 16777216 [default: 65536; 8192 for 16-bit formats]
    #[arg(long = "reorder-window", value_name = "N", value_parser = cli::reorder_window)]
    reorder_window: Option<u64>,

    /// Payloads carry their send time right after an integer sequence
    /// number (as mcast-send --stamp writes them): report the latency
    #[arg(long)]
    stamp: bool,

    /// Write every delivered packet to FILE: pcap, nanosecond timestamps
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

/// What the handlers count that the tracker does not, shared with the
/// main loop between turns.
struct Tally {
    /// `--count`, or `u64::MAX`: delivered packets past it are ignored.
    limit: u64,
    /// Packets delivered (copies excluded).
    packets: Counter,
    /// Their payload bytes.
    bytes: Counter,
    /// Sequence numbers lost so far (the one-line quiet path publishes it
    /// here when its tracker reports an event; feeds read the arbiter).
    lost: Counter,
    /// When the first packet was delivered.
    first: OnceLock<Instant>,
}

impl Tally {
    fn new(limit: u64) -> Tally {
        Tally {
            limit,
            packets: Counter::default(),
            bytes: Counter::default(),
            lost: Counter::default(),
            first: OnceLock::new(),
        }
    }

    /// Counts one delivered packet of `len` bytes; `None` when `--count`
    /// was already reached (a stop takes effect after the current batch,
    /// whose remaining packets are not counted), else whether this one
    /// reached it.
    #[inline(always)]
    fn deliver(&self, len: usize) -> Option<bool> {
        let packets = self.packets.get();
        if packets >= self.limit {
            return None;
        }
        if packets == 0 {
            let _ = self.first.set(Instant::now());
        }
        self.packets.set(packets + 1);
        self.bytes.add(len as u64);
        Some(packets + 1 == self.limit)
    }
}

/// The fastest path: one line, `--quiet`, nothing but the sequence
/// accounting. One tracker, driven by a plain handler: no per-packet
/// formatting, no lock, no allocation, no clock read but for the first
/// packet. Its counts are plain integers; it publishes them to the tally
/// once per receive batch with plain stores (relaxed, no load back) for
/// the main loop's rate line. The tracker comes back to the main loop when
/// the reactor drops the handler.
struct QuietOne {
    tracker: SeqTracker,
    /// `--count`, or `u64::MAX`.
    limit: u64,
    /// Packets delivered (copies excluded), and their payload bytes.
    packets: u64,
    bytes: u64,
    tally: Arc<Tally>,
    done: Arc<Mutex<Option<SeqTracker>>>,
}

impl Handler for QuietOne {
    #[inline(always)]
    fn on_packet(&mut self, p: &Packet<'_>, ctx: &mut Context<'_>) {
        // --count reached: the stop takes effect after this batch, whose
        // remaining packets are neither tracked nor counted.
        if self.packets == self.limit {
            return;
        }
        // Only the rare events (a gap, a loss, a restart) change `lost`.
        let mut event = false;
        let verdict = self.tracker.on_packet(p.payload, |e| {
            if !matches!(e, FeedEvent::Deliver(_)) {
                event = true;
            }
        });
        if event {
            self.tally.lost.set(self.tracker.counters().lost);
        }
        if !verdict.delivers() {
            return;
        }
        if self.packets == 0 {
            let _ = self.tally.first.set(Instant::now());
        }
        // Neither wraps: `packets` is below `limit` here, and 2^64 bytes
        // take centuries at any line rate.
        self.packets += 1;
        self.bytes += p.payload.len() as u64;
        if self.packets == self.limit {
            ctx.stop();
        }
    }

    /// The counts go to the tally once per receive batch.
    #[inline]
    fn on_batch_end(&mut self, _ctx: &mut Context<'_>) {
        self.publish();
    }
}

impl QuietOne {
    fn publish(&self) {
        self.tally.packets.set(self.packets);
        self.tally.bytes.set(self.bytes);
    }
}

impl Drop for QuietOne {
    fn drop(&mut self) {
        self.publish();
        let tracker = std::mem::replace(&mut self.tracker, SeqTracker::new(SeqFormat::None));
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = Some(tracker);
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
    fn record(&mut self, layout: Layout, p: &Packet<'_>) -> Option<u64> {
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
    /// What the feed reported before the packet that brought it (a gap
    /// opened or filled, a restart), for that packet's line; written on a
    /// line of its own when no packet line takes it.
    notes: String,
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

/// `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// epoll readiness and recvmmsg
    Mio,
    /// io_uring multishot recvmsg into provided buffer rings
    IoUring,
    /// io_uring where the kernel and the system allow it, else mio
    Auto,
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
fn control_flags(a: &Args, layout: Layout) -> ControlFlags {
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

/// The tracker limits from --seq and --reorder-window, checked by the
/// library (a window the format's horizon cannot take is an argument
/// error naming both).
fn tracker_config(a: &Args) -> Result<TrackerConfig, Failure> {
    let mut config = TrackerConfig::for_format(a.seq);
    if let Some(w) = a.reorder_window {
        config = config.with_window(w);
    }
    config
        .check(a.seq)
        .map_err(|e| Failure::usage(format!("--reorder-window with --seq {}: {e}", a.seq)))?;
    Ok(config)
}

/// Opens and joins one line's socket.
fn open_line(a: &Args, group: SocketAddrV4, layout: Layout) -> Result<PacketConn, Failure> {
    let mut builder = PacketConn::multicast_receiver(group, a.iface.iface.clone())
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
    builder.build().map_err(|e| {
        Failure::classify(
            &format!("joining {} on {}", group.ip(), a.iface.info.name),
            e,
        )
    })
}

/// How the lines are registered, and where their figures are read.
enum Registered {
    /// One line, --quiet: a plain handler with one tracker.
    QuietOne {
        key: Key,
        done: Arc<Mutex<Option<SeqTracker>>>,
    },
    /// A feed of one or more lines through the reactor's arbiter.
    Feed(FeedKey),
}

impl Registered {
    /// Sequence numbers lost so far.
    fn lost(&self, reactor: &Reactor, tally: &Tally) -> u64 {
        match self {
            Registered::QuietOne { .. } => tally.lost.get(),
            Registered::Feed(key) => reactor.feed_counters(*key).map_or(0, |c| c.total.lost),
        }
    }
}

fn run(a: &Args, stop: &StopSignal) -> Result<(), Failure> {
    let layout = Layout::new(a.seq, a.stamp).map_err(Failure::usage)?;
    let n = a.groups.len();
    if n > MAX_LINES {
        return Err(Failure::usage(format!(
            "{n} GROUP:PORTs: a feed takes at most {MAX_LINES} lines"
        )));
    }
    if n > 1 && a.seq == SeqFormat::None {
        return Err(Failure::usage(format!(
            "--seq none with {n} GROUP:PORTs: without sequence numbers the lines' copies \
             cannot be told apart; give the feed's format"
        )));
    }
    let config = tracker_config(a)?;
    let mut conns = Vec::with_capacity(n);
    let mut locals = Vec::with_capacity(n);
    let mut rcvbufs = Vec::with_capacity(n);
    for &group in &a.groups {
        let conn = open_line(a, group, layout)?;
        let port = conn
            .local_addr()
            .map_err(|e| Failure::runtime("reading the bound port", e))?
            .port();
        rcvbufs.push(
            conn.recv_buffer_size()
                .map_err(|e| Failure::runtime("reading SO_RCVBUF", e))?,
        );
        locals.push(SocketAddrV4::new(*group.ip(), port));
        conns.push(conn);
    }
    let capture = match &a.pcap {
        Some(path) => Some(
            Capture::create(path)
                .map_err(|e| Failure::runtime(&format!("creating {}", path.display()), e))?,
        ),
        None => None,
    };

    // The fastest path: counting and sequence accounting, nothing else.
    let quiet_one = a.quiet && !layout.stamped() && a.pcap.is_none() && n == 1;
    let mut reactor = Reactor::builder()
        .batch_slots(a.batch as usize)
        .spin(a.spin)
        .backend(match a.backend {
            BackendArg::Mio => Backend::Mio,
            BackendArg::IoUring => Backend::IoUring,
            BackendArg::Auto => Backend::IoUringOrMio,
        })
        .build()
        .map_err(|e| {
            let what = match a.backend {
                BackendArg::IoUring => {
                    "creating the io_uring reactor (it needs mcast-dump built with --features io-uring and a kernel that allows io_uring; --backend auto falls back to mio)"
                }
                _ => "creating the reactor",
            };
            Failure::runtime(what, e)
        })?;
    if let Some(why) = reactor.backend_fallback() {
        diag(
            TOOL,
            format_args!("--backend auto: reading with mio ({why})"),
        );
    }
    let tally = Arc::new(Tally::new(a.count.unwrap_or(u64::MAX)));
    let shared = Arc::new(Mutex::new(Shared {
        out: Vec::new(),
        notes: String::new(),
        latency: layout.stamped().then(Latency::new),
        capture,
        capture_error: None,
    }));
    let registered = if quiet_one {
        let tracker = SeqTracker::with_config(a.seq, config)
            .map_err(|e| Failure::usage(format!("--seq {}: {e}", a.seq)))?;
        let done = Arc::new(Mutex::new(None));
        let handler = QuietOne {
            tracker,
            limit: a.count.unwrap_or(u64::MAX),
            packets: 0,
            bytes: 0,
            tally: Arc::clone(&tally),
            done: Arc::clone(&done),
        };
        let conn = conns.pop().expect("one line");
        let key = reactor
            .register(conn, handler)
            .map_err(|e| Failure::runtime("registering the socket with the reactor", e))?;
        Registered::QuietOne { key, done }
    } else {
        let arbiter = Arbiter::with_config(a.seq, n, config, DEFAULT_STALE_AFTER)
            .map_err(|e| Failure::usage(format!("--seq {}: {e}", a.seq)))?;
        let handler = FeedDump {
            tally: Arc::clone(&tally),
            shared: Arc::clone(&shared),
            full: !a.quiet || layout.stamped() || a.pcap.is_some(),
            lines: !a.quiet,
            json: a.json,
            layout,
            locals: locals.clone(),
            last: None,
        };
        let key = reactor
            .register_feed(conns, arbiter, handler)
            .map_err(|e| Failure::runtime("registering the lines with the reactor", e))?;
        Registered::Feed(key)
    };

    let filter = if !a.source.is_empty() {
        format!(" include={}", join_addrs(&a.source))
    } else if !a.exclude.is_empty() {
        format!(" exclude={}", join_addrs(&a.exclude))
    } else {
        String::new()
    };
    let rcvbuf = rcvbufs.iter().copied().min().unwrap_or(0);
    let addrs: Vec<String> = locals.iter().map(SocketAddrV4::to_string).collect();
    diag_line(&format!(
        "listening {} iface={} ifindex={} rcvbuf={rcvbuf}{filter} batch={} seq={} window={}{}{}{}{}",
        addrs.join(" "),
        a.iface.info.name,
        a.iface.info.index,
        a.batch,
        a.seq,
        config.window,
        if n > 1 {
            format!(" lines={n}")
        } else {
            String::new()
        },
        if a.spin { " spin" } else { "" },
        if a.quiet { " quiet" } else { "" },
        match reactor.backend() {
            Backend::IoUring => " backend=io_uring",
            _ => "",
        },
    ));

    let joined = Instant::now();
    let deadline = a.timeout.map(|t| joined + t);
    if let Some(stall) = a.stall {
        stall_for(stall, deadline, stop);
    }

    let (end, last_read) = receive_loop(
        a,
        deadline,
        stop,
        &mut reactor,
        &registered,
        &tally,
        &shared,
    )?;
    flush(&shared);

    // Each line's drops, with those at the end of a burst that no packet
    // reported (the control message travels with the packet after them):
    // the reactor counts them from the socket's own count (SO_MEMINFO).
    let line_keys: Vec<Key> = match &registered {
        Registered::QuietOne { key, .. } => vec![*key],
        Registered::Feed(feed) => reactor
            .feed_lines(*feed)
            .map(<[Key]>::to_vec)
            .unwrap_or_default(),
    };
    let socket_drops: Vec<u64> = line_keys
        .iter()
        .map(|&k| {
            let _ = reactor.take_unreported_drops(k);
            reactor
                .socket_counters(k)
                .map_or(0, |c| c.recv.kernel_drops)
        })
        .collect();
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
    // Settle the sequence accounting: holes still open are lost now.
    let (total, lines) = match registered {
        Registered::QuietOne { key, done } => {
            let drops = reactor
                .socket_counters(key)
                .map_or(0, |c| c.recv.kernel_drops);
            // Deregistering drops the handler, which gives its tracker back.
            reactor
                .deregister(key)
                .map_err(|e| Failure::runtime("deregistering the socket", e))?;
            let mut tracker = lock_any(&done)
                .take()
                .ok_or_else(|| Failure::runtime("ending", "the handler kept its tracker"))?;
            tracker.finish(|_| {});
            let c = tracker.counters();
            let line = LineFigures {
                group: locals[0],
                packets: c.packets,
                first: tally.packets.get(),
                gaps: c.gaps,
                lost: c.lost,
                kernel_drops: drops,
            };
            (c, vec![line])
        }
        Registered::Feed(key) => {
            // The handler sees the last losses (text lines), then is dropped.
            let parts = reactor
                .deregister_feed(key)
                .map_err(|e| Failure::runtime("deregistering the feed", e))?;
            let arb = parts.arbiter;
            let lines = (0..arb.lines())
                .filter_map(|i| arb.line(i).map(|l| LineFigures::of(locals[i], &l)))
                .collect();
            (arb.counters(), lines)
        }
    };
    // A line's drops: its socket's, the unreported ones included.
    let mut lines = lines;
    for (line, &drops) in lines.iter_mut().zip(&socket_drops) {
        line.kernel_drops = drops;
    }
    let kernel_drops = counters.total.recv.kernel_drops;
    flush(&shared);
    // The reactor owns the handler, and with it a reference to the shared
    // state: drop it so that the capture can be finished.
    drop(reactor);
    let elapsed = match (tally.first.get(), last_read) {
        (Some(&first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    let mut sh = lock(&shared);
    let summary = Summary {
        format: a.seq,
        horizon: config.horizon,
        packets: tally.packets.get(),
        bytes: tally.bytes.get(),
        seq: total,
        kernel_drops,
        truncated: counters.total.recv.truncated,
        elapsed,
        lines,
        latency: sh.latency.as_ref().map(|l| Percentiles::of(&l.total)),
    };
    let text = if a.json {
        output::json_line(&summary.json())
    } else {
        let what = if n == 1 {
            format!("{} on {}", locals[0], a.iface.info.name)
        } else {
            format!("{n} lines on {}", a.iface.info.name)
        };
        summary.table(&what).into_bytes()
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

fn lock_any<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The feed handler: each delivered packet is counted, and unless --quiet
/// printed (a line, or JSON), timed (send stamp) and captured; the
/// feed's events become words on the packet lines, or lines of their own.
struct FeedDump {
    tally: Arc<Tally>,
    shared: Arc<Mutex<Shared>>,
    /// Whether per-packet work beyond counting is needed (lines, latency,
    /// capture).
    full: bool,
    /// Per-packet lines (not --quiet).
    lines: bool,
    json: bool,
    layout: Layout,
    /// Each line's group and bound port.
    locals: Vec<SocketAddrV4>,
    /// The MoldUDP64 packet that delivered last, to tell a second delivery
    /// of the same packet (it fills a hole and brings new numbers) from
    /// the next packet.
    last: Option<LastPacket>,
}

/// What tells one MoldUDP64 packet's deliveries apart from the next
/// packet's: its line, where its payload is, its length and header, and
/// where its last delivery ended. Two packets with the same header cannot
/// both deliver (the second is a copy), so an equal header in the same
/// slot is the same packet.
#[derive(Clone, Copy, PartialEq, Eq)]
struct LastPacket {
    line: usize,
    at: usize,
    len: usize,
    header: [u8; MOLDUDP64_HEADER_LEN],
    end: u64,
}

impl FeedDump {
    /// Whether this delivery continues the packet of the previous one.
    fn same_packet(&mut self, line: usize, payload: &[u8], d: Delivery) -> bool {
        if self.layout.format() != SeqFormat::MoldUdp64 {
            return false;
        }
        let mut header = [0u8; MOLDUDP64_HEADER_LEN];
        let n = payload.len().min(MOLDUDP64_HEADER_LEN);
        header[..n].copy_from_slice(&payload[..n]);
        let this = LastPacket {
            line,
            at: payload.as_ptr() as usize,
            len: payload.len(),
            header,
            end: d.skip + d.count,
        };
        let same = self.last.is_some_and(|l| {
            (l.line, l.at, l.len, l.header) == (line, this.at, this.len, header) && d.skip >= l.end
        });
        self.last = Some(this);
        same
    }

    fn line_name(&self, line: usize) -> String {
        match self.locals.get(line) {
            Some(g) if self.locals.len() > 1 => format!("line {line} ({g})"),
            Some(g) => format!("{g}"),
            None => format!("line {line}"),
        }
    }
}

impl FeedHandler for FeedDump {
    fn on_data(&mut self, line: usize, p: &Packet<'_>, d: Delivery, ctx: &mut Context<'_>) {
        if self.same_packet(line, p.payload, d) {
            if self.lines && !self.json {
                let mut sh = lock(&self.shared);
                if !sh.notes.is_empty() {
                    let notes = std::mem::take(&mut sh.notes);
                    let _ = writeln!(
                        sh.out,
                        "feed: the same packet also delivered {}:{notes}",
                        range(d.first, d.first + d.count - 1)
                    );
                }
            }
            return;
        }
        let Some(last) = self.tally.deliver(p.payload.len()) else {
            return;
        };
        if self.full {
            let mut sh = lock(&self.shared);
            let sh = &mut *sh;
            let latency = sh.latency.as_mut().and_then(|l| l.record(self.layout, p));
            if let Some(cap) = &mut sh.capture {
                if let Err(e) = write_capture(cap, p, self.locals[line]) {
                    sh.capture = None;
                    sh.capture_error = Some(e);
                    ctx.stop();
                }
            }
            if self.lines {
                let info = self.layout.format().parse(p.payload).ok();
                let r = Record {
                    seq: info.map(|i| i.seq),
                    count: (self.layout.format() == SeqFormat::MoldUdp64)
                        .then(|| info.map_or(0, |i| i.count)),
                    line,
                    multi: self.locals.len() > 1,
                };
                let stamped = self.layout.stamped();
                if self.json {
                    sh.notes.clear();
                    output::push_json_line(&mut sh.out, &PacketJson::new(p, r, stamped, latency));
                } else {
                    let notes = std::mem::take(&mut sh.notes);
                    packet_line(&mut sh.out, p, r, stamped.then_some(latency), &notes);
                }
            }
        }
        if last {
            ctx.stop();
        }
    }

    fn on_event(&mut self, event: FeedEvent) {
        if !self.lines || self.json {
            return;
        }
        let mut sh = lock(&self.shared);
        let sh = &mut *sh;
        match event {
            FeedEvent::GapOpened { from, to } => {
                // Last on the packet line, as before the feed module.
                let _ = std::fmt::Write::write_fmt(
                    &mut sh.notes,
                    format_args!("  GAP: {} missing", to - from + 1),
                );
            }
            FeedEvent::GapFilled { from, to } => {
                let _ = std::fmt::Write::write_fmt(
                    &mut sh.notes,
                    format_args!("  LATE: fills {} (reordered)", range(from, to)),
                );
            }
            FeedEvent::Restart { from, to } => {
                let _ = std::fmt::Write::write_fmt(
                    &mut sh.notes,
                    format_args!("  RESTART: expected {from}, got {to}"),
                );
            }
            FeedEvent::Lost { from, to } => {
                let _ = writeln!(
                    sh.out,
                    "feed: LOST {} ({} sequence numbers no packet delivered)",
                    range(from, to),
                    to - from + 1
                );
            }
            FeedEvent::EndOfSession { next } => {
                let _ = writeln!(sh.out, "feed: END OF SESSION (next would have been {next})");
            }
            FeedEvent::LineStale { line } => {
                let _ = writeln!(
                    sh.out,
                    "feed: {} STALE: nothing for {} ms while another line delivered",
                    self.line_name(line),
                    DEFAULT_STALE_AFTER.as_millis()
                );
            }
            FeedEvent::LineRecovered { line } => {
                let _ = writeln!(sh.out, "feed: {} recovered", self.line_name(line));
            }
            _ => {}
        }
    }

    fn on_error(&mut self, line: usize, error: std::io::Error, _ctx: &mut Context<'_>) {
        diag(
            TOOL,
            format_args!("receiving on {}: {error}", self.line_name(line)),
        );
    }
}

/// `a` or `a..=b`.
fn range(from: u64, to: u64) -> String {
    if from == to {
        from.to_string()
    } else {
        format!("{from}..={to}")
    }
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
    registered: &Registered,
    tally: &Tally,
    shared: &Mutex<Shared>,
) -> Result<(End, Option<Instant>), Failure> {
    let limit = a.count.unwrap_or(u64::MAX);
    // Only the feed handler's packet lines and notes (not --quiet) and the
    // capture go through `shared`: without them, no lock per turn.
    let printing = !a.quiet;
    let capturing = a.pcap.is_some();
    let mut last_read: Option<Instant> = None;
    let mut rate = RateLine::default();
    // One clock read per turn, right after it: the instant of the last
    // read when the turn read packets, and `now` for the checks below.
    let mut now = Instant::now();
    loop {
        if let Some(name) = stop.requested() {
            return Ok((End::Signal(name), last_read));
        }
        if tally.packets.get() >= limit {
            return Ok((End::Count(limit), last_read));
        }
        if capturing && lock(shared).capture_error.is_some() {
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
                let lost = registered.lost(reactor, tally);
                rate.print(a.json, tally, lost, reactor, shared, now);
            }
        }

        // A signal interrupts the wait (epoll_wait is never restarted).
        let mut wake = now + Duration::from_millis(500);
        for at in [deadline, idle_at, rate.next].into_iter().flatten() {
            wake = wake.min(at);
        }
        let read = reactor
            .turn(Some(wake.saturating_duration_since(now)))
            .map_err(|e| Failure::runtime("receiving", e))?;
        now = Instant::now();

        // Any packet read counts as activity for --idle-exit-ms, copies
        // and malformed ones included.
        if read > 0 {
            if rate.next.is_none() {
                rate.start(now);
            }
            last_read = Some(now);
        }
        if printing {
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
        lost: u64,
        reactor: &Reactor,
        shared: &Mutex<Shared>,
        now: Instant,
    ) {
        let Some(since) = self.since else { return };
        let secs = now.saturating_duration_since(since).as_secs_f64().max(1e-9);
        let (packets, bytes) = (tally.packets.get(), tally.bytes.get());
        let mut line = format!(
            "rate: {:.0} pps, {:.2} MB/s | total {packets} packets, {lost} lost, {} kernel drops",
            (packets - self.packets) as f64 / secs,
            (bytes - self.bytes) as f64 / secs / 1e6,
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

/// Writes out the packet lines, and the notes no packet line took (a gap
/// a heartbeat revealed) on a line of their own.
fn flush(shared: &Mutex<Shared>) {
    let mut sh = lock(shared);
    let sh = &mut *sh;
    if !sh.notes.is_empty() {
        let _ = writeln!(sh.out, "feed:{}", sh.notes);
        sh.notes.clear();
    }
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

/// What a packet line says about the packet's place in the feed.
#[derive(Clone, Copy)]
struct Record {
    /// Its (first) sequence number as on the wire.
    seq: Option<u64>,
    /// MoldUDP64: its message count.
    count: Option<u64>,
    /// The index of its GROUP:PORT.
    line: usize,
    /// Whether the feed has several lines (text lines name the line then).
    multi: bool,
}

/// One packet as JSON: `{"seq":..,["count":..,]"line":..,"len":..,
/// "src":"a.b.c.d:port","dst":"a.b.c.d","ifindex":..,"ttl":..,"tos":..,
/// "truncated":..}`, with `null` for what the kernel did not deliver,
/// `count` for MoldUDP64 only, and `latency_ns` last when the feed carries
/// send stamps.
#[derive(Serialize)]
struct PacketJson {
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    line: usize,
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
            count: r.count,
            line: r.line,
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

/// `seq 17  64 B  from 127.0.0.1:40000  to 239.255.0.1  if 1  ttl 1  tos 0x00`
/// (with `count N` after the sequence number for MoldUDP64 and `line N`
/// for a feed of several lines), then the latency for stamped feeds, then
/// what the feed saw (`notes`: LATE, RESTART, GAP), then what is unusual
/// about the packet.
fn packet_line(
    out: &mut Vec<u8>,
    p: &Packet<'_>,
    r: Record,
    latency: Option<Option<u64>>,
    notes: &str,
) {
    fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
        v.map_or_else(|| "-".to_string(), |v| v.to_string())
    }
    let _ = write!(out, "seq {}", opt(r.seq));
    if let Some(count) = r.count {
        let _ = write!(out, " count {count}");
    }
    if r.multi {
        let _ = write!(out, "  line {}", r.line);
    }
    let _ = write!(
        out,
        "  {} B  from {}  to {}  if {}  ttl {}  tos {}",
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
    out.extend_from_slice(notes.as_bytes());
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

/// One line's figures, for the summary.
struct LineFigures {
    group: SocketAddrV4,
    /// Packets received on the line, copies and malformed ones included.
    packets: u64,
    /// Packets of this line that delivered first.
    first: u64,
    /// Holes in the line's own sequence.
    gaps: u64,
    /// Sequence numbers missing from the line's own sequence.
    lost: u64,
    kernel_drops: u64,
}

impl LineFigures {
    fn of(group: SocketAddrV4, l: &LineCounters) -> LineFigures {
        LineFigures {
            group,
            packets: l.packets,
            first: l.first,
            gaps: l.gaps,
            lost: l.lost,
            kernel_drops: l.kernel_drops,
        }
    }
}

/// The figures printed at exit.
struct Summary {
    format: SeqFormat,
    horizon: u64,
    /// Delivered packets (copies excluded) and their bytes.
    packets: u64,
    bytes: u64,
    /// The merged stream's sequence counters, finished.
    seq: SeqCounters,
    kernel_drops: u64,
    truncated: u64,
    /// From the first packet delivered to the last read.
    elapsed: Duration,
    lines: Vec<LineFigures>,
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
    messages: u64,
    duplicates: u64,
    reordered: u64,
    gaps: u64,
    lost: u64,
    malformed: u64,
    restarts: u64,
    kernel_drops: u64,
    truncated: u64,
    elapsed_s: f64,
    pps: f64,
    lines: Vec<LineJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ns: Option<&'a Percentiles>,
}

/// One entry of the summary's `lines`.
#[derive(Serialize)]
struct LineJson {
    group: String,
    packets: u64,
    first: u64,
    gaps: u64,
    lost: u64,
    kernel_drops: u64,
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
        let c = &self.seq;
        SummaryJson {
            summary: SummaryFields {
                packets: self.packets,
                bytes: self.bytes,
                messages: c.messages,
                duplicates: c.duplicates,
                reordered: c.reordered,
                gaps: c.gaps,
                lost: c.lost,
                malformed: c.malformed,
                restarts: c.restarts,
                kernel_drops: self.kernel_drops,
                truncated: self.truncated,
                elapsed_s: output::round(self.elapsed.as_secs_f64(), 6),
                pps: output::round(self.pps(), 1),
                lines: self
                    .lines
                    .iter()
                    .map(|l| LineJson {
                        group: l.group.to_string(),
                        packets: l.packets,
                        first: l.first,
                        gaps: l.gaps,
                        lost: l.lost,
                        kernel_drops: l.kernel_drops,
                    })
                    .collect(),
                latency_ns: self.latency.as_ref(),
            },
        }
    }

    fn table(&self, what: &str) -> String {
        use std::fmt::Write as _;
        let c = &self.seq;
        let mut s = format!("summary of {what} (--seq {})\n", self.format);
        let rows: [(&str, String); 13] = [
            ("packets", self.packets.to_string()),
            ("bytes", self.bytes.to_string()),
            (
                "messages",
                format!("{} (sequence numbers delivered)", c.messages),
            ),
            (
                "duplicates",
                format!("{} (copies dropped, from any line)", c.duplicates),
            ),
            (
                "reordered",
                format!("{} (late, filling a gap)", c.reordered),
            ),
            ("gaps", c.gaps.to_string()),
            ("lost", format!("{} (missing sequence numbers)", c.lost)),
            (
                "malformed",
                format!("{} (too short for --seq {})", c.malformed, self.format),
            ),
            (
                "kernel drops",
                format!("{} (SO_RXQ_OVFL, SO_MEMINFO)", self.kernel_drops),
            ),
            ("truncated", self.truncated.to_string()),
            (
                "elapsed",
                format!("{} s (first to last packet)", output::secs(self.elapsed)),
            ),
            ("rate", format!("{:.1} pps", self.pps())),
            ("lines", self.lines.len().to_string()),
        ];
        for (name, value) in rows {
            let _ = writeln!(s, "  {name:<13} {value}");
        }
        if c.restarts > 0 {
            let _ = writeln!(
                s,
                "  {:<13} {} (a new MoldUDP64 session, or the sequence jumped by more than {} either way)",
                "restarts", c.restarts, self.horizon
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
        for (i, l) in self.lines.iter().enumerate() {
            let _ = writeln!(
                s,
                "  line {i:<8} {}: {} packets, {} delivered first, {} gaps, {} lost (its own), {} kernel drops",
                l.group, l.packets, l.first, l.gaps, l.lost, l.kernel_drops
            );
        }
        s
    }
}
