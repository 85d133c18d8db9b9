//! The audit log (CONTRACT §4, `warden.audit.v1`): one append-only, hash-chained log for
//! the whole deployment, on Redis (`RedisStore`, in `redis.rs`) or in memory
//! ([`MemoryAuditLog`]), with one behaviour suite over both (`tests/audit_store.rs`).
//!
//! Appends are optimistic: the record is sealed in Rust after the chain's head as last
//! read (SHA-256, which Lua in Redis cannot compute), then one script (`AUDIT_APPEND` in
//! `scripts.rs`) appends it only if the head has not moved and its `ref` is new. A moved
//! head comes back with the script's answer and the record is sealed again, at most
//! [`MAX_CONFLICTS`] times within the store's timeout. So `seq` and `prev_hash` are
//! assigned atomically in the store, whichever instance appends. Within one process,
//! appends take turns (see `append_turn` in `redis.rs`), so retries are only needed
//! between instances; there, a writer that keeps losing takes a short claim on the chain
//! (see the script), so no instance starves while others append back to back.
//!
//! Fail closed: an append that returns an error may or may not have been written (a reply
//! lost after the script ran); retrying it with the same `ref` is safe and answers
//! [`AppendOutcome::AlreadyRecorded`] if it was. Either outcome of `Ok` means the record
//! is durable, and only then may the recorded action go ahead.

mod memory;
mod redis;

use async_trait::async_trait;

use super::StoreError;
use crate::domain::audit::{self, AuditEntry, AuditRecord, ChainError, ChainHead};

pub use self::memory::MemoryAuditLog;
pub use self::redis::MAX_CONFLICTS;

/// What [`AuditLog::append`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendOutcome {
    /// The entry is now this record of the chain.
    Appended(AuditRecord),
    /// The entry's `ref` was already in the chain, at this `seq`: nothing was appended
    /// (whatever the rest of the entry says, the first record of a ref stands).
    AlreadyRecorded(u64),
}

/// The deployment's audit chain. Every method is bounded by the store's timeout.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Seals `entry` as the next record of the chain, unless its `ref` is already in it.
    async fn append(&self, entry: AuditEntry) -> Result<AppendOutcome, StoreError>;

    /// Appends `entries` in order, as [`Self::append`] would one by one. Returns the
    /// outcomes of the prefix that is recorded and, if it stopped early, why.
    async fn append_many(
        &self,
        entries: Vec<AuditEntry>,
    ) -> (Vec<AppendOutcome>, Option<StoreError>) {
        append_one_by_one(self, entries).await
    }

    /// Up to `limit` records with `seq > after_seq`, in `seq` order.
    async fn after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;

    /// Every record, in order (for verification; reads the log in pages).
    async fn all(&self) -> Result<Vec<AuditRecord>, StoreError>;

    /// Where the chain ends, as the store keeps it ([`ChainHead::genesis`] when empty).
    async fn head(&self) -> Result<ChainHead, StoreError>;
}

/// [`AuditLog::append_many`] as plain appends, one after the other.
pub async fn append_one_by_one<L: AuditLog + ?Sized>(
    log: &L,
    entries: Vec<AuditEntry>,
) -> (Vec<AppendOutcome>, Option<StoreError>) {
    let mut outcomes = Vec::with_capacity(entries.len());
    for entry in entries {
        match log.append(entry).await {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => return (outcomes, Some(e)),
        }
    }
    (outcomes, None)
}

/// Reads the whole log and checks it, through the head the store keeps (which also
/// catches removed trailing records). The outer `Err` is a store that could not be read;
/// the inner one the first record that does not fit the chain.
pub async fn verify_log(log: &dyn AuditLog) -> Result<Result<usize, ChainError>, StoreError> {
    // Head first: appends in between only add records after it.
    let head = log.head().await?;
    let records = log.all().await?;
    Ok(audit::verify_through_head(&records, &head))
}
