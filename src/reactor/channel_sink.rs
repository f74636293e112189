//! The channel sink: the packets of each receive batch copied once, one
//! after another, into a buffer of their own, handed over at once to a
//! consumer on another thread.
//!
//! The design, for the reader: a hand-over is a [`Slab`] (payloads packed
//! in one byte buffer, their metadata in a vector), shared behind one
//! `Arc` by the packets handed out of it. The sink fills a slab it owns;
//! at the batch's end it swaps the slab's storage into a free `Arc` (an
//! envelope) and queues that, under one lock. A receiver takes a queued
//! slab under the lock and hands its packets out without it, each an
//! [`OwnedPacket`] holding a clone of the `Arc`. When it has handed out
//! the last one, it gives the slab's room back to the channel and the
//! envelope to the free list, which the sink takes it from again once
//! every packet of it was dropped (`Arc::get_mut` tells). So per packet:
//! one copy of the payload, one `Arc` clone and drop; per batch: the locks.

use std::cell::{RefCell, RefMut};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddrV4;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// How long a receiver with nothing to hand out watches the channel before
/// it sleeps ([`PacketReceiver::recv`] and the other waiting calls): a
/// sink that finds its receiver asleep wakes it with a system call, which
/// on a virtual machine costs the sink's thread several microseconds,
/// more than the time between two receive batches at a million packets a
/// second.
pub const RECV_SPIN: Duration = Duration::from_micros(50);

/// The largest channel capacity [`ChannelSink::bounded`] accepts.
pub const MAX_SINK_CAPACITY: usize = 1 << 20;

/// The largest payload size [`ChannelSink::bounded`] accepts: the most an
/// IPv4 datagram can hold.
pub const MAX_SINK_PAYLOAD: usize = 65_535;

/// The most buffer bytes [`ChannelSink::bounded`] may set aside for its
/// pool: 4 GiB.
pub const MAX_SINK_POOL_BYTES: u64 = 1 << 32;

/// The most packets one hand-over holds: one `recvmmsg` batch of the
/// reactor's default size. A larger batch is handed over in parts; a
/// smaller one at its end ([`Handler::on_batch_end`]).
pub const SINK_HAND_OVER: usize = 64;

/// Hand-over buffers the pool makes beyond those the channel's capacity
/// needs, for packets the consumer still holds.
const POOL_MARGIN: usize = 4;

/// Free envelopes a sink looks at, oldest first, before it makes a new one.
const ENVELOPE_TRIES: usize = 8;

/// Where a packet's payload lies in its slab, and what came with it.
#[derive(Debug, Clone, Copy)]
struct Meta {
    start: usize,
    len: usize,
    cm: ControlMessage,
    src: Option<SocketAddrV4>,
    flags: RecvFlags,
    drops_before: u32,
    key: Key,
}

/// The packets of one hand-over, at most [`SINK_HAND_OVER`], their
/// payloads one after another in `bytes`.
#[derive(Debug, Default)]
struct Slab {
    bytes: Vec<u8>,
    meta: Vec<Meta>,
}

impl Slab {
    /// Room for [`SINK_HAND_OVER`] payloads of `payload_size` bytes.
    fn with_room(payload_size: usize) -> Slab {
        let mut s = Slab::default();
        s.make_room(payload_size);
        s
    }

    /// Gives an empty slab its room (a new envelope's storage has none;
    /// one used before has it already, and this does nothing).
    fn make_room(&mut self, payload_size: usize) {
        self.bytes.reserve_exact(SINK_HAND_OVER * payload_size);
        self.meta.reserve_exact(SINK_HAND_OVER);
    }

    fn len(&self) -> usize {
        self.meta.len()
    }

    fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Whether a payload of `len` bytes fits without either buffer growing.
    #[inline(always)]
    fn fits(&self, len: usize) -> bool {
        self.meta.len() < SINK_HAND_OVER && len <= self.bytes.capacity() - self.bytes.len()
    }

