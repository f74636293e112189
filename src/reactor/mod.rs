//! The reactor: a single-threaded mio loop that owns packet sockets, drains
//! each in batches through `recvmmsg` and hands every packet to its handler.
//!
//! # How it reads
//!
//! Every registered socket has its own [`RecvBatch`]: slots allocated once,
//! one control buffer per slot, sized from the socket's
//! [`ControlFlags`] when it is registered. Readiness is
//! edge-triggered, so a ready socket is read until the kernel has nothing
//! more queued, but at most `budget` packets per turn: a socket stopped by
//! its budget stays on a ready list and is served again next turn, without
//! waiting for another event, after every other ready socket had its turn.
//!
//! Packets go either to a [`Handler`] (a closure or a type), borrowed from
//! the slot, or through a [`ChannelSink`] to another thread, copied once into
//! a pooled buffer. Neither path allocates in steady state.
//!
//! # Steering from other threads
//!
//! A [`Handle`] (`Send + Clone`) registers and deregisters sockets, joins and
//! leaves groups on registered sockets, reads counters and stops the loop.
//! Its calls travel over a channel and wake the loop; those that answer wait
//! for the loop to run them.
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
//! use ipv4_reactor::reactor::Reactor;
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
//! reactor.register(rx, move |p: &ipv4_reactor::Packet<'_>, ctx: &mut ipv4_reactor::reactor::Context<'_>| {
//!     assert_eq!(p.cm.dst, Some(*group.ip()));
//!     seen += 1;
//!     if seen == 3 {
//!         ctx.stop();
//!     }
//! })?;
//!
//! let tx = PacketConn::multicast_sender(&lo)?;
//! std::thread::sleep(Duration::from_millis(200)); // let the join settle
//! for _ in 0..3 {
//!     tx.send_to(b"tick", None, dst)?;
//! }
//! reactor.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod sink;

pub use sink::{ChannelSink, Context, Handler, Overflow, OwnedPacket, PacketReceiver};

use std::any::Any;
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::batch::{RecvBatch, RecvCounters};
use crate::control::ControlFlags;
use crate::interface::Interface;
use crate::packet::PacketConn;

const WAKER: Token = Token(usize::MAX);

/// Pins the calling thread to one CPU (`sched_setaffinity(2)` on the
/// calling thread only), as [`ReactorBuilder::pin_to_cpu`] does for the
/// thread that runs a reactor. Use it for a thread that feeds or drains a
/// reactor, or that must stay on one CPU for another reason.
///
/// The pin lasts as long as the thread; there is no call to undo it, so pin
/// a thread of its own (one that ends when the pinned work is done) rather
/// than one that goes on to do other work.
///
/// Errors: `InvalidInput` for a CPU number past the largest that the system
/// call accepts; the OS error (`EINVAL`) for a CPU that does not exist or is
/// outside the process's allowed set (cpuset, `taskset`).
///
/// # Example
///
/// ```no_run
/// use std::thread;
/// use ipv4_reactor::reactor::pin_current_thread;
///
/// let worker = thread::spawn(|| -> std::io::Result<()> {
///     pin_current_thread(2)?;
///     // ... work that must stay on CPU 2 ...
///     Ok(())
/// });
/// worker.join().expect("worker panicked")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    crate::sys::pin_current_thread(cpu)
}

/// Identifies a socket registered in a reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(usize);

impl Key {
    /// The key as a number (the socket's slot in the reactor).
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "socket #{}", self.0)
    }
}

/// Counters of one registered socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SocketCounters {
    /// Packets, bytes, batches, truncations and kernel drops.
    pub recv: RecvCounters,
    /// Packets a handler dropped for lack of room downstream (a full
    /// [`ChannelSink`] with [`Overflow::DropNewest`]).
    pub overflow_drops: u64,
    /// Receive errors other than "nothing queued".
    pub recv_errors: u64,
    /// Times the socket stopped at its budget with packets still queued.
    pub budget_stops: u64,
    /// Time spent in the handler, when the reactor measures it
    /// ([`ReactorBuilder::measure_handler_time`]); zero otherwise.
    pub handler_time: Duration,
}

