//! Property tests for `ipv4_reactor::header`: parsing never panics, and emit
//! then parse reproduces every field.

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

    #[test]
    fn protocol_round_trips(n in any::<u8>()) {
        prop_assert_eq!(u8::from(Protocol::from(n)), n);
    }
}
