//! A reactor nested in tokio: a task waits for the reactor's epoll
//! descriptor to turn readable and turns the reactor without blocking.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use crate::reactor::Reactor;

/// Runs `reactor` inside the current tokio runtime until a handler, a
/// timer, a source or a [`Handle`](crate::reactor::Handle) stops it, as
/// [`Reactor::run`] does on a thread of its own: tokio's reactor watches
/// the reactor's epoll descriptor ([`Reactor::as_fd`], registered through
/// a duplicate of it), and each time it turns readable the task turns the
/// reactor with [`turn(Some(Duration::ZERO))`](Reactor::turn), again
/// while [`needs_turn`](Reactor::needs_turn) says work is left, yielding
/// to the runtime between turns. The reactor's sockets, sources and timers
/// are served on whichever worker thread runs the task; handle calls from
/// other threads are answered on its turns.
///
/// Returns what `run` returns: `Ok` once stopped, the error of a
/// [`PanicPolicy::Stop`](crate::reactor::PanicPolicy::Stop) panic, or a
/// turn's error. A reactor in spin mode never waits here either: it keeps
/// a worker busy, yielding between turns. The builder's `pin_to_cpu` is
/// not applied (the runtime owns its threads).
///
/// Errors: outside a tokio runtime, an `Other` error saying so.
///
/// ```
/// use std::time::Duration;
/// use ipv4_reactor::reactor::{from_fn, Reactor};
/// use ipv4_reactor::PacketConn;
///
/// # #[::tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let mut reactor = Reactor::builder().build()?;
/// let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// let dst = rx.local_addr()?;
/// let mut seen = 0;
/// reactor.register(rx, from_fn(move |_p, ctx| {
///     seen += 1;
///     if seen == 3 {
///         ctx.stop();
///     }
/// }))?;
/// let tx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// for i in 0..3u8 {
///     tx.send_to(&[i], None, dst)?;
/// }
/// tokio::time::timeout(Duration::from_secs(5), ipv4_reactor::tokio::run_reactor(&mut reactor))
///     .await??;
/// # Ok(())
/// # }
/// ```
pub async fn run_reactor(reactor: &mut Reactor) -> io::Result<()> {
    if ::tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other(
            "run_reactor was called outside a tokio runtime: await it from a task",
        ));
    }
    let _halt = reactor.halt_on_exit();
    let epoll = crate::sys::async_fd::register_readable(reactor.as_fd().try_clone_to_owned()?)?;
    loop {
        reactor.turn(Some(Duration::ZERO))?;
        if reactor.is_stopped() {
            break;
        }
        if reactor.needs_turn() {
            ::tokio::task::yield_now().await;
            continue;
        }
        // Clear the readiness before the next turn, so that an event that
        // arrives during it raises a new edge.
        let mut ready = epoll.readable().await?;
        ready.clear_ready();
    }
    reactor.take_stop_result()
}
