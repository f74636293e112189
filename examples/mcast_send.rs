// cargo run --release --example mcast_send -- 239.255.0.1:5000 --iface lo --count 1000 --json
//
// The send side of a sequence-numbered multicast feed: each payload starts
// with a big-endian u64 sequence number from 0 (padded with zeros to
// --size), sent in batches with sendmmsg (SendBatch), optionally paced to
// --rate packets per second. The interface is always named (--iface, no
// default) and the source address always belongs to it: the socket is bound
// to the interface's own address, or to --bind ADDR, with IP_MULTICAST_IF set
// to the interface either way. See --help for every option.

mod common;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process;
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::{Interface, InterfaceInfo, Message, PacketConn, SendBatch};

use common::{diag, usage_error, Arg, Args, Json};

const TOOL: &str = "mcast_send";

const USAGE: &str = "\
usage: mcast_send GROUP:PORT --iface IFACE [--bind ADDR] [--ttl N] [--tos N]
                  [--loop on|off] [--count N] [--size BYTES] [--rate PPS]
                  [--batch N] [--json]

Sends --count packets to the multicast GROUP:PORT through IFACE. Each payload
starts with a big-endian u64 sequence number from 0, padded with zeros.

options:
  --iface IFACE   interface to send through (required): name (lo), index (1)
                  or one of its addresses (127.0.0.1)
  --bind ADDR     source address (a local address; ADDR or ADDR:PORT);
                  default: the interface's own IPv4 address
  --ttl N         multicast TTL, 0 to 255 (default 1: this link only)
  --tos N         TOS byte, decimal or 0x hex (default: the kernel's, 0)
  --loop on|off   IP_MULTICAST_LOOP: deliver to this host's receivers too
                  (default on)
  --count N       packets to send (default 1000)
  --size BYTES    payload size, 8 to 65507 (default 64)
  --rate PPS      packets per second (default 0: as fast as possible)
  --batch N       packets per sendmmsg call, 1 to 1024 (default 32)
  --json          print the summary as JSON
  --help          show this text

Output: a summary on stdout (`{\"sent\":..,\"elapsed_s\":..,\"pps\":..}` with
--json); what is sent, from where and how, on stderr.

Exit status: 0 when every packet was sent, 1 when sending fails, 2 for bad
arguments (including an unknown interface or a --bind address that is not
local).
";

/// Payload bytes a UDP datagram can carry over IPv4.
const MAX_UDP_PAYLOAD: u64 = 65_507;

/// How long to keep retrying a send that the kernel refuses for lack of
/// room (`ENOBUFS`, `EAGAIN`) before giving up.
const RETRY_FOR: Duration = Duration::from_secs(2);

struct Options {
    dst: SocketAddrV4,
    iface: Interface,
    iface_info: InterfaceInfo,
    bind: Option<SocketAddrV4>,
    ttl: u8,
    tos: Option<u8>,
    multicast_loop: bool,
    count: u64,
    size: usize,
    /// Packets per second; 0 for as fast as possible.
    rate: f64,
    batch: usize,
    json: bool,
}

fn parse_args() -> Options {
    let mut args = Args::from_env(TOOL);
    let mut dst = None;
    let mut iface = None;
    let mut bind = None;
    let mut ttl = 1;
    let mut tos = None;
    let mut multicast_loop = true;
    let mut count = 1000;
    let mut size = 64;
    let mut rate = 0.0;
    let mut batch = 32;
    let mut json = false;
    while let Some(arg) = args.next() {
        let flag = match arg {
            Arg::Positional(p) => {
                common::take_group_port(TOOL, &mut dst, &p, false);
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
            "--bind" => bind = Some(parse_bind(&flag, &args.value(&flag))),
            "--ttl" => ttl = common::parse_u64(TOOL, &flag, &args.value(&flag), 0, 255) as u8,
            "--tos" => tos = Some(common::parse_u64(TOOL, &flag, &args.value(&flag), 0, 255) as u8),
            "--loop" => multicast_loop = common::parse_on_off(TOOL, &flag, &args.value(&flag)),
            "--count" => count = common::parse_u64(TOOL, &flag, &args.value(&flag), 0, u64::MAX),
            "--size" => {
                size =
                    common::parse_u64(TOOL, &flag, &args.value(&flag), 8, MAX_UDP_PAYLOAD) as usize
            }
            "--rate" => rate = common::parse_f64(TOOL, &flag, &args.value(&flag)),
            "--batch" => {
                batch = common::parse_u64(TOOL, &flag, &args.value(&flag), 1, 1024) as usize
            }
            "--json" => {
                args.no_value(&flag);
                json = true;
            }
            _ => args.unknown(&flag),
        }
    }
    let dst =
        dst.unwrap_or_else(|| usage_error(TOOL, "missing GROUP:PORT (like 239.255.0.1:5000)"));
    let iface = iface.unwrap_or_else(|| {
        usage_error(
            TOOL,
            "missing --iface IFACE: name the interface to send through (lo, 1 or 127.0.0.1)",
        )
    });
    let (iface, iface_info) = common::parse_iface(TOOL, &iface);
    Options {
        dst,
        iface,
        iface_info,
        bind,
        ttl,
        tos,
        multicast_loop,
        count,
        size,
        rate,
        batch,
        json,
    }
}

/// `ADDR` or `ADDR:PORT`, a unicast address (0.0.0.0 would hand the choice
/// of source back to the routing table).
fn parse_bind(flag: &str, s: &str) -> SocketAddrV4 {
    let addr = s
        .parse::<SocketAddrV4>()
        .ok()
        .or_else(|| s.parse::<Ipv4Addr>().ok().map(|a| SocketAddrV4::new(a, 0)))
        .unwrap_or_else(|| {
            usage_error(
                TOOL,
                format_args!("{flag}: {s:?} is not an IPv4 address (a.b.c.d or a.b.c.d:port)"),
            )
        });
    let ip = *addr.ip();
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        usage_error(
            TOOL,
            format_args!("{flag}: {ip} cannot be a source address: give a local unicast address"),
        );
    }
    addr
}

/// A failure after the arguments were parsed, with its exit status.
struct Failure {
    status: i32,
    msg: String,
}

impl Failure {
    fn usage(msg: String) -> Failure {
        Failure {
            status: common::EXIT_USAGE,
            msg,
        }
    }

    fn runtime(what: &str, e: io::Error) -> Failure {
        Failure {
            status: common::EXIT_FAILURE,
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

/// The sending socket: its source address is on the chosen interface (or
/// the --bind address), and IP_MULTICAST_IF is the interface, so nothing is
/// left to the routing table.
fn open_socket(o: &Options) -> Result<PacketConn, Failure> {
    let name = &o.iface_info.name;
    let conn = match o.bind {
        None => {
            let Some(own) = o.iface_info.addr else {
                return Err(Failure::usage(format!(
                    "interface {name} has no IPv4 address to send from: give --bind ADDR"
                )));
            };
            // Binds the interface's own address and sets IP_MULTICAST_IF.
            let conn = PacketConn::multicast_sender(&o.iface)
                .map_err(|e| Failure::runtime(&format!("opening a sender on {name}"), e))?;
            let local = conn
                .local_addr()
                .map_err(|e| Failure::runtime("reading the bound address", e))?;
            if *local.ip() != own {
                return Err(Failure::runtime(
                    "checking the source address",
                    io::Error::other(format!("bound to {local}, not to {name}'s address {own}")),
                ));
            }
            conn
        }
        Some(addr) => {
            let conn = PacketConn::bind_udp(addr).map_err(|e| {
                if ipv4_reactor::Error::raw_os_error(&e) == Some(libc::EADDRNOTAVAIL) {
                    Failure::usage(format!("--bind {}: not an address of this host", addr.ip()))
                } else if common::is_argument_error(&e) {
                    Failure::usage(format!("--bind {addr}: {e}"))
                } else {
                    Failure::runtime(&format!("binding {addr}"), e)
                }
            })?;
            conn.set_multicast_interface(&o.iface)
                .map_err(|e| Failure::runtime(&format!("setting IP_MULTICAST_IF to {name}"), e))?;
            conn
        }
    };
    conn.set_multicast_ttl(o.ttl)
        .map_err(|e| Failure::runtime("setting IP_MULTICAST_TTL", e))?;
    conn.set_multicast_loop(o.multicast_loop)
        .map_err(|e| Failure::runtime("setting IP_MULTICAST_LOOP", e))?;
    if let Some(tos) = o.tos {
        conn.set_tos(tos)
            .map_err(|e| Failure::runtime("setting IP_TOS", e))?;
    }
    Ok(conn)
}

fn run(o: &Options) -> Result<(), Failure> {
    let conn = open_socket(o)?;
    let local = conn
        .local_addr()
        .map_err(|e| Failure::runtime("reading the bound address", e))?;
    let tos = conn
        .tos()
        .map_err(|e| Failure::runtime("reading IP_TOS", e))?;
    diag(
        TOOL,
        format_args!(
            "sending {} packets of {} bytes to {} from {local} via {}, ttl {}, tos {tos:#04x}, loop {}, batch {}, rate {}",
            o.count,
            o.size,
            o.dst,
            common::iface_label(&o.iface_info),
            o.ttl,
            if o.multicast_loop { "on" } else { "off" },
            o.batch,
            if o.rate > 0.0 { format!("{} pps", o.rate) } else { "max".to_string() },
        ),
    );

    let (sent, elapsed) = send_feed(o, &conn)?;

    let secs = elapsed.as_secs_f64();
    let pps = if secs > 0.0 { sent as f64 / secs } else { 0.0 };
    let text = if o.json {
        let mut s = String::new();
        Json::object(&mut s)
            .u64("sent", sent)
            .f64("elapsed_s", secs, 6)
            .f64("pps", pps, 1)
            .end();
        s.push('\n');
        s
    } else {
        format!(
            "sent {sent} packets to {} via {} in {} s: {pps:.1} pps\n",
            o.dst,
            o.iface_info.name,
            common::secs(elapsed)
        )
    };
    common::out(TOOL, text.as_bytes());
    Ok(())
}

/// Sends the feed; returns the packets sent and the time it took.
///
/// Pacing: packet `i` is due at `start + i / rate`. Each round sends every
/// packet already due (at most a batch), then sleeps until the next one is
/// due, so that low rates sleep instead of spinning and high rates send in
/// batches sized by how late the thread woke up.
fn send_feed(o: &Options, conn: &PacketConn) -> Result<(u64, Duration), Failure> {
    let mut batch =
        SendBatch::new(o.batch).map_err(|e| Failure::runtime("making the send batch", e))?;
    let mut payloads = vec![0u8; o.batch * o.size];
    let mut sent = 0u64;
    let start = Instant::now();
    while sent < o.count {
        let mut n = (o.count - sent).min(o.batch as u64);
        if o.rate > 0.0 {
            let due = (start.elapsed().as_secs_f64() * o.rate).floor() as u64 + 1;
            if due <= sent {
                let next =
                    Duration::try_from_secs_f64(sent as f64 / o.rate).unwrap_or(Duration::MAX);
                let wake = start.checked_add(next);
                let wait = wake.map_or(Duration::from_secs(1), |w| {
                    w.saturating_duration_since(Instant::now())
                });
                thread::sleep(wait.min(Duration::from_secs(1)));
                continue;
            }
            n = n.min(due - sent);
        }
        let n = n as usize;
        for (i, payload) in payloads.chunks_exact_mut(o.size).take(n).enumerate() {
            payload[..8].copy_from_slice(&(sent + i as u64).to_be_bytes());
        }
        let msgs: Vec<Message<'_>> = payloads
            .chunks_exact(o.size)
            .take(n)
            .map(|p| Message::new(p, o.dst))
            .collect();
        send_all(&mut batch, conn, &msgs).map_err(|e| {
            Failure::runtime(&format!("sending to {} (after {sent} packets)", o.dst), e)
        })?;
        sent += n as u64;
    }
    Ok((sent, start.elapsed()))
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
