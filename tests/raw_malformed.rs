//! Raw reads that must not go wrong: malformed input is an error, never a
//! panic; a buffer shorter than the IP header reports truncation; and the
//! reactor delivers whole raw packets.
//!
//! Every test that needs a raw socket first checks that it can make one;
//! without CAP_NET_RAW it says so (`util::skipped_needs_root`) and returns.
//! CI runs as root and fails on that line, so there every test really runs.
//!
//! Network safety: every packet goes to 127.0.0.0/8 (or stays inside a
//! private namespace a test made). Raw sockets see every packet of their
//! protocol on the host, and tests run in parallel, so each test picks its
//! own packets out by ICMP id, payload marker or destination address.

mod util;

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipv4_reactor::header::{Header, HeaderError, Protocol, MAX_OPTIONS_LEN};
use ipv4_reactor::reactor::{Context, Reactor};
use ipv4_reactor::{ControlFlags, ControlMessage, Packet, PacketConn, RawConn, RawPacket};
use util::raw::{is_timeout, marker, read_raw_until, EXP};
use util::{can_use_raw_sockets, DEADLINE};

#[test]
fn malformed_input_is_an_error_never_a_panic() {
    if !can_use_raw_sockets("malformed_input_is_an_error_never_a_panic") {
        return;
    }
    let reader = RawConn::new(EXP, Ipv4Addr::UNSPECIFIED).unwrap();
    let writer = RawConn::new(EXP, Ipv4Addr::LOCALHOST).unwrap();
    let base = Header::new(
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::LOCALHOST,
        Protocol::from(EXP),
    );

    // Options: 41 bytes is one too many.
    let mut h = base.clone();
    h.options = vec![1; MAX_OPTIONS_LEN + 1];
    let err = writer.write_to(&h, b"x", None).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("41"), "{err}");
    // Other bad headers.
    let mut h = base.clone();
    h.version = 6;
    assert!(writer.write_to(&h, b"x", None).is_err());
    let mut h = base.clone();
    h.frag_offset = 0x2000;
    assert!(writer.write_to(&h, b"x", None).is_err());
    let err = writer.write_to(&base, &vec![0u8; 65516], None).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

    // 40 bytes of options (NOPs) are fine and arrive as written.
    let mut h = base.clone();
    h.options = vec![1; MAX_OPTIONS_LEN];
    let payload = marker("options", 1);
    assert_eq!(
        writer.write_to(&h, &payload, None).unwrap(),
        60 + payload.len()
    );
    let got = read_raw_until(&reader, DEADLINE, |h, p, _| {
        (p == payload.as_slice()).then(|| h.clone())
    })
    .expect("the packet with 40 bytes of options did not arrive");
    assert_eq!(got.options, vec![1; MAX_OPTIONS_LEN]);
    assert_eq!(got.header_len(), 60);

    // Header::parse of every truncation of a real packet.
    let mut h = base.clone();
    h.options = vec![0x94, 0x04, 0, 0];
    h.set_payload_len(10).unwrap();
    let mut packet = h.to_bytes().unwrap();
    packet.extend_from_slice(&[7; 10]);
    assert!(Header::parse(&packet).is_ok());
    for n in 0..packet.len() {
        let err = Header::parse(&packet[..n]).unwrap_err();
        match n {
            0..20 => assert_eq!(err, HeaderError::Truncated { needed: 20, got: n }),
            20..24 => assert!(matches!(err, HeaderError::IhlBeyondBuffer { .. }), "{err}"),
            _ => assert!(
                matches!(err, HeaderError::TotalLenBeyondBuffer { .. }),
                "{err}"
            ),
        }
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
    }

    // A read buffer too small for the packet: cut payloads are reported by
    // their flags; a buffer that cannot even hold the header is an error.
    // Recognised by its first 4 bytes only (all a 24-byte buffer holds
    // after the header): "cut-", which no other marker of this file's
    // tests starts with ("short/..." did collide with "short-buffer").
    let payload = marker("cut-buffer", 1);
    writer.write_to(&base, &payload, None).unwrap();
    writer.write_to(&base, &payload, None).unwrap();
    reader
        .socket()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut cut_seen = false;
    let mut short_seen = false;
    while !(cut_seen && short_seen) && Instant::now() < deadline {
        if !cut_seen {
            let mut small = [0u8; 24];
            match reader.read_from(&mut small) {
                Ok(RawPacket {
                    header: h,
                    payload: p,
                    meta,
                    ..
                }) => {
                    if h.protocol == Protocol::from(EXP) && p == &payload[..4] {
                        assert!(meta.truncated());
                        assert_eq!(meta.len, 24, "the bytes read, header included");
                        assert_eq!(usize::from(h.total_len), 20 + payload.len());
                        cut_seen = true;
                    }
                }
                Err(e) if is_timeout(&e) => {}
                // Another packet whose header (with options) needs more
                // than 24 bytes: cut, not malformed.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
                Err(e) => panic!("a cut packet should be Ok with flags: {e}"),
            }
        } else {
            let mut tiny = [0u8; 8];
            match reader.read_from(&mut tiny) {
                Ok(p) => panic!("8 bytes cannot hold a header, got {}", p.header),
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    // The kernel cut the packet: reported as truncated.
                    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
                    assert!(e.to_string().contains("truncated"), "{e}");
                    short_seen = true;
                }
            }
        }
    }
    assert!(cut_seen, "never read our packet into a 24-byte buffer");
    assert!(short_seen, "never read a packet into an 8-byte buffer");
}

// ---------------------------------------------------------------------------
// A read buffer shorter than the IP header
// ---------------------------------------------------------------------------

