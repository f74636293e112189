//! Shared by `feed_demo` and `soak`: the sequence-numbered feed sender,
//! per-packet accounting (gaps and loss by the library's `SeqTracker`,
//! kernel drops) and a latency histogram (hdrhistogram). Payloads start
//! with a big-endian u64 sequence number (`SeqFormat::default()`).

#![allow(dead_code)]

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use ipv4_reactor::feed::{FeedEvent, SeqFormat, SeqTracker};
use ipv4_reactor::reactor::Context;
use ipv4_reactor::{ControlMessage, Interface, Message, Packet, PacketConn, SendBatch};

/// The latency histogram: three significant digits from 1 ns to a minute
/// (longer ones count as a minute), allocated once.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Live figures, written by the receiving side, read by the printer.
#[derive(Default)]
pub struct Live {
    pub received: AtomicU64,
    pub gaps: AtomicU64,
    pub lost: AtomicU64,
    pub kernel_drops: AtomicU64,
}

/// Per-packet accounting of the receiving side: the sequence numbers go
/// through a `SeqTracker` (late packets fill holes, copies are not loss);
/// `gaps` and `lost` are the holes it declared lost so far, all of them
/// after [`FeedStats::finish`].
pub struct FeedStats {
    pub tracker: SeqTracker,
    pub received: u64,
    pub gaps: u64,
    pub lost: u64,
    pub kernel_drops: u64,
    pub latency: Histogram<u64>,
    live: Arc<Live>,
}

impl FeedStats {
    pub fn new(live: Arc<Live>) -> FeedStats {
        FeedStats {
            tracker: SeqTracker::new(SeqFormat::default()),
            received: 0,
            gaps: 0,
            lost: 0,
            kernel_drops: 0,
            latency: latency_histogram(),
            live,
        }
    }

    #[inline]
    pub fn on_packet(
        &mut self,
        payload: &[u8],
        cm: &ControlMessage,
        drops_before: u32,
        now: SystemTime,
    ) {
        if let Some(ts) = cm.timestamp {
            if let Ok(d) = now.duration_since(ts) {
                self.latency.saturating_record(d.as_nanos() as u64);
            }
        }
        let mut event = false;
        self.tracker.on_packet(payload, |e| {
            event |= !matches!(e, FeedEvent::Deliver(_));
        });
        if event {
            self.take_counts();
        }
        self.received += 1;
        self.kernel_drops += u64::from(drops_before);
        self.live.received.store(self.received, Ordering::Relaxed);
        self.live.gaps.store(self.gaps, Ordering::Relaxed);
        self.live.lost.store(self.lost, Ordering::Relaxed);
        self.live
            .kernel_drops
            .store(self.kernel_drops, Ordering::Relaxed);
    }

    /// Declares the holes still open lost (the end of the run).
    pub fn finish(&mut self) {
        self.tracker.finish(|_| {});
        self.take_counts();
    }

    fn take_counts(&mut self) {
        let c = self.tracker.counters();
        self.gaps = c.gaps;
        self.lost = c.lost;
    }
}

/// The callback-mode handler: accounts each borrowed packet, and hands its
/// figures back when the reactor drops it.
pub struct FeedHandler {
    pub stats: Option<FeedStats>,
    pub done: crossbeam_channel::Sender<FeedStats>,
}

impl ipv4_reactor::reactor::Handler for FeedHandler {
    fn on_packet(&mut self, p: &Packet<'_>, _ctx: &mut Context<'_>) {
        let now = SystemTime::now();
        if let Some(s) = self.stats.as_mut() {
            s.on_packet(p.payload, &p.cm, p.drops_before, now);
        }
    }
}

impl Drop for FeedHandler {
    fn drop(&mut self) {
        if let Some(mut s) = self.stats.take() {
            s.finish();
            let _ = self.done.send(s);
        }
    }
}

/// Sends the feed at `rate` (0: unpaced) for `duration`, then, after a pause, one last
/// packet: the kernel reports its drop counter on packets queued after the
/// drops, so the last packet carries the final count.
pub fn send_feed(
    lo: &Interface,
    group: SocketAddrV4,
    rate: u64,
    size: usize,
    duration: Duration,
    sent: &AtomicU64,
    sending: &AtomicBool,
) -> std::io::Result<Duration> {
    let result = send_feed_inner(lo, group, rate, size, duration, sent);
    sending.store(false, Ordering::Release);
    result
}

fn send_feed_inner(
    lo: &Interface,
    group: SocketAddrV4,
    rate: u64,
    size: usize,
    duration: Duration,
    sent: &AtomicU64,
) -> std::io::Result<Duration> {
    const BATCH: usize = 32;
    let tx = PacketConn::multicast_sender(lo)?;
    let mut payloads = vec![vec![0u8; size]; BATCH];
    let mut batch = SendBatch::new(BATCH)?;
    let start = Instant::now();
    let mut seq = 0u64;
    let mut send = |count: usize, seq: &mut u64| -> std::io::Result<()> {
        for p in payloads.iter_mut().take(count) {
            p[..8].copy_from_slice(&seq.to_be_bytes());
            *seq += 1;
        }
        let msgs: Vec<Message<'_>> = payloads[..count]
            .iter()
            .map(|p| Message::new(p, group))
            .collect();
        let n = batch.send_all(&tx, &msgs)?;
        sent.fetch_add(n as u64, Ordering::Release);
        Ok(())
    };
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        // Rate 0: as fast as the socket takes them.
        let due = if rate == 0 {
            u64::MAX
        } else {
            (elapsed.as_secs_f64() * rate as f64) as u64
        };
        if seq < due {
            let count = ((due - seq) as usize).min(BATCH);
            send(count, &mut seq)?;
        } else {
            let wait = Duration::from_secs_f64((seq + 1 - due) as f64 / rate as f64);
            if wait > Duration::from_micros(200) {
                thread::sleep(wait.min(Duration::from_millis(5)));
            } else {
                thread::yield_now();
            }
        }
    }
    let elapsed = start.elapsed();
    thread::sleep(Duration::from_millis(200));
    send(1, &mut seq)?;
    Ok(elapsed)
}
