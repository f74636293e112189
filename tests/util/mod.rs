//! Helpers shared by the integration tests (mio's `tests/util` model): one
//! settle time and one deadline, unique groups per file, safe senders and
//! send helpers, receive loops with timeouts, waits and watchdogs, and the
//! one way a test says that it could not run.
//!
//! Network safety: every send in the tests goes through [`send`],
//! [`send_with`] or [`try_send`], which refuse (panic) unless the packet
//! cannot leave the host: unicast only to 127.0.0.0/8; multicast only from
//! a sender bound to a 127.0.0.0/8 address (the kernel never routes a
//! loopback-sourced packet out of a non-loopback device) whose
//! `IP_MULTICAST_IF` is lo's address.
//!
//! Submodules: [`batch`] receive loops over `RecvBatch`, [`reactor`] for
//! tests that drive a reactor themselves, [`raw`] for the raw-socket tests,
//! [`counting_alloc`] the counting global allocator of the `*_alloc`
//! binaries.

#![allow(dead_code, unused_imports)]

pub mod batch;
pub mod counting_alloc;
pub mod raw;
pub mod reactor;
mod skip;

pub use counting_alloc::{counted, CountingAlloc};
pub use skip::{skipped, skipped_needs_root};

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::{ControlFlags, ControlMessage, Interface, PacketConn, RecvFlags};

/// How long to wait after a join (or rejoin) on lo before the first send:
/// the first packets of a fresh flow can be dropped for a few ms (see
/// linux-facts: 100-300 ms; the longest, since the VM is noisy).
pub const SETTLE: Duration = Duration::from_millis(300);

/// Bound for anything that must happen: a packet that must arrive, a
/// thread that must end, a condition that must come true. Generous: the
/// VM is noisy, and only a failing test waits this long.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// How long a socket must stay silent before we conclude that nothing more
/// is coming (used after a marker packet, which arrives last).
pub const QUIET: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------------------
// Tests that cannot run
// ---------------------------------------------------------------------------

