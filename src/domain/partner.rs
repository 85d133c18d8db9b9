//! A partner's live state and the one function that changes it: [`PartnerState::apply`].
//!
//! Pure: no I/O, no clock. The actor (actors/partner.rs) owns one `PartnerState`, feeds it
//! decoded events in offset order and hands snapshots to the store. Every check runs
//! before any field changes, so a rejected event leaves no trace (except, for a parent
//! chain that loops, the audit note of its refusal).

use std::sync::LazyLock;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::control::{ControlTable, TierAt};
use super::dedup::{Admission, DedupDelta, DedupWindow};
use super::enforcement::{
    Capacity, Decision, EnforcementPolicy, EnforcementState, LevelView, QuotaSpec, QuotaView,
    Target, TenantFact,
};
use super::event::{
    AttributionEvent, ControlEvent, DeadLetterReason, InvoiceEvent, InvoiceKind, PartnerEvent,
    Rejection, UsageEvent,
};
use super::money::{
    ControlOutcome, CreditEffects, CreditSignal, InvoiceOutcome, Ledger, LedgerEffects, MoneyFacts,
    MoneyTotals, ParkedInvoice, Program, RecordRef, StatusView, CHAIN_LOOPS,
};

/// Lifetime usage counters (CONTRACT §6 `usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub events: u64,
    pub requests: u64,
    pub errors: u64,
    pub auth_failures: u64,
    pub bytes: u64,
}

impl UsageTotals {
    /// The totals after adding `e`, each stopping at `u64::MAX`. They are only shown
    /// (CONTRACT §6), so a counter at its limit must not refuse the partner's later events:
    /// one valid event of `u64::MAX` bytes would otherwise hide all of its traffic from
    /// enforcement, whose own meters saturate the same way.
    fn plus(&self, e: &UsageEvent) -> UsageTotals {
        UsageTotals {
            events: self.events.saturating_add(1),
            requests: self.requests.saturating_add(e.requests),
            errors: self.errors.saturating_add(e.errors),
            auth_failures: self.auth_failures.saturating_add(e.auth_failures),
            bytes: self.bytes.saturating_add(e.bytes),
        }
    }
}

/// Lifetime counts of billing facts seen, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceCounts {
    pub paid: u64,
    pub refunds: u64,
    pub chargebacks: u64,
    pub attributions: u64,
}

/// The rules `apply` needs from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyRules {
    pub dedup_window: Duration,
    /// How far past the wall clock an event time may move enforcement's clock
    /// (`kafka.max_clock_skew`); `None` sets no bound (replays and tests on fixed times).
    /// The pipeline already holds usage times and the watermark to it; this bounds what
    /// it cannot: an invoice keeps its own `ts`, which dates its money.
    pub max_clock_skew: Option<Duration>,
}

impl Default for ApplyRules {
    fn default() -> Self {
        ApplyRules {
            dedup_window: Duration::hours(24),
            max_clock_skew: None,
        }
    }
}

/// What happened to an event that was not rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Its effect is now part of the state.
    Counted,
    /// Its id was applied before; nothing changed.
    Duplicate,
}

/// A partner's state as readers see it: small, cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartnerSummary {
    pub partner_id: String,
    pub usage: UsageTotals,
    pub invoices: InvoiceCounts,
    pub last_seen: Option<DateTime<Utc>>,
    pub duplicates_skipped: u64,
    /// The partner's own level (`None` before any decision: `ok`).
    pub enforcement: Option<LevelView>,
    /// Every target of this partner above `ok` (integrations, tenants).
    pub levels: Vec<LevelView>,
    pub quota: Option<QuotaView>,
    /// The money figures of CONTRACT §6.
    #[serde(default)]
    pub money: MoneyTotals,
    /// Active / at-risk (informational).
    #[serde(default)]
    pub status: Option<StatusView>,
    /// How close the partner is to its tracking bounds, and what they left out.
    #[serde(default)]
    pub tracking: Option<Capacity>,
}

/// An output in the partner's outbox: durable with the state that made it, published
/// after, removed once it is published (CONTRACT §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Per-partner number: `<partner_id>:<n>` is the entry's stable outbox id.
    pub n: u64,
    pub item: Outbound,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outbound {
    /// An enforcement decision: data plane, `warden.enforcement.v1`, audit.
    Decision(Decision),
    /// An override owed to an ancestor: `warden.attribution.v1`.
    Attribution(AttributionEvent),
    /// A refusal that must be audited (a parent chain that loops, a parked line that
    /// could not be applied when its rate arrived).
    Audit(AuditNote),
}

/// An audit record to write, with its stable `ref_id` (so a re-publication is recorded once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditNote {
    pub ref_id: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// Money that moved in applies not yet counted in metrics (gross, CONTRACT §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MoneyFlow {
    pub commission_accrued_usd: Decimal,
    pub commission_reversed_usd: Decimal,
    pub coop_accrued_usd: Decimal,
}

/// What applying needs besides the event: rules, the partner's tier, enforcement policy,
/// the money facts and program, and the wall clock (pilot age).
#[derive(Debug, Clone, Copy)]
pub struct ApplyContext<'a> {
    pub rules: &'a ApplyRules,
    pub tier: TierAt<'a>,
    pub policy: &'a EnforcementPolicy,
    pub money: &'a MoneyFacts,
    pub program: &'a Program,
    pub wall_now: DateTime<Utc>,
}

/// Owned rules, policy, facts and program, for tests and benches: `env.ctx()` borrows them.
#[derive(Debug, Clone)]
pub struct ApplyEnv {
    pub rules: ApplyRules,
    pub tier: String,
    pub policy: EnforcementPolicy,
    pub money: MoneyFacts,
    pub program: Program,
    pub wall_now: DateTime<Utc>,
}

impl Default for ApplyEnv {
    fn default() -> Self {
        ApplyEnv {
            rules: ApplyRules::default(),
            tier: "default".into(),
            policy: EnforcementPolicy::default(),
            money: MoneyFacts::new(),
            // The shipped default program is validated by its own tests.
            program: Program::builtin("default")
                .and_then(Result::ok)
                .expect("the shipped default program is valid"),
            wall_now: DateTime::UNIX_EPOCH,
        }
    }
}

impl ApplyContext<'_> {
    /// `ts` as enforcement's clock may take it: no later than the wall clock plus
    /// `max_clock_skew`. A chargeback dated ahead by a billing host whose clock runs fast
    /// must not roll its partner's quota month or age its windows (CONTRACT §3: they run
    /// on event time, which the pipeline bounds the same way for usage).
    pub fn enforcement_ts(&self, ts: DateTime<Utc>) -> DateTime<Utc> {
        match self
            .rules
            .max_clock_skew
            .and_then(|skew| self.wall_now.checked_add_signed(skew))
        {
            Some(ceiling) => ts.min(ceiling),
            None => ts,
        }
    }
}

