//! Private network namespaces for tests that need more than `lo`: a sender
//! host and a receiver host joined by two veth links, like the Go doc's
//! `en0`/`en1`. Made and removed by the tests themselves (as root); nothing
//! touches the host's own interfaces. Addresses come from the documentation
//! ranges 192.0.2.0/24 and 198.51.100.0/24, inside the namespaces only.
//!
//! ```text
//!   sender ns "…-snd"                     receiver ns "…-rcv"
//!   s0 192.0.2.1/24    <--- veth --->     en0 192.0.2.2/24 (+ 192.0.2.3/24)
//!   s1 198.51.100.1/24 <--- veth --->     en1 198.51.100.2/24
//! ```

#![allow(dead_code)]

// The tests' one skip line. This module is shared with the tools' tests,
// which have no `util`; a binary with both loads skip.rs twice, harmlessly.
#[allow(clippy::duplicate_mod)]
#[path = "../util/skip.rs"]
mod skip;

use std::net::Ipv4Addr;
use std::process::{Command, Output};

pub const S0: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const EN0: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const EN0_SECOND: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
pub const S1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const EN1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

pub struct Topology {
    pub snd: String,
    pub rcv: String,
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e} (is iproute2 installed?)"))
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Topology {
    /// Builds the two hosts, or returns `None` (after saying so) when the
    /// process may not create namespaces.
    pub fn new(test: &str) -> Option<Topology> {
        let tag = format!("ipv4r{}-{test}", std::process::id());
        let snd = format!("{tag}-snd");
        let rcv = format!("{tag}-rcv");
        let out = run(&["ip", "netns", "add", &snd]);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("ermission") || err.contains("not permitted") {
                skip::skipped_needs_root("network namespaces", test);
                return None;
            }
            panic!("ip netns add {snd} failed: {err}");
        }
        let topo = Topology { snd, rcv };
        must(&["ip", "netns", "add", &topo.rcv]);
        for (a, b) in [("s0", "en0"), ("s1", "en1")] {
            must(&[
                "ip", "link", "add", a, "netns", &topo.snd, "type", "veth", "peer", "name", b,
                "netns", &topo.rcv,
            ]);
        }
        for (ns, dev, addr) in [
            (&topo.snd, "s0", "192.0.2.1/24"),
            (&topo.snd, "s1", "198.51.100.1/24"),
            (&topo.rcv, "en0", "192.0.2.2/24"),
            (&topo.rcv, "en1", "198.51.100.2/24"),
        ] {
            must(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        must(&[
            "ip",
            "-n",
            &topo.rcv,
            "addr",
            "add",
            "192.0.2.3/24",
            "dev",
            "en0",
        ]);
        for ns in [&topo.snd, &topo.rcv] {
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            topo.sysctl(ns, "net/ipv4/conf/all/rp_filter", "0");
            topo.sysctl(ns, "net/ipv4/conf/default/rp_filter", "0");
        }
        // Addresses are usable once duplicate-address detection is done
        // (IPv4 has none) and the links are up; give the links a moment.
        std::thread::sleep(std::time::Duration::from_millis(100));
        Some(topo)
    }

    /// Writes a sysctl inside a namespace (`/proc/sys/…` as that namespace sees it).
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) {
        must(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            &format!("echo {value} > /proc/sys/{key}"),
        ]);
    }

    /// A command run inside namespace `ns`.
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth ends (and their peers).
        for ns in [&self.snd, &self.rcv] {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}
