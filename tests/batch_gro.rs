//! GSO sends and GRO receives through `RecvBatch`: segments arrive as the
//! sent datagrams, coalesced buffers split exactly, cut buffers are
//! reported, and the counters count datagrams. Where lo does not coalesce,
//! the GRO-only checks are skipped, loudly, through `util::skipped` (CI fails then).
//!
//! Network safety: unicast UDP to 127.0.0.1 only, through `util::send`.

mod util;

use std::io;

use ipv4_reactor::{ControlFlags, RecvBatch};
use util::batch::{assert_drained, recv_n, recv_until, seq_payload};
use util::{addr, send, skipped, udp};

/// The datagrams a GSO send of `buf` in `seg`-byte segments is split into.
fn chunks(buf: &[u8], seg: usize) -> Vec<Vec<u8>> {
    buf.chunks(seg).map(<[u8]>::to_vec).collect()
}

#[test]
fn gso_without_gro_arrives_as_separate_datagrams() {
    let flags = ControlFlags::SRC | ControlFlags::TTL;
    let rx = udp();
    rx.set_control_flags(flags).unwrap();
    let tx = udp();
    let dst = addr(&rx);
    let mut batch = RecvBatch::new(64, 65536, flags).unwrap();
    for (len, seg) in [
        (9500usize, 1000u16),
        (3000, 1000),
        (700, 1000),
        (56_100, 1400),
    ] {
        let buf = seq_payload(len as u64, len);
        assert_eq!(tx.send_segments(&buf, seg, dst).unwrap(), len);
        let want = chunks(&buf, usize::from(seg));
        let got = recv_n(&mut batch, &rx, want.len());
        for (i, (g, w)) in got.packets.iter().zip(&want).enumerate() {
            assert_eq!(&g.payload, w, "{len}/{seg}: datagram {i}");
            assert_eq!(g.cm.gro_segment, None);
            assert_eq!(g.segments, vec![w.clone()]);
            assert_eq!(g.src, Some(addr(&tx)));
        }
        assert_drained(&mut batch, &rx);
    }
    assert_eq!(
        tx.send_segments(b"x", 0, dst).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn gro_coalesced_buffers_split_into_the_sent_datagrams() {
    let flags = ControlFlags::GRO | ControlFlags::SRC;
    let rx = udp();
    rx.set_control_flags(flags).unwrap();
    let tx = udp();
    let dst = addr(&rx);
    let mut batch = RecvBatch::new(64, 65536, flags).unwrap();
    let mut coalesced_buffers = 0;
    let mut packets_before = 0;
    for (len, seg) in [
        (9500usize, 1000u16),
        (3000, 1000),
        (700, 1000),
        (56_100, 1400),
    ] {
        let buf = seq_payload(len as u64, len);
        assert_eq!(tx.send_segments(&buf, seg, dst).unwrap(), len);
        let want = chunks(&buf, usize::from(seg));
        let got = recv_until(&mut batch, &rx, |r| r.bytes() >= len);
        assert_eq!(got.bytes(), len);
        let mut segments = Vec::new();
        for g in &got.packets {
            assert!(!g.truncated && !g.control_truncated, "{g:?}");
            assert_eq!(g.src, Some(addr(&tx)));
            if g.payload.len() > usize::from(seg) {
                // Several datagrams in one buffer: the segment size says
                // where they split.
                assert_eq!(
                    g.cm.gro_segment,
                    Some(seg),
                    "coalesced buffer of {}",
                    g.payload.len()
                );
                coalesced_buffers += 1;
            }
            if let Some(s) = g.cm.gro_segment {
                assert_eq!(s, seg);
                assert_eq!(g.segments.len(), g.payload.len().div_ceil(usize::from(seg)));
            } else {
                assert_eq!(g.segments.len(), 1);
            }
            assert_eq!(g.segments.concat(), g.payload, "segments cover the buffer");
            segments.extend(g.segments.iter().cloned());
        }
        assert_eq!(segments.len(), want.len(), "{len}/{seg}: datagram count");
        for (i, (s, w)) in segments.iter().zip(&want).enumerate() {
            assert_eq!(s.len(), w.len(), "{len}/{seg}: datagram {i} length");
            assert_eq!(s, w, "{len}/{seg}: datagram {i} content");
        }
        // The counters count datagrams, not buffers, and all the bytes.
        assert_eq!(
            batch.counters().packets - packets_before,
            want.len() as u64,
            "{len}/{seg}: datagrams counted"
        );
        packets_before = batch.counters().packets;
        assert_drained(&mut batch, &rx);
    }
    assert_eq!(batch.counters().bytes, 9500 + 3000 + 700 + 56_100);
    if coalesced_buffers == 0 {
        skipped(
            "UDP GRO on lo: every GSO datagram arrived separately; \
             only the split into datagrams was checked",
            "gro_coalesced_buffers_split_into_the_sent_datagrams",
        );
    }
}

#[test]
fn gro_does_not_merge_separate_sends_and_short_segments_split_exactly() {
    // Separate sendto calls are never merged on lo (no GRO engine on the
    // loopback path), and a coalesced buffer whose size is an exact
    // multiple of the segment size splits into equal datagrams.
    let flags = ControlFlags::GRO;
    let rx = udp();
    rx.set_control_flags(flags).unwrap();
    let tx = udp();
    let dst = addr(&rx);
    let mut batch = RecvBatch::new(64, 65536, flags).unwrap();
    let sent: Vec<Vec<u8>> = (0..10u64).map(|i| seq_payload(i, 1000)).collect();
    for p in &sent {
        send(&tx, p, dst);
    }
    let got = recv_until(&mut batch, &rx, |r| r.bytes() >= 10_000);
    let all: Vec<Vec<u8>> = got
        .packets
        .iter()
        .flat_map(|g| g.segments.clone())
        .collect();
    assert_eq!(all, sent);
    for g in &got.packets {
        if g.payload.len() > 1000 {
            assert_eq!(g.cm.gro_segment, Some(1000));
        }
    }
    if got.packets.len() != 10 {
        println!(
            "note: lo coalesced {} separate sends into {} buffers",
            10,
            got.packets.len()
        );
    }
    // 1-byte segments: the smallest size.
    let buf = seq_payload(77, 20);
    tx.send_segments(&buf, 1, dst).unwrap();
    let got = recv_until(&mut batch, &rx, |r| r.bytes() >= 20);
    let all: Vec<Vec<u8>> = got
        .packets
        .iter()
        .flat_map(|g| g.segments.clone())
        .collect();
    assert_eq!(all, chunks(&buf, 1));
    assert_drained(&mut batch, &rx);
}

#[test]
fn gro_buffer_cut_by_a_small_slot_is_reported_truncated() {
    // A coalesced buffer larger than the slot loses its tail: the packet
    // says so (MSG_TRUNC) and still carries the segment size.
    let flags = ControlFlags::GRO;
    let rx = udp();
    rx.set_control_flags(flags).unwrap();
    let tx = udp();
    let dst = addr(&rx);
    let mut batch = RecvBatch::new(8, 2048, flags).unwrap();
    let buf = seq_payload(5, 9500);
    tx.send_segments(&buf, 1000, dst).unwrap();
    let got = recv_until(&mut batch, &rx, |r| !r.packets.is_empty());
    let g = &got.packets[0];
    if g.payload.len() <= 1000 {
        skipped(
            "UDP GRO on lo: nothing coalesced, nothing to cut",
            "gro_buffer_cut_by_a_small_slot_is_reported_truncated",
        );
        return;
    }
    assert!(g.truncated, "{g:?}");
    assert_eq!(g.payload, &buf[..2048]);
    assert_eq!(g.cm.gro_segment, Some(1000));
    assert_eq!(batch.counters().truncated, 1);
    assert_eq!(batch.counters().packets, 2, "the two whole datagrams");
    assert_eq!(batch.counters().bytes, 2048);
    assert_drained(&mut batch, &rx);
}

#[test]
fn gro_buffer_cut_shorter_than_one_segment_yields_no_datagram() {
    // A 500-byte slot and 1000-byte segments: a coalesced buffer keeps
    // only part of its first datagram. No complete datagram, so none is
    // delivered (never an empty one), and it is counted as one truncated.
    let flags = ControlFlags::GRO;
    let rx = udp();
    rx.set_control_flags(flags).unwrap();
    let tx = udp();
    let dst = addr(&rx);
    let mut batch = RecvBatch::new(8, 500, flags).unwrap();
    let buf = seq_payload(6, 9500);
    tx.send_segments(&buf, 1000, dst).unwrap();
    let got = recv_until(&mut batch, &rx, |r| !r.packets.is_empty());
    let g = &got.packets[0];
    assert!(g.truncated, "{g:?}");
    assert_eq!(g.payload, &buf[..500]);
    if g.cm.gro_segment.is_none() {
        skipped(
            "UDP GRO on lo: each datagram was cut on its own",
            "gro_buffer_cut_shorter_than_one_segment_yields_no_datagram",
        );
        assert_eq!(g.segments, vec![buf[..500].to_vec()]);
        return;
    }
    assert_eq!(g.cm.gro_segment, Some(1000));
    assert_eq!(
        g.segments,
        Vec::<Vec<u8>>::new(),
        "a cut buffer gave {:?}",
        g.segments
    );
    let c = batch.counters();
    assert_eq!((c.packets, c.truncated, c.batches), (0, 1, 1), "{c:?}");
    assert_drained(&mut batch, &rx);
}

#[test]
fn counters_count_datagrams_not_coalesced_buffers() {
    let flags = ControlFlags::GRO;
    let rx = udp();
    rx.set_control_flags(flags).unwrap();
    let tx = udp();
    let dst = addr(&rx);
    let mut batch = RecvBatch::new(64, 65536, flags).unwrap();
    let mut datagrams = 0u64;
    let mut bytes = 0usize;
    let mut buffers = 0usize;
    for (len, seg) in [(9500usize, 1000u16), (3000, 1000), (700, 1000), (20, 1)] {
        let buf = seq_payload(len as u64, len);
        tx.send_segments(&buf, seg, dst).unwrap();
        datagrams += len.div_ceil(usize::from(seg)) as u64;
        bytes += len;
        let got = recv_until(&mut batch, &rx, |r| r.bytes() >= len);
        buffers += got.packets.len();
        let segments: usize = got.packets.iter().map(|g| g.segments.len()).sum();
        assert_eq!(segments, len.div_ceil(usize::from(seg)));
    }
    // And a plain empty datagram: one datagram, zero bytes.
    send(&tx, &[], dst);
    let got = recv_n(&mut batch, &rx, 1);
    assert_eq!(got.packets[0].segments, vec![Vec::<u8>::new()]);
    datagrams += 1;
    buffers += 1;
    let c = batch.counters();
    assert_eq!(c.packets, datagrams, "{c:?} ({buffers} buffers)");
    assert_eq!(c.bytes, bytes as u64);
    assert_eq!(c.truncated, 0);
    if buffers as u64 == datagrams {
        skipped(
            "UDP GRO on lo: every GSO datagram arrived separately",
            "counters_count_datagrams_not_coalesced_buffers",
        );
    }
    assert_drained(&mut batch, &rx);
}
