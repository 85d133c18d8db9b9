//! The per-partner dedup window (CONTRACT §1): an `event_id` repeated within
//! `dedup_window` of event time behind the partner's newest `ts` is applied once.
//!
//! The window is measured in event time, never the wall clock, so replaying old data
//! gives the same result. An event older than the window cannot be checked and is
//! rejected (`outside_dedup_window`) rather than risk counting it twice.
//! Memory: one entry (id + timestamp, ~60–150 bytes) per event inside the window.
//! Ids are marked seen only in the same state that counts the event, and that state
//! becomes durable in one atomic write with its offsets (no claim-before-write).
//!
//! The ids are not part of the partner's snapshot: a flush writes only what changed
//! ([`DedupDelta`]: ids admitted since the store last acknowledged them, and where
//! eviction stands) in the same atomic write, so a hot partner's flush costs its new ids,
//! not its whole window. A revived partner gets its ids back with [`DedupWindow::restore`].

use std::collections::{HashSet, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DedupWindow {
    /// The newest event time seen by this partner.
    #[serde(default, with = "crate::domain::stamp::opt")]
    newest: Option<DateTime<Utc>>,
    /// Ids in arrival order with their event time, oldest first, for eviction. Stored
    /// apart from the snapshot (see the module header); a snapshot written before that
    /// carries them inline and still loads.
    #[serde(
        default,
        skip_serializing,
        deserialize_with = "millis_pairs::deserialize"
    )]
    order: VecDeque<(DateTime<Utc>, String)>,
    #[serde(skip)]
    index: HashSet<String>,
    /// Ids admitted since the store last acknowledged a flush, oldest first.
    #[serde(skip)]
    pending: Vec<(i64, String)>,
    /// Ids with an event time below this (epoch millis) are evicted.
    #[serde(skip)]
    horizon_ms: Option<i64>,
}

/// What a flush writes of a partner's window: the ids admitted since the last
/// acknowledged flush (`[epoch millis, id]`) and the eviction horizon. Writing it twice
/// is harmless, so an unacknowledged delta is simply sent again with the next one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupDelta {
    pub added: Vec<(i64, String)>,
    /// Ids with an event time (millis) below this are gone from the window.
    pub evict_below_ms: Option<i64>,
}

impl DedupDelta {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.evict_below_ms.is_none()
    }
}

/// Equality of what is durable: the derived index is left out.
impl PartialEq for DedupWindow {
    fn eq(&self, other: &Self) -> bool {
        self.newest == other.newest && self.order == other.order
    }
}

impl Eq for DedupWindow {}

/// What the window says about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// First sighting inside the window: apply it.
    New,
    /// Seen before inside the window: skip it, it has been applied.
    Duplicate,
    /// Older than the window behind the newest `ts`: cannot be checked, reject it.
    TooOld,
}

impl DedupWindow {
    /// Checks `id` and, when new, records it. Call only when the event will be applied.
    pub fn admit(&mut self, id: &str, ts: DateTime<Utc>, window: Duration) -> Admission {
        self.rebuild_index_if_needed();
        if let Some(newest) = self.newest {
            if ts < newest - window {
                return Admission::TooOld;
            }
        }
        if self.index.contains(id) {
            return Admission::Duplicate;
        }
        self.index.insert(id.to_owned());
        self.order.push_back((ts, id.to_owned()));
        self.pending.push((ts.timestamp_millis(), id.to_owned()));
        if self.newest.is_none_or(|n| ts > n) {
            self.newest = Some(ts);
            self.evict(window);
        }
        Admission::New
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Drops ids older than the window from the front. Entries that arrived out of order
    /// may stay a little longer than the window; that only keeps them more conservatively.
    fn evict(&mut self, window: Duration) {
        let Some(newest) = self.newest else { return };
        let horizon = newest - window;
        self.horizon_ms = Some(horizon.timestamp_millis());
        while let Some((ts, _)) = self.order.front() {
            if *ts >= horizon {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.index.remove(&id);
            }
        }
    }

    /// What the next flush must write: every id not yet acknowledged, and the horizon.
    pub fn delta(&self) -> DedupDelta {
        DedupDelta {
            added: self.pending.clone(),
            evict_below_ms: self.horizon_ms,
        }
    }

    /// The store made the first `n` ids of a [`DedupWindow::delta`] durable.
    pub fn acknowledge(&mut self, n: usize) {
        self.pending.drain(..n.min(self.pending.len()));
    }

    /// Gives a revived partner its ids back from the store (`[millis, id]`, any order).
    /// Ids its snapshot still carried inline and the store lacks are written with the
    /// next flush.
    pub fn restore(&mut self, stored: Vec<(i64, String)>) {
        let known: HashSet<&str> = stored.iter().map(|(_, id)| id.as_str()).collect();
        let inline: Vec<(i64, String)> = self
            .order
            .iter()
            .filter(|(_, id)| !known.contains(id.as_str()))
            .map(|(ts, id)| (ts.timestamp_millis(), id.clone()))
            .collect();
        let mut all: Vec<(i64, String)> =
            stored.into_iter().chain(inline.iter().cloned()).collect();
        all.sort();
        self.order = all
            .into_iter()
            .filter_map(|(ms, id)| DateTime::from_timestamp_millis(ms).map(|ts| (ts, id)))
            .collect();
        self.index.clear();
        self.pending.extend(inline);
    }

    /// The index is not serialized (it is derivable); rebuild it after a restore.
    fn rebuild_index_if_needed(&mut self) {
        if self.index.len() != self.order.len() {
            self.index = self.order.iter().map(|(_, id)| id.clone()).collect();
        }
    }
}

/// Window entries as `[epoch millis, id]` pairs, as snapshots written before the ids were
/// stored apart carried them inline (eviction needs no more than millisecond precision).
mod millis_pairs {
    use std::collections::VecDeque;

