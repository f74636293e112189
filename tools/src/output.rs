//! Writing to stdout and stderr: a closed pipe (`mcast-dump ... | head`)
//! ends a tool quietly, JSON lines come from serde_json.

use std::fmt;
use std::io::{self, Write as _};
use std::process;

use serde::Serialize;

use crate::cli::{EXIT_FAILURE, EXIT_OK};

/// Writes `tool: msg` as one line to stderr. Errors are ignored: there is
/// nowhere left to report them (and `eprintln!` would panic).
pub fn diag(tool: &str, msg: impl fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{tool}: {msg}");
}

/// Writes `line` to stderr as it is (the `listening` line must begin with
/// `listening`).
pub fn diag_line(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// Writes `bytes` to stdout and flushes. A closed pipe ends the program
/// with status 0; any other error ends it with status 1.
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

/// Appends `value` as one line of JSON to `buf`.
pub fn push_json_line(buf: &mut Vec<u8>, value: &impl Serialize) {
    // Plain structs of numbers, strings and options always serialize, and
    // writing to a Vec cannot fail.
    serde_json::to_writer(&mut *buf, value).expect("a JSON-serializable value");
    buf.push(b'\n');
}

/// `value` as one line of JSON, newline included.
pub fn json_line(value: &impl Serialize) -> Vec<u8> {
    let mut buf = Vec::new();
    push_json_line(&mut buf, value);
    buf
}

/// Seconds with microseconds, for people.
pub fn secs(d: std::time::Duration) -> String {
    format!("{:.6}", d.as_secs_f64())
}

/// Rounds `v` to `decimals` places, for JSON figures people read.
pub fn round(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}
