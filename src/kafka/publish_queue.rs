//! A partition's outbox items on their way out (decisions, attributions, audit notes), in
//! outbox order, each at its stage. Publication takes the first waiting items in bounded
//! batches; only a fully published prefix leaves the queue, so what an actor is told is
//! published never skips an item that is not.

use std::collections::HashSet;

use crate::publish::Outgoing;

/// Most outbox items one data-plane stage takes: one pipelined round trip of decision
/// scripts and one of audit appends, a few milliseconds of Redis. Unbounded, a storm of
/// 100,000 decisions made one round trip that outlived `store.timeout`, failed, and was
/// sent again whole, for ever, while Redis still ran every script of each try.
pub(super) const PUBLISH_BATCH: usize = 512;

/// An outbox item of a durable snapshot, on its way out.
pub(super) struct ToPublish {
    pub partner: String,
    /// Its number in the partner's outbox (acknowledged to the actor once published).
    pub n: u64,
    /// Its outbox id, `<partner>:<n>`: its stable identity.
    pub id: String,
    pub item: Outgoing,
    pub stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Waiting,
    DataPlane,
    Producing,
    Done,
}

#[derive(Default)]
pub(super) struct PublishQueue {
    items: Vec<ToPublish>,
    /// The ids of `items`: an id is queued once until it leaves (snapshots keep carrying an
    /// entry until its actor hears it is published), which [`PublishQueue::advance`]'s
    /// single walk relies on.
    ids: HashSet<String>,
    /// No item before this index is waiting. The consumer loop asks for a batch on every
    /// pass; walking from the front past thousands of items in flight each time was 5 % of
    /// warden's CPU in a run with 90,000 decisions.
    first_waiting: usize,
}

impl PublishQueue {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// The partners with an item queued.
    pub fn partners(&self) -> HashSet<&str> {
        self.items.iter().map(|q| q.partner.as_str()).collect()
    }

    /// Appends an item not already queued (see [`PublishQueue::contains`]); it waits
    /// behind every item already queued.
    pub fn push(&mut self, partner: String, n: u64, id: String, item: Outgoing) {
        if !self.ids.insert(id.clone()) {
            return;
        }
        self.items.push(ToPublish {
            partner,
            n,
            id,
            item,
            stage: Stage::Waiting,
        });
    }

    /// Moves the first [`PUBLISH_BATCH`] waiting items, in order, to the data-plane stage
    /// and returns their ids and items.
    pub fn next_batch(&mut self) -> (Vec<String>, Vec<Outgoing>) {
        let mut ids = Vec::new();
        let mut items = Vec::new();
        let mut i = self.first_waiting;
        while i < self.items.len() && ids.len() < PUBLISH_BATCH {
            let q = &mut self.items[i];
            if q.stage == Stage::Waiting {
                q.stage = Stage::DataPlane;
                ids.push(q.id.clone());
                items.push(q.item.clone());
            }
            i += 1;
        }
        self.first_waiting = i;
        (ids, items)
    }

    /// Moves the items of a batch (`ids`, as [`PublishQueue::next_batch`] gave them) to
    /// their next stage, `next(i)` for the i-th, and removes the published prefix, which
    /// it returns in order.
    pub fn advance(&mut self, ids: &[String], next: impl Fn(usize) -> Stage) -> Vec<ToPublish> {
        // A batch is a subsequence of the queue in order (items leave only as a published
        // prefix, and a batch's items are not published), so one walk finds them all.
        let mut at = 0;
        for (i, q) in self.items.iter_mut().enumerate() {
            if at == ids.len() {
                break;
            }
            if q.id == ids[at] {
                q.stage = next(at);
                if q.stage == Stage::Waiting {
                    self.first_waiting = self.first_waiting.min(i);
                }
                at += 1;
            }
        }
        debug_assert_eq!(at, ids.len(), "a batch's ids are queued in batch order");
        let published = self
            .items
            .iter()
            .position(|q| q.stage != Stage::Done)
            .unwrap_or(self.items.len());
        self.first_waiting = self.first_waiting.saturating_sub(published);
        let gone: Vec<ToPublish> = self.items.drain(..published).collect();
        for q in &gone {
            self.ids.remove(&q.id);
        }
        gone
    }
}