    /// Appends a packet (`meta.start` and `meta.len` are set here).
    #[inline(always)]
    fn push(&mut self, payload: &[u8], meta: Meta) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.meta.push(Meta {
            start,
            len: payload.len(),
            ..meta
        });
    }

    fn payload(&self, m: &Meta) -> &[u8] {
        &self.bytes[m.start..m.start + m.len]
    }

    /// Whether the first `n` packets of `from` fit without growing.
    fn can_take(&self, from: &Slab, n: usize) -> bool {
        self.meta.len() + n <= SINK_HAND_OVER
            && from.meta[..n].iter().map(|m| m.len).sum::<usize>()
                <= self.bytes.capacity() - self.bytes.len()
    }

    /// Appends copies of the first `n` packets of `from`.
    fn take_front(&mut self, from: &Slab, n: usize) {
        for m in &from.meta[..n] {
            self.push(from.payload(m), *m);
        }
    }

    /// Removes the first `n` packets (the rest move to the front).
    fn drop_front(&mut self, n: usize) {
        let cut = self.meta.get(n).map_or(self.bytes.len(), |m| m.start);
        self.bytes.drain(..cut);
        self.meta.drain(..n);
        for m in &mut self.meta {
            m.start -= cut;
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.meta.clear();
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (nothing here panics while holding one).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A slab in the channel, or taken by a receiver, with the packets it has
/// handed out of it.
#[derive(Debug)]
struct Chunk {
    slab: Arc<Slab>,
    /// The next packet to hand out.
    next: usize,
    /// The packets this chunk counted in [`State::held`] when a receiver
    /// took it (0 while queued).
    held: usize,
}

impl Chunk {
    fn remaining(&self) -> usize {
        self.slab.len() - self.next
    }
}

/// The channel between the sinks and their receivers: a queue of slabs
/// behind one lock, which a sink takes once per receive batch and a
/// receiver once per slab. The queue and the slabs the receivers took
/// hold at most `capacity` packets together.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes a receiver waiting for packets or for the last sink to go.
    filled: Condvar,
    /// Wakes a [`Overflow::Block`] sink waiting for room.
    room: Condvar,
    capacity: usize,
    /// The most free envelopes kept (more are dropped).
    max_envelopes: usize,
    /// Bumped after each change a waiting receiver looks for (packets
    /// queued, a sink gone): a receiver spinning before it sleeps watches
    /// it without the lock.
    news: AtomicU64,
    payload_size: usize,
}

#[derive(Debug)]
struct State {
    /// Slabs in arrival order. Of two neighbours, the later was queued
    /// because the packets did not fit in the earlier.
    queue: VecDeque<Chunk>,
    /// Packets in `queue`.
    queued: usize,
    /// Packets of the slabs receivers took and have not handed out to the
    /// last (a taken slab's room comes back when its last packet is
    /// handed out).
    held: usize,
    /// Envelopes receivers handed out to the last, oldest first: free once
    /// every packet of theirs was dropped.
    envelopes: VecDeque<Arc<Slab>>,
    /// Hand-over buffers made in all.
    made: u64,
    /// Clones of the sink alive.
    senders: usize,
    /// Clones of the receiver alive.
    receivers: usize,
    /// Receivers waiting on `filled`.
    receivers_waiting: usize,
    /// Sinks waiting on `room`.
    sinks_waiting: usize,
}

impl State {
    /// An envelope no packet refers to any more (its storage is the last
    /// slab handed out in it, to be swapped out), or a new one.
    fn envelope(&mut self) -> Arc<Slab> {
        for _ in 0..self.envelopes.len().min(ENVELOPE_TRIES) {
            let Some(mut e) = self.envelopes.pop_front() else {
                break;
            };
            if Arc::get_mut(&mut e).is_some() {
                return e;
            }
            self.envelopes.push_back(e);
        }
        self.made += 1;
        Arc::new(Slab::default())
    }

    /// Queues the first `n` packets of `from`: copied into the last queued
    /// slab when they fit there, else the whole slab (its storage swapped
    /// into an envelope, `from` left with the envelope's old storage,
    /// emptied), else copied into an envelope of their own (a part of a
    /// batch: the rest stays in `from`).
    fn queue_packets(&mut self, from: &mut Slab, n: usize, payload_size: usize) {
        if n == 0 {
            return;
        }
        self.queued += n;
        // A queued slab nobody took is referred to by the queue alone.
        if let Some(last) = self
            .queue
            .back_mut()
            .and_then(|c| Arc::get_mut(&mut c.slab))
        {
            if last.can_take(from, n) {
                last.take_front(from, n);
                from.drop_front(n);
                return;
            }
        }
        let mut envelope = self.envelope();
        let slab = Arc::get_mut(&mut envelope).expect("a free envelope is referred to once");
        if n == from.len() {
            std::mem::swap(slab, from);
            from.clear();
            from.make_room(payload_size);
        } else {
            slab.clear();
            slab.make_room(payload_size);
            slab.take_front(from, n);
            from.drop_front(n);
        }
        self.queue.push_back(Chunk {
            slab: envelope,
            next: 0,
            held: 0,
        });
    }
}

impl Shared {
    /// Tells spinning receivers that the channel changed.
    #[inline]
    fn tell(&self) {
        self.news.fetch_add(1, Ordering::Release);
    }

    /// Room in the channel now.
    fn room(&self, st: &State) -> usize {
        self.capacity.saturating_sub(st.queued + st.held)
    }
}

/// A packet copied out of the reactor, for a consumer on another thread:
/// its payload with [`payload`](Self::payload) (or through `Deref`), what
/// came with it through the other methods. It shares the buffer of its
/// receive batch with the other packets of the batch; the buffer goes back
/// to the sink once every one of them was dropped, so steady state does
/// not allocate.
pub struct OwnedPacket {
    slab: Arc<Slab>,
    index: usize,
}

/// The accessors of [`OwnedPacket`] and [`PacketRef`], over a packet's
/// slab and its metadata there.
macro_rules! packet_accessors {
    ($lt:lifetime) => {
        /// The payload.
        #[inline]
        pub fn payload(&self) -> &$lt [u8] {
            let m = self.meta();
            &self.slab().bytes[m.start..m.start + m.len]
        }

        /// The control messages the socket asked for.
        #[inline]
        pub fn cm(&self) -> &$lt ControlMessage {
            &self.meta().cm
        }

        /// The source address, when [`ControlFlags::SRC`](crate::ControlFlags::SRC)
        /// was asked for.
        #[inline]
        pub fn src(&self) -> Option<SocketAddrV4> {
            self.meta().src
        }

        /// Truncation of payload or control data.
        #[inline]
        pub fn flags(&self) -> RecvFlags {
            self.meta().flags
        }

        /// Packets the kernel dropped on the socket just before this one
        /// (as [`Packet::drops_before`]).
        #[inline]
        pub fn drops_before(&self) -> u32 {
            self.meta().drops_before
        }

        /// The socket it came from.
        #[inline]
        pub fn key(&self) -> Key {
            self.meta().key
        }
    };
}

impl OwnedPacket {
    #[inline(always)]
    fn slab(&self) -> &Slab {
        &self.slab
    }

    #[inline(always)]
    fn meta(&self) -> &Meta {
        &self.slab.meta[self.index]
    }

    packet_accessors!('_);
}

impl Deref for OwnedPacket {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.payload()
    }
}

impl fmt::Debug for OwnedPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_packet("OwnedPacket", self.meta(), f)
    }
}

