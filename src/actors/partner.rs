//! The partner actor: owns one [`PartnerState`] and applies its events in order, with the
//! partner-scoped control facts applied before the events that follow them.

use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, ActorContext, Context, Handler};
use parking_lot::RwLock;

use super::messages::{
    AckOutbox, ApplyBatch, GetSummary, RejectedEvent, Snapshot, Stop, TakeSnapshot, Tick,
};
use crate::domain::control::ControlTable;
use crate::domain::enforcement::{EnforcementPolicy, Level};
use crate::domain::event::DeadLetterReason;
use crate::domain::partner::{Applied, ApplyContext, ApplyRules, PartnerState};
use crate::metrics::METRICS;

/// What every partner actor shares: the global control table and enforcement policy.
#[derive(Clone)]
pub struct Shared {
    pub rules: ApplyRules,
    pub mailbox_capacity: usize,
    pub control: Arc<RwLock<ControlTable>>,
    pub policy: Arc<EnforcementPolicy>,
}

pub struct PartnerActor {
    state: PartnerState,
    shared: Shared,
    rejections: Vec<RejectedEvent>,
    /// The level counted in `warden_partners{level}` for this partner.
    counted_level: Level,
}

impl PartnerActor {
    pub fn new(state: PartnerState, shared: &Shared) -> Self {
        PartnerActor {
            state,
            shared: shared.clone(),
            rejections: Vec::new(),
            counted_level: Level::Ok,
        }
    }

    /// Applies the partner-scoped control facts this partner has not applied yet, so they
    /// govern the events applied after them (CONTRACT §1). Returns the partner's tier.
    fn catch_up_control(&mut self) -> String {
        let table = self.shared.control.read();
        let facts = table.facts_for(&self.state.partner_id, self.state.control_applied);
        if !facts.is_empty() {
            let now = chrono::Utc::now();
            for (offset, fact) in &facts {
                self.state
                    .apply_control(*offset, fact, now, &self.shared.policy);
            }
        }
        table.tier_of(&self.state.partner_id).to_owned()
    }

    /// Keeps `warden_partners{level}` in step with this partner's level.
    fn count_level(&mut self) {
        let level = self.state.level().level;
        if level != self.counted_level {
            METRICS
                .partners
                .with_label_values(&[self.counted_level.as_str()])
                .dec();
            METRICS.partners.with_label_values(&[level.as_str()]).inc();
            self.counted_level = level;
        }
    }
}

impl Actor for PartnerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.shared.mailbox_capacity);
        METRICS.actors_active.inc();
        METRICS.actor_revivals.inc();
        self.counted_level = self.state.level().level;
        METRICS
            .partners
            .with_label_values(&[self.counted_level.as_str()])
            .inc();
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        METRICS.actors_active.dec();
        METRICS
            .partners
            .with_label_values(&[self.counted_level.as_str()])
            .dec();
    }
}

impl Handler<ApplyBatch> for PartnerActor {
    type Result = ();

    fn handle(&mut self, batch: ApplyBatch, _ctx: &mut Context<Self>) {
        METRICS.mailbox_events.sub(batch.0.len() as i64);
        let tier = self.catch_up_control();
        let policy = self.shared.policy.clone();
        let rules = self.shared.rules;
        let ctx = ApplyContext {
            rules: &rules,
            tier: &tier,
            policy: &policy,
        };
        let mut nanos = Vec::with_capacity(batch.0.len());
        for sourced in batch.0 {
            let started = Instant::now();
            let outcome = self.state.apply_with(&sourced.event, &ctx);
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
        self.count_level();
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
            outbox: self.state.outbox().to_vec(),
        })
    }
}

impl Handler<GetSummary> for PartnerActor {
    type Result = actix::MessageResult<GetSummary>;

    fn handle(&mut self, _msg: GetSummary, _ctx: &mut Context<Self>) -> Self::Result {
        let tier = self
            .shared
            .control
            .read()
            .tier_of(&self.state.partner_id)
            .to_owned();
        actix::MessageResult(self.state.summary_in(&tier, &self.shared.policy))
    }
}

impl Handler<Tick> for PartnerActor {
    type Result = bool;

    fn handle(&mut self, tick: Tick, _ctx: &mut Context<Self>) -> bool {
        let control_before = self.state.control_applied;
        let outbox_before = self.state.outbox().len();
        let tier = self.catch_up_control();
        let decided = self
            .state
            .tick(tick.watermark, tick.wall_now, &tier, &self.shared.policy);
        self.count_level();
        decided
            || self.state.control_applied != control_before
            || self.state.outbox().len() != outbox_before
    }
}

impl Handler<AckOutbox> for PartnerActor {
    type Result = ();

    fn handle(&mut self, ack: AckOutbox, _ctx: &mut Context<Self>) {
        self.state.ack_outbox(ack.0);
    }
}

impl Handler<Stop> for PartnerActor {
    type Result = ();

    fn handle(&mut self, _msg: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
