//! An accrued invoice line and its parts (CONTRACT §2 "Base", "Commission", "Co-op").
//!
//! A paid line's parts are computed once, when it is applied, and kept: base (USD, cents),
//! commission (base × (tier + spiff rate), one rounding), co-op, volume bonus and one
//! override per ancestor. Reversals work on these kept parts, never on today's rates.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::bonus::VolumeBonusRule;
use super::facts::MoneyFacts;
use super::fx::FxQuote;
use super::hierarchy::override_parts;
use super::month::Month;
use super::program::Program;
use super::rates::line_rates;
use super::{add, cents_of, mul, round_cents, sub, Rejection};
use crate::domain::event::InvoiceEvent;

/// Where a line's base rate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateSource {
    /// The tier rate in force at the line's `ts`.
    Tier,
    /// The program's launch promo (first N approved partners).
    Promo,
    /// The partner's own `commission_rate`.
    Partner,
}

impl RateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RateSource::Tier => "tier",
            RateSource::Promo => "promo",
            RateSource::Partner => "partner",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpiffApplied {
    pub spiff_id: String,
    pub extra_rate: Decimal,
}

/// What one ancestor earns on a line (negative on a reversal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverridePart {
    pub ancestor_id: String,
    pub override_rate: Decimal,
    pub amount_usd: Decimal,
}

/// The amounts of a line, in USD cents. On a paid line all are ≥ 0; on a reversal ≤ 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parts {
    pub base_usd: Decimal,
    /// Tier (or promo, or the partner's rate) plus spiffs: one rounding.
    pub commission_usd: Decimal,
    pub coop_usd: Decimal,
    pub bonus_usd: Decimal,
    /// Nearest ancestor first.
    pub overrides: Vec<OverridePart>,
}

impl Parts {
    /// The sum of the overrides paid up the chain.
    pub fn overrides_usd(&self) -> Result<Decimal, Rejection> {
        self.overrides
            .iter()
            .try_fold(Decimal::ZERO, |acc, o| add(acc, o.amount_usd, "overrides"))
    }

    /// The same parts with the opposite sign (zero stays a plain zero, never `-0`).
    pub fn negated(&self) -> Parts {
        Parts {
            base_usd: negate(self.base_usd),
            commission_usd: negate(self.commission_usd),
            coop_usd: negate(self.coop_usd),
            bonus_usd: negate(self.bonus_usd),
            overrides: self
                .overrides
                .iter()
                .map(|o| OverridePart {
                    amount_usd: negate(o.amount_usd),
                    ..o.clone()
                })
                .collect(),
        }
    }
}

/// −value; a zero stays a plain zero (never `-0.00`), with its scale.
pub(crate) fn negate(value: Decimal) -> Decimal {
    let mut negated = -value;
    if negated.is_zero() {
        negated.set_sign_positive(true);
    }
    negated
}

/// How a paid line was priced: everything its statement line shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pricing {
    pub currency: String,
    pub platform_fee: Decimal,
    pub overage: Decimal,
    pub processing_cost: Decimal,
    pub net_of_cost: bool,
    /// The amount converted: platform_fee + overage (− processing_cost when net of cost,
    /// never below 0), in `currency`.
    pub net_amount: Decimal,
    pub usd_per_unit: Decimal,
    pub fx_as_of: Option<DateTime<Utc>>,
    pub fx_after_ts: bool,
    pub tier: String,
    pub rate_source: RateSource,
    pub base_rate: Decimal,
    pub spiffs: Vec<SpiffApplied>,
    /// base_rate + every spiff.
    pub rate: Decimal,
    pub coop_rate: Decimal,
    pub volume_bonus: Option<VolumeBonusRule>,
    /// The line's month base (USD) after this line.
    pub month_base_after_usd: Decimal,
}

/// A paid line as the ledger keeps it for reversals: what it accrued, and what is reversed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccruedLine {
    pub currency: String,
    /// platform_fee + overage, in `currency`: the denominator of a refund's share.
    pub gross: Decimal,
    /// The month the line belongs to (by its `ts`), whatever statement it landed in.
    pub month: Month,
    pub accrued: Parts,
    /// Refunded so far (platform_fee + overage of the refunds), in `currency`.
    pub refunded: Decimal,
    /// Reversed so far, as magnitudes (≥ 0, ≤ `accrued` part by part).
    pub reversed: Parts,
}

