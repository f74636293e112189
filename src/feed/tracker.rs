//! [`SeqTracker`]: one sequence space, reorder-aware: new, late, copy, lost
//! or restart, in bounded memory and constant time per sequence number.

use std::io;
use std::ops::Range;

use super::event::{Delivery, FeedEvent, Verdict};
use super::format::{PacketKind, SeqFormat, SeqInfo};
use super::record::LostRecord;
use super::window::Window;
use crate::error::invalid;

/// The default window, in sequence numbers, for 32- and 64-bit formats.
///
/// At 1 million packets a second, 65536 sequence numbers are 65 ms: an order
/// of magnitude more than the reordering of a routed multicast path or the
/// skew between A and B lines (microseconds to a few milliseconds), so a
/// late packet or the other line's copy fills a hole before it is declared
/// lost. The bitmap costs 8 KiB, which stays in the L1 cache. A hole is
/// reported lost one window after it opened: 65 ms at 1 Mpps, longer on a
/// quieter feed (a smaller window reports sooner).
pub const DEFAULT_WINDOW: u64 = 1 << 16;

/// The default window for 16-bit formats: a quarter of the 65536 values, so
/// that a wrap is never mistaken for a jump back.
pub const DEFAULT_WINDOW_U16: u64 = 1 << 13;

/// The default horizon for 32- and 64-bit formats: a jump of more than 2^24
/// (16.7 million) sequence numbers either way is a restart of the sequence
/// space, not a late packet nor a loss of billions.
///
/// 2^24 is 16 s at 1 Mpps: a redundant line that lags by less still counts
/// as copies. A weekly MDP 3.0 reset from fewer than 2^24 messages back to 1
/// is taken as stale packets until the new numbers pass the run's first
/// one: give quiet channels a smaller horizon.
pub const DEFAULT_HORIZON: u64 = 1 << 24;

/// The default horizon for 16-bit formats: a quarter of the value space on
/// either side. Jumps up to half the space are told from wraps; beyond that a
/// 16-bit number cannot say which way it went.
pub const DEFAULT_HORIZON_U16: u64 = 1 << 14;

/// The default number of lost ranges remembered after they leave the window
/// (16 bytes each), so that a very late packet still fills its loss.
pub const DEFAULT_LOST_RECORD: usize = 256;

/// The smallest window (one 64-bit word).
pub const MIN_WINDOW: u64 = 64;
/// The largest window: 2^24 sequence numbers, a 2 MiB bitmap.
pub const MAX_WINDOW: u64 = 1 << 24;
/// The largest lost record (16 MiB).
pub const MAX_LOST_RECORD: usize = 1 << 20;

/// A tracker's limits: window, horizon and lost record. Start from
/// [`TrackerConfig::for_format`]; [`SeqTracker::with_config`] checks it.
///
/// ```
/// use ipv4_reactor::feed::{SeqFormat, SeqTracker, TrackerConfig, DEFAULT_WINDOW};
///
/// let config = TrackerConfig::for_format(SeqFormat::Mdp3);
/// assert_eq!(config.window, DEFAULT_WINDOW);
/// let tracker = SeqTracker::with_config(SeqFormat::Mdp3, config.with_window(4096))?;
/// assert_eq!(tracker.config().window, 4096);
///
/// // Not a power of two: a clear error, before anything is allocated.
/// let err = SeqTracker::with_config(SeqFormat::Mdp3, config.with_window(5000)).unwrap_err();
/// assert!(err.to_string().contains("5000"));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TrackerConfig {
    /// How many sequence numbers below the highest one a hole stays open
    /// before it is declared lost: a power of two from [`MIN_WINDOW`] to
    /// [`MAX_WINDOW`]. Defaults: [`DEFAULT_WINDOW`], [`DEFAULT_WINDOW_U16`].
    pub window: u64,
    /// A jump of more than this many sequence numbers, backwards or forwards,
    /// is a restart. At least the window; for 16- and 32-bit formats, less
    /// than half their value space. Defaults: [`DEFAULT_HORIZON`],
    /// [`DEFAULT_HORIZON_U16`].
    pub horizon: u64,
    /// How many lost ranges are remembered once out of the window (0: none;
    /// then a packet older than the window is always a copy). At most
    /// [`MAX_LOST_RECORD`]. Default: [`DEFAULT_LOST_RECORD`].
    pub lost_record: usize,
}

