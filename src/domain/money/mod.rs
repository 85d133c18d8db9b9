//! The money side of one partner (CONTRACT §2): pure, no I/O, no clock of its own.
//!
//! - [`Program`] — the partner program's rates and rules, loaded from `config/programs/*.toml`.
//! - [`MoneyFacts`] — the global facts of `warden.control.v1` money needs (FX rates, tiers,
//!   parents, spiffs, volume bonuses, activations), built in control-topic order.
//! - [`Ledger`] — one partner's money state: accrued lines, reversals, parked lines, the co-op
//!   wallet, activation credits, statements and status.
//!
//! Invariants kept everywhere in this module:
//! - money is `rust_decimal::Decimal`, never a float; arithmetic on input paths is checked
//!   and an overflow is a [`Rejection`] with `arithmetic_overflow`, never a panic;
//! - rounding happens only where CONTRACT §2 names it, always half-even to cents
//!   ([`round_cents`]);
//! - every mutation is planned first (fallible, pure) and committed after (infallible), so a
//!   rejected input leaves the state exactly as it was.

mod bonus;
mod credits;
mod effects;
mod facts;
mod fx;
mod hierarchy;
mod ledger;
mod ledger_control;
mod line;
mod month;
mod program;
mod rates;
mod reversal;
mod statement;
mod statement_line;
mod status;
mod wallet;

#[cfg(test)]
mod ledger_control_tests;
#[cfg(test)]
mod ledger_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod testkit;

use rust_decimal::{Decimal, RoundingStrategy};

use super::event::{DeadLetterReason, Rejection};

pub use bonus::VolumeBonusRule;
pub use credits::{
    CreditEffects, CreditPosting, CreditPostingKind, CreditSignal, CreditWallet, PendingActivation,
    PurchaseRecord, TenantOutcome, INSUFFICIENT_CREDITS,
};
pub use facts::{FactOutcome, MoneyFacts, PartnerMoneyFacts, Spiff, TierEntry};
pub use fx::{FxQuote, FxTable, USD};
pub use hierarchy::CHAIN_LOOPS;
pub use ledger::{
    ControlOutcome, FxArrival, InvoiceOutcome, Ledger, LedgerEffects, MoneyTotals, ParkedInvoice,
    RecordRef,
};
pub use line::{OverridePart, Parts, Pricing, RateSource, SpiffApplied};
pub use month::{BadMonth, Month};
pub use program::{
    CreditRules, Program, ProgramError, Promo, StatusRules, TierRates, CREDITS_PROGRAM_TOML,
    DEFAULT_PROGRAM_TOML, RESELLER_PROGRAM_TOML,
};
pub use statement::{
    Statement, StatementError, StatementStatus, StatementTotals, Statements, Transition,
};
pub use statement_line::{LineKind, StatementLine};
pub use status::{PartnerStatus, StatusTracker, StatusView};
pub use wallet::{
    CoopWallet, MdfOutcome, MdfRecord, Posting, PostingKind, INSUFFICIENT_COOP_BALANCE,
};

/// Rounds to cents, half-even: the one rounding rule of CONTRACT §2. The result always
/// has two decimal places (`100` → `100.00`), so money reads the same everywhere.
pub fn round_cents(value: Decimal) -> Decimal {
    let mut cents = value.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
    // Never panics: a value too large for two places keeps the most places that fit.
    cents.rescale(2);
    if cents.is_zero() {
        cents.set_sign_positive(true); // never "-0.00"
    }
    cents
}

/// The rejection for an arithmetic overflow on an input path.
pub(crate) fn overflow(what: &str) -> Rejection {
    Rejection::new(
        DeadLetterReason::ArithmeticOverflow,
        format!("{what} overflows the decimal range"),
    )
}

pub(crate) fn add(a: Decimal, b: Decimal, what: &str) -> Result<Decimal, Rejection> {
    a.checked_add(b).ok_or_else(|| overflow(what))
}

pub(crate) fn sub(a: Decimal, b: Decimal, what: &str) -> Result<Decimal, Rejection> {
    a.checked_sub(b).ok_or_else(|| overflow(what))
}

pub(crate) fn mul(a: Decimal, b: Decimal, what: &str) -> Result<Decimal, Rejection> {
    a.checked_mul(b).ok_or_else(|| overflow(what))
}

/// round(value × rate) to cents: the amount of a rate applied to a base.
pub(crate) fn cents_of(value: Decimal, rate: Decimal, what: &str) -> Result<Decimal, Rejection> {
    Ok(round_cents(mul(value, rate, what)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn rounding_is_half_even_to_cents() {
        // Ties go to the even cent; anything past the tie goes away from zero.
        assert_eq!(round_cents(d("0.125")), d("0.12"));
        assert_eq!(round_cents(d("0.135")), d("0.14"));
        assert_eq!(round_cents(d("0.1251")), d("0.13"));
        assert_eq!(round_cents(d("-0.125")), d("-0.12"));
        assert_eq!(round_cents(d("0.005")), d("0.00"));
        assert_eq!(round_cents(d("0.015")), d("0.02"));
        assert_eq!(round_cents(d("100")).to_string(), "100.00");
        assert_eq!(round_cents(d("-0.001")).to_string(), "0.00");
    }

    #[test]
    fn overflow_is_a_rejection_not_a_panic() {
        let err = mul(Decimal::MAX, d("2"), "base").unwrap_err();
        assert_eq!(err.reason, DeadLetterReason::ArithmeticOverflow);
        assert!(add(Decimal::MAX, Decimal::ONE, "x").is_err());
        assert!(sub(Decimal::MIN, Decimal::ONE, "x").is_err());
    }
}
