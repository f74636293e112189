//! Foreign sources: any `mio::event::Source` (a TCP stream, a Unix socket,
//! a signalfd, a timerfd, a netlink socket) served by the reactor beside
//! its packet sockets, with a handler called on the reactor thread.
//!
//! Sources live in a slab of their own; their tokens are the slot plus
//! [`SOURCE_TOKEN_BASE`], so they never meet a packet socket's token, and
//! their keys ([`SourceKey`]) carry a generation and the source's type.

use std::any::{Any, TypeId};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::event::{Event, Source};
use mio::Interest;
use slab::Slab;

use super::event_loop::{Deferred, Entry};
use super::{Key, Reactor};
use crate::packet_conn::PacketConn;

/// Tokens at and above this name foreign sources (below: packet sockets;
/// the last two: the waker and the timerfd).
pub(super) const SOURCE_TOKEN_BASE: usize = 1 << (usize::BITS - 1);

/// Identifies a foreign source registered in a reactor, and its type, so
/// that [`Reactor::deregister_source`] gives it back as what it was. Like
/// [`Key`], it never names another source once its own is gone.
pub struct SourceKey<S> {
    slot: usize,
    generation: u64,
    _source: PhantomData<fn() -> S>,
}

impl<S> SourceKey<S> {
    pub(super) fn new(slot: usize, generation: u64) -> SourceKey<S> {
        SourceKey {
            slot,
            generation,
            _source: PhantomData,
        }
    }
}

impl<S> Clone for SourceKey<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for SourceKey<S> {}
impl<S> PartialEq for SourceKey<S> {
    fn eq(&self, other: &Self) -> bool {
        (self.slot, self.generation) == (other.slot, other.generation)
    }
}
impl<S> Eq for SourceKey<S> {}
impl<S> Hash for SourceKey<S> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.slot, self.generation).hash(state)
    }
}
impl<S> fmt::Debug for SourceKey<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceKey")
            .field("slot", &self.slot)
            .field("generation", &self.generation)
            .finish()
    }
}
impl<S> fmt::Display for SourceKey<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "source #{} (registration {})",
            self.slot, self.generation
        )
    }
}

/// What a readiness event said about a foreign source. mio's readiness is
/// edge-triggered: a handler reads (or writes) until `WouldBlock`, or it
/// hears nothing more of that direction.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Readiness(u8);

impl Readiness {
    const READABLE: u8 = 1;
    const WRITABLE: u8 = 2;
    const READ_CLOSED: u8 = 4;
    const WRITE_CLOSED: u8 = 8;
    const ERROR: u8 = 16;
    const PRIORITY: u8 = 32;

    fn of(event: &Event) -> Readiness {
        let mut bits = 0;
        for (on, bit) in [
            (event.is_readable(), Self::READABLE),
            (event.is_writable(), Self::WRITABLE),
            (event.is_read_closed(), Self::READ_CLOSED),
            (event.is_write_closed(), Self::WRITE_CLOSED),
            (event.is_error(), Self::ERROR),
            (event.is_priority(), Self::PRIORITY),
        ] {
            if on {
                bits |= bit;
            }
        }
        Readiness(bits)
    }

    /// Something can be read (or the read side closed).
    pub fn is_readable(self) -> bool {
        self.0 & Self::READABLE != 0
    }
    /// Something can be written.
    pub fn is_writable(self) -> bool {
        self.0 & Self::WRITABLE != 0
    }
    /// The peer closed its writing side (a read returns 0 once drained).
    pub fn is_read_closed(self) -> bool {
        self.0 & Self::READ_CLOSED != 0
    }
    /// Writing can no longer succeed.
    pub fn is_write_closed(self) -> bool {
        self.0 & Self::WRITE_CLOSED != 0
    }
    /// An error is pending on the source (`SO_ERROR` says which).
    pub fn is_error(self) -> bool {
        self.0 & Self::ERROR != 0
    }
    /// Priority data can be read.
    pub fn is_priority(self) -> bool {
        self.0 & Self::PRIORITY != 0
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_set();
        for (on, name) in [
            (self.is_readable(), "READABLE"),
            (self.is_writable(), "WRITABLE"),
            (self.is_read_closed(), "READ_CLOSED"),
            (self.is_write_closed(), "WRITE_CLOSED"),
            (self.is_error(), "ERROR"),
            (self.is_priority(), "PRIORITY"),
        ] {
            if on {
                list.entry(&format_args!("{name}"));
            }
        }
        list.finish()
    }
}

