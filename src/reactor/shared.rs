//! State a reactor shares with its handles: the stop flag, which phase it
//! is in, which thread turns it; and the thread-local mark of a turn.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::event_loop::Command;

static NEXT_REACTOR_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The id of the reactor turning on this thread, 0 when none.
    pub(super) static TURNING: Cell<u64> = const { Cell::new(0) };
    /// A number naming this thread (ThreadId has no stable number).
    static THREAD_TOKEN: u64 = NEXT_THREAD_TOKEN.fetch_add(1, Ordering::Relaxed);
}

static NEXT_THREAD_TOKEN: AtomicU64 = AtomicU64::new(1);

pub(super) fn thread_token() -> u64 {
    THREAD_TOKEN.with(|t| *t)
}

/// Marks the thread as turning a reactor, and restores the previous mark
/// when the turn ends, also when it unwinds.
pub(super) struct TurningMark(u64);

impl TurningMark {
    pub(super) fn enter(id: u64) -> TurningMark {
        TurningMark(TURNING.with(|t| t.replace(id)))
    }
}

impl Drop for TurningMark {
    fn drop(&mut self) {
        TURNING.with(|t| t.set(self.0));
    }
}

/// Never turned yet: a call waits (bounded) for the first turn.
pub(super) const PHASE_NEW: u8 = 0;
/// `run` is running, or the user turns the reactor: a call waits (bounded).
pub(super) const PHASE_SERVING: u8 = 1;
/// `run` returned: a call fails at once.
pub(super) const PHASE_HALTED: u8 = 2;

pub(super) struct Shared {
    pub(super) stop: AtomicBool,
    pub(super) id: u64,
    /// One of the `PHASE_*` values.
    pub(super) phase: AtomicU8,
    /// [`thread_token`] of the thread that turned the reactor last, 0
    /// before the first turn: a call from that thread outside a turn would
    /// wait for itself.
    pub(super) home: AtomicU64,
}

impl Shared {
    pub(super) fn new() -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            id: NEXT_REACTOR_ID.fetch_add(1, Ordering::Relaxed),
            phase: AtomicU8::new(PHASE_NEW),
            home: AtomicU64::new(0),
        }
    }

    pub(super) fn halted(&self) -> bool {
        self.phase.load(Ordering::SeqCst) == PHASE_HALTED
    }
}

/// Marks the reactor halted when `run` returns (or unwinds), and fails the
/// calls still queued: nothing would run them.
pub(crate) struct HaltOnExit {
    pub(super) shared: Arc<Shared>,
    pub(super) commands: Receiver<Command>,
}

impl Drop for HaltOnExit {
    fn drop(&mut self) {
        self.shared.phase.store(PHASE_HALTED, Ordering::SeqCst);
        // Pairs with the fence in Handle::call_timeout: either the caller
        // sees the halt, or this loop sees its command.
        fence(Ordering::SeqCst);
        // Dropping a command drops its reply sender: the caller's wait ends
        // with an error.
        while let Ok(cmd) = self.commands.try_recv() {
            drop(cmd);
        }
    }
}
