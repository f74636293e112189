//! Model-based property tests for `ipv4_reactor::feed`: the tracker and the
//! arbiter against a reference model built on plain sets (delivered, lost),
//! over random interleavings of 1 to 3 lines with loss, copies, reordering
//! within and beyond the window, restarts, session changes, heartbeats,
//! malformed packets and 16/32-bit wrap.
//!
//! The model decides each sequence number on its own, with the rules the
//! tracker documents; the tracker does the same with a bitmap ring, bulk
//! counts and a range record. Checked: the deliveries (in order, each with
//! its place in its packet), the verdicts, every counter, and, independently
//! of the model, that no sequence number is delivered twice within one
//! sequence space and that delivered + lost covers every run after finish().

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use ipv4_reactor::feed::{
    Arbiter, FeedEvent, SeqCounters, SeqFormat, SeqTracker, TrackerConfig, Verdict,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// A small deterministic generator (xorshift), seeded by proptest.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn per_mille(&mut self, rate: u32) -> bool {
        self.below(1000) < u64::from(rate)
    }
}

/// One packet as sent.
#[derive(Debug, Clone, Copy)]
struct Pkt {
    /// Sequence number on the wire (already wrapped for 16/32 bits).
    raw: u64,
    /// MoldUDP64 count: 0 heartbeat, 0xFFFF end of session.
    count: u16,
    session: u8,
    malformed: bool,
}

#[derive(Debug, Clone, Copy)]
struct Params {
    seed: u64,
    format: usize,
    window: u64,
    packets: usize,
    lines: usize,
    loss: u32,
    dup: u32,
    reorder: u32,
    far: u32,
    restart: u32,
    heartbeat: u32,
    malformed: u32,
}

const HORIZON: u64 = 1000;
const FORMATS: [&str; 5] = ["u64be", "u16le", "u32be@3", "moldudp64", "mdp3"];

fn params() -> impl Strategy<Value = Params> {
    (
        any::<u64>(),
        0..FORMATS.len(),
        prop_oneof![Just(64u64), Just(128)],
        1usize..300,
        1usize..=3,
        (0u32..300, 0u32..200, 0u32..300, 0u32..40),
        (0u32..15, 0u32..60, 0u32..20),
    )
        .prop_map(
            |(
                seed,
                format,
                window,
                packets,
                lines,
                (loss, dup, reorder, far),
                (restart, heartbeat, malformed),
            )| {
                Params {
                    seed: seed | 1,
                    format,
                    window,
                    packets,
                    lines,
                    loss,
                    dup,
                    reorder,
                    far,
                    restart,
                    heartbeat,
                    malformed,
                }
            },
        )
}

fn format_of(p: &Params) -> SeqFormat {
    FORMATS[p.format].parse().unwrap()
}

fn config_of(p: &Params) -> TrackerConfig {
    TrackerConfig::for_format(format_of(p))
        .with_window(p.window)
        .with_horizon(HORIZON)
        .with_lost_record(1 << 16)
}

/// The sender's packets, in order.
fn source(p: &Params, rng: &mut Rng) -> Vec<Pkt> {
    let format = format_of(p);
    let mold = format == SeqFormat::MoldUdp64;
    let bits = format.seq_bits();
    let mut ext: u64 = match bits {
        16 => 65536 * 4 - 40 + rng.below(80),
        32 => (1u64 << 32) * 4 - 40 + rng.below(80),
        _ => rng.below(1 << 40) + 10_000,
    };
    let mut session = 1u8;
    let wrap = |ext: u64| {
        if bits == 64 {
            ext
        } else {
            ext & ((1 << bits) - 1)
        }
    };
    let mut out = Vec::new();
    for _ in 0..p.packets {
        if rng.per_mille(p.restart) {
            if mold {
                session = session.wrapping_add(1);
                ext = 1 + rng.below(50);
            } else if rng.below(2) == 0 {
                ext = ext.saturating_sub(HORIZON + 1 + rng.below(300));
            } else {
                ext += HORIZON + 1 + rng.below(300);
            }
        }
        if mold && rng.per_mille(p.heartbeat) {
            let count = if rng.below(4) == 0 { 0xFFFF } else { 0 };
            out.push(Pkt {
                raw: ext,
                count,
                session,
                malformed: false,
            });
            continue;
        }
        let count = if mold { 1 + rng.below(4) as u16 } else { 1 };
        out.push(Pkt {
            raw: wrap(ext),
            count,
            session,
            malformed: false,
        });
        ext += u64::from(count);
    }
    out
}

