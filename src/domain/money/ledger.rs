//! [`Ledger`]: the money part of one partner's state (CONTRACT §2), and the invoice and
//! attribution paths into it. Control facts (MDF, credits, tenants, FX arrivals, month
//! close) are in `ledger_control.rs`.
//!
//! Every path plans first — prices the line, checks every sum it will change — and commits
//! after, so a rejection leaves the ledger exactly as it was. `(invoice_id, kind)` and
//! `attribution_id` are applied once, forever.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::credits::CreditWallet;
use super::facts::MoneyFacts;
use super::line::{draft_paid, negate, AccruedLine, Parts};
use super::month::Month;
use super::program::Program;
use super::reversal::{draft_reversal, reversed_after};
use super::statement::{Statement, StatementError, StatementTotals, Statements, Transition};
use super::statement_line::{line_key, StatementLine};
use super::status::StatusTracker;
use super::wallet::{CoopWallet, WalletPlan};
use super::{add, Rejection};
use crate::domain::event::{AttributionEvent, DeadLetterReason, InvoiceEvent, InvoiceKind};

pub use super::effects::{InvoiceOutcome, LedgerEffects, MoneyTotals, ParkedInvoice, RecordRef};
pub use super::ledger_control::{ControlOutcome, FxArrival};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub(super) partner_id: String,
    /// `<invoice_id>:<kind>` of every invoice accrued, reversed or parked.
    pub(super) applied: BTreeSet<String>,
    /// Paid lines by invoice_id, kept for their reversals.
    lines: BTreeMap<String, AccruedLine>,
    pub(super) parked: Vec<ParkedInvoice>,
    /// Base of the paid lines per month (by `ts`), for the volume bonus; reversals never
    /// change it.
    month_base: BTreeMap<Month, Decimal>,
    attributions: BTreeSet<String>,
    pub(super) statements: Statements,
    pub(super) coop: CoopWallet,
    pub(super) credits: CreditWallet,
    pub(super) status: StatusTracker,
    revenue: Decimal,
    commission: Decimal,
    override_commission: Decimal,
}

/// An invoice line planned against every sum it changes, ready to commit.
struct Booking {
    landing: Month,
    line: StatementLine,
    statement_totals: StatementTotals,
    wallet: WalletPlan,
    revenue: Decimal,
    commission: Decimal,
    /// The line's commission (rate + bonus), signed.
    commission_delta: Decimal,
}

impl Ledger {
    pub fn new(partner_id: impl Into<String>) -> Self {
        Ledger {
            partner_id: partner_id.into(),
            ..Ledger::default()
        }
    }

    pub fn partner_id(&self) -> &str {
        &self.partner_id
    }

    /// Nothing was ever applied to it (what a new partner's ledger is).
    pub fn is_untouched(&self) -> bool {
        *self
            == Ledger {
                partner_id: self.partner_id.clone(),
                ..Ledger::default()
            }
    }

    /// Applies a paid invoice, refund or chargeback of this partner (CONTRACT §2).
    pub fn apply_invoice(
        &mut self,
        e: &InvoiceEvent,
        facts: &MoneyFacts,
        program: &Program,
    ) -> Result<LedgerEffects, Rejection> {
        if e.partner_id != self.partner_id {
            return Err(Rejection::new(
                DeadLetterReason::WrongKey,
                format!(
                    "invoice of `{}` applied to `{}`",
                    e.partner_id, self.partner_id
                ),
            ));
        }
        if self.applied.contains(&line_key(&e.invoice_id, e.kind)) {
            return Ok(LedgerEffects::of(InvoiceOutcome::Duplicate));
        }
        match e.kind {
            InvoiceKind::Paid => self.accrue(e, facts, program),
            InvoiceKind::Refund | InvoiceKind::Chargeback => self.reverse(e),
        }
    }

    fn park(&mut self, e: &InvoiceEvent, waits_for: &str) -> LedgerEffects {
        self.applied.insert(line_key(&e.invoice_id, e.kind));
        self.parked.push(ParkedInvoice {
            event: e.clone(),
            waits_for: waits_for.to_string(),
            source: None,
        });
        let mut fx = LedgerEffects::of(InvoiceOutcome::Parked);
        fx.chargeback = e.kind == InvoiceKind::Chargeback;
        fx
    }

