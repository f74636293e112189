//! The io_uring backend: one ring per reactor, a multishot `recvmsg` per
//! socket reading into a provided buffer ring of its own.
//!
//! Completions are taken from the ring each turn ([`Uring::collect`]) into
//! the socket's queue of filled buffers (bounded by its buffer count: each
//! completion with data holds one buffer) and the socket goes on the
//! reactor's ready list; serving it ([`drain_uring`]) hands each packet to
//! the same [`Deliver`] as the mio backend, within the same budget, and
//! gives each buffer back once the handler has returned. A receive that
//! ended (no `IORING_CQE_F_MORE`: out of buffers, an error, a full
//! completion queue) is armed again once every buffer is back.
//!
//! `user_data` of a socket's request: slot (32 bits), low 16 bits of the
//! registration's generation, arm sequence (8 bits), name length (8 bits).
//! A completion whose slot holds another registration is stale (its
//! buffer group is gone with the old socket) and ignored.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;

use super::drain::{Deliver, DrainRules, Outcome, Socket};
use super::{Context, Key};
use crate::batch::{Packet, Packets};
use crate::control::{ControlFlags, ControlMessage};
use crate::meta::RecvFlags;
use crate::packet_conn::PacketConn;
use crate::sys::uring::{name_addr, Ring, NAME_LEN, OUT_HEADER};

/// Control bytes per buffer: room for every control message, so a change
/// of the socket's flags never needs new buffers.
const CONTROL_LEN: usize = ControlFlags::ALL.control_len();
/// Submission queue entries (only arms are submitted).
const SQ_ENTRIES: u32 = 64;
/// Runs of the kernel's deferred receive work per collect, at most.
const PUMPS_PER_TURN: usize = 8;

/// A filled buffer waiting for the handler.
#[derive(Clone, Copy)]
struct Filled {
    bid: u16,
    name_len: u8,
    len: u32,
}

/// A registered socket's side of the ring.
struct Sock {
    generation: u16,
    bgid: u16,
    /// Sequence of the current arm (a new one after a re-arm).
    arm: u8,
    armed: bool,
    /// Name bytes per buffer of the current arm (0 or `sockaddr_in`).
    name_len: u8,
    fd: RawFd,
    filled: VecDeque<Filled>,
    /// An error that ended the receive, for the handler after the packets.
    error: Option<i32>,
    /// `ENOBUFS` ends not yet added to the socket's counters.
    no_buffers: u64,
    /// Listed in [`Uring::touched`] by the last collect.
    touched: bool,
    /// Room for one batch of decoded packets (capacity [`Uring::batch`],
    /// always empty between batches: its lifetime is that of no borrow).
    packets: Vec<Packet<'static>>,
    /// The buffers of the batch being delivered (capacity [`Uring::batch`]).
    bids: Vec<u16>,
}

/// An empty vector of packets, its allocation kept, for packets of another
/// lifetime (the standard library collects in place when the element
/// layouts match, so nothing is allocated).
// `filter_map` because the element type changes (its lifetime), which
// `filter` cannot do.
#[allow(clippy::unnecessary_filter_map)]
fn relabel<'b>(mut packets: Vec<Packet<'_>>) -> Vec<Packet<'b>> {
    packets.clear();
    packets.into_iter().filter_map(|_| None).collect()
}

impl Sock {
    fn user_data(&self, slot: usize) -> u64 {
        (slot as u64 & 0xffff_ffff)
            | (u64::from(self.generation) << 32)
            | (u64::from(self.arm) << 48)
            | (u64::from(self.name_len) << 56)
    }
}

/// The backend's state, owned by the reactor.
pub(super) struct Uring {
    ring: Ring,
    socks: Vec<Option<Sock>>,
    /// Slots that got completions in the last [`collect`](Self::collect).
    touched: Vec<usize>,
    buffers: u16,
    buf_size: usize,
    /// The most packets handed to a handler at once
    /// ([`Handler::on_packets`](super::Handler::on_packets)): the builder's
    /// `batch_slots`, as one `recvmmsg` of the mio backend.
    batch: usize,
}

