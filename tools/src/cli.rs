//! What the command lines of the tools share: exit statuses, and the clap
//! value parsers for group addresses, interfaces, numbers and switches.
//!
//! A value parser's error becomes clap's `invalid value 'X' for '--flag'`
//! message and exit status 2, like every other argument error.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use ipv4_reactor::{Interface, InterfaceInfo};

/// Exit status for a normal end (a signal included: the summary was printed).
pub const EXIT_OK: i32 = 0;
/// Exit status for a failure at run time (a socket call the kernel refused).
pub const EXIT_FAILURE: i32 = 1;
/// Exit status for bad arguments (clap's own, too).
pub const EXIT_USAGE: i32 = 2;

/// `GROUP:PORT` with a multicast group; port 0 lets the kernel pick (a
/// receiver's choice).
pub fn group_port_any(s: &str) -> Result<SocketAddrV4, String> {
    group_port(s, true)
}

/// `GROUP:PORT` with a multicast group and a real destination port.
pub fn group_port_dest(s: &str) -> Result<SocketAddrV4, String> {
    group_port(s, false)
}

fn group_port(s: &str, allow_port_0: bool) -> Result<SocketAddrV4, String> {
    let addr: SocketAddrV4 = s.parse().map_err(|_| {
        format!(
            "malformed GROUP:PORT {s:?}: expected a multicast IPv4 address and a port, like 239.255.0.1:5000"
        )
    })?;
    if !addr.ip().is_multicast() {
        return Err(format!(
            "{} (in {s:?}) is not a multicast group address: it must be in 224.0.0.0/4",
            addr.ip()
        ));
    }
    if addr.port() == 0 && !allow_port_0 {
        return Err(format!("{s:?}: port 0 is not a destination port"));
    }
    Ok(addr)
}

/// An IPv4 address, `a.b.c.d`.
pub fn ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address (a.b.c.d)"))
}

/// A unicast source address (`--source`, `--exclude`).
pub fn source(s: &str) -> Result<Ipv4Addr, String> {
    let addr = ipv4(s)?;
    if addr.is_multicast() || addr.is_unspecified() || addr.is_broadcast() {
        return Err(format!(
            "{s} cannot be a multicast source: give a unicast address"
        ));
    }
    Ok(addr)
}

/// A whole number, decimal or hexadecimal with `0x`.
pub fn whole(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse::<u64>(),
    }
    .map_err(|_| format!("{s:?} is not a whole number"))
}

/// A whole number in `min..=max` (decimal, or hexadecimal with `0x`).
pub fn whole_in(s: &str, min: u64, max: u64) -> Result<u64, String> {
    let v = whole(s)?;
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is out of range: it must be {min} to {max}"))
    }
}

/// Milliseconds, as a `Duration`.
pub fn millis(s: &str) -> Result<Duration, String> {
    whole(s).map(Duration::from_millis)
}

/// A finite, non-negative number (decimals allowed).
pub fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a non-negative number")),
    }
}

/// Seconds (decimals allowed), as a `Duration`.
pub fn seconds(s: &str) -> Result<Duration, String> {
    let v = non_negative(s)?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("{s} seconds is too long"))
}

/// `--reorder-window`: a power of two from 64 to 16777216 (2^24), the
/// sizes the library's sequence tracker takes.
pub fn reorder_window(s: &str) -> Result<u64, String> {
    use ipv4_reactor::feed::{MAX_WINDOW, MIN_WINDOW};
    let v = whole(s)?;
    if v.is_power_of_two() && (MIN_WINDOW..=MAX_WINDOW).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{s} is not a reorder window: a power of two from {MIN_WINDOW} to {MAX_WINDOW}"
        ))
    }
}

/// `A-B` (or `A` alone): an inclusive range of sequence numbers, A <= B.
pub fn seq_range(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("{s:?} is not a range of sequence numbers: A-B (A <= B) or A");
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a, b),
        None => (s, s),
    };
    let a = whole(a).map_err(|_| bad())?;
    let b = whole(b).map_err(|_| bad())?;
    if a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// `on` or `off` (also `1`/`0`, `true`/`false`, `yes`/`no`).
pub fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "1" | "true" | "yes" => Ok(true),
        "off" | "0" | "false" | "no" => Ok(false),
        _ => Err(format!("{s:?} is neither on nor off")),
    }
}

