//! A feed's redundant lines (A/B) as sockets of one reactor: every line's
//! packets go through one [`Arbiter`] on the reactor's thread, with no lock,
//! and one [`FeedHandler`] sees each sequence number once, plus the feed's
//! events (gaps, losses, restarts, lines gone silent).

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use slab::Slab;

use super::drain::Deliver;
use super::event_loop::EntryHandler;
use super::{Context, Key, Reactor};
use crate::batch::Packet;
use crate::feed::{Arbiter, Delivery, FeedEvent, LineCounters, SeqCounters};
use crate::packet_conn::PacketConn;

/// Receives a feed's packets once per sequence number, and its events.
///
/// ```
/// use ipv4_reactor::feed::{Delivery, FeedEvent};
/// use ipv4_reactor::reactor::{Context, FeedHandler};
/// use ipv4_reactor::Packet;
///
/// #[derive(Default)]
/// struct Book {
///     messages: u64,
///     lost: u64,
/// }
///
/// impl FeedHandler for Book {
///     fn on_data(&mut self, _line: usize, _p: &Packet<'_>, d: Delivery, _ctx: &mut Context<'_>) {
///         self.messages += d.count; // apply messages d.skip .. d.skip + d.count
///     }
///     fn on_event(&mut self, event: FeedEvent) {
///         if let FeedEvent::Lost { from, to } = event {
///             self.lost += to - from + 1; // ask the recovery service for them
///         }
///     }
/// }
/// ```
pub trait FeedHandler: Send + 'static {
    /// New sequence numbers: `packet` came on line `line` (the index of its
    /// socket in [`Reactor::register_feed`]'s list) and `delivery` says
    /// which of its sequence numbers are new. A copy of what another line
    /// already brought never reaches this method.
    fn on_data(
        &mut self,
        line: usize,
        packet: &Packet<'_>,
        delivery: Delivery,
        ctx: &mut Context<'_>,
    );

    /// Everything else the arbiter reports: gaps opened and filled, losses,
    /// restarts, end of session, a line gone stale or back. The default
    /// ignores them (they are counted in [`FeedCounters`] all the same).
    fn on_event(&mut self, event: FeedEvent) {
        let _ = event;
    }

    /// A receive error on line `line`'s socket; see [`super::Handler::on_error`].
    fn on_error(&mut self, line: usize, error: io::Error, ctx: &mut Context<'_>) {
        let _ = (line, error, ctx);
    }
}

/// Identifies a feed registered in a reactor ([`Reactor::register_feed`]);
/// like [`Key`], it never names another feed after its own is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeedKey {
    slot: usize,
    generation: u64,
}

impl fmt::Display for FeedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "feed #{} (registration {})", self.slot, self.generation)
    }
}

/// A feed's figures: the merged stream's and each line's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct FeedCounters {
    /// The merged stream: packets and messages delivered once, copies,
    /// late fills, gaps and sequence numbers no line brought.
    pub total: SeqCounters,
    /// One per line, in registration order.
    pub lines: Vec<LineCounters>,
}

/// What [`Reactor::deregister_feed`] gives back.
#[derive(Debug)]
#[non_exhaustive]
pub struct FeedParts {
    /// The lines' sockets still registered when the feed was deregistered,
    /// in line order (a line deregistered before, by a handler or a panic,
    /// is missing).
    pub conns: Vec<PacketConn>,
    /// The arbiter, finished: every hole still pending counts as lost.
    pub arbiter: Arbiter,
}

/// How often a reactor with feeds looks for lines gone silent while
/// another flows, at most (the check costs one clock read per turn).
const FEED_POLL_EVERY: Duration = Duration::from_millis(10);

pub(super) struct FeedState {
    key: FeedKey,
    arbiter: Arbiter,
    handler: Box<dyn FeedHandler>,
    lines: Vec<Key>,
}

/// One line of a feed, as a drain delivers to it.
pub(super) struct FeedLine<'a> {
    feed: Option<&'a mut FeedState>,
    line: usize,
    /// One clock read per drain: staleness is measured in milliseconds.
    now: Instant,
}

