//! Messages to a partner actor, one struct each.

use actix::Message;

use crate::domain::event::{PartnerEvent, Rejection, TopicKind};
use crate::domain::partner::{OutboxEntry, PartnerSummary};

/// An event with the record it came from, so a rejection can be dead-lettered with its
/// source coordinates.
#[derive(Debug, Clone)]
pub struct Sourced {
    pub topic: TopicKind,
    pub partition: i32,
    pub offset: i64,
    pub event: PartnerEvent,
}

/// Events of one partner in offset order. Sent with `try_send`, so a full mailbox is
/// seen by the pipeline (back-pressure) instead of queueing without bound.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyBatch(pub Vec<Sourced>);

/// An event the domain rejected, to be dead-lettered before its offset is stored.
#[derive(Debug, Clone)]
pub struct RejectedEvent {
    pub source: Sourced,
    pub rejection: Rejection,
}

/// The partner's state serialized for the store, with the rejections since the last one.
#[derive(Debug)]
pub struct Snapshot {
    pub partner_id: String,
    pub bytes: Vec<u8>,
    pub rejections: Vec<RejectedEvent>,
    /// Decisions in the snapshot's outbox: publish them once the snapshot is durable.
    pub outbox: Vec<OutboxEntry>,
    /// What changed in the dedup window (written with the snapshot).
    pub dedup: crate::domain::dedup::DedupDelta,
    /// The next owner must start this partner at once, not at its next event: its outbox
    /// has entries to publish, or it must stay live with no event to come (see
    /// `TickDue::keep_live`).
    pub awake: bool,
    /// When, on the wall clock (epoch millis), the partner must be started even if it is
    /// silent: its next pilot expiry (`PartnerState::wake_at_ms`).
    pub wake_at: Option<i64>,
}

/// The store made the first `n` ids of the last snapshot's dedup delta durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DedupDurable(pub usize);

/// Time passes: the partition's event-time watermark and the wall clock. Sent without
/// waiting for a reply (a reply per actor cost the io runtime more than the ticks cost the
/// actors); an actor whose state the tick changed notes its id in `round`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick {
    /// `None` while the partition has no event time yet: only control facts apply.
    pub watermark: Option<chrono::DateTime<chrono::Utc>>,
    pub wall_now: chrono::DateTime<chrono::Utc>,
    /// The partition the pipeline holds this actor under, given back with a change (the
    /// record's partition, whatever partitioner its producer used).
    pub partition: i32,
    pub round: std::sync::Arc<TickRound>,
}

/// A partner whose state a tick changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickChange {
    pub partition: i32,
    pub partner_id: String,
    /// The tick added to its outbox: its partition should flush without waiting.
    pub decided: bool,
}

/// One round of ticks: every `Tick` of the round holds it, and when the last is handled
/// or dropped (a stopped actor's mailbox), the round ends and `on_end` gets the partners
/// whose state changed. So the round's end is known without a reply per actor,
/// and a tick that never ran still ends it.
pub struct TickRound {
    changed: parking_lot::Mutex<Vec<TickChange>>,
    on_end: parking_lot::Mutex<Option<RoundEnd>>,
}

/// What a [`TickRound`] calls with the changed partners' ids when it ends.
type RoundEnd = Box<dyn FnOnce(Vec<TickChange>) + Send>;

impl TickRound {
    pub fn new(on_end: impl FnOnce(Vec<TickChange>) + Send + 'static) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            changed: parking_lot::Mutex::new(Vec::new()),
            on_end: parking_lot::Mutex::new(Some(Box::new(on_end))),
        })
    }

    /// The tick changed this partner's state: it must be snapshotted.
    pub fn changed(&self, change: TickChange) {
        self.changed.lock().push(change);
    }
}

impl Drop for TickRound {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.get_mut().take() {
            on_end(std::mem::take(self.changed.get_mut()));
        }
    }
}

/// Outbox entries up to `n` are published: drop them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AckOutbox(pub u64);

#[derive(Message)]
#[rtype(result = "Result<Snapshot, String>")]
pub struct TakeSnapshot;

#[derive(Message)]
#[rtype(result = "PartnerSummary")]
pub struct GetSummary;

/// A copy of the partner's whole state (statement reads; rare, so a clone is fine).
#[derive(Message)]
#[rtype(result = "crate::domain::partner::PartnerState")]
pub struct GetState;

/// Stop after the messages already queued (passivation, revocation, shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_tick_round_ends_once_when_its_last_tick_is_gone_with_what_changed() {
        let (tx, rx) = mpsc::channel();
        let round = TickRound::new(move |changed| tx.send(changed).unwrap());
        let handled = round.clone();
        let dropped_unhandled = round.clone();
        drop(round);
        let change = TickChange {
            partition: 3,
            partner_id: "p-1".into(),
            decided: true,
        };
        handled.changed(change.clone());
        drop(handled);
        assert!(rx.try_recv().is_err(), "ended with a tick still queued");
        // A stopped actor's mailbox drops its tick: the round ends all the same.
        drop(dropped_unhandled);
        assert_eq!(rx.try_recv().unwrap(), vec![change]);
        assert!(rx.try_recv().is_err(), "ended twice");
    }
}
