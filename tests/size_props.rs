//! Sizes given to the batch constructors: every size a caller can pass is
//! checked before anything is allocated. Absurd sizes come back as clear
//! `InvalidInput` errors naming the bad value (they used to wrap the slot
//! arithmetic in release builds and let the kernel write past the buffers);
//! sizes that are accepted give a batch that really receives.
//!
//! Network safety: unicast UDP on 127.0.0.1 only, through `util::send`.

mod util;

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

#[path = "../benches/support/libc_drain.rs"]
mod libc_drain;

use ipv4_reactor::reactor::{Context, Reactor};
use ipv4_reactor::{ControlFlags, Message, Packet, PacketConn, RecvBatch, SendBatch};
use libc_drain::LibcDrain;
use util::{addr, send, udp, DEADLINE};

fn datagram(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// Asserts `result` is an `InvalidInput` error whose text contains each of
/// `words`.
fn assert_refused<T>(result: io::Result<T>, words: &[&str]) {
    let err = match result {
        Ok(_) => panic!("accepted sizes that must be refused ({words:?})"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(
        matches!(
            ipv4_reactor::Error::of(&err),
            Some(ipv4_reactor::Error::InvalidArgument(_))
        ),
        "{err:?}"
    );
    let text = err.to_string();
    for w in words {
        assert!(text.contains(w), "error {text:?} does not name {w:?}");
    }
}

/// A receiver with `flags`, non-blocking, with `payload` queued on it.
fn queued(flags: ControlFlags, payload: &[u8]) -> (PacketConn, PacketConn) {
    let rx = udp();
    rx.set_control_flags(flags).unwrap();
    rx.set_nonblocking(true).unwrap();
    let tx = udp();
    send(&tx, payload, addr(&rx));
    (rx, tx)
}

/// Receives one datagram with `batch` and checks payload, truncation and
/// control messages against what was sent.
fn check_batch_receives(mut batch: RecvBatch, payload_size: usize, control_len: usize) {
    let flags = batch.flags();
    let sent = datagram(300, payload_size as u8);
    let (rx, tx) = queued(flags, &sent);
    let deadline = Instant::now() + DEADLINE;
    let n = loop {
        match batch.recv(&rx) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("recv: {e}"),
        }
    };
    assert_eq!(n, 1);
    let p = batch.get(0).unwrap();
    let kept = sent.len().min(payload_size);
    assert_eq!(p.payload, &sent[..kept]);
    assert_eq!(p.truncated(), sent.len() > payload_size);
    if flags.contains(ControlFlags::SRC) {
        assert_eq!(p.src, Some(addr(&tx)));
    }
    if control_len >= flags.control_len() {
        assert!(!p.control_truncated(), "{p:?}");
        if flags.contains(ControlFlags::TTL) {
            assert!(p.cm.ttl.is_some(), "{}", p.cm);
        }
        if flags.contains(ControlFlags::DST) {
            assert_eq!(p.cm.dst, Some(Ipv4Addr::LOCALHOST));
        }
    }
    assert_eq!(batch.counters().packets, 1);
    assert_eq!(batch.counters().bytes, kept as u64);
}

// ---------------------------------------------------------------------------
// The regressions of issue 11, point 1
// ---------------------------------------------------------------------------

#[test]
fn absurd_recv_batch_sizes_are_refused() {
    let flags = ControlFlags::ALL;
    // count * size wrapped to 64 bytes while iov_len / msg_controllen
    // promised the whole size.
    assert_refused(
        RecvBatch::new(4, (1 << 62) + 16, flags),
        &["payload size", "4611686018427387920", "65536"],
    );
    assert_refused(
        RecvBatch::with_control_len(4, 2048, flags, (1 << 62) + 16),
        &["control", "4611686018427387920"],
    );
    assert_refused(
        RecvBatch::with_control_len(4, 2048, flags, usize::MAX),
        &["control", &usize::MAX.to_string()],
    );
    assert_refused(
        RecvBatch::new(usize::MAX, 2048, flags),
        &["slots", &usize::MAX.to_string(), "1024"],
    );
    assert_refused(RecvBatch::new(1 << 40, 1 << 40, flags), &["slots"]);
    assert_refused(RecvBatch::new(0, 2048, flags), &["0 slots"]);
    assert_refused(RecvBatch::new(4, 0, flags), &["payload size 0"]);
    assert_refused(
        RecvBatch::new(4, RecvBatch::MAX_PAYLOAD_SIZE + 1, flags),
        &["payload size 65537"],
    );
    assert_refused(
        RecvBatch::new(RecvBatch::MAX_SLOTS + 1, 16, flags),
        &["1025 slots"],
    );
}

#[test]
fn absurd_send_batch_and_baseline_sizes_are_refused() {
    assert_refused(SendBatch::new(usize::MAX), &["SendBatch", "slots"]);
    assert_refused(SendBatch::new(0), &["SendBatch", "0 slots"]);
    assert_refused(
        SendBatch::new(SendBatch::MAX_CAPACITY + 1),
        &["SendBatch", "1025"],
    );
    // The benchmarks' C-style loop (not the library's, so not a typed
    // crate error): the same limits, an InvalidInput naming them.
    let baseline_refused = |r: io::Result<LibcDrain>, word: &str| {
        let e = r.expect_err(word);
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(
            e.to_string().contains("LibcDrain") && e.to_string().contains(word),
            "{e}"
        );
    };
    baseline_refused(LibcDrain::new(4, (1 << 62) + 16, 64, false), "payload size");
    baseline_refused(LibcDrain::new(1 << 62, 2048, 64, false), "slots");
    baseline_refused(LibcDrain::new(4, 2048, (1 << 62) + 16, false), "control");
    baseline_refused(LibcDrain::new(0, 2048, 64, false), "slots 0");
}

#[test]
fn absurd_reactor_sizes_are_refused_at_build() {
    assert_refused(
        Reactor::builder().payload_size((1 << 62) + 16).build(),
        &["ReactorBuilder", "payload size", "4611686018427387920"],
    );
    assert_refused(
        Reactor::builder().batch_slots(usize::MAX).build(),
        &["ReactorBuilder", "slots"],
    );
    assert_refused(
        Reactor::builder()
            .batch_slots(1 << 31)
            .payload_size(1 << 33)
            .build(),
        &["ReactorBuilder"],
    );
}

#[test]
fn the_largest_sizes_allowed_receive_the_largest_datagram() {
    // 65507 bytes: the largest UDP payload over IPv4.
    let flags = ControlFlags::SRC | ControlFlags::TTL | ControlFlags::DST;
    let big = datagram(65507, 3);
    let (rx, tx) = queued(flags, &big);
    let mut batch = RecvBatch::with_control_len(
        RecvBatch::MAX_SLOTS,
        RecvBatch::MAX_PAYLOAD_SIZE,
        flags,
        RecvBatch::MAX_CONTROL_LEN,
    )
    .unwrap();
    assert_eq!(batch.capacity(), RecvBatch::MAX_SLOTS);
    assert_eq!(batch.recv(&rx).unwrap(), 1);
    let p = batch.get(0).unwrap();
    assert_eq!(p.payload, big.as_slice());
    assert!(!p.truncated() && !p.control_truncated());
    assert_eq!(p.src, Some(addr(&tx)));
    assert_eq!(p.cm.dst, Some(Ipv4Addr::LOCALHOST));

    let mut send = SendBatch::new(SendBatch::MAX_CAPACITY).unwrap();
    assert_eq!(send.capacity(), SendBatch::MAX_CAPACITY);
    let payloads: Vec<Vec<u8>> = (0..SendBatch::MAX_CAPACITY)
        .map(|i| datagram(8, i as u8))
        .collect();
    let msgs: Vec<Message<'_>> = payloads
        .iter()
        .map(|p| Message::new(p, addr(&rx)))
        .collect();
    rx.set_recv_buffer_size(4 << 20).unwrap();
    assert_eq!(send.send_all(&tx, &msgs).unwrap(), msgs.len());
    let mut got = 0;
    while got < msgs.len() {
        let n = batch.recv(&rx).unwrap();
        for (i, p) in batch.iter().enumerate() {
            assert_eq!(p.payload, payloads[got + i].as_slice());
        }
        got += n;
    }
}

// ---------------------------------------------------------------------------
// Random sizes
// ---------------------------------------------------------------------------

/// Sizes around every limit, small ones, and absurd ones.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0usize..=4,
        3 => 1usize..=2048,
        2 => 60_000usize..=70_000,
        2 => (0usize..=8).prop_map(|d| 1020 + d),
        2 => (0usize..=8).prop_map(|d| 4090 + d),
        1 => (0usize..=8).prop_map(|d| 65_532 + d),
        1 => Just(usize::MAX),
        1 => Just(isize::MAX as usize),
        1 => Just((1usize << 62) + 16),
        1 => Just(1usize << 32),
        1 => (0u32..64).prop_map(|b| 1usize << b),
    ]
}

