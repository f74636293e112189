//! Per-packet control messages: which ones to ask the kernel for
//! ([`ControlFlags`]), what came with a packet ([`ControlMessage`]), and the
//! encoder for the ones a sender attaches.
//!
//! Each flag is independent in what it reports. Several of them share one
//! kernel switch (`IP_PKTINFO` carries the destination, the interface and the
//! local address), and the crate keeps that switch on while any of them is
//! on, unlike Go's package, where turning off `FlagDst` also stops
//! `FlagInterface`.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::{BitOr, BitOrAssign};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sys;

/// Which per-packet extras to receive. Combine with `|`.
///
/// ```
/// use ipv4_reactor::ControlFlags;
/// let flags = ControlFlags::TTL | ControlFlags::DST | ControlFlags::INTERFACE;
/// assert!(flags.contains(ControlFlags::DST));
/// assert!(!flags.contains(ControlFlags::TOS));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ControlFlags(u32);

impl ControlFlags {
    /// No extras: payload only (the fastest path).
    pub const NONE: ControlFlags = ControlFlags(0);
    /// The IP header's TTL (`IP_RECVTTL`).
    pub const TTL: ControlFlags = ControlFlags(1 << 0);
    /// The IP header's TOS byte (`IP_RECVTOS`).
    pub const TOS: ControlFlags = ControlFlags(1 << 1);
    /// The packet's source address, in [`ControlMessage::src`] (from the
    /// message's name; no socket option).
    pub const SRC: ControlFlags = ControlFlags(1 << 2);
    /// The IP header's destination: the group for multicast (`IP_PKTINFO`).
    pub const DST: ControlFlags = ControlFlags(1 << 3);
    /// The index of the interface the packet arrived on (`IP_PKTINFO`).
    pub const INTERFACE: ControlFlags = ControlFlags(1 << 4);
    /// The local address the packet arrived on, the one the kernel would
    /// reply from, in [`ControlMessage::local`] (`IP_PKTINFO`'s `ipi_spec_dst`).
    pub const LOCAL: ControlFlags = ControlFlags(1 << 5);
    /// The kernel's receive timestamp, nanoseconds (`SO_TIMESTAMPNS`).
    ///
    /// Switching it on turns on the host's receive timestamps through
    /// deferred work: packets that arrive in the first moments may carry the
    /// time they were read instead of the time they arrived.
    pub const TIMESTAMP: ControlFlags = ControlFlags(1 << 6);
    /// The socket's cumulative drop counter (`SO_RXQ_OVFL`).
    pub const DROPS: ControlFlags = ControlFlags(1 << 7);
    /// The UDP GRO segment size of coalesced datagrams (`UDP_GRO`).
    pub const GRO: ControlFlags = ControlFlags(1 << 8);

    /// Software and hardware receive timestamps (`SO_TIMESTAMPING`): the
    /// software one in [`ControlMessage::timestamp`] (unless `TIMESTAMP`
    /// gave it), the device's in [`ControlMessage::hw_timestamp`] where the
    /// device stamps packets and its timestamping is switched on (for
    /// example with `hwstamp_ctl -i IF -r 1`). As with `TIMESTAMP`, the
    /// kernel switches stamping on through deferred work: the first packets
    /// after it is switched on may come without a software stamp.
    pub const TIMESTAMPING: ControlFlags = ControlFlags(1 << 9);

    /// Every flag.
    pub const ALL: ControlFlags = ControlFlags((1 << 10) - 1);

    /// The flags that need `IP_PKTINFO` switched on.
    pub(crate) const PKTINFO: ControlFlags =
        ControlFlags(Self::DST.0 | Self::INTERFACE.0 | Self::LOCAL.0);

