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

pub use sink::{
    ChannelSink, Context, Handler, Overflow, OwnedPacket, PacketReceiver, MAX_SINK_CAPACITY,
    MAX_SINK_PAYLOAD, MAX_SINK_POOL_BYTES,
};

use std::any::Any;
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::batch::{RecvBatch, RecvCounters};
use crate::control::ControlFlags;
use crate::interface::Interface;
use crate::packet::PacketConn;

const WAKER: Token = Token(usize::MAX);

/// How long [`Handle`] calls wait for the reactor to run them, unless the
/// handle was given another timeout ([`Handle::with_call_timeout`]) or the
/// call is [`Handle::call_timeout`]: 5 seconds. A turning reactor answers
/// within one turn, which takes microseconds to milliseconds; a call that
/// waits this long finds a reactor that is blocked (a full
/// [`Overflow::Block`] sink, a handler that does not return) or that
/// nothing turns, and fails with `TimedOut`.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The most reactors a [`ReactorPool`] runs (one thread each), and one past
/// the largest CPU number that [`ReactorBuilder::pin_to_cpu`] can pin to
/// (`CPU_SETSIZE`).
pub const MAX_POOL_REACTORS: usize = 1024;

/// The most readiness events a reactor takes per poll
/// ([`ReactorBuilder::events_capacity`]).
pub const MAX_EVENTS_CAPACITY: usize = 1 << 20;

