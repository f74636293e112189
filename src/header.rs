//! The IPv4 header (RFC 791), in two layers, after smoltcp's `wire` module.
//!
//! - [`HeaderView`] is a view over the bytes of a header. Once
//!   [`HeaderView::new_checked`] has accepted a buffer, no accessor can panic.
//!   Setters write fields in place, and [`HeaderView::fill_checksum`] computes
//!   the checksum. The setters that could undo the check
//!   ([`HeaderView::set_version`], [`HeaderView::set_ihl`],
//!   [`HeaderView::set_header_len`]) check their value and return an error
//!   instead, so the view stays checked whatever is written through it.
//! - [`Header`] is an owned header. [`Header::parse`] checks a buffer and
//!   reads it into a `Header`. [`Header::emit`] writes a `Header` out, with
//!   padded options and a correct checksum.
//!
//! [`checksum`] is the RFC 1071 internet checksum. The [`icmp`](crate::icmp)
//! module uses it too.
//!
//! # Linux raw sockets
//!
//! - A header read from a Linux raw socket is as it was on the wire: every
//!   field is in network byte order, and the total length counts the header
//!   too. (Old BSDs give the total length in host byte order, without the
//!   header.)
//! - A Linux raw socket gives exactly `total_len` bytes per datagram.
//!   [`Header::parse`] still accepts a buffer longer than the total length.
//!   The extra bytes count as trailing padding ([`ParseInfo::trailing_len`]),
//!   not as payload.
//! - When a packet is sent with `IP_HDRINCL`, the kernel always fills in the
//!   checksum and the total length. It also fills in the identification and
//!   the source address when they are zero (see `raw(7)`). [`Header::emit`]
//!   still writes a correct checksum, so the bytes are valid on their own.
//! - A wrong checksum is reported ([`ParseInfo::checksum_ok`],
//!   [`HeaderView::verify_checksum`]), never hidden, and never a reason to
//!   reject a header. The caller decides what to do about it.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::ops::{BitOr, BitOrAssign, Range};

/// The length of an IPv4 header without options, in bytes (IHL 5).
pub const MIN_HEADER_LEN: usize = 20;
/// The largest IPv4 header length, in bytes (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;
/// The most option bytes an IPv4 header can hold.
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - MIN_HEADER_LEN;
/// The largest fragment offset, in 8-byte units (13 bits).
pub const MAX_FRAG_OFFSET: u16 = 0x1fff;

/// Byte positions of the header fields.
mod field {
    use std::ops::Range;

    /// Version (high 4 bits) and IHL (low 4 bits).
    pub const VER_IHL: usize = 0;
    /// Type of service: DSCP (high 6 bits) and ECN (low 2 bits).
    pub const TOS: usize = 1;
    /// Total length of the datagram, header included.
    pub const LENGTH: Range<usize> = 2..4;
    /// Identification.
    pub const IDENT: Range<usize> = 4..6;
    /// Flags (high 3 bits) and fragment offset (low 13 bits).
    pub const FLG_OFF: Range<usize> = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol of the payload.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source address.
    pub const SRC_ADDR: Range<usize> = 12..16;
    /// Destination address.
    pub const DST_ADDR: Range<usize> = 16..20;
    /// Start of the options.
    pub const OPTIONS: usize = 20;
}

/// Computes the RFC 1071 internet checksum of `data`.
///
/// The checksum is the ones' complement of the ones' complement sum of the
/// big-endian 16-bit words of `data`. If `data` has an odd length, the last
/// byte is padded with a zero. If the data already holds its own correct
/// checksum (an IPv4 header, an ICMP message), the result is 0.
///
/// ```
/// use ipv4_reactor::header::checksum;
///
/// let mut hdr = [
///     0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00,
///     0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
/// ];
/// assert_eq!(checksum(&hdr), 0xb861);
/// hdr[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
/// assert_eq!(checksum(&hdr), 0);
/// ```
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Rounds an option length up to a multiple of 4.
fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why an IPv4 header could not be parsed or emitted.
///
/// It converts into an [`io::Error`]. Errors about bad bytes, and
/// `BadVersion`, get [`io::ErrorKind::InvalidData`]. The errors that only
/// [`Header::emit`], [`Header::set_payload_len`] and the [`HeaderView`]
/// length setters return (a bad [`Header`], a short output buffer, a bad
/// header length) get [`io::ErrorKind::InvalidInput`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// The buffer is shorter than the 20-byte fixed header.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes in the buffer.
        got: usize,
    },
    /// The version field is not 4.
    BadVersion(u8),
    /// The IHL field is less than 5 (a header of less than 20 bytes).
    BadIhl(u8),
    /// The header length that the IHL gives goes past the end of the buffer.
    IhlBeyondBuffer {
        /// Header length from the IHL field, in bytes.
        header_len: usize,
        /// Bytes in the buffer.
        buffer_len: usize,
    },
    /// The total length field is smaller than the header length.
    TotalLenTooShort {
        /// The total length field.
        total_len: usize,
        /// The header length from the IHL field, in bytes.
        header_len: usize,
    },
    /// The total length field goes past the end of the buffer.
    TotalLenBeyondBuffer {
        /// The total length field.
        total_len: usize,
        /// Bytes in the buffer.
        buffer_len: usize,
    },
    /// The options are longer than the 40 bytes a header can hold (emit).
    OptionsTooLong(usize),
    /// The output buffer is too small for the header (emit).
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes in the buffer.
        got: usize,
    },
    /// The fragment offset does not fit in 13 bits (emit).
    FragOffsetTooLarge(u16),
    /// Header and payload together exceed the largest total length, 65535
    /// bytes ([`Header::set_payload_len`]).
    PayloadTooLong {
        /// Payload length asked for.
        payload_len: usize,
        /// Header length, in bytes.
        header_len: usize,
    },
    /// A header length that [`HeaderView::set_ihl`] or
    /// [`HeaderView::set_header_len`] refused: not a multiple of 4 from 20 to
    /// 60 (IHL 5 to 15), or past the end of the view's buffer.
    BadHeaderLen {
        /// The header length asked for, in bytes (IHL × 4 for `set_ihl`).
        header_len: usize,
        /// Bytes in the view's buffer.
        buffer_len: usize,
    },
}

impl HeaderError {
    /// The [`io::ErrorKind`] this error gets when it becomes an [`io::Error`].
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            HeaderError::OptionsTooLong(_)
            | HeaderError::BufferTooSmall { .. }
            | HeaderError::FragOffsetTooLarge(_)
            | HeaderError::PayloadTooLong { .. }
            | HeaderError::BadHeaderLen { .. } => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Truncated { needed, got } => write!(
                f,
                "IPv4 header truncated: {got} bytes, at least {needed} needed"
            ),
            HeaderError::BadVersion(v) => write!(f, "IP version {v} is not 4"),
            HeaderError::BadIhl(ihl) => write!(
                f,
                "IPv4 header length field (IHL) {ihl} is below the minimum of 5 (20 bytes)"
            ),
            HeaderError::IhlBeyondBuffer {
                header_len,
                buffer_len,
            } => write!(
                f,
                "IPv4 header length {header_len} bytes (IHL {}) goes past the end of the \
                 {buffer_len}-byte buffer",
                header_len / 4
            ),
            HeaderError::TotalLenTooShort {
                total_len,
                header_len,
            } => write!(
                f,
                "IPv4 total length {total_len} is shorter than the {header_len}-byte header"
            ),
            HeaderError::TotalLenBeyondBuffer {
                total_len,
                buffer_len,
            } => write!(
                f,
                "IPv4 total length {total_len} goes past the end of the {buffer_len}-byte buffer"
            ),
            HeaderError::OptionsTooLong(len) => write!(
                f,
                "IPv4 options of {len} bytes are longer than the maximum of {MAX_OPTIONS_LEN}"
            ),
            HeaderError::BufferTooSmall { needed, got } => write!(
                f,
                "buffer of {got} bytes is too small for the {needed}-byte IPv4 header"
            ),
            HeaderError::FragOffsetTooLarge(off) => write!(
                f,
                "IPv4 fragment offset {off} does not fit in 13 bits (at most {MAX_FRAG_OFFSET})"
            ),
            HeaderError::PayloadTooLong {
                payload_len,
                header_len,
            } => write!(
                f,
                "payload of {payload_len} bytes after a {header_len}-byte header exceeds the \
                 IPv4 maximum total length of 65535"
            ),
            HeaderError::BadHeaderLen {
                header_len,
                buffer_len,
            } => {
                write!(f, "cannot set the IPv4 header length to {header_len} bytes")?;
                if header_len.is_multiple_of(4) {
                    write!(f, " (IHL {})", header_len / 4)?;
                }
                write!(f, " in a {buffer_len}-byte buffer: ")?;
                if !header_len.is_multiple_of(4)
                    || !(MIN_HEADER_LEN..=MAX_HEADER_LEN).contains(header_len)
                {
                    write!(
                        f,
                        "it must be a multiple of 4 from {MIN_HEADER_LEN} to {MAX_HEADER_LEN}"
                    )
                } else {
                    f.write_str("it would go past the end of the buffer")
                }
            }
        }
    }
}

