//! Property tests for `ipv4_reactor::header`: parsing never panics, emit
//! then parse reproduces every field, and no sequence of setters breaks a
//! checked `HeaderView`.

use std::net::Ipv4Addr;

use ipv4_reactor::header::{
    checksum, Flags, Header, HeaderError, HeaderView, Protocol, MAX_FRAG_OFFSET, MAX_OPTIONS_LEN,
    MIN_HEADER_LEN,
};
use proptest::prelude::*;

/// Calls every accessor of a checked view and checks what they promise.
fn exercise_view(bytes: &[u8]) {
    let Ok(view) = HeaderView::new_checked(bytes) else {
        return;
    };
    assert_eq!(view.version(), 4);
    assert!(view.ihl() >= 5);
    let hl = view.header_len();
    assert!((MIN_HEADER_LEN..=bytes.len()).contains(&hl));
    assert_eq!(view.options().len(), hl - MIN_HEADER_LEN);
    assert_eq!(view.options(), &bytes[MIN_HEADER_LEN..hl]);
    assert_eq!(view.tos(), (view.dscp() << 2) | view.ecn());
    let _ = view.total_len();
    let _ = view.id();
    let flags = view.flags();
    assert_eq!(flags.bits() & !0b111, 0);
    assert_eq!(view.dont_fragment(), flags.dont_fragment());
    assert_eq!(view.more_fragments(), flags.more_fragments());
    assert!(view.frag_offset() <= MAX_FRAG_OFFSET);
    let _ = view.ttl();
    assert_eq!(u8::from(view.protocol()), bytes[9]);
    assert_eq!(view.checksum(), u16::from_be_bytes([bytes[10], bytes[11]]));
    assert_eq!(view.src().octets(), bytes[12..16]);
    assert_eq!(view.dst().octets(), bytes[16..20]);
    assert!(view.payload().len() <= bytes.len() - hl);
    let ok = view.verify_checksum();
    assert_eq!(ok, checksum(&bytes[..hl]) == 0);

    // Header::parse agrees with the view whenever it accepts the bytes.
    match Header::parse(bytes) {
        Ok((h, info)) => {
            assert_eq!(h, Header::from_view(&view));
            assert_eq!(info.checksum_ok, ok);
            assert_eq!(info.header_len, hl);
            assert_eq!(info.payload_range().end + info.trailing_len, bytes.len());
            assert_eq!(&bytes[info.payload_range()], view.payload());
            assert_eq!(h.header_len(), hl);
        }
        Err(HeaderError::TotalLenTooShort {
            total_len,
            header_len,
        }) => {
            assert!(total_len < header_len);
            assert_eq!(header_len, hl);
        }
        Err(HeaderError::TotalLenBeyondBuffer {
            total_len,
            buffer_len,
        }) => {
            assert!(total_len > buffer_len);
            assert_eq!(buffer_len, bytes.len());
        }
        Err(e) => panic!("the view accepted bytes that parse rejected with {e}"),
    }
}

/// Bytes that often look like an IPv4 header: version 4 in the first byte,
/// a total length near the buffer length.
fn ipv4ish() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(any::<u8>(), 20..100),
        0u8..16,
        prop::option::of(-4i32..4),
    )
        .prop_map(|(mut bytes, ihl, len_delta)| {
            bytes[0] = 0x40 | ihl;
            if let Some(d) = len_delta {
                let total = (bytes.len() as i32 + d).max(0) as u16;
                bytes[2..4].copy_from_slice(&total.to_be_bytes());
            }
            bytes
        })
}