fn debug_packet(name: &str, m: &Meta, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.debug_struct(name)
        .field("len", &m.len)
        .field("cm", &m.cm)
        .field("src", &m.src)
        .field("flags", &m.flags)
        .field("drops_before", &m.drops_before)
        .field("key", &m.key)
        .finish()
}

/// A [`Handler`] that copies the packets of each receive batch once, one
/// after another, into a buffer of the batch's own and hands them over to
/// a bounded channel at once (one lock per batch, not one channel
/// operation per packet). Clone it to feed several sockets (an A and a B
/// line) into one channel.
///
/// The packets of a batch reach the channel at the batch's end
/// ([`Handler::on_batch_end`], which the reactor calls after each
/// `recvmmsg`), or every [`SINK_HAND_OVER`] packets. A handler that wraps a
/// `ChannelSink` and calls its `on_packet` must forward `on_batch_end` too.
///
/// Memory: a hand-over's buffer has room for [`SINK_HAND_OVER`] payloads
/// of `payload_size` bytes, and goes back to the sink once every packet
/// of it was dropped. So a packet the consumer keeps keeps its batch's
/// buffer; when none is free, the sink makes another
/// ([`ChannelSink::buffers_allocated`] counts them).
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
    overflow: Overflow,
    dropped: Arc<AtomicU64>,
    disconnected: Arc<AtomicU64>,
    /// Packets of the current batch, not handed over yet (this clone's own).
    filling: Slab,
    /// The wake-up of an async receiver ([`ChannelSink::bounded_async`]).
    /// Dropped after `Drop::drop` has counted this clone out of the
    /// channel, so that the receiver, woken, sees the last sink gone.
    #[cfg(feature = "tokio")]
    wake: Option<Arc<crate::tokio::channel::SinkWaker>>,
}

