//! The receive paths compared by `examples/drain_compare.rs` and
//! `benches/drain.rs`: each drains a queue of packets filled beforehand.
//! Shared by both through `#[path]`.

#![allow(dead_code)]

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

#[path = "libc_drain.rs"]
mod libc_drain;

use ipv4_reactor::reactor::{ChannelSink, Context, Overflow, Reactor};
use ipv4_reactor::{ControlFlags, Message, Packet, PacketConn, RecvBatch, SendBatch};
use libc_drain::LibcDrain;

pub const PAYLOAD: usize = 64;

#[derive(Clone, Copy, PartialEq)]
pub enum Side {
    LibcCmsg,
    BatchCmsg,
    ReactorCmsg,
    ReactorChannelCmsg,
    Batch1Cmsg,
    StdRecvFrom,
    LibcQuiet,
    ReactorQuiet,
}

impl Side {
    pub const ALL: [Side; 8] = [
        Side::LibcCmsg,
        Side::BatchCmsg,
        Side::ReactorCmsg,
        Side::ReactorChannelCmsg,
        Side::Batch1Cmsg,
        Side::StdRecvFrom,
        Side::LibcQuiet,
        Side::ReactorQuiet,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Side::LibcCmsg => "libc recvmmsg(64), PKTINFO+TTL decoded",
            Side::BatchCmsg => "RecvBatch(64), PKTINFO+TTL decoded",
            Side::ReactorCmsg => "Reactor callback, PKTINFO+TTL decoded",
            Side::ReactorChannelCmsg => "Reactor channel sink, PKTINFO+TTL",
            Side::Batch1Cmsg => "RecvBatch(1), PKTINFO+TTL decoded",
            Side::StdRecvFrom => "std UdpSocket::recv_from, no cmsg",
            Side::LibcQuiet => "libc recvmmsg(64), drops only + seq gaps",
            Side::ReactorQuiet => "Reactor callback, drops only + seq gaps",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Side::LibcCmsg => "libc_cmsg",
            Side::BatchCmsg => "batch_cmsg",
            Side::ReactorCmsg => "reactor_cmsg",
            Side::ReactorChannelCmsg => "reactor_channel_cmsg",
            Side::Batch1Cmsg => "batch1_cmsg",
            Side::StdRecvFrom => "std_recv_from",
            Side::LibcQuiet => "libc_quiet",
            Side::ReactorQuiet => "reactor_quiet",
        }
    }

    pub fn baseline(self) -> Side {
        match self {
            Side::LibcQuiet | Side::ReactorQuiet => Side::LibcQuiet,
            _ => Side::LibcCmsg,
        }
    }

    pub fn flags(self) -> ControlFlags {
        match self {
            Side::StdRecvFrom => ControlFlags::NONE,
            Side::LibcQuiet | Side::ReactorQuiet => ControlFlags::DROPS,
            _ => ControlFlags::DST | ControlFlags::INTERFACE | ControlFlags::TTL,
        }
    }
}

/// Queues `n` sequence-numbered packets on the receiver (the kernel does the
/// receive work in the sender's context on lo, so they are queued on return).
pub fn fill(tx: &PacketConn, dst: SocketAddrV4, n: usize) -> std::io::Result<()> {
    let payloads: Vec<[u8; PAYLOAD]> = (0..n)
        .map(|i| {
            let mut p = [0u8; PAYLOAD];
            p[..8].copy_from_slice(&(i as u64).to_be_bytes());
            p
        })
        .collect();
    let msgs: Vec<Message<'_>> = payloads.iter().map(|p| Message::new(p, dst)).collect();
    let mut batch = SendBatch::new(64)?;
    let mut sent = 0;
    while sent < n {
        sent += batch.send(tx, &msgs[sent..])?;
    }
    std::thread::sleep(Duration::from_millis(20));
    Ok(())
}

/// Sequence-gap accounting, the per-packet work of a quiet feed receiver.
#[derive(Default)]
struct Gaps {
    next: u64,
    lost: u64,
    drops: u64,
}

impl Gaps {
    #[inline]
    fn on(&mut self, payload: &[u8], drops_before: u64) {
        if payload.len() >= 8 {
            let seq = u64::from_be_bytes(payload[..8].try_into().unwrap());
            if seq > self.next {
                self.lost += seq - self.next;
            }
            self.next = self.next.max(seq + 1);
        }
        self.drops += drops_before;
    }
}

/// The receive state of one side, built once and reused round after round,
/// as a long-running receiver would: slots, control buffers, the reactor.
pub struct Drainer {
    side: Side,
    libc: Option<LibcDrain>,
    batch: Option<RecvBatch>,
    reactor: Option<Reactor>,
}

impl Drainer {
    pub fn new(side: Side) -> std::io::Result<Drainer> {
        let flags = side.flags();
        let mut d = Drainer {
            side,
            libc: None,
            batch: None,
            reactor: None,
        };
        match side {
            Side::LibcCmsg | Side::LibcQuiet => {
                d.libc = Some(LibcDrain::new(64, 2048, flags.control_len(), false)?)
            }
            Side::BatchCmsg => d.batch = Some(RecvBatch::new(64, 2048, flags)?),
            Side::Batch1Cmsg => d.batch = Some(RecvBatch::new(1, 2048, flags)?),
            Side::ReactorCmsg | Side::ReactorQuiet => {
                d.reactor = Some(
                    Reactor::builder()
                        .batch_slots(64)
                        .budget(usize::MAX)
                        .build()?,
                )
            }
            // At most a channel's worth per turn: the consumer runs between
            // turns on the same thread.
            Side::ReactorChannelCmsg => {
                d.reactor = Some(Reactor::builder().batch_slots(64).budget(1024).build()?)
            }
            Side::StdRecvFrom => {}
        }
        Ok(d)
    }

