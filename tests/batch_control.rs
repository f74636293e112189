//! Control messages through `RecvBatch`: flags raised on the socket after
//! the batch was made, payload truncation (`MSG_TRUNC`) and control
//! truncation (`MSG_CTRUNC`) reported per packet, every UDP control message
//! in the default buffer, flags kept consistent with the kernel (a failed
//! change, changes from several threads), and the C-style baseline loop
//! the benchmarks compare against.
//!
//! Network safety: every packet goes to 127.0.0.0/8 (unicast UDP through
//! `util::send`, or a raw `ip4:253` socket bound to a 127.x address).

mod util;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use ipv4_reactor::{ControlFlags, PacketConn, RecvBatch};
use util::batch::{assert_drained, on_pinned_thread, recv_n, recv_until, seq_payload};
use util::{addr, can_use_raw_sockets, lo_index, send, udp, DEADLINE};

/// Control flags raised on the socket after the batch was made (by anyone:
/// here the test itself) are followed at the next receive: every field the
/// new flags ask for arrives and nothing reports control truncation.
#[test]
fn recv_batch_follows_control_flags_raised_on_its_socket() {
    let raised = ControlFlags::TTL
        | ControlFlags::TOS
        | ControlFlags::DST
        | ControlFlags::INTERFACE
        | ControlFlags::LOCAL
        | ControlFlags::TIMESTAMP
        | ControlFlags::DROPS
        | ControlFlags::SRC;
    let lo = lo_index();
    let rx = udp();
    let tx = udp();
    tx.set_ttl(42).unwrap();
    tx.set_tos(0x28).unwrap();
    let dst = addr(&rx);
    let mut batch = RecvBatch::new(8, 256, ControlFlags::NONE).unwrap();
    assert_eq!(batch.control_len(), 0);

    // Make the socket drop, so that SO_RXQ_OVFL comes with later packets.
    rx.set_recv_buffer_size(4096).unwrap();
    for i in 0..300u64 {
        send(&tx, &seq_payload(i, 64), dst);
    }
    std::thread::sleep(Duration::from_millis(10));
    while batch.recv(&rx).is_ok() {}
    rx.set_recv_buffer_size(1 << 20).unwrap();

    // Before: nothing asked for, nothing lost.
    send(&tx, &seq_payload(0, 20), dst);
    let got = recv_n(&mut batch, &rx, 1);
    assert!(got.packets[0].cm.is_empty(), "{:?}", got.packets[0]);
    assert!(!got.packets[0].control_truncated);

    rx.set_control_flags(raised).unwrap();
    for i in 1..=6u64 {
        send(&tx, &seq_payload(i, 20), dst);
    }
    let got = recv_n(&mut batch, &rx, 6);
    assert_eq!(batch.flags(), raised);
    assert!(batch.control_len() >= raised.control_len());
    for (i, g) in got.packets.iter().enumerate() {
        let cm = &g.cm;
        assert!(!g.control_truncated, "packet {i}: control truncated: {g:?}");
        assert_eq!(g.payload, seq_payload(i as u64 + 1, 20));
        assert_eq!(cm.ttl, Some(42), "packet {i}: {cm}");
        assert_eq!(cm.tos, Some(0x28), "packet {i}: {cm}");
        assert_eq!(cm.dst, Some(Ipv4Addr::LOCALHOST), "packet {i}: {cm}");
        assert_eq!(cm.ifindex, Some(lo), "packet {i}: {cm}");
        assert_eq!(cm.local, Some(Ipv4Addr::LOCALHOST), "packet {i}: {cm}");
        assert!(cm.timestamp.is_some(), "packet {i}: no timestamp: {cm}");
        assert!(
            cm.drops.is_some_and(|d| d > 0),
            "packet {i}: no drop counter: {cm}"
        );
        assert_eq!(g.src, Some(addr(&tx)), "packet {i}");
        assert_eq!(cm.src, Some(Ipv4Addr::LOCALHOST), "packet {i}");
    }
    assert_eq!(batch.counters().control_truncated, 0);

    // Lowered: the extras go, the room stays (no allocation back and forth).
    let room = batch.control_len();
    rx.set_control_flags(ControlFlags::TTL).unwrap();
    send(&tx, &seq_payload(7, 20), dst);
    let got = recv_n(&mut batch, &rx, 1);
    let g = &got.packets[0];
    assert_eq!((g.cm.ttl, g.cm.dst, g.src), (Some(42), None, None), "{g:?}");
    assert_eq!(batch.control_len(), room);

    // Every flag at once, raised again: still nothing lost.
    rx.set_control_flags(ControlFlags::ALL).unwrap();
    send(&tx, &seq_payload(8, 20), dst);
    let got = recv_n(&mut batch, &rx, 1);
    assert!(!got.packets[0].control_truncated, "{:?}", got.packets[0]);
    assert!(batch.control_len() >= ControlFlags::ALL.control_len());
    assert_eq!(batch.counters().control_truncated, 0);
    assert_drained(&mut batch, &rx);
}

