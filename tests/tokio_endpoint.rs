//! The tokio endpoint (`ipv4_reactor::tokio::AsyncPacketConn`, feature
//! `tokio`): async batch and single-packet receive and send over real
//! sockets, zero allocations per packet, cancel safety, clear errors.
//!
//! Network safety: unicast UDP on 127.0.0.1; multicast sent through lo only.

#![cfg(feature = "tokio")]

mod tokio_util;

use std::future::poll_fn;
use std::hint::black_box;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::task::Poll;
use std::time::Duration;

use ipv4_reactor::tokio::AsyncPacketConn;
use ipv4_reactor::{
    ControlFlags, ControlMessage, Interface, Message, PacketConn, RecvBatch, SendBatch,
};
use tokio::time::timeout;

use tokio_util::{runtime, udp, Counter, CountingAlloc, PATIENCE};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const PER_ROUND: usize = 32;
const ROUNDS: usize = 20;
const LEN: usize = 100;

/// What a counted run saw (plain values: collecting them must not allocate).
#[derive(Debug, Default)]
struct Seen {
    packets: usize,
    out_of_order: usize,
    pending: usize,
    with_ttl: usize,
    with_dst: usize,
    with_src: usize,
    truncated: usize,
}

/// Sends `ROUNDS` rounds of `PER_ROUND` sequence-numbered datagrams with
/// `send_batch_all` and receives them with `poll_recv_batch` (counting the
/// times it had to wait) in one task: `join!` polls the receiver first, so
/// it waits on an empty socket each round before the sender sends.
async fn rounds(
    rx: &AsyncPacketConn,
    tx: &AsyncPacketConn,
    batch: &mut RecvBatch,
    send: &mut SendBatch,
    payloads: &[[u8; LEN]],
    first_seq: u64,
) -> Seen {
    let mut seen = Seen::default();
    let dst = rx.local_addr().unwrap();
    for round in 0..ROUNDS {
        let base = first_seq + (round * PER_ROUND) as u64;
        let receive = async {
            let mut got = 0;
            let mut next = base;
            while got < PER_ROUND {
                let n = poll_fn(|cx| {
                    let r = rx.poll_recv_batch(cx, batch);
                    if r.is_pending() {
                        seen.pending += 1;
                    }
                    r
                });
                let n = match timeout(PATIENCE, n).await {
                    Ok(n) => n.expect("recv_batch"),
                    Err(_) => break,
                };
                got += n;
                for p in batch.iter() {
                    let seq = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                    seen.out_of_order += usize::from(seq != next);
                    next = seq + 1;
                    seen.packets += 1;
                    seen.truncated += usize::from(p.truncated() || p.control_truncated());
                    seen.with_ttl += usize::from(p.cm.ttl == Some(61));
                    seen.with_dst += usize::from(p.cm.dst == Some(Ipv4Addr::LOCALHOST));
                    seen.with_src += usize::from(p.src == Some(tx.local_addr().unwrap()));
                    black_box((p.cm, p.drops_before, p.flags));
                }
            }
        };
        let transmit = async {
            // Let the receiver find the socket empty and wait first.
            tokio::task::yield_now().await;
            let mut msgs = [Message::new(&[], dst); PER_ROUND];
            for (i, m) in msgs.iter_mut().enumerate() {
                *m = Message::new(&payloads[(base as usize + i) % payloads.len()], dst);
            }
            let sent = tx
                .send_batch_all(send, &msgs)
                .await
                .expect("send_batch_all");
            assert_eq!(sent, PER_ROUND);
        };
        tokio::join!(receive, transmit);
    }
    seen
}

