//! Where a feed keeps its sequence numbers: [`SeqFormat`], and what one
//! packet says about them: [`SeqInfo`].

use std::fmt;
use std::io;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::error::invalid;

/// Byte ranges of the fixed headers, kept in one place.
mod field {
    use std::ops::Range;

    /// MoldUDP64: `Session`, 10 ASCII bytes.
    pub const MOLD_SESSION: Range<usize> = 0..10;
    /// MoldUDP64: `Sequence Number`, u64 big-endian (first message of the packet).
    pub const MOLD_SEQ: Range<usize> = 10..18;
    /// MoldUDP64: `Message Count`, u16 big-endian.
    pub const MOLD_COUNT: Range<usize> = 18..20;
    /// CME MDP 3.0 binary packet header: `MsgSeqNum`, u32 little-endian.
    pub const MDP3_SEQ: Range<usize> = 0..4;
    /// CME MDP 3.0: `SendingTime`, u64 little-endian nanoseconds since the epoch.
    pub const MDP3_SENDING_TIME: Range<usize> = 4..12;
}

/// Length of a MoldUDP64 downstream header (session, sequence, count).
pub const MOLDUDP64_HEADER_LEN: usize = 20;
/// Length of a CME MDP 3.0 binary packet header (`MsgSeqNum`, `SendingTime`).
pub const MDP3_HEADER_LEN: usize = 12;
/// The MoldUDP64 message count that marks the end of a session.
pub const MOLDUDP64_END_OF_SESSION: u16 = 0xFFFF;

/// The largest offset a plain integer format accepts: an offset past the
/// largest UDP payload (65507 bytes over IPv4) could never be read.
pub const MAX_OFFSET: usize = 65507 - 8;

/// Width of a plain integer sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Width {
    /// 16 bits: wraps after 65535.
    U16,
    /// 32 bits: wraps after 4294967295.
    U32,
    /// 64 bits: never wraps in practice.
    U64,
}

impl Width {
    /// The number of bits.
    ///
    /// ```
    /// use ipv4_reactor::feed::Width;
    /// assert_eq!(Width::U32.bits(), 32);
    /// ```
    pub fn bits(self) -> u32 {
        match self {
            Width::U16 => 16,
            Width::U32 => 32,
            Width::U64 => 64,
        }
    }

    /// The number of bytes.
    ///
    /// ```
    /// use ipv4_reactor::feed::Width;
    /// assert_eq!(Width::U16.bytes(), 2);
    /// ```
    pub fn bytes(self) -> usize {
        self.bits() as usize / 8
    }
}

/// Byte order of a plain integer sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// Most significant byte first (network order).
    Big,
    /// Least significant byte first.
    Little,
}

/// Where a feed's packets carry their sequence number, and what it counts.
///
/// Parsed from, and displayed as, the text a command line takes: `u64be`
/// (the default), `u64le`, `u32be`, `u32le`, `u16be`, `u16le`, each with an
/// optional `@OFFSET` in bytes (`u32le@4`), then `moldudp64`, `mdp3` and
/// `none`.
///
/// ```
/// use ipv4_reactor::feed::{ByteOrder, SeqFormat, Width};
///
/// let f: SeqFormat = "u32le@4".parse()?;
/// assert_eq!(f, SeqFormat::Int { width: Width::U32, order: ByteOrder::Little, offset: 4 });
/// assert_eq!(f.to_string(), "u32le@4");
/// assert_eq!(SeqFormat::default().to_string(), "u64be");
/// let err = "u65be".parse::<SeqFormat>().unwrap_err();
/// assert!(err.to_string().contains("\"u65be\""));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SeqFormat {
    /// An unsigned integer at a fixed offset: one sequence number per packet.
    /// 16- and 32-bit numbers wrap; a tracker extends them to 64 bits.
    Int {
        /// How many bits.
        width: Width,
        /// Which byte order.
        order: ByteOrder,
        /// Where it starts in the payload, in bytes.
        offset: usize,
    },
    /// NASDAQ MoldUDP64 downstream packets: a 10-byte session, the first
    /// message's sequence number (u64 BE) and a message count (u16 BE); the
    /// packet covers `seq .. seq + count`. Count 0 is a heartbeat and
    /// 0xFFFF the end of the session, both carrying the next expected
    /// sequence number and no message.
    MoldUdp64,
    /// CME MDP 3.0 binary packet header: `MsgSeqNum` (u32 LE, one per
    /// packet) and `SendingTime` (u64 LE, nanoseconds since the epoch).
    Mdp3,
    /// No sequence number: packets are counted, never judged.
    None,
}

