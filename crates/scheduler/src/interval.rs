//! Sets of half-open intervals `[start, end)` of whole seconds, kept sorted, disjoint and
//! non-adjacent (adjacent intervals are merged, so each interval is maximal).

/// A half-open interval of seconds `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: i64,
    pub end: i64,
}

impl Span {
    pub(crate) fn new(start: i64, end: i64) -> Self {
        Span { start, end }
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    pub(crate) fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }
}

/// Appends `s` to a sorted set whose last start is `<= s.start`, merging overlap and adjacency.
pub(crate) fn push(set: &mut Vec<Span>, s: Span) {
    if s.is_empty() {
        return;
    }
    if let Some(last) = set.last_mut() {
        if s.start <= last.end {
            if s.end > last.end {
                last.end = s.end;
            }
            return;
        }
    }
    set.push(s);
}

/// `out = a ∩ b`.
pub(crate) fn intersect(a: &[Span], b: &[Span], out: &mut Vec<Span>) {
    out.clear();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let start = a[i].start.max(b[j].start);
        let end = a[i].end.min(b[j].end);
        if start < end {
            out.push(Span { start, end });
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
}

/// `out = a ∪ b`.
pub(crate) fn union(a: &[Span], b: &[Span], out: &mut Vec<Span>) {
    out.clear();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = j >= b.len() || (i < a.len() && a[i].start <= b[j].start);
        let s = if take_a {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        push(out, s);
    }
}

/// Clips every interval of `set` to `[lo, hi)` in place.
pub(crate) fn clip(set: &mut Vec<Span>, lo: i64, hi: i64) {
    set.retain_mut(|s| {
        s.start = s.start.max(lo);
        s.end = s.end.min(hi);
        !s.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set_from(bits: &[bool]) -> Vec<Span> {
        let mut v = Vec::new();
        for (i, b) in bits.iter().enumerate() {
            if *b {
                push(&mut v, Span::new(i as i64, i as i64 + 1));
            }
        }
        v
    }

    proptest! {
        #[test]
        fn ops_match_bitsets(a in proptest::collection::vec(any::<bool>(), 0..64),
                             b in proptest::collection::vec(any::<bool>(), 0..64)) {
            let n = a.len().max(b.len());
            let bit = |v: &Vec<bool>, i: usize| v.get(i).copied().unwrap_or(false);
            let (sa, sb) = (set_from(&a), set_from(&b));
            let mut out = Vec::new();
            intersect(&sa, &sb, &mut out);
            let want: Vec<bool> = (0..n).map(|i| bit(&a, i) && bit(&b, i)).collect();
            prop_assert_eq!(&out, &set_from(&want));
            union(&sa, &sb, &mut out);
            let want: Vec<bool> = (0..n).map(|i| bit(&a, i) || bit(&b, i)).collect();
            prop_assert_eq!(&out, &set_from(&want));
        }
    }
}
