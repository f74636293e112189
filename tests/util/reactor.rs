//! For tests that drive a reactor themselves (`turn`), and a sender thread
//! that floods groups until told to stop.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::reactor::Reactor;

use super::{assert_safe, join_within, lo_sender, try_send, DEADLINE};

/// The timeout of one `turn` when the test drives the reactor itself.
pub const TURN: Duration = Duration::from_millis(50);

/// Turns the reactor (at most [`TURN`] per wait) until `done` holds or
/// `limit` passes; returns whether `done` held.
pub fn turn_until(
    reactor: &mut Reactor,
    limit: Duration,
    mut done: impl FnMut(&Reactor) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done(reactor) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        reactor.turn(Some(TURN)).expect("turn");
    }
}

/// Turns the reactor for `window`, whatever happens.
pub fn turn_for(reactor: &mut Reactor, window: Duration) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        reactor.turn(Some(Duration::from_millis(10))).expect("turn");
    }
}

/// A sender thread that sends to each of `dsts` in turn, `seq` as payload,
/// pausing `pause` after each round, until told to stop (or 30 s pass).
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    join: Option<thread::JoinHandle<()>>,
}

impl Flood {
    pub fn start(dsts: Vec<SocketAddrV4>, pause: Option<Duration>) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let tx = lo_sender();
        for d in &dsts {
            assert_safe(&tx, *d);
        }
        let join = {
            let stop = Arc::clone(&stop);
            let sent = Arc::clone(&sent);
            thread::spawn(move || {
                let mut seq = 0u64;
                let started = Instant::now();
                // Bounded even if nobody stops it.
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                    for d in &dsts {
                        if try_send(&tx, &seq.to_be_bytes(), *d) {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        seq += 1;
                    }
                    if let Some(p) = pause {
                        thread::sleep(p);
                    }
                }
            })
        };
        Flood {
            stop,
            sent,
            join: Some(join),
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            join_within(j, DEADLINE, "sender thread");
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

use std::cell::Cell;

use ipv4_reactor::reactor::{Backend, ReactorBuilder};

thread_local! {
    /// The backend that [`builder`] gives the reactors of the running test.
    static BACKEND: Cell<Backend> = const { Cell::new(Backend::Mio) };
}

/// The backends the reactor tests run against: mio, and io_uring when the
/// crate is built with its `io-uring` feature.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Mio];
    if cfg!(feature = "io-uring") {
        v.push(Backend::IoUring);
    }
    v
}

/// Runs `test` once per backend of [`backends`]; [`builder`] gives the
/// reactors built meanwhile (on this thread) that backend. A failure says
/// which backend it was.
pub fn each_backend(test: impl Fn()) {
    for b in backends() {
        BACKEND.with(|c| c.set(b));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&test));
        BACKEND.with(|c| c.set(Backend::Mio));
        if let Err(payload) = outcome {
            eprintln!("(the failure above is with backend {b:?})");
            std::panic::resume_unwind(payload);
        }
    }
}

/// The backend of the running [`each_backend`] round.
pub fn backend() -> Backend {
    BACKEND.with(Cell::get)
}

/// `Reactor::builder()` with the backend of the running [`each_backend`]
/// round.
pub fn builder() -> ReactorBuilder {
    Reactor::builder().backend(backend())
}