impl ApplyEnv {
    pub fn ctx(&self) -> ApplyContext<'_> {
        ApplyContext {
            rules: &self.rules,
            tier: TierAt::fixed(&self.tier),
            policy: &self.policy,
            money: &self.money,
            program: &self.program,
            wall_now: self.wall_now,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartnerState {
    pub partner_id: String,
    pub usage: UsageTotals,
    /// Fields at their default are left out of the snapshot (`domain::is_default`).
    #[serde(default, skip_serializing_if = "crate::domain::is_default")]
    pub invoices: InvoiceCounts,
    /// Newest event time applied (the partner's event-time watermark).
    #[serde(default, with = "crate::domain::stamp::opt")]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "crate::domain::is_default")]
    pub duplicates_skipped: u64,
    usage_ids: DedupWindow,
    /// The money side (CONTRACT §2): it keeps `(invoice_id, kind)` and `attribution_id`
    /// of everything applied, forever. `None` while untouched (most partners only send
    /// usage): a ledger is 520 bytes before it holds anything, and half a kilobyte of
    /// JSON per flush. Changed only through [`PartnerState::with_ledger`].
    #[serde(
        default,
        skip_serializing_if = "untouched",
        deserialize_with = "touched_ledger"
    )]
    ledger: Option<Box<Ledger>>,
    /// Next control-topic offset to apply (partner-scoped facts below it are applied).
    #[serde(default, skip_serializing_if = "crate::domain::is_default")]
    pub control_applied: i64,
    #[serde(default)]
    enforcement: EnforcementState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outbox: Vec<OutboxEntry>,
    #[serde(default, skip_serializing_if = "crate::domain::is_default")]
    next_outbox: u64,
    /// Not part of the state: what the actor still has to count in metrics.
    #[serde(skip)]
    flow: MoneyFlow,
    /// Not part of the state: parked lines their rate's arrival rejected, for the actor to
    /// dead-letter with its next snapshot (CONTRACT §5).
    #[serde(skip)]
    rejected_parked: Vec<(ParkedInvoice, Rejection)>,
}

/// Whether the snapshot leaves the ledger out: none, or one nothing was applied to.
fn untouched(ledger: &Option<Box<Ledger>>) -> bool {
    ledger.as_deref().is_none_or(Ledger::is_untouched)
}

/// Reads the ledger of a snapshot; an untouched one, as snapshots written before they
/// were left out still carry, is read as none.
fn touched_ledger<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<Ledger>>, D::Error> {
    let ledger = Option::<Box<Ledger>>::deserialize(d)?;
    Ok(ledger.filter(|l| !l.is_untouched()))
}

impl PartnerState {
    pub fn new(partner_id: impl Into<String>) -> Self {
        let partner_id = partner_id.into();
        PartnerState {
            enforcement: EnforcementState::new(partner_id.clone()),
            partner_id,
            ..Default::default()
        }
    }

    /// Applies one event of this partner and runs enforcement on what it changed;
    /// decisions and attributions go to the outbox. `Err` means the event is rejected and
    /// must be dead-lettered; the state is then unchanged.
    pub fn apply(
        &mut self,
        event: &PartnerEvent,
        ctx: &ApplyContext<'_>,
    ) -> Result<Applied, Rejection> {
        self.ensure_owner();
        let applied = match event {
            PartnerEvent::Usage(e) => self.apply_usage(e, ctx)?,
            PartnerEvent::Invoice(e) => self.apply_invoice(e, ctx)?,
            PartnerEvent::Attribution(e) => self.apply_attribution(e)?,
        };
        match applied {
            Applied::Counted => self.last_seen = self.last_seen.max(Some(event.ts())),
            Applied::Duplicate => {
                self.duplicates_skipped = self.duplicates_skipped.saturating_add(1)
            }
        }
        Ok(applied)
    }

    fn apply_usage(
        &mut self,
        e: &UsageEvent,
        ctx: &ApplyContext<'_>,
    ) -> Result<Applied, Rejection> {
        match self
            .usage_ids
            .admit(&e.event_id, e.ts, ctx.rules.dedup_window)
        {
            Admission::TooOld => Err(Rejection::new(
                DeadLetterReason::OutsideDedupWindow,
                format!(
                    "ts {} is older than the dedup window behind the partner's newest ts",
                    e.ts
                ),
            )),
            Admission::Duplicate => Ok(Applied::Duplicate),
            Admission::New => {
                self.usage = self.usage.plus(e);
                let decisions = self.enforcement.on_usage(e, ctx.tier.at(e.ts), ctx.policy);
                self.push_decisions(decisions);
                Ok(Applied::Counted)
            }
        }
    }

    fn apply_invoice(
        &mut self,
        e: &InvoiceEvent,
        ctx: &ApplyContext<'_>,
    ) -> Result<Applied, Rejection> {
        let effects = match self.with_ledger(|l| l.apply_invoice(e, ctx.money, ctx.program)) {
            Ok(effects) => effects,
            Err(rejection) => {
                if rejection.detail.starts_with(CHAIN_LOOPS) {
                    self.audit_refusal(e, "money.chain_loop_refused", &rejection);
                }
                return Err(rejection);
            }
        };
        if effects.outcome == InvoiceOutcome::Duplicate {
            return Ok(Applied::Duplicate);
        }
        let counter = match e.kind {
            InvoiceKind::Paid => &mut self.invoices.paid,
            InvoiceKind::Refund => &mut self.invoices.refunds,
            InvoiceKind::Chargeback => &mut self.invoices.chargebacks,
        };
        *counter = counter.saturating_add(1);
        self.book(effects, e.ts, ctx);
        Ok(Applied::Counted)
    }

    /// Runs what an applied invoice line produced: attributions to the outbox, the flow
    /// for metrics, and a chargeback's health signal.
    fn book(&mut self, effects: LedgerEffects, ts: DateTime<Utc>, ctx: &ApplyContext<'_>) {
        // Gross flows between two metric reads: the ledger bounds net totals, not these,
        // so a sum past Decimal's range saturates rather than panics (a metric, not money).
        let flow = &mut self.flow;
        flow.commission_accrued_usd = flow
            .commission_accrued_usd
            .saturating_add(effects.commission_accrued_usd);
        flow.commission_reversed_usd = flow
            .commission_reversed_usd
            .saturating_add(effects.commission_reversed_usd);
        flow.coop_accrued_usd = flow
            .coop_accrued_usd
            .saturating_add(effects.coop_accrued_usd);
        for a in effects.attributions {
            self.push_outbox(Outbound::Attribution(a));
        }
        if effects.chargeback {
            let at = ctx.enforcement_ts(ts);
            let decisions = self
                .enforcement
                .on_chargeback(at, ctx.tier.at(at), ctx.policy);
            self.push_decisions(decisions);
        }
    }

    fn audit_refusal(&mut self, e: &InvoiceEvent, action: &str, rejection: &Rejection) {
        let kind = e.kind.as_str();
        self.push_outbox(Outbound::Audit(AuditNote {
            ref_id: format!("{action}:{}:{}:{kind}", self.partner_id, e.invoice_id),
            action: action.to_owned(),
            target: format!("partner:{}", self.partner_id),
            detail: serde_json::json!({
                "invoice_id": e.invoice_id, "kind": kind, "reason": rejection.reason.as_str(),
                "detail": rejection.detail,
            }),
        }));
    }

    fn apply_attribution(&mut self, e: &AttributionEvent) -> Result<Applied, Rejection> {
        match self.with_ledger(|l| l.apply_attribution(e))? {
            InvoiceOutcome::Duplicate => Ok(Applied::Duplicate),
            _ => {
                self.invoices.attributions = self.invoices.attributions.saturating_add(1);
                Ok(Applied::Counted)
            }
        }
    }

    /// Applies the control facts of this partner from `table` it has not applied yet
    /// (CONTRACT §1: they govern the events applied after them). Returns whether any was.
    pub fn catch_up(&mut self, table: &ControlTable, ctx: &ApplyContext<'_>) -> bool {
        let with_fx = !self.ledger().parked().is_empty();
        let facts = table.facts_for(&self.partner_id, self.control_applied, with_fx);
        for (offset, fact) in &facts {
            self.apply_control(*offset, fact, ctx);
        }
        // Facts in between are not this partner's: nothing to apply, nothing to snapshot.
        self.control_applied = self.control_applied.max(table.next_offset());
        !facts.is_empty()
    }