    use chrono::{DateTime, Utc};
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<VecDeque<(DateTime<Utc>, String)>, D::Error> {
        let raw: Vec<(i64, String)> = Vec::deserialize(d)?;
        raw.into_iter()
            .map(|(ms, id)| {
                DateTime::from_timestamp_millis(ms)
                    .map(|ts| (ts, id))
                    .ok_or_else(|| D::Error::custom(format!("timestamp {ms} out of range")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn repeated_id_inside_window_is_duplicate() {
        let mut w = DedupWindow::default();
        let win = Duration::hours(24);
        assert_eq!(w.admit("e1", t(0), win), Admission::New);
        assert_eq!(w.admit("e1", t(10), win), Admission::Duplicate);
        assert_eq!(w.admit("e2", t(10), win), Admission::New);
    }

    #[test]
    fn event_older_than_window_is_too_old_and_not_recorded() {
        let mut w = DedupWindow::default();
        let win = Duration::seconds(100);
        assert_eq!(w.admit("new", t(1000), win), Admission::New);
        assert_eq!(w.admit("old", t(899), win), Admission::TooOld);
        assert_eq!(w.admit("edge", t(900), win), Admission::New);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn old_ids_are_evicted_as_event_time_advances() {
        let mut w = DedupWindow::default();
        let win = Duration::seconds(100);
        for i in 0..50 {
            w.admit(&format!("e{i}"), t(i), win);
        }
        w.admit("late", t(1000), win);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn survives_a_snapshot_plus_its_delta() {
        let mut w = DedupWindow::default();
        let win = Duration::hours(1);
        w.admit("a", t(0), win);
        let json = serde_json::to_string(&w).unwrap();
        assert!(
            !json.contains("\"a\""),
            "the ids stay out of the snapshot: {json}"
        );
        let delta = w.delta();
        let mut back: DedupWindow = serde_json::from_str(&json).unwrap();
        back.restore(delta.added);
        assert_eq!(back.admit("a", t(1), win), Admission::Duplicate);
        assert_eq!(back.admit("b", t(1), win), Admission::New);
    }

    #[test]
    fn a_delta_holds_what_is_not_acknowledged_and_the_horizon() {
        let mut w = DedupWindow::default();
        let win = Duration::seconds(100);
        w.admit("a", t(0), win);
        w.admit("b", t(10), win);
        let first = w.delta();
        assert_eq!(first.added.len(), 2);
        // A flush that failed is not acknowledged: its ids come again with the next.
        w.admit("c", t(20), win);
        assert_eq!(w.delta().added.len(), 3);
        w.acknowledge(first.added.len());
        let next = w.delta();
        assert_eq!(next.added, vec![(t(20).timestamp_millis(), "c".to_owned())]);
        assert_eq!(next.evict_below_ms, Some((t(20) - win).timestamp_millis()));
        w.acknowledge(1);
        assert!(w.delta().added.is_empty());
    }

    #[test]
    fn an_inline_snapshot_still_loads_and_its_ids_are_written_next() {
        let json = format!(
            r#"{{"newest":"{}","order":[[{},"a"],[{},"b"]]}}"#,
            t(10).to_rfc3339(),
            t(0).timestamp_millis(),
            t(10).timestamp_millis()
        );
        let mut w: DedupWindow = serde_json::from_str(&json).unwrap();
        // The store already has "a"; "b" only the old snapshot knew.
        w.restore(vec![(t(0).timestamp_millis(), "a".to_owned())]);
        assert_eq!(w.len(), 2);
        assert_eq!(
            w.delta().added,
            vec![(t(10).timestamp_millis(), "b".to_owned())]
        );
        assert_eq!(
            w.admit("a", t(11), Duration::hours(1)),
            Admission::Duplicate
        );
    }
}
