//! Timers on the reactor thread: one-shot and periodic, cancellable.
//!
//! Deadlines sit in a binary heap whose room is reserved when a timer is
//! added, so a firing (pop, call, push back for a periodic one) allocates
//! nothing. A cancelled timer leaves its heap entry behind, recognised by
//! its generation and skipped; the heap is compacted when such entries
//! outnumber the live timers.
//!
//! In epoll mode one `timerfd` per reactor (made with the first timer) is
//! armed for the nearest deadline, so `epoll_wait` wakes on time to the
//! microsecond rather than to the millisecond of its own timeout (which is
//! set to the deadline too). In spin mode deadlines are checked every turn.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use slab::Slab;

use super::event_loop::{Deferred, Entry};
use super::{Key, Reactor, SocketCounters};
use crate::packet_conn::PacketConn;

/// Identifies a timer of a reactor; like [`Key`], a key kept after its
/// timer fired (one-shot) or was cancelled never names another timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerKey {
    slot: usize,
    generation: u64,
}

impl fmt::Display for TimerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timer #{} (registration {})", self.slot, self.generation)
    }
}

/// A timer's handler: a closure called on the reactor thread.
pub(super) type TimerFn = Box<dyn FnMut(&mut TimerContext<'_>) + Send>;

/// What a timer's handler sees and may do: when it was due, how late it
/// runs, the reactor's sockets; cancel itself, stop the reactor, or defer
/// work that needs the whole reactor.
pub struct TimerContext<'a> {
    key: TimerKey,
    deadline: Instant,
    now: Instant,
    missed: u64,
    periodic: bool,
    cancel: bool,
    stop: bool,
    entries: &'a Slab<Entry>,
    deferred: &'a mut Vec<Deferred>,
    stop_requested: &'a AtomicBool,
}

impl fmt::Debug for TimerContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerContext")
            .field("key", &self.key)
            .field("deadline", &self.deadline)
            .field("now", &self.now)
            .field("missed", &self.missed)
            .finish()
    }
}

impl TimerContext<'_> {
    /// This timer's key.
    pub fn key(&self) -> TimerKey {
        self.key
    }

    /// When this firing was due.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The clock as the reactor read it before firing the due timers.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// How late this firing is: `now() - deadline()`.
    pub fn lateness(&self) -> Duration {
        self.now.saturating_duration_since(self.deadline)
    }

    /// Firings of a periodic timer skipped because the reactor was more
    /// than a period late (a periodic timer keeps its phase: the next
    /// deadline is the first multiple of the period after now).
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Cancels this timer: a periodic one fires no more (a one-shot timer
    /// is done anyway).
    pub fn cancel(&mut self) {
        self.cancel = true;
    }

    /// Stops the reactor after this turn: `run` returns.
    pub fn stop(&mut self) {
        self.stop = true;
    }

    /// Whether a [`Handle`](super::Handle) asked the reactor to stop.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// A socket registered in the reactor (to rejoin its groups, send, or
    /// change its flags).
    pub fn conn(&self, key: Key) -> Option<&PacketConn> {
        super::event_loop::registered(self.entries, key).map(|e| &e.conn)
    }

    /// Counters of a registered socket (to see whether it went silent).
    pub fn socket_counters(&self, key: Key) -> Option<SocketCounters> {
        super::event_loop::registered(self.entries, key).map(|e| e.counters)
    }

    /// Runs `f` with the whole reactor on this thread once the due timers
    /// have fired, in this turn: to add or cancel timers, register or
    /// deregister sockets and sources. Allocates (the closure is boxed).
    pub fn defer(&mut self, f: impl FnOnce(&mut Reactor) + Send + 'static) {
        self.deferred.push(Box::new(f));
    }

    /// Whether this timer is periodic.
    pub fn is_periodic(&self) -> bool {
        self.periodic
    }
}

struct Timer {
    generation: u64,
    deadline: Instant,
    period: Option<Duration>,
    handler: TimerFn,
}

/// What firing the due timers did, for the reactor.
#[derive(Default)]
pub(super) struct Fired {
    pub(super) count: u64,
    pub(super) stop: bool,
    /// Messages of handlers that panicked (their timers are gone).
    pub(super) panics: Vec<String>,
}

pub(super) struct Timers {
    timers: Slab<Timer>,
    /// (deadline, slot, generation), earliest first; stale entries of
    /// cancelled or re-armed timers are skipped when they surface.
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    next_generation: u64,
    /// The timerfd of epoll mode, made with the first timer.
    fd: Option<OwnedFd>,
    /// The deadline the timerfd is armed for.
    armed: Option<Instant>,
}