    /// Applies one control fact at control offset `offset` (its scoped facts, FX
    /// arrivals and month closes). Facts below [`PartnerState::control_applied`] were
    /// applied already.
    pub fn apply_control(&mut self, offset: i64, fact: &ControlEvent, ctx: &ApplyContext<'_>) {
        if offset < self.control_applied {
            return;
        }
        self.ensure_owner();
        match fact {
            ControlEvent::Quota {
                integration_id,
                monthly_requests,
                burst_rps,
                overage,
                ..
            } => {
                let spec = QuotaSpec {
                    monthly_requests: *monthly_requests,
                    burst_rps: *burst_rps,
                    overage: *overage,
                };
                self.enforcement.on_quota(integration_id.as_deref(), spec);
            }
            ControlEvent::Tenant {
                tenant_id,
                partner_id,
                plan,
                started_at,
                ..
            } => {
                let tenant = TenantFact {
                    tenant_id,
                    partner_id,
                    plan: *plan,
                    started_at: *started_at,
                };
                let decisions = self.enforcement.on_tenant(tenant, ctx.wall_now, ctx.policy);
                self.push_decisions(decisions);
                self.apply_money_control(offset, fact, ctx);
            }
            _ => self.apply_money_control(offset, fact, ctx),
        }
        self.control_applied = offset + 1;
    }

    fn apply_money_control(&mut self, offset: i64, fact: &ControlEvent, ctx: &ApplyContext<'_>) {
        match self.with_ledger(|l| l.apply_control(offset, fact, ctx.money, ctx.program)) {
            ControlOutcome::Credits(effects) => self.on_credits(effects, ctx),
            ControlOutcome::Fx(arrival) => {
                for (e, mut effects) in arrival.applied {
                    // A chargeback counted as a health signal when it arrived, parked or
                    // not; its rate arriving is not a second one.
                    effects.chargeback = false;
                    self.book(effects, e.ts, ctx);
                }
                for (parked, rejection) in arrival.rejected {
                    self.audit_refusal(&parked.event, "money.parked_invoice_rejected", &rejection);
                    self.rejected_parked.push((parked, rejection));
                }
            }
            ControlOutcome::Mdf(outcome) => {
                // A refusal exists only in the wallet otherwise: finance reads it here.
                if let (
                    Some(reason),
                    ControlEvent::MdfExpense {
                        expense_id,
                        amount_usd,
                        ..
                    },
                ) = (outcome.reason(), fact)
                {
                    self.push_outbox(Outbound::Audit(AuditNote {
                        ref_id: format!("money.mdf_refused:{}:{expense_id}", self.partner_id),
                        action: "money.mdf_refused".into(),
                        target: format!("partner:{}", self.partner_id),
                        detail: serde_json::json!({
                            "expense_id": expense_id, "amount_usd": amount_usd.to_string(),
                            "reason": reason,
                            "available_usd": self.ledger().totals().coop_available_usd.to_string(),
                        }),
                    }));
                }
            }
            ControlOutcome::MonthClosed { .. }
            | ControlOutcome::NoEffect
            | ControlOutcome::Ignored(_) => {}
        }
    }

    /// Credits programs: a refused activation blocks its tenant, a low balance warns the
    /// partner, credits arriving lift the tenants they let through (CONTRACT §3).
    fn on_credits(&mut self, effects: CreditEffects, ctx: &ApplyContext<'_>) {
        let refused: Vec<&str> = effects
            .signals
            .iter()
            .filter_map(|s| match s {
                CreditSignal::InsufficientCredits { tenant_id, .. } => Some(tenant_id.as_str()),
                CreditSignal::LowCredits { .. } => None,
            })
            .collect();
        let activated: Vec<&str> = effects.activated.iter().map(|(t, _)| t.as_str()).collect();
        let low = self.ledger().credit_wallet().is_low();
        let decisions = self.enforcement.on_credits(
            low,
            &refused,
            &activated,
            ctx.wall_now,
            ctx.tier.at(self.event_clock().unwrap_or(ctx.wall_now)),
            ctx.policy,
        );
        self.push_decisions(decisions);
    }

    /// What readers need (API, metrics), without the dedup memory.
    pub fn summary(&self) -> PartnerSummary {
        PartnerSummary {
            partner_id: self.partner_id.clone(),
            usage: self.usage,
            invoices: self.invoices,
            last_seen: self.last_seen,
            duplicates_skipped: self.duplicates_skipped,
            enforcement: Some(self.enforcement.partner_level()),
            levels: self.enforcement.levels(),
            quota: None,
            money: self.ledger().totals(),
            status: None,
            tracking: Some(self.capacity()),
        }
    }

    /// [`PartnerState::summary`] with the quota as the partner's tier sets it and the
    /// status at `now` under `program`.
    pub fn summary_in(
        &self,
        tier: &str,
        policy: &EnforcementPolicy,
        program: &Program,
        now: DateTime<Utc>,
    ) -> PartnerSummary {
        let mut s = self.summary();
        s.quota = Some(self.quota(tier, policy));
        s.status = Some(self.status(now, program));
        s
    }

    /// The partner's quota (a quota fact's, else its tier's) and its use this month.
    pub fn quota(&self, tier: &str, policy: &EnforcementPolicy) -> QuotaView {
        self.enforcement.quota(tier, policy)
    }

    /// The partner's ledger; an untouched one (with no partner id) until money moves.
    pub fn ledger(&self) -> &Ledger {
        static UNTOUCHED: LazyLock<Ledger> = LazyLock::new(Ledger::default);
        self.ledger.as_deref().unwrap_or(&UNTOUCHED)
    }

    /// Runs `f` on the ledger, made for this partner if it had none, and lets a new one go
    /// again if `f` left it untouched (so a state and its decoded snapshot compare equal).
    /// A ledger once touched stays so: what it applied is kept forever.
    fn with_ledger<R>(&mut self, f: impl FnOnce(&mut Ledger) -> R) -> R {
        let created = self.ledger.is_none();
        let partner_id = &self.partner_id;
        let ledger = self
            .ledger
            .get_or_insert_with(|| Box::new(Ledger::new(partner_id.clone())));
        let out = f(ledger);
        if created && ledger.is_untouched() {
            self.ledger = None;
        }
        out
    }

    /// Active / at-risk and the lock at `now` (informational).
    pub fn status(&self, now: DateTime<Utc>, program: &Program) -> StatusView {
        self.ledger().status(now, program)
    }

    /// Notes where the invoice `e` just applied came from, if it was parked: a line
    /// rejected when its rate arrives is dead-lettered under that record's id.
    pub fn note_invoice_source(&mut self, e: &InvoiceEvent, source: RecordRef) {
        if let Some(ledger) = self.ledger.as_deref_mut() {
            ledger.note_parked_source(e, source);
        }
    }

    /// Takes the parked lines rejected since the last call, for the dead-letter topic.
    pub fn take_rejected_parked(&mut self) -> Vec<(ParkedInvoice, Rejection)> {
        std::mem::take(&mut self.rejected_parked)
    }

    /// Takes the money moved since the last call, for metrics.
    pub fn take_flow(&mut self) -> MoneyFlow {
        std::mem::take(&mut self.flow)
    }

    /// Time passing: returns whether anything changed (a decision was made).
    pub fn tick(
        &mut self,
        watermark: DateTime<Utc>,
        wall_now: DateTime<Utc>,
        tier: &str,
        policy: &EnforcementPolicy,
    ) -> bool {
        self.ensure_owner();
        let decisions = self.enforcement.tick(watermark, wall_now, tier, policy);
        let changed = !decisions.is_empty();
        self.push_decisions(decisions);
        changed
    }

