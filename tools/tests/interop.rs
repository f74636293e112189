//! Interoperability: our tools (`mcast-dump`, `mcast-send`) against
//! multicast programs written by others, run as child processes:
//!
//! - a small Go program of ours on `golang.org/x/net/ipv4`
//!   (`tests/interop/go/xnet_peer.go`), as sender and as receiver;
//! - iperf2 and sockperf as senders, socat as a receiver;
//! - tcpdump reading the TOS and TTL bytes off the wire, and reading the
//!   capture files `mcast-dump --pcap` writes.
//!
//! The peers come from Debian packages. A test whose peer is missing says
//! `SKIPPED (needs PROGRAM: apt-get install PACKAGE)` and returns, as the
//! root-only tests do without root: a newcomer's `cargo test` passes on a
//! machine with Rust alone. `.ci/run` installs every peer and fails on any
//! SKIPPED line; it also runs this file once with the peers hidden, to prove
//! that each test then skips instead of failing. The Go program is built
//! once per test run, offline, in GOPATH mode against Debian's
//! `golang-golang-x-net-dev`.
//!
//! Network safety: on the host, every sender sends through `lo` only (the
//! Go sender and `mcast-send` are given `lo`), and socat only receives.
//! Third-party senders (iperf, sockperf) run only inside the private sender
//! namespace of a [`Topology`], whose only links are `lo` and the veths to
//! the receiver namespace, so nothing can leave through the host's own
//! interfaces. Those tests need root; without it they say SKIPPED and
//! return. Every child has a time limit and is killed when its test fails.
//!
//! Groups: 239.255.180.x, one per test.

mod procs;
// Shared with the library's namespace tests (tests/netns.rs).
#[path = "../../tests/topology/mod.rs"]
mod topology;

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use procs::{
    find_program, parse_dump_output, parse_json, peer, seqs, skipped_for_peer, strings, tool,
    DumpOutput, Finished, Json, JsonExt, Proc,
};
use topology::{Topology, S0};

/// The longest a `mcast-dump` may run (its `--timeout-ms`).
const DUMP_TIMEOUT_MS: u64 = 30_000;
/// How long a `mcast-dump` fed by a sender that does not say how many
/// packets arrive keeps reading after the last one (its `--idle-exit-ms`):
/// longer than sockperf's pause (about 2 s) between its warm-up messages
/// and the test proper, and than any scheduling hiccup of a busy VM.
const DUMP_IDLE_EXIT_MS: u64 = 3_500;
/// How long a receiving Go peer waits for its packets (its TIMEOUT_MS).
const GO_RECV_TIMEOUT_MS: u64 = 20_000;
/// How long the test waits for a child that must end on its own.
const CHILD_LIMIT: Duration = Duration::from_secs(40);
/// How long a receiver may take to say that it is ready.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long to wait after a receiver is ready before sending: the first
/// packets of a fresh flow can be dropped for a few ms after a join.
const SETTLE: Duration = Duration::from_millis(300);
/// How long socat keeps reading after its sender ended, before it is told
/// to stop (SIGTERM).
const DRAIN: Duration = Duration::from_millis(700);
/// `mcast-dump`'s receive buffer here (SO_RCVBUFFORCE as root, else capped
/// by rmem_max): room for bursts while a busy VM does not schedule it.
const DUMP_RCVBUF: &str = "4194304";

// ---------------------------------------------------------------------
// Our tools and the peers.

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The path of one of our tools (the binaries Cargo built for these
/// tests), as a string (for `ip netns exec`).
fn our_tool(name: &str) -> String {
    tool(name).to_string()
}

/// Where Debian's Go packages (`golang-golang-x-net-dev`) put their source.
const DEBIAN_GOPATH: &str = "/usr/share/gocode";
/// Build directories of the Go peer are `<temp>/<prefix><pid>`.
const GO_BUILD_PREFIX: &str = "ipv4r-interop-go-";

/// The Go peer, built once per test run from `tests/interop/go/xnet_peer.go`
/// into a temporary directory: offline, in GOPATH mode, against Debian's
/// x/net (no module proxy, no network). `None`, after saying SKIPPED, when
/// Go or Debian's x/net is not installed.
fn xnet_peer(test: &str) -> Option<&'static str> {
    static BIN: OnceLock<Option<String>> = OnceLock::new();
    let bin = BIN.get_or_init(|| {
        let go = find_program("go")?;
        let xnet = Path::new(DEBIAN_GOPATH).join("src/golang.org/x/net/ipv4/dgramopt.go");
        xnet.is_file().then(|| build_xnet_peer(&go))
    });
    if bin.is_none() {
        if find_program("go").is_none() {
            skipped_for_peer(test, "go", "golang-go");
        } else {
            skipped_for_peer(test, "golang.org/x/net/ipv4", "golang-golang-x-net-dev");
        }
    }
    bin.as_deref()
}

