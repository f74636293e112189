//! A reactor nested in an outer mio `Poll`: the outer loop owns the thread,
//! polls the reactor's epoll descriptor with its own sources, and turns the
//! reactor without blocking when it is readable or says it has work left.
//!
//! Run: `cargo run --example nested_mio -- [--packets N]` (lo only:
//! multicast to 239.255.157.1 through lo).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ipv4_reactor::reactor::{from_fn, Reactor};
use ipv4_reactor::{Interface, PacketConn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

const REACTOR: Token = Token(0);

/// A reactor nested in an outer mio Poll, fed multicast on lo.
#[derive(Parser)]
struct Args {
    /// Packets to send and receive
    #[arg(long, default_value_t = 10_000)]
    packets: u64,
}

fn main() -> std::io::Result<()> {
    let Args { packets } = Args::parse();
    let lo = Interface::loopback();
    let group = Ipv4Addr::new(239, 255, 157, 1);
    let rx = PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), lo.clone())
        .recv_buffer(8 << 20)
        .build()?;
    let dst = SocketAddrV4::new(group, rx.local_addr()?.port());

    let mut reactor = Reactor::builder().budget(256).build()?;
    let got = Arc::new(AtomicU64::new(0));
    let g = Arc::clone(&got);
    reactor.register(
        rx,
        from_fn(move |_p, _ctx| {
            g.fetch_add(1, Ordering::Relaxed);
        }),
    )?;
    let ticks = Arc::new(AtomicU64::new(0));
    let t = Arc::clone(&ticks);
    reactor.add_periodic(Duration::from_millis(10), move |_| {
        t.fetch_add(1, Ordering::Relaxed);
    })?;

    // The outer loop: its own Poll, the reactor's descriptor in it.
    let mut outer = Poll::new()?;
    let fd = reactor.as_raw_fd();
    outer
        .registry()
        .register(&mut SourceFd(&fd), REACTOR, Interest::READABLE)?;
    let mut events = Events::with_capacity(64);

    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let tx = PacketConn::multicast_sender(&Interface::loopback())?;
        std::thread::sleep(Duration::from_millis(200)); // let the join settle
        for i in 0..packets {
            tx.send_to(&i.to_be_bytes(), None, dst)?;
            if i % 256 == 255 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Ok(())
    });

    let start = Instant::now();
    while got.load(Ordering::Relaxed) < packets && start.elapsed() < Duration::from_secs(20) {
        // Wait no longer than the reactor's next timer, and not at all if
        // it has work that raises no readiness (a budget stop).
        let mut timeout = reactor
            .next_deadline()
            .map(|at| at.saturating_duration_since(Instant::now()));
        if reactor.needs_turn() {
            timeout = Some(Duration::ZERO);
        }
        outer.poll(&mut events, timeout.or(Some(Duration::from_millis(100))))?;
        // Readable, a deadline, or work left: one non-blocking turn.
        reactor.turn(Some(Duration::ZERO))?;
    }
    sender.join().expect("sender thread")?;
    println!(
        "nested: {} of {packets} packets, {} timer ticks, {} reactor turns in {:?}",
        got.load(Ordering::Relaxed),
        ticks.load(Ordering::Relaxed),
        reactor.counters().turns,
        start.elapsed()
    );
    Ok(())
}
