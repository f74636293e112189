//! A counting global allocator for the tests that prove a path allocates
//! nothing. A global allocator is per binary, so each `*_alloc` test file
//! installs it itself:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: util::CountingAlloc = util::CountingAlloc;
//! ```
//!
//! Only what the current thread does while inside [`counted`] is counted
//! (a thread-local switch), so the harness's other threads do not disturb
//! the count; counted sections are serialised, since the counters are
//! global.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Forwards to `System`, counting allocations (`alloc`, `alloc_zeroed`,
/// `realloc`) and deallocations made inside [`counted`].
pub struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static DEALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    // `try_with`: the allocator may run while thread-locals are torn down.
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

fn note_allocation() {
    if counting() {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping
// neither allocates nor touches the memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded from the caller's contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded from the caller's contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded from the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counting() {
            DEALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded from the caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Serialises counted sections: the counters are global, the switch per
/// thread.
static COUNTED: Mutex<()> = Mutex::new(());

/// A counted section on this thread: what this thread allocates and frees
/// between `start` and `stop`. An async block may hold one across awaits on
/// a current-thread runtime (which runs everything on this thread);
/// [`counted`] wraps a closure in one.
pub struct Counter {
    _serial: std::sync::MutexGuard<'static, ()>,
    allocations: u64,
    deallocations: u64,
}

impl Counter {
    pub fn start() -> Counter {
        let serial = COUNTED.lock().unwrap_or_else(|e| e.into_inner());
        let counter = Counter {
            _serial: serial,
            allocations: ALLOCATIONS.load(Ordering::SeqCst),
            deallocations: DEALLOCATIONS.load(Ordering::SeqCst),
        };
        COUNTING.with(|c| c.set(true));
        counter
    }

    /// Stops counting; the allocations and deallocations counted.
    pub fn stop(self) -> (u64, u64) {
        COUNTING.with(|c| c.set(false));
        (
            ALLOCATIONS.load(Ordering::SeqCst) - self.allocations,
            DEALLOCATIONS.load(Ordering::SeqCst) - self.deallocations,
        )
    }
}

/// Runs `f` with counting on for this thread; returns its result and the
/// allocations and deallocations it made. Meaningful only in a binary that
/// installed [`CountingAlloc`] as its global allocator.
pub fn counted<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    let counter = Counter::start();
    let r = f();
    let (a, d) = counter.stop();
    (r, a, d)
}