#[test]
fn recv_batch_delivers_every_packet_without_allocating() {
    let rt = runtime();
    for flags in [
        ControlFlags::NONE,
        ControlFlags::DST
            | ControlFlags::INTERFACE
            | ControlFlags::TTL
            | ControlFlags::SRC
            | ControlFlags::DROPS
            | ControlFlags::TIMESTAMP,
    ] {
        rt.block_on(async {
            let rx = udp();
            rx.set_control_flags(flags).unwrap();
            let rx = AsyncPacketConn::new(rx).unwrap();
            let tx = udp();
            tx.set_ttl(61).unwrap();
            let tx = AsyncPacketConn::new(tx).unwrap();
            // Payload i carries sequence number i (rounds wrap around them).
            let total = 2 * ROUNDS * PER_ROUND;
            let payloads: Vec<[u8; LEN]> = (0..total as u64)
                .map(|i| {
                    let mut p = [0xa5u8; LEN];
                    p[..8].copy_from_slice(&i.to_be_bytes());
                    p
                })
                .collect();
            let mut batch = RecvBatch::new(16, 2048, flags).unwrap();
            let mut send = SendBatch::new(PER_ROUND).unwrap();

            // Warm-up, uncounted: the first use of anything set up lazily.
            let warm = rounds(&rx, &tx, &mut batch, &mut send, &payloads, 0).await;
            assert_eq!(warm.packets, ROUNDS * PER_ROUND, "{flags:?}: warm-up {warm:?}");

            let counter = Counter::start();
            let seen = rounds(
                &rx,
                &tx,
                &mut batch,
                &mut send,
                &payloads,
                (ROUNDS * PER_ROUND) as u64,
            )
            .await;
            let (allocations, _) = counter.stop();

            assert_eq!(
                allocations, 0,
                "{flags:?}: the tokio endpoint allocated {allocations} times for {} packets ({seen:?})",
                seen.packets
            );
            assert_eq!(seen.packets, ROUNDS * PER_ROUND, "{flags:?}: {seen:?}");
            assert_eq!(seen.out_of_order, 0, "{flags:?}: {seen:?}");
            assert_eq!(seen.truncated, 0, "{flags:?}: {seen:?}");
            // The receiver really waited for readiness (the path through
            // tokio's driver was counted too), about once a round.
            assert!(seen.pending >= ROUNDS / 2, "{flags:?}: {seen:?}");
            let each = |f: ControlFlags| if flags.contains(f) { seen.packets } else { 0 };
            assert_eq!(seen.with_ttl, each(ControlFlags::TTL), "{flags:?}: {seen:?}");
            assert_eq!(seen.with_dst, each(ControlFlags::DST), "{flags:?}: {seen:?}");
            assert_eq!(seen.with_src, each(ControlFlags::SRC), "{flags:?}: {seen:?}");
            // Nothing left over.
            assert_eq!(
                batch.recv(rx.get_ref()).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
        });
    }
}

#[test]
fn recv_from_and_send_to_carry_control_messages() {
    runtime().block_on(async {
        let rx = udp();
        rx.set_control_flags(ControlFlags::TTL | ControlFlags::TOS | ControlFlags::DST)
            .unwrap();
        let rx = AsyncPacketConn::new(rx).unwrap();
        let tx = AsyncPacketConn::new(udp()).unwrap();
        let dst = rx.local_addr().unwrap();

        // Nothing queued yet: recv_from waits (and is dropped by the
        // timeout without taking anything).
        let mut buf = [0u8; 64];
        assert!(timeout(Duration::from_millis(50), rx.recv_from(&mut buf))
            .await
            .is_err());

        let mut cm = ControlMessage::default();
        cm.ttl = Some(9);
        cm.tos = Some(0x28);
        assert_eq!(tx.send_to(b"hello", Some(&cm), dst).await.unwrap(), 5);
        let meta = timeout(PATIENCE, rx.recv_from(&mut buf))
            .await
            .expect("a datagram within 5 s")
            .unwrap();
        assert_eq!(&buf[..meta.len], b"hello");
        assert_eq!(meta.src, tx.local_addr().unwrap());
        assert_eq!(meta.cm.ttl, Some(9));
        assert_eq!(meta.cm.tos, Some(0x28));
        assert_eq!(meta.cm.dst, Some(Ipv4Addr::LOCALHOST));

        // A buffer too short: the cut is reported, not hidden.
        tx.send_to(&[7u8; 40], None, dst).await.unwrap();
        let mut small = [0u8; 10];
        let meta = timeout(PATIENCE, rx.recv_from(&mut small))
            .await
            .unwrap()
            .unwrap();
        assert!(meta.truncated());
        assert_eq!(meta.len, 10);
    });
}

#[test]
fn a_cancelled_recv_batch_loses_no_packet() {
    runtime().block_on(async {
        let rx = AsyncPacketConn::new(udp()).unwrap();
        let tx = udp();
        let dst = rx.local_addr().unwrap();
        let mut batch = RecvBatch::new(8, 2048, ControlFlags::NONE).unwrap();
        // Cancelled while waiting, many times.
        for _ in 0..5 {
            tokio::select! {
                r = rx.recv_batch(&mut batch) => panic!("nothing was sent: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
        for i in 0..3u8 {
            tx.send_to(&[i; 4], None, dst).unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 3 {
            let n = timeout(PATIENCE, rx.recv_batch(&mut batch))
                .await
                .expect("the datagrams within 5 s")
                .unwrap();
            assert!(n >= 1);
            got.extend(batch.iter().map(|p| p.payload[0]));
        }
        assert_eq!(got, [0, 1, 2]);
    });
}

#[test]
fn multicast_on_lo_through_the_tokio_endpoint() {
    runtime().block_on(async {
        let lo = Interface::loopback();
        let group = Ipv4Addr::new(239, 255, 21, 7);
        let flags = ControlFlags::DST | ControlFlags::INTERFACE;
        let rx = PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), lo.clone())
            .control(flags)
            .build()
            .unwrap();
        let dst = SocketAddrV4::new(group, rx.local_addr().unwrap().port());
        let rx = AsyncPacketConn::new(rx).unwrap();
        let tx = AsyncPacketConn::new(PacketConn::multicast_sender(&lo).unwrap()).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await; // let the join settle on lo

        let payloads: Vec<[u8; 8]> = (0..40u64).map(u64::to_be_bytes).collect();
        let msgs: Vec<Message<'_>> = payloads.iter().map(|p| Message::new(p, dst)).collect();
        let mut send = SendBatch::new(16).unwrap();
        assert_eq!(tx.send_batch_all(&mut send, &msgs).await.unwrap(), 40);
        assert_eq!(tx.send_batch(&mut send, &[]).await.unwrap(), 0);

        let mut batch = RecvBatch::new(64, 2048, flags).unwrap();
        let mut next = 0u64;
        while next < 40 {
            timeout(PATIENCE, rx.recv_batch(&mut batch))
                .await
                .expect("the group's datagrams within 5 s")
                .unwrap();
            for p in batch.iter() {
                assert_eq!(p.payload, next.to_be_bytes());
                assert_eq!(p.cm.dst, Some(group));
                assert_eq!(p.cm.ifindex, Some(1), "arrived on lo");
                next += 1;
            }
        }
    });
}

#[test]
fn into_inner_gives_back_a_working_socket() {
    let rt = runtime();
    let (rx, dst) = rt.block_on(async {
        let rx = AsyncPacketConn::new(udp()).unwrap();
        let dst = rx.local_addr().unwrap();
        (rx.into_inner(), dst)
    });
    drop(rt);
    // Still non-blocking, and readable without tokio.
    let mut buf = [0u8; 8];
    assert_eq!(
        rx.recv_from(&mut buf).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    udp().send_to(b"back", None, dst).unwrap();
    rx.set_nonblocking(false).unwrap();
    rx.socket().set_read_timeout(Some(PATIENCE)).unwrap();
    let meta = rx.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..meta.len], b"back");
}

#[test]
fn new_outside_a_runtime_is_a_clear_error() {
    let err = AsyncPacketConn::new(udp()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert!(
        err.to_string().contains("outside a tokio runtime"),
        "unclear error: {err}"
    );
    // Under a runtime's enter guard (no task) it works.
    let rt = runtime();
    let _guard = rt.enter();
    let conn = AsyncPacketConn::new(udp()).unwrap();
    let mut batch = RecvBatch::new(4, 64, ControlFlags::NONE).unwrap();
    // Polled once by hand: nothing queued, so Pending.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(matches!(
        conn.poll_recv_batch(&mut cx, &mut batch),
        Poll::Pending
    ));
}
