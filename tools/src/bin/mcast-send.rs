// mcast-send 239.255.0.1:5000 --iface lo --count 1000 --json
//
// The send side of a sequence-numbered multicast feed: each payload carries
// a sequence number (--seq: a big-endian u64 at offset 0 from 0 by default,
// any integer width and byte order at an offset, the CME MDP 3.0 packet
// header numbered from 1 with its SendingTime, or NASDAQ MoldUDP64 packets
// of --messages messages), padded with zeros to --size, with ranges left
// out on purpose (--skip) to make gaps, sent in batches with sendmmsg (SendBatch),
// optionally paced to --rate packets per second, for --count packets,
// --duration seconds or until stopped. The interface is always named
// (--iface, no default) and the source address always belongs to it: the
// socket is bound to the interface's own address, or to --bind ADDR, with
// IP_MULTICAST_IF set to the interface either way. SIGINT and SIGTERM end
// it with its summary.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{CommandFactory, Parser};
use serde::Serialize;

use ipv4_reactor::feed::SeqFormat;
use ipv4_reactor::{Message, PacketConn, SendBatch};
use ipv4_reactor_tools::cli::{self, Failure, Iface};
use ipv4_reactor_tools::output::{self, diag, diag_line};
use ipv4_reactor_tools::payload::{self, Layout, Writer, DEFAULT_SESSION, MAX_MESSAGES};
use ipv4_reactor_tools::signals::StopSignal;

const TOOL: &str = "mcast-send";

const AFTER_HELP: &str = "\
Output: a summary on stdout (`{\"sent\":..,\"elapsed_s\":..,\"pps\":..}` with
--json, with `\"skipped\":..` after `sent` when --skip is given); what is
sent, from where and how, and a rate line each second, on stderr.

Sequence numbers: packet i carries FIRST + i (FIRST + i * N for moldudp64
with --messages N, whose numbers count messages). --count counts numbered
packets, skipped ones included: `--count 100 --skip 10-19` numbers 0..99 and
sends 90. A packet is skipped when any of its sequence numbers is in a
--skip range. 16- and 32-bit formats wrap on the wire.

Formats (--seq): u64be (default), u64le, u32be, u32le, u16be, u16le, each
with an optional @OFFSET in bytes (zeros before it), mdp3 (MsgSeqNum u32 LE,
SendingTime u64 LE written at send time), moldudp64 (10-byte session,
sequence u64 BE, message count u16 BE, then --messages blocks sharing the
rest of --size: u16 BE length and zeros).

It stops after --count packets, after --duration, or at SIGINT (Ctrl-C) /
SIGTERM, whichever comes first, and prints its summary. A second signal
while stopping ends the program at once.

Exit status: 0 when every packet was sent (or a signal stopped the feed), 1
when sending fails, 2 for bad arguments (including an unknown interface or
a --bind address that is not local).";

/// Payload bytes a UDP datagram can carry over IPv4.
const MAX_UDP_PAYLOAD: u64 = 65_507;

/// How long to keep retrying a send that the kernel refuses for lack of
/// room (`ENOBUFS`, `EAGAIN`) before giving up.
const RETRY_FOR: Duration = Duration::from_secs(2);

/// Packets sent when neither --count nor --duration is given.
const DEFAULT_COUNT: u64 = 1000;

/// The send side of a multicast feed (msend's job).
///
/// Sends sequence-numbered packets to the multicast GROUP:PORT through
/// IFACE. Each payload starts with its sequence number (from 0), padded
/// with zeros.
#[derive(Parser, Debug)]
#[command(name = TOOL, version, after_help = AFTER_HELP)]
struct Args {
    /// Group and port to send to
    #[arg(value_name = "GROUP:PORT", value_parser = cli::group_port_dest)]
    dst: SocketAddrV4,

    /// Interface to send through: name (lo), index (1) or one of its
    /// addresses (127.0.0.1)
    #[arg(long, value_name = "IFACE", value_parser = cli::iface)]
    iface: Iface,

    /// Source address (a local address; ADDR or ADDR:PORT) [default: the
    /// interface's own IPv4 address]
    #[arg(long, value_name = "ADDR", value_parser = bind_addr)]
    bind: Option<SocketAddrV4>,

    /// Multicast TTL, 0 to 255 (1: this link only)
    #[arg(long, value_name = "N", default_value = "1", value_parser = byte)]
    ttl: u64,

    /// TOS byte, decimal or 0x hex [default: the kernel's, 0]
    #[arg(long, value_name = "N", value_parser = byte)]
    tos: Option<u64>,

