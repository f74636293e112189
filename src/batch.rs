//! Batched receive and send: [`RecvBatch`] over `recvmmsg` and
//! [`SendBatch`] over `sendmmsg`, with every buffer allocated once.

use std::fmt;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;

use crate::control::{ControlFlags, ControlMessage};
use crate::meta::RecvFlags;
use crate::packet_conn::PacketConn;
use crate::sys::mmsg::{RecvSlots, SendSlots};

/// Counters of one receive path (a [`RecvBatch`], or a socket in the
/// reactor). All of them only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[non_exhaustive]
pub struct RecvCounters {
    /// Datagrams received: one per buffer, or as many as a UDP GRO buffer
    /// holds (what [`Packet::segments`] yields; a cut GRO buffer counts its
    /// complete datagrams only).
    pub packets: u64,
    /// Payload bytes received, as copied into the buffers (without the IP
    /// header on raw `ip4:PROTO` sockets).
    pub bytes: u64,
    /// `recvmmsg` calls that returned at least one buffer (each buffer is
    /// one slot, one [`Packet`]).
    pub batches: u64,
    /// Datagrams cut to fit the slot (`MSG_TRUNC`): one per cut buffer. A
    /// cut GRO buffer counts one, the datagram cut in two; datagrams past
    /// it in the buffer are lost without a count.
    pub truncated: u64,
    /// Packets whose control messages did not all fit (`MSG_CTRUNC`).
    pub control_truncated: u64,
    /// Packets the kernel dropped on this socket, from `SO_RXQ_OVFL`
    /// (needs [`ControlFlags::DROPS`]; counted when the next packet arrives).
    pub kernel_drops: u64,
}

impl RecvCounters {
    /// Average datagrams per `recvmmsg` call that returned something.
    pub fn average_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.packets as f64 / self.batches as f64
        }
    }
}

impl std::ops::AddAssign for RecvCounters {
    fn add_assign(&mut self, other: RecvCounters) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.batches += other.batches;
        self.truncated += other.truncated;
        self.control_truncated += other.control_truncated;
        self.kernel_drops += other.kernel_drops;
    }
}

/// What the counters grew by since an earlier reading of the same
/// counters (`now - before`).
impl std::ops::Sub for RecvCounters {
    type Output = RecvCounters;

    fn sub(self, before: RecvCounters) -> RecvCounters {
        RecvCounters {
            packets: self.packets - before.packets,
            bytes: self.bytes - before.bytes,
            batches: self.batches - before.batches,
            truncated: self.truncated - before.truncated,
            control_truncated: self.control_truncated - before.control_truncated,
            kernel_drops: self.kernel_drops - before.kernel_drops,
        }
    }
}

/// One received packet, borrowed from a [`RecvBatch`] slot.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Packet<'a> {
    /// The payload (for raw `ip4:PROTO` sockets, after the IP header).
    pub payload: &'a [u8],
    /// The control messages the socket asked for.
    pub cm: ControlMessage,
    /// The source address, when [`ControlFlags::SRC`] was asked for.
    pub src: Option<SocketAddrV4>,
    /// Truncation of payload or control data.
    pub flags: RecvFlags,
    /// Packets the kernel dropped on this socket since the previous packet
    /// of this socket that carried the drop counter, whichever batch read
    /// it (0 without [`ControlFlags::DROPS`]).
    pub drops_before: u32,
}

impl<'a> Packet<'a> {
    /// Whether the payload was cut to fit the slot.
    pub fn truncated(&self) -> bool {
        self.flags.truncated
    }

    /// Whether control messages were lost for lack of room.
    pub fn control_truncated(&self) -> bool {
        self.flags.control_truncated
    }

    /// The datagrams in this buffer: one, or several when UDP GRO coalesced
    /// them ([`ControlFlags::GRO`]); each has the segment size but the last.
    /// Without GRO a buffer is always one datagram, possibly empty (a UDP
    /// datagram may carry no payload) or cut (see
    /// [`truncated`](Self::truncated)). A coalesced buffer cut short by a
    /// small slot yields only its complete datagrams, none at all when the
    /// slot is shorter than one segment: give GRO sockets slots of 64 KiB.
    pub fn segments(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let payload = self.payload;
        let n = segment_count(payload.len(), self.cm.gro_segment, self.flags.truncated);
        let seg = self.cm.gro_segment.map_or(payload.len(), usize::from);
        (0..n).map(move |i| &payload[i * seg..((i + 1) * seg).min(payload.len())])
    }