impl Default for SeqFormat {
    /// `u64be` at offset 0.
    fn default() -> SeqFormat {
        SeqFormat::Int {
            width: Width::U64,
            order: ByteOrder::Big,
            offset: 0,
        }
    }
}

/// What kind of packet a [`SeqInfo`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PacketKind {
    /// Messages with sequence numbers `seq .. seq + count`.
    Data,
    /// No message; `seq` is the next expected sequence number (MoldUDP64
    /// count 0).
    Heartbeat,
    /// No message; the session ends, `seq` is the next sequence number it
    /// would have had (MoldUDP64 count 0xFFFF).
    EndOfSession,
    /// No sequence number at all (format `none`).
    Unsequenced,
}

/// What one packet says about its sequence numbers: the result of
/// [`SeqFormat::parse`]. Small and `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SeqInfo {
    /// The first sequence number, as on the wire (16- and 32-bit formats
    /// are not extended here: a [`SeqTracker`](super::SeqTracker) does it).
    pub seq: u64,
    /// How many messages, hence sequence numbers, the packet carries: 1 for
    /// the integer formats and MDP 3.0, the message count for MoldUDP64 data,
    /// 0 for heartbeats and end of session.
    pub count: u64,
    /// Data, heartbeat, end of session, or unsequenced.
    pub kind: PacketKind,
    /// The MoldUDP64 session; `None` for the other formats.
    pub session: Option<[u8; 10]>,
    /// The MDP 3.0 `SendingTime`, in nanoseconds since the Unix epoch;
    /// `None` for the other formats.
    pub sending_time_ns: Option<u64>,
}

impl SeqInfo {
    /// One data packet with `count` sequence numbers from `seq`, without
    /// session or sending time: what the integer formats produce, and a
    /// handy way to feed a tracker sequence numbers parsed elsewhere.
    ///
    /// ```
    /// use ipv4_reactor::feed::{PacketKind, SeqInfo};
    /// let info = SeqInfo::data(7, 1);
    /// assert_eq!((info.seq, info.count, info.kind), (7, 1, PacketKind::Data));
    /// ```
    pub fn data(seq: u64, count: u64) -> SeqInfo {
        SeqInfo {
            seq,
            count,
            kind: PacketKind::Data,
            session: None,
            sending_time_ns: None,
        }
    }

    /// The MDP 3.0 `SendingTime` as a `SystemTime`, for one-way latency.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use ipv4_reactor::feed::SeqFormat;
    ///
    /// let mut p = [0u8; 12];
    /// p[4..12].copy_from_slice(&1_700_000_000_000_000_123u64.to_le_bytes());
    /// let info = SeqFormat::Mdp3.parse(&p)?;
    /// let sent = info.sending_time().unwrap();
    /// assert_eq!(sent, SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_123));
    /// # Ok::<(), ipv4_reactor::feed::Malformed>(())
    /// ```
    pub fn sending_time(&self) -> Option<SystemTime> {
        let ns = self.sending_time_ns?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_nanos(ns))
    }
}

/// A packet too short for its format (counted as `malformed`, never a
/// panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Malformed {
    /// The format that was expected.
    pub format: SeqFormat,
    /// How many bytes the format needs.
    pub needed: usize,
    /// How many bytes the packet had.
    pub len: usize,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed {} packet: {} bytes, the format needs at least {}",
            self.format, self.len, self.needed
        )
    }
}

impl std::error::Error for Malformed {}

impl From<Malformed> for io::Error {
    fn from(m: Malformed) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, m)
    }
}

/// Reads `N` bytes from `at`; `None` when the packet is
/// too short.
#[inline]
fn bytes_at<const N: usize>(payload: &[u8], at: usize) -> Option<[u8; N]> {
    payload.get(at..at.checked_add(N)?)?.try_into().ok()
}

