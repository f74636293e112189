//! The channel sink: each packet copied once into a pooled buffer, the
//! packets of each receive batch handed over at once to a consumer on
//! another thread.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddrV4;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use crossbeam_channel::{RecvError, RecvTimeoutError, TryRecvError};

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

/// The most packets a sink gathers before it hands them over: one
/// `recvmmsg` batch of the reactor's default size. A larger batch is handed
/// over in parts; a smaller one at its end ([`Handler::on_batch_end`]).
const HAND_OVER_AT: usize = 64;

/// Free buffers a sink takes from the pool at once, to hold locally.
const STASH: usize = 32;

/// A free list of payload buffers shared by a sink and its packets: a
/// stack, so that the buffer used next is the one freed last (still in the
/// cache).
#[derive(Debug)]
struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    /// The most buffers `free` keeps (its capacity, never exceeded: no
    /// allocation to return a buffer); one more is freed.
    max_free: usize,
    buf_size: usize,
    allocated: AtomicU64,
}

impl BufferPool {
    fn new(buffers: usize, buf_size: usize) -> BufferPool {
        // Room for every buffer the pool makes at first plus as many again
        // made under pressure; a buffer that finds the list full is freed.
        let max_free = buffers * 2;
        let mut free = Vec::with_capacity(max_free);
        free.extend((0..buffers).map(|_| Vec::with_capacity(buf_size)));
        BufferPool {
            free: Mutex::new(free),
            max_free,
            buf_size,
            allocated: AtomicU64::new(buffers as u64),
        }
    }

    /// Moves up to [`STASH`] free buffers to `stash` (whose capacity is at
    /// least that): one lock for many packets.
    fn refill(&self, stash: &mut Vec<Vec<u8>>) {
        let mut free = lock(&self.free);
        let n = free.len().min(STASH.saturating_sub(stash.len()));
        let from = free.len() - n;
        stash.extend(free.drain(from..));
    }