fn flags() -> impl Strategy<Value = ControlFlags> {
    prop_oneof![
        Just(ControlFlags::NONE),
        Just(ControlFlags::SRC),
        Just(ControlFlags::TTL | ControlFlags::DST | ControlFlags::SRC),
        Just(ControlFlags::ALL),
    ]
}

fn slots_ok(n: usize) -> bool {
    (1..=RecvBatch::MAX_SLOTS).contains(&n)
}

fn payload_ok(n: usize) -> bool {
    (1..=RecvBatch::MAX_PAYLOAD_SIZE).contains(&n)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn recv_batch_new_accepts_exactly_the_documented_range(
        slots in size(), payload in size(), flags in flags(),
    ) {
        match RecvBatch::new(slots, payload, flags) {
            Ok(batch) => {
                prop_assert!(slots_ok(slots) && payload_ok(payload), "{slots} x {payload} accepted");
                prop_assert_eq!(batch.capacity(), slots);
                check_batch_receives(batch, payload, flags.control_len());
            }
            Err(e) => {
                prop_assert!(!(slots_ok(slots) && payload_ok(payload)), "{slots} x {payload}: {e}");
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            }
        }
    }

    #[test]
    fn recv_batch_with_control_len_accepts_exactly_the_documented_range(
        slots in size(), payload in size(), control in size(), flags in flags(),
    ) {
        let ok = slots_ok(slots) && payload_ok(payload) && control <= RecvBatch::MAX_CONTROL_LEN;
        match RecvBatch::with_control_len(slots, payload, flags, control) {
            Ok(batch) => {
                prop_assert!(ok, "{slots} x {payload} / {control} accepted");
                check_batch_receives(batch, payload, control);
            }
            Err(e) => {
                prop_assert!(!ok, "{slots} x {payload} / {control}: {e}");
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            }
        }
    }

    #[test]
    fn send_batch_new_accepts_exactly_the_documented_range(capacity in size()) {
        match SendBatch::new(capacity) {
            Ok(mut batch) => {
                prop_assert!(slots_ok(capacity));
                prop_assert_eq!(batch.capacity(), capacity);
                let rx = udp();
                rx.set_nonblocking(true).unwrap();
                let tx = udp();
                let sent = datagram(40, capacity as u8);
                prop_assert_eq!(batch.send(&tx, &[Message::new(&sent, addr(&rx))]).unwrap(), 1);
                let mut buf = [0u8; 100];
                let meta = rx.recv_from(&mut buf).unwrap();
                prop_assert_eq!(&buf[..meta.len], sent.as_slice());
                prop_assert_eq!(meta.src, addr(&tx));
            }
            Err(e) => {
                prop_assert!(!slots_ok(capacity), "{capacity}: {e}");
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            }
        }
    }

    #[test]
    fn libc_drain_new_accepts_exactly_the_documented_range(
        slots in size(), payload in size(), control in size(), want_name in any::<bool>(),
    ) {
        let ok = slots_ok(slots) && payload_ok(payload) && control <= RecvBatch::MAX_CONTROL_LEN;
        match LibcDrain::new(slots, payload, control, want_name) {
            Ok(mut drain) => {
                prop_assert!(ok, "{slots} x {payload} / {control} accepted");
                let flags = ControlFlags::TTL | ControlFlags::DST;
                let sent = datagram(300, payload as u8);
                let (rx, _tx) = queued(flags, &sent);
                let mut got = Vec::new();
                let n = drain
                    .recv(rx.as_raw_fd(), |p, m| got.push((p.to_vec(), *m)))
                    .unwrap();
                prop_assert_eq!(n, 1);
                let (p, m) = &got[0];
                prop_assert_eq!(p.as_slice(), &sent[..sent.len().min(payload)]);
                prop_assert_eq!(m.msg_flags & libc::MSG_TRUNC != 0, sent.len() > payload);
                if control >= flags.control_len() {
                    prop_assert_eq!(m.msg_flags & libc::MSG_CTRUNC, 0);
                    prop_assert_eq!(m.ifindex, 1);
                    prop_assert_eq!(m.dst, u32::from(Ipv4Addr::LOCALHOST).to_be());
                    prop_assert!(m.ttl > 0);
                }
            }
            Err(e) => {
                prop_assert!(!ok, "{slots} x {payload} / {control}: {e}");
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            }
        }
    }
}

