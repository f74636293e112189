// cargo run --example raw_multicast [-- --group 239.255.200.1]     (needs root: CAP_NET_RAW)
//
// Go's "multicast over raw IP" scenario, on the loopback interface only.
// A raw socket for the experimental protocol 253 joins a group on lo; a
// second raw socket writes one packet with its own IPv4 header (destination
// the group, TTL 1, TOS 0x28) with its multicast interface set to lo; the
// reader gets the whole packet back and prints the parsed header. Exits 0
// when the packet arrived with the header that was written.
//
// Nothing leaves the machine: the writer's IP_MULTICAST_IF is lo (checked
// before sending), the header's TTL is 1, and the group must be a multicast
// address.

use std::io;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use ipv4_reactor::header::{Header, Protocol};
use ipv4_reactor::{ControlFlags, Interface, RawConn};

/// An IP protocol number reserved for experiments (RFC 3692).
const PROTO: u8 = 253;
/// Multicast over raw IP with a header of our own, on lo only.
#[derive(Parser, Debug)]
#[command(name = "raw_multicast")]
struct Args {
    /// A multicast group (sent on lo only)
    #[arg(long, value_name = "A.B.C.D", default_value = "239.255.200.1", value_parser = group)]
    group: Ipv4Addr,
}

fn group(s: &str) -> Result<Ipv4Addr, String> {
    let group: Ipv4Addr = s
        .parse()
        .map_err(|_| format!("'{s}' is not an IPv4 address"))?;
    if !group.is_multicast() {
        return Err(format!(
            "{group} is not a multicast address (224.0.0.0/4); this example only \
             sends multicast on lo"
        ));
    }
    Ok(group)
}

fn main() -> ExitCode {
    let group = Args::parse().group;
    match run(group) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raw_multicast: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(group: Ipv4Addr) -> io::Result<()> {
    let lo = Interface::loopback();

    // The reader: whole packets of protocol 253, joined to the group on lo.
    let reader = RawConn::new(PROTO, Ipv4Addr::UNSPECIFIED)?;
    reader.join_group(&lo, group)?;
    reader.set_control_message(ControlFlags::DST | ControlFlags::INTERFACE, true)?;

    // The writer: its own headers, multicast through lo only.
    let writer = RawConn::new(PROTO, Ipv4Addr::LOCALHOST)?;
    writer.set_multicast_interface(&lo)?;
    writer.set_multicast_loop(true)?;
    let out = writer.multicast_interface()?;
    if out.as_ref().map(|i| i.index) != Some(lo.resolve()?.index) {
        return Err(io::Error::other(format!(
            "refusing to send: the writer's multicast interface is {out:?}, not lo"
        )));
    }
    println!("reader joined {group} on lo; writer's multicast interface: lo");

    // The first packets of a new flow right after a join can be lost.
    std::thread::sleep(Duration::from_millis(200));

    let payload = format!("raw multicast hello from pid {}", std::process::id()).into_bytes();
    let mut header = Header::new(Ipv4Addr::LOCALHOST, group, Protocol::from(PROTO));
    header.ttl = 1;
    header.tos = 0x28;
    header.id = (std::process::id() & 0xffff) as u16;
    let n = writer.write_to(&header, &payload, None)?;
    println!(
        "wrote {n} bytes: {}",
        header
            .clone()
            .with_payload_len(payload.len())
            .map_err(io::Error::from)?
    );

    reader
        .socket()
        .set_read_timeout(Some(Duration::from_millis(250)))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let (h, data, cm) = match reader.read_from(&mut buf) {
            Ok(p) => (p.header, p.payload, p.meta.cm),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        if h.dst != group || data != payload.as_slice() {
            continue; // someone else's protocol-253 packet
        }
        println!("read header: {h}");
        println!(
            "  dst={} (group) src={} ttl={} tos={:#04x} proto={} payload={} bytes \"{}\"",
            h.dst,
            h.src,
            h.ttl,
            h.tos,
            h.protocol,
            data.len(),
            String::from_utf8_lossy(data)
        );
        println!("  control message: {cm}");
        let ok = h.ttl == 1 && h.tos == 0x28 && h.protocol == Protocol::from(PROTO);
        if !ok {
            return Err(io::Error::other(format!(
                "the packet arrived with a different header than written: {h}"
            )));
        }
        println!("ok: the multicast packet came back over lo with the header as written");
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no packet to {group} came back within 3 s"),
    ))
}
