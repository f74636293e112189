//! A plain libc `recvmmsg` loop, written the way a C programmer would, for
//! the benchmarks to compare the crate against (included with `#[path]` by
//! benches/drain.rs, examples/drain_compare.rs, examples/libc_dump.rs and
//! the tests that check it). Not part of the library: it calls libc
//! directly, with `unsafe`, as the C loop it stands for does.

// Each includer uses a different part.
#![allow(dead_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;

/// What the baseline decodes per packet.
#[derive(Debug, Clone, Copy, Default)]
pub struct BaselineMeta {
    /// `IP_TTL`, or -1.
    pub ttl: i32,
    /// `IP_PKTINFO` `ipi_addr` (network order), or 0.
    pub dst: u32,
    /// `IP_PKTINFO` `ipi_ifindex`, or 0.
    pub ifindex: i32,
    /// `SO_RXQ_OVFL`, or 0.
    pub drops: u32,
    /// `SO_TIMESTAMPNS`, nanoseconds since the Unix epoch, or 0.
    pub ts_ns: u64,
    /// `msg_flags`.
    pub msg_flags: i32,
}

/// A C-style `recvmmsg` loop: arrays allocated once, `CMSG_FIRSTHDR` /
/// `CMSG_NXTHDR` to walk control data, each `cmsg_len` checked against the
/// buffer and against `CMSG_LEN` of the value before it is read (a message
/// cut by `MSG_CTRUNC` is skipped; the flag is in `msg_flags`).
pub struct LibcDrain {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    bufs: Vec<u8>,
    ctrl: Vec<u64>,
    names: Vec<libc::sockaddr_in>,
    payload: usize,
    ctrl_len: usize,
    want_name: bool,
}

impl std::fmt::Debug for LibcDrain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibcDrain")
            .field("slots", &self.hdrs.len())
            .finish()
    }
}

// SAFETY: the raw pointers point into this struct's own heap buffers.
unsafe impl Send for LibcDrain {}

