//! The crate's typed error, carried inside [`std::io::Error`].
//!
//! Every fallible call in this crate returns [`std::io::Result`], so it composes
//! with `std`, `mio` and `socket2`. Two kinds of failure carry an
//! [`Error`] inside the `io::Error` so that a program (or a person reading the
//! message) can tell what went wrong:
//!
//! - bad arguments detected before any system call (a unicast "group", a
//!   multicast "source", an unknown interface name, TTL 0, ...), with
//!   [`std::io::ErrorKind::InvalidInput`];
//! - kernel errors with context: which operation, which group, which
//!   interface, and for the membership limits which sysctl sets the limit.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use ipv4_reactor::{Error, Interface, PacketConn};
//!
//! let conn = PacketConn::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
//! let err = conn
//!     .join_group(&Interface::name("lo"), Ipv4Addr::new(10, 0, 0, 1))
//!     .unwrap_err();
//! assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
//! assert!(matches!(Error::of(&err), Some(Error::NotMulticast { .. })));
//! assert!(err.to_string().contains("10.0.0.1"));
//! ```

use std::fmt;
use std::io;
use std::net::Ipv4Addr;

/// What kind of membership limit was hit (see [`Error::MembershipLimit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// Too many groups joined on one socket (`net.ipv4.igmp_max_memberships`).
    Groups,
    /// Too many sources for one group on one socket (`net.ipv4.igmp_max_msf`).
    SourcesPerGroup,
}

impl Limit {
    /// The sysctl that sets this limit.
    pub fn sysctl(self) -> &'static str {
        match self {
            Limit::Groups => "net.ipv4.igmp_max_memberships",
            Limit::SourcesPerGroup => "net.ipv4.igmp_max_msf",
        }
    }

    /// Reads the limit's current value from `/proc/sys`, if it can be read.
    pub fn current(self) -> Option<u32> {
        let path = format!("/proc/sys/{}", self.sysctl().replace('.', "/"));
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
}

/// The crate's typed errors. Obtain one from an `io::Error` with [`Error::of`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A group address given to a multicast call is not in 224.0.0.0/4.
    NotMulticast {
        /// The address that was given.
        group: Ipv4Addr,
    },
    /// A source address given to a source-filter call is not a unicast address.
    NotUnicastSource {
        /// The address that was given.
        source: Ipv4Addr,
    },
    /// No interface has this name.
    UnknownInterfaceName(String),
    /// No interface has this index.
    UnknownInterfaceIndex(u32),
    /// No interface holds this IPv4 address.
    UnknownInterfaceAddr(Ipv4Addr),
    /// An interface name that cannot be an interface name (empty, too long or with NUL).
    InvalidInterfaceName(String),
    /// A TTL of 0 (the kernel answers `EINVAL`; a TTL is 1 to 255).
    InvalidTtl(u8),
    /// Some other argument is out of its range; the text says which and why.
    InvalidArgument(String),
    /// The kernel refused a join because a membership limit was reached.
    MembershipLimit {
        /// Which limit.
        limit: Limit,
        /// Its value when the error happened, if `/proc` could be read.
        max: Option<u32>,
        /// The operation, group, source and interface, in words.
        context: String,
    },
    /// A system call failed; `context` says what was being done.
    Os {
        /// The operation, with its arguments, in words.
        context: String,
        /// The kernel's error.
        source: io::Error,
    },
    /// A reactor backend asked for by name cannot run here
    /// ([`ReactorBuilder::backend`](crate::reactor::ReactorBuilder::backend)):
    /// `missing` names what the kernel, the process or the build lacks
    /// (found by probing, not guessed from the kernel version), `source`
    /// is the kernel's error when there was one. Kind `Unsupported`.
    BackendUnavailable {
        /// The backend asked for (`"io_uring"`).
        backend: &'static str,
        /// What is missing.
        missing: String,
        /// The kernel's error, if one said so.
        source: Option<io::Error>,
    },
}

impl Error {
    /// Returns the crate error carried by an `io::Error`, if it carries one.
    pub fn of(err: &io::Error) -> Option<&Error> {
        err.get_ref()?.downcast_ref::<Error>()
    }