    /// How many datagrams [`segments`](Self::segments) yields.
    pub fn segment_count(&self) -> usize {
        segment_count(
            self.payload.len(),
            self.cm.gro_segment,
            self.flags.truncated,
        )
    }
}

/// The datagrams in a buffer of `len` bytes: one without GRO; with a GRO
/// segment size, the whole segments of a cut buffer, or every segment (the
/// last may be short) of a whole one.
#[inline]
fn segment_count(len: usize, gro_segment: Option<u16>, truncated: bool) -> usize {
    match gro_segment {
        None => 1,
        Some(seg) => {
            let seg = usize::from(seg).max(1);
            if truncated {
                len / seg
            } else {
                len.div_ceil(seg)
            }
        }
    }
}

#[derive(Clone, Copy, Default)]
struct SlotMeta {
    flags: RecvFlags,
    start: u32,
    drops_before: u32,
    /// The kernel's drop counter as this packet carried it (read in
    /// `recv_with` for the deltas; kept so that a socket asking for
    /// nothing else needs no second walk of its control data).
    drops: Option<u32>,
}

/// Receives up to N packets per system call (`recvmmsg`) into slots
/// allocated once: payload buffer, source address and an aligned control
/// buffer per slot. Nothing is allocated per call.
///
/// The slots follow the socket: each receive compares the socket's
/// [`control_flags`](PacketConn::control_flags) with those the slots were
/// last fitted to (one comparison per call, nothing per packet), and when
/// they differ, it fits the slots to the new flags before it reads:
/// control buffers grow (a new allocation, only when the new flags need
/// more room; they never shrink) and source-address storage is used exactly
/// when the flags hold [`ControlFlags::SRC`]. Flags raised on the socket
/// from anywhere (a handler's [`Context::conn`](crate::reactor::Context::conn),
/// [`Handle::with_conn`](crate::reactor::Handle::with_conn), another thread)
/// thus never leave the slots too small for the receives after the change
/// (a change on another thread that races with a receive in progress can
/// cut that receive's control data, which its packets report as
/// [`control_truncated`](Packet::control_truncated)). The flags given at construction
/// only size the first allocation; give the socket's own to have it right
/// from the start. Each packet's control messages are decoded from its own
/// slot.
///
/// ```
/// use ipv4_reactor::{ControlFlags, PacketConn, RecvBatch};
///
/// let flags = ControlFlags::DST | ControlFlags::TTL | ControlFlags::SRC;
/// let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// rx.set_control_flags(flags)?;
/// rx.set_nonblocking(true)?;
/// let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// for i in 0..3u8 {
///     tx.send_to(&[i; 10], None, rx.local_addr()?)?;
/// }
///
/// let mut batch = RecvBatch::new(64, 2048, flags)?;
/// let n = batch.recv(&rx)?;
/// assert_eq!(n, 3);
/// for (i, p) in batch.iter().enumerate() {
///     assert_eq!(p.payload, &[i as u8; 10]);
///     assert_eq!(p.src, Some(tx.local_addr()?));
///     assert!(!p.truncated());
/// }
/// assert_eq!(batch.counters().packets, 3);
/// // Nothing more: the socket is drained.
/// assert_eq!(batch.recv(&rx).unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct RecvBatch {
    slots: RecvSlots,
    meta: Vec<SlotMeta>,
    len: usize,
    /// The flags the slots were last fitted to: those given at construction,
    /// then the socket's at each receive (the packets' control messages are
    /// decoded with them).
    flags: ControlFlags,
    want_src: bool,
    last_drops_total: u32,
    counters: RecvCounters,
}

impl fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.slots.capacity())
            .field("control_len", &self.slots.control_size())
            .field("flags", &self.flags)
            .field("len", &self.len)
            .field("counters", &self.counters)
            .finish()
    }
}

impl RecvBatch {
    /// The most slots a batch may have (the kernel takes at most 1024
    /// messages per `recvmmsg`; past 64 a bigger batch adds nothing
    /// measurable).
    pub const MAX_SLOTS: usize = crate::sys::mmsg::MAX_SLOTS;
    /// The largest payload buffer per slot, 64 KiB: room for any UDP
    /// datagram (at most 65507 payload bytes over IPv4), any IPv4 packet of
    /// a raw socket (65535 bytes with its header) and a full UDP GRO buffer.
    pub const MAX_PAYLOAD_SIZE: usize = crate::sys::mmsg::MAX_PAYLOAD_SIZE;
    /// The largest control buffer per slot for
    /// [`with_control_len`](Self::with_control_len) (every control message
    /// together needs [`ControlFlags::ALL`]`.control_len()`, far less).
    pub const MAX_CONTROL_LEN: usize = crate::sys::mmsg::MAX_CONTROL_SIZE;

