//! `recvmmsg` / `sendmmsg` plumbing: header, iovec, address and control
//! arrays allocated once and re-primed before every call.
//!
//! Every size that reaches this module from a caller is checked here, before
//! anything is allocated: the lengths the headers promise the kernel
//! (`iov_len`, `msg_controllen`) are exactly the lengths of the slots carved
//! out of the allocations, and the arithmetic that computes them cannot
//! wrap (see [`check_sizes`]).

use std::io;
use std::mem::size_of;
use std::net::SocketAddrV4;
use std::os::fd::RawFd;

use super::cmsg::Encoder;
use super::{from_sockaddr_in, sockaddr_in, syscall, CMSG_ALIGN};

/// Control buffers are carved out of `u64`s so every slot is aligned for
/// `cmsghdr`.
type CmsgWord = u64;
const _: () = assert!(size_of::<CmsgWord>().is_multiple_of(CMSG_ALIGN));

/// The most slots one batch may have: the kernel handles at most
/// `UIO_MAXIOV` (1024) messages per `recvmmsg` / `sendmmsg` call.
pub(crate) const MAX_SLOTS: usize = 1024;
/// The largest payload buffer per slot: 64 KiB, what a UDP GRO buffer can
/// hold (a single IPv4 datagram is at most 65535 bytes with its header).
pub(crate) const MAX_PAYLOAD_SIZE: usize = 64 * 1024;
/// The largest control buffer per slot. Every control message this crate
/// asks for fits in a few hundred bytes (`ControlFlags::ALL.control_len()`).
pub(crate) const MAX_CONTROL_SIZE: usize = 4096;

/// The sizes of a set of slots, checked: `count` in `1..=MAX_SLOTS`,
/// `payload_size` in `min_payload..=MAX_PAYLOAD_SIZE`, `control_size` at most
/// `MAX_CONTROL_SIZE` (rounded up to whole `CmsgWord`s), and the totals
/// computed with checked arithmetic. `what` names the caller in errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) count: usize,
    /// Per slot, a multiple of `size_of::<CmsgWord>()`.
    pub(crate) control_size: usize,
    /// `count * payload_size`.
    pub(crate) payload_total: usize,
    /// `count * control_size / size_of::<CmsgWord>()`.
    pub(crate) control_words: usize,
}

/// Checks the sizes a caller asked for; the error names the bad input and
/// the allowed range.
pub(crate) fn check_sizes(
    what: &str,
    count: usize,
    payload_size: usize,
    min_payload: usize,
    control_size: usize,
) -> io::Result<Sizes> {
    if count == 0 || count > MAX_SLOTS {
        return Err(crate::error::invalid(format!(
            "{what}: {count} slots is out of range: 1 to {MAX_SLOTS} \
             (the kernel takes at most {MAX_SLOTS} messages per call)"
        )));
    }
    if payload_size < min_payload || payload_size > MAX_PAYLOAD_SIZE {
        return Err(crate::error::invalid(format!(
            "{what}: payload size {payload_size} bytes per slot is out of range: \
             {min_payload} to {MAX_PAYLOAD_SIZE} (a UDP GRO buffer is at most 64 KiB, \
             an IPv4 datagram at most 65535 bytes)"
        )));
    }
    if control_size > MAX_CONTROL_SIZE {
        return Err(crate::error::invalid(format!(
            "{what}: control buffer of {control_size} bytes per slot is out of range: \
             at most {MAX_CONTROL_SIZE} (every control message together needs {})",
            crate::control::ControlFlags::ALL.control_len()
        )));
    }
    let overflow = || {
        crate::error::invalid(format!(
            "{what}: {count} slots of {payload_size} payload and {control_size} control \
             bytes do not fit in memory"
        ))
    };
    let control_size = control_size
        .checked_next_multiple_of(size_of::<CmsgWord>())
        .ok_or_else(overflow)?;
    let payload_total = count.checked_mul(payload_size).ok_or_else(overflow)?;
    let control_bytes = count.checked_mul(control_size).ok_or_else(overflow)?;
    if payload_total > isize::MAX as usize || control_bytes > isize::MAX as usize {
        return Err(overflow());
    }
    Ok(Sizes {
        count,
        control_size,
        payload_total,
        control_words: control_bytes / size_of::<CmsgWord>(),
    })
}

