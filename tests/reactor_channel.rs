//! Channel sinks: overflow counted exactly (`DropNewest`), nothing dropped
//! with `Overflow::Block` and a slow consumer, two lines into one cloned
//! sink end to end, a receiver that sees its sinks go, and a capacity that
//! comes back exactly as each hand-over is handed out.
//!
//! Network safety: multicast only through `util::lo_sender` and the checked
//! `util::send` (lo, 127.0.0.1), to groups 239.255.154.x on ephemeral
//! ports; unicast only to 127.0.0.1.

mod util;

use std::net::SocketAddrV4;
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::{ChannelSink, Overflow};
use ipv4_reactor::ControlFlags;
use util::reactor::{turn_for, turn_until};
use util::{
    asm_group, join_within, lo_receiver, lo_sender, port_of, send, seq_of, DEADLINE, SETTLE,
};

/// Third octet of this file's groups: 239.255.154.x, x unique per test.
const TAG: u8 = 154;

/// A `DropNewest` channel sink of `capacity` packets of `payload_size`
/// bytes, fed by a socket joined to a fresh group on lo and registered
/// with a reactor on this thread (the join settled).
struct Sink {
    g: std::net::Ipv4Addr,
    dst: SocketAddrV4,
    sink: ChannelSink,
    packets: ipv4_reactor::reactor::PacketReceiver,
    reactor: ipv4_reactor::reactor::Reactor,
    key: ipv4_reactor::reactor::Key,
}

impl Sink {
    fn new(flags: ControlFlags, capacity: usize, payload_size: usize) -> Sink {
        let g = asm_group(TAG);
        let rx = lo_receiver(g, flags);
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let (sink, packets) =
            ChannelSink::bounded(capacity, payload_size, Overflow::DropNewest).expect("sink");
        let mut reactor = util::reactor::builder().build().expect("reactor");
        let key = reactor.register(rx, sink.clone()).expect("register");
        thread::sleep(SETTLE);
        Sink {
            g,
            dst,
            sink,
            packets,
            reactor,
            key,
        }
    }
}

/// A bounded(8) DropNewest sink that nobody reads: of 100 packets, 8 are in
/// the channel (the first 8) and exactly 92 are counted as dropped, in the
/// sink and in the socket's counters.
#[test]
fn channel_overflow_is_counted_exactly() {
    util::reactor::each_backend(|| {
        let Sink {
            g: _,
            dst,
            sink,
            packets,
            mut reactor,
            key,
        } = Sink::new(ControlFlags::DROPS | ControlFlags::DST, 8, 2048);
        let tx = lo_sender();
        for seq in 0..100u64 {
            send(&tx, &seq.to_be_bytes(), dst);
        }
        let all = turn_until(&mut reactor, DEADLINE, |r| {
            r.socket_counters(key).expect("registered").recv.packets >= 100
        });
        let c = reactor.socket_counters(key).expect("registered");
        assert!(
            all,
            "the reactor received {} of 100 packets",
            c.recv.packets
        );
        turn_for(&mut reactor, Duration::from_millis(100));
        let c = reactor.socket_counters(key).expect("registered");
        assert_eq!(c.recv.packets, 100);
        assert_eq!(
            c.recv.kernel_drops, 0,
            "the kernel dropped packets: the test proves nothing"
        );
        assert_eq!(sink.dropped(), 92);
        assert_eq!(c.overflow_drops, 92);
        assert_eq!(reactor.counters().total.overflow_drops, 92);
        assert_eq!(packets.len(), 8);
        let got: Vec<u64> = packets.try_iter().map(|p| seq_of(&p)).collect();
        assert_eq!(
            got,
            (0..8).collect::<Vec<u64>>(),
            "the channel keeps the first 8"
        );
        // The socket stays registered.
        assert_eq!(reactor.counters().sockets, 1);
    });
}

