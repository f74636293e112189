//! Reading one socket: batches until nothing is queued or its budget is
//! spent, each packet handed to the socket's handler.

use std::any::Any;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;

use super::{Context, Handler, Key, SocketCounters};
use crate::batch::{Packet, Packets, RecvBatch};
use crate::packet_conn::PacketConn;

/// Where a drain hands packets: a socket's own [`Handler`], or one line of
/// a feed (see `feed_lines.rs`).
pub(super) trait Deliver {
    fn on_packet(&mut self, packet: &Packet<'_>, ctx: &mut Context<'_>);
    fn on_error(&mut self, error: io::Error, ctx: &mut Context<'_>);
    fn on_batch_end(&mut self, _ctx: &mut Context<'_>) {}

    /// The packets of one batch, as [`Handler::on_packets`].
    #[inline]
    fn on_packets(&mut self, packets: &mut Packets<'_>, ctx: &mut Context<'_>) {
        super::handler::each_packet(packets, ctx, |p, ctx| self.on_packet(p, ctx));
    }
}

impl Deliver for Box<dyn Handler> {
    #[inline]
    fn on_packet(&mut self, packet: &Packet<'_>, ctx: &mut Context<'_>) {
        (**self).on_packet(packet, ctx)
    }

    /// One dynamic call per batch: the handler's own `on_packets` calls
    /// its `on_packet` directly.
    #[inline]
    fn on_packets(&mut self, packets: &mut Packets<'_>, ctx: &mut Context<'_>) {
        (**self).on_packets(packets, ctx)
    }

    fn on_error(&mut self, error: io::Error, ctx: &mut Context<'_>) {
        (**self).on_error(error, ctx)
    }

    #[inline]
    fn on_batch_end(&mut self, ctx: &mut Context<'_>) {
        (**self).on_batch_end(ctx)
    }
}

/// How a drain reads a socket: the reactor's settings.
#[derive(Clone, Copy, Debug)]
pub(super) struct DrainRules {
    /// The most packets delivered from one socket per turn.
    pub(super) budget: usize,
    /// Time the handler (two clock reads per batch).
    pub(super) measure: bool,
    /// After a batch shorter than asked, read again until a receive finds
    /// nothing queued (see [`ReactorBuilder::read_until_empty`](super::ReactorBuilder::read_until_empty)).
    pub(super) until_empty: bool,
}

/// The parts of a registered socket a drain works on.
pub(super) struct Socket<'a> {
    pub(super) key: Key,
    pub(super) conn: &'a PacketConn,
    pub(super) batch: &'a mut RecvBatch,
    pub(super) counters: &'a mut SocketCounters,
}

#[derive(Default)]
pub(super) struct Outcome {
    pub(super) packets: usize,
    pub(super) drained: bool,
    pub(super) stop: bool,
    pub(super) deregister: bool,
    /// Ended in a receive error other than "nothing queued".
    pub(super) failed: bool,
    pub(super) panic: Option<Box<dyn Any + Send>>,
}

impl Outcome {
    /// Read until nothing was queued, and nothing else happened: no error,
    /// panic, stop or deregistration.
    #[inline]
    pub(super) fn is_quiet(&self) -> bool {
        self.drained && !self.failed && !self.stop && !self.deregister && self.panic.is_none()
    }
}

/// Reads one socket until nothing is queued or its budget is spent.
pub(super) fn drain<D: Deliver + ?Sized>(
    socket: Socket<'_>,
    handler: &mut D,
    rules: DrainRules,
    stop_requested: &AtomicBool,
) -> Outcome {
    let DrainRules {
        budget,
        measure,
        until_empty,
    } = rules;
    let Socket {
        key,
        conn,
        batch,
        counters,
    } = socket;
    let mut ctx = Context::new(key, conn, stop_requested);
    let mut out = Outcome::default();
    let before = *batch.counters();
    // Whether a receive returned packets (an idle drain leaves the batch's
    // counters as they were: nothing to add).
    let mut received = false;
    let result = catch_unwind(AssertUnwindSafe(|| {
        while out.packets < budget {
            let want = batch.capacity().min(budget - out.packets);
            match batch.recv_with(ctx.conn, want, libc::MSG_DONTWAIT) {
                // Nothing queued.
                Ok(0) => {
                    out.drained = true;
                    return;
                }
                Ok(n) => {
                    received = true;
                    let started = measure.then(std::time::Instant::now);
                    let mut packets = batch.iter();
                    handler.on_packets(&mut packets, &mut ctx);
                    out.packets += packets.handed_out();
                    handler.on_batch_end(&mut ctx);
                    if let Some(t) = started {
                        counters.handler_time += t.elapsed();
                    }
                    if ctx.deregister {
                        return;
                    }
                    // Fewer than asked: the queue was empty when the call
                    // returned. Without `until_empty`, stop here: a later
                    // packet raises a new edge (one receive fewer per
                    // wake-up, but a packet that arrived while the handler
                    // ran waits for the next epoll_wait and turn).
                    if n < want && !until_empty {
                        out.drained = true;
                        return;
                    }
                    // One load per batch: a handle's stop ends a long drain
                    // (and a blocking sink drops the rest of a batch).
                    if ctx.stop || ctx.stop_requested() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    counters.recv_errors += 1;
                    out.failed = true;
                    handler.on_error(e, &mut ctx);
                    // The reactor decides when to try again (after_error):
                    // an error that repeats on every call must hold the
                    // loop neither inside this turn nor turn after turn.
                    return;
                }
            }
        }
    }));
    if received {
        counters.recv += *batch.counters() - before;
    }
    counters.overflow_drops += ctx.overflow_drops;
    out.stop = ctx.stop;
    out.deregister = ctx.deregister;
    if let Err(payload) = result {
        out.panic = Some(payload);
    }
    out
}
