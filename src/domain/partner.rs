//! A partner's live state and the one function that changes it: [`PartnerState::apply`].
//!
//! Pure: no I/O, no clock. The actor (actors/partner.rs) owns one `PartnerState`, feeds it
//! decoded events in offset order and hands snapshots to the store. Every check runs
//! before any field changes, so a rejected event leaves no trace.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::dedup::{Admission, DedupWindow};
use super::enforcement::{
    Decision, EnforcementPolicy, EnforcementState, LevelView, QuotaSpec, QuotaView, TenantFact,
};
use super::event::{
    AttributionEvent, ControlEvent, DeadLetterReason, InvoiceEvent, InvoiceKind, PartnerEvent,
    Rejection, UsageEvent,
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
    /// The totals after adding `e`, or `None` if any counter would overflow.
    fn plus(&self, e: &UsageEvent) -> Option<UsageTotals> {
        Some(UsageTotals {
            events: self.events.checked_add(1)?,
            requests: self.requests.checked_add(e.requests)?,
            errors: self.errors.checked_add(e.errors)?,
            auth_failures: self.auth_failures.checked_add(e.auth_failures)?,
            bytes: self.bytes.checked_add(e.bytes)?,
        })
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
}

impl Default for ApplyRules {
    fn default() -> Self {
        ApplyRules {
            dedup_window: Duration::hours(24),
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
}

/// A decision in the partner's outbox: durable with the state that made it, published
/// after, removed once the data plane and the topic have it (CONTRACT §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Per-partner number: `<partner_id>:<n>` is the decision's stable outbox id.
    pub n: u64,
    pub decision: Decision,
}

/// What applying needs besides the event: rules, the partner's tier, enforcement policy.
#[derive(Debug, Clone, Copy)]
pub struct ApplyContext<'a> {
    pub rules: &'a ApplyRules,
    pub tier: &'a str,
    pub policy: &'a EnforcementPolicy,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartnerState {
    pub partner_id: String,
    pub usage: UsageTotals,
    pub invoices: InvoiceCounts,
    /// Newest event time applied (the partner's event-time watermark).
    pub last_seen: Option<DateTime<Utc>>,
    pub duplicates_skipped: u64,
    usage_ids: DedupWindow,
    /// `(invoice_id, kind)` pairs applied: kept forever (CONTRACT §1).
    invoice_ids: BTreeSet<String>,
    /// `attribution_id`s applied: kept forever.
    attribution_ids: BTreeSet<String>,
    /// Next control-topic offset to apply (partner-scoped facts below it are applied).
    #[serde(default)]
    pub control_applied: i64,
    #[serde(default)]
    enforcement: EnforcementState,
    #[serde(default)]
    outbox: Vec<OutboxEntry>,
    #[serde(default)]
    next_outbox: u64,
}

impl PartnerState {
    pub fn new(partner_id: impl Into<String>) -> Self {
        PartnerState {
            partner_id: partner_id.into(),
            ..Default::default()
        }
    }

    /// Applies one event of this partner. `Err` means the event is rejected and must be
    /// dead-lettered; the state is then unchanged.
    pub fn apply(
        &mut self,
        event: &PartnerEvent,
        rules: &ApplyRules,
    ) -> Result<Applied, Rejection> {
        let applied = match event {
            PartnerEvent::Usage(e) => self.apply_usage(e, rules)?,
            PartnerEvent::Invoice(e) => self.apply_invoice(e),
            PartnerEvent::Attribution(e) => self.apply_attribution(e),
        };
        match applied {
            Applied::Counted => self.last_seen = self.last_seen.max(Some(event.ts())),
            Applied::Duplicate => {
                self.duplicates_skipped = self.duplicates_skipped.saturating_add(1)
            }
        }
        Ok(applied)
    }

    fn apply_usage(&mut self, e: &UsageEvent, rules: &ApplyRules) -> Result<Applied, Rejection> {
        // Overflow is checked before the id is marked seen, so a rejected event is not "seen".
        let next = self.usage.plus(e).ok_or_else(|| {
            Rejection::new(
                DeadLetterReason::ArithmeticOverflow,
                "usage counter overflow",
            )
        })?;
        match self.usage_ids.admit(&e.event_id, e.ts, rules.dedup_window) {
            Admission::TooOld => Err(Rejection::new(
                DeadLetterReason::OutsideDedupWindow,
                format!(
                    "ts {} is older than the dedup window behind the partner's newest ts",
                    e.ts
                ),
            )),
            Admission::Duplicate => Ok(Applied::Duplicate),
            Admission::New => {
                self.usage = next;
                Ok(Applied::Counted)
            }
        }
    }

    fn apply_invoice(&mut self, e: &InvoiceEvent) -> Applied {
        let kind = match e.kind {
            InvoiceKind::Paid => "paid",
            InvoiceKind::Refund => "refund",
            InvoiceKind::Chargeback => "chargeback",
        };
        if !self.invoice_ids.insert(format!("{}:{kind}", e.invoice_id)) {
            return Applied::Duplicate;
        }
        let counter = match e.kind {
            InvoiceKind::Paid => &mut self.invoices.paid,
            InvoiceKind::Refund => &mut self.invoices.refunds,
            InvoiceKind::Chargeback => &mut self.invoices.chargebacks,
        };
        *counter = counter.saturating_add(1);
        Applied::Counted
    }

    fn apply_attribution(&mut self, e: &AttributionEvent) -> Applied {
        if !self.attribution_ids.insert(e.attribution_id.clone()) {
            return Applied::Duplicate;
        }
        self.invoices.attributions = self.invoices.attributions.saturating_add(1);
        Applied::Counted
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
        }
    }

    /// [`PartnerState::summary`] with the quota as the partner's tier sets it.
    pub fn summary_in(&self, tier: &str, policy: &EnforcementPolicy) -> PartnerSummary {
        let mut s = self.summary();
        s.quota = Some(self.enforcement.quota(tier, policy));
        s
    }

    /// Applies `event` and runs enforcement on what it changed; decisions go to the outbox.
    pub fn apply_with(
        &mut self,
        event: &PartnerEvent,
        ctx: &ApplyContext<'_>,
    ) -> Result<Applied, Rejection> {
        self.ensure_enforcement_owner();
        let applied = self.apply(event, ctx.rules)?;
        if applied == Applied::Counted {
            let decisions = match event {
                PartnerEvent::Usage(e) => self.enforcement.on_usage(e, ctx.tier, ctx.policy),
                PartnerEvent::Invoice(e) if e.kind == InvoiceKind::Chargeback => {
                    self.enforcement.on_chargeback(e.ts, ctx.tier, ctx.policy)
                }
                _ => Vec::new(),
            };
            self.push_outbox(decisions);
        }
        Ok(applied)
    }

    /// Applies one partner-scoped control fact (quota, tenant) at control offset `offset`.
    /// Facts at or below [`PartnerState::control_applied`] were applied already.
    pub fn apply_control(
        &mut self,
        offset: i64,
        fact: &ControlEvent,
        wall_now: DateTime<Utc>,
        policy: &EnforcementPolicy,
    ) {
        if offset < self.control_applied {
            return;
        }
        self.ensure_enforcement_owner();
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
                let fact = TenantFact {
                    tenant_id,
                    partner_id,
                    plan: *plan,
                    started_at: *started_at,
                };
                let decisions = self.enforcement.on_tenant(fact, wall_now, policy);
                self.push_outbox(decisions);
            }
            _ => {}
        }
        self.control_applied = offset + 1;
    }

    /// Time passing: returns whether anything changed (a decision was made).
    pub fn tick(
        &mut self,
        watermark: DateTime<Utc>,
        wall_now: DateTime<Utc>,
        tier: &str,
        policy: &EnforcementPolicy,
    ) -> bool {
        self.ensure_enforcement_owner();
        let decisions = self.enforcement.tick(watermark, wall_now, tier, policy);
        let changed = !decisions.is_empty();
        self.push_outbox(decisions);
        changed
    }

    /// Decisions not yet known to be published.
    pub fn outbox(&self) -> &[OutboxEntry] {
        &self.outbox
    }

    /// Drops outbox entries up to and including `n`: they are published.
    pub fn ack_outbox(&mut self, n: u64) {
        self.outbox.retain(|e| e.n > n);
    }

    /// The partner's own enforcement level now.
    pub fn level(&self) -> LevelView {
        self.enforcement.partner_level()
    }

    fn push_outbox(&mut self, decisions: Vec<Decision>) {
        for decision in decisions {
            self.next_outbox += 1;
            self.outbox.push(OutboxEntry {
                n: self.next_outbox,
                decision,
            });
        }
    }

    /// A state restored from an older snapshot has a default enforcement state.
    fn ensure_enforcement_owner(&mut self) {
        if self.enforcement.partner_id().is_empty() {
            self.enforcement = EnforcementState::new(self.partner_id.clone());
        }
    }

    /// Ids currently held for usage dedup (a memory figure for metrics and docs).
    pub fn dedup_entries(&self) -> usize {
        self.usage_ids.len() + self.invoice_ids.len() + self.attribution_ids.len()
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

    #[test]
    fn usage_is_counted_once_per_event_id() {
        let mut s = PartnerState::new("p-1");
        let rules = ApplyRules::default();
        assert_eq!(s.apply(&usage("a", 0, 10, 2), &rules), Ok(Applied::Counted));
        assert_eq!(
            s.apply(&usage("a", 0, 10, 2), &rules),
            Ok(Applied::Duplicate)
        );
        assert_eq!(s.apply(&usage("b", 5, 7, 0), &rules), Ok(Applied::Counted));
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

    #[test]
    fn event_outside_the_dedup_window_is_rejected_without_effect() {
        let mut s = PartnerState::new("p-1");
        let rules = ApplyRules {
            dedup_window: Duration::seconds(60),
        };
        s.apply(&usage("a", 1000, 1, 0), &rules).unwrap();
        let before = s.clone();
        let err = s.apply(&usage("old", 900, 1, 0), &rules).unwrap_err();
        assert_eq!(err.reason, DeadLetterReason::OutsideDedupWindow);
        assert_eq!(s, before);
    }

    #[test]
    fn overflow_is_rejected_and_the_id_is_not_marked_seen() {
        let mut s = PartnerState::new("p-1");
        let rules = ApplyRules::default();
        s.apply(&usage("a", 0, u64::MAX, 0), &rules).unwrap();
        let err = s.apply(&usage("b", 1, 1, 0), &rules).unwrap_err();
        assert_eq!(err.reason, DeadLetterReason::ArithmeticOverflow);
        assert_eq!(s.usage.requests, u64::MAX);
        assert_eq!(s.usage.events, 1);
    }

    #[test]
    fn snapshot_round_trip_keeps_dedup_memory() {
        let mut s = PartnerState::new("p-1");
        let rules = ApplyRules::default();
        s.apply(&usage("a", 0, 3, 1), &rules).unwrap();
        let bytes = serde_json::to_vec(&s).unwrap();
        let mut back: PartnerState = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back.apply(&usage("a", 0, 3, 1), &rules),
            Ok(Applied::Duplicate)
        );
        assert_eq!(back.usage.requests, 3);
    }
}
