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
use crate::domain::event::AttributionEvent;
use crate::domain::partner::AuditNote;

use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::metrics::METRICS;
use crate::store::decisions::{decision_json, DecisionStore, DecisionWrite};

/// One output of a partner's outbox, ready to publish.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Decision(DecisionWrite),
    /// An override record for `warden.attribution.v1`, keyed by its ancestor.
    Attribution(AttributionEvent),
    Audit(AuditNote),
}

/// What publishing one decision needs next.
enum DecisionStep {
    /// Produce this (key, value) to the enforcement topic.
    Produce(String, String),
    /// Its record is on the topic already (a re-publication after a crash).
    AlreadyProduced,
    /// The data plane or the audit log did not take it: retry later.
    Retry,
}

/// Publishes decisions in the order given (callers keep per-target order).
#[derive(Clone)]
pub struct DecisionPublisher {
    store: std::sync::Arc<dyn DecisionStore>,
    producer: FutureProducer,
    topic: String,
    attribution_topic: String,
    audit: AuditSink,
}

impl DecisionPublisher {
    pub fn new(
        store: std::sync::Arc<dyn DecisionStore>,
        producer: FutureProducer,
        topics: (String, String),
        audit: AuditSink,
    ) -> Self {
        let (topic, attribution_topic) = topics;
        DecisionPublisher {
            store,
            producer,
            topic,
            attribution_topic,
            audit,
        }
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Publishes outbox items in order: decisions to the data plane, the enforcement topic
    /// and the audit log; attributions to their topic; audit notes to the audit log.
    /// Returns how many of `items` (a prefix) are fully published; the rest must be retried.
    pub async fn publish_outbox(&self, items: &[Outgoing]) -> usize {
        // (topic, key, value, index of the item it belongs to)
        let mut records: Vec<(&str, String, String, usize)> = Vec::with_capacity(items.len());
        // (record index, write) of each decision record, to mark produced once acknowledged.
        let mut decisions: Vec<(usize, &DecisionWrite)> = Vec::new();
        let mut prepared = items.len();
        for (i, item) in items.iter().enumerate() {
            let ok = match item {
                Outgoing::Decision(w) => match self.write_decision(w).await {
                    DecisionStep::Produce(key, value) => {
                        decisions.push((records.len(), w));
                        records.push((&self.topic, key, value, i));
                        true
                    }
                    DecisionStep::AlreadyProduced => true,
                    DecisionStep::Retry => false,
                },
                Outgoing::Attribution(a) => match serde_json::to_string(a) {
                    Ok(json) => {
                        records.push((&self.attribution_topic, a.ancestor_id.clone(), json, i));
                        true
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "attribution not serialisable");
                        false
                    }
                },
                Outgoing::Audit(note) => {
                    let entry = AuditEntry {
                        ref_id: note.ref_id.clone(),
                        at: Utc::now(),
                        actor: "warden".into(),
                        action: note.action.clone(),
                        target: note.target.clone(),
                        detail: note.detail.clone(),
                    };
                    self.audit.record(entry).await.is_ok()
                }
            };
            if !ok {
                prepared = i;
                break;
            }
        }
        let acked = self.produce_to(&records).await;
        let produced: Vec<DecisionWrite> = decisions
            .iter()
            .filter(|(r, _)| *r < acked)
            .map(|(_, w)| (*w).clone())
            .collect();
        if let Err(e) = self.store.mark_produced(&produced).await {
            // Only costs a repeated record if these are ever re-published.
            tracing::debug!(error = %e, "decisions not marked produced");
        }
        match records.get(acked) {
            Some((_, _, _, first_failed)) => (*first_failed).min(prepared),
            None => prepared,
        }
    }

    /// The data-plane write and audit of one decision; its enforcement-topic record, unless
    /// a crash before the outbox was acknowledged brought back one the broker already has.
    async fn write_decision(&self, w: &DecisionWrite) -> DecisionStep {
        match self.store.publish(w).await {
            Ok(p) if !p.applied && p.produced => DecisionStep::AlreadyProduced,
            Ok(p) => {
                if p.applied {
                    METRICS
                        .enforcement_transitions
                        .with_label_values(&[&w.previous, &w.level, &w.reason])
                        .inc();
                }
                if p.applied && !self.audit_decision(w, p.seq).await {
                    return DecisionStep::Retry;
                }
                // Keyed by target: one partition per target keeps its decisions in order.
                DecisionStep::Produce(format!("{}:{}", w.scope, w.id), decision_json(w, p.seq))
            }
            Err(e) => {
                tracing::warn!(error = %e, partner_id = %w.partner_id, "decision not written to the data plane; will retry");
                DecisionStep::Retry
            }
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

    /// Produces records to the enforcement topic; returns the acknowledged prefix's length.
    async fn produce(&self, records: &[(String, String)]) -> usize {
        let records: Vec<(&str, String, String, usize)> = records
            .iter()
            .map(|(k, v)| (self.topic.as_str(), k.clone(), v.clone(), 0))
            .collect();
        self.produce_to(&records).await
    }

    /// Produces `(topic, key, value, _)` records; returns the acknowledged prefix's length.
    async fn produce_to(&self, records: &[(&str, String, String, usize)]) -> usize {
        let sends = records.iter().map(|(topic, key, value, _)| {
            let producer = self.producer.clone();
            async move {
                producer
                    .send(
                        FutureRecord::to(topic).key(key).payload(value),
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