/// An interface named on the command line, looked up when the arguments
/// are parsed, so that an unknown one is an argument error naming it.
#[derive(Debug, Clone)]
pub struct Iface {
    /// As given: by name, index or address.
    pub iface: Interface,
    /// What the kernel says about it now.
    pub info: InterfaceInfo,
}

impl Iface {
    /// A human name for the interface: `lo (#1, 127.0.0.1)`.
    pub fn label(&self) -> String {
        match self.info.addr {
            Some(addr) => format!("{} (#{}, {addr})", self.info.name, self.info.index),
            None => format!("{} (#{}, no IPv4 address)", self.info.name, self.info.index),
        }
    }
}

/// `--iface`: a name (`lo`), an index (`1`) or one of its addresses.
pub fn iface(s: &str) -> Result<Iface, String> {
    let iface: Interface = s.parse().map_err(|e| format!("{e}"))?;
    let info = iface.resolve().map_err(|e| format!("{e}"))?;
    Ok(Iface { iface, info })
}

/// Whether an error from the library is about an argument (bad address,
/// unknown interface, not a local address, too many sources for the
/// kernel's membership limits) rather than a kernel failure.
pub fn is_argument_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::NotFound
    ) || ipv4_reactor::Error::raw_os_error(e) == Some(libc::EADDRNOTAVAIL)
        || matches!(
            ipv4_reactor::Error::of(e),
            Some(ipv4_reactor::Error::MembershipLimit { .. })
        )
}

/// A failure after the arguments were parsed, with its exit status.
#[derive(Debug)]
pub struct Failure {
    /// [`EXIT_USAGE`] or [`EXIT_FAILURE`].
    pub status: i32,
    /// What went wrong, for stderr.
    pub msg: String,
}

impl Failure {
    /// A bad argument that only the kernel or the library could tell.
    pub fn usage(msg: impl Into<String>) -> Failure {
        Failure {
            status: EXIT_USAGE,
            msg: msg.into(),
        }
    }

    /// A failure at run time: `what` was being done when `e` happened.
    pub fn runtime(what: &str, e: impl std::fmt::Display) -> Failure {
        Failure {
            status: EXIT_FAILURE,
            msg: format!("{what}: {e}"),
        }
    }

    /// An argument error if `e` is about an argument, else a run-time one.
    pub fn classify(what: &str, e: io::Error) -> Failure {
        let status = if is_argument_error(&e) {
            EXIT_USAGE
        } else {
            EXIT_FAILURE
        };
        Failure {
            status,
            msg: format!("{what}: {e}"),
        }
    }
}

/// A kernel error with no more context: a run-time failure.
impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure {
            status: EXIT_FAILURE,
            msg: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_take_hex_and_check_ranges() {
        assert_eq!(whole("0x28"), Ok(40));
        assert_eq!(whole("40"), Ok(40));
        assert!(whole("0xzz").unwrap_err().contains("0xzz"));
        assert!(whole_in("256", 0, 255).unwrap_err().contains("256"));
        assert_eq!(whole_in("255", 0, 255), Ok(255));
    }

    #[test]
    fn groups_must_be_multicast_with_a_port() {
        assert!(group_port_any("239.1.2.3:0").is_ok());
        assert!(group_port_dest("239.1.2.3:0")
            .unwrap_err()
            .contains("port 0"));
        assert!(group_port_any("10.0.0.1:5000")
            .unwrap_err()
            .contains("10.0.0.1"));
        assert!(group_port_any("239.1.1:5000")
            .unwrap_err()
            .contains("239.1.1:5000"));
    }

    #[test]
    fn windows_and_ranges() {
        assert_eq!(reorder_window("1024"), Ok(1024));
        assert!(reorder_window("1000").unwrap_err().contains("1000"));
        assert!(reorder_window("32").is_err());
        assert_eq!(seq_range("10-19"), Ok((10, 19)));
        assert_eq!(seq_range("7"), Ok((7, 7)));
        assert!(seq_range("9-3").unwrap_err().contains("9-3"));
        assert!(seq_range("a-b").unwrap_err().contains("a-b"));
    }

    #[test]
    fn switches_and_durations() {
        assert_eq!(on_off("off"), Ok(false));
        assert!(on_off("maybe").unwrap_err().contains("maybe"));
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(seconds("-1").is_err());
        assert!(non_negative("fast").unwrap_err().contains("fast"));
    }
}
