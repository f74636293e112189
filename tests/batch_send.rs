//! `SendBatch` over `sendmmsg`: per-message destinations, TTL, TOS and
//! source address; at most `capacity` per `send`, everything with
//! `send_all`, and what was sent when a later message is refused.
//!
//! Network safety: every destination is on 127.0.0.1 (the senders are
//! bound to the wildcard or 127.0.0.1, per-message sources are 127.x).

mod util;

use std::net::{Ipv4Addr, SocketAddrV4};

use ipv4_reactor::{ControlFlags, ControlMessage, Message, PacketConn, RecvBatch, SendBatch};
use util::batch::{assert_drained, recv_n, recv_until, seq_payload};
use util::{addr, lo_index, seq_of, udp};

#[test]
fn send_batch_per_message_destinations_ttl_tos_and_source() {
    let flags = ControlFlags::TTL | ControlFlags::TOS | ControlFlags::SRC | ControlFlags::DST;
    let rx_a = udp();
    let rx_b = udp();
    rx_a.set_control_flags(flags).unwrap();
    rx_b.set_control_flags(flags).unwrap();
    // Bound to the wildcard so that per-message source addresses apply;
    // every destination is on 127.0.0.1.
    let tx = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let tx_port = addr(&tx).port();
    let default_ttl = tx.ttl().unwrap();
    let default_tos = tx.tos().unwrap();
    let lo = lo_index();

    // (to a?, ttl, tos, local address to send from, ifindex)
    type Spec = (bool, Option<u8>, Option<u8>, Option<Ipv4Addr>, Option<u32>);
    let specs: Vec<Spec> = vec![
        (true, Some(9), Some(0x28), None, None),
        (false, None, None, None, None),
        (true, Some(200), None, None, None),
        (false, None, Some(0xb8), None, None),
        (true, None, None, None, None),
        (false, Some(1), Some(0x10), None, None),
        (
            true,
            Some(255),
            Some(0x04),
            Some(Ipv4Addr::new(127, 0, 0, 2)),
            None,
        ),
        (
            false,
            Some(33),
            None,
            Some(Ipv4Addr::new(127, 0, 0, 3)),
            Some(lo),
        ),
        (true, None, Some(0x48), None, Some(lo)),
        (false, Some(64), Some(0x20), None, None),
        (true, Some(17), None, None, None),
        (false, None, None, None, None),
    ];
    let payloads: Vec<Vec<u8>> = (0..specs.len() as u64)
        .map(|i| seq_payload(i, 24))
        .collect();
    let msgs: Vec<Message<'_>> = specs
        .iter()
        .zip(&payloads)
        .map(|(&(to_a, ttl, tos, src, ifindex), p)| {
            let dst = addr(if to_a { &rx_a } else { &rx_b });
            if ttl.is_none() && tos.is_none() && src.is_none() && ifindex.is_none() {
                Message::new(p, dst)
            } else {
                let mut cm = ControlMessage::default();
                cm.ttl = ttl;
                cm.tos = tos;
                cm.local = src;
                cm.ifindex = ifindex;
                Message::with_control(p, dst, cm)
            }
        })
        .collect();

    let mut send = SendBatch::new(64).unwrap();
    assert_eq!(send.capacity(), 64);
    assert_eq!(send.send(&tx, &[]).unwrap(), 0);
    assert_eq!(send.send(&tx, &msgs).unwrap(), msgs.len());

    let n_a = specs.iter().filter(|s| s.0).count();
    let mut batch_a = RecvBatch::new(16, 256, flags).unwrap();
    let mut batch_b = RecvBatch::new(16, 256, flags).unwrap();
    let got_a = recv_n(&mut batch_a, &rx_a, n_a);
    let got_b = recv_n(&mut batch_b, &rx_b, specs.len() - n_a);
    assert_drained(&mut batch_a, &rx_a);
    assert_drained(&mut batch_b, &rx_b);

    let (mut ia, mut ib) = (0, 0);
    for (i, &(to_a, ttl, tos, src, _)) in specs.iter().enumerate() {
        let g = if to_a {
            ia += 1;
            &got_a.packets[ia - 1]
        } else {
            ib += 1;
            &got_b.packets[ib - 1]
        };
        assert_eq!(
            g.payload, payloads[i],
            "message {i}: went to the wrong receiver or out of order"
        );
        assert_eq!(
            g.cm.ttl,
            Some(ttl.unwrap_or(default_ttl)),
            "message {i}: ttl"
        );
        assert_eq!(
            g.cm.tos,
            Some(tos.unwrap_or(default_tos)),
            "message {i}: tos"
        );
        let src_ip = src.unwrap_or(Ipv4Addr::LOCALHOST);
        assert_eq!(
            g.src,
            Some(SocketAddrV4::new(src_ip, tx_port)),
            "message {i}: source"
        );
        assert_eq!(g.cm.dst, Some(Ipv4Addr::LOCALHOST));
        assert!(!g.control_truncated);
    }
}