fn build_xnet_peer(go: &str) -> String {
    let src = manifest_dir().join("tests/interop/go/xnet_peer.go");
    assert!(src.is_file(), "{} is missing", src.display());

    let temp = std::env::temp_dir();
    remove_stale_go_builds(&temp);
    let dir = temp.join(format!("{GO_BUILD_PREFIX}{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let cache = dir.join("gocache");
    let bin = dir.join("xnet_peer");

    let mut cmd = Command::new(go);
    cmd.arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .current_dir(&dir)
        .env("GO111MODULE", "off")
        .env("GOPATH", DEBIAN_GOPATH)
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("GOCACHE", &cache);
    let out = Proc::spawn("go build", cmd).finish(Duration::from_secs(300));
    // The build cache is only worth keeping within one build.
    let _ = fs::remove_dir_all(&cache);
    assert!(
        out.status.success(),
        "building {} (GO111MODULE=off GOPATH={DEBIAN_GOPATH}) failed: {out:?}",
        src.display()
    );
    bin.to_str().expect("a UTF-8 path").to_string()
}

/// Removes the Go peer builds of test runs that have ended (their process
/// is gone).
fn remove_stale_go_builds(temp: &Path) {
    let Ok(entries) = fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(GO_BUILD_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

// ---------------------------------------------------------------------
// Child processes.

/// Runs a command to its end (within [`CHILD_LIMIT`]).
fn run_to_end(name: &str, cmd: Command) -> Finished {
    Proc::spawn(name, cmd).finish(CHILD_LIMIT)
}

/// Runs a short command that must succeed, returning its stdout.
fn must(program: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = run_to_end(program, cmd);
    assert!(out.status.success(), "{program} {args:?} failed: {out:?}");
    out.stdout_text()
}

/// The index of interface `dev` inside namespace `ns`, as `ip` tells it.
fn ifindex_in(ns: &str, dev: &str) -> u64 {
    // "2: en0@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 ..."
    let line = must("ip", &["-n", ns, "-o", "link", "show", "dev", dev]);
    line.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in {line:?}"))
}

/// Routes all multicast out of `s0` in the sender namespace, for peers
/// that do not name their interface. The namespace's only links are `lo`
/// and the veths: nothing can leave the test's own hosts.
fn multicast_route_via_s0(topo: &Topology) {
    must(
        "ip",
        &["-n", &topo.snd, "route", "add", "224.0.0.0/4", "dev", "s0"],
    );
}

/// The `ADDR:PORT` right after `marker` in `text`.
fn addr_after(text: &str, marker: &str) -> SocketAddrV4 {
    text.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no ADDR:PORT after {marker:?} in {text:?}"))
}

/// The number between `before` and `after` on a line of `text` (like
/// `404` in `[  1] Sent 404 datagrams`).
fn number_between(text: &str, before: &str, after: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let rest = &line[line.find(before)? + before.len()..];
            rest[..rest.find(after)?].trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no {before:?}N{after:?} in {text:?}"))
}

// ---------------------------------------------------------------------
// mcast-dump and mcast-send.

/// What a `mcast-dump` said in its `listening` line.
struct Listening {
    port: u16,
    ifindex: u64,
}

/// Starts `mcast-dump GROUP:0 --iface IFACE --json --rcvbuf .. --timeout-ms
/// .. EXTRA` through `cmd` (the dump's path, or `ip netns exec NS` and its
/// path), waits for its `listening` line, then for the join to settle.
fn start_dump(mut cmd: Command, group: Ipv4Addr, iface: &str, extra: &[&str]) -> (Proc, Listening) {
    let mut args = strings(&[
        &format!("{group}:0"),
        "--iface",
        iface,
        "--json",
        "--rcvbuf",
        DUMP_RCVBUF,
        "--timeout-ms",
        &DUMP_TIMEOUT_MS.to_string(),
    ]);
    args.extend(strings(extra));
    cmd.args(&args);
    let mut dump = Proc::spawn("mcast-dump", cmd);
    // "listening 239.255.180.1:41234 iface=lo ifindex=1 rcvbuf=... batch=64"
    let line = dump.wait_for("`listening`", |l| l.starts_with("listening "), READY_LIMIT);
    let addr: SocketAddrV4 = line
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no GROUP:PORT in the listening line {line:?}"));
    assert_eq!(*addr.ip(), group, "{line}");
    assert_ne!(addr.port(), 0, "{line}");
    assert!(line.contains(&format!(" iface={iface} ")), "{line}");
    let ifindex = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ifindex="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ifindex= in the listening line {line:?}"));
    thread::sleep(SETTLE);
    (
        dump,
        Listening {
            port: addr.port(),
            ifindex,
        },
    )
}

/// The JSON lines a `--json` dump printed, checked (see [`DumpOutput`]),
/// with one line per packet the summary counts.
fn dump_output(out: &Finished) -> DumpOutput {
    assert!(out.status.success(), "mcast-dump failed: {out:?}");
    let text = out.stdout_text();
    let DumpOutput {
        packets: lines,
        summary,
    } = parse_dump_output(&text, out);
    assert_eq!(
        summary["packets"].u64(),
        lines.len() as u64,
        "one line per packet: {summary:?}"
    );
    DumpOutput {
        packets: lines,
        summary,
    }
}

/// Checks the fields every packet of one flow shares, as `mcast-dump` saw
/// them.
fn assert_dump_fields(
    packets: &[Json],
    src: &str,
    group: Ipv4Addr,
    ifindex: u64,
    ttl: u64,
    tos: u64,
) {
    for p in packets {
        assert_eq!(p["src"].str(), src, "{p:?}");
        assert_eq!(p["dst"].str(), group.to_string(), "{p:?}");
        assert_eq!(p["ifindex"].u64(), ifindex, "{p:?}");
        assert_eq!(p["ttl"].u64(), ttl, "{p:?}");
        assert_eq!(p["tos"].u64(), tos, "{p:?}");
        assert_eq!(p["truncated"], Json::Bool(false), "{p:?}");
    }
}

/// Runs `mcast-send ARGS --json` to its end through `cmd`; returns the
/// source address from its stderr (`... from ADDR:PORT via ...`) after
/// checking that it sent `count` packets.
fn run_send(mut cmd: Command, args: &[&str], count: u64) -> SocketAddrV4 {
    cmd.args(args).arg("--json");
    let out = run_to_end("mcast-send", cmd);
    assert!(out.status.success(), "mcast-send failed: {out:?}");
    let summary = parse_json(out.stdout_text().trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(summary["sent"].u64(), count, "{out:?}");
    addr_after(&out.stderr, " from ")
}

// ---------------------------------------------------------------------
// Peers and versions.

#[test]
fn peers_tell_their_versions() {
    let test = "peers_tell_their_versions";
    // (program, package, version arguments, what the version text holds)
    let peers: [(&str, &str, &[&str], &str); 5] = [
        ("go", "golang-go", &["version"], "go version go1."),
        // iperf2 (not iperf3, whose options differ); `iperf -v` exits 1.
        ("iperf", "iperf", &["-v"], "iperf version 2."),
        ("sockperf", "sockperf", &["--version"], "sockperf, version "),
        ("socat", "socat", &["-V"], "socat version "),
        ("tcpdump", "tcpdump", &["--version"], "tcpdump version "),
    ];
    for (program, package, args, expected) in peers {
        let Some(path) = peer(test, program, package) else {
            continue;
        };
        let mut cmd = Command::new(path);
        cmd.args(args);
        let out = run_to_end(program, cmd);
        let text = format!("{}\n{}", out.stdout_text(), out.stderr);
        let line = text
            .lines()
            .find(|l| l.contains(expected))
            .unwrap_or_else(|| panic!("{program} {args:?} did not say {expected:?}: {out:?}"));
        eprintln!("interop peer: {}", line.trim());
    }
    // And the Go peer builds offline against Debian's x/net.
    if let Some(bin) = xnet_peer(test) {
        assert!(Path::new(bin).is_file());
    }
}

// ---------------------------------------------------------------------
// Go (golang.org/x/net/ipv4) on lo.

#[test]
fn go_xnet_sender_to_mcast_dump_on_lo() {
    let Some(xnet) = xnet_peer("go_xnet_sender_to_mcast_dump_on_lo") else {
        return;
    };
    let group = Ipv4Addr::new(239, 255, 180, 1);
    let n: u64 = 100;
    let (mut dump, l) = start_dump(
        Command::new(our_tool("mcast-dump")),
        group,
        "lo",
        &["--count", &n.to_string()],
    );
    assert_eq!(l.ifindex, 1);

    let mut go = Command::new(xnet);
    go.args([
        "send",
        &format!("{group}:{}", l.port),
        "lo",
        &n.to_string(),
        "3",
        "0x28",
    ]);
    let sent = run_to_end("xnet_peer send", go);
    assert!(sent.status.success(), "xnet_peer send failed: {sent:?}");
    let src = addr_after(&sent.stderr, &format!("sent {n} from "));
    assert_eq!(*src.ip(), Ipv4Addr::LOCALHOST, "bound to lo's address");

    let out = dump_output(&dump.finish(CHILD_LIMIT));
    assert_eq!(seqs(&out.packets), (0..n).collect::<Vec<_>>());
    assert_dump_fields(&out.packets, &src.to_string(), group, 1, 3, 0x28);
    assert!(out.packets.iter().all(|p| p["len"].u64() == 64));
    let s = &out.summary;
    assert_eq!(s["packets"].u64(), n, "{s:?}");
    assert_eq!(s["bytes"].u64(), n * 64, "{s:?}");
    assert_eq!(s["gaps"].u64(), 0, "{s:?}");
    assert_eq!(s["lost"].u64(), 0, "{s:?}");
    assert_eq!(s["truncated"].u64(), 0, "{s:?}");
}

#[test]
fn mcast_send_to_go_xnet_receiver_on_lo() {
    let Some(xnet) = xnet_peer("mcast_send_to_go_xnet_receiver_on_lo") else {
        return;
    };
    let group = Ipv4Addr::new(239, 255, 180, 2);
    let n: u64 = 100;
    let mut go = Command::new(xnet);
    go.args([
        "recv",
        &format!("{group}:0"),
        "lo",
        &n.to_string(),
        &GO_RECV_TIMEOUT_MS.to_string(),
    ]);
    let mut rx = Proc::spawn("xnet_peer recv", go);
    // "listening 239.255.180.2:41234 ifindex=1"
    let line = rx.wait_for("`listening`", |l| l.starts_with("listening "), READY_LIMIT);
    let addr = addr_after(&line, "listening ");
    assert_eq!(*addr.ip(), group, "{line}");
    assert!(line.ends_with(" ifindex=1"), "{line}");
    thread::sleep(SETTLE);

    let dst = format!("{group}:{}", addr.port());
    let count = n.to_string();
    let src = run_send(
        Command::new(our_tool("mcast-send")),
        &[
            &dst, "--iface", "lo", "--ttl", "5", "--tos", "0x28", "--count", &count, "--rate",
            "2000",
        ],
        n,
    );
    assert_eq!(*src.ip(), Ipv4Addr::LOCALHOST);

    let out = rx.finish(CHILD_LIMIT);
    assert!(out.status.success(), "xnet_peer recv failed: {out:?}");
    let packets: Vec<Json> = out
        .stdout_text()
        .lines()
        .map(|l| parse_json(l).unwrap_or_else(|e| panic!("{e}: line {l:?} of {out:?}")))
        .collect();
    for p in &packets {
        assert_eq!(
            p.keys(),
            ["seq", "len", "ttl", "dst", "ifindex", "src"],
            "{p:?}"
        );
        assert_eq!(p["len"].u64(), 64, "{p:?}");
        assert_eq!(p["ttl"].u64(), 5, "{p:?}");
        assert_eq!(p["dst"].str(), group.to_string(), "{p:?}");
        assert_eq!(p["ifindex"].u64(), 1, "{p:?}");
        assert_eq!(p["src"].str(), src.to_string(), "{p:?}");
    }
    assert_eq!(seqs(&packets), (0..n).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------
// Across the link: third-party senders in the sender namespace, mcast-dump
// in the receiver namespace on en0.

/// Checks that `seqs` is a run n-k..n of the sender's n sequence numbers:
/// only the first packets of the fresh flow may be missing, and at least
/// half arrived.
fn assert_tail_of_feed(seqs: &[u64], n: u64) {
    let first = seqs.first().copied().unwrap_or(n);
    assert_eq!(
        seqs,
        (first..n).collect::<Vec<_>>(),
        "the feed arrives in order, without gaps, up to its last packet"
    );
    assert!(
        seqs.len() as u64 >= n / 2,
        "only {} of {n} packets arrived",
        seqs.len()
    );
}

#[test]
fn go_xnet_sender_across_the_link_to_mcast_dump() {
    let Some(xnet) = xnet_peer("go_xnet_sender_across_the_link_to_mcast_dump") else {
        return;
    };
    let Some(topo) = Topology::new("xnetlink") else {
        return;
    };
    let group = Ipv4Addr::new(239, 255, 180, 3);
    let n: u64 = 100;
    let en0 = ifindex_in(&topo.rcv, "en0");
    let (mut dump, l) = start_dump(
        topo.command(&topo.rcv, &our_tool("mcast-dump")),
        group,
        "en0",
        &["--idle-exit-ms", &DUMP_IDLE_EXIT_MS.to_string()],
    );
    assert_eq!(l.ifindex, en0);

    // TTL 2: the link needs at least 1, and 2 is not the default.
    let mut go = topo.command(&topo.snd, xnet);
    go.args([
        "send",
        &format!("{group}:{}", l.port),
        "s0",
        &n.to_string(),
        "2",
        "0x28",
    ]);
    let sent = run_to_end("xnet_peer send", go);
    assert!(sent.status.success(), "xnet_peer send failed: {sent:?}");
    let src = addr_after(&sent.stderr, &format!("sent {n} from "));
    assert_eq!(*src.ip(), S0, "bound to s0's address");

    // The dump ends DUMP_IDLE_EXIT_MS after the last packet.
    let out = dump_output(&dump.finish(CHILD_LIMIT));
    assert_dump_fields(&out.packets, &src.to_string(), group, en0, 2, 0x28);
    assert!(out.packets.iter().all(|p| p["len"].u64() == 64));
    assert_tail_of_feed(&seqs(&out.packets), n);
    assert_eq!(out.summary["lost"].u64(), 0, "{:?}", out.summary);
}

#[test]
fn iperf2_sender_across_the_link_to_mcast_dump() {
    let Some(iperf) = peer(
        "iperf2_sender_across_the_link_to_mcast_dump",
        "iperf",
        "iperf",
    ) else {
        return;
    };
    let Some(topo) = Topology::new("iperf") else {
        return;
    };
    multicast_route_via_s0(&topo);
    let group = Ipv4Addr::new(239, 255, 180, 4);
    let en0 = ifindex_in(&topo.rcv, "en0");
    let (mut dump, l) = start_dump(
        topo.command(&topo.rcv, &our_tool("mcast-dump")),
        group,
        "en0",
        &["--idle-exit-ms", &DUMP_IDLE_EXIT_MS.to_string()],
    );

    // -T: multicast TTL (iperf's default is 1); -S: TOS; -B: the source.
    let mut cmd = topo.command(&topo.snd, &iperf);
    cmd.args([
        "-c",
        &group.to_string(),
        "-u",
        "-p",
        &l.port.to_string(),
        "-T",
        "2",
        "-S",
        "0x28",
        "-t",
        "1",
        "-b",
        "200K",
        "-l",
        "64",
        "-B",
        &S0.to_string(),
    ]);
    let out = run_to_end("iperf", cmd);
    assert!(out.status.success(), "iperf failed: {out:?}");
    let text = out.stdout_text();
    // "[  1] local 192.0.2.1 port 59183 connected with 239.255.180.4 port 47164"
    let port: u16 = text
        .split(&format!("local {S0} port "))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no `local {S0} port N` in iperf's report: {out:?}"));
    // "[  1] Sent 404 datagrams"
    let sent = number_between(&text, "] Sent ", " datagrams");
    assert!(sent > 0, "{out:?}");

    // The dump ends DUMP_IDLE_EXIT_MS after the last packet.
    let dump_out = dump_output(&dump.finish(CHILD_LIMIT));
    let src = SocketAddrV4::new(S0, port).to_string();
    // iperf's payload starts with its own header, not our sequence number:
    // check the fields and the count, not the order.
    assert_dump_fields(&dump_out.packets, &src, group, en0, 2, 0x28);
    let got = dump_out.packets.len() as u64;
    assert!(
        got > 0 && got >= sent / 2,
        "mcast-dump got {got} of iperf's {sent} datagrams"
    );
    // Its datagram id fills the upper half of the 8 bytes mcast-dump reads,
    // so every datagram jumps by 2^32 or more: new baselines, never loss
    // (`lost` once grew by ~2^32 a datagram and wrapped past u64).
    let s = &dump_out.summary;
    assert_eq!((s["gaps"].u64(), s["lost"].u64()), (0, 0), "{s:?}");
}

#[test]
fn sockperf_sender_across_the_link_to_mcast_dump() {
    let Some(sockperf) = peer(
        "sockperf_sender_across_the_link_to_mcast_dump",
        "sockperf",
        "sockperf",
    ) else {
        return;
    };
    let Some(topo) = Topology::new("sockperf") else {
        return;
    };
    multicast_route_via_s0(&topo);
    let group = Ipv4Addr::new(239, 255, 180, 5);
    let en0 = ifindex_in(&topo.rcv, "en0");
    let (mut dump, l) = start_dump(
        topo.command(&topo.rcv, &our_tool("mcast-dump")),
        group,
        "en0",
        &["--idle-exit-ms", &DUMP_IDLE_EXIT_MS.to_string()],
    );

    // --mc-ttl 3: sockperf's default is 2. sockperf sends a few warm-up
    // messages, waits, then runs the test for -t seconds.
    let mut cmd = topo.command(&topo.snd, &sockperf);
    cmd.args([
        "tp",
        "-i",
        &group.to_string(),
        "-p",
        &l.port.to_string(),
        "--mc-tx-if",
        &S0.to_string(),
        "--mc-ttl",
        "3",
        "--tos",
        "0x28",
        "-t",
        "1",
        "--msg-size",
        "64",
        "--mps",
        "1000",
    ]);
    let out = run_to_end("sockperf", cmd);
    assert!(out.status.success(), "sockperf failed: {out:?}");
    // "sockperf: Total of 998 messages sent in 1.002 sec"
    let text = format!("{}\n{}", out.stdout_text(), out.stderr);
    let sent = number_between(&text, "Total of ", " messages sent");
    assert!(sent > 0, "{out:?}");

    // The dump ends DUMP_IDLE_EXIT_MS after the last packet.
    let dump_out = dump_output(&dump.finish(CHILD_LIMIT));
    let packets = &dump_out.packets;
    let first_src = packets
        .first()
        .unwrap_or_else(|| panic!("mcast-dump got nothing from sockperf: {dump_out:?}"))["src"]
        .str()
        .to_string();
    let src: SocketAddrV4 = first_src.parse().expect("ADDR:PORT");
    assert_eq!(*src.ip(), S0);
    // One socket: every packet from the same address and port.
    assert_dump_fields(packets, &first_src, group, en0, 3, 0x28);
    assert!(packets.iter().all(|p| p["len"].u64() == 64));
    let got = packets.len() as u64;
    assert!(
        got >= sent / 2,
        "mcast-dump got {got} of sockperf's {sent} messages"
    );
}

// ---------------------------------------------------------------------
// socat as a receiver on lo.

#[test]
fn mcast_send_to_socat_receiver_on_lo() {
    let Some(socat) = peer("mcast_send_to_socat_receiver_on_lo", "socat", "socat") else {
        return;
    };
    let group = Ipv4Addr::new(239, 255, 180, 6);
    let n: u64 = 20;
    // socat cannot tell which port the kernel picked: take one above the
    // ephemeral range (32768-60999), varied by process.
    let port = 61_000 + (std::process::id() % 4_000) as u16;
    let mut cmd = Command::new(&socat);
    cmd.args([
        "-d",
        "-d",
        "-u",
        &format!(
            "UDP4-RECV:{port},bind={group},ip-add-membership={group}:{},reuseaddr",
            Ipv4Addr::LOCALHOST
        ),
        "STDOUT",
    ]);
    let mut rx = Proc::spawn("socat", cmd);
    // "2026/11/27 09:46:22 socat[26988] N starting data transfer loop with FDs [5,5] and [1,1]"
    rx.wait_for(
        "`starting data transfer loop`",
        |l| l.contains("starting data transfer loop"),
        READY_LIMIT,
    );
    thread::sleep(SETTLE);

    let src = run_send(
        Command::new(our_tool("mcast-send")),
        &[
            &format!("{group}:{port}"),
            "--iface",
            "lo",
            "--count",
            &n.to_string(),
            "--size",
            "64",
        ],
        n,
    );
    thread::sleep(DRAIN);
    let out = rx.terminate(CHILD_LIMIT);

    // socat writes each datagram's payload to stdout, one after another.
    assert_eq!(out.stdout.len() as u64, n * 64, "{out:?}");
    for (i, datagram) in out.stdout.chunks_exact(64).enumerate() {
        let seq = u64::from_be_bytes(datagram[..8].try_into().expect("8 bytes"));
        assert_eq!(seq, i as u64, "datagram {i}");
        assert!(
            datagram[8..].iter().all(|&b| b == 0),
            "datagram {i}: zero padding"
        );
    }
    // With -d -d socat logs each datagram's source.
    let from = format!("received packet with 64 bytes from AF=2 {src}");
    let logged = out.stderr.lines().filter(|l| l.ends_with(&from)).count();
    assert_eq!(logged as u64, n, "socat's log of sources: {out:?}");
}

// ---------------------------------------------------------------------
// tcpdump reads the wire.

#[test]
fn tcpdump_sees_tos_and_ttl_of_mcast_send_on_the_wire() {
    let Some(tcpdump) = peer(
        "tcpdump_sees_tos_and_ttl_of_mcast_send_on_the_wire",
        "tcpdump",
        "tcpdump",
    ) else {
        return;
    };
    let Some(topo) = Topology::new("tcpdump") else {
        return;
    };
    let group = Ipv4Addr::new(239, 255, 180, 7);
    let port: u16 = 41_807;
    let want = 3;
    let mut cmd = topo.command(&topo.rcv, &tcpdump);
    cmd.args([
        "-i",
        "en0",
        "-n",
        "-v",
        "-l",
        "-c",
        &want.to_string(),
        &format!("udp and dst host {group} and dst port {port}"),
    ]);
    let mut capture = Proc::spawn("tcpdump", cmd);
    // "tcpdump: listening on en0, link-type EN10MB (Ethernet), snapshot length 262144 bytes"
    capture.wait_for(
        "`listening on`",
        |l| l.contains("listening on en0"),
        READY_LIMIT,
    );
    thread::sleep(SETTLE);

    // More than tcpdump waits for, paced: tcpdump ends after the first 3.
    let count = 20;
    let src = run_send(
        topo.command(&topo.snd, &our_tool("mcast-send")),
        &[
            &format!("{group}:{port}"),
            "--iface",
            "s0",
            "--ttl",
            "4",
            "--tos",
            "0x28",
            "--count",
            &count.to_string(),
            "--rate",
            "100",
        ],
        count,
    );
    assert_eq!(*src.ip(), S0);

    let out = capture.finish(CHILD_LIMIT);
    assert!(out.status.success(), "tcpdump failed: {out:?}");
    // -v prints two lines per packet:
    // "09:46:59.912418 IP (tos 0x28, ttl 4, id 3366, offset 0, flags [DF], proto UDP (17), length 92)"
    // "    192.0.2.1.41717 > 239.255.180.7.41807: UDP, length 64"
    let text = out.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    let headers: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains(" IP ("))
        .collect();
    assert_eq!(headers.len(), want, "{out:?}");
    let udp = format!(
        "{}.{} > {group}.{port}: UDP, length 64",
        src.ip(),
        src.port()
    );
    for i in headers {
        let header = lines[i];
        assert!(
            header.contains("IP (tos 0x28, ttl 4, "),
            "TOS 0x28 and TTL 4 on the wire: {header:?}"
        );
        assert!(header.contains("proto UDP (17)"), "{header:?}");
        assert!(header.ends_with("length 92)"), "20 + 8 + 64: {header:?}");
        let next = lines.get(i + 1).map(|l| l.trim());
        assert_eq!(next, Some(udp.as_str()), "{out:?}");
    }
}

/// `mcast-dump --pcap` writes a capture that tcpdump reads: one record per
/// datagram, nanosecond timestamps, IPv4 + UDP headers with the real
/// source, group, ports, TTL, TOS and lengths, and checksums that tcpdump
/// verifies.
#[test]
fn tcpdump_reads_the_capture_of_mcast_dump() {
    let Some(tcpdump) = peer(
        "tcpdump_reads_the_capture_of_mcast_dump",
        "tcpdump",
        "tcpdump",
    ) else {
        return;
    };
    let group = Ipv4Addr::new(239, 255, 180, 8);
    let n: u64 = 25;
    let dir = std::env::temp_dir().join(format!("ipv4r-interop-pcap-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("dump.pcap");
    let (mut dump, l) = start_dump(
        Command::new(our_tool("mcast-dump")),
        group,
        "lo",
        &[
            "--count",
            &n.to_string(),
            "--pcap",
            pcap.to_str().expect("a UTF-8 path"),
        ],
    );
    let src = run_send(
        Command::new(our_tool("mcast-send")),
        &[
            &format!("{group}:{}", l.port),
            "--iface",
            "lo",
            "--bind",
            "127.0.0.1",
            "--ttl",
            "3",
            "--tos",
            "0x28",
            "--size",
            "100",
            "--count",
            &n.to_string(),
        ],
        n,
    );
    let dumped = dump.finish(CHILD_LIMIT);
    let out = dump_output(&dumped);
    assert_eq!(seqs(&out.packets), (0..n).collect::<Vec<_>>());
    assert!(
        dumped
            .stderr
            .contains(&format!("{n} packets written to {}", pcap.display())),
        "{dumped:?}"
    );

    let mut cmd = Command::new(&tcpdump);
    cmd.args(["-r", pcap.to_str().unwrap(), "-n", "-vv", "--nano"]);
    let read = run_to_end("tcpdump -r", cmd);
    assert!(read.status.success(), "tcpdump -r failed: {read:?}");
    assert!(read.stderr.contains("link-type RAW (Raw IP)"), "{read:?}");
    // -vv prints two lines per packet, and checks both checksums:
    // "13:49:14.228554822 IP (tos 0x28, ttl 3, id 0, offset 0, flags [none], proto UDP (17), length 128)"
    // "    127.0.0.1.37876 > 239.255.180.8.35383: [udp sum ok] UDP, length 100"
    let text = read.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, 2 * n, "{read:?}");
    let udp = format!(
        "{}.{} > {group}.{}: [udp sum ok] UDP, length 100",
        src.ip(),
        src.port(),
        l.port
    );
    for pair in lines.chunks(2) {
        let (time, rest) = pair[0].split_once(' ').expect("a timestamp");
        let fraction = time.rsplit('.').next().unwrap();
        assert_eq!(fraction.len(), 9, "nanoseconds: {time}");
        assert_eq!(
            rest, "IP (tos 0x28, ttl 3, id 0, offset 0, flags [none], proto UDP (17), length 128)",
            "20 + 8 + 100, TOS and TTL as received: {read:?}"
        );
        assert_eq!(pair[1].trim(), udp, "{read:?}");
    }
    fs::remove_dir_all(&dir).unwrap();
}
