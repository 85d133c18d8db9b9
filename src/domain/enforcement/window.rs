//! A sliding event-time window of counts, kept as [`BUCKETS`] fixed buckets.
//!
//! Bucket `k` holds the counts of events with `ts` in `[k·w, (k+1)·w)` where
//! `w = window / BUCKETS` (at least one second). The sum at `now` covers every bucket that
//! overlaps `(now − window, now]`, so the effective span is between `window` and
//! `window + w`. Memory is bounded: at most `BUCKETS + 1` buckets are kept. An event older
//! than the window is ignored (it can no longer change the sum); a change of window length
//! (a tier change) starts the window afresh rather than mixing bucket widths.

use std::collections::VecDeque;
use std::ops::AddAssign;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Buckets per window.
pub const BUCKETS: u64 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window<C> {
    /// Bucket width in seconds; 0 before the first event.
    width: i64,
    /// `(bucket index, counts)`, oldest first, indexes strictly increasing.
    buckets: VecDeque<(i64, C)>,
}

impl<C> Default for Window<C> {
    fn default() -> Self {
        Window {
            width: 0,
            buckets: VecDeque::new(),
        }
    }
}

fn width_of(window: Duration) -> i64 {
    i64::try_from((window.as_secs() / BUCKETS).max(1)).unwrap_or(i64::MAX)
}

impl<C: Copy + Default + AddAssign> Window<C> {
    /// Adds `counts` at event time `ts`, as seen at `now` (the watermark, ≥ every `ts`
    /// applied before).
    pub fn add(&mut self, ts: DateTime<Utc>, counts: C, now: DateTime<Utc>, window: Duration) {
        let width = width_of(window);
        if width != self.width {
            self.width = width;
            self.buckets.clear();
        }
        let idx = ts.timestamp().div_euclid(width);
        if idx < self.oldest_index(now) {
            return;
        }
        // Events come nearly in time order, so the bucket is almost always the newest one
        // or a new one after it: search from the back. `at` is the first bucket whose
        // index is not below `idx`.
        let at = self
            .buckets
            .iter()
            .rposition(|(i, _)| *i < idx)
            .map_or(0, |before| before + 1);
        match self.buckets.get_mut(at) {
            Some((i, c)) if *i == idx => *c += counts,
            Some(_) => self.buckets.insert(at, (idx, counts)),
            None => self.buckets.push_back((idx, counts)),
        }
        self.prune(now);
    }

    /// The counts of the window ending at `now`.
    pub fn sum(&self, now: DateTime<Utc>) -> C {
        let oldest = self.oldest_index(now);
        let mut total = C::default();
        for (_, c) in self.buckets.iter().filter(|(i, _)| *i >= oldest) {
            total += *c;
        }
        total
    }

    /// Drops buckets that no longer overlap the window ending at `now`.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        let oldest = self.oldest_index(now);
        while self.buckets.front().is_some_and(|(i, _)| *i < oldest) {
            self.buckets.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// When the oldest bucket slides out, in epoch millis: the sum changes with time only
    /// then. `None` when empty.
    pub fn slides_at_ms(&self) -> Option<i64> {
        let (oldest, _) = self.buckets.front()?;
        // Bucket `i` counts while `now / width - BUCKETS <= i`, so until `i + BUCKETS + 1`.
        Some(
            oldest
                .saturating_add(BUCKETS as i64 + 1)
                .saturating_mul(self.width)
                .saturating_mul(1_000),
        )
    }

    /// Index of the oldest bucket overlapping `(now − window, now]`.
    fn oldest_index(&self, now: DateTime<Utc>) -> i64 {
        if self.width == 0 {
            return i64::MIN;
        }
        let newest = now.timestamp().div_euclid(self.width);
        newest.saturating_sub(BUCKETS as i64)
    }
}

/// Counts of usage in one bucket; stored as `[requests, errors, auth_failures]` to keep
/// snapshots small.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[u64; 3]", into = "[u64; 3]")]
pub struct Traffic {
    pub requests: u64,
    pub errors: u64,
    pub auth_failures: u64,
}

impl From<[u64; 3]> for Traffic {
    fn from([requests, errors, auth_failures]: [u64; 3]) -> Self {
        Traffic {
            requests,
            errors,
            auth_failures,
        }
    }
}

impl From<Traffic> for [u64; 3] {
    fn from(t: Traffic) -> Self {
        [t.requests, t.errors, t.auth_failures]
    }
}

impl AddAssign for Traffic {
    fn add_assign(&mut self, rhs: Traffic) {
        self.requests = self.requests.saturating_add(rhs.requests);
        self.errors = self.errors.saturating_add(rhs.errors);
        self.auth_failures = self.auth_failures.saturating_add(rhs.auth_failures);
    }
}

/// A plain count (chargebacks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Count(pub u64);

impl AddAssign for Count {
    fn add_assign(&mut self, rhs: Count) {
        self.0 = self.0.saturating_add(rhs.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000 + secs, 0).unwrap()
    }