#[test]
fn send_batch_sends_at_most_capacity_and_send_all_sends_everything() {
    let rx = udp();
    rx.set_control_flags(ControlFlags::TTL).unwrap();
    let tx = udp();
    let dst = addr(&rx);
    let payloads: Vec<Vec<u8>> = (0..10u64).map(|i| seq_payload(i, 16)).collect();
    let msgs: Vec<Message<'_>> = payloads.iter().map(|p| Message::new(p, dst)).collect();

    let mut send = SendBatch::new(4).unwrap();
    assert_eq!(send.capacity(), 4);
    assert_eq!(
        send.send(&tx, &msgs).unwrap(),
        4,
        "send is capped at capacity"
    );
    let mut batch = RecvBatch::new(64, 256, ControlFlags::TTL).unwrap();
    let got = recv_n(&mut batch, &rx, 4);
    let seqs: Vec<u64> = got.packets.iter().map(|g| seq_of(&g.payload)).collect();
    assert_eq!(seqs, [0, 1, 2, 3], "the first `capacity` messages are sent");
    assert_drained(&mut batch, &rx);

    // The rest, then everything again with send_all.
    assert_eq!(send.send_all(&tx, &msgs[4..]).unwrap(), 6);
    let got = recv_n(&mut batch, &rx, 6);
    let seqs: Vec<u64> = got.packets.iter().map(|g| seq_of(&g.payload)).collect();
    assert_eq!(seqs, [4, 5, 6, 7, 8, 9]);

    // Many more than the capacity, with control messages on every third.
    let payloads: Vec<Vec<u8>> = (0..203u64).map(|i| seq_payload(i, 40)).collect();
    let msgs: Vec<Message<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i % 3 == 0 {
                let mut cm = ControlMessage::default();
                cm.ttl = Some(100 + (i % 50) as u8);
                Message::with_control(p, dst, cm)
            } else {
                Message::new(p, dst)
            }
        })
        .collect();
    assert_eq!(send.send_all(&tx, &msgs).unwrap(), 203);
    let got = recv_n(&mut batch, &rx, 203);
    let default_ttl = tx.ttl().unwrap();
    for (i, g) in got.packets.iter().enumerate() {
        assert_eq!(g.payload, payloads[i]);
        let want = if i % 3 == 0 {
            100 + (i % 50) as u8
        } else {
            default_ttl
        };
        assert_eq!(g.cm.ttl, Some(want), "message {i}");
    }
    assert_drained(&mut batch, &rx);
    assert_eq!(batch.counters().packets, 4 + 6 + 203);
}

#[test]
fn send_all_reports_what_was_sent_when_a_later_message_fails() {
    // sendmmsg stops at a message the kernel refuses (here: too long for
    // UDP) and reports the ones before it. send_all must not turn that
    // into an error that hides how many went out: the caller would send
    // them twice. The error belongs to the next call, which starts at the
    // refused message.
    let rx = udp();
    let tx = udp();
    let dst = addr(&rx);
    let small: Vec<Vec<u8>> = (0..3u64).map(|i| seq_payload(i, 16)).collect();
    let too_big = vec![0u8; 70_000];
    let msgs = [
        Message::new(&small[0], dst),
        Message::new(&small[1], dst),
        Message::new(&too_big, dst),
        Message::new(&small[2], dst),
    ];
    let mut send = SendBatch::new(8).unwrap();
    let sent = send.send_all(&tx, &msgs);
    let mut batch = RecvBatch::new(8, 256, ControlFlags::NONE).unwrap();
    let got = recv_until(&mut batch, &rx, |r| r.packets.len() >= 2);
    assert_drained(&mut batch, &rx);
    let seqs: Vec<u64> = got.packets.iter().map(|g| seq_of(&g.payload)).collect();
    assert_eq!(
        seqs,
        [0, 1],
        "the kernel sent the two messages before the refused one"
    );
    match sent {
        Ok(n) => assert_eq!(n, 2, "send_all must report the two messages it sent"),
        Err(e) => panic!(
            "send_all sent 2 messages, then returned an error that hides them: {e} \
             (src/batch.rs SendBatch::send_all: return Ok(sent) on any error once sent > 0)"
        ),
    }
    // The refused message itself: an error, nothing sent.
    let e = send.send(&tx, &msgs[2..]).unwrap_err();
    assert_eq!(
        e.raw_os_error().or(ipv4_reactor::Error::raw_os_error(&e)),
        Some(libc::EMSGSIZE)
    );
}
