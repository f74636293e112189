//! What a tracker or an arbiter tells its caller: a [`Verdict`] per packet,
//! and [`FeedEvent`]s (deliveries, gaps, losses, restarts, lines) through a
//! caller-supplied sink.

/// Which sequence numbers of one packet are new to the handler: deliver the
/// packet's messages `skip .. skip + count` (for single-sequence formats,
/// `skip` is 0 and `count` 1).
///
/// Sequence numbers are extended to 64 bits: a 16- or 32-bit format's first
/// value is taken as it is and every wrap adds 2^16 or 2^32.
///
/// ```
/// use ipv4_reactor::feed::{FeedEvent, SeqFormat, SeqTracker};
///
/// let mut t = SeqTracker::new(SeqFormat::default());
/// let mut got = Vec::new();
/// t.on_packet(&7u64.to_be_bytes(), |e| {
///     if let FeedEvent::Deliver(d) = e {
///         got.push((d.first, d.count, d.skip, d.late));
///     }
/// });
/// assert_eq!(got, [(7, 1, 0, false)]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Delivery {
    /// The first new sequence number.
    pub first: u64,
    /// How many consecutive sequence numbers, from `first`, are new.
    pub count: u64,
    /// The index of `first` among the packet's messages: how many leading
    /// messages the handler skips (MoldUDP64 packets that partly overlap
    /// what was delivered already).
    pub skip: u64,
    /// These sequence numbers fill a hole: higher ones were delivered first.
    pub late: bool,
}

/// Something a tracker or an arbiter reports while it handles a packet.
/// Sequence ranges are inclusive (`from ..= to`) and extended to 64 bits.
///
/// ```
/// use ipv4_reactor::feed::{FeedEvent, SeqFormat, SeqTracker};
///
/// let mut t = SeqTracker::new(SeqFormat::default());
/// let mut events = Vec::new();
/// for seq in [10u64, 13, 11] {
///     t.on_packet(&seq.to_be_bytes(), |e| events.push(e));
/// }
/// assert!(events.contains(&FeedEvent::GapOpened { from: 11, to: 12 }));
/// assert!(events.contains(&FeedEvent::GapFilled { from: 11, to: 11 }));
/// t.finish(|e| events.push(e));
/// assert_eq!(events.last(), Some(&FeedEvent::Lost { from: 12, to: 12 }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum FeedEvent {
    /// New sequence numbers for the handler. A packet may give several
    /// (a MoldUDP64 packet that is partly a copy); each sequence number is
    /// delivered once per sequence space.
    Deliver(Delivery),
    /// Sequence numbers jumped ahead: `from ..= to` are missing for now.
    GapOpened {
        /// First missing sequence number.
        from: u64,
        /// Last missing sequence number.
        to: u64,
    },
    /// A late packet filled `from ..= to` of a hole (a pending one, or one
    /// already declared lost: then the loss is taken back).
    GapFilled {
        /// First sequence number filled.
        from: u64,
        /// Last sequence number filled.
        to: u64,
    },
    /// `from ..= to` were not delivered within the window (or before
    /// [`finish`](super::SeqTracker::finish), or before a restart): lost.
    Lost {
        /// First lost sequence number.
        from: u64,
        /// Last lost sequence number.
        to: u64,
    },
    /// A new sequence space: a jump beyond the horizon either way, or a new
    /// MoldUDP64 session. Holes of the old space have been declared lost.
    Restart {
        /// The next sequence number the old space expected.
        from: u64,
        /// The first sequence number of the new space.
        to: u64,
    },
    /// The MoldUDP64 session ended; `next` is the sequence number that
    /// would have come next.
    EndOfSession {
        /// Next sequence number of the ended session.
        next: u64,
    },
    /// An arbiter's line has brought nothing for the stale time since
    /// another line delivered a new sequence number.
    LineStale {
        /// The line's index.
        line: usize,
    },
    /// A stale line brought a packet again.
    LineRecovered {
        /// The line's index.
        line: usize,
    },
}

/// What became of one packet, as a whole. [`FeedEvent::Deliver`] says
/// precisely which of its sequence numbers are new.
///
/// ```
/// use ipv4_reactor::feed::{SeqFormat, SeqTracker, Verdict};
///
/// let mut t = SeqTracker::new(SeqFormat::default());
/// let mut verdict = |seq: u64| t.on_packet(&seq.to_be_bytes(), |_| {});
/// assert_eq!(verdict(1), Verdict::New);
/// assert_eq!(verdict(3), Verdict::New);
/// assert_eq!(verdict(2), Verdict::Late);
/// assert_eq!(verdict(2), Verdict::Duplicate);
/// assert!(Verdict::Late.delivers() && !Verdict::Duplicate.delivers());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Verdict {
    /// Delivered: sequence numbers above everything seen so far (perhaps
    /// after a gap).
    New,
    /// Delivered, at least in part, late: the packet fills a hole.
    Late,
    /// Dropped: every sequence number was delivered already.
    Duplicate,
    /// Delivered as the first packet of a new sequence space.
    Restart,
    /// Dropped: older than anything the tracker can judge (below the run's
    /// first sequence number and outside the window).
    Stale,
    /// No message: a heartbeat (it may reveal a gap).
    Heartbeat,
    /// No message: the end of a MoldUDP64 session.
    EndOfSession,
    /// Too short for its format (or a sequence range past 2^64): counted and
    /// dropped.
    Malformed,
}

impl Verdict {
    /// Whether the packet delivered anything to the handler.
    ///
    /// ```
    /// use ipv4_reactor::feed::Verdict;
    /// assert!(Verdict::Restart.delivers());
    /// assert!(!Verdict::Heartbeat.delivers());
    /// ```
    pub fn delivers(self) -> bool {
        matches!(self, Verdict::New | Verdict::Late | Verdict::Restart)
    }
}