impl Clone for ChannelSink {
    /// Another sink feeding the same channel, with a buffer of its own for
    /// the batch it fills (allocated here).
    fn clone(&self) -> ChannelSink {
        lock(&self.shared.state).senders += 1;
        ChannelSink {
            shared: Arc::clone(&self.shared),
            overflow: self.overflow,
            dropped: Arc::clone(&self.dropped),
            disconnected: Arc::clone(&self.disconnected),
            filling: Slab::with_room(self.shared.payload_size),
            #[cfg(feature = "tokio")]
            wake: self.wake.clone(),
        }
    }
}

impl Drop for ChannelSink {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        // Packets gathered outside a reactor's batch (a wrapping handler
        // that does not forward `on_batch_end`): handed over if they fit,
        // counted in `dropped` if not (no socket to count them on).
        if !self.filling.is_empty() {
            let fit = if st.receivers > 0 {
                self.shared.room(&st).min(self.filling.len())
            } else {
                0
            };
            st.queue_packets(&mut self.filling, fit, self.shared.payload_size);
            self.dropped
                .fetch_add(self.filling.len() as u64, Ordering::Relaxed);
            self.filling.clear();
        }
        st.senders -= 1;
        if st.senders == 0 || st.queued > 0 {
            self.shared.filled.notify_all();
        }
        drop(st);
        self.shared.tell();
        self.sent();
    }
}

/// The consumer's end of a [`ChannelSink`]: `recv`, `recv_timeout`,
/// `try_recv`, `iter`, `try_iter`, `len`, as on a crossbeam receiver, with
/// crossbeam's error types. Clones share the channel (each packet goes to
/// one of them).
///
/// A receiver takes the packets of one hand-over (a receive batch, up to
/// [`SINK_HAND_OVER`] packets) from the channel at once, under one lock,
/// and hands them out one by one without it; the hand-over's room in the
/// channel comes back when its last packet is handed out. So clones share
/// the channel batch by batch, and a clone dropped with packets it took
/// gives them back to the others, first and in order.
///
/// A call that waits ([`recv`](Self::recv), [`recv_batch`](Self::recv_batch)
/// and their timeout forms) first watches the channel for [`RECV_SPIN`]
/// with the CPU, then sleeps until a sink hands packets over.
///
/// A receiver is `Send` but not `Sync`, as `std::sync::mpsc::Receiver`:
/// move it to the thread that consumes, or give each consuming thread a
/// clone of its own. So handing out a packet of the hand-over it took
/// takes no lock: per packet, [`recv`](Self::recv) costs the `Arc` clone
/// the [`OwnedPacket`] holds (and its drop), nothing else shared.
///
/// When every clone of the sink is gone (the reactor deregistered its
/// sockets or was dropped), the packets still queued are delivered, then
/// `recv` fails with [`RecvError`]. When every clone of the receiver is
/// gone, the sink counts the next batch's first packet in
/// [`ChannelSink::disconnected_drops`] and deregisters its socket.
pub struct PacketReceiver {
    shared: Arc<Shared>,
    /// The hand-over this clone took and hands out. Only this clone's
    /// thread touches it (the receiver is `Send`, not `Sync`): handing out
    /// a packet takes no lock.
    local: RefCell<Option<Chunk>>,
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
            local: RefCell::new(None),
        }
    }
}

