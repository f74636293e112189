//! Settings of a reactor.

use std::io;
use std::thread;

use super::{Handle, Reactor};
use crate::batch::RecvBatch;

/// The most readiness events a reactor takes per poll
/// ([`ReactorBuilder::events_capacity`]).
pub const MAX_EVENTS_CAPACITY: usize = 1 << 20;

/// What the reactor does when a handler panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PanicPolicy {
    /// Deregister and drop the socket whose handler panicked; serve the rest.
    #[default]
    DeregisterSocket,
    /// Deregister the socket, then stop: `run` returns an error.
    Stop,
}

/// How a reactor reads its sockets ([`ReactorBuilder::backend`]).
///
/// ```
/// use ipv4_reactor::reactor::{Backend, Reactor};
///
/// // io_uring where this build, kernel and process allow it, mio otherwise.
/// let reactor = Reactor::builder().backend(Backend::IoUringOrMio).build()?;
/// assert!(matches!(reactor.backend(), Backend::Mio | Backend::IoUring));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// epoll readiness through mio, `recvmmsg` into each socket's
    /// [`RecvBatch`] (the default; runs everywhere).
    #[default]
    Mio,
    /// io_uring (needs the `io-uring` feature and Linux 6.0 or later): one
    /// ring per reactor, a multishot `recvmsg` per socket reading into a
    /// provided buffer ring of its own, completions read from shared
    /// memory. [`ReactorBuilder::build`] probes the kernel and fails with
    /// [`Error::BackendUnavailable`](crate::Error::BackendUnavailable)
    /// (kind `Unsupported`) naming what is missing: io_uring itself
    /// (`kernel.io_uring_disabled`, a seccomp filter), multishot `recvmsg`,
    /// provided buffer rings, synchronous cancellation, or the feature in
    /// this build.
    IoUring,
    /// [`IoUring`](Self::IoUring) when it can run, else [`Mio`](Self::Mio):
    /// [`Reactor::backend`] tells which runs, and
    /// [`Reactor::backend_fallback`] why io_uring did not.
    IoUringOrMio,
}

/// Settings of a reactor; see [`Reactor::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ReactorBuilder {
    pub(super) slots: usize,
    pub(super) payload_size: usize,
    pub(super) budget: usize,
    pub(super) events: usize,
    pub(super) spin: bool,
    pub(super) busy_poll: Option<u32>,
    pub(super) pin_cpu: Option<usize>,
    pub(super) panic_policy: PanicPolicy,
    pub(super) measure_handler_time: bool,
    pub(super) read_until_empty: bool,
    pub(super) backend: Backend,
    pub(super) uring_buffers: usize,
    pub(super) uring_completions: usize,
}

/// The most provided buffers per socket for the io_uring backend
/// ([`ReactorBuilder::uring_buffers`]; the kernel's limit per buffer ring).
pub const MAX_URING_BUFFERS: usize = 1 << 15;

impl Default for ReactorBuilder {
    fn default() -> Self {
        ReactorBuilder {
            slots: 64,
            payload_size: 2048,
            budget: 1024,
            events: 256,
            spin: false,
            busy_poll: None,
            pin_cpu: None,
            panic_policy: PanicPolicy::default(),
            measure_handler_time: false,
            read_until_empty: true,
            backend: Backend::Mio,
            uring_buffers: 256,
            uring_completions: 16384,
        }
    }
}

impl ReactorBuilder {
    /// Slots per socket, i.e. packets per `recvmmsg` (default 64; more adds
    /// nothing measurable). With the io_uring backend, the most packets
    /// handed to a handler at once ([`Handler::on_packets`](super::Handler::on_packets)).
    pub fn batch_slots(mut self, slots: usize) -> Self {
        self.slots = slots.max(1);
        self
    }

    /// Payload bytes per slot (default 2048). Longer packets are cut and
    /// reported as truncated.
    pub fn payload_size(mut self, bytes: usize) -> Self {
        self.payload_size = bytes.max(1);
        self
    }

    /// Packets one socket may deliver per turn before the others are served
    /// (default 1024).
    pub fn budget(mut self, packets: usize) -> Self {
        self.budget = packets.max(1);
        self
    }

    /// Readiness events taken per poll (default 256; at most
    /// [`MAX_EVENTS_CAPACITY`], checked by [`ReactorBuilder::build`]).
    pub fn events_capacity(mut self, events: usize) -> Self {
        self.events = events.max(1);
        self
    }

    /// Spin: never sleep. Each turn reads every registered socket
    /// (`recvmmsg` with `MSG_DONTWAIT`; one system call per socket when
    /// nothing is queued), as a C spin loop does, instead of asking epoll
    /// which are ready; epoll is consulted with a zero timeout once in 64
    /// turns while foreign sources are registered (never otherwise: an idle
    /// turn makes no other system call) and right after a registration or
    /// a handle command. Timers are checked against the clock every turn.
    /// While nothing but sockets is registered (no foreign sources, timers
    /// or feeds), [`Reactor::run`] reads them in a loop of its own, with
    /// none of a turn's other checks but the stop flag and the handle
    /// command queue. Lower latency, one core at 100%; meant for a few
    /// sockets per reactor.
    pub fn spin(mut self, on: bool) -> Self {
        self.spin = on;
        self
    }

    /// Sets `SO_BUSY_POLL` (microseconds) on every socket registered.
    pub fn busy_poll(mut self, micros: u32) -> Self {
        self.busy_poll = Some(micros);
        self
    }