    /// A batch of `slots` packets of up to `payload_size` bytes each, with
    /// control buffers sized for `flags` (source address storage only with
    /// [`ControlFlags::SRC`]). A socket whose flags differ gets the slots
    /// fitted to its own at the first receive (see [`RecvBatch`]).
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `slots` is not in `1..=`[`MAX_SLOTS`](Self::MAX_SLOTS)
    /// or `payload_size` not in `1..=`[`MAX_PAYLOAD_SIZE`](Self::MAX_PAYLOAD_SIZE);
    /// the message names the bad value.
    pub fn new(slots: usize, payload_size: usize, flags: ControlFlags) -> io::Result<RecvBatch> {
        RecvBatch::build(
            "RecvBatch::new",
            slots,
            payload_size,
            flags,
            flags.control_len(),
        )
    }

    /// Like [`new`](Self::new) with an explicit control buffer length per
    /// slot. Meant for tests: a buffer shorter than
    /// [`ControlFlags::control_len`] loses control messages, and the
    /// packets report [`Packet::control_truncated`]. The length holds while
    /// the socket's control flags are `flags`; when they change, the slots
    /// are fitted to the new ones as in any batch.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), and when `control_len` is over
    /// [`MAX_CONTROL_LEN`](Self::MAX_CONTROL_LEN).
    pub fn with_control_len(
        slots: usize,
        payload_size: usize,
        flags: ControlFlags,
        control_len: usize,
    ) -> io::Result<RecvBatch> {
        RecvBatch::build(
            "RecvBatch::with_control_len",
            slots,
            payload_size,
            flags,
            control_len,
        )
    }

    fn build(
        what: &str,
        slots: usize,
        payload_size: usize,
        flags: ControlFlags,
        control_len: usize,
    ) -> io::Result<RecvBatch> {
        let want_src = flags.contains(ControlFlags::SRC);
        let slots = RecvSlots::new(what, slots, payload_size, want_src, control_len)?;
        Ok(RecvBatch {
            meta: vec![SlotMeta::default(); slots.capacity()],
            slots,
            len: 0,
            flags,
            want_src,
            last_drops_total: 0,
            counters: RecvCounters::default(),
        })
    }