impl Uring {
    pub(super) fn new(
        buffers: usize,
        payload_size: usize,
        completions: usize,
        batch: usize,
    ) -> io::Result<Uring> {
        let ring = Ring::new(SQ_ENTRIES, completions as u32).map_err(|u| {
            io::Error::from(crate::Error::BackendUnavailable {
                backend: "io_uring",
                missing: u.missing,
                source: u.source,
            })
        })?;
        Ok(Uring {
            ring,
            socks: Vec::new(),
            touched: Vec::new(),
            buffers: buffers as u16,
            buf_size: OUT_HEADER + NAME_LEN + CONTROL_LEN + payload_size,
            batch: batch.max(1),
        })
    }

    /// The ring's descriptor, for the reactor's epoll.
    pub(super) fn fd(&self) -> RawFd {
        self.ring.fd()
    }

    /// Gives the socket in `slot` a buffer ring and arms its receive.
    pub(super) fn add(&mut self, slot: usize, key: Key, conn: &PacketConn) -> io::Result<()> {
        if slot > u32::MAX as usize {
            return Err(crate::error::invalid(
                "the io_uring backend serves at most 2^32 sockets per reactor",
            ));
        }
        let bgid = self
            .ring
            .add_group(self.buffers, self.buf_size)
            .map_err(|e| {
                crate::error::os_with_hint("io_uring: registering a socket's buffer ring", e)
            })?;
        if self.socks.len() <= slot {
            self.socks.resize_with(slot + 1, || None);
        }
        self.touched.reserve(self.socks.len());
        let mut sock = Sock {
            generation: key.generation() as u16,
            bgid,
            arm: 0,
            armed: false,
            name_len: 0,
            fd: conn.as_raw_fd(),
            filled: VecDeque::with_capacity(usize::from(self.buffers)),
            error: None,
            no_buffers: 0,
            touched: false,
            packets: Vec::with_capacity(self.batch),
            bids: Vec::with_capacity(self.batch),
        };
        // Before the first turn the ring is not enabled yet: the first
        // collect arms every socket.
        if self.ring.is_enabled() {
            if let Err(e) = arm(&mut self.ring, &mut sock, slot) {
                self.ring.remove_group(bgid, None);
                return Err(crate::error::os_with_hint(
                    "io_uring: arming a socket's multishot recvmsg",
                    e,
                ));
            }
        }
        self.socks[slot] = Some(sock);
        Ok(())
    }

    /// Cancels the socket's receive and frees its buffers (packets received
    /// into them and not yet delivered go with them).
    pub(super) fn remove(&mut self, slot: usize) {
        if let Some(sock) = self.socks.get_mut(slot).and_then(Option::take) {
            let ud = sock.armed.then(|| sock.user_data(slot));
            self.ring.remove_group(sock.bgid, ud);
        }
    }

    /// Enables the ring for this thread (the first turn) and arms the
    /// sockets registered before.
    #[cold]
    fn enable(&mut self) -> io::Result<()> {
        self.ring.enable()?;
        for (slot, sock) in self.socks.iter_mut().enumerate() {
            if let Some(sock) = sock {
                arm(&mut self.ring, sock, slot).map_err(|e| {
                    crate::error::os_with_hint("io_uring: arming a socket's multishot recvmsg", e)
                })?;
            }
        }
        Ok(())
    }

    /// Whether completions (or work that posts them) are waiting.
    pub(super) fn has_work(&mut self) -> bool {
        self.ring.has_work()
    }

