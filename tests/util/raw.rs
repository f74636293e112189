//! For the raw-socket tests: their protocol numbers, packet markers no
//! other test uses, and read loops that pick a test's own packets out of
//! everything a raw socket sees.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use ipv4_reactor::header::{Header, Protocol};
use ipv4_reactor::icmp::{self, IcmpType};
use ipv4_reactor::{ControlMessage, PacketConn, RawConn};

/// The experimental IP protocol number (RFC 3692) used by these tests.
pub const EXP: u8 = 253;

pub const ICMP: u8 = 1;

/// An ICMP echo id (or marker seed) no other test of this run uses.
pub fn unique_id() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    (std::process::id() as u16)
        .wrapping_mul(101)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(7))
}

/// A payload that identifies one packet of one test.
pub fn marker(test: &str, n: usize) -> Vec<u8> {
    format!("{test}/{}/{}/{n}", std::process::id(), unique_id()).into_bytes()
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads whole packets from `raw` until `pick` accepts one or `within`
/// passes (then `None`). Packets `pick` rejects are other tests' traffic.
pub fn read_raw_until<T>(
    raw: &RawConn,
    within: Duration,
    mut pick: impl FnMut(&Header, &[u8], &ControlMessage) -> Option<T>,
) -> Option<T> {
    read_until(raw.socket(), within, |buf| {
        raw.read_from(buf)
            .map(|p| pick(&p.header, p.payload, &p.meta.cm))
    })
}

/// Like [`read_raw_until`] for a `PacketConn` (UDP or `ip4:PROTO`).
pub fn read_conn_until<T>(
    conn: &PacketConn,
    within: Duration,
    mut pick: impl FnMut(&[u8], &ControlMessage, SocketAddrV4) -> Option<T>,
) -> Option<T> {
    read_until(conn.socket(), within, |buf| {
        conn.recv_from(buf)
            .map(|meta| pick(&buf[..meta.len], &meta.cm, meta.src))
    })
}

/// The loop of both: `read` one packet into a 64 KiB buffer (waiting at
/// most 200 ms at a time on `socket`) and return what it picked, until
/// `within` passes.
fn read_until<T>(
    socket: &socket2::Socket,
    within: Duration,
    mut read: impl FnMut(&mut [u8]) -> io::Result<Option<T>>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        socket
            .set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .expect("SO_RCVTIMEO");
        match read(&mut buf) {
            Ok(Some(t)) => return Some(t),
            Ok(None) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("reading a packet: {e}"),
        }
    }
}

/// Whether a header's checksum field is the one a correct emit computes.
pub fn checksum_recomputed_ok(h: &Header) -> bool {
    let bytes = h.to_bytes().expect("re-emitting a received header");
    u16::from_be_bytes([bytes[10], bytes[11]]) == h.checksum
}

/// Writes one ICMP echo request to 127.0.0.1 through `raw`.
pub fn ping(raw: &RawConn, id: u16, seq: u16, data: &[u8], tos: u8) {
    let request = icmp::build_echo_request(id, seq, data);
    let mut h = Header::new(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, Protocol::Icmp);
    h.tos = tos;
    h.ttl = 64;
    let n = raw
        .write_to(&h, &request, None)
        .expect("writing an echo request");
    assert_eq!(n, 20 + request.len(), "bytes written, header included");
}

/// Picks the echo message of type `ty` with our id, seq and data.
pub fn is_echo(ty: IcmpType, id: u16, seq: u16, data: &[u8]) -> impl Fn(&Header, &[u8]) -> bool {
    let data = data.to_vec();
    move |h, payload| {
        h.protocol == Protocol::Icmp
            && icmp::parse_echo(payload)
                .is_ok_and(|e| e.ty == ty && e.id == id && e.seq == seq && e.data == data)
    }
}

pub fn default_ttl() -> u8 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_default_ttl")
        .expect("reading net.ipv4.ip_default_ttl")
        .trim()
        .parse()
        .expect("net.ipv4.ip_default_ttl is a number")
}
