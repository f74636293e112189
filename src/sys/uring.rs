//! io_uring for the reactor's io_uring backend: one ring, provided buffer
//! rings (one per socket), multishot `recvmsg` and synchronous cancellation.
//!
//! Memory the kernel writes into (buffer rings and their buffers) is owned
//! by [`Ring`] and freed only after the request that could use it was
//! cancelled synchronously (`IORING_REGISTER_SYNC_CANCEL`) and the buffer
//! ring unregistered; dropping the ring cancels every request first.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{CancelBuilder, Fd, Timespec};
use io_uring::{cqueue, opcode, IoUring, Probe};

/// `struct io_uring_recvmsg_out` (`<linux/io_uring.h>`): the header the
/// kernel writes at the start of every buffer of a multishot `recvmsg`.
#[repr(C)]
#[derive(Clone, Copy)]
struct RecvMsgOutHdr {
    namelen: u32,
    controllen: u32,
    payloadlen: u32,
    flags: u32,
}

/// Bytes of the `io_uring_recvmsg_out` header at the start of each buffer.
pub(crate) const OUT_HEADER: usize = size_of::<RecvMsgOutHdr>();
/// Room for the source address in a buffer (`sockaddr_in`).
pub(crate) const NAME_LEN: usize = size_of::<libc::sockaddr_in>();
/// How long a cancellation may take before the memory is kept until the
/// ring is dropped instead of being freed.
const CANCEL_TIMEOUT_SECS: u64 = 1;

/// What the running kernel lacks, found by probing it.
#[derive(Debug)]
pub(crate) struct Unavailable {
    pub(crate) missing: String,
    pub(crate) source: Option<io::Error>,
}

fn unavailable(missing: impl Into<String>, source: Option<io::Error>) -> Unavailable {
    Unavailable {
        missing: missing.into(),
        source,
    }
}

/// One completion, copied out of the completion queue.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Completion {
    pub(crate) user_data: u64,
    pub(crate) result: i32,
    /// The buffer the kernel filled, if any.
    pub(crate) buffer: Option<u16>,
    /// `IORING_CQE_F_MORE`: the multishot request goes on.
    pub(crate) more: bool,
}

/// One received message as laid out in a provided buffer.
pub(crate) struct RecvOut<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) control: &'a [u8],
    pub(crate) payload: &'a [u8],
    /// `msg_flags` (MSG_TRUNC, MSG_CTRUNC).
    pub(crate) flags: i32,
    /// The datagram's full length (more than `payload.len()` when cut).
    pub(crate) payload_len: usize,
}

/// Anonymous, page-aligned, zero-filled memory (zero-filled also keeps
/// memory checkers from calling the kernel's writes uninitialised).
struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory owned by this value alone.
unsafe impl Send for Region {}

impl Region {
    fn new(len: usize) -> io::Result<Region> {
        let len = len.max(1);
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Region { ptr, len })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing borrows
        // the region any more (its owner is being dropped).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// `struct io_uring_buf`: one entry of a buffer ring.
#[repr(C)]
struct BufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    /// In entry 0 only: the ring's tail.
    resv: u16,
}

/// A provided buffer ring and its buffers.
struct BufRing {
    entries: u16,
    tail: u16,
    buf_size: usize,
    /// The msghdr of the request reading into this ring (only the name and
    /// control lengths matter); kept until the next arm.
    msghdr: Box<libc::msghdr>,
    // Declared last: freed after the fields above.
    ring: Region,
    bufs: Region,
}

// SAFETY: the msghdr's pointers are null (only its lengths are used) and
// the regions are owned memory: nothing in a BufRing is tied to a thread.
unsafe impl Send for BufRing {}