/// An `Overflow::Block` sink with a slow consumer drops nothing.
#[test]
fn blocking_channel_sink_drops_nothing() {
    util::reactor::each_backend(|| {
        const N: u64 = 200;
        let g = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::DROPS);
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let (sink, packets) = ChannelSink::bounded(4, 2048, Overflow::Block).expect("sink");
        let (handle, join) = util::reactor::builder().spawn().expect("spawn reactor");
        let key = handle.register(rx, sink.clone()).expect("register");

        thread::sleep(SETTLE);
        let tx = lo_sender();
        for seq in 0..N {
            send(&tx, &seq.to_be_bytes(), dst);
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while (got.len() as u64) < N && Instant::now() < deadline {
            match packets.recv_timeout(Duration::from_millis(500)) {
                Ok(p) => {
                    got.push(seq_of(&p));
                    thread::sleep(Duration::from_millis(1)); // a slow consumer
                }
                Err(_) => continue,
            }
        }
        assert_eq!(got, (0..N).collect::<Vec<u64>>(), "slow consumer's packets");
        assert_eq!(sink.dropped(), 0);
        let c = handle.socket_counters(key).expect("counters");
        assert_eq!(c.overflow_drops, 0);
        assert_eq!(c.recv.kernel_drops, 0);
        assert_eq!(c.recv.packets, N);

        drop(packets); // never leave a Block sink's reactor waiting on a full channel
        handle.stop();
        join_within(join, DEADLINE, "reactor thread").expect("run result");
    });
}

/// Two lines (A and B: two sockets, two groups) into one cloned sink; a
/// consumer thread gets key, payload and destination of both.
#[test]
fn channel_mode_end_to_end_with_two_lines() {
    util::reactor::each_backend(|| {
        const PER_LINE: u64 = 20;
        let ga = asm_group(TAG);
        let gb = asm_group(TAG);
        let ra = lo_receiver(ga, ControlFlags::DST);
        let rb = lo_receiver(gb, ControlFlags::DST);
        let da = SocketAddrV4::new(ga, port_of(&ra));
        let db = SocketAddrV4::new(gb, port_of(&rb));
        let (sink, packets) = ChannelSink::bounded(1024, 2048, Overflow::DropNewest).expect("sink");
        let (handle, join) = util::reactor::builder().spawn().expect("spawn reactor");
        let ka = handle.register(ra, sink.clone()).expect("register A");
        let kb = handle.register(rb, sink.clone()).expect("register B");
        assert_ne!(ka, kb);

        let consumer = thread::spawn(move || {
            let mut out = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while (out.len() as u64) < 2 * PER_LINE && Instant::now() < deadline {
                if let Ok(p) = packets.recv_timeout(Duration::from_millis(200)) {
                    out.push((p.key(), p.payload().to_vec(), p.cm().dst));
                }
            }
            out
        });
        thread::sleep(SETTLE);
        let tx = lo_sender();
        for seq in 0..PER_LINE {
            send(&tx, format!("A{seq}").as_bytes(), da);
            send(&tx, format!("B{seq}").as_bytes(), db);
        }
        let out = join_within(consumer, Duration::from_secs(15), "consumer thread");
        assert_eq!(out.len() as u64, 2 * PER_LINE, "consumer got {out:?}");
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (key, payload, dst) in out {
            if key == ka {
                assert_eq!(dst, Some(ga), "A line packet with destination {dst:?}");
                a.push(String::from_utf8(payload).unwrap());
            } else {
                assert_eq!(key, kb, "packet from an unknown key");
                assert_eq!(dst, Some(gb), "B line packet with destination {dst:?}");
                b.push(String::from_utf8(payload).unwrap());
            }
        }
        assert_eq!(
            a,
            (0..PER_LINE).map(|i| format!("A{i}")).collect::<Vec<_>>()
        );
        assert_eq!(
            b,
            (0..PER_LINE).map(|i| format!("B{i}")).collect::<Vec<_>>()
        );
        assert_eq!(sink.dropped(), 0);

        handle.stop();
        join_within(join, DEADLINE, "reactor thread").expect("run result");
    });
}

