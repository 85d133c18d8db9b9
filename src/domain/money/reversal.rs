//! Proportional reversal of a paid line by a refund or chargeback (CONTRACT §2).
//!
//! Each part is reversed by round(part × refunded ÷ original), multiplying before dividing,
//! half-even to cents, where refunded and original are platform_fee + overage in the
//! invoice's currency. The reversal that brings the cumulative refunded amount to exactly
//! the original reverses exactly what is left of each part, so a line refunded in full in
//! any split is reversed exactly. A partial reversal never takes more than what is left of a
//! part (three refunds of 33 % of a 0.02 part would otherwise each round to 0.01), so no
//! part is ever reversed past what it accrued.

use rust_decimal::Decimal;

use super::line::{AccruedLine, OverridePart, Parts};
use super::{add, mul, overflow, round_cents, sub, Rejection};
use crate::domain::event::DeadLetterReason;

/// A reversal not yet committed: the magnitudes to reverse (each ≥ 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReversalDraft {
    /// The line's cumulative refunded amount after this reversal.
    pub refunded_after: Decimal,
    pub parts: Parts,
    /// Whether this reversal completes the line (cumulative share exactly 1).
    pub completes: bool,
}

/// What refunding `amount` (invoice currency) of `line` reverses.
pub(crate) fn draft_reversal(
    line: &AccruedLine,
    amount: Decimal,
) -> Result<ReversalDraft, Rejection> {
    if amount.is_sign_negative() {
        return Err(Rejection::new(
            DeadLetterReason::NegativeMoney,
            "refunded amount is negative",
        ));
    }
    let refunded_after = add(line.refunded, amount, "refunded amount")?;
    if refunded_after > line.gross {
        return Err(Rejection::new(
            DeadLetterReason::OverRefund,
            format!(
                "refunds of {refunded_after} {} exceed the original {} {}",
                line.currency, line.gross, line.currency
            ),
        ));
    }
    let completes = refunded_after == line.gross;
    let share = Share {
        amount,
        gross: line.gross,
        completes,
    };
    let (a, r) = (&line.accrued, &line.reversed);
    let overrides = a
        .overrides
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let done = r.overrides.get(i).map_or(Decimal::ZERO, |x| x.amount_usd);
            Ok(OverridePart {
                amount_usd: share.of(o.amount_usd, done)?,
                ..o.clone()
            })
        })
        .collect::<Result<Vec<_>, Rejection>>()?;
    Ok(ReversalDraft {
        refunded_after,
        parts: Parts {
            base_usd: share.of(a.base_usd, r.base_usd)?,
            commission_usd: share.of(a.commission_usd, r.commission_usd)?,
            coop_usd: share.of(a.coop_usd, r.coop_usd)?,
            bonus_usd: share.of(a.bonus_usd, r.bonus_usd)?,
            overrides,
        },
        completes,
    })
}

/// The cumulative reversed magnitudes after adding `draft` to `reversed`.
pub(crate) fn reversed_after(reversed: &Parts, draft: &Parts) -> Result<Parts, Rejection> {
    let overrides = draft
        .overrides
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let done = reversed
                .overrides
                .get(i)
                .map_or(Decimal::ZERO, |x| x.amount_usd);
            Ok(OverridePart {
                amount_usd: add(done, o.amount_usd, "reversed override")?,
                ..o.clone()
            })
        })
        .collect::<Result<Vec<_>, Rejection>>()?;
    Ok(Parts {
        base_usd: add(reversed.base_usd, draft.base_usd, "reversed base")?,
        commission_usd: add(
            reversed.commission_usd,
            draft.commission_usd,
            "reversed commission",
        )?,
        coop_usd: add(reversed.coop_usd, draft.coop_usd, "reversed co-op")?,
        bonus_usd: add(reversed.bonus_usd, draft.bonus_usd, "reversed bonus")?,
        overrides,
    })
}

struct Share {
    amount: Decimal,
    gross: Decimal,
    completes: bool,
}