impl Timers {
    pub(super) fn new() -> Timers {
        Timers {
            timers: Slab::new(),
            heap: BinaryHeap::new(),
            next_generation: 0,
            fd: None,
            armed: None,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.timers.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }

    /// Adds a timer; `registry` is given in epoll mode (the timerfd is
    /// made and registered with the first timer).
    pub(super) fn add(
        &mut self,
        deadline: Instant,
        period: Option<Duration>,
        handler: TimerFn,
        registry: Option<(&mio::Registry, mio::Token)>,
    ) -> io::Result<TimerKey> {
        if let (None, Some((registry, token))) = (&self.fd, registry) {
            let fd = crate::sys::timerfd_create().map_err(|e| {
                crate::error::os_with_hint("creating the reactor's timerfd (its first timer)", e)
            })?;
            registry
                .register(
                    &mut mio::unix::SourceFd(&fd.as_raw_fd()),
                    token,
                    mio::Interest::READABLE,
                )
                .map_err(|e| crate::error::os_with_hint("registering the reactor's timerfd", e))?;
            self.fd = Some(fd);
        }
        // Room for this timer's heap entry, and for compaction's rebuild:
        // firings then push into reserved space.
        self.heap.reserve(1);
        let generation = self.next_generation;
        self.next_generation += 1;
        let slot = self.timers.insert(Timer {
            generation,
            deadline,
            period,
            handler,
        });
        self.heap.push(Reverse((deadline, slot, generation)));
        Ok(TimerKey { slot, generation })
    }

    fn get(&self, key: TimerKey) -> Option<&Timer> {
        self.timers
            .get(key.slot)
            .filter(|t| t.generation == key.generation)
    }

    pub(super) fn deadline(&self, key: TimerKey) -> Option<Instant> {
        self.get(key).map(|t| t.deadline)
    }

    /// Cancels a timer; false if it was not there (fired, cancelled, or a
    /// key of another reactor).
    pub(super) fn cancel(&mut self, key: TimerKey) -> bool {
        if self.get(key).is_none() {
            return false;
        }
        self.timers.remove(key.slot);
        if self.heap.len() > 2 * self.timers.len() + 64 {
            let timers = &self.timers;
            self.heap.retain(|Reverse((_, slot, generation))| {
                timers
                    .get(*slot)
                    .is_some_and(|t| t.generation == *generation)
            });
        }
        true
    }

    /// The nearest deadline (maybe of a cancelled timer: an early wake-up
    /// at worst).
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, slot, generation))) = self.heap.peek().copied() {
            match self.timers.get(slot) {
                Some(t) if t.generation == generation && t.deadline == at => return Some(at),
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    /// Arms the timerfd for `deadline` if it is not armed for it already.
    pub(super) fn arm(&mut self, deadline: Option<Instant>, now: Instant) -> io::Result<()> {
        let Some(fd) = &self.fd else {
            return Ok(());
        };
        if self.armed == deadline {
            return Ok(());
        }
        crate::sys::timerfd_set(
            fd.as_fd(),
            deadline.map(|d| d.saturating_duration_since(now)),
        )?;
        self.armed = deadline;
        Ok(())
    }

    /// After the timerfd's readiness event: clears it.
    pub(super) fn acknowledge(&mut self) {
        if let Some(fd) = &self.fd {
            let _ = crate::sys::timerfd_read(fd.as_fd());
            self.armed = None;
        }
    }

    /// Fires every timer due at `now`, each at most once.
    pub(super) fn fire_due(
        &mut self,
        now: Instant,
        entries: &Slab<Entry>,
        deferred: &mut Vec<Deferred>,
        stop_requested: &AtomicBool,
    ) -> Fired {
        let mut fired = Fired::default();
        while let Some(&Reverse((at, slot, generation))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(timer) = self.timers.get_mut(slot) else {
                continue;
            };
            if timer.generation != generation || timer.deadline != at {
                continue;
            }
            let mut missed = 0;
            let next = timer.period.map(|period| {
                let mut next = at + period;
                if next <= now {
                    let behind = now.duration_since(at).as_nanos();
                    let periods = behind / period.as_nanos().max(1);
                    missed = u64::try_from(periods).unwrap_or(u64::MAX);
                    next = u32::try_from(periods + 1)
                        .ok()
                        .and_then(|n| period.checked_mul(n))
                        .and_then(|d| at.checked_add(d))
                        .filter(|&n| n > now)
                        .unwrap_or(now + period);
                }
                next
            });
            let mut ctx = TimerContext {
                key: TimerKey { slot, generation },
                deadline: at,
                now,
                missed,
                periodic: next.is_some(),
                cancel: false,
                stop: false,
                entries,
                deferred,
                stop_requested,
            };
            fired.count += 1;
            let handler = &mut timer.handler;
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&mut ctx)));
            fired.stop |= ctx.stop;
            let cancel = ctx.cancel;
            match (result, next) {
                (Err(payload), _) => {
                    fired.panics.push(format!(
                        "handler of {} panicked: {}",
                        TimerKey { slot, generation },
                        super::event_loop::panic_message(&*payload)
                    ));
                    self.timers.remove(slot);
                }
                (Ok(()), Some(next)) if !cancel => {
                    timer.deadline = next;
                    // The entry just popped left room: no allocation.
                    self.heap.push(Reverse((next, slot, generation)));
                }
                (Ok(()), _) => {
                    self.timers.remove(slot);
                }
            }
        }
        fired
    }
}

