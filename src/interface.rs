//! Naming a network interface: by index, by name or by one of its IPv4
//! addresses.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};
use std::str::FromStr;

use crate::error::Error;
use crate::sys;

/// An interface, as the caller names it. Accepted by every call that takes an
/// interface; an unknown name, index or address is an error that names it.
///
/// `Interface::Routed` leaves the choice to the kernel's routing table. It is
/// allowed, but never the default of a helper in this crate: a multicast
/// sender that leaves the choice to the routing table sends out of the
/// default route's interface.
///
/// ```
/// use std::net::Ipv4Addr;
/// use ipv4_reactor::Interface;
///
/// let lo: Interface = "lo".parse().unwrap();
/// assert_eq!(lo, Interface::name("lo"));
/// assert_eq!("1".parse::<Interface>().unwrap(), Interface::Index(1));
/// assert_eq!("127.0.0.1".parse::<Interface>().unwrap(), Interface::Addr(Ipv4Addr::LOCALHOST));
///
/// let info = lo.resolve().unwrap();
/// assert_eq!(info.index, 1);
/// assert_eq!(info.addr, Some(Ipv4Addr::LOCALHOST));
/// assert!(Interface::name("no-such-if0").resolve().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Interface {
    /// By interface index (`ip link` shows it first).
    Index(u32),
    /// By name, such as `"lo"` or `"eth1"`.
    Name(String),
    /// By one of the interface's IPv4 addresses.
    Addr(Ipv4Addr),
    /// No interface: the kernel picks one from the routing table.
    Routed,
}

/// A resolved interface: index, name and its first IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct InterfaceInfo {
    /// The interface index (0 for [`Interface::Routed`]).
    pub index: u32,
    /// The interface name (empty for [`Interface::Routed`]).
    pub name: String,
    /// The interface's IPv4 address: the one it was named by, or its first.
    pub addr: Option<Ipv4Addr>,
}

impl Interface {
    /// The loopback interface, `lo`.
    pub fn loopback() -> Interface {
        Interface::Name("lo".to_string())
    }

    /// By name.
    pub fn name(name: impl Into<String>) -> Interface {
        Interface::Name(name.into())
    }

    /// By index.
    pub fn index(index: u32) -> Interface {
        Interface::Index(index)
    }

    /// By address.
    pub fn addr(addr: Ipv4Addr) -> Interface {
        Interface::Addr(addr)
    }

    /// Looks the interface up, as the calling thread's network namespace
    /// sees it: its index, name and IPv4 address.
    pub fn resolve(&self) -> io::Result<InterfaceInfo> {
        if *self == Interface::Routed {
            return Ok(InterfaceInfo::routed());
        }
        let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .map_err(|e| Error::os("creating a socket to look up interfaces", e))?;
        self.resolve_on(probe.as_fd())
    }

    /// Looks the interface up as the network namespace of `socket` sees
    /// it, whichever namespace the calling thread is in. Every call of this
    /// crate that names an interface for a socket resolves it this way.
    pub fn resolve_on(&self, socket: BorrowedFd<'_>) -> io::Result<InterfaceInfo> {
        match self {
            Interface::Routed => Ok(InterfaceInfo::routed()),
            Interface::Index(index) => {
                let name = sys::if_name_on(socket, *index)
                    .map_err(|e| {
                        Error::os(format!("looking up interface #{index} (SIOCGIFNAME)"), e)
                    })?
                    .ok_or(Error::UnknownInterfaceIndex(*index))?;
                let addr = sys::if_addr_on(socket, &name);
                Ok(InterfaceInfo {
                    index: *index,
                    name,
                    addr,
                })
            }
            Interface::Name(name) => {
                if name.is_empty() || name.len() >= libc::IF_NAMESIZE || name.contains('\0') {
                    return Err(Error::InvalidInterfaceName(name.clone()).into());
                }
                let index = index_of(socket, name)?;
                Ok(InterfaceInfo {
                    index,
                    name: name.clone(),
                    addr: sys::if_addr_on(socket, name),
                })
            }
            Interface::Addr(addr) => {
                let addrs = sys::ipv4_addrs_on(socket)
                    .map_err(|e| Error::os("listing interface addresses (SIOCGIFCONF)", e))?;
                let (label, _) = addrs
                    .into_iter()
                    .find(|(_, a)| a == addr)
                    .ok_or(Error::UnknownInterfaceAddr(*addr))?;
                // An alias label "eth0:1" belongs to interface "eth0".
                let name = label.split(':').next().unwrap_or(&label).to_string();
                let index = index_of(socket, &name)?;
                Ok(InterfaceInfo {
                    index,
                    name,
                    addr: Some(*addr),
                })
            }
        }
    }
}

/// The index of the interface named `name` in the socket's namespace.
fn index_of(socket: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
    sys::if_index_on(socket, name)
        .map_err(|e| Error::os(format!("looking up interface {name} (SIOCGIFINDEX)"), e))?
        .ok_or_else(|| Error::UnknownInterfaceName(name.to_string()).into())
}

impl InterfaceInfo {
    fn routed() -> InterfaceInfo {
        InterfaceInfo {
            index: 0,
            name: String::new(),
            addr: None,
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interface::Index(i) => write!(f, "interface #{i}"),
            Interface::Name(n) => write!(f, "interface {n}"),
            Interface::Addr(a) => write!(f, "interface {a}"),
            Interface::Routed => f.write_str("the routed interface"),
        }
    }
}

impl FromStr for Interface {
    type Err = io::Error;

    /// A number is an index, a dotted quad an address, anything else a name.
    fn from_str(s: &str) -> io::Result<Interface> {
        if s.is_empty() {
            return Err(Error::InvalidInterfaceName(String::new()).into());
        }
        if let Ok(index) = s.parse::<u32>() {
            return Ok(Interface::Index(index));
        }
        if let Ok(addr) = s.parse::<Ipv4Addr>() {
            return Ok(Interface::Addr(addr));
        }
        Ok(Interface::Name(s.to_string()))
    }
}

impl From<u32> for Interface {
    fn from(index: u32) -> Interface {
        Interface::Index(index)
    }
}

impl From<Ipv4Addr> for Interface {
    fn from(addr: Ipv4Addr) -> Interface {
        Interface::Addr(addr)
    }
}

impl From<&Interface> for Interface {
    fn from(i: &Interface) -> Interface {
        i.clone()
    }
}
