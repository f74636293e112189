// cargo run --release --example libc_dump -- GROUP:PORT [--stall-ms MS] [--rcvbuf BYTES] [--idle-exit-ms MS]
//
// The baseline that `mcast-dump --quiet` is measured against: the same job
// (join GROUP on lo, stall, then drain, counting packets, sequence gaps and
// the kernel drop counter) done by a plain libc recvmmsg(64) loop, written
// the way a C programmer would (`benches/support/libc_drain.rs`), woken
// by epoll (through mio). Its sequence accounting is the library's
// `SeqTracker` (u64be at offset 0), the same per-packet work as mcast-dump
// --quiet's, so that the comparison is of the receive paths only. Prints a `listening` line on stderr once joined
// and one JSON summary line like mcast-dump's. See
// `benches/quiet_compare.sh` for the side-by-side run.

use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use clap::Parser;
#[path = "../benches/support/libc_drain.rs"]
mod libc_drain;

use ipv4_reactor::feed::{SeqFormat, SeqTracker};
use ipv4_reactor::{ControlFlags, Interface, PacketConn};
use libc_drain::LibcDrain;
use serde::Serialize;

/// The same job as `mcast-dump --quiet` in a plain libc recvmmsg loop.
#[derive(Parser, Debug)]
#[command(name = "libc_dump")]
struct Args {
    /// Group and port to join on lo
    #[arg(value_name = "GROUP:PORT")]
    group: SocketAddrV4,
    /// Sleep MS after joining, before the first read
    #[arg(long = "stall-ms", value_name = "MS", default_value_t = 0)]
    stall_ms: u64,
    /// Receive buffer (0: the default)
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    rcvbuf: usize,
    /// Exit when no packet was read for MS
    #[arg(long = "idle-exit-ms", value_name = "MS", default_value_t = 1000)]
    idle_exit_ms: u64,
}

/// `{"summary":{...}}`, with mcast-dump's key names.
#[derive(Serialize)]
struct SummaryJson {
    summary: Summary,
}

#[derive(Serialize)]
struct Summary {
    packets: u64,
    bytes: u64,
    gaps: u64,
    lost: u64,
    kernel_drops: u32,
    elapsed_s: f64,
    pps: f64,
}

fn main() {
    let a = Args::parse();
    if let Err(e) = run(a.group, a.stall_ms, a.rcvbuf, a.idle_exit_ms) {
        eprintln!("libc_dump: {e}");
        std::process::exit(1);
    }
}

fn run(group: SocketAddrV4, stall: u64, rcvbuf: usize, idle: u64) -> std::io::Result<()> {
    let mut builder =
        PacketConn::multicast_receiver(group, Interface::loopback()).control(ControlFlags::DROPS);
    if rcvbuf > 0 {
        builder = builder.recv_buffer(rcvbuf);
    }
    let mut conn = builder.build()?;
    eprintln!(
        "listening {}:{} iface=lo rcvbuf={}",
        group.ip(),
        conn.local_addr()?.port(),
        conn.recv_buffer_size()?
    );
    std::thread::sleep(Duration::from_millis(stall));

    let mut poll = mio::Poll::new()?;
    let mut events = mio::Events::with_capacity(8);
    poll.registry()
        .register(&mut conn, mio::Token(0), mio::Interest::READABLE)?;
    let mut drain = LibcDrain::new(64, 2048, ControlFlags::DROPS.control_len(), false)?;
    let fd = conn.as_raw_fd();
    let (mut packets, mut bytes, mut drops) = (0u64, 0u64, 0u32);
    let mut tracker = SeqTracker::new(SeqFormat::default());
    // Timed as mcast-dump times itself: `first` when the first packet
    // reaches the per-packet code (right after the receive call that read
    // it), `last` once the packets of the last receive call that read any
    // are done.
    let (mut first, mut last) = (None, Instant::now());
    loop {
        match drain.recv(fd, |p, m| {
            if first.is_none() {
                first = Some(Instant::now());
            }
            tracker.on_packet(p, |_| {});
            bytes += p.len() as u64;
            drops = drops.max(m.drops);
        }) {
            Ok(n) => {
                if n > 0 {
                    last = Instant::now();
                }
                packets += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let wait = match first {
                    None => Duration::from_millis(idle.max(1000)),
                    Some(_) => Duration::from_millis(idle).saturating_sub(last.elapsed()),
                };
                if wait.is_zero() {
                    break;
                }
                poll.poll(&mut events, Some(wait))?;
                if events.is_empty()
                    && first.is_some()
                    && last.elapsed() >= Duration::from_millis(idle)
                {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    tracker.finish(|_| {});
    let seq = tracker.counters();
    let elapsed = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let pps = if elapsed > 0.0 {
        packets as f64 / elapsed
    } else {
        0.0
    };
    let summary = SummaryJson {
        summary: Summary {
            packets,
            bytes,
            gaps: seq.gaps,
            lost: seq.lost,
            kernel_drops: drops,
            elapsed_s: (elapsed * 1e6).round() / 1e6,
            pps: (pps * 10.0).round() / 10.0,
        },
    };
    println!(
        "{}",
        serde_json::to_string(&summary).expect("a serializable summary")
    );
    Ok(())
}
