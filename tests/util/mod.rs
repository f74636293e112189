//! Helpers shared by the integration tests: unique groups, safe senders,
//! receive loops with timeouts.
//!
//! Network safety: every send in the tests goes through [`send`], which
//! refuses (panics) unless the sender is bound to a 127.0.0.0/8 address (the
//! kernel never routes a loopback-sourced packet out of a non-loopback
//! device) and, for multicast, its `IP_MULTICAST_IF` is lo's address.

#![allow(dead_code)]

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipv4_reactor::{ControlMessage, Interface, PacketConn, RecvFlags};

/// How long to wait after a join (or rejoin) on lo before the first send:
/// the first packets of a fresh flow can be dropped for a few ms.
pub const SETTLE: Duration = Duration::from_millis(200);

/// How long to wait for a packet that must arrive. Generous: the VM is noisy.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a socket must stay silent before we conclude that nothing more
/// is coming (used after a marker packet, which arrives last).
pub const QUIET: Duration = Duration::from_millis(250);

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

static NEXT_GROUP: AtomicU32 = AtomicU32::new(1);

fn next_index() -> u8 {
    let n = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
    assert!(n < 255, "ran out of unique groups in this test binary");
    n as u8
}

/// An any-source group `239.255.<tag>.<n>` used by no other test of this
/// binary. Each test file passes its own `tag`, so files do not collide
/// either.
pub fn asm_group(tag: u8) -> Ipv4Addr {
    Ipv4Addr::new(239, 255, tag, next_index())
}

/// A source-specific group `232.<tag>.0.<n>`, unique like [`asm_group`].
pub fn ssm_group(tag: u8) -> Ipv4Addr {
    Ipv4Addr::new(232, tag, 0, next_index())
}

/// lo's interface index, resolved through the crate (and checked to be 1).
pub fn lo_index() -> u32 {
    let info = Interface::loopback().resolve().expect("resolving lo");
    assert_eq!(info.index, 1, "lo is expected to be interface 1");
    info.index
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

/// The receiver's port.
pub fn port_of(conn: &PacketConn) -> u16 {
    conn.local_addr().expect("local_addr").port()
}

/// A multicast sender through lo, bound to 127.0.0.1 (the crate's helper),
/// checked to really be set to lo.
pub fn lo_sender() -> PacketConn {
    let tx = PacketConn::multicast_sender(&Interface::loopback()).expect("multicast sender on lo");
    assert_sender_is_safe(&tx);
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
    assert_eq!(*tx.local_addr().unwrap().ip(), addr);
    tx
}

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

/// Sends one datagram after checking that it cannot leave the host:
/// unicast only to 127.0.0.0/8, multicast only from a sender bound to a
/// loopback address whose multicast interface is lo.
pub fn send(tx: &PacketConn, payload: &[u8], cm: Option<&ControlMessage>, dst: SocketAddrV4) {
    if dst.ip().is_multicast() {
        assert_sender_is_safe(tx);
        assert_multicast_via_lo(tx);
    } else {
        assert!(
            dst.ip().is_loopback(),
            "NETWORK SAFETY: unicast only to 127.0.0.0/8, not {dst}"
        );
    }
    let n = tx
        .send_to(payload, cm, dst)
        .unwrap_or_else(|e| panic!("send_to {dst}: {e}"));
    assert_eq!(n, payload.len(), "short send to {dst}");
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

/// Receives one datagram that must arrive within [`RECV_TIMEOUT`].
pub fn recv_one(conn: &PacketConn, what: &str) -> Received {
    recv_timeout(conn, RECV_TIMEOUT)
        .unwrap_or_else(|| panic!("timed out after {RECV_TIMEOUT:?} waiting for {what}"))
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
/// within [`RECV_TIMEOUT`]), then keeps reading until [`QUIET`], and returns
/// everything, marker included. Send the marker last: whatever was sent
/// before it and was going to arrive has arrived.
pub fn collect_through(conn: &PacketConn, marker: &[u8]) -> Vec<Received> {
    let deadline = Instant::now() + RECV_TIMEOUT;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(p) = recv_timeout(conn, left) else {
            panic!(
                "marker {:?} did not arrive within {RECV_TIMEOUT:?}; got {:?}",
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

/// Whether the process may open raw sockets. When it may not, says so
/// loudly (past the test harness's capture) and returns `false`; CI runs as
/// root and fails when any test printed that line.
pub fn can_use_raw_sockets(test: &str) -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)) {
        Ok(_) => true,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            // Written to the process's stderr directly, not through
            // eprintln!, so that the test harness does not capture it.
            use std::io::Write;
            let _ = writeln!(
                io::stderr(),
                "\n********************************************************\n\
                 SKIPPED (needs root: CAP_NET_RAW): {test}: raw sockets need CAP_NET_RAW ({e})\n\
                 ********************************************************\n"
            );
            false
        }
        Err(e) => panic!("{test}: creating a raw socket failed: {e}"),
    }
}
