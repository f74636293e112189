//! CPU placement of threads.

use std::io;

/// Pins the calling thread to one CPU (`sched_setaffinity(2)` on the
/// calling thread only), as [`ReactorBuilder::pin_to_cpu`](crate::reactor::ReactorBuilder::pin_to_cpu) does for the
/// thread that runs a reactor. Use it for a thread that feeds or drains a
/// reactor, or that must stay on one CPU for another reason.
///
/// The pin lasts as long as the thread; there is no call to undo it, so pin
/// a thread of its own (one that ends when the pinned work is done) rather
/// than one that goes on to do other work.
///
/// Errors: `InvalidInput` for a CPU number past the largest that the system
/// call accepts; the OS error (`EINVAL`) for a CPU that does not exist or is
/// outside the process's allowed set (cpuset, `taskset`).
///
/// # Example
///
/// ```no_run
/// use std::thread;
/// use ipv4_reactor::pin_current_thread;
///
/// let worker = thread::spawn(|| -> std::io::Result<()> {
///     pin_current_thread(2)?;
///     // ... work that must stay on CPU 2 ...
///     Ok(())
/// });
/// worker.join().expect("worker panicked")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    crate::sys::pin_current_thread(cpu)
}
