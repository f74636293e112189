//! What the reactor calls with each packet: a [`Handler`] (a type or a
//! closure), with a [`Context`] to act on the reactor from inside it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Key;
use crate::batch::{Packet, Packets};
use crate::packet_conn::PacketConn;

#[allow(unused_imports)] // for the docs
use super::SocketCounters;

/// What a handler may do besides reading the packet: stop the reactor,
/// deregister its own socket, use the socket (to reply, or to join and leave
/// groups), count an overflow.
pub struct Context<'a> {
    pub(crate) key: Key,
    pub(crate) conn: &'a PacketConn,
    pub(crate) stop: bool,
    pub(crate) deregister: bool,
    pub(crate) overflow_drops: u64,
    /// The reactor's shared stop flag, set by [`Handle::stop`](super::Handle::stop).
    pub(crate) stop_requested: &'a AtomicBool,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("key", &self.key)
            .field("stop", &self.stop)
            .field("deregister", &self.deregister)
            .finish()
    }
}

impl<'a> Context<'a> {
    /// The context of a drain of socket `key`: nothing asked yet.
    pub(crate) fn new(key: Key, conn: &'a PacketConn, stop_requested: &'a AtomicBool) -> Self {
        Context {
            key,
            conn,
            stop: false,
            deregister: false,
            overflow_drops: 0,
            stop_requested,
        }
    }

    /// The key of the socket the packet came from.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The socket the packet came from.
    pub fn conn(&self) -> &'a PacketConn {
        self.conn
    }

    /// Stops the reactor after this batch: `run` returns.
    pub fn stop(&mut self) {
        self.stop = true;
    }

    /// Whether a [`Handle`](super::Handle) asked the reactor to stop. A
    /// handler that waits for something (room downstream, a lock) should
    /// look at it while it waits and give up when it turns true: the
    /// reactor cannot stop while a handler waits.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// Deregisters this socket after this packet; the rest of its batch is
    /// not delivered, and the socket and its handler are dropped.
    pub fn deregister(&mut self) {
        self.deregister = true;
    }

    /// Counts packets this handler had to drop for lack of room downstream;
    /// they show in [`SocketCounters::overflow_drops`](super::SocketCounters).
    pub fn count_overflow(&mut self, packets: u64) {
        self.overflow_drops += packets;
    }
}

/// Receives each packet of a registered socket, borrowed from the
/// reactor's slot: no copy, no allocation.
///
/// Closures `FnMut(&Packet<'_>, &mut Context<'_>)` are handlers too: wrap
/// one in [`from_fn`] and its parameter types need no annotation.
///
/// ```
/// use ipv4_reactor::reactor::{Context, Handler};
/// use ipv4_reactor::Packet;
///
/// struct CountBytes(u64);
/// impl Handler for CountBytes {
///     fn on_packet(&mut self, packet: &Packet<'_>, _ctx: &mut Context<'_>) {
///         self.0 += packet.payload.len() as u64;
///     }
/// }
/// ```
pub trait Handler: Send + 'static {
    /// Called once per packet, in arrival order.
    fn on_packet(&mut self, packet: &Packet<'_>, ctx: &mut Context<'_>);

    /// Called once per receive batch (one `recvmmsg`) with its packets, in
    /// arrival order. The default hands each to
    /// [`on_packet`](Handler::on_packet) and stops after a packet whose
    /// handler called [`Context::deregister`] (the rest of the batch goes
    /// with the socket).
    ///
    /// There is rarely a reason to override it: the reactor reaches a
    /// handler through a `dyn Handler` pointer, and this default, compiled
    /// for each handler type, is that one call per batch, the per-packet
    /// calls to `on_packet` inside it being direct (and inlined) ones. A
    /// handler that overrides it should hand out the packets it takes with
    /// `packets.next()` and stop after a deregistration too; the reactor
    /// counts the packets delivered with [`Packets::handed_out`].
    #[inline]
    fn on_packets(&mut self, packets: &mut Packets<'_>, ctx: &mut Context<'_>) {
        each_packet(packets, ctx, |p, ctx| self.on_packet(p, ctx));
    }

    /// Called when receiving fails with something other than "nothing
    /// queued" (for example a pending ICMP error on a connected socket).
    /// The socket stays registered (call [`Context::deregister`] to drop
    /// it); a socket that keeps failing is read less and less often, as
    /// [`SocketCounters::recv_errors`](super::SocketCounters::recv_errors)
    /// describes. The default ignores the error; it is counted there.
    fn on_error(&mut self, error: std::io::Error, ctx: &mut Context<'_>) {
        let _ = (error, ctx);
    }

    /// Called after the packets of one receive batch (one `recvmmsg`) were
    /// handed to [`on_packet`](Handler::on_packet), before the reactor reads
    /// the socket again or moves on: the place to hand over, flush or
    /// publish what the batch's packets gathered, once per batch instead of
    /// once per packet ([`ChannelSink`](super::ChannelSink) does). Not
    /// called after a batch whose handler panicked. The default does
    /// nothing.
    fn on_batch_end(&mut self, ctx: &mut Context<'_>) {
        let _ = ctx;
    }
}

/// Hands each packet to `on_packet` in order, stopping after a packet
/// whose handler deregistered the socket: the default `on_packets` of
/// handlers and of the reactor's other deliveries (`drain.rs`).
#[inline(always)]
pub(super) fn each_packet(
    packets: &mut Packets<'_>,
    ctx: &mut Context<'_>,
    mut on_packet: impl FnMut(&Packet<'_>, &mut Context<'_>),
) {
    for packet in packets {
        on_packet(&packet, ctx);
        if ctx.deregister {
            break;
        }
    }
}

impl<F> Handler for F
where
    F: FnMut(&Packet<'_>, &mut Context<'_>) + Send + 'static,
{
    fn on_packet(&mut self, packet: &Packet<'_>, ctx: &mut Context<'_>) {
        self(packet, ctx)
    }
}

/// A handler made from a closure; see [`from_fn`].
pub struct FnHandler<F>(F);

impl<F> fmt::Debug for FnHandler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnHandler")
    }
}

impl<F> Handler for FnHandler<F>
where
    F: FnMut(&Packet<'_>, &mut Context<'_>) + Send + 'static,
{
    #[inline]
    fn on_packet(&mut self, packet: &Packet<'_>, ctx: &mut Context<'_>) {
        (self.0)(packet, ctx)
    }
}

/// Makes a handler of a closure, whose parameter types are then inferred:
/// `reactor.register(conn, from_fn(|p, ctx| ...))`. (A closure passed to
/// `register` directly is a handler too, but Rust asks for its parameter
/// types there.)
///
/// ```
/// use ipv4_reactor::reactor::{from_fn, Reactor};
/// use ipv4_reactor::PacketConn;
///
/// let mut reactor = Reactor::builder().build()?;
/// let conn = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// let mut bytes = 0;
/// reactor.register(conn, from_fn(move |p, ctx| {
///     bytes += p.payload.len();
///     if bytes > 1_000_000 {
///         ctx.stop();
///     }
/// }))?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn from_fn<F>(f: F) -> FnHandler<F>
where
    F: FnMut(&Packet<'_>, &mut Context<'_>) + Send + 'static,
{
    FnHandler(f)
}