    /// IP_MULTICAST_LOOP: deliver to this host's receivers too
    #[arg(long = "loop", value_name = "on|off", default_value = "on", value_parser = cli::on_off)]
    multicast_loop: bool,

    /// Packets to send; 0: until stopped [default: 1000, or no limit with
    /// --duration]
    #[arg(long, value_name = "N", value_parser = cli::whole)]
    count: Option<u64>,

    /// Stop after SECS seconds (decimals allowed)
    #[arg(long, value_name = "SECS", value_parser = cli::seconds)]
    duration: Option<Duration>,

    /// Payload size, up to 65507; at least what --seq needs (8 for u64be,
    /// 8 more with --stamp, 12 for mdp3, 20 + 2 per message for moldudp64)
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = size)]
    size: u64,

    /// Packets per second (0: as fast as possible)
    #[arg(long, value_name = "PPS", default_value = "0", value_parser = cli::non_negative)]
    rate: f64,

    /// Packets per sendmmsg call, 1 to 1024
    #[arg(long, value_name = "N", default_value = "32", value_parser = batch)]
    batch: u64,

    /// Payload format: u64be, u64le, u32be, u32le, u16be, u16le (each
    /// with an optional @OFFSET), mdp3 or moldudp64
    #[arg(long, value_name = "FORMAT", default_value = "u64be", value_parser = send_format)]
    seq: SeqFormat,

    /// The first sequence number [default: 0; 1 for mdp3 and moldudp64]
    #[arg(long, value_name = "N", value_parser = cli::whole)]
    first: Option<u64>,

    /// Leave out the packets with sequence numbers in A-B (inclusive; or
    /// one number A), to make gaps on purpose; repeatable
    #[arg(long, value_name = "A-B", value_parser = cli::seq_range)]
    skip: Vec<(u64, u64)>,

    /// Messages per packet, 1 to 65534 (--seq moldudp64 only)
    #[arg(long, value_name = "N", value_parser = messages)]
    messages: Option<u16>,

    /// MoldUDP64 session, 1 to 10 characters (--seq moldudp64 only)
    /// [default: SESSION001]
    #[arg(long, value_name = "NAME", value_parser = payload::session)]
    session: Option<[u8; 10]>,

    /// Write the send time (u64 ns since the epoch, in the format's byte
    /// order) right after an integer sequence number, for mcast-dump
    /// --stamp's latency (mdp3 always carries its SendingTime)
    #[arg(long)]
    stamp: bool,

    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
}

fn byte(s: &str) -> Result<u64, String> {
    cli::whole_in(s, 0, 255)
}

fn size(s: &str) -> Result<u64, String> {
    cli::whole_in(s, 1, MAX_UDP_PAYLOAD)
}

fn messages(s: &str) -> Result<u16, String> {
    cli::whole_in(s, 1, u64::from(MAX_MESSAGES)).map(|n| n as u16)
}

/// `--seq`: the library's formats but `none` (an unsequenced feed has
/// nothing for mcast-send to write).
fn send_format(s: &str) -> Result<SeqFormat, String> {
    match payload::seq_format(s)? {
        SeqFormat::None => Err(format!(
            "{s:?}: mcast-send writes sequence numbers; give an integer format, mdp3 or moldudp64"
        )),
        f => Ok(f),
    }
}

fn batch(s: &str) -> Result<u64, String> {
    cli::whole_in(s, 1, 1024)
}

/// `ADDR` or `ADDR:PORT`, a unicast address (0.0.0.0 would hand the choice
/// of source back to the routing table).
fn bind_addr(s: &str) -> Result<SocketAddrV4, String> {
    let addr = s
        .parse::<SocketAddrV4>()
        .ok()
        .or_else(|| s.parse::<Ipv4Addr>().ok().map(|a| SocketAddrV4::new(a, 0)))
        .ok_or_else(|| format!("{s:?} is not an IPv4 address (a.b.c.d or a.b.c.d:port)"))?;
    let ip = *addr.ip();
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        return Err(format!(
            "{ip} cannot be a source address: give a local unicast address"
        ));
    }
    Ok(addr)
}

/// What to send, from the arguments.
struct Plan {
    writer: Writer,
    /// The first sequence number.
    first: u64,
    /// Ranges of sequence numbers not to send.
    skip: Vec<(u64, u64)>,
    /// Numbered packets (skipped ones included); `None`: until stopped (or
    /// the duration is over).
    count: Option<u64>,
    size: usize,
    batch: usize,
}

