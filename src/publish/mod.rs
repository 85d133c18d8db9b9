//! The way out (CONTRACT §4): decisions made durable in a partner's snapshot (its outbox)
//! are written to the data plane (Redis hash + channel) and to `warden.enforcement.v1`,
//! after the snapshot that holds them is durable.
//!
//! At-least-once with stable ids: a decision keeps its seq across re-publication (the
//! store maps its outbox id to the seq it got), so a crash between publishing and the
//! next snapshot re-sends the same `decision_id` with the same content.

pub mod audit;

use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use self::audit::AuditSink;
use crate::domain::audit::AuditEntry;

use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::metrics::METRICS;
use crate::store::decisions::{decision_json, DecisionStore, DecisionWrite};

/// Publishes decisions in the order given (callers keep per-target order).
#[derive(Clone)]
pub struct DecisionPublisher {
    store: std::sync::Arc<dyn DecisionStore>,
    producer: FutureProducer,
    topic: String,
    audit: AuditSink,
}

impl DecisionPublisher {
    pub fn new(
        store: std::sync::Arc<dyn DecisionStore>,
        producer: FutureProducer,
        topic: String,
        audit: AuditSink,
    ) -> Self {
        DecisionPublisher {
            store,
            producer,
            topic,
            audit,
        }
    }

    pub fn audit(&self) -> &AuditSink {
        &self.audit
    }

    /// The ladder's own decisions are audited here, once per decision id (people's
    /// decisions are audited by the API before they take effect).
    async fn audit_decision(&self, w: &DecisionWrite, seq: u64) -> bool {
        if w.by_person {
            return true;
        }
        let decision_id = format!("{}:{}:{seq}", w.scope, w.id);
        let entry = AuditEntry {
            ref_id: decision_id.clone(),
            at: Utc::now(),
            actor: "warden".into(),
            action: "enforcement.decision".into(),
            target: format!("{}:{}", w.scope, w.id),
            detail: json!({
                "decision_id": decision_id, "partner_id": w.partner_id, "from": w.previous,
                "to": w.level, "reason": w.reason, "rate_limit_rps": w.rate_limit_rps, "since": w.since,
            }),
        };
        match self.audit.record(entry).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, %decision_id, "decision not audited yet; will retry");
                false
            }
        }
    }

    pub fn store(&self) -> &std::sync::Arc<dyn DecisionStore> {
        &self.store
    }

    /// Writes each decision to the data plane, then to the enforcement topic, and waits
    /// for the broker. Returns how many of `writes` (a prefix) are fully published; the
    /// rest must be retried.
    pub async fn publish_all(&self, writes: &[DecisionWrite]) -> usize {
        let mut records = Vec::with_capacity(writes.len());
        for (i, w) in writes.iter().enumerate() {
            match self.store.publish(w).await {
                Ok(p) => {
                    if p.applied {
                        METRICS
                            .enforcement_transitions
                            .with_label_values(&[&w.previous, &w.level, &w.reason])
                            .inc();
                    }
                    if p.applied && !self.audit_decision(w, p.seq).await {
                        return self.produce(&records).await.min(i);
                    }
                    // Keyed by target: one partition per target keeps its decisions in order.
                    records.push((format!("{}:{}", w.scope, w.id), decision_json(w, p.seq)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, partner_id = %w.partner_id, "decision not written to the data plane; will retry");
                    return self.produce(&records).await.min(i);
                }
            }
        }
        self.produce(&records).await
    }

    /// Publishes one decision (API paths); returns whether it is fully published and its seq.
    pub async fn publish_one(&self, write: &DecisionWrite) -> (bool, u64) {
        match self.store.publish(write).await {
            Ok(p) => {
                if p.applied {
                    METRICS
                        .enforcement_transitions
                        .with_label_values(&[&write.previous, &write.level, &write.reason])
                        .inc();
                }
                let record = (
                    format!("{}:{}", write.scope, write.id),
                    decision_json(write, p.seq),
                );
                (
                    self.produce(std::slice::from_ref(&record)).await == 1,
                    p.seq,
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "decision not written to the data plane");
                (false, 0)
            }
        }
    }

    /// Produces the records; returns the length of the acknowledged prefix.
    async fn produce(&self, records: &[(String, String)]) -> usize {
        let sends = records.iter().map(|(key, value)| {
            let producer = self.producer.clone();
            let topic = self.topic.clone();
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(key).payload(value),
                        Duration::from_secs(5),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }
        });
        let results = join_all(sends).await;
        results
            .iter()
            .position(|r| r.is_err())
            .unwrap_or(results.len())
    }
}
