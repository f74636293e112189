//! The receive paths compared by `examples/drain_compare.rs` and
//! `benches/drain.rs`: each drains a queue of packets filled beforehand.
//! Shared by both through `#[path]`.

#![allow(dead_code)]

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

#[path = "libc_drain.rs"]
mod libc_drain;

use ipv4_reactor::feed::{Arbiter, Delivery, SeqFormat};
use ipv4_reactor::reactor::{ChannelSink, Context, FeedHandler, Overflow, PacketReceiver, Reactor};
use ipv4_reactor::{ControlFlags, Message, Packet, PacketConn, RecvBatch, SendBatch};
use libc_drain::LibcDrain;

pub const PAYLOAD: usize = 64;

#[derive(Clone, Copy, PartialEq)]
pub enum Side {
    LibcCmsg,
    BatchCmsg,
    ReactorCmsg,
    ReactorChannelCmsg,
    /// The channel sink with its consumer on a thread of its own (CPU 0,
    /// the reactor's thread being pinned to another): the rate at which
    /// the consumer receives the packets, as a service runs it.
    ReactorChannelThread,
    /// [`Side::ReactorChannelCmsg`] with the consumer taking whole
    /// hand-overs (`recv_batch`) instead of packet by packet.
    ReactorChannelBatch,
    /// [`Side::ReactorChannelThread`] with `recv_batch`.
    ReactorChannelBatchThread,
    Batch1Cmsg,
    StdRecvFrom,
    LibcQuiet,
    ReactorQuiet,
    /// A bare reactor callback (counts packets) on one socket: the
    /// baseline of the feed sides.
    ReactorBare,
    /// The same with twice the packets queued.
    ReactorBare2x,
    /// Two sockets registered as one feed (`register_feed`, an `Arbiter`
    /// of two lines, a handler that counts deliveries): the N packets
    /// split in halves, the first on line A, the second on line B, each
    /// sequence number once overall.
    ReactorAb,
    /// Two lines with full copies: every sequence number on both lines
    /// (2N packets), each delivered once.
    ReactorAbCopies,
    /// [`Side::ReactorQuiet`] on the io_uring backend (feature `io-uring`).
    ReactorUringQuiet,
    /// [`Side::ReactorBare`] on the io_uring backend (feature `io-uring`).
    ReactorUringBare,
}

impl Side {
    pub const ALL: &'static [Side] = &[
        Side::LibcCmsg,
        Side::BatchCmsg,
        Side::ReactorCmsg,
        Side::ReactorChannelCmsg,
        Side::ReactorChannelThread,
        Side::ReactorChannelBatch,
        Side::ReactorChannelBatchThread,
        Side::Batch1Cmsg,
        Side::StdRecvFrom,
        Side::LibcQuiet,
        Side::ReactorQuiet,
        Side::ReactorBare,
        Side::ReactorBare2x,
        Side::ReactorAb,
        Side::ReactorAbCopies,
        #[cfg(feature = "io-uring")]
        Side::ReactorUringQuiet,
        #[cfg(feature = "io-uring")]
        Side::ReactorUringBare,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Side::LibcCmsg => "libc recvmmsg(64), PKTINFO+TTL decoded",
            Side::BatchCmsg => "RecvBatch(64), PKTINFO+TTL decoded",
            Side::ReactorCmsg => "Reactor callback, PKTINFO+TTL decoded",
            Side::ReactorChannelCmsg => "Reactor channel sink, PKTINFO+TTL",
            Side::ReactorChannelThread => "Reactor channel sink, consumer thread",
            Side::ReactorChannelBatch => "Reactor channel sink, recv_batch",
            Side::ReactorChannelBatchThread => "Reactor channel, recv_batch, thread",
            Side::Batch1Cmsg => "RecvBatch(1), PKTINFO+TTL decoded",
            Side::StdRecvFrom => "std UdpSocket::recv_from, no cmsg",
            Side::LibcQuiet => "libc recvmmsg(64), drops only + seq gaps",
            Side::ReactorQuiet => "Reactor callback, drops only + seq gaps",
            Side::ReactorBare => "Reactor callback, drops only, bare (N)",
            Side::ReactorBare2x => "Reactor callback, drops only, bare (2N)",
            Side::ReactorAb => "Reactor feed, 2 lines, N/2 each (N)",
            Side::ReactorAbCopies => "Reactor feed, 2 lines, full copies (2N)",
            Side::ReactorUringQuiet => "Reactor io_uring, drops only + seq gaps",
            Side::ReactorUringBare => "Reactor io_uring, drops only, bare (N)",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Side::LibcCmsg => "libc_cmsg",
            Side::BatchCmsg => "batch_cmsg",
            Side::ReactorCmsg => "reactor_cmsg",
            Side::ReactorChannelCmsg => "reactor_channel_cmsg",
            Side::ReactorChannelThread => "reactor_channel_thread",
            Side::ReactorChannelBatch => "reactor_channel_batch",
            Side::ReactorChannelBatchThread => "reactor_channel_batch_thread",
            Side::Batch1Cmsg => "batch1_cmsg",
            Side::StdRecvFrom => "std_recv_from",
            Side::LibcQuiet => "libc_quiet",
            Side::ReactorQuiet => "reactor_quiet",
            Side::ReactorBare => "reactor_bare",
            Side::ReactorBare2x => "reactor_bare_2x",
            Side::ReactorAb => "reactor_ab",
            Side::ReactorAbCopies => "reactor_ab_copies",
            Side::ReactorUringQuiet => "reactor_uring_quiet",
            Side::ReactorUringBare => "reactor_uring_bare",
        }
    }

    pub fn baseline(self) -> Side {
        match self {
            Side::LibcQuiet
            | Side::ReactorQuiet
            | Side::ReactorUringQuiet
            | Side::ReactorUringBare => Side::LibcQuiet,
            Side::ReactorBare | Side::ReactorAb => Side::ReactorBare,
            Side::ReactorBare2x | Side::ReactorAbCopies => Side::ReactorBare2x,
            _ => Side::LibcCmsg,
        }
    }

    pub fn flags(self) -> ControlFlags {
        match self {
            Side::StdRecvFrom => ControlFlags::NONE,
            Side::LibcQuiet
            | Side::ReactorQuiet
            | Side::ReactorBare
            | Side::ReactorBare2x
            | Side::ReactorAb
            | Side::ReactorAbCopies
            | Side::ReactorUringQuiet
            | Side::ReactorUringBare => ControlFlags::DROPS,
            _ => ControlFlags::DST | ControlFlags::INTERFACE | ControlFlags::TTL,
        }
    }
}

