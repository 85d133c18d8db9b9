//! The monthly volume bonus, marginal per line (CONTRACT §2 "Volume bonus").
//!
//! With f(x) = round(bonus_rate × max(0, x − threshold)), a paid line that moves its
//! month's base from `before` to `after` earns f(after) − f(before). The sum over a month's
//! paid lines telescopes to f(month base), whatever their order. f is non-decreasing, so a
//! line's bonus is never negative.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{cents_of, sub, Rejection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeBonusRule {
    pub monthly_threshold_usd: Decimal,
    pub bonus_rate: Decimal,
}

impl VolumeBonusRule {
    /// f(month_base): the month's whole bonus at that base.
    pub fn month_bonus(&self, month_base: Decimal) -> Result<Decimal, Rejection> {
        let above = sub(
            month_base,
            self.monthly_threshold_usd,
            "month base above threshold",
        )?;
        cents_of(above.max(Decimal::ZERO), self.bonus_rate, "volume bonus")
    }

    /// The bonus of a line that moves the month's base from `before` to `after`.
    pub fn line_bonus(&self, before: Decimal, after: Decimal) -> Result<Decimal, Rejection> {
        sub(
            self.month_bonus(after)?,
            self.month_bonus(before)?,
            "volume bonus",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn rule() -> VolumeBonusRule {
        VolumeBonusRule {
            monthly_threshold_usd: d("1000"),
            bonus_rate: d("0.02"),
        }
    }

    #[test]
    fn below_the_threshold_there_is_no_bonus() {
        assert_eq!(rule().line_bonus(d("0"), d("999.99")).unwrap(), d("0"));
    }

    #[test]
    fn a_line_crossing_the_threshold_earns_only_on_the_part_above() {
        // 0.02 × (1200 − 1000) = 4.00; before 900 → f = 0.
        assert_eq!(rule().line_bonus(d("900"), d("1200")).unwrap(), d("4.00"));
    }

    #[test]
    fn lines_telescope_to_the_month_bonus_in_any_order() {
        // Three lines 600.25 + 500.25 + 100.25 = 1200.75; f = round(0.02 × 200.75) = 4.015 → 4.02.
        let r = rule();
        let lines = [d("600.25"), d("500.25"), d("100.25")];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let mut base = d("0");
            let mut total = d("0");
            for i in order {
                let after = base + lines[i];
                total += r.line_bonus(base, after).unwrap();
                base = after;
            }
            assert_eq!(total, d("4.02"), "{order:?}");
        }
    }

    #[test]
    fn rounding_is_per_month_not_per_line() {
        // Each line adds 0.25 above the threshold: 0.02 × 0.25 = 0.005 → f rounds to 0.00,
        // then 0.02 × 0.50 = 0.01. Per-line rounding would give 0.00 + 0.00.
        let r = rule();
        assert_eq!(r.line_bonus(d("1000"), d("1000.25")).unwrap(), d("0.00"));
        assert_eq!(r.line_bonus(d("1000.25"), d("1000.50")).unwrap(), d("0.01"));
    }
}
