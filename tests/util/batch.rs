//! Receive loops over `RecvBatch` and what the batch tests measure the
//! kernel with: sequence payloads, readiness waits, a pinned thread for
//! in-order bursts, and the kernel's drop counters.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use ipv4_reactor::{pin_current_thread, ControlMessage, PacketConn, RecvBatch};

use super::DEADLINE;

/// A payload of `len` bytes: the big-endian `seq` in the first 8 bytes (if
/// there is room), then a pattern derived from `seq` and the offset.
pub fn seq_payload(seq: u64, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(seq) as u8)
        .collect();
    let head = seq.to_be_bytes();
    let n = len.min(8);
    v[..n].copy_from_slice(&head[..n]);
    v
}

/// Waits for a socket to become readable through an epoll instance made
/// beforehand: making one, and mio's `Events` (a `Vec`), allocate, so a
/// wait inside a counted section uses a `Waiter` made outside it. Each wait
/// registers the socket afresh (a socket with data already queued is
/// reported at once, as poll(2) would) and deregisters it after: it answers
/// for the socket's state now, not for an edge since some earlier wait.
pub struct Waiter {
    poll: Poll,
    events: Events,
}

impl Default for Waiter {
    fn default() -> Waiter {
        Waiter::new()
    }
}

impl Waiter {
    pub fn new() -> Waiter {
        Waiter {
            poll: Poll::new().expect("creating an epoll instance"),
            events: Events::with_capacity(1),
        }
    }

    /// Whether `conn` became readable within `timeout`.
    pub fn wait_readable(&mut self, conn: &PacketConn, timeout: Duration) -> bool {
        let fd = conn.as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
            .expect("registering the socket with epoll");
        let waited = self.poll.poll(&mut self.events, Some(timeout));
        self.poll
            .registry()
            .deregister(&mut SourceFd(&fd))
            .expect("deregistering the socket from epoll");
        match waited {
            Ok(()) => !self.events.is_empty(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
            Err(e) => panic!("epoll_wait: {e}"),
        }
    }
}

/// Waits until `conn` is readable or `timeout` passes (a [`Waiter`] of its
/// own).
pub fn wait_readable(conn: &PacketConn, timeout: Duration) -> bool {
    Waiter::new().wait_readable(conn, timeout)
}

/// An owned copy of one received packet.
#[derive(Debug, Clone)]
pub struct Got {
    pub payload: Vec<u8>,
    pub cm: ControlMessage,
    pub src: Option<SocketAddrV4>,
    pub truncated: bool,
    pub control_truncated: bool,
    pub drops_before: u32,
    pub segments: Vec<Vec<u8>>,
}

/// What a receive loop saw.
#[derive(Debug, Default)]
pub struct Gathered {
    pub packets: Vec<Got>,
    /// `recv` calls that returned packets.
    pub calls: u64,
}

impl Gathered {
    pub fn bytes(&self) -> usize {
        self.packets.iter().map(|p| p.payload.len()).sum()
    }
}

/// Receives with `batch` from `conn` until `done(&gathered)` holds, waiting
/// with poll between `WouldBlock`s; panics after [`DEADLINE`]. Checks on
/// every call what a receive promises (`len`, `get`, `iter`, an empty batch
/// after `WouldBlock`).
pub fn recv_until(
    batch: &mut RecvBatch,
    conn: &PacketConn,
    mut done: impl FnMut(&Gathered) -> bool,
) -> Gathered {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Gathered::default();
    while !done(&got) {
        match batch.recv(conn) {
            Ok(n) => {
                assert!(n > 0, "recv returned Ok(0)");
                assert!(n <= batch.capacity(), "recv returned {n} > capacity");
                assert_eq!(batch.len(), n);
                assert!(!batch.is_empty());
                assert!(batch.get(n).is_none());
                got.calls += 1;
                let before = got.packets.len();
                for p in batch.iter() {
                    got.packets.push(Got {
                        payload: p.payload.to_vec(),
                        cm: p.cm,
                        src: p.src,
                        truncated: p.truncated(),
                        control_truncated: p.control_truncated(),
                        drops_before: p.drops_before,
                        segments: p.segments().map(<[u8]>::to_vec).collect(),
                    });
                }
                assert_eq!(got.packets.len() - before, n, "iter() yields len() packets");
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(
                    batch.is_empty(),
                    "a WouldBlock receive leaves the batch empty"
                );
                assert_eq!(batch.iter().count(), 0);
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(
                    !left.is_zero(),
                    "timed out after {DEADLINE:?}: got {} packets ({} bytes) so far",
                    got.packets.len(),
                    got.bytes()
                );
                wait_readable(conn, left.min(Duration::from_millis(200)));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("recv failed: {e}"),
        }
    }
    got
}

/// Receives exactly `n` packets (more in the last batch fails the test).
pub fn recv_n(batch: &mut RecvBatch, conn: &PacketConn, n: usize) -> Gathered {
    let got = recv_until(batch, conn, |r| r.packets.len() >= n);
    assert_eq!(
        got.packets.len(),
        n,
        "more packets than expected in one batch"
    );
    got
}

/// Asserts that nothing more is queued: `recv` says `WouldBlock` (after a
/// short grace period for stragglers).
pub fn assert_drained(batch: &mut RecvBatch, conn: &PacketConn) {
    let extra = wait_readable(conn, Duration::from_millis(20));
    match batch.recv(conn) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            assert!(!extra, "poll said readable but recv said WouldBlock");
            assert!(batch.is_empty());
            // The system call's own error, as before the crate took
            // "nothing queued" as a count of 0 inside.
            assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "{e}");
        }
        Ok(n) => panic!(
            "expected WouldBlock on a drained socket, got {n} more packet(s): {:?}",
            batch.iter().map(|p| p.payload.len()).collect::<Vec<_>>()
        ),
        Err(e) => panic!("expected WouldBlock on a drained socket, got {e}"),
    }
}

/// The CPU the calling thread last ran on: field 39 (`processor`) of
/// `/proc/thread-self/stat`.
fn current_cpu() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Field 2, the command name, is in parentheses and may hold spaces:
    // count from the last `)`, after which field 3 comes.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(39 - 3)?.parse().ok()
}

/// Runs `f` on a thread of its own, pinned to the CPU that thread starts
/// on, so that a burst of loopback packets goes through one CPU's backlog
/// and stays in order. A pin cannot be undone, hence the thread, which ends
/// with `f`. If the CPU cannot be told or the pin fails, `f` runs unpinned
/// (and says so). A panic in `f` is resumed on the calling thread.
pub fn on_pinned_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            match current_cpu() {
                Some(cpu) => {
                    if let Err(e) = pin_current_thread(cpu) {
                        eprintln!("note: running unpinned: pinning to CPU {cpu} failed: {e}");
                    }
                }
                None => eprintln!("note: running unpinned: the current CPU is unknown"),
            }
            f()
        });
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Packets dropped at the per-CPU input backlog (all CPUs), from
/// `/proc/net/softnet_stat` (second column). Such drops happen before any
/// socket and are not in `SO_RXQ_OVFL`.
pub fn softnet_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter_map(|h| u64::from_str_radix(h, 16).ok())
                .sum()
        })
        .unwrap_or(0)
}

/// The kernel's drop counter of the UDP socket bound to `local`, from
/// `/proc/net/udp` (last column), if found.
pub fn proc_udp_drops(local: SocketAddrV4) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(local.ip().octets()),
        local.port()
    );
    text.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(1) == Some(&want.as_str()))
            .then(|| cols.last()?.parse().ok())
            .flatten()
    })
}