impl<'a> FeedLine<'a> {
    pub(super) fn new(feeds: &'a mut Slab<FeedState>, feed: usize, line: usize) -> FeedLine<'a> {
        FeedLine {
            // A line's entry goes before its feed (deregister_feed), so the
            // feed is there; if not, its packets are dropped, never misrouted.
            feed: feeds.get_mut(feed),
            line,
            now: Instant::now(),
        }
    }

    fn deliver(&mut self, p: &Packet<'_>, ctx: &mut Context<'_>) {
        let Some(feed) = self.feed.as_deref_mut() else {
            return;
        };
        let FeedState {
            arbiter, handler, ..
        } = feed;
        let line = self.line;
        // The arbiter's only error is a line index past its last line, and
        // register_feed checked that every line has its index.
        let _ = arbiter.on_packet(
            line,
            p.payload,
            p.drops_before,
            self.now,
            |event| match event {
                FeedEvent::Deliver(d) => handler.on_data(line, p, d, ctx),
                other => handler.on_event(other),
            },
        );
    }
}

impl Deliver for FeedLine<'_> {
    #[inline]
    fn on_packet(&mut self, p: &Packet<'_>, ctx: &mut Context<'_>) {
        if p.cm.gro_segment.is_none() {
            return self.deliver(p, ctx);
        }
        // A GRO buffer holds several datagrams: each is a feed packet.
        for (i, segment) in p.segments().enumerate() {
            let mut one = *p;
            one.payload = segment;
            one.cm.gro_segment = None;
            if i > 0 {
                one.drops_before = 0;
            }
            self.deliver(&one, ctx);
        }
    }

    fn on_error(&mut self, error: io::Error, ctx: &mut Context<'_>) {
        if let Some(feed) = self.feed.as_deref_mut() {
            feed.handler.on_error(self.line, error, ctx);
        }
    }
}