impl Drop for PacketReceiver {
    fn drop(&mut self) {
        let local = self.local.get_mut().take();
        let mut st = lock(&self.shared.state);
        st.receivers -= 1;
        if let Some(mut chunk) = local {
            st.held -= chunk.held;
            chunk.held = 0;
            if st.receivers > 0 {
                // The other clones get what this one took and did not hand
                // out, first, in order.
                st.queued += chunk.remaining();
                st.queue.push_front(chunk);
                if st.receivers_waiting > 0 {
                    self.shared.filled.notify_all();
                }
                self.shared.tell();
            }
        }
        if st.receivers == 0 {
            // Nobody will take these; sinks waiting for room find the
            // receiver gone.
            st.queue.clear();
            st.queued = 0;
            self.shared.room.notify_all();
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
        self.wait_for(deadline, |local| self.pop(local))
    }

    /// Waits until `pop` gives something from this receiver's hand-over,
    /// taking the channel's next one when this receiver has none, until
    /// `deadline` or until the channel is empty and every sink is gone.
    fn wait_for<T>(
        &self,
        deadline: Option<Instant>,
        pop: impl Fn(&mut Option<Chunk>) -> Option<T>,
    ) -> Result<T, RecvTimeoutError> {
        let mut spun = false;
        loop {
            let mut local = self.local.borrow_mut();
            if let Some(p) = pop(&mut local) {
                return Ok(p);
            }
            let mut st = lock(&self.shared.state);
            if self.take(&mut st, &mut local) {
                drop(st);
                if let Some(p) = pop(&mut local) {
                    return Ok(p);
                }
                continue;
            }
            if st.senders == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            if !spun {
                // Looks for news a while before it sleeps: being woken
                // costs this thread, and the sink's thread, more.
                spun = true;
                let seen = self.shared.news.load(Ordering::Acquire);
                drop(st);
                drop(local);
                self.spin_for_news(seen, deadline);
                continue;
            }
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

    /// Spins until the channel has news after `seen`, for at most
    /// [`RECV_SPIN`] (and not past `deadline`).
    fn spin_for_news(&self, seen: u64, deadline: Option<Instant>) {
        let start = Instant::now();
        let until = deadline.map_or(start + RECV_SPIN, |d| d.min(start + RECV_SPIN));
        loop {
            for _ in 0..64 {
                if self.shared.news.load(Ordering::Acquire) != seen {
                    return;
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= until {
                return;
            }
        }
    }

    /// The packets of a whole hand-over (a receive batch, up to
    /// [`SINK_HAND_OVER`] packets), waiting for one; `Err(RecvError)` once
    /// the channel is empty and every sink is gone. If this receiver has
    /// handed out part of a hand-over with [`recv`](Self::recv), the batch
    /// is the rest of it.
    ///
    /// One lock for the whole batch, and the packets are read where the
    /// sink wrote them, without a copy or a reference count each: the
    /// cheapest way through the channel. The batch's room comes back to
    /// the channel when the batch is dropped. To keep a packet beyond
    /// that, [`PacketRef::to_owned_packet`].
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
    /// for quote in [&b"bid"[..], b"ask"] {
    ///     tx.send_to(quote, None, dst)?;
    /// }
    /// let mut got = Vec::new();
    /// while got.len() < 2 {
    ///     reactor.turn(Some(std::time::Duration::from_millis(100)))?;
    ///     while let Ok(batch) = packets.try_recv_batch() {
    ///         for p in &batch {
    ///             got.push(p.payload().to_vec());
    ///         }
    ///     }
    /// }
    /// assert_eq!(got, [b"bid".to_vec(), b"ask".to_vec()]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recv_batch(&self) -> Result<PacketBatch<'_>, RecvError> {
        self.wait_for(None, |local| self.pop_batch(local))
            .map_err(|_| RecvError)
    }

    /// [`recv_batch`](Self::recv_batch), waiting at most `timeout`.
    pub fn recv_batch_timeout(
        &self,
        timeout: Duration,
    ) -> Result<PacketBatch<'_>, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        self.wait_for(deadline, |local| self.pop_batch(local))
    }

    /// [`recv_batch`](Self::recv_batch) if a hand-over is queued, without
    /// waiting.
    pub fn try_recv_batch(&self) -> Result<PacketBatch<'_>, TryRecvError> {
        let mut local = self.local.borrow_mut();
        if let Some(b) = self.pop_batch(&mut local) {
            return Ok(b);
        }
        self.try_take(local, |local| self.pop_batch(local))
    }

    fn pop_batch(&self, local: &mut Option<Chunk>) -> Option<PacketBatch<'_>> {
        Some(PacketBatch {
            rx: self,
            chunk: Some(local.take()?),
        })
    }

    /// The next packet if one is queued, without waiting.
    #[inline]
    pub fn try_recv(&self) -> Result<OwnedPacket, TryRecvError> {
        let mut local = self.local.borrow_mut();
        if let Some(p) = self.pop(&mut local) {
            return Ok(p);
        }
        self.try_take(local, |local| self.pop(local))
    }

    /// [`PacketReceiver::try_recv`] (or `try_recv_batch`) once this
    /// receiver's hand-over is out: takes the next one from the channel and
    /// gives what `pop` takes of it.
    #[inline(never)]
    fn try_take<T>(
        &self,
        mut local: RefMut<'_, Option<Chunk>>,
        pop: impl Fn(&mut Option<Chunk>) -> Option<T>,
    ) -> Result<T, TryRecvError> {
        let mut st = lock(&self.shared.state);
        self.take(&mut st, &mut local);
        let disconnected = st.senders == 0;
        drop(st);
        match pop(&mut local) {
            Some(p) => Ok(p),
            None if disconnected => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// The next packet of the hand-over this receiver took; after its last,
    /// the hand-over's room goes back to the channel (which takes the
    /// channel's lock: not to be called with it held).
    #[inline(always)]
    fn pop(&self, local: &mut Option<Chunk>) -> Option<OwnedPacket> {
        let chunk = local.as_mut()?;
        let p = OwnedPacket {
            slab: Arc::clone(&chunk.slab),
            index: chunk.next,
        };
        chunk.next += 1;
        if chunk.remaining() == 0 {
            if let Some(done) = local.take() {
                self.finished(done);
            }
        }
        Some(p)
    }

    /// Every packet of a hand-over handed out: its room goes back to the
    /// channel, its envelope to the free list.
    #[inline(never)]
    fn finished(&self, chunk: Chunk) {
        let mut st = lock(&self.shared.state);
        st.held -= chunk.held;
        // A full free list lets its oldest go (a consumer keeps a packet
        // of it, likely; its memory goes with the last such packet).
        let evicted = if st.envelopes.len() >= self.shared.max_envelopes {
            st.envelopes.pop_front()
        } else {
            None
        };
        st.envelopes.push_back(chunk.slab);
        if st.sinks_waiting > 0 {
            self.shared.room.notify_all();
        }
        drop(st);
        drop(evicted);
    }

    /// Takes the channel's first hand-over (this receiver has none); whether
    /// there was one.
    fn take(&self, st: &mut State, local: &mut Option<Chunk>) -> bool {
        let Some(mut chunk) = st.queue.pop_front() else {
            return false;
        };
        let n = chunk.remaining();
        st.queued -= n;
        st.held += n;
        chunk.held = n;
        *local = Some(chunk);
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
        let local = self.local.borrow();
        local.as_ref().map_or(0, Chunk::remaining) + lock(&self.shared.state).queued
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

/// The packets of one hand-over, from [`PacketReceiver::recv_batch`]:
/// iterate it (by reference) for [`PacketRef`]s. Dropping it gives the
/// hand-over's room back to the channel.
pub struct PacketBatch<'a> {
    rx: &'a PacketReceiver,
    /// Always `Some` until dropped.
    chunk: Option<Chunk>,
}

impl<'a> PacketBatch<'a> {
    fn chunk(&self) -> &Chunk {
        self.chunk
            .as_ref()
            .expect("a batch has its chunk until dropped")
    }

    /// The packets in the batch (at least one).
    pub fn len(&self) -> usize {
        self.chunk().remaining()
    }

    /// Whether the batch has no packet (never: a batch has at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The packets, in arrival order.
    pub fn iter(&self) -> PacketBatchIter<'_> {
        let chunk = self.chunk();
        PacketBatchIter {
            slab: &chunk.slab,
            meta: chunk.slab.meta[chunk.next..].iter().enumerate(),
            first: chunk.next,
        }
    }
}

impl Drop for PacketBatch<'_> {
    fn drop(&mut self) {
        if let Some(chunk) = self.chunk.take() {
            self.rx.finished(chunk);
        }
    }
}

impl fmt::Debug for PacketBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'b> IntoIterator for &'b PacketBatch<'_> {
    type Item = PacketRef<'b>;
    type IntoIter = PacketBatchIter<'b>;
    fn into_iter(self) -> PacketBatchIter<'b> {
        self.iter()
    }
}

