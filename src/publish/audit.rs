//! The one way anything is appended to the audit chain: into the store (the record of
//! truth, hash-chained, deduplicated by `ref`), then a copy to `warden.audit.v1`.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::domain::audit::{AuditEntry, AuditRecord};
use crate::store::audit::{AppendOutcome, AuditLog};
use crate::store::StoreError;

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
            AppendOutcome::Appended(rec) => {
                // The chain in the store is the truth; the topic is a copy, so a failed
                // send is logged, not fatal.
                let value = serde_json::to_string(&rec).unwrap_or_default();
                let key = rec.seq.to_string();
                let send = self.producer.send(
                    FutureRecord::to(&self.topic).key(&key).payload(&value),
                    Duration::from_secs(5),
                );
                if let Err((e, _)) = send.await {
                    tracing::warn!(seq = rec.seq, error = %e, "audit record not published to the audit topic");
                }
                Ok(Some(rec))
            }
            AppendOutcome::AlreadyRecorded(_) => Ok(None),
        }
    }
}
