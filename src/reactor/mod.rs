//! The reactor: a single-threaded mio loop that owns packet sockets, drains
//! each in batches through `recvmmsg` and hands every packet to its handler.
//!
//! # How it reads
//!
//! Every registered socket has its own [`RecvBatch`](crate::RecvBatch): slots allocated once,
//! one control buffer per slot, sized from the socket's
//! [`ControlFlags`](crate::ControlFlags) when it is registered and fitted again at the next
//! receive whenever those flags change, wherever they were changed from
//! (so a handler may raise them through [`Context::conn`]). Readiness is
//! edge-triggered, so a ready socket is read until the kernel has nothing
//! more queued, but at most `budget` packets per turn: a socket stopped by
//! its budget stays on a ready list and is served again next turn, without
//! waiting for another event, after every other ready socket had its turn.
//!
//! Packets go either to a [`Handler`] (a closure or a type), borrowed from
//! the slot, or through a [`ChannelSink`] to another thread, copied once into
//! a buffer per receive batch (handed over, and taken by the consumer, as a
//! whole). Neither path allocates in steady state.
//!
//! # Steering from other threads
//!
//! A [`Handle`] (`Send + Clone`) registers and deregisters sockets, joins and
//! leaves groups on registered sockets, reads counters and stops the loop.
//! Its calls travel over a channel and wake the loop; those that answer wait
//! for the loop to run them.
//!
//! # Foreign sources, timers, nesting
//!
//! Besides packet sockets a reactor serves any mio source with a handler
//! of its own ([`Reactor::register_source`]: a TCP stream, a Unix socket, a
//! signalfd; [`SourceKey`], [`Readiness`], [`SourceContext`]) and timers,
//! one-shot and periodic, cancellable ([`Reactor::add_timer`],
//! [`Reactor::add_periodic`]; [`TimerKey`], [`TimerContext`]), also through
//! a [`Handle`]. Source events and due timers are handled in the turn that
//! sees them, before the ready sockets are served, so a flood on one socket
//! (bounded by its budget) delays them by one turn at most.
//!
//! A reactor can be driven by another loop: it is `AsRawFd`/`AsFd` (its
//! epoll descriptor), `turn(Some(Duration::ZERO))` is its non-blocking turn,
//! and [`Reactor::needs_turn`] and [`Reactor::next_deadline`] tell the outer
//! loop when to turn it without an event; see [`Reactor::turn`].
//!
//! When an interface is re-created under joined sockets, their memberships
//! are gone and nothing says so: [`Reactor::rejoin`] and
//! [`Reactor::rejoin_all`] join them again (the kernel's behaviour per case
//! is in [`RejoinReport`](crate::RejoinReport)'s docs).
//!
//! # Handler panics
//!
//! A handler that panics is caught: the panic is counted
//! ([`ReactorCounters::handler_panics`]) and its message kept
//! ([`Reactor::take_panics`]). What happens next is the builder's
//! [`PanicPolicy`]: by default the socket whose handler panicked is
//! deregistered and dropped and the reactor goes on serving the others;
//! with [`PanicPolicy::Stop`], `run` returns an error naming the socket
//! and the panic message.
//!
//! # Example
//!
//! ```
//! use std::net::SocketAddrV4;
//! use std::time::Duration;
//! use ipv4_reactor::reactor::{from_fn, Reactor};
//! use ipv4_reactor::{ControlFlags, Interface, PacketConn};
//!
//! let lo = Interface::loopback();
//! let group: SocketAddrV4 = "239.255.7.7:0".parse().unwrap();
//! let rx = PacketConn::multicast_receiver(group, lo.clone())
//!     .control(ControlFlags::DST | ControlFlags::DROPS)
//!     .build()?;
//! let dst = SocketAddrV4::new(*group.ip(), rx.local_addr()?.port());
//!
//! let mut reactor = Reactor::builder().build()?;
//! let mut seen = 0;
//! reactor.register(rx, from_fn(move |p, ctx| {
//!     assert_eq!(p.cm.dst, Some(*group.ip()));
//!     seen += 1;
//!     if seen == 3 {
//!         ctx.stop();
//!     }
//! }))?;
//!
//! let tx = PacketConn::multicast_sender(&lo)?;
//! std::thread::sleep(Duration::from_millis(200)); // let the join settle
//! for _ in 0..3 {
//!     tx.send_to(b"tick", None, dst)?;
//! }
//! reactor.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```

//!
//! # Where things are
//!
//! One concept per file: [`ReactorBuilder`] (`builder.rs`), the loop and
//! its sockets (`event_loop.rs`), reading one socket (`drain.rs`),
//! [`Handler`] and [`Context`] (`handler.rs`), [`ChannelSink`]
//! (`channel_sink.rs`), [`Handle`] (`handle.rs`) and the state it shares
//! with the loop (`shared.rs`), [`Key`] (`key.rs`), the counters
//! (`counters.rs`), [`ReactorPool`] (`pool.rs`), the lines of a feed
//! ([`Reactor::register_feed`], `feed_lines.rs`), foreign sources
//! (`sources.rs`), timers (`timers.rs`). With the `tokio` feature, the
//! async and `try_` forms of the handle's calls are in `handle_async.rs`,
//! and the async end of a [`ChannelSink`] in the crate's `tokio` module.

mod builder;
mod channel_sink;
mod counters;
mod drain;
mod event_loop;
mod feed_lines;
mod handle;
mod handler;
mod key;
mod pool;
pub(crate) mod shared;
mod sources;
mod timers;
#[cfg(feature = "io-uring")]
mod uring;

pub use builder::{Backend, PanicPolicy, ReactorBuilder, MAX_EVENTS_CAPACITY, MAX_URING_BUFFERS};
pub use channel_sink::{
    ChannelSink, Overflow, OwnedPacket, PacketBatch, PacketBatchIter, PacketIntoIter, PacketIter,
    PacketReceiver, PacketRef, PacketTryIter, RecvError, RecvTimeoutError, TryRecvError,
    MAX_SINK_CAPACITY, MAX_SINK_PAYLOAD, MAX_SINK_POOL_BYTES, RECV_SPIN, SINK_HAND_OVER,
};
pub use counters::{ReactorCounters, SocketCounters};
pub use event_loop::Reactor;
pub use feed_lines::{FeedCounters, FeedHandler, FeedKey, FeedParts};
#[cfg(feature = "tokio")]
pub use handle::PendingCall;
pub use handle::{Handle, DEFAULT_CALL_TIMEOUT};
pub use handler::{from_fn, Context, FnHandler, Handler};
pub use key::Key;
pub use pool::{ReactorPool, MAX_POOL_REACTORS};
pub use sources::{Readiness, SourceContext, SourceKey};
pub use timers::{TimerContext, TimerKey};
