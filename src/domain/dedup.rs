//! The per-partner dedup window (CONTRACT §1): an `event_id` repeated within
//! `dedup_window` of event time behind the partner's newest `ts` is applied once.
//!
//! The window is measured in event time, never the wall clock, so replaying old data
//! gives the same result. An event older than the window cannot be checked and is
//! rejected (`outside_dedup_window`) rather than risk counting it twice.
//! Memory: one entry per event inside the window, the id's length plus about 55 bytes
//! (`tests/partner_memory.rs`).
//! Ids are marked seen only in the same state that counts the event, and that state
//! becomes durable in one atomic write with its offsets (no claim-before-write).
//!
//! The ids are not part of the partner's snapshot: a flush writes only what changed
//! ([`DedupDelta`]: ids admitted since the store last acknowledged them, and where
//! eviction stands) in the same atomic write, so a hot partner's flush costs its new ids,
//! not its whole window. A revived partner gets its ids back with [`DedupWindow::restore`].

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::LazyLock;

use chrono::{DateTime, Duration, Utc};
use hashbrown::HashTable;
use serde::{Deserialize, Serialize};

/// One hasher for every window: the ids are partners' input, so it is keyed (SipHash with
/// a per-process random key), and one shared key saves each window 16 bytes.
static ID_HASHER: LazyLock<std::collections::hash_map::RandomState> =
    LazyLock::new(std::collections::hash_map::RandomState::new);

fn hash_id(id: &str) -> u64 {
    ID_HASHER.hash_one(id)
}

/// An id in the window, with its event time in epoch millis (eviction needs no more).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    ms: i64,
    id: Box<str>,
}

/// The entry numbered `seq` in `order`, whose front entry is numbered `front`.
fn entry_at(order: &VecDeque<Entry>, front: u64, seq: u64) -> &Entry {
    &order[(seq - front) as usize]
}

/// The hash of the entry a sequence number names: what the index needs to grow.
fn rehasher(order: &VecDeque<Entry>, front: u64) -> impl Fn(&u64) -> u64 + '_ {
    move |&seq| hash_id(&entry_at(order, front, seq).id)
}

/// Each id is held once, in `order`; the index holds only its sequence number (8 bytes),
/// and what is not yet acknowledged is the tail of `order` from a sequence number. Three
/// copies of every id (index, eviction order, pending delta) were most of an active
/// partner's window memory.
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
    order: VecDeque<Entry>,
    /// The sequence number of `order`'s front entry; entry `i` has number `front + i`.
    #[serde(skip)]
    front: u64,
    /// Sequence numbers of `order`'s entries, by the hash of their id. Derived: empty
    /// after a load until the first admission rebuilds it.
    #[serde(skip)]
    index: HashTable<u64>,
    /// The sequence number of the first entry the store has not acknowledged: those from
    /// here to the back are what the next flush writes. Eviction stops here, so an ack's
    /// count always refers to the entries its delta held.
    #[serde(skip)]
    acknowledged: u64,
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
        let hash = hash_id(id);
        if self.position(hash, id).is_some() {
            return Admission::Duplicate;
        }
        let seq = self.front + self.order.len() as u64;
        self.order.push_back(Entry {
            ms: ts.timestamp_millis(),
            id: id.into(),
        });
        self.index
            .insert_unique(hash, seq, rehasher(&self.order, self.front));
        if self.newest.is_none_or(|n| ts > n) {
            self.newest = Some(ts);
            self.evict(window);
        }
        Admission::New
    }

    /// The sequence number of `id` (whose hash is `hash`), if it is in the window. An
    /// entry below the eviction horizon is not: it may only be waiting for its flush's
    /// ack, and the answer must not depend on when that comes (the store drops it too).
    fn position(&self, hash: u64, id: &str) -> Option<u64> {
        let horizon = self.horizon_ms.unwrap_or(i64::MIN);
        self.index
            .find(hash, |&s| {
                let entry = entry_at(&self.order, self.front, s);
                entry.ms >= horizon && &*entry.id == id
            })
            .copied()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Drops ids older than the window from the front, up to the first one not yet
    /// acknowledged. Entries that arrived out of order, or that wait for a flush, may stay
    /// a little longer than the window; that only keeps them more conservatively.
    fn evict(&mut self, window: Duration) {
        let Some(newest) = self.newest else { return };
        let horizon = (newest - window).timestamp_millis();
        self.horizon_ms = Some(horizon);
        while let Some(entry) = self.order.front() {
            if entry.ms >= horizon || self.front >= self.acknowledged {
                break;
            }
            let seq = self.front;
            if let Ok(found) = self.index.find_entry(hash_id(&entry.id), |&s| s == seq) {
                found.remove();
            }
            self.order.pop_front();
            self.front += 1;
        }
    }

    /// What the next flush must write: every id not yet acknowledged, and the horizon.
    pub fn delta(&self) -> DedupDelta {
        let from = (self.acknowledged - self.front) as usize;
        DedupDelta {
            added: self
                .order
                .range(from..)
                .map(|e| (e.ms, e.id.to_string()))
                .collect(),
            evict_below_ms: self.horizon_ms,
        }
    }

    /// The store made the first `n` ids of a [`DedupWindow::delta`] durable.
    pub fn acknowledge(&mut self, n: usize) {
        let back = self.front + self.order.len() as u64;
        self.acknowledged = self.acknowledged.saturating_add(n as u64).min(back);
    }

    /// Gives a revived partner its ids back from the store (`[millis, id]`, any order).
    /// Ids its snapshot still carried inline and the store lacks are written with the
    /// next flush: they go after the stored ones, as the newest entries, so they are what
    /// is unacknowledged (out of time order, they are only evicted a little later).
    pub fn restore(&mut self, mut stored: Vec<(i64, String)>) {
        let known: HashSet<&str> = stored.iter().map(|(_, id)| id.as_str()).collect();
        let mut inline: Vec<Entry> = self
            .order
            .iter()
            .filter(|e| !known.contains(&*e.id))
            .cloned()
            .collect();
        stored.sort();
        inline.sort_by(|a, b| (a.ms, &a.id).cmp(&(b.ms, &b.id)));
        self.acknowledged = self.front + stored.len() as u64;
        self.order = stored
            .into_iter()
            .map(|(ms, id)| Entry {
                ms,
                id: id.into_boxed_str(),
            })
            .chain(inline)
            .collect();
        self.index.clear();
    }

    /// The index is not serialized (it is derivable); rebuild it after a load or restore.
    fn rebuild_index_if_needed(&mut self) {
        if self.index.len() == self.order.len() {
            return;
        }
        let (order, front) = (&self.order, self.front);
        let hasher = rehasher(order, front);
        self.index = HashTable::with_capacity(order.len());
        for (i, entry) in order.iter().enumerate() {
            // A snapshot from before ids were stored apart could repeat an id: both
            // entries are indexed, and either answers a lookup.
            self.index
                .insert_unique(hash_id(&entry.id), front + i as u64, &hasher);
        }
    }
}

