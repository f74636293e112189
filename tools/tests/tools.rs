//! Process-level tests of `mcast-dump` and `mcast-send`: the tools run as
//! child processes (the binaries Cargo built for these tests) and talk
//! over lo.
//!
//! Network safety: every `mcast-send` here goes through [`send`] or
//! [`spawn_send`], which always pass `--iface lo` and refuse a `--bind`
//! outside 127.0.0.0/8; the tests that send by themselves use a
//! `multicast_sender` on lo; `mcast-dump` joins on lo only. This file's
//! groups are 239.255.173.x and 232.173.0.x, one per test; each dump binds
//! port 0 and the test reads the port the kernel chose from its
//! `listening` line.
//!
//! Each dump runs with `--timeout-ms`, and every child is killed when its
//! test fails, so no test can hang or leave a process behind.

mod procs;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipv4_reactor::{Interface, PacketConn};
use procs::{
    parse_dump_output, parse_dump_output_with, parse_json, seqs, strings, tool, DumpOutput, Json,
    JsonExt,
};

/// How long a dump may run at most (its `--timeout-ms`).
const DUMP_TIMEOUT_MS: u64 = 20_000;
/// How long the test waits for a child that must end on its own.
const CHILD_LIMIT: Duration = Duration::from_secs(40);
/// How long to wait after a join on lo before sending: the first packets of
/// a fresh flow can be dropped for a few ms after a join.
const SETTLE: Duration = Duration::from_millis(300);

/// What a finished tool left, its stdout as text (the tools print text).
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl From<procs::Finished> for Finished {
    fn from(f: procs::Finished) -> Finished {
        Finished {
            status: f.status,
            stdout: f.stdout_text(),
            stderr: f.stderr,
        }
    }
}

/// A running tool ([`procs::Proc`]: stdout collected, stderr lines
/// forwarded, killed when dropped).
struct Proc(procs::Proc);

impl Proc {
    fn spawn(name: &'static str, args: &[String]) -> Proc {
        let mut cmd = Command::new(tool(name));
        cmd.args(args);
        Proc(procs::Proc::spawn(name, cmd))
    }

    /// Waits for a stderr line that starts with `prefix`.
    fn wait_for_line(&mut self, prefix: &str, limit: Duration) -> String {
        self.0.wait_for(
            &format!("{prefix:?}"),
            |line| line.starts_with(prefix),
            limit,
        )
    }

    /// Sends `signal` (`INT`, `TERM`) to the child, then waits for it to
    /// end as [`Proc::finish`] does.
    fn signal_and_finish(&mut self, signal: &str, limit: Duration) -> Finished {
        self.0.signal_and_finish(signal, limit).into()
    }

    /// Waits for the child to end on its own (killing it and failing the
    /// test past `limit`) and returns its status and output.
    fn finish(&mut self, limit: Duration) -> Finished {
        self.0.finish(limit).into()
    }
}

/// Runs a tool to its end (for argument errors and `--help`).
fn run(name: &'static str, args: &[&str]) -> Finished {
    Proc::spawn(name, &strings(args)).finish(CHILD_LIMIT)
}

/// Starts `mcast-dump GROUP:0 --iface lo --timeout-ms .. EXTRA`, waits for
/// its `listening` line, then for the join to settle; returns the child and
/// the port it listens on.
fn start_dump(group: Ipv4Addr, extra: &[&str]) -> (Proc, u16) {
    let (dump, ports) = start_dump_lines(&[group], extra);
    (dump, ports[0])
}

/// Starts `mcast-dump G1:0 G2:0 ... --iface lo --timeout-ms .. EXTRA` (one
/// line per group), waits for its `listening` line, then for the joins to
/// settle; returns the child and each line's port, in argument order.
fn start_dump_lines(groups: &[Ipv4Addr], extra: &[&str]) -> (Proc, Vec<u16>) {
    let mut args: Vec<String> = groups.iter().map(|g| format!("{g}:0")).collect();
    args.extend(strings(&[
        "--iface",
        "lo",
        "--timeout-ms",
        &DUMP_TIMEOUT_MS.to_string(),
    ]));
    args.extend(strings(extra));
    let mut dump = Proc::spawn("mcast-dump", &args);
    let line = dump.wait_for_line("listening", Duration::from_secs(30));
    // "listening 239.255.173.1:41234 [239.255.173.2:41235 ...] iface=lo ifindex=1 rcvbuf=..."
    let addrs: Vec<SocketAddrV4> = line
        .split_whitespace()
        .skip(1)
        .take(groups.len())
        .map(|a| {
            a.parse()
                .unwrap_or_else(|_| panic!("no GROUP:PORT {a:?} in the listening line {line:?}"))
        })
        .collect();
    let got: Vec<Ipv4Addr> = addrs.iter().map(|a| *a.ip()).collect();
    assert_eq!(got, groups, "{line}");
    assert!(line.contains(" iface=lo "), "{line}");
    assert!(line.contains(" rcvbuf="), "{line}");
    thread::sleep(SETTLE);
    (dump, addrs.iter().map(|a| a.port()).collect())
}

