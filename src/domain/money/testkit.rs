//! Builders shared by the money tests.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::facts::MoneyFacts;
use super::month::Month;
use super::program::Program;
use crate::domain::event::{ControlEvent, InvoiceEvent, InvoiceKind};

pub fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

pub fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

pub fn program(name: &str) -> Program {
    Program::builtin(name).unwrap().unwrap()
}

pub fn default_program() -> Program {
    program("default")
}

/// A `partner` fact with `tier` from 2026-01-01 and nothing else set.
pub fn partner_fact(partner_id: &str, tier: &str, parent: Option<&str>) -> ControlEvent {
    ControlEvent::Partner {
        partner_id: partner_id.into(),
        name: partner_id.to_uppercase(),
        tier: tier.into(),
        tier_effective_from: t("2026-01-01T00:00:00Z"),
        parent_id: parent.map(Into::into),
        override_rate: None,
        coop_rate: None,
        commission_rate: None,
        net_of_cost: None,
    }
}

/// A paid USD invoice of partner "p" with `fee` as its platform fee.
pub fn paid(id: &str, ts: &str, fee: &str) -> InvoiceEvent {
    InvoiceEvent {
        invoice_id: id.into(),
        ts: t(ts),
        kind: InvoiceKind::Paid,
        partner_id: "p".into(),
        tenant_id: "ten-1".into(),
        currency: "USD".into(),
        platform_fee: d(fee),
        overage: Decimal::ZERO,
        processing_cost: Decimal::ZERO,
        new_logo: false,
        contract_value: None,
        refers_to: None,
    }
}

/// A refund (credit note `id`) of `amount` against `original`.
pub fn refund(id: &str, original: &str, ts: &str, amount: &str) -> InvoiceEvent {
    InvoiceEvent {
        kind: InvoiceKind::Refund,
        refers_to: Some(original.into()),
        ..paid(id, ts, amount)
    }
}

pub fn chargeback(id: &str, original: &str, ts: &str, amount: &str) -> InvoiceEvent {
    InvoiceEvent {
        kind: InvoiceKind::Chargeback,
        ..refund(id, original, ts, amount)
    }
}

pub fn m(s: &str) -> Month {
    s.parse().unwrap()
}

/// Partner "p" (gold) under "sub" (override 3 %) under "dist" (override 2 %).
pub fn chain_facts() -> MoneyFacts {
    let mut f = MoneyFacts::new();
    let with_rate = |id: &str, tier: &str, parent: Option<&str>, rate: Option<&str>| {
        let mut e = partner_fact(id, tier, parent);
        if let ControlEvent::Partner { override_rate, .. } = &mut e {
            *override_rate = rate.map(d);
        }
        e
    };
    f.apply(0, &with_rate("dist", "platinum", None, Some("0.02")));
    f.apply(1, &with_rate("sub", "silver", Some("dist"), Some("0.03")));
    f.apply(2, &with_rate("p", "gold", Some("sub"), None));
    f
}

pub fn gold_facts() -> MoneyFacts {
    let mut f = MoneyFacts::new();
    f.apply(0, &partner_fact("p", "gold", None));
    f
}