fn as_bytes(words: &[CmsgWord]) -> &[u8] {
    // SAFETY: u64 has no padding and every byte of it is initialised; u8 has
    // alignment 1, and the length covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), std::mem::size_of_val(words)) }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct; all-zero bytes (null pointers,
    // zero lengths) are a valid value.
    unsafe { std::mem::zeroed() }
}

fn zeroed_sockaddr_in() -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is a plain C struct of integers; all-zero bytes
    // are a valid value.
    unsafe { std::mem::zeroed() }
}

const EMPTY_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// Receive slots for `recvmmsg`: `count` payload buffers of `payload_size`
/// bytes, optional source-address storage and `control_size` bytes of aligned
/// control buffer per slot. Nothing is allocated after construction.
pub(crate) struct RecvSlots {
    hdrs: Vec<libc::mmsghdr>,
    // The vectors below are only reached through the raw pointers in `hdrs`
    // while a call is in progress; they are never resized after `new`, so
    // those pointers stay valid as long as `self` lives.
    _iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    payload: Vec<u8>,
    control: Vec<CmsgWord>,
    payload_size: usize,
    control_size: usize,
    want_name: bool,
    /// Headers `[0, dirty)` may hold what the kernel wrote into their
    /// in/out lengths (name and control) since they were last primed; the
    /// others hold the primed lengths. The kernel writes only the headers
    /// of the datagrams it returns, so a call re-primes only those of the
    /// call before (none after a receive that found nothing).
    dirty: usize,
}

// SAFETY: the raw pointers in `hdrs` and `_iovs` point only into heap memory
// owned by this same struct, which moves with it between threads; nothing is
// shared with another owner.
unsafe impl Send for RecvSlots {}

impl RecvSlots {
    /// Checks the sizes (see [`check_sizes`]; `what` names the caller in
    /// errors) and allocates. `control_size` is rounded up to a multiple of
    /// `CMSG_ALIGN`.
    pub(crate) fn new(
        what: &str,
        count: usize,
        payload_size: usize,
        want_name: bool,
        control_size: usize,
    ) -> io::Result<RecvSlots> {
        let sizes = check_sizes(what, count, payload_size, 1, control_size)?;
        let count = sizes.count;
        let mut payload = vec![0u8; sizes.payload_total];
        let names = vec![zeroed_sockaddr_in(); count];
        let control = vec![0 as CmsgWord; sizes.control_words];
        let mut iovs = vec![EMPTY_IOVEC; count];
        let mut hdrs = vec![zeroed_mmsghdr(); count];
        // One base pointer per buffer, taken once (no reference to any
        // element is made afterwards, so every pointer stored below stays
        // valid while the vectors are neither dropped nor resized).
        let payload_base = payload.as_mut_ptr();
        let iovs_base = iovs.as_mut_ptr();
        for (i, h) in hdrs.iter_mut().enumerate() {
            // SAFETY: check_sizes computed payload_total = count *
            // payload_size without overflow, and `payload` was allocated
            // with exactly that length just above; `iovs` holds `count`
            // elements. With i < count, slot i's payload
            // [i * payload_size, (i + 1) * payload_size) lies inside the
            // allocation, so each `add` stays in bounds, and the length
            // promised to the kernel is exactly the slot's length.
            unsafe {
                let iov = iovs_base.add(i);
                iov.write(libc::iovec {
                    iov_base: payload_base.add(i * payload_size).cast(),
                    iov_len: payload_size,
                });
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
            }
        }
        let mut slots = RecvSlots {
            hdrs,
            _iovs: iovs,
            names,
            payload,
            control,
            payload_size,
            control_size: sizes.control_size,
            want_name,
            dirty: count,
        };
        slots.point_names_and_control();
        Ok(slots)
    }

