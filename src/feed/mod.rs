//! Sequence-numbered market-data feeds: where the sequence number is,
//! which packets are new, late, copies or lost, and which of N redundant
//! lines brought each one first.
//!
//! - [`SeqFormat`] reads a packet's sequence numbers ([`SeqInfo`]): an
//!   unsigned integer at an offset, NASDAQ MoldUDP64 or CME MDP 3.0.

mod format;

pub use format::{
    ByteOrder, Malformed, PacketKind, SeqFormat, SeqInfo, Width, MAX_OFFSET, MDP3_HEADER_LEN,
    MOLDUDP64_END_OF_SESSION, MOLDUDP64_HEADER_LEN,
};