/// What a foreign source's handler may do besides using the source:
/// deregister it, change its interest, stop the reactor, reach the
/// reactor's sockets, or defer work that needs the whole reactor (adding
/// timers, registering sockets).
pub struct SourceContext<'a> {
    slot: usize,
    generation: u64,
    deregister: bool,
    interest: Option<Interest>,
    stop: bool,
    entries: &'a Slab<Entry>,
    deferred: &'a mut Vec<Deferred>,
    stop_requested: &'a AtomicBool,
}

impl fmt::Debug for SourceContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceContext")
            .field("slot", &self.slot)
            .field("generation", &self.generation)
            .field("deregister", &self.deregister)
            .field("stop", &self.stop)
            .finish()
    }
}

impl SourceContext<'_> {
    /// Deregisters this source once the handler returns; the source and
    /// its handler are dropped (use [`Reactor::deregister_source`], e.g.
    /// through [`defer`](Self::defer), to get the source back instead).
    pub fn deregister(&mut self) {
        self.deregister = true;
    }

    /// Changes what this source is polled for (e.g. add `WRITABLE` while
    /// output is queued), once the handler returns.
    pub fn set_interest(&mut self, interest: Interest) {
        self.interest = Some(interest);
    }

    /// Stops the reactor after this turn: `run` returns.
    pub fn stop(&mut self) {
        self.stop = true;
    }

    /// Whether a [`Handle`](super::Handle) asked the reactor to stop.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// A socket registered in the reactor.
    pub fn conn(&self, key: Key) -> Option<&PacketConn> {
        super::event_loop::registered(self.entries, key).map(|e| &e.conn)
    }

    /// Runs `f` with the whole reactor on this thread after this turn's
    /// events were handled (to add or cancel timers, register sockets or
    /// sources, rejoin groups). Allocates (the closure is boxed).
    pub fn defer(&mut self, f: impl FnOnce(&mut Reactor) + Send + 'static) {
        self.deferred.push(Box::new(f));
    }
}

