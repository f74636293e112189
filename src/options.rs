//! Socket options shared by the endpoint types, as functions over a file
//! descriptor. Each checks its arguments before any system call and adds
//! context to the kernel's errors.
//!
//! One home per option: socket2 where it has the option (through a
//! [`SockRef`] over the descriptor), the crate's own `sys` code only for
//! what socket2 lacks (`ip_mreqn`, joins and source filters by interface
//! index, `SO_RCVBUFFORCE`, `SO_PREFER_BUSY_POLL`, the control-message
//! switches).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;

use socket2::SockRef;

use crate::control::ControlFlags;
use crate::error::{Error, Limit};
use crate::interface::{Interface, InterfaceInfo};
use crate::sys;

pub(crate) fn check_ttl(ttl: u8) -> io::Result<()> {
    if ttl == 0 {
        Err(Error::InvalidTtl(ttl).into())
    } else {
        Ok(())
    }
}

fn check_group(group: Ipv4Addr) -> io::Result<()> {
    if group.is_multicast() {
        Ok(())
    } else {
        Err(Error::NotMulticast { group }.into())
    }
}

fn check_source(source: Ipv4Addr) -> io::Result<()> {
    if source.is_multicast() || source.is_broadcast() || source.is_unspecified() {
        Err(Error::NotUnicastSource { source }.into())
    } else {
        Ok(())
    }
}

fn set_int(fd: BorrowedFd<'_>, level: i32, name: i32, value: i32, what: &str) -> io::Result<()> {
    sys::setsockopt(fd, level, name, value)
        .map_err(|e| Error::os(format!("setting {what} to {value}"), e))
}

fn reading(what: &'static str) -> impl FnOnce(io::Error) -> io::Error {
    move |e| Error::os(format!("reading {what}"), e)
}

fn setting(
    what: &'static str,
    value: impl std::fmt::Display,
) -> impl FnOnce(io::Error) -> io::Error {
    move |e| Error::os(format!("setting {what} to {value}"), e)
}

pub(crate) fn tos(fd: BorrowedFd<'_>) -> io::Result<u8> {
    SockRef::from(&fd)
        .tos_v4()
        .map(|v| v as u8)
        .map_err(reading("IP_TOS"))
}

pub(crate) fn set_tos(fd: BorrowedFd<'_>, tos: u8) -> io::Result<()> {
    SockRef::from(&fd)
        .set_tos_v4(tos.into())
        .map_err(setting("IP_TOS", tos))
}

pub(crate) fn ttl(fd: BorrowedFd<'_>) -> io::Result<u8> {
    SockRef::from(&fd)
        .ttl_v4()
        .map(|v| v as u8)
        .map_err(reading("IP_TTL"))
}

pub(crate) fn set_ttl(fd: BorrowedFd<'_>, ttl: u8) -> io::Result<()> {
    check_ttl(ttl)?;
    SockRef::from(&fd)
        .set_ttl_v4(ttl.into())
        .map_err(setting("IP_TTL", ttl))
}

pub(crate) fn multicast_ttl(fd: BorrowedFd<'_>) -> io::Result<u8> {
    SockRef::from(&fd)
        .multicast_ttl_v4()
        .map(|v| v as u8)
        .map_err(reading("IP_MULTICAST_TTL"))
}

pub(crate) fn set_multicast_ttl(fd: BorrowedFd<'_>, ttl: u8) -> io::Result<()> {
    SockRef::from(&fd)
        .set_multicast_ttl_v4(ttl.into())
        .map_err(setting("IP_MULTICAST_TTL", ttl))
}

pub(crate) fn multicast_loop(fd: BorrowedFd<'_>) -> io::Result<bool> {
    SockRef::from(&fd)
        .multicast_loop_v4()
        .map_err(reading("IP_MULTICAST_LOOP"))
}

pub(crate) fn set_multicast_loop(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    SockRef::from(&fd)
        .set_multicast_loop_v4(on)
        .map_err(setting("IP_MULTICAST_LOOP", on))
}

pub(crate) fn multicast_all(fd: BorrowedFd<'_>) -> io::Result<bool> {
    SockRef::from(&fd)
        .multicast_all_v4()
        .map_err(reading("IP_MULTICAST_ALL"))
}

pub(crate) fn set_multicast_all(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    SockRef::from(&fd)
        .set_multicast_all_v4(on)
        .map_err(setting("IP_MULTICAST_ALL", on))
}

/// Sets `IP_MULTICAST_IF` with both the index and the interface's address,
/// so that the source address of outgoing multicast belongs to the
/// interface and the getter can answer. Returns what was set.
pub(crate) fn set_multicast_interface(
    fd: BorrowedFd<'_>,
    iface: &Interface,
) -> io::Result<InterfaceInfo> {
    let info = iface.resolve_on(fd)?;
    let addr = info.addr.unwrap_or(Ipv4Addr::UNSPECIFIED);
    sys::set_multicast_if(fd, info.index, addr)
        .map_err(|e| Error::os(format!("setting IP_MULTICAST_IF to {iface}"), e))?;
    Ok(info)
}

