// ip-sniff --proto udp --json --dst 127.0.0.77        (needs root: CAP_NET_RAW)
//
// Reads whole IPv4 packets of one protocol with a RawConn bound to 0.0.0.0
// and prints each header: its Display line and the payload length, or with
// --json one object per line with the fields `version`, `ihl`, `tos`,
// `total_len`, `id`, `flags`, `frag_off`, `ttl`, `protocol`, `checksum`,
// `checksum_ok`, `src`, `dst`, `options` (hex) and `payload_len`. --pcap
// writes the packets to a capture file as well.
//
// A raw socket gets a copy of every packet of its protocol addressed to
// this host; it sends nothing.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use serde::Serialize;

use ipv4_reactor::header::{checksum, Header, Protocol};
use ipv4_reactor::{ControlFlags, RawConn};
use ipv4_reactor_tools::capture::Capture;
use ipv4_reactor_tools::cli;
use ipv4_reactor_tools::signals::StopSignal;

const TOOL: &str = "ip-sniff";

const AFTER_HELP: &str = "\
Needs CAP_NET_RAW (root). A raw socket gets a copy of every packet of its
protocol addressed to this host; ip-sniff sends nothing. It says
`listening ...` on stderr once the socket is ready, and ends after --count
packets, after --timeout-ms, or at SIGINT (Ctrl-C) / SIGTERM, with a line
saying how many packets it read.

Exit status: 0 at a normal end (count, timeout, signal), 1 for errors (no
CAP_NET_RAW, the capture file), 2 for bad arguments.";

/// Read timeout slice while no overall deadline is given.
const SLICE: Duration = Duration::from_millis(500);

/// Whole IPv4 packets of one protocol, header field by header field.
#[derive(Parser, Debug)]
#[command(name = TOOL, version, after_help = AFTER_HELP)]
struct Args {
    /// Protocol to read: udp, icmp, tcp, igmp or a number 1-254
    #[arg(long, value_name = "PROTO", default_value = "icmp", value_parser = parse_proto)]
    proto: u8,

    /// Exit after N packets (0: no limit)
    #[arg(long, value_name = "N", default_value = "0", value_parser = cli::whole)]
    count: u64,

    /// Exit after MS milliseconds (0: no limit)
    #[arg(long = "timeout-ms", value_name = "MS", default_value = "0", value_parser = cli::millis)]
    timeout: Duration,

    /// One JSON object per packet
    #[arg(long)]
    json: bool,

    /// Keep only packets whose header destination is this address
    #[arg(long, value_name = "A.B.C.D", value_parser = cli::ipv4)]
    dst: Option<Ipv4Addr>,

    /// Write every packet shown to FILE: pcap, nanosecond timestamps (the
    /// kernel's receive time), the packets as read
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
}

fn parse_proto(s: &str) -> Result<u8, String> {
    let n = match s.to_ascii_lowercase().as_str() {
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        other => other
            .parse::<u8>()
            .map_err(|_| format!("'{s}' is not udp, icmp, tcp, igmp or a protocol number 1-254"))?,
    };
    match n {
        0 => Err("0 is not a protocol a raw socket can receive (use 1-254)".into()),
        255 => Err("255 (IPPROTO_RAW) sockets can only send, not receive".into()),
        n => Ok(n),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = StopSignal::install().and_then(|stop| sniff(&args, &stop));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if ipv4_reactor::Error::raw_os_error(&e) == Some(libc::EPERM)
                || e.kind() == io::ErrorKind::PermissionDenied
            {
                eprintln!(
                    "{TOOL}: {e}\n{TOOL}: reading raw packets needs CAP_NET_RAW: run as root \
                     or grant the capability (setcap cap_net_raw+ep <binary>)"
                );
            } else {
                eprintln!("{TOOL}: {e}");
            }
            ExitCode::from(1)
        }
    }
}