impl SeqFormat {
    /// An integer format at `offset`, checked: the offset must leave room
    /// for the number in a UDP payload ([`MAX_OFFSET`]).
    ///
    /// ```
    /// use ipv4_reactor::feed::{ByteOrder, SeqFormat, Width};
    /// let f = SeqFormat::int(Width::U16, ByteOrder::Big, 2)?;
    /// assert_eq!(f.to_string(), "u16be@2");
    /// assert!(SeqFormat::int(Width::U64, ByteOrder::Big, 70_000).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn int(width: Width, order: ByteOrder, offset: usize) -> io::Result<SeqFormat> {
        if offset > MAX_OFFSET {
            return Err(invalid(format!(
                "sequence offset {offset} is past the largest UDP payload (at most {MAX_OFFSET})"
            )));
        }
        Ok(SeqFormat::Int {
            width,
            order,
            offset,
        })
    }

    /// How many bits the format's sequence numbers have before they wrap
    /// (64 for `moldudp64` and `none`, 32 for `mdp3`).
    ///
    /// ```
    /// use ipv4_reactor::feed::SeqFormat;
    /// assert_eq!(SeqFormat::Mdp3.seq_bits(), 32);
    /// assert_eq!("u16le".parse::<SeqFormat>()?.seq_bits(), 16);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn seq_bits(self) -> u32 {
        match self {
            SeqFormat::Int { width, .. } => width.bits(),
            SeqFormat::Mdp3 => 32,
            SeqFormat::MoldUdp64 | SeqFormat::None => 64,
        }
    }

    /// The smallest packet the format can parse.
    ///
    /// ```
    /// use ipv4_reactor::feed::SeqFormat;
    /// assert_eq!(SeqFormat::MoldUdp64.min_len(), 20);
    /// assert_eq!("u32be@6".parse::<SeqFormat>()?.min_len(), 10);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn min_len(self) -> usize {
        match self {
            SeqFormat::Int { width, offset, .. } => offset.saturating_add(width.bytes()),
            SeqFormat::MoldUdp64 => MOLDUDP64_HEADER_LEN,
            SeqFormat::Mdp3 => MDP3_HEADER_LEN,
            SeqFormat::None => 0,
        }
    }

    /// Reads one packet's sequence numbers. Only the fixed header is read:
    /// MoldUDP64 message blocks are not walked.
    ///
    /// ```
    /// use ipv4_reactor::feed::{PacketKind, SeqFormat};
    ///
    /// // MoldUDP64: session "SESSION001", sequence 1000, 3 messages.
    /// let mut p = Vec::from(*b"SESSION001");
    /// p.extend_from_slice(&1000u64.to_be_bytes());
    /// p.extend_from_slice(&3u16.to_be_bytes());
    /// let info = SeqFormat::MoldUdp64.parse(&p)?;
    /// assert_eq!((info.seq, info.count, info.kind), (1000, 3, PacketKind::Data));
    /// assert_eq!(info.session, Some(*b"SESSION001"));
    ///
    /// // Too short: an error that says so, never a panic.
    /// let err = SeqFormat::MoldUdp64.parse(&p[..19]).unwrap_err();
    /// assert_eq!((err.needed, err.len), (20, 19));
    /// # Ok::<(), ipv4_reactor::feed::Malformed>(())
    /// ```
    #[inline]
    pub fn parse(self, payload: &[u8]) -> Result<SeqInfo, Malformed> {
        let short = || Malformed {
            format: self,
            needed: self.min_len(),
            len: payload.len(),
        };
        match self {
            SeqFormat::Int {
                width,
                order,
                offset,
            } => {
                let seq = match (width, order) {
                    (Width::U64, ByteOrder::Big) => {
                        bytes_at(payload, offset).map(u64::from_be_bytes)
                    }
                    (Width::U64, ByteOrder::Little) => {
                        bytes_at(payload, offset).map(u64::from_le_bytes)
                    }
                    (Width::U32, ByteOrder::Big) => {
                        bytes_at(payload, offset).map(|b| u64::from(u32::from_be_bytes(b)))
                    }
                    (Width::U32, ByteOrder::Little) => {
                        bytes_at(payload, offset).map(|b| u64::from(u32::from_le_bytes(b)))
                    }
                    (Width::U16, ByteOrder::Big) => {
                        bytes_at(payload, offset).map(|b| u64::from(u16::from_be_bytes(b)))
                    }
                    (Width::U16, ByteOrder::Little) => {
                        bytes_at(payload, offset).map(|b| u64::from(u16::from_le_bytes(b)))
                    }
                };
                seq.map(|seq| SeqInfo::data(seq, 1)).ok_or_else(short)
            }
            SeqFormat::MoldUdp64 => {
                let (Some(session), Some(seq), Some(count)) = (
                    bytes_at::<10>(payload, field::MOLD_SESSION.start),
                    bytes_at(payload, field::MOLD_SEQ.start).map(u64::from_be_bytes),
                    bytes_at(payload, field::MOLD_COUNT.start).map(u16::from_be_bytes),
                ) else {
                    return Err(short());
                };
                let (kind, count) = match count {
                    0 => (PacketKind::Heartbeat, 0),
                    MOLDUDP64_END_OF_SESSION => (PacketKind::EndOfSession, 0),
                    n => (PacketKind::Data, u64::from(n)),
                };
                Ok(SeqInfo {
                    seq,
                    count,
                    kind,
                    session: Some(session),
                    sending_time_ns: None,
                })
            }
            SeqFormat::Mdp3 => {
                let (Some(seq), Some(sent)) = (
                    bytes_at(payload, field::MDP3_SEQ.start).map(u32::from_le_bytes),
                    bytes_at(payload, field::MDP3_SENDING_TIME.start).map(u64::from_le_bytes),
                ) else {
                    return Err(short());
                };
                Ok(SeqInfo {
                    sending_time_ns: Some(sent),
                    ..SeqInfo::data(u64::from(seq), 1)
                })
            }
            SeqFormat::None => Ok(SeqInfo {
                kind: PacketKind::Unsequenced,
                ..SeqInfo::data(0, 1)
            }),
        }
    }
}

