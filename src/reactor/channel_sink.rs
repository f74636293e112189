//! The channel sink: each packet copied once into a pooled buffer and sent
//! over a crossbeam channel to a consumer on another thread.

use std::fmt;
use std::io;
use std::net::SocketAddrV4;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};

use super::{Context, Handler, Key};
use crate::batch::Packet;
use crate::control::ControlMessage;
use crate::meta::RecvFlags;

/// What a [`ChannelSink`] does when its channel is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Drop the packet that does not fit and count it (the reactor never
    /// waits for the consumer).
    DropNewest,
    /// Wait for room: the reactor stops reading every socket until the
    /// consumer catches up, and the kernel drops instead (counted by
    /// [`ControlFlags::DROPS`](crate::ControlFlags::DROPS)).
    ///
    /// While the sink waits, the reactor runs no [`Handle`](super::Handle)
    /// calls: they wait too, and fail with `TimedOut` after their timeout
    /// ([`DEFAULT_CALL_TIMEOUT`](super::DEFAULT_CALL_TIMEOUT)). So a
    /// consumer should not call the handle from the thread that drains the
    /// channel while the channel may be full. [`Handle::stop`](super::Handle::stop)
    /// does end the wait (within a few milliseconds): the packet the sink
    /// held, and the rest of its batch, are dropped and counted in
    /// [`ChannelSink::dropped`].
    Block,
}

/// How long a blocking sink waits for room at a time before it looks again
/// whether the reactor was asked to stop.
const BLOCK_SLICE: Duration = Duration::from_millis(5);

/// The largest channel capacity [`ChannelSink::bounded`] accepts.
pub const MAX_SINK_CAPACITY: usize = 1 << 20;

/// The largest payload size [`ChannelSink::bounded`] accepts: the most an
/// IPv4 datagram can hold.
pub const MAX_SINK_PAYLOAD: usize = 65_535;

/// The most buffer bytes [`ChannelSink::bounded`] may set aside for its
/// pool (`(capacity + 256) * payload_size`): 4 GiB.
pub const MAX_SINK_POOL_BYTES: u64 = 1 << 32;

/// Buffers the pool holds beyond the channel's capacity, for packets the
/// consumer still holds.
const POOL_MARGIN: usize = 256;

/// A free list of payload buffers shared by a sink and its packets.
#[derive(Debug)]
struct BufferPool {
    free_tx: Sender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
    buf_size: usize,
    allocated: AtomicU64,
}

impl BufferPool {
    fn new(buffers: usize, buf_size: usize) -> BufferPool {
        // Room for every buffer the pool makes at first plus as many again
        // made under pressure; a buffer that finds the list full is freed.
        let (free_tx, free_rx) = crossbeam_channel::bounded(buffers * 2);
        for _ in 0..buffers {
            let _ = free_tx.try_send(Vec::with_capacity(buf_size));
        }
        BufferPool {
            free_tx,
            free_rx,
            buf_size,
            allocated: AtomicU64::new(buffers as u64),
        }
    }

    fn take(&self, need: usize) -> Vec<u8> {
        match self.free_rx.try_recv() {
            Ok(mut buf) => {
                buf.clear();
                buf
            }
            Err(_) => {
                self.allocated.fetch_add(1, Ordering::Relaxed);
                Vec::with_capacity(self.buf_size.max(need))
            }
        }
    }
}

/// A packet copied out of the reactor, for a consumer on another thread.
/// Its buffer goes back to the sink's pool when it is dropped, so steady
/// state does not allocate.
pub struct OwnedPacket {
    buf: Vec<u8>,
    /// The control messages the socket asked for.
    pub cm: ControlMessage,
    /// The source address, when [`ControlFlags::SRC`](crate::ControlFlags::SRC) was asked for.
    pub src: Option<SocketAddrV4>,
    /// Truncation of payload or control data.
    pub flags: RecvFlags,
    /// Kernel drops on the socket just before this packet.
    pub drops_before: u32,
    /// The socket it came from.
    pub key: Key,
    pool: Arc<BufferPool>,
}

impl OwnedPacket {
    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.buf
    }
}

impl Deref for OwnedPacket {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl fmt::Debug for OwnedPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPacket")
            .field("len", &self.buf.len())
            .field("cm", &self.cm)
            .field("src", &self.src)
            .field("flags", &self.flags)
            .field("key", &self.key)
            .finish()
    }
}

impl Drop for OwnedPacket {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let _ = self.pool.free_tx.try_send(buf);
    }
}