/// `n` waiting audit notes of seven partners (tests).
#[cfg(test)]
pub(super) fn queue(n: usize) -> PublishQueue {
    use crate::domain::partner::AuditNote;

    let mut q = PublishQueue::default();
    for i in 0..n {
        q.push(
            format!("p-{}", i % 7),
            i as u64,
            format!("p-{}:{i}", i % 7),
            Outgoing::Audit(AuditNote {
                ref_id: format!("r-{i}"),
                action: "test".into(),
                target: "partner:p".into(),
                detail: serde_json::Value::Null,
            }),
        );
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: usize) -> String {
        format!("p-{}:{i}", i % 7)
    }

    #[test]
    fn a_storm_is_published_in_bounded_batches_in_order() {
        let total = 2 * PUBLISH_BATCH + 3;
        let mut q = queue(total);
        // An item already past the data plane is skipped, not counted in the batch.
        q.items[1].stage = Stage::Producing;
        let mut seen = Vec::new();
        loop {
            let (ids, items) = q.next_batch();
            assert_eq!(ids.len(), items.len());
            assert!(ids.len() <= PUBLISH_BATCH, "batch of {}", ids.len());
            if ids.is_empty() {
                break;
            }
            seen.extend(ids);
        }
        let expected: Vec<String> = (0..total).filter(|i| *i != 1).map(id).collect();
        assert_eq!(seen, expected);
        assert!(q.items.iter().enumerate().all(|(i, q)| q.stage
            == if i == 1 {
                Stage::Producing
            } else {
                Stage::DataPlane
            }));
    }

    #[test]
    fn an_id_is_queued_once_until_it_leaves() {
        let mut q = queue(3);
        let note = q.items[0].item.clone();
        assert!(q.contains(&id(0)));
        // A later snapshot still carries entry 0: it is not queued again.
        q.push("p-0".into(), 0, id(0), note.clone());
        assert_eq!(q.len(), 3);
        let (batch, _) = q.next_batch();
        q.advance(&batch, |_| Stage::Producing);
        let gone = q.advance(&batch, |_| Stage::Done);
        assert_eq!(gone.len(), 3);
        assert!(!q.contains(&id(0)));
        // Once published it may come again (an actor not yet told): queued, published again.
        q.push("p-0".into(), 0, id(0), note);
        assert_eq!(q.next_batch().0, vec![id(0)]);
    }

    #[test]
    fn what_a_stage_returns_is_published_again_before_later_items() {
        let mut q = queue(PUBLISH_BATCH + 10);
        let (first, _) = q.next_batch();
        assert_eq!(first.len(), PUBLISH_BATCH);
        // The data plane took the first 500 of the batch; the other 12 wait again.
        let published = q.advance(&first, |i| {
            if i < 500 {
                Stage::Producing
            } else {
                Stage::Waiting
            }
        });
        assert!(published.is_empty(), "nothing is produced yet");
        let (second, _) = q.next_batch();
        let expected: Vec<String> = (500..PUBLISH_BATCH + 10).map(id).collect();
        assert_eq!(
            second, expected,
            "the returned items first, then the rest, in order"
        );
        // The broker acknowledged all of the first 500 but the third.
        let published = q.advance(&first[..500], |i| {
            if i == 2 {
                Stage::Waiting
            } else {
                Stage::Done
            }
        });
        let gone: Vec<u64> = published.iter().map(|p| p.n).collect();
        assert_eq!(gone, vec![0, 1], "only the published prefix leaves");
        assert_eq!(q.len(), PUBLISH_BATCH + 8);
        let (third, _) = q.next_batch();
        assert_eq!(
            third,
            vec![id(2)],
            "the unacknowledged item is produced again"
        );
        assert!(q.next_batch().0.is_empty());
        // Everything else is acknowledged: the queue empties in order.
        q.advance(&second, |_| Stage::Producing);
        q.advance(&second, |_| Stage::Done);
        let rest = q.advance(&third, |_| Stage::Done);
        let rest: Vec<u64> = rest.iter().map(|p| p.n).collect();
        assert_eq!(
            rest,
            (2..PUBLISH_BATCH + 10)
                .map(|n| n as u64)
                .collect::<Vec<_>>()
        );
        assert_eq!(q.len(), 0);
        assert!(q.is_empty());
    }
}
