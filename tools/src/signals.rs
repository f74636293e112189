//! SIGINT and SIGTERM as a request to stop: the tool finishes what it is
//! doing, prints its summary and exits with status 0, as tcpdump, sockperf
//! and mdump do. A second SIGINT or SIGTERM while stopping ends the process
//! at once with status 1 (a summary stuck on a blocked stdout cannot hold
//! it).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

/// Whether a stop was asked for, and by which signal.
#[derive(Debug, Clone)]
pub struct StopSignal {
    stopping: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

impl StopSignal {
    /// Catches SIGINT and SIGTERM from now on.
    pub fn install() -> io::Result<StopSignal> {
        let stopping = Arc::new(AtomicBool::new(false));
        let which = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag as it was before this
            // signal: set only by an earlier one.
            flag::register_conditional_shutdown(sig, 1, Arc::clone(&stopping))?;
            flag::register_usize(sig, Arc::clone(&which), sig as usize)?;
            flag::register(sig, Arc::clone(&stopping))?;
        }
        Ok(StopSignal { stopping, which })
    }

    /// The name of the signal that asked to stop, if one did.
    #[inline]
    pub fn requested(&self) -> Option<&'static str> {
        if !self.stopping.load(Ordering::Relaxed) {
            return None;
        }
        Some(match self.which.load(Ordering::Relaxed) as i32 {
            SIGTERM => "SIGTERM",
            _ => "SIGINT",
        })
    }
}