    /// Checks batch sizes as [`new`](Self::new) does, without allocating
    /// (for builders that make batches later).
    pub(crate) fn check_sizes(what: &str, slots: usize, payload_size: usize) -> io::Result<()> {
        crate::sys::mmsg::check_sizes(
            what,
            slots,
            payload_size,
            1,
            ControlFlags::ALL.control_len(),
        )
        .map(drop)
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// The flags the slots were last fitted to: those given at
    /// construction until the first receive, then the socket's control
    /// flags as of the last receive.
    pub fn flags(&self) -> ControlFlags {
        self.flags
    }

    /// The control buffer bytes per slot (at least the
    /// [`control_len`](ControlFlags::control_len) of [`flags`](Self::flags),
    /// unless made shorter with [`with_control_len`](Self::with_control_len)).
    pub fn control_len(&self) -> usize {
        self.slots.control_size()
    }

    /// Receives what is queued, up to the number of slots, without blocking
    /// (`MSG_DONTWAIT`): returns how many packets arrived, or an error of
    /// kind `WouldBlock` when none was queued.
    pub fn recv(&mut self, conn: &PacketConn) -> io::Result<usize> {
        nothing_queued_is_an_error(self.recv_with(conn, self.slots.capacity(), libc::MSG_DONTWAIT))
    }

    /// Blocks until at least one packet arrives (on a blocking socket; the
    /// socket's read timeout applies, and its expiry is an error of kind
    /// `WouldBlock`), then returns what is queued.
    pub fn recv_wait(&mut self, conn: &PacketConn) -> io::Result<usize> {
        nothing_queued_is_an_error(self.recv_with(
            conn,
            self.slots.capacity(),
            libc::MSG_WAITFORONE,
        ))
    }

    /// Receives at most `max` packets (capped at the number of slots) with
    /// `recvmmsg` flags `flags`. Nothing queued (`EAGAIN`) is `Ok(0)`: the
    /// reactor's drains find that on most calls, and take it without an
    /// `io::Error` made and dropped.
    pub(crate) fn recv_with(
        &mut self,
        conn: &PacketConn,
        max: usize,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        self.len = 0;
        let cflags = conn.control_flags();
        // The one test per call that keeps the slots in step with the
        // socket's flags, however they were changed.
        if cflags != self.flags {
            self.fit(cflags)?;
        }
        let n = self.slots.recv(conn.as_raw_fd(), max, flags)?;
        let strip = conn.strips_ip_header();
        let want_drops = cflags.contains(ControlFlags::DROPS);
        let want_gro = cflags.contains(ControlFlags::GRO);
        let want_scan = want_drops | want_gro;
        let mut bytes = 0u64;
        // Datagrams: one per buffer (counted here), but a GRO buffer holds
        // several (corrected in the loop, without a per-packet cost when GRO
        // is off).
        self.counters.packets += n as u64;
        for i in 0..n {
            let msg_flags = self.slots.msg_flags(i);
            let meta = &mut self.meta[i];
            meta.flags = RecvFlags::from_msg_flags(msg_flags);
            meta.start = 0;
            meta.drops_before = 0;
            meta.drops = None;
            if strip {
                meta.start = crate::packet_conn::ip_header_len(self.slots.payload(i))
                    .unwrap_or(self.slots.payload_len(i)) as u32;
            }
            // The drop counter is needed now, in arrival order, for the
            // deltas, and the GRO segment size for the datagram count; the
            // rest of the control data is decoded when the packet is read.
            // One test when neither is asked for.
            if want_scan {
                // The value seen before is kept by the socket, not the
                // batch: any batch on any socket gets that socket's delta.
                if want_drops {
                    if let Some(cur) = crate::control::find_drops(self.slots.control(i)) {
                        meta.drops = Some(cur);
                        meta.drops_before = conn.drops_delta(cur);
                        self.last_drops_total = cur;
                        self.counters.kernel_drops += u64::from(meta.drops_before);
                    }
                }
                if want_gro {
                    if let Some(seg) = crate::control::find_gro(self.slots.control(i)) {
                        let len = self.slots.payload_len(i) - meta.start as usize;
                        let count = segment_count(len, Some(seg), meta.flags.truncated);
                        // packets >= n >= 1 here: the subtraction cannot wrap.
                        self.counters.packets = self.counters.packets - 1 + count as u64;
                    }
                }
            }
            if msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
                self.counters.truncated += u64::from(meta.flags.truncated);
                self.counters.control_truncated += u64::from(meta.flags.control_truncated);
            }
            bytes += (self.slots.payload_len(i) - meta.start as usize) as u64;
        }
        self.len = n;
        if n > 0 {
            self.counters.batches += 1;
            self.counters.bytes += bytes;
        }
        Ok(n)
    }

    /// Fits the slots to `flags`, the socket's new control flags: room for
    /// every control message they ask for (growing, never shrinking, the
    /// control buffers) and the source address exactly when they hold
    /// `SRC`. Called only when the flags changed.
    #[cold]
    #[inline(never)]
    fn fit(&mut self, flags: ControlFlags) -> io::Result<()> {
        let want_src = flags.contains(ControlFlags::SRC);
        self.slots.reserve(
            "RecvBatch (fitting the slots to the socket's control flags)",
            want_src,
            flags.control_len(),
        )?;
        self.want_src = want_src;
        self.flags = flags;
        Ok(())
    }