/// What one `mcast-send` run reported.
struct Sent {
    /// `sent` from its JSON summary.
    count: u64,
    /// `elapsed_s` from its JSON summary.
    elapsed_s: f64,
    /// Its source address, from its `... from ADDR:PORT via ...` stderr line.
    src: SocketAddrV4,
}

/// Starts a quiet JSON dump with a 4 KiB receive buffer that sleeps
/// `stall_ms` after joining (so that a burst overflows it) and exits after
/// `idle_ms` without packets.
fn start_stalled_dump(group: Ipv4Addr, stall_ms: u64, idle_ms: u64) -> (Proc, u16) {
    start_dump(
        group,
        &[
            "--quiet",
            "--json",
            "--rcvbuf",
            "4096",
            "--stall-ms",
            &stall_ms.to_string(),
            "--idle-exit-ms",
            &idle_ms.to_string(),
        ],
    )
}

/// Starts `mcast-send GROUP:PORT --iface lo --json EXTRA`.
fn spawn_send(group: Ipv4Addr, port: u16, extra: &[&str]) -> Proc {
    // Network safety: lo only, and sources on 127.0.0.0/8 only.
    assert!(group.is_multicast());
    assert!(!extra.contains(&"--iface"), "send() always uses --iface lo");
    if let Some(i) = extra.iter().position(|a| *a == "--bind") {
        let addr: Ipv4Addr = extra[i + 1].parse().expect("--bind takes an address here");
        assert!(addr.is_loopback(), "tests bind senders to 127.0.0.0/8 only");
    }
    let mut args = strings(&[&format!("{group}:{port}"), "--iface", "lo", "--json"]);
    args.extend(strings(extra));
    Proc::spawn("mcast-send", &args)
}

/// Runs `mcast-send GROUP:PORT --iface lo --json EXTRA` to its end.
fn send(group: Ipv4Addr, port: u16, extra: &[&str]) -> Sent {
    sent_by(&spawn_send(group, port, extra).finish(CHILD_LIMIT))
}

/// What a finished `mcast-send --json` reported.
fn sent_by(out: &Finished) -> Sent {
    assert!(out.status.success(), "mcast-send failed: {out:?}");
    let summary = parse_json(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let skip = summary.get("skipped").is_some();
    let keys: &[&str] = if skip {
        &["sent", "skipped", "elapsed_s", "pps"]
    } else {
        &["sent", "elapsed_s", "pps"]
    };
    assert_eq!(summary.keys(), keys, "{out:?}");
    let src = out
        .stderr
        .split(" from ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no source address in mcast-send's stderr: {out:?}"));
    Sent {
        count: summary["sent"].u64(),
        elapsed_s: summary["elapsed_s"].as_f64().expect("a number"),
        src,
    }
}

/// The JSON lines a `--json` dump printed, checked (see [`DumpOutput`]).
fn json_output(out: &Finished) -> DumpOutput {
    assert!(out.status.success(), "mcast-dump failed: {out:?}");
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
    let (mut dump, port) = start_stalled_dump(group, 2000, 1500);
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
        assert_usage_error("mcast-dump", args, names);
    }
    let g = "239.255.173.8:0";
    assert_usage_error(
        "mcast-dump",
        &[g, "--iface", "lo", "--batch", "0"],
        "--batch",
    );
    assert_usage_error(
        "mcast-dump",
        &[g, "--iface", "lo", "--source", "239.1.1.1"],
        "239.1.1.1",
    );
    assert_usage_error(
        "mcast-dump",
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
        assert_usage_error("mcast-send", args, names);
    }
    let g = "239.255.173.8:5000";
    assert_usage_error(
        "mcast-send",
        &["239.255.173.8:0", "--iface", "lo"],
        "port 0",
    );
    assert_usage_error("mcast-send", &[g, "--iface", "lo", "--ttl", "256"], "256");
    assert_usage_error("mcast-send", &[g, "--iface", "lo", "--tos", "0xzz"], "0xzz");
    assert_usage_error("mcast-send", &[g, "--iface", "lo", "--size", "7"], "--size");
    assert_usage_error(
        "mcast-send",
        &[g, "--iface", "lo", "--loop", "maybe"],
        "maybe",
    );
    assert_usage_error(
        "mcast-send",
        &[g, "--iface", "lo", "--rate", "fast"],
        "fast",
    );
    assert_usage_error(
        "mcast-send",
        &[g, "--iface", "lo", "--bind", "0.0.0.0"],
        "0.0.0.0",
    );
    // Not an address of this host: refused at bind (--duration 0: even if
    // the host allowed non-local binds, nothing would be sent).
    assert_usage_error(
        "mcast-send",
        &[g, "--iface", "lo", "--bind", "192.0.2.1", "--duration", "0"],
        "192.0.2.1",
    );
}

