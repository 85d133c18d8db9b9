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

use super::event::ControlEvent;
use super::money::{MoneyFacts, Month};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerFacts {
    pub name: String,
    pub tier: String,
    pub tier_effective_from: DateTime<Utc>,
    pub parent_id: Option<String>,
    /// Position of the partner's first `partner` fact among all approvals (0-based):
    /// "the first N approved partners" is decided by control-topic order.
    pub approval_rank: u64,
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
        match fact {
            ControlEvent::Partner {
                partner_id,
                name,
                tier,
                tier_effective_from,
                parent_id,
                ..
            } => {
                let rank = self.partners.len() as u64;
                let entry =
                    self.partners
                        .entry(partner_id.clone())
                        .or_insert_with(|| PartnerFacts {
                            name: name.clone(),
                            tier: tier.clone(),
                            tier_effective_from: *tier_effective_from,
                            parent_id: parent_id.clone(),
                            approval_rank: rank,
                        });
                entry.name = name.clone();
                entry.tier = tier.clone();
                entry.tier_effective_from = *tier_effective_from;
                entry.parent_id = parent_id.clone();
            }
            ControlEvent::TierChange {
                partner_id,
                tier,
                effective_from,
            } => {
                if let Some(p) = self.partners.get_mut(partner_id) {
                    if *effective_from >= p.tier_effective_from {
                        p.tier = tier.clone();
                        p.tier_effective_from = *effective_from;
                    }
                }
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

    /// The tier a partner is in now (`default` for a partner without a `partner` fact).
    pub fn tier_of(&self, partner_id: &str) -> &str {
        self.partners
            .get(partner_id)
            .map(|p| p.tier.as_str())
            .unwrap_or("default")
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
        assert_eq!(t.partner("b").unwrap().tier, "platinum");
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
        assert_eq!(t.tier_of("b"), "gold");
        assert_eq!(t.tier_of("zzz"), "default");
    }

    #[test]
    fn tier_change_updates_the_current_tier() {
        let mut t = ControlTable::default();
        t.apply(0, &partner("a", "silver"));
        t.apply(
            1,
            &ControlEvent::TierChange {
                partner_id: "a".into(),
                tier: "gold".into(),
                effective_from: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
            },
        );
        assert_eq!(t.partner("a").unwrap().tier, "gold");
    }
}
