//! Monthly statements (CONTRACT §2 "Months", §6 statement API).
//!
//! A month's statement is `open` until its `month_close`, then `pending` → `approved` →
//! `paid` (finance). A frozen statement never changes: a line for a frozen month lands in
//! the first open month after it as an adjustment line naming its `origin_month`. Totals
//! are the sum of the lines, computed from them on every read.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::month::Month;
use super::statement_line::{StatementLine, CSV_HEADER};
use super::{add, Rejection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementStatus {
    #[default]
    Open,
    Pending,
    Approved,
    Paid,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementTotals {
    pub attributed_revenue_usd: Decimal,
    /// Tier + spiff part of the commission.
    pub rate_commission_usd: Decimal,
    pub volume_bonus_usd: Decimal,
    /// rate_commission_usd + volume_bonus_usd (CONTRACT §6 `commission_usd`).
    pub commission_usd: Decimal,
    pub override_commission_usd: Decimal,
    pub coop_accrued_usd: Decimal,
    pub upline_overrides_usd: Decimal,
    /// commission_usd + override_commission_usd: the cash owed for the month.
    pub payout_usd: Decimal,
    pub lines: u64,
}

impl StatementTotals {
    pub(crate) fn plus(&self, l: &StatementLine) -> Result<StatementTotals, Rejection> {
        let commission = add(l.commission_usd, l.volume_bonus_usd, "commission")?;
        let payout = add(commission, l.override_commission_usd, "payout")?;
        Ok(StatementTotals {
            attributed_revenue_usd: add(self.attributed_revenue_usd, l.base_usd, "revenue")?,
            rate_commission_usd: add(self.rate_commission_usd, l.commission_usd, "commission")?,
            volume_bonus_usd: add(self.volume_bonus_usd, l.volume_bonus_usd, "bonus")?,
            commission_usd: add(self.commission_usd, commission, "commission")?,
            override_commission_usd: add(
                self.override_commission_usd,
                l.override_commission_usd,
                "override",
            )?,
            coop_accrued_usd: add(self.coop_accrued_usd, l.coop_usd, "co-op")?,
            upline_overrides_usd: add(self.upline_overrides_usd, l.upline_usd()?, "upline")?,
            payout_usd: add(self.payout_usd, payout, "payout")?,
            lines: self.lines.saturating_add(1),
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct MonthStatement {
    status: StatementStatus,
    lines: Vec<StatementLine>,
    /// Running totals: checked on every push, so summing the lines again cannot overflow.
    totals: StatementTotals,
    paid_reference: Option<String>,
}

/// Whether a transition changed the statement (a repeat is `Unchanged`, not an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Changed,
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("statement {month} is {from:?}: it cannot become {to:?}")]
    Illegal {
        month: Month,
        from: StatementStatus,
        to: StatementStatus,
    },
    #[error("statement {month} was paid with another reference (`{reference}`)")]
    OtherReference { month: Month, reference: String },
    #[error("a payment reference must not be empty")]
    EmptyReference,
}

/// A month's statement as readers see it: `totals` is the sum of `lines`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub month: Month,
    pub status: StatementStatus,
    pub paid_reference: Option<String>,
    pub lines: Vec<StatementLine>,
    pub totals: StatementTotals,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statements {
    months: BTreeMap<Month, MonthStatement>,
}

impl Statements {
    fn status(&self, month: Month) -> StatementStatus {
        self.months
            .get(&month)
            .map_or(StatementStatus::Open, |m| m.status)
    }

    /// The statement a line of `origin` lands in: the first month from `origin` on that is
    /// still open. A month before the oldest one closed counts as closed: the auto-closer
    /// never reaches back past that one ([`Month::due_for_close`]), so a late or backdated
    /// line landing there would stay in an open statement that no run ever pays.
    pub fn landing_month(&self, origin: Month) -> Month {
        let oldest_closed = self
            .months
            .iter()
            .find(|(_, m)| m.status != StatementStatus::Open)
            .map(|(month, _)| *month);
        let mut month = oldest_closed.map_or(origin, |oldest| origin.max(oldest));
        while self.status(month) != StatementStatus::Open {
            month = month.next();
        }
        month
    }

    /// The month's totals with `line` added: the check before [`Statements::push`].
    pub(crate) fn totals_with(
        &self,
        month: Month,
        line: &StatementLine,
    ) -> Result<StatementTotals, Rejection> {
        self.months
            .get(&month)
            .map(|m| &m.totals)
            .cloned()
            .unwrap_or_default()
            .plus(line)
    }

    /// Adds a line to an open month with the totals [`Statements::totals_with`] returned.
    pub(crate) fn push(&mut self, month: Month, line: StatementLine, totals: StatementTotals) {
        let m = self.months.entry(month).or_default();
        m.lines.push(line);
        m.totals = totals;
    }

    /// `month_close`: open → pending. Repeats are harmless.
    pub fn freeze(&mut self, month: Month) -> Transition {
        let m = self.months.entry(month).or_default();
        if m.status != StatementStatus::Open {
            return Transition::Unchanged;
        }
        m.status = StatementStatus::Pending;
        Transition::Changed
    }

    /// pending → approved.
    pub fn approve(&mut self, month: Month) -> Result<Transition, StatementError> {
        let from = self.status(month);
        match from {
            StatementStatus::Approved => Ok(Transition::Unchanged),
            StatementStatus::Pending => {
                self.months.entry(month).or_default().status = StatementStatus::Approved;
                Ok(Transition::Changed)
            }
            _ => Err(StatementError::Illegal {
                month,
                from,
                to: StatementStatus::Approved,
            }),
        }
    }

    /// approved → paid, with the payment's reference.
    pub fn mark_paid(
        &mut self,
        month: Month,
        reference: &str,
    ) -> Result<Transition, StatementError> {
        if reference.trim().is_empty() {
            return Err(StatementError::EmptyReference);
        }
        let m = self.months.entry(month).or_default();
        match m.status {
            StatementStatus::Approved => {
                m.status = StatementStatus::Paid;
                m.paid_reference = Some(reference.to_string());
                Ok(Transition::Changed)
            }
            StatementStatus::Paid if m.paid_reference.as_deref() == Some(reference) => {
                Ok(Transition::Unchanged)
            }
            StatementStatus::Paid => Err(StatementError::OtherReference {
                month,
                reference: m.paid_reference.clone().unwrap_or_default(),
            }),
            from => Err(StatementError::Illegal {
                month,
                from,
                to: StatementStatus::Paid,
            }),
        }
    }

    /// The month's statement; a month with nothing in it is an empty open one.
    pub fn statement(&self, month: Month) -> Statement {
        let m = self.months.get(&month);
        let lines = m.map(|m| m.lines.clone()).unwrap_or_default();
        let totals = m.map(|m| Self::sum(&lines, &m.totals)).unwrap_or_default();
        Statement {
            month,
            status: self.status(month),
            paid_reference: m.and_then(|m| m.paid_reference.clone()),
            lines,
            totals,
        }
    }

    /// Months with a statement (lines or a status), oldest first.
    pub fn months(&self) -> impl Iterator<Item = Month> + '_ {
        self.months.keys().copied()
    }

    /// The sum of the lines. Each partial sum was checked when its line was pushed, so this
    /// cannot overflow; `running` is the fallback that keeps this free of panics regardless.
    fn sum(lines: &[StatementLine], running: &StatementTotals) -> StatementTotals {
        lines
            .iter()
            .try_fold(StatementTotals::default(), |acc, l| acc.plus(l))
            .unwrap_or_else(|_| running.clone())
    }
}

impl Statement {
    /// CSV with a header, one row per line, then a `total` row with the same column sums.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(CSV_HEADER);
        out.push('\n');
        let month = self.month.to_string();
        for l in &self.lines {
            out.push_str(&l.csv_cells(&month).join(","));
            out.push('\n');
        }
        let t = &self.totals;
        let _ = writeln!(
            out,
            "{month},total,,,,,,,,,,,,,,,,,,,,{},{},{},{},{},{}",
            t.attributed_revenue_usd,
            t.rate_commission_usd,
            t.volume_bonus_usd,
            t.coop_accrued_usd,
            t.override_commission_usd,
            t.upline_overrides_usd
        );
        out
    }
}

#[cfg(test)]
#[path = "statement_tests.rs"]
mod tests;