/// `--help` prints the usage and every option on stdout; `--version`
/// prints `NAME VERSION`; both exit 0.
#[test]
fn help_and_version_of_every_tool() {
    let usages = [
        (
            "mcast-dump",
            "Usage: mcast-dump [OPTIONS] --iface <IFACE> <GROUP:PORT>...",
        ),
        (
            "mcast-send",
            "Usage: mcast-send [OPTIONS] --iface <IFACE> <GROUP:PORT>",
        ),
        ("ip-sniff", "Usage: ip-sniff [OPTIONS]"),
    ];
    for (tool, usage) in usages {
        let out = run(tool, &["--help"]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            out.stdout.lines().any(|l| l == usage),
            "{tool} --help: {out:?}"
        );
        assert!(out.stdout.contains("Exit status:"), "{out:?}");
        for short in [&["-h"][..], &["--version"], &["-V"]] {
            let out = run(tool, short);
            assert!(out.status.success(), "{tool} {short:?}: {out:?}");
            if short[0] == "-h" {
                assert!(out.stdout.contains(usage), "{out:?}");
            } else {
                assert_eq!(
                    out.stdout,
                    format!("{tool} {}\n", env!("CARGO_PKG_VERSION")),
                    "{out:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------
// Signals, duration, latency.

/// Ctrl-C (SIGINT) ends a running dump with the summary of what it
/// received, and exit status 0.
#[test]
fn sigint_ends_mcast_dump_with_the_summary_of_what_it_received() {
    let group = Ipv4Addr::new(239, 255, 173, 9);
    let n = 137;
    // No --count, no --idle-exit-ms: only a signal (or the timeout) ends it.
    let (mut dump, port) = start_dump(group, &["--json"]);
    assert_eq!(send(group, port, &["--count", &n.to_string()]).count, n);
    // The packets are queued on the dump's socket as they are sent; give
    // it a moment to read them.
    thread::sleep(Duration::from_secs(1));

    let finished = dump.signal_and_finish("INT", CHILD_LIMIT);
    assert_eq!(finished.status.code(), Some(0), "{finished:?}");
    assert!(
        finished.stderr.contains("done: stopped by SIGINT"),
        "{finished:?}"
    );
    let out = json_output(&finished);
    assert_eq!(seqs(&out.packets), (0..n).collect::<Vec<_>>());
    assert_eq!(out.summary["packets"].u64(), n, "{out:?}");
    assert_eq!(out.summary["lost"].u64(), 0, "{out:?}");
}

/// `mcast-send --count 0` sends until stopped, with a live rate line on
/// stderr each second; SIGINT ends it with its summary, SIGTERM ends the
/// dump with its own, and the two agree.
#[test]
fn count_0_sends_until_a_signal_and_sigterm_ends_the_dump() {
    let group = Ipv4Addr::new(239, 255, 173, 10);
    let (mut dump, port) = start_dump(group, &["--quiet", "--json"]);
    let mut sender = spawn_send(group, port, &["--count", "0", "--rate", "500"]);
    let live = sender.wait_for_line("rate: ", Duration::from_secs(10));
    assert!(live.ends_with(" packets sent"), "{live}");

    let sent = sent_by(&sender.signal_and_finish("INT", CHILD_LIMIT));
    assert!(
        sent.count >= 400,
        "at 500 pps for over a second: {}",
        sent.count
    );
    thread::sleep(Duration::from_millis(500));
    let finished = dump.signal_and_finish("TERM", CHILD_LIMIT);
    assert_eq!(finished.status.code(), Some(0), "{finished:?}");
    assert!(
        finished.stderr.contains("done: stopped by SIGTERM"),
        "{finished:?}"
    );
    let s = json_output(&finished).summary;
    assert_eq!(s["packets"].u64(), sent.count, "{s:?}");
    assert_eq!(s["lost"].u64(), 0, "{s:?}");
}

/// `--duration` alone: paced packets for that long, no count limit.
#[test]
fn mcast_send_runs_for_its_duration() {
    let group = Ipv4Addr::new(239, 255, 173, 11);
    let (mut dump, port) = start_dump(group, &["--quiet", "--json", "--idle-exit-ms", "1500"]);
    let sent = send(group, port, &["--duration", "1.5", "--rate", "200"]);
    // 200 pps for 1.5 s: 300 packets, give or take the last pacing step
    // (and a few more when a busy machine wakes the sender late near the
    // end: what was due after the deadline is not sent).
    assert!((280..=301).contains(&sent.count), "{}", sent.count);
    assert!(
        (1.4..3.0).contains(&sent.elapsed_s),
        "elapsed {}",
        sent.elapsed_s
    );
    let s = json_output(&dump.finish(CHILD_LIMIT)).summary;
    assert_eq!(s["packets"].u64(), sent.count, "{s:?}");
}

/// Checks a dump's `latency_ns` percentiles: present, ordered, and within
/// `range` (nanoseconds).
fn assert_latency(summary: &Json, range: std::ops::Range<u64>) {
    let l = &summary["latency_ns"];
    let p: Vec<u64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|k| l[*k].u64())
        .collect();
    assert!(p.windows(2).all(|w| w[0] <= w[1]), "ordered: {l:?}");
    assert!(
        range.contains(&p[0]) && range.contains(&p[4]),
        "{l:?} within {range:?}"
    );
}

/// `--seq mdp3`: MsgSeqNum (u32 LE at 0) numbers the packets from 1, and
/// SendingTime (u64 LE ns at 4), written by mcast-send at send time, gives
/// the latency per packet and in the summary.
#[test]
fn mdp3_sending_time_gives_latency() {
    let group = Ipv4Addr::new(239, 255, 173, 12);
    let n = 50;
    let (mut dump, port) = start_dump(group, &["--json", "--seq", "mdp3", "--count", "50"]);
    let sent = send(
        group,
        port,
        &["--seq", "mdp3", "--count", &n.to_string(), "--rate", "1000"],
    );
    assert_eq!(sent.count, n);
    let finished = dump.finish(CHILD_LIMIT);
    assert!(finished.status.success(), "{finished:?}");
    let out = parse_dump_output_with(&finished.stdout, true, &finished);
    assert_eq!(seqs(&out.packets), (1..=n).collect::<Vec<_>>());
    for p in &out.packets {
        // Over lo, well under a second.
        assert!(p["latency_ns"].u64() < 1_000_000_000, "{p:?}");
    }
    assert_latency(&out.summary, 1..1_000_000_000);
}

/// The latency is the kernel's receive time minus the packet's own
/// SendingTime: packets stamped 5 s in the past show 5 s (and a little).
/// The test writes the MDP 3.0 headers itself, so this also checks the
/// byte order the dump reads.
#[test]
fn latency_is_kernel_receive_time_minus_sending_time() {
    let group = Ipv4Addr::new(239, 255, 173, 13);
    let n = 20u32;
    let (mut dump, port) = start_dump(group, &["--json", "--seq", "mdp3", "--count", "20"]);
    // Network safety: a sender on lo.
    let tx = PacketConn::multicast_sender(&Interface::loopback()).expect("a sender on lo");
    let dst = SocketAddrV4::new(group, port);
    let five_s = 5_000_000_000u64;
    for seq in 100..100 + n {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let mut payload = [0u8; 32];
        payload[..4].copy_from_slice(&seq.to_le_bytes());
        payload[4..12].copy_from_slice(&(now - five_s).to_le_bytes());
        assert_eq!(tx.send_to(&payload, None, dst).unwrap(), payload.len());
        thread::sleep(Duration::from_millis(2));
    }
    let finished = dump.finish(CHILD_LIMIT);
    assert!(finished.status.success(), "{finished:?}");
    let out = parse_dump_output_with(&finished.stdout, true, &finished);
    assert_eq!(
        seqs(&out.packets),
        (100..100 + u64::from(n)).collect::<Vec<_>>()
    );
    assert_latency(&out.summary, five_s..five_s + 1_000_000_000);
}

/// `mcast-send --stamp` writes the send time (u64 BE) after the u64 BE
/// sequence number; `mcast-dump --stamp` reads it: the default format gets
/// latency too, and the human summary shows it.
#[test]
fn mcast_send_stamp_gives_latency_for_u64be() {
    let group = Ipv4Addr::new(239, 255, 173, 14);
    let n = 30;
    let (mut dump, port) = start_dump(group, &["--json", "--stamp", "--count", "30"]);
    send(group, port, &["--stamp", "--count", &n.to_string()]);
    let finished = dump.finish(CHILD_LIMIT);
    assert!(finished.status.success(), "{finished:?}");
    let out = parse_dump_output_with(&finished.stdout, true, &finished);
    assert_eq!(seqs(&out.packets), (0..n).collect::<Vec<_>>());
    for p in &out.packets {
        assert!(p["latency_ns"].u64() < 1_000_000_000, "{p:?}");
    }
    assert_latency(&out.summary, 1..1_000_000_000);

    // The same for people: a latency on each packet line and in the table.
    let group = Ipv4Addr::new(239, 255, 173, 15);
    let (mut dump, port) = start_dump(group, &["--stamp", "--count", "3"]);
    send(group, port, &["--stamp", "--count", "3"]);
    let out = dump.finish(CHILD_LIMIT);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("seq "))
        .collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    assert!(lines.iter().all(|l| l.contains("  latency ")), "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("latency ") && l.contains(" p99.9 ")),
        "{out:?}"
    );

    // No room for the stamp: an argument error.
    assert_usage_error(
        "mcast-send",
        &[
            "239.255.173.15:5000",
            "--iface",
            "lo",
            "--stamp",
            "--size",
            "8",
        ],
        "--size",
    );
}

// ---------------------------------------------------------------------
// Feeds: --seq formats, redundant lines, reordering, skips (issue 13).
// Groups 239.255.174.x.

/// A sender on lo (network safety: checked) for the tests that write
/// payloads themselves.
fn lo_sender() -> PacketConn {
    let tx = PacketConn::multicast_sender(&Interface::loopback()).expect("a sender on lo");
    assert_eq!(
        tx.socket().multicast_if_v4().expect("IP_MULTICAST_IF"),
        Ipv4Addr::LOCALHOST,
        "NETWORK SAFETY: the test sender must send through lo"
    );
    tx
}

/// Sends `payloads` to `dst` one by one, paced so that lo keeps their order.
fn send_payloads(dst: SocketAddrV4, payloads: &[Vec<u8>]) {
    assert!(dst.ip().is_multicast());
    let tx = lo_sender();
    for p in payloads {
        assert_eq!(tx.send_to(p, None, dst).unwrap(), p.len());
        thread::sleep(Duration::from_millis(2));
    }
}

/// The summary's `lines` entries.
fn summary_lines(summary: &Json) -> Vec<Json> {
    summary["lines"].as_array().expect("an array").clone()
}

/// Two lines, each missing a different range: every sequence number is
/// delivered once, nothing is lost, and the per-line figures tell which
/// line missed what and which delivered first.
fn two_lines_fill_each_other(groups: [Ipv4Addr; 2], extra: &[&str]) {
    let mut args = vec!["--json", "--rcvbuf", "8388608", "--idle-exit-ms", "1500"];
    args.extend_from_slice(extra);
    let (mut dump, ports) = start_dump_lines(&groups, &args);
    // Line A first, all of it, then line B: B's 10..=19 come late.
    let a = send(groups[0], ports[0], &["--count", "100", "--skip", "10-19"]);
    let b = send(groups[1], ports[1], &["--count", "100", "--skip", "50-59"]);
    assert_eq!((a.count, b.count), (90, 90));

    let out = json_output(&dump.finish(CHILD_LIMIT));
    let s = &out.summary;
    if !extra.contains(&"--quiet") {
        let mut got = seqs(&out.packets);
        got.sort_unstable();
        assert_eq!(got, (0..100).collect::<Vec<_>>(), "each sequence once");
        for p in &out.packets {
            let seq = p["seq"].u64();
            let line = if (10..20).contains(&seq) { 1 } else { 0 };
            assert_eq!(p["line"].u64(), line, "{p:?}");
        }
    }
    assert_eq!(s["packets"].u64(), 100, "{s:?}");
    assert_eq!(s["messages"].u64(), 100, "{s:?}");
    assert_eq!(s["duplicates"].u64(), 80, "{s:?}");
    assert_eq!(s["reordered"].u64(), 10, "{s:?}");
    assert_eq!((s["gaps"].u64(), s["lost"].u64()), (0, 0), "{s:?}");
    assert_eq!(s["malformed"].u64(), 0, "{s:?}");
    let lines = summary_lines(s);
    assert_eq!(lines.len(), 2, "{s:?}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            l["group"].str(),
            format!("{}:{}", groups[i], ports[i]),
            "{l:?}"
        );
        assert_eq!(l["packets"].u64(), 90, "{l:?}");
        assert_eq!((l["gaps"].u64(), l["lost"].u64()), (1, 10), "{l:?}");
        assert_eq!(l["kernel_drops"].u64(), 0, "{l:?}");
    }
    assert_eq!(
        (lines[0]["first"].u64(), lines[1]["first"].u64()),
        (90, 10),
        "{s:?}"
    );
}

#[test]
fn two_lines_with_different_skips_deliver_every_sequence_once() {
    two_lines_fill_each_other(
        [
            Ipv4Addr::new(239, 255, 174, 1),
            Ipv4Addr::new(239, 255, 174, 2),
        ],
        &[],
    );
}

#[test]
fn quiet_two_lines_do_the_same_accounting() {
    two_lines_fill_each_other(
        [
            Ipv4Addr::new(239, 255, 174, 3),
            Ipv4Addr::new(239, 255, 174, 4),
        ],
        &["--quiet"],
    );
}

/// 10, 12, 11, 13 on one line: 11 is late (reordered 1), nothing is lost;
/// in JSON, and in words.
#[test]
fn one_line_out_of_order_counts_reordered_not_lost() {
    let payloads: Vec<Vec<u8>> = [10u64, 12, 11, 13]
        .iter()
        .map(|s| s.to_be_bytes().to_vec())
        .collect();

    let group = Ipv4Addr::new(239, 255, 174, 5);
    let (mut dump, port) = start_dump(group, &["--json", "--count", "4"]);
    send_payloads(SocketAddrV4::new(group, port), &payloads);
    let out = json_output(&dump.finish(CHILD_LIMIT));
    assert_eq!(seqs(&out.packets), [10, 12, 11, 13]);
    let s = &out.summary;
    assert_eq!(s["packets"].u64(), 4, "{s:?}");
    assert_eq!(s["reordered"].u64(), 1, "{s:?}");
    assert_eq!((s["gaps"].u64(), s["lost"].u64()), (0, 0), "{s:?}");
    assert_eq!(s["duplicates"].u64(), 0, "{s:?}");

    let group = Ipv4Addr::new(239, 255, 174, 6);
    let (mut dump, port) = start_dump(group, &["--count", "4"]);
    send_payloads(SocketAddrV4::new(group, port), &payloads);
    let out = dump.finish(CHILD_LIMIT);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let packet = |seq: u64| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("seq {seq} ")))
            .unwrap_or_else(|| panic!("no line for seq {seq}: {out:?}"))
    };
    assert!(packet(12).ends_with("GAP: 1 missing"), "{out:?}");
    assert!(packet(11).contains("LATE: fills 11 (reordered)"), "{out:?}");
    assert!(!packet(13).contains("GAP"), "{out:?}");
    let row = |name: &str| -> u64 {
        lines
            .iter()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next() == Some(name)).then(|| words.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name:?} row in the summary: {out:?}"))
    };
    assert_eq!((row("reordered"), row("lost"), row("gaps")), (1, 0, 0));
}

