//! [`PacketConn`]: a datagram endpoint (UDP, or `ip4:PROTO` raw sockets
//! read without their IP header) with IP-level and multicast options and
//! per-packet control messages.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use socket2::{Domain, Protocol, Socket, Type};

use crate::control::{ControlFlags, ControlMessage, MAX_CONTROL_LEN};
use crate::error::Error;
use crate::interface::{Interface, InterfaceInfo};
use crate::membership::{Memberships, RejoinReport};
use crate::meta::{RecvFlags, RecvMeta};
use crate::options::{self, GroupOp, SourceOp};
use crate::sys;

/// A datagram socket with IPv4 options, multicast membership and
/// per-packet control messages: Go's `ipv4.PacketConn`.
///
/// Made from a UDP socket ([`bind_udp`](Self::bind_udp), or any
/// `std::net::UdpSocket`, `socket2::Socket` or `OwnedFd`), or from a raw
/// `ip4:PROTO` socket ([`ip4`](Self::ip4)) whose reads strip the IP header.
/// Market-data receivers start from [`multicast_receiver`](Self::multicast_receiver).
///
/// All methods take `&self`: one socket can be read and written from several
/// threads at once.
///
/// ```
/// use std::net::{Ipv4Addr, SocketAddrV4};
/// use ipv4_reactor::{ControlFlags, PacketConn};
///
/// let a = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// let b = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
/// b.set_control_message(ControlFlags::TTL | ControlFlags::DST, true)?;
/// a.set_ttl(33)?;
/// a.send_to(b"hello", None, b.local_addr()?)?;
///
/// let mut buf = [0u8; 1500];
/// let meta = b.recv_from(&mut buf)?;
/// assert_eq!(&buf[..meta.len], b"hello");
/// assert_eq!(meta.cm.ttl, Some(33));
/// assert_eq!(meta.cm.dst, Some(Ipv4Addr::LOCALHOST));
/// assert_eq!(meta.src, a.local_addr()?);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct PacketConn {
    socket: Socket,
    /// The control flags asked for: written only with `flags_lock` held,
    /// read without it (on every receive).
    flags: AtomicU32,
    /// Held across read, apply to the kernel and store of the flags, so
    /// that updates from several threads are never lost.
    flags_lock: Mutex<()>,
    /// The last cumulative `SO_RXQ_OVFL` value a receive saw, with
    /// `DROPS_SEEN` set once there is one (0 before). Kept with the socket
    /// so that every batch reading it, and a socket registered again in a
    /// reactor, computes deltas from the same point. Touched only for
    /// packets that carry the counter, which the kernel adds only after a
    /// drop.
    drops_seen: AtomicU64,
    mcast_ifindex: AtomicU32,
    strip_ip_header: bool,
    /// What the socket joined, for [`PacketConn::rejoin`].
    memberships: Memberships,
}

impl PacketConn {
    fn wrap(socket: Socket, strip_ip_header: bool) -> PacketConn {
        PacketConn {
            socket,
            flags: AtomicU32::new(0),
            flags_lock: Mutex::new(()),
            drops_seen: AtomicU64::new(0),
            mcast_ifindex: AtomicU32::new(0),
            strip_ip_header,
            memberships: Memberships::default(),
        }
    }