impl BufRing {
    fn new(entries: u16, buf_size: usize) -> io::Result<BufRing> {
        debug_assert!(entries.is_power_of_two());
        let ring = Region::new(usize::from(entries) * size_of::<BufEntry>())?;
        let total = usize::from(entries)
            .checked_mul(buf_size)
            .ok_or_else(|| io::Error::other("buffer ring too large"))?;
        let bufs = Region::new(total)?;
        // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
        let msghdr = Box::new(unsafe { std::mem::zeroed::<libc::msghdr>() });
        let mut r = BufRing {
            entries,
            tail: 0,
            buf_size,
            msghdr,
            ring,
            bufs,
        };
        for bid in 0..entries {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    fn addr(&self) -> u64 {
        self.ring.ptr.as_ptr() as u64
    }

    /// Writes buffer `bid` at the local tail (published by [`publish`](Self::publish)).
    fn push(&mut self, bid: u16) {
        let mask = self.entries - 1;
        let idx = usize::from(self.tail & mask);
        let bid = bid & mask;
        // SAFETY: idx < entries, so the entry lies inside the ring region;
        // the kernel reads entries only between the published head and tail,
        // and this one is past the published tail. Fields are written one by
        // one (never `resv`, which is the tail in entry 0).
        unsafe {
            let e = self.ring.ptr.as_ptr().cast::<BufEntry>().add(idx);
            let buf = self.bufs.ptr.as_ptr().add(usize::from(bid) * self.buf_size);
            std::ptr::addr_of_mut!((*e).addr).write(buf as u64);
            std::ptr::addr_of_mut!((*e).len).write(self.buf_size as u32);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers pushed so far visible to the kernel.
    fn publish(&mut self) {
        // SAFETY: the tail is the u16 at offset 14 of entry 0, inside the
        // ring region and 2-aligned (the region is page-aligned); the kernel
        // reads it with an acquire load, hence the release store.
        unsafe {
            let tail = self.ring.ptr.as_ptr().add(14).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid & (self.entries - 1));
        let len = len.min(self.buf_size);
        // SAFETY: the slice lies inside buffer `bid`; the kernel handed this
        // buffer over in a completion and writes it again only after it is
        // pushed back, which needs `&mut self` (so this borrow has ended).
        unsafe { std::slice::from_raw_parts(self.bufs.ptr.as_ptr().add(bid * self.buf_size), len) }
    }
}

/// The ring: submission and completion queues, and the buffer rings,
/// indexed by buffer group id.
pub(crate) struct Ring {
    // Declared first: the ring is closed before any memory below is freed.
    ring: IoUring,
    /// Signalled by the kernel when completions or deferred work wait:
    /// what the reactor's epoll watches.
    eventfd: std::os::fd::OwnedFd,
    /// The thread that enabled the ring, the only one that may use it
    /// (`IORING_SETUP_SINGLE_ISSUER`); none before the first turn.
    owner: Option<std::thread::ThreadId>,
    groups: Vec<Option<BufRing>>,
    /// Buffer rings whose cancellation did not finish in time: kept until
    /// the ring is dropped.
    leaked: Vec<BufRing>,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Cancel every request and wait for them: no request may be left
        // that could write into the buffers freed after this.
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(Some(Timespec::new().sec(1)), CancelBuilder::any());
    }
}

impl Ring {
    /// Sets up a ring with room for `cq_entries` completions, after
    /// probing, on a ring of its own, what the backend needs:
    /// `IORING_OP_RECVMSG`, provided buffer rings, multishot `recvmsg` with
    /// buffer select, and synchronous cancellation.
    ///
    /// The ring defers the kernel's work to the thread that turns it
    /// (`SINGLE_ISSUER | DEFER_TASKRUN`): a completion never interrupts
    /// that thread (no `EINTR` in its other system calls, nor in an outer
    /// loop it is nested in); the work runs when [`pump`](Self::pump) sees
    /// the flag the kernel raises in shared memory. It starts disabled
    /// (`R_DISABLED`) and is enabled by the first [`enable`](Self::enable),
    /// on the thread that will use it.
    pub(crate) fn new(sq_entries: u32, cq_entries: u32) -> Result<Ring, Unavailable> {
        let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        let setup_error = move |e: io::Error| {
            let why = match (e.raw_os_error(), disabled) {
                (Some(libc::ENOSYS), _) => "io_uring: the kernel has no io_uring".to_string(),
                (Some(libc::EPERM), Some(d)) if d > 0 => format!(
                    "io_uring: disabled by the sysctl kernel.io_uring_disabled = {d}"
                ),
                (Some(libc::EPERM), _) => {
                    "io_uring: io_uring_setup is not permitted (a seccomp filter or a security module refuses it)".to_string()
                }
                _ => "io_uring: io_uring_setup failed".to_string(),
            };
            unavailable(why, Some(e))
        };
        // The probe runs on a thread of its own: its ring has no deferred
        // task work, and the work the kernel queues for it (completions,
        // the ring's teardown) would interrupt this thread's next blocking
        // system call (EINTR) if it were queued here.
        std::thread::Builder::new()
            .name("io_uring probe".into())
            .spawn(move || -> Result<(), Unavailable> {
                let probe_ring = IoUring::builder().build(8).map_err(setup_error)?;
                let mut probe = Ring {
                    ring: probe_ring,
                    eventfd: new_eventfd().map_err(|e| unavailable("an eventfd", Some(e)))?,
                    owner: Some(std::thread::current().id()),
                    groups: Vec::new(),
                    leaked: Vec::new(),
                };
                probe.probe()
            })
            .map_err(|e| unavailable("a thread to probe io_uring on", Some(e)))?
            .join()
            .map_err(|_| unavailable("io_uring: the probe thread panicked", None))??;
        let ring = IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_clamp()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_r_disabled()
            .build(sq_entries)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => unavailable(
                    "io_uring: the setup flags SINGLE_ISSUER and DEFER_TASKRUN (Linux 6.1)",
                    Some(e),
                ),
                _ => setup_error(e),
            })?;
        let eventfd = new_eventfd().map_err(|e| unavailable("an eventfd", Some(e)))?;
        ring.submitter()
            .register_eventfd(eventfd.as_raw_fd())
            .map_err(|e| unavailable("io_uring: IORING_REGISTER_EVENTFD", Some(e)))?;
        Ok(Ring {
            ring,
            eventfd,
            owner: None,
            groups: Vec::new(),
            leaked: Vec::new(),
        })
    }

    /// Whether [`enable`](Self::enable) was called.
    pub(crate) fn is_enabled(&self) -> bool {
        self.owner.is_some()
    }

    /// Enables the ring for the calling thread, the only one that may
    /// submit to it and run its work from now on; an error naming both
    /// threads when another thread enabled it.
    pub(crate) fn enable(&mut self) -> io::Result<()> {
        let me = std::thread::current().id();
        match self.owner {
            Some(owner) if owner == me => Ok(()),
            Some(owner) => Err(io::Error::other(format!(
                "the io_uring backend serves its reactor from one thread, the one that turned it first ({owner:?}), not from {me:?}"
            ))),
            None => {
                self.ring.submitter().register_enable_rings()?;
                self.owner = Some(me);
                Ok(())
            }
        }
    }

    fn probe(&mut self) -> Result<(), Unavailable> {
        let mut probe = Probe::new();
        self.ring
            .submitter()
            .register_probe(&mut probe)
            .map_err(|e| {
                unavailable(
                    "io_uring: the opcode probe (IORING_REGISTER_PROBE)",
                    Some(e),
                )
            })?;
        if !probe.is_supported(opcode::RecvMsg::CODE) {
            return Err(unavailable("io_uring: the opcode IORING_OP_RECVMSG", None));
        }
        // Synchronous cancellation (6.0): a user_data nobody used is "not found".
        match self
            .ring
            .submitter()
            .register_sync_cancel(None, CancelBuilder::user_data(u64::MAX))
        {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Ok(()) => {}
            Err(e) => {
                return Err(unavailable(
                    "io_uring: synchronous cancellation (IORING_REGISTER_SYNC_CANCEL, Linux 6.0)",
                    Some(e),
                ))
            }
        }
        // Provided buffer rings (5.19) and multishot recvmsg (6.0), tried
        // on a UDP socket of our own that nobody sends to.
        let bgid = self.add_group(1, OUT_HEADER + 64).map_err(|e| {
            unavailable(
                "io_uring: provided buffer rings (IORING_REGISTER_PBUF_RING, Linux 5.19)",
                Some(e),
            )
        })?;
        let result = self.probe_multishot(bgid);
        self.remove_group(bgid, None);
        result
    }

    fn probe_multishot(&mut self, bgid: u16) -> Result<(), Unavailable> {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0")
            .map_err(|e| unavailable("a UDP socket on 127.0.0.1 to probe io_uring", Some(e)))?;
        const PROBE: u64 = u64::MAX - 1;
        self.arm(bgid, sock.as_raw_fd(), PROBE, 0, 0)
            .map_err(|e| unavailable("io_uring: submitting a multishot recvmsg", Some(e)))?;
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(None, CancelBuilder::user_data(PROBE));
        let mut refused = None;
        self.reap(usize::MAX, |c| {
            if c.user_data == PROBE && c.result < 0 && c.result != -libc::ECANCELED {
                refused = Some(-c.result);
            }
        });
        match refused {
            Some(errno) => Err(unavailable(
                "io_uring: multishot recvmsg with buffer select (IORING_RECV_MULTISHOT, Linux 6.0)",
                Some(io::Error::from_raw_os_error(errno)),
            )),
            None => Ok(()),
        }
    }

    /// The descriptor to poll: readable when completions or deferred work
    /// wait (an eventfd the kernel signals).
    pub(crate) fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// A buffer ring of `entries` (a power of two) buffers of `buf_size`
    /// bytes, all handed to the kernel; returns its buffer group id.
    pub(crate) fn add_group(&mut self, entries: u16, buf_size: usize) -> io::Result<u16> {
        let slot = match self.groups.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.groups.push(None);
                self.groups.len() - 1
            }
        };
        let bgid = u16::try_from(slot)
            .map_err(|_| io::Error::other("io_uring: every buffer group id (65536) is in use"))?;
        let group = BufRing::new(entries, buf_size)?;
        // SAFETY: the ring region holds `entries` entries and stays mapped
        // until the group is unregistered (remove_group) or the ring is
        // closed (Ring's field order: `ring` drops before `groups`).
        unsafe {
            self.ring
                .submitter()
                .register_buf_ring_with_flags(group.addr(), entries, bgid, 0)?;
        }
        self.groups[slot] = Some(group);
        Ok(bgid)
    }

    /// Cancels the request `user_data` (if given) synchronously, then
    /// unregisters and frees buffer group `bgid`.
    pub(crate) fn remove_group(&mut self, bgid: u16, user_data: Option<u64>) {
        let mut done = true;
        if let Some(ud) = user_data {
            done = self.cancel(ud);
        }
        let Some(group) = self
            .groups
            .get_mut(usize::from(bgid))
            .and_then(Option::take)
        else {
            return;
        };
        let _ = self.ring.submitter().unregister_buf_ring(bgid);
        if !done {
            self.leaked.push(group);
        }
    }

    /// Cancels request `user_data` and waits for it to end; false when it
    /// did not end in time.
    fn cancel(&mut self, user_data: u64) -> bool {
        match self.ring.submitter().register_sync_cancel(
            Some(Timespec::new().sec(CANCEL_TIMEOUT_SECS)),
            CancelBuilder::user_data(user_data),
        ) {
            Ok(()) => true,
            Err(e) => e.raw_os_error() == Some(libc::ENOENT),
        }
    }

    /// Arms a multishot `recvmsg` on `fd` reading into group `bgid`, with
    /// `name_len` bytes for the source address and `control_len` for
    /// control messages in each buffer; submits it.
    pub(crate) fn arm(
        &mut self,
        bgid: u16,
        fd: RawFd,
        user_data: u64,
        name_len: usize,
        control_len: usize,
    ) -> io::Result<()> {
        let group = self
            .groups
            .get_mut(usize::from(bgid))
            .and_then(Option::as_mut)
            .ok_or_else(|| io::Error::other("io_uring: no such buffer group"))?;
        group.msghdr.msg_namelen = name_len as libc::socklen_t;
        group.msghdr.msg_controllen = control_len as _;
        let msg: *const libc::msghdr = &*group.msghdr;
        let sqe = opcode::RecvMsgMulti::new(Fd(fd), msg, bgid)
            .build()
            .user_data(user_data);
        // SAFETY: the msghdr lives in the group's box, which outlives the
        // submission below (the kernel copies it when the request is
        // submitted); the buffers it selects are the group's.
        unsafe {
            let mut sq = self.ring.submission();
            if sq.push(&sqe).is_err() {
                drop(sq);
                self.ring.submit()?;
                self.ring
                    .submission()
                    .push(&sqe)
                    .map_err(|_| io::Error::other("io_uring: submission queue full"))?;
            }
        }
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs the kernel's pending work when the ring says some waits (task
    /// work, or completions that overflowed), without a system call
    /// otherwise. Returns whether completions may be waiting (false: the
    /// queue is empty and no work waits).
    pub(crate) fn pump(&mut self) -> io::Result<bool> {
        let sq = self.ring.submission();
        let wanted = sq.taskrun() || sq.cq_overflow();
        drop(sq);
        if wanted {
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    return Err(io::Error::other(format!(
                        "the io_uring backend serves its reactor from one thread, the one that turned it first ({:?}), not from {:?}",
                        self.owner,
                        std::thread::current().id()
                    )))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(wanted || !self.ring.completion().is_empty())
    }

    /// Whether completions wait in the queue, or work that posts them.
    pub(crate) fn has_work(&mut self) -> bool {
        if !self.ring.completion().is_empty() {
            return true;
        }
        let sq = self.ring.submission();
        sq.taskrun() || sq.cq_overflow()
    }

    /// Takes at most `max` completions out of the queue, in order.
    pub(crate) fn reap(&mut self, max: usize, mut f: impl FnMut(Completion)) -> usize {
        let mut n = 0;
        let cq = self.ring.completion();
        for cqe in cq.take(max) {
            n += 1;
            let flags = cqe.flags();
            f(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                buffer: cqueue::buffer_select(flags),
                more: cqueue::more(flags),
            });
        }
        n
    }

    /// Parses buffer `bid` of group `bgid` holding `len` bytes, laid out
    /// with `name_len` and `control_len` as armed.
    pub(crate) fn message(
        &self,
        bgid: u16,
        bid: u16,
        len: usize,
        name_len: usize,
        control_len: usize,
    ) -> Option<RecvOut<'_>> {
        let group = self.groups.get(usize::from(bgid))?.as_ref()?;
        parse(group.buffer(bid, len), name_len, control_len)
    }

    /// Gives buffer `bid` back to group `bgid` (visible to the kernel after
    /// [`publish`](Self::publish)).
    pub(crate) fn recycle(&mut self, bgid: u16, bid: u16) {
        if let Some(Some(g)) = self.groups.get_mut(usize::from(bgid)) {
            g.push(bid);
        }
    }

    /// Publishes the buffers given back to group `bgid`.
    pub(crate) fn publish(&mut self, bgid: u16) {
        if let Some(Some(g)) = self.groups.get_mut(usize::from(bgid)) {
            g.publish();
        }
    }
}

