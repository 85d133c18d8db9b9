//! Checks for the record decoders (`warden::kafka::decode`), which must never panic and
//! must let through only events that keep the promises of `domain::event`.
//!
//! Input of the keyed targets (`decode_usage`, `decode_invoice`, `decode_attribution`):
//! `KEY \n RECORD_TS \n PAYLOAD`, so seeds stay readable JSON and the fuzzer mutates the
//! key and the record timestamp too. An empty first line is "no key"; a second line that
//! is not an `i64` is "no record timestamp"; an input with fewer than two newlines has no
//! payload (a tombstone). `decode_control` takes the whole input as the payload.
//!
//! Beyond "no panic", for an accepted record: the key is the event's partner, the clock
//! skew bound holds, ids are 1–128 characters, counts and money have the contract's
//! signs, and re-encoding the event decodes to the same event. For a rejection: a reason
//! the decoder may give, a short non-empty detail, and `NotJson` exactly when the payload
//! is not a JSON object.

use chrono::{DateTime, Utc};
use serde_json::Value;
use warden::domain::event::{
    ControlEvent, DeadLetterReason, InvoiceKind, PartnerEvent, Rejection, TopicKind,
};
use warden::kafka::decode::{decode_control_record, decode_partner_record, DecodeLimits};

/// A rejection's detail repeats at most 40 characters of a value; this leaves room for
/// escapes, field names and serde_json's position, and catches a value echoed whole.
const MAX_DETAIL_BYTES: usize = 1024;

/// Reasons only the domain gives (dedup, refunds, arithmetic), never the decoder.
const DOMAIN_REASONS: [DeadLetterReason; 4] = [
    DeadLetterReason::OutsideDedupWindow,
    DeadLetterReason::OverRefund,
    DeadLetterReason::UnknownOriginal,
    DeadLetterReason::ArithmeticOverflow,
];

/// A keyed record, split out of the fuzzer's bytes (see the module header).
#[derive(Debug, Clone, Copy)]
pub struct KeyedInput<'a> {
    pub key: Option<&'a [u8]>,
    pub record_ts_ms: Option<i64>,
    pub payload: Option<&'a [u8]>,
}

impl<'a> KeyedInput<'a> {
    pub fn parse(data: &'a [u8]) -> Self {
        let mut parts = data.splitn(3, |b| *b == b'\n');
        let key = parts.next().filter(|k| !k.is_empty());
        let record_ts_ms = parts
            .next()
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse().ok());
        KeyedInput {
            key,
            record_ts_ms,
            payload: parts.next(),
        }
    }
}

pub fn usage(data: &[u8]) -> bool {
    keyed(TopicKind::Usage, data)
}

pub fn invoice(data: &[u8]) -> bool {
    keyed(TopicKind::Invoices, data)
}

pub fn attribution(data: &[u8]) -> bool {
    keyed(TopicKind::Attribution, data)
}

pub fn control(data: &[u8]) -> bool {
    let limits = DecodeLimits::default();
    match decode_control_record(Some(data), &limits) {
        Ok(event) => {
            assert_control_event(&event);
            let again = serde_json::to_vec(&event).expect("a control event serializes");
            let decoded = decode_control_record(Some(&again), &limits);
            assert_eq!(
                decoded.as_ref(),
                Ok(&event),
                "re-encoded as {}",
                lossy(&again)
            );
            true
        }
        Err(r) => {
            assert_rejection(&r, Some(data), &limits);
            false
        }
    }
}

fn keyed(kind: TopicKind, data: &[u8]) -> bool {
    let input = KeyedInput::parse(data);
    let limits = DecodeLimits::default();
    let decode =
        |payload| decode_partner_record(kind, input.key, payload, input.record_ts_ms, &limits);
    match decode(input.payload) {
        Ok(event) => {
            assert_partner_event(kind, &event, &input, &limits);
            let again = reencode(&event);
            assert_eq!(
                decode(Some(&again)).as_ref(),
                Ok(&event),
                "re-encoded as {}",
                lossy(&again)
            );
            true
        }
        Err(r) => {
            assert_rejection(&r, input.payload, &limits);
            false
        }
    }
}

fn reencode(event: &PartnerEvent) -> Vec<u8> {
    let bytes = match event {
        PartnerEvent::Usage(e) => serde_json::to_vec(e),
        PartnerEvent::Invoice(e) => serde_json::to_vec(e),
        PartnerEvent::Attribution(e) => serde_json::to_vec(e),
    };
    bytes.expect("a partner event serializes")
}

fn assert_partner_event(
    kind: TopicKind,
    event: &PartnerEvent,
    input: &KeyedInput<'_>,
    limits: &DecodeLimits,
) {
    assert_eq!(input.key, Some(event.partner_id().as_bytes()), "key");
    if let Some(bound) = input
        .record_ts_ms
        .filter(|ms| *ms >= 0)
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .and_then(|t| t.checked_add_signed(limits.max_clock_skew))
    {
        assert!(event.ts() <= bound, "ts {} past {bound}", event.ts());
    }
    match (kind, event) {
        (TopicKind::Usage, PartnerEvent::Usage(u)) => {
            assert!(u.errors <= u.requests, "{u:?}");
            assert_ids(&[&u.event_id, &u.partner_id, &u.integration_id]);
            assert_ids(&u.tenant_id.iter().collect::<Vec<_>>());
        }
        (TopicKind::Invoices, PartnerEvent::Invoice(i)) => {
            let money = [i.platform_fee, i.overage, i.processing_cost];
            let money = money.iter().chain(&i.contract_value);
            assert!(money.into_iter().all(|m| !m.is_sign_negative()), "{i:?}");
            assert_eq!(i.refers_to.is_some(), i.kind != InvoiceKind::Paid, "{i:?}");
            assert_currency(&i.currency);
            assert_ids(&[&i.invoice_id, &i.partner_id, &i.tenant_id]);
            assert_ids(&i.refers_to.iter().collect::<Vec<_>>());
        }
        (TopicKind::Attribution, PartnerEvent::Attribution(a)) => {
            assert!(!a.override_rate.is_sign_negative(), "{a:?}");
            let kind = serde_json::to_value(a.kind).expect("a kind serializes");
            let kind = kind.as_str().expect("a kind is a string");
            let id = format!("{}:{kind}:{}", a.invoice_id, a.ancestor_id);
            assert_eq!(a.attribution_id, id);
            assert_ids(&[&a.ancestor_id, &a.partner_id, &a.invoice_id]);
        }
        (kind, event) => panic!("{kind:?} decoded to {event:?}"),
    }
}

