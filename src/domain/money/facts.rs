//! [`MoneyFacts`]: the global facts of `warden.control.v1` that money reads, applied in
//! control-topic order (the same on every instance).
//!
//! Lines read the facts known when they are applied and keep what they used, so a later
//! fact never re-rates an accrued line. Partner-scoped facts that move money (MDF, credit
//! purchases, activations) are applied to the partner's [`super::Ledger`] by its owner; this
//! table only records which `tenant` fact activated each tenant.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::bonus::VolumeBonusRule;
use super::fx::{FxQuote, FxTable};
use crate::domain::event::ControlEvent;

/// What [`MoneyFacts::apply`] did with a fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactOutcome {
    Applied,
    /// Its offset is below one applied before (a replay).
    AlreadyApplied,
    /// Not a money fact, or a value money cannot use (why).
    Ignored(&'static str),
}

/// One tier of a partner, in force from `effective_from` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierEntry {
    pub tier: String,
    pub effective_from: DateTime<Utc>,
}

/// What money knows of one partner. Each `partner` fact is the partner's whole record:
/// an optional field it omits is cleared (the program's default applies again).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerMoneyFacts {
    /// Position among approvals (first `partner` fact), 0-based; `None` = not approved.
    pub approval_rank: Option<u64>,
    /// Sorted by `effective_from`; one entry per instant (a later fact replaces).
    pub tiers: Vec<TierEntry>,
    pub parent_id: Option<String>,
    pub override_rate: Option<Decimal>,
    pub coop_rate: Option<Decimal>,
    pub commission_rate: Option<Decimal>,
    pub net_of_cost: Option<bool>,
}

impl PartnerMoneyFacts {
    /// The tier in force at `ts`; `None` before the first one (the program default applies).
    pub fn tier_at(&self, ts: DateTime<Utc>) -> Option<&str> {
        let n = self.tiers.partition_point(|e| e.effective_from <= ts);
        n.checked_sub(1).map(|i| self.tiers[i].tier.as_str())
    }

    /// The tier with the latest `effective_from`: the partner's current tier on paper.
    pub fn latest_tier(&self) -> Option<&str> {
        self.tiers.last().map(|e| e.tier.as_str())
    }

    fn set_tier(&mut self, tier: &str, effective_from: DateTime<Utc>) {
        let entry = TierEntry {
            tier: tier.to_string(),
            effective_from,
        };
        match self
            .tiers
            .binary_search_by_key(&effective_from, |e| e.effective_from)
        {
            Ok(i) => self.tiers[i] = entry,
            Err(i) => self.tiers.insert(i, entry),
        }
    }
}