/// A [`Handler`] that copies each packet once into a pooled buffer and
/// sends it over a bounded crossbeam channel. Clone it to feed several
/// sockets (an A and a B line) into one channel.
///
/// ```
/// use ipv4_reactor::reactor::{ChannelSink, Overflow, Reactor};
/// use ipv4_reactor::PacketConn;
///
/// let mut reactor = Reactor::builder().build()?;
/// let (sink, packets) = ChannelSink::bounded(1024, 2048, Overflow::DropNewest)?;
/// let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// let dst = rx.local_addr()?;
/// reactor.register(rx, sink)?;
///
/// let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// tx.send_to(b"quote", None, dst)?;
/// while packets.is_empty() {
///     reactor.turn(Some(std::time::Duration::from_millis(100)))?;
/// }
/// assert_eq!(&*packets.recv().unwrap(), b"quote");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChannelSink {
    tx: Sender<OwnedPacket>,
    pool: Arc<BufferPool>,
    overflow: Overflow,
    dropped: Arc<AtomicU64>,
    disconnected: Arc<AtomicU64>,
    /// The wake-up of an async receiver ([`ChannelSink::bounded_async`]).
    /// Declared after `tx`, so that the last clone drops its sender (the
    /// channel disconnects) before it wakes the receiver to see that.
    #[cfg(feature = "tokio")]
    wake: Option<Arc<crate::tokio::channel::SinkWaker>>,
}

/// The consumer's end of a [`ChannelSink`].
pub type PacketReceiver = Receiver<OwnedPacket>;

impl ChannelSink {
    /// A sink whose channel holds `capacity` packets (0 is taken as 1), with
    /// a pool of buffers of `payload_size` bytes (one per channel slot plus
    /// 256 for packets the consumer still holds), allocated here.
    ///
    /// Errors (`InvalidInput`, nothing allocated): `capacity` above
    /// [`MAX_SINK_CAPACITY`], `payload_size` above [`MAX_SINK_PAYLOAD`], or
    /// a pool of more than [`MAX_SINK_POOL_BYTES`].
    pub fn bounded(
        capacity: usize,
        payload_size: usize,
        overflow: Overflow,
    ) -> io::Result<(ChannelSink, PacketReceiver)> {
        if capacity > MAX_SINK_CAPACITY {
            return Err(crate::error::invalid(format!(
                "ChannelSink capacity {capacity} is too large: at most {MAX_SINK_CAPACITY} packets"
            )));
        }
        if payload_size > MAX_SINK_PAYLOAD {
            return Err(crate::error::invalid(format!(
                "ChannelSink payload size {payload_size} is too large: an IPv4 datagram holds at most {MAX_SINK_PAYLOAD} bytes"
            )));
        }
        let capacity = capacity.max(1);
        let buffers = capacity + POOL_MARGIN;
        let pool_bytes = buffers as u64 * payload_size as u64;
        if pool_bytes > MAX_SINK_POOL_BYTES {
            return Err(crate::error::invalid(format!(
                "a ChannelSink of {capacity} packets of {payload_size} bytes would set aside {pool_bytes} bytes of buffers, more than {MAX_SINK_POOL_BYTES} bytes: use a smaller capacity or payload size"
            )));
        }
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let pool = Arc::new(BufferPool::new(buffers, payload_size));
        Ok((
            ChannelSink {
                tx,
                pool,
                overflow,
                dropped: Arc::new(AtomicU64::new(0)),
                disconnected: Arc::new(AtomicU64::new(0)),
                #[cfg(feature = "tokio")]
                wake: None,
            },
            rx,
        ))
    }

