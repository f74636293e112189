//! ICMPv4 message types, the Linux `ICMP_FILTER` value, and echo messages.
//!
//! - [`IcmpType`]: the ICMPv4 type numbers, with their IANA names.
//! - [`IcmpFilter`]: the 32-bit mask that the `ICMP_FILTER` option (level
//!   `SOL_RAW`) of a Linux `SOCK_RAW`/`IPPROTO_ICMP` socket takes.
//! - [`build_echo_request`], [`build_echo_reply`] and [`parse_echo`]: echo
//!   messages (ping), built and read without any I/O.
//!
//! Everything here is pure computation. The socket calls are elsewhere.

use std::fmt;
use std::io;

use crate::error::invalid;
use crate::header::checksum;

macro_rules! icmp_types {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal, $name:literal; )*) => {
        /// An ICMPv4 message type (the first byte of an ICMP message), from
        /// the IANA "ICMP Type Numbers" registry.
        ///
        /// Numbers without a variant are kept in [`IcmpType::Unknown`].
        /// Comparison and hashing go by number, so `IcmpType::Unknown(8)`
        /// equals `IcmpType::Echo`. [`From<u8>`] never makes such a value.
        ///
        /// ```
        /// use ipv4_reactor::icmp::IcmpType;
        ///
        /// assert_eq!(IcmpType::from(0), IcmpType::EchoReply);
        /// assert_eq!(u8::from(IcmpType::TimeExceeded), 11);
        /// assert_eq!(IcmpType::EchoReply.to_string(), "echo reply");
        /// assert_eq!(IcmpType::from(250).to_string(), "unknown type 250");
        /// ```
        #[derive(Debug, Clone, Copy)]
        #[non_exhaustive]
        pub enum IcmpType {
            $( $(#[$doc])* $variant, )*
            /// A type number without a variant here.
            Unknown(u8),
        }

        impl IcmpType {
            /// The type number.
            pub const fn number(self) -> u8 {
                match self {
                    $( IcmpType::$variant => $num, )*
                    IcmpType::Unknown(n) => n,
                }
            }

            /// The type for a number.
            pub const fn from_number(n: u8) -> IcmpType {
                match n {
                    $( $num => IcmpType::$variant, )*
                    n => IcmpType::Unknown(n),
                }
            }

            /// The IANA name in lower case (`"echo reply"`), if the number has
            /// a variant here.
            pub const fn name(self) -> Option<&'static str> {
                match IcmpType::from_number(self.number()) {
                    $( IcmpType::$variant => Some($name), )*
                    IcmpType::Unknown(_) => None,
                }
            }
        }
    };
}

icmp_types! {
    /// 0: echo reply (RFC 792).
    EchoReply = 0, "echo reply";
    /// 3: destination unreachable (RFC 792).
    DestinationUnreachable = 3, "destination unreachable";
    /// 4: source quench (RFC 792, deprecated by RFC 6633).
    SourceQuench = 4, "source quench";
    /// 5: redirect (RFC 792).
    Redirect = 5, "redirect";
    /// 8: echo, the request (RFC 792).
    Echo = 8, "echo";
    /// 9: router advertisement (RFC 1256).
    RouterAdvertisement = 9, "router advertisement";
    /// 10: router solicitation (RFC 1256).
    RouterSolicitation = 10, "router solicitation";
    /// 11: time exceeded (RFC 792).
    TimeExceeded = 11, "time exceeded";
    /// 12: parameter problem (RFC 792).
    ParameterProblem = 12, "parameter problem";
    /// 13: timestamp (RFC 792).
    Timestamp = 13, "timestamp";
    /// 14: timestamp reply (RFC 792).
    TimestampReply = 14, "timestamp reply";
    /// 15: information request (RFC 792, deprecated by RFC 6918).
    InformationRequest = 15, "information request";
    /// 16: information reply (RFC 792, deprecated by RFC 6918).
    InformationReply = 16, "information reply";
    /// 17: address mask request (RFC 950, deprecated by RFC 6918).
    AddressMaskRequest = 17, "address mask request";
    /// 18: address mask reply (RFC 950, deprecated by RFC 6918).
    AddressMaskReply = 18, "address mask reply";
    /// 30: traceroute (RFC 1393, deprecated by RFC 6918).
    Traceroute = 30, "traceroute";
    /// 40: Photuris (RFC 2521).
    Photuris = 40, "photuris";
    /// 42: extended echo request (RFC 8335).
    ExtendedEcho = 42, "extended echo request";
    /// 43: extended echo reply (RFC 8335).
    ExtendedEchoReply = 43, "extended echo reply";
}

