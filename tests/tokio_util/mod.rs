//! Helpers shared by the tokio tests (feature `tokio`): a counting global
//! allocator and sockets on lo.
//!
//! Network safety: unicast UDP on 127.0.0.1, multicast sent through lo only.

#![allow(dead_code)] // each test file uses its own share

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ipv4_reactor::PacketConn;

/// Counts the allocations of the threads that turned counting on.
pub struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    // `try_with`: the allocator may run while thread-locals are torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
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
        // SAFETY: forwarded from the caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Serialises counted sections: the counter is global, the flag per thread.
static COUNTED: Mutex<()> = Mutex::new(());

/// A counted section on this thread: allocations made by this thread
/// between `start` and `stop` (an async block may hold one across awaits
/// on a current-thread runtime, which runs everything on this thread).
pub struct Counter {
    _serial: std::sync::MutexGuard<'static, ()>,
    before: u64,
}

impl Counter {
    pub fn start() -> Counter {
        let serial = COUNTED.lock().unwrap_or_else(|e| e.into_inner());
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        COUNTING.with(|c| c.set(true));
        Counter {
            _serial: serial,
            before,
        }
    }

    /// Stops counting; the allocations counted.
    pub fn stop(self) -> u64 {
        COUNTING.with(|c| c.set(false));
        ALLOCATIONS.load(Ordering::SeqCst) - self.before
    }
}

pub const PATIENCE: Duration = Duration::from_secs(5);

pub fn udp() -> PacketConn {
    PacketConn::bind_udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind UDP on 127.0.0.1")
}

/// A current-thread runtime with I/O and timers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime")
}
