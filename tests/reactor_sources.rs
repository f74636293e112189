//! Foreign sources in the reactor (issue 15): a TCP connection and a timer
//! served by the reactor that drains a multicast flood, with fairness;
//! deregistration giving the source back; stale keys; the Handle forms.
//!
//! Network safety: multicast only through
//! `PacketConn::multicast_sender(&Interface::loopback())`, to groups
//! 239.255.156.x; TCP and Unix sockets on 127.0.0.1 and socketpairs.

mod util;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::{from_fn, SourceContext};
use ipv4_reactor::{Interface, PacketConn};
use mio::net::{TcpStream, UnixStream};
use mio::Interest;

fn multicast_rx(group: Ipv4Addr) -> (PacketConn, SocketAddrV4) {
    let rx = PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), Interface::loopback())
        .recv_buffer(4 << 20)
        .build()
        .expect("multicast receiver on lo");
    let dst = SocketAddrV4::new(group, rx.local_addr().unwrap().port());
    (rx, dst)
}

fn lo_sender() -> PacketConn {
    let tx = PacketConn::multicast_sender(&Interface::loopback()).expect("sender on lo");
    assert_eq!(
        tx.multicast_interface().unwrap().unwrap().name,
        "lo",
        "NETWORK SAFETY: multicast must leave through lo"
    );
    tx
}

/// Reads what is there; returns bytes read, or None at end of stream.
fn read_available(stream: &mut impl Read, out: &mut Vec<u8>) -> Option<usize> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(total),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the TCP stream: {e}"),
        }
    }
}