impl TrackerConfig {
    /// The defaults for a format (they depend on its width).
    ///
    /// ```
    /// use ipv4_reactor::feed::{SeqFormat, TrackerConfig, DEFAULT_HORIZON_U16};
    /// let c = TrackerConfig::for_format("u16be".parse()?);
    /// assert_eq!(c.horizon, DEFAULT_HORIZON_U16);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn for_format(format: SeqFormat) -> TrackerConfig {
        let narrow = format.seq_bits() == 16;
        TrackerConfig {
            window: if narrow {
                DEFAULT_WINDOW_U16
            } else {
                DEFAULT_WINDOW
            },
            horizon: if narrow {
                DEFAULT_HORIZON_U16
            } else {
                DEFAULT_HORIZON
            },
            lost_record: DEFAULT_LOST_RECORD,
        }
    }

    /// Sets the window.
    ///
    /// ```
    /// use ipv4_reactor::feed::{SeqFormat, TrackerConfig};
    /// assert_eq!(TrackerConfig::for_format(SeqFormat::Mdp3).with_window(1024).window, 1024);
    /// ```
    pub fn with_window(mut self, window: u64) -> TrackerConfig {
        self.window = window;
        self
    }

    /// Sets the horizon.
    ///
    /// ```
    /// use ipv4_reactor::feed::{SeqFormat, TrackerConfig};
    /// assert_eq!(TrackerConfig::for_format(SeqFormat::Mdp3).with_horizon(1 << 20).horizon, 1 << 20);
    /// ```
    pub fn with_horizon(mut self, horizon: u64) -> TrackerConfig {
        self.horizon = horizon;
        self
    }

    /// Sets how many lost ranges are remembered.
    ///
    /// ```
    /// use ipv4_reactor::feed::{SeqFormat, TrackerConfig};
    /// assert_eq!(TrackerConfig::for_format(SeqFormat::Mdp3).with_lost_record(0).lost_record, 0);
    /// ```
    pub fn with_lost_record(mut self, ranges: usize) -> TrackerConfig {
        self.lost_record = ranges;
        self
    }

    /// Checks the limits against each other and against the format's
    /// width; the error names the bad value.
    ///
    /// ```
    /// use ipv4_reactor::feed::{SeqFormat, TrackerConfig};
    /// let f: SeqFormat = "u16le".parse()?;
    /// assert!(TrackerConfig::for_format(f).check(f).is_ok());
    /// let err = TrackerConfig::for_format(f).with_horizon(40_000).check(f).unwrap_err();
    /// assert!(err.to_string().contains("40000"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn check(&self, format: SeqFormat) -> io::Result<()> {
        let TrackerConfig {
            window,
            horizon,
            lost_record,
        } = *self;
        if !window.is_power_of_two() || !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
            return Err(invalid(format!(
                "tracker window {window} must be a power of two from {MIN_WINDOW} to {MAX_WINDOW}"
            )));
        }
        if horizon < window {
            return Err(invalid(format!(
                "tracker horizon {horizon} is smaller than the window {window}"
            )));
        }
        let bits = format.seq_bits();
        if bits < 64 && horizon >= 1 << (bits - 1) {
            return Err(invalid(format!(
                "tracker horizon {horizon} must be less than half of the {bits}-bit \
                 sequence space of {format} ({}), or wraps look like jumps",
                1u64 << (bits - 1)
            )));
        }
        if lost_record > MAX_LOST_RECORD {
            return Err(invalid(format!(
                "tracker lost record of {lost_record} ranges is over the limit of {MAX_LOST_RECORD}"
            )));
        }
        Ok(())
    }
}

/// A tracker's counters.
///
/// `messages + lost` accounts for every sequence number from the first of a
/// run to its last, once [`SeqTracker::finish`] has declared the remaining
/// holes: `gaps` and `lost` count the holes (maximal runs) and sequence
/// numbers no packet delivered by then. A late packet that fills a hole
/// counts in `reordered`, never in `lost`, even when it comes after its hole
/// was declared lost (while that loss is still in the lost record).
///
/// ```
/// use ipv4_reactor::feed::{SeqFormat, SeqTracker};
///
/// let mut t = SeqTracker::new(SeqFormat::default());
/// for seq in [10u64, 12, 11, 13, 13, 16] {
///     t.on_packet(&seq.to_be_bytes(), |_| {});
/// }
/// t.finish(|_| {});
/// let c = t.counters();
/// assert_eq!((c.packets, c.messages, c.duplicates, c.reordered), (6, 5, 1, 1));
/// assert_eq!((c.gaps, c.lost), (1, 2)); // 14 and 15
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[non_exhaustive]
pub struct SeqCounters {
    /// Every packet handled, malformed ones included.
    pub packets: u64,
    /// Sequence numbers delivered (new and late).
    pub messages: u64,
    /// Sequence numbers received again after their delivery.
    pub duplicates: u64,
    /// Sequence numbers delivered late: after higher ones, filling a hole.
    pub reordered: u64,
    /// Holes: maximal runs of sequence numbers never delivered, counted when
    /// declared lost (once, even when declared in several steps).
    pub gaps: u64,
    /// Sequence numbers never delivered.
    pub lost: u64,
    /// New sequence spaces after the first.
    pub restarts: u64,
    /// Packets too short for the format.
    pub malformed: u64,
    /// Heartbeat packets.
    pub heartbeats: u64,
    /// End-of-session packets.
    pub sessions_ended: u64,
    /// Sequence numbers dropped as older than anything the tracker can judge.
    pub stale: u64,
}

/// Counters and the lost record: what declaring a loss touches, kept apart
/// from the window so that both can be borrowed at once.
#[derive(Debug)]
struct Book {
    c: SeqCounters,
    record: LostRecord,
    /// The last sequence number declared lost, while no later one has been
    /// decided: a loss starting right after it continues the same hole.
    last_lost: Option<u64>,
}