    /// Points every header's name at its slot's address storage (or at
    /// nothing, without `want_name`) and its control buffer at its slot's
    /// `control_size` bytes (or at nothing, when 0).
    fn point_names_and_control(&mut self) {
        let (want_name, control_size) = (self.want_name, self.control_size);
        debug_assert_eq!(self.names.len(), self.hdrs.len());
        debug_assert_eq!(
            self.control.len() * size_of::<CmsgWord>(),
            self.hdrs.len() * control_size
        );
        // One base pointer per buffer, taken once, as in `new`.
        let names_base = self.names.as_mut_ptr();
        let control_base = self.control.as_mut_ptr().cast::<u8>();
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            // SAFETY: `names` holds one sockaddr_in per header, and
            // `control` holds hdrs.len() * control_size bytes (check_sizes
            // computed control_words without overflow, in `new` or
            // `reserve`, and the vector was allocated with that length);
            // with i < hdrs.len(), name i and control bytes
            // [i * control_size, (i + 1) * control_size) lie inside their
            // allocations. `recv` promises the kernel exactly those lengths.
            unsafe {
                h.msg_hdr.msg_name = if want_name {
                    names_base.add(i).cast()
                } else {
                    std::ptr::null_mut()
                };
                h.msg_hdr.msg_control = if control_size > 0 {
                    control_base.add(i * control_size).cast()
                } else {
                    std::ptr::null_mut()
                };
            }
        }
    }

    /// Makes the slots fit another set of control flags: source-address
    /// storage used or not as `want_name` says (it is always allocated),
    /// and control buffers of at least `control_size` bytes: reallocated
    /// when they are shorter, kept (never shrunk) when they are not. The
    /// slots' contents are lost, so call it between receives only.
    pub(crate) fn reserve(
        &mut self,
        what: &str,
        want_name: bool,
        control_size: usize,
    ) -> io::Result<()> {
        if control_size > self.control_size {
            let sizes = check_sizes(what, self.hdrs.len(), self.payload_size, 1, control_size)?;
            self.control = vec![0 as CmsgWord; sizes.control_words];
            self.control_size = sizes.control_size;
        }
        self.want_name = want_name;
        self.point_names_and_control();
        // Nothing was received into the new buffers: every slot reads empty
        // until the next `recv`.
        for h in &mut self.hdrs {
            h.msg_len = 0;
            h.msg_hdr.msg_namelen = 0;
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
        }
        self.dirty = self.hdrs.len();
        Ok(())
    }

    pub(crate) fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    pub(crate) fn control_size(&self) -> usize {
        self.control_size
    }

    /// Re-primes the in/out lengths the last call changed and calls
    /// `recvmmsg` for up to `max` slots (non-blocking with `MSG_DONTWAIT`
    /// in `flags`). Only the headers of the datagrams it returns are to be
    /// read afterwards. Nothing queued (`EAGAIN`) is `Ok(0)`, not an error:
    /// it is what most calls of a spinning reader find, and an `io::Error`
    /// made, matched on its kind and dropped costs more than the rest of
    /// the call's own work.
    pub(crate) fn recv(&mut self, fd: RawFd, max: usize, flags: libc::c_int) -> io::Result<usize> {
        let max = max.min(self.hdrs.len());
        let namelen = if self.want_name {
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        } else {
            0
        };
        for h in &mut self.hdrs[..self.dirty] {
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_controllen = self.control_size as _;
        }
        // The kernel writes through the pointers `new` stored: each iovec
        // covers its own payload_size-byte slot, each name a whole
        // sockaddr_in, each control pointer control_size bytes (only when
        // control_size > 0, else it is null with length 0): every header
        // promises those lengths, `[0, dirty)` primed just above, the rest
        // since they were last primed (nothing wrote them since). `max` is
        // at most the number of headers.
        let result = syscall!(recvmmsg(
            fd,
            self.hdrs.as_mut_ptr(),
            max as libc::c_uint,
            flags,
            std::ptr::null_mut(),
        ));
        match result {
            Ok(n) => {
                // The kernel wrote the headers of the n datagrams it read.
                self.dirty = n as usize;
                Ok(n as usize)
            }
            // Nothing queued: no header was written.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                self.dirty = 0;
                Ok(0)
            }
            Err(e) => {
                // After another failure, assume any header might have been
                // written.
                self.dirty = max;
                Err(e)
            }
        }
    }

    /// The payload bytes slot `i` received in the last `recv`.
    #[inline]
    pub(crate) fn payload(&self, i: usize) -> &[u8] {
        let start = i * self.payload_size;
        &self.payload[start..start + self.payload_len(i)]
    }

    /// How many payload bytes slot `i` received (at most the slot's size).
    #[inline]
    pub(crate) fn payload_len(&self, i: usize) -> usize {
        (self.hdrs[i].msg_len as usize).min(self.payload_size)
    }

    /// The control bytes the kernel wrote for slot `i`.
    #[inline]
    pub(crate) fn control(&self, i: usize) -> &[u8] {
        #[allow(clippy::unnecessary_cast)] // socklen_t on some C libraries
        let clen = (self.hdrs[i].msg_hdr.msg_controllen as usize).min(self.control_size);
        let start = i * self.control_size;
        &as_bytes(&self.control)[start..start + clen]
    }

    /// `msg_flags` of slot `i` (`MSG_TRUNC`, `MSG_CTRUNC`).
    #[inline]
    pub(crate) fn msg_flags(&self, i: usize) -> libc::c_int {
        self.hdrs[i].msg_hdr.msg_flags
    }

    /// The source address of slot `i`, when asked for and present.
    #[inline]
    pub(crate) fn src(&self, i: usize) -> Option<SocketAddrV4> {
        let h = &self.hdrs[i];
        (self.want_name
            && h.msg_hdr.msg_namelen as usize >= size_of::<libc::sockaddr_in>()
            && self.names[i].sin_family == libc::AF_INET as libc::sa_family_t)
            .then(|| from_sockaddr_in(&self.names[i]))
    }
}

