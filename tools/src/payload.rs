//! What the tools add to the library's [`SeqFormat`]: where a payload keeps
//! its send time (`--stamp`), and how `mcast-send` writes payloads in each
//! format. Reading sequence numbers is the library's job
//! ([`ipv4_reactor::feed`]); this module only knows the send stamp and the
//! sender's side.
//!
//! - Integer formats (`u64be`, `u32le@4`, ...): the sequence number at its
//!   offset; with `--stamp`, the send time right after it, as a u64 of
//!   nanoseconds since the Unix epoch in the format's byte order (so the
//!   default `u64be --stamp` keeps its layout: sequence at 0, stamp at 8,
//!   both big-endian).
//! - `mdp3`: the CME MDP 3.0 packet header, `MsgSeqNum` (u32 LE) then
//!   `SendingTime` (u64 LE ns): every packet carries its send time.
//! - `moldudp64`: session, sequence number of the first message, message
//!   count, then that many message blocks (u16 BE length + bytes). No send
//!   stamp.
//! - `none`: nothing to read or write.

use ipv4_reactor::feed::{
    ByteOrder, SeqFormat, MDP3_HEADER_LEN, MOLDUDP64_END_OF_SESSION, MOLDUDP64_HEADER_LEN,
};

/// Bytes of a send stamp (u64 nanoseconds since the Unix epoch).
pub const STAMP_LEN: usize = 8;

/// A clap value parser for `--seq`: the library's format text, the error
/// naming the bad text.
pub fn seq_format(s: &str) -> Result<SeqFormat, String> {
    s.parse::<SeqFormat>().map_err(|e| e.to_string())
}

/// A format and whether its payloads carry a send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    format: SeqFormat,
    stamped: bool,
}

impl Layout {
    /// `format`, with a send stamp after the sequence number when `stamp`
    /// (integer formats only; MDP 3.0 always has its SendingTime). The
    /// error says why `--stamp` does not fit the format.
    pub fn new(format: SeqFormat, stamp: bool) -> Result<Layout, String> {
        match format {
            SeqFormat::Mdp3 => Ok(Layout {
                format,
                stamped: true,
            }),
            SeqFormat::Int { .. } => Ok(Layout {
                format,
                stamped: stamp,
            }),
            _ if stamp => Err(format!(
                "--stamp does not fit --seq {format}: the send time goes after an integer \
                 sequence number (mdp3 carries its own SendingTime)"
            )),
            _ => Ok(Layout {
                format,
                stamped: false,
            }),
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

    /// Where the send time is: its offset and byte order.
    fn stamp_at(self) -> Option<(usize, ByteOrder)> {
        if !self.stamped {
            return None;
        }
        match self.format {
            SeqFormat::Int { order, .. } => Some((self.format.min_len(), order)),
            SeqFormat::Mdp3 => Some((4, ByteOrder::Little)),
            _ => None,
        }
    }

    /// The bytes a payload needs for the sequence number and the stamp.
    pub fn min_len(self) -> usize {
        match self.stamp_at() {
            Some((at, _)) => (at + STAMP_LEN).max(self.format.min_len()),
            None => self.format.min_len(),
        }
    }

    /// The send time of `payload` in nanoseconds since the Unix epoch, if
    /// the layout carries one and the payload is long enough. A zero stamp
    /// (an unstamped payload) is `None`.
    #[inline]
    pub fn send_time(self, payload: &[u8]) -> Option<u64> {
        let (at, order) = self.stamp_at()?;
        let bytes: [u8; STAMP_LEN] = payload.get(at..at + STAMP_LEN)?.try_into().ok()?;
        let ns = match order {
            ByteOrder::Big => u64::from_be_bytes(bytes),
            ByteOrder::Little => u64::from_le_bytes(bytes),
        };
        (ns != 0).then_some(ns)
    }
}

/// How `mcast-send` writes its payloads: a [`Layout`], and for MoldUDP64
/// the session and the messages per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writer {
    layout: Layout,
    messages: u16,
    session: [u8; 10],
}

/// The session `mcast-send` uses for MoldUDP64 unless told otherwise.
pub const DEFAULT_SESSION: &str = "SESSION001";

/// The largest `--messages` (65535 marks the end of a session).
pub const MAX_MESSAGES: u16 = MOLDUDP64_END_OF_SESSION - 1;

/// A clap value parser for `--session`: 1 to 10 printable ASCII characters
/// (padded on the right with spaces, as MoldUDP64 sessions are).
pub fn session(s: &str) -> Result<[u8; 10], String> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{s:?} is not a MoldUDP64 session: 1 to 10 printable ASCII characters, no spaces"
        ));
    }
    let mut out = [b' '; 10];
    out[..s.len()].copy_from_slice(s.as_bytes());
    Ok(out)
}