/// MoldUDP64: 3 messages a packet, one packet skipped: its 3 messages are
/// lost, every other message delivered.
#[test]
fn moldudp64_skip_loses_the_skipped_packets_messages() {
    let group = Ipv4Addr::new(239, 255, 174, 7);
    let (mut dump, port) = start_dump(
        group,
        &["--json", "--seq", "moldudp64", "--idle-exit-ms", "1500"],
    );
    // Packets cover 1-3, 4-6, 7-9, 10-12, ...: the fourth is left out.
    let sent = send(
        group,
        port,
        &[
            "--seq",
            "moldudp64",
            "--messages",
            "3",
            "--session",
            "TEST01",
            "--count",
            "20",
            "--skip",
            "11",
        ],
    );
    assert_eq!(sent.count, 19);
    let out = json_output(&dump.finish(CHILD_LIMIT));
    let s = &out.summary;
    assert_eq!(s["packets"].u64(), 19, "{s:?}");
    assert_eq!(s["messages"].u64(), 19 * 3, "{s:?}");
    assert_eq!((s["gaps"].u64(), s["lost"].u64()), (1, 3), "{s:?}");
    let firsts: Vec<u64> = (0..20).filter(|&i| i != 3).map(|i| 1 + 3 * i).collect();
    assert_eq!(seqs(&out.packets), firsts);
    assert!(out.packets.iter().all(|p| p["count"].u64() == 3));
}