impl LibcDrain {
    /// `slots` messages of `payload` bytes, `ctrl_len` control bytes each.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for sizes outside those of
    /// `RecvBatch::with_control_len`: 1 to 1024 slots, 1 to 65536 payload
    /// bytes, at most 4096 control bytes.
    pub fn new(
        slots: usize,
        payload: usize,
        ctrl_len: usize,
        want_name: bool,
    ) -> io::Result<LibcDrain> {
        if !(1..=1024).contains(&slots) || !(1..=65536).contains(&payload) || ctrl_len > 4096 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "LibcDrain::new: slots {slots}, payload size {payload} bytes, control {ctrl_len} bytes: \
                     1 to 1024 slots, 1 to 65536 payload bytes, at most 4096 control bytes"
                ),
            ));
        }
        // Control slots rounded up to whole u64 words, so each is aligned
        // for cmsghdr; the sizes above keep every product far from overflow.
        let ctrl_len = ctrl_len.div_ceil(8) * 8;
        let mut d = LibcDrain {
            // SAFETY: mmsghdr is a plain C struct; all-zero bytes are valid.
            hdrs: vec![unsafe { std::mem::zeroed() }; slots],
            iovs: Vec::with_capacity(slots),
            bufs: vec![0; slots * payload],
            ctrl: vec![0; slots * ctrl_len / 8],
            // SAFETY: sockaddr_in is a plain C struct; all-zero bytes are valid.
            names: vec![unsafe { std::mem::zeroed() }; slots],
            payload,
            ctrl_len,
            want_name,
        };
        let bufs_base = d.bufs.as_mut_ptr();
        for i in 0..slots {
            d.iovs.push(libc::iovec {
                // SAFETY: `bufs` has slots * payload bytes (small bounded
                // factors, no overflow); with i < slots,
                // [i * payload, (i + 1) * payload) is inside it.
                iov_base: unsafe { bufs_base.add(i * payload) }.cast(),
                iov_len: payload,
            });
        }
        Ok(d)
    }

    /// One `recvmmsg` (non-blocking); calls `per_packet` with each payload
    /// and its decoded metadata. Returns the count.
    pub fn recv(
        &mut self,
        fd: RawFd,
        mut per_packet: impl FnMut(&[u8], &BaselineMeta),
    ) -> io::Result<usize> {
        let slots = self.hdrs.len();
        // One base pointer per array, taken once: no reference to one element
        // is made while the headers hold pointers to the others.
        let ctrl_base = self.ctrl.as_mut_ptr().cast::<u8>();
        let iovs_base = self.iovs.as_mut_ptr();
        let names_base = self.names.as_mut_ptr();
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            let h = &mut h.msg_hdr;
            // SAFETY: `new` gave `iovs` and `names` one element per header
            // and `ctrl` slots * ctrl_len bytes (checked, no overflow); with
            // i < slots, element i and control bytes
            // [i * ctrl_len, (i + 1) * ctrl_len) are inside their arrays.
            unsafe {
                h.msg_iov = iovs_base.add(i);
                h.msg_iovlen = 1;
                if self.want_name {
                    h.msg_name = names_base.add(i).cast();
                    h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                }
                if self.ctrl_len > 0 {
                    h.msg_control = ctrl_base.add(i * self.ctrl_len).cast();
                    h.msg_controllen = self.ctrl_len as _;
                }
            }
        }
        // SAFETY: every header points at buffers owned by `self` with the
        // lengths set above; the timeout is null.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                slots as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // CMSG_LEN of each message read: a header shorter than that (cut by
        // MSG_CTRUNC, or malformed) is skipped, as a careful C loop does.
        // SAFETY: CMSG_LEN is arithmetic on its argument only.
        let (ttl_len, pktinfo_len, ovfl_len, ts_len) = unsafe {
            (
                libc::CMSG_LEN(size_of::<i32>() as u32) as usize,
                libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize,
                libc::CMSG_LEN(size_of::<u32>() as u32) as usize,
                libc::CMSG_LEN(size_of::<libc::timespec>() as u32) as usize,
            )
        };
        for i in 0..n as usize {
            let h = &self.hdrs[i];
            let mut meta = BaselineMeta {
                ttl: -1,
                msg_flags: h.msg_hdr.msg_flags,
                ..BaselineMeta::default()
            };
            // The walk sees at most this slot's own control bytes.
            let mut mh = h.msg_hdr;
            #[allow(clippy::unnecessary_cast)] // socklen_t on some C libraries
            let clen = (mh.msg_controllen as usize).min(self.ctrl_len);
            mh.msg_controllen = clen as _;
            let end = mh.msg_control as usize + clen;
            // SAFETY: msg_control is null with clen 0 (no control slot) or
            // points at this slot's ctrl_len bytes, and clen <= ctrl_len.
            // CMSG_FIRSTHDR / CMSG_NXTHDR return null unless a whole header
            // lies within [msg_control, end); each header's cmsg_len is
            // checked to stay within `end` (so CMSG_NXTHDR cannot step past
            // it or wrap) and to cover the value read from CMSG_DATA before
            // that read; the reads are unaligned-safe.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&mh);
                while !c.is_null() {
                    let len = (*c).cmsg_len as usize;
                    if len > end - c as usize {
                        break;
                    }
                    let data = libc::CMSG_DATA(c);
                    match ((*c).cmsg_level, (*c).cmsg_type) {
                        (libc::IPPROTO_IP, libc::IP_TTL) if len >= ttl_len => {
                            meta.ttl = std::ptr::read_unaligned(data.cast::<i32>())
                        }
                        (libc::IPPROTO_IP, libc::IP_PKTINFO) if len >= pktinfo_len => {
                            let pi = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                            meta.dst = pi.ipi_addr.s_addr;
                            meta.ifindex = pi.ipi_ifindex;
                        }
                        (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) if len >= ovfl_len => {
                            meta.drops = std::ptr::read_unaligned(data.cast::<u32>())
                        }
                        (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS) if len >= ts_len => {
                            let ts = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                            meta.ts_ns = (ts.tv_sec as u64)
                                .wrapping_mul(1_000_000_000)
                                .wrapping_add(ts.tv_nsec as u64);
                        }
                        _ => {}
                    }
                    c = libc::CMSG_NXTHDR(&mh, c);
                }
            }
            let len = (h.msg_len as usize).min(self.payload);
            per_packet(&self.bufs[i * self.payload..i * self.payload + len], &meta);
        }
        Ok(n as usize)
    }
}