fn sniff(args: &Args, stop: &StopSignal) -> io::Result<()> {
    let raw = RawConn::new(args.proto, Ipv4Addr::UNSPECIFIED)?;
    let mut capture = match &args.pcap {
        Some(path) => {
            // The kernel's receive time for each record.
            raw.set_control_message(ControlFlags::TIMESTAMP, true)?;
            Some(Capture::create(path).map_err(|e| {
                io::Error::new(e.kind(), format!("creating {}: {e}", path.display()))
            })?)
        }
        None => None,
    };
    let count = (args.count > 0).then_some(args.count);
    let timeout = (!args.timeout.is_zero()).then_some(args.timeout);
    let start = Instant::now();
    let deadline = timeout.map(|t| start + t);
    eprintln!(
        "listening for {} packets{} on 0.0.0.0 (count {}, timeout {})",
        Protocol::from(args.proto),
        args.dst.map(|d| format!(" to {d}")).unwrap_or_default(),
        count.map_or("none".to_string(), |n| n.to_string()),
        timeout.map_or("none".to_string(), |t| format!("{} ms", t.as_millis())),
    );

    let stdout = io::stdout();
    let mut buf = vec![0u8; 65536];
    let mut seen = 0u64;
    let mut stopped_by = None;
    loop {
        if let Some(name) = stop.requested() {
            stopped_by = Some(name);
            break;
        }
        if count.is_some_and(|n| seen >= n) {
            break;
        }
        let wait = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                left.min(SLICE)
            }
            None => SLICE,
        };
        // A signal interrupts the read (a socket with a timeout is never
        // restarted).
        raw.socket().set_read_timeout(Some(wait))?;
        let (header, payload_len, cm, truncated) = match raw.read_from(&mut buf) {
            Ok(p) => (p.header, p.payload.len(), p.meta.cm, p.meta.truncated()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                eprintln!("{TOOL}: skipping a malformed packet: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        if args.dst.is_some_and(|d| d != header.dst) {
            continue;
        }
        // The header bytes are still at the start of the buffer: a correct
        // header checksum sums to zero over them.
        let hl = header.header_len().min(buf.len());
        let checksum_ok = checksum(&buf[..hl]) == 0;
        if let (Some(cap), Some(path)) = (&mut capture, &args.pcap) {
            let at = cm.timestamp.unwrap_or_else(SystemTime::now);
            cap.write_ipv4(at, &buf[..(hl + payload_len).min(buf.len())])
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("writing {}: {e}", path.display()))
                })?;
        }
        seen += 1;
        let mut line = if args.json {
            serde_json::to_string(&HeaderJson::new(&header, checksum_ok, payload_len))
                .map_err(io::Error::other)?
        } else {
            format!(
                "{header} payload={payload_len}{}{}",
                if checksum_ok { "" } else { " BAD-CHECKSUM" },
                if truncated { " TRUNCATED" } else { "" }
            )
        };
        line.push('\n');
        let mut out = stdout.lock();
        match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            // `ip-sniff | head`: the reader has what it wanted.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            other => other?,
        }
    }
    if let Some(name) = stopped_by {
        eprintln!("{TOOL}: stopped by {name}");
    }
    if let (Some(cap), Some(path)) = (capture, &args.pcap) {
        let n = cap
            .finish()
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))?;
        eprintln!("{TOOL}: {n} packets written to {}", path.display());
    }
    eprintln!(
        "{TOOL}: {seen} packet(s) in {} ms",
        start.elapsed().as_millis()
    );
    Ok(())
}

/// One header as JSON, fields in header order.
#[derive(Serialize)]
struct HeaderJson {
    version: u8,
    ihl: usize,
    tos: u8,
    total_len: u16,
    id: u16,
    flags: u8,
    frag_off: u16,
    ttl: u8,
    protocol: u8,
    checksum: u16,
    checksum_ok: bool,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    /// The option bytes in hex.
    options: String,
    payload_len: usize,
}

impl HeaderJson {
    fn new(h: &Header, checksum_ok: bool, payload_len: usize) -> HeaderJson {
        HeaderJson {
            version: h.version,
            ihl: h.header_len() / 4,
            tos: h.tos,
            total_len: h.total_len,
            id: h.id,
            flags: h.flags.bits(),
            frag_off: h.frag_offset,
            ttl: h.ttl,
            protocol: h.protocol.number(),
            checksum: h.checksum,
            checksum_ok,
            src: h.src,
            dst: h.dst,
            options: h.options.iter().map(|b| format!("{b:02x}")).collect(),
            payload_len,
        }
    }
}