/// MDP 3.0 with a skipped range: MsgSeqNum numbers from 1, the range is
/// lost, and SendingTime still gives the latency.
#[test]
fn mdp3_skip_gives_lost() {
    let group = Ipv4Addr::new(239, 255, 174, 8);
    let (mut dump, port) = start_dump(
        group,
        &["--json", "--seq", "mdp3", "--idle-exit-ms", "1500"],
    );
    let sent = send(
        group,
        port,
        &["--seq", "mdp3", "--count", "50", "--skip", "20-24"],
    );
    assert_eq!(sent.count, 45);
    let finished = dump.finish(CHILD_LIMIT);
    assert!(finished.status.success(), "{finished:?}");
    let out = parse_dump_output_with(&finished.stdout, true, &finished);
    let want: Vec<u64> = (1..=50).filter(|s| !(20..=24).contains(s)).collect();
    assert_eq!(seqs(&out.packets), want);
    let s = &out.summary;
    assert_eq!((s["gaps"].u64(), s["lost"].u64()), (1, 5), "{s:?}");
    assert_latency(s, 1..1_000_000_000);
}

/// A packet too short for the format counts as malformed: not delivered,
/// not a loss, still a packet its line received.
#[test]
fn short_packet_counts_malformed() {
    let group = Ipv4Addr::new(239, 255, 174, 9);
    let (mut dump, port) = start_dump(group, &["--json", "--idle-exit-ms", "1500"]);
    send_payloads(
        SocketAddrV4::new(group, port),
        &[
            0u64.to_be_bytes().to_vec(),
            vec![1, 2, 3],
            1u64.to_be_bytes().to_vec(),
        ],
    );
    let out = json_output(&dump.finish(CHILD_LIMIT));
    assert_eq!(seqs(&out.packets), [0, 1]);
    let s = &out.summary;
    assert_eq!(s["malformed"].u64(), 1, "{s:?}");
    assert_eq!((s["packets"].u64(), s["lost"].u64()), (2, 0), "{s:?}");
    assert_eq!(summary_lines(s)[0]["packets"].u64(), 3, "{s:?}");
}

