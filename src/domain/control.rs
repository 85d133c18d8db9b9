//! The global table built from `warden.control.v1` (CONTRACT §1): every instance reads the
//! whole topic, so every instance holds the same facts in the same order.
//!
//! Partner-scoped facts that move money are applied to partner state by the owner; this
//! table keeps the facts every reader needs (who a partner is, its tier and parent, the
//! money facts of [`MoneyFacts`]) and, by offset, the facts each partner's owner still has
//! to apply to the partner's state: its own scoped facts, and the global facts that act on
//! every ledger (FX arrivals for parked lines, month closes).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::event::{ControlEvent, TenantPlan};
use super::money::{MoneyFacts, Month, TierEntry};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerFacts {
    pub name: String,
    pub parent_id: Option<String>,
    /// Position of the partner's first `partner` fact among all approvals (0-based):
    /// "the first N approved partners" is decided by control-topic order.
    pub approval_rank: u64,
}

/// The partner's tier as the control table knows it: the dated tier changes, so
/// enforcement judges each moment by the tier in force then (CONTRACT §2: "Tier changes
/// apply from `effective_from` on"), and the tier of a partner without any.
#[derive(Debug, Clone, Copy)]
pub struct TierAt<'a> {
    without_changes: &'a str,
    changes: &'a [TierEntry],
}

impl<'a> TierAt<'a> {
    /// `changes` sorted by `effective_from`.
    pub fn new(without_changes: &'a str, changes: &'a [TierEntry]) -> Self {
        TierAt {
            without_changes,
            changes,
        }
    }

    /// One tier at all times (tests, benches, a partner without dated changes).
    pub fn fixed(tier: &'a str) -> Self {
        TierAt::new(tier, &[])
    }

