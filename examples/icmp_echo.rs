// cargo run --example icmp_echo [-- 127.0.0.1]     (needs root: CAP_NET_RAW)
//
// An ICMP echo ("ping") written and read with RawConn, whole IPv4 packets
// with their headers, as in Go's raw IP scenario. Only loopback targets are
// accepted: this example never sends off the machine.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use ipv4_reactor::header::{Header, Protocol};
use ipv4_reactor::icmp::{self, IcmpFilter, IcmpType};
use ipv4_reactor::{ControlFlags, RawConn};

/// An ICMP echo ("ping") with RawConn, to a loopback address only.
#[derive(Parser, Debug)]
#[command(name = "icmp_echo")]
struct Args {
    /// The address to ping, in 127.0.0.0/8
    #[arg(value_name = "127.X.Y.Z", default_value = "127.0.0.1", value_parser = loopback)]
    target: Ipv4Addr,
}

fn loopback(s: &str) -> Result<Ipv4Addr, String> {
    let a: Ipv4Addr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))?;
    if !a.is_loopback() {
        return Err(format!(
            "{a} is not a loopback address; this example only pings 127.0.0.0/8"
        ));
    }
    Ok(a)
}

fn main() -> ExitCode {
    let target = Args::parse().target;
    match ping(target) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("icmp_echo: {e}");
            ExitCode::from(1)
        }
    }
}

fn ping(target: Ipv4Addr) -> std::io::Result<()> {
    let raw = RawConn::new(Protocol::Icmp.into(), Ipv4Addr::UNSPECIFIED)?;
    // Let only echo replies through the kernel's ICMP filter.
    let mut filter = IcmpFilter::block_all();
    filter.accept(IcmpType::EchoReply)?;
    raw.set_icmp_filter(&filter)?;
    raw.set_control_message(ControlFlags::INTERFACE | ControlFlags::DST, true)?;
    raw.socket()
        .set_read_timeout(Some(Duration::from_secs(2)))?;

    let id = std::process::id() as u16;
    for seq in 1..=3u16 {
        let request = icmp::build_echo_request(id, seq, b"ipv4-reactor ping");
        let mut header = Header::new(Ipv4Addr::UNSPECIFIED, target, Protocol::Icmp);
        header.ttl = 64;
        header.tos = 0x10;
        let start = Instant::now();
        raw.write_to(&header, &request, None)?;
        let mut buf = [0u8; 1500];
        loop {
            let reply = raw.read_from(&mut buf)?;
            let (reply_header, payload, cm) = (reply.header, reply.payload, reply.meta.cm);
            let Ok(echo) = icmp::parse_echo(payload) else {
                continue;
            };
            if echo.ty != IcmpType::EchoReply || echo.id != id || echo.seq != seq {
                continue;
            }
            println!(
                "{} bytes from {}: icmp_seq={} ttl={} tos={:#04x} ifindex={} time={:.1} us",
                payload.len(),
                reply_header.src,
                echo.seq,
                reply_header.ttl,
                reply_header.tos,
                cm.ifindex.unwrap_or(0),
                start.elapsed().as_secs_f64() * 1e6
            );
            println!("  header: {reply_header}");
            break;
        }
    }
    Ok(())
}
