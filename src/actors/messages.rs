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
}

/// The store made the first `n` ids of the last snapshot's dedup delta durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DedupDurable(pub usize);

/// Time passes: the partition's event-time watermark and the wall clock. Answers whether
/// the state changed (a decision was made), so the pipeline knows to snapshot it.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Tick {
    /// `None` while the partition has no event time yet: only control facts apply.
    pub watermark: Option<chrono::DateTime<chrono::Utc>>,
    pub wall_now: chrono::DateTime<chrono::Utc>,
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
