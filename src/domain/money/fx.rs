//! FX rates by currency, sorted by `as_of` (CONTRACT §2 "Base").
//!
//! The rate in force at `ts` is the newest with `as_of ≤ ts`. When every known rate is later
//! than `ts`, the first rate ever seen for the currency is used and flagged `fx_after_ts`.
//! A currency with no rate at all has no quote: its lines are parked, never guessed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The currency that needs no rate.
pub const USD: &str = "USD";

/// The rate a line is converted with, kept on the line for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FxQuote {
    pub usd_per_unit: Decimal,
    /// `None` for USD.
    pub as_of: Option<DateTime<Utc>>,
    /// The rate is later than the line's `ts` (the first rate ever seen for the currency).
    pub fx_after_ts: bool,
}

impl FxQuote {
    pub const USD: FxQuote = FxQuote {
        usd_per_unit: Decimal::ONE,
        as_of: None,
        fx_after_ts: false,
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CurrencyRates {
    /// Sorted by `as_of`, one rate per `as_of` (its identity).
    by_as_of: Vec<(DateTime<Utc>, Decimal)>,
    /// The first rate ever seen, by arrival.
    first_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FxTable {
    currencies: BTreeMap<String, CurrencyRates>,
}

impl FxTable {
    /// Records a rate. A repeated (currency, as_of) replaces the earlier rate for the lines
    /// converted after it. Returns `false` (ignored) for a rate ≤ 0 or for USD.
    pub fn insert(&mut self, currency: &str, usd_per_unit: Decimal, as_of: DateTime<Utc>) -> bool {
        if currency == USD || usd_per_unit <= Decimal::ZERO {
            return false;
        }
        let rates = self
            .currencies
            .entry(currency.to_string())
            .or_insert_with(|| CurrencyRates {
                by_as_of: Vec::new(),
                first_seen: as_of,
            });
        match rates.by_as_of.binary_search_by_key(&as_of, |(t, _)| *t) {
            Ok(i) => rates.by_as_of[i].1 = usd_per_unit,
            Err(i) => rates.by_as_of.insert(i, (as_of, usd_per_unit)),
        }
        true
    }

    /// Whether any rate is known for `currency` (USD always is).
    pub fn has_rate(&self, currency: &str) -> bool {
        currency == USD || self.currencies.contains_key(currency)
    }

    /// The rate for a line of `currency` at `ts`, or `None`: park the line.
    pub fn quote(&self, currency: &str, ts: DateTime<Utc>) -> Option<FxQuote> {
        if currency == USD {
            return Some(FxQuote::USD);
        }
        let rates = self.currencies.get(currency)?;
        let after = rates.by_as_of.partition_point(|(as_of, _)| *as_of <= ts);
        if after > 0 {
            let (as_of, rate) = rates.by_as_of[after - 1];
            return Some(FxQuote {
                usd_per_unit: rate,
                as_of: Some(as_of),
                fx_after_ts: false,
            });
        }
        // No rate at or before ts, so the first one ever seen is later than ts.
        let i = rates
            .by_as_of
            .binary_search_by_key(&rates.first_seen, |(t, _)| *t)
            .ok()?;
        let (as_of, rate) = rates.by_as_of[i];
        Some(FxQuote {
            usd_per_unit: rate,
            as_of: Some(as_of),
            fx_after_ts: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }
    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn usd_needs_no_rate_and_unknown_currency_has_none() {
        let fx = FxTable::default();
        assert_eq!(
            fx.quote("USD", t("2026-01-01T00:00:00Z")),
            Some(FxQuote::USD)
        );
        assert_eq!(fx.quote("EUR", t("2026-01-01T00:00:00Z")), None);
        assert!(fx.has_rate("USD") && !fx.has_rate("EUR"));
    }

    #[test]
    fn newest_rate_at_or_before_ts_wins_whatever_the_arrival_order() {
        let mut fx = FxTable::default();
        fx.insert("EUR", d("1.10"), t("2026-05-10T00:00:00Z"));
        fx.insert("EUR", d("1.05"), t("2026-05-01T00:00:00Z"));
        fx.insert("EUR", d("1.20"), t("2026-05-20T00:00:00Z"));
        let q = fx.quote("EUR", t("2026-05-15T00:00:00Z")).unwrap();
        assert_eq!(
            (q.usd_per_unit, q.as_of, q.fx_after_ts),
            (d("1.10"), Some(t("2026-05-10T00:00:00Z")), false)
        );
        // as_of == ts is in force.
        let q = fx.quote("EUR", t("2026-05-20T00:00:00Z")).unwrap();
        assert_eq!(q.usd_per_unit, d("1.20"));
    }

    #[test]
    fn before_every_rate_the_first_seen_is_used_and_flagged() {
        let mut fx = FxTable::default();
        // First seen: May 10; a later arrival (May 5) is earlier but not the first seen.
        fx.insert("EUR", d("1.10"), t("2026-05-10T00:00:00Z"));
        fx.insert("EUR", d("1.05"), t("2026-05-05T00:00:00Z"));
        let q = fx.quote("EUR", t("2026-04-01T00:00:00Z")).unwrap();
        assert_eq!(q.usd_per_unit, d("1.10"));
        assert_eq!(q.as_of, Some(t("2026-05-10T00:00:00Z")));
        assert!(q.fx_after_ts);
    }

    #[test]
    fn a_repeated_identity_replaces_and_bad_rates_are_ignored() {
        let mut fx = FxTable::default();
        assert!(fx.insert("EUR", d("1.10"), t("2026-05-10T00:00:00Z")));
        assert!(fx.insert("EUR", d("1.11"), t("2026-05-10T00:00:00Z")));
        assert_eq!(
            fx.quote("EUR", t("2026-06-01T00:00:00Z"))
                .unwrap()
                .usd_per_unit,
            d("1.11")
        );
        assert!(!fx.insert("GBP", d("0"), t("2026-05-10T00:00:00Z")));
        assert!(!fx.insert("USD", d("2"), t("2026-05-10T00:00:00Z")));
        assert!(!fx.has_rate("GBP"));
    }
}