    fn put(&self, buf: Vec<u8>) {
        let mut free = lock(&self.free);
        if free.len() < self.max_free {
            free.push(buf);
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (nothing here panics while holding one).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Packets in arrival order, handed over and taken as a unit: a sink fills
/// one with a receive batch, the channel queues it whole, a receiver takes
/// it whole. Capacity [`HAND_OVER_AT`], allocated once and used again.
type Chunk = VecDeque<OwnedPacket>;

fn new_chunk() -> Chunk {
    VecDeque::with_capacity(HAND_OVER_AT)
}

/// The channel between the sinks and their receivers: a queue of chunks
/// behind one lock, which a sink takes once per receive batch (its chunk
/// is swapped for an empty one, no packet moves) and a receiver once per
/// chunk (it takes the chunk whole and hands out its packets without the
/// lock). The queue and the chunks the receivers took hold at most
/// `capacity` packets together.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes a receiver waiting for packets or for the last sink to go.
    filled: Condvar,
    /// Wakes a [`Overflow::Block`] sink waiting for room.
    room: Condvar,
    capacity: usize,
    /// Packets receivers took with a chunk and have not handed out yet
    /// (they count against `capacity`).
    held: AtomicUsize,
    /// Sinks waiting on `room` (changed under the `state` lock, read by
    /// receivers without it).
    sinks_waiting: AtomicUsize,
}

#[derive(Debug)]
struct State {
    /// Chunks in arrival order. Of two neighbours, the later was queued
    /// because the packets did not fit in the earlier, so there are at
    /// most about `2 * capacity / HAND_OVER_AT + 1` of them.
    queue: VecDeque<Chunk>,
    /// Packets in `queue`.
    queued: usize,
    /// Empty chunks, to swap for those handed over.
    spare: Vec<Chunk>,
    /// Clones of the sink alive.
    senders: usize,
    /// Clones of the receiver alive.
    receivers: usize,
    /// Receivers waiting on `filled`.
    receivers_waiting: usize,
}

impl State {
    /// Queues the first `n` packets of `from`: when they are all of it,
    /// the chunk itself (an empty spare takes its place), unless the last
    /// queued chunk has room for them; else they move.
    fn push_packets(&mut self, from: &mut Chunk, n: usize) {
        if n == 0 {
            return;
        }
        self.queued += n;
        if let Some(last) = self.queue.back_mut() {
            if last.len() + n <= HAND_OVER_AT {
                last.extend(from.drain(..n));
                return;
            }
        }
        let mut chunk = self.spare.pop().unwrap_or_else(new_chunk);
        if n == from.len() {
            std::mem::swap(&mut chunk, from);
        } else {
            chunk.extend(from.drain(..n));
        }
        self.queue.push_back(chunk);
    }
}

impl Shared {
    #[cold]
    #[inline(never)]
    fn wake_sinks(&self) {
        let _st = lock(&self.state);
        self.room.notify_all();
    }

    /// Room in the channel now.
    fn room(&self, st: &State) -> usize {
        self.capacity
            .saturating_sub(st.queued + self.held.load(Ordering::SeqCst))
    }

    /// Gives back the room of `n` packets a receiver handed out, waking
    /// the sinks that wait for room (which takes the `state` lock: not to
    /// be called with it held).
    #[inline(always)]
    fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::SeqCst);
        // A sink counts itself in before it looks for room (both under the
        // lock), so either it sees this room or this sees it waiting.
        if self.sinks_waiting.load(Ordering::SeqCst) > 0 {
            self.wake_sinks();
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
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

/// A [`Handler`] that copies each packet once into a pooled buffer and
/// hands the packets of each receive batch over to a bounded channel at
/// once (one lock per batch, not one channel operation per packet). Clone
/// it to feed several sockets (an A and a B line) into one channel.
///
/// The packets of a batch reach the channel at the batch's end
/// ([`Handler::on_batch_end`], which the reactor calls after each
/// `recvmmsg`), or every 64 packets. A handler that wraps a `ChannelSink`
/// and calls its `on_packet` must forward `on_batch_end` too.
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
#[derive(Debug)]
pub struct ChannelSink {
    shared: Arc<Shared>,
    pool: Arc<BufferPool>,
    overflow: Overflow,
    dropped: Arc<AtomicU64>,
    disconnected: Arc<AtomicU64>,
    /// Packets of the current batch, not handed over yet (this clone's own
    /// chunk).
    batch: Chunk,
    /// Free buffers taken from the pool (this clone's own; capacity
    /// [`STASH`]).
    stash: Vec<Vec<u8>>,
    /// The wake-up of an async receiver ([`ChannelSink::bounded_async`]).
    /// Dropped after `Drop::drop` has counted this clone out of the
    /// channel, so that the receiver, woken, sees the last sink gone.
    #[cfg(feature = "tokio")]
    wake: Option<Arc<crate::tokio::channel::SinkWaker>>,
}

impl Clone for ChannelSink {
    /// Another sink feeding the same channel, with a batch and a stash of
    /// its own (allocated here).
    fn clone(&self) -> ChannelSink {
        lock(&self.shared.state).senders += 1;
        ChannelSink {
            shared: Arc::clone(&self.shared),
            pool: Arc::clone(&self.pool),
            overflow: self.overflow,
            dropped: Arc::clone(&self.dropped),
            disconnected: Arc::clone(&self.disconnected),
            batch: new_chunk(),
            stash: Vec::with_capacity(STASH),
            #[cfg(feature = "tokio")]
            wake: self.wake.clone(),
        }
    }
}

impl Drop for ChannelSink {
    fn drop(&mut self) {
        // Packets gathered outside a reactor's batch (a wrapping handler
        // that does not forward `on_batch_end`): handed over if they fit,
        // counted in `dropped` if not (no socket to count them on).
        if !self.batch.is_empty() {
            let mut st = lock(&self.shared.state);
            let room = self.shared.room(&st);
            let fit = room.min(self.batch.len());
            let lost = self.batch.len() - fit;
            if st.receivers > 0 {
                st.push_packets(&mut self.batch, fit);
                self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
            } else {
                self.dropped
                    .fetch_add(self.batch.len() as u64, Ordering::Relaxed);
            }
            self.batch.clear();
        }
        for buf in self.stash.drain(..) {
            self.pool.put(buf);
        }
        let mut st = lock(&self.shared.state);
        st.senders -= 1;
        if st.senders == 0 || st.queued > 0 {
            self.shared.filled.notify_all();
        }
        drop(st);
        self.sent();
    }
}

/// The consumer's end of a [`ChannelSink`]: `recv`, `recv_timeout`,
/// `try_recv`, `iter`, `try_iter`, `len`, as on a crossbeam receiver, with
/// crossbeam's error types. Clones share the channel (each packet goes to
/// one of them).
///
/// A receiver takes the packets of one hand-over (a receive batch, up to
/// 64 packets) from the channel at once, under one lock, and hands them
/// out one by one without it; until handed out they still count against
/// the channel's capacity. So clones share the channel batch by batch,
/// and a clone dropped with packets it took gives them back to the others,
/// first and in order.
///
/// When every clone of the sink is gone (the reactor deregistered its
/// sockets or was dropped), the packets still queued are delivered, then
/// `recv` fails with [`RecvError`]. When every clone of the receiver is
/// gone, the sink counts the next batch's first packet in
/// [`ChannelSink::disconnected_drops`] and deregisters its socket.
pub struct PacketReceiver {
    shared: Arc<Shared>,
    /// The chunk this clone took and hands out.
    local: Mutex<Chunk>,
}

impl fmt::Debug for PacketReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketReceiver")
            .field("queued", &self.len())
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}

impl Clone for PacketReceiver {
    fn clone(&self) -> PacketReceiver {
        lock(&self.shared.state).receivers += 1;
        PacketReceiver {
            shared: Arc::clone(&self.shared),
            local: Mutex::new(new_chunk()),
        }
    }
}

impl Drop for PacketReceiver {
    fn drop(&mut self) {
        let local = self.local.get_mut().unwrap_or_else(PoisonError::into_inner);
        let mut st = lock(&self.shared.state);
        st.receivers -= 1;
        if st.receivers == 0 {
            // Nobody will take these: their buffers go back to the pool,
            // and sinks waiting for room find the receiver gone.
            st.queue.clear();
            st.queued = 0;
            local.clear();
            self.shared.room.notify_all();
        } else if !local.is_empty() {
            // The other clones get what this one took and did not hand
            // out, first, in order.
            let back = std::mem::replace(local, new_chunk());
            let n = back.len();
            st.queued += n;
            st.queue.push_front(back);
            self.shared.held.fetch_sub(n, Ordering::SeqCst);
            if st.receivers_waiting > 0 {
                self.shared.filled.notify_all();
            }
        }
    }
}

impl PacketReceiver {
    /// The next packet, waiting for one; `Err(RecvError)` once the channel
    /// is empty and every sink is gone.
    pub fn recv(&self) -> Result<OwnedPacket, RecvError> {
        match self.recv_until(None) {
            Ok(p) => Ok(p),
            Err(_) => Err(RecvError),
        }
    }

    /// The next packet, waiting at most `timeout` for one.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<OwnedPacket, RecvTimeoutError> {
        // A timeout too long to add is taken as no timeout.
        self.recv_until(Instant::now().checked_add(timeout))
    }

    /// The next packet, waiting for one until `deadline` at the latest.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<OwnedPacket, RecvTimeoutError> {
        self.recv_until(Some(deadline))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<OwnedPacket, RecvTimeoutError> {
        loop {
            let mut local = lock(&self.local);
            if let Some(p) = self.pop(&mut local) {
                return Ok(p);
            }
            // Lock order: a receiver's own chunk, then the channel.
            let mut st = lock(&self.shared.state);
            if self.take(&mut st, &mut local) {
                drop(st);
                if let Some(p) = self.pop(&mut local) {
                    return Ok(p);
                }
                continue;
            }
            if st.senders == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            // Other threads using this receiver wait on the channel too,
            // not on its chunk.
            drop(local);
            st.receivers_waiting += 1;
            st = match deadline {
                None => self
                    .shared
                    .filled
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        st.receivers_waiting -= 1;
                        return Err(RecvTimeoutError::Timeout);
                    }
                    self.shared
                        .filled
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            st.receivers_waiting -= 1;
        }
    }

    /// The next packet if one is queued, without waiting.
    pub fn try_recv(&self) -> Result<OwnedPacket, TryRecvError> {
        let mut local = lock(&self.local);
        if let Some(p) = self.pop(&mut local) {
            return Ok(p);
        }
        let mut st = lock(&self.shared.state);
        self.take(&mut st, &mut local);
        let disconnected = st.senders == 0;
        drop(st);
        match self.pop(&mut local) {
            Some(p) => Ok(p),
            None if disconnected => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// The next packet of this receiver's chunk, its room given back to
    /// the channel (which may take the channel's lock: not to be called
    /// with it held).
    #[inline(always)]
    fn pop(&self, local: &mut Chunk) -> Option<OwnedPacket> {
        let p = local.pop_front()?;
        self.shared.release(1);
        Some(p)
    }

    /// Takes the channel's first chunk in place of this receiver's empty
    /// one; whether there was one.
    fn take(&self, st: &mut State, local: &mut Chunk) -> bool {
        let Some(chunk) = st.queue.pop_front() else {
            return false;
        };
        st.queued -= chunk.len();
        self.shared.held.fetch_add(chunk.len(), Ordering::SeqCst);
        st.spare.push(std::mem::replace(local, chunk));
        true
    }

    /// A blocking iterator: it ends when the channel is empty and every
    /// sink is gone.
    pub fn iter(&self) -> PacketIter<'_> {
        PacketIter { rx: self }
    }

    /// An iterator over the packets queued now; it never waits.
    pub fn try_iter(&self) -> PacketTryIter<'_> {
        PacketTryIter { rx: self }
    }

    /// Packets queued now for this receiver: in the channel, and those it
    /// took from the channel and has not handed out yet.
    pub fn len(&self) -> usize {
        let local = lock(&self.local);
        local.len() + lock(&self.shared.state).queued
    }

    /// Whether no packet is queued now for this receiver.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the channel holds as many packets as it can.
    pub fn is_full(&self) -> bool {
        self.len() >= self.shared.capacity
    }

    /// The channel's capacity in packets (always `Some`, as for a bounded
    /// crossbeam channel).
    pub fn capacity(&self) -> Option<usize> {
        Some(self.shared.capacity)
    }
}

/// [`PacketReceiver::iter`].
#[derive(Debug)]
pub struct PacketIter<'a> {
    rx: &'a PacketReceiver,
}

