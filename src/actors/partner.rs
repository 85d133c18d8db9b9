//! The partner actor: owns one [`PartnerState`] and applies its events in order, with the
//! partner-scoped control facts applied before the events that follow them.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use actix::{Actor, ActorContext, Context, Handler};
use parking_lot::{Mutex, RwLock};
use prometheus::local::LocalHistogram;

use super::messages::{
    AckOutbox, ApplyBatch, DedupDurable, GetState, GetSummary, RejectedEvent, Snapshot, Sourced,
    Stop, TakeSnapshot, Tick, TickChange,
};
use crate::domain::control::ControlTable;
use crate::domain::enforcement::{EnforcementPolicy, Level, DUE_NOW};
use crate::domain::event::{DeadLetterReason, PartnerEvent, TopicKind};
use crate::domain::money::{Program, RecordRef};
use crate::domain::partner::{Applied, ApplyContext, ApplyRules, PartnerState};
use crate::metrics::{Outcome, METRICS};

/// What every partner actor shares: the global control table, enforcement policy and
/// partner program.
#[derive(Clone)]
pub struct Shared {
    pub rules: ApplyRules,
    pub mailbox_capacity: usize,
    pub control: Arc<RwLock<ControlTable>>,
    pub policy: Arc<EnforcementPolicy>,
    pub program: Arc<Program>,
    pub outbox_waiting: Arc<OutboxWaiting>,
}

/// Events counted per (topic, outcome) within one batch: a batch holds a few topics at
/// most, so a short list beats a map.
#[derive(Default)]
struct OutcomeCounts(Vec<(TopicKind, Outcome, u64)>);

impl OutcomeCounts {
    fn add(&mut self, topic: TopicKind, outcome: Outcome) {
        match self
            .0
            .iter_mut()
            .find(|(t, o, _)| *t == topic && *o == outcome)
        {
            Some((_, _, n)) => *n += 1,
            None => self.0.push((topic, outcome, 1)),
        }
    }

    /// Adds the counts to `warden_events_total`.
    fn publish(self) {
        for (topic, outcome, n) in self.0 {
            METRICS.count_events(topic, outcome, n);
        }
    }
}

/// A thread's buffers for the apply times of a batch, kept from one batch to the next:
/// a batch is one or two events for most partners, and a fresh `LocalHistogram`
/// allocates its buckets (as the list of times would) on every batch.
struct ApplyTimes {
    /// Flushed into `warden_event_apply_seconds` at the end of each batch.
    seconds: LocalHistogram,
    /// Recorded into the apply-latency window at the end of each batch.
    nanos: Vec<u64>,
}

thread_local! {
    static APPLY_TIMES: RefCell<ApplyTimes> = RefCell::new(ApplyTimes {
        seconds: METRICS.event_apply_seconds.local(),
        nanos: Vec::new(),
    });
}

/// Partners whose outbox grew since the consumer thread last looked. Their partitions
/// flush at once instead of at the next interval: a decision is published only once the
/// snapshot holding it is durable, so this is what bounds a decision's latency.
#[derive(Debug, Default)]
pub struct OutboxWaiting {
    any: AtomicBool,
    partners: Mutex<Vec<String>>,
}

impl OutboxWaiting {
    pub fn note(&self, partner_id: &str) {
        self.partners.lock().push(partner_id.to_owned());
        self.any.store(true, Ordering::Release);
    }

    /// Whether a partner was noted since the last [`Self::take`].
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    pub fn take(&self) -> Vec<String> {
        if !self.any.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.partners.lock())
    }
}

/// When one partner is next due a tick ([`PartnerState::tick_due_ms`]), in epoch millis of
/// event time: its actor writes it after every message that changes its state, and the
/// consumer thread reads it each round to send ticks only to partners with something due.
///
/// It also says whether the partner must stay live with no event to come: its level is one
/// only time brings back ([`PartnerState::calms_by_time`]; CONTRACT §3: a silent partner
/// still calms down), or it is a partner the control topic knows with invoice lines
/// waiting for an FX rate, which a control fact brings, not an event (CONTRACT §2). Such
/// a partner is never passivated, and a new owner starts it at once.
#[derive(Debug)]
pub struct TickDue {
    due: AtomicI64,
    keep_live: AtomicBool,
}

impl TickDue {
    const NOW: i64 = DUE_NOW;
    const NEVER: i64 = i64::MAX;

