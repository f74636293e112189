//! Sequence-numbered market-data feeds: where the sequence number is,
//! which packets are new, late, copies or lost, and which of N redundant
//! lines brought each one first.
//!
//! - [`SeqFormat`] reads a packet's sequence numbers ([`SeqInfo`]): an
//!   unsigned integer at an offset, NASDAQ MoldUDP64 or CME MDP 3.0.
//! - [`SeqTracker`] follows one sequence space: each packet is new, a late
//!   fill, a copy, or a restart ([`Verdict`]); holes open, fill or are lost
//!   once a window has passed them ([`FeedEvent`]).
//! - [`Arbiter`] merges N redundant lines (A/B): each sequence number once,
//!   from the line that brought it first; per line, its own gaps, the
//!   deliveries it won, kernel drops and silence ([`LineCounters`]).
//!
//! Nothing here allocates per packet, and nothing here touches a socket:
//! the caller hands in payloads, as a reactor handler does.
//!
//! ```
//! use ipv4_reactor::feed::{FeedEvent, SeqFormat, SeqTracker};
//!
//! let mut tracker = SeqTracker::new(SeqFormat::default());
//! for seq in [10u64, 12, 11, 13] {
//!     tracker.on_packet(&seq.to_be_bytes(), |event| {
//!         if let FeedEvent::Deliver(d) = event {
//!             // the handler sees each sequence number once
//!             assert_eq!(d.count, 1);
//!         }
//!     });
//! }
//! tracker.finish(|_| {});
//! let c = tracker.counters();
//! assert_eq!((c.reordered, c.lost, c.gaps), (1, 0, 0));
//! ```

mod arbiter;
mod event;
mod format;
mod record;
mod tracker;
mod window;

pub use arbiter::{Arbiter, LineCounters, DEFAULT_STALE_AFTER, MAX_LINES, MAX_STALE_AFTER};
pub use event::{Delivery, FeedEvent, Verdict};
pub use format::{
    ByteOrder, Malformed, PacketKind, SeqFormat, SeqInfo, Width, MAX_OFFSET, MDP3_HEADER_LEN,
    MOLDUDP64_END_OF_SESSION, MOLDUDP64_HEADER_LEN,
};
pub use tracker::{
    SeqCounters, SeqTracker, TrackerConfig, DEFAULT_HORIZON, DEFAULT_HORIZON_U16,
    DEFAULT_LOST_RECORD, DEFAULT_WINDOW, DEFAULT_WINDOW_U16, MAX_LOST_RECORD, MAX_WINDOW,
    MIN_WINDOW,
};