/// Arbitrary valid headers, with 0 to 40 option bytes, and a payload length.
fn valid_header() -> impl Strategy<Value = (Header, usize)> {
    (
        (
            any::<u8>(),
            any::<u16>(),
            0u8..8,
            0..=MAX_FRAG_OFFSET,
            any::<u8>(),
        ),
        (any::<u8>(), any::<u32>(), any::<u32>(), any::<u16>()),
        proptest::collection::vec(any::<u8>(), 0..=MAX_OPTIONS_LEN),
        0usize..1500,
    )
        .prop_map(
            |((tos, id, flags, frag_offset, ttl), (proto, src, dst, stale_sum), options, plen)| {
                let mut h = Header::new(Ipv4Addr::from(src), Ipv4Addr::from(dst), proto.into());
                h.tos = tos;
                h.id = id;
                h.flags = Flags::from_bits_truncate(flags);
                h.frag_offset = frag_offset;
                h.ttl = ttl;
                h.checksum = stale_sum; // emit must ignore it
                h.options = options;
                h.set_payload_len(plen).unwrap();
                (h, plen)
            },
        )
}

/// One call of a `HeaderView` setter, with its argument.
#[derive(Debug, Clone)]
enum SetOp {
    Version(u8),
    Ihl(u8),
    HeaderLen(usize),
    Tos(u8),
    Dscp(u8),
    Ecn(u8),
    TotalLen(u16),
    Id(u16),
    Flags(u8),
    FragOffset(u16),
    Ttl(u8),
    Protocol(u8),
    Checksum(u16),
    Src(u32),
    Dst(u32),
    /// Writes these bytes at the start of `options_mut`, as many as fit.
    Options(Vec<u8>),
    FillChecksum,
}

/// Setter calls, with the length setters often given values in or near the
/// valid range and sometimes anything at all.
fn set_op() -> impl Strategy<Value = SetOp> {
    prop_oneof![
        prop_oneof![Just(4u8), any::<u8>()].prop_map(SetOp::Version),
        prop_oneof![0u8..20, any::<u8>()].prop_map(SetOp::Ihl),
        prop_oneof![
            (5usize..=15).prop_map(|ihl| ihl * 4),
            0usize..80,
            any::<usize>()
        ]
        .prop_map(SetOp::HeaderLen),
        any::<u8>().prop_map(SetOp::Tos),
        any::<u8>().prop_map(SetOp::Dscp),
        any::<u8>().prop_map(SetOp::Ecn),
        prop_oneof![0u16..100, any::<u16>()].prop_map(SetOp::TotalLen),
        any::<u16>().prop_map(SetOp::Id),
        any::<u8>().prop_map(SetOp::Flags),
        any::<u16>().prop_map(SetOp::FragOffset),
        any::<u8>().prop_map(SetOp::Ttl),
        any::<u8>().prop_map(SetOp::Protocol),
        any::<u16>().prop_map(SetOp::Checksum),
        any::<u32>().prop_map(SetOp::Src),
        any::<u32>().prop_map(SetOp::Dst),
        proptest::collection::vec(any::<u8>(), 0..=MAX_OPTIONS_LEN).prop_map(SetOp::Options),
        Just(SetOp::FillChecksum),
    ]
}

/// Random bytes of 20 to 80 that `new_checked` accepts: any IHL that fits,
/// and often a total length that fits too.
fn checked_bytes() -> impl Strategy<Value = Vec<u8>> {
    (20usize..=80)
        .prop_flat_map(|len| {
            (
                proptest::collection::vec(any::<u8>(), len),
                5..=(len / 4).min(15) as u8,
                prop::option::of(0..=len as u16),
            )
        })
        .prop_map(|(mut bytes, ihl, total)| {
            bytes[0] = 0x40 | ihl;
            if let Some(total) = total {
                bytes[2..4].copy_from_slice(&total.to_be_bytes());
            }
            bytes
        })
}