/// Receiver clones, each moved to a consumer thread of its own (a receiver
/// is `Send`, not `Sync`): every packet reaches exactly one of them, each
/// sees its packets in arrival order, and both see the channel end once
/// the reactor (and with it the sink) is gone. Nothing is dropped: the sink
/// blocks for room and the sends are paced.
#[test]
fn receiver_clones_on_threads_of_their_own_share_the_channel() {
    fn is_send<T: Send>(_: &T) {}
    util::reactor::each_backend(|| {
        const N: u64 = 1000;
        let g = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::NONE);
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let (sink, packets) = ChannelSink::bounded(256, 64, Overflow::Block).expect("sink");
        is_send(&packets);
        let (handle, join) = util::reactor::builder().spawn().expect("spawn reactor");
        let key = handle.register(rx, sink).expect("register");
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let mine = packets.clone();
                thread::spawn(move || mine.iter().map(|p| seq_of(&p)).collect::<Vec<u64>>())
            })
            .collect();
        drop(packets);
        thread::sleep(SETTLE);
        let tx = lo_sender();
        for seq in 0..N {
            send(&tx, &seq.to_be_bytes(), dst);
            if seq % 50 == 49 {
                thread::sleep(Duration::from_millis(2));
            }
        }
        let all = util::wait_until(DEADLINE, || {
            handle
                .socket_counters(key)
                .expect("registered")
                .recv
                .packets
                >= N
        });
        assert_all_received(all, &handle.socket_counters(key).expect("registered"), N);
        handle.stop();
        join_within(join, DEADLINE, "reactor thread").expect("run result");
        let got: Vec<Vec<u64>> = consumers
            .into_iter()
            .map(|c| join_within(c, DEADLINE, "consumer thread"))
            .collect();
        for mine in &got {
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "a consumer's packets out of order: {mine:?}"
            );
        }
        let mut every: Vec<u64> = got.concat();
        every.sort_unstable();
        assert_eq!(
            every,
            (0..N).collect::<Vec<u64>>(),
            "each packet exactly once"
        );
    });
}

/// A batch of 100 packets (more than one hand-over of 64) into a roomy
/// channel: all arrive, in order; `recv_timeout` on the empty channel times
/// out; once the reactor (and with it the sink) is gone, what is queued is
/// still delivered, then `recv` and iteration end.
#[test]
fn receiver_gets_whole_batches_then_sees_the_sinks_go() {
    util::reactor::each_backend(|| {
        use ipv4_reactor::reactor::{RecvError, RecvTimeoutError};
        let g = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::DROPS);
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let (sink, packets) = ChannelSink::bounded(1024, 2048, Overflow::DropNewest).expect("sink");
        let mut reactor = util::reactor::builder().build().expect("reactor");
        let key = reactor.register(rx, sink).expect("register");
        assert_eq!(
            packets.recv_timeout(Duration::from_millis(10)).err(),
            Some(RecvTimeoutError::Timeout)
        );

        thread::sleep(SETTLE);
        let tx = lo_sender();
        for seq in 0..100u64 {
            send(&tx, &seq.to_be_bytes(), dst);
        }
        let all = turn_until(&mut reactor, DEADLINE, |_| packets.len() >= 100);
        let c = reactor.socket_counters(key).expect("registered");
        assert!(
            all,
            "{} of 100 packets in the channel ({c:?})",
            packets.len()
        );
        assert_eq!(c.recv.kernel_drops, 0, "the kernel dropped packets");
        assert_eq!(packets.capacity(), Some(1024));
        let first: Vec<u64> = packets.try_iter().take(10).map(|p| seq_of(&p)).collect();
        assert_eq!(first, (0..10).collect::<Vec<u64>>());

        drop(reactor); // drops the only sink
        let rest: Vec<u64> = packets.try_iter().map(|p| seq_of(&p)).collect();
        assert_eq!(rest, (10..100).collect::<Vec<u64>>(), "the queued rest");
        // Bounded first: a sink still alive would make `recv` wait forever.
        assert_eq!(
            packets.recv_timeout(DEADLINE).err(),
            Some(RecvTimeoutError::Disconnected)
        );
        assert!(packets.iter().next().is_none());
        assert_eq!(packets.recv().err(), Some(RecvError));
    });
}

/// Sends `seqs` to `dst` and turns until the socket counted them all.
fn send_and_read(
    reactor: &mut ipv4_reactor::reactor::Reactor,
    key: ipv4_reactor::reactor::Key,
    dst: SocketAddrV4,
    seqs: std::ops::Range<u64>,
) {
    let tx = lo_sender();
    let want = reactor
        .socket_counters(key)
        .expect("registered")
        .recv
        .packets
        + seqs.end
        - seqs.start;
    for seq in seqs {
        send(&tx, &seq.to_be_bytes(), dst);
    }
    let all = turn_until(reactor, DEADLINE, |r| {
        r.socket_counters(key).expect("registered").recv.packets >= want
    });
    assert_all_received(
        all,
        &reactor.socket_counters(key).expect("registered"),
        want,
    );
}

/// That the socket counted `want` packets (`all`: it did in time), none
/// dropped by the kernel.
fn assert_all_received(all: bool, c: &ipv4_reactor::reactor::SocketCounters, want: u64) {
    assert!(
        all,
        "the reactor received {} of {want} packets",
        c.recv.packets
    );
    assert_eq!(c.recv.kernel_drops, 0, "the kernel dropped packets");
}