    fn accrue(
        &mut self,
        e: &InvoiceEvent,
        facts: &MoneyFacts,
        program: &Program,
    ) -> Result<LedgerEffects, Rejection> {
        let Some(quote) = facts.fx_quote(&e.currency, e.ts) else {
            return Ok(self.park(e, &e.currency));
        };
        let month = Month::of(e.ts);
        let before = self.month_base_usd(month);
        let draft = draft_paid(&self.partner_id, e, quote, facts, program, before)?;
        let landing = self.statements.landing_month(month);
        let line = StatementLine::paid(e, &draft, landing);
        let wallet = self
            .coop
            .plan_accrual(&line.line_id, draft.parts.coop_usd)?;
        let booking = self.plan(line, landing, wallet)?;
        let mut fx = LedgerEffects::of(InvoiceOutcome::Accrued);
        fx.attributions = self.attributions_for(e, &draft.parts);
        fx.commission_accrued_usd = booking.commission_delta;
        fx.coop_accrued_usd = draft.parts.coop_usd;
        self.commit(booking);
        self.month_base
            .insert(month, draft.pricing.month_base_after_usd);
        self.lines
            .insert(e.invoice_id.clone(), AccruedLine::new(&e.currency, draft));
        Ok(fx)
    }

    fn reverse(&mut self, e: &InvoiceEvent) -> Result<LedgerEffects, Rejection> {
        let refers_to = e.refers_to.as_deref().ok_or_else(|| {
            Rejection::new(
                DeadLetterReason::MissingRefersTo,
                "a reversal needs `refers_to`",
            )
        })?;
        let parked_original = self
            .parked
            .iter()
            .find(|p| p.event.kind == InvoiceKind::Paid && p.event.invoice_id == refers_to)
            .map(|p| p.waits_for.clone());
        if let Some(currency) = parked_original {
            return Ok(self.park(e, &currency));
        }
        let original = self.lines.get(refers_to).ok_or_else(|| {
            Rejection::new(
                DeadLetterReason::UnknownOriginal,
                format!("no paid invoice `{refers_to}`"),
            )
        })?;
        if original.currency != e.currency {
            return Err(Rejection::new(
                DeadLetterReason::InvalidValue,
                format!(
                    "currency {} differs from the original's {}",
                    e.currency, original.currency
                ),
            ));
        }
        let amount = add(e.platform_fee, e.overage, "refunded amount")?;
        let draft = draft_reversal(original, amount)?;
        let reversed = reversed_after(&original.reversed, &draft.parts)?;
        let negative = draft.parts.negated();
        let landing = self.statements.landing_month(Month::of(e.ts));
        let line = StatementLine::reversal(e, original.month, amount, &negative, landing);
        let wallet = self
            .coop
            .plan_reversal(&line.line_id, draft.parts.coop_usd)?;
        let booking = self.plan(line, landing, wallet)?;
        let mut fx = LedgerEffects::of(InvoiceOutcome::Reversed);
        fx.attributions = self.attributions_for(e, &negative);
        fx.chargeback = e.kind == InvoiceKind::Chargeback;
        fx.commission_reversed_usd = negate(booking.commission_delta);
        self.commit(booking);
        if let Some(l) = self.lines.get_mut(refers_to) {
            l.refunded = draft.refunded_after;
            l.reversed = reversed;
        }
        Ok(fx)
    }

    /// Checks every sum an invoice line changes: its statement, the wallet, the totals.
    fn plan(
        &self,
        line: StatementLine,
        landing: Month,
        wallet: WalletPlan,
    ) -> Result<Booking, Rejection> {
        let commission_delta = add(line.commission_usd, line.volume_bonus_usd, "commission")?;
        Ok(Booking {
            statement_totals: self.statements.totals_with(landing, &line)?,
            revenue: add(self.revenue, line.base_usd, "attributed revenue")?,
            commission: add(self.commission, commission_delta, "commission")?,
            commission_delta,
            landing,
            line,
            wallet,
        })
    }

    fn commit(&mut self, b: Booking) {
        self.applied.insert(b.line.line_id.clone());
        self.statements.push(b.landing, b.line, b.statement_totals);
        self.coop.commit(b.wallet);
        self.revenue = b.revenue;
        self.commission = b.commission;
    }