/// A period of zero is an error (it would fire on every turn).
pub(super) fn check_period(period: Duration) -> io::Result<()> {
    if period.is_zero() {
        return Err(crate::error::invalid(
            "a periodic timer needs a period above zero",
        ));
    }
    Ok(())
}

impl Reactor {
    fn add_any_timer(
        &mut self,
        deadline: Instant,
        period: Option<Duration>,
        handler: TimerFn,
    ) -> io::Result<TimerKey> {
        let registry =
            (!self.config.spin).then(|| (self.poll.registry(), super::event_loop::TIMER));
        let key = self.timers.add(deadline, period, handler, registry)?;
        self.counters.timers = self.timers.len();
        Ok(key)
    }

    /// Adds a one-shot timer: `handler` runs on the reactor thread once,
    /// `after` from now (on the first turn at or after its deadline).
    ///
    /// The reactor's poll waits no longer than its nearest deadline; in
    /// epoll mode a `timerfd` (one per reactor, made with its first timer)
    /// wakes it to the microsecond, in spin mode the deadlines are checked
    /// every turn. Adding a timer allocates (the handler is boxed, the
    /// heap may grow); firing does not.
    ///
    /// Errors: the timerfd cannot be made (descriptor limit).
    pub fn add_timer(
        &mut self,
        after: Duration,
        handler: impl FnMut(&mut TimerContext<'_>) + Send + 'static,
    ) -> io::Result<TimerKey> {
        self.add_timer_at(Instant::now() + after, handler)
    }

    /// Adds a one-shot timer due at `deadline` (a past deadline fires on
    /// the next turn).
    pub fn add_timer_at(
        &mut self,
        deadline: Instant,
        handler: impl FnMut(&mut TimerContext<'_>) + Send + 'static,
    ) -> io::Result<TimerKey> {
        self.add_any_timer(deadline, None, Box::new(handler))
    }

    /// Adds a periodic timer: `handler` runs every `period`, the first time
    /// `period` from now, until it is cancelled ([`Reactor::cancel_timer`],
    /// [`TimerContext::cancel`]). Deadlines keep their phase
    /// (`first + n * period`); a reactor more than a period late skips the
    /// firings it missed and says how many ([`TimerContext::missed`]).
    ///
    /// Errors: a zero period (`InvalidInput`); the timerfd cannot be made.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipv4_reactor::reactor::Reactor;
    ///
    /// let mut reactor = Reactor::builder().build()?;
    /// let mut ticks = 0;
    /// reactor.add_periodic(Duration::from_millis(1), move |ctx| {
    ///     ticks += 1;
    ///     if ticks == 5 {
    ///         ctx.stop();
    ///     }
    /// })?;
    /// reactor.run()?; // about 5 ms
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn add_periodic(
        &mut self,
        period: Duration,
        handler: impl FnMut(&mut TimerContext<'_>) + Send + 'static,
    ) -> io::Result<TimerKey> {
        check_period(period)?;
        self.add_any_timer(Instant::now() + period, Some(period), Box::new(handler))
    }

    /// Cancels a timer; returns false if it was no longer there (a
    /// one-shot timer that fired, a timer cancelled before).
    pub fn cancel_timer(&mut self, key: TimerKey) -> bool {
        let cancelled = self.timers.cancel(key);
        self.counters.timers = self.timers.len();
        cancelled
    }

    /// When a timer is next due, if it is still there.
    pub fn timer_deadline(&self, key: TimerKey) -> Option<Instant> {
        self.timers.deadline(key)
    }

    /// The nearest deadline of all timers: how long a loop driving the
    /// reactor from outside may wait at most (in epoll mode the reactor's
    /// descriptor also turns readable then, through its timerfd).
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.timers.next_deadline()
    }
}