    /// Due at the next round: a partner just started is ticked once, as before it knew.
    pub fn new() -> Self {
        TickDue {
            due: AtomicI64::new(Self::NOW),
            keep_live: AtomicBool::new(false),
        }
    }

    fn set(&self, due_ms: Option<i64>) {
        self.due
            .store(due_ms.unwrap_or(Self::NEVER), Ordering::Relaxed);
    }

    fn set_now(&self) {
        self.due.store(Self::NOW, Ordering::Relaxed);
    }

    /// Whether a round at the partition's `watermark` must tick this partner. (A round with
    /// no watermark only catches up control facts: see the pipeline's `tick`.)
    pub fn is_due(&self, watermark: Option<chrono::DateTime<chrono::Utc>>) -> bool {
        let due = self.due.load(Ordering::Relaxed);
        due == Self::NOW || watermark.is_some_and(|w| w.timestamp_millis() >= due)
    }

    /// The partner must stay live with no event to come.
    pub fn keep_live(&self) -> bool {
        self.keep_live.load(Ordering::Relaxed)
    }
}

impl Default for TickDue {
    fn default() -> Self {
        Self::new()
    }
}

impl Shared {
    /// The default rules and program, an empty control table, mailboxes of 8 (tests).
    #[cfg(test)]
    pub(crate) fn for_tests() -> Shared {
        Shared {
            rules: ApplyRules::default(),
            mailbox_capacity: 8,
            control: Arc::new(RwLock::new(ControlTable::default())),
            policy: Arc::new(EnforcementPolicy::default()),
            program: Arc::new(Program::builtin("default").unwrap().unwrap()),
            outbox_waiting: Arc::new(OutboxWaiting::default()),
        }
    }

    /// Applies a batch of one partner's events in offset order, after the control facts
    /// that came before them, and counts each in the metrics. Returns the events the
    /// rules rejected, for the dead-letter topic.
    ///
    /// The per-event metrics are gathered in this thread's buffers and published once per
    /// batch: the histogram's sum is a compare-and-swap loop and the counters are atomics,
    /// all shared by every arbiter.
    pub fn apply_batch(&self, state: &mut PartnerState, batch: Vec<Sourced>) -> Vec<RejectedEvent> {
        APPLY_TIMES.with_borrow_mut(|ApplyTimes { seconds, nanos }| {
            nanos.clear();
            let mut rejected = Vec::new();
            let mut counted = OutcomeCounts::default();
            self.with_context(state, |state, table, ctx| {
                state.catch_up(table, ctx);
                for sourced in batch {
                    // The TSC where it is reliable (quanta): two reads an event, a third
                    // of the cost of the system clock's.
                    let started = quanta::Instant::now();
                    let outcome = state.apply(&sourced.event, ctx);
                    let took = started.elapsed();
                    seconds.observe(took.as_secs_f64());
                    nanos.push(took.as_nanos() as u64);
                    if let PartnerEvent::Invoice(e) = &sourced.event {
                        let at = RecordRef {
                            partition: sourced.partition,
                            offset: sourced.offset,
                        };
                        state.note_invoice_source(e, at);
                    }
                    match outcome {
                        Ok(Applied::Counted) => counted.add(sourced.topic, Outcome::Applied),
                        Ok(Applied::Duplicate) => counted.add(sourced.topic, Outcome::Duplicate),
                        Err(rejection) => {
                            if rejection.reason == DeadLetterReason::OutsideDedupWindow {
                                tracing::warn!(
                                    partner_id = %state.partner_id,
                                    offset = sourced.offset,
                                    "event older than the dedup window: dead-lettered"
                                );
                            }
                            METRICS.dead_letter(sourced.topic, rejection.reason);
                            rejected.push(RejectedEvent {
                                source: sourced,
                                rejection,
                            });
                        }
                    }
                }
            });
            seconds.flush();
            counted.publish();
            crate::latency::APPLY_LATENCY.record_all(nanos);
            rejected
        })
    }

