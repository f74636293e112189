// Shared by the `mcast_dump` and `mcast_send` examples (included with
// `mod common;`; a subdirectory of examples/ is not built as an example):
// hand-rolled argument parsing, stdout/stderr helpers and a small JSON
// writer, so that the examples need no dependency beyond the crate's own.

// Each example uses a different part of this module.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process;
use std::time::Duration;

use ipv4_reactor::{Interface, InterfaceInfo};

/// Exit status for a normal end.
pub const EXIT_OK: i32 = 0;
/// Exit status for a failure at run time (a socket call the kernel refused).
pub const EXIT_FAILURE: i32 = 1;
/// Exit status for bad arguments.
pub const EXIT_USAGE: i32 = 2;

/// Writes one line to stderr. Errors are ignored: there is nowhere left to
/// report them (and `eprintln!` would panic).
pub fn diag(tool: &str, msg: impl fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{tool}: {msg}");
}

/// Reports a bad argument and exits with status 2.
pub fn usage_error(tool: &str, msg: impl fmt::Display) -> ! {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{tool}: {msg}");
    let _ = writeln!(err, "Try '{tool} --help' for usage.");
    process::exit(EXIT_USAGE)
}

/// Writes `bytes` to stdout. A closed pipe (`mcast_dump ... | head`) ends
/// the program quietly; any other error ends it with status 1.
pub fn out(tool: &str, bytes: &[u8]) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            process::exit(EXIT_OK);
        }
        diag(tool, format_args!("writing to stdout: {e}"));
        process::exit(EXIT_FAILURE);
    }
}

/// One item of the command line.
pub enum Arg {
    /// `--name` or `--name=value` (the value is kept for [`Args::value`]).
    Flag(String),
    /// Anything that does not start with `--`, or a lone `-`.
    Positional(String),
}

/// The command line, walked one item at a time.
pub struct Args {
    tool: &'static str,
    items: std::vec::IntoIter<OsString>,
    /// The `value` of a `--flag=value` just returned by [`Args::next`].
    inline: Option<String>,
}

impl Args {
    /// The process's arguments, without the program name.
    pub fn from_env(tool: &'static str) -> Args {
        Args::new(tool, std::env::args_os().skip(1).collect())
    }

    pub fn new(tool: &'static str, items: Vec<OsString>) -> Args {
        Args {
            tool,
            items: items.into_iter(),
            inline: None,
        }
    }

    pub fn tool(&self) -> &'static str {
        self.tool
    }

    /// The next item, or `None` at the end. A `--flag=value` left with its
    /// value unread is an error ("takes no value").
    pub fn next(&mut self) -> Option<Arg> {
        let item = self.items.next()?;
        let item = item.into_string().unwrap_or_else(|bad| {
            usage_error(
                self.tool,
                format_args!("argument {bad:?} is not valid UTF-8"),
            )
        });
        match item.strip_prefix("--") {
            Some(rest) if !rest.is_empty() => match rest.split_once('=') {
                Some((name, value)) => {
                    self.inline = Some(value.to_string());
                    Some(Arg::Flag(format!("--{name}")))
                }
                None => {
                    self.inline = None;
                    Some(Arg::Flag(item))
                }
            },
            _ => {
                self.inline = None;
                Some(Arg::Positional(item))
            }
        }
    }

    /// The value of `flag`: after `=`, or the next item.
    pub fn value(&mut self, flag: &str) -> String {
        if let Some(v) = self.inline.take() {
            return v;
        }
        match self.items.next().map(OsString::into_string) {
            Some(Ok(v)) => v,
            Some(Err(bad)) => usage_error(
                self.tool,
                format_args!("{flag}: value {bad:?} is not valid UTF-8"),
            ),
            None => usage_error(self.tool, format_args!("{flag} needs a value")),
        }
    }

    /// Checks that a flag without a value was not given one (`--quiet=1`).
    pub fn no_value(&mut self, flag: &str) {
        if let Some(v) = self.inline.take() {
            usage_error(
                self.tool,
                format_args!("{flag} takes no value (got {flag}={v})"),
            );
        }
    }

    /// Reports an unknown flag and exits with status 2.
    pub fn unknown(&self, flag: &str) -> ! {
        usage_error(self.tool, format_args!("unknown option {flag}"))
    }
}

/// Takes the one positional `GROUP:PORT` argument into `slot`; a second one
/// is a usage error.
pub fn take_group_port(tool: &str, slot: &mut Option<SocketAddrV4>, s: &str, allow_port_0: bool) {
    if slot.is_some() {
        usage_error(
            tool,
            format_args!("unexpected argument {s:?}: GROUP:PORT was already given"),
        );
    }
    *slot = Some(parse_group_port(tool, s, allow_port_0));
}

/// `GROUP:PORT` with a multicast group. A port of 0 is allowed only when
/// `allow_port_0` (a receiver lets the kernel pick).
pub fn parse_group_port(tool: &str, s: &str, allow_port_0: bool) -> SocketAddrV4 {
    let addr: SocketAddrV4 = s.parse().unwrap_or_else(|_| {
        usage_error(
            tool,
            format_args!(
                "malformed GROUP:PORT {s:?}: expected a multicast IPv4 address and a port, like 239.255.0.1:5000"
            ),
        )
    });
    if !addr.ip().is_multicast() {
        usage_error(
            tool,
            format_args!(
                "{} (in {s:?}) is not a multicast group address: it must be in 224.0.0.0/4",
                addr.ip()
            ),
        );
    }
    if addr.port() == 0 && !allow_port_0 {
        usage_error(
            tool,
            format_args!("{s:?}: port 0 is not a destination port"),
        );
    }
    addr
}