/// `--seq u32le@4 --stamp` from mcast-send to mcast-dump: the sequence
/// number at offset 4, the send time after it.
#[test]
fn u32le_at_offset_4_round_trip() {
    let group = Ipv4Addr::new(239, 255, 174, 10);
    let n = 40;
    let (mut dump, port) = start_dump(
        group,
        &["--json", "--seq", "u32le@4", "--stamp", "--count", "40"],
    );
    let sent = send(
        group,
        port,
        &[
            "--seq",
            "u32le@4",
            "--stamp",
            "--count",
            &n.to_string(),
            "--first",
            "7",
        ],
    );
    assert_eq!(sent.count, n);
    let finished = dump.finish(CHILD_LIMIT);
    assert!(finished.status.success(), "{finished:?}");
    let out = parse_dump_output_with(&finished.stdout, true, &finished);
    assert_eq!(seqs(&out.packets), (7..7 + n).collect::<Vec<_>>());
    assert_eq!(out.summary["lost"].u64(), 0);
    assert_latency(&out.summary, 1..1_000_000_000);
}

/// Bad feed arguments: exit status 2 and the bad text named.
#[test]
fn bad_feed_arguments_exit_2_naming_them() {
    let g = "239.255.174.11:0";
    let d = "239.255.174.11:5000";
    for (tool, args, names) in [
        (
            "mcast-dump",
            &[g, "--iface", "lo", "--seq", "u65be"][..],
            "u65be",
        ),
        (
            "mcast-dump",
            &[g, "--iface", "lo", "--seq", "u64be@x"],
            "u64be@x",
        ),
        (
            "mcast-dump",
            &[g, "--iface", "lo", "--seq", "moldudp64@2"],
            "moldudp64@2",
        ),
        (
            "mcast-dump",
            &[g, "--iface", "lo", "--reorder-window", "1000"],
            "1000",
        ),
        (
            "mcast-dump",
            &[
                g,
                "--iface",
                "lo",
                "--seq",
                "u16be",
                "--reorder-window",
                "65536",
            ],
            "65536",
        ),
        (
            "mcast-dump",
            &[g, "--iface", "lo", "--seq", "moldudp64", "--stamp"],
            "--stamp",
        ),
        (
            "mcast-dump",
            &[g, "239.255.174.12:0", "--iface", "lo", "--seq", "none"],
            "none",
        ),
        (
            "mcast-send",
            &[d, "--iface", "lo", "--seq", "bogus"],
            "bogus",
        ),
        ("mcast-send", &[d, "--iface", "lo", "--seq", "none"], "none"),
        ("mcast-send", &[d, "--iface", "lo", "--skip", "9-3"], "9-3"),
        ("mcast-send", &[d, "--iface", "lo", "--first", "x1"], "x1"),
        (
            "mcast-send",
            &[d, "--iface", "lo", "--messages", "3"],
            "--messages",
        ),
        (
            "mcast-send",
            &[
                d,
                "--iface",
                "lo",
                "--seq",
                "moldudp64",
                "--messages",
                "65535",
            ],
            "65535",
        ),
        (
            "mcast-send",
            &[
                d,
                "--iface",
                "lo",
                "--seq",
                "moldudp64",
                "--session",
                "ELEVENCHARS",
            ],
            "ELEVENCHARS",
        ),
        (
            "mcast-send",
            &[
                d,
                "--iface",
                "lo",
                "--seq",
                "moldudp64",
                "--messages",
                "30",
                "--size",
                "64",
            ],
            "--size",
        ),
    ] {
        assert_usage_error(tool, args, names);
    }
}