impl IcmpType {
    /// Whether this is an error message (destination unreachable, source
    /// quench, redirect, time exceeded or parameter problem). An error message
    /// carries the IP header and the first bytes of the datagram that caused it.
    pub const fn is_error(self) -> bool {
        matches!(self.number(), 3 | 4 | 5 | 11 | 12)
    }
}

impl PartialEq for IcmpType {
    fn eq(&self, other: &IcmpType) -> bool {
        self.number() == other.number()
    }
}

impl Eq for IcmpType {}

impl std::hash::Hash for IcmpType {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.number().hash(state);
    }
}

impl From<u8> for IcmpType {
    fn from(n: u8) -> IcmpType {
        IcmpType::from_number(n)
    }
}

impl From<IcmpType> for u8 {
    fn from(t: IcmpType) -> u8 {
        t.number()
    }
}

impl fmt::Display for IcmpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "unknown type {}", self.number()),
        }
    }
}

// ---------------------------------------------------------------------------
// IcmpFilter
// ---------------------------------------------------------------------------

/// The value of the Linux `ICMP_FILTER` socket option (level `SOL_RAW`) on a
/// `SOCK_RAW`/`IPPROTO_ICMP` socket. It chooses which ICMP types the socket
/// receives.
///
/// It is the kernel's `struct icmp_filter`: a 32-bit mask in host byte order
/// where bit *n* **set** means that type *n* is **blocked**. So the default,
/// mask 0, accepts everything. The filter covers only types 0 to 31. The
/// kernel always delivers types 32 and above, whatever the mask says.
/// Therefore [`IcmpFilter::accept`] and [`IcmpFilter::block`] refuse a type of
/// 32 or more, and [`IcmpFilter::will_block`] answers `false` for one. Go's
/// `x/net/icmp` folds type 42 (extended echo request) onto bit 10. This type
/// does not: blocking 10 (router solicitation) leaves 42 alone, as the
/// kernel does.
///
/// The filter applies only to ICMP that a raw socket receives. It does not
/// apply to sending, or to ping (`SOCK_DGRAM`) sockets.
///
/// ```
/// use ipv4_reactor::icmp::{IcmpFilter, IcmpType};
///
/// // Receive only echo replies and destination-unreachable errors.
/// let mut filter = IcmpFilter::default();
/// filter.set_all(true);
/// filter.accept(IcmpType::EchoReply)?;
/// filter.accept(IcmpType::DestinationUnreachable)?;
/// assert_eq!(filter.mask(), !0b1001);
/// assert!(!filter.will_block(IcmpType::EchoReply));
/// assert!(filter.will_block(IcmpType::Echo));
///
/// // Types of 32 and above are never filtered by the kernel.
/// assert!(!filter.will_block(IcmpType::ExtendedEchoReply));
/// let err = filter.block(IcmpType::ExtendedEcho).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
/// assert!(err.to_string().contains("42"));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IcmpFilter {
    mask: u32,
}

impl IcmpFilter {
    /// How many types the kernel filter covers: types 0 to 31.
    pub const FILTERED_TYPES: u8 = 32;

    /// A filter that accepts every type (mask 0), as [`Default`].
    pub const fn accept_all() -> IcmpFilter {
        IcmpFilter { mask: 0 }
    }

