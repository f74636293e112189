//! The batched receive and send paths allocate nothing per call: a counting
//! global allocator watches `RecvBatch::recv` + iteration and
//! `SendBatch::send` / `send_all` for every control-flag combination.
//!
//! Its own test binary because it installs a `#[global_allocator]`. Only
//! allocations made by the current thread while its flag is set are
//! counted, so the harness's other threads do not disturb the count.
//!
//! Network safety: unicast UDP on 127.0.0.1 only, through `util::send`.

mod util;

use std::hint::black_box;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use ipv4_reactor::{ControlFlags, ControlMessage, Message, PacketConn, RecvBatch, SendBatch};
use util::batch::Waiter;
use util::{counted, send, udp, DEADLINE};

#[global_allocator]
static GLOBAL: util::CountingAlloc = util::CountingAlloc;

/// What one counted receive saw (plain values: collecting them must not
/// allocate).
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    packets: usize,
    bytes: usize,
    segments: usize,
    control_truncated: usize,
    truncated: usize,
    wouldblock_at_end: bool,
    checksum: u64,
    with_drops: usize,
    with_gro: usize,
    with_timestamp: usize,
    with_ttl: usize,
    with_src: usize,
}

/// Receives until `bytes` payload bytes arrived, touching every part of
/// every packet, then once more to see `WouldBlock`. Allocation-free
/// unless the library allocates (`waiter` was made beforehand).
fn recv_touching(
    batch: &mut RecvBatch,
    rx: &PacketConn,
    bytes: usize,
    waiter: &mut Waiter,
) -> Seen {
    let mut seen = Seen::default();
    let deadline = Instant::now() + DEADLINE;
    while seen.bytes < bytes && Instant::now() < deadline {
        match batch.recv(rx) {
            Ok(n) => {
                for p in batch.iter() {
                    seen.packets += 1;
                    seen.bytes += p.payload.len();
                    seen.checksum = seen
                        .checksum
                        .wrapping_add(p.payload.iter().map(|&b| u64::from(b)).sum::<u64>());
                    for s in p.segments() {
                        seen.segments += 1;
                        black_box(s);
                    }
                    seen.truncated += usize::from(p.truncated());
                    seen.control_truncated += usize::from(p.control_truncated());
                    let cm = black_box(p.cm);
                    seen.with_drops += usize::from(cm.drops.is_some());
                    seen.with_gro += usize::from(cm.gro_segment.is_some());
                    seen.with_timestamp += usize::from(cm.timestamp.is_some());
                    seen.with_ttl += usize::from(cm.ttl == Some(61));
                    seen.with_src += usize::from(p.src.is_some());
                    black_box((cm.ttl, cm.tos, cm.src, cm.dst, cm.ifindex, cm.local));
                    black_box((cm.timestamp, cm.timestamp_nanos(), cm.drops, cm.gro_segment));
                    black_box((p.src, p.flags, p.drops_before, cm.is_empty()));
                }
                for i in 0..n {
                    black_box(batch.get(i).map(|p| p.payload.len()));
                }
                black_box(*batch.counters());
                black_box(batch.counters().average_batch());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                waiter.wait_readable(rx, Duration::from_millis(100));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    seen.wouldblock_at_end =
        matches!(batch.recv(rx), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    seen
}

/// Drains `rx` without looking (uncounted), allowing stragglers a moment.
fn drain(rx: &PacketConn) {
    let mut scratch = RecvBatch::new(64, 65536, ControlFlags::NONE).unwrap();
    let mut waiter = Waiter::new();
    loop {
        while scratch.recv(rx).is_ok() {}
        if !waiter.wait_readable(rx, Duration::from_millis(20)) {
            break;
        }
    }
}

const PLAIN: usize = 6;
const PLAIN_LEN: usize = 100;
const GSO_LEN: usize = 3000;
const GSO_SEG: u16 = 1000;
const ROUND_BYTES: usize = PLAIN * PLAIN_LEN + GSO_LEN;

/// One round of traffic: plain datagrams and a GSO send (coalesced when
/// the receiver has GRO on).
fn send_round(tx: &PacketConn, dst: SocketAddrV4, round: u8) {
    for i in 0..PLAIN {
        send(tx, &[round ^ i as u8; PLAIN_LEN], dst);
    }
    tx.send_segments(&[round; GSO_LEN], GSO_SEG, dst).unwrap();
}

/// Every subset of the receive flags.
fn all_combinations() -> impl Iterator<Item = ControlFlags> {
    let all = ControlFlags::ALL.bits();
    assert_eq!(all, 0x3ff, "ten flags");
    (0..=all).map(ControlFlags::from_bits_truncate)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn the_counting_allocator_counts() {
    let (b, n, _) = counted(|| black_box(Box::new([0u8; 64])));
    drop(b);
    assert!(n >= 1, "a Box allocation was not counted");
    let (v, n, _) = counted(|| {
        let mut v = black_box(Vec::<u8>::with_capacity(1));
        v.extend_from_slice(&[1; 100]);
        v
    });
    drop(v);
    assert!(n >= 2, "allocation + reallocation: counted {n}");
    let ((), n, _) = counted(|| black_box(()));
    assert_eq!(n, 0);
}

#[test]
fn waiting_for_readiness_allocates_nothing() {
    // The wait inside counted receive loops must not count by itself.
    let rx = udp();
    let tx = udp();
    let mut waiter = Waiter::new();
    // Warm-up, uncounted.
    assert!(!waiter.wait_readable(&rx, Duration::from_millis(1)));
    let (ready, n, _) = counted(|| waiter.wait_readable(&rx, Duration::from_millis(20)));
    assert!(!ready, "nothing was sent yet");
    assert_eq!(n, 0, "a wait that timed out allocated {n} times");
    send(&tx, b"wake up", rx.local_addr().unwrap());
    let (ready, n, _) = counted(|| waiter.wait_readable(&rx, DEADLINE));
    assert!(ready, "a queued datagram makes the socket readable");
    assert_eq!(n, 0, "a wait that found data allocated {n} times");
    // Still queued: the next wait sees it again (not only new arrivals).
    assert!(waiter.wait_readable(&rx, Duration::ZERO));
    drain(&rx);
    assert!(!waiter.wait_readable(&rx, Duration::from_millis(20)));
}

#[test]
fn recv_batch_allocates_nothing_for_any_flag_combination() {
    let rx = udp();
    let tx = udp();
    tx.set_ttl(61).unwrap();
    tx.set_tos(0x28).unwrap();
    let dst = rx.local_addr().unwrap();

    // Make the socket drop once, so that SO_RXQ_OVFL comes with every later
    // packet while DROPS is on.
    rx.set_recv_buffer_size(4096).unwrap();
    for _ in 0..300 {
        send(&tx, &[0u8; 64], dst);
    }
    drain(&rx);
    rx.set_recv_buffer_size(1 << 20).unwrap();

    let mut waiter = Waiter::new();
    let mut combos = 0;
    for flags in all_combinations() {
        rx.set_control_flags(flags).unwrap();
        let mut batch = RecvBatch::new(16, 4096, flags).unwrap();

        // Warm-up, uncounted: the first use of anything lazily set up.
        send_round(&tx, dst, 1);
        let warm = recv_touching(&mut batch, &rx, ROUND_BYTES, &mut waiter);
        assert_eq!(warm.bytes, ROUND_BYTES, "{flags:?}: warm-up round");

        send_round(&tx, dst, 2);
        waiter.wait_readable(&rx, DEADLINE);
        let (seen, allocations, _) =
            counted(|| recv_touching(&mut batch, &rx, ROUND_BYTES, &mut waiter));
        assert_eq!(
            allocations, 0,
            "{flags:?}: RecvBatch::recv + iteration allocated {allocations} times"
        );

        // The round itself went as expected.
        assert_eq!(seen.bytes, ROUND_BYTES, "{flags:?}: {seen:?}");
        assert!(seen.wouldblock_at_end, "{flags:?}: {seen:?}");
        assert_eq!(seen.truncated, 0, "{flags:?}: {seen:?}");
        assert_eq!(seen.control_truncated, 0, "{flags:?}: {seen:?}");
        assert_eq!(
            seen.segments,
            PLAIN + GSO_LEN / usize::from(GSO_SEG),
            "{flags:?}: {seen:?}"
        );
        let want_sum: u64 = (0..PLAIN)
            .map(|i| u64::from(2 ^ i as u8) * PLAIN_LEN as u64)
            .sum::<u64>()
            + 2 * GSO_LEN as u64;
        assert_eq!(seen.checksum, want_sum, "{flags:?}: payload bytes");
        // The control messages the flags ask for really came (so the
        // decoding paths were exercised).
        let has = |f| flags.contains(f);
        let each = |yes: bool| if yes { seen.packets } else { 0 };
        assert_eq!(
            seen.with_drops,
            each(has(ControlFlags::DROPS)),
            "{flags:?}: {seen:?}"
        );
        if has(ControlFlags::TIMESTAMP) || !has(ControlFlags::TIMESTAMPING) {
            assert_eq!(
                seen.with_timestamp,
                each(has(ControlFlags::TIMESTAMP)),
                "{flags:?}: {seen:?}"
            );
        } else {
            // SO_TIMESTAMPING alone: stamping is switched on by deferred
            // work, so the first packets may come unstamped.
            assert!(seen.with_timestamp <= seen.packets, "{flags:?}: {seen:?}");
        }
        assert_eq!(
            seen.with_ttl,
            each(has(ControlFlags::TTL)),
            "{flags:?}: {seen:?}"
        );
        assert_eq!(
            seen.with_src,
            each(has(ControlFlags::SRC)),
            "{flags:?}: {seen:?}"
        );
        if has(ControlFlags::GRO) {
            assert_eq!(
                (seen.packets, seen.with_gro),
                (PLAIN + 1, 1),
                "{flags:?}: {seen:?}"
            );
        } else {
            assert_eq!(
                (seen.packets, seen.with_gro),
                (PLAIN + 3, 0),
                "{flags:?}: {seen:?}"
            );
        }
        combos += 1;
    }
    assert_eq!(combos, 1024);
}

#[test]
fn recv_batch_allocates_only_when_the_socket_flags_grow() {
    // A batch made for no flags on a socket whose flags change under it:
    // the receive after a change that needs more room may allocate (the
    // slots grow), every other one allocates nothing, including a change
    // back and forth between flags that fit the grown slots.
    let rx = udp();
    let tx = udp();
    tx.set_ttl(61).unwrap();
    let dst = rx.local_addr().unwrap();
    let mut batch = RecvBatch::new(8, 256, ControlFlags::NONE).unwrap();
    let mut waiter = Waiter::new();
    let round = |tx: &PacketConn, tag: u8| {
        for i in 0..5u8 {
            send(tx, &[tag ^ i; 40], dst);
        }
    };
    let all_but_gro = ControlFlags::ALL.difference(ControlFlags::GRO);

    rx.set_control_flags(all_but_gro).unwrap();
    round(&tx, 1);
    waiter.wait_readable(&rx, DEADLINE);
    let (seen, grew, _) = counted(|| recv_touching(&mut batch, &rx, 5 * 40, &mut waiter));
    assert!(grew >= 1, "the slots grew without allocating?");
    assert_eq!((seen.packets, seen.control_truncated), (5, 0));
    assert_eq!(seen.with_ttl, 5);

    for (tag, flags) in [
        (2, all_but_gro),
        (3, ControlFlags::TTL),
        (4, all_but_gro),
        (5, ControlFlags::NONE),
        (6, all_but_gro),
    ] {
        rx.set_control_flags(flags).unwrap();
        round(&tx, tag);
        waiter.wait_readable(&rx, DEADLINE);
        let (seen, allocations, _) =
            counted(|| recv_touching(&mut batch, &rx, 5 * 40, &mut waiter));
        assert_eq!(
            allocations, 0,
            "{flags:?}: allocated {allocations} times though the slots had room"
        );
        assert_eq!(seen.packets, 5, "{flags:?}");
        assert_eq!(seen.control_truncated, 0, "{flags:?}");
        assert_eq!(
            seen.with_ttl,
            if flags.contains(ControlFlags::TTL) {
                5
            } else {
                0
            },
            "{flags:?}"
        );
        assert_eq!(
            seen.with_src,
            if flags.contains(ControlFlags::SRC) {
                5
            } else {
                0
            },
            "{flags:?}"
        );
    }
}

#[test]
fn recv_batch_with_short_control_buffer_and_truncation_allocates_nothing() {
    // The unusual paths: MSG_CTRUNC and MSG_TRUNC on every packet.
    let flags = ControlFlags::ALL;
    let rx = udp();
    rx.set_control_flags(flags).unwrap();
    let tx = udp();
    let dst = rx.local_addr().unwrap();
    let mut batch = RecvBatch::with_control_len(8, 50, flags, 40).unwrap();
    let mut waiter = Waiter::new();
    for round in 0..2u8 {
        for i in 0..5u8 {
            send(&tx, &[round ^ i; 120], dst);
        }
        waiter.wait_readable(&rx, DEADLINE);
        let (seen, allocations, _) =
            counted(|| recv_touching(&mut batch, &rx, 5 * 50, &mut waiter));
        if round == 1 {
            assert_eq!(allocations, 0, "allocated {allocations} times");
        }
        assert_eq!(seen.packets, 5);
        assert_eq!(seen.truncated, 5);
        assert_eq!(seen.control_truncated, 5);
    }
}

#[test]
fn send_batch_allocates_nothing() {
    let rx = udp();
    let tx = udp();
    let dst = rx.local_addr().unwrap();
    let payloads: Vec<[u8; 64]> = (0..32u8).map(|i| [i; 64]).collect();
    let plain: Vec<Message<'_>> = payloads.iter().map(|p| Message::new(p, dst)).collect();
    let with_control: Vec<Message<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut cm = ControlMessage::default();
            cm.ttl = Some(10 + i as u8);
            cm.tos = Some(0x28);
            if i % 2 == 0 {
                cm.local = Some(Ipv4Addr::LOCALHOST);
                cm.ifindex = Some(1);
            }
            Message::with_control(p, dst, cm)
        })
        .collect();
    let mixed: Vec<Message<'_>> = plain
        .iter()
        .zip(&with_control)
        .enumerate()
        .map(|(i, (a, b))| if i % 3 == 0 { *b } else { *a })
        .collect();

    let mut batch = SendBatch::new(64).unwrap();
    let mut small = SendBatch::new(5).unwrap();
    for (name, msgs) in [
        ("plain", &plain),
        ("with control", &with_control),
        ("mixed", &mixed),
    ] {
        // Warm-up, uncounted.
        assert_eq!(batch.send(&tx, msgs).unwrap(), msgs.len());
        assert_eq!(small.send_all(&tx, msgs).unwrap(), msgs.len());
        drain(&rx);

        let (sent, allocations, _) = counted(|| batch.send(&tx, msgs));
        assert_eq!(
            allocations, 0,
            "{name}: SendBatch::send allocated {allocations} times"
        );
        assert_eq!(sent.unwrap(), msgs.len(), "{name}");

        let (sent, allocations, _) = counted(|| small.send_all(&tx, msgs));
        assert_eq!(
            allocations, 0,
            "{name}: SendBatch::send_all allocated {allocations} times"
        );
        assert_eq!(sent.unwrap(), msgs.len(), "{name}");

        let (sent, allocations, _) = counted(|| small.send(&tx, msgs));
        assert_eq!(
            allocations, 0,
            "{name}: capped send allocated {allocations} times"
        );
        assert_eq!(sent.unwrap(), 5, "{name}");
        drain(&rx);
    }
}