impl Book {
    #[inline]
    fn lost(&mut self, from: u64, to: u64, sink: &mut impl FnMut(FeedEvent)) {
        self.c.lost += to - from + 1;
        if from == 0 || self.last_lost != Some(from - 1) {
            self.c.gaps += 1;
        }
        self.last_lost = Some(to);
        self.record.push(from, to);
        sink(FeedEvent::Lost { from, to });
    }

    #[inline]
    fn late(&mut self, from: u64, to: u64, a: u64, sink: &mut impl FnMut(FeedEvent)) {
        let n = to - from + 1;
        self.c.reordered += n;
        self.c.messages += n;
        sink(FeedEvent::GapFilled { from, to });
        sink(FeedEvent::Deliver(Delivery {
            first: from,
            count: n,
            skip: from - a,
            late: true,
        }));
    }
}

/// What happened to the parts of one packet.
#[derive(Default)]
struct Outcome {
    new: bool,
    late: bool,
    duplicate: bool,
}

/// One sequence space's bookkeeping: every sequence number delivered once;
/// holes open, filled late, or lost; copies; restarts. Memory is allocated
/// once (a bitmap of `window` bits and the lost record); each packet costs
/// constant time per sequence number it carries, and a jump forward costs
/// the window's words at most, never the jump's length.
///
/// Events (deliveries first among them) go to a sink, any
/// `FnMut(FeedEvent)`, during the call: nothing is queued or allocated.
///
/// ```
/// use ipv4_reactor::feed::{FeedEvent, SeqFormat, SeqTracker, Verdict};
///
/// let mut t = SeqTracker::new("u32le".parse()?);
/// let mut delivered = Vec::new();
/// for seq in [1u32, 2, 4, 3, 3, 7] {
///     let v = t.on_packet(&seq.to_le_bytes(), |e| match e {
///         FeedEvent::Deliver(d) => delivered.push(d.first),
///         FeedEvent::GapOpened { from, to } => println!("gap {from}..={to}"),
///         _ => {}
///     });
///     if seq == 3 && v == Verdict::Duplicate {
///         println!("copy of 3");
///     }
/// }
/// t.finish(|e| println!("{e:?}")); // Lost { from: 5, to: 6 }
/// assert_eq!(delivered, [1, 2, 4, 3, 7]);
/// assert_eq!(t.counters().lost, 2);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct SeqTracker {
    format: SeqFormat,
    config: TrackerConfig,
    bits: u32,
    window: Window,
    book: Book,
    started: bool,
    session: Option<[u8; 10]>,
    /// The run's first sequence number.
    low: u64,
    /// One past the highest sequence number seen (or announced by a
    /// heartbeat).
    next: u64,
    /// Every hole below this is decided (lost); holes from here to `next`
    /// are pending. `max(low, next - window) <= decided <= next`.
    decided: u64,
}

impl SeqTracker {
    /// A tracker with the format's default limits
    /// ([`TrackerConfig::for_format`]).
    ///
    /// ```
    /// use ipv4_reactor::feed::{SeqFormat, SeqTracker};
    /// let t = SeqTracker::new(SeqFormat::MoldUdp64);
    /// assert_eq!(t.span(), None);
    /// ```
    pub fn new(format: SeqFormat) -> SeqTracker {
        Self::build(format, TrackerConfig::for_format(format))
    }