/// Reads `IP_MULTICAST_IF` back. The kernel answers with the address only;
/// `fallback_index` is the index last set through this crate, used when the
/// interface had no IPv4 address.
pub(crate) fn multicast_interface(
    fd: BorrowedFd<'_>,
    fallback_index: u32,
) -> io::Result<Option<InterfaceInfo>> {
    let addr = sys::multicast_if_addr(fd).map_err(|e| Error::os("reading IP_MULTICAST_IF", e))?;
    if !addr.is_unspecified() {
        if let Ok(info) = Interface::Addr(addr).resolve_on(fd) {
            return Ok(Some(info));
        }
    }
    if fallback_index != 0 {
        return Interface::Index(fallback_index).resolve_on(fd).map(Some);
    }
    Ok(None)
}

/// What kind of membership change.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupOp {
    Join,
    Leave,
}

pub(crate) fn group(
    fd: BorrowedFd<'_>,
    op: GroupOp,
    iface: &Interface,
    group: Ipv4Addr,
) -> io::Result<u32> {
    check_group(group)?;
    let info = iface.resolve_on(fd)?;
    let (code, verb) = match op {
        GroupOp::Join => (libc::MCAST_JOIN_GROUP, "joining"),
        GroupOp::Leave => (libc::MCAST_LEAVE_GROUP, "leaving"),
    };
    sys::group_op(fd, code, info.index, group).map_err(|e| {
        membership_error(format!("{verb} group {group} on {iface}"), e, Limit::Groups)
    })?;
    Ok(info.index)
}

/// What kind of source-filter change.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceOp {
    /// Include mode: receive from this source (joins the group if needed).
    Join,
    /// Include mode: stop receiving from this source.
    Leave,
    /// Exclude mode: stop receiving from this source.
    Block,
    /// Exclude mode: receive from this source again.
    Unblock,
}

pub(crate) fn source(
    fd: BorrowedFd<'_>,
    op: SourceOp,
    iface: &Interface,
    group: Ipv4Addr,
    source: Ipv4Addr,
) -> io::Result<u32> {
    check_group(group)?;
    check_source(source)?;
    let info = iface.resolve_on(fd)?;
    let (code, verb) = match op {
        SourceOp::Join => (libc::MCAST_JOIN_SOURCE_GROUP, "joining source"),
        SourceOp::Leave => (libc::MCAST_LEAVE_SOURCE_GROUP, "leaving source"),
        SourceOp::Block => (libc::MCAST_BLOCK_SOURCE, "blocking source"),
        SourceOp::Unblock => (libc::MCAST_UNBLOCK_SOURCE, "unblocking source"),
    };
    sys::group_source_op(fd, code, info.index, group, source).map_err(|e| {
        membership_error(
            format!("{verb} {source} of group {group} on {iface}"),
            e,
            Limit::SourcesPerGroup,
        )
    })?;
    Ok(info.index)
}

pub(crate) fn membership_error(context: String, e: io::Error, limit: Limit) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ENOBUFS) => Error::MembershipLimit {
            limit,
            max: limit.current(),
            context,
        }
        .into(),
        Some(libc::EADDRNOTAVAIL) => Error::os(
            format!("{context} (no such membership or source filter on this socket)"),
            e,
        ),
        _ => Error::os(context, e),
    }
}

/// The kernel switch behind each control flag: (flags, level, option, name,
/// value when on).
const SWITCHES: [(ControlFlags, i32, i32, &str, i32); 7] = [
    (
        ControlFlags::TTL,
        libc::IPPROTO_IP,
        libc::IP_RECVTTL,
        "IP_RECVTTL",
        1,
    ),
    (
        ControlFlags::TOS,
        libc::IPPROTO_IP,
        libc::IP_RECVTOS,
        "IP_RECVTOS",
        1,
    ),
    (
        ControlFlags::PKTINFO,
        libc::IPPROTO_IP,
        libc::IP_PKTINFO,
        "IP_PKTINFO",
        1,
    ),
    (
        ControlFlags::TIMESTAMP,
        libc::SOL_SOCKET,
        sys::SO_TIMESTAMPNS,
        "SO_TIMESTAMPNS",
        1,
    ),
    (
        ControlFlags::DROPS,
        libc::SOL_SOCKET,
        sys::SO_RXQ_OVFL,
        "SO_RXQ_OVFL",
        1,
    ),
    (
        ControlFlags::GRO,
        libc::IPPROTO_UDP,
        sys::UDP_GRO,
        "UDP_GRO",
        1,
    ),
    (
        ControlFlags::TIMESTAMPING,
        libc::SOL_SOCKET,
        sys::SO_TIMESTAMPING,
        "SO_TIMESTAMPING",
        sys::TIMESTAMPING_RX,
    ),
];