/// [`PacketBatch::iter`].
#[derive(Debug, Clone)]
pub struct PacketBatchIter<'a> {
    slab: &'a Arc<Slab>,
    meta: std::iter::Enumerate<std::slice::Iter<'a, Meta>>,
    /// The index in the slab of the iterator's first packet.
    first: usize,
}

impl<'a> Iterator for PacketBatchIter<'a> {
    type Item = PacketRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<PacketRef<'a>> {
        let (i, meta) = self.meta.next()?;
        Some(PacketRef {
            slab: self.slab,
            meta,
            index: self.first + i,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.meta.size_hint()
    }
}

impl ExactSizeIterator for PacketBatchIter<'_> {}

/// A packet of a [`PacketBatch`], read where the sink wrote it: the same
/// methods as an [`OwnedPacket`], borrowed from the batch.
#[derive(Clone, Copy)]
pub struct PacketRef<'a> {
    slab: &'a Arc<Slab>,
    meta: &'a Meta,
    index: usize,
}

impl<'a> PacketRef<'a> {
    #[inline(always)]
    fn slab(&self) -> &'a Slab {
        self.slab
    }

    #[inline(always)]
    fn meta(&self) -> &'a Meta {
        self.meta
    }

    packet_accessors!('a);

    /// The packet as an [`OwnedPacket`], to keep after the batch is gone
    /// (no copy: it shares the batch's buffer, which goes back to the sink
    /// once every packet of it was dropped).
    pub fn to_owned_packet(&self) -> OwnedPacket {
        OwnedPacket {
            slab: Arc::clone(self.slab),
            index: self.index,
        }
    }
}

