//! Where a feed's payload keeps its sequence number and its send time:
//! the one place that knows payload layouts, shared by mcast-dump (reads)
//! and mcast-send (writes), so that a richer feed module can replace it.
//!
//! - `u64be` (default): a big-endian u64 sequence number at offset 0; with
//!   `--stamp`, the send time as a big-endian u64 of nanoseconds since the
//!   Unix epoch at offset 8.
//! - `mdp3`: the CME MDP 3.0 packet header: `MsgSeqNum`, u32 little-endian
//!   at offset 0, then `SendingTime`, u64 little-endian nanoseconds since
//!   the Unix epoch, at offset 4. Every packet carries its send time.

/// A payload layout (`--seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SeqFormat {
    /// Big-endian u64 sequence number at offset 0 (send time at 8 with --stamp)
    #[default]
    #[value(name = "u64be")]
    U64Be,
    /// CME MDP 3.0 packet header: MsgSeqNum u32 LE at 0, SendingTime u64 LE ns at 4
    #[value(name = "mdp3")]
    Mdp3,
}

impl SeqFormat {
    /// The name `--seq` takes.
    pub fn name(self) -> &'static str {
        match self {
            SeqFormat::U64Be => "u64be",
            SeqFormat::Mdp3 => "mdp3",
        }
    }
}

/// A layout and whether its payloads carry a send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqLayout {
    format: SeqFormat,
    stamped: bool,
}

impl SeqLayout {
    /// `format`, with the send time after the sequence number when
    /// `stamp` (MDP 3.0 always has one).
    pub fn new(format: SeqFormat, stamp: bool) -> SeqLayout {
        SeqLayout {
            format,
            stamped: stamp || format == SeqFormat::Mdp3,
        }
    }

    /// The format.
    pub fn format(self) -> SeqFormat {
        self.format
    }

    /// Whether payloads carry a send time.
    pub fn stamped(self) -> bool {
        self.stamped
    }

    /// The bytes a payload needs for what this layout writes.
    pub fn min_len(self) -> usize {
        match (self.format, self.stamped) {
            (SeqFormat::U64Be, false) => 8,
            (SeqFormat::U64Be, true) => 16,
            (SeqFormat::Mdp3, _) => 12,
        }
    }

    /// The first sequence number a sender uses: 0, or 1 for MDP 3.0 (as
    /// CME numbers a channel's packets from 1).
    pub fn first_seq(self) -> u64 {
        match self.format {
            SeqFormat::U64Be => 0,
            SeqFormat::Mdp3 => 1,
        }
    }

    /// The sequence number of `payload`, if it is long enough.
    #[inline(always)]
    pub fn seq(self, payload: &[u8]) -> Option<u64> {
        match self.format {
            SeqFormat::U64Be => payload.first_chunk::<8>().map(|b| u64::from_be_bytes(*b)),
            SeqFormat::Mdp3 => payload
                .first_chunk::<4>()
                .map(|b| u64::from(u32::from_le_bytes(*b))),
        }
    }

    /// The send time of `payload` in nanoseconds since the Unix epoch, if
    /// the layout carries one and the payload is long enough. A zero stamp
    /// (an unstamped payload) is `None`.
    #[inline(always)]
    pub fn send_time(self, payload: &[u8]) -> Option<u64> {
        if !self.stamped {
            return None;
        }
        let ns = match self.format {
            SeqFormat::U64Be => u64::from_be_bytes(*payload.get(8..16)?.first_chunk::<8>()?),
            SeqFormat::Mdp3 => u64::from_le_bytes(*payload.get(4..12)?.first_chunk::<8>()?),
        };
        (ns != 0).then_some(ns)
    }

    /// Writes `seq` (and, for a stamped layout, `send_time_ns`) at the
    /// start of `payload`, which holds at least [`min_len`](Self::min_len)
    /// bytes. MDP 3.0's 32-bit sequence number wraps.
    pub fn write(self, payload: &mut [u8], seq: u64, send_time_ns: u64) {
        match self.format {
            SeqFormat::U64Be => {
                payload[..8].copy_from_slice(&seq.to_be_bytes());
                if self.stamped {
                    payload[8..16].copy_from_slice(&send_time_ns.to_be_bytes());
                }
            }
            SeqFormat::Mdp3 => {
                payload[..4].copy_from_slice(&(seq as u32).to_le_bytes());
                payload[4..12].copy_from_slice(&send_time_ns.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mdp3_header_is_seq_u32le_then_sending_time_u64le() {
        let layout = SeqLayout::new(SeqFormat::Mdp3, false);
        assert!(layout.stamped());
        let mut p = [0u8; 16];
        layout.write(&mut p, 0x0102_0304, 0x1122_3344_5566_7788);
        assert_eq!(&p[..4], &[4, 3, 2, 1]);
        assert_eq!(&p[4..12], &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
        assert_eq!(layout.seq(&p), Some(0x0102_0304));
        assert_eq!(layout.send_time(&p), Some(0x1122_3344_5566_7788));
        assert_eq!(layout.send_time(&p[..11]), None);
        assert_eq!(layout.seq(&p[..3]), None);
    }

    #[test]
    fn u64be_carries_a_stamp_only_when_asked() {
        let plain = SeqLayout::new(SeqFormat::U64Be, false);
        let stamped = SeqLayout::new(SeqFormat::U64Be, true);
        assert_eq!((plain.min_len(), stamped.min_len()), (8, 16));
        let mut p = [0u8; 16];
        stamped.write(&mut p, 7, 1_700_000_000_000_000_000);
        assert_eq!(&p[..8], &7u64.to_be_bytes());
        assert_eq!(stamped.seq(&p), Some(7));
        assert_eq!(stamped.send_time(&p), Some(1_700_000_000_000_000_000));
        assert_eq!(plain.send_time(&p), None);
        // Zero padding is no stamp.
        assert_eq!(stamped.send_time(&[0u8; 16]), None);
    }
}
