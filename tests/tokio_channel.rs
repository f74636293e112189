//! The async side of a ChannelSink (`ChannelSink::bounded_async`, feature
//! `tokio`): a tokio task awaits packets a reactor thread hands over.
//! Every packet arrives, wake-ups are not lost when the channel empties
//! and fills again, disconnection ends the wait, and receiving allocates
//! nothing.
//!
//! Network safety: unicast UDP on 127.0.0.1 only.

#![cfg(feature = "tokio")]

mod tokio_util;

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::{ChannelSink, Handle, Overflow, Reactor};
use ipv4_reactor::tokio::AsyncPacketReceiver;
use ipv4_reactor::{ControlFlags, Message, PacketConn, SendBatch};
use tokio::time::timeout;

use tokio_util::{runtime, udp, Counter, CountingAlloc, PATIENCE};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// A reactor on its own thread, stopped and joined when dropped.
struct Running {
    handle: Handle,
    join: Option<thread::JoinHandle<io::Result<()>>>,
}

impl Running {
    fn start() -> Running {
        let (handle, join) = Reactor::builder().spawn().expect("spawning a reactor");
        Running {
            handle,
            join: Some(join),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(j) = self.join.take() {
            let r = j.join().expect("the reactor thread panicked");
            if !thread::panicking() {
                r.expect("the reactor ended in an error");
            }
        }
    }
}

/// A receiving socket with a large buffer and the drop counter.
fn receiver() -> PacketConn {
    let rx = udp();
    rx.set_control_flags(ControlFlags::DROPS).unwrap();
    rx.set_recv_buffer_size(4 << 20).unwrap();
    rx
}

/// Sends `count` sequence-numbered datagrams from `first`, in batches of
/// 64 with a pause after each so the kernel has no reason to drop.
fn send_sequence(dst: std::net::SocketAddrV4, first: u64, count: u64, pause: Duration) {
    let tx = udp();
    let mut batch = SendBatch::new(64).unwrap();
    let mut seq = first;
    while seq < first + count {
        let n = (first + count - seq).min(64);
        let payloads: Vec<[u8; 16]> = (seq..seq + n)
            .map(|s| {
                let mut p = [0u8; 16];
                p[..8].copy_from_slice(&s.to_be_bytes());
                p
            })
            .collect();
        let msgs: Vec<Message<'_>> = payloads.iter().map(|p| Message::new(p, dst)).collect();
        assert_eq!(batch.send_all(&tx, &msgs).unwrap(), msgs.len());
        seq += n;
        thread::sleep(pause);
    }
}

fn seq_of(p: &[u8]) -> u64 {
    u64::from_be_bytes(p[..8].try_into().unwrap())
}

#[test]
fn the_async_receiver_gets_every_packet() {
    const COUNT: u64 = 50_000;
    let reactor = Running::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Block: the reactor waits for the task rather than drop.
    let (sink, mut packets) = ChannelSink::bounded_async(256, 64, Overflow::Block).unwrap();
    let sink_view = sink.clone();
    let rx = receiver();
    let dst = rx.local_addr().unwrap();
    let key = rt
        .block_on(reactor.handle.register_async(rx, sink))
        .unwrap();

    let consumer = rt.spawn(async move {
        let mut next = 0u64;
        let mut out_of_order = 0u64;
        let mut got = Vec::with_capacity(128);
        while next < COUNT {
            got.clear();
            match timeout(PATIENCE, packets.recv_many(&mut got, 128)).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => break, // reported below as missing packets
            }
            for p in &got {
                let s = seq_of(p);
                out_of_order += u64::from(s != next);
                next = s + 1;
                // Every so often the task is slow: the channel fills.
                if s.is_multiple_of(10_000) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        (next, out_of_order)
    });
    let started = Instant::now();
    send_sequence(dst, 0, COUNT, Duration::from_micros(200));
    let (next, out_of_order) = rt.block_on(consumer).unwrap();
    let counters = rt
        .block_on(reactor.handle.socket_counters_async(key))
        .unwrap();
    assert_eq!(
        counters.recv.kernel_drops, 0,
        "the kernel dropped packets: this run says nothing about the channel ({counters:?})"
    );
    assert_eq!(counters.recv.packets, COUNT, "the reactor's count");
    assert_eq!(next, COUNT, "the task saw the sequence up to {next} only");
    assert_eq!(out_of_order, 0, "packets out of order or missing");
    assert_eq!(sink_view.dropped(), 0);
    eprintln!(
        "{COUNT} packets through the async channel in {:?}",
        started.elapsed()
    );
}

#[test]
fn wakeups_are_not_lost_when_the_channel_empties_and_fills() {
    // Each round the task waits on an empty channel and the reactor thread
    // hands over one packet: a lost wake-up shows as a timeout.
    const ROUNDS: u64 = 2000;
    let reactor = Running::start();
    let rt = runtime();
    let (sink, mut packets) = ChannelSink::bounded_async(16, 64, Overflow::DropNewest).unwrap();
    let rx = receiver();
    let dst = rx.local_addr().unwrap();
    rt.block_on(async {
        reactor.handle.register_async(rx, sink).await.unwrap();
        let tx = udp();
        for seq in 0..ROUNDS {
            // Sometimes the packet is sent before the task waits, sometimes
            // after: both orders race with the sink's check.
            let send = || tx.send_to(&seq.to_be_bytes(), None, dst).unwrap();
            if seq.is_multiple_of(2) {
                send();
            }
            let p = async {
                if !seq.is_multiple_of(2) {
                    tokio::task::yield_now().await;
                    send();
                }
            };
            let (got, ()) = tokio::join!(timeout(PATIENCE, packets.recv()), p);
            let got = got
                .unwrap_or_else(|_| panic!("round {seq}: no wake-up within 5 s"))
                .expect("the sink is alive");
            assert_eq!(seq_of(&got), seq);
        }
        assert!(packets.try_recv().is_err());
    });
}

#[test]
fn recv_returns_none_once_every_sink_is_gone() {
    let reactor = Running::start();
    let rt = runtime();
    let (sink, mut packets) = ChannelSink::bounded_async(16, 64, Overflow::DropNewest).unwrap();
    let (a, b) = (receiver(), receiver());
    let (dst_a, dst_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    rt.block_on(async {
        // Two sockets share the sink (two clones).
        let key_a = reactor
            .handle
            .register_async(a, sink.clone())
            .await
            .unwrap();
        let key_b = reactor.handle.register_async(b, sink).await.unwrap();
        let tx = udp();
        for seq in 0..3u64 {
            tx.send_to(&seq.to_be_bytes(), None, dst_a).unwrap();
        }
        tx.send_to(&3u64.to_be_bytes(), None, dst_b).unwrap();
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let p = timeout(PATIENCE, packets.recv()).await.unwrap().unwrap();
            seen.push(seq_of(&p));
        }
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3]);

        // The task waits; one socket goes: it goes on waiting.
        let waiting = packets.recv();
        let deregister = async {
            tokio::task::yield_now().await;
            reactor.handle.deregister_async(key_a).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send_to(&4u64.to_be_bytes(), None, dst_b).unwrap();
        };
        let (got, ()) = tokio::join!(timeout(PATIENCE, waiting), deregister);
        assert_eq!(seq_of(&got.unwrap().expect("socket b still feeds")), 4);

        // The last one goes while the task waits: the wait ends with None.
        let waiting = packets.recv();
        let deregister = async {
            tokio::task::yield_now().await;
            reactor.handle.deregister_async(key_b).await.unwrap();
        };
        let (got, ()) = tokio::join!(timeout(PATIENCE, waiting), deregister);
        assert!(
            got.expect("woken by the disconnection").is_none(),
            "a packet after every sink went?"
        );
        assert!(packets.recv().await.is_none());
    });
}

