//! Property tests of `ControlMessage::decode`: it never panics, whatever the
//! bytes and flags, and on buffers laid out as the kernel lays them out it
//! returns exactly the values put in, for the flags that are on, and
//! nothing for the flags that are off.
//!
//! The buffers are built by hand in the kernel's layout: a `cmsghdr`
//! (`cmsg_len: usize`, `cmsg_level: i32`, `cmsg_type: i32`, native endian),
//! the data at `CMSG_ALIGN(sizeof(cmsghdr))` (16 on 64-bit), and each message
//! padded to `CMSG_SPACE` (a multiple of `sizeof(long)`).

use std::mem::size_of;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipv4_reactor::{ControlFlags, ControlMessage};
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// The kernel's layout, by hand
// ---------------------------------------------------------------------------

const ALIGN: usize = size_of::<usize>();
const HDR: usize = size_of::<libc::cmsghdr>();

const fn align(len: usize) -> usize {
    (len + ALIGN - 1) & !(ALIGN - 1)
}

/// `CMSG_LEN(data_len)`.
const fn cmsg_len(data_len: usize) -> usize {
    align(HDR) + data_len
}

/// `CMSG_SPACE(data_len)`.
const fn cmsg_space(data_len: usize) -> usize {
    align(HDR) + align(data_len)
}

/// Appends one control message, padded to `CMSG_SPACE`.
fn put(buf: &mut Vec<u8>, level: i32, kind: i32, data: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&cmsg_len(data.len()).to_ne_bytes());
    buf.extend_from_slice(&level.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.resize(start + align(HDR), 0);
    buf.extend_from_slice(data);
    buf.resize(start + cmsg_space(data.len()), 0);
}

/// `SO_TIMESTAMPING` (the generic Linux value).
const SO_TIMESTAMPING: i32 = 37;

/// Level/type pairs the decoder knows.
fn known_pairs() -> [(i32, i32); 7] {
    [
        (libc::IPPROTO_IP, libc::IP_TTL),
        (libc::IPPROTO_IP, libc::IP_TOS),
        (libc::IPPROTO_IP, libc::IP_PKTINFO),
        (libc::SOL_SOCKET, libc::SO_RXQ_OVFL),
        (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS),
        (libc::SOL_SOCKET, SO_TIMESTAMPING),
        (libc::IPPROTO_UDP, libc::UDP_GRO),
    ]
}

/// Appends a `struct timespec { time_t tv_sec; long tv_nsec; }`.
fn put_timespec(data: &mut Vec<u8>, (sec, nsec): (i64, i64)) {
    let start = data.len();
    data.extend_from_slice(&(sec as libc::time_t).to_ne_bytes());
    data.extend_from_slice(&(nsec as libc::c_long).to_ne_bytes());
    data.resize(start + size_of::<libc::timespec>(), 0);
}

/// What the decoder makes of a timespec: `None` for a negative or
/// out-of-range value, and for zero (the kernel's "no stamp").
fn timespec_time((sec, nsec): (i64, i64)) -> Option<SystemTime> {
    let valid = sec >= 0 && (0..1_000_000_000).contains(&nsec) && (sec, nsec) != (0, 0);
    valid.then(|| UNIX_EPOCH + Duration::new(sec as u64, nsec as u32))
}