fn new_eventfd() -> io::Result<std::os::fd::OwnedFd> {
    let fd = super::syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
    // SAFETY: eventfd returned a new descriptor that nothing else owns.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(w)
}

/// Splits a multishot `recvmsg` buffer: header, name field, control field,
/// payload (what follows, up to `buf.len()`).
fn parse(buf: &[u8], name_len: usize, control_len: usize) -> Option<RecvOut<'_>> {
    let start = OUT_HEADER + name_len + control_len;
    if buf.len() < start {
        return None;
    }
    let hdr = RecvMsgOutHdr {
        namelen: u32_at(buf, 0),
        controllen: u32_at(buf, 4),
        payloadlen: u32_at(buf, 8),
        flags: u32_at(buf, 12),
    };
    let name_end = OUT_HEADER + (hdr.namelen as usize).min(name_len);
    let control_start = OUT_HEADER + name_len;
    let control_end = control_start + (hdr.controllen as usize).min(control_len);
    let payload_len = hdr.payloadlen as usize;
    let payload = &buf[start..start + payload_len.min(buf.len() - start)];
    Some(RecvOut {
        name: &buf[OUT_HEADER..name_end],
        control: &buf[control_start..control_end],
        payload,
        flags: hdr.flags as i32,
        payload_len,
    })
}

