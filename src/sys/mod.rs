//! The only place in the crate with libc calls and `unsafe`.
//!
//! Everything above this module sees safe functions that return
//! `io::Result`. Each `unsafe` block carries a `// SAFETY:` line.

#[cfg(feature = "tokio")]
pub(crate) mod async_fd;
pub(crate) mod cmsg;
pub(crate) mod mmsg;
#[cfg(feature = "io-uring")]
pub(crate) mod uring;

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Calls a libc function and turns `-1` into `io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)* ) ) => {{
        #[allow(unused_unsafe)]
        // SAFETY: the caller of the macro passes arguments that satisfy the
        // libc function's contract (valid fds, pointers with correct lengths).
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

// Option numbers from libc, which has them per architecture.
pub(crate) use libc::{
    SO_PREFER_BUSY_POLL, SO_RXQ_OVFL, SO_TIMESTAMPING, SO_TIMESTAMPNS, UDP_GRO, UDP_SEGMENT,
};
/// Receive timestamps in software and from the device (raw hardware clock).
pub(crate) const TIMESTAMPING_RX: libc::c_int = (libc::SOF_TIMESTAMPING_RX_SOFTWARE
    | libc::SOF_TIMESTAMPING_SOFTWARE
    | libc::SOF_TIMESTAMPING_RX_HARDWARE
    | libc::SOF_TIMESTAMPING_RAW_HARDWARE)
    as libc::c_int;
/// `ICMP_FILTER` (level `SOL_RAW`) from `<linux/icmp.h>`, which libc lacks.
pub(crate) const ICMP_FILTER: libc::c_int = 1;

/// `sizeof(struct cmsghdr)`.
pub(crate) const CMSG_HDR: usize = size_of::<libc::cmsghdr>();
/// Alignment of control-message headers and data (`sizeof(long)`).
pub(crate) const CMSG_ALIGN: usize = size_of::<usize>();

/// `CMSG_ALIGN(len)`.
pub(crate) const fn cmsg_align(len: usize) -> usize {
    (len + CMSG_ALIGN - 1) & !(CMSG_ALIGN - 1)
}

/// `CMSG_LEN(len)`: header plus data, without trailing padding.
pub(crate) const fn cmsg_len(len: usize) -> usize {
    cmsg_align(CMSG_HDR) + len
}

/// `CMSG_SPACE(len)`: header plus data plus padding to the next header.
pub(crate) const fn cmsg_space(len: usize) -> usize {
    cmsg_align(CMSG_HDR) + cmsg_align(len)
}

// The safe decoder in `control.rs` reads `cmsghdr` as (usize, i32, i32).
const _: () = assert!(CMSG_HDR == size_of::<usize>() + 2 * size_of::<libc::c_int>());
const _: () = assert!(cmsg_space(size_of::<libc::in_pktinfo>()) == 32 || CMSG_ALIGN != 8);

pub(crate) fn setsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: T,
) -> io::Result<()> {
    setsockopt_bytes(fd, level, name, (&value as *const T).cast(), size_of::<T>())
}

/// Sets an option whose C struct has padding between its fields
/// (`group_req`, `group_source_req`): the struct is built in zeroed
/// storage by `fill`, so the bytes no field covers reach the kernel as
/// zeros rather than as whatever the stack held.
fn setsockopt_padded<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    fill: impl FnOnce(*mut T),
) -> io::Result<()> {
    let mut value = MaybeUninit::<T>::zeroed();
    fill(value.as_mut_ptr());
    setsockopt_bytes(fd, level, name, value.as_ptr().cast(), size_of::<T>())
}

fn setsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: *const libc::c_void,
    len: usize,
) -> io::Result<()> {
    syscall!(setsockopt(
        fd.as_raw_fd(),
        level,
        name,
        value,
        len as libc::socklen_t
    ))
    .map(drop)
}

/// Reads an option of type `T`. Returns the value and the length the kernel wrote.
pub(crate) fn getsockopt_len<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<(T, usize)> {
    let mut value = MaybeUninit::<T>::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    syscall!(getsockopt(
        fd.as_raw_fd(),
        level,
        name,
        value.as_mut_ptr().cast(),
        &mut len,
    ))?;
    // SAFETY: the value was zero-initialised and every `T` used here is a
    // plain C integer or struct for which all-zero bytes are valid; the kernel
    // wrote at most `size_of::<T>()` bytes over it.
    Ok((unsafe { value.assume_init() }, len as usize))
}

pub(crate) fn getsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<T> {
    getsockopt_len(fd, level, name).map(|(v, _)| v)
}

/// Reads an `int` option that the kernel may answer with one byte (as it
/// does for `IP_TOS`, `IP_MULTICAST_TTL` and `IP_MULTICAST_LOOP` when asked
/// with a short buffer); asked with 4 bytes it answers 4.
pub(crate) fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<i32> {
    let (value, len) = getsockopt_len::<libc::c_int>(fd, level, name)?;
    Ok(if len == 1 { value & 0xff } else { value })
}

pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let mut flag: libc::c_int = on.into();
    syscall!(ioctl(fd.as_raw_fd(), libc::FIONBIO, &mut flag)).map(drop)
}

pub(crate) fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: in_addr(*addr.ip()),
        sin_zero: [0; 8],
    }
}

pub(crate) fn from_sockaddr_in(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    )
}

pub(crate) fn in_addr(addr: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from(addr).to_be(),
    }
}

fn sockaddr_storage(addr: Ipv4Addr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is a plain C struct; all-zero bytes are valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let sin = sockaddr_in(SocketAddrV4::new(addr, 0));
    // SAFETY: sockaddr_storage is larger than and aligned at least as
    // strictly as sockaddr_in; we write one sockaddr_in at its start.
    unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
    storage
}

/// `MCAST_JOIN_GROUP`, `MCAST_LEAVE_GROUP`.
pub(crate) fn group_op(
    fd: BorrowedFd<'_>,
    op: libc::c_int,
    ifindex: u32,
    group: Ipv4Addr,
) -> io::Result<()> {
    setsockopt_padded(fd, libc::IPPROTO_IP, op, |req: *mut libc::group_req| {
        // SAFETY: `req` points to a zeroed, aligned, writable group_req;
        // each field is written in place through its own address.
        unsafe {
            std::ptr::addr_of_mut!((*req).gr_interface).write(ifindex);
            std::ptr::addr_of_mut!((*req).gr_group).write(sockaddr_storage(group));
        }
    })
}

/// `MCAST_{JOIN,LEAVE}_SOURCE_GROUP`, `MCAST_{BLOCK,UNBLOCK}_SOURCE`.
pub(crate) fn group_source_op(
    fd: BorrowedFd<'_>,
    op: libc::c_int,
    ifindex: u32,
    group: Ipv4Addr,
    source: Ipv4Addr,
) -> io::Result<()> {
    setsockopt_padded(
        fd,
        libc::IPPROTO_IP,
        op,
        |req: *mut libc::group_source_req| {
            // SAFETY: as in `group_op`: zeroed, aligned, writable storage, each
            // field written in place.
            unsafe {
                std::ptr::addr_of_mut!((*req).gsr_interface).write(ifindex);
                std::ptr::addr_of_mut!((*req).gsr_group).write(sockaddr_storage(group));
                std::ptr::addr_of_mut!((*req).gsr_source).write(sockaddr_storage(source));
            }
        },
    )
}

/// `IP_MULTICAST_IF` with an `ip_mreqn` (interface index and address).
pub(crate) fn set_multicast_if(fd: BorrowedFd<'_>, ifindex: u32, addr: Ipv4Addr) -> io::Result<()> {
    let req = libc::ip_mreqn {
        imr_multiaddr: in_addr(Ipv4Addr::UNSPECIFIED),
        imr_address: in_addr(addr),
        imr_ifindex: ifindex as libc::c_int,
    };
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, req)
}

/// Reads `IP_MULTICAST_IF`: the kernel answers with a 4-byte `in_addr`
/// whatever was used to set it (Go reads it as `ip_mreqn` and gets nothing).
pub(crate) fn multicast_if_addr(fd: BorrowedFd<'_>) -> io::Result<Ipv4Addr> {
    let addr: libc::in_addr = getsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF)?;
    Ok(Ipv4Addr::from(u32::from_be(addr.s_addr)))
}

/// What one `recvmsg` returned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvMsg {
    /// Bytes copied into the payload buffer.
    pub len: usize,
    /// Bytes of control data the kernel wrote.
    pub control_len: usize,
    /// `msg_flags` (`MSG_TRUNC`, `MSG_CTRUNC`).
    pub flags: libc::c_int,
    /// The source address, when asked for and present.
    pub src: Option<SocketAddrV4>,
}

/// An aligned buffer for control messages.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(crate) struct CmsgBuf<const N: usize>(pub [u8; N]);

impl<const N: usize> CmsgBuf<N> {
    pub(crate) const fn new() -> Self {
        CmsgBuf([0; N])
    }
}

/// `recvmsg` into `buf` with control data into `control` (which must be
/// aligned to `CMSG_ALIGN`).
pub(crate) fn recvmsg(
    fd: RawFd,
    buf: &mut [u8],
    want_src: bool,
    control: &mut [u8],
    flags: libc::c_int,
) -> io::Result<RecvMsg> {
    debug_assert_eq!(control.as_ptr() as usize % CMSG_ALIGN, 0);
    // SAFETY: all-zero bytes are a valid sockaddr_in and msghdr.
    let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if want_src {
        msg.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !control.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() as _;
    }
    let n = syscall!(recvmsg(fd, &mut msg, flags))?;
    let src = (want_src
        && msg.msg_namelen as usize >= size_of::<libc::sockaddr_in>()
        && name.sin_family == libc::AF_INET as libc::sa_family_t)
        .then(|| from_sockaddr_in(&name));
    Ok(RecvMsg {
        len: (n as usize).min(buf.len()),
        control_len: msg.msg_controllen as usize,
        flags: msg.msg_flags,
        src,
    })
}

/// `sendmsg` of `buf` to `dst` (or the connected peer), with the control
/// messages `control` writes (see [`cmsg::Encoder`]); nothing is sent when
/// it fails.
pub(crate) fn sendmsg(
    fd: RawFd,
    buf: &[u8],
    dst: Option<SocketAddrV4>,
    control: impl FnOnce(&mut cmsg::Encoder<'_>) -> io::Result<()>,
    flags: libc::c_int,
) -> io::Result<usize> {
    sendmsg_vectored(fd, &[io::IoSlice::new(buf)], dst, control, flags)
}

/// `sendmsg` of several buffers as one datagram, with the control messages
/// `control` writes; nothing is sent when it fails.
pub(crate) fn sendmsg_vectored(
    fd: RawFd,
    bufs: &[io::IoSlice<'_>],
    dst: Option<SocketAddrV4>,
    control: impl FnOnce(&mut cmsg::Encoder<'_>) -> io::Result<()>,
    flags: libc::c_int,
) -> io::Result<usize> {
    let mut name = dst.map(sockaddr_in);
    // SAFETY: all-zero bytes are a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(name) = name.as_mut() {
        msg.msg_name = (name as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    }
    // IoSlice is guaranteed ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    let mut buf = cmsg::SendControl::new();
    let mut encoder = cmsg::Encoder::new(&mut buf);
    control(&mut encoder)?;
    // The encoder sets msg_control and msg_controllen to what it wrote.
    encoder.finish(&mut msg);
    syscall!(sendmsg(fd, &msg, flags)).map(|n| n as usize)
}

/// Splits an `in_pktinfo`: (ifindex, spec_dst, addr).
#[inline]
pub(crate) fn parse_pktinfo(data: &[u8]) -> Option<(u32, Ipv4Addr, Ipv4Addr)> {
    if data.len() < size_of::<libc::in_pktinfo>() {
        return None;
    }
    let ifindex = i32::from_ne_bytes(data[0..4].try_into().ok()?) as u32;
    let spec_dst = Ipv4Addr::new(data[4], data[5], data[6], data[7]);
    let addr = Ipv4Addr::new(data[8], data[9], data[10], data[11]);
    Some((ifindex, spec_dst, addr))
}

/// Parses a `struct timespec` (two native longs on 64-bit Linux).
#[inline]
pub(crate) fn parse_timespec(data: &[u8]) -> Option<(i64, i64)> {
    const W: usize = size_of::<libc::time_t>();
    const N: usize = size_of::<libc::c_long>();
    if data.len() < W + N {
        return None;
    }
    let sec = match W {
        8 => i64::from_ne_bytes(data[0..8].try_into().ok()?),
        _ => i32::from_ne_bytes(data[0..4].try_into().ok()?) as i64,
    };
    let nsec = match N {
        8 => i64::from_ne_bytes(data[W..W + 8].try_into().ok()?),
        _ => i32::from_ne_bytes(data[W..W + 4].try_into().ok()?) as i64,
    };
    Some((sec, nsec))
}

/// `size_of::<struct timespec>()`.
pub(crate) const TIMESPEC_LEN: usize = size_of::<libc::timespec>();
/// `size_of::<struct in_pktinfo>()`.
pub(crate) const PKTINFO_LEN: usize = size_of::<libc::in_pktinfo>();

/// Pins the calling thread to one CPU (`sched_setaffinity`).
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(crate::error::invalid(format!(
            "CPU {cpu} is beyond the largest CPU number this system call accepts"
        )));
    }
    // SAFETY: cpu_set_t is a plain bit array; all-zero bytes are the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` was checked against CPU_SETSIZE above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    syscall!(sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)).map(drop)
}