    /// Drains `n` queued packets from `rx`: (packets read, time from the
    /// first read to the last).
    pub fn drain(&mut self, rx: PacketConn, n: usize) -> std::io::Result<(usize, Duration)> {
        let side = self.side;
        let fd = rx.as_raw_fd();
        let mut got = 0usize;
        let mut sink = 0u64;
        let start;
        match side {
            Side::LibcCmsg | Side::LibcQuiet => {
                let d = self.libc.as_mut().expect("libc side");
                let mut gaps = Gaps::default();
                let mut last_drops = 0u32;
                start = Instant::now();
                while got < n {
                    match d.recv(fd, |p, m| {
                        if side == Side::LibcQuiet {
                            gaps.on(p, u64::from(m.drops.wrapping_sub(last_drops)));
                            if m.drops != 0 {
                                last_drops = m.drops;
                            }
                        } else {
                            sink +=
                                p.len() as u64 + m.ttl as u64 + u64::from(m.dst) + m.ifindex as u64;
                        }
                    }) {
                        Ok(k) => got += k,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                sink += gaps.lost + gaps.drops;
            }
            Side::BatchCmsg | Side::Batch1Cmsg => {
                let batch = self.batch.as_mut().expect("batch side");
                start = Instant::now();
                while got < n {
                    match batch.recv(&rx) {
                        Ok(k) => {
                            got += k;
                            for p in batch.iter() {
                                sink += p.payload.len() as u64
                                    + u64::from(p.cm.ttl.unwrap_or(0))
                                    + u64::from(u32::from(
                                        p.cm.dst.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                                    ))
                                    + u64::from(p.cm.ifindex.unwrap_or(0));
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            Side::StdRecvFrom => {
                let sock: UdpSocket = rx.into();
                let mut buf = [0u8; 2048];
                start = Instant::now();
                while got < n {
                    match sock.recv_from(&mut buf) {
                        Ok((len, src)) => {
                            got += 1;
                            sink += len as u64 + u64::from(src.port());
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                let elapsed = start.elapsed();
                std::hint::black_box(sink);
                return Ok((got, elapsed));
            }
            Side::ReactorChannelCmsg => {
                // The channel's whole cost, without a second thread: the
                // consumer drains the channel after each turn.
                let reactor = self.reactor.as_mut().expect("reactor side");
                let (channel, packets) = ChannelSink::bounded(4096, 2048, Overflow::Block)?;
                let key = reactor.register(rx, channel)?;
                start = Instant::now();
                let deadline = start + Duration::from_secs(10);
                while got < n && Instant::now() < deadline {
                    reactor.turn(Some(Duration::ZERO))?;
                    while let Ok(p) = packets.try_recv() {
                        got += 1;
                        sink += p.len() as u64
                            + u64::from(p.cm.ttl.unwrap_or(0))
                            + u64::from(u32::from(
                                p.cm.dst.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                            ))
                            + u64::from(p.cm.ifindex.unwrap_or(0));
                    }
                }
                let elapsed = start.elapsed();
                reactor.deregister(key)?;
                std::hint::black_box(sink);
                return Ok((got, elapsed));
            }
            Side::ReactorCmsg | Side::ReactorQuiet => {
                let reactor = self.reactor.as_mut().expect("reactor side");
                let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let c2 = std::sync::Arc::clone(&counter);
                let quiet = side == Side::ReactorQuiet;
                let mut gaps = Gaps::default();
                let mut local = 0usize;
                let key = reactor.register(rx, move |p: &Packet<'_>, _ctx: &mut Context<'_>| {
                    if quiet {
                        gaps.on(p.payload, u64::from(p.drops_before));
                    } else {
                        std::hint::black_box(
                            p.payload.len() as u64
                                + u64::from(p.cm.ttl.unwrap_or(0))
                                + u64::from(u32::from(
                                    p.cm.dst.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                                ))
                                + u64::from(p.cm.ifindex.unwrap_or(0)),
                        );
                    }
                    local += 1;
                    c2.store(local, std::sync::atomic::Ordering::Relaxed);
                })?;
                start = Instant::now();
                let deadline = start + Duration::from_secs(10);
                while counter.load(std::sync::atomic::Ordering::Relaxed) < n
                    && Instant::now() < deadline
                {
                    reactor.turn(Some(Duration::ZERO))?;
                }
                got = counter.load(std::sync::atomic::Ordering::Relaxed);
                let elapsed = start.elapsed();
                reactor.deregister(key)?;
                return Ok((got, elapsed));
            }
        }
        let elapsed = start.elapsed();
        std::hint::black_box(sink);
        Ok((got, elapsed))
    }
}

/// A receiver for `side` on 127.0.0.1 with a receive buffer for `packets`
/// (forced past rmem_max when allowed); returns it and how many packets
/// fit.
pub fn receiver(side: Side, packets: usize) -> std::io::Result<(PacketConn, usize)> {
    let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
    let rcvbuf = rx
        .force_recv_buffer_size(256 << 20)
        .or_else(|_| rx.set_recv_buffer_size(256 << 20))?;
    rx.set_control_flags(side.flags())?;
    rx.set_nonblocking(true)?;
    // About 1 KiB of buffer per queued 64-byte packet on lo.
    Ok((rx, packets.min(rcvbuf / 1100)))
}

/// CPU time of the calling thread, in nanoseconds (the first field of
/// `/proc/thread-self/schedstat`). On a shared VM it leaves out the time
/// the thread waited for a CPU, which wall-clock rates do not.
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