    /// The operating-system error code behind an `io::Error` returned by this
    /// crate, looking through the added context.
    ///
    /// ```
    /// # use std::io;
    /// let e = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
    /// assert_eq!(ipv4_reactor::Error::raw_os_error(&e), Some(libc::EADDRNOTAVAIL));
    /// ```
    pub fn raw_os_error(err: &io::Error) -> Option<i32> {
        if let Some(code) = err.raw_os_error() {
            return Some(code);
        }
        match Error::of(err)? {
            Error::Os { source, .. } => source.raw_os_error(),
            Error::MembershipLimit { .. } => Some(libc::ENOBUFS),
            _ => None,
        }
    }

    fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Os { source, .. } => source.kind(),
            Error::MembershipLimit { .. } => io::ErrorKind::OutOfMemory,
            Error::BackendUnavailable { .. } => io::ErrorKind::Unsupported,
            Error::UnknownInterfaceName(_)
            | Error::UnknownInterfaceIndex(_)
            | Error::UnknownInterfaceAddr(_) => io::ErrorKind::NotFound,
            _ => io::ErrorKind::InvalidInput,
        }
    }

    /// Wraps a kernel error with what was being done when it happened.
    pub(crate) fn os(context: impl Into<String>, source: io::Error) -> io::Error {
        Error::Os {
            context: context.into(),
            source,
        }
        .into()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotMulticast { group } => {
                write!(f, "{group} is not a multicast group address (224.0.0.0/4)")
            }
            Error::NotUnicastSource { source } => write!(
                f,
                "{source} cannot be a multicast source: a source must be a unicast address"
            ),
            Error::UnknownInterfaceName(name) => write!(f, "no network interface named {name:?}"),
            Error::UnknownInterfaceIndex(index) => {
                write!(f, "no network interface with index {index}")
            }
            Error::UnknownInterfaceAddr(addr) => {
                write!(f, "no network interface holds the address {addr}")
            }
            Error::InvalidInterfaceName(name) => {
                write!(
                    f,
                    "{name:?} cannot be an interface name (1 to 15 bytes, no NUL)"
                )
            }
            Error::InvalidTtl(ttl) => write!(f, "TTL {ttl} is out of range: it must be 1 to 255"),
            Error::InvalidArgument(what) => f.write_str(what),
            Error::MembershipLimit {
                limit,
                max,
                context,
            } => {
                let what = match limit {
                    Limit::Groups => "groups per socket",
                    Limit::SourcesPerGroup => "sources per group on one socket",
                };
                match max {
                    Some(max) => write!(
                        f,
                        "{context}: membership limit reached: at most {max} {what} ({} = {max})",
                        limit.sysctl()
                    ),
                    None => write!(
                        f,
                        "{context}: membership limit reached: {what} (set by {})",
                        limit.sysctl()
                    ),
                }
            }
            Error::Os { context, source } => write!(f, "{context}: {source}"),
            Error::BackendUnavailable {
                backend,
                missing,
                source,
            } => {
                write!(
                    f,
                    "the {backend} reactor backend cannot run here: missing {missing}"
                )?;
                if let Some(e) = source {
                    write!(f, " ({e})")?;
                }
                write!(
                    f,
                    "; use Backend::Mio, or Backend::IoUringOrMio to fall back to it"
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os { source, .. } => Some(source),
            Error::BackendUnavailable {
                source: Some(source),
                ..
            } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        io::Error::new(err.kind(), err)
    }
}

/// Shorthand for an invalid-argument `io::Error` with a message.
pub(crate) fn invalid(what: impl Into<String>) -> io::Error {
    Error::InvalidArgument(what.into()).into()
}

/// An OS error with what was being done, and what to do about the limits a
/// descriptor or an epoll registration can hit.
pub(crate) fn os_with_hint(what: &str, e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EMFILE) => {
            " (the process's descriptor limit, RLIMIT_NOFILE (ulimit -n), is reached: close descriptors or raise it)"
        }
        Some(libc::ENFILE) => " (the system's descriptor limit, fs.file-max, is reached)",
        Some(libc::ENOSPC) => {
            " (epoll's watch limit, /proc/sys/fs/epoll/max_user_watches, is reached)"
        }
        Some(libc::ENOMEM) => " (out of kernel memory)",
        _ => "",
    };
    Error::os(format!("{what}{hint}"), e)
}
