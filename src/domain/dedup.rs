//! The per-partner dedup window (CONTRACT §1): an `event_id` repeated within
//! `dedup_window` of event time behind the partner's newest `ts` is applied once.
//!
//! The window is measured in event time, never the wall clock, so replaying old data
//! gives the same result. An event older than the window cannot be checked and is
//! rejected (`outside_dedup_window`) rather than risk counting it twice.
//! Memory: one entry (id + timestamp, ~60–150 bytes) per event inside the window.
//! Ids are marked seen only in the same state that counts the event, and that state
//! becomes durable in one atomic write with its offsets (no claim-before-write).

use std::collections::{HashSet, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DedupWindow {
    /// The newest event time seen by this partner.
    newest: Option<DateTime<Utc>>,
    /// Ids in arrival order with their event time, oldest first, for eviction.
    #[serde(with = "millis_pairs")]
    order: VecDeque<(DateTime<Utc>, String)>,
    #[serde(skip)]
    index: HashSet<String>,
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
        while let Some((ts, _)) = self.order.front() {
            if *ts >= horizon {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.index.remove(&id);
            }
        }
    }

    /// The index is not serialized (it is derivable); rebuild it after a restore.
    fn rebuild_index_if_needed(&mut self) {
        if self.index.len() != self.order.len() {
            self.index = self.order.iter().map(|(_, id)| id.clone()).collect();
        }
    }
}

/// Window entries as `[epoch millis, id]` pairs: snapshots write one of these per event
/// in the window, and an integer is far cheaper to encode and parse than an RFC 3339
/// string (eviction needs no more than millisecond precision).
mod millis_pairs {
    use std::collections::VecDeque;

    use chrono::{DateTime, Utc};
    use serde::de::Error;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        v: &VecDeque<(DateTime<Utc>, String)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for (ts, id) in v {
            seq.serialize_element(&(ts.timestamp_millis(), id))?;
        }
        seq.end()
    }

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
    fn survives_a_serde_round_trip() {
        let mut w = DedupWindow::default();
        let win = Duration::hours(1);
        w.admit("a", t(0), win);
        let json = serde_json::to_string(&w).unwrap();
        let mut back: DedupWindow = serde_json::from_str(&json).unwrap();
        assert_eq!(back.admit("a", t(1), win), Admission::Duplicate);
        assert_eq!(back.admit("b", t(1), win), Admission::New);
    }
}
