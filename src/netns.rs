//! Creating sockets inside a network namespace.
//!
//! A socket belongs to the network namespace it was created in, whichever
//! thread uses it later. [`in_namespace`] runs a closure on a short-lived
//! thread that has entered a namespace (one made by `ip netns add NAME`, or
//! any `/proc/PID/ns/net` path), so that the sockets it creates live there:
//! a feed handler can own sockets in several namespaces from one reactor.
//! Entering a namespace needs CAP_SYS_ADMIN.
//!
//! ```no_run
//! use ipv4_reactor::{netns, Interface, PacketConn};
//! // sudo ip netns add feed-a
//! let rx = netns::in_namespace("feed-a", || {
//!     PacketConn::multicast_receiver("239.1.1.1:5000".parse().unwrap(), Interface::name("eth1")).build()
//! })??;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;

use crate::error::Error;
use crate::sys;

/// The file that stands for a namespace: a name made by `ip netns add`
/// (`/run/netns/NAME`), or a path as given.
fn namespace_path(ns: &str) -> PathBuf {
    if ns.contains('/') {
        PathBuf::from(ns)
    } else {
        PathBuf::from("/run/netns").join(ns)
    }
}

/// Runs `f` on a new thread inside network namespace `ns` and returns its
/// result. Sockets `f` creates stay in that namespace.
///
/// Errors: the namespace does not exist (the error names it), or the
/// process may not enter it (CAP_SYS_ADMIN). A panic in `f` is resumed on
/// the calling thread.
pub fn in_namespace<F, R>(ns: &str, f: F) -> io::Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let path = namespace_path(ns);
    let file = File::open(&path).map_err(|e| {
        Error::os(
            format!("opening network namespace {ns:?} ({})", path.display()),
            e,
        )
    })?;
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || -> io::Result<R> {
            sys::setns_net(file.as_fd()).map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EPERM) {
                    " (needs CAP_SYS_ADMIN)"
                } else {
                    ""
                };
                Error::os(format!("entering network namespace {ns:?}{hint}"), e)
            })?;
            Ok(f())
        });
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