/// A source with its handler, its type erased.
pub(super) trait AnySource: Send {
    fn source(&mut self) -> &mut dyn Source;
    fn ready(&mut self, readiness: Readiness, ctx: &mut SourceContext<'_>);
    fn get_mut(&mut self) -> &mut dyn Any;
    fn into_source(self: Box<Self>) -> Box<dyn Any + Send>;
}

struct Registered<S, F> {
    source: S,
    handler: F,
}

impl<S, F> AnySource for Registered<S, F>
where
    S: Source + Send + 'static,
    F: FnMut(&mut S, Readiness, &mut SourceContext<'_>) + Send + 'static,
{
    fn source(&mut self) -> &mut dyn Source {
        &mut self.source
    }

    fn ready(&mut self, readiness: Readiness, ctx: &mut SourceContext<'_>) {
        (self.handler)(&mut self.source, readiness, ctx)
    }

    fn get_mut(&mut self) -> &mut dyn Any {
        &mut self.source
    }

    fn into_source(self: Box<Self>) -> Box<dyn Any + Send> {
        Box::new(self.source)
    }
}

pub(super) struct SourceEntry {
    generation: u64,
    type_id: TypeId,
    inner: Box<dyn AnySource>,
}

/// The reactor's foreign sources.
pub(super) struct Sources {
    slab: Slab<SourceEntry>,
    next_generation: u64,
}

/// What serving one source's event asked for.
#[derive(Default)]
pub(super) struct Served {
    pub(super) stop: bool,
    pub(super) panic: Option<String>,
}

impl Sources {
    pub(super) fn new() -> Sources {
        Sources {
            slab: Slab::new(),
            next_generation: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(super) fn register<S, F>(
        &mut self,
        registry: &mio::Registry,
        mut source: S,
        interest: Interest,
        handler: F,
    ) -> io::Result<SourceKey<S>>
    where
        S: Source + Send + 'static,
        F: FnMut(&mut S, Readiness, &mut SourceContext<'_>) + Send + 'static,
    {
        let entry = self.slab.vacant_entry();
        let slot = entry.key();
        if slot >= usize::MAX - 2 - SOURCE_TOKEN_BASE {
            return Err(crate::error::invalid("too many foreign sources"));
        }
        registry
            .register(&mut source, mio::Token(SOURCE_TOKEN_BASE + slot), interest)
            .map_err(|e| crate::error::os_with_hint("registering a foreign source", e))?;
        let generation = self.next_generation;
        self.next_generation += 1;
        entry.insert(SourceEntry {
            generation,
            type_id: TypeId::of::<S>(),
            inner: Box::new(Registered { source, handler }),
        });
        Ok(SourceKey::new(slot, generation))
    }

    fn check<S: 'static>(&self, key: SourceKey<S>) -> io::Result<()> {
        match self.slab.get(key.slot) {
            Some(e) if e.generation == key.generation && e.type_id == TypeId::of::<S>() => Ok(()),
            _ => Err(crate::error::invalid(format!(
                "{key} is not registered in this reactor"
            ))),
        }
    }

    pub(super) fn get_mut<S: 'static>(&mut self, key: SourceKey<S>) -> Option<&mut S> {
        self.check(key).ok()?;
        self.slab[key.slot].inner.get_mut().downcast_mut::<S>()
    }

    pub(super) fn reregister<S: 'static>(
        &mut self,
        registry: &mio::Registry,
        key: SourceKey<S>,
        interest: Interest,
    ) -> io::Result<()> {
        self.check(key)?;
        registry.reregister(
            self.slab[key.slot].inner.source(),
            mio::Token(SOURCE_TOKEN_BASE + key.slot),
            interest,
        )
    }

    pub(super) fn deregister<S: Send + 'static>(
        &mut self,
        registry: &mio::Registry,
        key: SourceKey<S>,
    ) -> io::Result<S> {
        self.check(key)?;
        let mut entry = self.slab.remove(key.slot);
        // The source goes back to the caller even if epoll refuses (it
        // forgets a closed descriptor by itself).
        let _ = registry.deregister(entry.inner.source());
        match entry.inner.into_source().downcast::<S>() {
            Ok(source) => Ok(*source),
            Err(_) => Err(io::Error::other("a source changed type")), // checked above
        }
    }

    /// Calls the handler of the source behind `token`, if still there.
    pub(super) fn serve(
        &mut self,
        registry: &mio::Registry,
        token: usize,
        event: &Event,
        entries: &Slab<Entry>,
        deferred: &mut Vec<Deferred>,
        stop_requested: &AtomicBool,
    ) -> Served {
        let slot = token - SOURCE_TOKEN_BASE;
        let mut served = Served::default();
        let Some(entry) = self.slab.get_mut(slot) else {
            return served; // deregistered earlier in this turn
        };
        let mut ctx = SourceContext {
            slot,
            generation: entry.generation,
            deregister: false,
            interest: None,
            stop: false,
            entries,
            deferred,
            stop_requested,
        };
        let readiness = Readiness::of(event);
        let inner = &mut entry.inner;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inner.ready(readiness, &mut ctx)
        }));
        served.stop = ctx.stop;
        let (deregister, interest) = (ctx.deregister, ctx.interest);
        if let Err(payload) = result {
            served.panic = Some(format!(
                "handler of source #{slot} (registration {}) panicked: {}",
                entry.generation,
                super::event_loop::panic_message(&*payload)
            ));
        }
        if deregister || served.panic.is_some() {
            let mut entry = self.slab.remove(slot);
            let _ = registry.deregister(entry.inner.source());
        } else if let Some(interest) = interest {
            let _ = registry.reregister(
                entry.inner.source(),
                mio::Token(SOURCE_TOKEN_BASE + slot),
                interest,
            );
        }
        served
    }
}