    /// Runs `f` on `state` with the context of now, under one read of the control table:
    /// the facts a batch is applied with cannot move under it.
    pub fn with_context<R>(
        &self,
        state: &mut PartnerState,
        f: impl FnOnce(&mut PartnerState, &ControlTable, &ApplyContext<'_>) -> R,
    ) -> R {
        let table = self.control.read();
        let ctx = ApplyContext {
            rules: &self.rules,
            tier: table.tier(&state.partner_id),
            policy: &self.policy,
            money: table.money(),
            program: &self.program,
            wall_now: chrono::Utc::now(),
        };
        f(state, &table, &ctx)
    }
}

pub struct PartnerActor {
    state: PartnerState,
    shared: Arc<Shared>,
    rejections: Vec<RejectedEvent>,
    /// The level counted in `warden_partners{level}` for this partner.
    counted_level: Level,
    /// The parked invoices counted in `warden_invoices_parked` for this partner.
    counted_parked: i64,
    /// The events and facts past the tracking bounds counted in `warden_untracked_total`
    /// (integration events, tenant facts).
    counted_untracked: (u64, u64),
    /// Published outbox entries were dropped since the last snapshot: the next tick asks
    /// for one, so the durable copy does not keep them (a publication does not).
    trimmed: bool,
    /// Shared with the pipeline's slot for this partner.
    due: Arc<TickDue>,
}

impl PartnerActor {
    pub fn new(state: PartnerState, shared: &Arc<Shared>, due: Arc<TickDue>) -> Self {
        PartnerActor {
            state,
            shared: Arc::clone(shared),
            rejections: Vec::new(),
            counted_level: Level::Ok,
            counted_parked: 0,
            counted_untracked: (0, 0),
            trimmed: false,
            due,
        }
    }

    /// Tells the pipeline when this partner is next due a tick: at once while a trimmed
    /// outbox waits for the tick that asks for its snapshot.
    fn note_due(&self) {
        // Waiting lines keep a partner live only if the control topic knows it: invoices
        // in made-up currencies from made-up partners must not pin actors in memory.
        let keep_live = self.state.calms_by_time()
            || (!self.state.ledger().parked().is_empty()
                && self
                    .shared
                    .control
                    .read()
                    .partner(&self.state.partner_id)
                    .is_some());
        self.due.keep_live.store(keep_live, Ordering::Relaxed);
        if self.trimmed {
            self.due.set_now();
        } else {
            self.due.set(self.state.tick_due_ms(&self.shared.policy));
        }
    }

    /// Keeps the money metrics in step: gross flows, and the parked gauge.
    fn count_money(&mut self) {
        use rust_decimal::prelude::ToPrimitive;
        let flow = self.state.take_flow();
        // Metrics are reporting only: the f64 never feeds back into money.
        let f = |d: rust_decimal::Decimal| d.to_f64().unwrap_or(0.0);
        if !flow.commission_accrued_usd.is_zero() {
            METRICS
                .commission_usd
                .inc_by(f(flow.commission_accrued_usd));
        }
        if !flow.commission_reversed_usd.is_zero() {
            METRICS
                .commission_reversed_usd
                .inc_by(f(flow.commission_reversed_usd));
        }
        if !flow.coop_accrued_usd.is_zero() {
            METRICS.coop_accrued_usd.inc_by(f(flow.coop_accrued_usd));
        }
        let parked = self.state.ledger().parked().len() as i64;
        METRICS.invoices_parked.add(parked - self.counted_parked);
        self.counted_parked = parked;
        self.count_untracked();
    }

    /// Parked lines their rate rejected join the rejections the next snapshot
    /// dead-letters, under their own records' ids (CONTRACT §5). One parked before its
    /// record was kept has no id to go under: it is only audited (by the rules).
    fn collect_parked_rejections(&mut self) {
        for (parked, rejection) in self.state.take_rejected_parked() {
            let Some(at) = parked.source else {
                tracing::warn!(
                    partner_id = %self.state.partner_id,
                    invoice_id = %parked.event.invoice_id,
                    reason = rejection.reason.as_str(),
                    "parked invoice rejected at its rate's arrival; its record is unknown, so it is audited only"
                );
                continue;
            };
            METRICS.dead_letter(TopicKind::Invoices, rejection.reason);
            self.rejections.push(RejectedEvent {
                source: Sourced {
                    topic: TopicKind::Invoices,
                    partition: at.partition,
                    offset: at.offset,
                    event: PartnerEvent::Invoice(Box::new(parked.event)),
                },
                rejection,
            });
        }
    }