    /// A filter that blocks types 0 to 31 (mask `0xffff_ffff`). Types of 32
    /// and above still get through.
    pub const fn block_all() -> IcmpFilter {
        IcmpFilter { mask: u32::MAX }
    }

    /// A filter from the kernel's mask: bit *n* set blocks type *n*.
    pub const fn from_mask(mask: u32) -> IcmpFilter {
        IcmpFilter { mask }
    }

    /// The kernel's mask, in host byte order, as `setsockopt(ICMP_FILTER)`
    /// takes it: bit *n* set blocks type *n*.
    pub const fn mask(self) -> u32 {
        self.mask
    }

    fn bit(t: u8) -> io::Result<u32> {
        if t < Self::FILTERED_TYPES {
            return Ok(1 << t);
        }
        let t = IcmpType::from(t);
        let named = match t.name() {
            Some(name) => format!("ICMP type {} ({name})", t.number()),
            None => format!("ICMP type {}", t.number()),
        };
        Err(invalid(format!(
            "{named} cannot be filtered: the kernel's ICMP_FILTER covers only types 0-31 \
             and always lets types 32 and above through"
        )))
    }

    /// Lets messages of type `t` through.
    ///
    /// # Errors
    ///
    /// An [`io::ErrorKind::InvalidInput`] error naming the type if `t` is 32
    /// or more. The kernel filter covers only types 0 to 31, and those types
    /// always get through anyway.
    pub fn accept(&mut self, t: impl Into<u8>) -> io::Result<()> {
        self.mask &= !Self::bit(t.into())?;
        Ok(())
    }

    /// Blocks messages of type `t`.
    ///
    /// # Errors
    ///
    /// An [`io::ErrorKind::InvalidInput`] error naming the type if `t` is 32
    /// or more. The kernel filter covers only types 0 to 31 and cannot block
    /// the others.
    pub fn block(&mut self, t: impl Into<u8>) -> io::Result<()> {
        self.mask |= Self::bit(t.into())?;
        Ok(())
    }

    /// Blocks (`true`) or accepts (`false`) all of types 0 to 31.
    pub fn set_all(&mut self, block: bool) {
        self.mask = if block { u32::MAX } else { 0 };
    }

    /// Whether the kernel drops messages of type `t` under this filter.
    /// Always `false` for types of 32 and above, which the kernel never
    /// filters.
    pub fn will_block(&self, t: impl Into<u8>) -> bool {
        let t = t.into();
        t < Self::FILTERED_TYPES && self.mask & (1 << t) != 0
    }
}

// ---------------------------------------------------------------------------
// Echo
// ---------------------------------------------------------------------------

/// The length of an ICMP echo header: type, code, checksum, identifier and
/// sequence number.
pub const ECHO_HEADER_LEN: usize = 8;

/// Why [`parse_echo`] rejected a message.
///
/// It converts into an [`io::Error`] of kind [`io::ErrorKind::InvalidData`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EchoError {
    /// The message is shorter than the 8-byte echo header.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes in the message.
        got: usize,
    },
    /// The message is neither an echo nor an echo reply.
    NotEcho(IcmpType),
}

impl fmt::Display for EchoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EchoError::Truncated { needed, got } => write!(
                f,
                "ICMP echo message truncated: {got} bytes, at least {needed} needed"
            ),
            EchoError::NotEcho(t) => write!(
                f,
                "ICMP type {} ({t}) is not an echo or echo reply",
                t.number()
            ),
        }
    }
}

impl std::error::Error for EchoError {}

impl From<EchoError> for io::Error {
    fn from(err: EchoError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, err)
    }
}

/// An echo or echo reply that [`parse_echo`] read, borrowing its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Echo<'a> {
    /// [`IcmpType::Echo`] or [`IcmpType::EchoReply`].
    pub ty: IcmpType,
    /// The code byte. RFC 792 says 0; other values are reported as they are.
    pub code: u8,
    /// The checksum field as it was read.
    pub checksum: u16,
    /// Whether the checksum is right for the whole message. A wrong checksum
    /// does not make `parse_echo` fail.
    pub checksum_ok: bool,
    /// The identifier.
    pub id: u16,
    /// The sequence number.
    pub seq: u16,
    /// The data after the 8-byte header.
    pub data: &'a [u8],
}