    const NAMES: [(ControlFlags, &'static str); 10] = [
        (Self::TTL, "TTL"),
        (Self::TOS, "TOS"),
        (Self::SRC, "SRC"),
        (Self::DST, "DST"),
        (Self::INTERFACE, "INTERFACE"),
        (Self::LOCAL, "LOCAL"),
        (Self::TIMESTAMP, "TIMESTAMP"),
        (Self::DROPS, "DROPS"),
        (Self::GRO, "GRO"),
        (Self::TIMESTAMPING, "TIMESTAMPING"),
    ];

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: ControlFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set in `self`.
    pub const fn intersects(self, other: ControlFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// `self` with the flags of `other` added.
    pub const fn union(self, other: ControlFlags) -> ControlFlags {
        ControlFlags(self.0 | other.0)
    }

    /// `self` with the flags of `other` removed.
    pub const fn difference(self, other: ControlFlags) -> ControlFlags {
        ControlFlags(self.0 & !other.0)
    }

    /// Asks for nothing but the drop counter (or for nothing): the receive
    /// paths then take `drops` from what they read for the deltas and walk
    /// the control data no second time.
    pub(crate) const fn drops_only(self) -> bool {
        self.difference(ControlFlags::DROPS).is_empty()
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from raw bits; unknown bits are dropped.
    pub const fn from_bits_truncate(bits: u32) -> ControlFlags {
        ControlFlags(bits & Self::ALL.0)
    }

    /// The control-buffer bytes a packet needs to carry every message these
    /// flags ask for, computed from the kernel's `CMSG_SPACE` sizes.
    ///
    /// ```
    /// use ipv4_reactor::ControlFlags;
    /// assert_eq!(ControlFlags::NONE.control_len(), 0);
    /// assert!(ControlFlags::ALL.control_len() >= ControlFlags::TTL.control_len());
    /// ```
    pub const fn control_len(self) -> usize {
        let mut len = 0;
        if self.intersects(Self::PKTINFO) {
            len += sys::cmsg_space(sys::PKTINFO_LEN);
        }
        if self.contains(Self::TTL) {
            len += sys::cmsg_space(4);
        }
        if self.contains(Self::TOS) {
            len += sys::cmsg_space(1);
        }
        if self.contains(Self::TIMESTAMP) {
            len += sys::cmsg_space(sys::TIMESPEC_LEN);
        }
        if self.contains(Self::DROPS) {
            len += sys::cmsg_space(4);
        }
        if self.contains(Self::GRO) {
            len += sys::cmsg_space(4);
        }
        if self.contains(Self::TIMESTAMPING) {
            len += sys::cmsg_space(3 * sys::TIMESPEC_LEN);
        }
        len
    }
}

/// The largest control buffer any flag set needs.
pub(crate) const MAX_CONTROL_LEN: usize = ControlFlags::ALL.control_len();
// One receive's control buffer lives on the stack in `recv_from`.
const _: () = assert!(MAX_CONTROL_LEN <= 256);

impl BitOr for ControlFlags {
    type Output = ControlFlags;
    fn bitor(self, rhs: ControlFlags) -> ControlFlags {
        self.union(rhs)
    }
}

impl BitOrAssign for ControlFlags {
    fn bitor_assign(&mut self, rhs: ControlFlags) {
        *self = self.union(rhs);
    }
}

impl fmt::Debug for ControlFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("ControlFlags(NONE)");
        }
        f.write_str("ControlFlags(")?;
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// With the `serde` feature, the flags serialize in a human-readable format
/// (JSON, YAML, TOML) as the list of their names in bit order, as `Debug`
/// writes them (`["TTL", "DST"]`; `[]` for none), and in a compact format
/// (bincode, postcard) as [`bits`](Self::bits). A name or bit this version
/// does not know is an error when deserializing, never dropped silently.
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl serde::Serialize for ControlFlags {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        if !serializer.is_human_readable() {
            return serializer.serialize_u32(self.0);
        }
        let mut seq = serializer.serialize_seq(Some(self.0.count_ones() as usize))?;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                seq.serialize_element(name)?;
            }
        }
        seq.end()
    }
}