impl Iterator for PacketIter<'_> {
    type Item = OwnedPacket;
    fn next(&mut self) -> Option<OwnedPacket> {
        self.rx.recv().ok()
    }
}

/// [`PacketReceiver::try_iter`].
#[derive(Debug)]
pub struct PacketTryIter<'a> {
    rx: &'a PacketReceiver,
}

impl Iterator for PacketTryIter<'_> {
    type Item = OwnedPacket;
    fn next(&mut self) -> Option<OwnedPacket> {
        self.rx.try_recv().ok()
    }
}

/// The owning form of [`PacketIter`].
#[derive(Debug)]
pub struct PacketIntoIter {
    rx: PacketReceiver,
}

impl Iterator for PacketIntoIter {
    type Item = OwnedPacket;
    fn next(&mut self) -> Option<OwnedPacket> {
        self.rx.recv().ok()
    }
}

impl<'a> IntoIterator for &'a PacketReceiver {
    type Item = OwnedPacket;
    type IntoIter = PacketIter<'a>;
    fn into_iter(self) -> PacketIter<'a> {
        self.iter()
    }
}

impl IntoIterator for PacketReceiver {
    type Item = OwnedPacket;
    type IntoIter = PacketIntoIter;
    fn into_iter(self) -> PacketIntoIter {
        PacketIntoIter { rx: self }
    }
}

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
        let pool = Arc::new(BufferPool::new(buffers, payload_size));
        // Chunks for a channel of full batches, and one per receiver
        // (more are made if small batches leave chunks half full).
        let chunks = capacity.div_ceil(HAND_OVER_AT) + 2;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(chunks),
                queued: 0,
                spare: (0..chunks).map(|_| new_chunk()).collect(),
                senders: 1,
                receivers: 1,
                receivers_waiting: 0,
            }),
            filled: Condvar::new(),
            room: Condvar::new(),
            capacity,
            held: AtomicUsize::new(0),
            sinks_waiting: AtomicUsize::new(0),
        });
        Ok((
            ChannelSink {
                shared: Arc::clone(&shared),
                pool,
                overflow,
                dropped: Arc::new(AtomicU64::new(0)),
                disconnected: Arc::new(AtomicU64::new(0)),
                batch: new_chunk(),
                stash: Vec::with_capacity(STASH),
                #[cfg(feature = "tokio")]
                wake: None,
            },
            PacketReceiver {
                shared,
                local: Mutex::new(new_chunk()),
            },
        ))
    }

    /// [`ChannelSink::bounded`] for a tokio task: the receiving end is an
    /// [`AsyncPacketReceiver`](crate::tokio::AsyncPacketReceiver) whose
    /// `recv` waits without blocking its thread. The sink wakes it when the
    /// channel goes from empty to non-empty; per receive batch it costs one
    /// fence and one load more than a plain sink.
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
    #[inline(always)]
    fn on_packet(&mut self, packet: &Packet<'_>, ctx: &mut Context<'_>) {
        let mut buf = match self.stash.pop() {
            Some(buf) => buf,
            None => self.take_buffer(packet.payload.len()),
        };
        buf.clear();
        buf.extend_from_slice(packet.payload);
        self.batch.push_back(OwnedPacket {
            buf,
            cm: packet.cm,
            src: packet.src,
            flags: packet.flags,
            drops_before: packet.drops_before,
            key: ctx.key,
            pool: Arc::clone(&self.pool),
        });
        if self.batch.len() >= HAND_OVER_AT {
            self.hand_over(ctx);
        }
    }

    fn on_batch_end(&mut self, ctx: &mut Context<'_>) {
        if !self.batch.is_empty() {
            self.hand_over(ctx);
        }
    }
}

