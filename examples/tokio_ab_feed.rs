// cargo run --example tokio_ab_feed --features tokio
//
// A tokio service consuming an A/B feed, all on the loopback interface
// (nothing leaves the machine). A reactor thread reads lines A and B (two
// multicast groups on lo, each socket with its kernel drop counter) and
// hands every packet through one ChannelSink to a tokio task, which awaits
// them (ChannelSink::bounded_async) and runs the feed's Arbiter: each
// sequence number once, from whichever line brought it first, with each
// line's own gaps. A publisher task sends the same sequence on both lines
// with AsyncPacketConn::send_batch_all, A missing one packet in 100 and B
// another, so the merged feed has no loss although each line has some. Steering goes through the Handle's async calls. Runs about two
// seconds, prints a summary, and exits non-zero if the merged feed lost
// anything or the counts do not add up.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ipv4_reactor::feed::{Arbiter, FeedEvent, SeqFormat, Verdict};
use ipv4_reactor::reactor::{ChannelSink, Overflow, Reactor};
use ipv4_reactor::tokio::AsyncPacketConn;
use ipv4_reactor::{ControlFlags, Interface, Message, PacketConn, SendBatch};

/// Packets per line.
const COUNT: u64 = 100_000;
/// Packets per line per burst, and the pause after each (tokio's timer
/// rounds it up to the next millisecond tick): some 50 000 pps per line.
const BURST: usize = 128;
const PAUSE: Duration = Duration::from_millis(1);
const PAYLOAD: usize = 64;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<ExitCode> {
    let lo = Interface::loopback();
    let groups = [
        Ipv4Addr::new(239, 255, 62, 1),
        Ipv4Addr::new(239, 255, 62, 2),
    ];

    // The reactor on a thread of its own; the task gets its packets.
    let (handle, reactor_thread) = Reactor::builder().spawn()?;
    let (sink, mut packets) = ChannelSink::bounded_async(8192, 2048, Overflow::DropNewest)?;
    let mut keys = Vec::new();
    let mut dsts = Vec::new();
    for group in groups {
        let rx = PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), lo.clone())
            .control(ControlFlags::DROPS)
            .recv_buffer(8 << 20)
            .build()?;
        dsts.push(SocketAddrV4::new(group, rx.local_addr()?.port()));
        keys.push(handle.register_async(rx, sink.clone()).await?);
    }
    println!(
        "tokio_ab_feed: line A {} and line B {} on lo, {COUNT} packets each",
        dsts[0], dsts[1]
    );

    // The publisher: same sequence on both lines, each missing some.
    let tx = AsyncPacketConn::new(PacketConn::multicast_sender(&lo)?)?;
    tokio::time::sleep(Duration::from_millis(200)).await; // a fresh join takes a moment on lo
    let (a, b) = (dsts[0], dsts[1]);
    let publisher = tokio::spawn(async move {
        let mut batch = SendBatch::new(2 * BURST)?;
        let mut payloads = vec![[0u8; PAYLOAD]; BURST];
        let mut sent = [0u64; 2];
        let mut seq = 1u64;
        while seq <= COUNT {
            let n = (COUNT + 1 - seq).min(BURST as u64) as usize;
            for (i, p) in payloads.iter_mut().take(n).enumerate() {
                p[..8].copy_from_slice(&(seq + i as u64).to_be_bytes());
            }
            let mut msgs = Vec::with_capacity(2 * n);
            for (i, p) in payloads.iter().take(n).enumerate() {
                let s = seq + i as u64;
                if s % 100 != 7 {
                    msgs.push(Message::new(p, a));
                    sent[0] += 1;
                }
                if s % 100 != 57 {
                    msgs.push(Message::new(p, b));
                    sent[1] += 1;
                }
            }
            let out = tx.send_batch_all(&mut batch, &msgs).await?;
            if out < msgs.len() {
                return Err(std::io::Error::other(format!(
                    "sent {out} of {} messages",
                    msgs.len()
                )));
            }
            seq += n as u64;
            tokio::time::sleep(PAUSE).await;
        }
        Ok::<_, std::io::Error>(sent)
    });

    // The consumer: arbitrates what the reactor hands over.
    let mut arbiter = Arbiter::new(SeqFormat::default(), 2)?; // u64 big-endian at offset 0
    let mut delivered = 0u64;
    let mut lost_ranges = Vec::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    let mut batch = Vec::with_capacity(256);
    let mut publisher_done = false;
    loop {
        // Until the publisher is done and the lines have been quiet for
        // 100 ms (the last copies are in), or the deadline.
        batch.clear();
        let wait = tokio::time::timeout(
            Duration::from_millis(100),
            packets.recv_many(&mut batch, 256),
        );
        if wait.await.is_err() {
            // Quiet: let the arbiter judge silent lines.
            arbiter.poll(Instant::now(), |_| {});
            if publisher_done || Instant::now() > deadline {
                break;
            }
            publisher_done = publisher.is_finished();
            continue;
        }
        let now = Instant::now();
        for p in &batch {
            let line = if p.key() == keys[0] { 0 } else { 1 };
            let verdict = arbiter.on_packet(line, p, p.drops_before(), now, |e| {
                if let FeedEvent::Lost { from, to } = e {
                    lost_ranges.push((from, to));
                }
            })?;
            if matches!(verdict, Verdict::New | Verdict::Late) {
                delivered += 1; // one message per packet in this format
            }
        }
    }
    let elapsed = started.elapsed();
    let sent = publisher.await.map_err(std::io::Error::other)??;
    arbiter.finish(|e| {
        if let FeedEvent::Lost { from, to } = e {
            lost_ranges.push((from, to));
        }
    });

    // Figures from the reactor, through the handle's async calls.
    let mut kernel_drops = 0;
    let mut received = [0u64; 2];
    for (i, key) in keys.iter().enumerate() {
        let c = handle.socket_counters_async(*key).await?;
        kernel_drops += c.recv.kernel_drops;
        received[i] = c.recv.packets;
    }
    handle.stop();
    reactor_thread
        .join()
        .map_err(|_| std::io::Error::other("the reactor thread panicked"))??;
    drop(sink);

    let total = arbiter.counters();
    println!("tokio_ab_feed summary ({:.2} s)", elapsed.as_secs_f64());
    println!("  sequence numbers      {COUNT:>9}");
    println!("  delivered once        {delivered:>9}");
    println!("  duplicates dropped    {:>9}", total.duplicates);
    println!("  lost (merged feed)    {:>9}", total.lost);
    println!("  kernel drops          {kernel_drops:>9}");
    for (i, name) in ["A", "B"].iter().enumerate() {
        let l = arbiter.line(i).expect("two lines");
        println!(
            "  line {name}: sent {:>7}  received {:>7}  first {:>7}  gaps {:>5}  lost {:>5}",
            sent[i], received[i], l.first, l.gaps, l.lost
        );
    }

    let channel_drops = received.iter().sum::<u64>() - total.packets;
    if total.lost > 0 || delivered != COUNT || channel_drops > 0 {
        eprintln!(
            "tokio_ab_feed: FAILED: {delivered} of {COUNT} delivered, {} lost {lost_ranges:?}, {channel_drops} packets received by the reactor but not by the task (kernel drops {kernel_drops})",
            total.lost
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