/// The forms [`Serialize`](serde::Serialize) writes: a list of flag names
/// in human-readable formats, the bits in compact ones.
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<'de> serde::Deserialize<'de> for ControlFlags {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ControlFlags;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of control flag names, or the flags' bits")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ControlFlags, A::Error> {
                const NAMES: [&str; 10] = {
                    let mut names = [""; 10];
                    let mut i = 0;
                    while i < names.len() {
                        names[i] = ControlFlags::NAMES[i].1;
                        i += 1;
                    }
                    names
                };
                let mut flags = ControlFlags::NONE;
                while let Some(name) = seq.next_element::<String>()? {
                    let (flag, _) = ControlFlags::NAMES
                        .into_iter()
                        .find(|(_, n)| *n == name)
                        .ok_or_else(|| serde::de::Error::unknown_variant(&name, &NAMES))?;
                    flags |= flag;
                }
                Ok(flags)
            }

            fn visit_u64<E: serde::de::Error>(self, bits: u64) -> Result<ControlFlags, E> {
                u32::try_from(bits)
                    .ok()
                    .filter(|&b| b & !ControlFlags::ALL.0 == 0)
                    .map(ControlFlags)
                    .ok_or_else(|| {
                        E::invalid_value(
                            serde::de::Unexpected::Unsigned(bits),
                            &"bits of known control flags",
                        )
                    })
            }
        }

        if deserializer.is_human_readable() {
            deserializer.deserialize_seq(Visitor)
        } else {
            deserializer.deserialize_u32(Visitor)
        }
    }
}

/// What came with one packet, or what to attach to one that is sent.
///
/// On receive each field is `Some` only when its [`ControlFlags`] flag was on
/// and the kernel delivered it. On send, `local` picks the source address and
/// `ifindex` the outgoing interface (`IP_PKTINFO`), `ttl` and `tos` set the
/// packet's header fields; the other fields are ignored (`dst` picks the
/// route of a [`RawConn`](crate::RawConn) write).
///
/// Each field means the same on both sides, so a message received and sent
/// back asks for what the request had: a reply from the local address it
/// arrived on (`local`), through its interface (`ifindex`). `src`, where a
/// packet came from, is never sent.
///
/// ```
/// use std::net::Ipv4Addr;
/// use ipv4_reactor::ControlMessage;
/// let mut cm = ControlMessage::default();
/// cm.ttl = Some(64);
/// cm.dst = Some(Ipv4Addr::new(239, 1, 2, 3));
/// cm.ifindex = Some(1);
/// assert_eq!(cm.to_string(), "ttl=64 src=- dst=239.1.2.3 ifindex=1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct ControlMessage {
    /// TTL of the IP header (`ControlFlags::TTL`); on send, the TTL to use.
    pub ttl: Option<u8>,
    /// TOS byte of the IP header (`ControlFlags::TOS`); on send, the TOS to use.
    pub tos: Option<u8>,
    /// Where the packet came from: the sender's address (`ControlFlags::SRC`,
    /// from the message's name; the port is in the receive's source).
    /// Receive only: ignored on send (the address to send from is `local`).
    pub src: Option<Ipv4Addr>,
    /// The IP header's destination: the group, for multicast (`ControlFlags::DST`).
    pub dst: Option<Ipv4Addr>,
    /// The arrival interface (`ControlFlags::INTERFACE`); on send, the
    /// interface to send through.
    pub ifindex: Option<u32>,
    /// The local address. On receive, the address the packet arrived on,
    /// the one the kernel would answer from (`ControlFlags::LOCAL`,
    /// `IP_PKTINFO`'s `ipi_spec_dst`); for a multicast packet, an address of
    /// the arrival interface (the group is in `dst`). On send, the source
    /// address to send from (`ipi_spec_dst`; the kernel checks that it is
    /// local).
    pub local: Option<Ipv4Addr>,
    /// The kernel's receive timestamp (`ControlFlags::TIMESTAMP`).
    pub timestamp: Option<SystemTime>,
    /// The socket's cumulative drop count (`ControlFlags::DROPS`). The kernel
    /// attaches it only once something was dropped, so `None` here means 0
    /// while the flag is on. It wraps at `u32::MAX`.
    pub drops: Option<u32>,
    /// Segment size of a GRO-coalesced buffer (`ControlFlags::GRO`); only
    /// present when several datagrams were coalesced.
    pub gro_segment: Option<u16>,
    /// The device's receive timestamp (`ControlFlags::TIMESTAMPING`), in
    /// the device clock's time; present only where the device stamps.
    pub hw_timestamp: Option<SystemTime>,
}

