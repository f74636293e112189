//! Process-level tests of the `mcast_dump` and `mcast_send` examples: the
//! tools run as child processes and talk over lo.
//!
//! Network safety: every `mcast_send` here goes through [`send`], which
//! always passes `--iface lo` and refuses a `--bind` outside 127.0.0.0/8;
//! the one test that sends by itself uses a `multicast_sender` on lo;
//! `mcast_dump` joins on lo only. This file's groups are 239.255.173.x and
//! 232.173.0.x, one per test; each dump binds port 0 and the test reads the
//! port the kernel chose from its `listening` line.
//!
//! Each dump runs with `--timeout-ms`, and every child is killed when its
//! test fails, so no test can hang or leave a process behind.

mod procs;

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use ipv4_reactor::{Interface, PacketConn};
use procs::{
    examples_path, kill_if_running, parse_dump_output, seqs, strings, wait_for_stderr_line,
    DumpOutput, Json,
};

/// How long a dump may run at most (its `--timeout-ms`).
const DUMP_TIMEOUT_MS: u64 = 20_000;
/// How long the test waits for a child that must end on its own.
const CHILD_LIMIT: Duration = Duration::from_secs(40);
/// How long to wait after a join on lo before sending: the first packets of
/// a fresh flow can be dropped for a few ms after a join.
const SETTLE: Duration = Duration::from_millis(300);

/// The directory of the built examples. They are built once per test run
/// (`cargo build --examples`; a no-op when `cargo test` built them already).
fn examples_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--examples"])
            .current_dir(&manifest)
            .status()
            .expect("running cargo build --examples");
        assert!(status.success(), "cargo build --examples failed: {status}");
        examples_path(&manifest)
    })
}

/// What a finished child left.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// A running example, its stdout collected by one thread and its stderr
/// lines forwarded by another. Dropping it kills the child if it still runs
/// (so a failing test leaves nothing behind).
struct Proc {
    name: &'static str,
    child: Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr_lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl Proc {
    fn spawn(name: &'static str, args: &[String]) -> Proc {
        let path = examples_dir().join(name);
        let mut child = Command::new(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        let mut out = child.stdout.take().expect("piped stdout");
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            out.read_to_string(&mut s).expect("reading stdout");
            s
        });
        let err = child.stderr.take().expect("piped stderr");
        let (tx, stderr_lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name,
            child,
            stdout: Some(stdout),
            stderr_lines,
            stderr: Vec::new(),
        }
    }

    /// Waits for a stderr line that starts with `prefix`.
    fn wait_for_line(&mut self, prefix: &str, limit: Duration) -> String {
        wait_for_stderr_line(
            self.name,
            &mut self.child,
            &self.stderr_lines,
            &mut self.stderr,
            &format!("{prefix:?}"),
            |line| line.starts_with(prefix),
            limit,
        )
    }