const FORMAT_HELP: &str = "expected u64be (the default), u64le, u32be, u32le, u16be or u16le, \
     each with an optional @OFFSET in bytes (e.g. u64be@10), or moldudp64, mdp3 or none";

impl FromStr for SeqFormat {
    type Err = io::Error;

    fn from_str(text: &str) -> io::Result<SeqFormat> {
        match text {
            "moldudp64" => return Ok(SeqFormat::MoldUdp64),
            "mdp3" => return Ok(SeqFormat::Mdp3),
            "none" => return Ok(SeqFormat::None),
            _ => {}
        }
        let bad = || invalid(format!("unknown sequence format {text:?}: {FORMAT_HELP}"));
        let (name, offset) = match text.split_once('@') {
            Some((name, digits)) => {
                // Digits only: no sign, no spaces, no empty offset.
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let offset = digits.parse::<usize>().ok().filter(|&o| o <= MAX_OFFSET);
                let Some(offset) = offset else {
                    return Err(invalid(format!(
                        "sequence format {text:?}: offset {digits} is past the largest \
                         UDP payload (at most {MAX_OFFSET})"
                    )));
                };
                (name, offset)
            }
            None => (text, 0),
        };
        let (width, order) = match name {
            "u64be" => (Width::U64, ByteOrder::Big),
            "u64le" => (Width::U64, ByteOrder::Little),
            "u32be" => (Width::U32, ByteOrder::Big),
            "u32le" => (Width::U32, ByteOrder::Little),
            "u16be" => (Width::U16, ByteOrder::Big),
            "u16le" => (Width::U16, ByteOrder::Little),
            _ => return Err(bad()),
        };
        Ok(SeqFormat::Int {
            width,
            order,
            offset,
        })
    }
}

