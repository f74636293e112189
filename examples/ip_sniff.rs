// cargo run --example ip_sniff -- [--proto udp|icmp|N] [--count N] [--timeout-ms MS] [--json] [--dst A.B.C.D]
//     (needs root: CAP_NET_RAW)
//
// Reads whole IPv4 packets of one protocol with a RawConn bound to 0.0.0.0
// and prints each header: its Display line and the payload length, or with
// --json one object per line with the fields `version`, `ihl`, `tos`,
// `total_len`, `id`, `flags`, `frag_off`, `ttl`, `protocol`, `checksum`,
// `checksum_ok`, `src`, `dst`, `options` (hex) and `payload_len`.
//
// A raw socket gets a copy of every packet of its protocol addressed to
// this host; it sends nothing. `--dst` keeps only the packets whose header
// destination is that address. The program says `listening ...` on stderr
// once the socket is ready, and ends after --count packets (default: no
// limit) or --timeout-ms milliseconds (default: no limit), whichever comes
// first. Bad arguments exit with 2, errors (no CAP_NET_RAW) with 1.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ipv4_reactor::header::{checksum, Header, Protocol};
use ipv4_reactor::RawConn;

const USAGE: &str = "usage: ip_sniff [--proto udp|icmp|tcp|igmp|N] [--count N] [--timeout-ms MS] \
                     [--json] [--dst A.B.C.D]";

/// Read timeout slice while no overall deadline is given.
const SLICE: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Args {
    proto: u8,
    count: Option<u64>,
    timeout: Option<Duration>,
    json: bool,
    dst: Option<Ipv4Addr>,
}

fn parse_proto(s: &str) -> Result<u8, String> {
    let n = match s.to_ascii_lowercase().as_str() {
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        other => other.parse::<u8>().map_err(|_| {
            format!("--proto: '{s}' is not udp, icmp, tcp, igmp or a protocol number 1-254")
        })?,
    };
    match n {
        0 => Err("--proto: 0 is not a protocol a raw socket can receive (use 1-254)".into()),
        255 => Err("--proto: 255 (IPPROTO_RAW) sockets can only send, not receive".into()),
        n => Ok(n),
    }
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        proto: 1,
        count: None,
        timeout: None,
        json: false,
        dst: None,
    };
    while let Some(arg) = it.next() {
        // Accept both "--flag value" and "--flag=value".
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--json" => {
                if inline.is_some() {
                    return Err("--json takes no value".into());
                }
                args.json = true;
            }
            "--proto" => args.proto = parse_proto(&value("--proto")?)?,
            "--count" => {
                let v = value("--count")?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("--count: '{v}' is not a non-negative integer"))?;
                args.count = (n > 0).then_some(n);
            }
            "--timeout-ms" => {
                let v = value("--timeout-ms")?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("--timeout-ms: '{v}' is not a number of milliseconds"))?;
                args.timeout = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "--dst" => {
                let v = value("--dst")?;
                args.dst = Some(
                    v.parse()
                        .map_err(|_| format!("--dst: '{v}' is not an IPv4 address"))?,
                );
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("ip_sniff: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match sniff(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if ipv4_reactor::Error::raw_os_error(&e) == Some(libc::EPERM)
                || e.kind() == io::ErrorKind::PermissionDenied
            {
                eprintln!(
                    "ip_sniff: {e}\nip_sniff: reading raw packets needs CAP_NET_RAW: run as root \
                     or grant the capability (setcap cap_net_raw+ep <binary>)"
                );
            } else {
                eprintln!("ip_sniff: {e}");
            }
            ExitCode::from(1)
        }
    }
}

fn sniff(args: &Args) -> io::Result<()> {
    let raw = RawConn::new(args.proto, Ipv4Addr::UNSPECIFIED)?;
    let start = Instant::now();
    let deadline = args.timeout.map(|t| start + t);
    eprintln!(
        "listening for {} packets{} on 0.0.0.0 (count {}, timeout {})",
        Protocol::from(args.proto),
        args.dst.map(|d| format!(" to {d}")).unwrap_or_default(),
        args.count.map_or("none".to_string(), |n| n.to_string()),
        args.timeout
            .map_or("none".to_string(), |t| format!("{} ms", t.as_millis())),
    );

    let stdout = io::stdout();
    let mut buf = vec![0u8; 65536];
    let mut seen = 0u64;
    loop {
        if args.count.is_some_and(|n| seen >= n) {
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
        raw.socket().set_read_timeout(Some(wait))?;
        let (header, payload_len, truncated) = match raw.read_from(&mut buf) {
            Ok(p) => (p.header, p.payload.len(), p.meta.truncated()),
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
                eprintln!("ip_sniff: skipping a malformed packet: {e}");
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
        seen += 1;
        let line = if args.json {
            json_line(&header, checksum_ok, payload_len)
        } else {
            format!(
                "{header} payload={payload_len}{}{}",
                if checksum_ok { "" } else { " BAD-CHECKSUM" },
                if truncated { " TRUNCATED" } else { "" }
            )
        };
        let mut out = stdout.lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    eprintln!(
        "ip_sniff: {seen} packet(s) in {} ms",
        start.elapsed().as_millis()
    );
    Ok(())
}

fn json_line(h: &Header, checksum_ok: bool, payload_len: usize) -> String {
    let options: String = h.options.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{{\"version\":{},\"ihl\":{},\"tos\":{},\"total_len\":{},\"id\":{},\"flags\":{},\
         \"frag_off\":{},\"ttl\":{},\"protocol\":{},\"checksum\":{},\"checksum_ok\":{},\
         \"src\":\"{}\",\"dst\":\"{}\",\"options\":\"{}\",\"payload_len\":{}}}",
        h.version,
        h.header_len() / 4,
        h.tos,
        h.total_len,
        h.id,
        h.flags.bits(),
        h.frag_offset,
        h.ttl,
        h.protocol.number(),
        h.checksum,
        checksum_ok,
        h.src,
        h.dst,
        options,
        payload_len
    )
}
