//! [`Handle`] calls for async code (feature `tokio`): `*_async` forms that
//! a task awaits without blocking its thread, and `try_*` forms that queue
//! the call and return at once with a [`PendingCall`].

use std::fmt;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::tokio::sync::oneshot;

use super::{gone, stopped, timed_out, withdraw, Handle};
use crate::control::ControlFlags;
use crate::feed::Arbiter;
use crate::interface::Interface;
use crate::packet_conn::PacketConn;
use crate::reactor::shared::Shared;
use crate::reactor::{
    FeedCounters, FeedHandler, FeedKey, FeedParts, Handler, Key, Reactor, ReactorCounters,
    SocketCounters,
};

/// A call queued on a reactor by a `try_*` form of [`Handle`]
/// ([`Handle::try_call`]): the reactor runs it on its next turn. Await it
/// for the result, or look with [`try_result`](Self::try_result) without
/// waiting.
///
/// Dropped before the reactor took it, the call is withdrawn and will not
/// run; once taken, it runs to the end and its result is dropped.
///
/// Awaiting it waits as long as the reactor takes to answer, without a
/// timeout of its own (the `*_async` forms add the handle's): wrap it in
/// `tokio::time::timeout` if the reactor may be blocked.
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct PendingCall<R> {
    state: Arc<AtomicU8>,
    reply: oneshot::Receiver<Result<R, String>>,
    shared: Arc<Shared>,
    done: bool,
}

impl<R> fmt::Debug for PendingCall<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingCall")
            .field("reactor", &self.shared.id)
            .field("done", &self.done)
            .finish()
    }
}

impl<R> PendingCall<R> {
    /// The result, if the reactor has answered: `None` while the call is
    /// queued or running. Once it gave a result (or an error), later calls
    /// return an error of kind `InvalidInput`.
    pub fn try_result(&mut self) -> Option<io::Result<R>> {
        if self.done {
            return Some(Err(already_taken()));
        }
        let result = match self.reply.try_recv() {
            Ok(reply) => reply_result(reply),
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Err(oneshot::error::TryRecvError::Closed) => Err(self.ended()),
        };
        self.done = true;
        Some(result)
    }

    /// Withdraws the call if the reactor has not taken it yet: true when
    /// it will not run, false when it has run or is running (its result
    /// can still be awaited).
    pub fn withdraw(&self) -> bool {
        withdraw(&self.state)
    }

    fn ended(&self) -> io::Error {
        if self.shared.halted() {
            stopped()
        } else {
            gone()
        }
    }
}

impl<R> Future for PendingCall<R> {
    type Output = io::Result<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if self.done {
            return Poll::Ready(Err(already_taken()));
        }
        let result = match Pin::new(&mut self.reply).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(reply)) => reply_result(reply),
            Poll::Ready(Err(_closed)) => Err(self.ended()),
        };
        self.done = true;
        Poll::Ready(result)
    }
}

impl<R> Drop for PendingCall<R> {
    fn drop(&mut self) {
        withdraw(&self.state);
    }
}

fn reply_result<R>(reply: Result<R, String>) -> io::Result<R> {
    reply.map_err(|msg| io::Error::other(format!("the call panicked on the reactor: {msg}")))
}

fn already_taken() -> io::Error {
    crate::error::invalid("this PendingCall already gave its result")
}

/// A tokio runtime is needed for the handle's timeout.
fn need_runtime(what: &str) -> io::Result<()> {
    if ::tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other(format!(
            "Handle::{what} was awaited outside a tokio runtime: it times out with tokio's timer"
        )));
    }
    Ok(())
}