/// Reads from `read` until it fails with something other than a timeout
/// (packets it accepts are other tests' traffic, or fit); panics after
/// `DEADLINE`.
fn first_error<T>(mut read: impl FnMut() -> io::Result<T>) -> io::Error {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match read() {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return e,
        }
        assert!(Instant::now() < deadline, "no read failed");
    }
}

fn assert_truncated_error(e: &io::Error, buf_len: usize) {
    assert_eq!(
        e.kind(),
        io::ErrorKind::InvalidInput,
        "a packet cut by a short buffer is not malformed: {e}"
    );
    let text = e.to_string();
    assert!(text.contains("truncated"), "{text}");
    assert!(text.contains(&format!("{buf_len}-byte buffer")), "{text}");
}

#[test]
fn a_buffer_shorter_than_the_ip_header_reports_truncation_not_malformed() {
    if !can_use_raw_sockets("a_buffer_shorter_than_the_ip_header_reports_truncation_not_malformed")
    {
        return;
    }
    let raw = RawConn::new(EXP, Ipv4Addr::LOCALHOST).unwrap();
    let ip4 = PacketConn::ip4(EXP, Ipv4Addr::LOCALHOST).unwrap();
    for s in [raw.socket(), ip4.socket()] {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    let writer = RawConn::new(EXP, Ipv4Addr::LOCALHOST).unwrap();
    let mut h = Header::new(
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::LOCALHOST,
        Protocol::from(EXP),
    );
    writer.write_to(&h, &marker("short", 1), None).unwrap();
    // 10 bytes: not even the fixed header.
    let e = first_error(|| raw.read_from(&mut [0u8; 10]).map(drop));
    assert_truncated_error(&e, 10);
    let e = first_error(|| ip4.recv_from(&mut [0u8; 10]));
    assert_truncated_error(&e, 10);

    // 22 bytes and a 24-byte header (4 bytes of options): the fixed part
    // fits, the options do not.
    h.options = vec![1, 1, 1, 0];
    writer.write_to(&h, &marker("short", 2), None).unwrap();
    let e = first_error(|| raw.read_from(&mut [0u8; 22]).map(drop));
    assert_truncated_error(&e, 22);
    let e = first_error(|| ip4.recv_from(&mut [0u8; 22]));
    assert_truncated_error(&e, 22);

    // A buffer that holds the header reads it, with the payload cut.
    writer.write_to(&h, &marker("short", 3), None).unwrap();
    let mut buf = [0u8; 30];
    let deadline = Instant::now() + DEADLINE;
    loop {
        match raw.read_from(&mut buf) {
            Ok(p) if p.header.options == h.options => {
                assert!(p.meta.truncated());
                assert_eq!(p.payload.len(), 6);
                assert_eq!(p.meta.len, 30);
                break;
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            // Another test of this binary, running beside this one, sends
            // the same protocol with a longer header: its packet does not
            // fit 30 bytes. Not ours; read on.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "the 30-byte read never came");
    }
}

// ---------------------------------------------------------------------------
// RawConn in the reactor
// ---------------------------------------------------------------------------

#[test]
fn reactor_delivers_whole_raw_packets() {
    if !can_use_raw_sockets("reactor_delivers_whole_raw_packets") {
        return;
    }
    let raw = RawConn::new(EXP, Ipv4Addr::UNSPECIFIED).unwrap();
    raw.set_control_message(ControlFlags::DST, true).unwrap();
    let mut reactor = Reactor::builder().build().unwrap();
    let (tx, rx) = mpsc::channel::<(Vec<u8>, ControlMessage)>();
    reactor
        .register(
            raw.into_packet_conn(),
            move |p: &Packet<'_>, _ctx: &mut Context<'_>| {
                let _ = tx.send((p.payload.to_vec(), p.cm));
            },
        )
        .unwrap();

    let writer = RawConn::new(EXP, Ipv4Addr::LOCALHOST).unwrap();
    let payloads: Vec<Vec<u8>> = (0..3).map(|i| marker("reactor", i)).collect();
    for (i, p) in payloads.iter().enumerate() {
        let mut h = Header::new(
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
            Protocol::from(EXP),
        );
        h.ttl = 30 + i as u8;
        writer.write_to(&h, p, None).unwrap();
    }

    let mut got: HashMap<usize, (Header, ControlMessage)> = HashMap::new();
    let deadline = Instant::now() + DEADLINE;
    while got.len() < payloads.len() && Instant::now() < deadline {
        reactor.turn(Some(Duration::from_millis(50))).unwrap();
        while let Ok((bytes, cm)) = rx.try_recv() {
            // Every packet of the raw socket starts with its IPv4 header.
            let (h, info) = Header::parse(&bytes)
                .unwrap_or_else(|e| panic!("a raw packet from the reactor: {e}"));
            assert!(info.checksum_ok, "bad header checksum in {h}");
            let body = &bytes[info.payload_range()];
            if let Some(i) = payloads.iter().position(|p| p.as_slice() == body) {
                got.insert(i, (h, cm));
            }
        }
    }
    assert_eq!(got.len(), 3, "the reactor delivered {} of 3", got.len());
    for (i, (h, cm)) in &got {
        assert_eq!(h.protocol, Protocol::from(EXP));
        assert_eq!(h.src, Ipv4Addr::LOCALHOST);
        assert_eq!(h.dst, Ipv4Addr::LOCALHOST);
        assert_eq!(h.ttl, 30 + *i as u8);
        assert_eq!(usize::from(h.total_len), 20 + payloads[*i].len());
        assert_eq!(cm.dst, Some(Ipv4Addr::LOCALHOST));
    }
}