impl ChannelSink {
    /// The stash is empty: refills it from the pool, or makes a buffer when
    /// the pool is empty too.
    #[cold]
    fn take_buffer(&mut self, need: usize) -> Vec<u8> {
        self.pool.refill(&mut self.stash);
        match self.stash.pop() {
            Some(buf) => buf,
            None => {
                self.pool.allocated.fetch_add(1, Ordering::Relaxed);
                Vec::with_capacity(self.pool.buf_size.max(need))
            }
        }
    }

    /// Moves the batch into the channel under one lock: what fits goes in,
    /// in order; the rest is dropped and counted ([`Overflow::DropNewest`])
    /// or waits for room ([`Overflow::Block`]).
    fn hand_over(&mut self, ctx: &mut Context<'_>) {
        let mut st = lock(&self.shared.state);
        if st.receivers == 0 {
            drop(st);
            self.receiver_gone(ctx);
            return;
        }
        let fit = self.shared.room(&st).min(self.batch.len());
        st.push_packets(&mut self.batch, fit);
        if fit > 0 && st.receivers_waiting > 0 {
            self.shared.filled.notify_all();
        }
        drop(st);
        if fit > 0 {
            self.sent();
        }
        if !self.batch.is_empty() {
            match self.overflow {
                Overflow::DropNewest => self.drop_batch(ctx),
                Overflow::Block => self.wait_for_room(ctx),
            }
        }
    }