    /// Waits for the child to end on its own (killing it and failing the
    /// test past `limit`) and returns its status and output.
    fn finish(&mut self, limit: Duration) -> Finished {
        let until = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the child") {
                break status;
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not end within {limit:?}; stderr:\n{}",
                    self.name,
                    self.stderr.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = self
            .stdout
            .take()
            .expect("finish is called once")
            .join()
            .expect("stdout reader");
        // The child is gone, so the stderr pipe is closed and this ends.
        self.stderr.extend(self.stderr_lines.iter());
        Finished {
            status,
            stdout,
            stderr: self.stderr.join("\n"),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

/// Runs an example to its end (for argument errors and `--help`).
fn run(name: &'static str, args: &[&str]) -> Finished {
    Proc::spawn(name, &strings(args)).finish(CHILD_LIMIT)
}

/// Starts `mcast_dump GROUP:0 --iface lo --timeout-ms .. EXTRA`, waits for
/// its `listening` line, then for the join to settle; returns the child and
/// the port it listens on.
fn start_dump(group: Ipv4Addr, extra: &[&str]) -> (Proc, u16) {
    let mut args = strings(&[
        &format!("{group}:0"),
        "--iface",
        "lo",
        "--timeout-ms",
        &DUMP_TIMEOUT_MS.to_string(),
    ]);
    args.extend(strings(extra));
    let mut dump = Proc::spawn("mcast_dump", &args);
    let line = dump.wait_for_line("listening", Duration::from_secs(30));
    // "listening 239.255.173.1:41234 iface=lo ifindex=1 rcvbuf=..."
    let addr: SocketAddrV4 = line
        .split_whitespace()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no GROUP:PORT in the listening line {line:?}"));
    assert_eq!(*addr.ip(), group, "{line}");
    assert!(line.contains(" iface=lo "), "{line}");
    assert!(line.contains(" rcvbuf="), "{line}");
    thread::sleep(SETTLE);
    (dump, addr.port())
}

/// What one `mcast_send` run reported.
struct Sent {
    /// `sent` from its JSON summary.
    count: u64,
    /// Its source address, from its `... from ADDR:PORT via ...` stderr line.
    src: SocketAddrV4,
}

/// Runs `mcast_send GROUP:PORT --iface lo --json EXTRA` to its end.
fn send(group: Ipv4Addr, port: u16, extra: &[&str]) -> Sent {
    // Network safety: lo only, and sources on 127.0.0.0/8 only.
    assert!(group.is_multicast());
    assert!(!extra.contains(&"--iface"), "send() always uses --iface lo");
    if let Some(i) = extra.iter().position(|a| *a == "--bind") {
        let addr: Ipv4Addr = extra[i + 1].parse().expect("--bind takes an address here");
        assert!(addr.is_loopback(), "tests bind senders to 127.0.0.0/8 only");
    }
    let mut args = strings(&[&format!("{group}:{port}"), "--iface", "lo", "--json"]);
    args.extend(strings(extra));
    let out = Proc::spawn("mcast_send", &args).finish(CHILD_LIMIT);
    assert!(out.status.success(), "mcast_send failed: {out:?}");
    let summary = Json::parse(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(summary.keys(), ["sent", "elapsed_s", "pps"], "{out:?}");
    let src = out
        .stderr
        .split(" from ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no source address in mcast_send's stderr: {out:?}"));
    Sent {
        count: summary["sent"].u64(),
        src,
    }
}

/// The JSON lines a `--json` dump printed, checked (see [`DumpOutput`]).
fn json_output(out: &Finished) -> DumpOutput {
    assert!(out.status.success(), "mcast_dump failed: {out:?}");
    parse_dump_output(&out.stdout, out)
}

#[test]
fn json_packets_carry_ttl_tos_source_group_and_order() {
    let group = Ipv4Addr::new(239, 255, 173, 1);
    let n = 300;
    let (mut dump, port) = start_dump(
        group,
        &["--json", "--rcvbuf", "8388608", "--idle-exit-ms", "1500"],
    );
    let sent = send(
        group,
        port,
        &[
            "--count",
            &n.to_string(),
            "--ttl",
            "3",
            "--tos",
            "0x28",
            "--bind",
            "127.0.0.1",
        ],
    );
    assert_eq!(sent.count, n);
    assert_eq!(*sent.src.ip(), Ipv4Addr::LOCALHOST);
    assert_ne!(sent.src.port(), 0);

    let out = json_output(&dump.finish(CHILD_LIMIT));
    assert_eq!(seqs(&out.packets), (0..n).collect::<Vec<_>>());
    for p in &out.packets {
        assert_eq!(p["ttl"].u64(), 3, "{p:?}");
        assert_eq!(p["tos"].u64(), 0x28, "{p:?}");
        assert_eq!(p["src"].str(), sent.src.to_string(), "{p:?}");
        assert_eq!(p["dst"].str(), group.to_string(), "{p:?}");
        assert_eq!(p["ifindex"].u64(), 1, "{p:?}");
        assert_eq!(p["len"].u64(), 64, "{p:?}");
        assert_eq!(p["truncated"], Json::Bool(false), "{p:?}");
    }
    let s = &out.summary;
    assert_eq!(s["packets"].u64(), n);
    assert_eq!(s["bytes"].u64(), n * 64);
    assert_eq!(s["gaps"].u64(), 0);
    assert_eq!(s["lost"].u64(), 0);
    assert_eq!(s["kernel_drops"].u64(), 0);
    assert_eq!(s["truncated"].u64(), 0);
}

/// Sends `n` packets from 127.0.0.3 (the source to filter out) first, then
/// from 127.0.0.2, and checks that the dump saw exactly 127.0.0.2's.
fn only_127_0_0_2_gets_through(group: Ipv4Addr, filter: &[&str]) {
    let n = 50;
    let mut extra = vec!["--json", "--idle-exit-ms", "1500"];
    extra.extend_from_slice(filter);
    let (mut dump, port) = start_dump(group, &extra);
    let count = n.to_string();
    let blocked = send(group, port, &["--count", &count, "--bind", "127.0.0.3"]);
    let wanted = send(group, port, &["--count", &count, "--bind", "127.0.0.2"]);
    assert_eq!((blocked.count, wanted.count), (n, n));
    assert_eq!(*wanted.src.ip(), Ipv4Addr::new(127, 0, 0, 2));

    let out = json_output(&dump.finish(CHILD_LIMIT));
    for p in &out.packets {
        assert_eq!(p["src"].str(), wanted.src.to_string(), "{p:?}");
    }
    assert_eq!(seqs(&out.packets), (0..n).collect::<Vec<_>>());
    assert_eq!(out.summary["packets"].u64(), n);
    assert_eq!(out.summary["lost"].u64(), 0);
}

#[test]
fn include_source_filter_keeps_only_that_source() {
    only_127_0_0_2_gets_through(Ipv4Addr::new(232, 173, 0, 2), &["--source", "127.0.0.2"]);
}

#[test]
fn exclude_source_filter_drops_that_source() {
    only_127_0_0_2_gets_through(Ipv4Addr::new(239, 255, 173, 3), &["--exclude", "127.0.0.3"]);
}

/// A dump that stalls with a tiny receive buffer loses packets, and the
/// kernel's drop counter (SO_RXQ_OVFL) accounts for every missing sequence
/// number.
///
/// Why `kernel_drops == lost` is exact here: one sender, paced at 1000
/// packets/s with one packet per sendmmsg, runs for 3 s while the dump
/// sleeps for the first 2 s after its join. During the stall the queue
/// fills (a few packets) and the kernel drops the rest, counting each in
/// the socket's drop counter. After the stall the dump drains the queue and
/// then keeps up with the paced sender, so the last packets are read, and
/// they carry the final counter: SO_RXQ_OVFL is stamped on each packet as it
/// is queued, so only a packet queued after the drops reports them. Every
/// drop then lies between two packets that were read (seq 0 is queued into
/// an empty buffer, the last one arrives after the stall), so each one is a
/// missing sequence number, and nothing else is missing (nothing leaves lo).
/// A second sender instead would restart at seq 0, and the drops at the end
/// of the first stream would never show as gaps.
#[test]
fn stalled_dump_with_small_rcvbuf_counts_kernel_drops_as_lost() {
    let group = Ipv4Addr::new(239, 255, 173, 4);
    let n: u64 = 3000;
    let (mut dump, port) = start_dump(
        group,
        &[
            "--quiet",
            "--json",
            "--rcvbuf",
            "4096",
            "--stall-ms",
            "2000",
            "--idle-exit-ms",
            "1500",
        ],
    );
    let sent = send(
        group,
        port,
        &["--count", &n.to_string(), "--rate", "1000", "--batch", "1"],
    );
    assert_eq!(sent.count, n);

    let out = json_output(&dump.finish(CHILD_LIMIT));
    assert!(out.packets.is_empty(), "--quiet prints no packet lines");
    let s = &out.summary;
    let (packets, lost, drops) = (s["packets"].u64(), s["lost"].u64(), s["kernel_drops"].u64());
    assert!(
        drops > 0,
        "a 4 KiB buffer must overflow during a 2 s stall: {s:?}"
    );
    assert_eq!(
        drops, lost,
        "every kernel drop is a missing sequence number: {s:?}"
    );
    assert_eq!(packets + lost, n, "read + lost = sent: {s:?}");
    assert!(s["gaps"].u64() >= 1, "{s:?}");
}

#[test]
fn quiet_json_prints_only_the_summary() {
    let group = Ipv4Addr::new(239, 255, 173, 5);
    let n = 200;
    let (mut dump, port) = start_dump(group, &["--quiet", "--json", "--idle-exit-ms", "1500"]);
    // Without --bind the source is lo's own address.
    let sent = send(group, port, &["--count", &n.to_string()]);
    assert_eq!(*sent.src.ip(), Ipv4Addr::LOCALHOST);

    let finished = dump.finish(CHILD_LIMIT);
    assert_eq!(finished.stdout.lines().count(), 1, "{finished:?}");
    let out = json_output(&finished);
    assert!(out.packets.is_empty());
    assert_eq!(out.summary["packets"].u64(), n);
    assert_eq!(out.summary["bytes"].u64(), n * 64);
    assert_eq!(out.summary["lost"].u64(), 0);
}

#[test]
fn count_exits_after_exactly_n_packets() {
    let group = Ipv4Addr::new(239, 255, 173, 6);
    // No --idle-exit-ms: only --count (or the timeout) can end it.
    let (mut dump, port) = start_dump(group, &["--json", "--count", "25"]);
    send(group, port, &["--count", "100", "--size", "100"]);

    let finished = dump.finish(CHILD_LIMIT);
    assert!(finished.stderr.contains("done: 25 packets"), "{finished:?}");
    let out = json_output(&finished);
    assert_eq!(seqs(&out.packets), (0..25).collect::<Vec<_>>());
    assert!(out.packets.iter().all(|p| p["len"].u64() == 100));
    assert_eq!(out.summary["packets"].u64(), 25);
    assert_eq!(out.summary["bytes"].u64(), 2500);
}

#[test]
fn human_output_has_a_line_per_packet_and_a_summary_table() {
    let group = Ipv4Addr::new(239, 255, 173, 7);
    let (mut dump, port) = start_dump(group, &["--count", "5"]);
    send(group, port, &["--count", "5", "--ttl", "2"]);

    let out = dump.finish(CHILD_LIMIT);
    assert!(out.status.success(), "{out:?}");
    let packet_lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("seq "))
        .collect();
    assert_eq!(packet_lines.len(), 5, "{out:?}");
    for (i, line) in packet_lines.iter().enumerate() {
        assert!(line.starts_with(&format!("seq {i} ")), "{line}");
        assert!(line.contains(&format!("to {group}")), "{line}");
        assert!(line.contains("ttl 2"), "{line}");
    }
    assert!(out.stdout.contains("summary of"), "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["packets", "5"]),
        "{out:?}"
    );
}

/// Payloads whose first 8 bytes are not our sequence number (iperf2 puts a
/// 32-bit datagram id there, then a timestamp; its last datagrams carry a
/// negative id) jump by 2^32 or more from one packet to the next. Such a
/// jump is a new baseline (a restart), not loss: counting it as loss once
/// made `lost` grow by ~2^32 per packet and wrap past u64. Real gaps around
/// them are still counted exactly.
///
/// Network safety: the test sends from a `multicast_sender` on lo.
#[test]
fn foreign_sequence_jumps_are_restarts_not_loss() {
    let group = Ipv4Addr::new(239, 255, 173, 8);
    let sec = 1_700_000_000u64; // an iperf2-like timestamp word
    let seqs: Vec<u64> = [
        0,
        1,
        2,
        5, // gap: 3 and 4 lost
        6,
        (1 << 40) + 5, // far ahead: restart
        (1 << 40) + 6,
        (1 << 32) | sec, // iperf2-like ids 1..4 (backwards first: restart)
        (2 << 32) | sec, // each 2^32 - 1 past the expected: restart
        (3 << 32) | sec,
        (4 << 32) | sec,
        (0xffff_fffb << 32) | sec, // iperf2's final datagram, id -5: restart
        7,                         // backwards: restart
        8,
        10, // gap: 9 lost
    ]
    .to_vec();
    let n = seqs.len() as u64;
    let (mut dump, port) = start_dump(group, &["--count", &n.to_string()]);

    let tx = PacketConn::multicast_sender(&Interface::loopback()).expect("a sender on lo");
    let dst = SocketAddrV4::new(group, port);
    for &seq in &seqs {
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        assert_eq!(tx.send_to(&payload, None, dst).unwrap(), payload.len());
        // Paced, so that the packets cannot overtake each other on lo.
        thread::sleep(Duration::from_millis(2));
    }

    let out = dump.finish(CHILD_LIMIT);
    assert!(out.status.success(), "{out:?}");
    let printed: Vec<u64> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("seq "))
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(printed, seqs, "{out:?}");
    let gap_lines: Vec<&str> = out.stdout.lines().filter(|l| l.contains("GAP:")).collect();
    assert_eq!(gap_lines.len(), 2, "{out:?}");
    assert!(gap_lines[0].starts_with("seq 5 ") && gap_lines[0].ends_with("GAP: 2 missing"));
    assert!(gap_lines[1].starts_with("seq 10 ") && gap_lines[1].ends_with("GAP: 1 missing"));
    // The summary table: "  lost          3 (missing sequence numbers)".
    let row = |name: &str| -> u64 {
        out.stdout
            .lines()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some(name)).then(|| words.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name:?} row in the summary: {out:?}"))
    };
    assert_eq!(row("packets"), n, "{out:?}");
    assert_eq!(row("lost"), 3, "{out:?}");
    assert_eq!(row("gaps"), 2, "{out:?}");
    assert_eq!(row("restarts"), 7, "{out:?}");
}