/// Ends the program as clap does for a bad value: the message on stderr,
/// exit status 2.
fn usage_error(msg: String) -> ! {
    Args::command()
        .error(clap::error::ErrorKind::ValueValidation, msg)
        .exit()
}

impl Plan {
    fn new(a: &Args) -> Plan {
        let layout = Layout::new(a.seq, a.stamp).unwrap_or_else(|e| usage_error(e));
        let mold = a.seq == SeqFormat::MoldUdp64;
        if !mold && (a.messages.is_some() || a.session.is_some()) {
            usage_error(format!(
                "--messages and --session are for --seq moldudp64, not --seq {}",
                a.seq
            ));
        }
        let session = a
            .session
            .unwrap_or_else(|| payload::session(DEFAULT_SESSION).expect("a valid default session"));
        let writer = Writer::new(layout, a.messages.unwrap_or(1), session);
        if (a.size as usize) < writer.min_len() {
            usage_error(format!(
                "--size {} is too small: --seq {}{}{} needs at least {} bytes",
                a.size,
                a.seq,
                if a.stamp { " --stamp" } else { "" },
                a.messages
                    .map_or(String::new(), |n| format!(" --messages {n}")),
                writer.min_len()
            ));
        }
        let count = match (a.count, a.duration) {
            (Some(0), _) => None,
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_COUNT),
        };
        Plan {
            first: a.first.unwrap_or(writer.default_first()),
            writer,
            skip: a.skip.clone(),
            count,
            size: a.size as usize,
            batch: a.batch as usize,
        }
    }

    /// How many packets to leave out from the one whose first sequence
    /// number is `seq`: 0 when none of its numbers is in a --skip range,
    /// else every packet up to the end of that range (so that a long range
    /// costs one step).
    fn skipped(&self, seq: u64) -> u64 {
        let per = self.writer.per_packet();
        let last = seq.saturating_add(per - 1);
        self.skip
            .iter()
            .filter(|&&(a, b)| seq <= b && a <= last)
            .map(|&(_, b)| (b - seq) / per + 1)
            .max()
            .unwrap_or(0)
    }
}

fn main() {
    let args = Args::parse();
    let plan = Plan::new(&args);
    let stop = StopSignal::install().unwrap_or_else(|e| {
        diag(TOOL, format_args!("catching SIGINT and SIGTERM: {e}"));
        process::exit(cli::EXIT_FAILURE)
    });
    if let Err(f) = run(&args, &plan, &stop) {
        diag(TOOL, &f.msg);
        process::exit(f.status);
    }
}

/// The sending socket: its source address is on the chosen interface (or
/// the --bind address), and IP_MULTICAST_IF is the interface, so nothing is
/// left to the routing table.
fn open_socket(a: &Args) -> Result<PacketConn, Failure> {
    let name = &a.iface.info.name;
    let conn = match a.bind {
        None => {
            let Some(own) = a.iface.info.addr else {
                return Err(Failure::usage(format!(
                    "interface {name} has no IPv4 address to send from: give --bind ADDR"
                )));
            };
            // Binds the interface's own address and sets IP_MULTICAST_IF.
            let conn = PacketConn::multicast_sender(&a.iface.iface)
                .map_err(|e| Failure::runtime(&format!("opening a sender on {name}"), e))?;
            let local = conn
                .local_addr()
                .map_err(|e| Failure::runtime("reading the bound address", e))?;
            if *local.ip() != own {
                return Err(Failure::runtime(
                    "checking the source address",
                    format!("bound to {local}, not to {name}'s address {own}"),
                ));
            }
            conn
        }
        Some(addr) => {
            let conn = PacketConn::bind_udp(addr).map_err(|e| {
                if ipv4_reactor::Error::raw_os_error(&e) == Some(libc::EADDRNOTAVAIL) {
                    Failure::usage(format!("--bind {}: not an address of this host", addr.ip()))
                } else if cli::is_argument_error(&e) {
                    Failure::usage(format!("--bind {addr}: {e}"))
                } else {
                    Failure::runtime(&format!("binding {addr}"), e)
                }
            })?;
            conn.set_multicast_interface(&a.iface.iface)
                .map_err(|e| Failure::runtime(&format!("setting IP_MULTICAST_IF to {name}"), e))?;
            conn
        }
    };
    conn.set_multicast_ttl(a.ttl as u8)
        .map_err(|e| Failure::runtime("setting IP_MULTICAST_TTL", e))?;
    conn.set_multicast_loop(a.multicast_loop)
        .map_err(|e| Failure::runtime("setting IP_MULTICAST_LOOP", e))?;
    if let Some(tos) = a.tos {
        conn.set_tos(tos as u8)
            .map_err(|e| Failure::runtime("setting IP_TOS", e))?;
    }
    Ok(conn)
}

