//! The loop: a reactor's sockets, its turn (poll, commands, serve the
//! ready list), and the back-off of sockets whose receives keep failing.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::drain::{drain, Deliver, DrainRules, Outcome, Socket};
use super::feed_lines::{FeedLine, FeedState};
use super::shared::{
    thread_token, HaltOnExit, Shared, TurningMark, PHASE_HALTED, PHASE_NEW, PHASE_SERVING,
};
use super::sources::{Sources, SOURCE_TOKEN_BASE};
use super::timers::Timers;
#[cfg(feature = "io-uring")]
use super::uring::drain_uring;
use super::{
    Backend, Handle, Handler, Key, PanicPolicy, ReactorBuilder, ReactorCounters, SocketCounters,
};
use crate::batch::RecvBatch;
use crate::control::ControlFlags;
use crate::packet_conn::PacketConn;

pub(super) const WAKER: Token = Token(usize::MAX);
/// The token of the timerfd (`timers.rs`).
pub(super) const TIMER: Token = Token(usize::MAX - 1);
/// The token of the io_uring backend's ring (readable while completions wait).
#[cfg(feature = "io-uring")]
const URING: Token = Token(usize::MAX - 2);

/// After this many receive errors in a row with nothing received between
/// them, a socket waits before it is read again (see [`SocketCounters::recv_errors`]).
const ERRORS_BEFORE_BACKOFF: u32 = 2;
/// The longest wait of a socket whose receives keep failing.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// In spin mode, epoll is consulted (with a zero timeout) once in this many
/// turns while foreign sources are registered; also after a registration
/// or a command. The sockets themselves are read every turn without asking
/// epoll.
pub(super) const SPIN_POLL_EVERY: u32 = 64;
/// A spin-mode `run` with nothing but sockets registered looks at the
/// handle command queue once in this many passes over its sockets.
const SPIN_COMMAND_CHECK: u32 = 16;

pub(super) type Command = Box<dyn FnOnce(&mut Reactor) + Send>;
/// Work a source or timer handler left for the whole reactor.
pub(super) type Deferred = Box<dyn FnOnce(&mut Reactor) + Send>;

/// Who gets a socket's packets.
pub(super) enum EntryHandler {
    /// Its own handler.
    Own(Box<dyn Handler>),
    /// Line `line` of the feed in slot `feed` of the reactor's feeds.
    FeedLine { feed: usize, line: usize },
}

pub(super) struct Entry {
    /// The key this registration was given (slot and generation).
    pub(super) key: Key,
    pub(super) conn: PacketConn,
    pub(super) batch: RecvBatch,
    pub(super) handler: EntryHandler,
    pub(super) counters: SocketCounters,
    pub(super) queued: bool,
    /// Receive errors in a row with nothing received between them.
    pub(super) errors_in_row: u32,
    /// When a socket backed off after errors is read again.
    pub(super) retry_at: Option<Instant>,
}

impl Entry {
    /// What a drain of this socket works on, and who gets its packets.
    fn parts(&mut self) -> (Socket<'_>, &mut EntryHandler) {
        let socket = Socket {
            key: self.key,
            conn: &self.conn,
            batch: &mut self.batch,
            counters: &mut self.counters,
        };
        (socket, &mut self.handler)
    }

    /// After a drain: one without a receive error ends a run of errors.
    fn after_drain(&mut self, outcome: &Outcome) {
        if !outcome.failed {
            self.errors_in_row = 0;
        }
    }

    /// Puts the socket in slot `slot` (this entry) on the ready list,
    /// unless it is there already.
    #[inline]
    fn queue_on(&mut self, ready: &mut VecDeque<usize>, slot: usize) {
        if !self.queued {
            self.queued = true;
            ready.push_back(slot);
        }
    }
}

/// The registration `key` names in `entries`, if it is still registered
/// (the slot holds the same generation): for the reactor and for the
/// contexts of source and timer handlers, which see only the entries.
pub(super) fn registered(entries: &Slab<Entry>, key: Key) -> Option<&Entry> {
    entries.get(key.index()).filter(|e| e.key == key)
}