/// Counters of a reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ReactorCounters {
    /// Calls to `turn` (one per loop iteration of `run`).
    pub turns: u64,
    /// Readiness events received.
    pub events: u64,
    /// Commands from handles run.
    pub commands: u64,
    /// Handler panics caught.
    pub handler_panics: u64,
    /// Sockets registered now.
    pub sockets: usize,
    /// The sum over every socket ever registered.
    pub total: SocketCounters,
}

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
    slots: usize,
    payload_size: usize,
    budget: usize,
    events: usize,
    spin: bool,
    busy_poll: Option<u32>,
    pin_cpu: Option<usize>,
    panic_policy: PanicPolicy,
    measure_handler_time: bool,
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

    /// Readiness events taken per poll (default 256).
    pub fn events_capacity(mut self, events: usize) -> Self {
        self.events = events.max(1);
        self
    }

    /// Spin: poll with a zero timeout instead of sleeping in `epoll_wait`.
    /// Lower latency, one core at 100%.
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
    /// ([`SocketCounters::handler_time`]): two clock reads per batch.
    pub fn measure_handler_time(mut self, on: bool) -> Self {
        self.measure_handler_time = on;
        self
    }

    /// What to do when a handler panics (default: deregister its socket).
    pub fn on_handler_panic(mut self, policy: PanicPolicy) -> Self {
        self.panic_policy = policy;
        self
    }

    /// Creates the reactor on the calling thread. Slots and payload size out
    /// of [`RecvBatch`]'s ranges are an `InvalidInput` error naming them.
    pub fn build(self) -> io::Result<Reactor> {
        RecvBatch::check_sizes(
            "ReactorBuilder (batch_slots, payload_size)",
            self.slots,
            self.payload_size,
        )?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        Ok(Reactor {
            events: Events::with_capacity(self.events),
            poll,
            entries: Slab::new(),
            ready: VecDeque::new(),
            shared: Arc::new(Shared {
                stop: AtomicBool::new(false),
                id: NEXT_REACTOR_ID.fetch_add(1, Ordering::Relaxed),
            }),
            waker,
            cmd_tx,
            cmd_rx,
            config: self,
            counters: ReactorCounters::default(),
            retired: SocketCounters::default(),
            panics: Vec::new(),
            stop_error: None,
            stopped: false,
            pinned: false,
        })
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

static NEXT_REACTOR_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The id of the reactor turning on this thread, 0 when none.
    static TURNING: Cell<u64> = const { Cell::new(0) };
}

struct Shared {
    stop: AtomicBool,
    id: u64,
}

type Command = Box<dyn FnOnce(&mut Reactor) + Send>;

struct Entry {
    conn: PacketConn,
    batch: RecvBatch,
    handler: Box<dyn Handler>,
    counters: SocketCounters,
    queued: bool,
}

/// A single-threaded event loop over packet sockets. See the
/// [module docs](self).
pub struct Reactor {
    poll: Poll,
    events: Events,
    entries: Slab<Entry>,
    ready: VecDeque<usize>,
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    cmd_tx: Sender<Command>,
    cmd_rx: Receiver<Command>,
    config: ReactorBuilder,
    counters: ReactorCounters,
    retired: SocketCounters,
    panics: Vec<String>,
    stop_error: Option<String>,
    stopped: bool,
    pinned: bool,
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("sockets", &self.entries.len())
            .field("ready", &self.ready.len())
            .field("config", &self.config)
            .field("counters", &self.counters)
            .finish()
    }
}

impl Reactor {
    /// Settings for a new reactor.
    pub fn builder() -> ReactorBuilder {
        ReactorBuilder::default()
    }

    /// A handle for other threads.
    pub fn handle(&self) -> Handle {
        Handle {
            tx: self.cmd_tx.clone(),
            waker: Arc::clone(&self.waker),
            shared: Arc::clone(&self.shared),
        }
    }