    const W: Duration = Duration::from_secs(100);

    #[test]
    fn sums_what_is_inside_the_window_and_forgets_what_slid_out() {
        let mut w = Window::<Count>::default();
        w.add(t(0), Count(1), t(0), W);
        w.add(t(50), Count(2), t(50), W);
        assert_eq!(w.sum(t(50)), Count(3));
        // At t=115 the bucket of t=0 (width 10 s) no longer overlaps (15, 115].
        assert_eq!(w.sum(t(115)), Count(2));
        assert_eq!(w.sum(t(300)), Count(0));
        w.prune(t(300));
        assert!(w.is_empty());
    }

    #[test]
    fn late_events_land_in_their_own_bucket_or_are_ignored_when_too_old() {
        let mut w = Window::<Count>::default();
        w.add(t(90), Count(1), t(90), W);
        w.add(t(40), Count(5), t(90), W);
        assert_eq!(w.sum(t(90)), Count(6));
        w.add(t(-200), Count(100), t(90), W);
        assert_eq!(w.sum(t(90)), Count(6));
        assert_eq!(w.sum(t(155)), Count(1));
    }

    #[test]
    fn events_out_of_order_keep_the_buckets_sorted_and_merged() {
        let mut w = Window::<Count>::default();
        for (at, n) in [
            (90, 1),
            (40, 2),
            (60, 4),
            (40, 8),
            (95, 16),
            (10, 32),
            (99, 64),
        ] {
            w.add(t(at), Count(n), t(99), W);
        }
        let buckets: Vec<(i64, u64)> = w.buckets.iter().map(|(i, c)| (*i, c.0)).collect();
        let first = (1_780_000_000 + 10) / 10;
        assert_eq!(
            buckets,
            [
                (first, 32),
                (first + 3, 2 + 8),
                (first + 5, 4),
                (first + 8, 1 + 16 + 64),
            ]
        );
        assert_eq!(w.sum(t(99)), Count(127));
    }

    #[test]
    fn memory_stays_bounded_by_the_bucket_count() {
        let mut w = Window::<Traffic>::default();
        for s in 0..10_000 {
            let c = Traffic {
                requests: 1,
                errors: 0,
                auth_failures: 0,
            };
            w.add(t(s), c, t(s), W);
        }
        assert!(w.buckets.len() <= BUCKETS as usize + 1);
        assert!(w.sum(t(9_999)).requests >= 100 && w.sum(t(9_999)).requests <= 110);
    }

    #[test]
    fn traffic_is_stored_as_a_compact_triple() {
        let mut w = Window::<Traffic>::default();
        let c = Traffic {
            requests: 5,
            errors: 2,
            auth_failures: 1,
        };
        w.add(t(0), c, t(0), W);
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(json, r#"{"width":10,"buckets":[[178000000,[5,2,1]]]}"#);
        assert_eq!(serde_json::from_str::<Window<Traffic>>(&json).unwrap(), w);
    }

    #[test]
    fn a_new_window_length_starts_afresh() {
        let mut w = Window::<Count>::default();
        w.add(t(0), Count(4), t(0), W);
        w.add(t(1), Count(1), t(1), Duration::from_secs(1000));
        assert_eq!(w.sum(t(1)), Count(1));
    }
}