#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl Handle {
    /// Queues `f` for the reactor's thread and returns at once, never
    /// blocking: the reactor runs it on its next turn, and the returned
    /// [`PendingCall`] gives its result. It may be called from anywhere,
    /// also from a handler of the same reactor or from the thread that
    /// turns it (the call runs on a later turn).
    ///
    /// A panic in `f` is caught as in [`Handle::call`].
    ///
    /// Errors, at once: `BrokenPipe` when the reactor has stopped (`run`
    /// returned) or is gone.
    pub fn try_call<R, F>(&self, f: F) -> io::Result<PendingCall<R>>
    where
        R: Send + 'static,
        F: FnOnce(&mut Reactor) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let state = self.post(f, move |reply| {
            let _ = tx.send(reply);
        })?;
        Ok(PendingCall {
            state,
            reply: rx,
            shared: Arc::clone(&self.shared),
            done: false,
        })
    }

    /// [`Handle::call`] for async code: runs `f` on the reactor's thread
    /// and resolves with its result, waiting without blocking the task's
    /// thread, at most the handle's timeout
    /// ([`DEFAULT_CALL_TIMEOUT`](super::DEFAULT_CALL_TIMEOUT) unless set
    /// with [`Handle::with_call_timeout`]), as [`Handle::call_timeout`]
    /// does: on `TimedOut`, `f` has not run and will not run, unless the
    /// error says it may still complete. Dropping the future before the
    /// reactor took the call withdraws it.
    ///
    /// Unlike the blocking form, it may be awaited on the thread that turns
    /// the reactor (by a task, between turns driven by the same runtime).
    ///
    /// Errors: as [`Handle::try_call`], and `TimedOut`; outside a tokio
    /// runtime, an error of kind `Other`. Tokio panics, as for any of its
    /// timers, on a runtime built without its timer (`Builder::enable_time`
    /// or `enable_all`; `#[tokio::main]` has it).
    pub async fn call_async<R, F>(&self, f: F) -> io::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Reactor) -> R + Send + 'static,
    {
        need_runtime("call_async")?;
        let call = self.try_call(f)?;
        wait_bounded(call, self.timeout).await
    }

    /// [`Handle::register`], awaited; see [`Handle::call_async`].
    pub async fn register_async(&self, conn: PacketConn, handler: impl Handler) -> io::Result<Key> {
        let handler: Box<dyn Handler> = Box::new(handler);
        self.call_async(move |r| r.register_boxed(conn, handler))
            .await?
    }

    /// [`Handle::register`], queued without waiting; see [`Handle::try_call`].
    pub fn try_register(
        &self,
        conn: PacketConn,
        handler: impl Handler,
    ) -> io::Result<PendingCall<io::Result<Key>>> {
        let handler: Box<dyn Handler> = Box::new(handler);
        self.try_call(move |r| r.register_boxed(conn, handler))
    }

    /// [`Handle::deregister`], awaited; see [`Handle::call_async`].
    pub async fn deregister_async(&self, key: Key) -> io::Result<PacketConn> {
        self.call_async(move |r| r.deregister(key)).await?
    }

    /// [`Handle::deregister`], queued without waiting; see [`Handle::try_call`].
    pub fn try_deregister(&self, key: Key) -> io::Result<PendingCall<io::Result<PacketConn>>> {
        self.try_call(move |r| r.deregister(key))
    }

    /// [`Handle::with_conn`], awaited; see [`Handle::call_async`].
    pub async fn with_conn_async<R, F>(&self, key: Key, f: F) -> io::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&PacketConn) -> io::Result<R> + Send + 'static,
    {
        self.call_async(move |r| r.with_registered(key, f)).await?
    }

    /// [`Handle::join_group`], awaited; see [`Handle::call_async`].
    pub async fn join_group_async(
        &self,
        key: Key,
        iface: &Interface,
        group: Ipv4Addr,
    ) -> io::Result<()> {
        let iface = iface.clone();
        self.with_conn_async(key, move |c| c.join_group(&iface, group))
            .await
    }

    /// [`Handle::join_group`], queued without waiting; see [`Handle::try_call`].
    pub fn try_join_group(
        &self,
        key: Key,
        iface: &Interface,
        group: Ipv4Addr,
    ) -> io::Result<PendingCall<io::Result<()>>> {
        let iface = iface.clone();
        self.try_call(move |r| r.with_registered(key, |c| c.join_group(&iface, group)))
    }

    /// [`Handle::leave_group`], awaited; see [`Handle::call_async`].
    pub async fn leave_group_async(
        &self,
        key: Key,
        iface: &Interface,
        group: Ipv4Addr,
    ) -> io::Result<()> {
        let iface = iface.clone();
        self.with_conn_async(key, move |c| c.leave_group(&iface, group))
            .await
    }

    /// [`Handle::leave_group`], queued without waiting; see [`Handle::try_call`].
    pub fn try_leave_group(
        &self,
        key: Key,
        iface: &Interface,
        group: Ipv4Addr,
    ) -> io::Result<PendingCall<io::Result<()>>> {
        let iface = iface.clone();
        self.try_call(move |r| r.with_registered(key, |c| c.leave_group(&iface, group)))
    }

    /// [`Handle::set_control_flags`], awaited; see [`Handle::call_async`].
    pub async fn set_control_flags_async(&self, key: Key, flags: ControlFlags) -> io::Result<()> {
        self.call_async(move |r| r.set_control_flags(key, flags))
            .await?
    }

    /// [`Handle::socket_counters`], awaited; see [`Handle::call_async`].
    pub async fn socket_counters_async(&self, key: Key) -> io::Result<SocketCounters> {
        self.call_async(move |r| {
            r.socket_counters(key)
                .ok_or_else(|| super::unknown_key(key))
        })
        .await?
    }

    /// [`Handle::counters`], awaited; see [`Handle::call_async`].
    pub async fn counters_async(&self) -> io::Result<ReactorCounters> {
        self.call_async(|r| r.counters()).await
    }

    /// [`Handle::counters`], queued without waiting; see [`Handle::try_call`].
    pub fn try_counters(&self) -> io::Result<PendingCall<ReactorCounters>> {
        self.try_call(|r| r.counters())
    }

    /// [`Handle::register_feed`], awaited; see [`Handle::call_async`].
    pub async fn register_feed_async(
        &self,
        lines: Vec<PacketConn>,
        arbiter: Arbiter,
        handler: impl FeedHandler,
    ) -> io::Result<FeedKey> {
        let handler: Box<dyn FeedHandler> = Box::new(handler);
        self.call_async(move |r| r.register_feed_boxed(lines, arbiter, handler))
            .await?
    }

    /// [`Handle::feed_counters`], awaited; see [`Handle::call_async`].
    pub async fn feed_counters_async(&self, feed: FeedKey) -> io::Result<FeedCounters> {
        self.call_async(move |r| {
            r.feed_counters(feed).ok_or_else(|| {
                crate::error::invalid(format!("{feed} is not registered in this reactor"))
            })
        })
        .await?
    }

    /// [`Handle::deregister_feed`], awaited; see [`Handle::call_async`].
    pub async fn deregister_feed_async(&self, feed: FeedKey) -> io::Result<FeedParts> {
        self.call_async(move |r| r.deregister_feed(feed)).await?
    }
}

/// Awaits `call` at most `timeout`; withdrawn if not taken by then, given
/// as long again if it is running.
async fn wait_bounded<R>(mut call: PendingCall<R>, timeout: Duration) -> io::Result<R> {
    match ::tokio::time::timeout(timeout, &mut call).await {
        Ok(result) => return result,
        Err(_elapsed) => {
            if call.withdraw() {
                return Err(timed_out(timeout));
            }
        }
    }
    // The reactor is running the call: give it as long again.
    match ::tokio::time::timeout(timeout, &mut call).await {
        Ok(result) => result,
        Err(_elapsed) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the reactor started the call but it did not finish within {:?}: it may still complete",
                timeout * 2
            ),
        )),
    }
}