    /// Registers a socket with its handler (a [`Handler`], a closure, or a
    /// [`ChannelSink`]). The socket is made non-blocking; its receive slots
    /// are sized for its current control flags.
    pub fn register(&mut self, conn: PacketConn, handler: impl Handler) -> io::Result<Key> {
        self.register_boxed(conn, Box::new(handler))
    }

    fn register_boxed(
        &mut self,
        mut conn: PacketConn,
        handler: Box<dyn Handler>,
    ) -> io::Result<Key> {
        conn.set_nonblocking(true)?;
        if let Some(micros) = self.config.busy_poll {
            conn.set_busy_poll(micros)?;
        }
        let entry = self.entries.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(&mut conn, Token(key), Interest::READABLE)?;
        let batch = RecvBatch::new(
            self.config.slots,
            self.config.payload_size,
            conn.control_flags(),
        )?;
        entry.insert(Entry {
            conn,
            batch,
            handler,
            counters: SocketCounters::default(),
            // Packets may already be queued: serve it on the next turn.
            queued: true,
        });
        self.ready
            .reserve(self.entries.len().saturating_sub(self.ready.len()));
        self.ready.push_back(key);
        self.counters.sockets = self.entries.len();
        Ok(Key(key))
    }

    /// Deregisters a socket and gives it back; its handler is dropped.
    pub fn deregister(&mut self, key: Key) -> io::Result<PacketConn> {
        let mut entry = self.remove_entry(key.0).ok_or_else(|| unknown_key(key))?;
        self.poll.registry().deregister(&mut entry.conn)?;
        Ok(entry.conn)
    }

    fn remove_entry(&mut self, key: usize) -> Option<Entry> {
        let entry = self.entries.try_remove(key)?;
        if entry.queued {
            self.ready.retain(|&k| k != key);
        }
        self.retired.recv.add(&entry.counters.recv);
        self.retired.overflow_drops += entry.counters.overflow_drops;
        self.retired.recv_errors += entry.counters.recv_errors;
        self.retired.budget_stops += entry.counters.budget_stops;
        self.retired.handler_time += entry.counters.handler_time;
        self.counters.sockets = self.entries.len();
        Some(entry)
    }

    /// The socket registered under `key`.
    pub fn conn(&self, key: Key) -> Option<&PacketConn> {
        self.entries.get(key.0).map(|e| &e.conn)
    }

    /// Changes a registered socket's control flags, and resizes its receive
    /// slots to match.
    pub fn set_control_flags(&mut self, key: Key, flags: ControlFlags) -> io::Result<()> {
        let entry = self
            .entries
            .get_mut(key.0)
            .ok_or_else(|| unknown_key(key))?;
        entry.conn.set_control_flags(flags)?;
        entry.batch = RecvBatch::new(self.config.slots, self.config.payload_size, flags)?;
        Ok(())
    }

    /// Counters of one socket.
    pub fn socket_counters(&self, key: Key) -> Option<SocketCounters> {
        self.entries.get(key.0).map(|e| e.counters)
    }

    /// Counters of the reactor, with `total` summed over every socket.
    pub fn counters(&self) -> ReactorCounters {
        let mut c = self.counters;
        c.total = self.retired;
        for (_, e) in &self.entries {
            c.total.recv.add(&e.counters.recv);
            c.total.overflow_drops += e.counters.overflow_drops;
            c.total.recv_errors += e.counters.recv_errors;
            c.total.budget_stops += e.counters.budget_stops;
            c.total.handler_time += e.counters.handler_time;
        }
        c
    }

    /// The messages of handler panics caught since the last call.
    pub fn take_panics(&mut self) -> Vec<String> {
        std::mem::take(&mut self.panics)
    }

    /// Whether a handler or a handle asked the reactor to stop.
    pub fn is_stopped(&self) -> bool {
        self.stopped || self.shared.stop.load(Ordering::Acquire)
    }

