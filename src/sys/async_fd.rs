//! Registering a socket with tokio's reactor: `AsyncFd::register` is an
//! `unsafe fn` (the descriptor must stay the same, open one for as long as
//! the `AsyncFd` owns it), so it lives here with the crate's other
//! `unsafe`.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::{unix::AsyncFd, Interest};

use crate::packet_conn::PacketConn;

/// Registers `conn` with the current tokio runtime's I/O driver, for
/// reading and writing. On failure the socket is dropped (closed) and the
/// error says why.
///
/// Tokio panics when called outside a runtime or on a runtime whose I/O
/// driver is off; the caller checks for a runtime first.
pub(crate) fn register(conn: PacketConn) -> io::Result<AsyncFd<PacketConn>> {
    // SAFETY: a `PacketConn` owns its descriptor (a `socket2::Socket`,
    // an `OwnedFd`) and never replaces or closes it while it lives:
    // `as_raw_fd` returns the same open descriptor until the `PacketConn`
    // is dropped, which happens only when the `AsyncFd` is dropped or
    // gives it back (`into_inner`). The `AsyncFd` is kept private by its
    // wrapper, which hands out `&PacketConn` only (no `&mut` that could
    // swap the socket out).
    let registered = unsafe { AsyncFd::register(conn) };
    registered.map_err(|e| e.into_parts().1)
}

/// Registers an owned descriptor (a duplicate of a reactor's epoll
/// descriptor, see `tokio::run_reactor`) with the current tokio runtime's
/// I/O driver, for reading. Same caveats as [`register`].
pub(crate) fn register_readable(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` owns its descriptor and never replaces or closes
    // it while it lives; the `AsyncFd` owns the `OwnedFd` and is kept
    // private by its caller, so the descriptor stays open and the same for
    // as long as it is registered.
    let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
    registered.map_err(|e| e.into_parts().1)
}