#[test]
fn layout_matches_libc_and_the_kernel() {
    assert_eq!(size_of::<libc::in_pktinfo>(), 12);
    // CMSG_LEN and CMSG_SPACE, worked out by hand for 64-bit Linux (a
    // 16-byte cmsghdr, 8-byte alignment) rather than asked of libc, whose
    // macros cannot be called from safe code: (data length, CMSG_LEN,
    // CMSG_SPACE). The named ones are the x86-64 sizes of
    // /work/shared/docs/linux-facts.md.
    #[cfg(target_pointer_width = "64")]
    {
        assert_eq!(HDR, 16);
        assert_eq!(ALIGN, 8);
        let table: [(usize, usize, usize); 9] = [
            (0, 16, 16),
            (1, 17, 24),  // IP_TOS
            (4, 20, 24),  // IP_TTL, SO_RXQ_OVFL, UDP_GRO
            (12, 28, 32), // IP_PKTINFO
            (16, 32, 32), // SO_TIMESTAMPNS
            (17, 33, 40),
            (48, 64, 64), // SO_TIMESTAMPING
            (100, 116, 120),
            (101, 117, 120),
        ];
        for (n, len, space) in table {
            assert_eq!(cmsg_len(n), len, "CMSG_LEN({n})");
            assert_eq!(cmsg_space(n), space, "CMSG_SPACE({n})");
        }
    }
    // The values the kernel uses.
    assert_eq!(
        (
            libc::IPPROTO_IP,
            libc::IP_TOS,
            libc::IP_TTL,
            libc::IP_PKTINFO
        ),
        (0, 1, 2, 8)
    );
    assert_eq!((libc::SOL_SOCKET, libc::SO_RXQ_OVFL), (1, 40));
}

// ---------------------------------------------------------------------------
// Messages with known values
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Msg {
    /// `IP_TTL`: an int (0-255 from the kernel; any int here).
    Ttl(i32),
    /// `IP_TOS`: one byte.
    Tos(u8),
    /// `IP_PKTINFO`: `in_pktinfo { ipi_ifindex, ipi_spec_dst, ipi_addr }`.
    Pktinfo {
        ifindex: u32,
        spec_dst: [u8; 4],
        addr: [u8; 4],
    },
    /// `SO_RXQ_OVFL`: a u32.
    Drops(u32),
    /// `SO_TIMESTAMPNS`: a timespec (any values, valid or not).
    Timestamp((i64, i64)),
    /// `SO_TIMESTAMPING`: three timespecs (software, legacy, hardware).
    Timestamping([(i64, i64); 3]),
    /// `UDP_GRO`: an int.
    Gro(i32),
    /// Anything the decoder does not know.
    Unknown {
        level: i32,
        kind: i32,
        data: Vec<u8>,
    },
}

impl Msg {
    fn put(&self, buf: &mut Vec<u8>) {
        match self {
            Msg::Ttl(v) => put(buf, libc::IPPROTO_IP, libc::IP_TTL, &v.to_ne_bytes()),
            Msg::Tos(v) => put(buf, libc::IPPROTO_IP, libc::IP_TOS, &[*v]),
            Msg::Pktinfo {
                ifindex,
                spec_dst,
                addr,
            } => {
                let mut data = Vec::with_capacity(12);
                data.extend_from_slice(&ifindex.to_ne_bytes());
                data.extend_from_slice(spec_dst);
                data.extend_from_slice(addr);
                put(buf, libc::IPPROTO_IP, libc::IP_PKTINFO, &data);
            }
            Msg::Drops(v) => put(buf, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &v.to_ne_bytes()),
            Msg::Timestamp(ts) => {
                let mut data = Vec::new();
                put_timespec(&mut data, *ts);
                put(buf, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &data);
            }
            Msg::Timestamping(stamps) => {
                let mut data = Vec::new();
                for ts in stamps {
                    put_timespec(&mut data, *ts);
                }
                put(buf, libc::SOL_SOCKET, SO_TIMESTAMPING, &data);
            }
            Msg::Gro(v) => put(buf, libc::IPPROTO_UDP, libc::UDP_GRO, &v.to_ne_bytes()),
            Msg::Unknown { level, kind, data } => put(buf, *level, *kind, data),
        }
    }
}

fn unknown_msg() -> impl Strategy<Value = Msg> {
    let level = prop_oneof![
        Just(libc::IPPROTO_IP),
        Just(libc::SOL_SOCKET),
        Just(libc::IPPROTO_UDP),
        Just(libc::IPPROTO_IPV6),
        Just(libc::SOL_RAW),
        any::<i32>(),
    ];
    (
        level,
        prop_oneof![0..64i32, any::<i32>()],
        vec(any::<u8>(), 0..40),
    )
        .prop_filter("not a message the decoder knows", |(level, kind, _)| {
            !known_pairs().contains(&(*level, *kind))
        })
        .prop_map(|(level, kind, data)| Msg::Unknown { level, kind, data })
}