impl Reactor {
    /// Registers the redundant lines of one feed (A/B, or more): one socket
    /// per line, in line order, all handled on this reactor's thread
    /// through `arbiter`, whose line count must match. `handler` sees each
    /// sequence number once, from whichever line brought it first, and the
    /// arbiter's events; [`feed_counters`](Self::feed_counters) reads the
    /// figures and [`deregister_feed`](Self::deregister_feed) ends it.
    /// Each line is a registered socket with its own [`Key`]
    /// ([`feed_lines`](Self::feed_lines)), its own counters and budget.
    ///
    /// Give every line [`ControlFlags::DROPS`](crate::ControlFlags::DROPS)
    /// so that the arbiter counts each line's kernel drops.
    ///
    /// ```
    /// use std::net::{Ipv4Addr, SocketAddrV4};
    /// use std::time::Duration;
    /// use ipv4_reactor::feed::{Arbiter, Delivery, SeqFormat};
    /// use ipv4_reactor::reactor::{Context, FeedHandler, Reactor};
    /// use ipv4_reactor::{ControlFlags, Interface, Packet, PacketConn};
    ///
    /// struct Count(u64);
    /// impl FeedHandler for Count {
    ///     fn on_data(&mut self, _: usize, _: &Packet<'_>, d: Delivery, ctx: &mut Context<'_>) {
    ///         self.0 += d.count;
    ///         if self.0 == 3 {
    ///             ctx.stop();
    ///         }
    ///     }
    /// }
    ///
    /// let lo = Interface::loopback();
    /// let groups = [Ipv4Addr::new(239, 255, 9, 1), Ipv4Addr::new(239, 255, 9, 2)];
    /// let mut lines = Vec::new();
    /// let mut dsts = Vec::new();
    /// for g in groups {
    ///     let rx = PacketConn::multicast_receiver(SocketAddrV4::new(g, 0), lo.clone())
    ///         .control(ControlFlags::DROPS)
    ///         .build()?;
    ///     dsts.push(SocketAddrV4::new(g, rx.local_addr()?.port()));
    ///     lines.push(rx);
    /// }
    /// let mut reactor = Reactor::builder().build()?;
    /// let feed = reactor.register_feed(lines, Arbiter::new(SeqFormat::default(), 2)?, Count(0))?;
    ///
    /// let tx = PacketConn::multicast_sender(&lo)?;
    /// std::thread::sleep(Duration::from_millis(200));
    /// for seq in 1..=3u64 {
    ///     for dst in &dsts {
    ///         tx.send_to(&seq.to_be_bytes(), None, *dst)?; // both lines
    ///     }
    /// }
    /// reactor.run()?;
    /// let c = reactor.feed_counters(feed).unwrap();
    /// assert_eq!(c.total.messages, 3);
    /// assert_eq!(c.lines[0].first + c.lines[1].first, 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn register_feed(
        &mut self,
        lines: Vec<PacketConn>,
        arbiter: Arbiter,
        handler: impl FeedHandler,
    ) -> io::Result<FeedKey> {
        self.register_feed_boxed(lines, arbiter, Box::new(handler))
    }

    pub(super) fn register_feed_boxed(
        &mut self,
        lines: Vec<PacketConn>,
        arbiter: Arbiter,
        handler: Box<dyn FeedHandler>,
    ) -> io::Result<FeedKey> {
        if lines.len() != arbiter.lines() {
            return Err(crate::error::invalid(format!(
                "a feed of {} line sockets needs an arbiter of {0} lines; this one has {}",
                lines.len(),
                arbiter.lines()
            )));
        }
        let slot = self.feeds.vacant_key();
        let key = FeedKey {
            slot,
            generation: self.next_generation,
        };
        self.next_generation += 1;
        let mut keys = Vec::with_capacity(lines.len());
        for (line, conn) in lines.into_iter().enumerate() {
            match self.register_entry(conn, EntryHandler::FeedLine { feed: slot, line }) {
                Ok(k) => keys.push(k),
                Err(e) => {
                    for k in keys {
                        let _ = self.deregister(k);
                    }
                    return Err(e);
                }
            }
        }
        self.feeds.insert(FeedState {
            key,
            arbiter,
            handler,
            lines: keys,
        });
        Ok(key)
    }

    fn feed(&self, feed: FeedKey) -> Option<&FeedState> {
        self.feeds.get(feed.slot).filter(|f| f.key == feed)
    }

    /// The keys of a feed's line sockets, in line order.
    pub fn feed_lines(&self, feed: FeedKey) -> Option<&[Key]> {
        self.feed(feed).map(|f| f.lines.as_slice())
    }

    /// A feed's figures so far (holes still within the window are not lost
    /// yet: [`deregister_feed`](Self::deregister_feed) settles them).
    pub fn feed_counters(&self, feed: FeedKey) -> Option<FeedCounters> {
        let f = self.feed(feed)?;
        Some(FeedCounters {
            total: f.arbiter.counters(),
            lines: (0..f.arbiter.lines())
                .filter_map(|i| f.arbiter.line(i))
                .collect(),
        })
    }

    /// Deregisters a feed: its line sockets, then the arbiter is finished
    /// (holes still pending become losses, reported to the handler's
    /// `on_event`) and given back with the sockets; the handler is dropped.
    pub fn deregister_feed(&mut self, feed: FeedKey) -> io::Result<FeedParts> {
        if self.feed(feed).is_none() {
            return Err(crate::error::invalid(format!(
                "{feed} is not registered in this reactor"
            )));
        }
        let lines = self.feeds[feed.slot].lines.clone();
        let mut conns = Vec::with_capacity(lines.len());
        for k in lines {
            if let Ok(conn) = self.deregister(k) {
                conns.push(conn);
            }
        }
        let mut state = self.feeds.remove(feed.slot);
        let handler = &mut state.handler;
        state.arbiter.finish(|e| handler.on_event(e));
        Ok(FeedParts {
            conns,
            arbiter: state.arbiter,
        })
    }

    /// Reports lines gone silent while another flows, at most every
    /// [`FEED_POLL_EVERY`]; called once per turn when feeds exist.
    pub(super) fn poll_feeds(&mut self) {
        let now = Instant::now();
        if self.next_feed_poll.is_some_and(|at| now < at) {
            return;
        }
        self.next_feed_poll = Some(now + FEED_POLL_EVERY);
        for (_, f) in self.feeds.iter_mut() {
            let handler = &mut f.handler;
            f.arbiter.poll(now, |e| handler.on_event(e));
        }
    }
}