impl Share {
    /// How much of a part that accrued `accrued` and has `done` reversed this one reverses.
    fn of(&self, accrued: Decimal, done: Decimal) -> Result<Decimal, Rejection> {
        let left = sub(accrued, done, "part left to reverse")?.max(Decimal::ZERO);
        if self.completes {
            return Ok(left);
        }
        // Not complete means amount < gross, so gross > 0: no division by zero.
        let scaled = mul(accrued, self.amount, "reversal")?;
        let part = scaled
            .checked_div(self.gross)
            .ok_or_else(|| overflow("reversal"))?;
        Ok(round_cents(part).clamp(Decimal::ZERO, left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::month::Month;
    use crate::domain::money::testkit::d;

    fn line(gross: &str, parts: [&str; 5]) -> AccruedLine {
        AccruedLine {
            currency: "EUR".into(),
            gross: d(gross),
            month: "2026-05".parse::<Month>().unwrap(),
            accrued: Parts {
                base_usd: d(parts[0]),
                commission_usd: d(parts[1]),
                coop_usd: d(parts[2]),
                bonus_usd: d(parts[3]),
                overrides: vec![OverridePart {
                    ancestor_id: "up".into(),
                    override_rate: d("0.03"),
                    amount_usd: d(parts[4]),
                }],
            },
            refunded: d("0"),
            reversed: Parts {
                overrides: vec![OverridePart {
                    ancestor_id: "up".into(),
                    override_rate: d("0.03"),
                    amount_usd: d("0"),
                }],
                ..Parts::default()
            },
        }
    }

    fn apply(l: &mut AccruedLine, amount: &str) -> ReversalDraft {
        let dr = draft_reversal(l, d(amount)).unwrap();
        l.reversed = reversed_after(&l.reversed, &dr.parts).unwrap();
        l.refunded = dr.refunded_after;
        dr
    }

    #[test]
    fn a_partial_refund_reverses_each_part_in_proportion() {
        // Original 300 EUR; refund 100 → p = 1/3, multiply first:
        // base 324.75 × 100 / 300 = 108.25; commission 38.97 × 100/300 = 12.99;
        // co-op 6.50 → 2.1666… → 2.17; bonus 1.00 → 0.333… → 0.33; override 9.74 → 3.2466… → 3.25.
        let mut l = line("300", ["324.75", "38.97", "6.50", "1.00", "9.74"]);
        let dr = apply(&mut l, "100");
        assert!(!dr.completes);
        let p = &dr.parts;
        assert_eq!(
            (
                p.base_usd,
                p.commission_usd,
                p.coop_usd,
                p.bonus_usd,
                p.overrides[0].amount_usd
            ),
            (d("108.25"), d("12.99"), d("2.17"), d("0.33"), d("3.25"))
        );
    }

    #[test]
    fn the_last_refund_reverses_exactly_what_is_left() {
        let mut l = line("300", ["324.75", "38.97", "6.50", "1.00", "9.74"]);
        apply(&mut l, "100");
        apply(&mut l, "100");
        let last = apply(&mut l, "100");
        assert!(last.completes);
        // 6.50 − 2.17 − 2.17 = 2.16 (not round(2.1666) = 2.17).
        assert_eq!(last.parts.coop_usd, d("2.16"));
        assert_eq!(l.reversed.base_usd, l.accrued.base_usd);
        assert_eq!(l.reversed.commission_usd, l.accrued.commission_usd);
        assert_eq!(l.reversed.coop_usd, l.accrued.coop_usd);
        assert_eq!(l.reversed.bonus_usd, l.accrued.bonus_usd);
        assert_eq!(
            l.reversed.overrides[0].amount_usd,
            l.accrued.overrides[0].amount_usd
        );
    }

    #[test]
    fn partial_reversals_never_take_more_than_is_left() {
        // Part 0.02, three refunds of 33 of 100: round(0.02 × 0.33) = round(0.0066) = 0.01
        // each; the third finds 0.00 left and reverses 0.00, never 0.03 in total.
        let mut l = line("100", ["0.02", "0.02", "0.02", "0.02", "0.02"]);
        for _ in 0..3 {
            apply(&mut l, "33");
        }
        assert_eq!(l.reversed.coop_usd, d("0.02"));
        let last = apply(&mut l, "1");
        assert!(last.completes);
        assert_eq!(last.parts.coop_usd, d("0"));
    }

    #[test]
    fn over_refund_is_rejected_and_exact_full_is_fine() {
        let mut l = line("300", ["324.75", "38.97", "6.50", "1.00", "9.74"]);
        apply(&mut l, "250");
        let err = draft_reversal(&l, d("50.01")).unwrap_err();
        assert_eq!(err.reason, DeadLetterReason::OverRefund);
        assert!(draft_reversal(&l, d("50")).unwrap().completes);
    }

    #[test]
    fn a_zero_original_reverses_nothing_and_refuses_any_amount() {
        let l = line("0", ["0", "0", "0", "0", "0"]);
        assert!(draft_reversal(&l, d("0")).unwrap().completes);
        assert_eq!(
            draft_reversal(&l, d("0.01")).unwrap_err().reason,
            DeadLetterReason::OverRefund
        );
    }
}
