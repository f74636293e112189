// cargo run --release --example latency_compare [-- --rate 100000 --seconds 1.5 --rounds 9 --json]
//
// Latency from the kernel's receive timestamp (SO_TIMESTAMPNS) to the code
// that handles the packet, at a fixed rate, side by side in one run:
//
//   libc_spin      recvmmsg(MSG_DONTWAIT) in a tight loop, no epoll (C style)
//   libc_epoll     epoll_wait (edge-triggered), then recvmmsg until EAGAIN
//   reactor_spin   Reactor::builder().spin(true), run()
//   reactor_epoll  Reactor::builder(), run()
//   reactor_uring_spin, reactor_uring_epoll   the same on the io_uring
//                  backend (built with --features io-uring)
//   libc_spin_again  libc_spin once more: how far apart the same code
//                  comes out on this machine (the resolution of the ratios)
//   batch_spin     the crate's RecvBatch in the same spin loop, no reactor
//                  (only when named in --only)
//   reactor_epoll_short  epoll mode with read_until_empty(false): a batch
//                  shorter than asked ends the drain (only when named)
//
// One sender thread pinned to --tx-cpu (default 0) sends 64-byte multicast
// packets on lo at --rate packets per second (busy-wait pacing) to a group
// joined on lo; the receiver (this thread) is pinned to --rx-cpu (default
// 1). Each side has its own group socket, made once (the reactor sides
// register theirs once, as a running service does, and keep their receive
// slots from run to run as the libc sides keep theirs). The spin sides
// alternate among themselves, then the epoll sides, each side coming right
// after every other side of its group equally often (what ran just before
// a spin loop, a busy or an idle CPU, moves its tail here more than the
// differences measured); the medians of each side's per-run p50, p99 and
// p99.9 are reported. The ratios reactor / libc are paired: in each circuit
// of a group (the runs in which every side came right after every other
// once, a few seconds) the side's runs over its baseline's, then the
// median over the circuits with a 95% bootstrap interval (how far the
// circuits' own spread lets it be trusted). The host's noise moves over
// minutes; pairing within a circuit keeps it out of the ratios.
// `--per-run` writes each run's figures to stderr; `--pool FILE...` reads
// such files (one per invocation) and reports them together.
// Latency = CLOCK_REALTIME read as the handler is entered (SystemTime::now,
// first thing on every side, before the stamp is converted) - the kernel
// stamp.
// Traffic stays on lo.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hdrhistogram::Histogram;
use ipv4_reactor::reactor::{Backend, Context, Handle, Handler, Reactor};
use ipv4_reactor::{pin_current_thread, ControlFlags, Interface, Packet, PacketConn, RecvBatch};

#[path = "../benches/support/libc_drain.rs"]
mod libc_drain;
#[path = "../benches/support/libc_epoll.rs"]
mod libc_epoll;

use libc_drain::LibcDrain;
use libc_epoll::LibcEpoll;

const PAYLOAD: usize = 64;
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 76, 1);