    /// A UDP socket bound to `addr`.
    pub fn bind_udp(addr: SocketAddrV4) -> io::Result<PacketConn> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| crate::error::os_with_hint("creating a UDP socket", e))?;
        socket
            .bind(&addr.into())
            .map_err(|e| Error::os(format!("binding UDP socket to {addr}"), e))?;
        Ok(PacketConn::wrap(socket, false))
    }

    /// A raw `ip4:PROTO` socket (`SOCK_RAW` without `IP_HDRINCL`) bound to
    /// `local` (use `0.0.0.0` for any). Reads strip the IP header and its
    /// options, so the payload starts at the protocol's own header; writes
    /// get their IP header from the kernel. Needs CAP_NET_RAW.
    pub fn ip4(protocol: u8, local: Ipv4Addr) -> io::Result<PacketConn> {
        Ok(PacketConn::wrap(raw_socket(protocol, local, false)?, true))
    }

    /// Starts building the receiver a market-data consumer wants first:
    /// bound to the group and port, `SO_REUSEADDR`, `IP_MULTICAST_ALL` off,
    /// joined on the named interface, non-blocking.
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    /// use ipv4_reactor::{ControlFlags, Interface, PacketConn};
    ///
    /// let rx = PacketConn::multicast_receiver("239.1.2.3:0".parse().unwrap(), Interface::loopback())
    ///     .control(ControlFlags::DST | ControlFlags::DROPS)
    ///     .recv_buffer(1 << 20)
    ///     .build()?;
    /// assert!(!rx.multicast_all()?);
    /// assert!(rx.recv_buffer_size()? >= 1 << 20);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn multicast_receiver(group: SocketAddrV4, iface: Interface) -> ReceiverBuilder {
        ReceiverBuilder {
            group,
            iface,
            recv_buffer: None,
            force_recv_buffer: false,
            nonblocking: true,
            flags: ControlFlags::NONE,
            include: Vec::new(),
            exclude: Vec::new(),
            reuse_port: false,
        }
    }

    /// A UDP socket for sending multicast through `iface`: bound to the
    /// interface's address (port chosen by the kernel) so the source address
    /// belongs to that interface, `IP_MULTICAST_IF` set to it, multicast TTL
    /// 1, loopback on. An interface without an IPv4 address is an error:
    /// the kernel would pick the source address by route.
    ///
    /// ```
    /// use ipv4_reactor::{Interface, PacketConn};
    /// let tx = PacketConn::multicast_sender(&Interface::loopback())?;
    /// assert_eq!(tx.multicast_interface()?.unwrap().name, "lo");
    /// assert_eq!(tx.multicast_ttl()?, 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn multicast_sender(iface: &Interface) -> io::Result<PacketConn> {
        let info = iface.resolve()?;
        let local = info.addr.ok_or_else(|| {
            crate::error::invalid(format!(
                "{iface} has no IPv4 address to send multicast from; bind a socket to a local address and call set_multicast_interface"
            ))
        })?;
        let conn = PacketConn::bind_udp(SocketAddrV4::new(local, 0))?;
        conn.set_multicast_interface(iface)?;
        conn.set_multicast_ttl(1)?;
        conn.set_multicast_loop(true)?;
        Ok(conn)
    }

    /// The underlying `socket2::Socket`, for options this crate does not wrap.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Whether reads strip an IP header (raw `ip4:PROTO` sockets).
    pub fn strips_ip_header(&self) -> bool {
        self.strip_ip_header
    }

    /// The local address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        self.socket
            .local_addr()?
            .as_socket_ipv4()
            .ok_or_else(|| crate::error::invalid("socket is not an IPv4 socket"))
    }

    /// Puts the socket in non-blocking mode (as the reactor needs) or back.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        sys::set_nonblocking(self.as_fd(), on)
    }

    /// The `IP_TOS` byte put on outgoing packets.
    pub fn tos(&self) -> io::Result<u8> {
        options::tos(self.as_fd())
    }

    /// Sets `IP_TOS` for outgoing packets (DSCP in the upper six bits, ECN in
    /// the lower two; the kernel may clear the ECN bits on some sockets).
    pub fn set_tos(&self, tos: u8) -> io::Result<()> {
        options::set_tos(self.as_fd(), tos)
    }

    /// The `IP_TTL` of outgoing unicast packets.
    pub fn ttl(&self) -> io::Result<u8> {
        options::ttl(self.as_fd())
    }

    /// Sets `IP_TTL` for outgoing unicast packets: 1 to 255 (0 is an error).
    pub fn set_ttl(&self, ttl: u8) -> io::Result<()> {
        options::set_ttl(self.as_fd(), ttl)
    }

    /// The `IP_MULTICAST_TTL` of outgoing multicast.
    pub fn multicast_ttl(&self) -> io::Result<u8> {
        options::multicast_ttl(self.as_fd())
    }

    /// Sets `IP_MULTICAST_TTL`: 0 keeps packets on this host, 1 (the
    /// default) on the local link.
    pub fn set_multicast_ttl(&self, ttl: u8) -> io::Result<()> {
        options::set_multicast_ttl(self.as_fd(), ttl)
    }

    /// Whether this host's own multicast is looped back (`IP_MULTICAST_LOOP`).
    pub fn multicast_loop(&self) -> io::Result<bool> {
        options::multicast_loop(self.as_fd())
    }

    /// Sets `IP_MULTICAST_LOOP`.
    pub fn set_multicast_loop(&self, on: bool) -> io::Result<()> {
        options::set_multicast_loop(self.as_fd(), on)
    }

    /// Whether a socket receives every group any socket on the host joined
    /// (`IP_MULTICAST_ALL`, on by default in Linux).
    pub fn multicast_all(&self) -> io::Result<bool> {
        options::multicast_all(self.as_fd())
    }

    /// Sets `IP_MULTICAST_ALL`; turn it off so that a socket only gets the
    /// groups it joined itself.
    pub fn set_multicast_all(&self, on: bool) -> io::Result<()> {
        options::set_multicast_all(self.as_fd(), on)
    }

    /// The interface outgoing multicast leaves through (`IP_MULTICAST_IF`),
    /// `None` when left to the routing table. Unlike Go's getter on Linux,
    /// this returns what was set.
    pub fn multicast_interface(&self) -> io::Result<Option<InterfaceInfo>> {
        options::multicast_interface(self.as_fd(), self.mcast_ifindex.load(Ordering::Relaxed))
    }

    /// Sets the interface outgoing multicast leaves through
    /// (`IP_MULTICAST_IF` with an `ip_mreqn` of index and address, so the
    /// source address is the interface's own).
    pub fn set_multicast_interface(&self, iface: &Interface) -> io::Result<()> {
        let info = options::set_multicast_interface(self.as_fd(), iface)?;
        self.mcast_ifindex.store(info.index, Ordering::Relaxed);
        Ok(())
    }

    /// Joins `group` on `iface` (`MCAST_JOIN_GROUP`), any source.
    ///
    /// At most `net.ipv4.igmp_max_memberships` (20 by default) groups per
    /// socket; past that the error is [`Error::MembershipLimit`].
    pub fn join_group(&self, iface: &Interface, group: Ipv4Addr) -> io::Result<()> {
        let index = options::group(self.as_fd(), GroupOp::Join, iface, group)?;
        self.memberships.group(GroupOp::Join, iface, index, group);
        Ok(())
    }

    /// Leaves `group` on `iface` (`MCAST_LEAVE_GROUP`); this also drops the
    /// group's source filters. Leaving a group not joined is an error.
    pub fn leave_group(&self, iface: &Interface, group: Ipv4Addr) -> io::Result<()> {
        let index = options::group(self.as_fd(), GroupOp::Leave, iface, group)?;
        self.memberships.group(GroupOp::Leave, iface, index, group);
        Ok(())
    }

    /// Source-specific multicast, include mode: receive `group` from
    /// `source` (`MCAST_JOIN_SOURCE_GROUP`). At most
    /// `net.ipv4.igmp_max_msf` (10 by default) sources per group.
    pub fn join_source_group(
        &self,
        iface: &Interface,
        group: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        let index = options::source(self.as_fd(), SourceOp::Join, iface, group, source)?;
        self.memberships
            .source(SourceOp::Join, iface, index, group, source);
        Ok(())
    }

    /// Include mode: stop receiving `group` from `source` (`MCAST_LEAVE_SOURCE_GROUP`).
    pub fn leave_source_group(
        &self,
        iface: &Interface,
        group: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        let index = options::source(self.as_fd(), SourceOp::Leave, iface, group, source)?;
        self.memberships
            .source(SourceOp::Leave, iface, index, group, source);
        Ok(())
    }

    /// Exclude mode, after [`join_group`](Self::join_group): stop receiving
    /// `group` from `source` (`MCAST_BLOCK_SOURCE`).
    pub fn block_source(
        &self,
        iface: &Interface,
        group: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        let index = options::source(self.as_fd(), SourceOp::Block, iface, group, source)?;
        self.memberships
            .source(SourceOp::Block, iface, index, group, source);
        Ok(())
    }

    /// Exclude mode: receive `group` from `source` again (`MCAST_UNBLOCK_SOURCE`).
    pub fn unblock_source(
        &self,
        iface: &Interface,
        group: Ipv4Addr,
        source: Ipv4Addr,
    ) -> io::Result<()> {
        let index = options::source(self.as_fd(), SourceOp::Unblock, iface, group, source)?;
        self.memberships
            .source(SourceOp::Unblock, iface, index, group, source);
        Ok(())
    }

    /// Joins again, with their source filters, the memberships this
    /// socket's interfaces took away: after an interface was deleted and
    /// re-created, its memberships went with the old device and the socket
    /// receives nothing, silently. Interfaces named by name are looked up
    /// again; a membership whose interface has a new index is left on the
    /// old one and joined on the new. Memberships still in place are left
    /// alone, so calling it when nothing changed is harmless. What the
    /// kernel does in each case (link down and up, address removed and
    /// added, device re-created) is in the table of the [`RejoinReport`]
    /// docs.
    ///
    /// Only memberships made through this socket's calls (or its
    /// [`ReceiverBuilder`]) are known; every one is tried, and the first
    /// error (typically: the interface is not there yet) is returned after
    /// all were tried.
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    /// use ipv4_reactor::{Interface, PacketConn};
    ///
    /// let rx = PacketConn::bind_udp("0.0.0.0:0".parse().unwrap())?;
    /// rx.join_group(&Interface::loopback(), Ipv4Addr::new(239, 255, 3, 1))?;
    /// let report = rx.rejoin()?; // lo was not re-created: nothing to do
    /// assert_eq!((report.unchanged, report.rejoined), (1, 0));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn rejoin(&self) -> io::Result<RejoinReport> {
        self.memberships.rejoin(self.as_fd())
    }

    /// How many (group, interface) memberships this socket made and did
    /// not leave (what [`rejoin`](Self::rejoin) would restore).
    pub fn membership_count(&self) -> usize {
        self.memberships.len()
    }

    /// The control messages currently asked for.
    pub fn control_flags(&self) -> ControlFlags {
        ControlFlags::from_bits_truncate(self.flags.load(Ordering::Acquire))
    }

    /// Turns the per-packet extras in `flags` on or off, leaving the others
    /// as they are (Go's `SetControlMessage`). Each flag is independent: the
    /// shared `IP_PKTINFO` switch stays on while any of `DST`, `INTERFACE`
    /// and `LOCAL` is on. Calls from several threads are serialised: none
    /// loses another's change.
    pub fn set_control_message(&self, flags: ControlFlags, on: bool) -> io::Result<()> {
        let _held = self.lock_flags();
        let old = self.control_flags();
        let new = if on {
            old.union(flags)
        } else {
            old.difference(flags)
        };
        self.apply_control_flags(old, new)
    }

    /// Sets exactly the per-packet extras in `flags`.
    pub fn set_control_flags(&self, flags: ControlFlags) -> io::Result<()> {
        let _held = self.lock_flags();
        self.apply_control_flags(self.control_flags(), flags)
    }

    /// The flags lock. It guards no data of its own (the flags are an
    /// atomic), so a panic while it was held leaves nothing inconsistent:
    /// a poisoned lock is taken anyway.
    fn lock_flags(&self) -> MutexGuard<'_, ()> {
        self.flags_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Switches the kernel from `old` to `new` and records `new`; the caller
    /// holds the flags lock.
    fn apply_control_flags(&self, old: ControlFlags, new: ControlFlags) -> io::Result<()> {
        options::apply_control_flags(self.as_fd(), old, new)?;
        self.flags.store(new.bits(), Ordering::Release);
        Ok(())
    }

    /// The socket's cumulative drop counter (`SO_RXQ_OVFL`, needs
    /// [`ControlFlags::DROPS`]) as last seen on a received packet; `None`
    /// until a packet carried it (the kernel adds it only once drops
    /// happened).
    pub fn kernel_drops_seen(&self) -> Option<u32> {
        let seen = self.drops_seen.load(Ordering::Relaxed);
        (seen & DROPS_SEEN != 0).then_some(seen as u32)
    }

    /// The socket's drop counter read from the kernel now (`SO_MEMINFO`):
    /// every packet dropped on this socket since it was opened (its receive
    /// buffer full, for one), including those no received packet has
    /// reported yet. The counter in control messages
    /// ([`ControlFlags::DROPS`], [`kernel_drops_seen`](Self::kernel_drops_seen))
    /// travels with the packet after the drops, so drops at the end of a
    /// burst that nothing follows show only here. Needs no control flag;
    /// one system call. The counter wraps at 2^32, as the kernel's does.
    ///
    /// ```
    /// use ipv4_reactor::PacketConn;
    ///
    /// let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
    /// assert_eq!(rx.kernel_drops_now()?, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn kernel_drops_now(&self) -> io::Result<u32> {
        const DROPS: usize = libc::SK_MEMINFO_DROPS as usize;
        let (info, len) = crate::sys::getsockopt_len::<[u32; DROPS + 1]>(
            self.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
        )
        .map_err(|e| {
            crate::error::os_with_hint("reading the socket's drop count (SO_MEMINFO)", e)
        })?;
        if len < (DROPS + 1) * size_of::<u32>() {
            return Err(io::Error::other(format!(
                "SO_MEMINFO answered {len} bytes, too few for the drop count"
            )));
        }
        Ok(info[DROPS])
    }

    /// The drops the kernel counted on this socket that no received packet
    /// has reported yet: the socket's own count ([`kernel_drops_now`](Self::kernel_drops_now))
    /// against the counter last seen on a packet ([`ControlFlags::DROPS`]),
    /// recorded as seen, so that no later packet reports them again. Add
    /// the result to what the packets reported ([`Packet::drops_before`](crate::Packet),
    /// [`RecvCounters::kernel_drops`](crate::RecvCounters)) and the sum is
    /// the kernel's count, the drops at the end of a burst included. Call
    /// it when the socket is quiet (at the end of a burst, before a summary,
    /// at shutdown); without `ControlFlags::DROPS`, the first call returns
    /// every drop since the socket was opened. One system call.
    ///
    /// ```
    /// use ipv4_reactor::PacketConn;
    ///
    /// let rx = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
    /// assert_eq!(rx.take_unreported_drops()?, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_unreported_drops(&self) -> io::Result<u32> {
        let now = self.kernel_drops_now()?;
        Ok(self.drops_delta(now))
    }

    /// Records `cur`, the cumulative drop counter a packet carried, and
    /// returns the drops since the value seen before (all of `cur` for the
    /// first one). The counter may wrap. A value older than the one
    /// recorded (another thread read a later packet of this socket first)
    /// counts 0 and leaves the newer one in place, so the deltas of all
    /// readers still add up to the kernel's count.
    #[inline]
    pub(crate) fn drops_delta(&self, cur: u32) -> u32 {
        let mut delta = 0;
        let _ = self
            .drops_seen
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |seen| {
                if seen & DROPS_SEEN == 0 {
                    delta = cur;
                } else {
                    delta = cur.wrapping_sub(seen as u32);
                    if delta as i32 <= 0 {
                        // The same value again, or an older one.
                        delta = 0;
                        return None;
                    }
                }
                Some(DROPS_SEEN | u64::from(cur))
            });
        delta
    }

    /// The control-message switches the kernel has on for this socket, read
    /// back with `getsockopt` (one call per switch; for checks and
    /// diagnostics, not the hot path). Several flags share one switch:
    /// `IP_PKTINFO` on reads as `DST | INTERFACE | LOCAL`; `SRC` is no
    /// socket option and never shows.
    ///
    /// ```
    /// use ipv4_reactor::{ControlFlags, PacketConn};
    /// let conn = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
    /// conn.set_control_flags(ControlFlags::TTL | ControlFlags::DST | ControlFlags::SRC)?;
    /// assert_eq!(
    ///     conn.kernel_control_flags()?,
    ///     ControlFlags::TTL | ControlFlags::DST | ControlFlags::INTERFACE | ControlFlags::LOCAL
    /// );
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn kernel_control_flags(&self) -> io::Result<ControlFlags> {
        options::kernel_control_flags(self.as_fd())
    }

    /// Receives one packet into `buf` and returns what came with it: the
    /// bytes written ([`RecvMeta::len`]), where it came from, the control
    /// messages and the truncation flags.
    ///
    /// The control message holds what [`control_flags`](Self::control_flags)
    /// asked for; a payload cut to fit `buf` and a lost control message are
    /// reported in [`RecvFlags`], never hidden. On a raw `ip4:PROTO` socket
    /// the IP header is removed and the source port is 0; a `buf` too short
    /// for the IP header itself is an error of kind `InvalidInput` that
    /// says the packet was truncated (it is lost).
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let flags = self.control_flags();
        let mut control = sys::CmsgBuf::<MAX_CONTROL_LEN>::new();
        let msg = sys::recvmsg(
            self.as_raw_fd(),
            buf,
            true,
            &mut control.0[..flags.control_len()],
            0,
        )?;
        let mut cm = ControlMessage::decode(&control.0[..msg.control_len], flags);
        let src = msg
            .src
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        if flags.contains(ControlFlags::SRC) {
            cm.src = Some(*src.ip());
        }
        let mut n = msg.len;
        if self.strip_ip_header {
            let hl = match ip_header_len(&buf[..n]) {
                Ok(hl) => hl,
                Err(e) => {
                    return Err(match header_beyond(&buf[..n]) {
                        Some(needed) if msg.flags & libc::MSG_TRUNC != 0 => {
                            header_cut_error(buf.len(), needed)
                        }
                        _ => e,
                    })
                }
            };
            buf.copy_within(hl..n, 0);
            n -= hl;
        }
        Ok(RecvMeta {
            len: n,
            src,
            cm,
            flags: RecvFlags::from_msg_flags(msg.flags),
        })
    }

    /// Sends `buf` to `dst`, with the per-packet options of `cm` if given:
    /// source address (`cm.local`) and interface (`IP_PKTINFO`), TTL and
    /// TOS. Replying from the address a request arrived on (received with
    /// [`ControlFlags::LOCAL`]) is
    /// `send_to(reply, Some(&ControlMessage::send_from(request_cm.local.unwrap(), None)), src)`,
    /// or `Some(&request_cm)` itself: each field keeps its meaning.
    pub fn send_to(
        &self,
        buf: &[u8],
        cm: Option<&ControlMessage>,
        dst: SocketAddrV4,
    ) -> io::Result<usize> {
        let control = |enc: &mut sys::cmsg::Encoder<'_>| match cm {
            Some(cm) => cm.encode(enc),
            None => Ok(()),
        };
        sys::sendmsg(self.as_raw_fd(), buf, Some(dst), control, 0)
    }

    /// Sends `buf` as several UDP datagrams of `segment_size` bytes (the
    /// last may be shorter) in one call, through UDP generic segmentation
    /// offload (`UDP_SEGMENT`). A receiver with [`ControlFlags::GRO`] may get
    /// them back coalesced; see [`crate::Packet::segments`].
    pub fn send_segments(
        &self,
        buf: &[u8],
        segment_size: u16,
        dst: SocketAddrV4,
    ) -> io::Result<usize> {
        if segment_size == 0 {
            return Err(crate::error::invalid(
                "UDP segment size must be at least 1 byte",
            ));
        }
        let control = |enc: &mut sys::cmsg::Encoder<'_>| enc.udp_segment(segment_size);
        sys::sendmsg(self.as_raw_fd(), buf, Some(dst), control, 0).map_err(|e| {
            Error::os(
                format!(
                    "sending {} bytes as {segment_size}-byte UDP segments to {dst}",
                    buf.len()
                ),
                e,
            )
        })
    }

    /// The ICMP filter of a raw ICMP socket (`ICMP_FILTER`).
    pub fn icmp_filter(&self) -> io::Result<crate::icmp::IcmpFilter> {
        sys::getsockopt::<u32>(self.as_fd(), libc::SOL_RAW, sys::ICMP_FILTER)
            .map(crate::icmp::IcmpFilter::from_mask)
            .map_err(|e| Error::os("reading ICMP_FILTER (raw ICMP sockets only)", e))
    }

    /// Sets the ICMP filter of a raw ICMP socket (`ICMP_FILTER`): blocked
    /// types are dropped by the kernel before they are queued.
    pub fn set_icmp_filter(&self, filter: &crate::icmp::IcmpFilter) -> io::Result<()> {
        sys::setsockopt(self.as_fd(), libc::SOL_RAW, sys::ICMP_FILTER, filter.mask())
            .map_err(|e| Error::os("setting ICMP_FILTER (raw ICMP sockets only)", e))
    }

    /// Attaches a classic BPF program (`SO_ATTACH_FILTER`, Go's `SetBPF`):
    /// packets for which it returns 0 are dropped before they are queued.
    /// An empty program, or one longer than [`BPF_MAX_INSTRUCTIONS`], is an
    /// error.
    ///
    /// [`BPF_MAX_INSTRUCTIONS`]: crate::BPF_MAX_INSTRUCTIONS
    ///
    /// A program that keeps only UDP payloads whose first byte is even (the
    /// filter sees the packet from the UDP header on; byte 8 is the first
    /// payload byte):
    ///
    /// ```
    /// use ipv4_reactor::SockFilter as I;
    /// let keep_even_first_byte = [
    ///     I::new(0x30, 0, 0, 8),           // ldb [8]
    ///     I::new(0x45, 1, 0, 1),           // jset #1, drop, keep
    ///     I::new(0x06, 0, 0, 0xffff_ffff), // keep: ret #-1
    ///     I::new(0x06, 0, 0, 0),           // drop: ret #0
    /// ];
    /// let rx = ipv4_reactor::PacketConn::bind_udp("127.0.0.1:0".parse().unwrap())?;
    /// rx.attach_filter(&keep_even_first_byte)?;
    /// rx.detach_filter()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn attach_filter(&self, program: &[socket2::SockFilter]) -> io::Result<()> {
        options::attach_filter(self.as_fd(), program)
    }

    /// Detaches the BPF program (`SO_DETACH_FILTER`).
    pub fn detach_filter(&self) -> io::Result<()> {
        options::detach_filter(self.as_fd())
    }

    /// The effective receive buffer (`SO_RCVBUF` as the kernel reports it:
    /// twice what was asked, capped by `net.core.rmem_max` unless forced).
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        options::recv_buffer_size(self.as_fd())
    }

    /// Asks for a receive buffer of `bytes` (`SO_RCVBUF`) and returns the
    /// effective size.
    pub fn set_recv_buffer_size(&self, bytes: usize) -> io::Result<usize> {
        options::set_recv_buffer_size(self.as_fd(), bytes, false)
    }

    /// Sets the receive buffer past `net.core.rmem_max` (`SO_RCVBUFFORCE`,
    /// needs CAP_NET_ADMIN; the error says so) and returns the effective size.
    pub fn force_recv_buffer_size(&self, bytes: usize) -> io::Result<usize> {
        options::set_recv_buffer_size(self.as_fd(), bytes, true)
    }

    /// `SO_BUSY_POLL`, in microseconds.
    pub fn busy_poll(&self) -> io::Result<u32> {
        options::busy_poll(self.as_fd())
    }

    /// Sets `SO_BUSY_POLL`: how long a blocking read spins on the device
    /// queue before sleeping (raising it past `net.core.busy_read` needs
    /// CAP_NET_ADMIN).
    pub fn set_busy_poll(&self, micros: u32) -> io::Result<()> {
        options::set_busy_poll(self.as_fd(), micros)
    }

    /// Sets `SO_PREFER_BUSY_POLL` (Linux 5.11 and later).
    pub fn set_prefer_busy_poll(&self, on: bool) -> io::Result<()> {
        options::set_prefer_busy_poll(self.as_fd(), on)
    }
}

