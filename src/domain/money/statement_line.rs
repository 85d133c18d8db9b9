//! One line of a statement: how paid lines, reversals and received overrides become lines,
//! and how a line is written as CSV.

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::fx::USD;
use super::line::{OverridePart, PaidDraft, Parts, Pricing};
use super::month::Month;
use super::{add, Rejection};
use crate::domain::event::{AttributionEvent, InvoiceEvent, InvoiceKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Paid,
    Refund,
    Chargeback,
    /// An override earned on a descendant's line (received attribution).
    Override,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Paid => "paid",
            LineKind::Refund => "refund",
            LineKind::Chargeback => "chargeback",
            LineKind::Override => "override",
        }
    }

    fn of(kind: InvoiceKind) -> LineKind {
        match kind {
            InvoiceKind::Paid => LineKind::Paid,
            InvoiceKind::Refund => LineKind::Refund,
            InvoiceKind::Chargeback => LineKind::Chargeback,
        }
    }
}

/// `<invoice_id>:<kind>`: the identity of an invoice line (CONTRACT §1).
pub(crate) fn line_key(invoice_id: &str, kind: InvoiceKind) -> String {
    format!("{invoice_id}:{}", LineKind::of(kind).as_str())
}

/// One line of a statement. Money is USD cents; reversal lines carry parts ≤ 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// `<invoice_id>:<kind>`, or the attribution_id of an override line.
    pub line_id: String,
    pub kind: LineKind,
    pub invoice_id: String,
    pub ts: DateTime<Utc>,
    /// Set on an adjustment line: the (frozen) month the line belongs to.
    pub origin_month: Option<Month>,
    /// Reversals: the original invoice and its month.
    pub refers_to: Option<String>,
    pub refers_to_month: Option<Month>,
    /// Override lines: the descendant whose line earned it.
    pub from_partner_id: Option<String>,
    pub tenant_id: Option<String>,
    pub currency: Option<String>,
    /// platform_fee + overage in `currency` (the refunded amount on a reversal; the
    /// descendant's base in USD on an override line).
    pub amount: Option<Decimal>,
    /// Paid lines: how the line was priced.
    pub pricing: Option<Pricing>,
    pub base_usd: Decimal,
    /// Tier (or promo, or partner rate) + spiffs.
    pub commission_usd: Decimal,
    pub volume_bonus_usd: Decimal,
    pub coop_usd: Decimal,
    /// Received from a descendant (override lines).
    pub override_commission_usd: Decimal,
    /// Paid up the chain to ancestors on this line (informational: not this partner's).
    pub overrides: Vec<OverridePart>,
}

impl StatementLine {
    /// The line of a paid invoice of month `month`, landing in `landing`.
    pub(crate) fn paid(e: &InvoiceEvent, draft: &PaidDraft, landing: Month) -> StatementLine {
        let p = &draft.parts;
        StatementLine {
            amount: Some(draft.gross),
            pricing: Some(draft.pricing.clone()),
            ..StatementLine::invoice(e, draft.month, landing, p)
        }
    }

    /// The line of a refund or chargeback of `amount` (invoice currency) reversing `parts`
    /// (≤ 0) of an original line of `original_month`.
    pub(crate) fn reversal(
        e: &InvoiceEvent,
        original_month: Month,
        amount: Decimal,
        parts: &Parts,
        landing: Month,
    ) -> StatementLine {
        StatementLine {
            refers_to: e.refers_to.clone(),
            refers_to_month: Some(original_month),
            amount: Some(amount),
            ..StatementLine::invoice(e, Month::of(e.ts), landing, parts)
        }
    }