/// Latency from the kernel receive timestamp to the handler, reactor spin
/// and epoll modes against plain libc loops, at a fixed rate on lo.
#[derive(Parser, Debug)]
#[command(name = "latency_compare")]
struct Args {
    /// Packets per second sent
    #[arg(long, value_name = "PPS", default_value_t = 100_000)]
    rate: u64,
    /// Seconds per side per round
    #[arg(long, value_name = "S", default_value_t = 1.5)]
    seconds: f64,
    /// Rounds: runs of each side (the sides alternate, spin sides among
    /// themselves and epoll sides among themselves; rounded up so that in
    /// its group every side follows every other side equally often;
    /// medians are reported)
    #[arg(long, value_name = "N", default_value_t = 9,
          value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// CPU of the receiver (this thread)
    #[arg(long, value_name = "CPU", default_value_t = 1)]
    rx_cpu: usize,
    /// CPU of the sender thread
    #[arg(long, value_name = "CPU", default_value_t = 0)]
    tx_cpu: usize,
    /// Only these sides (and their baselines): libc_spin libc_epoll
    /// reactor_spin reactor_epoll libc_spin_again (libc_spin against
    /// itself, for the spread of the same code), and with the io-uring
    /// feature reactor_uring_spin reactor_uring_epoll; batch_spin (RecvBatch
    /// in a spin loop, no reactor) and reactor_epoll_short (epoll mode with
    /// read_until_empty(false)) run only when named here
    #[arg(long, value_name = "KEY,KEY", value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// With --only: leave the baselines out (for profiling one side, e.g.
    /// under callgrind); no ratios then
    #[arg(long)]
    alone: bool,
    /// Print the result as one JSON line
    #[arg(long)]
    json: bool,
    /// Also print each run's p50, p99 and p99.9 (to stderr, a line per run in
    /// the order they ran)
    #[arg(long)]
    per_run: bool,
    /// Send nothing: read the `--per-run` lines of earlier invocations
    /// (one file each, as written to stderr) and report them pooled, each
    /// invocation's circuits compared within themselves
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with_all = ["only", "alone", "per_run"])]
    pool: Option<Vec<std::path::PathBuf>>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Side {
    LibcSpin,
    LibcEpoll,
    ReactorSpin,
    ReactorEpoll,
    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    ReactorUringSpin,
    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    ReactorUringEpoll,
    /// A second libc spin loop against the first (asked for by name
    /// only): how far apart two runs of the same code come out here.
    LibcSpinAgain,
    /// The crate's `RecvBatch` in the same spin loop, without a reactor
    /// (asked for by name only): the layer under the reactor.
    BatchSpin,
    /// The reactor in epoll mode with `read_until_empty(false)` (asked for
    /// by name only): a batch shorter than asked ends the drain.
    ReactorEpollShort,
}

impl Side {
    const ALL: &[Side] = &[
        Side::LibcSpin,
        Side::LibcEpoll,
        Side::ReactorSpin,
        Side::ReactorEpoll,
        #[cfg(feature = "io-uring")]
        Side::ReactorUringSpin,
        #[cfg(feature = "io-uring")]
        Side::ReactorUringEpoll,
        Side::LibcSpinAgain,
        Side::BatchSpin,
        Side::ReactorEpollShort,
    ];

    fn is_reactor(self) -> bool {
        !matches!(
            self,
            Side::LibcSpin | Side::LibcEpoll | Side::LibcSpinAgain | Side::BatchSpin
        )
    }

    /// Whether the receiver spins (never sleeps between packets).
    fn spins(self) -> bool {
        self.baseline() == Side::LibcSpin
    }

    fn key(self) -> &'static str {
        match self {
            Side::LibcSpin => "libc_spin",
            Side::LibcSpinAgain => "libc_spin_again",
            Side::BatchSpin => "batch_spin",
            Side::LibcEpoll => "libc_epoll",
            Side::ReactorSpin => "reactor_spin",
            Side::ReactorEpoll => "reactor_epoll",
            Side::ReactorEpollShort => "reactor_epoll_short",
            Side::ReactorUringSpin => "reactor_uring_spin",
            Side::ReactorUringEpoll => "reactor_uring_epoll",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Side::LibcSpin => "libc recvmmsg(MSG_DONTWAIT) spin loop",
            Side::LibcSpinAgain => "the same libc spin loop again",
            Side::BatchSpin => "RecvBatch(64) spin loop, no reactor",
            Side::LibcEpoll => "libc epoll_wait + recvmmsg until EAGAIN",
            Side::ReactorSpin => "Reactor spin mode, run()",
            Side::ReactorEpoll => "Reactor epoll mode, run()",
            Side::ReactorEpollShort => "Reactor epoll, read_until_empty(false)",
            Side::ReactorUringSpin => "Reactor io_uring, spin mode, run()",
            Side::ReactorUringEpoll => "Reactor io_uring, blocking, run()",
        }
    }

    fn baseline(self) -> Side {
        match self {
            Side::LibcSpin
            | Side::ReactorSpin
            | Side::ReactorUringSpin
            | Side::LibcSpinAgain
            | Side::BatchSpin => Side::LibcSpin,
            Side::LibcEpoll
            | Side::ReactorEpoll
            | Side::ReactorUringEpoll
            | Side::ReactorEpollShort => Side::LibcEpoll,
        }
    }
}

fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What every side does per packet: read the clock, record now - stamp.
struct Recorder {
    hist: Histogram<u64>,
    /// Packets with a sequence number below this are not recorded (the
    /// first milliseconds of a round).
    warmup: u64,
    received: u64,
    no_stamp: u64,
    next_seq: u64,
    lost: u64,
}

impl Recorder {
    fn new(warmup: u64) -> Recorder {
        Recorder {
            hist: Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds"),
            warmup,
            received: 0,
            no_stamp: 0,
            next_seq: 0,
            lost: 0,
        }
    }

    /// One packet: `now` is the clock read as the handler was entered,
    /// before anything else (every side reads it first, so that what a side
    /// does with the packet, converting the stamp included, is not timed).
    #[inline]
    fn on(&mut self, now: u64, payload: &[u8], stamp_ns: u64) {
        self.received += 1;
        let seq = payload
            .get(..8)
            .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
        if seq > self.next_seq {
            self.lost += seq - self.next_seq;
        }
        self.next_seq = self.next_seq.max(seq + 1);
        if stamp_ns == 0 {
            self.no_stamp += 1;
            return;
        }
        if seq >= self.warmup {
            self.hist
                .saturating_record(now.saturating_sub(stamp_ns).max(1));
        }
    }
}

/// The reactor sides' handler, registered once (as a running service
/// is): it takes each round's recorder from `inbox` at the round's first
/// packet, and gives it back on the packet the main thread sends after
/// the round with `flush` raised.
struct RecHandler {
    rec: Option<Recorder>,
    inbox: mpsc::Receiver<Recorder>,
    back: mpsc::Sender<Recorder>,
    flush: Arc<AtomicBool>,
}

impl Handler for RecHandler {
    #[inline]
    fn on_packet(&mut self, p: &Packet<'_>, _ctx: &mut Context<'_>) {
        let now = realtime_ns();
        if self.flush.load(Ordering::Relaxed) {
            if let Some(rec) = self.rec.take() {
                let _ = self.back.send(rec);
            }
            return;
        }
        if self.rec.is_none() {
            self.rec = self.inbox.try_recv().ok();
        }
        if let Some(rec) = self.rec.as_mut() {
            rec.on(now, p.payload, p.cm.timestamp_nanos().unwrap_or(0));
        }
    }
}

/// A registered reactor side's ends of its handler's channels.
struct Registered {
    inbox: mpsc::Sender<Recorder>,
    back: mpsc::Receiver<Recorder>,
    flush: Arc<AtomicBool>,
}

/// The receive state of one side, made once.
struct Receiver {
    side: Side,
    dst: SocketAddrV4,
    conn: Option<PacketConn>,
    libc: Option<LibcDrain>,
    reactor: Option<Reactor>,
    registered: Option<Registered>,
    batch: Option<RecvBatch>,
}

/// How the sender ends a round.
enum Stopper {
    Flag(Arc<AtomicBool>),
    Reactor(Handle),
}

impl Stopper {
    fn stop(&self) {
        match self {
            Stopper::Flag(f) => f.store(true, Ordering::Release),
            Stopper::Reactor(h) => h.stop(),
        }
    }
}

impl Receiver {
    fn new(side: Side) -> std::io::Result<Receiver> {
        let conn =
            PacketConn::multicast_receiver(SocketAddrV4::new(GROUP, 0), Interface::loopback())
                .control(ControlFlags::TIMESTAMP)
                .recv_buffer(4 << 20)
                .build()?;
        let dst = conn.local_addr()?;
        let (libc, reactor) = match side {
            Side::BatchSpin => (None, None),
            Side::LibcSpin | Side::LibcEpoll | Side::LibcSpinAgain => (
                Some(LibcDrain::new(
                    64,
                    2048,
                    ControlFlags::TIMESTAMP.control_len(),
                    false,
                )?),
                None,
            ),
            _ => (
                None,
                Some(
                    Reactor::builder()
                        .batch_slots(64)
                        .payload_size(2048)
                        .spin(matches!(side, Side::ReactorSpin | Side::ReactorUringSpin))
                        .read_until_empty(side != Side::ReactorEpollShort)
                        .backend(
                            if matches!(side, Side::ReactorUringSpin | Side::ReactorUringEpoll) {
                                Backend::IoUring
                            } else {
                                Backend::Mio
                            },
                        )
                        .build()?,
                ),
            ),
        };
        Ok(Receiver {
            side,
            dst,
            conn: Some(conn),
            libc,
            reactor,
            registered: None,
            batch: (side == Side::BatchSpin)
                .then(|| RecvBatch::new(64, 2048, ControlFlags::TIMESTAMP))
                .transpose()?,
        })
    }