/// Room comes back a hand-over at a time: capacity 8, 8 queued (one
/// receive batch), one received: the hand-over the receiver took still
/// holds its room, so all of 3 more are dropped; once its last packet is
/// handed out, the whole capacity is free again, exactly.
#[test]
fn capacity_comes_back_when_a_hand_over_is_handed_out() {
    util::reactor::each_backend(|| {
        let Sink {
            g: _,
            dst,
            sink,
            packets,
            mut reactor,
            key,
        } = Sink::new(ControlFlags::DROPS, 8, 2048);

        send_and_read(&mut reactor, key, dst, 0..8);
        assert_eq!(sink.dropped(), 0);
        assert_eq!(packets.len(), 8);
        assert_eq!(seq_of(&packets.try_recv().expect("a packet")), 0);
        assert_eq!(packets.len(), 7);

        send_and_read(&mut reactor, key, dst, 100..103);
        assert_eq!(sink.dropped(), 3, "no room until the hand-over is out");
        assert_eq!(
            reactor
                .socket_counters(key)
                .expect("registered")
                .overflow_drops,
            3
        );
        let got: Vec<u64> = packets.try_iter().map(|p| seq_of(&p)).collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5, 6, 7]);

        // All handed out: the whole capacity is free again, and no more.
        send_and_read(&mut reactor, key, dst, 200..209);
        assert_eq!(sink.dropped(), 4);
        assert_eq!(packets.len(), 8);
        let got: Vec<u64> = packets.try_iter().map(|p| seq_of(&p)).collect();
        assert_eq!(got, (200..208).collect::<Vec<u64>>());
    });
}

/// A receiver takes the packets of a receive batch from the channel at
/// once; a clone dropped while it holds some it has not handed out gives
/// them back: the other clone gets them, first and in order, and nothing
/// is counted as dropped.
#[test]
fn a_dropped_receiver_clone_gives_back_what_it_took() {
    util::reactor::each_backend(|| {
        let g = asm_group(TAG);
        let rx = lo_receiver(g, ControlFlags::DROPS);
        let dst = SocketAddrV4::new(g, port_of(&rx));
        let (sink, first) = ChannelSink::bounded(16, 2048, Overflow::DropNewest).expect("sink");
        let second = first.clone();
        let mut reactor = util::reactor::builder().build().expect("reactor");
        let key = reactor.register(rx, sink.clone()).expect("register");
        thread::sleep(SETTLE);

        send_and_read(&mut reactor, key, dst, 0..10);
        assert_eq!(seq_of(&first.try_recv().expect("a packet")), 0);
        send_and_read(&mut reactor, key, dst, 10..12);
        assert_eq!(
            first.len() + second.len(),
            9 + 2 + 2,
            "each counts the channel's 2"
        );
        drop(first);
        let got: Vec<u64> = second.try_iter().map(|p| seq_of(&p)).collect();
        assert_eq!(got, (1..12).collect::<Vec<u64>>());
        assert_eq!(sink.dropped(), 0);
        // The room of every packet is back: 16 more fit.
        send_and_read(&mut reactor, key, dst, 100..116);
        assert_eq!(sink.dropped(), 0);
        assert_eq!(second.len(), 16);
    });
}

/// `recv_batch` hands out a whole hand-over: after one `recv`, the rest of
/// that hand-over, in order; the batch's room is held until the batch is
/// dropped, then back whole; a packet kept with `to_owned_packet` outlives
/// its batch with its payload and metadata intact.
#[test]
fn recv_batch_hands_out_a_hand_over_and_its_room_comes_back_on_drop() {
    util::reactor::each_backend(|| {
        use ipv4_reactor::reactor::TryRecvError;
        let Sink {
            g,
            dst,
            sink,
            packets,
            mut reactor,
            key,
        } = Sink::new(ControlFlags::DROPS | ControlFlags::DST, 8, 2048);

        send_and_read(&mut reactor, key, dst, 0..8);
        assert_eq!(seq_of(&packets.recv().expect("a packet")), 0);
        let batch = packets.try_recv_batch().expect("the rest of the hand-over");
        assert!(!batch.is_empty());
        let in_batch = batch.len();
        let seqs: Vec<u64> = batch.iter().map(|p| seq_of(p.payload())).collect();
        assert_eq!(seqs, (1..=in_batch as u64).collect::<Vec<u64>>());
        for p in &batch {
            assert_eq!(p.cm().dst, Some(g));
            assert_eq!(p.key(), key);
            assert_eq!(p.drops_before(), 0);
        }
        let kept = batch.iter().last().expect("a packet").to_owned_packet();

        // The batch holds its room: with the rest of the 8 queued, nothing fits.
        let queued_rest = packets.len();
        assert_eq!(in_batch + queued_rest, 7);
        send_and_read(&mut reactor, key, dst, 100..101);
        assert_eq!(sink.dropped(), 1, "the batch still holds its room");
        drop(batch);
        while let Ok(b) = packets.try_recv_batch() {
            assert!(!b.is_empty());
        }
        assert_eq!(
            packets.try_recv_batch().err(),
            Some(TryRecvError::Empty),
            "all taken"
        );
        // Every packet's room is back: 8 fit, no more.
        send_and_read(&mut reactor, key, dst, 200..209);
        assert_eq!(sink.dropped(), 2);
        let got: Vec<u64> = packets.try_iter().map(|p| seq_of(&p)).collect();
        assert_eq!(got, (200..208).collect::<Vec<u64>>());

        // The kept packet is untouched by all that came after it.
        assert_eq!(seq_of(&kept), in_batch as u64);
        assert_eq!(kept.cm().dst, Some(g));
        assert_eq!(kept.key(), key);
    });
}

