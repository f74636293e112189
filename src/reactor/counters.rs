//! Counters of registered sockets and of the reactor.

use std::ops::AddAssign;
use std::time::Duration;

use crate::batch::RecvCounters;

#[allow(unused_imports)] // for the docs
use super::{ChannelSink, Handler, Overflow, ReactorBuilder};

/// Counters of one registered socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[non_exhaustive]
pub struct SocketCounters {
    /// Packets, bytes, batches, truncations and kernel drops.
    pub recv: RecvCounters,
    /// Packets a handler dropped for lack of room downstream (a full
    /// [`ChannelSink`] with [`Overflow::DropNewest`]).
    pub overflow_drops: u64,
    /// Receive errors other than "nothing queued". After an error, the
    /// socket is read again on the next turn; when that fails too (with
    /// nothing received in between), it is read again only on its next
    /// readiness event or after a wait that doubles with every further
    /// error, from 1 ms up to 1 s, so that a socket whose every receive
    /// fails cannot make the reactor spin. Each error also goes to
    /// [`Handler::on_error`], which may deregister the socket.
    pub recv_errors: u64,
    /// Times the socket stopped at its budget with packets still queued.
    pub budget_stops: u64,
    /// io_uring backend ([`Backend::IoUring`](super::Backend::IoUring)):
    /// times the socket's receive stopped because every provided buffer
    /// was waiting for the handler (`ENOBUFS`). Nothing is lost then: the
    /// packets stay queued in the socket (or, if it overflows, show as
    /// kernel drops) and the receive is armed again once the buffers are
    /// given back. Raise [`ReactorBuilder::uring_buffers`] when it grows
    /// fast. Always 0 with the mio backend.
    pub no_buffers: u64,
    /// Time spent in the handler, when the reactor measures it
    /// ([`ReactorBuilder::measure_handler_time`]); zero otherwise.
    pub handler_time: Duration,
}

/// Counters of a reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[non_exhaustive]
pub struct ReactorCounters {
    /// Calls to `turn`; in `run`, one per loop iteration: a full turn, a
    /// wake-up of the epoll-mode loop over sockets alone, or a pass of the
    /// spin loop over them (see [`Reactor::run`](super::Reactor::run)).
    pub turns: u64,
    /// Times the reactor asked epoll for readiness (`epoll_wait`): about
    /// once per turn in epoll mode; in spin mode only after registrations
    /// and commands, and once in 64 turns while foreign sources are
    /// registered.
    pub polls: u64,
    /// Readiness events received.
    pub events: u64,
    /// Commands from handles run.
    pub commands: u64,
    /// Handler panics caught.
    pub handler_panics: u64,
    /// Panics of [`Handle::call`](super::Handle::call) closures caught (the caller got an error
    /// with the panic message).
    pub command_panics: u64,
    /// Sockets registered now.
    pub sockets: usize,
    /// Foreign sources registered now.
    pub sources: usize,
    /// Timers pending now.
    pub timers: usize,
    /// Readiness events of foreign sources
    /// ([`Reactor::register_source`](super::Reactor::register_source)), each one a handler call.
    pub source_events: u64,
    /// Timer firings ([`Reactor::add_timer`](super::Reactor::add_timer),
    /// [`Reactor::add_periodic`](super::Reactor::add_periodic)).
    pub timer_firings: u64,
    /// Memberships joined again by [`Reactor::rejoin`](super::Reactor::rejoin) and
    /// [`Reactor::rejoin_all`](super::Reactor::rejoin_all) (interfaces re-created).
    pub rejoined: u64,
    /// Rejoins that failed (the interface was not there yet, or the
    /// kernel refused): each one's error went to the caller.
    pub rejoin_errors: u64,
    /// The sum over every socket ever registered.
    pub total: SocketCounters,
}

impl AddAssign for SocketCounters {
    fn add_assign(&mut self, other: SocketCounters) {
        self.recv += other.recv;
        self.overflow_drops += other.overflow_drops;
        self.recv_errors += other.recv_errors;
        self.budget_stops += other.budget_stops;
        self.no_buffers += other.no_buffers;
        self.handler_time += other.handler_time;
    }
}
