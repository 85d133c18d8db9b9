//! The one way anything is appended to the audit chain, and the copy of the chain on
//! `warden.audit.v1`.
//!
//! The chain in the store is the record of truth (hash-chained, deduplicated by `ref`).
//! The topic is fed by a tailer that follows the chain by `seq` rather than by the
//! appender, so a record appended just before a crash still reaches the topic: after a
//! restart the tailer starts from the beginning and re-sends (same `seq`, same content —
//! at-least-once with a stable id, CONTRACT §4).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::domain::audit::{AuditEntry, AuditRecord};
use crate::store::audit::{AppendOutcome, AuditLog};
use crate::store::StoreError;

/// Records copied to the topic per round.
const PAGE: usize = 1_000;

#[derive(Clone)]
pub struct AuditSink {
    pub log: Arc<dyn AuditLog>,
    producer: FutureProducer,
    topic: String,
}

impl AuditSink {
    pub fn new(log: Arc<dyn AuditLog>, producer: FutureProducer, topic: String) -> Self {
        AuditSink {
            log,
            producer,
            topic,
        }
    }

    /// Appends `entry`; `Ok(None)` when its `ref` was recorded before. `Err` means the
    /// record is not durable, and callers that must fail closed stop there.
    pub async fn record(&self, entry: AuditEntry) -> Result<Option<AuditRecord>, StoreError> {
        match self.log.append(entry).await? {
            AppendOutcome::Appended(rec) => Ok(Some(rec)),
            AppendOutcome::AlreadyRecorded(_) => Ok(None),
        }
    }

    /// Copies the chain to the audit topic, following it by `seq`, until the task ends.
    pub async fn tail(self) {
        let mut published: u64 = 0;
        loop {
            match self.log.after(published, PAGE).await {
                Ok(records) if !records.is_empty() => {
                    // A page at a time, in flight together; the position moves past the
                    // acknowledged prefix (a record after a failed one is sent again: same
                    // seq, same content).
                    let sends = records.iter().map(|rec| {
                        let value = serde_json::to_string(rec).unwrap_or_default();
                        let key = rec.seq.to_string();
                        let producer = self.producer.clone();
                        let topic = self.topic.clone();
                        async move {
                            producer
                                .send(
                                    FutureRecord::to(&topic).key(&key).payload(&value),
                                    Duration::from_secs(5),
                                )
                                .await
                                .map(|_| ())
                                .map_err(|(e, _)| e)
                        }
                    });
                    let results = futures::future::join_all(sends).await;
                    for (rec, result) in records.iter().zip(results) {
                        match result {
                            Ok(()) => published = rec.seq,
                            Err(e) => {
                                tracing::warn!(seq = rec.seq, error = %e, "audit record not on the topic yet; will retry");
                                break;
                            }
                        }
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "audit tailer: store unavailable"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
