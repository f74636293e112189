//! A bounded record of the most recent sequence ranges declared lost, so that
//! a packet older than the window can still be told apart from a copy: if it
//! falls in a recorded range it fills a loss (counted as reordered, not lost).

use std::collections::VecDeque;

/// Disjoint inclusive ranges in increasing order, at most `cap` of them,
/// allocated once; when full, the oldest (lowest) range is forgotten.
#[derive(Debug)]
pub(crate) struct LostRecord {
    ranges: VecDeque<(u64, u64)>,
    cap: usize,
}

impl LostRecord {
    pub(crate) fn new(cap: usize) -> LostRecord {
        LostRecord {
            ranges: VecDeque::with_capacity(cap),
            cap,
        }
    }

    /// Records `[from, to]`, which lies above every recorded range; a range
    /// that continues the last one extends it.
    pub(crate) fn push(&mut self, from: u64, to: u64) {
        if let Some(last) = self.ranges.back_mut() {
            if last.1.checked_add(1) == Some(from) {
                last.1 = to;
                return;
            }
        }
        if self.cap == 0 {
            return;
        }
        if self.ranges.len() == self.cap {
            self.ranges.pop_front();
        }
        self.ranges.push_back((from, to));
    }

    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
    }

    /// Removes the recorded parts of `[from, to]`, calling `f(a, b)` for each
    /// (in increasing order), and returns how the number of recorded ranges
    /// changed: -1 for each range removed whole, +1 for each range split in
    /// two (the count of lost runs moves the same way).
    pub(crate) fn take(&mut self, from: u64, to: u64, mut f: impl FnMut(u64, u64)) -> i64 {
        let mut runs = 0i64;
        let mut i = self.ranges.partition_point(|r| r.1 < from);
        while let Some(&(a, b)) = self.ranges.get(i) {
            if a > to {
                break;
            }
            let (pa, pb) = (a.max(from), b.min(to));
            f(pa, pb);
            match (a < pa, b > pb) {
                (true, true) => {
                    runs += 1;
                    if self.ranges.len() < self.cap {
                        self.ranges[i].1 = pa - 1;
                        self.ranges.insert(i + 1, (pb + 1, b));
                    } else {
                        // No room for both halves: forget the older one.
                        self.ranges[i] = (pb + 1, b);
                    }
                    break;
                }
                (true, false) => {
                    self.ranges[i].1 = pa - 1;
                    i += 1;
                }
                (false, true) => {
                    self.ranges[i].0 = pb + 1;
                    break;
                }
                (false, false) => {
                    runs -= 1;
                    self.ranges.remove(i);
                }
            }
        }
        runs
    }

    #[cfg(test)]
    fn ranges(&self) -> Vec<(u64, u64)> {
        self.ranges.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_extends_and_forgets_the_oldest() {
        let mut r = LostRecord::new(2);
        r.push(10, 12);
        r.push(13, 15);
        assert_eq!(r.ranges(), vec![(10, 15)]);
        r.push(20, 20);
        r.push(30, 31);
        assert_eq!(r.ranges(), vec![(20, 20), (30, 31)]);
        let mut none = LostRecord::new(0);
        none.push(1, 2);
        assert_eq!(none.ranges(), vec![]);
    }

    #[test]
    fn take_splits_shrinks_and_removes() {
        let mut r = LostRecord::new(8);
        r.push(10, 20);
        r.push(30, 30);
        r.push(40, 45);
        let mut got = Vec::new();
        assert_eq!(r.take(15, 15, |a, b| got.push((a, b))), 1);
        assert_eq!(r.ranges(), vec![(10, 14), (16, 20), (30, 30), (40, 45)]);
        assert_eq!(r.take(14, 41, |a, b| got.push((a, b))), -2);
        assert_eq!(got, vec![(15, 15), (14, 14), (16, 20), (30, 30), (40, 41)]);
        assert_eq!(r.ranges(), vec![(10, 13), (42, 45)]);
        assert_eq!(r.take(0, 9, |_, _| panic!()), 0);
        assert_eq!(r.take(46, 99, |_, _| panic!()), 0);
        assert_eq!(r.take(42, 45, |_, _| {}), -1);
        assert_eq!(r.ranges(), vec![(10, 13)]);
        // Full: a split keeps the newer half only.
        let mut full = LostRecord::new(1);
        full.push(0, 9);
        assert_eq!(full.take(5, 5, |_, _| {}), 1);
        assert_eq!(full.ranges(), vec![(6, 9)]);
    }
}
