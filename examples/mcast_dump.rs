// cargo run --release --example mcast_dump -- 239.255.0.1:5000 --iface lo --json
//
// The receive side of a sequence-numbered multicast feed, built on the
// crate's Reactor: joins GROUP on one named interface (any source, or
// source-specific with --source / --exclude), reads each packet's first 8
// bytes as a big-endian sequence number, and shows every packet (a line for
// people, or JSON), a rate line each second and a summary at the end:
// packets, bytes, sequence gaps, lost sequence numbers and the socket's
// kernel drop counter (SO_RXQ_OVFL). --quiet asks the kernel for nothing but
// the payload and the drop counter, for catch-up measurements with
// --stall-ms. See --help for every option.

mod common;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::{Context, Reactor};
use ipv4_reactor::{ControlFlags, Interface, InterfaceInfo, Packet, PacketConn};

use common::{diag, usage_error, Arg, Args, Json};

const TOOL: &str = "mcast_dump";

const USAGE: &str = "\
usage: mcast_dump GROUP:PORT --iface IFACE [options]

Joins the multicast GROUP on IFACE, receives it on PORT (0: the kernel picks
a port; the `listening` line tells which) and shows each packet, reading its
first 8 bytes as a big-endian sequence number.

options:
  --iface IFACE      interface to join on (required): name (lo), index (1)
                     or one of its addresses (127.0.0.1)
  --source ADDR      receive only from ADDR (source-specific, include mode;
                     repeatable)
  --exclude ADDR     receive from every source but ADDR (exclude mode;
                     repeatable)
  --count N          exit after N packets
  --idle-exit-ms MS  exit when no packet was read for MS since the last one
                     (the timer starts with the first packet)
  --timeout-ms MS    exit after MS in all (counted from the join)
  --stall-ms MS      sleep MS after joining, before the first read
                     (measures catch-up after a stall)
  --rcvbuf BYTES     receive buffer: SO_RCVBUFFORCE when allowed (root),
                     else SO_RCVBUF capped by net.core.rmem_max
  --batch N          packets per recvmmsg call (reactor slots; default 64)
  --spin             poll without sleeping: lower latency, one core at 100%
  --json             a JSON object per packet and a JSON summary
  --quiet            no per-packet output; ask the kernel only for the drop
                     counter (the fastest receive path)
  --help             show this text

Output: packets, rate lines (each second) and the summary go to stdout; with
--json, stdout has only JSON lines and the rate lines go to stderr. Once the
socket is joined and set up, stderr gets one line starting with `listening`
(group, port, interface, effective receive buffer).

The summary is printed at a normal end only: --count, --idle-exit-ms or
--timeout-ms. Ctrl-C (SIGINT) or SIGTERM ends the program at once, without
a summary; give one of those three options to get one.

Exit status: 0 at a normal end (count reached, idle, timeout), 1 when a
socket call fails, 2 for bad arguments.
";

/// What the command line asked for.
struct Options {
    group: SocketAddrV4,
    iface: Interface,
    iface_info: InterfaceInfo,
    sources: Vec<Ipv4Addr>,
    excludes: Vec<Ipv4Addr>,
    count: Option<u64>,
    idle_exit: Option<Duration>,
    timeout: Option<Duration>,
    stall: Option<Duration>,
    rcvbuf: Option<usize>,
    batch: usize,
    spin: bool,
    json: bool,
    quiet: bool,
}