/// Packets the consumer keeps keep their batches' buffers: the sink never
/// writes into a buffer a packet still refers to, makes new buffers while
/// it has none free (counted), and makes none once the kept packets are
/// dropped.
#[test]
fn kept_packets_keep_their_buffers_intact_and_the_pool_grows_only_while_they_live() {
    util::reactor::each_backend(|| {
        let Sink {
            g: _,
            dst,
            sink,
            packets,
            mut reactor,
            key,
        } = Sink::new(ControlFlags::DROPS, 64, 2048);

        let made_at_start = sink.buffers_allocated();
        // 40 rounds of 16 packets; the first of each round is kept.
        let mut kept = Vec::new();
        for round in 0..40u64 {
            let seqs = round * 1000..round * 1000 + 16;
            send_and_read(&mut reactor, key, dst, seqs.clone());
            let got: Vec<_> = packets.try_iter().collect();
            assert_eq!(
                got.iter().map(|p| seq_of(p)).collect::<Vec<u64>>(),
                seqs.collect::<Vec<u64>>()
            );
            kept.push(got.into_iter().next().expect("a packet"));
        }
        assert_eq!(sink.dropped(), 0);
        for (round, p) in kept.iter().enumerate() {
            assert_eq!(
                seq_of(p),
                round as u64 * 1000,
                "a kept packet was overwritten"
            );
        }
        let made_while_kept = sink.buffers_allocated();
        assert!(
            made_while_kept > made_at_start,
            "40 kept batches cannot fit in the {made_at_start} buffers made at the start"
        );

        drop(kept);
        for round in 100..140u64 {
            send_and_read(&mut reactor, key, dst, round * 1000..round * 1000 + 16);
            assert_eq!(packets.try_iter().count(), 16);
        }
        assert_eq!(
            sink.buffers_allocated(),
            made_while_kept,
            "buffers made with none kept"
        );
    });
}

/// A payload longer than the sink's `payload_size` is copied whole, and
/// the packets around it are unharmed.
#[test]
fn a_payload_longer_than_the_sinks_payload_size_is_copied_whole() {
    util::reactor::each_backend(|| {
        let Sink {
            g: _,
            dst,
            sink,
            packets,
            mut reactor,
            key,
        } = Sink::new(ControlFlags::DROPS, 64, 16);

        let tx = lo_sender();
        let sizes = [8usize, 1200, 16, 1500, 9, 1024];
        for (i, &len) in sizes.iter().enumerate() {
            let mut p = vec![i as u8; len];
            p[..8].copy_from_slice(&(i as u64).to_be_bytes());
            send(&tx, &p, dst);
        }
        let all = turn_until(&mut reactor, DEADLINE, |_| packets.len() >= sizes.len());
        assert!(all, "{} of {} packets", packets.len(), sizes.len());
        assert_eq!(
            reactor
                .socket_counters(key)
                .expect("registered")
                .recv
                .kernel_drops,
            0
        );
        for (i, p) in packets.try_iter().enumerate() {
            assert_eq!(p.len(), sizes[i]);
            assert_eq!(seq_of(&p), i as u64);
            assert!(p[8..].iter().all(|&b| b == i as u8), "packet {i} damaged");
        }
        assert_eq!(sink.dropped(), 0);
    });
}