/// Whether the process may open raw sockets. When it may not, says so
/// ([`skipped_needs_root`]) and returns `false`; any other error fails the
/// test.
pub fn can_use_raw_sockets(test: &str) -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)) {
        Ok(_) => true,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            skipped_needs_root("CAP_NET_RAW", test);
            false
        }
        Err(e) => panic!("{test}: creating a raw socket failed: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Groups and interfaces
// ---------------------------------------------------------------------------

static NEXT_GROUP: AtomicU32 = AtomicU32::new(1);

fn next_index() -> u8 {
    let n = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
    assert!(n < 255, "ran out of unique groups in this test binary");
    n as u8
}

/// An any-source group `239.255.<tag>.<n>` used by no other test of this
/// binary. Each test file passes its own `tag` (its third octet, listed in
/// the file's header), so files do not collide either.
pub fn asm_group(tag: u8) -> Ipv4Addr {
    Ipv4Addr::new(239, 255, tag, next_index())
}

/// A source-specific group `232.<tag>.0.<n>`, unique like [`asm_group`].
pub fn ssm_group(tag: u8) -> Ipv4Addr {
    Ipv4Addr::new(232, tag, 0, next_index())
}

/// The loopback interface, where every multicast test sends and joins.
pub fn lo() -> Interface {
    Interface::loopback()
}

/// lo's interface index, resolved through the crate (and checked to be 1).
pub fn lo_index() -> u32 {
    let info = Interface::loopback().resolve().expect("resolving lo");
    assert_eq!(info.index, 1, "lo is expected to be interface 1");
    info.index
}

// ---------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------

/// A UDP socket bound to `127.0.0.1:<ephemeral>` (blocking, as `bind_udp`
/// leaves it): a unicast receiver, or a sender that cannot reach past lo.
pub fn udp() -> PacketConn {
    let conn = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .expect("bind UDP on 127.0.0.1");
    assert_sender_is_safe(&conn);
    conn
}

/// The socket's local address.
pub fn addr(conn: &PacketConn) -> SocketAddrV4 {
    conn.local_addr().expect("local_addr")
}

/// The socket's port.
pub fn port_of(conn: &PacketConn) -> u16 {
    addr(conn).port()
}

/// Where to send to reach `conn` through `group`.
pub fn dst_of(group: Ipv4Addr, conn: &PacketConn) -> SocketAddrV4 {
    SocketAddrV4::new(group, port_of(conn))
}

/// A receiver bound to `0.0.0.0:<ephemeral>` (no `SO_REUSEADDR`, so the port
/// is ours alone), `IP_MULTICAST_ALL` off, blocking.
pub fn unicast_bound_receiver() -> PacketConn {
    let rx = PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .expect("binding receiver");
    rx.set_multicast_all(false)
        .expect("turning IP_MULTICAST_ALL off");
    rx.set_nonblocking(false).expect("blocking mode");
    rx
}

/// A receiver bound to `group:<ephemeral>`, joined on lo, with `flags` and
/// a 4 MB receive buffer (so that bursts of a test are not dropped).
pub fn lo_receiver(group: Ipv4Addr, flags: ControlFlags) -> PacketConn {
    PacketConn::multicast_receiver(SocketAddrV4::new(group, 0), Interface::loopback())
        .control(flags)
        .recv_buffer(4 << 20)
        .build()
        .unwrap_or_else(|e| panic!("receiver for {group}: {e}"))
}

/// A multicast sender through lo, bound to 127.0.0.1 (the crate's helper),
/// checked to really be set to lo.
pub fn lo_sender() -> PacketConn {
    let tx = PacketConn::multicast_sender(&Interface::loopback()).expect("multicast sender on lo");
    assert_sender_is_safe(&tx);
    assert_multicast_via_lo(&tx);
    tx
}

/// A multicast sender bound to `addr` (a 127.x address) with
/// `IP_MULTICAST_IF` set to lo: a distinct source on lo.
pub fn lo_sender_from(addr: Ipv4Addr) -> PacketConn {
    assert!(
        addr.is_loopback(),
        "senders must be bound to 127.0.0.0/8, not {addr}"
    );
    let tx = PacketConn::bind_udp(SocketAddrV4::new(addr, 0)).expect("binding sender");
    tx.set_multicast_interface(&Interface::loopback())
        .expect("IP_MULTICAST_IF = lo");
    assert_sender_is_safe(&tx);
    assert_multicast_via_lo(&tx);
    assert_eq!(*tx.local_addr().unwrap().ip(), addr);
    tx
}

// ---------------------------------------------------------------------------
// Sending (network safety)
// ---------------------------------------------------------------------------

/// Panics unless `tx` is bound to 127.0.0.0/8: the kernel never routes a
/// packet with a loopback source out of a non-loopback device.
pub fn assert_sender_is_safe(tx: &PacketConn) {
    let local = tx.local_addr().expect("sender local_addr");
    assert!(
        local.ip().is_loopback(),
        "NETWORK SAFETY: sender must be bound to 127.0.0.0/8, is bound to {local}"
    );
}

/// Panics unless `IP_MULTICAST_IF`, read back from the kernel without the
/// crate, is lo's address.
fn assert_multicast_via_lo(tx: &PacketConn) {
    let mif = tx
        .socket()
        .multicast_if_v4()
        .expect("reading IP_MULTICAST_IF");
    assert_eq!(
        mif,
        Ipv4Addr::LOCALHOST,
        "NETWORK SAFETY: multicast sender's IP_MULTICAST_IF must be lo (127.0.0.1)"
    );
}

/// Panics unless a packet from `tx` to `dst` cannot leave the host:
/// unicast only to 127.0.0.0/8, multicast only from a sender bound to a
/// loopback address whose multicast interface is lo.
pub fn assert_safe(tx: &PacketConn, dst: SocketAddrV4) {
    if dst.ip().is_multicast() {
        assert_sender_is_safe(tx);
        assert_multicast_via_lo(tx);
    } else {
        assert!(
            dst.ip().is_loopback(),
            "NETWORK SAFETY: unicast only to 127.0.0.0/8, not {dst}"
        );
    }
}

/// Sends one datagram, whole, after [`assert_safe`].
pub fn send(tx: &PacketConn, payload: &[u8], dst: SocketAddrV4) {
    send_maybe_with(tx, payload, None, dst);
}

/// Like [`send`], with per-packet control data.
pub fn send_with(tx: &PacketConn, payload: &[u8], cm: &ControlMessage, dst: SocketAddrV4) {
    send_maybe_with(tx, payload, Some(cm), dst);
}

fn send_maybe_with(
    tx: &PacketConn,
    payload: &[u8],
    cm: Option<&ControlMessage>,
    dst: SocketAddrV4,
) {
    assert_safe(tx, dst);
    let n = tx
        .send_to(payload, cm, dst)
        .unwrap_or_else(|e| panic!("send_to {dst}: {e}"));
    assert_eq!(n, payload.len(), "short send to {dst}");
}

/// Sends one datagram after [`assert_safe`], returning whether it went out
/// whole (for floods, which outrun the receiver's buffer on purpose).
pub fn try_send(tx: &PacketConn, payload: &[u8], dst: SocketAddrV4) -> bool {
    assert_safe(tx, dst);
    matches!(tx.send_to(payload, None, dst), Ok(n) if n == payload.len())
}

/// The big-endian sequence number in a payload's first 8 bytes.
pub fn seq_of(payload: &[u8]) -> u64 {
    u64::from_be_bytes(
        payload[..8]
            .try_into()
            .expect("payload holds a sequence number"),
    )
}

// ---------------------------------------------------------------------------
// Receiving one datagram at a time
// ---------------------------------------------------------------------------

/// One received datagram.
#[derive(Debug, Clone)]
pub struct Received {
    pub payload: Vec<u8>,
    pub cm: ControlMessage,
    pub src: SocketAddrV4,
    pub flags: RecvFlags,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Receives one datagram, waiting at most `timeout`; `None` on timeout.
pub fn recv_timeout(conn: &PacketConn, timeout: Duration) -> Option<Received> {
    recv_timeout_buf(conn, timeout, 65536)
}

/// Like [`recv_timeout`] with a payload buffer of `buf_len` bytes.
pub fn recv_timeout_buf(conn: &PacketConn, timeout: Duration, buf_len: usize) -> Option<Received> {
    conn.set_nonblocking(false).expect("blocking mode");
    conn.socket()
        .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .expect("SO_RCVTIMEO");
    let mut buf = vec![0u8; buf_len];
    loop {
        match conn.recv_from(&mut buf) {
            Ok(meta) => {
                return Some(Received {
                    payload: buf[..meta.len].to_vec(),
                    cm: meta.cm,
                    src: meta.src,
                    flags: meta.flags,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(e) => panic!("recv_from failed: {e}"),
        }
    }
}

/// Receives one datagram that must arrive within [`DEADLINE`].
pub fn recv_one(conn: &PacketConn, what: &str) -> Received {
    recv_timeout(conn, DEADLINE)
        .unwrap_or_else(|| panic!("timed out after {DEADLINE:?} waiting for {what}"))
}

/// Receives until the socket stays silent for `quiet` (or 10 s / 10000
/// packets pass, so that a flood cannot hang a test).
pub fn collect(conn: &PacketConn, quiet: Duration) -> Vec<Received> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < 10_000 && start.elapsed() < Duration::from_secs(10) {
        match recv_timeout(conn, quiet) {
            Some(p) => out.push(p),
            None => break,
        }
    }
    out
}

/// Receives until a datagram whose payload is `marker` arrives (it must,
/// within [`DEADLINE`]), then keeps reading until [`QUIET`], and returns
/// everything, marker included. Send the marker last: whatever was sent
/// before it and was going to arrive has arrived.
pub fn collect_through(conn: &PacketConn, marker: &[u8]) -> Vec<Received> {
    let deadline = Instant::now() + DEADLINE;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(p) = recv_timeout(conn, left) else {
            panic!(
                "marker {:?} did not arrive within {DEADLINE:?}; got {:?}",
                String::from_utf8_lossy(marker),
                texts(&out)
            );
        };
        let done = p.payload == marker;
        out.push(p);
        if done {
            break;
        }
    }
    out.extend(collect(conn, QUIET));
    out
}

/// The payloads, as text, for assertions and messages.
pub fn texts(packets: &[Received]) -> Vec<String> {
    packets.iter().map(Received::text).collect()
}

// ---------------------------------------------------------------------------
// Waiting, bounded
// ---------------------------------------------------------------------------

/// Waits (sleeping 2 ms at a time) until `done` holds or `limit` passes;
/// returns whether `done` held.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Joins a thread, failing the test if it does not end within `limit` (the
/// join runs on a helper thread so that a hang is bounded) or panicked.
pub fn join_within<T: Send + 'static>(
    join: thread::JoinHandle<T>,
    limit: Duration,
    what: &str,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(join.join());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(_)) => panic!("{what}: the thread panicked"),
        Err(_) => panic!("{what}: the thread did not end within {limit:?}"),
    }
}

/// Runs `f` on a thread of its own and returns its result, failing the test
/// if it does not return within `limit` (a hang is a failure, not a stuck
/// suite; the stuck thread is left behind). A panic in `f` is resumed here.
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => resume_unwind(p),
        Err(_) => panic!("{what}: did not return within {limit:?} (hang)"),
    }
}
