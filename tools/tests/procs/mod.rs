//! Helpers shared by the process-level tests (`tools.rs`, `interop.rs`,
//! `ip_sniff.rs`): where the built tools are, waiting for a child's stderr
//! line, signals, killing a child left running, and reading the tools'
//! `--json` output with serde_json (objects keep their key order, so the
//! tests can check it).

#![allow(dead_code)]

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub use serde_json::Value as Json;

/// The path of one of the package's binaries, as Cargo built it for the
/// tests.
pub fn tool(name: &str) -> &'static str {
    match name {
        "mcast-dump" => env!("CARGO_BIN_EXE_mcast-dump"),
        "mcast-send" => env!("CARGO_BIN_EXE_mcast-send"),
        "ip-sniff" => env!("CARGO_BIN_EXE_ip-sniff"),
        other => panic!("no tool named {other}"),
    }
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Waits for a stderr line of child `name` that `matches` (`what`
/// describes it), keeping every line read in `stderr`.
pub fn wait_for_stderr_line(
    name: &str,
    child: &mut Child,
    stderr_lines: &mpsc::Receiver<String>,
    stderr: &mut Vec<String>,
    what: &str,
    matches: impl Fn(&str) -> bool,
    limit: Duration,
) -> String {
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match stderr_lines.recv_timeout(left) {
            Ok(line) => {
                stderr.push(line.clone());
                if matches(&line) {
                    return line;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "{} printed no {what} line within {limit:?}; stderr so far:\n{}",
                name,
                stderr.join("\n")
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "{} ended before printing a {what} line ({:?}); stderr:\n{}",
                name,
                child.try_wait(),
                stderr.join("\n")
            ),
        }
    }
}

/// Sends `signal` (`INT`, `TERM`) to a child that has not been waited for
/// (so its pid cannot have been reused), through kill(1).
pub fn send_signal(name: &str, child: &mut Child, signal: &str) {
    if let Ok(None) = child.try_wait() {
        let pid = child.id().to_string();
        let out = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .output()
            .unwrap_or_else(|e| panic!("running kill -{signal} {pid} ({name}): {e}"));
        assert!(
            out.status.success(),
            "kill -{signal} {pid} ({name}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Says loudly, past the test harness's capture, that `test` did not run
/// because `program` (from the Debian package `package`) is missing.
pub fn skipped_for_peer(test: &str, program: &str, package: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(
        format!("SKIPPED (needs {program}: apt-get install {package}): {test}\n").as_bytes(),
    );
}

/// The path of an installed third-party program: a non-empty executable
/// file in `PATH` or the usual system directories.
pub fn find_program(program: &str) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/local/bin", "/usr/bin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().find_map(|dir| {
        let candidate = dir.join(program);
        let meta = candidate.metadata().ok()?;
        (meta.is_file() && meta.len() > 0 && meta.permissions().mode() & 0o111 != 0)
            .then(|| candidate.to_str().expect("a UTF-8 path").to_string())
    })
}

/// The path of a third-party program, or `None` after saying SKIPPED with
/// the Debian package to install.
pub fn peer(test: &str, program: &str, package: &str) -> Option<String> {
    let found = find_program(program);
    if found.is_none() {
        skipped_for_peer(test, program, package);
    }
    found
}

/// Kills `child` if it still runs (for `Drop`: a failing test leaves
/// nothing behind).
pub fn kill_if_running(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One line of JSON.
pub fn parse_json(line: &str) -> Result<Json, serde_json::Error> {
    serde_json::from_str(line)
}

/// Strict accessors for the tools' JSON: each panics, naming the value,
/// when the value is not what the test expects.
pub trait JsonExt {
    /// The keys of an object, in order.
    fn keys(&self) -> Vec<&str>;
    /// A whole number.
    fn u64(&self) -> u64;
    /// A string.
    fn str(&self) -> &str;
}

impl JsonExt for Json {
    fn keys(&self) -> Vec<&str> {
        match self {
            Json::Object(fields) => fields.keys().map(String::as_str).collect(),
            _ => panic!("not an object: {self:?}"),
        }
    }

    fn u64(&self) -> u64 {
        self.as_u64()
            .unwrap_or_else(|| panic!("not a whole number: {self:?}"))
    }

    fn str(&self) -> &str {
        self.as_str()
            .unwrap_or_else(|| panic!("not a string: {self:?}"))
    }
}

/// The keys of a dump's summary, in order (`latency_ns` follows them for
/// feeds with send stamps).
pub const SUMMARY_KEYS: [&str; 14] = [
    "packets",
    "bytes",
    "messages",
    "duplicates",
    "reordered",
    "gaps",
    "lost",
    "malformed",
    "restarts",
    "kernel_drops",
    "truncated",
    "elapsed_s",
    "pps",
    "lines",
];

/// The keys of each entry of a dump summary's `lines`, in order.
pub const LINE_KEYS: [&str; 6] = ["group", "packets", "first", "gaps", "lost", "kernel_drops"];

/// The keys of a dump's packet line, in order (`latency_ns` follows them
/// for feeds with send stamps).
pub const PACKET_KEYS: [&str; 9] = [
    "seq",
    "line",
    "len",
    "src",
    "dst",
    "ifindex",
    "ttl",
    "tos",
    "truncated",
];

/// The JSON lines a `--json` dump printed: per-packet objects, then the
/// summary (checked to be last and alone).
pub struct DumpOutput {
    pub packets: Vec<Json>,
    pub summary: Json,
}

impl fmt::Debug for DumpOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} packets, summary {:?}",
            self.packets.len(),
            self.summary
        )
    }
}