    /// Runs the kernel's pending work if the ring asks for it, then moves
    /// every completion to its socket's queue; returns the slots that got
    /// something to serve (to put on the ready list).
    pub(super) fn collect(&mut self) -> io::Result<&[usize]> {
        if !self.ring.is_enabled() {
            self.enable()?;
        }
        let socks = &mut self.socks;
        let touched = &mut self.touched;
        for &slot in touched.iter() {
            if let Some(Some(sock)) = socks.get_mut(slot) {
                sock.touched = false;
            }
        }
        touched.clear();
        // The kernel's receive work for a socket stops after a few dozen
        // packets and queues itself again: run it again while it does (up
        // to a bound), so that one turn takes what a recvmmsg loop would.
        for _ in 0..PUMPS_PER_TURN {
            if !self.ring.pump()? {
                break;
            }
            self.ring.reap(usize::MAX, |c| {
                let ud = c.user_data;
                let slot = (ud & 0xffff_ffff) as usize;
                let generation = (ud >> 32) as u16;
                let arm = (ud >> 48) as u8;
                let name_len = (ud >> 56) as u8;
                let Some(sock) = socks
                    .get_mut(slot)
                    .and_then(Option::as_mut)
                    .filter(|s| s.generation == generation)
                else {
                    return;
                };
                if let Some(bid) = c.buffer {
                    sock.filled.push_back(Filled {
                        bid,
                        name_len,
                        len: c.result.max(0) as u32,
                    });
                } else if c.result < 0 {
                    match -c.result {
                        libc::ENOBUFS => sock.no_buffers += 1,
                        libc::ECANCELED => {}
                        errno => sock.error = Some(errno),
                    }
                }
                if !c.more && arm == sock.arm {
                    sock.armed = false;
                }
                if !sock.touched {
                    sock.touched = true;
                    touched.push(slot);
                }
            });
        }
        Ok(&self.touched)
    }
}

/// Arms (again) the socket's multishot receive. Every buffer has room for
/// the source address and for every control message, whatever the flags:
/// a change of the socket's flags (from a handler, a handle, another
/// thread) then applies to the very next packet the kernel receives, as
/// with the mio backend, without a new arm (the address costs the kernel a
/// 16-byte copy per packet).
fn arm(ring: &mut Ring, sock: &mut Sock, slot: usize) -> io::Result<()> {
    sock.arm = sock.arm.wrapping_add(1);
    sock.name_len = NAME_LEN as u8;
    ring.arm(
        sock.bgid,
        sock.fd,
        sock.user_data(slot),
        usize::from(sock.name_len),
        CONTROL_LEN,
    )?;
    sock.armed = true;
    Ok(())
}