/// `{"sent":..,"elapsed_s":..,"pps":..}`, with `"skipped":..` after
/// `sent` when --skip was given.
#[derive(Serialize)]
struct SummaryJson {
    sent: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<u64>,
    elapsed_s: f64,
    pps: f64,
}

fn run(a: &Args, plan: &Plan, stop: &StopSignal) -> Result<(), Failure> {
    let conn = open_socket(a)?;
    let local = conn
        .local_addr()
        .map_err(|e| Failure::runtime("reading the bound address", e))?;
    let tos = conn
        .tos()
        .map_err(|e| Failure::runtime("reading IP_TOS", e))?;
    let count = plan
        .count
        .map_or("packets".to_string(), |n| format!("{n} packets"));
    let until = match (plan.count, a.duration) {
        (Some(_), Some(d)) => format!(", for at most {} s", d.as_secs_f64()),
        (None, Some(d)) => format!(", for {} s", d.as_secs_f64()),
        (Some(_), None) => String::new(),
        (None, None) => ", until stopped".to_string(),
    };
    diag(
        TOOL,
        format_args!(
            "sending {count} of {} bytes to {} from {local} via {}, ttl {}, tos {tos:#04x}, loop {}, batch {}, rate {}, seq {}{}{}{until}",
            plan.size,
            a.dst,
            a.iface.label(),
            a.ttl,
            if a.multicast_loop { "on" } else { "off" },
            plan.batch,
            if a.rate > 0.0 { format!("{} pps", a.rate) } else { "max".to_string() },
            plan.writer.layout().format(),
            if plan.writer.layout().stamped() { " stamped" } else { "" },
            describe_numbers(a, plan),
        ),
    );

    let Sending {
        sent,
        skipped,
        elapsed,
        stopped_by,
    } = send_feed(a, plan, &conn, stop)?;
    if let Some(name) = stopped_by {
        diag(TOOL, format_args!("stopped by {name}"));
    }

    let secs = elapsed.as_secs_f64();
    let pps = if secs > 0.0 { sent as f64 / secs } else { 0.0 };
    let text = if a.json {
        output::json_line(&SummaryJson {
            sent,
            skipped: (!plan.skip.is_empty()).then_some(skipped),
            elapsed_s: output::round(secs, 6),
            pps: output::round(pps, 1),
        })
    } else {
        format!(
            "sent {sent} packets to {} via {} in {} s: {pps:.1} pps{}\n",
            a.dst,
            a.iface.info.name,
            output::secs(elapsed),
            if plan.skip.is_empty() {
                String::new()
            } else {
                format!(" ({skipped} skipped)")
            }
        )
        .into_bytes()
    };
    output::out(TOOL, &text);
    Ok(())
}

/// Nanoseconds since the Unix epoch, now.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `, numbered from 1 (3 messages a packet, session SESSION001), skipping 10-19`.
fn describe_numbers(a: &Args, plan: &Plan) -> String {
    let mut s = format!(", numbered from {}", plan.first);
    if a.seq == SeqFormat::MoldUdp64 {
        let session = String::from_utf8_lossy(&a.session.unwrap_or(*b"SESSION001"))
            .trim_end()
            .to_string();
        s.push_str(&format!(
            " ({} messages a packet, session {session})",
            plan.writer.per_packet()
        ));
    }
    if !plan.skip.is_empty() {
        let ranges: Vec<String> = plan.skip.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        s.push_str(&format!(", skipping {}", ranges.join(",")));
    }
    s
}

/// What [`send_feed`] did.
struct Sending {
    /// Packets sent.
    sent: u64,
    /// Numbered packets left out (--skip).
    skipped: u64,
    elapsed: Duration,
    /// The signal that stopped it, if one did.
    stopped_by: Option<&'static str>,
}