/// Applies `op` to a checked view and checks its result against what the
/// setter promises. A refused value leaves the bytes as they were.
fn apply(view: &mut HeaderView<&mut [u8]>, op: &SetOp) -> Result<(), TestCaseError> {
    let before = view.as_bytes().to_vec();
    let buffer_len = before.len();
    let refused = |view: &HeaderView<&mut [u8]>| -> Result<(), TestCaseError> {
        prop_assert_eq!(
            view.as_bytes(),
            &before[..],
            "a refused value changed the bytes"
        );
        Ok(())
    };
    match *op {
        SetOp::Version(v) => match view.set_version(v) {
            Ok(()) => prop_assert_eq!(v, 4),
            Err(e) => {
                prop_assert_ne!(v, 4);
                prop_assert_eq!(e, HeaderError::BadVersion(v));
                refused(view)?;
            }
        },
        SetOp::Ihl(ihl) => {
            let len = usize::from(ihl) * 4;
            let fits = (5..=15).contains(&ihl) && len <= buffer_len;
            match view.set_ihl(ihl) {
                Ok(()) => {
                    prop_assert!(fits, "IHL {} accepted in {} bytes", ihl, buffer_len);
                    prop_assert_eq!(view.ihl(), ihl);
                }
                Err(e) => {
                    prop_assert!(!fits);
                    prop_assert_eq!(
                        e,
                        HeaderError::BadHeaderLen {
                            header_len: len,
                            buffer_len
                        }
                    );
                    refused(view)?;
                }
            }
        }
        SetOp::HeaderLen(len) => {
            let fits = len % 4 == 0 && (20..=60).contains(&len) && len <= buffer_len;
            match view.set_header_len(len) {
                Ok(()) => {
                    prop_assert!(fits, "{} accepted in {} bytes", len, buffer_len);
                    prop_assert_eq!(view.header_len(), len);
                }
                Err(e) => {
                    prop_assert!(!fits);
                    prop_assert_eq!(
                        e,
                        HeaderError::BadHeaderLen {
                            header_len: len,
                            buffer_len
                        }
                    );
                    refused(view)?;
                }
            }
        }
        SetOp::Tos(v) => {
            view.set_tos(v);
            prop_assert_eq!(view.tos(), v);
        }
        SetOp::Dscp(v) => {
            let ecn = view.ecn();
            view.set_dscp(v);
            prop_assert_eq!(view.dscp(), v & 0x3f);
            prop_assert_eq!(view.ecn(), ecn);
        }
        SetOp::Ecn(v) => {
            let dscp = view.dscp();
            view.set_ecn(v);
            prop_assert_eq!(view.ecn(), v & 0b11);
            prop_assert_eq!(view.dscp(), dscp);
        }
        SetOp::TotalLen(v) => {
            view.set_total_len(v);
            prop_assert_eq!(view.total_len(), v);
        }
        SetOp::Id(v) => {
            view.set_id(v);
            prop_assert_eq!(view.id(), v);
        }
        SetOp::Flags(v) => {
            let off = view.frag_offset();
            view.set_flags(Flags::from_bits_truncate(v));
            prop_assert_eq!(view.flags(), Flags::from_bits_truncate(v));
            prop_assert_eq!(view.frag_offset(), off);
        }
        SetOp::FragOffset(v) => {
            let flags = view.flags();
            view.set_frag_offset(v);
            prop_assert_eq!(view.frag_offset(), v & MAX_FRAG_OFFSET);
            prop_assert_eq!(view.flags(), flags);
        }
        SetOp::Ttl(v) => {
            view.set_ttl(v);
            prop_assert_eq!(view.ttl(), v);
        }
        SetOp::Protocol(v) => {
            view.set_protocol(Protocol::from(v));
            prop_assert_eq!(u8::from(view.protocol()), v);
        }
        SetOp::Checksum(v) => {
            view.set_checksum(v);
            prop_assert_eq!(view.checksum(), v);
        }
        SetOp::Src(v) => {
            view.set_src(Ipv4Addr::from(v));
            prop_assert_eq!(view.src(), Ipv4Addr::from(v));
        }
        SetOp::Dst(v) => {
            view.set_dst(Ipv4Addr::from(v));
            prop_assert_eq!(view.dst(), Ipv4Addr::from(v));
        }
        SetOp::Options(ref bytes) => {
            let opts = view.options_mut();
            let n = bytes.len().min(opts.len());
            opts[..n].copy_from_slice(&bytes[..n]);
            prop_assert_eq!(&view.options()[..n], &bytes[..n]);
        }
        SetOp::FillChecksum => {
            view.fill_checksum();
            prop_assert!(view.verify_checksum());
        }
    }
    Ok(())
}