/// `--backend io-uring` (a build with the `io-uring` feature): the same
/// counts through the io_uring backend, quiet and with a JSON line per
/// packet, in order; the listening line says which backend reads.
#[cfg(feature = "io-uring")]
#[test]
fn io_uring_backend_receives_every_packet() {
    // A burst that the socket's default receive buffer holds whole even if
    // nothing were read meanwhile (a drop the kernel makes at the end of a
    // burst is only reported by the packet after it, and none follows).
    let n = 200u64;
    for (i, extra) in [&["--quiet"][..], &[][..]].iter().enumerate() {
        let group = Ipv4Addr::new(239, 255, 174, 20 + i as u8);
        let mut args = vec![
            "--backend",
            "io-uring",
            "--json",
            "--idle-exit-ms",
            "1500",
            "--rcvbuf",
            "4194304",
        ];
        args.extend_from_slice(extra);
        let (mut dump, port) = start_dump(group, &args);
        send(group, port, &["--count", &n.to_string()]);
        let finished = dump.finish(CHILD_LIMIT);
        assert!(finished.status.success(), "{finished:?}");
        assert!(
            finished.stderr.contains(" backend=io_uring"),
            "{finished:?}"
        );
        let out = json_output(&finished);
        assert_eq!(
            out.summary["packets"].u64(),
            n,
            "{extra:?}: {}",
            out.summary
        );
        assert_eq!(out.summary["lost"].u64(), 0, "{extra:?}");
        if extra.is_empty() {
            assert_eq!(seqs(&out.packets), (0..n).collect::<Vec<_>>());
        }
    }
}