#[test]
fn tcp_and_timer_are_served_while_multicast_floods_the_same_reactor() {
    util::reactor::each_backend(|| {
        let group = Ipv4Addr::new(239, 255, 156, 1);
        let (rx, dst) = multicast_rx(group);
        // A small budget: the flood must give way to the other work each turn.
        let mut reactor = util::reactor::builder().budget(64).build().unwrap();

        let packets = Arc::new(AtomicU64::new(0));
        let p = Arc::clone(&packets);
        reactor
            .register(
                rx,
                from_fn(move |_pkt, _ctx| {
                    p.fetch_add(1, Ordering::Relaxed);
                }),
            )
            .unwrap();

        // TCP: each message that arrives records how many packets the
        // reactor had delivered by then.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let tcp_seen: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
        let (seen, p) = (Arc::clone(&tcp_seen), Arc::clone(&packets));
        let mut received = Vec::new();
        let tcp_key = reactor
            .register_source(
                TcpStream::from_std(server),
                Interest::READABLE,
                move |s: &mut TcpStream, ready, ctx: &mut SourceContext<'_>| {
                    assert!(ready.is_readable() || ready.is_read_closed());
                    match read_available(s, &mut received) {
                        Some(n) if n > 0 => seen
                            .lock()
                            .unwrap()
                            .push((received.len(), p.load(Ordering::Relaxed))),
                        Some(_) => {}
                        None => ctx.set_interest(Interest::WRITABLE), // closed: stop reading
                    }
                },
            )
            .unwrap();

        // A periodic timer: each firing records the packet count too.
        let timer_seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let (tseen, p) = (Arc::clone(&timer_seen), Arc::clone(&packets));
        reactor
            .add_periodic(Duration::from_millis(5), move |_ctx| {
                tseen.lock().unwrap().push(p.load(Ordering::Relaxed));
            })
            .unwrap();

        // The flood runs until the talker is done; the talker starts once
        // the reactor has delivered some of it and stops the reactor once it
        // has delivered more than a thousand packets: counts, not times, so
        // a slow run (the memory checker) floods as long as it needs.
        let flooding = Arc::new(AtomicBool::new(true));
        let sent = Arc::new(AtomicU64::new(0));
        let handle = reactor.handle();
        let (f, s) = (Arc::clone(&flooding), Arc::clone(&sent));
        let flood = thread::spawn(move || {
            let tx = lo_sender();
            thread::sleep(Duration::from_millis(200)); // let the join settle
            let payload = [7u8; 64];
            let until = Instant::now() + Duration::from_secs(60);
            while f.load(Ordering::Acquire) && Instant::now() < until {
                for _ in 0..64 {
                    if tx.send_to(&payload, None, dst).is_ok() {
                        s.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        let (f, delivered) = (Arc::clone(&flooding), Arc::clone(&packets));
        let talker = thread::spawn(move || {
            let wait_for = |n: u64| {
                let until = Instant::now() + Duration::from_secs(60);
                while delivered.load(Ordering::Relaxed) < n && Instant::now() < until {
                    thread::sleep(Duration::from_millis(5));
                }
            };
            wait_for(200); // in the middle of the flood
            for i in 0..20 {
                client
                    .write_all(format!("msg {i:02}\n").as_bytes())
                    .unwrap();
                thread::sleep(Duration::from_millis(20));
            }
            wait_for(1001);
            thread::sleep(Duration::from_millis(100));
            handle.stop();
            f.store(false, Ordering::Release);
            client
        });

        let started = Instant::now();
        reactor.run().unwrap();
        assert!(started.elapsed() < Duration::from_secs(150));
        flood.join().unwrap();
        let client = talker.join().unwrap();
        drop(client);

        let total = packets.load(Ordering::Relaxed);
        assert!(total > 1000, "the flood delivered only {total} packets");
        let tcp = tcp_seen.lock().unwrap().clone();
        let last_tcp = tcp.last().expect("no TCP data at all").0;
        assert_eq!(last_tcp, 20 * 7, "every TCP byte arrives: {tcp:?}");
        // Fairness: TCP reads and timer firings happened between packets of the
        // flood, not only before or after it.
        let mid = |c: u64| c > 0 && c < total;
        let tcp_mid = tcp.iter().filter(|(_, c)| mid(*c)).count();
        let timer = timer_seen.lock().unwrap().clone();
        let timer_mid = timer.iter().filter(|&&c| mid(c)).count();
        assert!(
            tcp_mid >= 5,
            "only {tcp_mid} of {} TCP reads came while packets flowed ({total} packets)",
            tcp.len()
        );
        assert!(
            timer_mid >= 20,
            "only {timer_mid} of {} timer firings came while packets flowed",
            timer.len()
        );
        let c = reactor.counters();
        assert!(c.source_events >= tcp.len() as u64);
        assert!(c.timer_firings >= timer.len() as u64);
        assert_eq!(c.sources, 1);
        // The stream comes back on deregistration, usable.
        let stream: TcpStream = reactor.deregister_source(tcp_key).unwrap();
        assert_eq!(stream.peer_addr().unwrap().ip(), Ipv4Addr::LOCALHOST);
        assert_eq!(reactor.counters().sources, 0);
    });
}

#[test]
fn a_deregistered_source_comes_back_and_its_key_goes_stale() {
    util::reactor::each_backend(|| {
        let mut reactor = util::reactor::builder().build().unwrap();
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&calls);
        let key = reactor
            .register_source(a, Interest::READABLE, move |s: &mut UnixStream, _, _| {
                let mut sink = Vec::new();
                read_available(s, &mut sink);
                c.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        a_peer.write_all(b"x").unwrap();
        reactor.turn(Some(Duration::from_millis(500))).unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 1);

        let mut back = reactor.deregister_source(key).unwrap();
        // No longer polled: the reactor does not call the handler.
        a_peer.write_all(b"y").unwrap();
        reactor.turn(Some(Duration::from_millis(50))).unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        let mut byte = [0u8; 1];
        assert_eq!(back.read(&mut byte).unwrap(), 1);
        assert_eq!(&byte, b"y");

        // The stale key is refused, also once another source took its slot.
        let err = reactor.deregister_source(key).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("not registered"), "{err}");
        let (b, _b_peer) = UnixStream::pair().unwrap();
        let key2 = reactor
            .register_source(b, Interest::READABLE, |_: &mut UnixStream, _, _| {})
            .unwrap();
        assert_ne!(key, key2);
        assert!(reactor.source_mut(key).is_none());
        assert!(reactor.source_mut(key2).is_some());
        assert!(reactor.deregister_source(key).is_err());
        reactor.deregister_source(key2).unwrap();
    });
}

#[test]
fn a_source_handler_deregisters_itself_and_stops_the_reactor() {
    util::reactor::each_backend(|| {
        let mut reactor = util::reactor::builder().build().unwrap();
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let flag = Flag(Arc::clone(&dropped));
        let key = reactor
            .register_source(a, Interest::READABLE, move |s: &mut UnixStream, _, ctx| {
                let _keep = &flag; // dropped with the handler
                let mut sink = Vec::new();
                read_available(s, &mut sink);
                ctx.deregister();
                ctx.stop();
            })
            .unwrap();
        a_peer.write_all(b"bye").unwrap();
        reactor.run().unwrap();
        assert!(dropped.load(Ordering::Acquire), "handler dropped");
        assert!(reactor.deregister_source(key).is_err());
        assert_eq!(reactor.counters().sources, 0);
    });
}

#[test]
fn a_panicking_source_handler_is_caught_and_dropped() {
    util::reactor::each_backend(|| {
        let mut reactor = util::reactor::builder().build().unwrap();
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let key = reactor
            .register_source(a, Interest::READABLE, |_: &mut UnixStream, _, _| {
                panic!("source handler bug")
            })
            .unwrap();
        a_peer.write_all(b"!").unwrap();
        reactor.turn(Some(Duration::from_millis(500))).unwrap();
        assert_eq!(reactor.counters().handler_panics, 1);
        let panics = reactor.take_panics();
        assert!(panics[0].contains("source handler bug"), "{panics:?}");
        assert!(reactor.deregister_source(key).is_err());
    });
}

#[test]
fn sources_through_a_handle_of_a_spawned_reactor() {
    util::reactor::each_backend(|| {
        let (handle, join) = util::reactor::builder().spawn().unwrap();
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = Arc::clone(&got);
        let key = handle
            .register_source(a, Interest::READABLE, move |s: &mut UnixStream, _, _| {
                read_available(s, &mut g.lock().unwrap());
            })
            .unwrap();
        a_peer.write_all(b"over the handle").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.lock().unwrap().len() < 15 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(got.lock().unwrap().as_slice(), b"over the handle");
        // Write through the reactor's copy of the stream.
        handle
            .with_source(key, |s: &mut UnixStream| s.write_all(b"back"))
            .unwrap()
            .unwrap();
        let mut buf = [0u8; 4];
        a_peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"back");
        let stream = handle.deregister_source(key).unwrap();
        drop(stream);
        assert!(handle.deregister_source(key).is_err());
        handle.stop();
        join.join().unwrap().unwrap();
    });
}