    /// Keeps `warden_untracked_total{kind}` in step: what the tracking bounds left out is
    /// never silent. A state loaded from the store brings its past count, counted before.
    fn count_untracked(&mut self) {
        let now = self.untracked();
        let (events, facts) = self.counted_untracked;
        if now.0 > events {
            METRICS
                .untracked
                .with_label_values(&["integration_event"])
                .inc_by(now.0 - events);
        }
        if now.1 > facts {
            METRICS
                .untracked
                .with_label_values(&["tenant_fact"])
                .inc_by(now.1 - facts);
        }
        self.counted_untracked = now;
    }

    /// What the tracking bounds left out so far: (integration events, tenant facts).
    fn untracked(&self) -> (u64, u64) {
        let c = self.state.capacity();
        (c.untracked_integration_events, c.untracked_tenant_facts)
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
        self.counted_untracked = self.untracked();
        self.count_money();
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        METRICS.actors_active.dec();
        METRICS
            .partners
            .with_label_values(&[self.counted_level.as_str()])
            .dec();
        METRICS.invoices_parked.sub(self.counted_parked);
    }
}

impl Handler<ApplyBatch> for PartnerActor {
    type Result = ();

    fn handle(&mut self, batch: ApplyBatch, _ctx: &mut Context<Self>) {
        METRICS.mailbox_events.sub(batch.0.len() as i64);
        let outbox_before = self.state.outbox().len();
        let rejected = self.shared.apply_batch(&mut self.state, batch.0);
        self.rejections.extend(rejected);
        self.collect_parked_rejections();
        if self.state.outbox().len() > outbox_before {
            self.shared.outbox_waiting.note(&self.state.partner_id);
        }
        self.count_level();
        self.count_money();
        self.note_due();
    }
}

impl Handler<TakeSnapshot> for PartnerActor {
    type Result = Result<Snapshot, String>;

    fn handle(&mut self, _msg: TakeSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let bytes = crate::store::snapshot::encode(&self.state).map_err(|e| e.to_string())?;
        self.trimmed = false;
        self.note_due();
        let outbox = self.state.outbox().to_vec();
        Ok(Snapshot {
            partner_id: self.state.partner_id.clone(),
            bytes,
            rejections: std::mem::take(&mut self.rejections),
            awake: !outbox.is_empty() || self.due.keep_live(),
            wake_at: self.state.wake_at_ms(&self.shared.policy),
            outbox,
            dedup: self.state.dedup_delta(),
        })
    }
}

impl Handler<GetSummary> for PartnerActor {
    type Result = actix::MessageResult<GetSummary>;

    fn handle(&mut self, _msg: GetSummary, _ctx: &mut Context<Self>) -> Self::Result {
        let now = chrono::Utc::now();
        // The quota shown is the one enforcement judges by: the tier at the partner's
        // event time.
        let at = self.state.event_clock().unwrap_or(now);
        let tier = self
            .shared
            .control
            .read()
            .tier(&self.state.partner_id)
            .at(at)
            .to_owned();
        actix::MessageResult(self.state.summary_in(
            &tier,
            &self.shared.policy,
            &self.shared.program,
            now,
        ))
    }
}

impl Handler<Tick> for PartnerActor {
    type Result = ();

    fn handle(&mut self, tick: Tick, _ctx: &mut Context<Self>) {
        let outbox_before = self.state.outbox().len();
        let (caught_up, decided) =
            self.shared
                .with_context(&mut self.state, |state, table, ctx| {
                    let caught_up = state.catch_up(table, ctx);
                    let decided = match tick.watermark {
                        Some(watermark) => {
                            state.tick(watermark, tick.wall_now, ctx.tier.at(watermark), ctx.policy)
                        }
                        // Pilots expire on the wall clock, event time or not.
                        None => state.tick_pilots(tick.wall_now, ctx.policy),
                    };
                    (caught_up, decided)
                });
        self.count_level();
        self.count_money();
        self.collect_parked_rejections();
        let grew = self.state.outbox().len() > outbox_before;
        if grew {
            self.shared.outbox_waiting.note(&self.state.partner_id);
        }
        self.note_due();
        if decided || caught_up || self.trimmed || self.state.outbox().len() != outbox_before {
            tick.round.changed(TickChange {
                partition: tick.partition,
                partner_id: self.state.partner_id.clone(),
                decided: grew,
            });
        }
    }
}

impl Handler<DedupDurable> for PartnerActor {
    type Result = ();

