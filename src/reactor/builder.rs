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
}

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
        }
    }
}

impl ReactorBuilder {
    /// Slots per socket, i.e. packets per `recvmmsg` (default 64; more adds
    /// nothing measurable).
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
    /// turns (foreign sources) and right after a registration or a handle
    /// command. Timers are checked against the clock every turn. Lower
    /// latency, one core at 100%; meant for a few sockets per reactor.
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

    /// What to do when a handler panics (default: deregister its socket).
    pub fn on_handler_panic(mut self, policy: PanicPolicy) -> Self {
        self.panic_policy = policy;
        self
    }

    /// Creates the reactor on the calling thread.
    ///
    /// Errors: `InvalidInput` for an events capacity above
    /// [`MAX_EVENTS_CAPACITY`], or slots and payload size out of
    /// [`RecvBatch`]'s ranges (naming them); the OS error if epoll cannot be
    /// set up.
    pub fn build(self) -> io::Result<Reactor> {
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
