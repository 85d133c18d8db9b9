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
use crate::store::decisions::{decision_json, DecisionStore, DecisionWrite, Published};

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
    /// Produce this (key, value) to the enforcement topic, once this audit record (the
    /// ladder's decisions; people's are audited by the API first) is in the chain.
    Produce(String, String, Option<AuditEntry>),
    /// Its record is on the topic already (a re-publication after a crash).
    AlreadyProduced,
    /// The data plane refused it (the key is held at `killed` or `terminated`, or at a
    /// person's manual level it does not exceed, which the ladder never lowers): not a
    /// change of level, so no record and no audit. Its seq is a gap, which the contract
    /// allows.
    Refused,
    /// The data plane or the audit log did not take it: retry later.
    Retry,
}

/// What the data-plane stage of a publication leaves for the broker stage.
#[derive(Debug, Default)]
pub struct Staged {
    /// How many of the items (a prefix) passed the data-plane stage.
    pub items: usize,
    /// (topic, key, value, index of the item it belongs to).
    records: Vec<(String, String, String, usize)>,
    /// (record index, write) of each decision record, to mark produced once acknowledged.
    decisions: Vec<(usize, DecisionWrite)>,
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

    /// The first stage, in order: each decision's data-plane write (Redis hash + channel,
    /// where gateways read it) and audit record, each audit note's record. It stops at the
    /// first item the store does not take, so a later decision never overtakes an earlier
    /// one of the same target there. What the broker must still get is in the result.
    pub async fn write_data_plane(&self, items: &[Outgoing]) -> Staged {
        let mut staged = Staged {
            items: items.len(),
            records: Vec::with_capacity(items.len()),
            decisions: Vec::new(),
        };
        // Every decision's data-plane write, in order, in one go.
        let writes: Vec<DecisionWrite> = items
            .iter()
            .filter_map(|item| match item {
                Outgoing::Decision(w) => Some(w.clone()),
                _ => None,
            })
            .collect();
        let written = match self.store.publish_many(&writes).await {
            Ok(written) => written,
            Err(e) => {
                if !writes.is_empty() {
                    tracing::warn!(error = %e, "decisions not written to the data plane; will retry");
                }
                Vec::new()
            }
        };
        let mut written = written.iter();
        // The audit records the items need, in item order, appended in one go below.
        let mut audits: Vec<(usize, AuditEntry)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ok = match item {
                Outgoing::Decision(w) => match self.decision_step(w, written.next()) {
                    DecisionStep::Produce(key, value, audit) => {
                        staged.decisions.push((staged.records.len(), w.clone()));
                        staged.records.push((self.topic.clone(), key, value, i));
                        audits.extend(audit.map(|a| (i, a)));
                        true
                    }
                    DecisionStep::AlreadyProduced | DecisionStep::Refused => true,
                    DecisionStep::Retry => false,
                },
                Outgoing::Attribution(a) => match serde_json::to_string(a) {
                    Ok(json) => {
                        let topic = self.attribution_topic.clone();
                        staged.records.push((topic, a.ancestor_id.clone(), json, i));
                        true
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "attribution not serialisable");
                        false
                    }
                },
                Outgoing::Audit(note) => {
                    audits.push((
                        i,
                        AuditEntry {
                            ref_id: note.ref_id.clone(),
                            at: Utc::now(),
                            actor: crate::domain::audit::ACTOR_WARDEN.into(),
                            action: note.action.clone(),
                            target: note.target.clone(),
                            detail: note.detail.clone(),
                        },
                    ));
                    true
                }
            };
            if !ok {
                staged.items = i;
                break;
            }
        }
        let (positions, entries): (Vec<usize>, Vec<AuditEntry>) = audits.into_iter().unzip();
        let (recorded, error) = self.audit.log.append_many(entries).await;
        if let Some(e) = error {
            // The item whose audit record is missing, and every later one, is not through.
            if let Some(&first) = positions.get(recorded.len()) {
                tracing::warn!(error = %e, "outbox item not audited yet; will retry");
                staged.items = staged.items.min(first);
            }
        }
        let through = staged.items;
        staged.records.retain(|(_, _, _, i)| *i < through);
        let kept = staged.records.len();
        staged.decisions.retain(|(r, _)| *r < kept);
        staged
    }

    /// The second stage: produces the staged records and marks the decisions among them
    /// produced. Returns, for each of the first `staged.items` items, whether it is now
    /// fully published (an item with no record is).
    pub async fn produce_staged(&self, staged: Staged) -> Vec<bool> {
        let records: Vec<(&str, String, String, usize)> = staged
            .records
            .iter()
            .map(|(t, k, v, i)| (t.as_str(), k.clone(), v.clone(), *i))
            .collect();
        let results = self.produce_each(&records).await;
        let mut done = vec![true; staged.items];
        for (ok, (_, _, _, i)) in results.iter().zip(&records) {
            if !ok {
                if let Some(d) = done.get_mut(*i) {
                    *d = false;
                }
            }
        }
        let produced: Vec<DecisionWrite> = staged
            .decisions
            .into_iter()
            .filter(|(r, _)| results.get(*r).copied().unwrap_or(false))
            .map(|(_, w)| w)
            .collect();
        if let Err(e) = self.store.mark_produced(&produced).await {
            // Only costs a repeated record if these are ever re-published.
            tracing::debug!(error = %e, "decisions not marked produced");
        }
        done
    }

    /// The data-plane write and audit of one decision; its enforcement-topic record, unless
    /// a crash before the outbox was acknowledged brought back one the broker already has.
    fn decision_step(&self, w: &DecisionWrite, written: Option<&Published>) -> DecisionStep {
        match written {
            Some(p) if !p.applied && p.produced => DecisionStep::AlreadyProduced,
            // Neither applied now nor by an earlier publication of the same outbox id.
            Some(p) if !p.applied && !p.applied_before => DecisionStep::Refused,
            Some(p) => {
                count_transition(w, p);
                // A re-publication audits too: if the first one failed between the data
                // plane and the audit log, this is the only chance (a recorded ref is skipped).
                let audit = ((p.applied || p.applied_before) && !w.by_person)
                    .then(|| decision_audit(w, p.seq));
                // Keyed by target: one partition per target keeps its decisions in order.
                DecisionStep::Produce(
                    format!("{}:{}", w.scope, w.id),
                    decision_json(w, p.seq),
                    audit,
                )
            }
            None => DecisionStep::Retry,
        }
    }

    pub fn audit(&self) -> &AuditSink {
        &self.audit
    }

    pub fn store(&self) -> &std::sync::Arc<dyn DecisionStore> {
        &self.store
    }

    /// Produces the enforcement-topic record of a decision the data plane holds with
    /// `seq`, and marks it produced once the broker acknowledges it (so a later pass that
    /// would produce it again can ask [`DecisionStore::is_produced`] first). Returns
    /// whether it was acknowledged.
    pub async fn produce_decision(&self, write: &DecisionWrite, seq: u64) -> bool {
        let record = (
            format!("{}:{}", write.scope, write.id),
            decision_json(write, seq),
        );
        let acknowledged = self.produce(std::slice::from_ref(&record)).await == 1;
        if acknowledged {
            if let Err(e) = self.store.mark_produced(std::slice::from_ref(write)).await {
                // Only costs a repeated record (same id, same content) later.
                tracing::debug!(error = %e, "decision not marked produced");
            }
        }
        acknowledged
    }

    /// Produces records to the enforcement topic; returns the acknowledged prefix's length.
    async fn produce(&self, records: &[(String, String)]) -> usize {
        let records: Vec<(&str, String, String, usize)> = records
            .iter()
            .map(|(k, v)| (self.topic.as_str(), k.clone(), v.clone(), 0))
            .collect();
        let results = self.produce_each(&records).await;
        results.iter().position(|ok| !ok).unwrap_or(results.len())
    }

    /// Produces `(topic, key, value, _)` records; returns whether each was acknowledged.
    async fn produce_each(&self, records: &[(&str, String, String, usize)]) -> Vec<bool> {
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
        join_all(sends).await.iter().map(Result::is_ok).collect()
    }
}

/// `warden_enforcement_transitions_total` counts a decision once: when the data plane
/// applied it.
pub fn count_transition(write: &DecisionWrite, published: &Published) {
    if published.applied {
        METRICS
            .enforcement_transitions
            .with_label_values(&[&write.previous, &write.level, &write.reason])
            .inc();
    }
}

/// The audit record of one of the ladder's decisions: its ref is the decision id, so a
/// re-publication is recorded once.
fn decision_audit(w: &DecisionWrite, seq: u64) -> AuditEntry {
    let decision_id = format!("{}:{}:{seq}", w.scope, w.id);
    AuditEntry {
        ref_id: decision_id.clone(),
        at: Utc::now(),
        actor: crate::domain::audit::ACTOR_WARDEN.into(),
        action: "enforcement.decision".into(),
        target: format!("{}:{}", w.scope, w.id),
        detail: json!({
            "decision_id": decision_id, "partner_id": w.partner_id, "from": w.previous,
            "to": w.level, "reason": w.reason, "rate_limit_rps": w.rate_limit_rps, "since": w.since,
        }),
    }
}
