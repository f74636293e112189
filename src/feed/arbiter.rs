//! [`Arbiter`]: N redundant lines (A/B feeds) merged into one stream, each
//! sequence number delivered once, from whichever line brought it first.

use std::io;
use std::time::{Duration, Instant};

use super::event::{FeedEvent, Verdict};
use super::format::SeqFormat;
use super::tracker::{SeqCounters, SeqTracker, TrackerConfig};
use crate::error::invalid;

/// How long a line may bring nothing while another line brings packets
/// before it is reported stale: 100 ms, far beyond the skew of healthy A/B
/// lines (microseconds to a few milliseconds) and beyond the default window
/// at 1 Mpps (65 ms), yet short enough for an operator to see a path fail
/// before the other one does.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_millis(100);

/// The most lines one arbiter takes.
pub const MAX_LINES: usize = 64;

/// The longest stale time an arbiter takes: a day (a line silent longer
/// than that is not a line that lags).
pub const MAX_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// One line's figures ([`Arbiter::line`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[non_exhaustive]
pub struct LineCounters {
    /// Packets received on this line, malformed ones included.
    pub packets: u64,
    /// Packets of this line that delivered something first: the deliveries
    /// it won.
    pub first: u64,
    /// Holes in this line's own sequence (whether or not another line
    /// filled them), counted as a tracker counts them.
    pub gaps: u64,
    /// Sequence numbers missing from this line's own sequence.
    pub lost: u64,
    /// Packets too short for the format.
    pub malformed: u64,
    /// Kernel drops on this line's socket, as the caller reported them
    /// (`drops_before` of each packet).
    pub kernel_drops: u64,
    /// Whether the line is stale now.
    pub stale: bool,
    /// How many times the line went stale.
    pub stale_events: u64,
    /// The line's own tracker's counters (its own copies, reordering and
    /// restarts).
    pub seq: SeqCounters,
}

#[derive(Debug)]
struct Line {
    tracker: SeqTracker,
    first: u64,
    kernel_drops: u64,
    /// When the line turns stale unless it brings something: the stale
    /// time after another line first delivered a new sequence number
    /// after this line's last packet (kept as a deadline, so that each
    /// packet compares two instants instead of subtracting them).
    stale_at: Option<Instant>,
    stale: bool,
    stale_events: u64,
}

/// Merges N redundant lines carrying the same sequence space: each sequence
/// number reaches the handler once, from whichever line brought it first;
/// a hole is lost only when no line filled it within the window.
///
/// Per line it keeps the line's own sequence bookkeeping (its gaps and
/// losses show a failing network path before both fail), the deliveries it
/// won, the kernel drops the caller reports, and whether it went silent
/// while another line flowed ([`FeedEvent::LineStale`]): a line is stale
/// when it has brought nothing for the stale time since another line
/// delivered a new sequence number. Copies do not count as flow, so on a
/// quiet feed the line whose copies come second is not stale. Time comes
/// from the caller, so that a test can drive it.
///
/// It knows nothing of sockets: a reactor handler (or anything else) calls
/// [`on_packet`](Self::on_packet) with each line's payloads.
///
/// ```
/// use std::time::Instant;
/// use ipv4_reactor::feed::{Arbiter, FeedEvent, SeqFormat};
///
/// let mut arb = Arbiter::new(SeqFormat::default(), 2)?;
/// let now = Instant::now();
/// let mut handled = Vec::new();
/// // Line A misses 2, line B misses 3.
/// for (line, seq) in [(0, 1u64), (1, 1), (1, 2), (0, 3), (0, 4), (1, 4)] {
///     arb.on_packet(line, &seq.to_be_bytes(), 0, now, |e| {
///         if let FeedEvent::Deliver(d) = e {
///             handled.push(d.first);
///         }
///     })?;
/// }
/// arb.finish(|_| {});
/// assert_eq!(handled, [1, 2, 3, 4]);
/// assert_eq!(arb.counters().lost, 0);
/// assert_eq!(arb.line(0).unwrap().lost, 1);
/// assert_eq!(arb.line(1).unwrap().first, 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Arbiter {
    format: SeqFormat,
    merged: SeqTracker,
    lines: Box<[Line]>,
    stale_after: Duration,
}