#[test]
fn truncated_payloads_are_reported_per_packet() {
    let rx = udp();
    rx.set_control_flags(ControlFlags::SRC).unwrap();
    let tx = udp();
    let dst = addr(&rx);
    const SLOT: usize = 100;
    let mut batch = RecvBatch::new(16, SLOT, ControlFlags::SRC).unwrap();

    let sizes = [50usize, 100, 101, 500, 0, 99, 1472, 8];
    let sent: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let mut p = seq_payload(i as u64, len.max(8));
            p.truncate(len);
            p
        })
        .collect();
    for p in &sent {
        send(&tx, p, dst);
    }
    let got = recv_n(&mut batch, &rx, sent.len());
    assert_drained(&mut batch, &rx);

    let mut truncated = 0;
    for (i, (g, want)) in got.packets.iter().zip(&sent).enumerate() {
        let cut = want.len() > SLOT;
        truncated += u64::from(cut);
        assert_eq!(
            g.truncated,
            cut,
            "packet {i} ({} bytes): truncated flag",
            want.len()
        );
        assert!(!g.control_truncated, "packet {i}");
        assert_eq!(g.payload.len(), want.len().min(SLOT), "packet {i}: length");
        assert_eq!(
            &g.payload[..],
            &want[..want.len().min(SLOT)],
            "packet {i}: content"
        );
        assert_eq!(g.src, Some(addr(&tx)));
    }
    assert_eq!(truncated, 3);
    let c = batch.counters();
    assert_eq!(c.truncated, truncated);
    assert_eq!(c.control_truncated, 0);
    assert_eq!(c.packets, sent.len() as u64);
    assert_eq!(
        c.bytes,
        sent.iter().map(|p| p.len().min(SLOT) as u64).sum::<u64>(),
        "bytes counts what was copied into the slots"
    );
}