impl std::error::Error for HeaderError {}

impl From<HeaderError> for io::Error {
    fn from(err: HeaderError) -> io::Error {
        io::Error::new(err.io_kind(), err)
    }
}

// ---------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------

/// The three flag bits of an IPv4 header, numbered as in Go's
/// `ipv4.HeaderFlags`: `0x1` is MF, `0x2` is DF, `0x4` is the reserved bit.
///
/// ```
/// use ipv4_reactor::header::Flags;
///
/// let f = Flags::DONT_FRAGMENT | Flags::MORE_FRAGMENTS;
/// assert!(f.dont_fragment() && f.more_fragments());
/// assert_eq!(f.bits(), 0x3);
/// assert_eq!(Flags::from_bits_truncate(0xff).bits(), 0x7);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// No flag set.
    pub const EMPTY: Flags = Flags(0);
    /// More fragments follow (MF).
    pub const MORE_FRAGMENTS: Flags = Flags(0b001);
    /// Don't fragment (DF).
    pub const DONT_FRAGMENT: Flags = Flags(0b010);
    /// The reserved bit, which must be zero (RFC 791; the "evil bit" of RFC 3514).
    pub const RESERVED: Flags = Flags(0b100);

    /// Flags from the low 3 bits of `bits`. Higher bits are ignored.
    pub const fn from_bits_truncate(bits: u8) -> Flags {
        Flags(bits & 0b111)
    }

    /// The flags as the low 3 bits of a byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag in `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the flags in `other`.
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    /// Clears the flags in `other`.
    pub fn remove(&mut self, other: Flags) {
        self.0 &= !other.0;
    }

    /// Sets or clears the flags in `other`.
    pub fn set(&mut self, other: Flags, on: bool) {
        if on {
            self.insert(other);
        } else {
            self.remove(other);
        }
    }

    /// Whether DF (don't fragment) is set.
    pub const fn dont_fragment(self) -> bool {
        self.contains(Flags::DONT_FRAGMENT)
    }

    /// Whether MF (more fragments) is set.
    pub const fn more_fragments(self) -> bool {
        self.contains(Flags::MORE_FRAGMENTS)
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Flags::RESERVED, "RESERVED"),
            (Flags::DONT_FRAGMENT, "DF"),
            (Flags::MORE_FRAGMENTS, "MF"),
        ];
        f.write_str("Flags(")?;
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("empty")?;
        }
        f.write_str(")")
    }
}

impl fmt::LowerHex for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

// ---------------------------------------------------------------------------
// Protocol
// ---------------------------------------------------------------------------

macro_rules! protocols {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal, $name:literal; )*) => {
        /// The protocol field of an IPv4 header: an IANA "Assigned Internet
        /// Protocol Number".
        ///
        /// Numbers without a variant are kept in [`Protocol::Unknown`].
        /// Comparison and hashing go by number, so `Protocol::Unknown(17)`
        /// equals `Protocol::Udp`. [`From<u8>`] never makes such a value.
        ///
        /// ```
        /// use ipv4_reactor::header::Protocol;
        ///
        /// assert_eq!(Protocol::from(17), Protocol::Udp);
        /// assert_eq!(u8::from(Protocol::Udp), 17);
        /// assert_eq!(Protocol::Udp.to_string(), "UDP (17)");
        /// assert_eq!(Protocol::from(200).to_string(), "unknown (200)");
        /// ```
        #[derive(Debug, Clone, Copy)]
        #[non_exhaustive]
        pub enum Protocol {
            $( $(#[$doc])* $variant, )*
            /// A protocol number without a variant here.
            Unknown(u8),
        }

        impl Protocol {
            /// The protocol number.
            pub const fn number(self) -> u8 {
                match self {
                    $( Protocol::$variant => $num, )*
                    Protocol::Unknown(n) => n,
                }
            }

            /// The protocol for a number.
            pub const fn from_number(n: u8) -> Protocol {
                match n {
                    $( $num => Protocol::$variant, )*
                    n => Protocol::Unknown(n),
                }
            }

            /// The IANA keyword for the protocol (`"UDP"`), if the number has
            /// a variant here.
            pub const fn name(self) -> Option<&'static str> {
                match Protocol::from_number(self.number()) {
                    $( Protocol::$variant => Some($name), )*
                    Protocol::Unknown(_) => None,
                }
            }
        }
    };
}

protocols! {
    /// Internet Control Message Protocol.
    Icmp = 1, "ICMP";
    /// Internet Group Management Protocol.
    Igmp = 2, "IGMP";
    /// IPv4 encapsulated in IPv4 (IP-in-IP).
    IpIp = 4, "IPv4";
    /// Transmission Control Protocol.
    Tcp = 6, "TCP";
    /// Exterior Gateway Protocol.
    Egp = 8, "EGP";
    /// User Datagram Protocol.
    Udp = 17, "UDP";
    /// Datagram Congestion Control Protocol.
    Dccp = 33, "DCCP";
    /// IPv6 encapsulated in IPv4.
    Ipv6 = 41, "IPv6";
    /// Resource Reservation Protocol.
    Rsvp = 46, "RSVP";
    /// Generic Routing Encapsulation.
    Gre = 47, "GRE";
    /// Encapsulating Security Payload.
    Esp = 50, "ESP";
    /// Authentication Header.
    Ah = 51, "AH";
    /// ICMP for IPv6.
    Icmpv6 = 58, "IPv6-ICMP";
    /// Open Shortest Path First.
    Ospf = 89, "OSPF";
    /// Protocol Independent Multicast.
    Pim = 103, "PIM";
    /// Virtual Router Redundancy Protocol.
    Vrrp = 112, "VRRP";
    /// Layer Two Tunneling Protocol version 3.
    L2tp = 115, "L2TP";
    /// Stream Control Transmission Protocol.
    Sctp = 132, "SCTP";
    /// Lightweight User Datagram Protocol.
    UdpLite = 136, "UDPLite";
    /// MPLS encapsulated in IP.
    MplsInIp = 137, "MPLS-in-IP";
    /// 255: reserved by IANA. On Linux `IPPROTO_RAW`, a raw socket that can
    /// send any protocol and implies `IP_HDRINCL`.
    Raw = 255, "raw";
}

impl PartialEq for Protocol {
    fn eq(&self, other: &Protocol) -> bool {
        self.number() == other.number()
    }
}

impl Eq for Protocol {}

impl std::hash::Hash for Protocol {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.number().hash(state);
    }
}

impl From<u8> for Protocol {
    fn from(n: u8) -> Protocol {
        Protocol::from_number(n)
    }
}

impl From<Protocol> for u8 {
    fn from(p: Protocol) -> u8 {
        p.number()
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.number()),
            None => write!(f, "unknown ({})", self.number()),
        }
    }
}

// ---------------------------------------------------------------------------
// HeaderView
// ---------------------------------------------------------------------------