    /// [`ChannelSink::bounded`] for a tokio task: the receiving end is an
    /// [`AsyncPacketReceiver`](crate::tokio::AsyncPacketReceiver) whose
    /// `recv` waits without blocking its thread. The sink wakes it when the
    /// channel goes from empty to non-empty; per packet it costs one fence
    /// and one load more than a plain sink.
    ///
    /// With [`Overflow::Block`], a full channel makes the reactor thread
    /// wait for the task, as with a blocking receiver.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipv4_reactor::reactor::{ChannelSink, Overflow, Reactor};
    /// use ipv4_reactor::PacketConn;
    ///
    /// # #[::tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let (sink, mut packets) = ChannelSink::bounded_async(1024, 2048, Overflow::DropNewest)?;
    /// let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
    /// let dst = rx.local_addr()?;
    ///
    /// // The reactor on a thread of its own.
    /// let (handle, reactor) = Reactor::builder().spawn()?;
    /// handle.register_async(rx, sink).await?;
    ///
    /// let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
    /// tx.send_to(b"quote", None, dst)?;
    /// let p = tokio::time::timeout(Duration::from_secs(5), packets.recv()).await?.unwrap();
    /// assert_eq!(&*p, b"quote");
    ///
    /// handle.stop();
    /// reactor.join().unwrap()?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Errors: as [`ChannelSink::bounded`].
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn bounded_async(
        capacity: usize,
        payload_size: usize,
        overflow: Overflow,
    ) -> io::Result<(ChannelSink, crate::tokio::AsyncPacketReceiver)> {
        let (mut sink, rx) = ChannelSink::bounded(capacity, payload_size, overflow)?;
        let (sink_part, receiver_part) = crate::tokio::channel::sink_wake();
        sink.wake = Some(sink_part);
        Ok((
            sink,
            crate::tokio::AsyncPacketReceiver::new(rx, receiver_part),
        ))
    }

    /// A packet went into the channel: wakes an async receiver that waits.
    #[inline]
    fn sent(&self) {
        #[cfg(feature = "tokio")]
        if let Some(w) = &self.wake {
            w.0.packet_sent();
        }
    }

    /// Packets this sink dropped, across every socket feeding it: those
    /// that found the channel full ([`Overflow::DropNewest`]), those that
    /// found the receiver gone ([`ChannelSink::disconnected_drops`]), and,
    /// with [`Overflow::Block`], those it held when the reactor was asked to
    /// stop. Each is also counted in its socket's
    /// [`SocketCounters::overflow_drops`](super::SocketCounters).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Of [`ChannelSink::dropped`], the packets that found the receiver
    /// ([`PacketReceiver`]) dropped. The first such packet also deregisters
    /// and closes its socket (whatever the [`Overflow`]): the packets after
    /// it in the same batch, and those still queued in the kernel, go with
    /// the socket and are not counted here.
    pub fn disconnected_drops(&self) -> u64 {
        self.disconnected.load(Ordering::Relaxed)
    }

    /// Buffers the pool has allocated in all: it grows only while the
    /// consumer holds more packets than the channel's capacity plus margin.
    pub fn buffers_allocated(&self) -> u64 {
        self.pool.allocated.load(Ordering::Relaxed)
    }
}

impl Handler for ChannelSink {
    fn on_packet(&mut self, packet: &Packet<'_>, ctx: &mut Context<'_>) {
        let mut buf = self.pool.take(packet.payload.len());
        buf.extend_from_slice(packet.payload);
        let owned = OwnedPacket {
            buf,
            cm: packet.cm,
            src: packet.src,
            flags: packet.flags,
            drops_before: packet.drops_before,
            key: ctx.key,
            pool: Arc::clone(&self.pool),
        };
        // The fast path is one try_send whatever the policy.
        match self.tx.try_send(owned) {
            Ok(()) => self.sent(),
            Err(TrySendError::Full(owned)) => match self.overflow {
                Overflow::DropNewest => self.drop_one(ctx),
                Overflow::Block => self.wait_for_room(owned, ctx),
            },
            Err(TrySendError::Disconnected(_)) => self.receiver_gone(ctx),
        }
    }
}

impl ChannelSink {
    fn drop_one(&self, ctx: &mut Context<'_>) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        ctx.count_overflow(1);
    }

    /// Nobody is listening any more: count the packet and stop reading
    /// this socket.
    #[cold]
    fn receiver_gone(&self, ctx: &mut Context<'_>) {
        self.disconnected.fetch_add(1, Ordering::Relaxed);
        self.drop_one(ctx);
        ctx.deregister();
    }

    /// Waits for room in slices, so that a stop request ends the wait.
    #[cold]
    #[inline(never)]
    fn wait_for_room(&self, mut packet: OwnedPacket, ctx: &mut Context<'_>) {
        loop {
            if ctx.stop_requested() {
                self.drop_one(ctx);
                return;
            }
            match self.tx.send_timeout(packet, BLOCK_SLICE) {
                Ok(()) => {
                    self.sent();
                    return;
                }
                Err(SendTimeoutError::Timeout(p)) => packet = p,
                Err(SendTimeoutError::Disconnected(_)) => {
                    self.receiver_gone(ctx);
                    return;
                }
            }
        }
    }
}