/// After this many receive errors in a row with nothing received between
/// them, a socket waits before it is read again (see [`SocketCounters::recv_errors`]).
const ERRORS_BEFORE_BACKOFF: u32 = 2;
/// The longest wait of a socket whose receives keep failing.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(1);

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
    /// Panics of [`Handle::call`] closures caught (the caller got an error
    /// with the panic message).
    pub command_panics: u64,
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

    /// Readiness events taken per poll (default 256; at most
    /// [`MAX_EVENTS_CAPACITY`], checked by [`ReactorBuilder::build`]).
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

    /// Creates the reactor on the calling thread.
    ///
    /// Errors: `InvalidInput` for an events capacity above
    /// [`MAX_EVENTS_CAPACITY`]; the OS error if epoll cannot be set up.
    pub fn build(self) -> io::Result<Reactor> {
        if self.events > MAX_EVENTS_CAPACITY {
            return Err(crate::error::invalid(format!(
                "a reactor taking {} readiness events per poll is too many: at most {MAX_EVENTS_CAPACITY}",
                self.events
            )));
        }
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        Ok(Reactor {
            events: Events::with_capacity(self.events),
            poll,
            entries: Slab::new(),
            ready: VecDeque::new(),
            backoff: Vec::new(),
            shared: Arc::new(Shared {
                stop: AtomicBool::new(false),
                id: NEXT_REACTOR_ID.fetch_add(1, Ordering::Relaxed),
                phase: AtomicU8::new(PHASE_NEW),
                home: AtomicU64::new(0),
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
    /// A number naming this thread (ThreadId has no stable number).
    static THREAD_TOKEN: u64 = NEXT_THREAD_TOKEN.fetch_add(1, Ordering::Relaxed);
}

static NEXT_THREAD_TOKEN: AtomicU64 = AtomicU64::new(1);

fn thread_token() -> u64 {
    THREAD_TOKEN.with(|t| *t)
}

/// Marks the thread as turning a reactor, and restores the previous mark
/// when the turn ends, also when it unwinds.
struct TurningMark(u64);

impl TurningMark {
    fn enter(id: u64) -> TurningMark {
        TurningMark(TURNING.with(|t| t.replace(id)))
    }
}

impl Drop for TurningMark {
    fn drop(&mut self) {
        TURNING.with(|t| t.set(self.0));
    }
}

/// Never turned yet: a call waits (bounded) for the first turn.
const PHASE_NEW: u8 = 0;
/// `run` is running, or the user turns the reactor: a call waits (bounded).
const PHASE_SERVING: u8 = 1;
/// `run` returned: a call fails at once.
const PHASE_HALTED: u8 = 2;

struct Shared {
    stop: AtomicBool,
    id: u64,
    /// One of the `PHASE_*` values.
    phase: AtomicU8,
    /// [`thread_token`] of the thread that turned the reactor last, 0
    /// before the first turn: a call from that thread outside a turn would
    /// wait for itself.
    home: AtomicU64,
}

impl Shared {
    fn halted(&self) -> bool {
        self.phase.load(Ordering::SeqCst) == PHASE_HALTED
    }
}

/// Marks the reactor halted when `run` returns (or unwinds), and fails the
/// calls still queued: nothing would run them.
struct HaltOnExit {
    shared: Arc<Shared>,
    commands: Receiver<Command>,
}

impl Drop for HaltOnExit {
    fn drop(&mut self) {
        self.shared.phase.store(PHASE_HALTED, Ordering::SeqCst);
        // Pairs with the fence in Handle::call_timeout: either the caller
        // sees the halt, or this loop sees its command.
        fence(Ordering::SeqCst);
        // Dropping a command drops its reply sender: the caller's wait ends
        // with an error.
        while let Ok(cmd) = self.commands.try_recv() {
            drop(cmd);
        }
    }
}

type Command = Box<dyn FnOnce(&mut Reactor) + Send>;

struct Entry {
    conn: PacketConn,
    batch: RecvBatch,
    handler: Box<dyn Handler>,
    counters: SocketCounters,
    queued: bool,
    /// Receive errors in a row with nothing received between them.
    errors_in_row: u32,
    /// When a socket backed off after errors is read again.
    retry_at: Option<Instant>,
}

/// A single-threaded event loop over packet sockets. See the
/// [module docs](self).
pub struct Reactor {
    poll: Poll,
    events: Events,
    entries: Slab<Entry>,
    ready: VecDeque<usize>,
    /// Sockets backed off after receive errors (their `retry_at` is set).
    backoff: Vec<usize>,
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
            timeout: DEFAULT_CALL_TIMEOUT,
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
        );
        entry.insert(Entry {
            conn,
            batch,
            handler,
            counters: SocketCounters::default(),
            // Packets may already be queued: serve it on the next turn.
            queued: true,
            errors_in_row: 0,
            retry_at: None,
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
        if entry.retry_at.is_some() {
            self.backoff.retain(|&k| k != key);
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
        let last_drops = entry.batch.last_drops();
        entry.batch = RecvBatch::new(self.config.slots, self.config.payload_size, flags);
        // The kernel's counter is cumulative: carry what was already seen.
        entry.batch.set_last_drops(last_drops);
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

    /// Clears a stop request, so that `run` can be called again. Handle
    /// calls made from now on wait for the next turn again (bounded by
    /// their timeout) instead of failing at once.
    pub fn reset_stop(&mut self) {
        self.stopped = false;
        self.shared.stop.store(false, Ordering::Release);
        let _ = self.shared.phase.compare_exchange(
            PHASE_HALTED,
            PHASE_NEW,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Runs until a handler or a handle stops it. With
    /// [`PanicPolicy::Stop`], a handler panic ends it with an error.
    ///
    /// Once `run` has returned, [`Handle`] calls fail at once (`BrokenPipe`,
    /// "the reactor has stopped"), and calls still queued fail too, until
    /// `run` or [`Reactor::turn`] is called again.
    pub fn run(&mut self) -> io::Result<()> {
        let _halt = HaltOnExit {
            shared: Arc::clone(&self.shared),
            commands: self.cmd_rx.clone(),
        };
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
    ///
    /// A program that drives the reactor with `turn` in its own loop gets
    /// [`Handle`] calls from other threads answered on its turns; a call
    /// from the thread that turns it, between turns, fails at once (nothing
    /// could answer it), and one from another thread while the loop no
    /// longer turns fails after the handle's timeout.
    pub fn turn(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let me = thread_token();
        if self.shared.home.load(Ordering::Relaxed) != me {
            self.shared.home.store(me, Ordering::Relaxed);
        }
        if self.shared.phase.load(Ordering::Relaxed) != PHASE_SERVING {
            self.shared.phase.store(PHASE_SERVING, Ordering::SeqCst);
        }
        let _mark = TurningMark::enter(self.shared.id);
        self.turn_inner(timeout)
    }

    fn turn_inner(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        self.counters.turns += 1;
        let mut timeout = if self.config.spin || !self.ready.is_empty() || !self.cmd_rx.is_empty() {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        if !self.backoff.is_empty() {
            timeout = self.until_next_retry(timeout);
        }
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
        if !self.backoff.is_empty() {
            self.retry_due();
        }
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            self.counters.commands += 1;
            // A command catches its closure's panic itself (Handle::call_timeout).
            cmd(self);
        }
        Ok(self.serve_ready())
    }

    /// The poll timeout shortened to the next retry of a backed-off socket.
    fn until_next_retry(&self, timeout: Option<Duration>) -> Option<Duration> {
        let next = self
            .backoff
            .iter()
            .filter_map(|&k| self.entries.get(k)?.retry_at)
            .min();
        match next {
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                Some(timeout.map_or(wait, |t| t.min(wait)))
            }
            None => timeout,
        }
    }

    /// Puts the backed-off sockets whose wait is over back on the ready list.
    fn retry_due(&mut self) {
        let now = Instant::now();
        let entries = &mut self.entries;
        let ready = &mut self.ready;
        self.backoff.retain(|&key| {
            let Some(entry) = entries.get_mut(key) else {
                return false;
            };
            match entry.retry_at {
                Some(at) if at > now => true,
                Some(_) => {
                    entry.retry_at = None;
                    if !entry.queued {
                        entry.queued = true;
                        ready.push_back(key);
                    }
                    false
                }
                None => false,
            }
        });
    }

    /// After a drain that ended in a receive error.
    fn after_error(&mut self, key: usize, received: bool) {
        let entry = &mut self.entries[key];
        if received {
            entry.errors_in_row = 0;
        }
        entry.errors_in_row = entry.errors_in_row.saturating_add(1);
        if entry.errors_in_row < ERRORS_BEFORE_BACKOFF {
            // Maybe a one-off (a pending ICMP error) with packets queued
            // behind it, which raise no new edge: read again next turn.
            self.ready.push_back(key);
            return;
        }
        // It keeps failing: wait for its next readiness event, or retry
        // after a wait that doubles with each error.
        let shift = (entry.errors_in_row - ERRORS_BEFORE_BACKOFF).min(10);
        let delay = (Duration::from_millis(1) * (1u32 << shift)).min(MAX_ERROR_BACKOFF);
        entry.queued = false;
        if entry.retry_at.replace(Instant::now() + delay).is_none() {
            self.backoff.push(key);
        }
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
                &self.shared.stop,
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
            if outcome.failed {
                self.after_error(key, outcome.packets > 0);
                continue;
            }
            let stopping = !outcome.drained && (outcome.stop || self.is_stopped());
            let entry = &mut self.entries[key];
            entry.errors_in_row = 0;
            if outcome.drained {
                entry.queued = false;
            } else {
                if !stopping {
                    entry.counters.budget_stops += 1;
                }
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
    /// Ended in a receive error other than "nothing queued".
    failed: bool,
    panic: Option<Box<dyn Any + Send>>,
}

/// Reads one socket until nothing is queued or its budget is spent.
fn drain(
    entry: &mut Entry,
    key: Key,
    budget: usize,
    measure: bool,
    stop_requested: &AtomicBool,
) -> Outcome {
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
        stop_requested,
    };
    let mut out = Outcome {
        packets: 0,
        drained: false,
        stop: false,
        deregister: false,
        failed: false,
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
                    // One load per batch: a handle's stop ends a long drain
                    // (and a blocking sink drops the rest of a batch).
                    if ctx.stop || ctx.stop_requested() {
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
/// turn, but never for ever:
///
/// - from inside a handler of the same reactor (which would wait for
///   itself) they fail at once with `InvalidInput`: use the handler's
///   [`Context`] there;
/// - from the thread that turns the reactor, between turns (or after `run`
///   returned), they fail at once with `InvalidInput`;
/// - once `run` has returned (and until it or `turn` is called again) they
///   fail at once with `BrokenPipe`, as they do once the reactor is dropped;
/// - otherwise they wait at most the handle's timeout
///   ([`DEFAULT_CALL_TIMEOUT`], 5 s, unless set with
///   [`Handle::with_call_timeout`]) and fail with `TimedOut`: the reactor
///   is blocked (a full [`Overflow::Block`] sink, a handler that does not
///   return) or nothing turns it. A call that timed out is withdrawn: it
///   will not run later.
///
/// A call made from the thread that built the reactor before its first
/// turn cannot be told apart from one made before another thread starts
/// running it: it waits for the timeout.
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Command>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
    timeout: Duration,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("reactor", &self.shared.id)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A call's state, shared by the caller and the command: whoever moves it
/// from `CALL_PENDING` first decides whether the command runs.
const CALL_PENDING: u8 = 0;
const CALL_TAKEN: u8 = 1;
const CALL_WITHDRAWN: u8 = 2;

impl Handle {
    /// The same handle with another timeout for its calls (the default is
    /// [`DEFAULT_CALL_TIMEOUT`]).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Handle {
        self.timeout = timeout;
        self
    }

    /// Asks the reactor to stop; returns at once. `run` returns after the
    /// current turn; a handler waiting in a full [`Overflow::Block`] sink
    /// gives up within a few milliseconds.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }

    /// Runs `f` on the reactor's thread, with the reactor, and returns its
    /// result; waits at most the handle's timeout (see [`Handle`] for when
    /// it fails at once).
    ///
    /// A panic in `f` is caught: the reactor goes on, counts it in
    /// [`ReactorCounters::command_panics`], and this call returns an error
    /// with the panic message.
    pub fn call<R, F>(&self, f: F) -> io::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Reactor) -> R + Send + 'static,
    {
        self.call_timeout(self.timeout, f)
    }

    /// [`Handle::call`] with its own timeout. On `TimedOut`, `f` has not
    /// run and will not run; if the reactor had already started `f` when
    /// the timeout passed, the call waits up to `timeout` once more for it
    /// to finish, and then fails with `TimedOut` saying that `f` may still
    /// complete.
    pub fn call_timeout<R, F>(&self, timeout: Duration, f: F) -> io::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Reactor) -> R + Send + 'static,
    {
        if TURNING.with(|t| t.get()) == self.shared.id {
            return Err(crate::error::invalid(
                "a reactor's Handle was called from inside one of its own handlers; use the Context instead",
            ));
        }
        if self.shared.halted() {
            return Err(stopped());
        }
        if self.shared.home.load(Ordering::Relaxed) == thread_token() {
            return Err(crate::error::invalid(
                "a reactor's Handle was called from the thread that turns the reactor, while it is not turning (between turns, or after run returned): nothing could answer; use the Reactor itself",
            ));
        }
        let state = Arc::new(AtomicU8::new(CALL_PENDING));
        let (tx, rx) = crossbeam_channel::bounded::<Result<R, String>>(1);
        let cmd_state = Arc::clone(&state);
        let cmd: Command = Box::new(move |r: &mut Reactor| {
            if cmd_state
                .compare_exchange(
                    CALL_PENDING,
                    CALL_TAKEN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                return; // the caller gave up
            }
            let reply = match catch_unwind(AssertUnwindSafe(|| f(r))) {
                Ok(v) => Ok(v),
                Err(payload) => {
                    r.counters.command_panics += 1;
                    Err(panic_message(&*payload))
                }
            };
            let _ = tx.send(reply);
        });
        self.tx.send(cmd).map_err(|_| gone())?;
        // Pairs with the fence in HaltOnExit: if run returned meanwhile,
        // either it dropped this command or this load sees the halt.
        fence(Ordering::SeqCst);
        if self.shared.halted() && withdraw(&state) {
            return Err(stopped());
        }
        self.waker.wake()?;
        let reply = match rx.recv_timeout(timeout) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Disconnected) => return Err(self.ended()),
            Err(RecvTimeoutError::Timeout) => {
                if withdraw(&state) {
                    return Err(timed_out(timeout));
                }
                // The reactor is running f: give it as long again.
                match rx.recv_timeout(timeout) {
                    Ok(reply) => reply,
                    Err(RecvTimeoutError::Disconnected) => return Err(self.ended()),
                    Err(RecvTimeoutError::Timeout) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the reactor started the call but it did not finish within {:?}: it may still complete",
                                timeout * 2
                            ),
                        ))
                    }
                }
            }
        };
        reply.map_err(|msg| io::Error::other(format!("the call panicked on the reactor: {msg}")))
    }

    /// Why a call's reply channel closed without a reply.
    fn ended(&self) -> io::Error {
        if self.shared.halted() {
            stopped()
        } else {
            gone()
        }
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

fn stopped() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the reactor has stopped (run returned): nothing runs calls until run or turn is called again",
    )
}

fn timed_out(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "the reactor did not take the call within {timeout:?}: it is blocked (a full Overflow::Block sink waiting for its consumer, or a handler that does not return) or nothing turns it; the call was withdrawn and will not run"
        ),
    )
}

/// Withdraws a call the reactor has not taken yet; false if it has.
fn withdraw(state: &AtomicU8) -> bool {
    state
        .compare_exchange(
            CALL_PENDING,
            CALL_WITHDRAWN,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
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
    /// Starts `n` reactors with the same settings (0 is taken as 1); with
    /// [`ReactorBuilder::pin_to_cpu`] set to `c`, reactor `i` is pinned to
    /// CPU `c + i`.
    ///
    /// Errors: `InvalidInput`, before any thread starts, for more than
    /// [`MAX_POOL_REACTORS`] reactors or, when pinned, a CPU `c + n - 1` of
    /// [`MAX_POOL_REACTORS`] or more; otherwise the first reactor that fails
    /// to start, after the ones already started were stopped and joined.
    pub fn spawn(n: usize, builder: ReactorBuilder) -> io::Result<ReactorPool> {
        let n = n.max(1);
        if n > MAX_POOL_REACTORS {
            return Err(crate::error::invalid(format!(
                "a pool of {n} reactors is too many: at most {MAX_POOL_REACTORS} (one thread each)"
            )));
        }
        if let Some(c) = builder.pin_cpu {
            match c.checked_add(n - 1) {
                Some(last) if last < MAX_POOL_REACTORS => {}
                _ => {
                    return Err(crate::error::invalid(format!(
                        "a pool of {n} reactors pinned from CPU {c} needs CPUs up to {c} + {}: CPU numbers stop below {MAX_POOL_REACTORS}",
                        n - 1
                    )))
                }
            }
        }
        let mut pool = ReactorPool {
            handles: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let mut b = builder.clone();
            b.pin_cpu = builder.pin_cpu.map(|c| c + i);
            match b.spawn() {
                Ok((handle, join)) => {
                    pool.handles.push(handle);
                    pool.threads.push(join);
                }
                Err(e) => {
                    // Do not leave the ones already running without a handle.
                    let _ = pool.shutdown();
                    return Err(e);
                }
            }
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
