//! What the ledger hands back: the effects of an invoice (attributions to publish, health
//! and metric figures), the parked invoices, and the totals of CONTRACT §6.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::event::{AttributionEvent, InvoiceEvent};

/// An invoice waiting for the first FX rate of `waits_for` (a paid line in that currency,
/// or a reversal of such a parked line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedInvoice {
    pub event: InvoiceEvent,
    pub waits_for: String,
    /// Where its record is on the invoices topic: a line rejected when its rate arrives is
    /// dead-lettered under that record's id (CONTRACT §4, §5). `None` for one parked before
    /// it was kept (then it is only audited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RecordRef>,
}

/// A record's place on its topic (the topic is known from context).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRef {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceOutcome {
    /// A paid line accrued (or an attribution credited).
    Accrued,
    /// A refund or chargeback reversed its original's parts.
    Reversed,
    /// Waiting for an FX rate: visible in [`Ledger::parked`].
    Parked,
    /// Applied before: nothing changed.
    Duplicate,
}

/// What applying an invoice produced, for the caller to run (outbox, metrics, health).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEffects {
    pub outcome: InvoiceOutcome,
    /// One override record per ancestor, for `warden.attribution.v1`.
    pub attributions: Vec<AttributionEvent>,
    pub parked: bool,
    /// A chargeback was applied (or parked): a health signal.
    pub chargeback: bool,
    /// Commission (rate + bonus) accrued by a paid line; metrics count it gross.
    pub commission_accrued_usd: Decimal,
    /// Commission (rate + bonus) reversed, as a magnitude.
    pub commission_reversed_usd: Decimal,
    pub coop_accrued_usd: Decimal,
}

impl LedgerEffects {
    pub(super) fn of(outcome: InvoiceOutcome) -> Self {
        LedgerEffects {
            outcome,
            attributions: Vec::new(),
            parked: outcome == InvoiceOutcome::Parked,
            chargeback: false,
            commission_accrued_usd: Decimal::ZERO,
            commission_reversed_usd: Decimal::ZERO,
            coop_accrued_usd: Decimal::ZERO,
        }
    }
}

/// The money figures of CONTRACT §6, net of reversals; serialised as decimal strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyTotals {
    pub attributed_revenue_usd: Decimal,
    /// Tier + spiff + volume bonus.
    pub commission_usd: Decimal,
    pub override_commission_usd: Decimal,
    pub coop_accrued_usd: Decimal,
    /// coop_accrued_usd − mdf_drawn_usd (CONTRACT §6): below zero when co-op already drawn
    /// was reversed (a clawback is due).
    pub coop_balance_usd: Decimal,
    /// What MDF may still draw: the balance, never below zero.
    pub coop_available_usd: Decimal,
    /// Co-op reversed after it was drawn, to be recovered from future accruals:
    /// coop_available_usd − coop_clawback_due_usd = coop_balance_usd.
    pub coop_clawback_due_usd: Decimal,
    pub mdf_drawn_usd: Decimal,
    pub credits_balance: Decimal,
    pub parked_invoices: u64,
}
