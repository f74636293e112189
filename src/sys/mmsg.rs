//! `recvmmsg` / `sendmmsg` plumbing: header, iovec, address and control
//! arrays allocated once and re-primed before every call.

use std::io;
use std::mem::size_of;
use std::net::SocketAddrV4;
use std::os::fd::RawFd;

use super::{from_sockaddr_in, sockaddr_in, syscall, CMSG_ALIGN};

/// Control buffers are carved out of `u64`s so every slot is aligned for
/// `cmsghdr`.
type CmsgWord = u64;
const _: () = assert!(size_of::<CmsgWord>().is_multiple_of(CMSG_ALIGN));

fn words_for(bytes: usize) -> usize {
    bytes.div_ceil(size_of::<CmsgWord>())
}

fn as_bytes(words: &[CmsgWord]) -> &[u8] {
    // SAFETY: u64 has no padding and every byte of it is initialised; u8 has
    // alignment 1, and the length covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), std::mem::size_of_val(words)) }
}

fn as_bytes_mut(words: &mut [CmsgWord]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; any byte pattern is a valid u64.
    unsafe {
        std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), std::mem::size_of_val(words))
    }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct; all-zero bytes (null pointers,
    // zero lengths) are a valid value.
    unsafe { std::mem::zeroed() }
}

fn zeroed_sockaddr_in() -> libc::sockaddr_in {
    // SAFETY: as above.
    unsafe { std::mem::zeroed() }
}

/// Receive slots for `recvmmsg`: `count` payload buffers of `payload_size`
/// bytes, optional source-address storage and `control_size` bytes of aligned
/// control buffer per slot. Nothing is allocated after construction.
pub(crate) struct RecvSlots {
    hdrs: Vec<libc::mmsghdr>,
    // The vectors below are only reached through the raw pointers in `hdrs`
    // while a call is in progress; they are never resized after `new`.
    _iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    payload: Vec<u8>,
    control: Vec<CmsgWord>,
    payload_size: usize,
    control_size: usize,
    want_name: bool,
}

// SAFETY: the raw pointers in `hdrs` and `_iovs` point only into heap memory
// owned by this same struct, which moves with it between threads; nothing is
// shared with another owner.
unsafe impl Send for RecvSlots {}

impl RecvSlots {
    /// `control_size` is rounded up to a multiple of `CMSG_ALIGN`.
    pub(crate) fn new(
        count: usize,
        payload_size: usize,
        want_name: bool,
        control_size: usize,
    ) -> RecvSlots {
        let count = count.max(1);
        let control_size = words_for(control_size) * size_of::<CmsgWord>();
        let mut payload = vec![0u8; count * payload_size];
        let mut names = vec![zeroed_sockaddr_in(); count];
        let mut control = vec![0 as CmsgWord; count * control_size / size_of::<CmsgWord>()];
        let mut iovs = Vec::with_capacity(count);
        let mut hdrs = Vec::with_capacity(count);
        let payload_base = payload.as_mut_ptr();
        let control_base = as_bytes_mut(&mut control).as_mut_ptr();
        for i in 0..count {
            iovs.push(libc::iovec {
                // SAFETY: i * payload_size is within the allocation (or 0 for
                // an empty one).
                iov_base: unsafe { payload_base.add(i * payload_size) }.cast(),
                iov_len: payload_size,
            });
        }
        for i in 0..count {
            let mut h = zeroed_mmsghdr();
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            if want_name {
                h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
            }
            if control_size > 0 {
                // SAFETY: i * control_size is within the control allocation.
                h.msg_hdr.msg_control = unsafe { control_base.add(i * control_size) }.cast();
            }
            hdrs.push(h);
        }
        RecvSlots {
            hdrs,
            _iovs: iovs,
            names,
            payload,
            control,
            payload_size,
            control_size,
            want_name,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    pub(crate) fn control_size(&self) -> usize {
        self.control_size
    }

    /// Re-primes every in/out length and calls `recvmmsg` for up to
    /// `max` slots (non-blocking with `MSG_DONTWAIT` in `flags`).
    pub(crate) fn recv(&mut self, fd: RawFd, max: usize, flags: libc::c_int) -> io::Result<usize> {
        let max = max.min(self.hdrs.len());
        let namelen = if self.want_name {
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        } else {
            0
        };
        for h in &mut self.hdrs[..max] {
            h.msg_len = 0;
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_controllen = self.control_size as _;
            h.msg_hdr.msg_flags = 0;
        }
        let n = syscall!(recvmmsg(
            fd,
            self.hdrs.as_mut_ptr(),
            max as libc::c_uint,
            flags,
            std::ptr::null_mut(),
        ))?;
        Ok(n as usize)
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
    pub(crate) fn new(count: usize, control_size: usize) -> SendSlots {
        let count = count.max(1);
        let control_size = words_for(control_size) * size_of::<CmsgWord>();
        SendSlots {
            hdrs: vec![zeroed_mmsghdr(); count],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                count
            ],
            names: vec![zeroed_sockaddr_in(); count],
            control: vec![0; count * control_size / size_of::<CmsgWord>()],
            control_size,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Sends `count` messages; `fill(i, control)` returns message `i`'s
    /// payload, destination and the number of control bytes it wrote into
    /// `control` (aligned, `control_size` long). Returns how many were sent;
    /// an error only when none was.
    pub(crate) fn send<'a>(
        &mut self,
        fd: RawFd,
        count: usize,
        flags: libc::c_int,
        mut fill: impl FnMut(usize, &mut [u8]) -> (&'a [u8], Option<SocketAddrV4>, usize),
    ) -> io::Result<usize> {
        let count = count.min(self.hdrs.len());
        let control_size = self.control_size;
        for i in 0..count {
            let cstart = i * control_size;
            let ctl = &mut as_bytes_mut(&mut self.control)[cstart..cstart + control_size];
            let (payload, dst, clen) = fill(i, ctl);
            let clen = clen.min(control_size);
            let ctl_ptr = ctl.as_mut_ptr();
            self.iovs[i] = libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            };
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            match dst {
                Some(dst) => {
                    self.names[i] = sockaddr_in(dst);
                    h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
                    h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                }
                None => {
                    h.msg_hdr.msg_name = std::ptr::null_mut();
                    h.msg_hdr.msg_namelen = 0;
                }
            }
            if clen > 0 {
                h.msg_hdr.msg_control = ctl_ptr.cast();
                h.msg_hdr.msg_controllen = clen as _;
            } else {
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
            }
            h.msg_hdr.msg_flags = 0;
        }
        let n = syscall!(sendmmsg(
            fd,
            self.hdrs.as_mut_ptr(),
            count as libc::c_uint,
            flags
        ));
        // The payload pointers borrowed from the caller must not outlive
        // this call.
        for iov in &mut self.iovs[..count] {
            iov.iov_base = std::ptr::null_mut();
            iov.iov_len = 0;
        }
        n.map(|n| n as usize)
    }
}