    /// The level the partner's quota, burst and credits hold it at (see
    /// [`EnforcementState::partner_immediate`]).
    pub fn immediate_level(&self, tier: &str, policy: &EnforcementPolicy) -> Target {
        self.enforcement.partner_immediate(tier, policy)
    }

    /// How close the partner is to its tracking bounds, and what they left out.
    pub fn capacity(&self) -> Capacity {
        self.enforcement.capacity()
    }

    /// Whether this partner's level (or an integration's) must be brought back by ticks,
    /// events or not; see [`EnforcementState::calms_by_time`].
    pub fn calms_by_time(&self) -> bool {
        self.enforcement.calms_by_time()
    }

    /// The newest event time this partner's ladders have run to (its events and ticks).
    pub fn event_clock(&self) -> Option<DateTime<Utc>> {
        self.enforcement.clock()
    }

    /// When, on the wall clock (epoch millis), this partner must be started to suspend a
    /// pilot that expires: the store keeps it for partners passivated meanwhile.
    pub fn wake_at_ms(&self, policy: &EnforcementPolicy) -> Option<i64> {
        self.enforcement.next_pilot_expiry_ms(policy)
    }

    /// A tick with no event time yet (the partition has none): only the wall clock moves,
    /// so only pilots can expire. Returns whether it decided anything.
    pub fn tick_pilots(&mut self, wall_now: DateTime<Utc>, policy: &EnforcementPolicy) -> bool {
        self.ensure_owner();
        let decisions = self.enforcement.tick_pilots(wall_now, policy);
        let changed = !decisions.is_empty();
        self.push_decisions(decisions);
        changed
    }

    /// The earliest event-time watermark, in epoch millis, at which [`PartnerState::tick`]
    /// could change anything (`DUE_NOW`: the next tick; `None`: only an event or a control
    /// fact can). See [`EnforcementState::tick_due_ms`].
    pub fn tick_due_ms(&self, policy: &EnforcementPolicy) -> Option<i64> {
        self.enforcement.tick_due_ms(policy)
    }

    /// Outputs not yet known to be published.
    pub fn outbox(&self) -> &[OutboxEntry] {
        &self.outbox
    }

    /// Drops outbox entries up to and including `n`: they are published.
    pub fn ack_outbox(&mut self, n: u64) {
        self.outbox.retain(|e| e.n > n);
        if self.outbox.is_empty() {
            // Most partners publish a decision now and then: an empty outbox holds nothing.
            self.outbox = Vec::new();
        }
    }

    /// The partner's own enforcement level now.
    pub fn level(&self) -> LevelView {
        self.enforcement.partner_level()
    }

    fn push_decisions(&mut self, decisions: Vec<Decision>) {
        for decision in decisions {
            self.push_outbox(Outbound::Decision(decision));
        }
    }

    fn push_outbox(&mut self, item: Outbound) {
        self.next_outbox += 1;
        self.outbox.push(OutboxEntry {
            n: self.next_outbox,
            item,
        });
    }

    /// A state restored without its enforcement part starts it for its partner. (A ledger
    /// is always made for its partner, by [`PartnerState::with_ledger`]; one read from a
    /// snapshot carries its partner id, or is untouched and read as none.)
    fn ensure_owner(&mut self) {
        if self.enforcement.partner_id().is_empty() {
            self.enforcement = EnforcementState::new(self.partner_id.clone());
        }
    }

    /// What the next flush writes of the dedup window (see [`DedupDelta`]).
    pub fn dedup_delta(&self) -> DedupDelta {
        self.usage_ids.delta()
    }

    /// The store made the first `n` ids of the last [`PartnerState::dedup_delta`] durable.
    pub fn dedup_acknowledged(&mut self, n: usize) {
        self.usage_ids.acknowledge(n);
    }

    /// A partner loaded from the store gets its dedup ids back (and the parts a snapshot
    /// leaves out while untouched).
    pub fn restore_dedup(&mut self, stored: Vec<(i64, String)>) {
        self.ensure_owner();
        self.usage_ids.restore(stored);
    }