/// Without the `io-uring` feature, `--backend io-uring` is a clear error
/// naming what is missing, and `--backend auto` reads with mio and says
/// why.
#[cfg(not(feature = "io-uring"))]
#[test]
fn io_uring_backend_without_the_feature_is_a_clear_error() {
    let group = Ipv4Addr::new(239, 255, 174, 22);
    let out = run(
        "mcast-dump",
        &[
            &format!("{group}:0"),
            "--iface",
            "lo",
            "--backend",
            "io-uring",
            "--timeout-ms",
            "100",
        ],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("io_uring") || out.stderr.contains("io-uring"),
        "{out:?}"
    );
    let (mut dump, _port) = start_dump(group, &["--backend", "auto", "--idle-exit-ms", "300"]);
    let finished = dump.finish(CHILD_LIMIT);
    assert!(
        finished.stderr.contains("--backend auto: reading with mio"),
        "{finished:?}"
    );
}

/// A burst that overflows a stalled dump's 4 KiB buffer, with nothing
/// after it: no packet read reports the drops (they come after the packets
/// that fit), yet the summary's kernel_drops has them, from the socket's
/// own count: packets + kernel_drops == sent.
#[test]
fn drops_at_the_end_of_a_burst_are_in_the_summary() {
    let group = Ipv4Addr::new(239, 255, 174, 23);
    let n: u64 = 500;
    let (mut dump, port) = start_stalled_dump(group, 1500, 1000);
    let sent = send(group, port, &["--count", &n.to_string()]);
    assert_eq!(sent.count, n);
    let out = json_output(&dump.finish(CHILD_LIMIT));
    let s = &out.summary;
    let (packets, drops) = (s["packets"].u64(), s["kernel_drops"].u64());
    assert!(drops > 0, "a 4 KiB buffer must overflow: {s:?}");
    assert_eq!(packets + drops, n, "read + dropped = sent: {s:?}");
    assert_eq!(s["lines"][0]["kernel_drops"].u64(), drops, "{s:?}");
}
