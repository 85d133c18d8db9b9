//! The co-op wallet (CONTRACT §2 "Co-op", "MDF"): append-only postings whose sum is the
//! balance, each applied once per (kind, id), and a balance that never goes negative.
//!
//! Co-op accruals credit the wallet; an approved MDF expense debits it if the balance
//! covers it (else it is refused `insufficient_coop_balance`, recorded, nothing debited).
//! A reversal of co-op that the balance cannot cover (the money was already drawn) debits
//! what is there and records the rest as a clawback due, recovered from the next accruals.
//! So: balance − clawback_due = accrued (net of reversals) − MDF drawn, always.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{add, sub, Rejection};
use crate::domain::event::{DeadLetterReason, MdfDecision};

/// The reason an approved MDF expense is refused when the balance does not cover it.
pub const INSUFFICIENT_COOP_BALANCE: &str = "insufficient_coop_balance";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostingKind {
    /// + co-op accrued by a paid line (id: `<invoice_id>:paid`).
    CoopAccrual,
    /// − co-op reversed by a refund or chargeback (id: `<invoice_id>:<kind>`).
    CoopReversal,
    /// − part of an accrual that pays back a clawback due (id: the accrual's).
    ClawbackRecovery,
    /// − an approved MDF expense (id: `expense_id`).
    MdfDraw,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub id: String,
    pub kind: PostingKind,
    /// Signed: credits > 0, debits < 0.
    pub amount_usd: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MdfOutcome {
    Drawn,
    /// Approved but not debited: the balance did not cover it.
    Refused,
    /// Rejected by its approver: the wallet is untouched.
    Rejected,
    /// This expense_id was applied before; nothing changed.
    Duplicate,
}

impl MdfOutcome {
    /// The refusal reason, for a refused expense.
    pub fn reason(self) -> Option<&'static str> {
        (self == MdfOutcome::Refused).then_some(INSUFFICIENT_COOP_BALANCE)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdfRecord {
    pub amount_usd: Decimal,
    pub decision: MdfDecision,
    pub outcome: MdfOutcome,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoopWallet {
    postings: Vec<Posting>,
    applied: BTreeSet<(PostingKind, String)>,
    balance: Decimal,
    clawback_due: Decimal,
    accrued: Decimal,
    drawn: Decimal,
    mdf: BTreeMap<String, MdfRecord>,
}

/// A change to the wallet, computed (checked) before anything changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalletPlan {
    postings: Vec<Posting>,
    balance: Decimal,
    clawback_due: Decimal,
    accrued: Decimal,
}

impl CoopWallet {
    pub fn balance(&self) -> Decimal {
        self.balance
    }
    pub fn accrued(&self) -> Decimal {
        self.accrued
    }
    pub fn drawn(&self) -> Decimal {
        self.drawn
    }
    pub fn clawback_due(&self) -> Decimal {
        self.clawback_due
    }
    pub fn postings(&self) -> &[Posting] {
        &self.postings
    }
    pub fn mdf_record(&self, expense_id: &str) -> Option<&MdfRecord> {
        self.mdf.get(expense_id)
    }

    fn fresh(&self, kind: PostingKind, id: &str) -> Result<(), Rejection> {
        if self.applied.contains(&(kind, id.to_string())) {
            return Err(Rejection::new(
                DeadLetterReason::InvalidValue,
                format!("wallet posting {kind:?} `{id}` was applied before"),
            ));
        }
        Ok(())
    }

    /// Credits `amount` (≥ 0) of co-op accrued by line `id`, paying back a clawback first.
    pub(crate) fn plan_accrual(&self, id: &str, amount: Decimal) -> Result<WalletPlan, Rejection> {
        self.fresh(PostingKind::CoopAccrual, id)?;
        let recovery = amount.min(self.clawback_due).max(Decimal::ZERO);
        let mut postings = vec![posting(id, PostingKind::CoopAccrual, amount)];
        postings.push(posting(id, PostingKind::ClawbackRecovery, -recovery));
        let credited = sub(amount, recovery, "co-op balance")?;
        Ok(WalletPlan {
            postings,
            balance: add(self.balance, credited, "co-op balance")?,
            clawback_due: sub(self.clawback_due, recovery, "co-op clawback")?,
            accrued: add(self.accrued, amount, "co-op accrued")?,
        })
    }

    /// Debits `amount` (a magnitude ≥ 0) of co-op reversed by reversal `id`, as far as the
    /// balance goes; the rest becomes a clawback due.
    pub(crate) fn plan_reversal(&self, id: &str, amount: Decimal) -> Result<WalletPlan, Rejection> {
        self.fresh(PostingKind::CoopReversal, id)?;
        let debit = amount.min(self.balance).max(Decimal::ZERO);
        let short = sub(amount, debit, "co-op clawback")?;
        Ok(WalletPlan {
            postings: vec![posting(id, PostingKind::CoopReversal, -debit)],
            balance: sub(self.balance, debit, "co-op balance")?,
            clawback_due: add(self.clawback_due, short, "co-op clawback")?,
            accrued: sub(self.accrued, amount, "co-op accrued")?,
        })
    }

    pub(crate) fn commit(&mut self, plan: WalletPlan) {
        for p in plan.postings {
            if p.amount_usd.is_zero() {
                continue; // nothing moved: no posting to keep
            }
            self.applied.insert((p.kind, p.id.clone()));
            self.postings.push(p);
        }
        self.balance = plan.balance;
        self.clawback_due = plan.clawback_due;
        self.accrued = plan.accrued;
    }

    /// Applies an MDF expense once per `expense_id`.
    pub fn apply_mdf(
        &mut self,
        expense_id: &str,
        amount_usd: Decimal,
        decision: MdfDecision,
    ) -> MdfOutcome {
        if self.mdf.contains_key(expense_id) {
            return MdfOutcome::Duplicate;
        }
        let outcome = match decision {
            MdfDecision::Rejected => MdfOutcome::Rejected,
            MdfDecision::Approved => {
                let next = (
                    self.balance.checked_sub(amount_usd),
                    self.drawn.checked_add(amount_usd),
                );
                match next {
                    (Some(balance), Some(drawn))
                        if !amount_usd.is_sign_negative() && !balance.is_sign_negative() =>
                    {
                        let p = posting(expense_id, PostingKind::MdfDraw, -amount_usd);
                        if !amount_usd.is_zero() {
                            self.applied.insert((p.kind, p.id.clone()));
                            self.postings.push(p);
                        }
                        self.balance = balance;
                        self.drawn = drawn;
                        MdfOutcome::Drawn
                    }
                    _ => MdfOutcome::Refused,
                }
            }
        };
        let record = MdfRecord {
            amount_usd,
            decision,
            outcome,
        };
        self.mdf.insert(expense_id.to_string(), record);
        outcome
    }
}

fn posting(id: &str, kind: PostingKind, amount_usd: Decimal) -> Posting {
    Posting {
        id: id.to_string(),
        kind,
        amount_usd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::testkit::d;

    fn accrue(w: &mut CoopWallet, id: &str, amount: &str) {
        let plan = w.plan_accrual(id, d(amount)).unwrap();
        w.commit(plan);
    }

    fn sum(w: &CoopWallet) -> Decimal {
        w.postings().iter().map(|p| p.amount_usd).sum()
    }

    #[test]
    fn postings_sum_to_the_balance_and_apply_once() {
        let mut w = CoopWallet::default();
        accrue(&mut w, "i1:paid", "20.67");
        accrue(&mut w, "i2:paid", "4.33");
        assert_eq!((w.balance(), sum(&w)), (d("25.00"), d("25.00")));
        assert!(w.plan_accrual("i1:paid", d("1")).is_err());
    }

    #[test]
    fn approved_mdf_debits_when_covered_else_is_refused() {
        let mut w = CoopWallet::default();
        accrue(&mut w, "i1:paid", "25000");
        assert_eq!(
            w.apply_mdf("webinar", d("25000"), MdfDecision::Approved),
            MdfOutcome::Drawn
        );
        assert_eq!(w.balance(), d("0"));
        let out = w.apply_mdf("booth", d("0.01"), MdfDecision::Approved);
        assert_eq!(
            (out, out.reason()),
            (MdfOutcome::Refused, Some(INSUFFICIENT_COOP_BALANCE))
        );
        assert_eq!(w.mdf_record("booth").unwrap().outcome, MdfOutcome::Refused);
        // Refused stays refused: the id is applied once, even after money arrives.
        accrue(&mut w, "i2:paid", "100");
        assert_eq!(
            w.apply_mdf("booth", d("0.01"), MdfDecision::Approved),
            MdfOutcome::Duplicate
        );
        assert_eq!(
            (w.drawn(), w.balance(), sum(&w)),
            (d("25000"), d("100"), d("100"))
        );
    }

    #[test]
    fn a_rejected_expense_leaves_the_wallet_untouched() {
        let mut w = CoopWallet::default();
        accrue(&mut w, "i1:paid", "10");
        let before = w.postings().to_vec();
        assert_eq!(
            w.apply_mdf("x", d("5"), MdfDecision::Rejected),
            MdfOutcome::Rejected
        );
        assert_eq!((w.balance(), w.postings()), (d("10"), before.as_slice()));
    }

    #[test]
    fn a_reversal_beyond_the_balance_becomes_a_clawback_recovered_later() {
        let mut w = CoopWallet::default();
        accrue(&mut w, "i1:paid", "10");
        w.apply_mdf("m", d("8"), MdfDecision::Approved); // balance 2
        let plan = w.plan_reversal("r1:refund", d("5")).unwrap();
        w.commit(plan);
        // Debit 2 (all there is), 3 due; accrued 10 − 5 = 5; 0 − 3 = 5 − 8.
        assert_eq!(
            (w.balance(), w.clawback_due(), w.accrued()),
            (d("0"), d("3"), d("5"))
        );
        accrue(&mut w, "i2:paid", "4"); // pays the 3 back, 1 left
        assert_eq!(
            (w.balance(), w.clawback_due(), w.accrued()),
            (d("1"), d("0"), d("9"))
        );
        assert_eq!(sum(&w), w.balance());
        assert_eq!(w.balance() - w.clawback_due(), w.accrued() - w.drawn());
    }
}