fn assert_control_event(event: &ControlEvent) {
    match event {
        ControlEvent::Partner {
            partner_id,
            tier,
            parent_id,
            override_rate,
            coop_rate,
            commission_rate,
            ..
        } => {
            assert_ids(&[partner_id, tier]);
            assert_ids(&parent_id.iter().collect::<Vec<_>>());
            let rates = [override_rate, coop_rate, commission_rate];
            assert!(rates
                .iter()
                .copied()
                .flatten()
                .all(|r| !r.is_sign_negative()));
        }
        ControlEvent::TierChange {
            partner_id, tier, ..
        } => assert_ids(&[partner_id, tier]),
        ControlEvent::Spiff {
            spiff_id,
            partner_id,
            extra_rate,
            min_contract_value_usd,
            ..
        } => {
            assert_ids(&[spiff_id]);
            assert_ids(&partner_id.iter().collect::<Vec<_>>());
            let money = std::iter::once(extra_rate).chain(min_contract_value_usd);
            assert!(money.into_iter().all(|m| !m.is_sign_negative()));
        }
        ControlEvent::VolumeBonus {
            partner_id,
            monthly_threshold_usd,
            bonus_rate,
        } => {
            assert_ids(&partner_id.iter().collect::<Vec<_>>());
            assert!(!monthly_threshold_usd.is_sign_negative() && !bonus_rate.is_sign_negative());
        }
        ControlEvent::FxRate {
            currency,
            usd_per_unit,
            ..
        } => {
            assert_currency(currency);
            assert!(usd_per_unit.is_sign_positive() && !usd_per_unit.is_zero());
        }
        ControlEvent::MdfExpense {
            expense_id,
            partner_id,
            amount_usd,
            ..
        } => {
            assert_ids(&[expense_id, partner_id]);
            assert!(amount_usd.is_sign_positive() && !amount_usd.is_zero());
            assert!(amount_usd.normalize().scale() <= 2, "whole cents");
        }
        ControlEvent::Tenant {
            tenant_id,
            partner_id,
            deployment_value_usd,
            ..
        } => {
            assert_ids(&[tenant_id, partner_id]);
            assert!(deployment_value_usd.is_none_or(|v| !v.is_sign_negative()));
        }
        ControlEvent::CreditPurchase {
            purchase_id,
            partner_id,
            credits,
            paid_usd,
        } => {
            assert_ids(&[purchase_id, partner_id]);
            let positive = [credits, paid_usd];
            assert!(positive
                .iter()
                .all(|m| m.is_sign_positive() && !m.is_zero()));
        }
        ControlEvent::Quota {
            partner_id,
            integration_id,
            ..
        } => {
            assert_ids(&[partner_id]);
            assert_ids(&integration_id.iter().collect::<Vec<_>>());
        }
        ControlEvent::MonthClose { month } => {
            let b = month.as_bytes();
            let shaped = b.len() == 7
                && b[4] == b'-'
                && b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit)
                && (1..=12).contains(&month[5..].parse::<u8>().unwrap_or(0));
            assert!(shaped, "month {month:?}");
        }
    }
}

fn assert_rejection(r: &Rejection, payload: Option<&[u8]>, limits: &DecodeLimits) {
    assert!(!r.detail.is_empty(), "{r:?}");
    assert!(
        r.detail.len() <= MAX_DETAIL_BYTES,
        "detail of {} bytes",
        r.detail.len()
    );
    assert!(!DOMAIN_REASONS.contains(&r.reason), "{r:?}");
    let bytes = payload.unwrap_or_default();
    if bytes.len() > limits.max_record_bytes {
        assert_eq!(r.reason, DeadLetterReason::RecordTooLarge, "{r:?}");
        return;
    }
    // serde_json's own reading. Only this direction is an invariant: the decoder skips
    // unknown fields without building them, so it may accept what `Value` refuses
    // (a lone surrogate escape, a number beyond f64 in a skipped field).
    let is_object = matches!(serde_json::from_slice::<Value>(bytes), Ok(Value::Object(_)));
    if is_object {
        assert_ne!(r.reason, DeadLetterReason::NotJson, "a JSON object: {r:?}");
    }
    let not_json = std::str::from_utf8(bytes).is_err()
        || matches!(serde_json::from_slice::<Value>(bytes), Ok(v) if !v.is_object());
    if not_json {
        assert_eq!(r.reason, DeadLetterReason::NotJson, "{r:?}");
    }
}

/// Ids are 1–128 characters (Unicode scalar values, not bytes).
fn assert_ids(ids: &[&String]) {
    for id in ids {
        let chars = id.chars().count();
        assert!((1..=128).contains(&chars), "id of {chars} characters");
    }
}

fn assert_currency(code: &str) {
    let ok = code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase());
    assert!(ok, "currency {code:?}");
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