/// Serves one socket of the io_uring backend: its filled buffers, in
/// arrival order, at most `budget` of them, each given back after the
/// handler returned; then its receive is armed again if it had ended.
pub(super) fn drain_uring<D: Deliver + ?Sized>(
    uring: &mut Uring,
    slot: usize,
    socket: Socket<'_>,
    handler: &mut D,
    rules: DrainRules,
    stop_requested: &AtomicBool,
) -> Outcome {
    // A multishot receive hands over what it completed: there is no
    // receive call to make again, so `until_empty` has nothing to do here.
    let DrainRules {
        budget, measure, ..
    } = rules;
    let Socket {
        key,
        conn,
        counters,
        ..
    } = socket;
    let mut ctx = Context::new(key, conn, stop_requested);
    let mut out = Outcome::default();
    let Some(sock) = uring.socks.get_mut(slot).and_then(Option::as_mut) else {
        out.drained = true;
        return out;
    };
    let ring = &mut uring.ring;
    let cflags = conn.control_flags();
    let strip = conn.strips_ip_header();
    let want_drops = cflags.contains(ControlFlags::DROPS);
    let want_gro = cflags.contains(ControlFlags::GRO);
    let want_src = cflags.contains(ControlFlags::SRC);
    let drops_only = cflags.drops_only();
    let recv = &mut counters.recv;
    let bgid = sock.bgid;
    let mut malformed = 0u64;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let started = measure.then(std::time::Instant::now);
        while out.packets < budget && !sock.filled.is_empty() {
            // Decode a batch: packets borrowing the ring's buffers.
            let want = uring.batch.min(budget - out.packets);
            let mut packets = relabel(std::mem::take(&mut sock.packets));
            sock.bids.clear();
            while packets.len() < want {
                let Some(f) = sock.filled.pop_front() else {
                    break;
                };
                sock.bids.push(f.bid);
                let Some(msg) = ring.message(
                    bgid,
                    f.bid,
                    f.len as usize,
                    usize::from(f.name_len),
                    CONTROL_LEN,
                ) else {
                    // Shorter than the kernel's own header: counted as a
                    // receive error, never seen in practice.
                    malformed += 1;
                    continue;
                };
                let mut flags = RecvFlags::from_msg_flags(msg.flags);
                flags.truncated |= msg.payload_len > msg.payload.len();
                let mut payload = msg.payload;
                if strip {
                    let start = crate::packet_conn::ip_header_len(payload).unwrap_or(payload.len());
                    payload = &payload[start..];
                }
                // One walk of the control data: all that is asked for, or
                // the drop counter alone.
                let mut cm = if drops_only {
                    ControlMessage {
                        drops: crate::control::find_drops(msg.control),
                        ..ControlMessage::default()
                    }
                } else {
                    ControlMessage::decode(msg.control, cflags)
                };
                let mut drops_before = 0;
                recv.packets += 1;
                if want_drops {
                    if let Some(cur) = cm.drops {
                        drops_before = conn.drops_delta(cur);
                        recv.kernel_drops += u64::from(drops_before);
                    }
                }
                if want_gro {
                    if let Some(seg) = cm.gro_segment {
                        let seg = usize::from(seg).max(1);
                        let count = if flags.truncated {
                            payload.len() / seg
                        } else {
                            payload.len().div_ceil(seg)
                        };
                        recv.packets = recv.packets - 1 + count as u64;
                    }
                }
                recv.truncated += u64::from(flags.truncated);
                recv.control_truncated += u64::from(flags.control_truncated);
                recv.bytes += payload.len() as u64;
                let src = if want_src { name_addr(msg.name) } else { None };
                cm.src = src.map(|s| *s.ip());
                packets.push(Packet {
                    payload,
                    cm,
                    src,
                    flags,
                    drops_before,
                });
            }
            if !packets.is_empty() {
                recv.batches += 1;
                let mut handed = Packets::decoded(&packets);
                handler.on_packets(&mut handed, &mut ctx);
                out.packets += handed.handed_out();
            }
            // The handler is done with them: the buffers go back.
            sock.packets = relabel(packets);
            for &bid in &sock.bids {
                ring.recycle(bgid, bid);
            }
            ring.publish(bgid);
            handler.on_batch_end(&mut ctx);
            if ctx.deregister || ctx.stop || ctx.stop_requested() {
                break;
            }
        }
        if let Some(t) = started {
            counters.handler_time += t.elapsed();
        }
    }));
    counters.recv_errors += malformed;
    counters.overflow_drops += ctx.overflow_drops;
    counters.no_buffers += std::mem::take(&mut sock.no_buffers);
    out.stop = ctx.stop;
    out.deregister = ctx.deregister;
    if let Err(payload) = result {
        out.panic = Some(payload);
        return out;
    }
    if ctx.deregister {
        return out;
    }
    if sock.filled.is_empty() {
        out.drained = true;
        if let Some(errno) = sock.error.take() {
            let e = io::Error::from_raw_os_error(errno);
            if !report(e, handler, &mut ctx, counters, &mut out) {
                return out;
            }
        }
        // Every buffer is back: arm again if the receive ended (also after
        // an error: a socket whose receives keep failing is not queued
        // again while it backs off, see Reactor::collect_uring, so the
        // error completions this may bring wait for its retry).
        if !sock.armed && !out.deregister {
            if let Err(e) = arm(ring, sock, slot) {
                report(e, handler, &mut ctx, counters, &mut out);
            }
        }
    }
    out
}

/// A receive error: counted, handed to the handler (a panic caught), what
/// the handler asked recorded in `out`; false when it panicked.
fn report<D: Deliver + ?Sized>(
    e: io::Error,
    handler: &mut D,
    ctx: &mut Context<'_>,
    counters: &mut super::SocketCounters,
    out: &mut Outcome,
) -> bool {
    counters.recv_errors += 1;
    out.failed = true;
    let result = catch_unwind(AssertUnwindSafe(|| handler.on_error(e, ctx)));
    out.deregister = ctx.deregister;
    out.stop |= ctx.stop;
    match result {
        Ok(()) => true,
        Err(payload) => {
            out.panic = Some(payload);
            false
        }
    }
}
