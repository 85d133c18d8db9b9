//! The global table built from `warden.control.v1` (CONTRACT §1): every instance reads the
//! whole topic, so every instance holds the same facts in the same order.
//!
//! Partner-scoped facts that move money are applied to partner state by the owner; this
//! table keeps the facts every reader needs (who a partner is, its tier and parent).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::event::ControlEvent;

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
    facts_applied: u64,
    /// The control-topic offset of the last fact applied (+1), for readiness.
    next_offset: i64,
}

impl ControlTable {
    pub fn apply(&mut self, offset: i64, fact: &ControlEvent) {
        self.facts_applied += 1;
        self.next_offset = self.next_offset.max(offset + 1);
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
            _ => {}
        }
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
