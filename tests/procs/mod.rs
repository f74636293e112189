//! Helpers shared by the process-level tests (`tests/tools.rs` and
//! `tests/interop.rs`): where the built examples live, waiting for a child's
//! stderr line, killing a child left running, and a strict JSON parser for
//! the tools' `--json` output.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The directory of the built examples under `manifest` (honouring
/// `CARGO_TARGET_DIR`, relative to `manifest` when it is relative).
pub fn examples_path(manifest: &Path) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                manifest.join(dir)
            }
        }
        None => manifest.join("target"),
    };
    target.join("debug").join("examples")
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

/// Kills `child` if it still runs (for `Drop`: a failing test leaves
/// nothing behind).
pub fn kill_if_running(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The JSON lines a `--json` dump printed: per-packet objects, then the
/// summary (checked to be last and alone).
pub struct DumpOutput {
    pub packets: Vec<Json>,
    pub summary: Json,
}

/// Parses the `--json` output `text` of a dump (`out`, for messages) and
/// checks the keys of its packet lines and of its last line, the summary.
pub fn parse_dump_output(text: &str, out: &dyn fmt::Debug) -> DumpOutput {
    let mut lines: Vec<Json> = text
        .lines()
        .map(|l| Json::parse(l).unwrap_or_else(|e| panic!("{e}: line {l:?} of {out:?}")))
        .collect();
    let last = lines.pop().unwrap_or_else(|| panic!("no output: {out:?}"));
    assert_eq!(last.keys(), ["summary"], "the last line is the summary");
    let summary = last["summary"].clone();
    assert_eq!(
        summary.keys(),
        [
            "packets",
            "bytes",
            "gaps",
            "lost",
            "kernel_drops",
            "truncated",
            "elapsed_s",
            "pps"
        ],
        "summary keys"
    );
    for p in &lines {
        assert_eq!(
            p.keys(),
            [
                "seq",
                "len",
                "src",
                "dst",
                "ifindex",
                "ttl",
                "tos",
                "truncated"
            ],
            "packet keys"
        );
    }
    DumpOutput {
        packets: lines,
        summary,
    }
}

pub fn seqs(packets: &[Json]) -> Vec<u64> {
    packets.iter().map(|p| p["seq"].u64()).collect()
}

/// Just enough JSON to check the tools' output strictly: objects keep their
/// key order, numbers keep their text (so integers compare exactly).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            at: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.at != p.s.len() {
            return Err(format!("trailing bytes at {} in {text:?}", p.at));
        }
        Ok(v)
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(fields) => fields.iter().map(|(k, _)| k.as_str()).collect(),
            _ => panic!("not an object: {self:?}"),
        }
    }

    pub fn u64(&self) -> u64 {
        match self {
            Json::Num(n) => n
                .parse()
                .unwrap_or_else(|_| panic!("not a whole number: {n}")),
            _ => panic!("not a number: {self:?}"),
        }
    }

    pub fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }
}

impl std::ops::Index<&str> for Json {
    type Output = Json;
    fn index(&self, key: &str) -> &Json {
        self.get(key)
            .unwrap_or_else(|| panic!("no key {key:?} in {self:?}"))
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.at).is_some_and(|c| c.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.at) == Some(&c) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", c as char, self.at))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.at) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(c) if *c == b'-' || c.is_ascii_digit() => self.number(),
            _ => Err(format!("unexpected input at {}", self.at)),
        }
    }

    fn literal(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.s[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(v)
        } else {
            Err(format!("bad literal at {}", self.at))
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.at;
        let digits = |p: &mut Self| {
            let from = p.at;
            while p.s.get(p.at).is_some_and(u8::is_ascii_digit) {
                p.at += 1;
            }
            p.at > from
        };
        if self.s.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        if !digits(self) {
            return Err(format!("bad number at {start}"));
        }
        if self.s.get(self.at) == Some(&b'.') {
            self.at += 1;
            if !digits(self) {
                return Err(format!("bad fraction at {start}"));
            }
        }
        if matches!(self.s.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.s.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !digits(self) {
                return Err(format!("bad exponent at {start}"));
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.at]).map_err(|e| e.to_string())?;
        Ok(Json::Num(text.to_string()))
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let rest = std::str::from_utf8(&self.s[self.at..]).map_err(|e| e.to_string())?;
            let mut chars = rest.chars();
            let c = chars.next().ok_or("unterminated string")?;
            self.at += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let e = *self.s.get(self.at).ok_or("unterminated escape")?;
                    self.at += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hex = self.s.get(self.at..self.at + 4).ok_or("short \\u escape")?;
                            let hex = std::str::from_utf8(hex).map_err(|e| e.to_string())?;
                            let code = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                            out.push(char::from_u32(code).ok_or("surrogate in \\u escape")?);
                            self.at += 4;
                        }
                        _ => return Err(format!("bad escape at {}", self.at)),
                    }
                }
                c if u32::from(c) < 0x20 => return Err("control character in string".into()),
                c => out.push(c),
            }
        }
    }

    fn array(&mut self) -> Result<Json, String> {
        self.eat(b'[')?;
        let mut items = Vec::new();
        self.ws();
        if self.s.get(self.at) == Some(&b']') {
            self.at += 1;
            return Ok(Json::Arr(items));
        }
        loop {
            items.push(self.value()?);
            self.ws();
            match self.s.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Arr(items));
                }
                _ => return Err(format!("expected , or ] at {}", self.at)),
            }
        }
    }

    fn object(&mut self) -> Result<Json, String> {
        self.eat(b'{')?;
        let mut fields = Vec::new();
        self.ws();
        if self.s.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Ok(Json::Obj(fields));
        }
        loop {
            self.ws();
            let key = self.string()?;
            if fields.iter().any(|(k, _)| *k == key) {
                return Err(format!("duplicate key {key:?}"));
            }
            self.eat(b':')?;
            fields.push((key, self.value()?));
            self.ws();
            match self.s.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Obj(fields));
                }
                _ => return Err(format!("expected , or }} at {}", self.at)),
            }
        }
    }
}