    /// How many packets the last receive returned.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last receive returned nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Packet `i` of the last receive. Its control messages are decoded
    /// from the slot on each call.
    #[inline(always)]
    pub fn get(&self, i: usize) -> Option<Packet<'_>> {
        if i >= self.len {
            return None;
        }
        let meta = &self.meta[i];
        // Nothing asked for but the drop counter, which the receive
        // already read: no second walk of the control data.
        let mut cm = if self.flags.drops_only() {
            ControlMessage {
                drops: meta.drops,
                ..ControlMessage::default()
            }
        } else {
            ControlMessage::decode(self.slots.control(i), self.flags)
        };
        let src = if self.want_src {
            let src = self.slots.src(i);
            cm.src = src.map(|s| *s.ip());
            src
        } else {
            None
        };
        let payload = self.slots.payload(i);
        Some(Packet {
            payload: &payload[meta.start as usize..],
            cm,
            src,
            flags: meta.flags,
            drops_before: meta.drops_before,
        })
    }

    /// The packets of the last receive, in arrival order.
    pub fn iter(&self) -> Packets<'_> {
        Packets {
            source: PacketSource::Batch(self),
            next: 0,
        }
    }

    /// The raw control bytes the kernel wrote for packet `i` of the last
    /// receive (empty when out of range), for tools that decode them
    /// themselves.
    pub fn raw_control(&self, i: usize) -> &[u8] {
        if i >= self.len {
            return &[];
        }
        self.slots.control(i)
    }

    /// Counters since the batch was made.
    pub fn counters(&self) -> &RecvCounters {
        &self.counters
    }

    /// The cumulative drop counter (`SO_RXQ_OVFL`) of the last packet this
    /// batch received that carried one, 0 before any: the count of the
    /// socket that packet came from. For one socket's own, whichever batch
    /// read it, see [`PacketConn::kernel_drops_seen`].
    pub fn kernel_drops_total(&self) -> u32 {
        self.last_drops_total
    }
}

/// The packets of a receive batch, in arrival order: a [`RecvBatch`]'s
/// last receive ([`RecvBatch::iter`]), or what the reactor hands a
/// [`Handler::on_packets`](crate::reactor::Handler::on_packets) at once.
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    source: PacketSource<'a>,
    next: usize,
}

#[derive(Debug, Clone)]
enum PacketSource<'a> {
    /// Decoded from the batch's slots as they are handed out.
    Batch(&'a RecvBatch),
    /// Decoded beforehand (the io_uring backend's completions).
    #[allow(dead_code)] // made only with the io-uring feature
    Decoded(&'a [Packet<'a>]),
}

/// The public receives' contract: nothing queued (`Ok(0)` inside the
/// crate) is the `EAGAIN` error the system call returned.
#[inline]
fn nothing_queued_is_an_error(received: io::Result<usize>) -> io::Result<usize> {
    match received {
        Ok(0) => Err(io::Error::from_raw_os_error(libc::EAGAIN)),
        other => other,
    }
}

impl<'a> Iterator for Packets<'a> {
    type Item = Packet<'a>;

    #[inline(always)]
    fn next(&mut self) -> Option<Packet<'a>> {
        let p = match self.source {
            PacketSource::Batch(batch) => batch.get(self.next)?,
            PacketSource::Decoded(packets) => *packets.get(self.next)?,
        };
        self.next += 1;
        Some(p)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = match self.source {
            PacketSource::Batch(batch) => batch.len,
            PacketSource::Decoded(packets) => packets.len(),
        };
        let left = len.saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Packets<'_> {}

impl<'a> Packets<'a> {
    /// Packets decoded beforehand.
    #[allow(dead_code)] // used only with the io-uring feature
    pub(crate) fn decoded(packets: &'a [Packet<'a>]) -> Packets<'a> {
        Packets {
            source: PacketSource::Decoded(packets),
            next: 0,
        }
    }

    /// How many packets this iterator has handed out.
    pub fn handed_out(&self) -> usize {
        self.next
    }
}

/// One message for [`SendBatch::send`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Message<'a> {
    /// The payload.
    pub payload: &'a [u8],
    /// Where to send it.
    pub dst: SocketAddrV4,
    /// Per-packet source address, interface, TTL and TOS, if any.
    pub cm: Option<ControlMessage>,
}

impl<'a> Message<'a> {
    /// A message with no per-packet options.
    pub fn new(payload: &'a [u8], dst: SocketAddrV4) -> Message<'a> {
        Message {
            payload,
            dst,
            cm: None,
        }
    }

    /// A message with per-packet options.
    pub fn with_control(payload: &'a [u8], dst: SocketAddrV4, cm: ControlMessage) -> Message<'a> {
        Message {
            payload,
            dst,
            cm: Some(cm),
        }
    }
}

/// Sends up to N messages per system call (`sendmmsg`), each with its own
/// destination and optional control message, with header and control
/// storage allocated once.
///
/// ```
/// use ipv4_reactor::{Message, PacketConn, SendBatch};
/// let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// let dst = rx.local_addr()?;
/// let payloads = [[1u8; 8], [2u8; 8], [3u8; 8]];
/// let msgs: Vec<Message<'_>> = payloads.iter().map(|p| Message::new(p, dst)).collect();
/// let mut batch = SendBatch::new(64)?;
/// assert_eq!(batch.send(&tx, &msgs)?, 3);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct SendBatch {
    slots: SendSlots,
}

impl fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendBatch")
            .field("capacity", &self.slots.capacity())
            .finish()
    }
}