/// Send slots for `sendmmsg`: header, iovec, address and aligned control
/// storage for `count` messages, allocated once.
pub(crate) struct SendSlots {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    control: Vec<CmsgWord>,
    control_size: usize,
}

// SAFETY: the raw pointers in `hdrs` point into this struct's own heap
// storage, or into caller buffers only for the duration of `send`.
unsafe impl Send for SendSlots {}

impl SendSlots {
    /// Checks the sizes (see [`check_sizes`]; `what` names the caller in
    /// errors) and allocates.
    pub(crate) fn new(what: &str, count: usize, control_size: usize) -> io::Result<SendSlots> {
        let sizes = check_sizes(what, count, 0, 0, control_size)?;
        Ok(SendSlots {
            hdrs: vec![zeroed_mmsghdr(); sizes.count],
            iovs: vec![EMPTY_IOVEC; sizes.count],
            names: vec![zeroed_sockaddr_in(); sizes.count],
            control: vec![0; sizes.control_words],
            control_size: sizes.control_size,
        })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Sends up to `count` messages; `fill(i, encoder)` returns message
    /// `i`'s payload and destination after writing its control messages
    /// with `encoder` (over the slot's own `control_size` bytes). Returns
    /// how many were sent; an error only when none was. When `fill` fails
    /// for message `i`, the messages before it are sent (and counted) and
    /// its error comes back only if `i` is the first.
    pub(crate) fn send<'a>(
        &mut self,
        fd: RawFd,
        count: usize,
        flags: libc::c_int,
        mut fill: impl FnMut(usize, &mut Encoder<'_>) -> io::Result<(&'a [u8], Option<SocketAddrV4>)>,
    ) -> io::Result<usize> {
        let mut count = count.min(self.hdrs.len());
        let control_size = self.control_size;
        // One base pointer per buffer, taken once: no reference to an element
        // is made while the headers hold pointers to the others.
        let iovs_base = self.iovs.as_mut_ptr();
        let names_base = self.names.as_mut_ptr();
        let control_base = self.control.as_mut_ptr().cast::<u8>();
        let hdrs_base = self.hdrs.as_mut_ptr();
        for i in 0..count {
            // SAFETY: `new` allocated `hdrs`, `iovs` and `names` with the
            // same number of elements and `control` with hdrs.len() *
            // control_size bytes (computed without overflow by check_sizes);
            // i < count <= hdrs.len(), so element i of each array and control
            // bytes [i * control_size, (i + 1) * control_size) are inside
            // their allocations, disjoint from every other slot. Slot i's
            // control bytes start at a multiple of control_size (itself a
            // multiple of CMSG_ALIGN) in u64-aligned storage, as the encoder
            // needs; the encoder, and the slice it holds, end in `finish`,
            // which stores the pointer derived from them.
            unsafe {
                let ctl = std::slice::from_raw_parts_mut(
                    control_base.add(i * control_size),
                    control_size,
                );
                let mut encoder = Encoder::over_slot(ctl);
                let (payload, dst) = match fill(i, &mut encoder) {
                    Ok(v) => v,
                    Err(e) if i == 0 => return Err(e),
                    Err(_) => {
                        // Send the messages before it; the caller's next
                        // call starts at this one and gets its error.
                        count = i;
                        break;
                    }
                };
                let iov = iovs_base.add(i);
                iov.write(libc::iovec {
                    iov_base: payload.as_ptr() as *mut libc::c_void,
                    iov_len: payload.len(),
                });
                let h = &mut *hdrs_base.add(i);
                h.msg_len = 0;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                match dst {
                    Some(dst) => {
                        let name = names_base.add(i);
                        name.write(sockaddr_in(dst));
                        h.msg_hdr.msg_name = name.cast();
                        h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                    }
                    None => {
                        h.msg_hdr.msg_name = std::ptr::null_mut();
                        h.msg_hdr.msg_namelen = 0;
                    }
                }
                // The encoder sets msg_control and msg_controllen to what
                // it wrote, none when nothing.
                encoder.finish(&mut h.msg_hdr);
                h.msg_hdr.msg_flags = 0;
            }
        }
        // Headers 0..count point at their own iovec, name and control slot
        // (set above) and at payloads borrowed from the caller for this call.
        let n = syscall!(sendmmsg(fd, hdrs_base, count as libc::c_uint, flags));
        // The payload pointers borrowed from the caller must not outlive
        // this call.
        for iov in &mut self.iovs[..count] {
            iov.iov_base = std::ptr::null_mut();
            iov.iov_len = 0;
        }
        n.map(|n| n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn control_that_does_not_fit_is_an_error_and_stops_the_batch_before_it() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let dst = match rx.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("not IPv4: {other}"),
        };
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Slots of one IP_TTL message (24 bytes on 64-bit Linux).
        let mut slots = SendSlots::new("test", 4, super::super::cmsg::INT_SPACE).unwrap();
        let payloads = [[0u8; 4], [1; 4], [2; 4], [3; 4]];
        let fill = |i: usize, enc: &mut Encoder<'_>| {
            enc.ip_ttl(9)?;
            if i == 2 {
                // A second message has no room left in the slot.
                enc.ip_tos(0x28)?;
            }
            Ok((&payloads[i][..], Some(dst)))
        };
        // Messages 0 and 1 go out; message 2 does not fit and stops the batch.
        assert_eq!(slots.send(tx.as_raw_fd(), 4, 0, fill).unwrap(), 2);
        let mut buf = [0u8; 16];
        for want in 0..2u8 {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[want; 4]);
        }
        // Starting at the refused message: the error comes back, nothing is sent.
        let e = slots
            .send(tx.as_raw_fd(), 2, 0, |i, enc| fill(i + 2, enc))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("does not fit"), "{e}");
        rx.set_nonblocking(true).unwrap();
        assert_eq!(
            rx.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "nothing was sent with a half-built control buffer"
        );
    }
}
