//! `RecvBatch` over `recvmmsg`: packets in order with their sources and
//! exact counters, sources exactly when the socket asks for them, a
//! blocking receive, and raw `ip4:PROTO` sockets (IP header stripped).
//!
//! Network safety: every packet goes to 127.0.0.0/8 (unicast UDP through
//! `util::send`, or a raw `ip4:253` socket bound to a 127.x address);
//! nothing leaves the host.

mod util;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipv4_reactor::{
    ControlFlags, ControlMessage, Message, PacketConn, RecvBatch, RecvCounters, SendBatch,
};
use util::batch::{assert_drained, on_pinned_thread, recv_n, recv_until, seq_payload, Got};
use util::{addr, can_use_raw_sockets, send, seq_of, udp, DEADLINE};

#[test]
fn recv_batch_returns_sent_packets_in_order_with_sources_and_exact_counters() {
    on_pinned_thread(|| {
        let rx = udp();
        rx.set_control_flags(ControlFlags::SRC).unwrap();
        let tx = udp();
        let dst = addr(&rx);

        // Capacity 4 and 10 packets: at least 3 receive calls.
        let mut batch = RecvBatch::new(4, 2048, ControlFlags::SRC).unwrap();
        assert_eq!(batch.capacity(), 4);
        assert_eq!(batch.flags(), ControlFlags::SRC);
        assert_eq!(*batch.counters(), RecvCounters::default());

        // Nothing sent yet: WouldBlock, not Ok(0).
        let e = batch.recv(&rx).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(*batch.counters(), RecvCounters::default());

        let sizes = [1usize, 8, 9, 100, 1000, 1472, 2048, 17, 64, 512];
        let sent: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let mut p = seq_payload(i as u64, len.max(8));
                p.truncate(len);
                if len < 8 {
                    p = vec![0xA0 + i as u8; len];
                }
                p
            })
            .collect();
        for p in &sent {
            send(&tx, p, dst);
        }

        let got = recv_n(&mut batch, &rx, sent.len());
        assert_drained(&mut batch, &rx);

        let tx_addr = addr(&tx);
        for (i, (g, want)) in got.packets.iter().zip(&sent).enumerate() {
            assert_eq!(&g.payload, want, "packet {i}: payload or order");
            assert_eq!(g.src, Some(tx_addr), "packet {i}: source");
            assert_eq!(g.cm.src, Some(*tx_addr.ip()), "packet {i}: cm.src");
            assert!(!g.truncated && !g.control_truncated, "packet {i}: {g:?}");
            assert_eq!(g.drops_before, 0);
            // No other control message was asked for.
            let mut only_src = ControlMessage::default();
            only_src.src = Some(*tx_addr.ip());
            assert_eq!(g.cm, only_src, "packet {i}: unexpected control data");
            assert_eq!(g.segments, vec![want.clone()], "packet {i}: one segment");
        }
        assert!(
            got.calls >= 3,
            "10 packets in batches of 4 need 3 calls, took {}",
            got.calls
        );

        let mut want = RecvCounters::default();
        want.packets = sent.len() as u64;
        want.bytes = sent.iter().map(|p| p.len() as u64).sum();
        want.batches = got.calls;
        assert_eq!(*batch.counters(), want);
        assert!((batch.counters().average_batch() - 10.0 / got.calls as f64).abs() < 1e-9);

        // A second round adds to the counters.
        for p in &sent[..3] {
            send(&tx, p, dst);
        }
        let got2 = recv_n(&mut batch, &rx, 3);
        for (g, want) in got2.packets.iter().zip(&sent[..3]) {
            assert_eq!(&g.payload, want);
        }
        assert_drained(&mut batch, &rx);
        want.packets += 3;
        want.bytes += sent[..3].iter().map(|p| p.len() as u64).sum::<u64>();
        want.batches += got2.calls;
        assert_eq!(*batch.counters(), want);
    })
}

#[test]
fn recv_batch_reports_a_source_exactly_when_the_socket_asks_for_it() {
    let rx = udp();
    let tx = udp();
    let dst = addr(&rx);
    // The batch follows the socket's flags, whatever flags it was made
    // with: a socket with SRC gets sources even through a batch made
    // without it, and a socket without SRC gets none through a batch made
    // with it.
    for (sock_flags, batch_flags) in [
        (ControlFlags::NONE, ControlFlags::NONE),
        (ControlFlags::SRC, ControlFlags::NONE),
        (ControlFlags::NONE, ControlFlags::SRC),
        (ControlFlags::TTL, ControlFlags::TTL),
        (ControlFlags::TTL | ControlFlags::SRC, ControlFlags::TTL),
    ] {
        rx.set_control_flags(sock_flags).unwrap();
        let mut batch = RecvBatch::new(8, 256, batch_flags).unwrap();
        for i in 0..5u64 {
            send(&tx, &seq_payload(i, 40), dst);
        }
        let got = recv_n(&mut batch, &rx, 5);
        let want_src = sock_flags.contains(ControlFlags::SRC);
        for (i, g) in got.packets.iter().enumerate() {
            assert_eq!(g.payload, seq_payload(i as u64, 40));
            assert_eq!(
                g.src,
                want_src.then(|| addr(&tx)),
                "{sock_flags:?}/{batch_flags:?}: src"
            );
            assert_eq!(
                g.cm.src,
                want_src.then(|| *addr(&tx).ip()),
                "{sock_flags:?}/{batch_flags:?}: cm.src"
            );
            assert!(!g.control_truncated);
        }
        assert_eq!(batch.flags(), sock_flags, "the batch follows the socket");
        if sock_flags.contains(ControlFlags::TTL) {
            let ttl = tx.ttl().unwrap();
            assert!(got.packets.iter().all(|g| g.cm.ttl == Some(ttl)));
        }
        assert_drained(&mut batch, &rx);
        assert_eq!(batch.counters().packets, 5);
        assert_eq!(batch.counters().bytes, 200);
    }
}