/// A view over the bytes of an IPv4 header, read and written in place.
///
/// [`HeaderView::new_checked`] checks that the buffer holds a whole IPv4
/// header: at least 20 bytes, version 4, IHL of at least 5, and IHL × 4 bytes
/// within the buffer (see [`HeaderView::check`]). After that no accessor or
/// setter can panic.
///
/// The setters cannot undo the check either. The bytes it looks at are the
/// version and the IHL. [`HeaderView::set_version`] only writes 4, and
/// [`HeaderView::set_ihl`] and [`HeaderView::set_header_len`] only write a
/// header length from 20 to 60 bytes that fits in the buffer. Anything else
/// is an error, and the buffer is left as it was. Every other setter writes
/// bytes the check does not look at, and so does
/// [`HeaderView::options_mut`]. So a view that passed the check keeps
/// passing it.
///
/// The total length is not checked, and the checksum is not enforced. Use
/// [`HeaderView::verify_checksum`], or [`Header::parse`] for the full checks.
/// [`HeaderView::payload`] stops at the end of the buffer whatever the total
/// length says, so [`HeaderView::set_total_len`] takes any value.
///
/// # Unchecked views
///
/// [`HeaderView::new_unchecked`] promises nothing about the buffer. It is for
/// writing a header into a fresh buffer, or for bytes already checked. On
/// such a view:
///
/// - the fixed-field accessors and setters panic if the buffer is shorter
///   than the byte they touch (all are in the first 20 bytes);
/// - [`HeaderView::options`], [`HeaderView::options_mut`],
///   [`HeaderView::payload`], [`HeaderView::verify_checksum`] and
///   [`HeaderView::fill_checksum`] use the IHL as it is. They panic if the
///   IHL × 4 header bytes go past the end of the buffer, and the option
///   accessors also panic if the IHL is below 5;
/// - [`HeaderView::set_ihl`] and [`HeaderView::set_header_len`] never panic:
///   they check their value against the buffer first.
///
/// Once [`HeaderView::check`] returns `Ok` for a view, however it was made,
/// the view is as good as one from `new_checked`, and stays so. The check
/// trusts the buffer type: `as_ref` and `as_mut` must give the same bytes
/// each time, as they do for slices, arrays and `Vec`.
///
/// ```
/// use ipv4_reactor::header::{HeaderView, Protocol};
/// use std::net::Ipv4Addr;
///
/// let bytes = [
///     0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61,
///     0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
/// ];
/// let view = HeaderView::new_checked(&bytes[..]).unwrap();
/// assert_eq!(view.protocol(), Protocol::Udp);
/// assert_eq!(view.dst(), Ipv4Addr::new(192, 168, 0, 199));
/// assert!(view.flags().dont_fragment());
/// assert!(view.verify_checksum());
///
/// let mut owned = bytes;
/// let mut view = HeaderView::new_checked(&mut owned[..]).unwrap();
/// view.set_ttl(1);
/// assert!(!view.verify_checksum());
/// view.fill_checksum();
/// assert!(view.verify_checksum());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HeaderView<T> {
    /// Wraps a buffer without checking it. See
    /// [unchecked views](HeaderView#unchecked-views) for when accessors
    /// panic, and [`HeaderView::check`] to check the buffer later.
    pub const fn new_unchecked(buffer: T) -> HeaderView<T> {
        HeaderView { buffer }
    }

    /// Wraps a buffer after checking that it holds a whole IPv4 header (see
    /// [`HeaderView::check`]).
    pub fn new_checked(buffer: T) -> Result<HeaderView<T>, HeaderError> {
        let view = HeaderView::new_unchecked(buffer);
        view.check()?;
        Ok(view)
    }

    /// Checks that the buffer holds at least 20 bytes, that the version is 4,
    /// that the IHL is at least 5, and that the IHL × 4 header bytes are within
    /// the buffer. Once this holds, no setter of the view can make it fail.
    ///
    /// # Errors
    ///
    /// [`HeaderError::Truncated`], [`HeaderError::BadVersion`],
    /// [`HeaderError::BadIhl`] or [`HeaderError::IhlBeyondBuffer`].
    pub fn check(&self) -> Result<(), HeaderError> {
        let buf = self.buffer.as_ref();
        if buf.len() < MIN_HEADER_LEN {
            return Err(HeaderError::Truncated {
                needed: MIN_HEADER_LEN,
                got: buf.len(),
            });
        }
        let version = buf[field::VER_IHL] >> 4;
        if version != 4 {
            return Err(HeaderError::BadVersion(version));
        }
        let ihl = buf[field::VER_IHL] & 0x0f;
        if ihl < 5 {
            return Err(HeaderError::BadIhl(ihl));
        }
        let header_len = usize::from(ihl) * 4;
        if header_len > buf.len() {
            return Err(HeaderError::IhlBeyondBuffer {
                header_len,
                buffer_len: buf.len(),
            });
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole wrapped buffer, header and anything after it.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn read_u16(&self, range: Range<usize>) -> u16 {
        let buf = self.buffer.as_ref();
        u16::from_be_bytes([buf[range.start], buf[range.start + 1]])
    }

    fn read_addr(&self, range: Range<usize>) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[range];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The version field (4 for a checked view).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The IHL field: the header length in 32-bit words.
    pub fn ihl(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] & 0x0f
    }

    /// The header length in bytes (IHL × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl()) * 4
    }

    /// The type-of-service byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// The Differentiated Services Code Point (high 6 bits of the TOS byte).
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    /// The Explicit Congestion Notification bits (low 2 bits of the TOS byte).
    pub fn ecn(&self) -> u8 {
        self.tos() & 0b11
    }

    /// The total length field: header and payload, in bytes.
    pub fn total_len(&self) -> u16 {
        self.read_u16(field::LENGTH)
    }

    /// The identification field.
    pub fn id(&self) -> u16 {
        self.read_u16(field::IDENT)
    }

    /// The three flag bits.
    pub fn flags(&self) -> Flags {
        Flags::from_bits_truncate((self.read_u16(field::FLG_OFF) >> 13) as u8)
    }

    /// Whether DF (don't fragment) is set.
    pub fn dont_fragment(&self) -> bool {
        self.flags().dont_fragment()
    }

    /// Whether MF (more fragments) is set.
    pub fn more_fragments(&self) -> bool {
        self.flags().more_fragments()
    }

    /// The fragment offset, in 8-byte units (13 bits).
    pub fn frag_offset(&self) -> u16 {
        self.read_u16(field::FLG_OFF) & MAX_FRAG_OFFSET
    }

    /// The time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> Protocol {
        Protocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The checksum field, as it is in the buffer.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// The source address.
    pub fn src(&self) -> Ipv4Addr {
        self.read_addr(field::SRC_ADDR)
    }

    /// The destination address.
    pub fn dst(&self) -> Ipv4Addr {
        self.read_addr(field::DST_ADDR)
    }

    /// The option bytes: the header bytes after the first 20, padding included.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// The payload: the bytes after the header, up to the total length or the
    /// end of the buffer, whichever comes first. It is empty if the total
    /// length is less than the header length.
    pub fn payload(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        let start = self.header_len();
        let end = usize::from(self.total_len()).clamp(start, buf.len());
        &buf[start..end]
    }

    /// Whether the checksum field is right for the header bytes.
    pub fn verify_checksum(&self) -> bool {
        checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> HeaderView<T> {
    fn write_u16(&mut self, range: Range<usize>, value: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the version field to `version`, which must be 4.
    ///
    /// # Errors
    ///
    /// [`HeaderError::BadVersion`] if `version` is not 4. The buffer is left
    /// as it was.
    ///
    /// # Panics
    ///
    /// On an unchecked view with an empty buffer.
    pub fn set_version(&mut self, version: u8) -> Result<(), HeaderError> {
        if version != 4 {
            return Err(HeaderError::BadVersion(version));
        }
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
        Ok(())
    }

    /// Sets the IHL field: the header length in 32-bit words, from 5 to 15,
    /// and at most the buffer length / 4. The option bytes
    /// ([`HeaderView::options`]) follow it.
    ///
    /// # Errors
    ///
    /// [`HeaderError::BadHeaderLen`] (with `header_len` = `ihl` × 4) if `ihl`
    /// is outside 5 to 15 or the header would go past the end of the buffer.
    /// The buffer is left as it was. Never panics, even on an unchecked view.
    pub fn set_ihl(&mut self, ihl: u8) -> Result<(), HeaderError> {
        self.set_header_len(usize::from(ihl) * 4)
    }

    /// Sets the IHL field from a header length in bytes: a multiple of 4 from
    /// 20 to 60, and at most the buffer length.
    ///
    /// # Errors
    ///
    /// [`HeaderError::BadHeaderLen`] if `len` is not such a length. The
    /// buffer is left as it was. Never panics, even on an unchecked view.
    pub fn set_header_len(&mut self, len: usize) -> Result<(), HeaderError> {
        let buf = self.buffer.as_mut();
        if !len.is_multiple_of(4)
            || !(MIN_HEADER_LEN..=MAX_HEADER_LEN).contains(&len)
            || len > buf.len()
        {
            return Err(HeaderError::BadHeaderLen {
                header_len: len,
                buffer_len: buf.len(),
            });
        }
        let b = &mut buf[field::VER_IHL];
        *b = (*b & 0xf0) | (len / 4) as u8;
        Ok(())
    }

    /// Sets the type-of-service byte.
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    /// Sets the DSCP (low 6 bits of `dscp`), keeping the ECN bits.
    pub fn set_dscp(&mut self, dscp: u8) {
        let tos = (self.tos() & 0b11) | (dscp << 2);
        self.set_tos(tos);
    }

    /// Sets the ECN bits (low 2 bits of `ecn`), keeping the DSCP.
    pub fn set_ecn(&mut self, ecn: u8) {
        let tos = (self.tos() & !0b11) | (ecn & 0b11);
        self.set_tos(tos);
    }

    /// Sets the total length field. Any value is accepted: the view does not
    /// depend on it (see [`HeaderView::payload`]), and [`Header::parse`]
    /// reports a bad one.
    pub fn set_total_len(&mut self, len: u16) {
        self.write_u16(field::LENGTH, len);
    }

    /// Sets the identification field.
    pub fn set_id(&mut self, id: u16) {
        self.write_u16(field::IDENT, id);
    }

    /// Sets the three flag bits, keeping the fragment offset.
    pub fn set_flags(&mut self, flags: Flags) {
        let v = (self.read_u16(field::FLG_OFF) & MAX_FRAG_OFFSET) | (u16::from(flags.bits()) << 13);
        self.write_u16(field::FLG_OFF, v);
    }

    /// Sets the fragment offset in 8-byte units (low 13 bits of `offset`),
    /// keeping the flags.
    pub fn set_frag_offset(&mut self, offset: u16) {
        let v = (self.read_u16(field::FLG_OFF) & !MAX_FRAG_OFFSET) | (offset & MAX_FRAG_OFFSET);
        self.write_u16(field::FLG_OFF, v);
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.number();
    }

    /// Sets the checksum field to `value` as it is (see
    /// [`HeaderView::fill_checksum`]).
    pub fn set_checksum(&mut self, value: u16) {
        self.write_u16(field::CHECKSUM, value);
    }

    /// Sets the source address.
    pub fn set_src(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The option bytes, writable. The IHL field sets how many there are;
    /// change it with [`HeaderView::set_header_len`].
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS..end]
    }

    /// Computes the checksum over the IHL × 4 header bytes and writes it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(sum);
    }
}