proptest! {
    // A reactor per case: fewer cases.
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn reactor_builder_sizes_are_checked_at_build_and_work_when_accepted(
        slots in size(), payload in size(),
    ) {
        // The setters keep their documented floor of 1.
        let (eff_slots, eff_payload) = (slots.max(1), payload.max(1));
        let ok = slots_ok(eff_slots) && payload_ok(eff_payload);
        match Reactor::builder().batch_slots(slots).payload_size(payload).build() {
            Ok(mut reactor) => {
                prop_assert!(ok, "{slots} x {payload} accepted");
                let rx = udp();
                rx.set_control_flags(ControlFlags::SRC).unwrap();
                let dst = addr(&rx);
                let (got_tx, got_rx) = mpsc::channel();
                reactor
                    .register(rx, move |p: &Packet<'_>, _ctx: &mut Context<'_>| {
                        let _ = got_tx.send((p.payload.to_vec(), p.truncated(), p.src));
                    })
                    .unwrap();
                let tx = udp();
                let sent = datagram(300, eff_payload as u8);
                send(&tx, &sent, dst);
                let deadline = Instant::now() + DEADLINE;
                let got = loop {
                    reactor.turn(Some(Duration::from_millis(20))).unwrap();
                    if let Ok(got) = got_rx.try_recv() {
                        break got;
                    }
                    prop_assert!(Instant::now() < deadline, "the reactor delivered nothing");
                };
                let kept = sent.len().min(eff_payload);
                prop_assert_eq!(got.0.as_slice(), &sent[..kept]);
                prop_assert_eq!(got.1, sent.len() > eff_payload);
                prop_assert_eq!(got.2, Some(addr(&tx)));
                prop_assert_eq!(reactor.counters().total.recv.packets, 1);
            }
            Err(e) => {
                prop_assert!(!ok, "{slots} x {payload}: {e}");
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            }
        }
    }
}