/// Sends the feed; returns the packets sent and skipped, the time it took
/// and the signal that stopped it, if one did.
///
/// Pacing: the `i`th packet sent is due at `start + i / rate` (skipped
/// packets take no time). Each round sends every packet already due (at
/// most a batch), then sleeps until the next one is due, so that low rates
/// sleep instead of spinning and high rates send in batches sized by how
/// late the thread woke up.
fn send_feed(
    a: &Args,
    plan: &Plan,
    conn: &PacketConn,
    stop: &StopSignal,
) -> Result<Sending, Failure> {
    let mut batch = SendBatch::new(plan.batch)?;
    let mut payloads = vec![0u8; plan.batch * plan.size];
    let limit = plan.count.unwrap_or(u64::MAX);
    let per_packet = plan.writer.per_packet();
    // Numbered packets so far (sent or skipped).
    let mut numbered = 0u64;
    let mut skipped = 0u64;
    let mut sent = 0u64;
    let start = Instant::now();
    let deadline = a.duration.map(|d| start + d);
    let mut live = LiveLine::new(start);
    let stopped_by = loop {
        if let Some(name) = stop.requested() {
            break Some(name);
        }
        if numbered >= limit || deadline.is_some_and(|d| Instant::now() >= d) {
            break None;
        }
        live.tick(sent, plan.size);
        let mut n = (limit - numbered).min(plan.batch as u64);
        if a.rate > 0.0 {
            let due = (start.elapsed().as_secs_f64() * a.rate).floor() as u64 + 1;
            if due <= sent {
                let next =
                    Duration::try_from_secs_f64(sent as f64 / a.rate).unwrap_or(Duration::MAX);
                let wake = start.checked_add(next);
                let wait = wake.map_or(Duration::from_secs(1), |w| {
                    w.saturating_duration_since(Instant::now())
                });
                // Short naps: a signal, the deadline and the live line are
                // seen in time.
                thread::sleep(wait.min(Duration::from_millis(50)));
                continue;
            }
            n = n.min(due - sent);
        }
        let stamp = if plan.writer.layout().stamped() {
            now_ns()
        } else {
            0
        };
        // Up to n packets to send, numbering past the skipped ones.
        let mut filled = 0usize;
        let mut chunks = payloads.chunks_exact_mut(plan.size);
        while (filled as u64) < n && numbered < limit {
            let seq = plan.first.wrapping_add(numbered.wrapping_mul(per_packet));
            let skip = plan.skipped(seq).min(limit - numbered);
            if skip > 0 {
                numbered += skip;
                skipped += skip;
                continue;
            }
            numbered += 1;
            let payload = chunks.next().expect("a payload per packet of the batch");
            plan.writer.write(payload, seq, stamp);
            filled += 1;
        }
        let msgs: Vec<Message<'_>> = payloads
            .chunks_exact(plan.size)
            .take(filled)
            .map(|p| Message::new(p, a.dst))
            .collect();
        send_all(&mut batch, conn, &msgs).map_err(|e| {
            Failure::runtime(&format!("sending to {} (after {sent} packets)", a.dst), e)
        })?;
        sent += filled as u64;
    };
    Ok(Sending {
        sent,
        skipped,
        elapsed: start.elapsed(),
        stopped_by,
    })
}

/// The once-a-second line on stderr: the rate over the last second and the
/// total so far.
struct LiveLine {
    next: Instant,
    since: Instant,
    sent: u64,
}

impl LiveLine {
    fn new(start: Instant) -> LiveLine {
        LiveLine {
            next: start + Duration::from_secs(1),
            since: start,
            sent: 0,
        }
    }

    fn tick(&mut self, sent: u64, size: usize) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        let secs = now
            .saturating_duration_since(self.since)
            .as_secs_f64()
            .max(1e-9);
        let pps = (sent - self.sent) as f64 / secs;
        diag_line(&format!(
            "rate: {pps:.0} pps, {:.2} MB/s | total {sent} packets sent",
            pps * size as f64 / 1e6
        ));
        self.sent = sent;
        self.since = now;
        self.next = now + Duration::from_secs(1);
    }
}

/// Sends every message, going on after partial sends, and retrying briefly
/// when the kernel has no room (`ENOBUFS`, or `EAGAIN` on a full socket).
fn send_all(batch: &mut SendBatch, conn: &PacketConn, msgs: &[Message<'_>]) -> io::Result<()> {
    let mut done = 0;
    let mut stuck_since: Option<Instant> = None;
    while done < msgs.len() {
        let err = match batch.send(conn, &msgs[done..]) {
            Ok(0) => io::Error::from(io::ErrorKind::WouldBlock),
            Ok(n) => {
                done += n;
                stuck_since = None;
                continue;
            }
            Err(e) => e,
        };
        let retry = err.kind() == io::ErrorKind::Interrupted
            || err.kind() == io::ErrorKind::WouldBlock
            || ipv4_reactor::Error::raw_os_error(&err) == Some(libc::ENOBUFS);
        if !retry {
            return Err(err);
        }
        if err.kind() != io::ErrorKind::Interrupted {
            let since = *stuck_since.get_or_insert_with(Instant::now);
            if since.elapsed() > RETRY_FOR {
                return Err(err);
            }
            thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}
