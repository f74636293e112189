//! The one way a test says that it could not run. Also included by
//! `tests/topology/mod.rs` (through `#[path]`), which the tools' tests share.

use std::io::{self, Write};

/// Says loudly that `test` did not run because it needs `needs` (e.g.
/// `"root: CAP_NET_RAW"`, `"UDP GRO on lo: ..."`): one line
/// `SKIPPED (needs NEEDS): TEST`, written to the process's stderr directly
/// (not through `eprintln!`, which the test harness captures). CI runs as
/// root and fails when any test printed that line.
pub fn skipped(needs: &str, test: &str) {
    let _ = io::stderr().write_all(format!("SKIPPED (needs {needs}): {test}\n").as_bytes());
}

/// [`skipped`] for a test that needs root: `SKIPPED (needs root: WHAT): TEST`.
pub fn skipped_needs_root(what: &str, test: &str) {
    skipped(&format!("root: {what}"), test);
}