    /// Pins the thread that calls [`Reactor::run`] (or the thread of
    /// [`ReactorBuilder::spawn`]) to this CPU.
    pub fn pin_to_cpu(mut self, cpu: usize) -> Self {
        self.pin_cpu = Some(cpu);
        self
    }

    /// Measures the time spent in handlers, per socket
    /// ([`SocketCounters::handler_time`](super::SocketCounters::handler_time)):
    /// two clock reads per batch.
    pub fn measure_handler_time(mut self, on: bool) -> Self {
        self.measure_handler_time = on;
        self
    }

    /// Whether a ready socket is read until a receive finds nothing queued
    /// (default `true`, as a C loop reads until `EAGAIN`), or only until a
    /// `recvmmsg` returns fewer packets than it asked for (`false`).
    ///
    /// A short batch means the queue was empty when the call returned, so
    /// `false` saves one receive call per wake-up; but a packet that
    /// arrives while the handler runs then waits for the next turn (in
    /// epoll mode, an `epoll_wait` that returns at once and the turn's
    /// work) instead of being read by the next receive. With `true` that
    /// receive catches it: at 100,000 packets a second the epoll mode's
    /// median latency measured 1.016 of a C epoll loop's with it and 1.030
    /// without (README, "Latency"). At low rates `false` makes one system
    /// call per packet fewer. The io_uring backend hands over what its
    /// multishot receive completed either way.
    ///
    /// ```
    /// use ipv4_reactor::reactor::Reactor;
    /// // One receive call per wake-up, for a CPU-frugal low-rate listener.
    /// let reactor = Reactor::builder().read_until_empty(false).build()?;
    /// # drop(reactor);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_until_empty(mut self, on: bool) -> Self {
        self.read_until_empty = on;
        self
    }

    /// How the reactor's drains read a socket.
    pub(super) fn drain_rules(&self) -> super::drain::DrainRules {
        super::drain::DrainRules {
            budget: self.budget,
            measure: self.measure_handler_time,
            until_empty: self.read_until_empty,
        }
    }

    /// What to do when a handler panics (default: deregister its socket).
    pub fn on_handler_panic(mut self, policy: PanicPolicy) -> Self {
        self.panic_policy = policy;
        self
    }

    /// How the reactor reads its sockets (default [`Backend::Mio`]); see
    /// [`Backend`].
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// io_uring backend: provided buffers per socket (default 256; a power
    /// of two from 1 to [`MAX_URING_BUFFERS`], checked by
    /// [`build`](Self::build)). Each holds one packet, its source address,
    /// room for every control message and [`payload_size`](Self::payload_size)
    /// bytes. The buffers are what the kernel may fill ahead of the
    /// handler: when all are waiting for it, the socket's receive stops
    /// (counted in [`SocketCounters::no_buffers`](super::SocketCounters::no_buffers)),
    /// packets stay queued in the socket, and the receive is armed again
    /// once the handler gave the buffers back.
    pub fn uring_buffers(mut self, buffers: usize) -> Self {
        self.uring_buffers = buffers;
        self
    }

    /// io_uring backend: completion queue entries of the reactor's ring
    /// (default 16384; rounded up to a power of two, at most 65536). Keep
    /// it above the sockets times [`uring_buffers`](Self::uring_buffers):
    /// a full queue ends the sockets' receives, which are armed again.
    pub fn uring_completions(mut self, entries: usize) -> Self {
        self.uring_completions = entries.clamp(1, 1 << 16);
        self
    }

    /// Creates the reactor on the calling thread.
    ///
    /// Errors: `InvalidInput` for an events capacity above
    /// [`MAX_EVENTS_CAPACITY`], or slots and payload size out of
    /// [`RecvBatch`]'s ranges (naming them), or a count of io_uring
    /// buffers that is not a power of two up to [`MAX_URING_BUFFERS`];
    /// `Unsupported` ([`Error::BackendUnavailable`](crate::Error::BackendUnavailable))
    /// when [`Backend::IoUring`] cannot run here; the OS error if epoll
    /// cannot be set up.
    pub fn build(self) -> io::Result<Reactor> {
        if !self.uring_buffers.is_power_of_two() || self.uring_buffers > MAX_URING_BUFFERS {
            return Err(crate::error::invalid(format!(
                "ReactorBuilder::uring_buffers({}): must be a power of two from 1 to {MAX_URING_BUFFERS}",
                self.uring_buffers
            )));
        }
        RecvBatch::check_sizes(
            "ReactorBuilder (batch_slots, payload_size)",
            self.slots,
            self.payload_size,
        )?;
        if self.events > MAX_EVENTS_CAPACITY {
            return Err(crate::error::invalid(format!(
                "a reactor taking {} readiness events per poll is too many: at most {MAX_EVENTS_CAPACITY}",
                self.events
            )));
        }
        Reactor::new(self)
    }

    /// Creates the reactor on a new thread and runs it there; returns its
    /// handle and the thread's join handle (which yields `run`'s result).
    pub fn spawn(self) -> io::Result<(Handle, thread::JoinHandle<io::Result<()>>)> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let join = thread::Builder::new()
            .name("ipv4-reactor".into())
            .spawn(move || {
                let mut reactor = match self.build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return Ok(());
                    }
                };
                let _ = tx.send(Ok(reactor.handle()));
                reactor.run()
            })?;
        let handle = rx
            .recv()
            .map_err(|_| io::Error::other("reactor thread ended before it started"))??;
        Ok((handle, join))
    }
}
