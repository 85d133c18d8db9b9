//! The rates of a line (CONTRACT §2 "Rate"): the tier in force at `ts` (or the partner's
//! `commission_rate`, or the launch promo) plus every matching spiff; and the co-op rate.
//!
//! Precedence of the base rate, most specific first: the partner's own `commission_rate`
//! ("unless otherwise agreed"), then the promo for the first N approved partners, then the
//! tier rate in force at `ts`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::facts::{MoneyFacts, PartnerMoneyFacts};
use super::fx::FxQuote;
use super::line::{RateSource, SpiffApplied};
use super::program::{Program, TierRates};
use super::{add, mul, Rejection};
use crate::domain::event::{DeadLetterReason, InvoiceEvent};

/// The tier of a partner at `ts` and its rates: the program's default tier before the
/// partner's first tier (or with no facts at all). A tier the program does not know is
/// rejected: money is never computed from a guessed rate.
pub(crate) fn tier_at<'p>(
    program: &'p Program,
    partner_id: &str,
    facts: Option<&PartnerMoneyFacts>,
    ts: DateTime<Utc>,
) -> Result<(String, &'p TierRates), Rejection> {
    let name = facts
        .and_then(|f| f.tier_at(ts))
        .unwrap_or(&program.default_tier);
    let rates = program.tier(name).ok_or_else(|| {
        Rejection::new(
            DeadLetterReason::InvalidValue,
            format!(
                "tier `{name}` of partner `{partner_id}` is not in program `{}`",
                program.name
            ),
        )
    })?;
    Ok((name.to_ascii_lowercase(), rates))
}

/// Everything about a paid line's rates that its statement shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineRates {
    pub tier: String,
    pub source: RateSource,
    pub base_rate: Decimal,
    pub spiffs: Vec<SpiffApplied>,
    /// base_rate + every spiff: applied to the base with one rounding.
    pub rate: Decimal,
    pub coop_rate: Decimal,
    pub net_of_cost: bool,
}