/// Moves the calling thread into the network namespace of `fd` (`setns`).
pub(crate) fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    syscall!(setns(fd.as_raw_fd(), libc::CLONE_NEWNET)).map(drop)
}

// Interface look-ups through a socket: the kernel answers for the socket's
// own network namespace, whichever namespace the calling thread is in.

fn ifreq_named(name: &str) -> Option<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return None;
    }
    // SAFETY: ifreq is a plain C struct (with a union); all-zero bytes are valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Some(req)
}

fn ifreq_name(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `SIOCGIFINDEX`: the index of interface `name` in the socket's
/// namespace; `Ok(None)` when no interface has that name (`ENODEV`).
pub(crate) fn if_index_on(fd: BorrowedFd<'_>, name: &str) -> io::Result<Option<u32>> {
    let Some(mut req) = ifreq_named(name) else {
        return Ok(None);
    };
    match syscall!(ioctl(fd.as_raw_fd(), libc::SIOCGIFINDEX as _, &mut req)) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
        Err(e) => return Err(e),
    }
    // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    Ok(u32::try_from(index).ok())
}

/// `SIOCGIFNAME`: the name of interface `index` in the socket's namespace;
/// `Ok(None)` when no interface has that index (`ENODEV`).
pub(crate) fn if_name_on(fd: BorrowedFd<'_>, index: u32) -> io::Result<Option<String>> {
    // SAFETY: all-zero bytes are a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let Ok(index) = i32::try_from(index) else {
        return Ok(None);
    };
    req.ifr_ifru.ifru_ifindex = index;
    match syscall!(ioctl(fd.as_raw_fd(), libc::SIOCGIFNAME as _, &mut req)) {
        Ok(_) => Ok(Some(ifreq_name(&req))),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `SIOCGIFADDR`: the primary IPv4 address of interface `name`, if any.
pub(crate) fn if_addr_on(fd: BorrowedFd<'_>, name: &str) -> Option<Ipv4Addr> {
    let mut req = ifreq_named(name)?;
    syscall!(ioctl(fd.as_raw_fd(), libc::SIOCGIFADDR as _, &mut req)).ok()?;
    // SAFETY: SIOCGIFADDR filled the address member with an AF_INET sockaddr,
    // which has the size and alignment of sockaddr.
    let sin: libc::sockaddr_in = unsafe { std::mem::transmute(req.ifr_ifru.ifru_addr) };
    (sin.sin_family == libc::AF_INET as libc::sa_family_t).then(|| *from_sockaddr_in(&sin).ip())
}

/// `SIOCGIFCONF`: every IPv4 address in the socket's namespace, with its
/// label (the interface name, or `name:alias`).
pub(crate) fn ipv4_addrs_on(fd: BorrowedFd<'_>) -> io::Result<Vec<(String, Ipv4Addr)>> {
    let mut capacity = 64usize;
    loop {
        // SAFETY: all-zero bytes are valid ifreq values.
        let mut reqs: Vec<libc::ifreq> = vec![unsafe { std::mem::zeroed() }; capacity];
        let len = capacity * size_of::<libc::ifreq>();
        // SAFETY: all-zero bytes are a valid ifconf.
        let mut conf: libc::ifconf = unsafe { std::mem::zeroed() };
        conf.ifc_len = len as libc::c_int;
        conf.ifc_ifcu.ifcu_req = reqs.as_mut_ptr();
        syscall!(ioctl(fd.as_raw_fd(), libc::SIOCGIFCONF as _, &mut conf))?;
        let used = conf.ifc_len as usize;
        if used + size_of::<libc::ifreq>() > len {
            // Possibly cut short: ask again with room to spare.
            capacity *= 4;
            if capacity > 1 << 16 {
                return Err(io::Error::other("SIOCGIFCONF: too many addresses"));
            }
            continue;
        }
        let count = used / size_of::<libc::ifreq>();
        let mut out = Vec::with_capacity(count);
        for req in &reqs[..count] {
            // SAFETY: SIOCGIFCONF fills ifru_addr with an AF_INET sockaddr.
            let sin: libc::sockaddr_in = unsafe { std::mem::transmute(req.ifr_ifru.ifru_addr) };
            if sin.sin_family == libc::AF_INET as libc::sa_family_t {
                out.push((ifreq_name(req), *from_sockaddr_in(&sin).ip()));
            }
        }
        return Ok(out);
    }
}

/// Walks a control buffer as the kernel laid it out and calls `f(level,
/// type, data)` for each well-formed message, stopping at the first header
/// whose length does not fit what is left. The C way (`CMSG_NXTHDR`), with
/// each length checked before anything is read past it.
#[inline]
pub(crate) fn for_each_cmsg(control: &[u8], mut f: impl FnMut(libc::c_int, libc::c_int, &[u8])) {
    const W: usize = size_of::<usize>();
    let data_at = cmsg_align(CMSG_HDR);
    let base = control.as_ptr();
    let total = control.len();
    let mut at = 0usize;
    while total - at >= CMSG_HDR {
        // SAFETY: `at + CMSG_HDR <= total`, so the header lies inside
        // `control`; the reads are unaligned-safe.
        let (len, level, kind) = unsafe {
            let p = base.add(at);
            (
                std::ptr::read_unaligned(p.cast::<usize>()),
                std::ptr::read_unaligned(p.add(W).cast::<libc::c_int>()),
                std::ptr::read_unaligned(p.add(W + 4).cast::<libc::c_int>()),
            )
        };
        if len < data_at || len > total - at {
            return;
        }
        // SAFETY: `data_at <= len <= total - at`: the data lies inside
        // `control`, which outlives the call.
        let data = unsafe { std::slice::from_raw_parts(base.add(at + data_at), len - data_at) };
        f(level, kind, data);
        at += cmsg_align(len).min(total - at);
    }
}

/// A non-blocking, close-on-exec `timerfd` on `CLOCK_MONOTONIC` (the clock
/// of `std::time::Instant` on Linux), disarmed.
pub(crate) fn timerfd_create() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = syscall!(timerfd_create(
        libc::CLOCK_MONOTONIC,
        libc::TFD_NONBLOCK | libc::TFD_CLOEXEC
    ))?;
    // SAFETY: timerfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Arms a timerfd to expire once, `after` from now (at least 1 ns: a zero
/// value would disarm it), or disarms it (`None`).
pub(crate) fn timerfd_set(
    fd: BorrowedFd<'_>,
    after: Option<std::time::Duration>,
) -> io::Result<()> {
    let value = match after {
        Some(d) => {
            let d = d.max(std::time::Duration::from_nanos(1));
            libc::timespec {
                tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: d.subsec_nanos() as _,
            }
        }
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    };
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: value,
    };
    syscall!(timerfd_settime(
        fd.as_raw_fd(),
        0,
        &spec,
        std::ptr::null_mut()
    ))
    .map(drop)
}

/// Reads (and so clears) a timerfd's expiration count; `Ok(0)` when it had
/// not expired.
pub(crate) fn timerfd_read(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut count = 0u64;
    match syscall!(read(
        fd.as_raw_fd(),
        (&mut count as *mut u64).cast(),
        size_of::<u64>()
    )) {
        Ok(_) => Ok(count),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// Borrows a descriptor that `owner` keeps open for as long as it lives
/// (the epoll descriptor of a `mio::Poll`, which has no `AsFd`).
pub(crate) fn borrow_fd<T: AsRawFd>(owner: &T) -> BorrowedFd<'_> {
    let fd = owner.as_raw_fd();
    // SAFETY: `owner` owns `fd` and closes it only when dropped; the
    // borrow cannot outlive `owner`.
    unsafe { BorrowedFd::borrow_raw(fd) }
}