    /// Ids currently held for dedup (a memory figure for metrics and docs).
    pub fn dedup_entries(&self) -> usize {
        self.usage_ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(id: &str, secs: i64, requests: u64, errors: u64) -> PartnerEvent {
        PartnerEvent::Usage(UsageEvent {
            event_id: id.into(),
            ts: DateTime::from_timestamp(1_780_000_000 + secs, 0).unwrap(),
            partner_id: "p-1".into(),
            integration_id: "i-1".into(),
            tenant_id: None,
            requests,
            errors,
            auth_failures: 1,
            bytes: 10,
        })
    }

    /// 119 events a second apart (1 s to 119 s), each of 1,000 requests all failing, each
    /// counted.
    fn error_storm(s: &mut PartnerState, ctx: &ApplyContext<'_>) {
        for k in 1..120 {
            let storm = usage(&format!("e{k}"), k, 1_000, 1_000);
            assert_eq!(s.apply(&storm, ctx), Ok(Applied::Counted), "event {k}");
        }
    }

    #[test]
    fn usage_is_counted_once_per_event_id() {
        let mut s = PartnerState::new("p-1");
        let env = ApplyEnv::default();
        assert_eq!(
            s.apply(&usage("a", 0, 10, 2), &env.ctx()),
            Ok(Applied::Counted)
        );
        assert_eq!(
            s.apply(&usage("a", 0, 10, 2), &env.ctx()),
            Ok(Applied::Duplicate)
        );
        assert_eq!(
            s.apply(&usage("b", 5, 7, 0), &env.ctx()),
            Ok(Applied::Counted)
        );
        assert_eq!(
            s.usage,
            UsageTotals {
                events: 2,
                requests: 17,
                errors: 2,
                auth_failures: 2,
                bytes: 20
            }
        );
        assert_eq!(s.duplicates_skipped, 1);
        assert_eq!(
            s.last_seen,
            Some(DateTime::from_timestamp(1_780_000_005, 0).unwrap())
        );
    }

    /// A duplicate is visible nowhere (LESSONS, "dedup that only happens later"): not in
    /// the totals, and not in enforcement either. A copy of an event id whose content would
    /// throttle and suspend the partner if it were counted decides nothing and leaves the
    /// health windows and meters as they were.
    #[test]
    fn a_duplicate_moves_no_signal_and_decides_nothing() {
        let mut s = PartnerState::new("p-1");
        let env = ApplyEnv::default();
        assert_eq!(
            s.apply(&usage("a", 0, 10, 0), &env.ctx()),
            Ok(Applied::Counted)
        );
        assert!(s.outbox().is_empty(), "ten calm requests decide nothing");
        let before = serde_json::to_value(&s).unwrap();
        let storm = usage("a", 0, 1_000_000, 1_000_000);
        assert_eq!(s.apply(&storm, &env.ctx()), Ok(Applied::Duplicate));
        assert!(s.outbox().is_empty(), "no decision from a duplicate");
        let after = serde_json::to_value(&s).unwrap();
        for part in ["enforcement", "usage", "last_seen"] {
            assert_eq!(after[part], before[part], "{part}");
        }
        assert_eq!(s.duplicates_skipped, 1, "only counted as skipped");
        // The same content under a new id is counted, and decides.
        assert_eq!(
            s.apply(&usage("b", 0, 1_000_000, 1_000_000), &env.ctx()),
            Ok(Applied::Counted)
        );
        assert!(!s.outbox().is_empty(), "the storm, counted, decides");
    }

    /// Quotas are judged by the tier in force at each event's time: a downgrade dated next
    /// month does not suspend a partner for this month's use (CONTRACT §2).
    #[test]
    fn a_tier_change_dated_later_leaves_this_months_quota_as_it_was() {
        use crate::domain::enforcement::Level;
        use crate::domain::money::TierEntry;
        let at = |rfc: &str| DateTime::parse_from_rfc3339(rfc).unwrap().to_utc();
        let changes = [
            TierEntry {
                tier: "silver".into(),
                effective_from: at("2026-01-01T00:00:00Z"),
            },
            TierEntry {
                tier: "bronze".into(),
                effective_from: at("2026-07-01T00:00:00Z"),
            },
        ];
        let mut env = ApplyEnv::default();
        for (tier, monthly_requests) in [("silver", 5_000), ("bronze", 1_000)] {
            let quota = env.policy.tiers.get_mut(tier).unwrap();
            quota.monthly_requests = monthly_requests;
            quota.burst_rps = 1_000_000;
        }
        let mut ctx = env.ctx();
        ctx.tier = TierAt::new("default", &changes);
        let mut s = PartnerState::new("p-1");
        let used = |id: &str, ts: &str, requests: u64| {
            PartnerEvent::Usage(UsageEvent {
                event_id: id.into(),
                ts: at(ts),
                partner_id: "p-1".into(),
                integration_id: "i-1".into(),
                tenant_id: None,
                requests,
                errors: 0,
                auth_failures: 0,
                bytes: 0,
            })
        };
        // 2,000 of silver's 5,000 in June: past bronze's hard ceiling (1,200) already.
        s.apply(&used("june", "2026-06-20T00:00:00Z", 2_000), &ctx)
            .unwrap();
        assert_eq!(s.enforcement.partner_level().level, Level::Ok);
        // From July on, bronze: 1,100 is past its 1,000.
        s.apply(&used("july", "2026-07-01T01:00:00Z", 1_100), &ctx)
            .unwrap();
        assert_eq!(s.enforcement.partner_level().level, Level::Throttle);
    }

    /// LESSONS (scoped keys): dedup ids are per partner. The same `event_id` from two
    /// partners is two events; from one partner, one.
    #[test]
    fn the_same_event_id_under_two_partners_counts_for_each() {
        let env = ApplyEnv::default();
        let of = |partner: &str| {
            let PartnerEvent::Usage(mut u) = usage("shared-id", 0, 10, 0) else {
                unreachable!()
            };
            u.partner_id = partner.into();
            PartnerEvent::Usage(u)
        };
        let (mut a, mut b) = (PartnerState::new("p-a"), PartnerState::new("p-b"));
        assert_eq!(a.apply(&of("p-a"), &env.ctx()), Ok(Applied::Counted));
        assert_eq!(b.apply(&of("p-b"), &env.ctx()), Ok(Applied::Counted));
        assert_eq!(a.apply(&of("p-a"), &env.ctx()), Ok(Applied::Duplicate));
        assert_eq!((a.usage.requests, b.usage.requests), (10, 10));
    }

    #[test]
    fn event_outside_the_dedup_window_is_rejected_without_effect() {
        let mut s = PartnerState::new("p-1");
        let mut env = ApplyEnv::default();
        env.rules.dedup_window = Duration::seconds(60);
        s.apply(&usage("a", 1000, 1, 0), &env.ctx()).unwrap();
        let before = s.clone();
        let err = s.apply(&usage("old", 900, 1, 0), &env.ctx()).unwrap_err();
        assert_eq!(err.reason, DeadLetterReason::OutsideDedupWindow);
        assert_eq!(s, before);
    }

    #[test]
    fn a_usage_counter_at_its_limit_stops_there_and_hides_no_later_traffic() {
        use crate::domain::enforcement::Level;
        let mut s = PartnerState::new("p-1");
        let env = ApplyEnv::default();
        let mut huge = usage("a", 0, 1, 0);
        if let PartnerEvent::Usage(u) = &mut huge {
            u.bytes = u64::MAX;
        }
        assert_eq!(s.apply(&huge, &env.ctx()), Ok(Applied::Counted));
        // A storm of errors after it (valid per §1) is counted and decided on.
        error_storm(&mut s, &env.ctx());
        assert_eq!(s.usage.bytes, u64::MAX);
        assert_eq!(s.usage.events, 120);
        assert_eq!(s.usage.errors, 119_000);
        let decided = s.outbox().iter().any(|o| match &o.item {
            Outbound::Decision(d) => d.level > Level::Ok,
            _ => false,
        });
        assert!(decided, "the storm is decided on: {:?}", s.outbox());
    }

    #[test]
    fn snapshot_round_trip_keeps_dedup_memory() {
        let mut s = PartnerState::new("p-1");
        let env = ApplyEnv::default();
        s.apply(&usage("a", 0, 3, 1), &env.ctx()).unwrap();
        // The snapshot leaves the ids out; the store keeps them from the delta.
        let bytes = serde_json::to_vec(&s).unwrap();
        let delta = s.dedup_delta();
        assert_eq!(delta.added.len(), 1);
        let mut back: PartnerState = serde_json::from_slice(&bytes).unwrap();
        back.restore_dedup(delta.added.clone());
        assert_eq!(back, s);
        s.dedup_acknowledged(delta.added.len());
        assert!(s.dedup_delta().added.is_empty());
        assert_eq!(
            back.apply(&usage("a", 0, 3, 1), &env.ctx()),
            Ok(Applied::Duplicate)
        );
        assert_eq!(back.usage.requests, 3);
    }

    #[test]
    fn a_usage_only_partner_holds_no_ledger_even_from_a_snapshot_that_spelled_one_out() {
        let mut s = PartnerState::new("p-1");
        let env = ApplyEnv::default();
        s.apply(&usage("a", 0, 3, 1), &env.ctx()).unwrap();
        assert!(s.ledger.is_none(), "usage makes no ledger");
        // Snapshots written before untouched ledgers were left out carry an empty one.
        let mut json = serde_json::to_value(&s).unwrap();
        json["ledger"] = serde_json::to_value(Ledger::new("p-1")).unwrap();
        let mut back: PartnerState = serde_json::from_value(json).unwrap();
        assert!(back.ledger.is_none());
        back.restore_dedup(s.dedup_delta().added);
        assert_eq!(back, s);
        // A touched one is kept.
        let mut money = PartnerState::new("p-1");
        let may = crate::domain::money::Month::of(at("2026-05-14T00:00:00Z"));
        money.with_ledger(|l| l.freeze(may));
        assert!(money.ledger.is_some());
        let back: PartnerState =
            serde_json::from_slice(&serde_json::to_vec(&money).unwrap()).unwrap();
        assert_eq!(back, money);
    }

    // ---- money wired into the partner state ----

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn dec(s: &str) -> rust_decimal::Decimal {
        s.parse().unwrap()
    }

    fn partner_fact(
        id: &str,
        tier: &str,
        parent: Option<&str>,
        override_rate: Option<&str>,
    ) -> ControlEvent {
        ControlEvent::Partner {
            partner_id: id.into(),
            name: id.into(),
            tier: tier.into(),
            tier_effective_from: at("2026-01-01T00:00:00Z"),
            parent_id: parent.map(Into::into),
            override_rate: override_rate.map(dec),
            coop_rate: None,
            commission_rate: None,
            net_of_cost: None,
        }
    }

    fn paid(partner: &str, id: &str, ts: &str, currency: &str, fee: &str) -> PartnerEvent {
        PartnerEvent::Invoice(Box::new(InvoiceEvent {
            invoice_id: id.into(),
            ts: at(ts),
            kind: InvoiceKind::Paid,
            partner_id: partner.into(),
            tenant_id: "t-1".into(),
            currency: currency.into(),
            platform_fee: dec(fee),
            overage: dec("0"),
            processing_cost: dec("0"),
            new_logo: false,
            contract_value: None,
            refers_to: None,
        }))
    }

    /// A control table and the context the actor would build from it.
    struct World {
        table: ControlTable,
        env: ApplyEnv,
        next: i64,
    }

    impl World {
        fn new(program: &str) -> Self {
            let env = ApplyEnv {
                program: Program::builtin(program).unwrap().unwrap(),
                wall_now: at("2026-06-30T00:00:00Z"),
                ..ApplyEnv::default()
            };
            World {
                table: ControlTable::default(),
                env,
                next: 0,
            }
        }

        fn fact(&mut self, f: ControlEvent) {
            self.table.apply(self.next, &f);
            self.next += 1;
        }

        fn ctx(&self) -> ApplyContext<'_> {
            let mut ctx = self.env.ctx();
            ctx.money = self.table.money();
            ctx
        }
    }