    /// The tier in force at `ts`: the latest change in effect by then; before the first,
    /// the first (the partner's tier as approved); with no changes, `without_changes`.
    pub fn at(&self, ts: DateTime<Utc>) -> &'a str {
        let n = self.changes.partition_point(|e| e.effective_from <= ts);
        match self.changes.get(n.saturating_sub(1)) {
            Some(entry) => entry.tier.as_str(),
            None => self.without_changes,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ControlTable {
    partners: BTreeMap<String, PartnerFacts>,
    /// Partner-scoped facts the owner applies to partner state (quota, tenant, and the
    /// money facts), with their control offsets, in topic order.
    scoped: std::collections::HashMap<String, Vec<(i64, ControlEvent)>>,
    /// Facts without a partner that act on every partner's ledger (`fx_rate`,
    /// `month_close`), in topic order.
    global: Vec<(i64, ControlEvent)>,
    /// Offsets and partners of the scoped facts that move money or credits (`mdf_expense`,
    /// `credit_purchase`, `tenant`): their owners wake those partners to apply them.
    money_moves: Vec<(i64, String)>,
    closed_months: BTreeSet<Month>,
    /// `tenant` facts applied, by identity (CONTRACT §1: tenant_id, partner_id, plan): a
    /// repeat changes nothing, so a retried pilot fact cannot restart a pilot's 30 days or
    /// put an upgraded tenant back on an expired pilot.
    tenant_identities: std::collections::HashSet<(String, String, TenantPlan)>,
    /// The partner each tenant's last `tenant` fact named: a fact naming another partner
    /// is a migration, and the partner it leaves must hear it to lift its tenant.
    tenant_owners: std::collections::HashMap<String, String>,
    money: MoneyFacts,
    facts_applied: u64,
    /// The control-topic offset of the last fact applied (+1), for readiness.
    next_offset: i64,
}

impl ControlTable {
    pub fn apply(&mut self, offset: i64, fact: &ControlEvent) {
        self.facts_applied += 1;
        self.next_offset = self.next_offset.max(offset + 1);
        self.money.apply(offset, fact);
        if let ControlEvent::Tenant {
            tenant_id,
            partner_id,
            plan,
            ..
        } = fact
        {
            let identity = (tenant_id.clone(), partner_id.clone(), *plan);
            let left = self
                .tenant_owners
                .get(tenant_id)
                .filter(|previous| *previous != partner_id)
                .cloned();
            // A repeat of an applied fact changes nothing, unless the tenant has moved away
            // since: then it is a move back, which both partners must hear.
            if !self.tenant_identities.insert(identity) && left.is_none() {
                return;
            }
            self.tenant_owners
                .insert(tenant_id.clone(), partner_id.clone());
            if let Some(previous) = left {
                // Filed under the partner it leaves too (its owner wakes it): that partner
                // forgets the tenant and lifts what it held on it, and its ledger withdraws
                // an activation of it still waiting for credits (`Ledger::tenant_left`).
                self.money_moves.push((offset, previous.clone()));
                self.scoped
                    .entry(previous)
                    .or_default()
                    .push((offset, fact.clone()));
            }
        }
        match fact {
            ControlEvent::Partner {
                partner_id,
                name,
                parent_id,
                ..
            } => {
                let rank = self.partners.len() as u64;
                let entry =
                    self.partners
                        .entry(partner_id.clone())
                        .or_insert_with(|| PartnerFacts {
                            name: name.clone(),
                            parent_id: parent_id.clone(),
                            approval_rank: rank,
                        });
                entry.name = name.clone();
                entry.parent_id = parent_id.clone();
            }
            ControlEvent::FxRate { .. } => self.global.push((offset, fact.clone())),
            ControlEvent::MonthClose { month } => {
                if let Ok(m) = month.parse::<Month>() {
                    self.closed_months.insert(m);
                    self.global.push((offset, fact.clone()));
                }
            }
            _ => {}
        }
        if let ControlEvent::Tenant { partner_id, .. }
        | ControlEvent::MdfExpense { partner_id, .. }
        | ControlEvent::CreditPurchase { partner_id, .. } = fact
        {
            self.money_moves.push((offset, partner_id.clone()));
        }
        if matches!(
            fact,
            ControlEvent::Quota { .. }
                | ControlEvent::Tenant { .. }
                | ControlEvent::MdfExpense { .. }
                | ControlEvent::CreditPurchase { .. }
        ) {
            if let Some(partner) = fact.partner_id() {
                self.scoped
                    .entry(partner.to_owned())
                    .or_default()
                    .push((offset, fact.clone()));
            }
        }
    }

    /// The facts `partner_id`'s owner applies to its state, at or after control offset
    /// `from`, in offset order: the partner's scoped facts and the month closes, plus the
    /// FX rates when `with_fx` (only a ledger with parked lines needs them).
    pub fn facts_for(
        &self,
        partner_id: &str,
        from: i64,
        with_fx: bool,
    ) -> Vec<(i64, ControlEvent)> {
        let own = match self.scoped.get(partner_id) {
            Some(facts) => &facts[facts.partition_point(|(o, _)| *o < from)..],
            None => &[],
        };
        let global = &self.global[self.global.partition_point(|(o, _)| *o < from)..];
        let mut out: Vec<(i64, ControlEvent)> = own
            .iter()
            .chain(
                global
                    .iter()
                    .filter(|(_, f)| with_fx || matches!(f, ControlEvent::MonthClose { .. })),
            )
            .cloned()
            .collect();
        out.sort_by_key(|(o, _)| *o);
        out
    }

    /// Partners with a money-moving scoped fact at or after `from`, and the offset after
    /// the newest such fact (the next `from`).
    pub fn money_moves_since(&self, from: i64) -> (Vec<&str>, i64) {
        let start = self.money_moves.partition_point(|(o, _)| *o < from);
        let moves = &self.money_moves[start..];
        let next = moves.last().map_or(from, |(o, _)| o + 1);
        (moves.iter().map(|(_, p)| p.as_str()).collect(), next)
    }

    /// The money facts (rates, tiers, parents, spiffs, bonuses, activations).
    pub fn money(&self) -> &MoneyFacts {
        &self.money
    }

    pub fn is_closed(&self, month: Month) -> bool {
        self.closed_months.contains(&month)
    }

    pub fn closed_months(&self) -> &BTreeSet<Month> {
        &self.closed_months
    }

    /// A partner's tiers over time (`default` for a partner without a tier fact).
    pub fn tier(&self, partner_id: &str) -> TierAt<'_> {
        let changes = self
            .money
            .partner(partner_id)
            .map_or(&[][..], |facts| &facts.tiers[..]);
        TierAt::new("default", changes)
    }

    pub fn partner(&self, id: &str) -> Option<&PartnerFacts> {
        self.partners.get(id)
    }

    pub fn facts_applied(&self) -> u64 {
        self.facts_applied
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partner(id: &str, tier: &str) -> ControlEvent {
        ControlEvent::Partner {
            partner_id: id.into(),
            name: format!("{id} Ltd"),
            tier: tier.into(),
            tier_effective_from: DateTime::from_timestamp(1_780_000_000, 0).unwrap(),
            parent_id: None,
            override_rate: None,
            coop_rate: None,
            commission_rate: None,
            net_of_cost: None,
        }
    }

    #[test]
    fn approval_rank_follows_topic_order_and_updates_keep_it() {
        let mut t = ControlTable::default();
        t.apply(0, &partner("b", "gold"));
        t.apply(1, &partner("a", "silver"));
        t.apply(2, &partner("b", "platinum"));
        assert_eq!(t.partner("b").unwrap().approval_rank, 0);
        let later = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        assert_eq!(t.tier("b").at(later), "platinum");
        assert_eq!(t.partner("a").unwrap().approval_rank, 1);
        assert_eq!(t.facts_applied(), 3);
        assert_eq!(t.next_offset(), 3);
    }

    #[test]
    fn scoped_facts_are_kept_per_partner_in_offset_order() {
        let mut t = ControlTable::default();
        let quota = |p: &str, n: u64| ControlEvent::Quota {
            partner_id: p.into(),
            integration_id: None,
            monthly_requests: n,
            burst_rps: 10,
            overage: crate::domain::event::OveragePolicy::Block,
        };
        t.apply(0, &quota("a", 1));
        t.apply(1, &partner("b", "gold"));
        t.apply(2, &quota("b", 2));
        t.apply(3, &quota("a", 3));
        assert_eq!(
            t.facts_for("a", 0, true)
                .iter()
                .map(|(o, _)| *o)
                .collect::<Vec<_>>(),
            vec![0, 3]
        );
        assert_eq!(
            t.facts_for("a", 1, true)
                .iter()
                .map(|(o, _)| *o)
                .collect::<Vec<_>>(),
            vec![3]
        );
        assert!(t.facts_for("a", 4, true).is_empty());
        assert_eq!(t.facts_for("b", 0, true).len(), 1);
        let later = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        assert_eq!(t.tier("b").at(later), "gold");
        assert_eq!(t.tier("zzz").at(later), "default");
    }

    /// A tier change dated later is not in force before its date, and one dated earlier
    /// than the partner's approval still starts at its own date (CONTRACT §2).
    #[test]
    fn a_tier_change_is_in_force_from_its_effective_date_on() {
        let at = |secs: i64| DateTime::from_timestamp(secs, 0).unwrap();
        let mut t = ControlTable::default();
        t.apply(0, &partner("a", "silver")); // effective 1_780_000_000
        t.apply(
            1,
            &ControlEvent::TierChange {
                partner_id: "a".into(),
                tier: "bronze".into(),
                effective_from: at(1_790_000_000),
            },
        );
        let tier = t.tier("a");
        assert_eq!(tier.at(at(1_789_999_999)), "silver", "not yet in force");
        assert_eq!(
            tier.at(at(1_790_000_000)),
            "bronze",
            "in force from its date"
        );
        assert_eq!(
            tier.at(at(1_700_000_000)),
            "silver",
            "before approval: as approved"
        );
        // A `partner` fact repeated later with its original date moves nothing.
        t.apply(2, &partner("a", "silver"));
        assert_eq!(t.tier("a").at(at(1_795_000_000)), "bronze");
    }
}