    /// Receives until the sender stops the round; `start` is called once
    /// the receiver is ready, with what stops it.
    fn round(
        &mut self,
        tx: &PacketConn,
        warmup: u64,
        start: impl FnOnce(Stopper),
    ) -> std::io::Result<Recorder> {
        let mut rec = Recorder::new(warmup);
        match self.side {
            Side::LibcSpin | Side::LibcSpinAgain => {
                let conn = self.conn.as_ref().expect("socket");
                let fd = conn.as_raw_fd();
                let d = self.libc.as_mut().expect("libc side");
                let stop = Arc::new(AtomicBool::new(false));
                start(Stopper::Flag(Arc::clone(&stop)));
                while !stop.load(Ordering::Relaxed) {
                    match d.recv(fd, |p, m| rec.on(realtime_ns(), p, m.ts_ns)) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Side::BatchSpin => {
                let conn = self.conn.as_ref().expect("socket");
                let batch = self.batch.as_mut().expect("batch side");
                let stop = Arc::new(AtomicBool::new(false));
                start(Stopper::Flag(Arc::clone(&stop)));
                while !stop.load(Ordering::Relaxed) {
                    match batch.recv(conn) {
                        Ok(_) => {
                            for p in batch.iter() {
                                rec.on(
                                    realtime_ns(),
                                    p.payload,
                                    p.cm.timestamp_nanos().unwrap_or(0),
                                );
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Side::LibcEpoll => {
                let conn = self.conn.as_ref().expect("socket");
                let fd = conn.as_raw_fd();
                let d = self.libc.as_mut().expect("libc side");
                let mut ep = LibcEpoll::new(16)?;
                ep.add(fd, 0)?;
                let stop = Arc::new(AtomicBool::new(false));
                start(Stopper::Flag(Arc::clone(&stop)));
                // A C loop would block (-1) and be woken by an eventfd; the
                // timeout only lets it see the end of the round.
                while !stop.load(Ordering::Relaxed) {
                    let ready = ep.wait(50)?.count();
                    for _ in 0..ready {
                        loop {
                            match d.recv(fd, |p, m| rec.on(realtime_ns(), p, m.ts_ns)) {
                                Ok(_) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                                Err(e) => return Err(e),
                            }
                        }
                    }
                }
                ep.delete(fd)?;
            }
            _ => {
                debug_assert!(self.side.is_reactor());
                let reactor = self.reactor.as_mut().expect("reactor side");
                if self.registered.is_none() {
                    let (inbox, inbox_rx) = mpsc::channel();
                    let (back_tx, back) = mpsc::channel();
                    let flush = Arc::new(AtomicBool::new(false));
                    let conn = self.conn.take().expect("socket");
                    reactor.register(
                        conn,
                        RecHandler {
                            rec: None,
                            inbox: inbox_rx,
                            back: back_tx,
                            flush: Arc::clone(&flush),
                        },
                    )?;
                    self.registered = Some(Registered { inbox, back, flush });
                }
                let reg = self.registered.as_ref().expect("registered");
                reg.flush.store(false, Ordering::Relaxed);
                reg.inbox.send(rec).expect("the handler");
                start(Stopper::Reactor(reactor.handle()));
                reactor.run()?;
                reactor.reset_stop();
                // The packet that brings the recorder back.
                reg.flush.store(true, Ordering::Relaxed);
                tx.send_to(&[0u8; PAYLOAD], None, self.dst)?;
                let deadline = Instant::now() + Duration::from_secs(5);
                rec = loop {
                    reactor.turn(Some(Duration::from_millis(10)))?;
                    if let Ok(rec) = reg.back.try_recv() {
                        break rec;
                    }
                    if Instant::now() > deadline {
                        return Err(std::io::Error::other(
                            "the reactor side's recorder did not come back",
                        ));
                    }
                };
            }
        }
        Ok(rec)
    }
}

/// Sends 64-byte packets numbered from 0 to `dst` at `rate` for `dur`,
/// busy-waiting between them; then stops the receiver. Returns the count.
fn send_round(
    tx: &PacketConn,
    dst: SocketAddrV4,
    rate: u64,
    dur: Duration,
    cpu: usize,
    stop: Stopper,
) -> std::io::Result<u64> {
    pin_current_thread(cpu)?;
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut buf = [0u8; PAYLOAD];
    let start = Instant::now();
    let mut due = start;
    let mut seq = 0u64;
    let mut stalls = 0u64;
    while due - start < dur {
        let mut now = Instant::now();
        while now < due {
            std::hint::spin_loop();
            now = Instant::now();
        }
        // Descheduled (the VM is shared): start again from now rather than
        // send the backlog in one burst, which would measure the burst.
        if now - due > 10 * period {
            stalls += 1;
            due = now;
        }
        buf[..8].copy_from_slice(&seq.to_be_bytes());
        tx.send_to(&buf, None, dst)?;
        seq += 1;
        due += period;
    }
    if stalls > 0 {
        eprintln!("sender: {stalls} stalls of more than 10 periods (skipped, not sent in a burst)");
    }
    // Let the last packets arrive.
    std::thread::sleep(Duration::from_millis(5));
    stop.stop();
    Ok(seq)
}

/// A side's packet counts over all its runs.
#[derive(Default, Clone, Copy)]
struct Counts {
    received: u64,
    sent: u64,
    lost: u64,
}

/// The order in which the `n` sides run: an Eulerian circuit of the
/// complete directed graph on the sides (Hierholzer's algorithm), repeated
/// until each side has run at least `rounds` times. In one circuit each
/// side runs `n - 1` times and comes right after every other side exactly
/// once, the step from the circuit's end to its start included.
/// For 3 sides: 0 1 2 0 2 1.
fn schedule(n: usize, rounds: usize) -> Vec<usize> {
    if n < 2 {
        return vec![0; rounds * n];
    }
    // Each side's next sides taken in the order v + 1, v + 2, ... (mod n):
    // the circuit starts 0, 1, 2, ..., then steps by 2, and so on, which
    // spreads every side over the whole circuit.
    let mut unused: Vec<Vec<usize>> = (0..n)
        .map(|v| (1..n).rev().map(|d| (v + d) % n).collect())
        .collect();
    let (mut stack, mut circuit) = (vec![0], Vec::with_capacity(n * (n - 1) + 1));
    while let Some(&v) = stack.last() {
        match unused[v].pop() {
            Some(u) => stack.push(u),
            None => circuit.extend(stack.pop()),
        }
    }
    circuit.reverse();
    // It ends where it starts: the last step leads into the next circuit.
    circuit.pop();
    let repeats = rounds.div_ceil(n - 1);
    circuit
        .iter()
        .copied()
        .cycle()
        .take(repeats * circuit.len())
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One run of one side: its p50, p99 and p99.9 in µs.
#[derive(Clone, Copy, Debug)]
struct RunFigures {
    side: Side,
    p50: f64,
    p99: f64,
    p999: f64,
}

/// Which figure of a run.
type Quantile = fn(&RunFigures) -> f64;

/// A paired ratio with its 95% interval (none from too few circuits), and
/// the number of circuits; none without a baseline.
type Paired = Option<((f64, Option<(f64, f64)>), usize)>;

/// The per-circuit ratios of `side` to its baseline, `q` of each run: the
/// runs of one invocation (in the order they ran) cut into the circuits of
/// each group (spin sides, then epoll sides; `n (n - 1)` runs for `n`
/// sides), and in each circuit where both ran, the geometric mean of the
/// side's runs over that of its baseline's. Sides that ran minutes apart
/// are never compared: the host's noise, which moves over minutes, moves
/// both sides of a circuit alike.
fn circuit_ratios(runs: &[RunFigures], side: Side, q: Quantile) -> Vec<f64> {
    let base = side.baseline();
    let mut out = Vec::new();
    for spin in [true, false] {
        let group: Vec<&RunFigures> = runs.iter().filter(|r| r.side.spins() == spin).collect();
        let mut keys: Vec<&str> = group.iter().map(|r| r.side.key()).collect();
        keys.sort_unstable();
        keys.dedup();
        let n = keys.len();
        let len = if n < 2 { 1 } else { n * (n - 1) };
        for circuit in group.chunks(len) {
            let log_mean = |s: Side| {
                let v: Vec<f64> = circuit
                    .iter()
                    .filter(|r| r.side == s)
                    .map(|r| q(r).max(1e-3).ln())
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            };
            if let (Some(a), Some(b)) = (log_mean(side), log_mean(base)) {
                out.push((a - b).exp());
            }
        }
    }
    out
}

/// The median of the per-circuit ratios with a 95% bootstrap interval:
/// the circuits resampled with replacement 2,000 times (seeded, so the
/// same runs give the same interval) and the median taken each time. How
/// far the ratio can be trusted, from the spread of the circuits
/// themselves; no interval from fewer than 5 circuits.
fn ratio_with_interval(ratios: &[f64]) -> Option<(f64, Option<(f64, f64)>)> {
    if ratios.is_empty() {
        return None;
    }
    if ratios.len() < 5 {
        return Some((median(ratios), None));
    }
    const DRAWS: usize = 2000;
    let mut rng = oorandom::Rand64::new(0x006c_6174_656e_6379);
    let mut buf = Vec::with_capacity(ratios.len());
    let mut medians: Vec<f64> = (0..DRAWS)
        .map(|_| {
            buf.clear();
            buf.extend(
                (0..ratios.len()).map(|_| ratios[rng.rand_range(0..ratios.len() as u64) as usize]),
            );
            median(&buf)
        })
        .collect();
    medians.sort_by(|a, b| a.total_cmp(b));
    Some((
        median(ratios),
        Some((medians[DRAWS / 40], medians[DRAWS - 1 - DRAWS / 40])),
    ))
}

/// Reads the `--per-run` lines of earlier invocations, one file per
/// invocation (lines `run K SIDE p50 X p99 Y [p99.9 Z]`; other lines are
/// skipped).
fn read_runs(path: &std::path::Path) -> std::io::Result<Vec<RunFigures>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
    let mut runs = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"run") {
            continue;
        }
        let bad = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}:{}: {what}: {line:?}", path.display(), no + 1),
            )
        };
        let side = words
            .get(2)
            .and_then(|k| Side::ALL.iter().copied().find(|s| s.key() == *k))
            .ok_or_else(|| bad("unknown side"))?;
        let value = |name: &str| -> Result<Option<f64>, std::io::Error> {
            match words.iter().position(|w| *w == name) {
                None => Ok(None),
                Some(i) => words
                    .get(i + 1)
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .map(Some)
                    .ok_or_else(|| bad(&format!("no number after {name}"))),
            }
        };
        if words.get(3) == Some(&"p50")
            && words.get(4).and_then(|v| v.parse::<f64>().ok()) == Some(0.0)
        {
            // An empty run (no packet recorded), as older builds wrote it.
            continue;
        }
        let (Some(p50), Some(p99)) = (value("p50")?, value("p99")?) else {
            return Err(bad("a run line without p50 and p99"));
        };
        let p999 = value("p99.9")?.unwrap_or(f64::NAN);
        runs.push(RunFigures {
            side,
            p50,
            p99,
            p999,
        });
    }
    if runs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{}: no `run` lines (write them with --per-run)",
                path.display()
            ),
        ));
    }
    Ok(runs)
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("latency_compare: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> std::io::Result<()> {
    if let Some(files) = &args.pool {
        let invocations = files
            .iter()
            .map(|f| read_runs(f))
            .collect::<std::io::Result<Vec<_>>>()?;
        report(&args, &invocations, &[]);
        return Ok(());
    }
    let wanted = |s: Side| {
        let Some(keys) = args.only.as_ref() else {
            return !matches!(s, Side::BatchSpin | Side::ReactorEpollShort);
        };
        Side::ALL.iter().any(|&w| {
            keys.iter().any(|k| k == w.key()) && (w == s || (!args.alone && w.baseline() == s))
        })
    };
    pin_current_thread(args.rx_cpu)?;
    let tx = PacketConn::multicast_sender(&Interface::loopback())?;
    let mut sides: Vec<(Receiver, Counts)> = Side::ALL
        .iter()
        .filter(|&&s| wanted(s))
        .map(|&s| Ok((Receiver::new(s)?, Counts::default())))
        .collect::<std::io::Result<_>>()?;
    // Packets of a new flow just after a join may be dropped.
    std::thread::sleep(Duration::from_millis(300));
    let dur = Duration::from_secs_f64(args.seconds);
    let warmup = args.rate / 50;
    // What runs before a side moves its tail on this VM by more than the
    // differences measured here: a spin loop that starts after an epoll
    // loop (an idle CPU between packets) had a p99 up to twice that of one
    // that starts after another spin loop, for the whole of its run. A
    // running spin-mode service never starts from an idle CPU, so the spin
    // sides run among themselves and then the epoll sides among
    // themselves, and within each group every side comes right after every
    // other side equally often. (A rotation of a fixed order does not do
    // that: it keeps each side's neighbours, so one side always followed an
    // epoll side and another never.)
    let mut order = Vec::new();
    for spin in [true, false] {
        let group: Vec<usize> = (0..sides.len())
            .filter(|&i| sides[i].0.side.spins() == spin)
            .collect();
        order.extend(
            schedule(group.len(), args.rounds as usize)
                .into_iter()
                .map(|j| group[j]),
        );
    }
    let mut runs = Vec::with_capacity(order.len());
    for (run, &i) in order.iter().enumerate() {
        let (rx, row) = &mut sides[i];
        let dst = rx.dst;
        let (rate, cpu) = (args.rate, args.tx_cpu);
        let tx = &tx;
        let (rec, sent) = std::thread::scope(|s| -> std::io::Result<(Recorder, u64)> {
            let (go, stopper) = mpsc::channel::<Stopper>();
            let sender = s.spawn(move || -> std::io::Result<u64> {
                let stop = stopper.recv().expect("the receiver's stopper");
                send_round(tx, dst, rate, dur, cpu, stop)
            });
            let rec = rx.round(tx, warmup, |stop| go.send(stop).expect("sender thread"))?;
            let sent = sender.join().expect("sender panicked")?;
            Ok((rec, sent))
        })?;
        let us = |q: f64| rec.hist.value_at_quantile(q) as f64 / 1e3;
        if rec.hist.is_empty() {
            // The host held the sender or the receiver for the whole run
            // (seen a few times in a thousand runs): no figures, and its
            // circuit compares the runs that have some.
            eprintln!(
                "run {run} {}: no packet recorded (the run is left out)",
                rx.side.key()
            );
        } else {
            let figures = RunFigures {
                side: rx.side,
                p50: us(0.5),
                p99: us(0.99),
                p999: us(0.999),
            };
            if args.per_run {
                eprintln!(
                    "run {run} {} p50 {:.3} p99 {:.3} p99.9 {:.3}",
                    rx.side.key(),
                    figures.p50,
                    figures.p99,
                    figures.p999
                );
            }
            runs.push(figures);
        }
        row.received += rec.received;
        row.sent += sent;
        row.lost += rec.lost;
        if rec.no_stamp > 0 {
            eprintln!(
                "{}: {} packets without a timestamp",
                rx.side.key(),
                rec.no_stamp
            );
        }
    }

    let counts: Vec<(Side, Counts)> = sides.iter().map(|(rx, c)| (rx.side, *c)).collect();
    report(&args, &[runs], &counts);
    Ok(())
}