// ---------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------

/// What [`Header::parse`] found out about the buffer besides the header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseInfo {
    /// Whether the checksum field is right for the header bytes. A wrong
    /// checksum does not make `parse` fail.
    pub checksum_ok: bool,
    /// The header length in bytes (IHL × 4), options included.
    pub header_len: usize,
    /// The payload length: the total length less the header length.
    pub payload_len: usize,
    /// Bytes in the buffer after the total length, taken as padding. A Linux
    /// raw socket gives exactly the datagram, so this is 0 there.
    pub trailing_len: usize,
}

impl ParseInfo {
    /// Where the payload is in the parsed buffer.
    pub fn payload_range(&self) -> Range<usize> {
        self.header_len..self.header_len + self.payload_len
    }
}

/// An owned IPv4 header.
///
/// Parse one from bytes with [`Header::parse`], or start one with
/// [`Header::new`] and set its public fields. Write it out with
/// [`Header::emit`] or [`Header::to_bytes`].
///
/// ```
/// use ipv4_reactor::header::{checksum, Flags, Header, Protocol};
/// use std::net::Ipv4Addr;
///
/// // Build a header for 28 bytes of UDP, with one 3-byte option.
/// let mut hdr = Header::new(
///     Ipv4Addr::new(192, 0, 2, 1),
///     Ipv4Addr::new(239, 1, 2, 3),
///     Protocol::Udp,
/// );
/// hdr.ttl = 16;
/// hdr.flags = Flags::DONT_FRAGMENT;
/// hdr.options = vec![0x94, 0x04, 0x00]; // Router Alert, one byte short
/// hdr.set_payload_len(28)?;
/// assert_eq!(hdr.header_len(), 24); // the options are padded to 4 bytes
/// assert_eq!(hdr.total_len, 24 + 28);
///
/// let mut packet = vec![0u8; hdr.buffer_len() + 28];
/// let n = hdr.emit(&mut packet)?;
/// assert_eq!(n, 24);
/// assert_eq!(checksum(&packet[..n]), 0);
///
/// // Parse it back.
/// let (parsed, info) = Header::parse(&packet)?;
/// assert!(info.checksum_ok);
/// assert_eq!(info.payload_range(), 24..52);
/// assert_eq!(parsed.protocol, Protocol::Udp);
/// assert_eq!(parsed.options, [0x94, 0x04, 0x00, 0x00]);
/// assert_eq!(
///     parsed.to_string(),
///     format!(
///         "ver=4 hdrlen=24 tos=0x0 totallen=52 id=0x0 flags=0x2 fragoff=0 ttl=16 \
///          proto=17 cksum={:#x} src=192.0.2.1 dst=239.1.2.3",
///         parsed.checksum
///     )
/// );
///
/// // A wrong checksum is reported, not hidden.
/// packet[8] = 15;
/// let (_, info) = Header::parse(&packet)?;
/// assert!(!info.checksum_ok);
/// # Ok::<(), ipv4_reactor::header::HeaderError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Header {
    /// The IP version. Always 4 in a parsed header; [`Header::emit`] refuses
    /// anything else.
    pub version: u8,
    /// The type-of-service byte (DSCP in the high 6 bits, ECN in the low 2).
    pub tos: u8,
    /// The total length: header and payload, in bytes. [`Header::emit`] writes
    /// it as it is; [`Header::set_payload_len`] computes it.
    pub total_len: u16,
    /// The identification field.
    pub id: u16,
    /// The flag bits.
    pub flags: Flags,
    /// The fragment offset, in 8-byte units (13 bits).
    pub frag_offset: u16,
    /// The time to live.
    pub ttl: u8,
    /// The protocol of the payload.
    pub protocol: Protocol,
    /// The checksum field as it was read. [`Header::emit`] ignores it and
    /// writes the right checksum.
    pub checksum: u16,
    /// The source address.
    pub src: Ipv4Addr,
    /// The destination address.
    pub dst: Ipv4Addr,
    /// The option bytes. A parsed header holds them as they were, padding
    /// included. [`Header::emit`] pads them with zeros (End of Option List)
    /// to a multiple of 4 bytes, at most 40.
    pub options: Vec<u8>,
}

impl Header {
    /// The default TTL of [`Header::new`], as Linux's `net.ipv4.ip_default_ttl`.
    pub const DEFAULT_TTL: u8 = 64;