/// What the channel sides' consumers do with each packet: read its
/// length and the control data the socket asked for.
fn consume(len: usize, cm: &ipv4_reactor::ControlMessage) -> u64 {
    len as u64
        + u64::from(cm.ttl.unwrap_or(0))
        + u64::from(u32::from(cm.dst.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)))
        + u64::from(cm.ifindex.unwrap_or(0))
}

/// The channel consumer's work on whatever is queued now: packet by
/// packet (`try_recv`) or hand-over by hand-over (`try_recv_batch`);
/// (packets, consumed sum).
fn consume_queued(packets: &PacketReceiver, by_batch: bool) -> (usize, u64) {
    let (mut got, mut sum) = (0, 0);
    if by_batch {
        while let Ok(batch) = packets.try_recv_batch() {
            for p in &batch {
                got += 1;
                sum += consume(p.len(), p.cm());
            }
        }
    } else {
        while let Ok(p) = packets.try_recv() {
            got += 1;
            sum += consume(p.len(), p.cm());
        }
    }
    (got, sum)
}

/// Registers `rx` with a blocking channel sink of 4096 packets.
fn register_channel(
    reactor: &mut Reactor,
    rx: PacketConn,
) -> std::io::Result<(ipv4_reactor::reactor::Key, PacketReceiver)> {
    let (channel, packets) = ChannelSink::bounded(4096, 2048, Overflow::Block)?;
    Ok((reactor.register(rx, channel)?, packets))
}

/// The channel's whole cost, without a second thread: the consumer
/// drains the channel after each turn.
fn drain_channel(
    reactor: &mut Reactor,
    rx: PacketConn,
    n: usize,
    by_batch: bool,
) -> std::io::Result<(usize, Duration)> {
    let (key, packets) = register_channel(reactor, rx)?;
    let (mut got, mut sum) = (0, 0);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(10);
    while got < n && Instant::now() < deadline {
        reactor.turn(Some(Duration::ZERO))?;
        let (g, s) = consume_queued(&packets, by_batch);
        got += g;
        sum += s;
    }
    let elapsed = start.elapsed();
    reactor.deregister(key)?;
    std::hint::black_box(sum);
    Ok((got, elapsed))
}