fn parse_args() -> Options {
    let mut args = Args::from_env(TOOL);
    let mut group = None;
    let mut iface = None;
    let mut sources = Vec::new();
    let mut excludes = Vec::new();
    let (mut count, mut idle_exit, mut timeout, mut stall, mut rcvbuf) =
        (None, None, None, None, None);
    let mut batch = 64;
    let (mut spin, mut json, mut quiet) = (false, false, false);
    while let Some(arg) = args.next() {
        let flag = match arg {
            Arg::Positional(p) => {
                common::take_group_port(TOOL, &mut group, &p, true);
                continue;
            }
            Arg::Flag(f) => f,
        };
        match flag.as_str() {
            "--help" => {
                common::out(TOOL, USAGE.as_bytes());
                process::exit(common::EXIT_OK);
            }
            "--iface" => iface = Some(args.value(&flag)),
            "--source" => sources.push(common::parse_source(TOOL, &flag, &args.value(&flag))),
            "--exclude" => excludes.push(common::parse_source(TOOL, &flag, &args.value(&flag))),
            "--count" => {
                count = Some(common::parse_u64(
                    TOOL,
                    &flag,
                    &args.value(&flag),
                    1,
                    u64::MAX,
                ))
            }
            "--idle-exit-ms" => {
                idle_exit = Some(common::parse_millis(TOOL, &flag, &args.value(&flag)))
            }
            "--timeout-ms" => timeout = Some(common::parse_millis(TOOL, &flag, &args.value(&flag))),
            "--stall-ms" => stall = Some(common::parse_millis(TOOL, &flag, &args.value(&flag))),
            "--rcvbuf" => {
                let v = common::parse_u64(TOOL, &flag, &args.value(&flag), 1, i32::MAX as u64);
                rcvbuf = Some(v as usize);
            }
            "--batch" => {
                batch = common::parse_u64(TOOL, &flag, &args.value(&flag), 1, 1024) as usize
            }
            "--spin" => {
                args.no_value(&flag);
                spin = true;
            }
            "--json" => {
                args.no_value(&flag);
                json = true;
            }
            "--quiet" => {
                args.no_value(&flag);
                quiet = true;
            }
            _ => args.unknown(&flag),
        }
    }
    let group =
        group.unwrap_or_else(|| usage_error(TOOL, "missing GROUP:PORT (like 239.255.0.1:5000)"));
    let iface = iface.unwrap_or_else(|| {
        usage_error(
            TOOL,
            "missing --iface IFACE: name the interface to join on (lo, 1 or 127.0.0.1)",
        )
    });
    let (iface, iface_info) = common::parse_iface(TOOL, &iface);
    if !sources.is_empty() && !excludes.is_empty() {
        usage_error(
            TOOL,
            "--source (include mode) and --exclude (exclude mode) cannot be mixed",
        );
    }
    Options {
        group,
        iface,
        iface_info,
        sources,
        excludes,
        count,
        idle_exit,
        timeout,
        stall,
        rcvbuf,
        batch,
        spin,
        json,
        quiet,
    }
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
#[derive(Default)]
struct Tally {
    /// `--count`, or `u64::MAX`: packets past it are ignored.
    limit: u64,
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
        let seq = payload.first_chunk::<8>().map(|b| u64::from_be_bytes(*b));
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

/// Why the loop ended.
#[derive(Clone, Copy)]
enum End {
    Count(u64),
    Idle(Duration),
    Timeout(Duration),
}

/// A failure after the arguments were parsed: a bad argument the kernel or
/// the crate caught (exit 2), or a runtime failure (exit 1).
struct Failure {
    status: i32,
    msg: String,
}

impl Failure {
    fn runtime(what: &str, e: std::io::Error) -> Failure {
        Failure {
            status: common::EXIT_FAILURE,
            msg: format!("{what}: {e}"),
        }
    }

    fn classify(what: &str, e: std::io::Error) -> Failure {
        let status = if common::is_argument_error(&e) {
            common::EXIT_USAGE
        } else {
            common::EXIT_FAILURE
        };
        Failure {
            status,
            msg: format!("{what}: {e}"),
        }
    }
}

fn main() {
    let opts = parse_args();
    if let Err(f) = run(&opts) {
        diag(TOOL, &f.msg);
        process::exit(f.status);
    }
}

fn run(o: &Options) -> Result<(), Failure> {
    // --quiet asks for the drop counter only: every other extra (source
    // address, IP_PKTINFO, TTL, TOS) costs kernel work on each packet.
    let flags = if o.quiet {
        ControlFlags::DROPS
    } else {
        ControlFlags::SRC
            | ControlFlags::DST
            | ControlFlags::INTERFACE
            | ControlFlags::TTL
            | ControlFlags::TOS
            | ControlFlags::DROPS
    };
    let mut builder = PacketConn::multicast_receiver(o.group, o.iface.clone()).control(flags);
    if let Some(bytes) = o.rcvbuf {
        builder = builder.recv_buffer(bytes);
    }
    for &s in &o.sources {
        builder = builder.source(s);
    }
    for &s in &o.excludes {
        builder = builder.exclude(s);
    }
    let conn = builder.build().map_err(|e| {
        Failure::classify(
            &format!("joining {} on {}", o.group.ip(), o.iface_info.name),
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

    let mut reactor = Reactor::builder()
        .batch_slots(o.batch)
        .spin(o.spin)
        .build()
        .map_err(|e| Failure::runtime("creating the reactor", e))?;
    let tally = Arc::new(Tally {
        limit: o.count.unwrap_or(u64::MAX),
        ..Tally::default()
    });
    // Per-packet lines are formatted by the handler into this buffer and
    // written out by the main loop after each turn.
    let pending = Arc::new(Mutex::new(String::new()));
    let registered = if o.quiet {
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
        let pending = Arc::clone(&pending);
        let json = o.json;
        reactor.register(conn, move |p: &Packet<'_>, ctx: &mut Context<'_>| {
            let Some(r) = tally.record(p.payload, p.flags.truncated) else {
                return;
            };
            let mut out = pending.lock().unwrap_or_else(PoisonError::into_inner);
            if json {
                packet_json(&mut out, p, r);
            } else {
                packet_line(&mut out, p, r);
            }
            out.push('\n');
            if r.last {
                ctx.stop();
            }
        })
    };
    registered.map_err(|e| Failure::runtime("registering the socket with the reactor", e))?;

    let filter = if !o.sources.is_empty() {
        format!(" include={}", join_addrs(&o.sources))
    } else if !o.excludes.is_empty() {
        format!(" exclude={}", join_addrs(&o.excludes))
    } else {
        String::new()
    };
    diag_line(&format!(
        "listening {}:{port} iface={} ifindex={} rcvbuf={rcvbuf}{filter} batch={}{}{}",
        o.group.ip(),
        o.iface_info.name,
        o.iface_info.index,
        o.batch,
        if o.spin { " spin" } else { "" },
        if o.quiet { " quiet" } else { "" },
    ));

    let joined = Instant::now();
    let deadline = o.timeout.map(|t| joined + t);
    if let Some(stall) = o.stall {
        stall_for(stall, deadline);
    }

    let (end, last_read) = receive_loop(o, deadline, &mut reactor, &tally, &pending)?;
    flush(&pending);

    let counters = reactor.counters();
    let panics = reactor.take_panics();
    if !panics.is_empty() {
        return Err(Failure {
            status: common::EXIT_FAILURE,
            msg: format!("the packet handler panicked: {}", panics.join("; ")),
        });
    }
    match end {
        End::Count(n) => diag(TOOL, format_args!("done: {n} packets")),
        End::Idle(d) => diag(TOOL, format_args!("done: idle for {} ms", d.as_millis())),
        End::Timeout(d) => diag(
            TOOL,
            format_args!("done: timeout after {} ms", d.as_millis()),
        ),
    }
    let elapsed = match (tally.first.get(), last_read) {
        (Some(&first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    let summary = Summary {
        packets: tally.packets.get(),
        bytes: tally.bytes.get(),
        gaps: tally.gaps.get(),
        lost: tally.lost.get(),
        kernel_drops: counters.total.recv.kernel_drops,
        truncated: tally.truncated.get(),
        restarts: tally.restarts.get(),
        elapsed,
    };
    let text = if o.json {
        summary.json()
    } else {
        summary.table(&format!("{}:{port} on {}", o.group.ip(), o.iface_info.name))
    };
    common::out(TOOL, text.as_bytes());
    Ok(())
}

/// Sleeps `stall`, bounded by the deadline.
fn stall_for(stall: Duration, deadline: Option<Instant>) {
    let until = Instant::now() + stall;
    let until = deadline.map_or(until, |d| d.min(until));
    thread::sleep(until.saturating_duration_since(Instant::now()));
}

/// Turns the reactor until an exit condition holds; returns why, and when
/// the last packet was read.
fn receive_loop(
    o: &Options,
    deadline: Option<Instant>,
    reactor: &mut Reactor,
    tally: &Tally,
    pending: &Mutex<String>,
) -> Result<(End, Option<Instant>), Failure> {
    let limit = o.count.unwrap_or(u64::MAX);
    let mut seen = 0u64;
    let mut last_read: Option<Instant> = None;
    let mut rate = RateLine::default();
    loop {
        let now = Instant::now();
        if tally.packets.get() >= limit {
            return Ok((End::Count(limit), last_read));
        }
        if let (Some(d), Some(t)) = (deadline, o.timeout) {
            if now >= d {
                return Ok((End::Timeout(t), last_read));
            }
        }
        let idle_at = match (o.idle_exit, last_read) {
            (Some(idle), Some(last)) => Some(last + idle),
            _ => None,
        };
        if let (Some(at), Some(idle)) = (idle_at, o.idle_exit) {
            if now >= at {
                return Ok((End::Idle(idle), last_read));
            }
        }
        if let Some(at) = rate.next {
            if now >= at {
                rate.print(o.json, tally, reactor, now);
            }
        }

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
            flush(pending);
        }
    }
}

/// The once-a-second line: packets and bytes since the previous one.
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

    fn print(&mut self, json: bool, tally: &Tally, reactor: &Reactor, now: Instant) {
        let Some(since) = self.since else { return };
        let secs = now.saturating_duration_since(since).as_secs_f64().max(1e-9);
        let (packets, bytes) = (tally.packets.get(), tally.bytes.get());
        let line = format!(
            "rate: {:.0} pps, {:.2} MB/s | total {packets} packets, {} lost, {} kernel drops",
            (packets - self.packets) as f64 / secs,
            (bytes - self.bytes) as f64 / secs / 1e6,
            tally.lost.get(),
            reactor.counters().total.recv.kernel_drops,
        );
        // With --json, stdout carries JSON only.
        if json {
            diag_line(&line);
        } else {
            common::out(TOOL, format!("{line}\n").as_bytes());
        }
        self.packets = packets;
        self.bytes = bytes;
        self.since = Some(now);
        self.next = Some(now + Duration::from_secs(1));
    }
}

fn flush(pending: &Mutex<String>) {
    let mut out = pending.lock().unwrap_or_else(PoisonError::into_inner);
    if !out.is_empty() {
        common::out(TOOL, out.as_bytes());
        out.clear();
    }
}

/// A line on stderr without the tool's prefix (the `listening` line must
/// begin with `listening`).
fn diag_line(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn join_addrs(addrs: &[Ipv4Addr]) -> String {
    addrs
        .iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `{"seq":..,"len":..,"src":"a.b.c.d:port","dst":"a.b.c.d","ifindex":..,"ttl":..,"tos":..,"truncated":..}`,
/// with `null` for what the kernel did not deliver.
fn packet_json(out: &mut String, p: &Packet<'_>, r: Record) {
    Json::object(out)
        .opt_u64("seq", r.seq)
        .u64("len", p.payload.len() as u64)
        .opt_str("src", p.src)
        .opt_str("dst", p.cm.dst)
        .opt_u64("ifindex", p.cm.ifindex.map(u64::from))
        .opt_u64("ttl", p.cm.ttl.map(u64::from))
        .opt_u64("tos", p.cm.tos.map(u64::from))
        .bool("truncated", p.flags.truncated)
        .end();
}

/// `seq 17  64 B  from 127.0.0.1:40000  to 239.255.0.1  if 1  ttl 1  tos 0x00`,
/// then what is unusual about the packet.
fn packet_line(out: &mut String, p: &Packet<'_>, r: Record) {
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

    fn json(&self) -> String {
        let mut s = String::new();
        Json::object(&mut s)
            .object_field("summary", |j| {
                j.u64("packets", self.packets)
                    .u64("bytes", self.bytes)
                    .u64("gaps", self.gaps)
                    .u64("lost", self.lost)
                    .u64("kernel_drops", self.kernel_drops)
                    .u64("truncated", self.truncated)
                    .f64("elapsed_s", self.elapsed.as_secs_f64(), 6)
                    .f64("pps", self.pps(), 1);
            })
            .end();
        s.push('\n');
        s
    }

    fn table(&self, what: &str) -> String {
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
                format!("{} s (first to last packet)", common::secs(self.elapsed)),
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
        s
    }
}