impl Deref for PacketRef<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.payload()
    }
}

impl fmt::Debug for PacketRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_packet("PacketRef", self.meta, f)
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
    /// A sink whose channel holds `capacity` packets (0 is taken as 1),
    /// with buffers for them set aside here: one per [`SINK_HAND_OVER`]
    /// packets of the capacity, plus a few for packets the consumer still
    /// holds, each with room for [`SINK_HAND_OVER`] payloads of
    /// `payload_size` bytes (a longer payload is copied whole, into a
    /// buffer of its own size).
    ///
    /// Errors (`InvalidInput`, nothing allocated): `capacity` above
    /// [`MAX_SINK_CAPACITY`], `payload_size` above [`MAX_SINK_PAYLOAD`], or
    /// buffers of more than [`MAX_SINK_POOL_BYTES`] in all.
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
        // The channel's capacity in full hand-overs, one more for a part,
        // one per sink and receiver, and the margin.
        let buffers = capacity.div_ceil(SINK_HAND_OVER) + 3 + POOL_MARGIN;
        let pool_bytes = (buffers * SINK_HAND_OVER) as u64 * payload_size as u64;
        if pool_bytes > MAX_SINK_POOL_BYTES {
            return Err(crate::error::invalid(format!(
                "a ChannelSink of {capacity} packets of {payload_size} bytes would set aside {pool_bytes} bytes of buffers ({buffers} of {SINK_HAND_OVER} packets), more than {MAX_SINK_POOL_BYTES} bytes: use a smaller capacity or payload size"
            )));
        }
        let max_envelopes = buffers * 2;
        let mut envelopes = VecDeque::with_capacity(max_envelopes);
        envelopes.extend((1..buffers).map(|_| Arc::new(Slab::with_room(payload_size))));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(buffers),
                queued: 0,
                held: 0,
                envelopes,
                made: buffers as u64,
                senders: 1,
                receivers: 1,
                receivers_waiting: 0,
                sinks_waiting: 0,
            }),
            filled: Condvar::new(),
            room: Condvar::new(),
            capacity,
            max_envelopes,
            news: AtomicU64::new(0),
            payload_size,
        });
        Ok((
            ChannelSink {
                shared: Arc::clone(&shared),
                overflow,
                dropped: Arc::new(AtomicU64::new(0)),
                disconnected: Arc::new(AtomicU64::new(0)),
                filling: Slab::with_room(payload_size),
                #[cfg(feature = "tokio")]
                wake: None,
            },
            PacketReceiver {
                shared,
                local: RefCell::new(None),
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

    /// Hand-over buffers (each for up to [`SINK_HAND_OVER`] packets) the
    /// sink has made in all: it makes more only while the consumer keeps
    /// packets of more batches than the channel's capacity holds, plus a
    /// few.
    pub fn buffers_allocated(&self) -> u64 {
        lock(&self.shared.state).made
    }
}

impl Handler for ChannelSink {
    #[inline(always)]
    fn on_packet(&mut self, packet: &Packet<'_>, ctx: &mut Context<'_>) {
        if !self.filling.fits(packet.payload.len()) {
            self.make_room(packet.payload.len(), ctx);
        }
        self.filling.push(
            packet.payload,
            Meta {
                start: 0,
                len: 0,
                cm: packet.cm,
                src: packet.src,
                flags: packet.flags,
                drops_before: packet.drops_before,
                key: ctx.key,
            },
        );
    }

    fn on_batch_end(&mut self, ctx: &mut Context<'_>) {
        if !self.filling.is_empty() {
            self.hand_over(ctx);
        }
    }
}

impl ChannelSink {
    /// The batch's buffer is full: hands it over; a payload longer than an
    /// empty buffer's room makes the buffer grow (an allocation).
    #[cold]
    #[inline(never)]
    fn make_room(&mut self, need: usize, ctx: &mut Context<'_>) {
        if !self.filling.is_empty() {
            self.hand_over(ctx);
        }
        if !self.filling.fits(need) {
            self.filling.bytes.reserve(need);
        }
    }

    /// Moves the batch into the channel under one lock: what fits goes in,
    /// in order; the rest is dropped and counted ([`Overflow::DropNewest`])
    /// or waits for room ([`Overflow::Block`]). The batch's buffer is empty
    /// afterwards.
    fn hand_over(&mut self, ctx: &mut Context<'_>) {
        let mut st = lock(&self.shared.state);
        if st.receivers == 0 {
            drop(st);
            self.receiver_gone(ctx);
            return;
        }
        let fit = self.shared.room(&st).min(self.filling.len());
        st.queue_packets(&mut self.filling, fit, self.shared.payload_size);
        if fit > 0 && st.receivers_waiting > 0 {
            self.shared.filled.notify_all();
        }
        drop(st);
        if fit > 0 {
            self.shared.tell();
            self.sent();
        }
        if !self.filling.is_empty() {
            match self.overflow {
                Overflow::DropNewest => self.drop_batch(ctx),
                Overflow::Block => self.wait_for_room(ctx),
            }
        }
    }

    /// Drops and counts the packets left in the batch.
    fn drop_batch(&mut self, ctx: &mut Context<'_>) {
        let n = self.filling.len() as u64;
        self.filling.clear();
        self.dropped.fetch_add(n, Ordering::Relaxed);
        ctx.count_overflow(n);
    }

    /// Nobody is listening any more: count the first packet of the batch,
    /// drop the rest with it, and stop reading this socket.
    #[cold]
    fn receiver_gone(&mut self, ctx: &mut Context<'_>) {
        self.filling.clear();
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
            let fit = self.shared.room(&st).min(self.filling.len());
            if fit > 0 {
                st.queue_packets(&mut self.filling, fit, self.shared.payload_size);
                if st.receivers_waiting > 0 {
                    self.shared.filled.notify_all();
                }
                // The async receiver is woken without the lock held.
                drop(st);
                self.shared.tell();
                self.sent();
                if self.filling.is_empty() {
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
            // Receivers give room back under this lock and wake the sinks
            // counted here.
            st.sinks_waiting += 1;
            st = self
                .shared
                .room
                .wait_timeout(st, BLOCK_SLICE)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            st.sinks_waiting -= 1;
        }
    }
}