#[test]
fn recv_wait_blocks_until_a_packet_arrives_and_honours_the_read_timeout() {
    let rx = udp(); // blocking, as bind_udp leaves it
    rx.socket()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut batch = RecvBatch::new(8, 256, ControlFlags::NONE).unwrap();
    let e = batch.recv_wait(&rx).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "read timeout: {e}");
    assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "read timeout: {e}");
    assert!(batch.is_empty());

    rx.socket().set_read_timeout(Some(DEADLINE)).unwrap();
    let tx = udp();
    let dst = addr(&rx);
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        for i in 0..3u64 {
            send(&tx, &seq_payload(i, 16), dst);
        }
    });
    let n = batch.recv_wait(&rx).expect("recv_wait");
    assert!((1..=3).contains(&n), "{n}");
    let mut seqs: Vec<u64> = batch.iter().map(|p| seq_of(p.payload)).collect();
    sender.join().unwrap();
    let rest = recv_until(&mut batch, &rx, |r| seqs.len() + r.packets.len() >= 3);
    seqs.extend(rest.packets.iter().map(|g| seq_of(&g.payload)));
    assert_eq!(seqs, [0, 1, 2]);
    assert_eq!(batch.counters().packets, 3);
}

#[test]
fn raw_ip4_batch_receive_strips_the_ip_header() {
    const PROTO: u8 = 253; // RFC 3692 experimental
                           // A 127/8 address of its own, so other raw-253 traffic on lo (another
                           // test run) is unlikely to reach this socket; a tag filters the rest.
    let rx_ip = Ipv4Addr::new(127, 77, 25, 3);
    if !can_use_raw_sockets("raw_ip4_batch_receive_strips_the_ip_header") {
        return;
    }
    let rx = PacketConn::ip4(PROTO, rx_ip).expect("raw socket");
    let tx = PacketConn::ip4(PROTO, Ipv4Addr::LOCALHOST).expect("second raw socket");
    assert!(rx.strips_ip_header());
    let flags = ControlFlags::SRC | ControlFlags::TTL | ControlFlags::DST;
    rx.set_control_flags(flags).unwrap();
    tx.set_ttl(99).unwrap();

    let tag: [u8; 8] = (std::process::id() as u64
        ^ (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64))
        .to_be_bytes();
    let payloads: Vec<Vec<u8>> = (0..6u64)
        .map(|i| {
            let mut p = tag.to_vec();
            p.extend(seq_payload(i, 8 + 30 * i as usize));
            p
        })
        .collect();
    let dst = SocketAddrV4::new(rx_ip, 0);
    let msgs: Vec<Message<'_>> = payloads.iter().map(|p| Message::new(p, dst)).collect();
    let mut send = SendBatch::new(8).unwrap();
    assert_eq!(send.send_all(&tx, &msgs).unwrap(), payloads.len());

    let mut batch = RecvBatch::new(8, 2048, flags).unwrap();
    let got = recv_until(&mut batch, &rx, |r| {
        r.packets
            .iter()
            .filter(|g| g.payload.starts_with(&tag))
            .count()
            >= payloads.len()
    });
    let ours: Vec<&Got> = got
        .packets
        .iter()
        .filter(|g| g.payload.starts_with(&tag))
        .collect();
    assert_eq!(ours.len(), payloads.len());
    for (i, (g, want)) in ours.iter().zip(&payloads).enumerate() {
        assert_eq!(
            &g.payload, want,
            "packet {i}: the IP header must be stripped"
        );
        assert_eq!(
            g.src,
            Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)),
            "packet {i}"
        );
        assert_eq!(g.cm.ttl, Some(99), "packet {i}");
        assert_eq!(g.cm.dst, Some(rx_ip), "packet {i}");
        assert!(!g.truncated && !g.control_truncated);
        assert_eq!(g.segments, vec![want.clone()]);
    }
    assert_eq!(batch.counters().packets, got.packets.len() as u64);
}