    /// A tracker with the given limits, checked first
    /// ([`TrackerConfig::check`]).
    ///
    /// ```
    /// use ipv4_reactor::feed::{SeqFormat, SeqTracker, TrackerConfig};
    /// let config = TrackerConfig::for_format(SeqFormat::default()).with_window(1 << 20);
    /// let t = SeqTracker::with_config(SeqFormat::default(), config)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_config(format: SeqFormat, config: TrackerConfig) -> io::Result<SeqTracker> {
        config.check(format)?;
        Ok(Self::build(format, config))
    }

    fn build(format: SeqFormat, config: TrackerConfig) -> SeqTracker {
        SeqTracker {
            format,
            config,
            bits: format.seq_bits(),
            window: Window::new(config.window),
            book: Book {
                c: SeqCounters::default(),
                record: LostRecord::new(config.lost_record),
                last_lost: None,
            },
            started: false,
            session: None,
            low: 0,
            next: 0,
            decided: 0,
        }
    }

    /// The format this tracker parses.
    ///
    /// ```
    /// use ipv4_reactor::feed::{SeqFormat, SeqTracker};
    /// assert_eq!(SeqTracker::new(SeqFormat::Mdp3).format(), SeqFormat::Mdp3);
    /// ```
    pub fn format(&self) -> SeqFormat {
        self.format
    }

    /// The limits in use.
    ///
    /// ```
    /// use ipv4_reactor::feed::{SeqFormat, SeqTracker, DEFAULT_WINDOW};
    /// assert_eq!(SeqTracker::new(SeqFormat::Mdp3).config().window, DEFAULT_WINDOW);
    /// ```
    pub fn config(&self) -> TrackerConfig {
        self.config
    }

    /// The counters so far.
    ///
    /// ```
    /// use ipv4_reactor::feed::{SeqFormat, SeqTracker};
    /// let mut t = SeqTracker::new(SeqFormat::Mdp3);
    /// t.on_packet(b"short", |_| {});
    /// assert_eq!(t.counters().malformed, 1);
    /// ```
    pub fn counters(&self) -> SeqCounters {
        self.book.c
    }

    /// The current sequence space's run so far: from its first sequence
    /// number to one past its highest; `None` before the first packet.
    ///
    /// ```
    /// use ipv4_reactor::feed::{SeqFormat, SeqTracker};
    /// let mut t = SeqTracker::new(SeqFormat::default());
    /// t.on_packet(&5u64.to_be_bytes(), |_| {});
    /// t.on_packet(&9u64.to_be_bytes(), |_| {});
    /// assert_eq!(t.span(), Some(5..10));
    /// ```
    pub fn span(&self) -> Option<Range<u64>> {
        self.started.then_some(self.low..self.next)
    }

    /// Parses one packet with the tracker's format and judges it
    /// ([`on_info`](Self::on_info)); a packet too short for the format
    /// counts as malformed.
    ///
    /// ```
    /// use ipv4_reactor::feed::{SeqFormat, SeqTracker, Verdict};
    /// let mut t = SeqTracker::new(SeqFormat::default());
    /// assert_eq!(t.on_packet(&1u64.to_be_bytes(), |_| {}), Verdict::New);
    /// assert_eq!(t.on_packet(&[1, 2, 3], |_| {}), Verdict::Malformed);
    /// ```
    #[inline]
    pub fn on_packet(&mut self, payload: &[u8], sink: impl FnMut(FeedEvent)) -> Verdict {
        match self.format.parse(payload) {
            Ok(info) => self.on_info(info, sink),
            Err(_) => self.note_malformed(),
        }
    }

    /// Counts one malformed packet.
    pub(crate) fn note_malformed(&mut self) -> Verdict {
        self.book.c.packets += 1;
        self.book.c.malformed += 1;
        Verdict::Malformed
    }

    /// Judges one packet already parsed (by [`SeqFormat::parse`] or by the
    /// caller: [`SeqInfo::data`]), reporting events to `sink`.
    ///
    /// ```
    /// use ipv4_reactor::feed::{FeedEvent, SeqFormat, SeqInfo, SeqTracker, Verdict};
    ///
    /// let mut t = SeqTracker::new(SeqFormat::MoldUdp64);
    /// t.on_info(SeqInfo::data(1, 3), |_| {}); // 1, 2, 3
    /// let mut fresh = Vec::new();
    /// // A packet covering 2..=5 delivers 4 and 5 only: its messages 2 and 3.
    /// let v = t.on_info(SeqInfo::data(2, 4), |e| {
    ///     if let FeedEvent::Deliver(d) = e {
    ///         fresh.push((d.first, d.count, d.skip));
    ///     }
    /// });
    /// assert_eq!(v, Verdict::New);
    /// assert_eq!(fresh, [(4, 2, 2)]);
    /// assert_eq!(t.counters().duplicates, 2);
    /// ```
    pub fn on_info(&mut self, info: SeqInfo, mut sink: impl FnMut(FeedEvent)) -> Verdict {
        self.book.c.packets += 1;
        let count = match info.kind {
            PacketKind::Data => info.count,
            PacketKind::Heartbeat => {
                self.book.c.heartbeats += 1;
                0
            }
            PacketKind::EndOfSession => {
                self.book.c.sessions_ended += 1;
                0
            }
            PacketKind::Unsequenced => {
                let first = self.book.c.messages;
                self.book.c.messages += info.count;
                sink(FeedEvent::Deliver(Delivery {
                    first,
                    count: info.count,
                    skip: 0,
                    late: false,
                }));
                return Verdict::New;
            }
        };
        let Some(a) = self.extend(info.seq) else {
            // From before a wrap that came before the run began.
            self.book.c.stale += count;
            return Verdict::Stale;
        };
        let Some(e) = a.checked_add(count) else {
            self.book.c.malformed += 1;
            return Verdict::Malformed;
        };

        let mut restarted = false;
        if !self.started {
            self.begin(a, info.session);
        } else if (info.session.is_some() && info.session != self.session) || self.too_far(a) {
            self.restart(a, &mut sink);
            self.begin(a, info.session);
            restarted = true;
        }

        if count == 0 {
            // A heartbeat or an end of session announces the next number: a
            // gap up to it is a gap even though no data came.
            if a > self.next {
                self.advance(a, a, a, &mut sink);
            }
            return if info.kind == PacketKind::EndOfSession {
                sink(FeedEvent::EndOfSession { next: a });
                Verdict::EndOfSession
            } else {
                Verdict::Heartbeat
            };
        }

        let mut out = Outcome::default();
        if a < self.next {
            self.old_part(a, e.min(self.next), a, &mut out, &mut sink);
        }
        if e > self.next {
            self.advance(a.max(self.next), e, a, &mut sink);
            out.new = true;
        }
        if restarted {
            Verdict::Restart
        } else if out.late {
            Verdict::Late
        } else if out.new {
            Verdict::New
        } else if out.duplicate {
            Verdict::Duplicate
        } else {
            Verdict::Stale
        }
    }

    /// Declares every pending hole lost (the end of a run: holes no packet
    /// filled). A late packet may still fill them afterwards, while they are
    /// in the lost record.
    ///
    /// ```
    /// use ipv4_reactor::feed::{FeedEvent, SeqFormat, SeqTracker};
    /// let mut t = SeqTracker::new(SeqFormat::default());
    /// t.on_packet(&1u64.to_be_bytes(), |_| {});
    /// t.on_packet(&4u64.to_be_bytes(), |_| {});
    /// let mut lost = Vec::new();
    /// t.finish(|e| lost.push(e));
    /// assert_eq!(lost, [FeedEvent::Lost { from: 2, to: 3 }]);
    /// assert_eq!((t.counters().gaps, t.counters().lost), (1, 2));
    /// ```
    pub fn finish(&mut self, mut sink: impl FnMut(FeedEvent)) {
        if self.started && self.decided < self.next {
            let book = &mut self.book;
            self.window.zero_runs(self.decided, self.next, |s, e| {
                book.lost(s, e - 1, &mut sink)
            });
            self.decided = self.next;
        }
    }

    /// Extends a 16- or 32-bit number to 64 bits, to the value nearest the
    /// next expected one; `None` below zero.
    #[inline]
    fn extend(&self, raw: u64) -> Option<u64> {
        if self.bits == 64 || !self.started {
            return Some(raw);
        }
        let space = 1u64 << self.bits;
        let ahead = raw.wrapping_sub(self.next) & (space - 1);
        if ahead < space / 2 {
            self.next.checked_add(ahead)
        } else {
            self.next.checked_sub(space - ahead)
        }
    }

    #[inline]
    fn too_far(&self, a: u64) -> bool {
        a.abs_diff(self.next) > self.config.horizon
    }

    fn begin(&mut self, a: u64, session: Option<[u8; 10]>) {
        self.started = true;
        self.session = session;
        self.low = a;
        self.next = a;
        self.decided = a;
    }

    /// Ends the current sequence space: its holes are lost.
    #[cold]
    fn restart(&mut self, a: u64, sink: &mut impl FnMut(FeedEvent)) {
        let book = &mut self.book;
        if self.decided < self.next {
            self.window
                .zero_runs(self.decided, self.next, |s, e| book.lost(s, e - 1, sink));
        }
        sink(FeedEvent::Restart {
            from: self.next,
            to: a,
        });
        book.c.restarts += 1;
        book.record.clear();
        book.last_lost = None;
        self.window.clear_all();
    }

    /// Moves the top of the run to `new_next`, delivering `[from, new_next)`
    /// (`next <= from <= new_next`) of a packet starting at `a`; whatever
    /// leaves the window undelivered is lost.
    #[inline]
    fn advance(&mut self, from: u64, new_next: u64, a: u64, sink: &mut impl FnMut(FeedEvent)) {
        let next = self.next;
        if from == next && new_next == next + 1 {
            // The usual case, one number in order: its bit's previous
            // owner, one window back, leaves the window.
            let was_delivered = self.window.replace(next);
            if let Some(leaving) = next.checked_sub(self.config.window) {
                if leaving >= self.decided {
                    if !was_delivered {
                        self.book.lost(leaving, leaving, sink);
                    }
                    self.decided = leaving + 1;
                }
            }
            self.next = new_next;
            self.book.c.messages += 1;
            sink(FeedEvent::Deliver(Delivery {
                first: next,
                count: 1,
                skip: next - a,
                late: false,
            }));
            return;
        }
        if from > next {
            sink(FeedEvent::GapOpened {
                from: next,
                to: from - 1,
            });
        }
        let edge = new_next.saturating_sub(self.config.window);
        if edge > self.decided {
            // Holes still in the bitmap, then (a jump longer than the
            // window) the part of the new gap already out of it, in bulk.
            let end = next.min(edge);
            if self.decided < end {
                let book = &mut self.book;
                self.window
                    .zero_runs(self.decided, end, |s, e| book.lost(s, e - 1, sink));
            }
            let gap_end = from.min(edge);
            if next < gap_end {
                self.book.lost(next, gap_end - 1, sink);
            }
            self.decided = edge;
        }
        // The bits of the new numbers: clear for the gap, set for the data.
        let clear_from = next.max(edge);
        let set_from = from.max(edge);
        if clear_from < set_from {
            self.window.clear_range(clear_from, set_from);
        }
        if set_from < new_next {
            self.window.set_range(set_from, new_next);
        }
        self.next = new_next;
        if from < new_next {
            let count = new_next - from;
            self.book.c.messages += count;
            sink(FeedEvent::Deliver(Delivery {
                first: from,
                count,
                skip: from - a,
                late: false,
            }));
        }
    }

    /// Judges `[from, to)`, all below `next`, of a packet starting at `a`.
    fn old_part(
        &mut self,
        from: u64,
        to: u64,
        a: u64,
        out: &mut Outcome,
        sink: &mut impl FnMut(FeedEvent),
    ) {
        let mut x = from;
        if x < self.low {
            // Below the first number seen. While nothing is decided, the
            // part within the window extends the run downwards (it started
            // earlier than it looked: another line was ahead); the rest is
            // stale.
            let y = to.min(self.low);
            let extend_from = if self.decided == self.low {
                x.max(self.next.saturating_sub(self.config.window)).min(y)
            } else {
                y
            };
            self.book.c.stale += extend_from - x;
            if extend_from < y {
                if to < self.low {
                    sink(FeedEvent::GapOpened {
                        from: to,
                        to: self.low - 1,
                    });
                }
                self.window.set_range(extend_from, y);
                self.low = extend_from;
                self.decided = extend_from;
                self.book.late(extend_from, y - 1, a, sink);
                out.late = true;
            }
            x = y;
        }
        // Below the decided edge, only the lost record knows.
        let y = to.min(self.decided);
        if x < y {
            let mut filled = 0;
            let book = &mut self.book;
            let last_lost = &mut book.last_lost;
            let c = &mut book.c;
            let runs = book.record.take(x, y - 1, |p, q| {
                let n = q - p + 1;
                filled += n;
                c.lost -= n;
                c.reordered += n;
                c.messages += n;
                if last_lost.is_some_and(|l| (p..=q).contains(&l)) {
                    *last_lost = None;
                }
                sink(FeedEvent::GapFilled { from: p, to: q });
                sink(FeedEvent::Deliver(Delivery {
                    first: p,
                    count: n,
                    skip: p - a,
                    late: true,
                }));
            });
            c.gaps = c.gaps.saturating_add_signed(runs);
            c.duplicates += (y - x) - filled;
            out.late |= filled > 0;
            out.duplicate |= filled < y - x;
            x = y;
        }
        // Pending holes: the bitmap.
        if x < to {
            let mut filled = 0;
            let book = &mut self.book;
            self.window.zero_runs(x, to, |p, q| {
                filled += q - p;
                book.late(p, q - 1, a, sink);
            });
            self.window.set_range(x, to);
            book.c.duplicates += (to - x) - filled;
            out.late |= filled > 0;
            out.duplicate |= filled < to - x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs packets through a tracker, returning deliveries as
    /// `(first, count, skip, late)` and the other events.
    #[derive(Default)]
    struct Log {
        delivered: Vec<(u64, u64, u64, bool)>,
        events: Vec<FeedEvent>,
        verdicts: Vec<Verdict>,
    }

    impl Log {
        fn sink(&mut self) -> impl FnMut(FeedEvent) + '_ {
            |e| match e {
                FeedEvent::Deliver(d) => self.delivered.push((d.first, d.count, d.skip, d.late)),
                e => self.events.push(e),
            }
        }

        fn seqs(&self) -> Vec<u64> {
            self.delivered
                .iter()
                .flat_map(|&(f, n, _, _)| f..f + n)
                .collect()
        }
    }

    fn small(format: SeqFormat, window: u64) -> SeqTracker {
        let config = TrackerConfig::for_format(format).with_window(window);
        SeqTracker::with_config(format, config).unwrap()
    }

    fn feed(t: &mut SeqTracker, log: &mut Log, seqs: &[u64]) {
        for &s in seqs {
            let v = t.on_info(SeqInfo::data(s, 1), log.sink());
            log.verdicts.push(v);
        }
    }

    fn mold(session: &[u8; 10], seq: u64, count: u16) -> Vec<u8> {
        let mut p = session.to_vec();
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&count.to_be_bytes());
        p
    }

    #[test]
    fn in_order_then_reordered_then_copy() {
        let mut t = SeqTracker::new(SeqFormat::default());
        let mut log = Log::default();
        feed(&mut t, &mut log, &[10, 12, 11, 13, 11]);
        use Verdict::*;
        assert_eq!(log.verdicts, [New, New, Late, New, Duplicate]);
        assert_eq!(log.seqs(), [10, 12, 11, 13]);
        assert_eq!(
            log.events,
            [
                FeedEvent::GapOpened { from: 11, to: 11 },
                FeedEvent::GapFilled { from: 11, to: 11 }
            ]
        );
        t.finish(log.sink());
        let c = t.counters();
        assert_eq!(
            (c.packets, c.messages, c.reordered, c.duplicates),
            (5, 4, 1, 1)
        );
        assert_eq!((c.gaps, c.lost), (0, 0));
        assert_eq!(t.span(), Some(10..14));
    }

    #[test]
    fn holes_are_lost_once_the_window_passes() {
        let mut t = small(SeqFormat::default(), 64);
        let mut log = Log::default();
        feed(&mut t, &mut log, &[0, 3, 64]);
        assert!(!log
            .events
            .iter()
            .any(|e| matches!(e, FeedEvent::Lost { .. })));
        feed(&mut t, &mut log, &[65]); // the window is 2..=65: 1 leaves it
        assert_eq!(log.events.last(), Some(&FeedEvent::Lost { from: 1, to: 1 }));
        feed(&mut t, &mut log, &[66]);
        assert_eq!(log.events.last(), Some(&FeedEvent::Lost { from: 2, to: 2 }));
        // A hole declared in several steps is one gap.
        let c = t.counters();
        assert_eq!((c.gaps, c.lost), (1, 2));
        // 4..=63 still pending.
        feed(&mut t, &mut log, &[100, 140]);
        t.finish(log.sink());
        let c = t.counters();
        assert_eq!(c.lost, 2 + 60 + 33 + 39);
        assert_eq!(c.gaps, 4);
        assert_eq!(c.messages + c.lost, 141);
        assert_eq!(c.messages, 7);
    }

    #[test]
    fn a_jump_longer_than_the_window_is_counted_in_bulk() {
        let mut t = small(SeqFormat::default(), 64);
        let mut log = Log::default();
        feed(&mut t, &mut log, &[0, 2, 5_000_000]);
        let c = t.counters();
        // 1, then 3 ..= 4_999_936 are out of the window; the rest pending.
        assert_eq!((c.gaps, c.lost), (2, 1 + 4_999_934));
        t.finish(log.sink());
        let c = t.counters();
        assert_eq!((c.gaps, c.lost), (2, 4_999_998));
        assert_eq!(
            log.events.last(),
            Some(&FeedEvent::Lost {
                from: 4_999_937,
                to: 4_999_999
            })
        );
    }

    #[test]
    fn a_very_late_packet_takes_its_loss_back() {
        let mut t = small(SeqFormat::default(), 64);
        let mut log = Log::default();
        feed(&mut t, &mut log, &[0, 10, 200]);
        assert_eq!(t.counters().lost, 9 + 126); // 1..=9 and 11..=136
        let before = t.counters();
        feed(&mut t, &mut log, &[5]);
        assert_eq!(log.verdicts.last(), Some(&Verdict::Late));
        let c = t.counters();
        assert_eq!(c.lost, before.lost - 1);
        assert_eq!(c.reordered, 1);
        assert_eq!(c.gaps, before.gaps + 1); // 1..=4 and 6..=9
        feed(&mut t, &mut log, &[5, 10]);
        assert_eq!(t.counters().duplicates, 2);
        // Filling a whole hole removes it.
        feed(&mut t, &mut log, &[1, 2, 3, 4]);
        assert_eq!(t.counters().gaps, before.gaps);
        t.finish(log.sink());
        let c = t.counters();
        assert_eq!(c.messages + c.lost, 201);
        assert_eq!(log.seqs().len() as u64, c.messages);
    }

    #[test]
    fn without_a_record_a_very_late_packet_is_a_copy() {
        let config = TrackerConfig::for_format(SeqFormat::default())
            .with_window(64)
            .with_lost_record(0);
        let mut t = SeqTracker::with_config(SeqFormat::default(), config).unwrap();
        let mut log = Log::default();
        feed(&mut t, &mut log, &[0, 10, 200, 5]);
        assert_eq!(log.verdicts.last(), Some(&Verdict::Duplicate));
    }

    #[test]
    fn restarts_backwards_and_forwards() {
        let config = TrackerConfig::for_format(SeqFormat::default())
            .with_window(64)
            .with_horizon(1000);
        let mut t = SeqTracker::with_config(SeqFormat::default(), config).unwrap();
        let mut log = Log::default();
        feed(&mut t, &mut log, &[5000, 5002, 3000, 3001]);
        assert_eq!(log.verdicts[2], Verdict::Restart);
        assert!(log.events.contains(&FeedEvent::Lost {
            from: 5001,
            to: 5001
        }));
        assert!(log.events.contains(&FeedEvent::Restart {
            from: 5003,
            to: 3000
        }));
        // Within the horizon backwards: a copy or stale, never a restart.
        feed(&mut t, &mut log, &[2500, 3001]);
        assert_eq!(log.verdicts[4..], [Verdict::Stale, Verdict::Duplicate]);
        // Far forwards: a restart, not a loss of a million.
        feed(&mut t, &mut log, &[1_003_000]);
        assert_eq!(log.verdicts[6], Verdict::Restart);
        t.finish(log.sink());
        let c = t.counters();
        assert_eq!((c.restarts, c.lost, c.gaps, c.stale), (2, 1, 1, 1));
        assert_eq!(log.seqs(), [5000, 5002, 3000, 3001, 1_003_000]);
    }

    #[test]
    fn a_packet_below_the_first_extends_the_run_until_decided() {
        let mut t = small(SeqFormat::default(), 64);
        let mut log = Log::default();
        feed(&mut t, &mut log, &[100, 101, 97]);
        assert_eq!(log.verdicts[2], Verdict::Late);
        assert!(log
            .events
            .contains(&FeedEvent::GapOpened { from: 98, to: 99 }));
        assert_eq!(t.span(), Some(97..102));
        feed(&mut t, &mut log, &[98, 99, 200, 90]);
        assert_eq!(log.verdicts[6], Verdict::Stale);
        t.finish(log.sink());
        let c = t.counters();
        assert_eq!((c.reordered, c.stale, c.lost), (3, 1, 98));
        assert_eq!(c.messages + c.lost, 200 - 97 + 1);
    }

    #[test]
    fn u16_and_u32_wrap() {
        let f: SeqFormat = "u16be".parse().unwrap();
        let mut t = SeqTracker::new(f);
        let mut log = Log::default();
        feed(&mut t, &mut log, &[65534, 65535, 1, 0, 2]);
        assert_eq!(log.seqs(), [65534, 65535, 65537, 65536, 65538]);
        assert_eq!(log.verdicts[3], Verdict::Late);
        t.finish(log.sink());
        assert_eq!(t.counters().lost, 0);

        let f: SeqFormat = "u32le".parse().unwrap();
        let mut t = SeqTracker::new(f);
        let mut log = Log::default();
        for s in [u32::MAX - 1, 1, u32::MAX, 0] {
            t.on_packet(&s.to_le_bytes(), log.sink());
        }
        let top = u64::from(u32::MAX);
        assert_eq!(log.seqs(), [top - 1, top + 2, top, top + 1]);
        t.finish(log.sink());
        assert_eq!(t.counters().lost, 0);
        assert_eq!(t.counters().reordered, 2);
    }

    #[test]
    fn a_wrap_from_before_the_run_is_stale() {
        let mut t = SeqTracker::new("u16be".parse().unwrap());
        let mut log = Log::default();
        feed(&mut t, &mut log, &[3, 65530]);
        assert_eq!(log.verdicts, [Verdict::New, Verdict::Stale]);
        assert_eq!(t.counters().stale, 1);
    }

    #[test]
    fn moldudp64_heartbeats_blocks_and_sessions() {
        let s1 = b"SESSION001";
        let s2 = b"SESSION002";
        let mut t = SeqTracker::new(SeqFormat::MoldUdp64);
        let mut log = Log::default();
        let run = |t: &mut SeqTracker, log: &mut Log, p: Vec<u8>| {
            let v = t.on_packet(&p, log.sink());
            log.verdicts.push(v);
        };
        run(&mut t, &mut log, mold(s1, 1, 0)); // heartbeat: expect 1
        run(&mut t, &mut log, mold(s1, 1, 3)); // 1..=3
        run(&mut t, &mut log, mold(s1, 4, 2)); // 4, 5
        run(&mut t, &mut log, mold(s1, 9, 0)); // heartbeat: 6..=8 missing
        run(&mut t, &mut log, mold(s1, 3, 4)); // 3..=6: 6 is late
        run(&mut t, &mut log, mold(s1, 9, 0xFFFF)); // end of session
        use Verdict::*;
        assert_eq!(
            log.verdicts,
            [Heartbeat, New, New, Heartbeat, Late, EndOfSession]
        );
        assert_eq!(
            log.delivered,
            [(1, 3, 0, false), (4, 2, 0, false), (6, 1, 3, true)]
        );
        assert!(log
            .events
            .contains(&FeedEvent::GapOpened { from: 6, to: 8 }));
        assert!(log.events.contains(&FeedEvent::EndOfSession { next: 9 }));
        // A new session is a new space; the old one's holes are lost.
        run(&mut t, &mut log, mold(s2, 1, 1));
        assert_eq!(log.verdicts.last(), Some(&Restart));
        assert!(log.events.contains(&FeedEvent::Lost { from: 7, to: 8 }));
        let c = t.counters();
        assert_eq!((c.heartbeats, c.sessions_ended, c.restarts), (2, 1, 1));
        assert_eq!((c.messages, c.duplicates, c.lost, c.gaps), (7, 3, 2, 1));
        // Short: malformed.
        run(&mut t, &mut log, mold(s2, 2, 1)[..19].to_vec());
        assert_eq!(t.counters().malformed, 1);
    }

    #[test]
    fn a_sequence_range_past_u64_is_malformed() {
        let mut t = SeqTracker::new(SeqFormat::MoldUdp64);
        let v = t.on_info(SeqInfo::data(u64::MAX - 1, 5), |_| {});
        assert_eq!(v, Verdict::Malformed);
        let v = t.on_info(SeqInfo::data(u64::MAX - 1, 1), |_| {});
        assert_eq!(v, Verdict::New);
    }

    #[test]
    fn mdp3_loss() {
        let mut t = SeqTracker::new(SeqFormat::Mdp3);
        let mut log = Log::default();
        for s in [100u32, 101, 103] {
            let mut p = [0u8; 20];
            p[..4].copy_from_slice(&s.to_le_bytes());
            t.on_packet(&p, log.sink());
        }
        t.finish(log.sink());
        let c = t.counters();
        assert_eq!((c.messages, c.lost, c.gaps), (3, 1, 1));
    }

    #[test]
    fn none_counts() {
        let mut t = SeqTracker::new(SeqFormat::None);
        let mut log = Log::default();
        for _ in 0..3 {
            t.on_packet(b"", log.sink());
        }
        assert_eq!(log.seqs(), [0, 1, 2]);
        assert_eq!(t.counters().messages, 3);
    }

    #[test]
    fn bad_configs_are_refused() {
        let f = SeqFormat::default();
        let base = TrackerConfig::for_format(f);
        for (config, word) in [
            (base.with_window(0), "window 0"),
            (base.with_window(32), "window 32"),
            (base.with_window(1 << 25), "window 33554432"),
            (base.with_window(1000), "window 1000"),
            (base.with_horizon(100), "horizon 100"),
            (base.with_lost_record(usize::MAX), "record"),
        ] {
            let err = SeqTracker::with_config(f, config).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains(word), "{err}");
        }
        let mdp3 = TrackerConfig::for_format(SeqFormat::Mdp3).with_horizon(1 << 31);
        assert!(SeqTracker::with_config(SeqFormat::Mdp3, mdp3).is_err());
        for text in ["u16le", "u32be", "u64le", "moldudp64", "mdp3", "none"] {
            let f: SeqFormat = text.parse().unwrap();
            assert!(TrackerConfig::for_format(f).check(f).is_ok(), "{text}");
        }
    }
}