    fn handle(&mut self, msg: DedupDurable, _ctx: &mut Context<Self>) {
        self.state.dedup_acknowledged(msg.0);
    }
}

impl Handler<GetState> for PartnerActor {
    type Result = actix::MessageResult<GetState>;

    fn handle(&mut self, _msg: GetState, _ctx: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.state.clone())
    }
}

impl Handler<AckOutbox> for PartnerActor {
    type Result = ();

    fn handle(&mut self, ack: AckOutbox, _ctx: &mut Context<Self>) {
        let before = self.state.outbox().len();
        self.state.ack_outbox(ack.0);
        self.trimmed |= self.state.outbox().len() != before;
        self.note_due();
    }
}

impl Handler<Stop> for PartnerActor {
    type Result = ();

    fn handle(&mut self, _msg: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{PartnerEvent, UsageEvent};
    use chrono::DateTime;

    fn usage(id: &str, ts_secs: i64) -> Sourced {
        let event = PartnerEvent::Usage(UsageEvent {
            event_id: id.into(),
            ts: DateTime::from_timestamp(ts_secs, 0).unwrap(),
            partner_id: "p-1".into(),
            integration_id: "p-1-i0".into(),
            tenant_id: None,
            requests: 10,
            errors: 0,
            auth_failures: 0,
            bytes: 100,
        });
        Sourced {
            topic: TopicKind::Usage,
            partition: 0,
            offset: 0,
            event,
        }
    }

    fn shared() -> Shared {
        Shared::for_tests()
    }

    #[test]
    fn a_batch_counts_new_events_skips_repeats_and_returns_what_the_rules_reject() {
        let mut state = PartnerState::new("p-1");
        let day = 86_400;
        let batch = vec![
            usage("u-1", 1_780_000_000),
            usage("u-1", 1_780_000_000),
            usage("u-2", 1_780_000_001),
            usage("u-old", 1_780_000_000 - 2 * day),
        ];
        let rejected = shared().apply_batch(&mut state, batch);
        assert_eq!(state.usage.events, 2);
        assert_eq!(state.usage.requests, 20);
        assert_eq!(state.duplicates_skipped, 1);
        let reasons: Vec<_> = rejected.iter().map(|r| r.rejection.reason).collect();
        assert_eq!(reasons, [DeadLetterReason::OutsideDedupWindow]);
        assert!(
            matches!(&rejected[0].source.event, PartnerEvent::Usage(u) if u.event_id == "u-old")
        );
    }

    /// LESSONS (silent skipping): usage from integrations past the tracked bound is
    /// counted for the partner and in `warden_untracked_total`, once per event.
    #[test]
    fn events_past_the_integration_bound_are_counted_in_a_metric_once() {
        use crate::domain::enforcement::MAX_TRACKED_INTEGRATIONS;
        let untracked = || {
            METRICS
                .untracked
                .with_label_values(&["integration_event"])
                .get()
        };
        let shared = Arc::new(shared());
        let mut actor =
            PartnerActor::new(PartnerState::new("p-1"), &shared, Arc::new(TickDue::new()));
        let batch: Vec<Sourced> = (0..MAX_TRACKED_INTEGRATIONS + 3)
            .map(|n| {
                let mut s = usage(&format!("u-{n}"), 1_780_000_000);
                if let PartnerEvent::Usage(u) = &mut s.event {
                    u.integration_id = format!("p-1-i{n}");
                }
                s
            })
            .collect();
        let before = untracked();
        assert!(shared.apply_batch(&mut actor.state, batch).is_empty());
        actor.count_untracked();
        actor.count_untracked();
        assert_eq!(untracked() - before, 3);
        assert_eq!(actor.state.capacity().untracked_integration_events, 3);
    }

    #[test]
    fn outcomes_are_summed_per_topic_and_outcome() {
        let mut counts = OutcomeCounts::default();
        for (topic, outcome) in [
            (TopicKind::Usage, Outcome::Applied),
            (TopicKind::Invoices, Outcome::Applied),
            (TopicKind::Usage, Outcome::Applied),
            (TopicKind::Usage, Outcome::Duplicate),
        ] {
            counts.add(topic, outcome);
        }
        assert_eq!(
            counts.0,
            [
                (TopicKind::Usage, Outcome::Applied, 2),
                (TopicKind::Invoices, Outcome::Applied, 1),
                (TopicKind::Usage, Outcome::Duplicate, 1),
            ]
        );
    }
}