/// Marks `PacketConn::drops_seen` as holding a value.
const DROPS_SEEN: u64 = 1 << 32;

/// A bound raw IPv4 socket for `protocol`, with `IP_HDRINCL` when
/// `header_included`; the error names the protocol and, on `EPERM`, the
/// capability needed.
pub(crate) fn raw_socket(
    protocol: u8,
    local: Ipv4Addr,
    header_included: bool,
) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(protocol))),
    )
    .map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EPERM) {
            " (raw sockets need CAP_NET_RAW)"
        } else {
            ""
        };
        Error::os(
            format!("creating a raw socket for protocol {protocol}{hint}"),
            e,
        )
    })?;
    if header_included {
        socket
            .set_header_included_v4(true)
            .map_err(|e| Error::os("setting IP_HDRINCL", e))?;
    }
    socket
        .bind(&SocketAddrV4::new(local, 0).into())
        .map_err(|e| Error::os(format!("binding raw socket to {local}"), e))?;
    Ok(socket)
}

/// When `packet` (as copied into a read buffer) is shorter than its own
/// IPv4 header, the header length it needs: the IHL's when the first byte
/// is there and reads as IPv4, else the 20-byte minimum.
pub(crate) fn header_beyond(packet: &[u8]) -> Option<usize> {
    let needed = match packet.first() {
        Some(&first) if first >> 4 == 4 && first & 0x0f >= 5 => usize::from(first & 0x0f) * 4,
        _ => 20,
    };
    (packet.len() < needed).then_some(needed)
}