impl ControlMessage {
    /// A message that sends from local address `local`, through interface
    /// `ifindex` if given (`IP_PKTINFO`): replying from the address a
    /// request arrived on is `send_from(request_cm.local.unwrap(), None)`
    /// ([`ControlFlags::LOCAL`]).
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    /// use ipv4_reactor::ControlMessage;
    /// let cm = ControlMessage::send_from(Ipv4Addr::new(127, 0, 0, 5), Some(1));
    /// assert_eq!((cm.local, cm.ifindex, cm.src), (Some(Ipv4Addr::new(127, 0, 0, 5)), Some(1), None));
    /// ```
    pub fn send_from(local: Ipv4Addr, ifindex: Option<u32>) -> ControlMessage {
        ControlMessage {
            local: Some(local),
            ifindex,
            ..ControlMessage::default()
        }
    }

    /// An empty message, to fill with the `with_*` methods (the struct is
    /// `#[non_exhaustive]`, so other crates cannot write it as a literal).
    ///
    /// ```
    /// use ipv4_reactor::ControlMessage;
    /// let cm = ControlMessage::new().with_ttl(9).with_tos(0x28).with_ifindex(1);
    /// assert_eq!((cm.ttl, cm.tos, cm.ifindex), (Some(9), Some(0x28), Some(1)));
    /// ```
    pub fn new() -> ControlMessage {
        ControlMessage::default()
    }

    /// With `ttl` set (on send: the packet's TTL).
    pub fn with_ttl(mut self, ttl: u8) -> ControlMessage {
        self.ttl = Some(ttl);
        self
    }

    /// With `tos` set (on send: the packet's TOS byte).
    pub fn with_tos(mut self, tos: u8) -> ControlMessage {
        self.tos = Some(tos);
        self
    }

    /// With `local` set (on send: the source address, via `IP_PKTINFO`).
    pub fn with_local(mut self, local: Ipv4Addr) -> ControlMessage {
        self.local = Some(local);
        self
    }

    /// With `dst` set (on a raw write: the address to route to).
    pub fn with_dst(mut self, dst: Ipv4Addr) -> ControlMessage {
        self.dst = Some(dst);
        self
    }

    /// With `ifindex` set (on send: the outgoing interface).
    pub fn with_ifindex(mut self, ifindex: u32) -> ControlMessage {
        self.ifindex = Some(ifindex);
        self
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == ControlMessage::default()
    }

    /// The timestamp as nanoseconds since the Unix epoch.
    pub fn timestamp_nanos(&self) -> Option<u64> {
        let d = self.timestamp?.duration_since(UNIX_EPOCH).ok()?;
        u64::try_from(d.as_nanos()).ok()
    }

    /// Decodes a control buffer as the kernel filled it, keeping only what
    /// `flags` asked for. Lengths are checked; unknown messages and messages
    /// too short for their type are skipped; no input can make it panic.
    ///
    /// ```
    /// use ipv4_reactor::{ControlFlags, ControlMessage};
    /// let cm = ControlMessage::decode(&[1, 2, 3], ControlFlags::ALL);
    /// assert!(cm.is_empty());
    /// ```
    #[inline(always)]
    pub fn decode(control: &[u8], flags: ControlFlags) -> ControlMessage {
        let mut cm = ControlMessage::default();
        cm.decode_into(control, flags);
        cm
    }

