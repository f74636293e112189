//! The tracker's memory of the last W sequence numbers: one bit each, in a
//! ring allocated once. Bit set: delivered. Every range operation walks whole
//! words, so its cost is the range's length over 64, plus its runs.

/// A ring of `len` bits (a power of two), indexed by sequence number modulo
/// `len`.
pub(crate) struct Window {
    words: Box<[u64]>,
    mask: u64,
}

impl std::fmt::Debug for Window {
    // The bits themselves (8 KiB by default) would drown a tracker's Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("len", &(self.mask + 1))
            .finish()
    }
}

/// The low `n` bits set, for `n` in 1..=64.
#[inline]
fn low_bits(n: u64) -> u64 {
    u64::MAX >> (64 - n)
}

/// Word index and bit of `seq` in a ring of `mask + 1` bits.
#[inline]
fn at(mask: u64, seq: u64) -> (usize, u64) {
    let pos = seq & mask;
    ((pos >> 6) as usize, pos & 63)
}

/// Calls `f(word index, bit, chunk length, first seq of the chunk)` for each
/// piece of `[from, to)` that lies in one word. `to - from` must not exceed
/// the ring's length (`mask + 1`).
#[inline]
fn chunks(mask: u64, from: u64, to: u64, mut f: impl FnMut(usize, u64, u64, u64)) {
    debug_assert!(to.saturating_sub(from) <= mask + 1);
    let mut seq = from;
    while seq < to {
        let (w, b) = at(mask, seq);
        let n = (64 - b).min(to - seq);
        f(w, b, n, seq);
        seq += n;
    }
}

impl Window {
    /// `len` must be a power of two and at least 64 (checked by the
    /// tracker's configuration).
    pub(crate) fn new(len: u64) -> Window {
        debug_assert!(len.is_power_of_two() && len >= 64);
        Window {
            words: vec![0u64; (len / 64) as usize].into_boxed_slice(),
            mask: len - 1,
        }
    }

    #[inline]
    fn at(&self, seq: u64) -> (usize, u64) {
        at(self.mask, seq)
    }

    /// Sets the bit of `seq`; returns what it was.
    #[inline]
    pub(crate) fn replace(&mut self, seq: u64) -> bool {
        let (w, b) = self.at(seq);
        let old = self.words[w] >> b & 1 == 1;
        self.words[w] |= 1 << b;
        old
    }

    #[cfg(test)]
    pub(crate) fn get(&self, seq: u64) -> bool {
        let (w, b) = self.at(seq);
        self.words[w] >> b & 1 == 1
    }

    /// Sets the bits of `[from, to)`.
    #[inline]
    pub(crate) fn set_range(&mut self, from: u64, to: u64) {
        if to == from + 1 {
            let (w, b) = self.at(from);
            self.words[w] |= 1 << b;
            return;
        }
        let words = &mut self.words;
        chunks(self.mask, from, to, |w, b, n, _| {
            words[w] |= low_bits(n) << b
        });
    }

    /// Clears the bits of `[from, to)`.
    #[inline]
    pub(crate) fn clear_range(&mut self, from: u64, to: u64) {
        if to == from + 1 {
            let (w, b) = self.at(from);
            self.words[w] &= !(1 << b);
            return;
        }
        let words = &mut self.words;
        chunks(self.mask, from, to, |w, b, n, _| {
            words[w] &= !(low_bits(n) << b)
        });
    }

    /// Clears every bit.
    pub(crate) fn clear_all(&mut self) {
        self.words.fill(0);
    }

    /// Calls `f(start, end)` for each maximal run `[start, end)` of clear
    /// bits within `[from, to)`, in increasing order.
    pub(crate) fn zero_runs(&self, from: u64, to: u64, mut f: impl FnMut(u64, u64)) {
        let mut open: Option<u64> = None;
        chunks(self.mask, from, to, |w, b, n, seq| {
            let valid = low_bits(n);
            let zeros = !(self.words[w] >> b) & valid;
            let ones = !zeros & valid;
            let mut i = 0u64;
            while i < n {
                match open {
                    None => {
                        let z = zeros >> i;
                        if z == 0 {
                            break;
                        }
                        i += u64::from(z.trailing_zeros());
                        open = Some(seq + i);
                    }
                    Some(start) => {
                        let o = ones >> i;
                        if o == 0 {
                            break;
                        }
                        i += u64::from(o.trailing_zeros());
                        f(start, seq + i);
                        open = None;
                    }
                }
            }
        });
        if let Some(start) = open {
            f(start, to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(w: &Window, from: u64, to: u64) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        w.zero_runs(from, to, |a, b| v.push((a, b)));
        v
    }

    #[test]
    fn ranges_wrap_around_the_ring() {
        let mut w = Window::new(128);
        w.set_range(120, 140); // wraps: positions 120..128 and 0..12
        assert!(w.get(120) && w.get(127) && w.get(128) && w.get(139));
        assert!(!w.get(119) && !w.get(140));
        assert_eq!(runs(&w, 100, 160), vec![(100, 120), (140, 160)]);
        w.clear_range(125, 130);
        assert_eq!(runs(&w, 100, 160), vec![(100, 120), (125, 130), (140, 160)]);
        assert_eq!(runs(&w, 120, 125), vec![]);
        w.clear_all();
        assert_eq!(runs(&w, 1000, 1128), vec![(1000, 1128)]);
    }

    #[test]
    fn runs_match_a_plain_scan() {
        // A pseudo-random pattern against a bit-by-bit scan.
        let mut w = Window::new(256);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for s in 0..256u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) {
                w.set_range(s, s + 1);
            }
        }
        for (from, to) in [(0, 256), (3, 67), (250, 400), (64, 128), (7, 8)] {
            let mut expect = Vec::new();
            let mut open = None;
            for s in from..to {
                match (w.get(s), open) {
                    (false, None) => open = Some(s),
                    (true, Some(a)) => {
                        expect.push((a, s));
                        open = None;
                    }
                    _ => {}
                }
            }
            if let Some(a) = open {
                expect.push((a, to));
            }
            assert_eq!(runs(&w, from, to), expect, "{from}..{to}");
        }
    }
}