/// An IPv4 address given to `flag`.
pub fn parse_ipv4(tool: &str, flag: &str, s: &str) -> Ipv4Addr {
    s.parse().unwrap_or_else(|_| {
        usage_error(
            tool,
            format_args!("{flag}: {s:?} is not an IPv4 address (a.b.c.d)"),
        )
    })
}

/// A unicast source address for `--source` / `--exclude`.
pub fn parse_source(tool: &str, flag: &str, s: &str) -> Ipv4Addr {
    let addr = parse_ipv4(tool, flag, s);
    if addr.is_multicast() || addr.is_unspecified() || addr.is_broadcast() {
        usage_error(
            tool,
            format_args!("{flag}: {s} cannot be a multicast source: give a unicast address"),
        );
    }
    addr
}

/// A whole number in `min..=max`; decimal, or hexadecimal with `0x`.
pub fn parse_u64(tool: &str, flag: &str, s: &str, min: u64, max: u64) -> u64 {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse::<u64>(),
    };
    match parsed {
        Ok(v) if (min..=max).contains(&v) => v,
        Ok(_) => usage_error(
            tool,
            format_args!("{flag}: {s} is out of range: it must be {min} to {max}"),
        ),
        Err(_) => usage_error(tool, format_args!("{flag}: {s:?} is not a whole number")),
    }
}

/// Milliseconds, as a `Duration`.
pub fn parse_millis(tool: &str, flag: &str, s: &str) -> Duration {
    Duration::from_millis(parse_u64(tool, flag, s, 0, u64::MAX))
}

/// A finite, non-negative number (decimals allowed).
pub fn parse_f64(tool: &str, flag: &str, s: &str) -> f64 {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => v,
        _ => usage_error(
            tool,
            format_args!("{flag}: {s:?} is not a non-negative number"),
        ),
    }
}

/// `on` or `off` (also `1`/`0`, `true`/`false`, `yes`/`no`).
pub fn parse_on_off(tool: &str, flag: &str, s: &str) -> bool {
    match s {
        "on" | "1" | "true" | "yes" => true,
        "off" | "0" | "false" | "no" => false,
        _ => usage_error(tool, format_args!("{flag}: {s:?} is neither on nor off")),
    }
}

/// An interface by name, index or address, looked up now so that an unknown
/// one is an argument error (exit 2) that names it.
pub fn parse_iface(tool: &str, s: &str) -> (Interface, InterfaceInfo) {
    let iface: Interface = s
        .parse()
        .unwrap_or_else(|e| usage_error(tool, format_args!("--iface {s:?}: {e}")));
    match iface.resolve() {
        Ok(info) => (iface, info),
        Err(e) => usage_error(tool, format_args!("--iface {s:?}: {e}")),
    }
}

/// Whether an error from the crate is about an argument (bad address,
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

/// A human name for an interface: `lo (#1, 127.0.0.1)`.
pub fn iface_label(info: &InterfaceInfo) -> String {
    match info.addr {
        Some(addr) => format!("{} (#{}, {addr})", info.name, info.index),
        None => format!("{} (#{}, no IPv4 address)", info.name, info.index),
    }
}

/// Writes `s` as the inside of a JSON string: quotes, backslashes and
/// control characters escaped.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                '\t' => self.0.push_str("\\t"),
                c if u32::from(c) < 0x20 => write!(self.0, "\\u{:04x}", u32::from(c))?,
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

/// Builds one JSON object into a `String`, field by field, without
/// allocating beyond the string's own growth:
/// `Json::object(&mut s).u64("seq", 1).str("src", addr).end()` appends
/// `{"seq":1,"src":"127.0.0.1:5000"}`.
pub struct Json<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> Json<'a> {
    /// Opens an object at the end of `out`.
    pub fn object(out: &'a mut String) -> Json<'a> {
        out.push('{');
        Json { out, empty: true }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out.push('"');
        let _ = Escaped(self.out).write_str(key);
        self.out.push_str("\":");
    }

    pub fn u64(&mut self, key: &str, v: u64) -> &mut Self {
        self.key(key);
        let _ = write!(self.out, "{v}");
        self
    }

    /// A number, or `null` when absent.
    pub fn opt_u64(&mut self, key: &str, v: Option<u64>) -> &mut Self {
        match v {
            Some(v) => self.u64(key, v),
            None => self.null(key),
        }
    }

    /// A number with `decimals` digits after the point (`null` if not finite).
    pub fn f64(&mut self, key: &str, v: f64, decimals: usize) -> &mut Self {
        if !v.is_finite() {
            return self.null(key);
        }
        self.key(key);
        let _ = write!(self.out, "{v:.decimals$}");
        self
    }

    pub fn bool(&mut self, key: &str, v: bool) -> &mut Self {
        self.key(key);
        self.out.push_str(if v { "true" } else { "false" });
        self
    }

    pub fn null(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.out.push_str("null");
        self
    }

    /// A string: anything `Display`, escaped.
    pub fn str(&mut self, key: &str, v: impl fmt::Display) -> &mut Self {
        self.key(key);
        self.out.push('"');
        let _ = write!(Escaped(self.out), "{v}");
        self.out.push('"');
        self
    }

    /// A string, or `null` when absent.
    pub fn opt_str(&mut self, key: &str, v: Option<impl fmt::Display>) -> &mut Self {
        match v {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    /// A nested object, filled by `f`.
    pub fn object_field(&mut self, key: &str, f: impl FnOnce(&mut Json<'_>)) -> &mut Self {
        self.key(key);
        let mut inner = Json::object(self.out);
        f(&mut inner);
        inner.end();
        self
    }

    /// Closes the object.
    pub fn end(&mut self) {
        self.out.push('}');
    }
}

/// Seconds with microseconds, for people.
pub fn secs(d: Duration) -> String {
    format!("{:.6}", d.as_secs_f64())
}
