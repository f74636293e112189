// cargo run --example reactor_callback
//
// The reactor's callback path: the same feed published on two multicast
// groups (an A line and a B line), received on the loopback interface by
// one reactor. Each packet is borrowed by a closure, without a copy. The
// handlers arbitrate A/B: the first copy of each sequence number wins, so a
// packet lost on one line is filled from the other. Nothing leaves the
// machine.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::{from_fn, Reactor};
use ipv4_reactor::{ControlFlags, Interface, PacketConn};

const COUNT: u64 = 10_000;

/// Which sequence numbers arrived, and on which line first.
struct Arbiter {
    seen: Vec<bool>,
    first_from: [u64; 2],
    duplicates: u64,
}

fn main() -> std::io::Result<()> {
    let lo = Interface::loopback();
    let lines = [
        Ipv4Addr::new(239, 255, 60, 1),
        Ipv4Addr::new(239, 255, 60, 2),
    ];
    let flags = ControlFlags::DST | ControlFlags::DROPS;

    let arbiter = Arc::new(Mutex::new(Arbiter {
        seen: vec![false; COUNT as usize],
        first_from: [0; 2],
        duplicates: 0,
    }));
    let mut reactor = Reactor::builder().build()?;
    let mut destinations = Vec::new();
    let mut keys = Vec::new();
    for (line, group) in lines.into_iter().enumerate() {
        let rx = PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), lo.clone())
            .control(flags)
            .recv_buffer(8 << 20)
            .build()?;
        destinations.push(SocketAddrV4::new(group, rx.local_addr()?.port()));
        let arbiter = Arc::clone(&arbiter);
        // The reactor runs handlers on one thread, one at a time: the lock
        // is never contended.
        let key = reactor.register(
            rx,
            from_fn(move |p, _ctx| {
                let Some(seq) = p
                    .payload
                    .get(..8)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
                else {
                    return;
                };
                let mut a = arbiter.lock().unwrap();
                match a.seen.get_mut(seq as usize) {
                    Some(seen) if !*seen => {
                        *seen = true;
                        a.first_from[line] += 1;
                    }
                    Some(_) => a.duplicates += 1,
                    None => {}
                }
            }),
        )?;
        println!("line {} ({group}) registered as {key}", ["A", "B"][line]);
        keys.push(key);
    }

    // The publisher: every sequence number goes out on both lines.
    let tx = PacketConn::multicast_sender(&lo)?;
    std::thread::sleep(Duration::from_millis(300));
    for seq in 0..COUNT {
        for dst in &destinations {
            tx.send_to(&seq.to_be_bytes(), None, *dst)?;
        }
        // Drive the reactor as we go (a real program runs it on its own
        // thread, see reactor_channel).
        if seq % 64 == 0 {
            reactor.turn(Some(Duration::ZERO))?;
        }
    }
    // Drain what is left, until nothing arrives for 200 ms.
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_millis(200) {
        if reactor.turn(Some(Duration::from_millis(50)))? > 0 {
            last = Instant::now();
        }
    }

    for (line, key) in keys.iter().enumerate() {
        let c = reactor.socket_counters(*key).expect("registered");
        println!(
            "line {}: {} packets in {} batches ({:.1} per recvmmsg), {} kernel drops",
            ["A", "B"][line],
            c.recv.packets,
            c.recv.batches,
            c.recv.average_batch(),
            c.recv.kernel_drops
        );
    }
    let a = arbiter.lock().unwrap();
    let have = a.seen.iter().filter(|&&s| s).count();
    println!(
        "arbitrated feed: {have} of {COUNT} sequence numbers ({} first from A, {} first from B, {} duplicates dropped)",
        a.first_from[0], a.first_from[1], a.duplicates
    );
    Ok(())
}