/// Argument errors: exit status 2, a message on stderr naming the bad
/// input, nothing on stdout, no panic.
fn assert_usage_error(tool: &'static str, args: &[&str], names: &str) {
    let out = run(tool, args);
    assert_eq!(out.status.code(), Some(2), "{tool} {args:?}: {out:?}");
    assert!(out.stdout.is_empty(), "{tool} {args:?}: {out:?}");
    assert!(
        out.stderr.contains(names),
        "{tool} {args:?}: stderr should name {names:?}: {out:?}"
    );
    assert!(!out.stderr.contains("panicked"), "{tool} {args:?}: {out:?}");
}

/// Cases shared by both tools; none of them gets as far as a socket.
const BAD_ARGUMENTS: &[(&[&str], &str)] = &[
    (&["239.255.173.8:5000"], "--iface"),
    (&["239.255.173.8:5000", "--iface", "nosuchif0"], "nosuchif0"),
    (&["239.255.173.8:5000", "--iface", "99999"], "99999"),
    (&["239.1.1:5000", "--iface", "lo"], "239.1.1:5000"),
    (&["10.0.0.1:5000", "--iface", "lo"], "10.0.0.1"),
    (&["239.255.173.8", "--iface", "lo"], "239.255.173.8"),
    (
        &["239.255.173.8:5000", "--iface", "lo", "--bogus"],
        "--bogus",
    ),
    (
        &["239.255.173.8:5000", "--iface", "lo", "--count", "abc"],
        "abc",
    ),
    (
        &["239.255.173.8:5000", "--iface", "lo", "--count"],
        "--count",
    ),
    (
        &["239.255.173.8:5000", "--iface", "lo", "--json=yes"],
        "--json",
    ),
    (&["--iface", "lo"], "GROUP:PORT"),
];