    /// Clears a stop request, so that `run` can be called again.
    pub fn reset_stop(&mut self) {
        self.stopped = false;
        self.shared.stop.store(false, Ordering::Release);
    }

    /// Runs until a handler or a handle stops it. With
    /// [`PanicPolicy::Stop`], a handler panic ends it with an error.
    pub fn run(&mut self) -> io::Result<()> {
        if let (Some(cpu), false) = (self.config.pin_cpu, self.pinned) {
            crate::sys::pin_current_thread(cpu)?;
            self.pinned = true;
        }
        while !self.is_stopped() {
            self.turn(None)?;
        }
        match self.stop_error.take() {
            Some(msg) => Err(io::Error::other(msg)),
            None => Ok(()),
        }
    }

    /// One loop iteration: waits for readiness (at most `timeout`; not at
    /// all when sockets are left on the ready list or in spin mode), runs
    /// pending handle commands, then serves ready sockets within their
    /// budgets. Returns the packets delivered.
    pub fn turn(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let prev = TURNING.with(|t| t.replace(self.shared.id));
        let result = self.turn_inner(timeout);
        TURNING.with(|t| t.set(prev));
        result
    }

    fn turn_inner(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        self.counters.turns += 1;
        let timeout = if self.config.spin || !self.ready.is_empty() || !self.cmd_rx.is_empty() {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for event in self.events.iter() {
            self.counters.events += 1;
            let token = event.token();
            if token == WAKER {
                continue;
            }
            if let Some(entry) = self.entries.get_mut(token.0) {
                if !entry.queued {
                    entry.queued = true;
                    self.ready.push_back(token.0);
                }
            }
        }
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            self.counters.commands += 1;
            cmd(self);
        }
        Ok(self.serve_ready())
    }

    fn serve_ready(&mut self) -> usize {
        let mut delivered = 0;
        let rounds = self.ready.len();
        for _ in 0..rounds {
            if self.is_stopped() {
                break;
            }
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(key) else {
                continue;
            };
            let outcome = drain(
                entry,
                Key(key),
                self.config.budget,
                self.config.measure_handler_time,
            );
            delivered += outcome.packets;
            if let Some(payload) = outcome.panic {
                self.counters.handler_panics += 1;
                let msg = format!(
                    "handler of {} panicked: {}",
                    Key(key),
                    panic_message(&*payload)
                );
                if self.config.panic_policy == PanicPolicy::Stop {
                    self.stopped = true;
                    self.stop_error = Some(msg.clone());
                }
                self.panics.push(msg);
                self.drop_socket(key);
                continue;
            }
            if outcome.stop {
                self.stopped = true;
            }
            if outcome.deregister {
                self.drop_socket(key);
                continue;
            }
            let entry = &mut self.entries[key];
            if outcome.drained {
                entry.queued = false;
            } else {
                entry.counters.budget_stops += 1;
                self.ready.push_back(key);
            }
        }
        delivered
    }

    fn drop_socket(&mut self, key: usize) {
        if let Some(mut entry) = self.remove_entry(key) {
            let _ = self.poll.registry().deregister(&mut entry.conn);
        }
    }
}

struct Outcome {
    packets: usize,
    drained: bool,
    stop: bool,
    deregister: bool,
    panic: Option<Box<dyn Any + Send>>,
}

