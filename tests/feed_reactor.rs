//! Feeds over real sockets: redundant lines registered in a reactor
//! (`Reactor::register_feed`), packets sent on `lo` in the formats of real
//! feeds, and what the feed handler and the counters say.
//!
//! Network safety: multicast only through a sender whose interface is lo
//! (checked), to groups 239.255.158.x on ephemeral ports.

mod util;

use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipv4_reactor::feed::{Arbiter, Delivery, FeedEvent, SeqCounters, SeqFormat};
use ipv4_reactor::reactor::{Context, FeedHandler, FeedKey, Reactor};
use ipv4_reactor::{ControlFlags, Packet, PacketConn};
use util::{asm_group, dst_of, lo_receiver, lo_sender, send, DEADLINE, SETTLE};

/// Third octet of this file's groups: 239.255.158.x.
const TAG: u8 = 158;

/// What the feed handler saw: each delivery (line, first, count, skip,
/// late) and every event.
#[derive(Default)]
struct Seen {
    deliveries: Vec<(usize, u64, u64, u64, bool)>,
    events: Vec<FeedEvent>,
}

struct Recorder(Arc<Mutex<Seen>>);

impl FeedHandler for Recorder {
    fn on_data(&mut self, line: usize, _p: &Packet<'_>, d: Delivery, _ctx: &mut Context<'_>) {
        self.0
            .lock()
            .unwrap()
            .deliveries
            .push((line, d.first, d.count, d.skip, d.late));
    }

    fn on_event(&mut self, event: FeedEvent) {
        self.0.lock().unwrap().events.push(event);
    }
}

/// A reactor with one feed of `lines` lines in `format`, and where to send
/// to each line.
struct Feed {
    reactor: Reactor,
    key: FeedKey,
    dsts: Vec<SocketAddrV4>,
    seen: Arc<Mutex<Seen>>,
    tx: PacketConn,
}

impl Feed {
    fn new(format: SeqFormat, lines: usize) -> Feed {
        let mut conns = Vec::new();
        let mut dsts = Vec::new();
        for _ in 0..lines {
            let g = asm_group(TAG);
            let rx = lo_receiver(g, ControlFlags::DROPS);
            dsts.push(dst_of(g, &rx));
            conns.push(rx);
        }
        let mut reactor = util::reactor::builder().build().expect("reactor");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let arbiter = Arbiter::new(format, lines).expect("arbiter");
        let key = reactor
            .register_feed(conns, arbiter, Recorder(Arc::clone(&seen)))
            .expect("register_feed");
        thread::sleep(SETTLE);
        Feed {
            reactor,
            key,
            dsts,
            seen,
            tx: lo_sender(),
        }
    }

    fn send(&self, line: usize, payload: &[u8]) {
        send(&self.tx, payload, self.dsts[line]);
    }

    /// Turns until the feed's lines received `packets` packets in all.
    fn receive(&mut self, packets: u64) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let c = self.reactor.feed_counters(self.key).expect("feed");
            let got: u64 = c.lines.iter().map(|l| l.packets).sum();
            if got >= packets {
                assert_eq!(got, packets, "more packets than sent");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {got} of {packets} packets arrived"
            );
            self.reactor
                .turn(Some(Duration::from_millis(20)))
                .expect("turn");
        }
    }

    /// Ends the feed: the merged counters, each line's, and what the
    /// handler saw.
    fn finish(mut self) -> (SeqCounters, Vec<ipv4_reactor::feed::LineCounters>, Seen) {
        let parts = self
            .reactor
            .deregister_feed(self.key)
            .expect("deregister_feed");
        assert_eq!(parts.conns.len(), self.dsts.len(), "every line socket back");
        let lines = (0..parts.arbiter.lines())
            .map(|i| parts.arbiter.line(i).unwrap())
            .collect();
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        (parts.arbiter.counters(), lines, seen)
    }
}

fn u64be(seq: u64) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p
}

#[test]
fn two_lines_each_missing_a_different_range_deliver_every_sequence_once() {
    util::reactor::each_backend(|| {
        let mut feed = Feed::new(SeqFormat::default(), 2);
        let n = 200u64;
        let mut sent = 0;
        for seq in 0..n {
            // Line A misses 40..60, line B misses 120..150.
            if !(40..60).contains(&seq) {
                feed.send(0, &u64be(seq));
                sent += 1;
            }
            if !(120..150).contains(&seq) {
                feed.send(1, &u64be(seq));
                sent += 1;
            }
        }
        feed.receive(sent);
        let (total, lines, seen) = feed.finish();

        let mut delivered: Vec<u64> = seen.deliveries.iter().map(|d| d.1).collect();
        delivered.sort_unstable();
        assert_eq!(delivered, (0..n).collect::<Vec<_>>(), "each sequence once");
        assert!(seen.deliveries.iter().all(|d| d.2 == 1));
        assert_eq!(total.messages, n);
        assert_eq!((total.lost, total.gaps), (0, 0), "{total:?}");
        assert_eq!(total.duplicates, sent - n);
        assert_eq!(
            (lines[0].lost, lines[0].gaps),
            (20, 1),
            "line A: {:?}",
            lines[0]
        );
        assert_eq!(
            (lines[1].lost, lines[1].gaps),
            (30, 1),
            "line B: {:?}",
            lines[1]
        );
        assert_eq!(lines[0].first + lines[1].first, n);
        // B brought what A missed, and A what B missed.
        assert!(seen
            .deliveries
            .iter()
            .filter(|d| (40..60).contains(&d.1))
            .all(|d| d.0 == 1));
        assert!(seen
            .deliveries
            .iter()
            .filter(|d| (120..150).contains(&d.1))
            .all(|d| d.0 == 0));
        assert!(!seen
            .events
            .iter()
            .any(|e| matches!(e, FeedEvent::Lost { .. })));
    });
}

