//! When an owned partition's partners must be started on the wall clock, live or not: a
//! pilot tenant expires on the wall clock (CONTRACT §3), and its partner, passivated while
//! silent, would otherwise judge it only at its next event.
//!
//! The store keeps the times (`StateStore::wake_schedule`), written with the snapshots
//! that set them, so a new owner finds them too. This is the owner's copy: read on
//! assignment and reset (a commit reported failed may have landed), changed by each
//! durable write, and asked once a round which partners are due.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub(super) struct WakeSchedule {
    /// Partner id → wake time (wall-clock epoch millis), as durable in the store.
    durable: HashMap<String, i64>,
    /// The times not yet handed out by [`WakeSchedule::take_due`], earliest first.
    pending: BTreeSet<(i64, String)>,
}

impl WakeSchedule {
    /// The schedule as the store holds it.
    pub fn from_store(entries: Vec<(String, i64)>) -> Self {
        let mut schedule = WakeSchedule::default();
        schedule.committed(entries.into_iter().map(|(id, ms)| (id, Some(ms))));
        schedule
    }

    /// The durable wake times of `partners`, for a flush to compare its snapshots with.
    pub fn known(&self, partners: &[String]) -> HashMap<String, i64> {
        partners
            .iter()
            .filter_map(|id| Some((id.clone(), *self.durable.get(id)?)))
            .collect()
    }

    /// A write with these changes is durable.
    pub fn committed(&mut self, changes: impl IntoIterator<Item = (String, Option<i64>)>) {
        for (id, at) in changes {
            if let Some(old) = self.durable.remove(&id) {
                self.pending.remove(&(old, id.clone()));
            }
            if let Some(ms) = at {
                self.pending.insert((ms, id.clone()));
                self.durable.insert(id, ms);
            }
        }
    }

    /// The partners due at `now_ms`, each handed out once: a partner woken and judged
    /// keeps its entry only until its next durable write changes it, so one whose time
    /// passed without a change is not woken again every round.
    pub fn take_due(&mut self, now_ms: i64) -> Vec<String> {
        let mut due = Vec::new();
        while let Some(first) = self.pending.first() {
            if first.0 > now_ms {
                break;
            }
            if let Some((_, id)) = self.pending.pop_first() {
                due.push(id);
            }
        }
        due
    }

    /// Every durable time is pending again: after a reset, what the wakes did is lost.
    pub fn rearm(&mut self) {
        self.pending = self
            .durable
            .iter()
            .map(|(id, ms)| (*ms, id.clone()))
            .collect();
    }

    /// Whether `id` has a durable wake time.
    pub fn has(&self, id: &str) -> bool {
        self.durable.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.durable.len()
    }
}

/// The changes a write must carry: each snapshot's wake time (`replies`) where it differs
/// from what is durable (`known`, which holds only partners that have one).
pub(super) fn changes(
    known: &HashMap<String, i64>,
    replies: impl IntoIterator<Item = (String, Option<i64>)>,
) -> Vec<(String, Option<i64>)> {
    replies
        .into_iter()
        .filter(|(id, at)| known.get(id).copied() != *at)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn due_partners_are_handed_out_once_in_time_order() {
        let mut s = WakeSchedule::from_store(vec![
            ("b".into(), 200),
            ("a".into(), 100),
            ("c".into(), 300),
        ]);
        assert!(s.take_due(99).is_empty());
        assert_eq!(s.take_due(200), ids(&["a", "b"]));
        assert!(s.take_due(250).is_empty(), "handed out already");
        // A durable write that moves b's time makes it due again at the new time.
        s.committed([("b".to_owned(), Some(400))]);
        assert_eq!(s.take_due(350), ids(&["c"]));
        assert_eq!(s.take_due(400), ids(&["b"]));
        assert_eq!(s.len(), 3);
        s.rearm();
        assert_eq!(s.take_due(400), ids(&["a", "c", "b"]));
    }

    #[test]
    fn a_cleared_time_is_forgotten() {
        let mut s = WakeSchedule::from_store(vec![("a".into(), 100), ("b".into(), 100)]);
        s.committed([("a".to_owned(), None)]);
        assert_eq!(s.take_due(100), ids(&["b"]));
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.known(&ids(&["a", "b", "c"])),
            HashMap::from([("b".into(), 100)])
        );
    }

    #[test]
    fn a_write_carries_only_the_times_that_changed() {
        let known = HashMap::from([("a".to_owned(), 100), ("b".to_owned(), 200)]);
        let replies = [
            ("a".to_owned(), Some(100)),
            ("b".to_owned(), None),
            ("c".to_owned(), None),
            ("d".to_owned(), Some(50)),
        ];
        assert_eq!(
            changes(&known, replies),
            [("b".to_owned(), None), ("d".to_owned(), Some(50))]
        );
    }
}