/// What each line delivers, and the merged arrival order: `(line, packet)`.
fn arrivals(p: &Params, rng: &mut Rng, src: &[Pkt]) -> Vec<(usize, Pkt)> {
    let mut all: Vec<(u64, usize, usize, Pkt)> = Vec::new(); // (time, line, order, pkt)
    let far = p.window * 10 * 2;
    for line in 0..p.lines {
        let skew = rng.below(30);
        for (i, &pkt) in src.iter().enumerate() {
            let base = i as u64 * 10 + skew;
            if rng.per_mille(p.malformed) {
                all.push((
                    base,
                    line,
                    all.len(),
                    Pkt {
                        malformed: true,
                        ..pkt
                    },
                ));
            }
            if rng.per_mille(p.loss) {
                continue;
            }
            let mut t = base + rng.below(5);
            if rng.per_mille(p.reorder) {
                t += rng.below(100); // within the window
            }
            if rng.per_mille(p.far) {
                t += far + rng.below(far); // beyond the window
            }
            all.push((t, line, all.len(), pkt));
            if rng.per_mille(p.dup) {
                all.push((t + rng.below(200), line, all.len(), pkt));
            }
        }
    }
    all.sort_by_key(|&(t, line, order, _)| (t, line, order));
    all.into_iter()
        .map(|(_, line, _, pkt)| (line, pkt))
        .collect()
}

fn encode(format: SeqFormat, pkt: &Pkt) -> Vec<u8> {
    let mut p = match format.to_string().as_str() {
        "u64be" => pkt.raw.to_be_bytes().to_vec(),
        "u16le" => (pkt.raw as u16).to_le_bytes().to_vec(),
        "u32be@3" => {
            let mut v = vec![0xEE; 3];
            v.extend_from_slice(&(pkt.raw as u32).to_be_bytes());
            v
        }
        "moldudp64" => {
            let mut v = b"SESSION".to_vec();
            v.extend_from_slice(format!("{:03}", pkt.session).as_bytes());
            v.extend_from_slice(&pkt.raw.to_be_bytes());
            v.extend_from_slice(&pkt.count.to_be_bytes());
            v
        }
        "mdp3" => {
            let mut v = (pkt.raw as u32).to_le_bytes().to_vec();
            v.extend_from_slice(&1_700_000_000_000_000_000u64.to_le_bytes());
            v
        }
        f => unreachable!("{f}"),
    };
    if pkt.malformed {
        p.truncate(format.min_len() - 1);
    }
    p
}

// ---------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------

/// One sequence space on plain sets, one sequence number at a time.
struct Model {
    w: u64,
    horizon: u64,
    bits: u32,
    started: bool,
    session: Option<u8>,
    low: u64,
    next: u64,
    decided: u64,
    delivered: HashSet<u64>,
    lost: BTreeSet<u64>,
    c: SeqCounters,
    past_lost: u64,
    past_gaps: u64,
    past_span: u64,
}

fn runs(set: &BTreeSet<u64>) -> u64 {
    let mut n = 0;
    let mut prev: Option<u64> = None;
    for &s in set {
        if prev.is_none_or(|p| p + 1 != s) {
            n += 1;
        }
        prev = Some(s);
    }
    n
}

/// What the model says of one packet.
struct Judged {
    verdict: Verdict,
    /// The packet's first sequence number, extended.
    first: Option<u64>,
    /// Delivered sequence numbers, with "late".
    delivered: Vec<(u64, bool)>,
}