/// Parses the `--json` output `text` of a dump (`out`, for messages) and
/// checks the keys of its packet lines and of its last line, the summary.
/// With `latency`, both end with `latency_ns`.
pub fn parse_dump_output_with(text: &str, latency: bool, out: &dyn fmt::Debug) -> DumpOutput {
    let mut lines: Vec<Json> = text
        .lines()
        .map(|l| parse_json(l).unwrap_or_else(|e| panic!("{e}: line {l:?} of {out:?}")))
        .collect();
    let last = lines.pop().unwrap_or_else(|| panic!("no output: {out:?}"));
    assert_eq!(last.keys(), ["summary"], "the last line is the summary");
    let summary = last["summary"].clone();
    let with_latency = |keys: &[&'static str]| {
        let mut keys = keys.to_vec();
        if latency {
            keys.push("latency_ns");
        }
        keys
    };
    assert_eq!(summary.keys(), with_latency(&SUMMARY_KEYS), "summary keys");
    if latency {
        assert_eq!(
            summary["latency_ns"].keys(),
            ["p50", "p90", "p99", "p999", "max"],
            "latency keys"
        );
    }
    let lines_of = summary["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("summary lines is not an array: {summary:?}"));
    assert!(
        !lines_of.is_empty(),
        "one entry per GROUP:PORT: {summary:?}"
    );
    for l in lines_of {
        assert_eq!(l.keys(), LINE_KEYS, "line keys");
    }
    for p in &lines {
        let mut want = with_latency(&PACKET_KEYS);
        if p.get("count").is_some() {
            want.insert(1, "count"); // MoldUDP64 packets
        }
        assert_eq!(p.keys(), want, "packet keys");
    }
    DumpOutput {
        packets: lines,
        summary,
    }
}

/// [`parse_dump_output_with`] for a feed without send stamps.
pub fn parse_dump_output(text: &str, out: &dyn fmt::Debug) -> DumpOutput {
    parse_dump_output_with(text, false, out)
}

pub fn seqs(packets: &[Json]) -> Vec<u64> {
    packets.iter().map(|p| p["seq"].u64()).collect()
}

// ---------------------------------------------------------------------
// Child processes.

/// What a finished child left.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Finished {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl fmt::Debug for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finished")
            .field("status", &self.status)
            .field("stdout", &self.stdout_text())
            .field("stderr", &self.stderr)
            .finish()
    }
}

/// A running child, its stdout collected by one thread and its stderr
/// lines forwarded by another. Dropping it kills the child if it still runs
/// (so a failing test leaves nothing behind).
///
/// A child started by `ip netns exec` is the program itself (`ip` execs it
/// after entering the namespace), so a signal to the child reaches the
/// program.
pub struct Proc {
    name: String,
    child: Child,
    stdout: Option<thread::JoinHandle<Vec<u8>>>,
    stderr_lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        let mut out = child.stdout.take().expect("piped stdout");
        let stdout = thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = out.read_to_end(&mut bytes);
            bytes
        });
        let err = child.stderr.take().expect("piped stderr");
        let (tx, stderr_lines) = mpsc::channel();
        thread::spawn(move || {
            let mut err = BufReader::new(err);
            let mut line = Vec::new();
            loop {
                line.clear();
                match err.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        if tx.send(text.trim_end().to_string()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Proc {
            name: name.to_string(),
            child,
            stdout: Some(stdout),
            stderr_lines,
            stderr: Vec::new(),
        }
    }

    /// Waits for a stderr line that `matches`; `what` describes it.
    pub fn wait_for(
        &mut self,
        what: &str,
        matches: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> String {
        wait_for_stderr_line(
            &self.name,
            &mut self.child,
            &self.stderr_lines,
            &mut self.stderr,
            what,
            matches,
            limit,
        )
    }

    /// Waits for the child to end on its own (killing it and failing the
    /// test past `limit`) and returns its status and output.
    pub fn finish(&mut self, limit: Duration) -> Finished {
        let until = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the child") {
                break status;
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.stderr.extend(self.stderr_lines.try_iter());
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
        // The child is gone, so the stderr pipe is closed (unless a
        // grandchild holds it: then take what came so far).
        let until = Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self
            .stderr_lines
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            self.stderr.push(line);
        }
        Finished {
            status,
            stdout,
            stderr: self.stderr.join("\n"),
        }
    }

    /// Sends `signal` (`INT`, `TERM`) to the child if it still runs (it
    /// has not been waited for, so its pid cannot have been reused).
    pub fn signal(&mut self, signal: &str) {
        send_signal(&self.name, &mut self.child, signal);
    }

    /// Sends `signal`, then waits as [`Proc::finish`] does. For peers that
    /// end cleanly on a signal (socat, and our tools, which print their
    /// summary).
    pub fn signal_and_finish(&mut self, signal: &str, limit: Duration) -> Finished {
        self.signal(signal);
        self.finish(limit)
    }

    /// Asks the child to stop with SIGTERM, then waits as
    /// [`Proc::finish`] does.
    pub fn terminate(&mut self, limit: Duration) -> Finished {
        self.signal_and_finish("TERM", limit)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}