/// The source address in a name field, if it holds an IPv4 one.
pub(crate) fn name_addr(name: &[u8]) -> Option<std::net::SocketAddrV4> {
    if name.len() < NAME_LEN {
        return None;
    }
    // SAFETY: `name` holds at least size_of::<sockaddr_in>() bytes;
    // read_unaligned copes with the buffer's alignment.
    let sa = unsafe { std::ptr::read_unaligned(name.as_ptr().cast::<libc::sockaddr_in>()) };
    if i32::from(sa.sin_family) != libc::AF_INET {
        return None;
    }
    Some(super::from_sockaddr_in(&sa))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_splits_the_fields() {
        let mut buf = vec![0u8; OUT_HEADER + 16 + 8 + 10];
        buf[0..4].copy_from_slice(&16u32.to_ne_bytes());
        buf[4..8].copy_from_slice(&4u32.to_ne_bytes());
        buf[8..12].copy_from_slice(&20u32.to_ne_bytes());
        buf[12..16].copy_from_slice(&(libc::MSG_TRUNC as u32).to_ne_bytes());
        let out = parse(&buf, 16, 8).unwrap();
        assert_eq!(out.name.len(), 16);
        assert_eq!(out.control.len(), 4);
        assert_eq!(out.payload.len(), 10);
        assert_eq!(out.payload_len, 20);
        assert_eq!(out.flags, libc::MSG_TRUNC);
        assert!(parse(&buf[..20], 16, 8).is_none());
    }
}