impl Writer {
    /// A writer for `layout`; `messages` and `session` matter for
    /// MoldUDP64 only (messages: 1 to [`MAX_MESSAGES`]).
    pub fn new(layout: Layout, messages: u16, session: [u8; 10]) -> Writer {
        Writer {
            layout,
            messages: messages.clamp(1, MAX_MESSAGES),
            session,
        }
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// How many sequence numbers one packet takes: the messages per packet
    /// for MoldUDP64, else 1.
    pub fn per_packet(&self) -> u64 {
        match self.layout.format {
            SeqFormat::MoldUdp64 => u64::from(self.messages),
            _ => 1,
        }
    }

    /// The first sequence number a sender uses unless told: 1 for MDP 3.0
    /// and MoldUDP64 (as those feeds number from 1), else 0.
    pub fn default_first(&self) -> u64 {
        match self.layout.format {
            SeqFormat::Mdp3 | SeqFormat::MoldUdp64 => 1,
            _ => 0,
        }
    }

    /// The smallest payload this writer can fill: the layout's, or for
    /// MoldUDP64 the header and a 2-byte length per message.
    pub fn min_len(&self) -> usize {
        match self.layout.format {
            SeqFormat::MoldUdp64 => MOLDUDP64_HEADER_LEN + 2 * usize::from(self.messages),
            _ => self.layout.min_len(),
        }
    }

    /// Writes sequence number `seq` (the first message's, for MoldUDP64)
    /// and, when the layout is stamped, `send_time_ns` into `payload`,
    /// which holds at least [`min_len`](Self::min_len) bytes. 16- and
    /// 32-bit numbers wrap. MoldUDP64 message blocks share the bytes after
    /// the header: equal blocks, the last one taking the remainder, each a
    /// u16 BE length and zeros.
    pub fn write(&self, payload: &mut [u8], seq: u64, send_time_ns: u64) {
        match self.layout.format {
            SeqFormat::Int {
                width,
                order,
                offset,
            } => {
                let n = width.bytes();
                let field = &mut payload[offset..offset + n];
                match order {
                    ByteOrder::Big => field.copy_from_slice(&seq.to_be_bytes()[8 - n..]),
                    ByteOrder::Little => field.copy_from_slice(&seq.to_le_bytes()[..n]),
                }
            }
            SeqFormat::Mdp3 => {
                payload[..4].copy_from_slice(&(seq as u32).to_le_bytes());
                payload[4..MDP3_HEADER_LEN].copy_from_slice(&send_time_ns.to_le_bytes());
                return;
            }
            SeqFormat::MoldUdp64 => {
                payload[..10].copy_from_slice(&self.session);
                payload[10..18].copy_from_slice(&seq.to_be_bytes());
                payload[18..20].copy_from_slice(&self.messages.to_be_bytes());
                let n = usize::from(self.messages);
                let rest = payload.len() - MOLDUDP64_HEADER_LEN;
                let each = rest / n;
                let mut at = MOLDUDP64_HEADER_LEN;
                for i in 0..n {
                    let block = if i + 1 == n {
                        rest - each * (n - 1)
                    } else {
                        each
                    };
                    let len = (block - 2).min(usize::from(u16::MAX)) as u16;
                    payload[at..at + 2].copy_from_slice(&len.to_be_bytes());
                    at += block;
                }
                return;
            }
            _ => return,
        }
        if let Some((at, order)) = self.layout.stamp_at() {
            let field = &mut payload[at..at + STAMP_LEN];
            match order {
                ByteOrder::Big => field.copy_from_slice(&send_time_ns.to_be_bytes()),
                ByteOrder::Little => field.copy_from_slice(&send_time_ns.to_le_bytes()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipv4_reactor::feed::PacketKind;

    fn layout(text: &str, stamp: bool) -> Layout {
        Layout::new(text.parse().unwrap(), stamp).unwrap()
    }

    #[test]
    fn mdp3_header_is_seq_u32le_then_sending_time_u64le() {
        let l = layout("mdp3", false);
        assert!(l.stamped());
        let w = Writer::new(l, 1, [b' '; 10]);
        let mut p = [0u8; 16];
        w.write(&mut p, 0x0102_0304, 0x1122_3344_5566_7788);
        assert_eq!(&p[..4], &[4, 3, 2, 1]);
        assert_eq!(&p[4..12], &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
        let info = SeqFormat::Mdp3.parse(&p).unwrap();
        assert_eq!(info.seq, 0x0102_0304);
        assert_eq!(info.sending_time_ns, Some(0x1122_3344_5566_7788));
        assert_eq!(l.send_time(&p), Some(0x1122_3344_5566_7788));
        assert_eq!(l.send_time(&p[..11]), None);
    }

    #[test]
    fn u64be_carries_a_stamp_only_when_asked() {
        let plain = layout("u64be", false);
        let stamped = layout("u64be", true);
        assert_eq!((plain.min_len(), stamped.min_len()), (8, 16));
        let mut p = [0u8; 16];
        Writer::new(stamped, 1, [b' '; 10]).write(&mut p, 7, 1_700_000_000_000_000_000);
        assert_eq!(&p[..8], &7u64.to_be_bytes());
        assert_eq!(&p[8..], &1_700_000_000_000_000_000u64.to_be_bytes());
        assert_eq!(stamped.send_time(&p), Some(1_700_000_000_000_000_000));
        assert_eq!(plain.send_time(&p), None);
        // Zero padding is no stamp.
        assert_eq!(stamped.send_time(&[0u8; 16]), None);
    }

    #[test]
    fn integers_at_offsets_round_trip_through_the_library() {
        for text in ["u64le@3", "u32be", "u32le@4", "u16be@1", "u16le@7"] {
            let l = layout(text, true);
            let w = Writer::new(l, 1, [b' '; 10]);
            let mut p = vec![0xEEu8; w.min_len() + 5];
            w.write(&mut p, 0x1_0000_0000_1234, 42);
            let info = l.format().parse(&p).unwrap();
            let bits = l.format().seq_bits();
            let mask = if bits == 64 {
                u64::MAX
            } else {
                (1 << bits) - 1
            };
            assert_eq!(info.seq, 0x1_0000_0000_1234 & mask, "{text}");
            assert_eq!(l.send_time(&p), Some(42), "{text}");
        }
        assert_eq!(layout("u32le@4", true).min_len(), 16);
    }

    #[test]
    fn moldudp64_packets_parse_with_their_blocks() {
        let l = layout("moldudp64", false);
        let w = Writer::new(l, 3, session("ABC").unwrap());
        assert_eq!((w.per_packet(), w.default_first(), w.min_len()), (3, 1, 26));
        let mut p = vec![0u8; 64];
        w.write(&mut p, 1000, 0);
        let info = SeqFormat::MoldUdp64.parse(&p).unwrap();
        assert_eq!(
            (info.seq, info.count, info.kind),
            (1000, 3, PacketKind::Data)
        );
        assert_eq!(info.session, Some(*b"ABC       "));
        // Blocks of 14, 14 and 16 bytes: lengths 12, 12, 14.
        let len = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
        assert_eq!((len(20), len(34), len(48)), (12, 12, 14));
        assert_eq!(48 + 2 + 14, p.len());
    }

    #[test]
    fn stamps_fit_integers_and_mdp3_only() {
        assert!(Layout::new(SeqFormat::MoldUdp64, true)
            .unwrap_err()
            .contains("moldudp64"));
        assert!(Layout::new(SeqFormat::None, true).is_err());
        assert!(!layout("none", false).stamped());
        assert!(session("ELEVENCHARS").is_err());
        assert!(session("a b").is_err());
        assert!(seq_format("u65be").unwrap_err().contains("\"u65be\""));
    }
}
