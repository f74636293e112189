//! Steering a reactor from other threads.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};
use mio::Waker;

use super::event_loop::{panic_message, unknown_key, Command};
use super::shared::{thread_token, Shared, TURNING};
use super::{
    FeedCounters, FeedHandler, FeedKey, FeedParts, Handler, Key, Reactor, ReactorCounters,
    Readiness, SocketCounters, SourceContext, SourceKey, TimerContext, TimerKey,
};
use crate::control::ControlFlags;
use crate::feed::Arbiter;
use crate::interface::Interface;
use crate::packet_conn::PacketConn;

#[allow(unused_imports)] // for the docs
use super::{Context, Overflow};

/// How long [`Handle`] calls wait for the reactor to run them, unless the
/// handle was given another timeout ([`Handle::with_call_timeout`]) or the
/// call is [`Handle::call_timeout`]: 5 seconds. A turning reactor answers
/// within one turn, which takes microseconds to milliseconds; a call that
/// waits this long finds a reactor that is blocked (a full
/// [`Overflow::Block`] sink, a handler that does not return) or that
/// nothing turns, and fails with `TimedOut`.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub(super) fn new(tx: Sender<Command>, waker: Arc<Waker>, shared: Arc<Shared>) -> Handle {
        Handle {
            tx,
            waker,
            shared,
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

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
        let (tx, rx) = crossbeam_channel::bounded::<Result<R, String>>(1);
        let state = self.post(f, move |reply| {
            let _ = tx.send(reply);
        })?;
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

    /// Queues `f` for the reactor and wakes it; `reply` gets the result
    /// (or the panic message) on the reactor's thread. Returns the call's
    /// state, with which the caller withdraws it while the reactor has not
    /// taken it. Fails at once (`BrokenPipe`) when the reactor has stopped
    /// or is gone; waits for nothing.
    fn post<R, F>(
        &self,
        f: F,
        reply: impl FnOnce(Result<R, String>) + Send + 'static,
    ) -> io::Result<Arc<AtomicU8>>
    where
        R: Send + 'static,
        F: FnOnce(&mut Reactor) -> R + Send + 'static,
    {
        let state = Arc::new(AtomicU8::new(CALL_PENDING));
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
            let result = match catch_unwind(AssertUnwindSafe(|| f(r))) {
                Ok(v) => Ok(v),
                Err(payload) => {
                    r.counters.command_panics += 1;
                    Err(panic_message(&*payload))
                }
            };
            reply(result);
        });
        self.tx.send(cmd).map_err(|_| gone())?;
        // Pairs with the fence in HaltOnExit: if run returned meanwhile,
        // either it dropped this command or this load sees the halt.
        fence(Ordering::SeqCst);
        if self.shared.halted() && withdraw(&state) {
            return Err(stopped());
        }
        self.waker.wake()?;
        Ok(state)
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
        self.call(move |r| r.with_registered(key, f))?
    }

    /// Joins `group` on `iface` on a registered socket.
    pub fn join_group(&self, key: Key, iface: &Interface, group: Ipv4Addr) -> io::Result<()> {
        let iface = iface.clone();
        self.with_conn(key, move |c| c.join_group(&iface, group))
    }

    /// Leaves `group` on `iface` on a registered socket.
    pub fn leave_group(&self, key: Key, iface: &Interface, group: Ipv4Addr) -> io::Result<()> {
        let iface = iface.clone();
        self.with_conn(key, move |c| c.leave_group(&iface, group))
    }

    /// Include mode: receive `group` from `source` on a registered socket.
    pub fn join_source_group(
        &self,
        key: Key,
        iface: &Interface,
        group: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        let iface = iface.clone();
        self.with_conn(key, move |c| c.join_source_group(&iface, group, source))
    }

    /// Include mode: stop receiving `group` from `source`.
    pub fn leave_source_group(
        &self,
        key: Key,
        iface: &Interface,
        group: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        let iface = iface.clone();
        self.with_conn(key, move |c| c.leave_source_group(&iface, group, source))
    }

    /// Exclude mode: block `source` of `group`.
    pub fn block_source(
        &self,
        key: Key,
        iface: &Interface,
        group: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        let iface = iface.clone();
        self.with_conn(key, move |c| c.block_source(&iface, group, source))
    }

    /// Exclude mode: unblock `source` of `group`.
    pub fn unblock_source(
        &self,
        key: Key,
        iface: &Interface,
        group: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        let iface = iface.clone();
        self.with_conn(key, move |c| c.unblock_source(&iface, group, source))
    }

    /// Changes a registered socket's control flags (its receive slots
    /// follow at the next receive).
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

    /// Registers the lines of one feed; see [`Reactor::register_feed`].
    pub fn register_feed(
        &self,
        lines: Vec<PacketConn>,
        arbiter: Arbiter,
        handler: impl FeedHandler,
    ) -> io::Result<FeedKey> {
        let handler: Box<dyn FeedHandler> = Box::new(handler);
        self.call(move |r| r.register_feed_boxed(lines, arbiter, handler))?
    }

    /// A feed's figures so far; see [`Reactor::feed_counters`].
    pub fn feed_counters(&self, feed: FeedKey) -> io::Result<FeedCounters> {
        self.call(move |r| {
            r.feed_counters(feed).ok_or_else(|| {
                crate::error::invalid(format!("{feed} is not registered in this reactor"))
            })
        })?
    }

    /// Deregisters a feed and gives back its sockets and finished arbiter;
    /// see [`Reactor::deregister_feed`].
    pub fn deregister_feed(&self, feed: FeedKey) -> io::Result<FeedParts> {
        self.call(move |r| r.deregister_feed(feed))?
    }

    /// Registers a foreign source with its handler; see
    /// [`Reactor::register_source`].
    pub fn register_source<S, F>(
        &self,
        source: S,
        interest: mio::Interest,
        handler: F,
    ) -> io::Result<SourceKey<S>>
    where
        S: mio::event::Source + Send + 'static,
        F: FnMut(&mut S, Readiness, &mut SourceContext<'_>) + Send + 'static,
    {
        self.call(move |r| r.register_source(source, interest, handler))?
    }

    /// Deregisters a foreign source and gives it back; see
    /// [`Reactor::deregister_source`].
    pub fn deregister_source<S: Send + 'static>(&self, key: SourceKey<S>) -> io::Result<S> {
        self.call(move |r| r.deregister_source(key))?
    }

    /// Runs `f` with a registered foreign source on the reactor's thread
    /// (to write to a stream, say).
    pub fn with_source<S, R, F>(&self, key: SourceKey<S>, f: F) -> io::Result<R>
    where
        S: 'static,
        R: Send + 'static,
        F: FnOnce(&mut S) -> R + Send + 'static,
    {
        self.call(move |r| {
            r.source_mut(key).map(f).ok_or_else(|| {
                crate::error::invalid(format!("{key} is not registered in this reactor"))
            })
        })?
    }

    /// Adds a one-shot timer (its handler is sent to the reactor boxed);
    /// see [`Reactor::add_timer`].
    pub fn add_timer(
        &self,
        after: Duration,
        handler: impl FnMut(&mut TimerContext<'_>) + Send + 'static,
    ) -> io::Result<TimerKey> {
        // The deadline is counted from this call, not from when the
        // reactor takes it.
        let deadline = std::time::Instant::now() + after;
        self.call(move |r| r.add_timer_at(deadline, handler))?
    }

    /// Adds a periodic timer; see [`Reactor::add_periodic`].
    pub fn add_periodic(
        &self,
        period: Duration,
        handler: impl FnMut(&mut TimerContext<'_>) + Send + 'static,
    ) -> io::Result<TimerKey> {
        self.call(move |r| r.add_periodic(period, handler))?
    }

    /// Cancels a timer; `Ok(false)` if it was no longer there.
    pub fn cancel_timer(&self, key: TimerKey) -> io::Result<bool> {
        self.call(move |r| r.cancel_timer(key))
    }

    /// Joins again the groups of a registered socket whose interface was
    /// re-created; see [`Reactor::rejoin`].
    pub fn rejoin(&self, key: Key) -> io::Result<crate::RejoinReport> {
        self.call(move |r| r.rejoin(key))?
    }

    /// [`Reactor::rejoin_all`] from another thread.
    pub fn rejoin_all(&self) -> io::Result<crate::RejoinReport> {
        self.call(|r| r.rejoin_all())?
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

// The forms of the calls for async code (feature `tokio`): awaited, or
// queued without waiting. In a file of their own, a child of this module
// (they use the handle's private parts).
#[cfg(feature = "tokio")]
#[path = "handle_async.rs"]
mod handle_async;
#[cfg(feature = "tokio")]
pub use handle_async::PendingCall;
