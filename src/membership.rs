//! What a socket joined, remembered so that it can be joined again after
//! its interface changed under it ([`PacketConn::rejoin`](crate::PacketConn::rejoin)).

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;
use std::sync::Mutex;

use crate::interface::Interface;
use crate::options::{self, membership_error, GroupOp, SourceOp};
use crate::sys;

/// What [`PacketConn::rejoin`](crate::PacketConn::rejoin) did.
///
/// # What the kernel does to memberships when an interface changes
///
/// Seen on Linux 6.18 with a veth pair between two network namespaces, a
/// UDP socket joined by interface index (`MCAST_JOIN_GROUP`), and checked
/// by `tests/interface_faults.rs`:
///
/// | The interface… | Memberships | Packets |
/// |---|---|---|
/// | goes down, then up | kept (`/proc/net/igmp` still lists the group) | those sent while it was down are lost; delivery resumes by itself once it is up |
/// | loses its last IPv4 address, then gets it back | kept | still delivered while it has no address (the group is joined by index, routing of multicast input does not need a local address) |
/// | is deleted and re-created under the same name | gone with the old device; the new one has a new index | none, silently: the socket stays open and quiet. The socket still holds the dead membership (it counts towards `igmp_max_memberships`, and leaving it by its old index succeeds) |
///
/// No error reaches the socket in any of these cases: a receive never
/// fails, it only stops returning packets. So a feed learns of the third
/// case from silence (a staleness check, e.g. a periodic reactor timer
/// reading [`SocketCounters`](crate::reactor::SocketCounters)) or from a
/// netlink watch (`RTM_DELLINK`/`RTM_NEWLINK`, which can be registered
/// with the reactor as a foreign source), and then calls
/// [`PacketConn::rejoin`](crate::PacketConn::rejoin) (or
/// [`Reactor::rejoin`](crate::reactor::Reactor::rejoin)): interfaces given
/// by name are looked up again, memberships whose interface got a new
/// index are left on the dead index (freeing the slot) and joined on the
/// new one, with their source filters. Calling it when nothing changed is
/// harmless: memberships whose index did not change are left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[non_exhaustive]
pub struct RejoinReport {
    /// Memberships found in place (their interface kept its index and, for
    /// any-source groups, the kernel still had the join).
    pub unchanged: usize,
    /// Memberships joined again (the interface was re-created with a new
    /// index, or the kernel had dropped the join), with their source
    /// filters.
    pub rejoined: usize,
}

impl fmt::Display for RejoinReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} membership(s) in place, {} joined again",
            self.unchanged, self.rejoined
        )
    }
}

/// One group on one interface, as the socket's calls left it.
#[derive(Debug, Clone)]
struct Membership {
    /// The interface as the caller named it (a name is looked up again).
    iface: Interface,
    /// The index it had when joined.
    ifindex: u32,
    group: Ipv4Addr,
    /// Include mode: the sources joined (empty: any-source mode).
    include: Vec<Ipv4Addr>,
    /// Exclude mode: the sources blocked.
    exclude: Vec<Ipv4Addr>,
}

/// The memberships of one socket (a lock taken only by membership calls).
#[derive(Debug, Default)]
pub(crate) struct Memberships(Mutex<Vec<Membership>>);