/// The error for a raw read whose buffer (`buf_len` bytes) could not hold
/// the packet's IP header (`needed` bytes): the kernel cut the packet
/// (`MSG_TRUNC`) and it is lost. Not a malformed packet: the buffer is too
/// short.
pub(crate) fn header_cut_error(buf_len: usize, needed: usize) -> io::Error {
    crate::error::invalid(format!(
        "the {buf_len}-byte buffer is shorter than the packet's {needed}-byte IPv4 header: \
         the packet was truncated (MSG_TRUNC) and is lost; read raw packets into a buffer \
         of at least 60 bytes (65535 for any whole packet)"
    ))
}

/// The length of the IPv4 header at the start of `packet`, checked.
pub(crate) fn ip_header_len(packet: &[u8]) -> io::Result<usize> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let first = *packet
        .first()
        .ok_or_else(|| bad("raw socket returned an empty packet".into()))?;
    let hl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || hl < 20 || hl > packet.len() {
        return Err(bad(format!(
            "raw socket returned a malformed IPv4 header (first byte {first:#04x}, {} bytes)",
            packet.len()
        )));
    }
    Ok(hl)
}

/// Builder for a multicast receiver; see [`PacketConn::multicast_receiver`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ReceiverBuilder {
    group: SocketAddrV4,
    iface: Interface,
    recv_buffer: Option<usize>,
    force_recv_buffer: bool,
    nonblocking: bool,
    flags: ControlFlags,
    include: Vec<Ipv4Addr>,
    exclude: Vec<Ipv4Addr>,
    reuse_port: bool,
}