/// A single-threaded event loop over packet sockets. See the
/// [module docs](crate::reactor).
pub struct Reactor {
    pub(super) poll: Poll,
    events: Events,
    pub(super) entries: Slab<Entry>,
    /// Foreign sources (`sources.rs`).
    pub(super) sources: Sources,
    /// Timers (`timers.rs`).
    pub(super) timers: Timers,
    /// Work source and timer handlers deferred to the end of their phase.
    pub(super) deferred: Vec<Deferred>,
    /// The last poll filled the events buffer: more may be waiting, which
    /// an outer loop polling our descriptor would not hear of.
    events_full: bool,
    /// The generation of the next registration's key.
    pub(super) next_generation: u64,
    /// Feeds whose lines are registered sockets (`feed_lines.rs`).
    pub(super) feeds: Slab<FeedState>,
    /// When the feeds' lines are next checked for silence.
    pub(super) next_feed_poll: Option<Instant>,
    ready: VecDeque<usize>,
    /// Sockets backed off after receive errors (their `retry_at` is set).
    backoff: Vec<usize>,
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    cmd_tx: Sender<Command>,
    cmd_rx: Receiver<Command>,
    pub(super) config: ReactorBuilder,
    pub(super) counters: ReactorCounters,
    retired: SocketCounters,
    panics: Vec<String>,
    stop_error: Option<String>,
    pub(super) stopped: bool,
    pinned: bool,
    /// Drains of [`Reactor::wait_sockets`] that ended in anything but
    /// "read until nothing was queued", settled after its events (room
    /// kept from run to run).
    unsettled: Vec<(usize, Outcome)>,
    /// Spin mode: turns since epoll was last consulted.
    spin_turns: u32,
    /// Spin mode: consult epoll on the next turn (something was registered,
    /// or a command ran that may have registered something).
    pub(super) poll_soon: bool,
    /// The backend running (never `IoUringOrMio`).
    backend: Backend,
    /// Why io_uring was asked for and mio runs.
    fallback: Option<String>,
    /// The io_uring backend, when it runs.
    #[cfg(feature = "io-uring")]
    uring: Option<super::uring::Uring>,
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
    pub(super) fn new(config: ReactorBuilder) -> io::Result<Reactor> {
        let poll = Poll::new()
            .map_err(|e| crate::error::os_with_hint("creating the reactor's epoll instance", e))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER)
                .map_err(|e| crate::error::os_with_hint("creating the reactor's waker", e))?,
        );
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let wants_uring = config.backend != Backend::Mio;
        let may_fall_back = config.backend == Backend::IoUringOrMio;
        #[cfg(feature = "io-uring")]
        let (uring, backend, fallback) = if wants_uring {
            match super::uring::Uring::new(
                config.uring_buffers,
                config.payload_size,
                config.uring_completions,
                config.slots,
            ) {
                Ok(u) => {
                    let fd = u.fd();
                    poll.registry()
                        .register(&mut mio::unix::SourceFd(&fd), URING, Interest::READABLE)
                        .map_err(|e| {
                            crate::error::os_with_hint(
                                "registering the io_uring ring with epoll",
                                e,
                            )
                        })?;
                    (Some(u), Backend::IoUring, None)
                }
                Err(e) if may_fall_back => (None, Backend::Mio, Some(e.to_string())),
                Err(e) => return Err(e),
            }
        } else {
            (None, Backend::Mio, None)
        };
        #[cfg(not(feature = "io-uring"))]
        let (backend, fallback) = if !wants_uring {
            (Backend::Mio, None)
        } else if may_fall_back {
            (
                Backend::Mio,
                Some("the crate was built without its `io-uring` feature".to_string()),
            )
        } else {
            return Err(crate::Error::BackendUnavailable {
                backend: "io_uring",
                missing: "the crate's `io-uring` feature in this build".into(),
                source: None,
            }
            .into());
        };
        Ok(Reactor {
            events: Events::with_capacity(config.events),
            poll,
            entries: Slab::new(),
            sources: Sources::new(),
            timers: Timers::new(),
            deferred: Vec::new(),
            events_full: false,
            next_generation: 0,
            feeds: Slab::new(),
            next_feed_poll: None,
            ready: VecDeque::new(),
            backoff: Vec::new(),
            shared: Arc::new(Shared::new()),
            waker,
            cmd_tx,
            cmd_rx,
            config,
            counters: ReactorCounters::default(),
            retired: SocketCounters::default(),
            panics: Vec::new(),
            stop_error: None,
            stopped: false,
            pinned: false,
            // Room for the usual few; grows (once) if more sockets end a
            // drain unsettled in one wait.
            unsettled: Vec::with_capacity(8),
            spin_turns: 0,
            poll_soon: true,
            backend,
            fallback,
            #[cfg(feature = "io-uring")]
            uring,
        })
    }

    /// The backend reading the sockets: [`Backend::Mio`] or
    /// [`Backend::IoUring`] (what [`Backend::IoUringOrMio`] chose).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why [`Backend::IoUringOrMio`] fell back to mio (the error that
    /// [`Backend::IoUring`] would have returned), if it did.
    pub fn backend_fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Settings for a new reactor.
    pub fn builder() -> ReactorBuilder {
        ReactorBuilder::default()
    }

    /// A handle for other threads.
    pub fn handle(&self) -> Handle {
        Handle::new(
            self.cmd_tx.clone(),
            Arc::clone(&self.waker),
            Arc::clone(&self.shared),
        )
    }

    /// Registers a socket with its handler (a [`Handler`], a closure, or a
    /// [`ChannelSink`](super::ChannelSink)). The socket is made non-blocking; its receive slots
    /// are sized for its current control flags, and follow them when they
    /// change.
    pub fn register(&mut self, conn: PacketConn, handler: impl Handler) -> io::Result<Key> {
        self.register_boxed(conn, Box::new(handler))
    }

    pub(super) fn register_boxed(
        &mut self,
        conn: PacketConn,
        handler: Box<dyn Handler>,
    ) -> io::Result<Key> {
        self.register_entry(conn, EntryHandler::Own(handler))
    }

    pub(super) fn register_entry(
        &mut self,
        mut conn: PacketConn,
        handler: EntryHandler,
    ) -> io::Result<Key> {
        conn.set_nonblocking(true)?;
        if let Some(micros) = self.config.busy_poll {
            conn.set_busy_poll(micros)?;
        }
        // The io_uring backend reads into its own buffer rings and never
        // into the batch: one slot of one byte keeps the entry's shape.
        let (slots, payload_size) = match self.backend {
            Backend::IoUring => (1, 1),
            _ => (self.config.slots, self.config.payload_size),
        };
        let batch = RecvBatch::new(slots, payload_size, conn.control_flags())?;
        let slot = self.entries.vacant_key();
        let key = Key::new(slot, self.next_generation);
        self.hook(slot, key, &mut conn)?;
        self.next_generation += 1;
        let inserted = self.entries.insert(Entry {
            key,
            conn,
            batch,
            handler,
            counters: SocketCounters::default(),
            // Packets may already be queued: serve it on the next turn.
            queued: true,
            errors_in_row: 0,
            retry_at: None,
        });
        debug_assert_eq!(inserted, slot, "the slab's vacant key");
        self.ready
            .reserve(self.entries.len().saturating_sub(self.ready.len()));
        self.ready.push_back(slot);
        self.counters.sockets = self.entries.len();
        self.poll_soon = true;
        Ok(key)
    }

    /// Deregisters a socket and gives it back; its handler is dropped.
    pub fn deregister(&mut self, key: Key) -> io::Result<PacketConn> {
        self.entry(key).ok_or_else(|| unknown_key(key))?;
        let mut entry = self
            .remove_entry(key.index())
            .ok_or_else(|| unknown_key(key))?;
        self.unhook(key.index(), &mut entry)?;
        Ok(entry.conn)
    }

    /// Starts reading a socket about to take `slot`: epoll registration,
    /// or the io_uring receive armed over buffers of its own.
    fn hook(&mut self, slot: usize, key: Key, conn: &mut PacketConn) -> io::Result<()> {
        #[cfg(feature = "io-uring")]
        if let Some(uring) = self.uring.as_mut() {
            return uring.add(slot, key, conn);
        }
        let _ = key;
        self.poll
            .registry()
            .register(conn, Token(slot), Interest::READABLE)
            .map_err(|e| crate::error::os_with_hint("registering a socket with the reactor", e))
    }

    /// Stops reading a removed entry's socket: epoll deregistration, or the
    /// io_uring receive cancelled and its buffers freed.
    fn unhook(&mut self, slot: usize, entry: &mut Entry) -> io::Result<()> {
        #[cfg(feature = "io-uring")]
        if let Some(uring) = self.uring.as_mut() {
            uring.remove(slot);
            return Ok(());
        }
        let _ = slot;
        self.poll.registry().deregister(&mut entry.conn)
    }

    /// io_uring backend: takes the ring's completions and queues the
    /// sockets that got some.
    #[inline]
    fn collect_uring(&mut self) -> io::Result<()> {
        #[cfg(feature = "io-uring")]
        if let Some(uring) = self.uring.as_mut() {
            for &slot in uring.collect()? {
                if let Some(entry) = self.entries.get_mut(slot) {
                    // A socket backing off after receive errors waits for
                    // its retry (retry_due), whatever completed meanwhile.
                    if entry.retry_at.is_none() {
                        entry.queue_on(&mut self.ready, slot);
                    }
                }
            }
        }
        Ok(())
    }

    /// io_uring backend: whether completions, or work that posts them, wait.
    #[inline]
    fn uring_has_work(&mut self) -> bool {
        #[cfg(feature = "io-uring")]
        if let Some(uring) = self.uring.as_mut() {
            return uring.has_work();
        }
        false
    }

    fn remove_entry(&mut self, key: usize) -> Option<Entry> {
        let mut entry = self.entries.try_remove(key)?;
        // The drops no packet reported (at the end of a burst) go into the
        // socket's last counters; a socket that cannot say keeps them out.
        if let Ok(drops) = entry.conn.take_unreported_drops() {
            entry.counters.recv.kernel_drops += u64::from(drops);
        }
        if entry.queued {
            self.ready.retain(|&k| k != key);
        }
        if entry.retry_at.is_some() {
            self.backoff.retain(|&k| k != key);
        }
        self.retired += entry.counters;
        self.counters.sockets = self.entries.len();
        Some(entry)
    }

    /// The registration `key` names, if it is still registered.
    fn entry(&self, key: Key) -> Option<&Entry> {
        registered(&self.entries, key)
    }

    fn entry_mut(&mut self, key: Key) -> Option<&mut Entry> {
        self.entries.get_mut(key.index()).filter(|e| e.key == key)
    }

    /// Runs `f` with the socket registered under `key`, or fails with
    /// "not registered": what every handle call on one socket does.
    pub(super) fn with_registered<R>(
        &self,
        key: Key,
        f: impl FnOnce(&PacketConn) -> io::Result<R>,
    ) -> io::Result<R> {
        match self.conn(key) {
            Some(conn) => f(conn),
            None => Err(unknown_key(key)),
        }
    }

    /// The socket registered under `key`.
    pub fn conn(&self, key: Key) -> Option<&PacketConn> {
        self.entry(key).map(|e| &e.conn)
    }

    /// Changes a registered socket's control flags. Its receive slots
    /// follow at the next receive (as they do when the flags are changed
    /// through [`conn`](Self::conn), a handler's
    /// [`Context::conn`](super::Context::conn) or
    /// [`Handle::with_conn`](super::Handle::with_conn)).
    pub fn set_control_flags(&mut self, key: Key, flags: ControlFlags) -> io::Result<()> {
        let entry = self.entry(key).ok_or_else(|| unknown_key(key))?;
        entry.conn.set_control_flags(flags)
    }

    /// Counts in the socket's `recv.kernel_drops` the drops the kernel
    /// counted on it that no received packet has reported yet, and returns
    /// them ([`PacketConn::take_unreported_drops`]): the kernel reports
    /// drops with the packet after them, so drops at the end of a burst
    /// that nothing follows show only this way. Call it when the socket is
    /// quiet, before a summary; deregistration does it too.
    ///
    /// ```
    /// use ipv4_reactor::reactor::{from_fn, Reactor};
    /// use ipv4_reactor::PacketConn;
    ///
    /// let mut reactor = Reactor::builder().build()?;
    /// let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
    /// let key = reactor.register(rx, from_fn(|_p, _ctx| {}))?;
    /// assert_eq!(reactor.take_unreported_drops(key)?, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// Errors: `NotFound` for a key not registered; the system call's
    /// error, naming it.
    pub fn take_unreported_drops(&mut self, key: Key) -> io::Result<u32> {
        let entry = self.entry_mut(key).ok_or_else(|| unknown_key(key))?;
        let drops = entry.conn.take_unreported_drops()?;
        entry.counters.recv.kernel_drops += u64::from(drops);
        Ok(drops)
    }

    /// Counters of one socket. Its `recv.kernel_drops` holds the drops the
    /// packets reported (and those [`take_unreported_drops`](Self::take_unreported_drops)
    /// added): drops at the end of a burst show once a packet follows them,
    /// or once that is called.
    pub fn socket_counters(&self, key: Key) -> Option<SocketCounters> {
        self.entry(key).map(|e| e.counters)
    }

    /// Counters of the reactor, with `total` summed over every socket.
    pub fn counters(&self) -> ReactorCounters {
        let mut c = self.counters;
        c.total = self.retired;
        for (_, e) in &self.entries {
            c.total += e.counters;
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
    /// While nothing but sockets is registered (no foreign sources, timers
    /// or feeds), `run` reads them without the rest of a turn: in epoll
    /// mode it waits in `epoll_wait` and reads each socket reported at
    /// once, as a C loop does; in spin mode it reads them in a loop of its
    /// own ([`ReactorBuilder::spin`]). A handle command, a budget stop, an
    /// error or a panic is handled by a full turn, as in [`Reactor::turn`].
    ///
    /// Once `run` has returned, [`Handle`] calls fail at once (`BrokenPipe`,
    /// "the reactor has stopped"), and calls still queued fail too, until
    /// `run` or [`Reactor::turn`] is called again.
    pub fn run(&mut self) -> io::Result<()> {
        let _halt = self.halt_on_exit();
        if let (Some(cpu), false) = (self.config.pin_cpu, self.pinned) {
            crate::sys::pin_current_thread(cpu)?;
            self.pinned = true;
        }
        // What `turn` does on each call, once for the whole run: nothing
        // but this loop runs on this thread between its turns.
        let _mark = self.enter_turns();
        while !self.is_stopped() {
            if self.only_sockets() {
                // Until something needs a full turn, which follows.
                if self.config.spin {
                    self.spin_sockets();
                } else if self.ready.is_empty() {
                    self.wait_sockets()?;
                }
                if self.is_stopped() {
                    break;
                }
            }
            self.turn_inner(None)?;
        }
        self.take_stop_result()
    }

    /// Marks the reactor halted when dropped: what ends a `run` (here, or a
    /// driver of another loop's, as `tokio::run_reactor`).
    pub(crate) fn halt_on_exit(&self) -> HaltOnExit {
        HaltOnExit {
            shared: Arc::clone(&self.shared),
            commands: self.cmd_rx.clone(),
        }
    }

    /// What `run` returns once stopped: the [`PanicPolicy::Stop`] error, once.
    pub(crate) fn take_stop_result(&mut self) -> io::Result<()> {
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
    /// `turn(Some(Duration::ZERO))` is the non-blocking turn: it serves
    /// what is ready and returns at once, which is how another event loop
    /// drives a reactor nested in it. That loop polls the reactor's epoll
    /// descriptor ([`AsRawFd`](std::os::fd::AsRawFd) / [`AsFd`](std::os::fd::AsFd)) for readability (packets,
    /// foreign sources, handle calls and, in epoll mode, due timers all
    /// make it readable), turns the reactor without waiting when it is,
    /// and also whenever [`Reactor::needs_turn`] says so (work left by a
    /// budget raises no new readiness), waiting no longer than
    /// [`Reactor::next_deadline`]. `examples/nested_mio.rs` does this from
    /// an outer mio `Poll`; tokio's `AsyncFd` can do the same.
    ///
    /// A program that drives the reactor with `turn` in its own loop gets
    /// [`Handle`] calls from other threads answered on its turns; a call
    /// from the thread that turns it, between turns, fails at once (nothing
    /// could answer it), and one from another thread while the loop no
    /// longer turns fails after the handle's timeout.
    pub fn turn(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let _mark = self.enter_turns();
        self.turn_inner(timeout)
    }

    /// Marks this thread as the one turning the reactor, and the reactor as
    /// serving, until the mark is dropped.
    fn enter_turns(&self) -> TurningMark {
        let me = thread_token();
        if self.shared.home.load(Ordering::Relaxed) != me {
            self.shared.home.store(me, Ordering::Relaxed);
        }
        if self.shared.phase.load(Ordering::Relaxed) != PHASE_SERVING {
            self.shared.phase.store(PHASE_SERVING, Ordering::SeqCst);
        }
        TurningMark::enter(self.shared.id)
    }

    fn turn_inner(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        self.counters.turns += 1;
        if self.config.spin {
            self.turn_spin()
        } else {
            self.turn_epoll(timeout)
        }
    }

    /// A spin-mode turn: every registered socket is read (a receive that
    /// finds nothing costs one `recvmmsg`), without asking epoll which are
    /// ready (a socket is on the ready list from its registration on);
    /// epoll is consulted with a zero timeout once in [`SPIN_POLL_EVERY`]
    /// turns only while foreign sources are registered (they have nothing
    /// else to announce their readiness), and on the turn after a
    /// registration or a command. Handle commands are taken from their
    /// queue directly, timers are checked against the clock. Without
    /// foreign sources, an idle turn makes no system call but the receives:
    /// a packet is never held up behind an `epoll_wait`.
    fn turn_spin(&mut self) -> io::Result<usize> {
        self.spin_turns += 1;
        let periodic = self.spin_turns >= SPIN_POLL_EVERY;
        if periodic {
            self.spin_turns = 0;
        }
        if self.poll_soon || self.events_full || (periodic && self.sources.len() > 0) {
            self.spin_turns = 0;
            self.poll_soon = false;
            self.poll_events(Some(Duration::ZERO))?;
        }
        if !self.timers.is_empty() {
            self.fire_timers();
        }
        if !self.backoff.is_empty() {
            self.retry_due();
        }
        if !self.cmd_rx.is_empty() {
            self.run_commands();
            self.poll_soon = true;
        }
        if !self.deferred.is_empty() {
            self.run_deferred();
            self.poll_soon = true;
        }
        self.collect_uring()?;
        let delivered = self.serve_ready();
        if !self.feeds.is_empty() {
            self.poll_feeds();
        }
        Ok(delivered)
    }

    /// An epoll-mode turn: wait for readiness, then serve what it reported.
    fn turn_epoll(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        // Handle commands raise the waker's event (a command is queued
        // before its wake-up), so a queued command needs no check here.
        let busy = self.events_full
            || !self.ready.is_empty()
            || !self.deferred.is_empty()
            || self.uring_has_work();
        let mut timeout = if busy { Some(Duration::ZERO) } else { timeout };
        if !self.backoff.is_empty() {
            timeout = self.until_next_retry(timeout);
        }
        if !self.timers.is_empty() {
            if let Some(next) = self.timers.next_deadline() {
                let now = Instant::now();
                let wait = next.saturating_duration_since(now);
                timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
                // epoll_wait's own timeout is in milliseconds: the timerfd
                // wakes it on time (spin mode checks every turn instead).
                if !wait.is_zero() {
                    self.timers.arm(Some(next), now)?;
                }
            }
        }
        let woken = self.poll_events(timeout)?;
        if !self.timers.is_empty() {
            self.fire_timers();
        }
        if !self.backoff.is_empty() {
            self.retry_due();
        }
        if woken {
            self.run_commands();
        }
        if !self.deferred.is_empty() {
            self.run_deferred();
        }
        self.collect_uring()?;
        let delivered = self.serve_ready();
        if !self.feeds.is_empty() {
            self.poll_feeds();
        }
        // Leave the timerfd armed for the nearest deadline (timers fired or
        // were added during this turn): a loop that drives the reactor from
        // outside waits on the reactor's descriptor, not on this turn's
        // timeout, and must be woken by the next deadline.
        if !self.timers.is_empty() {
            if let Some(next) = self.timers.next_deadline() {
                let now = Instant::now();
                if next > now {
                    self.timers.arm(Some(next), now)?;
                }
            }
        }
        Ok(delivered)
    }

    /// One `epoll_wait`; queues the sockets it reports and serves the
    /// foreign sources it reports. Returns whether the waker was among them.
    fn poll_events(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        self.wait_for_events(timeout)?;
        let mut seen = 0;
        let mut woken = false;
        for event in self.events.iter() {
            seen += 1;
            let token = event.token();
            if token.0 < SOURCE_TOKEN_BASE {
                if let Some(entry) = self.entries.get_mut(token.0) {
                    entry.queue_on(&mut self.ready, token.0);
                }
                continue;
            }
            if token == WAKER {
                woken = true;
                continue;
            }
            if token == TIMER {
                self.timers.acknowledge();
                continue;
            }
            #[cfg(feature = "io-uring")]
            if token == URING {
                // Its completions are collected before the ready sockets are served.
                continue;
            }
            self.counters.source_events += 1;
            let served = self.sources.serve(
                self.poll.registry(),
                token.0,
                event,
                &self.entries,
                &mut self.deferred,
                &self.shared.stop,
            );
            self.stopped |= served.stop;
            self.counters.sources = self.sources.len();
            if let Some(msg) = served.panic {
                self.counters.handler_panics += 1;
                if self.config.panic_policy == PanicPolicy::Stop {
                    self.stopped = true;
                    self.stop_error = Some(msg.clone());
                }
                self.panics.push(msg);
            }
        }
        self.counted_events(seen);
        Ok(woken)
    }

    /// One `epoll_wait` into the events buffer (interrupted: none).
    #[inline]
    fn wait_for_events(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.counters.polls += 1;
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Counts the `seen` events of the last wait; a full buffer means more
    /// may be waiting (see `events_full`).
    #[inline]
    fn counted_events(&mut self, seen: usize) {
        self.counters.events += seen as u64;
        self.events_full = seen >= self.events.capacity();
    }

    /// Fires the timers that are due.
    fn fire_timers(&mut self) {
        let fired = self.timers.fire_due(
            Instant::now(),
            &self.entries,
            &mut self.deferred,
            &self.shared.stop,
        );
        self.counters.timer_firings += fired.count;
        self.stopped |= fired.stop;
        for msg in fired.panics {
            self.counters.handler_panics += 1;
            if self.config.panic_policy == PanicPolicy::Stop {
                self.stopped = true;
                self.stop_error = Some(msg.clone());
            }
            self.panics.push(msg);
        }
    }

    /// Runs the handle commands queued.
    fn run_commands(&mut self) {
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            self.counters.commands += 1;
            // A command catches its closure's panic itself (Handle::call_timeout).
            cmd(self);
        }
    }

    /// Runs what source and timer handlers deferred (and what that defers
    /// in turn, next turn), keeping the list's room.
    fn run_deferred(&mut self) {
        let mut list = std::mem::take(&mut self.deferred);
        for f in list.drain(..) {
            if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)))
            {
                self.counters.handler_panics += 1;
                let msg = format!("a deferred closure panicked: {}", panic_message(&*payload));
                if self.config.panic_policy == PanicPolicy::Stop {
                    self.stopped = true;
                    self.stop_error = Some(msg.clone());
                }
                self.panics.push(msg);
            }
        }
        if self.deferred.is_empty() {
            self.deferred = list;
        }
    }

    /// Whether the reactor has work it will not be woken for: sockets left
    /// on the ready list by their budget, handle commands or deferred work
    /// waiting, a full events buffer, a timer already due. A loop that
    /// drives the reactor through its descriptor ([`AsRawFd`](std::os::fd::AsRawFd)) turns it
    /// again without waiting while this is true; see [`Reactor::turn`].
    pub fn needs_turn(&mut self) -> bool {
        self.config.spin
            || self.uring_has_work()
            || self.events_full
            || !self.ready.is_empty()
            || !self.cmd_rx.is_empty()
            || !self.deferred.is_empty()
            || self
                .timers
                .next_deadline()
                .is_some_and(|at| at <= Instant::now())
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
                    entry.queue_on(ready, key);
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

    /// Serves the sockets on the ready list, each within its budget.
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
            let Some(outcome) = self.drain_slot(key) else {
                continue;
            };
            delivered += outcome.packets;
            self.settle(key, outcome);
        }
        delivered
    }

    /// Spin mode while nothing but sockets is registered (see
    /// [`Reactor::only_sockets`]): reads the sockets on the ready list in
    /// turn, in place, with none of a turn's other checks, until the
    /// reactor is stopped, a handle command is queued, or a drain ends in
    /// anything but "read until nothing was queued" (a budget stop, an
    /// error, a panic, a stop or a deregistration), which is settled as
    /// [`Reactor::serve_ready`] settles it before the next full turn. What
    /// each socket gets is what a full spin turn gives it, with fewer
    /// instructions per turn (README, "Latency").
    fn spin_sockets(&mut self) {
        // Every socket's handler is its own (no feeds: only_sockets), the
        // backend is mio (no ring), and the rules do not change meanwhile.
        let rules = self.config.drain_rules();
        let mut passes: u32 = 0;
        loop {
            self.counters.turns += 1;
            for i in 0..self.ready.len() {
                let key = self.ready[i];
                let Some(entry) = self.entries.get_mut(key) else {
                    self.ready.remove(i);
                    return;
                };
                // Drained here rather than through a shared helper: an
                // `Option<Outcome>` in between costs this idle loop ~10
                // instructions a pass (callgrind).
                let (socket, EntryHandler::Own(handler)) = entry.parts() else {
                    return;
                };
                let outcome = drain(socket, handler, rules, &self.shared.stop);
                entry.after_drain(&outcome);
                if !outcome.is_quiet() {
                    self.ready.remove(i);
                    self.settle(key, outcome);
                    return;
                }
            }
            // The command queue once in SPIN_COMMAND_CHECK passes (a
            // command waits a few microseconds at most), the stop flag on
            // every pass.
            passes = passes.wrapping_add(1);
            if self.is_stopped()
                || (passes.is_multiple_of(SPIN_COMMAND_CHECK) && !self.cmd_rx.is_empty())
            {
                return;
            }
        }
    }

    /// Epoll mode while nothing but sockets is registered and none is left
    /// on the ready list (see [`Reactor::only_sockets`]): waits in
    /// `epoll_wait` and reads each socket it reports at once, in place,
    /// with none of a turn's other work, as a C loop does. Leaves for a
    /// full turn when the waker was raised (handle commands, run here
    /// first, or a stop), when the events buffer was full, or when a drain
    /// ended in anything but "read until nothing was queued" (a budget
    /// stop, an error, a panic, a stop or a deregistration), which is
    /// settled as [`Reactor::serve_ready`] settles it.
    fn wait_sockets(&mut self) -> io::Result<()> {
        // Every socket's handler is its own (no feeds), the backend is mio
        // (no ring), no source or timer is registered (a command that adds
        // one runs below, after which this returns), and the rules do not
        // change meanwhile.
        let rules = self.config.drain_rules();
        loop {
            self.counters.turns += 1;
            self.wait_for_events(None)?;
            let mut seen = 0;
            let mut woken = false;
            // A handler or a handle asked to stop: the sockets reported
            // after it wait on the ready list, as a full turn leaves them.
            let mut stopping = self.stopped;
            for event in self.events.iter() {
                seen += 1;
                let token = event.token();
                if token == WAKER {
                    woken = true;
                } else if token == TIMER {
                    // Armed for a timer cancelled since.
                    self.timers.acknowledge();
                } else if let Some(entry) = self.entries.get_mut(token.0) {
                    stopping = stopping || self.shared.stop.load(Ordering::Acquire);
                    if stopping {
                        entry.queue_on(&mut self.ready, token.0);
                        continue;
                    }
                    let (socket, EntryHandler::Own(handler)) = entry.parts() else {
                        continue;
                    };
                    let outcome = drain(socket, handler, rules, &self.shared.stop);
                    entry.after_drain(&outcome);
                    if !outcome.is_quiet() {
                        stopping = outcome.stop;
                        // As if served from the ready list.
                        entry.queued = true;
                        self.unsettled.push((token.0, outcome));
                    }
                }
            }
            self.counted_events(seen);
            let settling = !self.unsettled.is_empty();
            if settling {
                let mut unsettled = std::mem::take(&mut self.unsettled);
                for (key, outcome) in unsettled.drain(..) {
                    self.settle(key, outcome);
                }
                self.unsettled = unsettled;
            }
            if woken {
                self.run_commands();
            }
            if woken || settling || self.events_full || self.is_stopped() {
                return Ok(());
            }
        }
    }

    /// Whether `run` may read the sockets without the rest of a turn
    /// ([`Reactor::spin_sockets`], [`Reactor::wait_sockets`]): no foreign
    /// sources, timers, feeds, backed-off sockets, deferred work or
    /// io_uring ring, and no epoll poll due (after a registration or a
    /// command, in spin mode).
    fn only_sockets(&self) -> bool {
        #[cfg(feature = "io-uring")]
        if self.uring.is_some() {
            return false;
        }
        // `poll_soon` is spin mode's (epoll mode polls on every wait).
        let poll_due = self.config.spin && self.poll_soon;
        !poll_due
            && !self.events_full
            && self.sources.len() == 0
            && self.timers.is_empty()
            && self.feeds.is_empty()
            && self.backoff.is_empty()
            && self.deferred.is_empty()
    }

    /// Reads the socket in slot `key` within its budget through the
    /// backend that runs; `None` if the slot is empty.
    #[inline]
    fn drain_slot(&mut self, key: usize) -> Option<Outcome> {
        let entry = self.entries.get_mut(key)?;
        let (rules, stop) = (self.config.drain_rules(), &self.shared.stop);
        #[cfg(feature = "io-uring")]
        let uring = self.uring.as_mut();
        #[cfg(not(feature = "io-uring"))]
        let uring = None;
        let (socket, handler) = entry.parts();
        let outcome = match handler {
            EntryHandler::Own(handler) => drain_entry(uring, key, socket, handler, rules, stop),
            EntryHandler::FeedLine { feed, line } => {
                let mut line = FeedLine::new(&mut self.feeds, *feed, *line);
                drain_entry(uring, key, socket, &mut line, rules, stop)
            }
        };
        entry.after_drain(&outcome);
        Some(outcome)
    }

    /// What a drain's outcome does to its socket, which is off the ready
    /// list: a panic is recorded (and drops the socket), a stop or a
    /// deregistration is carried out, an error backs the socket off, and a
    /// socket left with packets (budget spent), or any socket in spin mode,
    /// goes back on the ready list.
    fn settle(&mut self, key: usize, outcome: Outcome) {
        if let Some(payload) = outcome.panic {
            self.counters.handler_panics += 1;
            let msg = format!(
                "handler of {} panicked: {}",
                self.entries[key].key,
                panic_message(&*payload)
            );
            if self.config.panic_policy == PanicPolicy::Stop {
                self.stopped = true;
                self.stop_error = Some(msg.clone());
            }
            self.panics.push(msg);
            self.drop_socket(key);
            return;
        }
        if outcome.stop {
            self.stopped = true;
        }
        if outcome.deregister {
            self.drop_socket(key);
            return;
        }
        if outcome.failed {
            self.after_error(key, outcome.packets > 0);
            return;
        }
        let stopping = !outcome.drained && (outcome.stop || self.is_stopped());
        let entry = &mut self.entries[key];
        if outcome.drained {
            if self.config.spin {
                // Spin mode reads every socket every turn.
                self.ready.push_back(key);
            } else {
                entry.queued = false;
            }
        } else {
            if !stopping {
                entry.counters.budget_stops += 1;
            }
            self.ready.push_back(key);
        }
    }

    /// Joins again the groups of a registered socket whose interface was
    /// re-created (see [`PacketConn::rejoin`], whose table says what the
    /// kernel does to memberships when an interface goes down, loses its
    /// address or is re-created). Counted in
    /// [`ReactorCounters::rejoined`] and [`ReactorCounters::rejoin_errors`].
    pub fn rejoin(&mut self, key: Key) -> io::Result<crate::RejoinReport> {
        let entry = self.entry(key).ok_or_else(|| unknown_key(key))?;
        let result = entry.conn.rejoin();
        match &result {
            Ok(report) => self.counters.rejoined += report.rejoined as u64,
            Err(_) => self.counters.rejoin_errors += 1,
        }
        result
    }

    /// [`Reactor::rejoin`] for every registered socket; the first error is
    /// returned after all were tried.
    pub fn rejoin_all(&mut self) -> io::Result<crate::RejoinReport> {
        let mut total = crate::RejoinReport::default();
        let mut first_error = None;
        for (_, entry) in &self.entries {
            match entry.conn.rejoin() {
                Ok(report) => {
                    total.unchanged += report.unchanged;
                    total.rejoined += report.rejoined;
                }
                Err(e) => {
                    self.counters.rejoin_errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        self.counters.rejoined += total.rejoined as u64;
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    fn drop_socket(&mut self, key: usize) {
        if let Some(mut entry) = self.remove_entry(key) {
            let _ = self.unhook(key, &mut entry);
        }
    }
}

/// The io_uring backend's state, or nothing in a build without it.
#[cfg(feature = "io-uring")]
type UringState = super::uring::Uring;
#[cfg(not(feature = "io-uring"))]
type UringState = std::convert::Infallible;

/// Serves one ready socket through the backend that runs.
#[inline]
fn drain_entry<D: Deliver + ?Sized>(
    uring: Option<&mut UringState>,
    slot: usize,
    socket: Socket<'_>,
    handler: &mut D,
    rules: DrainRules,
    stop: &std::sync::atomic::AtomicBool,
) -> Outcome {
    #[cfg(feature = "io-uring")]
    if let Some(uring) = uring {
        return drain_uring(uring, slot, socket, handler, rules, stop);
    }
    #[cfg(not(feature = "io-uring"))]
    let _ = (uring, slot);
    drain(socket, handler, rules, stop)
}

pub(super) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

pub(super) fn unknown_key(key: Key) -> io::Error {
    crate::error::invalid(format!("{key} is not registered in this reactor"))
}

/// The reactor's epoll descriptor, for an outer event loop to poll (see
/// [`Reactor::turn`]). Register it for readability only, and never read or
/// close it.
impl std::os::fd::AsRawFd for Reactor {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.poll)
    }
}

/// The reactor's epoll descriptor, borrowed; see [`AsRawFd`](std::os::fd::AsRawFd).
impl std::os::fd::AsFd for Reactor {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        crate::sys::borrow_fd(&self.poll)
    }
}