/// Window entries as `[epoch millis, id]` pairs, as snapshots written before the ids were
/// stored apart carried them inline (eviction needs no more than millisecond precision).
mod millis_pairs {
    use std::collections::VecDeque;

    use chrono::DateTime;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    use super::Entry;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<VecDeque<Entry>, D::Error> {
        let raw: Vec<(i64, String)> = Vec::deserialize(d)?;
        raw.into_iter()
            .map(|(ms, id)| match DateTime::from_timestamp_millis(ms) {
                Some(_) => Ok(Entry {
                    ms,
                    id: id.into_boxed_str(),
                }),
                None => Err(D::Error::custom(format!("timestamp {ms} out of range"))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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
        // Flushed: eviction waits for the store to hold an id (the next test).
        w.acknowledge(w.delta().added.len());
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

    /// A store as the Redis script keeps it: ids added, then those below the horizon gone.
    #[derive(Default)]
    struct Store(BTreeMap<String, i64>);

    impl Store {
        fn write(&mut self, delta: &DedupDelta) {
            for (ms, id) in &delta.added {
                self.0.insert(id.clone(), *ms);
            }
            if let Some(below) = delta.evict_below_ms {
                self.0.retain(|_, ms| *ms >= below);
            }
        }

        fn entries(&self) -> Vec<(i64, String)> {
            self.0.iter().map(|(id, ms)| (*ms, id.clone())).collect()
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Landing {
        /// Durable, and the actor heard so.
        Acknowledged,
        /// Durable, but the ack was lost: the ids are written again with the next flush.
        AckLost,
        /// Not durable.
        Failed,
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// An event: one of a few ids, its time moved from the newest by -40..60 s.
        Admit(u8, i64),
        /// A flush starts: its delta is taken and is in flight.
        Flush,
        /// The flush in flight ends.
        Land(Landing),
        /// The process restarts from the last durable write: snapshot, then the store's ids.
        Revive,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            6 => (0u8..24, -40i64..60).prop_map(|(id, dt)| Op::Admit(id, dt)),
            2 => Just(Op::Flush),
            2 => prop_oneof![
                Just(Landing::Acknowledged),
                Just(Landing::AckLost),
                Just(Landing::Failed)
            ]
            .prop_map(Op::Land),
            1 => Just(Op::Revive),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// The window's promises, whatever the interleaving of events, flushes in flight,
        /// failed flushes, lost acks and restarts: an id seen inside the window is never
        /// counted twice; what a landed flush held survives a restart; an answer does not
        /// depend on when acks arrive; and the index finds every entry at its number.
        #[test]
        fn never_counts_an_id_twice_and_keeps_what_was_acknowledged(
            ops in proptest::collection::vec(op(), 1..120)
        ) {
            let win = Duration::seconds(30);
            let mut w = DedupWindow::default();
            let mut shadow = DedupWindow::default();
            let mut store = Store::default();
            // What the durable state knows: the snapshot's window and the ids counted.
            let mut durable = (DedupWindow::default(), BTreeMap::<String, i64>::new());
            // Ids counted (applied) since the start, with the event time of the count.
            let mut counted: BTreeMap<String, i64> = BTreeMap::new();
            let mut in_flight: Option<(DedupDelta, DedupWindow, BTreeMap<String, i64>)> = None;
            let mut clock = 1_000i64;
            for op in ops {
                match op {
                    Op::Admit(n, dt) => {
                        let id = format!("e{n}");
                        let ts = t(clock + dt);
                        let newest = w.newest;
                        let seen = w.admit(&id, ts, win);
                        // The same events with every flush acknowledged at once: the answer
                        // does not depend on when acks come.
                        let ideal = shadow.admit(&id, ts, win);
                        shadow.acknowledge(usize::MAX);
                        proptest::prop_assert_eq!(seen, ideal, "{} at {}", id, clock + dt);
                        let inside = |at: i64| newest.is_some_and(|n| t(at) >= n - win);
                        match seen {
                            Admission::New => {
                                if let Some(&at) = counted.get(&id) {
                                    proptest::prop_assert!(
                                        !inside(at),
                                        "{id} counted at {at} and again at {}", clock + dt
                                    );
                                }
                                counted.insert(id, clock + dt);
                            }
                            Admission::Duplicate => {
                                proptest::prop_assert!(counted.contains_key(&id));
                            }
                            Admission::TooOld => {
                                proptest::prop_assert!(newest.is_some_and(|n| ts < n - win));
                            }
                        }
                        clock += dt.max(0);
                    }
                    Op::Flush => {
                        if in_flight.is_none() {
                            in_flight = Some((w.delta(), w.clone(), counted.clone()));
                        }
                    }
                    Op::Land(landing) => {
                        if let Some((delta, snapshot, then)) = in_flight.take() {
                            if landing != Landing::Failed {
                                store.write(&delta);
                                durable = (snapshot, then);
                            }
                            if landing == Landing::Acknowledged {
                                w.acknowledge(delta.added.len());
                            }
                        }
                    }
                    Op::Revive => {
                        let json = serde_json::to_string(&durable.0).unwrap();
                        w = serde_json::from_str(&json).unwrap();
                        w.restore(store.entries());
                        counted = durable.1.clone();
                        in_flight = None;
                        shadow = w.clone();
                        shadow.acknowledge(usize::MAX);
                        // Every id counted durably and still inside the window is known.
                        if let Some(newest) = w.newest {
                            for (id, at) in &counted {
                                if t(*at) >= newest - win {
                                    proptest::prop_assert!(
                                        w.clone().admit(id, newest, win) == Admission::Duplicate,
                                        "{id} (at {at}) forgotten by the restart"
                                    );
                                }
                            }
                        }
                    }
                }
                let back = w.front + w.order.len() as u64;
                proptest::prop_assert!(w.front <= w.acknowledged && w.acknowledged <= back);
                // The index finds each entry inside the window at its own number.
                if !w.index.is_empty() {
                    proptest::prop_assert_eq!(w.index.len(), w.order.len());
                    let horizon = w.horizon_ms.unwrap_or(i64::MIN);
                    for (i, entry) in w.order.iter().enumerate() {
                        if entry.ms >= horizon {
                            let found = w.position(hash_id(&entry.id), &entry.id);
                            proptest::prop_assert_eq!(found, Some(w.front + i as u64));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn an_id_past_the_horizon_is_gone_even_while_its_ack_is_awaited() {
        let mut w = DedupWindow::default();
        let win = Duration::seconds(100);
        w.admit("a", t(0), win);
        let _in_flight = w.delta();
        w.admit("c", t(500), win);
        // "a" waits for its ack to be evicted, but is already outside the window: the same
        // answer as with the ack in, or after a restart (the store dropped it).
        assert_eq!(w.admit("a", t(450), win), Admission::New);
        assert_eq!(w.admit("a", t(451), win), Admission::Duplicate);
    }

    #[test]
    fn each_id_is_held_once_and_an_ack_covers_what_its_delta_held() {
        let mut w = DedupWindow::default();
        let win = Duration::seconds(100);
        w.admit("a", t(0), win);
        w.admit("b", t(1), win);
        let delta = w.delta();
        // Event time jumps past both while the flush is in flight: they wait for the ack.
        w.admit("c", t(500), win);
        assert_eq!(w.len(), 3);
        w.acknowledge(delta.added.len());
        assert_eq!(
            w.delta().added,
            vec![(t(500).timestamp_millis(), "c".to_owned())]
        );
        // The next advance evicts what was acknowledged and is below the horizon.
        w.admit("d", t(501), win);
        assert_eq!(w.len(), 2);
        assert_eq!(w.index.len(), 2);
        assert_eq!(w.admit("c", t(502), win), Admission::Duplicate);
        // A replay of the evicted "a" carries its own time, outside the window.
        assert_eq!(w.admit("a", t(0), win), Admission::TooOld);
    }
}