/// A time-boxed extra rate (CONTRACT §1 `spiff`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spiff {
    pub spiff_id: String,
    /// `None` = every partner.
    pub partner_id: Option<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub extra_rate: Decimal,
    pub new_logo_only: bool,
    pub min_contract_value_usd: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Activation {
    partner_id: String,
    offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyFacts {
    fx: FxTable,
    partners: HashMap<String, PartnerMoneyFacts>,
    approvals: u64,
    /// By id: iteration (and so a line's spiff list) is in id order.
    spiffs: BTreeMap<String, Spiff>,
    program_bonus: Option<VolumeBonusRule>,
    partner_bonus: HashMap<String, VolumeBonusRule>,
    /// tenant_id → its first `tenant` fact (the activation).
    activations: HashMap<String, Activation>,
    next_offset: i64,
}

impl MoneyFacts {
    pub fn new() -> Self {
        MoneyFacts::default()
    }

    /// Applies the control fact at `offset`. Offsets below the next expected one were
    /// applied already and change nothing, so a replay of the topic is harmless.
    pub fn apply(&mut self, offset: i64, fact: &ControlEvent) -> FactOutcome {
        if offset < self.next_offset {
            return FactOutcome::AlreadyApplied;
        }
        self.next_offset = offset.saturating_add(1);
        match fact {
            ControlEvent::Partner { .. } => return self.apply_partner(fact),
            ControlEvent::TierChange {
                partner_id,
                tier,
                effective_from,
            } => {
                let p = self.partners.entry(partner_id.clone()).or_default();
                p.set_tier(tier, *effective_from);
            }
            ControlEvent::Spiff { .. } => return self.apply_spiff(fact),
            ControlEvent::VolumeBonus {
                partner_id,
                monthly_threshold_usd,
                bonus_rate,
            } => {
                if bonus_rate.is_sign_negative() {
                    return FactOutcome::Ignored("negative rate");
                }
                let rule = VolumeBonusRule {
                    monthly_threshold_usd: *monthly_threshold_usd,
                    bonus_rate: *bonus_rate,
                };
                match partner_id {
                    Some(p) => {
                        self.partner_bonus.insert(p.clone(), rule);
                    }
                    None => self.program_bonus = Some(rule),
                }
            }
            ControlEvent::FxRate {
                currency,
                usd_per_unit,
                as_of,
            } => {
                if !self.fx.insert(currency, *usd_per_unit, *as_of) {
                    return FactOutcome::Ignored("fx rate for USD or not above 0");
                }
            }
            ControlEvent::Tenant {
                tenant_id,
                partner_id,
                ..
            } => {
                self.activations
                    .entry(tenant_id.clone())
                    .or_insert_with(|| Activation {
                        partner_id: partner_id.clone(),
                        offset,
                    });
            }
            ControlEvent::MdfExpense { .. }
            | ControlEvent::CreditPurchase { .. }
            | ControlEvent::Quota { .. }
            | ControlEvent::MonthClose { .. } => {
                return FactOutcome::Ignored("applied per partner, not a global money fact")
            }
        }
        FactOutcome::Applied
    }

    /// A `partner` fact: approves the partner (first time) and replaces its record.
    fn apply_partner(&mut self, fact: &ControlEvent) -> FactOutcome {
        let ControlEvent::Partner {
            partner_id,
            tier,
            tier_effective_from,
            parent_id,
            override_rate,
            coop_rate,
            commission_rate,
            net_of_cost,
            ..
        } = fact
        else {
            return FactOutcome::Ignored("not a partner fact");
        };
        let rates = [override_rate, coop_rate, commission_rate];
        if rates
            .iter()
            .any(|r| r.is_some_and(|r| r.is_sign_negative()))
        {
            return FactOutcome::Ignored("negative rate");
        }
        let approvals = &mut self.approvals;
        let p = self.partners.entry(partner_id.clone()).or_default();
        if p.approval_rank.is_none() {
            p.approval_rank = Some(*approvals);
            *approvals += 1;
        }
        p.set_tier(tier, *tier_effective_from);
        p.parent_id = parent_id.clone();
        p.override_rate = *override_rate;
        p.coop_rate = *coop_rate;
        p.commission_rate = *commission_rate;
        p.net_of_cost = *net_of_cost;
        FactOutcome::Applied
    }

    /// A `spiff` fact: replaces any earlier spiff with its id.
    fn apply_spiff(&mut self, fact: &ControlEvent) -> FactOutcome {
        let ControlEvent::Spiff {
            spiff_id,
            partner_id,
            from,
            to,
            extra_rate,
            new_logo_only,
            min_contract_value_usd,
        } = fact
        else {
            return FactOutcome::Ignored("not a spiff fact");
        };
        if extra_rate.is_sign_negative() {
            return FactOutcome::Ignored("negative rate");
        }
        let spiff = Spiff {
            spiff_id: spiff_id.clone(),
            partner_id: partner_id.clone(),
            from: *from,
            to: *to,
            extra_rate: *extra_rate,
            new_logo_only: *new_logo_only,
            min_contract_value_usd: *min_contract_value_usd,
        };
        self.spiffs.insert(spiff_id.clone(), spiff);
        FactOutcome::Applied
    }

    /// The control offset the next fact must have (everything below is applied).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn fx(&self) -> &FxTable {
        &self.fx
    }

    pub fn fx_quote(&self, currency: &str, ts: DateTime<Utc>) -> Option<FxQuote> {
        self.fx.quote(currency, ts)
    }

    pub fn partner(&self, partner_id: &str) -> Option<&PartnerMoneyFacts> {
        self.partners.get(partner_id)
    }

    /// Spiffs that may apply to `partner_id` (its own and the global ones), in id order.
    pub fn spiffs_for<'a>(&'a self, partner_id: &'a str) -> impl Iterator<Item = &'a Spiff> {
        self.spiffs
            .values()
            .filter(move |s| s.partner_id.as_deref().is_none_or(|p| p == partner_id))
    }

    /// The partner's own volume bonus, else the program-wide one.
    pub fn volume_bonus_for(&self, partner_id: &str) -> Option<VolumeBonusRule> {
        self.partner_bonus
            .get(partner_id)
            .copied()
            .or(self.program_bonus)
    }

    /// The partner and control offset of the tenant's activation (its first `tenant` fact).
    pub fn activation_of(&self, tenant_id: &str) -> Option<(&str, i64)> {
        self.activations
            .get(tenant_id)
            .map(|a| (a.partner_id.as_str(), a.offset))
    }
}

#[cfg(test)]
#[path = "facts_tests.rs"]
mod tests;
