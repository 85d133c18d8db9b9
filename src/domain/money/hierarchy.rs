//! The override chain (CONTRACT §2 "Hierarchy"): every ancestor on the `parent_id` chain
//! earns its override rate × the line's base, rounded on its own.
//!
//! The chain and rates are those known when the line is applied. An ancestor's rate is its
//! own `override_rate` if its `partner` fact sets one, else its tier's default (its tier in
//! force at the line's `ts`). A chain that comes back to a partner already on it loops and
//! the line is rejected.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::facts::MoneyFacts;
use super::line::OverridePart;
use super::program::Program;
use super::rates::tier_at;
use super::{cents_of, Rejection};
use crate::domain::event::DeadLetterReason;

/// The detail of the rejection for a looping chain (reason `invalid_value`).
pub const CHAIN_LOOPS: &str = "parent chain loops";

/// One override part per ancestor, nearest first; empty when the program has no overrides.
pub(crate) fn override_parts(
    partner_id: &str,
    ts: DateTime<Utc>,
    base_usd: Decimal,
    facts: &MoneyFacts,
    program: &Program,
) -> Result<Vec<OverridePart>, Rejection> {
    let mut parts = Vec::new();
    if !program.downline_overrides {
        return Ok(parts);
    }
    let mut seen = BTreeSet::from([partner_id]);
    let mut next = facts
        .partner(partner_id)
        .and_then(|p| p.parent_id.as_deref());
    while let Some(ancestor) = next {
        if !seen.insert(ancestor) {
            return Err(Rejection::new(
                DeadLetterReason::InvalidValue,
                format!("{CHAIN_LOOPS} at `{ancestor}` (from `{partner_id}`)"),
            ));
        }
        let af = facts.partner(ancestor);
        let rate = match af.and_then(|a| a.override_rate) {
            Some(rate) => rate,
            None => tier_at(program, ancestor, af, ts)?.1.override_rate,
        };
        parts.push(OverridePart {
            ancestor_id: ancestor.to_string(),
            override_rate: rate,
            amount_usd: cents_of(base_usd, rate, "override")?,
        });
        next = af.and_then(|a| a.parent_id.as_deref());
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::ControlEvent;
    use crate::domain::money::testkit::{d, default_program, partner_fact, program, t};

    fn with_override(p: &str, parent: Option<&str>, rate: Option<&str>) -> ControlEvent {
        let mut f = partner_fact(p, "gold", parent);
        if let ControlEvent::Partner { override_rate, .. } = &mut f {
            *override_rate = rate.map(d);
        }
        f
    }

    #[test]
    fn each_ancestor_earns_its_rate_rounded_on_its_own() {
        let mut f = MoneyFacts::new();
        f.apply(0, &with_override("dist", None, Some("0.02")));
        f.apply(1, &with_override("sub", Some("dist"), Some("0.03")));
        f.apply(2, &with_override("p", Some("sub"), None));
        // base 1234.56: sub 0.03 × 1234.56 = 37.0368 → 37.04; dist 0.02 × = 24.6912 → 24.69.
        let parts = override_parts(
            "p",
            t("2026-05-01T00:00:00Z"),
            d("1234.56"),
            &f,
            &default_program(),
        )
        .unwrap();
        let got: Vec<(&str, Decimal)> = parts
            .iter()
            .map(|o| (o.ancestor_id.as_str(), o.amount_usd))
            .collect();
        assert_eq!(got, vec![("sub", d("37.04")), ("dist", d("24.69"))]);
    }

    #[test]
    fn an_ancestor_without_its_own_rate_gets_its_tier_default() {
        let mut f = MoneyFacts::new();
        f.apply(0, &with_override("p", Some("unknown-parent"), None));
        // The default program's tier override is 0: a record, with amount 0.
        let parts = override_parts(
            "p",
            t("2026-05-01T00:00:00Z"),
            d("100"),
            &f,
            &default_program(),
        )
        .unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(
            (parts[0].override_rate, parts[0].amount_usd),
            (d("0"), d("0"))
        );
    }

    #[test]
    fn a_loop_is_rejected() {
        let mut f = MoneyFacts::new();
        f.apply(0, &with_override("a", Some("b"), Some("0.01")));
        f.apply(1, &with_override("b", Some("c"), Some("0.01")));
        f.apply(2, &with_override("c", Some("a"), Some("0.01")));
        let err = override_parts(
            "a",
            t("2026-05-01T00:00:00Z"),
            d("100"),
            &f,
            &default_program(),
        )
        .unwrap_err();
        assert_eq!(err.reason, DeadLetterReason::InvalidValue);
        assert!(err.detail.starts_with(CHAIN_LOOPS));
        // A self-parent loops too.
        f.apply(3, &with_override("s", Some("s"), None));
        assert!(override_parts(
            "s",
            t("2026-05-01T00:00:00Z"),
            d("1"),
            &f,
            &default_program()
        )
        .is_err());
    }

    #[test]
    fn credits_programs_have_no_overrides() {
        let mut f = MoneyFacts::new();
        f.apply(0, &with_override("a", Some("a"), Some("0.01")));
        let parts = override_parts(
            "a",
            t("2026-05-01T00:00:00Z"),
            d("100"),
            &f,
            &program("credits"),
        )
        .unwrap();
        assert!(parts.is_empty());
    }
}