    /// Like [`decode`](Self::decode), writing into `self` (fields that are
    /// not found keep their value).
    #[inline(always)]
    pub fn decode_into(&mut self, control: &[u8], flags: ControlFlags) {
        sys::for_each_cmsg(control, |level, kind, data| {
            if level == libc::IPPROTO_IP {
                self.decode_ip(kind, data, flags);
            } else if level == libc::SOL_SOCKET {
                self.decode_socket(kind, data, flags);
            } else if level == libc::IPPROTO_UDP
                && kind == sys::UDP_GRO
                && flags.contains(ControlFlags::GRO)
                && data.len() >= 4
            {
                self.gro_segment = gro_segment_of(data);
            }
        });
    }

    #[inline]
    fn decode_ip(&mut self, kind: i32, data: &[u8], flags: ControlFlags) {
        match kind {
            libc::IP_PKTINFO => {
                if let Some((ifindex, spec_dst, addr)) = sys::parse_pktinfo(data) {
                    if flags.contains(ControlFlags::DST) {
                        self.dst = Some(addr);
                    }
                    if flags.contains(ControlFlags::INTERFACE) {
                        self.ifindex = Some(ifindex);
                    }
                    if flags.contains(ControlFlags::LOCAL) {
                        self.local = Some(spec_dst);
                    }
                }
            }
            libc::IP_TTL if flags.contains(ControlFlags::TTL) => {
                // Linux sends an int; a 1-byte value (BSD style) is accepted too.
                if let Some(v) = data.first_chunk::<4>() {
                    self.ttl = u8::try_from(i32::from_ne_bytes(*v)).ok();
                } else if let Some(&v) = data.first() {
                    self.ttl = Some(v);
                }
            }
            libc::IP_TOS if flags.contains(ControlFlags::TOS) => {
                if let Some(&tos) = data.first() {
                    self.tos = Some(tos);
                }
            }
            _ => {}
        }
    }

    #[inline]
    fn decode_socket(&mut self, kind: i32, data: &[u8], flags: ControlFlags) {
        match kind {
            sys::SO_TIMESTAMPNS if flags.contains(ControlFlags::TIMESTAMP) => {
                if let Some(ts) = timespec_time(data) {
                    self.timestamp = Some(ts);
                }
            }
            sys::SO_RXQ_OVFL if flags.contains(ControlFlags::DROPS) => {
                if let Some(v) = data.first_chunk::<4>() {
                    self.drops = Some(u32::from_ne_bytes(*v));
                }
            }
            sys::SO_TIMESTAMPING if flags.contains(ControlFlags::TIMESTAMPING) => {
                let t = sys::TIMESPEC_LEN;
                let software = data.get(..t).and_then(timespec_time);
                if self.timestamp.is_none() || !flags.contains(ControlFlags::TIMESTAMP) {
                    self.timestamp = software.or(self.timestamp);
                }
                self.hw_timestamp = data.get(2 * t..3 * t).and_then(timespec_time);
            }
            _ => {}
        }
    }

    /// The number of control bytes the encoder writes for this
    /// message when it is sent.
    pub fn encoded_len(&self) -> usize {
        let mut len = 0;
        if self.local.is_some() || self.ifindex.is_some() {
            len += sys::cmsg::PKTINFO_SPACE;
        }
        if self.ttl.is_some() {
            len += sys::cmsg::INT_SPACE;
        }
        if self.tos.is_some() {
            len += sys::cmsg::INT_SPACE;
        }
        len
    }

    /// Writes the send-side control messages (`IP_PKTINFO` for `local` and
    /// `ifindex`, `IP_TTL`, `IP_TOS`) with `encoder`. An error when they do
    /// not fit (which the send buffer's size rules out; see below).
    pub(crate) fn encode(&self, encoder: &mut sys::cmsg::Encoder<'_>) -> std::io::Result<()> {
        if self.local.is_some() || self.ifindex.is_some() {
            encoder.ip_pktinfo(
                self.ifindex.unwrap_or(0),
                self.local.unwrap_or(Ipv4Addr::UNSPECIFIED),
            )?;
        }
        if let Some(ttl) = self.ttl {
            encoder.ip_ttl(ttl)?;
        }
        if let Some(tos) = self.tos {
            encoder.ip_tos(tos)?;
        }
        Ok(())
    }
}