#[test]
fn mcast_dump_rejects_bad_arguments_with_status_2() {
    for (args, names) in BAD_ARGUMENTS {
        assert_usage_error("mcast_dump", args, names);
    }
    let g = "239.255.173.8:0";
    assert_usage_error(
        "mcast_dump",
        &[g, "--iface", "lo", "--batch", "0"],
        "--batch",
    );
    assert_usage_error(
        "mcast_dump",
        &[g, "--iface", "lo", "--source", "239.1.1.1"],
        "239.1.1.1",
    );
    assert_usage_error(
        "mcast_dump",
        &[
            g,
            "--iface",
            "lo",
            "--source",
            "127.0.0.2",
            "--exclude",
            "127.0.0.3",
        ],
        "--exclude",
    );
}

#[test]
fn mcast_send_rejects_bad_arguments_with_status_2() {
    for (args, names) in BAD_ARGUMENTS {
        assert_usage_error("mcast_send", args, names);
    }
    let g = "239.255.173.8:5000";
    assert_usage_error(
        "mcast_send",
        &["239.255.173.8:0", "--iface", "lo"],
        "port 0",
    );
    assert_usage_error("mcast_send", &[g, "--iface", "lo", "--ttl", "256"], "256");
    assert_usage_error("mcast_send", &[g, "--iface", "lo", "--tos", "0xzz"], "0xzz");
    assert_usage_error("mcast_send", &[g, "--iface", "lo", "--size", "7"], "--size");
    assert_usage_error(
        "mcast_send",
        &[g, "--iface", "lo", "--loop", "maybe"],
        "maybe",
    );
    assert_usage_error(
        "mcast_send",
        &[g, "--iface", "lo", "--rate", "fast"],
        "fast",
    );
    assert_usage_error(
        "mcast_send",
        &[g, "--iface", "lo", "--bind", "0.0.0.0"],
        "0.0.0.0",
    );
    // Not an address of this host: refused at bind (--count 0: even if the
    // host allowed non-local binds, nothing would be sent).
    assert_usage_error(
        "mcast_send",
        &[g, "--iface", "lo", "--bind", "192.0.2.1", "--count", "0"],
        "192.0.2.1",
    );
}

#[test]
fn help_prints_usage_and_exits_0() {
    for tool in ["mcast_dump", "mcast_send"] {
        let out = run(tool, &["--help"]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            out.stdout
                .starts_with(&format!("usage: {tool} GROUP:PORT --iface IFACE")),
            "{out:?}"
        );
    }
}