pub(crate) fn line_rates(
    partner_id: &str,
    e: &InvoiceEvent,
    quote: &FxQuote,
    facts: &MoneyFacts,
    program: &Program,
) -> Result<LineRates, Rejection> {
    let pf = facts.partner(partner_id);
    let (tier, tier_rates) = tier_at(program, partner_id, pf, e.ts)?;
    let promo = program.promo.as_ref().filter(|promo| {
        pf.and_then(|p| p.approval_rank)
            .is_some_and(|rank| rank < promo.first_n_approved)
    });
    let (source, base_rate) = match (pf.and_then(|p| p.commission_rate), promo) {
        (Some(r), _) => (RateSource::Partner, r),
        (None, Some(promo)) => (RateSource::Promo, promo.rate),
        (None, None) => (RateSource::Tier, tier_rates.commission_rate),
    };
    let mut spiffs = Vec::new();
    let mut rate = base_rate;
    for s in facts.spiffs_for(partner_id) {
        if !(s.from <= e.ts && e.ts < s.to) || (s.new_logo_only && !e.new_logo) {
            continue;
        }
        if let Some(min) = s.min_contract_value_usd {
            // Compared unrounded: CONTRACT §2 names no rounding point here.
            let value_usd = match e.contract_value {
                Some(v) => mul(v, quote.usd_per_unit, "contract value in USD")?,
                None => continue,
            };
            if value_usd < min {
                continue;
            }
        }
        rate = add(rate, s.extra_rate, "commission rate")?;
        spiffs.push(SpiffApplied {
            spiff_id: s.spiff_id.clone(),
            extra_rate: s.extra_rate,
        });
    }
    Ok(LineRates {
        tier,
        source,
        base_rate,
        spiffs,
        rate,
        coop_rate: pf.and_then(|p| p.coop_rate).unwrap_or(tier_rates.coop_rate),
        net_of_cost: pf
            .and_then(|p| p.net_of_cost)
            .unwrap_or(program.net_of_cost),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::ControlEvent;
    use crate::domain::money::testkit::{d, default_program, paid, partner_fact, program, t};

    fn rates_of(facts: &MoneyFacts, program: &Program, e: &InvoiceEvent) -> LineRates {
        line_rates("p", e, &FxQuote::USD, facts, program).unwrap()
    }

    #[test]
    fn tier_rate_in_force_at_ts_and_default_before_it() {
        let mut f = MoneyFacts::new();
        f.apply(0, &partner_fact("p", "gold", None)); // gold from 2026-01-01
        let prog = default_program();
        let r = rates_of(&f, &prog, &paid("i", "2026-03-01T00:00:00Z", "100"));
        assert_eq!(
            (r.tier.as_str(), r.rate, r.coop_rate),
            ("gold", d("0.12"), d("0.02"))
        );
        let r = rates_of(&f, &prog, &paid("i", "2025-12-01T00:00:00Z", "100"));
        assert_eq!((r.tier.as_str(), r.rate), ("bronze", d("0.05")));
        assert_eq!(r.source, RateSource::Tier);
    }

    #[test]
    fn an_unknown_tier_is_rejected_not_guessed() {
        let mut f = MoneyFacts::new();
        f.apply(0, &partner_fact("p", "diamond", None));
        let err = line_rates(
            "p",
            &paid("i", "2026-03-01T00:00:00Z", "1"),
            &FxQuote::USD,
            &f,
            &default_program(),
        )
        .unwrap_err();
        assert_eq!(err.reason, DeadLetterReason::InvalidValue);
    }

    #[test]
    fn promo_for_the_first_n_approved_and_partner_override_beats_it() {
        let prog = program("reseller");
        let mut f = MoneyFacts::new();
        for (i, p) in ["a", "b", "c", "p"].iter().enumerate() {
            f.apply(i as i64, &partner_fact(p, "standard", None));
        }
        let e = paid("i", "2026-03-01T00:00:00Z", "100");
        // "p" is the 4th approved: standard 20 %.
        assert_eq!(rates_of(&f, &prog, &e).rate, d("0.20"));
        let first = line_rates("a", &e, &FxQuote::USD, &f, &prog).unwrap();
        assert_eq!((first.rate, first.source), (d("0.50"), RateSource::Promo));
        let mut agreed = partner_fact("a", "standard", None);
        if let ControlEvent::Partner {
            commission_rate, ..
        } = &mut agreed
        {
            *commission_rate = Some(d("0.30"));
        }
        f.apply(10, &agreed);
        let r = line_rates("a", &e, &FxQuote::USD, &f, &prog).unwrap();
        assert_eq!((r.rate, r.source), (d("0.30"), RateSource::Partner));
    }

    #[test]
    fn spiffs_add_when_window_logo_and_contract_value_hold() {
        let mut f = MoneyFacts::new();
        f.apply(0, &partner_fact("p", "gold", None));
        f.apply(
            1,
            &ControlEvent::Spiff {
                spiff_id: "q2".into(),
                partner_id: None,
                from: t("2026-04-01T00:00:00Z"),
                to: t("2026-07-01T00:00:00Z"),
                extra_rate: d("0.03"),
                new_logo_only: true,
                min_contract_value_usd: Some(d("100000")),
            },
        );
        let prog = default_program();
        let mut e = paid("i", "2026-05-01T00:00:00Z", "100");
        e.new_logo = true;
        e.contract_value = Some(d("100000"));
        // 0.12 + 0.03 = 0.15 (the seed's "so 15 % total").
        let r = rates_of(&f, &prog, &e);
        assert_eq!((r.rate, r.spiffs.len()), (d("0.15"), 1));
        // EUR at 0.9: 100000 EUR = 90000 USD < 100000 → no spiff.
        let eur = FxQuote {
            usd_per_unit: d("0.9"),
            as_of: None,
            fx_after_ts: false,
        };
        assert_eq!(
            line_rates("p", &e, &eur, &f, &prog).unwrap().rate,
            d("0.12")
        );
        let mut not_new = e.clone();
        not_new.new_logo = false;
        assert_eq!(rates_of(&f, &prog, &not_new).rate, d("0.12"));
        let mut no_value = e.clone();
        no_value.contract_value = None;
        assert_eq!(rates_of(&f, &prog, &no_value).rate, d("0.12"));
        // [from, to): `to` itself is outside.
        let mut at_end = e.clone();
        at_end.ts = t("2026-07-01T00:00:00Z");
        assert_eq!(rates_of(&f, &prog, &at_end).rate, d("0.12"));
    }

    #[test]
    fn partner_coop_rate_and_net_of_cost_override_the_program() {
        let mut f = MoneyFacts::new();
        let mut fact = partner_fact("p", "silver", None);
        if let ControlEvent::Partner {
            coop_rate,
            net_of_cost,
            ..
        } = &mut fact
        {
            *coop_rate = Some(d("0.05"));
            *net_of_cost = Some(true);
        }
        f.apply(0, &fact);
        let r = rates_of(
            &f,
            &default_program(),
            &paid("i", "2026-03-01T00:00:00Z", "1"),
        );
        assert_eq!((r.coop_rate, r.net_of_cost), (d("0.05"), true));
    }
}