    fn invoice(e: &InvoiceEvent, month: Month, landing: Month, p: &Parts) -> StatementLine {
        StatementLine {
            line_id: line_key(&e.invoice_id, e.kind),
            kind: LineKind::of(e.kind),
            invoice_id: e.invoice_id.clone(),
            ts: e.ts,
            origin_month: (landing != month).then_some(month),
            refers_to: None,
            refers_to_month: None,
            from_partner_id: None,
            tenant_id: Some(e.tenant_id.clone()),
            currency: Some(e.currency.clone()),
            amount: None,
            pricing: None,
            base_usd: p.base_usd,
            commission_usd: p.commission_usd,
            volume_bonus_usd: p.bonus_usd,
            coop_usd: p.coop_usd,
            override_commission_usd: Decimal::ZERO,
            overrides: p.overrides.clone(),
        }
    }

    /// The line of an override received from a descendant.
    pub(crate) fn override_received(e: &AttributionEvent, landing: Month) -> StatementLine {
        let month = Month::of(e.ts);
        StatementLine {
            line_id: e.attribution_id.clone(),
            kind: LineKind::Override,
            invoice_id: e.invoice_id.clone(),
            ts: e.ts,
            origin_month: (landing != month).then_some(month),
            refers_to: None,
            refers_to_month: None,
            from_partner_id: Some(e.partner_id.clone()),
            tenant_id: None,
            currency: Some(USD.to_string()),
            amount: Some(e.base_usd),
            pricing: None,
            base_usd: Decimal::ZERO,
            commission_usd: Decimal::ZERO,
            volume_bonus_usd: Decimal::ZERO,
            coop_usd: Decimal::ZERO,
            override_commission_usd: e.amount_usd,
            overrides: Vec::new(),
        }
    }

    pub(crate) fn upline_usd(&self) -> Result<Decimal, Rejection> {
        self.overrides.iter().try_fold(Decimal::ZERO, |a, o| {
            add(a, o.amount_usd, "upline overrides")
        })
    }

    /// The line's CSV cells, in [`CSV_HEADER`] order.
    pub(crate) fn csv_cells(&self, month: &str) -> Vec<String> {
        let p = self.pricing.as_ref();
        let spiff = p.map(|p| p.spiffs.iter().map(|s| s.extra_rate).sum::<Decimal>());
        let upline: Decimal = self.overrides.iter().map(|o| o.amount_usd).sum();
        vec![
            month.to_string(),
            text(&self.line_id),
            self.kind.as_str().into(),
            text(&self.invoice_id),
            ts(self.ts),
            opt(self.origin_month),
            opt_text(self.refers_to.as_deref()),
            opt(self.refers_to_month),
            opt_text(self.from_partner_id.as_deref()),
            opt_text(self.tenant_id.as_deref()),
            opt_text(self.currency.as_deref()),
            opt(self.amount),
            opt(p.map(|p| p.usd_per_unit)),
            p.and_then(|p| p.fx_as_of).map(ts).unwrap_or_default(),
            opt(p.map(|p| p.fx_after_ts)),
            opt_text(p.map(|p| p.tier.as_str())),
            opt(p.map(|p| p.rate_source.as_str())),
            opt(p.map(|p| p.base_rate)),
            opt(spiff),
            opt(p.map(|p| p.rate)),
            opt(p.map(|p| p.coop_rate)),
            self.base_usd.to_string(),
            self.commission_usd.to_string(),
            self.volume_bonus_usd.to_string(),
            self.coop_usd.to_string(),
            self.override_commission_usd.to_string(),
            upline.to_string(),
        ]
    }
}

pub(crate) const CSV_HEADER: &str = "month,line_id,kind,invoice_id,ts,origin_month,refers_to,refers_to_month,from_partner_id,tenant_id,currency,amount,usd_per_unit,fx_as_of,fx_after_ts,tier,rate_source,base_rate,spiff_rate,rate,coop_rate,base_usd,commission_usd,volume_bonus_usd,coop_usd,override_commission_usd,upline_overrides_usd";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn opt_text(v: Option<&str>) -> String {
    v.map(text).unwrap_or_default()
}

/// A text cell: quoted when needed. A leading `=`, `+`, `-`, `@`, tab or carriage return
/// (what spreadsheets read as the start of a formula, OWASP's list) is defused with `'`.
pub(crate) fn text(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}