fn build_echo(ty: IcmpType, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(ECHO_HEADER_LEN + payload.len());
    msg.extend_from_slice(&[ty.number(), 0, 0, 0]);
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(payload);
    let sum = checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

/// Builds an ICMP echo request (type 8, code 0) with a correct checksum: the
/// ICMP message only, without an IP header.
///
/// On a Linux ping socket (`SOCK_DGRAM`, `IPPROTO_ICMP`) the kernel replaces
/// the identifier with the socket's "port" and computes the checksum again.
/// On a raw socket the message is sent as it is.
///
/// ```
/// use ipv4_reactor::icmp::{build_echo_request, parse_echo, IcmpType};
///
/// let msg = build_echo_request(0x1234, 7, b"ping");
/// assert_eq!(&msg[..8], &[8, 0, 0x06, 0xf4, 0x12, 0x34, 0x00, 0x07]);
/// let echo = parse_echo(&msg)?;
/// assert_eq!(echo.ty, IcmpType::Echo);
/// assert_eq!((echo.id, echo.seq, echo.data), (0x1234, 7, &b"ping"[..]));
/// assert!(echo.checksum_ok);
/// # Ok::<(), ipv4_reactor::icmp::EchoError>(())
/// ```
pub fn build_echo_request(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    build_echo(IcmpType::Echo, id, seq, payload)
}

/// Builds an ICMP echo reply (type 0, code 0) with a correct checksum: the
/// ICMP message only, without an IP header.
pub fn build_echo_reply(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    build_echo(IcmpType::EchoReply, id, seq, payload)
}

/// Reads an ICMP echo or echo reply. `msg` is the ICMP message alone. A raw
/// socket gives the IP header first; skip it with
/// [`Header::parse`](crate::header::Header::parse).
///
/// Never panics. The checksum is reported in [`Echo::checksum_ok`], and a
/// wrong one does not make the call fail.
///
/// # Errors
///
/// [`EchoError::Truncated`] if `msg` is shorter than 8 bytes, and
/// [`EchoError::NotEcho`] if its type is neither echo (8) nor echo reply (0).
///
/// ```
/// use ipv4_reactor::header::{Header, Protocol};
/// use ipv4_reactor::icmp::{build_echo_reply, parse_echo, IcmpType};
/// use std::net::Ipv4Addr;
///
/// // A datagram as a raw ICMP socket would return it: IP header, then ICMP.
/// let icmp = build_echo_reply(1, 2, b"abc");
/// let hdr = Header::new(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, Protocol::Icmp)
///     .with_payload_len(icmp.len())?;
/// let mut packet = hdr.to_bytes()?;
/// packet.extend_from_slice(&icmp);
///
/// let (_, info) = Header::parse(&packet)?;
/// let echo = parse_echo(&packet[info.payload_range()])?;
/// assert_eq!(echo.ty, IcmpType::EchoReply);
/// assert_eq!(echo.data, b"abc");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_echo(msg: &[u8]) -> Result<Echo<'_>, EchoError> {
    let Some((head, data)) = msg.split_first_chunk::<ECHO_HEADER_LEN>() else {
        return Err(EchoError::Truncated {
            needed: ECHO_HEADER_LEN,
            got: msg.len(),
        });
    };
    let ty = IcmpType::from(head[0]);
    if !matches!(ty, IcmpType::Echo | IcmpType::EchoReply) {
        return Err(EchoError::NotEcho(ty));
    }
    Ok(Echo {
        ty,
        code: head[1],
        checksum: u16::from_be_bytes([head[2], head[3]]),
        checksum_ok: checksum(msg) == 0,
        id: u16::from_be_bytes([head[4], head[5]]),
        seq: u16::from_be_bytes([head[6], head[7]]),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_bit_logic() {
        let mut f = IcmpFilter::default();
        assert_eq!(f, IcmpFilter::accept_all());
        assert_eq!(f.mask(), 0);
        for t in 0..=255u8 {
            assert!(!f.will_block(t));
        }
        f.block(IcmpType::Echo).unwrap();
        f.block(31u8).unwrap();
        assert_eq!(f.mask(), (1 << 8) | (1 << 31));
        assert!(f.will_block(8u8));
        assert!(f.will_block(31u8));
        assert!(!f.will_block(IcmpType::EchoReply));
        f.accept(8u8).unwrap();
        assert_eq!(f.mask(), 1 << 31);
        // Accepting or blocking twice changes nothing.
        f.accept(8u8).unwrap();
        f.block(31u8).unwrap();
        assert_eq!(f.mask(), 1 << 31);
        assert_eq!(IcmpFilter::from_mask(0xdead_beef).mask(), 0xdead_beef);
        for t in 0..32u8 {
            let f = IcmpFilter::from_mask(1 << t);
            for u in 0..32u8 {
                assert_eq!(f.will_block(u), t == u);
            }
        }
    }

    #[test]
    fn filter_set_all() {
        let mut f = IcmpFilter::default();
        f.set_all(true);
        assert_eq!(f, IcmpFilter::block_all());
        assert_eq!(f.mask(), u32::MAX);
        for t in 0..32u8 {
            assert!(f.will_block(t));
        }
        for t in 32..=255u8 {
            assert!(!f.will_block(t), "type {t} is never filtered");
        }
        f.accept(IcmpType::EchoReply).unwrap();
        assert_eq!(f.mask(), !1);
        f.set_all(false);
        assert_eq!(f.mask(), 0);
    }

    #[test]
    fn filter_rejects_types_from_32() {
        let mut f = IcmpFilter::default();
        for t in [32u8, 42, 43, 255] {
            for err in [f.block(t).unwrap_err(), f.accept(t).unwrap_err()] {
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
                let msg = err.to_string();
                assert!(msg.contains(&format!("ICMP type {t}")), "{msg}");
                assert!(msg.contains("0-31"), "{msg}");
                assert!(matches!(
                    crate::Error::of(&err),
                    Some(crate::Error::InvalidArgument(_))
                ));
            }
        }
        let msg = f.block(IcmpType::ExtendedEcho).unwrap_err().to_string();
        assert!(
            msg.contains("ICMP type 42 (extended echo request)"),
            "{msg}"
        );
        assert_eq!(f.mask(), 0, "a rejected call leaves the mask alone");
    }

    #[test]
    fn block_10_does_not_touch_42() {
        let mut f = IcmpFilter::default();
        f.block(IcmpType::RouterSolicitation).unwrap();
        assert_eq!(f.mask(), 1 << 10);
        assert!(f.will_block(10u8));
        assert!(!f.will_block(IcmpType::ExtendedEcho));
        assert!(!f.will_block(42u8));
    }

    #[test]
    fn type_names_and_numbers() {
        let cases = [
            (IcmpType::EchoReply, 0, "echo reply"),
            (
                IcmpType::DestinationUnreachable,
                3,
                "destination unreachable",
            ),
            (IcmpType::Redirect, 5, "redirect"),
            (IcmpType::Echo, 8, "echo"),
            (IcmpType::RouterAdvertisement, 9, "router advertisement"),
            (IcmpType::RouterSolicitation, 10, "router solicitation"),
            (IcmpType::TimeExceeded, 11, "time exceeded"),
            (IcmpType::ParameterProblem, 12, "parameter problem"),
            (IcmpType::Timestamp, 13, "timestamp"),
            (IcmpType::TimestampReply, 14, "timestamp reply"),
            (IcmpType::ExtendedEcho, 42, "extended echo request"),
            (IcmpType::ExtendedEchoReply, 43, "extended echo reply"),
        ];
        for (t, n, name) in cases {
            assert_eq!(u8::from(t), n);
            assert_eq!(IcmpType::from(n), t);
            assert_eq!(t.to_string(), name);
            assert_eq!(t.name(), Some(name));
        }
        for n in 0..=255u8 {
            let t = IcmpType::from(n);
            assert_eq!(t.number(), n);
            assert_eq!(t.name().is_some(), !matches!(t, IcmpType::Unknown(_)));
        }
        assert_eq!(IcmpType::from(1), IcmpType::Unknown(1));
        assert_eq!(IcmpType::from(1).to_string(), "unknown type 1");
        assert_eq!(IcmpType::Unknown(8), IcmpType::Echo);
        assert!(IcmpType::TimeExceeded.is_error());
        assert!(!IcmpType::Echo.is_error());
    }

    #[test]
    fn echo_request_bytes() {
        let msg = build_echo_request(0x1234, 0x0001, &[]);
        assert_eq!(msg.len(), 8);
        assert_eq!(&msg[..2], &[8, 0]);
        assert_eq!(&msg[4..], &[0x12, 0x34, 0x00, 0x01]);
        // 0x0800 + 0x1234 + 0x0001 = 0x1a35, complemented 0xe5ca.
        assert_eq!(&msg[2..4], &[0xe5, 0xca]);
        assert_eq!(checksum(&msg), 0);
        // Odd-length payload.
        let msg = build_echo_request(1, 2, b"hello");
        assert_eq!(msg.len(), 13);
        assert_eq!(checksum(&msg), 0);
        let reply = build_echo_reply(1, 2, b"hello");
        assert_eq!(reply[0], 0);
        assert_eq!(checksum(&reply), 0);
    }

    #[test]
    fn echo_round_trip() {
        for (id, seq, data) in [
            (0u16, 0u16, &b""[..]),
            (0xffff, 0xfffe, b"x"),
            (7, 9, b"payload!"),
        ] {
            let msg = build_echo_request(id, seq, data);
            let e = parse_echo(&msg).unwrap();
            assert_eq!(e.ty, IcmpType::Echo);
            assert_eq!(e.code, 0);
            assert_eq!((e.id, e.seq, e.data), (id, seq, data));
            assert!(e.checksum_ok);
            assert_eq!(e.checksum, u16::from_be_bytes([msg[2], msg[3]]));
            let reply = build_echo_reply(id, seq, data);
            let e = parse_echo(&reply).unwrap();
            assert_eq!(e.ty, IcmpType::EchoReply);
            assert_eq!((e.id, e.seq, e.data), (id, seq, data));
        }
    }

    #[test]
    fn parse_echo_rejects_and_reports() {
        let msg = build_echo_request(1, 2, b"abc");
        for n in 0..8 {
            assert_eq!(
                parse_echo(&msg[..n]).unwrap_err(),
                EchoError::Truncated { needed: 8, got: n }
            );
        }
        // Exactly 8 bytes: no data, and the checksum no longer matches.
        let e = parse_echo(&msg[..8]).unwrap();
        assert!(e.data.is_empty());
        assert!(!e.checksum_ok);

        let mut bad = msg.clone();
        bad[0] = 3;
        let err = parse_echo(&bad).unwrap_err();
        assert_eq!(err, EchoError::NotEcho(IcmpType::DestinationUnreachable));
        assert!(err.to_string().contains("type 3"), "{err}");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidData);

        let mut corrupt = msg;
        corrupt[9] ^= 0xff;
        let e = parse_echo(&corrupt).unwrap();
        assert!(!e.checksum_ok, "a bad checksum is reported");
        assert_eq!(e.data, &corrupt[8..]);
    }

    #[test]
    fn parse_echo_never_panics_on_short_or_odd_input() {
        for len in 0..64 {
            for fill in [0u8, 8, 0xff] {
                let mut buf = vec![fill; len];
                if len > 0 {
                    buf[0] = if fill == 0xff { 0 } else { fill };
                }
                let _ = parse_echo(&buf);
            }
        }
    }
}
