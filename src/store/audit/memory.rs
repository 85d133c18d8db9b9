//! [`MemoryAuditLog`]: the audit log of the embedded mode and of tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{AppendOutcome, AuditLog};
use crate::domain::audit::{AuditEntry, AuditRecord, ChainHead};
use crate::store::StoreError;

/// The audit log of the embedded mode and of tests: the same semantics as on Redis, in a
/// mutex (held for one append, never across an `.await`). Not durable.
#[derive(Debug, Default)]
pub struct MemoryAuditLog {
    chain: Mutex<MemoryChain>,
    /// Test hook: while set, every call fails with `Unavailable` and changes nothing.
    unavailable: AtomicBool,
}

#[derive(Debug, Default)]
struct MemoryChain {
    /// `records[i].seq == i + 1`.
    records: Vec<AuditRecord>,
    refs: HashMap<String, u64>,
}

impl MemoryAuditLog {
    pub fn new() -> MemoryAuditLog {
        MemoryAuditLog::default()
    }

    /// Simulates an outage (`true`) or its end (`false`).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    fn check_available(&self) -> Result<(), StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "memory audit log: simulated outage".to_owned(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn append(&self, entry: AuditEntry) -> Result<AppendOutcome, StoreError> {
        self.check_available()?;
        let mut chain = self.chain.lock();
        if let Some(&seq) = chain.refs.get(&entry.ref_id) {
            return Ok(AppendOutcome::AlreadyRecorded(seq));
        }
        let head = chain
            .records
            .last()
            .map_or_else(ChainHead::genesis, AuditRecord::head);
        let record = head.seal_next(entry);
        chain.refs.insert(record.ref_id.clone(), record.seq);
        chain.records.push(record.clone());
        Ok(AppendOutcome::Appended(record))
    }

    async fn after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.check_available()?;
        let chain = self.chain.lock();
        let start = chain.records.partition_point(|r| r.seq <= after_seq);
        Ok(chain.records[start..].iter().take(limit).cloned().collect())
    }

    async fn all(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.check_available()?;
        Ok(self.chain.lock().records.clone())
    }

    async fn head(&self) -> Result<ChainHead, StoreError> {
        self.check_available()?;
        Ok(self
            .chain
            .lock()
            .records
            .last()
            .map_or_else(ChainHead::genesis, AuditRecord::head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::verify_log;
    use chrono::{TimeZone, Utc};

    fn s(text: &str) -> String {
        text.to_owned()
    }

    fn entry(ref_id: &str) -> AuditEntry {
        AuditEntry {
            ref_id: s(ref_id),
            at: Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap(),
            actor: s("ops"),
            action: s("partner.enforcement.set"),
            target: s("partner:p-1"),
            detail: serde_json::json!({"level": "warn"}),
        }
    }

    #[tokio::test]
    async fn an_outage_fails_every_call_and_appends_nothing() {
        let log = MemoryAuditLog::new();
        log.append(entry("a")).await.expect("available");
        log.set_unavailable(true);
        let failed = log.append(entry("b")).await.expect_err("unavailable");
        assert!(failed.is_retryable());
        assert!(log.after(0, 10).await.is_err());
        assert!(log.all().await.is_err());
        assert!(log.head().await.is_err());
        assert!(verify_log(&log).await.is_err());

        log.set_unavailable(false);
        assert_eq!(log.all().await.expect("available").len(), 1);
        match log.append(entry("b")).await.expect("available") {
            AppendOutcome::Appended(record) => assert_eq!(record.seq, 2),
            other => panic!("b was not recorded during the outage: {other:?}"),
        }
        assert_eq!(verify_log(&log).await, Ok(Ok(2)));
    }
}