/// Prints the table (or the JSON line) for the runs of one or more
/// invocations; `counts` are the packet counts of a live run (none when
/// pooling files).
fn report(args: &Args, invocations: &[Vec<RunFigures>], counts: &[(Side, Counts)]) {
    let present: Vec<Side> = Side::ALL
        .iter()
        .copied()
        .filter(|&s| invocations.iter().flatten().any(|r| r.side == s))
        .collect();
    let column = |s: Side, q: Quantile| {
        let v: Vec<f64> = invocations
            .iter()
            .flatten()
            .filter(|r| r.side == s)
            .map(q)
            .filter(|x| x.is_finite())
            .collect();
        (!v.is_empty()).then(|| median(&v))
    };
    // A side against its baseline, circuit by circuit (none for a
    // baseline, or a side run without its baseline: --alone): the ratio,
    // its interval, and the number of circuits.
    let paired = |s: Side, q: Quantile| {
        if s.baseline() == s {
            return None;
        }
        let ratios: Vec<f64> = invocations
            .iter()
            .flat_map(|inv| circuit_ratios(inv, s, q))
            .collect();
        ratio_with_interval(&ratios).map(|r| (r, ratios.len()))
    };
    let (p50, p99, p999): (Quantile, Quantile, Quantile) = (|r| r.p50, |r| r.p99, |r| r.p999);
    let count = |s: Side| counts.iter().find(|(c, _)| *c == s).map(|(_, c)| *c);
    let runs_of = |s: Side| invocations.iter().flatten().filter(|r| r.side == s).count();
    if args.json {
        let r3 = |x: f64| (x * 1e3).round() / 1e3;
        let mut out = serde_json::Map::new();
        if args.pool.is_none() {
            out.insert("rate".into(), args.rate.into());
            out.insert("seconds".into(), args.seconds.into());
        }
        out.insert("invocations".into(), invocations.len().into());
        for &s in &present {
            let (at50, at99) = (paired(s, p50), paired(s, p99));
            let ratio = |p: Paired| p.map(|((r, _), _)| r3(r));
            let interval = |p: Paired| p.and_then(|((_, i), _)| i.map(|(l, h)| [r3(l), r3(h)]));
            let c = count(s);
            out.insert(
                s.key().into(),
                serde_json::json!({
                    "p50_us": column(s, p50).map(r3),
                    "p99_us": column(s, p99).map(r3),
                    "p999_us": column(s, p999).map(r3),
                    "runs": runs_of(s),
                    "circuits": at50.map(|(_, n)| n),
                    "p50_ratio": ratio(at50),
                    "p99_ratio": ratio(at99),
                    "p50_ratio_95": interval(at50),
                    "p99_ratio_95": interval(at99),
                    "received": c.map(|c| c.received),
                    "sent": c.map(|c| c.sent),
                    "lost": c.map(|c| c.lost),
                }),
            );
        }
        println!("{}", serde_json::Value::Object(out));
        return;
    }
    if args.pool.is_some() {
        println!(
            "latency, kernel receive timestamp to handler: {} invocations' runs pooled",
            invocations.len()
        );
    } else {
        println!(
            "latency, kernel receive timestamp to handler, {PAYLOAD}-byte multicast on lo at {} pps, \
             receiver on CPU {}, sender on CPU {}; runs of {} s (spin sides alternating among \
             themselves, then epoll sides)",
            args.rate, args.rx_cpu, args.tx_cpu, args.seconds
        );
    }
    println!(
        "p50, p99, p99.9: medians of each side's runs; x: the side over its baseline in each \
         circuit of its group (the runs in which every side came after every other once), \
         median over the circuits [95% bootstrap interval]"
    );
    println!(
        "{:<42} {:>5} {:>8} {:>8} {:>9} {:>21} {:>21} {:>10}",
        "side", "runs", "p50 us", "p99 us", "p99.9 us", "p50 x [95%]", "p99 x [95%]", "lost/sent"
    );
    let shown = |p: Paired| match p {
        None => "-".to_string(),
        Some(((r, None), n)) => format!("{r:.3} ({n} circ.)"),
        Some(((r, Some((low, high))), _)) => format!("{r:.3} [{low:.3}, {high:.3}]"),
    };
    let us = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
    for &s in &present {
        println!(
            "{:<42} {:>5} {:>8} {:>8} {:>9} {:>21} {:>21} {:>10}",
            s.name(),
            runs_of(s),
            us(column(s, p50)),
            us(column(s, p99)),
            us(column(s, p999)),
            shown(paired(s, p50)),
            shown(paired(s, p99)),
            count(s).map_or("-".to_string(), |c| format!("{}/{}", c.lost, c.sent)),
        );
    }
}