impl SendBatch {
    /// The largest capacity (the kernel sends at most 1024 messages per
    /// `sendmmsg`).
    pub const MAX_CAPACITY: usize = crate::sys::mmsg::MAX_SLOTS;

    /// A batch of up to `capacity` messages per call.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `capacity` is not in
    /// `1..=`[`MAX_CAPACITY`](Self::MAX_CAPACITY).
    pub fn new(capacity: usize) -> io::Result<SendBatch> {
        Ok(SendBatch {
            slots: SendSlots::new(
                "SendBatch::new",
                capacity,
                crate::sys::cmsg::SEND_CONTROL_LEN,
            )?,
        })
    }

    /// The most messages one call sends.
    pub fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Sends the first `min(msgs.len(), capacity)` messages in one
    /// `sendmmsg` and returns how many the kernel took. A partial send
    /// returns its count (send the rest again); an error comes back only
    /// when nothing was sent (`WouldBlock` on a full non-blocking socket).
    pub fn send(&mut self, conn: &PacketConn, msgs: &[Message<'_>]) -> io::Result<usize> {
        if msgs.is_empty() {
            return Ok(0);
        }
        self.slots
            .send(conn.as_raw_fd(), msgs.len(), 0, |i, encoder| {
                let m = &msgs[i];
                if let Some(cm) = &m.cm {
                    cm.encode(encoder).map_err(|e| {
                        crate::error::invalid(format!("SendBatch::send, message {i}: {e}"))
                    })?;
                }
                Ok((m.payload, Some(m.dst)))
            })
    }

    /// Sends every message, looping over partial sends. When a message is
    /// refused after others went out (a full non-blocking socket, a message
    /// too long), it returns the count sent so far; the error comes back
    /// from the next call, which starts at the refused message.
    pub fn send_all(&mut self, conn: &PacketConn, msgs: &[Message<'_>]) -> io::Result<usize> {
        let mut sent = 0;
        while sent < msgs.len() {
            match self.send(conn, &msgs[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Report what went out; the next call starts at the refused
                // message and returns its error.
                Err(_) if sent > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload: &[u8], gro_segment: Option<u16>, truncated: bool) -> Packet<'_> {
        Packet {
            payload,
            cm: ControlMessage {
                gro_segment,
                ..ControlMessage::default()
            },
            src: None,
            flags: RecvFlags {
                truncated,
                control_truncated: false,
            },
            drops_before: 0,
        }
    }

    fn segments(p: &Packet<'_>) -> Vec<Vec<u8>> {
        let v: Vec<Vec<u8>> = p.segments().map(<[u8]>::to_vec).collect();
        assert_eq!(v.len(), p.segment_count());
        v
    }

    #[test]
    fn an_empty_datagram_is_one_empty_segment() {
        assert_eq!(segments(&packet(&[], None, false)), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn a_cut_gro_buffer_shorter_than_one_segment_yields_nothing() {
        let buf = [7u8; 500];
        assert!(segments(&packet(&buf, Some(1000), true)).is_empty());
        assert!(segments(&packet(&[], Some(1000), true)).is_empty());
        // A cut buffer without GRO is still its one (cut) datagram.
        assert_eq!(segments(&packet(&buf, None, true)), vec![buf.to_vec()]);
    }

    #[test]
    fn gro_buffers_split_into_whole_segments() {
        let buf: Vec<u8> = (0..25).collect();
        let whole = segments(&packet(&buf, Some(10), false));
        assert_eq!(
            whole,
            vec![buf[..10].to_vec(), buf[10..20].to_vec(), buf[20..].to_vec()]
        );
        let cut = segments(&packet(&buf, Some(10), true));
        assert_eq!(cut, vec![buf[..10].to_vec(), buf[10..20].to_vec()]);
        let exact = segments(&packet(&buf[..20], Some(10), false));
        assert_eq!(exact.len(), 2);
        for s in whole.iter().chain(&cut).chain(&exact) {
            assert!(!s.is_empty());
        }
    }
}