    #[test]
    fn a_paid_line_accrues_and_puts_one_attribution_per_ancestor_in_the_outbox() {
        let mut w = World::new("default");
        w.fact(partner_fact("dist", "platinum", None, Some("0.03")));
        w.fact(partner_fact("res", "gold", Some("dist"), None));
        let mut s = PartnerState::new("res");
        s.catch_up(&w.table, &w.ctx());
        let e = paid("res", "inv-1", "2026-05-02T00:00:00Z", "USD", "1000.00");
        assert_eq!(s.apply(&e, &w.ctx()), Ok(Applied::Counted));
        assert_eq!(s.apply(&e, &w.ctx()), Ok(Applied::Duplicate));
        let totals = s.summary().money;
        assert_eq!(totals.attributed_revenue_usd, dec("1000.00"));
        assert_eq!(totals.commission_usd, dec("120.00")); // gold 12 %
        assert_eq!(totals.coop_accrued_usd, dec("20.00"));
        let attributions: Vec<AttributionEvent> = s
            .outbox()
            .iter()
            .filter_map(|o| match &o.item {
                Outbound::Attribution(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(attributions.len(), 1);
        assert_eq!(attributions[0].attribution_id, "inv-1:paid:dist");
        assert_eq!(attributions[0].amount_usd, dec("30.00"));
        let flow = s.take_flow();
        assert_eq!(flow.commission_accrued_usd, dec("120.00"));
        assert_eq!(s.take_flow(), MoneyFlow::default());

        // The ancestor applies it once.
        let mut d = PartnerState::new("dist");
        let a = PartnerEvent::Attribution(Box::new(attributions[0].clone()));
        assert_eq!(d.apply(&a, &w.ctx()), Ok(Applied::Counted));
        assert_eq!(d.apply(&a, &w.ctx()), Ok(Applied::Duplicate));
        assert_eq!(d.summary().money.override_commission_usd, dec("30.00"));
    }

    #[test]
    fn a_parked_line_is_applied_when_its_rate_arrives_through_catch_up() {
        let mut w = World::new("default");
        w.fact(partner_fact("res", "gold", None, None));
        let mut s = PartnerState::new("res");
        s.catch_up(&w.table, &w.ctx());
        let e = paid("res", "inv-jp", "2026-05-02T00:00:00Z", "JPY", "100000");
        assert_eq!(s.apply(&e, &w.ctx()), Ok(Applied::Counted));
        assert_eq!(s.summary().money.parked_invoices, 1);
        w.fact(ControlEvent::FxRate {
            currency: "JPY".into(),
            usd_per_unit: dec("0.0065"),
            as_of: at("2026-05-01T00:00:00Z"),
        });
        assert!(s.catch_up(&w.table, &w.ctx()));
        let totals = s.summary().money;
        assert_eq!(totals.parked_invoices, 0);
        assert_eq!(totals.attributed_revenue_usd, dec("650.00"));
        assert_eq!(totals.commission_usd, dec("78.00"));
        // Nothing left to apply: a second catch-up changes nothing.
        let before = s.clone();
        assert!(!s.catch_up(&w.table, &w.ctx()));
        assert_eq!(s, before);
    }

    /// A chargeback is one health signal (CONTRACT §2), counted when it arrives: when it
    /// waited with its original for a rate, the rate arriving does not count it again.
    #[test]
    fn a_chargeback_that_waited_for_its_rate_counts_once_as_a_signal() {
        let mut w = World::new("default");
        w.fact(partner_fact("res", "gold", None, None));
        let mut s = PartnerState::new("res");
        s.catch_up(&w.table, &w.ctx());
        let chargeback = |id: &str, of: &str| {
            let PartnerEvent::Invoice(mut e) =
                paid("res", id, "2026-05-03T00:00:00Z", "JPY", "1000")
            else {
                unreachable!()
            };
            e.kind = InvoiceKind::Chargeback;
            e.refers_to = Some(of.into());
            PartnerEvent::Invoice(e)
        };
        // Two chargebacks: under the default tier's three that warn, counted once each.
        for n in 1..=2 {
            let original = format!("inv-{n}");
            let e = paid("res", &original, "2026-05-02T00:00:00Z", "JPY", "1000");
            assert_eq!(s.apply(&e, &w.ctx()), Ok(Applied::Counted));
            let cb = chargeback(&format!("cb-{n}"), &original);
            assert_eq!(s.apply(&cb, &w.ctx()), Ok(Applied::Counted));
        }
        assert_eq!(s.summary().money.parked_invoices, 4);
        w.fact(ControlEvent::FxRate {
            currency: "JPY".into(),
            usd_per_unit: dec("0.0065"),
            as_of: at("2026-05-01T00:00:00Z"),
        });
        assert!(s.catch_up(&w.table, &w.ctx()));
        assert_eq!(s.summary().money.parked_invoices, 0);
        assert_eq!(
            s.enforcement.partner_level().level,
            crate::domain::enforcement::Level::Ok
        );
    }

    /// A chargeback dated a day ahead, from a billing host whose clock runs fast, moves
    /// enforcement's clock no further than the wall clock plus `max_clock_skew`: the usage
    /// that follows still lands in the windows and is decided on. Money keeps its date.
    #[test]
    fn a_chargeback_dated_ahead_moves_enforcements_clock_only_to_the_skew_allowed() {
        let now = 1_780_000_000;
        let storm_after = |ahead: chrono::Duration, skew: Option<chrono::Duration>| {
            let env = ApplyEnv {
                wall_now: DateTime::from_timestamp(now, 0).unwrap(),
                rules: ApplyRules {
                    max_clock_skew: skew,
                    ..ApplyRules::default()
                },
                ..ApplyEnv::default()
            };
            let mut s = PartnerState::new("p-1");
            let original = paid("p-1", "inv-1", "2026-05-01T00:00:00Z", "USD", "100");
            assert_eq!(s.apply(&original, &env.ctx()), Ok(Applied::Counted));
            let PartnerEvent::Invoice(mut cb) = original else {
                unreachable!()
            };
            cb.invoice_id = "cb-1".into();
            cb.kind = InvoiceKind::Chargeback;
            cb.refers_to = Some("inv-1".into());
            cb.ts = env.wall_now + ahead;
            assert_eq!(
                s.apply(&PartnerEvent::Invoice(cb), &env.ctx()),
                Ok(Applied::Counted)
            );
            error_storm(&mut s, &env.ctx());
            s.enforcement.partner_level().level
        };
        let skew = Some(chrono::Duration::minutes(5));
        let ok = crate::domain::enforcement::Level::Ok;
        assert!(storm_after(chrono::Duration::days(1), skew) > ok);
        assert!(storm_after(chrono::Duration::days(40), skew) > ok);
        // Unbounded (a replay on fixed times), the same day ahead hides the storm: the
        // bound is what makes the difference.
        assert_eq!(storm_after(chrono::Duration::days(1), None), ok);
    }

    /// Gross flows are summed over a batch or a catch-up, where the ledger checks only net
    /// figures: absurd amounts, paid and refunded, must saturate the metric, not panic.
    #[test]
    fn gross_flows_past_decimals_range_saturate_instead_of_panicking() {
        let mut s = PartnerState::new("res");
        let env = ApplyEnv::default();
        let effects = LedgerEffects {
            outcome: InvoiceOutcome::Accrued,
            attributions: Vec::new(),
            parked: false,
            chargeback: false,
            commission_accrued_usd: Decimal::MAX,
            commission_reversed_usd: Decimal::MAX,
            coop_accrued_usd: Decimal::MAX,
        };
        let ts = at("2026-05-02T00:00:00Z");
        s.book(effects.clone(), ts, &env.ctx());
        s.book(effects, ts, &env.ctx());
        let flow = s.take_flow();
        assert_eq!(flow.commission_accrued_usd, Decimal::MAX);
        assert_eq!(flow.commission_reversed_usd, Decimal::MAX);
        assert_eq!(flow.coop_accrued_usd, Decimal::MAX);
    }

    /// CONTRACT §2: an MDF draw the balance does not cover is refused with reason
    /// `insufficient_coop_balance`; the refusal is audited, not only kept in the wallet.
    #[test]
    fn a_refused_mdf_draw_is_audited_with_its_reason() {
        let mut w = World::new("default");
        w.fact(partner_fact("res", "gold", None, None));
        let mut s = PartnerState::new("res");
        s.catch_up(&w.table, &w.ctx());
        let e = paid("res", "inv-1", "2026-05-02T00:00:00Z", "USD", "1000.00");
        s.apply(&e, &w.ctx()).unwrap(); // co-op 20.00
        let draw = |id: &str, amount: &str| ControlEvent::MdfExpense {
            expense_id: id.into(),
            partner_id: "res".into(),
            amount_usd: dec(amount),
            campaign: "webinar".into(),
            decision: crate::domain::event::MdfDecision::Approved,
        };
        w.fact(draw("e-covered", "15.00"));
        w.fact(draw("e-too-big", "50.00"));
        assert!(s.catch_up(&w.table, &w.ctx()));
        let audited: Vec<(&str, &serde_json::Value)> = s
            .outbox()
            .iter()
            .filter_map(|o| match &o.item {
                Outbound::Audit(a) if a.action.starts_with("money.mdf") => {
                    Some((a.ref_id.as_str(), &a.detail))
                }
                _ => None,
            })
            .collect();
        assert_eq!(audited.len(), 1, "only the refusal: {audited:?}");
        let (ref_id, detail) = audited[0];
        assert_eq!(ref_id, "money.mdf_refused:res:e-too-big");
        assert_eq!(detail["reason"], "insufficient_coop_balance");
        assert_eq!(detail["amount_usd"], "50.00");
        assert_eq!(detail["available_usd"], "5.00");
    }

    #[test]
    fn a_closed_month_freezes_on_catch_up_and_a_late_line_is_an_adjustment() {
        let mut w = World::new("default");
        w.fact(partner_fact("res", "gold", None, None));
        let mut s = PartnerState::new("res");
        s.catch_up(&w.table, &w.ctx());
        s.apply(
            &paid("res", "inv-1", "2026-04-10T00:00:00Z", "USD", "100.00"),
            &w.ctx(),
        )
        .unwrap();
        w.fact(ControlEvent::MonthClose {
            month: "2026-04".into(),
        });
        s.catch_up(&w.table, &w.ctx());
        let april = super::super::money::Month::new(2026, 4).unwrap();
        let frozen = serde_json::to_vec(&s.ledger().statement(april)).unwrap();
        s.apply(
            &paid("res", "inv-late", "2026-04-20T00:00:00Z", "USD", "50.00"),
            &w.ctx(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_vec(&s.ledger().statement(april)).unwrap(),
            frozen
        );
        let may = s.ledger().statement(april.next());
        assert_eq!(may.lines.len(), 1);
        assert_eq!(may.totals.commission_usd, dec("6.00"));
        // A partner that never saw the close (new, or passivated) freezes it too.
        let mut fresh = PartnerState::new("res");
        fresh.catch_up(&w.table, &w.ctx());
        fresh
            .apply(
                &paid("res", "inv-2", "2026-04-21T00:00:00Z", "USD", "10.00"),
                &w.ctx(),
            )
            .unwrap();
        assert!(fresh.ledger().statement(april).lines.is_empty());
    }

    /// A tenant that moves to another partner is lifted by the partner it left, which only
    /// hears of it because the table files the fact under that partner too; a repeated
    /// fact (same tenant, partner and plan) changes nothing, unless the tenant moved away
    /// since (a move back); and a pilot that moves already expired is left to the new
    /// owner's suspension, with no lift of the old one to race it.
    #[test]
    fn a_migrated_tenant_is_lifted_by_the_partner_it_left_and_a_repeat_changes_nothing() {
        use super::super::enforcement::{Level, Reason, Scope};
        use crate::domain::event::TenantPlan;
        let mut w = World::new("default");
        w.fact(partner_fact("pa", "gold", None, None));
        w.fact(partner_fact("pb", "gold", None, None));
        let tenant = |partner: &str, plan, started: &str| ControlEvent::Tenant {
            tenant_id: "t-1".into(),
            partner_id: partner.into(),
            plan,
            started_at: at(started),
            deployment_value_usd: None,
        };
        let tenant_decisions = |s: &PartnerState| -> Vec<(Level, Reason)> {
            s.outbox()
                .iter()
                .filter_map(|o| match &o.item {
                    Outbound::Decision(d) if d.scope == Scope::Tenant && d.id == "t-1" => {
                        Some((d.level, d.reason))
                    }
                    _ => None,
                })
                .collect()
        };
        // A pilot of pa, 60 days old at the wall clock: suspended.
        w.fact(tenant("pa", TenantPlan::Pilot, "2026-05-01T00:00:00Z"));
        let mut pa = PartnerState::new("pa");
        pa.catch_up(&w.table, &w.ctx());
        assert_eq!(
            tenant_decisions(&pa),
            [(Level::Suspend, Reason::PilotExpired)]
        );
        // The same fact again, with a fresh start: a repeat, so the 30 days do not restart.
        w.fact(tenant("pa", TenantPlan::Pilot, "2026-06-29T00:00:00Z"));
        pa.catch_up(&w.table, &w.ctx());
        assert_eq!(tenant_decisions(&pa).len(), 1);
        // It becomes a paid tenant of pb: pa, which it left, lifts it.
        w.fact(tenant("pb", TenantPlan::Paid, "2026-06-29T00:00:00Z"));
        assert!(pa.catch_up(&w.table, &w.ctx()));
        assert_eq!(
            tenant_decisions(&pa).last(),
            Some(&(Level::Ok, Reason::Calm))
        );
        // It moves back to pa as the pilot it was: not a repeat any more, pa suspends it.
        w.fact(tenant("pa", TenantPlan::Pilot, "2026-05-01T00:00:00Z"));
        pa.catch_up(&w.table, &w.ctx());
        assert_eq!(
            tenant_decisions(&pa).last(),
            Some(&(Level::Suspend, Reason::PilotExpired))
        );
        // It moves to pb as that expired pilot: pb suspends it, and pa writes nothing.
        let seen = tenant_decisions(&pa).len();
        w.fact(tenant("pb", TenantPlan::Pilot, "2026-05-01T00:00:00Z"));
        assert!(pa.catch_up(&w.table, &w.ctx()));
        assert_eq!(tenant_decisions(&pa).len(), seen);
        let mut pb = PartnerState::new("pb");
        pb.catch_up(&w.table, &w.ctx());
        assert_eq!(
            tenant_decisions(&pb).last(),
            Some(&(Level::Suspend, Reason::PilotExpired))
        );
    }

    /// A tenant waiting at its partner for credits that moves to another partner leaves
    /// that partner's queue: the activation waiting behind it goes through and is lifted,
    /// and the tenant that left is charged nothing there.
    #[test]
    fn a_tenant_leaving_the_credits_queue_lets_the_next_one_through() {
        use super::super::enforcement::{Level, Reason, Scope};
        use crate::domain::event::TenantPlan;
        let mut w = World::new("credits");
        w.fact(partner_fact("pa", "specialist", None, None));
        w.fact(partner_fact("pb", "specialist", None, None));
        w.fact(ControlEvent::CreditPurchase {
            purchase_id: "b1".into(),
            partner_id: "pa".into(),
            credits: dec("300"),
            paid_usd: dec("240"),
        });
        let tenant = |id: &str, partner: &str, value: &str| ControlEvent::Tenant {
            tenant_id: id.into(),
            partner_id: partner.into(),
            plan: TenantPlan::Paid,
            started_at: at("2026-06-29T00:00:00Z"),
            deployment_value_usd: Some(dec(value)),
        };
        w.fact(tenant("t-big", "pa", "1000"));
        w.fact(tenant("t-small", "pa", "200"));
        let mut pa = PartnerState::new("pa");
        pa.catch_up(&w.table, &w.ctx());
        let last = |s: &PartnerState, id: &str| -> Option<(Level, Reason)> {
            s.outbox().iter().rev().find_map(|o| match &o.item {
                Outbound::Decision(d) if d.scope == Scope::Tenant && d.id == id => {
                    Some((d.level, d.reason))
                }
                _ => None,
            })
        };
        let refused = Some((Level::Suspend, Reason::InsufficientCredits));
        assert_eq!(
            (last(&pa, "t-big"), last(&pa, "t-small")),
            (refused, refused)
        );
        w.fact(tenant("t-big", "pb", "1000"));
        assert!(pa.catch_up(&w.table, &w.ctx()));
        let lifted = Some((Level::Ok, Reason::Calm));
        assert_eq!((last(&pa, "t-big"), last(&pa, "t-small")), (lifted, lifted));
        let wallet = pa.ledger().credit_wallet();
        assert!(wallet.waiting().is_empty());
        assert_eq!(wallet.balance(), dec("100"));
    }

    /// A backdated invoice for a month before the oldest closed one is paid with the open
    /// month: that month is never closed automatically, so its statement would never be.
    #[test]
    fn a_backdated_line_before_the_oldest_closed_month_lands_in_the_open_month() {
        let mut w = World::new("default");
        w.fact(partner_fact("res", "gold", None, None));
        w.fact(ControlEvent::MonthClose {
            month: "2026-05".into(),
        });
        let mut s = PartnerState::new("res");
        s.catch_up(&w.table, &w.ctx());
        s.apply(
            &paid("res", "inv-old", "2026-03-20T00:00:00Z", "USD", "100.00"),
            &w.ctx(),
        )
        .unwrap();
        let march = super::super::money::Month::new(2026, 3).unwrap();
        let june = super::super::money::Month::new(2026, 6).unwrap();
        assert!(s.ledger().statement(march).lines.is_empty());
        let lines = s.ledger().statement(june).lines;
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].origin_month, Some(march));
        assert_eq!(
            s.ledger().statement(june).totals.commission_usd,
            dec("12.00")
        );
    }

    #[test]
    fn a_looping_chain_is_refused_and_audited() {
        let mut w = World::new("default");
        w.fact(partner_fact("a", "gold", Some("b"), Some("0.01")));
        w.fact(partner_fact("b", "gold", Some("a"), Some("0.01")));
        let mut s = PartnerState::new("a");
        let e = paid("a", "inv-1", "2026-05-02T00:00:00Z", "USD", "100.00");
        let err = s.apply(&e, &w.ctx()).unwrap_err();
        assert!(err.detail.starts_with(CHAIN_LOOPS), "{}", err.detail);
        assert_eq!(s.summary().money, MoneyTotals::default());
        let audits: Vec<&AuditNote> = s
            .outbox()
            .iter()
            .filter_map(|o| match &o.item {
                Outbound::Audit(n) => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(audits.len(), 1);
        assert_eq!(audits[0].action, "money.chain_loop_refused");
    }

    #[test]
    fn running_out_of_credits_warns_then_blocks_new_activations_until_credits_arrive() {
        use super::super::enforcement::{Level, Reason, Scope};
        let mut w = World::new("credits");
        w.fact(partner_fact("p", "authorized", None, None));
        let tenant = |id: &str, value: &str| ControlEvent::Tenant {
            tenant_id: id.into(),
            partner_id: "p".into(),
            plan: crate::domain::event::TenantPlan::Paid,
            started_at: at("2026-06-01T00:00:00Z"),
            deployment_value_usd: Some(dec(value)),
        };
        w.fact(ControlEvent::CreditPurchase {
            purchase_id: "buy-1".into(),
            partner_id: "p".into(),
            credits: dec("3000"),
            paid_usd: dec("2700"),
        });
        w.fact(tenant("t-1", "2500")); // leaves 500 < 1000: warned
        w.fact(tenant("t-2", "1000")); // does not fit: refused, tenant blocked
        let mut s = PartnerState::new("p");
        s.catch_up(&w.table, &w.ctx());
        assert_eq!(s.summary().money.credits_balance, dec("500"));
        let decisions: Vec<&Decision> = s
            .outbox()
            .iter()
            .filter_map(|o| match &o.item {
                Outbound::Decision(d) => Some(d),
                _ => None,
            })
            .collect();
        assert!(decisions.iter().any(|d| d.scope == Scope::Partner
            && d.level == Level::Warn
            && d.reason == Reason::InsufficientCredits));
        assert!(decisions.iter().any(|d| d.scope == Scope::Tenant
            && d.id == "t-2"
            && d.level == Level::Suspend
            && d.reason == Reason::InsufficientCredits));
        // A purchase lets the waiting activation through and lifts the tenant.
        w.fact(ControlEvent::CreditPurchase {
            purchase_id: "buy-2".into(),
            partner_id: "p".into(),
            credits: dec("5000"),
            paid_usd: dec("4500"),
        });
        let seen = s.outbox().len();
        s.catch_up(&w.table, &w.ctx());
        assert_eq!(s.summary().money.credits_balance, dec("4500"));
        let after: Vec<&Decision> = s.outbox()[seen..]
            .iter()
            .filter_map(|o| match &o.item {
                Outbound::Decision(d) => Some(d),
                _ => None,
            })
            .collect();
        assert!(after
            .iter()
            .any(|d| d.scope == Scope::Tenant && d.id == "t-2" && d.level == Level::Ok));
        assert!(after
            .iter()
            .any(|d| d.scope == Scope::Partner && d.level == Level::Ok));
    }
}
