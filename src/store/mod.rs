//! The state store: where a partition's partner snapshots and its input offsets become
//! durable together (CONTRACT §9).
//!
//! The unit of ownership is a *partition number* `p`: partition `p` of every keyed topic
//! (usage, invoices, attribution) holds the same partners, so one owner snapshots their
//! state and the offsets of all three topics in one atomic write, guarded by the
//! ownership epoch it took when `p` was assigned to it.
//!
//! Two implementations share one behaviour suite (`tests/store_behaviour.rs`):
//! [`redis::RedisStore`] for production and [`memory::MemoryStore`] for the embedded mode.

pub mod audit;
pub mod decisions;
pub mod epoch;
pub mod keys;
pub mod memory;
pub mod redis;
mod scripts;
pub mod snapshot;
pub mod statements;

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::domain::dedup::DedupDelta;

/// Next offset to read, per input topic name, for one partition number.
pub type Offsets = BTreeMap<String, i64>;

/// One atomic write: the snapshot of every partner of partition `partition` that changed
/// since the last write, with the offsets that state includes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionWrite {
    pub partition: i32,
    /// The epoch this owner took with [`StateStore::acquire`]; the write is refused
    /// ([`StoreError::Fenced`]) unless it is still the partition's current epoch.
    pub epoch: u64,
    /// Next offset to read per topic (the offset of the last applied record + 1).
    pub offsets: Offsets,
    /// Encoded partner state ([`snapshot::encode`]), by partner id.
    pub partners: Vec<(String, Vec<u8>)>,
    /// What changed in each partner's dedup window (written in the same atomic write).
    pub dedup: Vec<(String, DedupDelta)>,
    /// For partners of this write, whether the next owner must start them at once
    /// ([`StateStore::awake_partners`]); a partner not listed keeps its mark.
    pub awake: Vec<(String, bool)>,
    /// Changes to when partners must be started on the wall clock (epoch millis; `None`
    /// removes it), read by every owner ([`StateStore::wake_schedule`]). Only changes are
    /// listed: a partner not listed keeps its time.
    pub wake: Vec<(String, Option<i64>)>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Another owner took the partition since this one did: the write was not applied,
    /// and this owner must drop the partition. Retrying cannot help.
    #[error("partition {partition}: epoch {epoch} is stale (current {current})")]
    Fenced {
        partition: i32,
        epoch: u64,
        current: u64,
    },
    /// The store could not be reached or did not answer within its timeout. Retrying can help.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with data warden did not write. Retrying cannot help.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// The primary took the write, but fewer replicas than `store.replica_acks` confirmed
    /// it in time: it does not count (a failover could lose it). Retrying can help.
    #[error("store write not replicated: {0}")]
    NotReplicated(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::NotReplicated(_)
        )
    }
}

/// The operations the pipeline needs from durable storage. Every method is bounded by
/// the store's configured timeout: none waits longer than that on an unreachable store.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Become the owner of `partition`: takes and returns its next epoch (the next
    /// generation, with a random tag: [`epoch`]), which fences every earlier owner's
    /// writes from now on.
    async fn acquire(&self, partition: i32) -> Result<u64, StoreError>;

    /// Moves `partition`'s epoch from `held` to [`epoch::renewed`]`(held)` if it is still
    /// `held`, and returns the new one: every write still carrying `held` is fenced from
    /// now on (a flush given up on, whose commit may yet land). Conditional, so an owner
    /// that missed its revocation cannot take the partition back from the next one;
    /// idempotent for one `token`, so a retry after a lost reply gets the same epoch again
    /// rather than a fence.
    /// Any other epoch is `Fenced` (with the current one), and nothing is written.
    async fn renew(&self, partition: i32, held: u64, token: &str) -> Result<u64, StoreError>;

    /// The offsets stored with the partition's state (empty if never written).
    async fn offsets(&self, partition: i32) -> Result<Offsets, StoreError>;

    /// Atomically store the partner snapshots and offsets of `write`, if `write.epoch` is
    /// still the partition's epoch; otherwise nothing is written and `Fenced` is returned.
    async fn commit(&self, write: PartitionWrite) -> Result<(), StoreError>;

    /// The latest durable snapshot of one partner of `partition`.
    async fn load_partner(
        &self,
        partition: i32,
        partner_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// A partner's durable state as one read: its snapshot and, when it has one, its dedup
    /// ids as `[epoch millis, id]`, oldest first. One read, because a commit may land
    /// between two: one the client gave up on still runs in Redis. A snapshot from before such a commit with the ids it added
    /// would take the events between as duplicates, and a replay would skip them.
    async fn load_state(
        &self,
        partition: i32,
        partner_id: &str,
    ) -> Result<Option<(Vec<u8>, Vec<(i64, String)>)>, StoreError>;

    /// The partners of `partition` whose last durable snapshot asked to be started at once
    /// by the next owner (see [`PartitionWrite::awake`]): read on assignment.
    async fn awake_partners(&self, partition: i32) -> Result<Vec<String>, StoreError>;

    /// The partners of `partition` to start at a wall-clock time (epoch millis), whether
    /// they are live or not: a pilot of a passivated partner must still expire. Read on
    /// assignment and reset; the owner keeps it in step with its writes.
    async fn wake_schedule(&self, partition: i32) -> Result<Vec<(String, i64)>, StoreError>;

    /// Every partner id with a snapshot in `partition` (operators and tests; not on hot paths).
    async fn partner_ids(&self, partition: i32) -> Result<Vec<String>, StoreError>;

    /// Cheap reachability check, for `warden_store_up` and /readyz's body.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether the store takes a write: a store that answers reads but refuses writes (out
    /// of memory, a read-only replica after a failover) cannot keep state either.
    async fn probe_write(&self) -> Result<(), StoreError> {
        self.ping().await
    }
}