impl Model {
    fn new(format: SeqFormat, config: TrackerConfig) -> Model {
        Model {
            w: config.window,
            horizon: config.horizon,
            bits: format.seq_bits(),
            started: false,
            session: None,
            low: 0,
            next: 0,
            decided: 0,
            delivered: HashSet::new(),
            lost: BTreeSet::new(),
            c: SeqCounters::default(),
            past_lost: 0,
            past_gaps: 0,
            past_span: 0,
        }
    }

    /// The nearest value to `next` with these low bits; `None` below zero.
    fn extend(&self, raw: u64) -> Option<u64> {
        if self.bits == 64 || !self.started {
            return Some(raw);
        }
        let space = 1i128 << self.bits;
        let next = i128::from(self.next);
        let base = next - next.rem_euclid(space) + i128::from(raw);
        let best = [base - space, base, base + space]
            .into_iter()
            .min_by_key(|&v| ((v - next).abs(), v > next))
            .unwrap();
        u64::try_from(best).ok()
    }

    fn declare(&mut self, from: u64, to: u64) {
        for s in from..to {
            if !self.delivered.contains(&s) {
                self.lost.insert(s);
            }
        }
    }

    fn begin(&mut self, a: u64, session: Option<u8>) {
        self.started = true;
        self.session = session;
        self.low = a;
        self.next = a;
        self.decided = a;
    }

    fn restart(&mut self, a: u64, session: Option<u8>) {
        self.declare(self.decided, self.next);
        self.past_lost += self.lost.len() as u64;
        self.past_gaps += runs(&self.lost);
        self.past_span += self.next - self.low;
        self.lost.clear();
        self.delivered.clear();
        self.c.restarts += 1;
        self.begin(a, session);
    }

    /// Moves the top to `new_next`; the packet's new numbers are delivered
    /// already.
    fn advance(&mut self, new_next: u64) {
        let edge = new_next.saturating_sub(self.w);
        if edge > self.decided {
            self.declare(self.decided, edge);
            self.decided = edge;
        }
        self.next = new_next;
    }

    fn on(&mut self, pkt: &Pkt, mold: bool) -> Judged {
        self.c.packets += 1;
        let mut j = Judged {
            verdict: Verdict::Malformed,
            first: None,
            delivered: Vec::new(),
        };
        if pkt.malformed {
            self.c.malformed += 1;
            return j;
        }
        let (count, kind) = match (mold, pkt.count) {
            (true, 0) => {
                self.c.heartbeats += 1;
                (0, Verdict::Heartbeat)
            }
            (true, 0xFFFF) => {
                self.c.sessions_ended += 1;
                (0, Verdict::EndOfSession)
            }
            (_, n) => (u64::from(n), Verdict::New),
        };
        let session = mold.then_some(pkt.session);
        let Some(a) = self.extend(pkt.raw) else {
            self.c.stale += count;
            j.verdict = Verdict::Stale;
            return j;
        };
        j.first = Some(a);
        let mut restarted = false;
        if !self.started {
            self.begin(a, session);
        } else if session != self.session || a.abs_diff(self.next) > self.horizon {
            self.restart(a, session);
            restarted = true;
        }
        if count == 0 {
            if a > self.next {
                self.advance(a);
            }
            j.verdict = kind;
            return j;
        }
        let (mut new, mut late, mut dup) = (false, false, false);
        let e = a + count;
        for s in a..e.min(self.next) {
            if s < self.low {
                if s >= self.next.saturating_sub(self.w) && self.decided == self.low {
                    self.low = s;
                    self.decided = s;
                    self.delivered.insert(s);
                    self.c.reordered += 1;
                    j.delivered.push((s, true));
                    late = true;
                } else {
                    self.c.stale += 1;
                }
            } else if self.delivered.contains(&s) {
                self.c.duplicates += 1;
                dup = true;
            } else if s < self.decided && !self.lost.remove(&s) {
                // Decided and not lost: it was delivered before.
                unreachable!("{s} decided, neither delivered nor lost");
            } else {
                self.delivered.insert(s);
                self.c.reordered += 1;
                j.delivered.push((s, true));
                late = true;
            }
        }
        if e > self.next {
            for s in a.max(self.next)..e {
                self.delivered.insert(s);
                j.delivered.push((s, false));
            }
            self.advance(e);
            new = true;
        }
        self.c.messages += j.delivered.len() as u64;
        j.verdict = if restarted {
            Verdict::Restart
        } else if late {
            Verdict::Late
        } else if new {
            Verdict::New
        } else if dup {
            Verdict::Duplicate
        } else {
            Verdict::Stale
        };
        j
    }