impl AccruedLine {
    /// A freshly accrued line: nothing refunded, nothing reversed.
    pub(crate) fn new(currency: &str, draft: PaidDraft) -> AccruedLine {
        let zero = |o: &OverridePart| OverridePart {
            amount_usd: Decimal::ZERO,
            ..o.clone()
        };
        AccruedLine {
            currency: currency.to_string(),
            gross: draft.gross,
            month: draft.month,
            reversed: Parts {
                overrides: draft.parts.overrides.iter().map(zero).collect(),
                ..Parts::default()
            },
            accrued: draft.parts,
            refunded: Decimal::ZERO,
        }
    }
}

/// A paid line priced against the facts, not yet committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PaidDraft {
    pub pricing: Pricing,
    pub parts: Parts,
    pub month: Month,
    pub gross: Decimal,
}

/// Prices a paid invoice. `month_base_before` is the partner's base so far in the line's
/// month (for the marginal volume bonus).
pub(crate) fn draft_paid(
    partner_id: &str,
    e: &InvoiceEvent,
    quote: FxQuote,
    facts: &MoneyFacts,
    program: &Program,
    month_base_before: Decimal,
) -> Result<PaidDraft, Rejection> {
    let rates = line_rates(partner_id, e, &quote, facts, program)?;
    let gross = add(e.platform_fee, e.overage, "platform_fee + overage")?;
    let net_amount = if rates.net_of_cost {
        sub(gross, e.processing_cost, "net of processing cost")?.max(Decimal::ZERO)
    } else {
        gross
    };
    let base_usd = round_cents(mul(net_amount, quote.usd_per_unit, "base in USD")?);
    let month_base_after = add(month_base_before, base_usd, "month base")?;
    let volume_bonus = facts.volume_bonus_for(partner_id);
    let bonus_usd = match volume_bonus {
        Some(rule) => rule.line_bonus(month_base_before, month_base_after)?,
        None => Decimal::ZERO,
    };
    let parts = Parts {
        base_usd,
        commission_usd: cents_of(base_usd, rates.rate, "commission")?,
        coop_usd: cents_of(base_usd, rates.coop_rate, "co-op")?,
        bonus_usd,
        overrides: override_parts(partner_id, e.ts, base_usd, facts, program)?,
    };
    let pricing = Pricing {
        currency: e.currency.clone(),
        platform_fee: e.platform_fee,
        overage: e.overage,
        processing_cost: e.processing_cost,
        net_of_cost: rates.net_of_cost,
        net_amount,
        usd_per_unit: quote.usd_per_unit,
        fx_as_of: quote.as_of,
        fx_after_ts: quote.fx_after_ts,
        tier: rates.tier,
        rate_source: rates.source,
        base_rate: rates.base_rate,
        spiffs: rates.spiffs,
        rate: rates.rate,
        coop_rate: rates.coop_rate,
        volume_bonus,
        month_base_after_usd: month_base_after,
    };
    Ok(PaidDraft {
        pricing,
        parts,
        month: Month::of(e.ts),
        gross,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{ControlEvent, DeadLetterReason};
    use crate::domain::money::testkit::{d, default_program, paid, partner_fact};

    fn gold_facts() -> MoneyFacts {
        let mut f = MoneyFacts::new();
        f.apply(0, &partner_fact("p", "gold", None));
        f
    }

    #[test]
    fn commission_is_one_rounding_of_base_times_rate() {
        let f = gold_facts();
        // fee 1000.05 + overage 33.33 = 1033.38 USD. gold 12 %: 124.0056 → 124.01;
        // co-op 2 %: 20.6676 → 20.67.
        let mut e = paid("i", "2026-05-01T00:00:00Z", "1000.05");
        e.overage = d("33.33");
        let dr = draft_paid("p", &e, FxQuote::USD, &f, &default_program(), d("0")).unwrap();
        assert_eq!(dr.parts.base_usd, d("1033.38"));
        assert_eq!(dr.parts.commission_usd, d("124.01"));
        assert_eq!(dr.parts.coop_usd, d("20.67"));
        assert_eq!(dr.parts.bonus_usd, d("0"));
        assert!(dr.parts.overrides.is_empty());
        assert_eq!(dr.gross, d("1033.38"));
    }

    #[test]
    fn base_is_converted_at_the_quote_and_rounded_half_even() {
        let f = gold_facts();
        // 100.10 EUR × 1.0825 = 108.35825 → 108.36. 12 % of 108.36 = 13.0032 → 13.00.
        let mut e = paid("i", "2026-05-01T00:00:00Z", "100.10");
        e.currency = "EUR".into();
        let q = FxQuote {
            usd_per_unit: d("1.0825"),
            as_of: None,
            fx_after_ts: false,
        };
        let dr = draft_paid("p", &e, q, &f, &default_program(), d("0")).unwrap();
        assert_eq!(dr.parts.base_usd, d("108.36"));
        assert_eq!(dr.parts.commission_usd, d("13.00"));
        assert_eq!(dr.pricing.usd_per_unit, d("1.0825"));
        // A tie: 0.125 EUR-cents → 10.125 × 1 = 10.125 → 10.12 (even).
        let mut tie = paid("i", "2026-05-01T00:00:00Z", "10.125");
        tie.currency = "EUR".into();
        let q1 = FxQuote {
            usd_per_unit: d("1"),
            as_of: None,
            fx_after_ts: false,
        };
        assert_eq!(
            draft_paid("p", &tie, q1, &f, &default_program(), d("0"))
                .unwrap()
                .parts
                .base_usd,
            d("10.12")
        );
    }

    #[test]
    fn net_of_cost_subtracts_processing_cost_and_never_goes_below_zero() {
        let mut f = MoneyFacts::new();
        let mut fact = partner_fact("p", "gold", None);
        if let ControlEvent::Partner { net_of_cost, .. } = &mut fact {
            *net_of_cost = Some(true);
        }
        f.apply(0, &fact);
        let mut e = paid("i", "2026-05-01T00:00:00Z", "100");
        e.processing_cost = d("2.90");
        // 100 − 2.90 = 97.10; 12 % = 11.652 → 11.65.
        let dr = draft_paid("p", &e, FxQuote::USD, &f, &default_program(), d("0")).unwrap();
        assert_eq!(
            (dr.parts.base_usd, dr.parts.commission_usd),
            (d("97.10"), d("11.65"))
        );
        e.processing_cost = d("150");
        let dr = draft_paid("p", &e, FxQuote::USD, &f, &default_program(), d("0")).unwrap();
        assert_eq!(dr.parts.base_usd, d("0"));
        // Not net of cost: the cost is ignored.
        let dr = draft_paid(
            "p",
            &e,
            FxQuote::USD,
            &gold_facts(),
            &default_program(),
            d("0"),
        )
        .unwrap();
        assert_eq!(dr.parts.base_usd, d("100"));
    }

    #[test]
    fn volume_bonus_is_marginal_on_the_month_base() {
        let mut f = gold_facts();
        f.apply(
            1,
            &ControlEvent::VolumeBonus {
                partner_id: None,
                monthly_threshold_usd: d("1000"),
                bonus_rate: d("0.02"),
            },
        );
        // Month base 800 before; +500 → 1300: 0.02 × 300 = 6.00.
        let dr = draft_paid(
            "p",
            &paid("i", "2026-05-01T00:00:00Z", "500"),
            FxQuote::USD,
            &f,
            &default_program(),
            d("800"),
        )
        .unwrap();
        assert_eq!(dr.parts.bonus_usd, d("6.00"));
        assert_eq!(dr.pricing.month_base_after_usd, d("1300"));
    }

    #[test]
    fn overflow_is_a_rejection() {
        let f = gold_facts();
        let mut e = paid("i", "2026-05-01T00:00:00Z", "1");
        e.platform_fee = Decimal::MAX;
        e.overage = d("1");
        let err = draft_paid("p", &e, FxQuote::USD, &f, &default_program(), d("0")).unwrap_err();
        assert_eq!(err.reason, DeadLetterReason::ArithmeticOverflow);
    }

    #[test]
    fn negated_parts_flip_every_sign() {
        let p = Parts {
            base_usd: d("10"),
            commission_usd: d("1"),
            coop_usd: d("0.2"),
            bonus_usd: d("0.1"),
            overrides: vec![OverridePart {
                ancestor_id: "a".into(),
                override_rate: d("0.03"),
                amount_usd: d("0.3"),
            }],
        };
        let n = p.negated();
        assert_eq!(
            (
                n.base_usd,
                n.overrides[0].amount_usd,
                n.overrides[0].override_rate
            ),
            (d("-10"), d("-0.3"), d("0.03"))
        );
        assert_eq!(p.overrides_usd().unwrap(), d("0.3"));
        let zero = Parts {
            base_usd: d("0.00"),
            ..Parts::default()
        }
        .negated();
        assert_eq!(zero.base_usd.to_string(), "0.00");
    }
}