impl Arbiter {
    /// An arbiter of `lines` lines with the format's default tracker limits
    /// and [`DEFAULT_STALE_AFTER`].
    ///
    /// Errors: no line, more than [`MAX_LINES`], or format `none` with more
    /// than one line (without sequence numbers, copies cannot be told
    /// apart).
    ///
    /// ```
    /// use ipv4_reactor::feed::{Arbiter, SeqFormat};
    /// assert!(Arbiter::new(SeqFormat::Mdp3, 2).is_ok());
    /// let err = Arbiter::new(SeqFormat::None, 2).unwrap_err();
    /// assert!(err.to_string().contains("none"));
    /// assert!(Arbiter::new(SeqFormat::Mdp3, 0).is_err());
    /// ```
    pub fn new(format: SeqFormat, lines: usize) -> io::Result<Arbiter> {
        Self::with_config(
            format,
            lines,
            TrackerConfig::for_format(format),
            DEFAULT_STALE_AFTER,
        )
    }

    /// An arbiter with the given tracker limits (for the merged stream and
    /// for each line) and stale time (more than zero, at most
    /// [`MAX_STALE_AFTER`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ipv4_reactor::feed::{Arbiter, SeqFormat, TrackerConfig};
    ///
    /// let config = TrackerConfig::for_format(SeqFormat::Mdp3).with_window(4096);
    /// let arb = Arbiter::with_config(SeqFormat::Mdp3, 2, config, Duration::from_millis(20))?;
    /// assert_eq!(arb.stale_after(), Duration::from_millis(20));
    /// assert!(Arbiter::with_config(SeqFormat::Mdp3, 2, config, Duration::ZERO).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_config(
        format: SeqFormat,
        lines: usize,
        config: TrackerConfig,
        stale_after: Duration,
    ) -> io::Result<Arbiter> {
        if !(1..=MAX_LINES).contains(&lines) {
            return Err(invalid(format!(
                "an arbiter takes 1 to {MAX_LINES} lines, not {lines}"
            )));
        }
        if format == SeqFormat::None && lines > 1 {
            return Err(invalid(format!(
                "sequence format none with {lines} lines: without sequence numbers an \
                 arbiter cannot tell a line's copies apart"
            )));
        }
        if stale_after.is_zero() || stale_after > MAX_STALE_AFTER {
            return Err(invalid(format!(
                "an arbiter's stale time must be more than zero and at most {MAX_STALE_AFTER:?}, not {stale_after:?}"
            )));
        }
        let merged = SeqTracker::with_config(format, config)?;
        let lines = (0..lines)
            .map(|_| {
                Ok(Line {
                    tracker: SeqTracker::with_config(format, config)?,
                    first: 0,
                    kernel_drops: 0,
                    stale_at: None,
                    stale: false,
                    stale_events: 0,
                })
            })
            .collect::<io::Result<Box<[Line]>>>()?;
        Ok(Arbiter {
            format,
            merged,
            lines,
            stale_after,
        })
    }

    /// The format of every line.
    ///
    /// ```
    /// use ipv4_reactor::feed::{Arbiter, SeqFormat};
    /// assert_eq!(Arbiter::new(SeqFormat::Mdp3, 2)?.format(), SeqFormat::Mdp3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn format(&self) -> SeqFormat {
        self.format
    }

    /// How many lines.
    ///
    /// ```
    /// use ipv4_reactor::feed::{Arbiter, SeqFormat};
    /// assert_eq!(Arbiter::new(SeqFormat::Mdp3, 3)?.lines(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn lines(&self) -> usize {
        self.lines.len()
    }

    /// How long a line may be silent while another flows.
    ///
    /// ```
    /// use ipv4_reactor::feed::{Arbiter, SeqFormat, DEFAULT_STALE_AFTER};
    /// assert_eq!(Arbiter::new(SeqFormat::Mdp3, 2)?.stale_after(), DEFAULT_STALE_AFTER);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// The merged stream's counters: what the handler got, and what no line
    /// delivered.
    ///
    /// ```
    /// use std::time::Instant;
    /// use ipv4_reactor::feed::{Arbiter, SeqFormat};
    /// let mut arb = Arbiter::new(SeqFormat::default(), 2)?;
    /// arb.on_packet(0, &1u64.to_be_bytes(), 0, Instant::now(), |_| {})?;
    /// arb.on_packet(1, &1u64.to_be_bytes(), 0, Instant::now(), |_| {})?;
    /// assert_eq!((arb.counters().messages, arb.counters().duplicates), (1, 1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn counters(&self) -> SeqCounters {
        self.merged.counters()
    }

    /// One line's figures; `None` past the last line.
    ///
    /// ```
    /// use std::time::Instant;
    /// use ipv4_reactor::feed::{Arbiter, SeqFormat};
    /// let mut arb = Arbiter::new(SeqFormat::default(), 2)?;
    /// arb.on_packet(1, &1u64.to_be_bytes(), 3, Instant::now(), |_| {})?;
    /// let b = arb.line(1).unwrap();
    /// assert_eq!((b.packets, b.first, b.kernel_drops), (1, 1, 3));
    /// assert!(arb.line(2).is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn line(&self, line: usize) -> Option<LineCounters> {
        let l = self.lines.get(line)?;
        let seq = l.tracker.counters();
        Some(LineCounters {
            packets: seq.packets,
            first: l.first,
            gaps: seq.gaps,
            lost: seq.lost,
            malformed: seq.malformed,
            kernel_drops: l.kernel_drops,
            stale: l.stale,
            stale_events: l.stale_events,
            seq,
        })
    }

    /// Handles one packet of `line`: `drops_before` is the kernel drops the
    /// receive path reported before it (`Packet::drops_before`), `now` a
    /// monotonic time. Deliveries and events go to `sink` during the call.
    ///
    /// The error is for a line index past the last line, the one mistake a
    /// caller can make here.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ipv4_reactor::feed::{Arbiter, FeedEvent, SeqFormat, Verdict};
    ///
    /// let mut arb = Arbiter::new(SeqFormat::default(), 2)?;
    /// let t0 = Instant::now();
    /// let p = 1u64.to_be_bytes();
    /// assert_eq!(arb.on_packet(0, &p, 0, t0, |_| {})?, Verdict::New);
    /// assert_eq!(arb.on_packet(1, &p, 0, t0, |_| {})?, Verdict::Duplicate);
    ///
    /// // B brings nothing for 100 ms while A flows: stale.
    /// let mut events = Vec::new();
    /// let p = 2u64.to_be_bytes();
    /// arb.on_packet(0, &p, 0, t0 + Duration::from_millis(10), |e| events.push(e))?;
    /// arb.poll(t0 + Duration::from_millis(111), |e| events.push(e));
    /// assert_eq!(events.last(), Some(&FeedEvent::LineStale { line: 1 }));
    ///
    /// assert!(arb.on_packet(2, &p, 0, t0, |_| {}).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn on_packet(
        &mut self,
        line: usize,
        payload: &[u8],
        drops_before: u32,
        now: Instant,
        mut sink: impl FnMut(FeedEvent),
    ) -> io::Result<Verdict> {
        let lines = self.lines.len();
        let Some(l) = self.lines.get_mut(line) else {
            return Err(invalid(format!(
                "line {line} is out of range: this arbiter has {lines} lines"
            )));
        };
        l.kernel_drops += u64::from(drops_before);
        l.stale_at = None;
        if l.stale {
            l.stale = false;
            sink(FeedEvent::LineRecovered { line });
        }
        let info = match self.format.parse(payload) {
            Ok(info) => info,
            Err(_) => {
                l.tracker.note_malformed();
                self.check_stale(None, now, &mut sink);
                return Ok(self.merged.note_malformed());
            }
        };
        l.tracker.on_info(info, |_| {});
        let mut won = false;
        let verdict = self.merged.on_info(info, |e| {
            won |= matches!(e, FeedEvent::Deliver(_));
            sink(e);
        });
        if won {
            self.lines[line].first += 1;
        }
        self.check_stale(won.then_some(line), now, &mut sink);
        Ok(verdict)
    }

    /// Checks for stale lines without a packet (from a timer, or when a
    /// batch is drained).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ipv4_reactor::feed::{Arbiter, FeedEvent, SeqFormat};
    ///
    /// let mut arb = Arbiter::new(SeqFormat::default(), 2)?;
    /// let t0 = Instant::now();
    /// arb.on_packet(0, &1u64.to_be_bytes(), 0, t0, |_| {})?;
    /// let mut events = Vec::new();
    /// arb.poll(t0 + Duration::from_millis(50), |e| events.push(e));
    /// assert!(events.is_empty());
    /// arb.poll(t0 + Duration::from_millis(100), |e| events.push(e));
    /// assert_eq!(events, [FeedEvent::LineStale { line: 1 }]);
    /// assert!(arb.line(1).unwrap().stale);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn poll(&mut self, now: Instant, mut sink: impl FnMut(FeedEvent)) {
        self.check_stale(None, now, &mut sink);
    }

    /// The end of a run: every hole still pending is lost, in the merged
    /// stream (events to `sink`) and in each line's own bookkeeping.
    ///
    /// ```
    /// use std::time::Instant;
    /// use ipv4_reactor::feed::{Arbiter, FeedEvent, SeqFormat};
    /// let mut arb = Arbiter::new(SeqFormat::default(), 2)?;
    /// let now = Instant::now();
    /// arb.on_packet(0, &1u64.to_be_bytes(), 0, now, |_| {})?;
    /// arb.on_packet(1, &3u64.to_be_bytes(), 0, now, |_| {})?;
    /// let mut events = Vec::new();
    /// arb.finish(|e| events.push(e));
    /// assert_eq!(events, [FeedEvent::Lost { from: 2, to: 2 }]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn finish(&mut self, sink: impl FnMut(FeedEvent)) {
        self.merged.finish(sink);
        for l in self.lines.iter_mut() {
            l.tracker.finish(|_| {});
        }
    }

    /// Marks every line but `current` as behind since `now` (if not
    /// already), and reports those behind for the stale time.
    #[inline]
    fn check_stale(
        &mut self,
        current: Option<usize>,
        now: Instant,
        sink: &mut impl FnMut(FeedEvent),
    ) {
        for (i, l) in self.lines.iter_mut().enumerate() {
            if Some(i) == current {
                continue;
            }
            match l.stale_at {
                None => {
                    if current.is_some() {
                        // At most a day ahead (checked in with_config):
                        // cannot overflow an Instant of a running system.
                        l.stale_at = now.checked_add(self.stale_after);
                    }
                }
                Some(at) => {
                    if !l.stale && now >= at {
                        l.stale = true;
                        l.stale_events += 1;
                        sink(FeedEvent::LineStale { line: i });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps the events other than deliveries.
    fn note(events: &mut Vec<FeedEvent>) -> impl FnMut(FeedEvent) + '_ {
        |e| {
            if !matches!(e, FeedEvent::Deliver(_)) {
                events.push(e)
            }
        }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn each_sequence_once_from_the_first_line() {
        let mut arb = Arbiter::new(SeqFormat::default(), 3).unwrap();
        let t0 = Instant::now();
        let mut got = Vec::new();
        let packets = [(2, 5u64), (0, 5), (1, 6), (0, 6), (2, 7), (1, 7), (0, 8)];
        for (line, seq) in packets {
            arb.on_packet(line, &seq.to_be_bytes(), 0, t0, |e| {
                if let FeedEvent::Deliver(d) = e {
                    got.push((line, d.first));
                }
            })
            .unwrap();
        }
        assert_eq!(got, [(2, 5), (1, 6), (2, 7), (0, 8)]);
        let firsts: Vec<u64> = (0..3).map(|i| arb.line(i).unwrap().first).collect();
        assert_eq!(firsts, [1, 1, 2]);
        assert_eq!(arb.counters().duplicates, 3);
    }

    #[test]
    fn per_line_losses_and_drops() {
        let mut arb = Arbiter::new(SeqFormat::default(), 2).unwrap();
        let t0 = Instant::now();
        for s in [1u64, 2, 5] {
            arb.on_packet(0, &s.to_be_bytes(), 2, t0, |_| {}).unwrap();
        }
        for s in [1u64, 3, 4, 5] {
            arb.on_packet(1, &s.to_be_bytes(), 0, t0, |_| {}).unwrap();
        }
        arb.on_packet(1, b"short", 1, t0, |_| {}).unwrap();
        arb.finish(|_| {});
        let a = arb.line(0).unwrap();
        let b = arb.line(1).unwrap();
        assert_eq!((a.gaps, a.lost, a.kernel_drops), (1, 2, 6));
        assert_eq!((b.gaps, b.lost, b.kernel_drops, b.malformed), (1, 1, 1, 1));
        assert_eq!((a.packets, b.packets), (3, 5));
        let c = arb.counters();
        assert_eq!((c.messages, c.lost, c.malformed, c.packets), (5, 0, 1, 8));
    }

    #[test]
    fn stale_and_recovered() {
        let mut arb = Arbiter::new(SeqFormat::default(), 2).unwrap();
        let t0 = Instant::now();
        let mut events = Vec::new();
        // Both quiet: nobody is stale, however long.
        arb.poll(ms(t0, 10_000), note(&mut events));
        // A flows every 30 ms, B never shows up.
        for (i, s) in (1u64..=5).enumerate() {
            let at = ms(t0, 10_000 + 30 * i as u64);
            arb.on_packet(0, &s.to_be_bytes(), 0, at, note(&mut events))
                .unwrap();
        }
        assert_eq!(events, [FeedEvent::LineStale { line: 1 }]); // at +120 ms
        assert!(arb.line(1).unwrap().stale);
        // B comes back.
        arb.on_packet(1, &5u64.to_be_bytes(), 0, ms(t0, 10_130), |e| {
            events.push(e)
        })
        .unwrap();
        assert_eq!(events[1], FeedEvent::LineRecovered { line: 1 });
        assert!(!arb.line(1).unwrap().stale);
        // A quiet feed: A's packet, B's copy a millisecond later, a second
        // apart: never stale.
        for i in 0..5u64 {
            let at = 11_000 + 1000 * i;
            let p = (6 + i).to_be_bytes();
            arb.on_packet(0, &p, 0, ms(t0, at), note(&mut events))
                .unwrap();
            arb.on_packet(1, &p, 0, ms(t0, at + 1), note(&mut events))
                .unwrap();
            arb.poll(ms(t0, at + 900), note(&mut events));
        }
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(arb.line(1).unwrap().stale_events, 1);
        assert_eq!(arb.line(0).unwrap().stale_events, 0);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let f = SeqFormat::default();
        for lines in [0, MAX_LINES + 1] {
            let err = Arbiter::new(f, lines).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains(&lines.to_string()), "{err}");
        }
        assert!(Arbiter::new(SeqFormat::None, 1).is_ok());
        let bad = TrackerConfig::for_format(f).with_window(3);
        assert!(Arbiter::with_config(f, 2, bad, DEFAULT_STALE_AFTER).is_err());
        let mut arb = Arbiter::new(f, 2).unwrap();
        let err = arb
            .on_packet(7, &[0; 8], 0, Instant::now(), |_| {})
            .unwrap_err();
        assert!(err.to_string().contains("line 7"), "{err}");
        assert_eq!(arb.counters().packets, 0);
    }
}