/// The consumer on CPU 0 does the same per-packet work as the
/// same-thread consumer of [`drain_channel`]; the time is from the first
/// turn to its last packet.
fn drain_channel_thread(
    reactor: &mut Reactor,
    rx: PacketConn,
    n: usize,
    by_batch: bool,
) -> std::io::Result<(usize, Duration)> {
    let (key, packets) = register_channel(reactor, rx)?;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer_done = std::sync::Arc::clone(&done);
    let consumer = std::thread::spawn(move || {
        let _ = ipv4_reactor::pin_current_thread(0);
        let (mut got, mut sum) = (0usize, 0u64);
        let mut last = Instant::now();
        while got < n {
            // Ends when the reactor deregisters the socket (its sink
            // goes) if fewer arrive.
            if by_batch {
                let Ok(batch) = packets.recv_batch() else {
                    break;
                };
                for p in &batch {
                    got += 1;
                    sum += consume(p.len(), p.cm());
                }
            } else {
                let Ok(p) = packets.recv() else {
                    break;
                };
                got += 1;
                sum += consume(p.len(), p.cm());
            }
            last = Instant::now();
        }
        consumer_done.store(true, std::sync::atomic::Ordering::Release);
        (got, sum, last)
    });
    let start = Instant::now();
    let deadline = start + Duration::from_secs(10);
    while !done.load(std::sync::atomic::Ordering::Acquire) && Instant::now() < deadline {
        reactor.turn(Some(Duration::ZERO))?;
    }
    reactor.deregister(key)?;
    let (got, sum, last) = consumer.join().expect("consumer thread");
    std::hint::black_box(sum);
    Ok((got, last.saturating_duration_since(start)))
}

/// Queues `n` sequence-numbered packets on the receiver (the kernel does the
/// receive work in the sender's context on lo, so they are queued on return).
pub fn fill(tx: &PacketConn, dst: SocketAddrV4, n: usize) -> std::io::Result<()> {
    fill_range(tx, dst, 0..n)
}