impl Memberships {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<Membership>) -> R) -> R {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut list)
    }

    fn find(list: &[Membership], group: Ipv4Addr, ifindex: u32) -> Option<usize> {
        list.iter()
            .position(|m| m.group == group && m.ifindex == ifindex)
    }

    /// Records a successful group operation.
    pub(crate) fn group(&self, op: GroupOp, iface: &Interface, ifindex: u32, group: Ipv4Addr) {
        self.with(|list| match (op, Self::find(list, group, ifindex)) {
            (GroupOp::Join, None) => list.push(Membership {
                iface: iface.clone(),
                ifindex,
                group,
                include: Vec::new(),
                exclude: Vec::new(),
            }),
            (GroupOp::Join, Some(_)) => {}
            (GroupOp::Leave, Some(i)) => {
                list.swap_remove(i);
            }
            (GroupOp::Leave, None) => {}
        })
    }

    /// Records a successful source-filter operation.
    pub(crate) fn source(
        &self,
        op: SourceOp,
        iface: &Interface,
        ifindex: u32,
        group: Ipv4Addr,
        source: Ipv4Addr,
    ) {
        self.with(|list| {
            let i = match Self::find(list, group, ifindex) {
                Some(i) => i,
                None if op == SourceOp::Join => {
                    list.push(Membership {
                        iface: iface.clone(),
                        ifindex,
                        group,
                        include: Vec::new(),
                        exclude: Vec::new(),
                    });
                    list.len() - 1
                }
                None => return,
            };
            let m = &mut list[i];
            match op {
                SourceOp::Join if !m.include.contains(&source) => m.include.push(source),
                SourceOp::Join => {}
                SourceOp::Leave => {
                    m.include.retain(|&s| s != source);
                    // Leaving the last included source leaves the group.
                    if m.include.is_empty() {
                        list.swap_remove(i);
                    }
                }
                SourceOp::Block if !m.exclude.contains(&source) => m.exclude.push(source),
                SourceOp::Block => {}
                SourceOp::Unblock => m.exclude.retain(|&s| s != source),
            }
        })
    }

    /// How many (group, interface) memberships are recorded.
    pub(crate) fn len(&self) -> usize {
        self.with(|list| list.len())
    }

    /// Joins again what the interfaces' changes took away; see the module
    /// docs. Every membership is tried; the first error is returned after
    /// all were tried (the others that succeeded stay joined and recorded).
    pub(crate) fn rejoin(&self, fd: BorrowedFd<'_>) -> io::Result<RejoinReport> {
        self.with(|list| {
            let mut report = RejoinReport::default();
            let mut first_error = None;
            for m in list.iter_mut() {
                match rejoin_one(fd, m) {
                    Ok(true) => report.rejoined += 1,
                    Ok(false) => report.unchanged += 1,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => Ok(report),
            }
        })
    }
}

/// Whether the membership had to be joined again.
fn rejoin_one(fd: BorrowedFd<'_>, m: &mut Membership) -> io::Result<bool> {
    let info = m.iface.resolve_on(fd).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "rejoining group {} on {}: the interface is not there ({e})",
                m.group, m.iface
            ),
        )
    })?;
    if info.index == m.ifindex {
        if !m.include.is_empty() {
            // Include mode on the same index: the kernel drops memberships
            // only with their device, which would have changed the index.
            return Ok(false);
        }
        // Any-source: ask the kernel; "already joined" means in place.
        return match sys::group_op(fd, libc::MCAST_JOIN_GROUP, info.index, m.group) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Ok(false),
            Err(e) => Err(membership_error(
                format!("rejoining group {} on {}", m.group, m.iface),
                e,
                crate::error::Limit::Groups,
            )),
            Ok(()) => {
                apply_blocks(fd, m, info.index)?;
                Ok(true)
            }
        };
    }
    // The device was re-created: leave the dead membership (it still holds
    // a slot of igmp_max_memberships; an error here only means the kernel
    // already forgot it), then join on the new index.
    let _ = sys::group_op(fd, libc::MCAST_LEAVE_GROUP, m.ifindex, m.group);
    let by_index = Interface::Index(info.index);
    if m.include.is_empty() {
        options::group(fd, GroupOp::Join, &by_index, m.group)?;
        m.ifindex = info.index;
        apply_blocks(fd, m, info.index)?;
    } else {
        for &source in &m.include {
            options::source(fd, SourceOp::Join, &by_index, m.group, source)?;
        }
        m.ifindex = info.index;
    }
    Ok(true)
}

fn apply_blocks(fd: BorrowedFd<'_>, m: &Membership, ifindex: u32) -> io::Result<()> {
    let by_index = Interface::Index(ifindex);
    for &source in &m.exclude {
        options::source(fd, SourceOp::Block, &by_index, m.group, source)?;
    }
    Ok(())
}