/// The values put in a buffer, at most one message of each known kind.
#[derive(Debug, Clone)]
struct Known {
    ttl: Option<i32>,
    tos: Option<u8>,
    pktinfo: Option<(u32, [u8; 4], [u8; 4])>,
    drops: Option<u32>,
    timestamp: Option<(i64, i64)>,
    timestamping: Option<[(i64, i64); 3]>,
    gro: Option<i32>,
}

/// Mostly plausible times, sometimes zero ("no stamp"), sometimes garbage.
fn timespec() -> impl Strategy<Value = (i64, i64)> {
    prop_oneof![
        3 => (0..4_000_000_000i64, 0..1_000_000_000i64),
        1 => Just((0, 0)),
        1 => (any::<i64>(), any::<i64>()),
    ]
}

fn known() -> impl Strategy<Value = Known> {
    let ttl = prop_oneof![3 => 0..=255i32, 1 => any::<i32>()];
    let gro = prop_oneof![3 => 1..=65535i32, 1 => any::<i32>()];
    (
        proptest::option::of(ttl),
        proptest::option::of(any::<u8>()),
        proptest::option::of(any::<(u32, [u8; 4], [u8; 4])>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(timespec()),
        proptest::option::of([timespec(), timespec(), timespec()]),
        proptest::option::of(gro),
    )
        .prop_map(
            |(ttl, tos, pktinfo, drops, timestamp, timestamping, gro)| Known {
                ttl,
                tos,
                pktinfo,
                drops,
                timestamp,
                timestamping,
                gro,
            },
        )
}

impl Known {
    fn messages(&self) -> Vec<Msg> {
        let mut out = Vec::new();
        out.extend(self.ttl.map(Msg::Ttl));
        out.extend(self.tos.map(Msg::Tos));
        out.extend(self.pktinfo.map(|(ifindex, spec_dst, addr)| Msg::Pktinfo {
            ifindex,
            spec_dst,
            addr,
        }));
        out.extend(self.drops.map(Msg::Drops));
        out.extend(self.timestamp.map(Msg::Timestamp));
        out.extend(self.timestamping.map(Msg::Timestamping));
        out.extend(self.gro.map(Msg::Gro));
        out
    }

    /// The software stamps a decoder may report: SO_TIMESTAMPNS's and
    /// SO_TIMESTAMPING's first timespec (a cut buffer may hold either).
    fn software_stamps(&self) -> [Option<SystemTime>; 2] {
        [
            self.timestamp.and_then(timespec_time),
            self.timestamping.and_then(|[sw, _, _]| timespec_time(sw)),
        ]
    }

    /// What `decode(buf, flags)` must return.
    fn expected(&self, flags: ControlFlags) -> ControlMessage {
        let on = |f: ControlFlags| flags.contains(f);
        let mut cm = ControlMessage::default();
        if on(ControlFlags::TTL) {
            cm.ttl = self.ttl.and_then(|v| u8::try_from(v).ok());
        }
        if on(ControlFlags::TOS) {
            cm.tos = self.tos;
        }
        if let Some((ifindex, spec_dst, addr)) = self.pktinfo {
            if on(ControlFlags::DST) {
                cm.dst = Some(Ipv4Addr::from(addr));
            }
            if on(ControlFlags::INTERFACE) {
                cm.ifindex = Some(ifindex);
            }
            if on(ControlFlags::LOCAL) {
                cm.local = Some(Ipv4Addr::from(spec_dst));
            }
        }
        if on(ControlFlags::DROPS) {
            cm.drops = self.drops;
        }
        // The software stamp: SO_TIMESTAMPNS's when TIMESTAMP is on and it
        // is valid, else SO_TIMESTAMPING's first timespec when TIMESTAMPING
        // is on, whatever their order. The hardware stamp is the third.
        let ns = self.timestamp.filter(|_| on(ControlFlags::TIMESTAMP));
        let ing = self.timestamping.filter(|_| on(ControlFlags::TIMESTAMPING));
        cm.timestamp = ns
            .and_then(timespec_time)
            .or_else(|| ing.and_then(|[sw, _, _]| timespec_time(sw)));
        cm.hw_timestamp = ing.and_then(|[_, _, hw]| timespec_time(hw));
        if on(ControlFlags::GRO) {
            cm.gro_segment = self
                .gro
                .and_then(|v| u16::try_from(v).ok())
                .filter(|&s| s > 0);
        }
        // SRC is the message name, never a control message.
        cm
    }
}

/// A buffer with the known messages and some unknown ones, in a random
/// order; sometimes without the last message's trailing padding (the
/// kernel's `msg_controllen` may stop at `CMSG_LEN`).
fn well_formed() -> impl Strategy<Value = (Known, Vec<Msg>, bool)> {
    (known(), vec(unknown_msg(), 0..4), any::<bool>()).prop_flat_map(|(known, unknown, trim)| {
        let mut msgs = known.messages();
        msgs.extend(unknown);
        (Just(known), Just(msgs).prop_shuffle(), Just(trim))
    })
}

fn build(msgs: &[Msg], trim_last_padding: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut last_len = 0;
    for m in msgs {
        let start = buf.len();
        m.put(&mut buf);
        last_len = start + usize::from_ne_bytes(buf[start..start + ALIGN].try_into().unwrap());
    }
    if trim_last_padding && !msgs.is_empty() {
        buf.truncate(last_len);
    }
    buf
}

fn flags() -> impl Strategy<Value = ControlFlags> {
    any::<u32>().prop_map(ControlFlags::from_bits_truncate)
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    // Failures print their minimal input; no regression file is written
    // into the source tree.
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary bytes and flags: no panic, and nothing asked for is made up
    /// from flags that are off.
    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..256), flags in flags()) {
        let cm = ControlMessage::decode(&bytes, flags);
        let all = ControlMessage::decode(&bytes, ControlFlags::ALL);
        prop_assert!(cm.ttl.is_none() || flags.contains(ControlFlags::TTL));
        prop_assert!(cm.tos.is_none() || flags.contains(ControlFlags::TOS));
        prop_assert!(cm.dst.is_none() || flags.contains(ControlFlags::DST));
        prop_assert!(cm.ifindex.is_none() || flags.contains(ControlFlags::INTERFACE));
        prop_assert!(cm.local.is_none() || flags.contains(ControlFlags::LOCAL));
        prop_assert!(
            cm.timestamp.is_none()
                || flags.intersects(ControlFlags::TIMESTAMP | ControlFlags::TIMESTAMPING)
        );
        prop_assert!(cm.hw_timestamp.is_none() || flags.contains(ControlFlags::TIMESTAMPING));
        prop_assert!(cm.drops.is_none() || flags.contains(ControlFlags::DROPS));
        prop_assert!(cm.gro_segment.is_none() || flags.contains(ControlFlags::GRO));
        prop_assert!(cm.src.is_none(), "SRC never comes from control data");
        // What a subset of flags finds, all flags find too.
        if cm.ttl.is_some() { prop_assert_eq!(cm.ttl, all.ttl); }
        if cm.dst.is_some() { prop_assert_eq!(cm.dst, all.dst); }
    }

    /// Headers that look like the known messages but with any length and
    /// any data: no panic.
    #[test]
    fn decode_never_panics_on_known_kinds_with_bad_lengths(
        parts in vec(
            (
                prop_oneof![0..80usize, Just(usize::MAX), any::<usize>()],
                prop::sample::select(known_pairs().to_vec()),
                vec(any::<u8>(), 0..40),
            ),
            0..6,
        ),
        cut in any::<prop::sample::Index>(),
        flags in flags(),
    ) {
        let mut buf = Vec::new();
        for (len, (level, kind), data) in &parts {
            buf.extend_from_slice(&len.to_ne_bytes());
            buf.extend_from_slice(&level.to_ne_bytes());
            buf.extend_from_slice(&kind.to_ne_bytes());
            buf.resize(buf.len().next_multiple_of(ALIGN), 0);
            buf.extend_from_slice(data);
        }
        let _ = ControlMessage::decode(&buf, flags);
        let n = cut.index(buf.len() + 1);
        let _ = ControlMessage::decode(&buf[..n], flags);
    }

    /// Well-formed buffers: exactly the values put in, for the flags that
    /// are on; `None` for the rest.
    #[test]
    fn decode_returns_exactly_what_was_put_in((known, msgs, trim) in well_formed(), flags in flags()) {
        let buf = build(&msgs, trim);
        let cm = ControlMessage::decode(&buf, flags);
        prop_assert_eq!(cm, known.expected(flags), "messages {:?}", msgs);

        // Every flag on: every value present (kernel-range values).
        let all = ControlMessage::decode(&buf, ControlFlags::ALL);
        prop_assert_eq!(all, known.expected(ControlFlags::ALL));
        // No flag: nothing.
        prop_assert!(ControlMessage::decode(&buf, ControlFlags::NONE).is_empty());

        // The decoder reads bytes, not aligned words: the same buffer at an
        // odd address decodes the same.
        let mut shifted = vec![0u8; buf.len() + 1];
        shifted[1..].copy_from_slice(&buf);
        prop_assert_eq!(ControlMessage::decode(&shifted[1..], flags), cm);

        // A cut buffer (MSG_CTRUNC) never panics and never invents values:
        // whatever it finds is what was put in.
        for n in 0..buf.len() {
            let part = ControlMessage::decode(&buf[..n], flags);
            for (got, want) in [
                (part.ttl.map(u64::from), cm.ttl.map(u64::from)),
                (part.tos.map(u64::from), cm.tos.map(u64::from)),
                (part.ifindex.map(u64::from), cm.ifindex.map(u64::from)),
                (part.drops.map(u64::from), cm.drops.map(u64::from)),
                (part.gro_segment.map(u64::from), cm.gro_segment.map(u64::from)),
            ] {
                prop_assert!(got.is_none() || got == want, "cut at {}: {:?} vs {:?}", n, got, want);
            }
            prop_assert!(part.dst.is_none() || part.dst == cm.dst);
            prop_assert!(part.local.is_none() || part.local == cm.local);
            prop_assert!(
                part.timestamp.is_none() || known.software_stamps().contains(&part.timestamp),
                "cut at {}: timestamp {:?}", n, part.timestamp
            );
            prop_assert!(part.hw_timestamp.is_none() || part.hw_timestamp == cm.hw_timestamp);
        }
    }
}

/// The kernel's own order and values, as one buffer (SOL_SOCKET first, then
/// IP level), decoded with every flag.
#[test]
fn kernel_ordered_buffer_decodes() {
    let mut buf = Vec::new();
    Msg::Drops(7).put(&mut buf);
    Msg::Pktinfo {
        ifindex: 1,
        spec_dst: [127, 0, 0, 1],
        addr: [239, 255, 0, 1],
    }
    .put(&mut buf);
    Msg::Ttl(64).put(&mut buf);
    Msg::Tos(0x28).put(&mut buf);
    assert_eq!(buf.len(), 24 + 32 + 24 + 24);
    let cm = ControlMessage::decode(&buf, ControlFlags::ALL);
    assert_eq!(cm.drops, Some(7));
    assert_eq!(cm.ifindex, Some(1));
    assert_eq!(cm.local, Some(Ipv4Addr::LOCALHOST));
    assert_eq!(cm.dst, Some(Ipv4Addr::new(239, 255, 0, 1)));
    assert_eq!(cm.ttl, Some(64));
    assert_eq!(cm.tos, Some(0x28));
    assert_eq!(cm.timestamp, None);
    assert_eq!(cm.hw_timestamp, None);
}
