//! The partner actor: owns one [`PartnerState`] and applies its events in order.

use std::time::Instant;

use actix::{Actor, ActorContext, Context, Handler};

use super::messages::{ApplyBatch, GetSummary, RejectedEvent, Snapshot, Stop, TakeSnapshot};
use crate::domain::event::DeadLetterReason;
use crate::domain::partner::{Applied, ApplyRules, PartnerState};
use crate::metrics::METRICS;

pub struct PartnerActor {
    state: PartnerState,
    rules: ApplyRules,
    mailbox_capacity: usize,
    rejections: Vec<RejectedEvent>,
}

impl PartnerActor {
    pub fn new(state: PartnerState, rules: ApplyRules, mailbox_capacity: usize) -> Self {
        PartnerActor {
            state,
            rules,
            mailbox_capacity,
            rejections: Vec::new(),
        }
    }
}

impl Actor for PartnerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        METRICS.actors_active.inc();
        METRICS.actor_revivals.inc();
        // Every partner is at `ok` until enforcement moves it.
        METRICS.partners.with_label_values(&["ok"]).inc();
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        METRICS.actors_active.dec();
        METRICS.partners.with_label_values(&["ok"]).dec();
    }
}

impl Handler<ApplyBatch> for PartnerActor {
    type Result = ();

    fn handle(&mut self, batch: ApplyBatch, _ctx: &mut Context<Self>) {
        METRICS.mailbox_events.sub(batch.0.len() as i64);
        let mut nanos = Vec::with_capacity(batch.0.len());
        for sourced in batch.0 {
            let started = Instant::now();
            let outcome = self.state.apply(&sourced.event, &self.rules);
            let took = started.elapsed();
            METRICS.event_apply_seconds.observe(took.as_secs_f64());
            nanos.push(took.as_nanos() as u64);
            let topic = sourced.topic.as_str();
            match outcome {
                Ok(Applied::Counted) => METRICS.events.with_label_values(&[topic, "applied"]).inc(),
                Ok(Applied::Duplicate) => METRICS
                    .events
                    .with_label_values(&[topic, "duplicate"])
                    .inc(),
                Err(rejection) => {
                    if rejection.reason == DeadLetterReason::OutsideDedupWindow {
                        tracing::warn!(
                            partner_id = %self.state.partner_id,
                            offset = sourced.offset,
                            "event older than the dedup window: dead-lettered"
                        );
                    }
                    METRICS.dead_letter(sourced.topic, rejection.reason);
                    self.rejections.push(RejectedEvent {
                        source: sourced,
                        rejection,
                    });
                }
            }
        }
        crate::latency::APPLY_LATENCY.record_all(&nanos);
    }
}

impl Handler<TakeSnapshot> for PartnerActor {
    type Result = Result<Snapshot, String>;

    fn handle(&mut self, _msg: TakeSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let bytes = serde_json::to_vec(&self.state).map_err(|e| e.to_string())?;
        Ok(Snapshot {
            partner_id: self.state.partner_id.clone(),
            bytes,
            rejections: std::mem::take(&mut self.rejections),
        })
    }
}

impl Handler<GetSummary> for PartnerActor {
    type Result = actix::MessageResult<GetSummary>;

    fn handle(&mut self, _msg: GetSummary, _ctx: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.state.summary())
    }
}

impl Handler<Stop> for PartnerActor {
    type Result = ();

    fn handle(&mut self, _msg: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