/// The most control bytes a `ControlMessage` encodes to (every send-side
/// field set), which every send buffer holds.
const MAX_ENCODED_LEN: usize = sys::cmsg::PKTINFO_SPACE + 2 * sys::cmsg::INT_SPACE;
const _: () = assert!(MAX_ENCODED_LEN <= sys::cmsg::SEND_CONTROL_LEN);

/// A `struct timespec` as a time; `None` for zero (no stamp) or garbage.
fn timespec_time(data: &[u8]) -> Option<SystemTime> {
    let (sec, nsec) = sys::parse_timespec(data)?;
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) || (sec == 0 && nsec == 0) {
        return None;
    }
    Some(UNIX_EPOCH + Duration::new(sec as u64, nsec as u32))
}

/// The `SO_RXQ_OVFL` counter in a control buffer, if present (it comes
/// first: the kernel puts socket-level messages before IP-level ones).
#[inline]
pub(crate) fn find_drops(control: &[u8]) -> Option<u32> {
    let mut drops = None;
    sys::for_each_cmsg(control, |level, kind, data| {
        if level == libc::SOL_SOCKET && kind == sys::SO_RXQ_OVFL {
            if let Some(v) = data.first_chunk::<4>() {
                drops.get_or_insert(u32::from_ne_bytes(*v));
            }
        }
    });
    drops
}

/// The segment size in a `UDP_GRO` message's data (an `int`), if it is one
/// a `u16` holds and not 0.
#[inline]
fn gro_segment_of(data: &[u8]) -> Option<u16> {
    let v = data.first_chunk::<4>()?;
    u16::try_from(i32::from_ne_bytes(*v))
        .ok()
        .filter(|&s| s > 0)
}

/// The `UDP_GRO` segment size in a control buffer, if present.
#[inline]
pub(crate) fn find_gro(control: &[u8]) -> Option<u16> {
    let mut seg = None;
    sys::for_each_cmsg(control, |level, kind, data| {
        if level == libc::IPPROTO_UDP && kind == sys::UDP_GRO && seg.is_none() {
            seg = gro_segment_of(data);
        }
    });
    seg
}