/// Calls every accessor of a view that must still be checked.
fn assert_view_works(view: &HeaderView<&mut [u8]>) -> Result<(), TestCaseError> {
    prop_assert_eq!(view.check(), Ok(()));
    prop_assert_eq!(view.version(), 4);
    let hl = view.header_len();
    prop_assert!((MIN_HEADER_LEN..=view.as_bytes().len()).contains(&hl));
    prop_assert_eq!(view.options().len(), hl - MIN_HEADER_LEN);
    let end = usize::from(view.total_len()).clamp(hl, view.as_bytes().len());
    prop_assert_eq!(view.payload(), &view.as_bytes()[hl..end]);
    prop_assert_eq!(
        view.verify_checksum(),
        checksum(&view.as_bytes()[..hl]) == 0
    );
    let _ = (view.tos(), view.id(), view.flags(), view.frag_offset());
    let _ = (view.ttl(), view.protocol(), view.checksum());
    let _ = (
        view.src(),
        view.dst(),
        view.dont_fragment(),
        view.more_fragments(),
    );
    let _ = Header::from_view(view);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        let _ = Header::parse(&bytes);
        exercise_view(&bytes);
    }

    #[test]
    fn parse_never_panics_on_ipv4ish_bytes(bytes in ipv4ish()) {
        let _ = Header::parse(&bytes);
        exercise_view(&bytes);
    }

    #[test]
    fn emit_then_parse_round_trips((header, plen) in valid_header(), trailing in 0usize..8) {
        let hl = header.header_len();
        prop_assert_eq!(hl % 4, 0);
        prop_assert!(hl <= 60);
        prop_assert_eq!(header.buffer_len(), hl);

        let mut packet = vec![0xa5; hl + plen + trailing];
        let n = header.emit(&mut packet).unwrap();
        prop_assert_eq!(n, hl);
        prop_assert_eq!(checksum(&packet[..n]), 0);
        prop_assert_eq!(&packet[..n], &header.to_bytes().unwrap()[..]);
        prop_assert!(packet[n..].iter().all(|&b| b == 0xa5), "emit wrote past the header");

        let (parsed, info) = Header::parse(&packet).unwrap();
        prop_assert!(info.checksum_ok);
        prop_assert_eq!(info.header_len, hl);
        prop_assert_eq!(info.payload_len, plen);
        prop_assert_eq!(info.trailing_len, trailing);

        let mut padded = header.options.clone();
        padded.resize(hl - 20, 0);
        prop_assert_eq!(&parsed.options, &padded);
        prop_assert_eq!(parsed.version, 4);
        prop_assert_eq!(parsed.tos, header.tos);
        prop_assert_eq!(parsed.total_len, header.total_len);
        prop_assert_eq!(parsed.id, header.id);
        prop_assert_eq!(parsed.flags, header.flags);
        prop_assert_eq!(parsed.frag_offset, header.frag_offset);
        prop_assert_eq!(parsed.ttl, header.ttl);
        prop_assert_eq!(parsed.protocol, header.protocol);
        prop_assert_eq!(parsed.src, header.src);
        prop_assert_eq!(parsed.dst, header.dst);
        prop_assert_eq!(parsed.checksum, u16::from_be_bytes([packet[10], packet[11]]));
        prop_assert_eq!(parsed.payload_len(), plen);

        // The whole struct, and emitting the parsed header gives the same bytes.
        let mut expected = header.clone();
        expected.options = padded;
        expected.checksum = parsed.checksum;
        prop_assert_eq!(&parsed, &expected);
        prop_assert_eq!(&parsed.to_bytes().unwrap()[..], &packet[..hl]);

        // The view reads the same fields.
        let view = HeaderView::new_checked(&packet[..]).unwrap();
        prop_assert!(view.verify_checksum());
        prop_assert_eq!(Header::from_view(&view), parsed);
        prop_assert_eq!(view.payload().len(), plen);
    }

    #[test]
    fn any_changed_header_byte_breaks_the_checksum(
        (header, _plen) in valid_header(),
        pos in 0usize..60,
        flip in 1u8..=255,
    ) {
        let mut bytes = header.to_bytes().unwrap();
        let pos = pos % bytes.len();
        // Changing the version, IHL or total length can make the bytes unparsable.
        prop_assume!(![0, 2, 3].contains(&pos));
        bytes[pos] ^= flip;
        let buf = {
            let mut b = bytes.clone();
            b.resize(usize::from(header.total_len).max(b.len()), 0);
            b
        };
        let (_, info) = Header::parse(&buf).unwrap();
        prop_assert!(!info.checksum_ok);
    }

    /// Issue 11 point 3: no setter sequence can make a checked view panic or
    /// fail its check, and `Header::parse` stays consistent with the view.
    #[test]
    fn setters_never_break_a_checked_view(
        mut bytes in checked_bytes(),
        ops in proptest::collection::vec(set_op(), 0..40),
        finish in any::<bool>(),
    ) {
        let buffer_len = bytes.len();
        {
            let mut view = HeaderView::new_checked(&mut bytes[..]).unwrap();
            for op in &ops {
                apply(&mut view, op)?;
                assert_view_works(&view)?;
            }
            if finish {
                // Make the bytes a whole, valid datagram.
                view.set_total_len(buffer_len as u16);
                view.fill_checksum();
                assert_view_works(&view)?;
            }
        }

        // The bytes are still a checked view, and parse agrees with it
        // (exercise_view checks every field and each parse error).
        let view = HeaderView::new_checked(&bytes[..]).unwrap();
        exercise_view(&bytes);
        let hl = view.header_len();
        let total = usize::from(view.total_len());
        let parsed = Header::parse(&bytes);
        prop_assert_eq!(parsed.is_ok(), (hl..=buffer_len).contains(&total));
        if finish {
            let (h, info) = parsed.unwrap();
            prop_assert!(info.checksum_ok);
            prop_assert_eq!(info.payload_len, buffer_len - hl);
            prop_assert_eq!(&h, &Header::from_view(&view));
            // The parsed header emits the same header bytes.
            prop_assert_eq!(&h.to_bytes().unwrap()[..], &bytes[..hl]);
        }
    }

    /// On a view from `new_unchecked` over any bytes, the length setters
    /// never panic, and once `check` passes every setter keeps it passing.
    #[test]
    fn unchecked_view_length_setters_never_panic(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..80),
        ops in proptest::collection::vec(set_op(), 0..40),
    ) {
        let buffer_len = bytes.len();
        let mut view = HeaderView::new_unchecked(&mut bytes[..]);
        let mut checked = view.check().is_ok();
        for op in &ops {
            if checked {
                apply(&mut view, op)?;
                assert_view_works(&view)?;
                continue;
            }
            match *op {
                SetOp::Ihl(ihl) => {
                    let ok = view.set_ihl(ihl).is_ok();
                    prop_assert_eq!(
                        ok,
                        (5..=15).contains(&ihl) && usize::from(ihl) * 4 <= buffer_len
                    );
                }
                SetOp::HeaderLen(len) => {
                    let ok = view.set_header_len(len).is_ok();
                    prop_assert_eq!(
                        ok,
                        len % 4 == 0 && (20..=60).contains(&len) && len <= buffer_len
                    );
                }
                SetOp::Version(v) if buffer_len > 0 => {
                    prop_assert_eq!(view.set_version(v).is_ok(), v == 4);
                }
                // The other setters touch fixed fields: fine on 20 bytes.
                ref op if buffer_len >= MIN_HEADER_LEN && !matches!(
                    op,
                    SetOp::Options(_) | SetOp::FillChecksum
                ) => {
                    apply(&mut view, op)?;
                }
                _ => {}
            }
            checked = view.check().is_ok();
        }
    }

    #[test]
    fn protocol_round_trips(n in any::<u8>()) {
        prop_assert_eq!(u8::from(Protocol::from(n)), n);
    }
}