/// Queues packets with sequence numbers `seqs` (u64 BE at offset 0).
pub fn fill_range(
    tx: &PacketConn,
    dst: SocketAddrV4,
    seqs: std::ops::Range<usize>,
) -> std::io::Result<()> {
    let n = seqs.len();
    let payloads: Vec<[u8; PAYLOAD]> = seqs
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

/// The receivers of one round of `side`, filled: about `wanted` packets
/// (twice that for the 2N sides), on one socket or split over a feed's two
/// lines. Returns the sockets and how many packets are queued in all.
pub fn prepare(
    side: Side,
    tx: &PacketConn,
    wanted: usize,
) -> std::io::Result<(Vec<PacketConn>, usize)> {
    match side {
        Side::ReactorAb => {
            let (a, fits_a) = receiver(side, wanted / 2)?;
            let (b, fits_b) = receiver(side, wanted - wanted / 2)?;
            let half = fits_a.min(fits_b);
            fill_range(tx, a.local_addr()?, 0..half)?;
            fill_range(tx, b.local_addr()?, half..2 * half)?;
            Ok((vec![a, b], 2 * half))
        }
        Side::ReactorAbCopies => {
            let (a, fits_a) = receiver(side, wanted)?;
            let (b, fits_b) = receiver(side, wanted)?;
            let n = fits_a.min(fits_b);
            fill(tx, a.local_addr()?, n)?;
            fill(tx, b.local_addr()?, n)?;
            Ok((vec![a, b], 2 * n))
        }
        Side::ReactorBare2x => {
            let (rx, fits) = receiver(side, 2 * wanted)?;
            fill(tx, rx.local_addr()?, fits)?;
            Ok((vec![rx], fits))
        }
        _ => {
            let (rx, fits) = receiver(side, wanted)?;
            fill(tx, rx.local_addr()?, fits)?;
            Ok((vec![rx], fits))
        }
    }
}

/// The feed sides' handler: counts the deliveries.
struct CountDeliveries(std::sync::Arc<std::sync::atomic::AtomicUsize>, usize);

impl FeedHandler for CountDeliveries {
    #[inline]
    fn on_data(&mut self, _line: usize, _p: &Packet<'_>, d: Delivery, _ctx: &mut Context<'_>) {
        self.1 += d.count as usize;
        self.0.store(self.1, std::sync::atomic::Ordering::Relaxed);
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
            Side::ReactorCmsg
            | Side::ReactorQuiet
            | Side::ReactorBare
            | Side::ReactorBare2x
            | Side::ReactorAb
            | Side::ReactorAbCopies => {
                d.reactor = Some(
                    Reactor::builder()
                        .batch_slots(64)
                        .budget(usize::MAX)
                        .build()?,
                )
            }
            // At most a channel's worth per turn: the consumer runs between
            // turns on the same thread.
            Side::ReactorChannelCmsg | Side::ReactorChannelBatch => {
                d.reactor = Some(Reactor::builder().batch_slots(64).budget(1024).build()?)
            }
            Side::ReactorChannelThread | Side::ReactorChannelBatchThread => {
                d.reactor = Some(Reactor::builder().batch_slots(64).build()?)
            }
            // Buffers for a catch-up: the kernel fills 1024 ahead of the
            // handler before the receive has to be armed again.
            Side::ReactorUringQuiet | Side::ReactorUringBare => {
                d.reactor = Some(
                    Reactor::builder()
                        .backend(ipv4_reactor::reactor::Backend::IoUring)
                        .uring_buffers(1024)
                        .budget(usize::MAX)
                        .build()?,
                )
            }
            Side::StdRecvFrom => {}
        }
        Ok(d)
    }

    /// Drains the `n` packets queued on `rxs` (from [`prepare`]): (packets
    /// read, time from the first read to the last).
    pub fn drain_lines(
        &mut self,
        mut rxs: Vec<PacketConn>,
        n: usize,
    ) -> std::io::Result<(usize, Duration)> {
        if !matches!(self.side, Side::ReactorAb | Side::ReactorAbCopies) {
            let rx = rxs.pop().expect("one receiver");
            return self.drain(rx, n);
        }
        let reactor = self.reactor.as_mut().expect("reactor side");
        let delivered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let arbiter = Arbiter::new(SeqFormat::default(), rxs.len())?;
        let key = reactor.register_feed(
            rxs,
            arbiter,
            CountDeliveries(std::sync::Arc::clone(&delivered), 0),
        )?;
        let keys = reactor.feed_lines(key).expect("the feed's lines").to_vec();
        let read = |r: &Reactor| -> usize {
            keys.iter()
                .filter_map(|&k| r.socket_counters(k))
                .map(|c| c.recv.packets as usize)
                .sum()
        };
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        while read(reactor) < n && Instant::now() < deadline {
            reactor.turn(Some(Duration::ZERO))?;
        }
        let elapsed = start.elapsed();
        let got = read(reactor);
        let parts = reactor.deregister_feed(key)?;
        let c = parts.arbiter.counters();
        let want = if self.side == Side::ReactorAbCopies {
            n / 2
        } else {
            n
        };
        if delivered.load(std::sync::atomic::Ordering::Relaxed) != want || c.lost != 0 {
            eprintln!(
                "{}: delivered {} of {want}, lost {}",
                self.side.name(),
                delivered.load(std::sync::atomic::Ordering::Relaxed),
                c.lost
            );
        }
        Ok((got, elapsed))
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
            Side::ReactorChannelCmsg
            | Side::ReactorChannelBatch
            | Side::ReactorChannelThread
            | Side::ReactorChannelBatchThread => {
                let by_batch = matches!(
                    side,
                    Side::ReactorChannelBatch | Side::ReactorChannelBatchThread
                );
                let reactor = self.reactor.as_mut().expect("reactor side");
                return if matches!(
                    side,
                    Side::ReactorChannelThread | Side::ReactorChannelBatchThread
                ) {
                    drain_channel_thread(reactor, rx, n, by_batch)
                } else {
                    drain_channel(reactor, rx, n, by_batch)
                };
            }
            Side::ReactorAb | Side::ReactorAbCopies => {
                return self.drain_lines(vec![rx], n);
            }
            Side::ReactorCmsg
            | Side::ReactorQuiet
            | Side::ReactorBare
            | Side::ReactorBare2x
            | Side::ReactorUringQuiet
            | Side::ReactorUringBare => {
                let reactor = self.reactor.as_mut().expect("reactor side");
                let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let c2 = std::sync::Arc::clone(&counter);
                let quiet = matches!(side, Side::ReactorQuiet | Side::ReactorUringQuiet);
                let bare = matches!(
                    side,
                    Side::ReactorBare | Side::ReactorBare2x | Side::ReactorUringBare
                );
                // io_uring receives from the moment the socket is
                // registered (the kernel reads while the receive is armed):
                // its clock starts before.
                let uring = matches!(side, Side::ReactorUringQuiet | Side::ReactorUringBare);
                let early = uring.then(Instant::now);
                let mut gaps = Gaps::default();
                let mut local = 0usize;
                let key = reactor.register(rx, move |p: &Packet<'_>, _ctx: &mut Context<'_>| {
                    if bare {
                        // Counting only.
                    } else if quiet {
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
                start = early.unwrap_or_else(Instant::now);
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