impl fmt::Display for SeqFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SeqFormat::Int {
                width,
                order,
                offset,
            } => {
                let order = match order {
                    ByteOrder::Big => "be",
                    ByteOrder::Little => "le",
                };
                write!(f, "u{}{order}", width.bits())?;
                if offset != 0 {
                    write!(f, "@{offset}")?;
                }
                Ok(())
            }
            SeqFormat::MoldUdp64 => f.write_str("moldudp64"),
            SeqFormat::Mdp3 => f.write_str("mdp3"),
            SeqFormat::None => f.write_str("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mold(session: &[u8; 10], seq: u64, count: u16) -> Vec<u8> {
        let mut p = session.to_vec();
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&count.to_be_bytes());
        p
    }

    #[test]
    fn text_round_trips() {
        for text in [
            "u64be",
            "u64le",
            "u32be",
            "u32le",
            "u16be",
            "u16le",
            "u64be@10",
            "u16le@1",
            "u32be@65499",
            "moldudp64",
            "mdp3",
            "none",
        ] {
            let f: SeqFormat = text.parse().unwrap();
            assert_eq!(f.to_string(), text);
        }
        // @0 is the default offset, shown without it.
        assert_eq!("u32le@0".parse::<SeqFormat>().unwrap().to_string(), "u32le");
        assert_eq!(SeqFormat::default(), "u64be".parse().unwrap());
    }

    #[test]
    fn bad_text_is_named() {
        for text in [
            "",
            "u64",
            "U64BE",
            "u64be@",
            "u64be@-1",
            "u64be@+1",
            "u64be@ 1",
            "u64be@1x",
            "moldudp64@2",
            "mdp3@0",
            "none@1",
            "u8be",
            "u64be@@1",
            "u128be",
            "mold",
        ] {
            let err = text.parse::<SeqFormat>().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{text}");
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
        let err = "u64be@99999999999999999999999"
            .parse::<SeqFormat>()
            .unwrap_err();
        assert!(err.to_string().contains("largest UDP payload"), "{err}");
        assert!("u64be@65500".parse::<SeqFormat>().is_err());
    }

    #[test]
    fn integers_at_offsets() {
        let p = [0xAA, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xBB];
        let seq = |text: &str| text.parse::<SeqFormat>().unwrap().parse(&p).unwrap().seq;
        assert_eq!(seq("u64be@1"), 0x0102_0304_0506_0708);
        assert_eq!(seq("u64le@1"), 0x0807_0605_0403_0201);
        assert_eq!(seq("u32be@1"), 0x0102_0304);
        assert_eq!(seq("u32le@2"), 0x0504_0302);
        assert_eq!(seq("u16be@8"), 0x08BB);
        assert_eq!(seq("u16le"), 0x01AA);
        let info = SeqFormat::default().parse(&p).unwrap();
        assert_eq!(info.count, 1);
        assert_eq!(info.kind, PacketKind::Data);
        assert_eq!(info.session, None);
        assert_eq!(info.sending_time_ns, None);
    }

    #[test]
    fn truncated_packets_are_malformed() {
        for text in [
            "u64be",
            "u64le@3",
            "u32be@7",
            "u16le@9",
            "moldudp64",
            "mdp3",
        ] {
            let f: SeqFormat = text.parse().unwrap();
            let need = f.min_len();
            let p = vec![0u8; need];
            assert!(f.parse(&p).is_ok(), "{text}");
            for len in 0..need {
                let err = f.parse(&p[..len]).unwrap_err();
                assert_eq!((err.needed, err.len, err.format), (need, len, f));
                assert!(err.to_string().contains(text), "{err}");
            }
        }
        // An offset near usize::MAX cannot overflow.
        let f = SeqFormat::Int {
            width: Width::U64,
            order: ByteOrder::Big,
            offset: usize::MAX - 3,
        };
        assert!(f.parse(&[0; 16]).is_err());
        assert_eq!(f.min_len(), usize::MAX);
    }

    #[test]
    fn moldudp64_kinds() {
        let s = b"SESSION001";
        let info = SeqFormat::MoldUdp64.parse(&mold(s, 42, 5)).unwrap();
        assert_eq!((info.seq, info.count, info.kind), (42, 5, PacketKind::Data));
        assert_eq!(info.session, Some(*s));
        let hb = SeqFormat::MoldUdp64.parse(&mold(s, 47, 0)).unwrap();
        assert_eq!((hb.seq, hb.count, hb.kind), (47, 0, PacketKind::Heartbeat));
        let end = SeqFormat::MoldUdp64.parse(&mold(s, 47, 0xFFFF)).unwrap();
        assert_eq!(
            (end.seq, end.count, end.kind),
            (47, 0, PacketKind::EndOfSession)
        );
        let big = SeqFormat::MoldUdp64.parse(&mold(s, 1, 0xFFFE)).unwrap();
        assert_eq!(big.count, 0xFFFE);
        // Message blocks after the header are not needed.
        let mut p = mold(s, u64::MAX, 1);
        p.extend_from_slice(&[0, 3, b'a', b'b', b'c']);
        assert_eq!(SeqFormat::MoldUdp64.parse(&p).unwrap().seq, u64::MAX);
    }

    #[test]
    fn mdp3_header() {
        let mut p = [0u8; 30];
        p[..4].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
        p[4..12].copy_from_slice(&1_234_567_890_123_456_789u64.to_le_bytes());
        let info = SeqFormat::Mdp3.parse(&p).unwrap();
        assert_eq!(info.seq, 0xDEAD_BEEF);
        assert_eq!(info.count, 1);
        assert_eq!(info.sending_time_ns, Some(1_234_567_890_123_456_789));
        assert!(info.sending_time().is_some());
        assert_eq!(info.session, None);
    }

    #[test]
    fn none_counts_only() {
        let info = SeqFormat::None.parse(&[]).unwrap();
        assert_eq!(info.kind, PacketKind::Unsequenced);
        assert_eq!(info.count, 1);
    }
}
