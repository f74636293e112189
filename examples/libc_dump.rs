// cargo run --release --example libc_dump -- GROUP:PORT [--stall-ms MS] [--rcvbuf BYTES] [--idle-exit-ms MS]
//
// The baseline that `mcast_dump --quiet` is measured against: the same job
// (join GROUP on lo, stall, then drain, counting packets, sequence gaps and
// the kernel drop counter) done by a plain libc recvmmsg(64) loop, written
// the way a C programmer would (`ipv4_reactor::baseline::LibcDrain`), woken
// by epoll (through mio). Prints a `listening` line on stderr once joined
// and one JSON summary line like mcast_dump's. See
// `benches/quiet_compare.sh` for the side-by-side run.

use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ipv4_reactor::baseline::LibcDrain;
use ipv4_reactor::{ControlFlags, Interface, PacketConn};

fn main() {
    let mut args = std::env::args().skip(1);
    let group: SocketAddrV4 = match args.next().map(|g| g.parse()) {
        Some(Ok(g)) => g,
        _ => fail("the first argument must be GROUP:PORT"),
    };
    let (mut stall, mut rcvbuf, mut idle) = (0u64, 0usize, 1000u64);
    while let Some(flag) = args.next() {
        let value: u64 = args
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| fail(&format!("{flag} needs a whole number")));
        match flag.as_str() {
            "--stall-ms" => stall = value,
            "--rcvbuf" => rcvbuf = value as usize,
            "--idle-exit-ms" => idle = value,
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    if let Err(e) = run(group, stall, rcvbuf, idle) {
        eprintln!("libc_dump: {e}");
        std::process::exit(1);
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("libc_dump: {msg}");
    std::process::exit(2)
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
    let (mut packets, mut bytes, mut lost, mut drops) = (0u64, 0u64, 0u64, 0u32);
    let mut next: Option<u64> = None;
    let (mut first, mut last) = (None, Instant::now());
    loop {
        match drain.recv(fd, |p, m| {
            if p.len() >= 8 {
                let seq = u64::from_be_bytes(p[..8].try_into().unwrap());
                if let Some(n) = next {
                    if seq > n {
                        lost += seq - n;
                    }
                }
                next = Some(next.map_or(seq + 1, |n| n.max(seq + 1)));
            }
            bytes += p.len() as u64;
            drops = drops.max(m.drops);
        }) {
            Ok(n) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
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
    let elapsed = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let pps = if elapsed > 0.0 {
        packets as f64 / elapsed
    } else {
        0.0
    };
    println!(
        "{{\"summary\":{{\"packets\":{packets},\"bytes\":{bytes},\"lost\":{lost},\"kernel_drops\":{drops},\"elapsed_s\":{elapsed:.6},\"pps\":{pps:.1}}}}}"
    );
    Ok(())
}