impl ReceiverBuilder {
    /// Asks for a receive buffer of `bytes`: `SO_RCVBUFFORCE` where the
    /// process may (CAP_NET_ADMIN), else `SO_RCVBUF` capped by
    /// `net.core.rmem_max`. Read the result with
    /// [`PacketConn::recv_buffer_size`].
    pub fn recv_buffer(mut self, bytes: usize) -> Self {
        self.recv_buffer = Some(bytes);
        self
    }

    /// Makes `build` fail, rather than fall back to the capped size, when
    /// `SO_RCVBUFFORCE` is not allowed.
    pub fn require_forced_recv_buffer(mut self, on: bool) -> Self {
        self.force_recv_buffer = on;
        self
    }

    /// Blocking or non-blocking (the default, as the reactor needs).
    pub fn nonblocking(mut self, on: bool) -> Self {
        self.nonblocking = on;
        self
    }

    /// The per-packet control messages to switch on.
    pub fn control(mut self, flags: ControlFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Source-specific include mode: receive only from `source` (repeat for
    /// several sources).
    pub fn source(mut self, source: Ipv4Addr) -> Self {
        self.include.push(source);
        self
    }

    /// Exclude mode: receive from every source but `source` (repeatable).
    pub fn exclude(mut self, source: Ipv4Addr) -> Self {
        self.exclude.push(source);
        self
    }

    /// Also set `SO_REUSEPORT`. Note that it does not spread multicast:
    /// every socket bound to the port gets every packet.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// Creates the socket, sets every option, binds and joins.
    pub fn build(self) -> io::Result<PacketConn> {
        let group = *self.group.ip();
        if !group.is_multicast() {
            return Err(Error::NotMulticast { group }.into());
        }
        if !self.include.is_empty() && !self.exclude.is_empty() {
            return Err(crate::error::invalid(
                "a receiver is either in include mode (source) or exclude mode (exclude), not both",
            ));
        }
        // Resolve first so that an unknown interface fails before any socket exists.
        self.iface.resolve()?;
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| crate::error::os_with_hint("creating a UDP socket", e))?;
        socket
            .set_reuse_address(true)
            .map_err(|e| Error::os("setting SO_REUSEADDR", e))?;
        if self.reuse_port {
            socket
                .set_reuse_port(true)
                .map_err(|e| Error::os("setting SO_REUSEPORT", e))?;
        }
        let conn = PacketConn::wrap(socket, false);
        conn.set_multicast_all(false)?;
        if let Some(bytes) = self.recv_buffer {
            match conn.force_recv_buffer_size(bytes) {
                Ok(_) => {}
                Err(e)
                    if !self.force_recv_buffer && Error::raw_os_error(&e) == Some(libc::EPERM) =>
                {
                    conn.set_recv_buffer_size(bytes)?;
                }
                Err(e) => return Err(e),
            }
        }
        conn.set_control_flags(self.flags)?;
        conn.socket
            .bind(&self.group.into())
            .map_err(|e| Error::os(format!("binding to {}", self.group), e))?;
        if self.include.is_empty() {
            conn.join_group(&self.iface, group)?;
            for &source in &self.exclude {
                conn.block_source(&self.iface, group, source)?;
            }
        } else {
            for &source in &self.include {
                conn.join_source_group(&self.iface, group, source)?;
            }
        }
        conn.set_nonblocking(self.nonblocking)?;
        Ok(conn)
    }
}

impl AsFd for PacketConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for PacketConn {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl IntoRawFd for PacketConn {
    fn into_raw_fd(self) -> RawFd {
        self.socket.into_raw_fd()
    }
}

impl PacketConn {
    /// Wraps an owned raw `ip4:PROTO` socket, whose reads carry an IP header
    /// that `recv_from` strips.
    pub fn from_raw_ip4(fd: OwnedFd) -> PacketConn {
        PacketConn::wrap(Socket::from(fd), true)
    }
}

impl PacketConn {
    /// Wraps a raw socket whose reads keep their IP header (`RawConn`).
    pub(crate) fn from_raw_with_header(socket: Socket) -> PacketConn {
        PacketConn::wrap(socket, false)
    }
}

impl From<UdpSocket> for PacketConn {
    fn from(s: UdpSocket) -> PacketConn {
        PacketConn::wrap(Socket::from(s), false)
    }
}

impl From<Socket> for PacketConn {
    /// Wraps a `socket2::Socket`; a `SOCK_RAW` one is read as `ip4:PROTO`
    /// (IP header stripped).
    fn from(s: Socket) -> PacketConn {
        let raw = matches!(s.r#type(), Ok(t) if t == Type::RAW);
        PacketConn::wrap(s, raw)
    }
}

impl From<OwnedFd> for PacketConn {
    /// Wraps an owned socket descriptor; a `SOCK_RAW` one is read as
    /// `ip4:PROTO` (IP header stripped).
    fn from(fd: OwnedFd) -> PacketConn {
        PacketConn::from(Socket::from(fd))
    }
}

impl From<PacketConn> for OwnedFd {
    fn from(c: PacketConn) -> OwnedFd {
        c.socket.into()
    }
}

impl From<PacketConn> for Socket {
    fn from(c: PacketConn) -> Socket {
        c.socket
    }
}

impl From<PacketConn> for UdpSocket {
    fn from(c: PacketConn) -> UdpSocket {
        c.socket.into()
    }
}

impl mio::event::Source for PacketConn {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        mio::unix::SourceFd(&self.as_raw_fd()).deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_deltas_are_per_socket_wrap_and_ignore_stale_values() {
        let conn = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(conn.kernel_drops_seen(), None);
        assert_eq!(conn.drops_delta(5), 5, "the first value counts whole");
        assert_eq!(conn.drops_delta(5), 0, "the same value again");
        assert_eq!(conn.drops_delta(8), 3);
        assert_eq!(conn.drops_delta(7), 0, "an older value (another reader)");
        assert_eq!(conn.kernel_drops_seen(), Some(8), "the newer one stays");
        assert_eq!(conn.drops_delta(9), 1);

        let other = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(other.drops_delta(u32::MAX - 1), u32::MAX - 1);
        assert_eq!(other.drops_delta(3), 5, "the counter wraps");
        assert_eq!(other.kernel_drops_seen(), Some(3));
        assert_eq!(conn.kernel_drops_seen(), Some(9), "each socket its own");
    }
}