impl fmt::Display for ControlMessage {
    /// `ttl=.. src=.. dst=.. ifindex=..` (as Go prints it, `-` for absent),
    /// then the extras that are present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn opt<T: fmt::Display>(v: &Option<T>) -> String {
            v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
        }
        write!(
            f,
            "ttl={} src={} dst={} ifindex={}",
            opt(&self.ttl),
            opt(&self.src),
            opt(&self.dst),
            opt(&self.ifindex)
        )?;
        if let Some(tos) = self.tos {
            write!(f, " tos={tos:#04x}")?;
        }
        if let Some(local) = self.local {
            write!(f, " local={local}")?;
        }
        if let Some(ns) = self.timestamp_nanos() {
            write!(f, " ts={}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)?;
        }
        if let Some(drops) = self.drops {
            write!(f, " drops={drops}")?;
        }
        if let Some(seg) = self.gro_segment {
            write!(f, " gro_segment={seg}")?;
        }
        if let Some(d) = self
            .hw_timestamp
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        {
            write!(f, " hw_ts={}.{:09}", d.as_secs(), d.subsec_nanos())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::cmsg::{Encoder, SendControl};

    /// `cm` encoded as a sender's control buffer.
    fn encoded(cm: &ControlMessage) -> SendControl {
        let mut buf = SendControl::new();
        let mut enc = Encoder::new(&mut buf);
        cm.encode(&mut enc).unwrap();
        assert_eq!(enc.len(), cm.encoded_len());
        buf
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let cm = ControlMessage {
            ttl: Some(7),
            tos: Some(0x28),
            local: Some(Ipv4Addr::new(127, 0, 0, 2)),
            ifindex: Some(1),
            ..ControlMessage::default()
        };
        assert_eq!(cm.encoded_len(), MAX_ENCODED_LEN);
        let buf = encoded(&cm);
        let back = ControlMessage::decode(&buf.0[..cm.encoded_len()], ControlFlags::ALL);
        assert_eq!(back.ttl, Some(7));
        assert_eq!(back.tos, Some(0x28));
        assert_eq!(back.ifindex, Some(1));
        // `local` travels as ipi_spec_dst both ways: it keeps its meaning.
        assert_eq!(back.local, Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(back.dst, Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(back.src, None);
    }

    #[test]
    fn src_is_where_a_packet_came_from_and_is_never_sent() {
        let cm = ControlMessage::new().with_ttl(3);
        let with_src = ControlMessage {
            src: Some(Ipv4Addr::new(127, 0, 0, 9)),
            ..cm
        };
        assert_eq!(with_src.encoded_len(), cm.encoded_len());
        assert_eq!(
            encoded(&with_src).0[..cm.encoded_len()],
            encoded(&cm).0[..cm.encoded_len()]
        );
        let only_src = ControlMessage {
            src: Some(Ipv4Addr::new(127, 0, 0, 9)),
            ..ControlMessage::default()
        };
        assert_eq!(only_src.encoded_len(), 0, "no IP_PKTINFO for src");
    }

    #[test]
    fn decode_keeps_only_requested_fields() {
        let cm = ControlMessage {
            ttl: Some(9),
            ifindex: Some(3),
            ..ControlMessage::default()
        };
        let buf = encoded(&cm);
        let back = ControlMessage::decode(&buf.0[..cm.encoded_len()], ControlFlags::INTERFACE);
        assert_eq!(back.ttl, None);
        assert_eq!(back.ifindex, Some(3));
        assert_eq!(back.dst, None);
    }

    #[test]
    fn decode_rejects_bad_lengths_without_panicking() {
        let mut buf = sys::CmsgBuf::<64>::new();
        Encoder::new(&mut buf).ip_ttl(64).unwrap();
        let buf = &mut buf.0;
        // cmsg_len beyond the buffer
        buf[..8].copy_from_slice(&1000usize.to_ne_bytes());
        assert!(ControlMessage::decode(buf, ControlFlags::ALL).is_empty());
        // cmsg_len shorter than the header
        buf[..8].copy_from_slice(&3usize.to_ne_bytes());
        assert!(ControlMessage::decode(buf, ControlFlags::ALL).is_empty());
        // a TTL message with no data
        buf[..8].copy_from_slice(&sys::cmsg_len(0).to_ne_bytes());
        assert!(ControlMessage::decode(&buf[..16], ControlFlags::ALL).is_empty());
    }

    #[test]
    fn unknown_messages_are_skipped() {
        let mut buf = sys::CmsgBuf::<64>::new();
        let mut enc = Encoder::new(&mut buf);
        enc.push(999, 42, &[1, 2, 3, 4, 5]).unwrap();
        enc.push(libc::IPPROTO_IP, libc::IP_TOS, &[0x2e]).unwrap();
        let cm = ControlMessage::decode(enc.as_bytes(), ControlFlags::ALL);
        assert_eq!(cm.tos, Some(0x2e));
    }

    #[test]
    fn flags_debug_and_sizes() {
        let f = ControlFlags::TTL | ControlFlags::DST;
        assert_eq!(format!("{f:?}"), "ControlFlags(TTL | DST)");
        assert_eq!(
            ControlFlags::DST.control_len(),
            (ControlFlags::DST | ControlFlags::INTERFACE).control_len()
        );
        if cfg!(target_pointer_width = "64") {
            assert_eq!(ControlFlags::DST.control_len(), 32);
            assert_eq!((ControlFlags::TTL | ControlFlags::TOS).control_len(), 48);
            assert_eq!(ControlFlags::TIMESTAMP.control_len(), 32);
        }
    }
}
