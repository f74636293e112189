//! A bare epoll instance, written with libc directly as a C loop would, for
//! the latency baselines of `examples/latency_compare.rs` (included with
//! `#[path]`). Not part of the library: it calls libc with `unsafe`, as the
//! C loop it stands for does.

#![allow(dead_code)]

use std::io;
use std::os::fd::RawFd;

/// `epoll_create1`, `epoll_ctl(ADD)`, `epoll_wait`, nothing else.
pub struct LibcEpoll {
    fd: RawFd,
    events: Vec<libc::epoll_event>,
}

impl LibcEpoll {
    /// An epoll instance taking up to `max_events` events per wait.
    pub fn new(max_events: usize) -> io::Result<LibcEpoll> {
        // SAFETY: plain system call, no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LibcEpoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; max_events.max(1)],
        })
    }

    /// Adds `fd`, edge-triggered readable, with `token` as its data.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes `fd`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        if unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One `epoll_wait` (`timeout_ms` -1 blocks); the tokens of the ready
    /// descriptors. EINTR is reported as no events.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<impl Iterator<Item = u64> + '_> {
        // SAFETY: `events` has `len` writable elements.
        let n = unsafe {
            libc::epoll_wait(
                self.fd,
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms,
            )
        };
        let n = if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            0
        } else {
            n as usize
        };
        Ok(self.events[..n].iter().map(|e| e.u64))
    }
}

impl Drop for LibcEpoll {
    fn drop(&mut self) {
        // SAFETY: `fd` is owned by this struct and closed once.
        unsafe { libc::close(self.fd) };
    }
}