impl Reactor {
    /// Registers a foreign source (anything mio can poll: a TCP stream or
    /// listener, a Unix socket, a signalfd or timerfd through
    /// `mio::unix::SourceFd`) with what to poll it for and its handler.
    ///
    /// The handler runs on the reactor thread, in the turn that saw the
    /// event, before the ready packet sockets are served; it gets the
    /// source, what the event said ([`Readiness`]) and a [`SourceContext`]
    /// (to deregister the source, change its interest, stop the reactor,
    /// reach the sockets, or defer work that needs the whole reactor).
    /// Readiness is edge-triggered: read or write until `WouldBlock`. A
    /// handler that panics is caught like a packet handler (counted, its
    /// message kept, the source dropped, [`PanicPolicy`](super::PanicPolicy) applied).
    ///
    /// Errors: what epoll says, with a hint for its limits.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use mio::net::TcpStream;
    /// use mio::Interest;
    /// use ipv4_reactor::reactor::Reactor;
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
    /// let (server, _) = listener.accept()?;
    /// server.set_nonblocking(true)?;
    ///
    /// let mut reactor = Reactor::builder().build()?;
    /// let mut got = Vec::new();
    /// let key = reactor.register_source(
    ///     TcpStream::from_std(server),
    ///     Interest::READABLE,
    ///     move |stream: &mut TcpStream, _ready, ctx| {
    ///         let mut buf = [0u8; 64];
    ///         loop {
    ///             match stream.read(&mut buf) {
    ///                 Ok(0) => return ctx.stop(), // the peer closed
    ///                 Ok(n) => got.extend_from_slice(&buf[..n]),
    ///                 Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
    ///                 Err(_) => return ctx.deregister(),
    ///             }
    ///             if got.ends_with(b"\n") {
    ///                 ctx.stop();
    ///             }
    ///         }
    ///     },
    /// )?;
    /// client.write_all(b"hello\n")?;
    /// reactor.run()?;
    /// let stream: TcpStream = reactor.deregister_source(key)?; // the source comes back
    /// # drop(stream);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn register_source<S, F>(
        &mut self,
        source: S,
        interest: Interest,
        handler: F,
    ) -> io::Result<SourceKey<S>>
    where
        S: Source + Send + 'static,
        F: FnMut(&mut S, Readiness, &mut SourceContext<'_>) + Send + 'static,
    {
        let key = self
            .sources
            .register(self.poll.registry(), source, interest, handler)?;
        self.counters.sources = self.sources.len();
        self.poll_soon = true;
        Ok(key)
    }

    /// Deregisters a foreign source and gives it back; its handler is
    /// dropped. Errors: the key names no source of this reactor (any more).
    pub fn deregister_source<S: Send + 'static>(&mut self, key: SourceKey<S>) -> io::Result<S> {
        let source = self.sources.deregister(self.poll.registry(), key)?;
        self.counters.sources = self.sources.len();
        Ok(source)
    }

    /// A registered foreign source, to use it outside its handler (to
    /// write to a stream, say).
    pub fn source_mut<S: 'static>(&mut self, key: SourceKey<S>) -> Option<&mut S> {
        self.sources.get_mut(key)
    }

    /// Changes what a foreign source is polled for.
    pub fn set_source_interest<S: 'static>(
        &mut self,
        key: SourceKey<S>,
        interest: Interest,
    ) -> io::Result<()> {
        self.poll_soon = true;
        self.sources.reregister(self.poll.registry(), key, interest)
    }
}