    /// A header without options or payload from `src` to `dst`: TOS 0, total
    /// length 20, ID 0, no flags, fragment offset 0, TTL 64, checksum 0.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: Protocol) -> Header {
        Header {
            version: 4,
            tos: 0,
            total_len: MIN_HEADER_LEN as u16,
            id: 0,
            flags: Flags::EMPTY,
            frag_offset: 0,
            ttl: Header::DEFAULT_TTL,
            protocol,
            checksum: 0,
            src,
            dst,
            options: Vec::new(),
        }
    }

    /// Checks `buf` and reads the IPv4 header at its start.
    ///
    /// The checks, in this order: at least 20 bytes, version 4, IHL of at
    /// least 5, IHL × 4 header bytes within the buffer, total length at least
    /// the header length, and total length within the buffer. A buffer longer
    /// than the total length is accepted. The extra bytes are padding (see
    /// [`ParseInfo::trailing_len`]).
    ///
    /// The checksum is checked but never makes `parse` fail. See
    /// [`ParseInfo::checksum_ok`].
    ///
    /// # Errors
    ///
    /// [`HeaderError::Truncated`], [`HeaderError::BadVersion`],
    /// [`HeaderError::BadIhl`], [`HeaderError::IhlBeyondBuffer`],
    /// [`HeaderError::TotalLenTooShort`] or
    /// [`HeaderError::TotalLenBeyondBuffer`].
    pub fn parse(buf: &[u8]) -> Result<(Header, ParseInfo), HeaderError> {
        let view = HeaderView::new_checked(buf)?;
        let header_len = view.header_len();
        let total_len = usize::from(view.total_len());
        if total_len < header_len {
            return Err(HeaderError::TotalLenTooShort {
                total_len,
                header_len,
            });
        }
        if total_len > buf.len() {
            return Err(HeaderError::TotalLenBeyondBuffer {
                total_len,
                buffer_len: buf.len(),
            });
        }
        let header = Header::from_view(&view);
        let info = ParseInfo {
            checksum_ok: view.verify_checksum(),
            header_len,
            payload_len: total_len - header_len,
            trailing_len: buf.len() - total_len,
        };
        Ok((header, info))
    }

    /// Reads the fields of a view into a `Header`. The total length is not
    /// checked here.
    ///
    /// Never panics for a view that passed [`HeaderView::check`] (one from
    /// [`HeaderView::new_checked`]). On an unchecked view it panics where
    /// [`HeaderView::options`] does.
    pub fn from_view<T: AsRef<[u8]>>(view: &HeaderView<T>) -> Header {
        Header {
            version: view.version(),
            tos: view.tos(),
            total_len: view.total_len(),
            id: view.id(),
            flags: view.flags(),
            frag_offset: view.frag_offset(),
            ttl: view.ttl(),
            protocol: view.protocol(),
            checksum: view.checksum(),
            src: view.src(),
            dst: view.dst(),
            options: view.options().to_vec(),
        }
    }

    /// The header length in bytes: 20 plus the options padded to a multiple
    /// of 4. This is the length [`Header::emit`] writes, and the IHL × 4 it
    /// writes. It can be more than 60 if the options are too long, and then
    /// `emit` fails.
    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN + padded(self.options.len())
    }

    /// The bytes [`Header::emit`] needs and writes: the same as
    /// [`Header::header_len`].
    pub fn buffer_len(&self) -> usize {
        self.header_len()
    }

    /// The payload length the total length gives: `total_len` less
    /// [`Header::header_len`], or 0 if `total_len` is smaller.
    pub fn payload_len(&self) -> usize {
        usize::from(self.total_len).saturating_sub(self.header_len())
    }

    /// Sets `total_len` to [`Header::header_len`] plus `payload_len`. Set the
    /// options first, because they change the header length.
    ///
    /// # Errors
    ///
    /// [`HeaderError::PayloadTooLong`] if the total would exceed 65535.
    pub fn set_payload_len(&mut self, payload_len: usize) -> Result<(), HeaderError> {
        let header_len = self.header_len();
        let total = header_len
            .checked_add(payload_len)
            .and_then(|t| u16::try_from(t).ok())
            .ok_or(HeaderError::PayloadTooLong {
                payload_len,
                header_len,
            })?;
        self.total_len = total;
        Ok(())
    }

    /// [`Header::set_payload_len`], builder style.
    ///
    /// # Errors
    ///
    /// [`HeaderError::PayloadTooLong`] if the total would exceed 65535.
    pub fn with_payload_len(mut self, payload_len: usize) -> Result<Header, HeaderError> {
        self.set_payload_len(payload_len)?;
        Ok(self)
    }

    /// The DSCP: the high 6 bits of `tos`.
    pub fn dscp(&self) -> u8 {
        self.tos >> 2
    }

    /// The ECN bits: the low 2 bits of `tos`.
    pub fn ecn(&self) -> u8 {
        self.tos & 0b11
    }

    /// Writes the header at the start of `buf` and returns the number of bytes
    /// written ([`Header::header_len`]).
    ///
    /// The options are padded with zeros (End of Option List) to a multiple of
    /// 4 bytes, and the IHL is set to match. The checksum is computed and
    /// written; the `checksum` field of `self` is ignored. `total_len` is
    /// written as it is, even if it is smaller than the header (see
    /// [`Header::set_payload_len`]). Bytes of `buf` after the header are left
    /// alone.
    ///
    /// # Errors
    ///
    /// [`HeaderError::BadVersion`] if `version` is not 4,
    /// [`HeaderError::OptionsTooLong`] if there are more than 40 option bytes,
    /// [`HeaderError::FragOffsetTooLarge`] if `frag_offset` is more than 8191,
    /// and [`HeaderError::BufferTooSmall`] if `buf` is shorter than the header.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, HeaderError> {
        if self.version != 4 {
            return Err(HeaderError::BadVersion(self.version));
        }
        if self.options.len() > MAX_OPTIONS_LEN {
            return Err(HeaderError::OptionsTooLong(self.options.len()));
        }
        if self.frag_offset > MAX_FRAG_OFFSET {
            return Err(HeaderError::FragOffsetTooLarge(self.frag_offset));
        }
        let header_len = self.header_len();
        let got = buf.len();
        let Some(out) = buf.get_mut(..header_len) else {
            return Err(HeaderError::BufferTooSmall {
                needed: header_len,
                got,
            });
        };
        // `out` is exactly `header_len` bytes, a multiple of 4 from 20 to
        // 60, so these two cannot fail.
        let mut view = HeaderView::new_unchecked(out);
        view.set_version(4)?;
        view.set_header_len(header_len)?;
        view.set_tos(self.tos);
        view.set_total_len(self.total_len);
        view.set_id(self.id);
        view.set_flags(self.flags);
        view.set_frag_offset(self.frag_offset);
        view.set_ttl(self.ttl);
        view.set_protocol(self.protocol);
        view.set_src(self.src);
        view.set_dst(self.dst);
        let options = view.options_mut();
        let (given, pad) = options.split_at_mut(self.options.len());
        given.copy_from_slice(&self.options);
        pad.fill(0);
        view.fill_checksum();
        Ok(header_len)
    }

    /// [`Header::emit`] into a new vector of [`Header::header_len`] bytes.
    ///
    /// # Errors
    ///
    /// As [`Header::emit`], except `BufferTooSmall`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, HeaderError> {
        let mut buf = vec![0; self.header_len()];
        self.emit(&mut buf)?;
        Ok(buf)
    }
}