/// Reads one socket until nothing is queued or its budget is spent.
fn drain(entry: &mut Entry, key: Key, budget: usize, measure: bool) -> Outcome {
    let Entry {
        conn,
        batch,
        handler,
        counters,
        ..
    } = entry;
    let mut ctx = Context {
        key,
        conn,
        stop: false,
        deregister: false,
        overflow_drops: 0,
    };
    let mut out = Outcome {
        packets: 0,
        drained: false,
        stop: false,
        deregister: false,
        panic: None,
    };
    let before = *batch.counters();
    let result = catch_unwind(AssertUnwindSafe(|| {
        while out.packets < budget {
            let want = batch.capacity().min(budget - out.packets);
            match batch.recv_with(ctx.conn, want, libc::MSG_DONTWAIT) {
                Ok(n) => {
                    let started = measure.then(std::time::Instant::now);
                    for pkt in batch.iter() {
                        out.packets += 1;
                        handler.on_packet(&pkt, &mut ctx);
                        if ctx.deregister {
                            break;
                        }
                    }
                    if let Some(t) = started {
                        counters.handler_time += t.elapsed();
                    }
                    if ctx.deregister {
                        return;
                    }
                    // Fewer than asked: the queue was empty when the call
                    // returned, and any later packet raises a new edge.
                    if n < want {
                        out.drained = true;
                        return;
                    }
                    if ctx.stop {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    out.drained = true;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    counters.recv_errors += 1;
                    handler.on_error(e, &mut ctx);
                    // Try again next turn: an error that repeats on every
                    // call must not hold the loop inside this turn.
                    return;
                }
            }
        }
    }));
    let after = *batch.counters();
    counters.recv.packets += after.packets - before.packets;
    counters.recv.bytes += after.bytes - before.bytes;
    counters.recv.batches += after.batches - before.batches;
    counters.recv.truncated += after.truncated - before.truncated;
    counters.recv.control_truncated += after.control_truncated - before.control_truncated;
    counters.recv.kernel_drops += after.kernel_drops - before.kernel_drops;
    counters.overflow_drops += ctx.overflow_drops;
    out.stop = ctx.stop;
    out.deregister = ctx.deregister;
    if let Err(payload) = result {
        out.panic = Some(payload);
    }
    out
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

fn unknown_key(key: Key) -> io::Error {
    crate::error::invalid(format!("{key} is not registered in this reactor"))
}

/// Steers a reactor from any thread: `Send + Sync + Clone`.
///
/// Calls that return a value wait until the reactor runs them on its next
/// turn; they fail with an error if the reactor is gone, and refuse to be
/// called from inside a handler of the same reactor (which would wait for
/// itself): use the handler's [`Context`] there.
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Command>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("reactor", &self.shared.id)
            .finish()
    }
}

impl Handle {
    /// Asks the reactor to stop; returns at once. `run` returns after the
    /// current turn.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }

    /// Runs `f` on the reactor's thread, with the reactor, and returns its
    /// result.
    pub fn call<R, F>(&self, f: F) -> io::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Reactor) -> R + Send + 'static,
    {
        if TURNING.with(|t| t.get()) == self.shared.id {
            return Err(crate::error::invalid(
                "a reactor's Handle was called from inside one of its own handlers; use the Context instead",
            ));
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx
            .send(Box::new(move |r: &mut Reactor| {
                let _ = tx.send(f(r));
            }))
            .map_err(|_| gone())?;
        self.waker.wake()?;
        rx.recv().map_err(|_| gone())
    }

    /// Registers a socket with its handler.
    pub fn register(&self, conn: PacketConn, handler: impl Handler) -> io::Result<Key> {
        let handler: Box<dyn Handler> = Box::new(handler);
        self.call(move |r| r.register_boxed(conn, handler))?
    }

    /// Deregisters a socket and gives it back.
    pub fn deregister(&self, key: Key) -> io::Result<PacketConn> {
        self.call(move |r| r.deregister(key))?
    }

    /// Runs `f` with a registered socket on the reactor's thread.
    pub fn with_conn<R, F>(&self, key: Key, f: F) -> io::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&PacketConn) -> io::Result<R> + Send + 'static,
    {
        self.call(move |r| match r.conn(key) {
            Some(conn) => f(conn),
            None => Err(unknown_key(key)),
        })?
    }

    /// Joins `group` on `iface` on a registered socket.
    pub fn join_group(&self, key: Key, iface: Interface, group: Ipv4Addr) -> io::Result<()> {
        self.with_conn(key, move |c| c.join_group(&iface, group))
    }

    /// Leaves `group` on `iface` on a registered socket.
    pub fn leave_group(&self, key: Key, iface: Interface, group: Ipv4Addr) -> io::Result<()> {
        self.with_conn(key, move |c| c.leave_group(&iface, group))
    }

    /// Include mode: receive `group` from `source` on a registered socket.
    pub fn join_source_group(
        &self,
        key: Key,
        iface: Interface,
        group: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        self.with_conn(key, move |c| c.join_source_group(&iface, group, source))
    }

    /// Include mode: stop receiving `group` from `source`.
    pub fn leave_source_group(
        &self,
        key: Key,
        iface: Interface,
        group: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        self.with_conn(key, move |c| c.leave_source_group(&iface, group, source))
    }

    /// Exclude mode: block `source` of `group`.
    pub fn block_source(
        &self,
        key: Key,
        iface: Interface,
        group: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        self.with_conn(key, move |c| c.block_source(&iface, group, source))
    }

    /// Exclude mode: unblock `source` of `group`.
    pub fn unblock_source(
        &self,
        key: Key,
        iface: Interface,
        group: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        self.with_conn(key, move |c| c.unblock_source(&iface, group, source))
    }

    /// Changes a registered socket's control flags (and its slots).
    pub fn set_control_flags(&self, key: Key, flags: ControlFlags) -> io::Result<()> {
        self.call(move |r| r.set_control_flags(key, flags))?
    }

    /// Counters of one socket.
    pub fn socket_counters(&self, key: Key) -> io::Result<SocketCounters> {
        self.call(move |r| r.socket_counters(key).ok_or_else(|| unknown_key(key)))?
    }

    /// Counters of the reactor.
    pub fn counters(&self) -> io::Result<ReactorCounters> {
        self.call(|r| r.counters())
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the reactor is gone")
}

/// Several reactors, each on its own thread, with groups sharded across
/// them: the way past one core (`SO_REUSEPORT` does not spread multicast:
/// every socket on the port gets every packet).
#[derive(Debug)]
pub struct ReactorPool {
    handles: Vec<Handle>,
    threads: Vec<thread::JoinHandle<io::Result<()>>>,
}

impl ReactorPool {
    /// Starts `n` reactors with the same settings; with
    /// [`ReactorBuilder::pin_to_cpu`] set to `c`, reactor `i` is pinned to
    /// CPU `c + i`.
    pub fn spawn(n: usize, builder: ReactorBuilder) -> io::Result<ReactorPool> {
        let mut pool = ReactorPool {
            handles: Vec::new(),
            threads: Vec::new(),
        };
        for i in 0..n.max(1) {
            let mut b = builder.clone();
            b.pin_cpu = builder.pin_cpu.map(|c| c + i);
            let (handle, join) = b.spawn()?;
            pool.handles.push(handle);
            pool.threads.push(join);
        }
        Ok(pool)
    }

    /// The handles, one per reactor.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// The reactor a group belongs to: a stable hash of the address, so the
    /// same group always lands on the same reactor.
    pub fn shard_of(&self, group: Ipv4Addr) -> usize {
        // Multiplicative hash; the high bits depend on every bit of the group.
        let x = u32::from(group).wrapping_mul(0x9E37_79B1);
        ((u64::from(x) * self.handles.len() as u64) >> 32) as usize
    }

    /// Registers a socket for `group` on the reactor the group belongs to;
    /// returns the shard and the key.
    pub fn register(
        &self,
        group: Ipv4Addr,
        conn: PacketConn,
        handler: impl Handler,
    ) -> io::Result<(usize, Key)> {
        let shard = self.shard_of(group);
        let key = self.handles[shard].register(conn, handler)?;
        Ok((shard, key))
    }

    /// Stops every reactor and waits for their threads; returns the first
    /// error any of them ended with.
    pub fn shutdown(self) -> io::Result<()> {
        for h in &self.handles {
            h.stop();
        }
        let mut first = Ok(());
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a reactor thread panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}