    /// Drops (returning their buffers to the pool) and counts the packets
    /// left in the batch.
    fn drop_batch(&mut self, ctx: &mut Context<'_>) {
        let n = self.batch.len() as u64;
        self.batch.clear();
        self.dropped.fetch_add(n, Ordering::Relaxed);
        ctx.count_overflow(n);
    }

    /// Nobody is listening any more: count the first packet of the batch,
    /// drop the rest with it, and stop reading this socket.
    #[cold]
    fn receiver_gone(&mut self, ctx: &mut Context<'_>) {
        self.batch.clear();
        self.disconnected.fetch_add(1, Ordering::Relaxed);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        ctx.count_overflow(1);
        ctx.deregister();
    }

    /// Waits for room in slices, so that a stop request ends the wait,
    /// handing packets over as room appears.
    #[cold]
    #[inline(never)]
    fn wait_for_room(&mut self, ctx: &mut Context<'_>) {
        let mut st = lock(&self.shared.state);
        loop {
            if st.receivers == 0 {
                drop(st);
                self.receiver_gone(ctx);
                return;
            }
            let fit = self.shared.room(&st).min(self.batch.len());
            if fit > 0 {
                st.push_packets(&mut self.batch, fit);
                if st.receivers_waiting > 0 {
                    self.shared.filled.notify_all();
                }
                // The async receiver is woken without the lock held.
                drop(st);
                self.sent();
                if self.batch.is_empty() {
                    return;
                }
                st = lock(&self.shared.state);
                continue;
            }
            if ctx.stop_requested() {
                drop(st);
                self.drop_batch(ctx);
                return;
            }
            // Counted in before looking again (see `Shared::release`).
            self.shared.sinks_waiting.fetch_add(1, Ordering::SeqCst);
            if self.shared.room(&st) == 0 {
                st = self
                    .shared
                    .room
                    .wait_timeout(st, BLOCK_SLICE)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            self.shared.sinks_waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
