//! Activation credits (credits programs, CONTRACT §1 `credit_purchase`, `tenant`).
//!
//! 1 credit = 1 USD of deployment value. A purchase adds credits once per `purchase_id`;
//! a tenant's activation (its first `tenant` fact) consumes its `deployment_value_usd`
//! (none given = 0). An activation that does not fit is refused and waits, signalled
//! `insufficient_credits` so enforcement blocks the tenant; a later purchase retries the
//! waiting activations in arrival order, stopping at the first that still does not fit.
//! Falling below the program's low-water mark raises one `low_credits` warning per crossing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{round_cents, sub};

/// The enforcement reason for a refused activation.
pub const INSUFFICIENT_CREDITS: &str = "insufficient_credits";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditPostingKind {
    Purchase,
    Activation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditPosting {
    /// `purchase_id`, or the activated `tenant_id`.
    pub id: String,
    pub kind: CreditPostingKind,
    /// Signed: purchases > 0, activations < 0.
    pub credits: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRecord {
    pub credits: Decimal,
    pub paid_usd: Decimal,
    /// The partner's tier and its discount when the purchase was applied (informational:
    /// billing sets `paid_usd`).
    pub tier: String,
    pub discount: Decimal,
    /// round(credits × (1 − discount)): what the tier discount implies.
    pub expected_paid_usd: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingActivation {
    pub tenant_id: String,
    pub started_at: DateTime<Utc>,
    pub credits: Decimal,
}

/// What a `tenant` or `credit_purchase` fact did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantOutcome {
    /// The tenant was activated (credits consumed in a credits program).
    Activated,
    /// Refused for want of credits: it waits for a purchase.
    Refused,
    /// A later fact for a tenant activated before (an upgrade, or a migration: 0 credits).
    NotAnActivation,
    Purchased,
    /// A credit purchase in a program without credits: nothing changed.
    NotACreditsProgram,
    /// Applied before (same purchase_id, or this tenant already activated or waiting).
    Duplicate,
    /// A tenant waiting for credits moved to another partner before it was activated: it
    /// leaves the queue, and the activations behind it that now fit go through.
    Withdrawn,
    /// The amounts do not fit the decimal range: nothing changed.
    Overflow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditSignal {
    /// The balance fell below the low-water mark: warn.
    LowCredits { balance: Decimal },
    /// An activation was refused: block the tenant (`insufficient_credits`).
    InsufficientCredits {
        tenant_id: String,
        needed: Decimal,
        balance: Decimal,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditEffects {
    pub outcome: TenantOutcome,
    /// Tenants activated by this fact, with their start (the tenant itself, or waiting
    /// ones a purchase let through): enforcement lifts their block.
    pub activated: Vec<(String, DateTime<Utc>)>,
    pub signals: Vec<CreditSignal>,
}

impl CreditEffects {
    pub(crate) fn only(outcome: TenantOutcome) -> Self {
        CreditEffects {
            outcome,
            activated: Vec::new(),
            signals: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditWallet {
    postings: Vec<CreditPosting>,
    balance: Decimal,
    purchases: BTreeMap<String, PurchaseRecord>,
    activated: BTreeSet<String>,
    waiting: Vec<PendingActivation>,
    low: bool,
}

impl CreditWallet {
    pub fn balance(&self) -> Decimal {
        self.balance
    }
    /// Below the program's low-water mark (the partner is warned).
    pub fn is_low(&self) -> bool {
        self.low
    }
    pub fn postings(&self) -> &[CreditPosting] {
        &self.postings
    }
    pub fn waiting(&self) -> &[PendingActivation] {
        &self.waiting
    }
    pub fn purchase_record(&self, purchase_id: &str) -> Option<&PurchaseRecord> {
        self.purchases.get(purchase_id)
    }
    /// Whether this tenant was activated here (consumed credits) or waits.
    pub fn knows(&self, tenant_id: &str) -> bool {
        self.activated.contains(tenant_id) || self.waiting.iter().any(|w| w.tenant_id == tenant_id)
    }

    pub(crate) fn purchase(
        &mut self,
        id: &str,
        credits: Decimal,
        paid_usd: Decimal,
        tier: &str,
        discount: Decimal,
        low_water: Decimal,
    ) -> CreditEffects {
        if self.purchases.contains_key(id) {
            return CreditEffects::only(TenantOutcome::Duplicate);
        }
        let expected = sub(Decimal::ONE, discount, "discount")
            .ok()
            .and_then(|keep| credits.checked_mul(keep))
            .map(round_cents);
        let (Some(balance), Some(expected_paid_usd)) =
            (self.balance.checked_add(credits), expected)
        else {
            return CreditEffects::only(TenantOutcome::Overflow);
        };
        self.balance = balance;
        self.postings.push(CreditPosting {
            id: id.to_string(),
            kind: CreditPostingKind::Purchase,
            credits,
        });
        let record = PurchaseRecord {
            credits,
            paid_usd,
            tier: tier.to_string(),
            discount,
            expected_paid_usd,
        };
        self.purchases.insert(id.to_string(), record);
        let mut fx = CreditEffects::only(TenantOutcome::Purchased);
        self.activate_waiting(&mut fx);
        self.check_low(low_water, &mut fx);
        fx
    }

    /// The tenant moved to another partner while its activation here waited for credits:
    /// it is no longer this partner's to activate, so a later purchase must not charge for
    /// it. The activations behind it that fit now go through, as after a purchase.
    pub(crate) fn withdraw(&mut self, tenant_id: &str, low_water: Decimal) -> CreditEffects {
        let Some(i) = self.waiting.iter().position(|w| w.tenant_id == tenant_id) else {
            return CreditEffects::only(TenantOutcome::NotAnActivation);
        };
        self.waiting.remove(i);
        let mut fx = CreditEffects::only(TenantOutcome::Withdrawn);
        self.activate_waiting(&mut fx);
        if !fx.activated.is_empty() {
            self.check_low(low_water, &mut fx);
        }
        fx
    }

    /// Activates the waiting tenants in arrival order, up to the first that does not fit.
    fn activate_waiting(&mut self, fx: &mut CreditEffects) {
        while let Some(next) = self.waiting.first() {
            if next.credits > self.balance {
                break;
            }
            let next = self.waiting.remove(0);
            self.consume(&next.tenant_id, next.credits);
            fx.activated.push((next.tenant_id, next.started_at));
        }
    }

    pub(crate) fn activate(
        &mut self,
        tenant_id: &str,
        started_at: DateTime<Utc>,
        credits: Decimal,
        low_water: Decimal,
    ) -> CreditEffects {
        // The decoder refuses negative money; a negative value would credit, so it counts as 0.
        let credits = credits.max(Decimal::ZERO);
        if self.knows(tenant_id) {
            return CreditEffects::only(TenantOutcome::Duplicate);
        }
        // Waiting activations go first: a newcomer may not jump the queue.
        if credits > self.balance || !self.waiting.is_empty() {
            self.waiting.push(PendingActivation {
                tenant_id: tenant_id.to_string(),
                started_at,
                credits,
            });
            let mut fx = CreditEffects::only(TenantOutcome::Refused);
            fx.signals.push(CreditSignal::InsufficientCredits {
                tenant_id: tenant_id.to_string(),
                needed: credits,
                balance: self.balance,
            });
            return fx;
        }
        self.consume(tenant_id, credits);
        let mut fx = CreditEffects::only(TenantOutcome::Activated);
        fx.activated.push((tenant_id.to_string(), started_at));
        self.check_low(low_water, &mut fx);
        fx
    }

    /// Only called with 0 ≤ credits ≤ balance (callers clamp and check), so the subtraction
    /// cannot overflow or go negative.
    fn consume(&mut self, tenant_id: &str, credits: Decimal) {
        self.balance -= credits;
        self.activated.insert(tenant_id.to_string());
        if !credits.is_zero() {
            self.postings.push(CreditPosting {
                id: tenant_id.to_string(),
                kind: CreditPostingKind::Activation,
                credits: -credits,
            });
        }
    }

    fn check_low(&mut self, low_water: Decimal, fx: &mut CreditEffects) {
        let low = self.balance < low_water;
        if low && !self.low {
            fx.signals.push(CreditSignal::LowCredits {
                balance: self.balance,
            });
        }
        self.low = low;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::testkit::{d, t};

    const LOW: &str = "1000";

    fn buy(w: &mut CreditWallet, id: &str, credits: &str) -> CreditEffects {
        w.purchase(id, d(credits), d("0"), "authorized", d("0.10"), d(LOW))
    }

    fn act(w: &mut CreditWallet, tenant: &str, credits: &str) -> CreditEffects {
        w.activate(tenant, t("2026-05-01T00:00:00Z"), d(credits), d(LOW))
    }

    #[test]
    fn purchases_apply_once_and_record_the_tier_discount() {
        let mut w = CreditWallet::default();
        // 5000 credits at 10 % off: 5000 × 0.90 = 4500.00 expected.
        let fx = w.purchase("p1", d("5000"), d("4500"), "authorized", d("0.10"), d(LOW));
        assert_eq!(fx.outcome, TenantOutcome::Purchased);
        assert_eq!(
            w.purchase_record("p1").unwrap().expected_paid_usd,
            d("4500.00")
        );
        assert_eq!(buy(&mut w, "p1", "5000").outcome, TenantOutcome::Duplicate);
        assert_eq!(w.balance(), d("5000"));
    }

    #[test]
    fn activations_consume_and_warn_once_below_low_water() {
        let mut w = CreditWallet::default();
        buy(&mut w, "p1", "3000");
        let fx = act(&mut w, "t1", "1500"); // 1500 left: not low
        assert_eq!(
            (fx.outcome, fx.signals.len()),
            (TenantOutcome::Activated, 0)
        );
        let fx = act(&mut w, "t2", "600"); // 900 < 1000: warn
        assert_eq!(
            fx.signals,
            vec![CreditSignal::LowCredits { balance: d("900") }]
        );
        let fx = act(&mut w, "t3", "100"); // still low: no second warning
        assert!(fx.signals.is_empty());
        assert_eq!(act(&mut w, "t3", "100").outcome, TenantOutcome::Duplicate);
        let sum: Decimal = w.postings().iter().map(|p| p.credits).sum();
        assert_eq!((w.balance(), sum), (d("800"), d("800")));
    }

    #[test]
    fn an_activation_that_does_not_fit_is_refused_then_retried_after_a_purchase() {
        let mut w = CreditWallet::default();
        buy(&mut w, "p1", "100");
        let fx = act(&mut w, "big", "500");
        assert_eq!(fx.outcome, TenantOutcome::Refused);
        assert_eq!(
            fx.signals,
            vec![CreditSignal::InsufficientCredits {
                tenant_id: "big".into(),
                needed: d("500"),
                balance: d("100")
            }]
        );
        // A small one may not jump the queue.
        assert_eq!(act(&mut w, "small", "10").outcome, TenantOutcome::Refused);
        assert_eq!(w.balance(), d("100"));
        let fx = buy(&mut w, "p2", "2000"); // 2100: big (500) then small (10) → 1590
        let ids: Vec<&str> = fx.activated.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(ids, ["big", "small"]);
        assert_eq!(w.balance(), d("1590"));
        assert!(w.waiting().is_empty());
    }
}