#[test]
fn small_control_buffer_reports_control_truncation() {
    let flags = ControlFlags::DST | ControlFlags::TTL | ControlFlags::TOS;
    let rx = udp();
    rx.set_control_flags(flags).unwrap();
    let tx = udp();
    tx.set_ttl(42).unwrap();
    tx.set_tos(0x28).unwrap();
    let dst = addr(&rx);

    // 32 bytes hold IP_PKTINFO (CMSG_SPACE 32), which the kernel writes
    // first; TTL and TOS are lost.
    let mut small = RecvBatch::with_control_len(8, 256, flags, 32).unwrap();
    for i in 0..6u64 {
        send(&tx, &seq_payload(i, 20), dst);
    }
    let got = recv_n(&mut small, &rx, 6);
    for (i, g) in got.packets.iter().enumerate() {
        assert!(
            g.control_truncated,
            "packet {i}: MSG_CTRUNC expected: {g:?}"
        );
        assert!(!g.truncated, "packet {i}");
        assert_eq!(g.payload, seq_payload(i as u64, 20));
        assert_eq!(
            g.cm.dst,
            Some(Ipv4Addr::LOCALHOST),
            "packet {i}: PKTINFO fits"
        );
        assert_eq!(g.cm.ttl, None, "packet {i}: TTL cannot fit");
        assert_eq!(g.cm.tos, None, "packet {i}: TOS cannot fit");
    }
    assert_eq!(small.counters().control_truncated, 6);
    assert_eq!(small.counters().truncated, 0);
    assert_eq!(small.counters().packets, 6);

    // 56 bytes (PKTINFO + TTL): only TOS is lost.
    let mut mid = RecvBatch::with_control_len(8, 256, flags, 56).unwrap();
    for i in 0..3u64 {
        send(&tx, &seq_payload(i, 20), dst);
    }
    let got = recv_n(&mut mid, &rx, 3);
    for g in &got.packets {
        assert!(g.control_truncated, "{g:?}");
        assert_eq!(g.cm.dst, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(g.cm.ttl, Some(42));
        assert_eq!(g.cm.tos, None);
    }
    assert_eq!(mid.counters().control_truncated, 3);

    // No control buffer at all.
    let mut none = RecvBatch::with_control_len(8, 256, flags, 0).unwrap();
    send(&tx, b"no room at all", dst);
    let got = recv_n(&mut none, &rx, 1);
    assert!(got.packets[0].control_truncated);
    assert_eq!(got.packets[0].payload, b"no room at all");
    assert_eq!(none.counters().control_truncated, 1);

    // The size the flags ask for: nothing lost.
    let mut full = RecvBatch::new(8, 256, flags).unwrap();
    for i in 0..4u64 {
        send(&tx, &seq_payload(i, 20), dst);
    }
    let got = recv_n(&mut full, &rx, 4);
    for g in &got.packets {
        assert!(!g.control_truncated, "{g:?}");
        assert_eq!(g.cm.dst, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(g.cm.ttl, Some(42));
        assert_eq!(g.cm.tos, Some(0x28));
    }
    assert_eq!(full.counters().control_truncated, 0);
    assert_drained(&mut full, &rx);
}

#[test]
fn all_udp_control_messages_fit_the_default_control_buffer() {
    on_pinned_thread(|| {
        let flags = ControlFlags::ALL;
        let lo = lo_index();
        let rx = udp();
        rx.set_control_flags(flags).unwrap();
        assert_eq!(rx.control_flags(), flags);
        let tx = udp();
        tx.set_ttl(77).unwrap();
        tx.set_tos(0x28).unwrap();
        let dst = addr(&rx);
        let mut batch = RecvBatch::new(32, 65536, flags).unwrap();

        // Force drops first, so that every later packet also carries
        // SO_RXQ_OVFL; the GSO send below adds UDP_GRO: the largest set of
        // control messages a UDP socket can get.
        let eff = rx.set_recv_buffer_size(4096).unwrap();
        assert!(eff < 64 * 1024, "effective receive buffer {eff}");
        for i in 0..300u64 {
            send(&tx, &seq_payload(i, 64), dst);
        }
        // The packets queued before the buffer filled carry no drop count yet.
        std::thread::sleep(Duration::from_millis(10));
        let mut burst = 0;
        loop {
            match batch.recv(&rx) {
                Ok(n) => {
                    burst += n;
                    for p in batch.iter() {
                        assert!(!p.control_truncated(), "{p:?}");
                        assert_eq!(p.cm.drops, None, "{p:?}");
                        assert_eq!(p.cm.ttl, Some(77));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("recv: {e}"),
            }
        }
        assert!(
            burst > 0 && burst < 300,
            "an 8 KiB buffer holds some but not 300 datagrams (got {burst})"
        );
        rx.set_recv_buffer_size(1 << 20).unwrap();

        // Now: plain datagrams and one GSO send of 5 x 1000 bytes.
        let plain: Vec<Vec<u8>> = (0..5u64).map(|i| seq_payload(1000 + i, 300)).collect();
        for p in &plain {
            send(&tx, p, dst);
        }
        let gso = seq_payload(2000, 5000);
        assert_eq!(tx.send_segments(&gso, 1000, dst).unwrap(), 5000);
        let before = SystemTime::now() - Duration::from_secs(5);
        let got = recv_until(&mut batch, &rx, |r| r.bytes() >= 5 * 300 + 5000);
        let after = SystemTime::now() + Duration::from_secs(5);

        let total_drops = batch.kernel_drops_total();
        assert!(total_drops > 0);
        for (i, g) in got.packets.iter().enumerate() {
            assert!(
                !g.control_truncated,
                "packet {i}: control truncated with ALL: {g:?}"
            );
            assert!(!g.truncated, "packet {i}");
            let cm = &g.cm;
            assert_eq!(cm.ttl, Some(77), "packet {i}: ttl in {cm}");
            assert_eq!(cm.tos, Some(0x28), "packet {i}: tos in {cm}");
            assert_eq!(cm.dst, Some(Ipv4Addr::LOCALHOST), "packet {i}: dst in {cm}");
            assert_eq!(cm.ifindex, Some(lo), "packet {i}: ifindex in {cm}");
            assert_eq!(
                cm.local,
                Some(Ipv4Addr::LOCALHOST),
                "packet {i}: local in {cm}"
            );
            assert_eq!(cm.src, Some(Ipv4Addr::LOCALHOST), "packet {i}: src in {cm}");
            assert_eq!(g.src, Some(addr(&tx)));
            let ts = cm
                .timestamp
                .unwrap_or_else(|| panic!("packet {i}: no timestamp in {cm}"));
            assert!(ts > before && ts < after, "packet {i}: timestamp {ts:?}");
            assert_eq!(cm.drops, Some(total_drops), "packet {i}: drops in {cm}");
        }
        // The plain ones come first and alone; the GSO send comes back whole
        // (coalesced, with UDP_GRO) or as separate datagrams.
        for (g, want) in got.packets.iter().zip(&plain) {
            assert_eq!(&g.payload, want);
            assert_eq!(g.cm.gro_segment, None);
        }
        let rest: Vec<u8> = got.packets[5..]
            .iter()
            .flat_map(|g| g.payload.iter().copied())
            .collect();
        assert_eq!(rest, gso);
        let coalesced = got.packets[5..].iter().filter(|g| g.payload.len() > 1000);
        for g in coalesced {
            assert_eq!(
                g.cm.gro_segment,
                Some(1000),
                "coalesced buffer without UDP_GRO: {}",
                g.cm
            );
        }
        assert_eq!(batch.counters().control_truncated, 0);
        assert_drained(&mut batch, &rx);
    })
}

#[test]
fn failed_set_control_flags_leaves_the_socket_consistent() {
    // UDP_GRO does not exist on a raw socket, so asking a raw socket for
    // ControlFlags::ALL fails. Whatever the call leaves behind, the flags
    // the connection reports must be the ones the kernel applies: a batch
    // sized for `control_flags()` must get every control message whole.
    let rx_ip = Ipv4Addr::new(127, 77, 25, 4);
    if !can_use_raw_sockets("failed_set_control_flags_leaves_the_socket_consistent") {
        return;
    }
    let rx = PacketConn::ip4(253, rx_ip).expect("raw socket");
    let tx = PacketConn::ip4(253, Ipv4Addr::LOCALHOST).expect("second raw socket");
    assert!(
        rx.set_control_flags(ControlFlags::ALL).is_err(),
        "UDP_GRO on a raw socket should fail"
    );
    let flags = rx.control_flags();
    let tag = b"consistent-flags";
    send(&tx, tag, SocketAddrV4::new(rx_ip, 0));
    let mut batch = RecvBatch::new(8, 2048, flags).unwrap();
    let got = recv_until(&mut batch, &rx, |r| {
        r.packets.iter().any(|g| g.payload == tag)
    });
    let g = got.packets.iter().find(|g| g.payload == tag).unwrap();
    assert!(
        !g.control_truncated,
        "control_flags() says {flags:?} but the kernel still sends the control messages \
         switched on before the failure (src/options.rs apply_control_flags does not roll \
         back): {g:?}"
    );
}

#[test]
fn control_flags_toggled_from_several_threads_match_the_kernel() {
    // Each thread toggles its own flag; no update may be lost: in the end
    // the recorded flags are each thread's last word, and the kernel agrees.
    const ROUNDS: usize = 2001;
    let conn = std::sync::Arc::new(udp());
    conn.set_control_flags(ControlFlags::SRC).unwrap();
    let toggles = [
        (ControlFlags::TTL, 0usize), // on at even rounds: ends on
        (ControlFlags::TOS, 1),      // on at odd rounds: ends off
        (ControlFlags::DST, 0),
        (ControlFlags::DROPS, 1),
    ];
    let start = std::sync::Arc::new(std::sync::Barrier::new(toggles.len()));
    let threads: Vec<_> = toggles
        .iter()
        .map(|&(flag, parity)| {
            let conn = std::sync::Arc::clone(&conn);
            let start = std::sync::Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                for i in 0..ROUNDS {
                    conn.set_control_message(flag, i % 2 == parity).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let want = ControlFlags::SRC | ControlFlags::TTL | ControlFlags::DST;
    assert_eq!(conn.control_flags(), want, "recorded flags");
    assert_eq!(
        conn.kernel_control_flags().unwrap(),
        ControlFlags::TTL | ControlFlags::DST | ControlFlags::INTERFACE | ControlFlags::LOCAL,
        "kernel switches (recorded {:?})",
        conn.control_flags()
    );
}

// ---------------------------------------------------------------------------
// The C-style baseline loop (benchmarks compare against it)
// ---------------------------------------------------------------------------

#[path = "../benches/support/libc_drain.rs"]
mod libc_drain;

/// Receives `n` datagrams with `drain`, returning each payload and its meta.
fn libc_drain_n(
    drain: &mut libc_drain::LibcDrain,
    conn: &PacketConn,
    n: usize,
) -> Vec<(Vec<u8>, libc_drain::BaselineMeta)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while got.len() < n {
        match drain.recv(conn.as_raw_fd(), |p, m| got.push((p.to_vec(), *m))) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "got {} of {n}", got.len());
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("LibcDrain::recv: {e}"),
        }
    }
    got
}

#[test]
fn libc_drain_reads_no_control_data_past_a_header_cut_by_ctrunc() {
    // A 16-byte control slot holds a bare cmsghdr: the kernel writes the
    // IP_PKTINFO header with cmsg_len 16 and no data, and sets MSG_CTRUNC.
    // Reading in_pktinfo after it would read the next slot's header (or
    // past the allocation for the last slot).
    use libc_drain::LibcDrain;
    let rx = udp();
    rx.set_control_flags(ControlFlags::DST | ControlFlags::TTL)
        .unwrap();
    rx.set_nonblocking(true).unwrap();
    let tx = udp();
    for slots in [2usize, 1] {
        let mut drain = LibcDrain::new(slots, 64, 16, false).unwrap();
        for i in 0..4u64 {
            send(&tx, &seq_payload(i, 20), addr(&rx));
        }
        for (i, (payload, m)) in libc_drain_n(&mut drain, &rx, 4).iter().enumerate() {
            assert_eq!(payload, &seq_payload(i as u64, 20));
            assert_ne!(
                m.msg_flags & libc::MSG_CTRUNC,
                0,
                "{slots} slots, packet {i}"
            );
            assert_eq!(
                (m.ifindex, m.dst, m.ttl, m.drops),
                (0, 0, -1, 0),
                "{slots} slots, packet {i}: decoded a truncated control message: {m:?}"
            );
        }
    }
    // With room for everything, the same loop decodes it all.
    let mut drain = LibcDrain::new(2, 64, 64, false).unwrap();
    tx.set_ttl(45).unwrap();
    send(&tx, &seq_payload(7, 20), addr(&rx));
    let got = libc_drain_n(&mut drain, &rx, 1);
    let m = got[0].1;
    assert_eq!(m.msg_flags & libc::MSG_CTRUNC, 0);
    assert_eq!((m.ifindex, m.ttl), (lo_index() as i32, 45));
    assert_eq!(m.dst, u32::from(Ipv4Addr::LOCALHOST).to_be());
}