#[test]
fn one_line_with_10_12_11_13_counts_one_reordered_and_nothing_lost() {
    util::reactor::each_backend(|| {
        let mut feed = Feed::new(SeqFormat::default(), 1);
        for seq in [10u64, 12, 11, 13] {
            feed.send(0, &u64be(seq));
        }
        feed.receive(4);
        let (total, _, seen) = feed.finish();
        assert_eq!(
            (total.reordered, total.lost, total.gaps, total.messages),
            (1, 0, 0, 4),
            "{total:?}"
        );
        let order: Vec<(u64, bool)> = seen.deliveries.iter().map(|d| (d.1, d.4)).collect();
        assert_eq!(order, [(10, false), (12, false), (11, true), (13, false)]);
        assert!(seen
            .events
            .contains(&FeedEvent::GapOpened { from: 11, to: 11 }));
        assert!(seen
            .events
            .contains(&FeedEvent::GapFilled { from: 11, to: 11 }));
    });
}

/// A MoldUDP64 downstream packet: session, first sequence, message count,
/// then each message as a u16 BE length and its bytes.
fn mold(session: &[u8; 10], seq: u64, messages: &[&[u8]]) -> Vec<u8> {
    let mut p = session.to_vec();
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(messages.len() as u16).to_be_bytes());
    for m in messages {
        p.extend_from_slice(&(m.len() as u16).to_be_bytes());
        p.extend_from_slice(m);
    }
    p
}

fn mold_control(session: &[u8; 10], next: u64, count: u16) -> Vec<u8> {
    let mut p = session.to_vec();
    p.extend_from_slice(&next.to_be_bytes());
    p.extend_from_slice(&count.to_be_bytes());
    p
}

#[test]
fn moldudp64_heartbeats_blocks_a_lost_packet_and_the_end_of_session() {
    util::reactor::each_backend(|| {
        let session = b"SESSION001";
        let mut feed = Feed::new("moldudp64".parse().unwrap(), 1);
        let msg: &[u8] = b"ADD ORDER";
        let packets = [
            mold(session, 1, &[msg, msg, msg]), // 1..=3
            mold_control(session, 4, 0),        // heartbeat: 4 is next
            mold(session, 4, &[msg, msg]),      // 4..=5
            // 6..=9 (four messages) never sent: lost
            mold(session, 10, &[msg]),         // 10
            mold_control(session, 11, 0),      // heartbeat
            mold_control(session, 11, 0xFFFF), // end of session
        ];
        for p in &packets {
            feed.send(0, p);
        }
        feed.receive(packets.len() as u64);
        let (total, _, seen) = feed.finish();
        assert_eq!(total.messages, 6, "{total:?}");
        assert_eq!(
            (total.lost, total.gaps),
            (4, 1),
            "the lost packet's 4 messages: {total:?}"
        );
        assert_eq!(total.heartbeats, 2, "{total:?}");
        assert_eq!(total.sessions_ended, 1, "{total:?}");
        let blocks: Vec<(u64, u64)> = seen.deliveries.iter().map(|d| (d.1, d.2)).collect();
        assert_eq!(blocks, [(1, 3), (4, 2), (10, 1)]);
        assert!(seen.events.contains(&FeedEvent::Lost { from: 6, to: 9 }));
        assert!(seen
            .events
            .iter()
            .any(|e| matches!(e, FeedEvent::EndOfSession { .. })));
    });
}

fn mdp3(seq: u32, sending_time_ns: u64) -> Vec<u8> {
    let mut p = seq.to_le_bytes().to_vec();
    p.extend_from_slice(&sending_time_ns.to_le_bytes());
    p.extend_from_slice(&[0u8; 20]); // a message or two
    p
}

#[test]
fn mdp3_with_a_lost_packet() {
    util::reactor::each_backend(|| {
        let mut feed = Feed::new("mdp3".parse().unwrap(), 1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let sent = [1u32, 2, 4, 5, 6];
        for seq in sent {
            feed.send(0, &mdp3(seq, now));
        }
        feed.receive(sent.len() as u64);
        let (total, _, seen) = feed.finish();
        assert_eq!(
            (total.messages, total.lost, total.gaps),
            (5, 1, 1),
            "{total:?}"
        );
        assert!(seen.events.contains(&FeedEvent::Lost { from: 3, to: 3 }));
    });
}

#[test]
fn a_short_packet_counts_malformed_and_the_feed_goes_on() {
    util::reactor::each_backend(|| {
        let mut feed = Feed::new(SeqFormat::default(), 1);
        feed.send(0, &u64be(1));
        feed.send(0, &[1, 2, 3]); // too short for a u64 at offset 0
        feed.send(0, &u64be(2));
        feed.receive(3);
        let (total, lines, seen) = feed.finish();
        assert_eq!(total.malformed, 1, "{total:?}");
        assert_eq!(lines[0].malformed, 1);
        assert_eq!((total.messages, total.lost), (2, 0), "{total:?}");
        assert_eq!(seen.deliveries.len(), 2);
    });
}