impl fmt::Display for Header {
    /// One line, as Go's `ipv4.Header.String`, e.g. `ver=4 hdrlen=20 tos=0x28
    /// totallen=48 id=0x1234 flags=0x2 fragoff=0 ttl=64 proto=17 cksum=0xabcd
    /// src=127.0.0.1 dst=127.0.0.1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ver={} hdrlen={} tos={:#x} totallen={} id={:#x} flags={:#x} fragoff={} ttl={} \
             proto={} cksum={:#x} src={} dst={}",
            self.version,
            self.header_len(),
            self.tos,
            self.total_len,
            self.id,
            self.flags,
            self.frag_offset,
            self.ttl,
            self.protocol.number(),
            self.checksum,
            self.src,
            self.dst
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classic example: UDP, 115 bytes, DF, TTL 64, 192.168.0.1 to
    /// 192.168.0.199, checksum 0xb861.
    const CLASSIC: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    /// A plain 20-byte header with 8 bytes of payload: total length 28.
    fn plain() -> Vec<u8> {
        let mut b = vec![
            0x45, 0x28, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 127, 0, 0, 1,
            127, 0, 0, 1,
        ];
        let sum = checksum(&b);
        b[10..12].copy_from_slice(&sum.to_be_bytes());
        b.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        b
    }

    /// A 24-byte header with a Router Alert option, total length 28.
    fn with_options() -> Vec<u8> {
        let mut b = vec![
            0x46, 0xc0, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 10, 0, 0, 1,
            224, 0, 0, 22, 0x94, 0x04, 0x00, 0x00,
        ];
        let sum = checksum(&b);
        b[10..12].copy_from_slice(&sum.to_be_bytes());
        b.extend_from_slice(&[0x22, 0, 0xea, 0x03]);
        b
    }

    #[test]
    fn checksum_known_example() {
        assert_eq!(checksum(&CLASSIC), 0);
        let mut zeroed = CLASSIC;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(checksum(&zeroed), 0xb861);
        // RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // Odd length: the last byte is padded with zero.
        assert_eq!(checksum(&[0x01]), !0x0100);
        assert_eq!(checksum(&[]), 0xffff);
        // Carries across many words are folded back.
        assert_eq!(checksum(&[0xff; 200_000]), 0);
    }

    #[test]
    fn parse_classic_header() {
        // The header says 115 bytes; give it a buffer of that size.
        let mut buf = CLASSIC.to_vec();
        buf.resize(0x73, 0);
        let (h, info) = Header::parse(&buf).unwrap();
        assert!(info.checksum_ok);
        assert_eq!(info.header_len, 20);
        assert_eq!(info.payload_len, 95);
        assert_eq!(info.trailing_len, 0);
        assert_eq!(h.version, 4);
        assert_eq!(h.total_len, 115);
        assert_eq!(h.flags, Flags::DONT_FRAGMENT);
        assert_eq!(h.ttl, 64);
        assert_eq!(h.protocol, Protocol::Udp);
        assert_eq!(h.checksum, 0xb861);
        assert_eq!(h.src, Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(h.dst, Ipv4Addr::new(192, 168, 0, 199));
    }

    #[test]
    fn parse_plain_header() {
        let buf = plain();
        let (h, info) = Header::parse(&buf).unwrap();
        assert!(info.checksum_ok);
        assert_eq!(info.header_len, 20);
        assert_eq!(info.payload_len, 8);
        assert_eq!(&buf[info.payload_range()], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(h.version, 4);
        assert_eq!(h.tos, 0x28);
        assert_eq!(h.dscp(), 0x0a);
        assert_eq!(h.ecn(), 0);
        assert_eq!(h.total_len, 28);
        assert_eq!(h.id, 0x1234);
        assert!(h.flags.dont_fragment());
        assert!(!h.flags.more_fragments());
        assert_eq!(h.frag_offset, 0);
        assert_eq!(h.ttl, 64);
        assert_eq!(h.protocol, Protocol::Udp);
        assert_eq!(h.src, Ipv4Addr::LOCALHOST);
        assert_eq!(h.dst, Ipv4Addr::LOCALHOST);
        assert!(h.options.is_empty());
        assert_eq!(
            h.to_string(),
            format!(
                "ver=4 hdrlen=20 tos=0x28 totallen=28 id=0x1234 flags=0x2 fragoff=0 ttl=64 \
                 proto=17 cksum={:#x} src=127.0.0.1 dst=127.0.0.1",
                h.checksum
            )
        );

        let view = HeaderView::new_checked(&buf[..]).unwrap();
        assert_eq!(view.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(view.verify_checksum());
        assert_eq!(Header::from_view(&view), h);
    }

    #[test]
    fn parse_header_with_options() {
        let buf = with_options();
        let (h, info) = Header::parse(&buf).unwrap();
        assert!(info.checksum_ok);
        assert_eq!(info.header_len, 24);
        assert_eq!(info.payload_len, 4);
        assert_eq!(h.options, [0x94, 0x04, 0x00, 0x00]);
        assert_eq!(h.header_len(), 24);
        assert_eq!(h.tos, 0xc0);
        assert_eq!(h.ttl, 1);
        assert_eq!(h.protocol, Protocol::Igmp);
        assert_eq!(h.dst, Ipv4Addr::new(224, 0, 0, 22));
        assert!(h.flags.is_empty());
        // Emitting it again gives the same bytes.
        assert_eq!(h.to_bytes().unwrap(), &buf[..24]);
    }

    #[test]
    fn trailing_bytes_are_padding() {
        let mut buf = plain();
        buf.extend_from_slice(&[0xee; 6]);
        let (h, info) = Header::parse(&buf).unwrap();
        assert_eq!(h.total_len, 28);
        assert_eq!(info.payload_len, 8);
        assert_eq!(info.trailing_len, 6);
        let view = HeaderView::new_checked(&buf[..]).unwrap();
        assert_eq!(view.payload().len(), 8);
    }

    #[test]
    fn truncated_buffer() {
        let buf = plain();
        for n in 0..20 {
            assert_eq!(
                Header::parse(&buf[..n]).unwrap_err(),
                HeaderError::Truncated { needed: 20, got: n }
            );
            assert!(HeaderView::new_checked(&buf[..n]).is_err());
        }
        let err = Header::parse(&buf[..7]).unwrap_err();
        assert!(err.to_string().contains("7 bytes"), "{err}");
    }

    #[test]
    fn ihl_below_five() {
        let mut buf = plain();
        for ihl in 0..5u8 {
            buf[0] = 0x40 | ihl;
            let err = Header::parse(&buf).unwrap_err();
            assert_eq!(err, HeaderError::BadIhl(ihl));
            assert!(err.to_string().contains(&format!("IHL) {ihl}")), "{err}");
        }
    }

    #[test]
    fn ihl_beyond_buffer() {
        let mut buf = plain();
        buf[0] = 0x4f; // 60 bytes of header in a 28-byte buffer
        let err = Header::parse(&buf).unwrap_err();
        assert_eq!(
            err,
            HeaderError::IhlBeyondBuffer {
                header_len: 60,
                buffer_len: 28
            }
        );
        assert!(err.to_string().contains("60 bytes (IHL 15)"), "{err}");
        assert_eq!(
            HeaderView::new_checked(&buf[..]).unwrap_err(),
            HeaderError::IhlBeyondBuffer {
                header_len: 60,
                buffer_len: 28
            }
        );
    }

    #[test]
    fn wrong_version() {
        let mut buf = plain();
        buf[0] = 0x65;
        let err = Header::parse(&buf).unwrap_err();
        assert_eq!(err, HeaderError::BadVersion(6));
        assert!(err.to_string().contains("version 6"), "{err}");
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        assert!(io.to_string().contains("version 6"));
    }

    #[test]
    fn total_len_shorter_than_header() {
        let mut buf = with_options();
        buf[2..4].copy_from_slice(&22u16.to_be_bytes());
        let err = Header::parse(&buf).unwrap_err();
        assert_eq!(
            err,
            HeaderError::TotalLenTooShort {
                total_len: 22,
                header_len: 24
            }
        );
        assert!(err.to_string().contains("22"), "{err}");
        // The view does not check the total length; its payload is empty.
        let view = HeaderView::new_checked(&buf[..]).unwrap();
        assert_eq!(view.payload(), &[] as &[u8]);
    }

    #[test]
    fn total_len_beyond_buffer() {
        let buf = plain();
        let err = Header::parse(&buf[..27]).unwrap_err();
        assert_eq!(
            err,
            HeaderError::TotalLenBeyondBuffer {
                total_len: 28,
                buffer_len: 27
            }
        );
        assert!(err.to_string().contains("28"), "{err}");
        assert!(err.to_string().contains("27-byte"), "{err}");
        let view = HeaderView::new_checked(&buf[..27]).unwrap();
        assert_eq!(view.payload().len(), 7);
    }

    #[test]
    fn bad_checksum_is_reported_not_hidden() {
        let mut buf = plain();
        buf[10] ^= 0x01;
        let (h, info) = Header::parse(&buf).unwrap();
        assert!(!info.checksum_ok);
        assert_eq!(h.checksum, u16::from_be_bytes([buf[10], buf[11]]));
        assert!(!HeaderView::new_checked(&buf[..]).unwrap().verify_checksum());
        // A changed field also breaks it.
        let mut buf = plain();
        buf[8] = 63;
        assert!(!Header::parse(&buf).unwrap().1.checksum_ok);
    }

    #[test]
    fn emit_parse_round_trip() {
        let mut h = Header::new(
            Ipv4Addr::new(10, 1, 2, 3),
            Ipv4Addr::new(239, 255, 0, 1),
            Protocol::Udp,
        );
        h.tos = 0xb8;
        h.id = 0xbeef;
        h.flags = Flags::MORE_FRAGMENTS | Flags::RESERVED;
        h.frag_offset = MAX_FRAG_OFFSET;
        h.ttl = 3;
        h.checksum = 0x1111; // ignored by emit
        h.set_payload_len(100).unwrap();
        let mut buf = vec![0xaa; 120];
        assert_eq!(h.emit(&mut buf).unwrap(), 20);
        assert_eq!(buf[20], 0xaa, "emit wrote past the header");
        assert_eq!(checksum(&buf[..20]), 0);
        let (p, info) = Header::parse(&buf).unwrap();
        assert!(info.checksum_ok);
        assert_eq!(info.payload_len, 100);
        assert_eq!(p.checksum, u16::from_be_bytes([buf[10], buf[11]]));
        let mut expected = h.clone();
        expected.checksum = p.checksum;
        assert_eq!(p, expected);
        assert_eq!(p.flags.bits(), 0b101);
    }

    #[test]
    fn emit_classic_header() {
        let mut h = Header::new(
            Ipv4Addr::new(192, 168, 0, 1),
            Ipv4Addr::new(192, 168, 0, 199),
            Protocol::Udp,
        );
        h.flags = Flags::DONT_FRAGMENT;
        h.set_payload_len(95).unwrap();
        assert_eq!(h.to_bytes().unwrap(), CLASSIC);
    }

    #[test]
    fn options_are_padded() {
        for len in 0..=MAX_OPTIONS_LEN {
            let mut h = Header::new(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST, Protocol::Raw);
            h.options = (1..=len as u8).collect();
            h.set_payload_len(0).unwrap();
            let padded_len = len.div_ceil(4) * 4;
            assert_eq!(h.header_len(), 20 + padded_len);
            assert_eq!(h.buffer_len(), h.header_len());
            let bytes = h.to_bytes().unwrap();
            assert_eq!(bytes.len(), 20 + padded_len);
            assert_eq!(usize::from(bytes[0] & 0x0f) * 4, bytes.len());
            let (p, info) = Header::parse(&bytes).unwrap();
            assert!(info.checksum_ok);
            assert_eq!(&p.options[..len], &h.options[..]);
            assert!(p.options[len..].iter().all(|&b| b == 0));
            assert_eq!(p.options.len(), padded_len);
        }
    }

    #[test]
    fn options_too_long_rejected() {
        let mut h = Header::new(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, Protocol::Tcp);
        h.options = vec![1; 41];
        let mut buf = [0u8; 80];
        let err = h.emit(&mut buf).unwrap_err();
        assert_eq!(err, HeaderError::OptionsTooLong(41));
        assert!(err.to_string().contains("41 bytes"), "{err}");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidInput);
        assert!(buf.iter().all(|&b| b == 0), "nothing written on error");
        assert_eq!(h.to_bytes().unwrap_err(), HeaderError::OptionsTooLong(41));
    }

    #[test]
    fn emit_rejects_bad_input() {
        let mut h = Header::new(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, Protocol::Tcp);
        h.options = vec![1; 5];
        let mut small = [0u8; 27];
        assert_eq!(
            h.emit(&mut small).unwrap_err(),
            HeaderError::BufferTooSmall {
                needed: 28,
                got: 27
            }
        );
        h.frag_offset = 0x2000;
        assert_eq!(
            h.to_bytes().unwrap_err(),
            HeaderError::FragOffsetTooLarge(0x2000)
        );
        h.frag_offset = 0;
        h.version = 6;
        assert_eq!(h.to_bytes().unwrap_err(), HeaderError::BadVersion(6));
        assert_eq!(
            io::Error::from(HeaderError::BadVersion(6)).kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn payload_len_limits() {
        let mut h = Header::new(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, Protocol::Udp);
        h.set_payload_len(65515).unwrap();
        assert_eq!(h.total_len, 65535);
        assert_eq!(h.payload_len(), 65515);
        let err = h.set_payload_len(65516).unwrap_err();
        assert_eq!(
            err,
            HeaderError::PayloadTooLong {
                payload_len: 65516,
                header_len: 20
            }
        );
        assert_eq!(h.total_len, 65535, "unchanged on error");
        assert!(h.clone().with_payload_len(usize::MAX).is_err());
        let h = h.with_payload_len(8).unwrap();
        assert_eq!(h.total_len, 28);
        // total_len is written as given, even when too short.
        let mut h = h;
        h.total_len = 0;
        let bytes = h.to_bytes().unwrap();
        assert_eq!(&bytes[2..4], &[0, 0]);
        assert!(matches!(
            Header::parse(&bytes),
            Err(HeaderError::TotalLenTooShort { total_len: 0, .. })
        ));
    }

    #[test]
    fn view_setters() {
        let mut buf = [0u8; 24];
        let mut v = HeaderView::new_unchecked(&mut buf[..]);
        v.set_version(4).unwrap();
        v.set_ihl(6).unwrap();
        v.set_dscp(46);
        v.set_ecn(0b11);
        v.set_total_len(24);
        v.set_id(7);
        v.set_frag_offset(0x1fff);
        v.set_flags(Flags::DONT_FRAGMENT);
        v.set_ttl(9);
        v.set_protocol(Protocol::Unknown(253));
        v.set_src(Ipv4Addr::new(1, 2, 3, 4));
        v.set_dst(Ipv4Addr::new(5, 6, 7, 8));
        v.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        v.fill_checksum();
        let v = HeaderView::new_checked(&buf[..]).unwrap();
        assert_eq!(v.version(), 4);
        assert_eq!(v.header_len(), 24);
        assert_eq!(v.dscp(), 46);
        assert_eq!(v.ecn(), 3);
        assert_eq!(v.tos(), 0xbb);
        assert_eq!(v.frag_offset(), 0x1fff);
        assert!(v.dont_fragment() && !v.more_fragments());
        assert_eq!(v.protocol().number(), 253);
        assert_eq!(v.options(), &[1, 1, 1, 0]);
        assert!(v.verify_checksum());
        let (h, info) = Header::parse(&buf).unwrap();
        assert!(info.checksum_ok);
        assert_eq!(h.protocol, Protocol::Unknown(253));
    }

    /// Calls every accessor and in-place writer of a view that
    /// `new_checked` accepted, then checks that it still passes `check`.
    fn assert_still_checked<T: AsRef<[u8]> + AsMut<[u8]>>(v: &mut HeaderView<T>) {
        let hl = v.header_len();
        assert_eq!(v.options().len(), hl - MIN_HEADER_LEN);
        assert_eq!(v.options_mut().len(), hl - MIN_HEADER_LEN);
        assert!(v.payload().len() <= v.as_bytes().len() - hl);
        let _ = v.verify_checksum();
        v.fill_checksum();
        assert!(v.verify_checksum());
        let _ = Header::from_view(v);
        assert_eq!(v.check(), Ok(()));
    }

    // Regression tests for issue 11 point 3: before the length setters were
    // checked, these panicked in `options`, `fill_checksum`, `payload` and
    // `verify_checksum`, or left a view that `check` rejected.

    #[test]
    fn set_ihl_past_the_buffer_keeps_checked_view() {
        let mut buf = plain(); // 28 bytes
        let before = buf.clone();
        let mut v = HeaderView::new_checked(&mut buf[..]).unwrap();
        for ihl in [8, 15] {
            assert_eq!(
                v.set_ihl(ihl),
                Err(HeaderError::BadHeaderLen {
                    header_len: usize::from(ihl) * 4,
                    buffer_len: 28
                })
            );
            assert_eq!(v.as_bytes(), &before[..], "unchanged on error");
            assert_still_checked(&mut v);
            assert_eq!(v.ihl(), 5);
        }
        assert_eq!(v.set_ihl(7), Ok(()), "28 bytes hold a 28-byte header");
        assert_still_checked(&mut v);
        assert_eq!(v.payload(), &[] as &[u8]);
    }

    #[test]
    fn set_ihl_below_five_keeps_checked_view() {
        let mut buf = with_options(); // IHL 6
        let before = buf.clone();
        let mut v = HeaderView::new_checked(&mut buf[..]).unwrap();
        for ihl in 0..5 {
            assert_eq!(
                v.set_ihl(ihl),
                Err(HeaderError::BadHeaderLen {
                    header_len: usize::from(ihl) * 4,
                    buffer_len: 28
                })
            );
            assert_eq!(v.as_bytes(), &before[..], "unchanged on error");
            assert_still_checked(&mut v);
            assert_eq!(v.ihl(), 6);
        }
    }

    #[test]
    fn set_ihl_above_fifteen_is_not_masked() {
        let mut buf = [0u8; 100];
        buf[0] = 0x45;
        let mut v = HeaderView::new_checked(&mut buf[..]).unwrap();
        // 0x16 used to be cut to its low 4 bits, IHL 6; 0x10 to IHL 0.
        for ihl in [0x16, 0x10, 0xff] {
            assert_eq!(
                v.set_ihl(ihl),
                Err(HeaderError::BadHeaderLen {
                    header_len: usize::from(ihl) * 4,
                    buffer_len: 100
                })
            );
            assert_still_checked(&mut v);
            assert_eq!(v.ihl(), 5);
        }
    }

    #[test]
    fn set_header_len_past_the_buffer_keeps_checked_view() {
        let mut buf = plain(); // 28 bytes
        let mut v = HeaderView::new_checked(&mut buf[..]).unwrap();
        let err = v.set_header_len(60).unwrap_err();
        assert_eq!(
            err,
            HeaderError::BadHeaderLen {
                header_len: 60,
                buffer_len: 28
            }
        );
        assert_eq!(
            err.to_string(),
            "cannot set the IPv4 header length to 60 bytes (IHL 15) in a 28-byte buffer: \
             it would go past the end of the buffer"
        );
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidInput);
        assert_still_checked(&mut v);
        assert_eq!(v.header_len(), 20);
    }

    #[test]
    fn set_header_len_out_of_range_keeps_checked_view() {
        let mut buf = [0u8; 100];
        buf[0] = 0x46;
        let mut v = HeaderView::new_checked(&mut buf[..]).unwrap();
        // 64 / 4 = 16 used to wrap to IHL 0; 22 and 61 used to be rounded
        // down; 16 and 0 are below the minimum.
        for len in [64, 22, 61, 16, 0, usize::MAX] {
            assert_eq!(
                v.set_header_len(len),
                Err(HeaderError::BadHeaderLen {
                    header_len: len,
                    buffer_len: 100
                })
            );
            assert_still_checked(&mut v);
            assert_eq!(v.header_len(), 24, "after set_header_len({len})");
        }
        let err = v.set_header_len(22).unwrap_err().to_string();
        assert_eq!(
            err,
            "cannot set the IPv4 header length to 22 bytes in a 100-byte buffer: \
             it must be a multiple of 4 from 20 to 60"
        );
        let err = v.set_ihl(3).unwrap_err().to_string();
        assert!(
            err.contains("12 bytes (IHL 3) in a 100-byte buffer"),
            "{err}"
        );
        for len in (20..=60).step_by(4) {
            assert_eq!(v.set_header_len(len), Ok(()));
            assert_still_checked(&mut v);
            assert_eq!(v.header_len(), len);
        }
    }

    #[test]
    fn set_version_keeps_checked_view() {
        let mut buf = plain();
        let mut v = HeaderView::new_checked(&mut buf[..]).unwrap();
        for version in [6, 0, 0x14, 0xff] {
            assert_eq!(
                v.set_version(version),
                Err(HeaderError::BadVersion(version))
            );
            assert_still_checked(&mut v);
            assert_eq!(v.version(), 4);
        }
        assert_eq!(v.set_version(4), Ok(()));
        assert!(Header::parse(&buf).is_ok());
    }

    #[test]
    fn unchecked_view_length_setters_never_panic() {
        // Too short for any header: refused before anything is written.
        for len in 0..20 {
            let mut buf = vec![0u8; len];
            let mut v = HeaderView::new_unchecked(&mut buf[..]);
            assert_eq!(
                v.set_header_len(20),
                Err(HeaderError::BadHeaderLen {
                    header_len: 20,
                    buffer_len: len
                })
            );
            assert!(v.set_ihl(5).is_err());
        }
        // A zeroed buffer: version 0, IHL 0. Setting both makes it check.
        let mut buf = [0u8; 24];
        let mut v = HeaderView::new_unchecked(&mut buf[..]);
        assert_eq!(v.check(), Err(HeaderError::BadVersion(0)));
        v.set_version(4).unwrap();
        assert_eq!(v.check(), Err(HeaderError::BadIhl(0)));
        assert!(v.set_ihl(7).is_err());
        v.set_ihl(6).unwrap();
        assert_eq!(v.check(), Ok(()));
        assert_still_checked(&mut v);
    }

    #[test]
    fn protocol_numbers_and_names() {
        let cases = [
            (Protocol::Icmp, 1, "ICMP (1)"),
            (Protocol::Igmp, 2, "IGMP (2)"),
            (Protocol::Tcp, 6, "TCP (6)"),
            (Protocol::Udp, 17, "UDP (17)"),
            (Protocol::Gre, 47, "GRE (47)"),
            (Protocol::Esp, 50, "ESP (50)"),
            (Protocol::Ah, 51, "AH (51)"),
            (Protocol::Ospf, 89, "OSPF (89)"),
            (Protocol::Pim, 103, "PIM (103)"),
            (Protocol::Vrrp, 112, "VRRP (112)"),
            (Protocol::Sctp, 132, "SCTP (132)"),
            (Protocol::Raw, 255, "raw (255)"),
        ];
        for (p, n, text) in cases {
            assert_eq!(u8::from(p), n);
            assert_eq!(Protocol::from(n), p);
            assert_eq!(p.to_string(), text);
        }
        for n in 0..=255u8 {
            let p = Protocol::from(n);
            assert_eq!(p.number(), n);
            assert_eq!(p.name().is_some(), !matches!(p, Protocol::Unknown(_)));
        }
        assert_eq!(Protocol::from(0), Protocol::Unknown(0));
        assert_eq!(Protocol::Unknown(6), Protocol::Tcp);
        assert_eq!(Protocol::Unknown(6).name(), Some("TCP"));
        assert_eq!(Protocol::from(99).to_string(), "unknown (99)");
    }

    #[test]
    fn flags_bits() {
        let mut f = Flags::EMPTY;
        assert!(f.is_empty());
        f.set(Flags::DONT_FRAGMENT, true);
        assert_eq!(f.bits(), 0x2);
        f |= Flags::MORE_FRAGMENTS;
        assert_eq!(f.bits(), 0x3);
        f.remove(Flags::DONT_FRAGMENT);
        assert_eq!(f, Flags::MORE_FRAGMENTS);
        assert_eq!(
            format!("{:?}", Flags::from_bits_truncate(7)),
            "Flags(RESERVED | DF | MF)"
        );
        assert_eq!(format!("{:?}", Flags::EMPTY), "Flags(empty)");
        assert_eq!(format!("{:#x}", Flags::DONT_FRAGMENT), "0x2");
    }
}