#[test]
fn dropping_the_async_receiver_deregisters_the_socket() {
    let reactor = Running::start();
    let rt = runtime();
    let (sink, packets) = ChannelSink::bounded_async(16, 64, Overflow::Block).unwrap();
    let view = sink.clone();
    let rx = receiver();
    let dst = rx.local_addr().unwrap();
    rt.block_on(async {
        let key = reactor.handle.register_async(rx, sink).await.unwrap();
        drop(packets);
        udp().send_to(b"nobody listens", None, dst).unwrap();
        let deadline = Instant::now() + PATIENCE;
        while view.disconnected_drops() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(view.disconnected_drops(), 1);
        let err = reactor.handle.socket_counters_async(key).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    });
}

#[test]
fn receiving_from_the_async_channel_allocates_nothing() {
    // Counted on the task's thread (a current-thread runtime): awaiting,
    // taking and dropping packets (their buffers go back to the pool).
    const PER_ROUND: u64 = 50;
    let reactor = Running::start();
    let rt = runtime();
    let (sink, mut packets) = ChannelSink::bounded_async(1024, 64, Overflow::Block).unwrap();
    let view = sink.clone();
    let rx = receiver();
    let dst = rx.local_addr().unwrap();
    rt.block_on(async {
        reactor.handle.register_async(rx, sink).await.unwrap();
        let sender = thread::spawn(move || {
            for round in 0..40 {
                // Give the task time to empty the channel and wait.
                thread::sleep(Duration::from_millis(5));
                send_sequence(dst, round * PER_ROUND, PER_ROUND, Duration::ZERO);
            }
        });
        let mut got: Vec<ipv4_reactor::reactor::OwnedPacket> = Vec::with_capacity(64);
        let mut next = 0u64;
        let mut receive = async |until: u64, got: &mut Vec<_>| {
            while next < until {
                got.clear();
                if timeout(PATIENCE, packets.recv_many(got, 64)).await.is_err() {
                    break;
                }
                for p in got.iter() {
                    assert_eq!(seq_of(p), next);
                    next += 1;
                }
            }
        };
        // Warm-up, uncounted.
        receive(10 * PER_ROUND, &mut got).await;
        let counter = Counter::start();
        receive(40 * PER_ROUND, &mut got).await;
        got.clear();
        let (allocations, _) = counter.stop();
        sender.join().unwrap();
        assert_eq!(next, 40 * PER_ROUND, "missing packets");
        assert_eq!(
            allocations,
            0,
            "receiving {} packets from the async channel allocated {allocations} times",
            30 * PER_ROUND
        );
        assert_eq!(view.dropped(), 0);
    });
}

#[test]
fn the_plain_receiver_api_still_works_beside_it() {
    // try_recv, len, capacity on the async receiver; a plain sink is unchanged.
    let (_sink, mut packets): (ChannelSink, AsyncPacketReceiver) =
        ChannelSink::bounded_async(8, 64, Overflow::DropNewest).unwrap();
    assert_eq!(packets.capacity(), 8);
    assert!(packets.is_empty());
    assert_eq!(packets.len(), 0);
    assert!(matches!(
        packets.try_recv(),
        Err(crossbeam_channel::TryRecvError::Empty)
    ));
    // Too large: the same errors as the blocking form.
    let err = ChannelSink::bounded_async(usize::MAX, 64, Overflow::Block).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}