    /// One record per ancestor part of `parts` (negative on a reversal).
    fn attributions_for(&self, e: &InvoiceEvent, parts: &Parts) -> Vec<AttributionEvent> {
        let key = line_key(&e.invoice_id, e.kind);
        parts
            .overrides
            .iter()
            .map(|o| AttributionEvent {
                attribution_id: format!("{key}:{}", o.ancestor_id),
                ancestor_id: o.ancestor_id.clone(),
                partner_id: self.partner_id.clone(),
                invoice_id: e.invoice_id.clone(),
                kind: e.kind,
                ts: e.ts,
                base_usd: parts.base_usd,
                override_rate: o.override_rate,
                amount_usd: o.amount_usd,
            })
            .collect()
    }

    /// Credits an override earned on a descendant's line, once per `attribution_id`.
    pub fn apply_attribution(&mut self, e: &AttributionEvent) -> Result<InvoiceOutcome, Rejection> {
        if e.ancestor_id != self.partner_id {
            return Err(Rejection::new(
                DeadLetterReason::WrongKey,
                format!(
                    "attribution for `{}` applied to `{}`",
                    e.ancestor_id, self.partner_id
                ),
            ));
        }
        if self.attributions.contains(&e.attribution_id) {
            return Ok(InvoiceOutcome::Duplicate);
        }
        let landing = self.statements.landing_month(Month::of(e.ts));
        let line = StatementLine::override_received(e, landing);
        let statement_totals = self.statements.totals_with(landing, &line)?;
        let after = add(
            self.override_commission,
            e.amount_usd,
            "override commission",
        )?;
        self.attributions.insert(e.attribution_id.clone());
        self.statements.push(landing, line, statement_totals);
        self.override_commission = after;
        Ok(InvoiceOutcome::Accrued)
    }

    /// Invoices waiting for an FX rate, in arrival order.
    pub fn parked(&self) -> &[ParkedInvoice] {
        &self.parked
    }

    /// Notes where the invoice just parked came from (the caller knows the record, the
    /// rules do not); a no-op unless the last parked line is that invoice with no source.
    pub fn note_parked_source(&mut self, e: &InvoiceEvent, source: RecordRef) {
        if let Some(last) = self.parked.last_mut() {
            let same = last.event.invoice_id == e.invoice_id && last.event.kind == e.kind;
            if same && last.source.is_none() {
                last.source = Some(source);
            }
        }
    }

    pub fn coop_wallet(&self) -> &CoopWallet {
        &self.coop
    }

    pub fn credit_wallet(&self) -> &CreditWallet {
        &self.credits
    }

    pub fn totals(&self) -> MoneyTotals {
        MoneyTotals {
            attributed_revenue_usd: self.revenue,
            commission_usd: self.commission,
            override_commission_usd: self.override_commission,
            coop_accrued_usd: self.coop.accrued(),
            // The wallet keeps both sides within range (balance − clawback_due is accrued
            // − drawn, each a checked sum), so this subtraction stays in range too.
            coop_balance_usd: self.coop.balance() - self.coop.clawback_due(),
            coop_available_usd: self.coop.balance(),
            coop_clawback_due_usd: self.coop.clawback_due(),
            mdf_drawn_usd: self.coop.drawn(),
            credits_balance: self.credits.balance(),
            parked_invoices: self.parked.len() as u64,
        }
    }

    /// The partner's base so far in `month` (paid lines only).
    pub fn month_base_usd(&self, month: Month) -> Decimal {
        self.month_base.get(&month).copied().unwrap_or_default()
    }

    pub fn statement(&self, month: Month) -> Statement {
        self.statements.statement(month)
    }

    /// Months with a statement, oldest first.
    pub fn statement_months(&self) -> Vec<Month> {
        self.statements.months().collect()
    }

    /// Freezes `month` as pending (what a `month_close` fact does).
    pub fn freeze(&mut self, month: Month) -> Transition {
        self.statements.freeze(month)
    }

    pub fn approve(&mut self, month: Month) -> Result<Transition, StatementError> {
        self.statements.approve(month)
    }

    pub fn mark_paid(
        &mut self,
        month: Month,
        reference: &str,
    ) -> Result<Transition, StatementError> {
        self.statements.mark_paid(month, reference)
    }
}