/// Switches the kernel's per-packet control messages from `old` to `new`.
pub(crate) fn apply_control_flags(
    fd: BorrowedFd<'_>,
    old: ControlFlags,
    new: ControlFlags,
) -> io::Result<()> {
    let mut done: Vec<(i32, i32, &str, i32)> = Vec::new();
    for (flags, level, name, what, on) in SWITCHES {
        let was = old.intersects(flags);
        let now = new.intersects(flags);
        if was != now {
            let value = if now { on } else { 0 };
            if let Err(e) = set_int(fd, level, name, value, what) {
                // Put back what was already switched, so the socket and its
                // recorded flags agree.
                for &(level, name, what, previous) in done.iter().rev() {
                    let _ = set_int(fd, level, name, previous, what);
                }
                return Err(e);
            }
            done.push((level, name, what, if was { on } else { 0 }));
        }
    }
    Ok(())
}

/// The control-message switches the kernel has on for this socket, read
/// back with `getsockopt`: `IP_PKTINFO` on reads as `DST | INTERFACE |
/// LOCAL` (the three share it), and `SRC` never shows (it is no socket
/// option). An option the socket's protocol does not have (`UDP_GRO` on a
/// raw socket) reads as off.
pub(crate) fn kernel_control_flags(fd: BorrowedFd<'_>) -> io::Result<ControlFlags> {
    let mut on = ControlFlags::NONE;
    for (flags, level, name, what, _) in SWITCHES {
        match sys::getsockopt_int(fd, level, name) {
            Ok(0) => {}
            Ok(_) => on = on.union(flags),
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {}
            Err(e) => return Err(Error::os(format!("reading {what}"), e)),
        }
    }
    Ok(on)
}

/// `SO_RCVBUF` as the kernel reports it (twice what was asked, capped).
pub(crate) fn recv_buffer_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    SockRef::from(&fd)
        .recv_buffer_size()
        .map_err(reading("SO_RCVBUF"))
}

/// Sets the receive buffer; with `force`, `SO_RCVBUFFORCE` (needs
/// CAP_NET_ADMIN) goes past `net.core.rmem_max`. Returns the effective size.
pub(crate) fn set_recv_buffer_size(
    fd: BorrowedFd<'_>,
    bytes: usize,
    force: bool,
) -> io::Result<usize> {
    let value = i32::try_from(bytes).map_err(|_| {
        crate::error::invalid(format!("receive buffer of {bytes} bytes is over 2 GiB"))
    })?;
    if force {
        sys::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                Error::os(
                    format!("setting SO_RCVBUFFORCE to {bytes} (needs CAP_NET_ADMIN; without it the size is capped by net.core.rmem_max)"),
                    e,
                )
            } else {
                Error::os(format!("setting SO_RCVBUFFORCE to {bytes}"), e)
            }
        })?;
    } else {
        SockRef::from(&fd)
            .set_recv_buffer_size(bytes)
            .map_err(setting("SO_RCVBUF", bytes))?;
    }
    recv_buffer_size(fd)
}

pub(crate) fn busy_poll(fd: BorrowedFd<'_>) -> io::Result<u32> {
    SockRef::from(&fd)
        .busy_poll()
        .map_err(reading("SO_BUSY_POLL"))
}

pub(crate) fn set_busy_poll(fd: BorrowedFd<'_>, micros: u32) -> io::Result<()> {
    if i32::try_from(micros).is_err() {
        return Err(crate::error::invalid(format!(
            "busy poll time {micros} us is out of range"
        )));
    }
    SockRef::from(&fd).set_busy_poll(micros).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EPERM) {
            " (raising it needs CAP_NET_ADMIN)"
        } else {
            ""
        };
        Error::os(format!("setting SO_BUSY_POLL to {micros} us{hint}"), e)
    })
}

pub(crate) fn set_prefer_busy_poll(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    set_int(
        fd,
        libc::SOL_SOCKET,
        sys::SO_PREFER_BUSY_POLL,
        on.into(),
        "SO_PREFER_BUSY_POLL",
    )
}

/// The kernel's limit on classic BPF program length (`BPF_MAXINSNS`).
pub const BPF_MAX_INSTRUCTIONS: usize = 4096;

/// Attaches a classic BPF program (`SO_ATTACH_FILTER`) through socket2,
/// after checking its length (the kernel's `EINVAL` would not say why).
pub(crate) fn attach_filter(fd: BorrowedFd<'_>, program: &[socket2::SockFilter]) -> io::Result<()> {
    if program.is_empty() {
        return Err(crate::error::invalid(
            "a BPF program needs at least one instruction",
        ));
    }
    if program.len() > BPF_MAX_INSTRUCTIONS {
        return Err(crate::error::invalid(format!(
            "a BPF program has at most {BPF_MAX_INSTRUCTIONS} instructions, got {}",
            program.len()
        )));
    }
    SockRef::from(&fd).attach_filter(program).map_err(|e| {
        Error::os(
            format!("attaching a BPF program of {} instructions", program.len()),
            e,
        )
    })
}

/// Detaches the BPF program (`SO_DETACH_FILTER`).
pub(crate) fn detach_filter(fd: BorrowedFd<'_>) -> io::Result<()> {
    SockRef::from(&fd)
        .detach_filter()
        .map_err(|e| Error::os("detaching the BPF program", e))
}