    fn finish(&mut self) {
        if self.started {
            self.declare(self.decided, self.next);
            self.decided = self.next;
        }
    }

    fn counters(&self) -> SeqCounters {
        let mut c = self.c;
        c.lost = self.past_lost + self.lost.len() as u64;
        c.gaps = self.past_gaps + runs(&self.lost);
        c
    }

    /// Sequence numbers covered by every run so far.
    fn span(&self) -> u64 {
        self.past_span + (self.next - self.low)
    }
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// Collects one packet's deliveries; checks each sequence number is new to
/// its sequence space (spaces are delimited by restart events).
#[derive(Default)]
struct Seen {
    space: HashSet<u64>,
    got: Vec<(u64, bool)>,
    skips_ok: bool,
}

impl Seen {
    fn take(&mut self, e: FeedEvent, first: Option<u64>) {
        match e {
            FeedEvent::Restart { .. } => self.space.clear(),
            FeedEvent::Deliver(d) => {
                self.skips_ok &= first == Some(d.first - d.skip);
                for s in d.first..d.first + d.count {
                    assert!(self.space.insert(s), "{s} delivered twice in one space");
                    self.got.push((s, d.late));
                }
            }
            _ => {}
        }
    }
}

fn check_tracker(p: Params) -> Result<(), TestCaseError> {
    let mut rng = Rng(p.seed);
    let format = format_of(&p);
    let mold = format == SeqFormat::MoldUdp64;
    let src = source(&p, &mut rng);
    let p1 = Params { lines: 1, ..p };
    let arrived = arrivals(&p1, &mut rng, &src);
    let mut t = SeqTracker::with_config(format, config_of(&p)).unwrap();
    let mut m = Model::new(format, config_of(&p));
    let mut seen = Seen::default();
    for (i, (_, pkt)) in arrived.iter().enumerate() {
        let judged = m.on(pkt, mold);
        seen.got.clear();
        seen.skips_ok = true;
        let v = t.on_packet(&encode(format, pkt), |e| seen.take(e, judged.first));
        prop_assert_eq!(v, judged.verdict, "packet {} {:?}", i, pkt);
        prop_assert_eq!(&seen.got, &judged.delivered, "packet {} {:?}", i, pkt);
        prop_assert!(
            seen.skips_ok,
            "packet {}: skip does not lead to the first",
            i
        );
    }
    t.finish(|e| seen.take(e, None));
    m.finish();
    let c = t.counters();
    prop_assert_eq!(c, m.counters());
    prop_assert_eq!(c.messages + c.lost, m.span());
    if m.started {
        prop_assert_eq!(t.span(), Some(m.low..m.next));
    }
    Ok(())
}

fn check_arbiter(p: Params) -> Result<(), TestCaseError> {
    let mut rng = Rng(p.seed);
    let format = format_of(&p);
    let mold = format == SeqFormat::MoldUdp64;
    let src = source(&p, &mut rng);
    let arrived = arrivals(&p, &mut rng, &src);
    let mut arb =
        Arbiter::with_config(format, p.lines, config_of(&p), Duration::from_millis(5)).unwrap();
    let mut merged = Model::new(format, config_of(&p));
    let mut per_line: Vec<Model> = (0..p.lines)
        .map(|_| Model::new(format, config_of(&p)))
        .collect();
    let mut firsts = vec![0u64; p.lines];
    let mut seen = Seen::default();
    let t0 = Instant::now();
    for (i, (line, pkt)) in arrived.iter().enumerate() {
        let judged = merged.on(pkt, mold);
        per_line[*line].on(pkt, mold);
        if !judged.delivered.is_empty() {
            firsts[*line] += 1;
        }
        seen.got.clear();
        seen.skips_ok = true;
        let now = t0 + Duration::from_micros(i as u64);
        let v = arb
            .on_packet(*line, &encode(format, pkt), 0, now, |e| {
                seen.take(e, judged.first)
            })
            .unwrap();
        prop_assert_eq!(v, judged.verdict, "packet {} line {} {:?}", i, line, pkt);
        prop_assert_eq!(&seen.got, &judged.delivered, "packet {} line {}", i, line);
        prop_assert!(seen.skips_ok);
    }
    arb.finish(|e| seen.take(e, None));
    merged.finish();
    let c = arb.counters();
    prop_assert_eq!(c, merged.counters());
    prop_assert_eq!(c.messages + c.lost, merged.span());
    for (i, m) in per_line.iter_mut().enumerate() {
        m.finish();
        let l = arb.line(i).unwrap();
        prop_assert_eq!(l.seq, m.counters(), "line {}", i);
        prop_assert_eq!(
            (l.gaps, l.lost, l.first),
            (m.counters().gaps, m.counters().lost, firsts[i])
        );
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

proptest! {
    // 400 cases by default; PROPTEST_CASES=N for a longer hunt.
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn tracker_matches_the_model(p in params()) {
        check_tracker(p)?;
    }

    #[test]
    fn arbiter_matches_the_model(p in params()) {
        check_arbiter(p)?;
    }
}

/// The generator does produce what the properties are about: over a fixed
/// set of seeds, late fills beyond the window, copies, losses, restarts and
/// wraps all occur (a property over scenarios that never have them proves
/// nothing).
#[test]
fn scenarios_cover_the_cases() {
    let mut total = SeqCounters::default();
    let mut very_late = 0;
    let mut wrapped = false;
    for seed in 1..200u64 {
        for format in 0..FORMATS.len() {
            let p = Params {
                seed,
                format,
                window: 64,
                packets: 250,
                lines: 2,
                loss: 150,
                dup: 100,
                reorder: 200,
                far: 20,
                restart: 5,
                heartbeat: 40,
                malformed: 10,
            };
            let mut rng = Rng(p.seed);
            let fmt = format_of(&p);
            let src = source(&p, &mut rng);
            let arrived = arrivals(&p, &mut rng, &src);
            let mut arb =
                Arbiter::with_config(fmt, 2, config_of(&p), Duration::from_secs(1)).unwrap();
            let now = Instant::now();
            let mut max_raw = 0;
            for (line, pkt) in &arrived {
                if !pkt.malformed {
                    wrapped |=
                        fmt.seq_bits() < 64 && pkt.raw < max_raw && max_raw - pkt.raw > 30_000;
                    max_raw = max_raw.max(pkt.raw);
                }
                let before = arb.counters().lost;
                arb.on_packet(*line, &encode(fmt, pkt), 0, now, |_| {})
                    .unwrap();
                very_late += u64::from(arb.counters().lost < before);
            }
            arb.finish(|_| {});
            let c = arb.counters();
            total.lost += c.lost;
            total.duplicates += c.duplicates;
            total.reordered += c.reordered;
            total.restarts += c.restarts;
            total.heartbeats += c.heartbeats;
            total.sessions_ended += c.sessions_ended;
            total.malformed += c.malformed;
            total.stale += c.stale;
        }
    }
    assert!(very_late > 0, "no late fill of a declared loss");
    assert!(wrapped, "no wrap");
    for (name, n) in [
        ("lost", total.lost),
        ("duplicates", total.duplicates),
        ("reordered", total.reordered),
        ("restarts", total.restarts),
        ("heartbeats", total.heartbeats),
        ("sessions_ended", total.sessions_ended),
        ("malformed", total.malformed),
        ("stale", total.stale),
    ] {
        assert!(n > 0, "no {name} in any scenario");
    }
}
