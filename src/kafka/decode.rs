//! The one place record bytes become typed events (CONTRACT §1, §5).
//!
//! Every rule of the input schemas is checked here, so the domain never re-validates:
//! what comes out is a [`PartnerEvent`] or a [`ControlEvent`] whose money is a `Decimal`
//! with the contract's sign, whose ids are 1–128 characters and whose counts are
//! consistent; anything else is a [`Rejection`] naming the field, bound for the
//! dead-letter topic. Decoding never panics, whatever the bytes.
//!
//! Hot path: a record is parsed once, in one pass, into a fixed table of borrowed raw
//! values (one slot per known field, unknown fields skipped without being built); strings
//! without escapes are borrowed from the payload, never copied until they go into the
//! event. No `serde_json::Value` tree is built.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Datelike, Duration, Utc};
use rust_decimal::Decimal;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::domain::event::{
    AttributionEvent, ControlEvent, DeadLetterReason, InvoiceEvent, InvoiceKind, MdfDecision,
    OveragePolicy, PartnerEvent, Rejection, TenantPlan, TopicKind, UsageEvent,
};

/// Bounds applied while decoding (config: `max_record_bytes`, `max_clock_skew`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// A payload longer than this is rejected before it is parsed.
    pub max_record_bytes: usize,
    /// How far an event's `ts` may be ahead of its record timestamp.
    pub max_clock_skew: Duration,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_record_bytes: 64 * 1024,
            max_clock_skew: Duration::minutes(5),
        }
    }
}

/// Ids are 1–128 characters (Unicode scalar values, not bytes).
const MAX_ID_CHARS: usize = 128;
/// What a `Decimal` holds exactly (96-bit mantissa).
const MAX_SIGNIFICANT_DIGITS: usize = 28;
/// How much of an offending value a rejection's detail repeats.
const MAX_SHOWN_CHARS: usize = 40;

const USAGE_FIELDS: [&str; 9] = [
    "event_id",
    "ts",
    "partner_id",
    "integration_id",
    "tenant_id",
    "requests",
    "errors",
    "auth_failures",
    "bytes",
];

const INVOICE_FIELDS: [&str; 12] = [
    "invoice_id",
    "ts",
    "kind",
    "partner_id",
    "tenant_id",
    "currency",
    "platform_fee",
    "overage",
    "processing_cost",
    "new_logo",
    "contract_value",
    "refers_to",
];

const ATTRIBUTION_FIELDS: [&str; 9] = [
    "attribution_id",
    "ancestor_id",
    "partner_id",
    "invoice_id",
    "kind",
    "ts",
    "base_usd",
    "override_rate",
    "amount_usd",
];

/// Every field of every control type: the record is parsed once, then `type` picks the
/// fields it reads; the others are ignored like unknown fields.
const CONTROL_FIELDS: [&str; 38] = [
    "type",
    "partner_id",
    "name",
    "tier",
    "tier_effective_from",
    "parent_id",
    "override_rate",
    "coop_rate",
    "commission_rate",
    "net_of_cost",
    "effective_from",
    "spiff_id",
    "from",
    "to",
    "extra_rate",
    "new_logo_only",
    "min_contract_value_usd",
    "monthly_threshold_usd",
    "bonus_rate",
    "currency",
    "usd_per_unit",
    "as_of",
    "expense_id",
    "amount_usd",
    "campaign",
    "decision",
    "tenant_id",
    "plan",
    "started_at",
    "deployment_value_usd",
    "purchase_id",
    "credits",
    "paid_usd",
    "integration_id",
    "monthly_requests",
    "burst_rps",
    "overage",
    "month",
];

const INVOICE_KINDS: [(&str, InvoiceKind); 3] = [
    ("paid", InvoiceKind::Paid),
    ("refund", InvoiceKind::Refund),
    ("chargeback", InvoiceKind::Chargeback),
];
const MDF_DECISIONS: [(&str, MdfDecision); 2] = [
    ("approved", MdfDecision::Approved),
    ("rejected", MdfDecision::Rejected),
];
const TENANT_PLANS: [(&str, TenantPlan); 2] =
    [("pilot", TenantPlan::Pilot), ("paid", TenantPlan::Paid)];
const OVERAGE_POLICIES: [(&str, OveragePolicy); 3] = [
    ("block", OveragePolicy::Block),
    ("soft", OveragePolicy::Soft),
    ("notify", OveragePolicy::Notify),
];

/// A record of a keyed topic: usage, invoices or attribution.
///
/// Checks, in order: size, JSON object, fields, key (= `partner_id`, the ancestor for
/// attribution), then `ts` against `record_ts_ms` + `max_clock_skew`. A negative
/// `record_ts_ms` is Kafka's "no timestamp" and, like `None`, skips the last check.
pub fn decode_partner_record(
    kind: TopicKind,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    record_ts_ms: Option<i64>,
    limits: &DecodeLimits,
) -> Result<PartnerEvent, Rejection> {
    let event = match kind {
        TopicKind::Usage => PartnerEvent::Usage(usage(&parse(payload, limits, &USAGE_FIELDS)?)?),
        TopicKind::Invoices => PartnerEvent::Invoice(Box::new(invoice(&parse(
            payload,
            limits,
            &INVOICE_FIELDS,
        )?)?)),
        TopicKind::Attribution => PartnerEvent::Attribution(Box::new(attribution(&parse(
            payload,
            limits,
            &ATTRIBUTION_FIELDS,
        )?)?)),
        // A caller's mistake, not bad input; still a rejection rather than a panic.
        TopicKind::Control => {
            return Err(Rejection::new(
                DeadLetterReason::InvalidValue,
                "control records are decoded by decode_control_record",
            ))
        }
    };
    let key_field = if kind == TopicKind::Attribution {
        "ancestor_id"
    } else {
        "partner_id"
    };
    check_key(key, event.partner_id(), key_field)?;
    check_clock_skew(event.ts(), record_ts_ms, limits.max_clock_skew)?;
    Ok(event)
}

/// A record of the control topic, tagged by `type`.
pub fn decode_control_record(
    payload: Option<&[u8]>,
    limits: &DecodeLimits,
) -> Result<ControlEvent, Rejection> {
    let r = parse(payload, limits, &CONTROL_FIELDS)?;
    let kind = r.field("type").str()?;
    let f = |name| r.field(name);
    Ok(match kind {
        "partner" => ControlEvent::Partner {
            partner_id: f("partner_id").id()?,
            name: f("name").text()?,
            tier: f("tier").id()?,
            tier_effective_from: f("tier_effective_from").timestamp()?,
            parent_id: f("parent_id").opt(Field::id)?,
            override_rate: f("override_rate").opt(|x| x.money(Sign::NonNegative))?,
            coop_rate: f("coop_rate").opt(|x| x.money(Sign::NonNegative))?,
            commission_rate: f("commission_rate").opt(|x| x.money(Sign::NonNegative))?,
            net_of_cost: f("net_of_cost").opt(Field::boolean)?,
        },
        "tier_change" => ControlEvent::TierChange {
            partner_id: f("partner_id").id()?,
            tier: f("tier").id()?,
            effective_from: f("effective_from").timestamp()?,
        },
        "spiff" => ControlEvent::Spiff {
            spiff_id: f("spiff_id").id()?,
            partner_id: f("partner_id").opt(Field::id)?,
            from: f("from").timestamp()?,
            to: f("to").timestamp()?,
            extra_rate: f("extra_rate").money(Sign::NonNegative)?,
            new_logo_only: f("new_logo_only").boolean()?,
            min_contract_value_usd: f("min_contract_value_usd")
                .opt(|x| x.money(Sign::NonNegative))?,
        },
        "volume_bonus" => ControlEvent::VolumeBonus {
            partner_id: f("partner_id").opt(Field::id)?,
            monthly_threshold_usd: f("monthly_threshold_usd").money(Sign::NonNegative)?,
            bonus_rate: f("bonus_rate").money(Sign::NonNegative)?,
        },
        "fx_rate" => ControlEvent::FxRate {
            currency: f("currency").currency()?,
            usd_per_unit: f("usd_per_unit").money(Sign::Positive)?,
            as_of: f("as_of").timestamp()?,
        },
        "mdf_expense" => ControlEvent::MdfExpense {
            expense_id: f("expense_id").id()?,
            partner_id: f("partner_id").id()?,
            amount_usd: f("amount_usd").whole_cents()?,
            campaign: f("campaign").text()?,
            decision: f("decision").one_of(&MDF_DECISIONS)?,
        },
        "tenant" => ControlEvent::Tenant {
            tenant_id: f("tenant_id").id()?,
            partner_id: f("partner_id").id()?,
            plan: f("plan").one_of(&TENANT_PLANS)?,
            started_at: f("started_at").timestamp()?,
            deployment_value_usd: f("deployment_value_usd").opt(|x| x.money(Sign::NonNegative))?,
        },
        "credit_purchase" => ControlEvent::CreditPurchase {
            purchase_id: f("purchase_id").id()?,
            partner_id: f("partner_id").id()?,
            credits: f("credits").money(Sign::Positive)?,
            paid_usd: f("paid_usd").money(Sign::Positive)?,
        },
        "quota" => ControlEvent::Quota {
            partner_id: f("partner_id").id()?,
            integration_id: f("integration_id").opt(Field::id)?,
            monthly_requests: f("monthly_requests").count()?,
            burst_rps: f("burst_rps").count()?,
            overage: f("overage").one_of(&OVERAGE_POLICIES)?,
        },
        "month_close" => ControlEvent::MonthClose {
            month: f("month").month()?,
        },
        other => {
            return Err(Rejection::new(
                DeadLetterReason::UnknownEnumValue,
                format!("unknown `type` {}", shown(other)),
            ))
        }
    })
}

fn usage(r: &Record<'_, 9>) -> Result<UsageEvent, Rejection> {
    let event = UsageEvent {
        event_id: r.field("event_id").id()?,
        ts: r.field("ts").timestamp()?,
        partner_id: r.field("partner_id").id()?,
        integration_id: r.field("integration_id").id()?,
        tenant_id: r.field("tenant_id").opt(Field::id)?,
        requests: r.field("requests").count()?,
        errors: r.field("errors").count()?,
        auth_failures: r.field("auth_failures").opt(Field::count)?.unwrap_or(0),
        bytes: r.field("bytes").opt(Field::count)?.unwrap_or(0),
    };
    if event.errors > event.requests {
        return Err(Rejection::new(
            DeadLetterReason::ErrorsExceedRequests,
            format!(
                "`errors` ({}) exceeds `requests` ({})",
                event.errors, event.requests
            ),
        ));
    }
    Ok(event)
}

fn invoice(r: &Record<'_, 12>) -> Result<InvoiceEvent, Rejection> {
    let kind = r.field("kind").one_of(&INVOICE_KINDS)?;
    let mut event = InvoiceEvent {
        invoice_id: r.field("invoice_id").id()?,
        ts: r.field("ts").timestamp()?,
        kind,
        partner_id: r.field("partner_id").id()?,
        tenant_id: r.field("tenant_id").id()?,
        currency: r.field("currency").currency()?,
        platform_fee: r.field("platform_fee").money(Sign::NonNegative)?,
        overage: r
            .field("overage")
            .opt(|x| x.money(Sign::NonNegative))?
            .unwrap_or(Decimal::ZERO),
        // The contract gives only the default; a negative cost would inflate a
        // net-of-cost base, so it is refused like negative money.
        processing_cost: r
            .field("processing_cost")
            .opt(|x| x.money(Sign::NonNegative))?
            .unwrap_or(Decimal::ZERO),
        new_logo: r.field("new_logo").opt(Field::boolean)?.unwrap_or(false),
        contract_value: r
            .field("contract_value")
            .opt(|x| x.money(Sign::NonNegative))?,
        refers_to: r.field("refers_to").opt(Field::id)?,
    };
    match kind {
        // `refers_to` means nothing on a paid invoice: dropped so that `Some` always
        // means "the original of this reversal".
        InvoiceKind::Paid => event.refers_to = None,
        InvoiceKind::Refund | InvoiceKind::Chargeback if event.refers_to.is_none() => {
            return Err(Rejection::new(
                DeadLetterReason::MissingRefersTo,
                format!("`refers_to` is required for a {}", kind_name(kind)),
            ));
        }
        InvoiceKind::Refund | InvoiceKind::Chargeback => {}
    }
    Ok(event)
}

fn attribution(r: &Record<'_, 9>) -> Result<AttributionEvent, Rejection> {
    let event = AttributionEvent {
        attribution_id: r.field("attribution_id").text()?,
        ancestor_id: r.field("ancestor_id").id()?,
        partner_id: r.field("partner_id").id()?,
        invoice_id: r.field("invoice_id").id()?,
        kind: r.field("kind").one_of(&INVOICE_KINDS)?,
        ts: r.field("ts").timestamp()?,
        // Reversals carry negative amounts (CONTRACT §2).
        base_usd: r.field("base_usd").money(Sign::Any)?,
        override_rate: r.field("override_rate").money(Sign::NonNegative)?,
        amount_usd: r.field("amount_usd").money(Sign::Any)?,
    };
    // The ancestor applies each id once, so the id must be the one its parts define.
    let well_formed = event
        .attribution_id
        .strip_prefix(event.invoice_id.as_str())
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|rest| rest.strip_prefix(kind_name(event.kind)))
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|rest| rest == event.ancestor_id);
    if !well_formed {
        return Err(Rejection::new(
            DeadLetterReason::InvalidValue,
            format!(
                "`attribution_id` {} is not `<invoice_id>:<kind>:<ancestor_id>`",
                shown(&event.attribution_id)
            ),
        ));
    }
    Ok(event)
}

fn kind_name(kind: InvoiceKind) -> &'static str {
    match kind {
        InvoiceKind::Paid => "paid",
        InvoiceKind::Refund => "refund",
        InvoiceKind::Chargeback => "chargeback",
    }
}

fn check_key(key: Option<&[u8]>, expected: &str, field: &str) -> Result<(), Rejection> {
    match key {
        Some(key) if key == expected.as_bytes() => Ok(()),
        Some(key) => Err(Rejection::new(
            DeadLetterReason::WrongKey,
            format!(
                "record key {} is not the `{field}`",
                shown(&String::from_utf8_lossy(key))
            ),
        )),
        None => Err(Rejection::new(
            DeadLetterReason::WrongKey,
            format!("record has no key; it must be the `{field}`"),
        )),
    }
}

fn check_clock_skew(
    ts: DateTime<Utc>,
    record_ts_ms: Option<i64>,
    skew: Duration,
) -> Result<(), Rejection> {
    let Some(record_ms) = record_ts_ms.filter(|ms| *ms >= 0) else {
        return Ok(());
    };
    // A bound beyond chrono's range cannot be exceeded by a parsed `ts`.
    let Some(bound) =
        DateTime::from_timestamp_millis(record_ms).and_then(|t| t.checked_add_signed(skew))
    else {
        return Ok(());
    };
    if ts > bound {
        return Err(Rejection::new(
            DeadLetterReason::TsOutOfRange,
            format!(
                "`ts` {} is later than the record timestamp plus max_clock_skew ({bound})",
                ts.to_rfc3339()
            ),
        ));
    }
    Ok(())
}

/// An offending value, quoted and cut short for a rejection's detail.
fn shown(value: &str) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(MAX_SHOWN_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

// ---------------------------------------------------------------------------------------
// Parsing: bytes → a table of raw values, one slot per known field.
// ---------------------------------------------------------------------------------------

fn parse<'a, const N: usize>(
    payload: Option<&'a [u8]>,
    limits: &DecodeLimits,
    names: &'static [&'static str; N],
) -> Result<Record<'a, N>, Rejection> {
    let bytes = payload.unwrap_or_default();
    if bytes.len() > limits.max_record_bytes {
        return Err(Rejection::new(
            DeadLetterReason::RecordTooLarge,
            format!(
                "record of {} bytes is over max_record_bytes ({})",
                bytes.len(),
                limits.max_record_bytes
            ),
        ));
    }
    if bytes.is_empty() {
        return Err(Rejection::new(DeadLetterReason::NotJson, "empty record"));
    }
    // The whole payload, not only the strings serde_json decodes: an unknown field's
    // string is skipped unchecked by the parser.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Rejection::new(DeadLetterReason::NotJson, format!("not UTF-8: {e}")))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let vals = RecordSeed { names }
        .deserialize(&mut de)
        .and_then(|vals| de.end().map(|()| vals))
        .map_err(|e| {
            let detail = match e.classify() {
                serde_json::error::Category::Data => "not a JSON object".to_owned(),
                _ => format!("not JSON: {e}"),
            };
            Rejection::new(DeadLetterReason::NotJson, detail)
        })?;
    Ok(Record { names, vals })
}

/// A JSON value as far as validation needs it: scalars kept (strings borrowed when they
/// have no escapes), containers skipped.
#[derive(Debug)]
enum Raw<'a> {
    Null,
    Bool(bool),
    /// A non-negative integer literal that fits u64.
    UInt(u64),
    /// Any other number: negative, fractional, exponent, or too large for u64.
    OtherNumber,
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Raw<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Raw::Null => "null",
            Raw::Bool(_) => "a boolean",
            Raw::UInt(_) | Raw::OtherNumber => "a number",
            Raw::Str(_) => "a string",
            Raw::Array => "an array",
            Raw::Object => "an object",
        }
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw<'de>, E> {
        Ok(Raw::UInt(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw<'de>, E> {
        Ok(u64::try_from(v).map_or(Raw::OtherNumber, Raw::UInt))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Raw<'de>, E> {
        Ok(Raw::OtherNumber)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Raw::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Raw::Object)
    }
}

impl<'de> de::Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

/// A map key, resolved to its slot without being copied (escaped keys included).
struct KeySeed<const N: usize> {
    names: &'static [&'static str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for KeySeed<N> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<const N: usize> Visitor<'_> for KeySeed<N> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.names.iter().position(|name| *name == v))
    }
}

/// The top-level object: known fields into their slots (a repeated field: the last one
/// wins, as in serde_json's own map and most JSON readers), the rest skipped.
struct RecordSeed<const N: usize> {
    names: &'static [&'static str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for RecordSeed<N> {
    type Value = [Option<Raw<'de>>; N];

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for RecordSeed<N> {
    type Value = [Option<Raw<'de>>; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut vals: [Option<Raw<'de>>; N] = std::array::from_fn(|_| None);
        while let Some(slot) = map.next_key_seed(KeySeed { names: self.names })? {
            match slot {
                Some(i) => vals[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(vals)
    }
}

struct Record<'a, const N: usize> {
    names: &'static [&'static str; N],
    vals: [Option<Raw<'a>>; N],
}

impl<'a, const N: usize> Record<'a, N> {
    /// The field `name` of the schema; absent and JSON null read the same.
    fn field(&self, name: &'static str) -> Field<'_, 'a> {
        let slot = self.names.iter().position(|n| *n == name);
        debug_assert!(slot.is_some(), "`{name}` is not a field of this schema");
        let raw = slot
            .and_then(|i| self.vals[i].as_ref())
            .filter(|raw| !matches!(raw, Raw::Null));
        Field { name, raw }
    }
}

/// Which sign a money or rate field may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sign {
    Any,
    NonNegative,
    Positive,
}

/// One field of a record, with the checks of the contract's types.
struct Field<'r, 'a> {
    name: &'static str,
    raw: Option<&'r Raw<'a>>,
}

impl<'r> Field<'r, '_> {
    /// `None` when the field is absent (or null), else `check` of it.
    fn opt<T>(
        &self,
        check: impl FnOnce(&Self) -> Result<T, Rejection>,
    ) -> Result<Option<T>, Rejection> {
        match self.raw {
            None => Ok(None),
            Some(_) => check(self).map(Some),
        }
    }

    fn present(&self) -> Result<&'r Raw<'r>, Rejection> {
        self.raw.ok_or_else(|| {
            Rejection::new(
                DeadLetterReason::MissingField,
                format!("missing field `{}`", self.name),
            )
        })
    }

    fn wrong_type(&self, expected: &str, raw: &Raw<'_>) -> Rejection {
        Rejection::new(
            DeadLetterReason::WrongType,
            format!(
                "`{}` must be {expected}, not {}",
                self.name,
                raw.type_name()
            ),
        )
    }

    fn invalid(&self, why: &str, value: &str) -> Rejection {
        Rejection::new(
            DeadLetterReason::InvalidValue,
            format!("`{}` {} {why}", self.name, shown(value)),
        )
    }

    fn str(&self) -> Result<&'r str, Rejection> {
        match self.present()? {
            Raw::Str(s) => Ok(s),
            other => Err(self.wrong_type("a string", other)),
        }
    }

    /// Free text (a name, a campaign): any string.
    fn text(&self) -> Result<String, Rejection> {
        self.str().map(str::to_owned)
    }

    /// An id: a string of 1–128 characters.
    fn id(&self) -> Result<String, Rejection> {
        let s = self.str()?;
        // Byte length bounds the char count from above: skip counting when short.
        if s.is_empty() || (s.len() > MAX_ID_CHARS && s.chars().count() > MAX_ID_CHARS) {
            return Err(self.invalid("must be 1–128 characters", s));
        }
        Ok(s.to_owned())
    }

    fn timestamp(&self) -> Result<DateTime<Utc>, Rejection> {
        let s = self.str()?;
        let t = DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| self.invalid("is not an RFC 3339 timestamp", s))?;
        // An offset can move year 0000 into year -1 in UTC, which RFC 3339 cannot write
        // back (found by fuzzing): only years 1..=9999 in UTC are accepted.
        if !(1..=9999).contains(&t.year()) {
            return Err(self.invalid("is outside years 0001-9999 in UTC", s));
        }
        Ok(t)
    }

    /// A u64 count: a JSON integer literal, 0 ≤ n ≤ u64::MAX.
    fn count(&self) -> Result<u64, Rejection> {
        match self.present()? {
            Raw::UInt(n) => Ok(*n),
            other => Err(self.wrong_type("a non-negative integer", other)),
        }
    }

    fn boolean(&self) -> Result<bool, Rejection> {
        match self.present()? {
            Raw::Bool(b) => Ok(*b),
            other => Err(self.wrong_type("a boolean", other)),
        }
    }

    /// Money or a rate: a string holding a plain decimal, never a JSON number.
    fn money(&self, sign: Sign) -> Result<Decimal, Rejection> {
        let s = match self.present()? {
            Raw::Str(s) => s,
            Raw::UInt(_) | Raw::OtherNumber => {
                return Err(Rejection::new(
                    DeadLetterReason::MoneyAsNumber,
                    format!(
                        "`{}` must be a decimal string, not a JSON number",
                        self.name
                    ),
                ))
            }
            other => return Err(self.wrong_type("a decimal string", other)),
        };
        let value =
            parse_plain_decimal(s).ok_or_else(|| self.invalid("is not a plain decimal", s))?;
        if sign != Sign::Any && value.is_sign_negative() {
            return Err(Rejection::new(
                DeadLetterReason::NegativeMoney,
                format!("`{}` must not be negative, got {}", self.name, shown(s)),
            ));
        }
        if sign == Sign::Positive && value.is_zero() {
            return Err(self.invalid("must be greater than zero", s));
        }
        Ok(value)
    }

    /// A positive amount of dollars drawn from a balance, in whole cents: a draw of a
    /// fraction of a cent could not be shown (figures are shown in cents), and the shown
    /// balance would no longer be accrued − drawn (CONTRACT §6).
    fn whole_cents(&self) -> Result<Decimal, Rejection> {
        let value = self.money(Sign::Positive)?;
        if value.normalize().scale() > 2 {
            return Err(self.invalid("must be whole cents", &value.to_string()));
        }
        Ok(value)
    }

    /// An ISO 4217 code: three ASCII capital letters.
    fn currency(&self) -> Result<String, Rejection> {
        let s = self.str()?;
        if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(self.invalid("is not a currency code (three capital letters)", s));
        }
        Ok(s.to_owned())
    }

    fn one_of<T: Copy>(&self, values: &[(&str, T)]) -> Result<T, Rejection> {
        let s = self.str()?;
        values
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                Rejection::new(
                    DeadLetterReason::UnknownEnumValue,
                    format!("unknown `{}` {}", self.name, shown(s)),
                )
            })
    }

    /// A calendar month, `YYYY-MM`.
    fn month(&self) -> Result<String, Rejection> {
        let s = self.str()?;
        let b = s.as_bytes();
        let shaped = b.len() == 7
            && b[4] == b'-'
            && b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit)
            && matches!((b[5], b[6]), (b'0', b'1'..=b'9') | (b'1', b'0'..=b'2'));
        if !shaped {
            return Err(self.invalid("is not a month (YYYY-MM)", s));
        }
        Ok(s.to_owned())
    }
}

/// `-?digits(.digits)?` with at most 28 significant digits and at most 28 decimals, taken
/// exactly: no exponent, `+`, `_`, blank or rounding (all of which `Decimal::from_str`
/// would allow). Built from the digits directly, without a second parse. `"-0"` is zero.
fn parse_plain_decimal(s: &str) -> Option<Decimal> {
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) if !frac.is_empty() => (int, frac),
        Some(_) => return None,
        None => (unsigned, ""),
    };
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int_significant = int.trim_start_matches('0').len();
    let significant = if int_significant == 0 {
        frac.trim_start_matches('0').len()
    } else {
        int_significant + frac.len()
    };
    if significant > MAX_SIGNIFICANT_DIGITS || frac.len() > MAX_SIGNIFICANT_DIGITS {
        return None;
    }
    // At most 28 significant digits: the mantissa is below 10^28 < 2^96, no overflow.
    let mantissa = int.bytes().chain(frac.bytes()).try_fold(0i128, |m, b| {
        m.checked_mul(10)?.checked_add(i128::from(b - b'0'))
    })?;
    let signed = if negative { -mantissa } else { mantissa };
    let scale = u32::try_from(frac.len()).ok()?;
    Decimal::try_from_i128_with_scale(signed, scale).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::str::FromStr;

    use DeadLetterReason as R;

    const PARTNER: &str = "p-1";
    /// 2026-05-14T09:30:00Z, the `ts` of the examples, as a record timestamp.
    const TS_MS: i64 = 1_778_751_000_000;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// A valid record of each keyed topic, and of each control `type`.
    fn example(kind: &str) -> Value {
        match kind {
            "usage" => {
                json!({"event_id": "e-1", "ts": "2026-05-14T09:30:00Z", "partner_id": PARTNER,
                "integration_id": "int-1", "tenant_id": "t-1",
                "requests": 100, "errors": 3, "auth_failures": 2, "bytes": 4096})
            }
            "invoices" => {
                json!({"invoice_id": "inv-1", "ts": "2026-05-14T09:30:00Z", "kind": "paid",
                "partner_id": PARTNER, "tenant_id": "t-1", "currency": "EUR",
                "platform_fee": "1234.50", "overage": "10.05", "processing_cost": "3.20",
                "new_logo": true, "contract_value": "50000"})
            }
            "attribution" => json!({"attribution_id": "inv-1:refund:anc-1", "ancestor_id": "anc-1",
                "partner_id": PARTNER, "invoice_id": "inv-1", "kind": "refund",
                "ts": "2026-05-14T09:30:00Z", "base_usd": "-100.00", "override_rate": "0.03",
                "amount_usd": "-3.00"}),
            "partner" => {
                json!({"type": "partner", "partner_id": "p-2", "name": "Acme", "tier": "gold",
                "tier_effective_from": "2026-01-01T00:00:00Z", "parent_id": PARTNER,
                "override_rate": "0.02", "coop_rate": "0.02", "commission_rate": "0.2",
                "net_of_cost": true})
            }
            "tier_change" => {
                json!({"type": "tier_change", "partner_id": PARTNER, "tier": "platinum",
                "effective_from": "2026-06-01T00:00:00+02:00"})
            }
            "spiff" => json!({"type": "spiff", "spiff_id": "s-1", "from": "2026-05-01T00:00:00Z",
                "to": "2026-06-01T00:00:00Z", "extra_rate": "0.05", "new_logo_only": true,
                "min_contract_value_usd": "10000.00"}),
            "volume_bonus" => json!({"type": "volume_bonus", "partner_id": PARTNER,
                "monthly_threshold_usd": "100000", "bonus_rate": "0.01"}),
            "fx_rate" => json!({"type": "fx_rate", "currency": "EUR", "usd_per_unit": "1.0825",
                "as_of": "2026-05-14T00:00:00Z"}),
            "mdf_expense" => {
                json!({"type": "mdf_expense", "expense_id": "x-1", "partner_id": PARTNER,
                "amount_usd": "250.00", "campaign": "Spring webinar", "decision": "approved"})
            }
            "tenant" => json!({"type": "tenant", "tenant_id": "t-1", "partner_id": PARTNER,
                "plan": "pilot", "started_at": "2026-05-01T12:00:00Z", "deployment_value_usd": "0"}),
            "credit_purchase" => json!({"type": "credit_purchase", "purchase_id": "cp-1",
                "partner_id": PARTNER, "credits": "5000", "paid_usd": "4500.00"}),
            "quota" => json!({"type": "quota", "partner_id": PARTNER, "integration_id": "int-1",
                "monthly_requests": 1_000_000u64, "burst_rps": 50, "overage": "soft"}),
            "month_close" => json!({"type": "month_close", "month": "2026-04"}),
            other => panic!("no example for {other}"),
        }
    }

    const CONTROL_TYPES: [&str; 10] = [
        "partner",
        "tier_change",
        "spiff",
        "volume_bonus",
        "fx_rate",
        "mdf_expense",
        "tenant",
        "credit_purchase",
        "quota",
        "month_close",
    ];

    /// `v` with `field` set to `value` (`Value::Null` included).
    fn with(mut v: Value, field: &str, value: Value) -> Value {
        v.as_object_mut().unwrap().insert(field.to_owned(), value);
        v
    }

    fn without(mut v: Value, field: &str) -> Value {
        v.as_object_mut().unwrap().remove(field);
        v
    }

    fn decode(kind: TopicKind, v: &Value) -> Result<PartnerEvent, Rejection> {
        let key = if kind == TopicKind::Attribution {
            "anc-1"
        } else {
            PARTNER
        };
        let bytes = serde_json::to_vec(v).unwrap();
        let limits = DecodeLimits::default();
        decode_partner_record(
            kind,
            Some(key.as_bytes()),
            Some(&bytes),
            Some(TS_MS),
            &limits,
        )
    }

    fn control(v: &Value) -> Result<ControlEvent, Rejection> {
        decode_control_record(
            Some(&serde_json::to_vec(v).unwrap()),
            &DecodeLimits::default(),
        )
    }

    /// Asserts that `v` on `kind` (`Control` = the control decoder) is rejected for
    /// `reason`, with a detail naming `field`.
    #[track_caller]
    fn assert_rejected(kind: TopicKind, v: &Value, field: &str, reason: DeadLetterReason) {
        let r = match kind {
            TopicKind::Control => control(v).map(drop),
            keyed => decode(keyed, v).map(drop),
        };
        let r = r.expect_err("accepted");
        assert_eq!(r.reason, reason, "{v} gave {r:?}");
        assert!(
            r.detail.contains(field),
            "detail {:?} does not name {field}",
            r.detail
        );
    }

    // ---- valid examples --------------------------------------------------------------

    #[test]
    fn usage_example_decodes_exactly() {
        let expected = UsageEvent {
            event_id: "e-1".into(),
            ts: at("2026-05-14T09:30:00Z"),
            partner_id: PARTNER.into(),
            integration_id: "int-1".into(),
            tenant_id: Some("t-1".into()),
            requests: 100,
            errors: 3,
            auth_failures: 2,
            bytes: 4096,
        };
        let got = decode(TopicKind::Usage, &example("usage"));
        assert_eq!(got, Ok(PartnerEvent::Usage(expected)));
    }

    #[test]
    fn invoice_example_decodes_exactly() {
        let expected = InvoiceEvent {
            invoice_id: "inv-1".into(),
            ts: at("2026-05-14T09:30:00Z"),
            kind: InvoiceKind::Paid,
            partner_id: PARTNER.into(),
            tenant_id: "t-1".into(),
            currency: "EUR".into(),
            platform_fee: dec("1234.50"),
            overage: dec("10.05"),
            processing_cost: dec("3.20"),
            new_logo: true,
            contract_value: Some(dec("50000")),
            refers_to: None,
        };
        let got = decode(TopicKind::Invoices, &example("invoices"));
        assert_eq!(got, Ok(PartnerEvent::Invoice(Box::new(expected))));
    }

    #[test]
    fn refund_keeps_refers_to_and_paid_drops_it() {
        let paid = with(example("invoices"), "refers_to", json!("inv-0"));
        let refund = with(paid.clone(), "kind", json!("refund"));
        let Ok(PartnerEvent::Invoice(e)) = decode(TopicKind::Invoices, &refund) else {
            panic!("refund rejected")
        };
        assert_eq!(
            (e.kind, e.refers_to.as_deref()),
            (InvoiceKind::Refund, Some("inv-0"))
        );
        let Ok(PartnerEvent::Invoice(e)) = decode(TopicKind::Invoices, &paid) else {
            panic!("paid rejected")
        };
        assert_eq!(e.refers_to, None);
    }

    #[test]
    fn attribution_example_decodes_exactly_with_negative_amounts() {
        let expected = AttributionEvent {
            attribution_id: "inv-1:refund:anc-1".into(),
            ancestor_id: "anc-1".into(),
            partner_id: PARTNER.into(),
            invoice_id: "inv-1".into(),
            kind: InvoiceKind::Refund,
            ts: at("2026-05-14T09:30:00Z"),
            base_usd: dec("-100.00"),
            override_rate: dec("0.03"),
            amount_usd: dec("-3.00"),
        };
        let got = decode(TopicKind::Attribution, &example("attribution")).unwrap();
        assert_eq!(got.partner_id(), "anc-1");
        assert_eq!(got, PartnerEvent::Attribution(Box::new(expected)));
    }

    #[test]
    fn control_partner_decodes_exactly() {
        let expected = ControlEvent::Partner {
            partner_id: "p-2".into(),
            name: "Acme".into(),
            tier: "gold".into(),
            tier_effective_from: at("2026-01-01T00:00:00Z"),
            parent_id: Some(PARTNER.into()),
            override_rate: Some(dec("0.02")),
            coop_rate: Some(dec("0.02")),
            commission_rate: Some(dec("0.2")),
            net_of_cost: Some(true),
        };
        assert_eq!(control(&example("partner")), Ok(expected));
        let optional = [
            "parent_id",
            "override_rate",
            "coop_rate",
            "commission_rate",
            "net_of_cost",
        ];
        let minimal = optional
            .iter()
            .fold(example("partner"), |v, f| without(v, f));
        let expected = ControlEvent::Partner {
            partner_id: "p-2".into(),
            name: "Acme".into(),
            tier: "gold".into(),
            tier_effective_from: at("2026-01-01T00:00:00Z"),
            parent_id: None,
            override_rate: None,
            coop_rate: None,
            commission_rate: None,
            net_of_cost: None,
        };
        assert_eq!(control(&minimal), Ok(expected));
    }

    #[test]
    fn control_tier_change_decodes_exactly() {
        let expected = ControlEvent::TierChange {
            partner_id: PARTNER.into(),
            tier: "platinum".into(),
            effective_from: at("2026-05-31T22:00:00Z"),
        };
        assert_eq!(control(&example("tier_change")), Ok(expected));
    }

    #[test]
    fn control_spiff_decodes_exactly() {
        let expected = ControlEvent::Spiff {
            spiff_id: "s-1".into(),
            partner_id: None,
            from: at("2026-05-01T00:00:00Z"),
            to: at("2026-06-01T00:00:00Z"),
            extra_rate: dec("0.05"),
            new_logo_only: true,
            min_contract_value_usd: Some(dec("10000.00")),
        };
        assert_eq!(control(&example("spiff")), Ok(expected));
    }

    #[test]
    fn control_volume_bonus_decodes_exactly() {
        let expected = ControlEvent::VolumeBonus {
            partner_id: Some(PARTNER.into()),
            monthly_threshold_usd: dec("100000"),
            bonus_rate: dec("0.01"),
        };
        assert_eq!(control(&example("volume_bonus")), Ok(expected));
    }

    #[test]
    fn control_fx_rate_decodes_exactly() {
        let expected = ControlEvent::FxRate {
            currency: "EUR".into(),
            usd_per_unit: dec("1.0825"),
            as_of: at("2026-05-14T00:00:00Z"),
        };
        assert_eq!(control(&example("fx_rate")), Ok(expected));
    }

    #[test]
    fn an_mdf_draw_is_whole_cents() {
        let v = with(example("mdf_expense"), "amount_usd", json!("0.005"));
        assert_rejected(TopicKind::Control, &v, "amount_usd", R::InvalidValue);
        let v = with(example("mdf_expense"), "amount_usd", json!("10.500"));
        let Ok(ControlEvent::MdfExpense { amount_usd, .. }) = control(&v) else {
            panic!("10.500 is whole cents: {:?}", control(&v));
        };
        assert_eq!(amount_usd, Decimal::new(1050, 2));
    }

    #[test]
    fn control_mdf_expense_decodes_exactly() {
        let expected = ControlEvent::MdfExpense {
            expense_id: "x-1".into(),
            partner_id: PARTNER.into(),
            amount_usd: dec("250.00"),
            campaign: "Spring webinar".into(),
            decision: MdfDecision::Approved,
        };
        assert_eq!(control(&example("mdf_expense")), Ok(expected));
    }

    #[test]
    fn control_tenant_decodes_exactly() {
        let expected = ControlEvent::Tenant {
            tenant_id: "t-1".into(),
            partner_id: PARTNER.into(),
            plan: TenantPlan::Pilot,
            started_at: at("2026-05-01T12:00:00Z"),
            deployment_value_usd: Some(Decimal::ZERO),
        };
        assert_eq!(control(&example("tenant")), Ok(expected));
    }

    #[test]
    fn control_credit_purchase_decodes_exactly() {
        let expected = ControlEvent::CreditPurchase {
            purchase_id: "cp-1".into(),
            partner_id: PARTNER.into(),
            credits: dec("5000"),
            paid_usd: dec("4500.00"),
        };
        assert_eq!(control(&example("credit_purchase")), Ok(expected));
    }

    #[test]
    fn control_quota_decodes_exactly() {
        let expected = ControlEvent::Quota {
            partner_id: PARTNER.into(),
            integration_id: Some("int-1".into()),
            monthly_requests: 1_000_000,
            burst_rps: 50,
            overage: OveragePolicy::Soft,
        };
        assert_eq!(control(&example("quota")), Ok(expected));
    }

    #[test]
    fn control_month_close_decodes_exactly() {
        let expected = ControlEvent::MonthClose {
            month: "2026-04".into(),
        };
        assert_eq!(control(&example("month_close")), Ok(expected));
        for bad in [
            "2026-13",
            "2026-00",
            "2026-4",
            "26-04",
            "2026/04",
            "2026-04-01",
        ] {
            let v = with(example("month_close"), "month", json!(bad));
            assert_rejected(TopicKind::Control, &v, "month", R::InvalidValue);
        }
    }

    // ---- defaults, unknown fields, JSON details ---------------------------------------

    #[test]
    fn usage_defaults_auth_failures_bytes_and_tenant() {
        let optional = ["auth_failures", "bytes", "tenant_id"];
        let v = optional.iter().fold(example("usage"), |v, f| without(v, f));
        let Ok(PartnerEvent::Usage(e)) = decode(TopicKind::Usage, &v) else {
            panic!("rejected")
        };
        assert_eq!((e.auth_failures, e.bytes, e.tenant_id), (0, 0, None));
        // null reads as absent for an optional field
        let v = with(example("usage"), "bytes", Value::Null);
        let Ok(PartnerEvent::Usage(e)) = decode(TopicKind::Usage, &v) else {
            panic!("rejected")
        };
        assert_eq!(e.bytes, 0);
    }

    #[test]
    fn invoice_defaults_overage_processing_cost_new_logo() {
        let optional = ["overage", "processing_cost", "new_logo", "contract_value"];
        let v = optional
            .iter()
            .fold(example("invoices"), |v, f| without(v, f));
        let Ok(PartnerEvent::Invoice(e)) = decode(TopicKind::Invoices, &v) else {
            panic!("rejected")
        };
        assert_eq!(
            (e.overage, e.processing_cost),
            (Decimal::ZERO, Decimal::ZERO)
        );
        assert_eq!((e.new_logo, e.contract_value), (false, None));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let noisy = with(
            example("usage"),
            "schema",
            json!({"nested": [1, {"deep": null}]}),
        );
        let noisy = with(noisy, "x", json!("é"));
        let plain = decode(TopicKind::Usage, &example("usage")).unwrap();
        assert_eq!(decode(TopicKind::Usage, &noisy), Ok(plain));
        // a field of another control type is unknown to this one, whatever its value
        let v = with(
            with(example("month_close"), "amount_usd", json!(12)),
            "plan",
            json!("gold"),
        );
        assert_eq!(
            control(&v),
            Ok(ControlEvent::MonthClose {
                month: "2026-04".into()
            })
        );
    }

    #[test]
    fn escaped_strings_and_keys_decode() {
        let raw = br#"{"event_id":"e\u002d1","ts":"2026-05-14T09:30:00Z","partner\u005fid":"p-1",
            "integration_id":"int\"1","requests":1,"errors":0}"#;
        let limits = DecodeLimits::default();
        let got = decode_partner_record(TopicKind::Usage, Some(b"p-1"), Some(raw), None, &limits);
        let Ok(PartnerEvent::Usage(e)) = got else {
            panic!("rejected: {got:?}")
        };
        assert_eq!(
            (e.event_id.as_str(), e.integration_id.as_str()),
            ("e-1", "int\"1")
        );
    }

    #[test]
    fn repeated_field_last_one_wins() {
        let raw = br#"{"type":"month_close","month":"bad","month":"2026-04"}"#;
        let got = decode_control_record(Some(raw), &DecodeLimits::default());
        assert_eq!(
            got,
            Ok(ControlEvent::MonthClose {
                month: "2026-04".into()
            })
        );
    }

    #[test]
    fn ids_count_characters_not_bytes() {
        let v = with(example("usage"), "event_id", json!("é".repeat(128)));
        assert!(decode(TopicKind::Usage, &v).is_ok());
        let v = with(example("usage"), "event_id", json!("é".repeat(129)));
        assert_rejected(TopicKind::Usage, &v, "event_id", R::InvalidValue);
    }

    #[test]
    fn plain_decimals_parse_exactly() {
        let ok = [
            ("0", "0"),
            ("-0", "0"),
            ("1234.50", "1234.50"),
            ("007.10", "7.10"),
            ("-12.5", "-12.5"),
            (
                "0.0000000000000000000000000001",
                "0.0000000000000000000000000001",
            ),
            (
                "9999999999999999999999999999",
                "9999999999999999999999999999",
            ),
        ];
        for (s, want) in ok {
            let got = parse_plain_decimal(s).unwrap_or_else(|| panic!("{s} rejected"));
            assert_eq!(got.to_string(), want, "{s}");
        }
        let bad =
            "- .5 5. 1e5 1E5 +1 1_000 1.2.3 --1 0x10 NaN inf ١ 10000000000000000000000000000 \
                   0.00000000000000000000000000001 1.0000000000000000000000000000";
        for s in bad.split(' ').chain(["", " 1", "1 "]) {
            assert_eq!(parse_plain_decimal(s), None, "{s:?} accepted");
        }
    }

    // ---- one test per reason ----------------------------------------------------------

    #[test]
    fn not_json() {
        let limits = DecodeLimits::default();
        let payloads: [Option<&[u8]>; 9] = [
            None,
            Some(b""),
            Some(b"\xff\xfe{}"),
            Some(b"{\"event_id\":\"\xc3\x28\"}"),
            // invalid UTF-8 hidden in an unknown field the parser would only skip
            Some(b"{\"x\":\"\xff\",\"type\":\"month_close\",\"month\":\"2026-04\"}"),
            Some(b"{not json"),
            Some(b"[1,2]"),
            Some(b"\"a string\""),
            Some(b"{} trailing"),
        ];
        for p in payloads {
            let r = decode_partner_record(TopicKind::Usage, Some(b"p-1"), p, None, &limits);
            assert_eq!(r.unwrap_err().reason, R::NotJson, "{p:?}");
            assert_eq!(
                decode_control_record(p, &limits).unwrap_err().reason,
                R::NotJson,
                "{p:?}"
            );
        }
    }

    #[test]
    fn missing_field_when_absent_or_null() {
        let required = [
            (
                TopicKind::Usage,
                "usage",
                "event_id ts partner_id integration_id requests errors",
            ),
            (
                TopicKind::Invoices,
                "invoices",
                "invoice_id ts kind partner_id tenant_id currency platform_fee",
            ),
            (
                TopicKind::Attribution,
                "attribution",
                "attribution_id ancestor_id partner_id invoice_id kind ts base_usd override_rate \
                 amount_usd",
            ),
        ];
        for (kind, name, fields) in required {
            for field in fields.split(' ') {
                let absent = without(example(name), field);
                assert_rejected(kind, &absent, field, R::MissingField);
                let null = with(example(name), field, Value::Null);
                assert_rejected(kind, &null, field, R::MissingField);
            }
        }
        // every control field without `?` in CONTRACT §1, and `type` itself
        for ty in CONTROL_TYPES {
            let full = example(ty);
            for field in full.as_object().unwrap().keys() {
                let optional = "parent_id override_rate coop_rate commission_rate net_of_cost \
                                min_contract_value_usd deployment_value_usd integration_id";
                let scoped_optional =
                    field == "partner_id" && ["spiff", "volume_bonus"].contains(&ty);
                if optional.split(' ').any(|o| o == field) || scoped_optional {
                    assert!(
                        control(&without(full.clone(), field)).is_ok(),
                        "{ty}.{field}"
                    );
                } else {
                    assert_rejected(
                        TopicKind::Control,
                        &without(full.clone(), field),
                        field,
                        R::MissingField,
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_type() {
        let cases = [
            ("requests", json!("100")),
            ("errors", json!(-1)),
            ("requests", json!(1.5)),
            ("requests", json!(1.0)),
            ("bytes", json!(18_446_744_073_709_551_616.0)),
            ("auth_failures", json!(true)),
            ("event_id", json!(7)),
            ("tenant_id", json!(["t"])),
            ("ts", json!(1_778_751_000)),
        ];
        for (field, value) in cases {
            assert_rejected(
                TopicKind::Usage,
                &with(example("usage"), field, value),
                field,
                R::WrongType,
            );
        }
        // one past u64::MAX, written as an integer literal
        let raw = br#"{"event_id":"e","ts":"2026-05-14T09:30:00Z","partner_id":"p-1",
            "integration_id":"i","requests":18446744073709551616,"errors":0}"#;
        let limits = DecodeLimits::default();
        let r = decode_partner_record(TopicKind::Usage, Some(b"p-1"), Some(raw), None, &limits);
        assert_eq!(r.unwrap_err().reason, R::WrongType);
        let invoice = [
            ("new_logo", json!("true")),
            ("platform_fee", json!({"amount": "1"})),
            ("kind", json!(true)),
        ];
        for (field, value) in invoice {
            let v = with(example("invoices"), field, value);
            assert_rejected(TopicKind::Invoices, &v, field, R::WrongType);
        }
        let control = [
            ("quota", "burst_rps", json!("50")),
            ("spiff", "new_logo_only", json!(1)),
            ("month_close", "type", json!(3)),
        ];
        for (ty, field, value) in control {
            assert_rejected(
                TopicKind::Control,
                &with(example(ty), field, value),
                field,
                R::WrongType,
            );
        }
    }

    #[test]
    fn money_as_number() {
        for field in [
            "platform_fee",
            "overage",
            "processing_cost",
            "contract_value",
        ] {
            let v = with(example("invoices"), field, json!(12.5));
            assert_rejected(TopicKind::Invoices, &v, field, R::MoneyAsNumber);
        }
        for field in ["base_usd", "override_rate", "amount_usd"] {
            let v = with(example("attribution"), field, json!(-3));
            assert_rejected(TopicKind::Attribution, &v, field, R::MoneyAsNumber);
        }
        let control = [
            ("partner", "commission_rate"),
            ("spiff", "extra_rate"),
            ("volume_bonus", "monthly_threshold_usd"),
            ("fx_rate", "usd_per_unit"),
            ("mdf_expense", "amount_usd"),
            ("tenant", "deployment_value_usd"),
            ("credit_purchase", "credits"),
        ];
        for (ty, field) in control {
            assert_rejected(
                TopicKind::Control,
                &with(example(ty), field, json!(10)),
                field,
                R::MoneyAsNumber,
            );
        }
    }

    #[test]
    fn negative_money() {
        for field in [
            "platform_fee",
            "overage",
            "processing_cost",
            "contract_value",
        ] {
            let v = with(example("invoices"), field, json!("-0.01"));
            assert_rejected(TopicKind::Invoices, &v, field, R::NegativeMoney);
        }
        let v = with(example("attribution"), "override_rate", json!("-0.03"));
        assert_rejected(
            TopicKind::Attribution,
            &v,
            "override_rate",
            R::NegativeMoney,
        );
        let control = [
            ("partner", "coop_rate"),
            ("spiff", "min_contract_value_usd"),
            ("volume_bonus", "bonus_rate"),
            ("fx_rate", "usd_per_unit"),
            ("mdf_expense", "amount_usd"),
            ("tenant", "deployment_value_usd"),
            ("credit_purchase", "paid_usd"),
        ];
        for (ty, field) in control {
            let v = with(example(ty), field, json!("-1"));
            assert_rejected(TopicKind::Control, &v, field, R::NegativeMoney);
        }
        // "-0" is zero, not negative
        assert!(decode(
            TopicKind::Invoices,
            &with(example("invoices"), "overage", json!("-0.00"))
        )
        .is_ok());
    }

    #[test]
    fn invalid_value() {
        for s in [
            "1e3",
            "",
            "abc",
            "1_000",
            "+5",
            "12.",
            "10000000000000000000000000000",
            " 5",
        ] {
            let v = with(example("invoices"), "platform_fee", json!(s));
            assert_rejected(TopicKind::Invoices, &v, "platform_fee", R::InvalidValue);
        }
        for s in [
            "2026-05-14",
            "yesterday",
            "2026-05-14T09:30:00",
            "2026-02-30T00:00:00Z",
        ] {
            assert_rejected(
                TopicKind::Usage,
                &with(example("usage"), "ts", json!(s)),
                "ts",
                R::InvalidValue,
            );
        }
        for s in [String::new(), "x".repeat(129)] {
            for field in ["event_id", "partner_id", "integration_id", "tenant_id"] {
                let v = with(example("usage"), field, json!(s));
                assert_rejected(TopicKind::Usage, &v, field, R::InvalidValue);
            }
        }
        for s in ["eur", "EURO", "E1R", "", "ÉUR"] {
            let v = with(example("invoices"), "currency", json!(s));
            assert_rejected(TopicKind::Invoices, &v, "currency", R::InvalidValue);
        }
        let v = with(
            example("attribution"),
            "attribution_id",
            json!("inv-1:paid:anc-1"),
        );
        assert_rejected(
            TopicKind::Attribution,
            &v,
            "attribution_id",
            R::InvalidValue,
        );
        // zero where the amount must be positive
        for (ty, field) in [
            ("fx_rate", "usd_per_unit"),
            ("mdf_expense", "amount_usd"),
            ("credit_purchase", "credits"),
        ] {
            assert_rejected(
                TopicKind::Control,
                &with(example(ty), field, json!("0.00")),
                field,
                R::InvalidValue,
            );
        }
    }

    #[test]
    fn errors_exceed_requests() {
        let v = with(
            with(example("usage"), "requests", json!(2)),
            "errors",
            json!(3),
        );
        assert_rejected(TopicKind::Usage, &v, "errors", R::ErrorsExceedRequests);
        let equal = with(
            with(example("usage"), "requests", json!(3)),
            "errors",
            json!(3),
        );
        assert!(decode(TopicKind::Usage, &equal).is_ok());
    }

    #[test]
    fn unknown_enum_value() {
        let v = with(example("invoices"), "kind", json!("Paid"));
        assert_rejected(TopicKind::Invoices, &v, "kind", R::UnknownEnumValue);
        let v = with(example("attribution"), "kind", json!("credit"));
        assert_rejected(TopicKind::Attribution, &v, "kind", R::UnknownEnumValue);
        let control = [
            ("month_close", "type", "holiday"),
            ("mdf_expense", "decision", "maybe"),
            ("tenant", "plan", "free"),
            ("quota", "overage", "ignore"),
        ];
        for (ty, field, value) in control {
            let v = with(example(ty), field, json!(value));
            assert_rejected(TopicKind::Control, &v, field, R::UnknownEnumValue);
        }
    }

    #[test]
    fn record_too_large_is_checked_before_parsing() {
        let limits = DecodeLimits {
            max_record_bytes: 16,
            ..DecodeLimits::default()
        };
        let garbage = [0xffu8; 17];
        let r = decode_partner_record(
            TopicKind::Usage,
            Some(b"p-1"),
            Some(&garbage),
            None,
            &limits,
        );
        assert_eq!(r.unwrap_err().reason, R::RecordTooLarge);
        assert_eq!(
            decode_control_record(Some(&garbage), &limits)
                .unwrap_err()
                .reason,
            R::RecordTooLarge
        );
        // exactly the limit is allowed
        let exact = br#"{"type":"x"}    "#;
        assert_eq!(exact.len(), 16);
        assert_eq!(
            decode_control_record(Some(exact), &limits)
                .unwrap_err()
                .reason,
            R::UnknownEnumValue
        );
        let big = with(example("usage"), "padding", json!("x".repeat(65_536)));
        assert_rejected(
            TopicKind::Usage,
            &big,
            "max_record_bytes",
            R::RecordTooLarge,
        );
    }

    #[test]
    fn wrong_key() {
        let limits = DecodeLimits::default();
        let usage = serde_json::to_vec(&example("usage")).unwrap();
        for key in [
            None,
            Some(&b"p-2"[..]),
            Some(&b""[..]),
            Some(&b"P-1"[..]),
            Some(&b"\xff"[..]),
        ] {
            let r = decode_partner_record(TopicKind::Usage, key, Some(&usage), None, &limits)
                .unwrap_err();
            assert_eq!(
                (r.reason, r.detail.contains("partner_id")),
                (R::WrongKey, true),
                "{key:?}"
            );
        }
        let invoice = serde_json::to_vec(&example("invoices")).unwrap();
        let r = decode_partner_record(
            TopicKind::Invoices,
            Some(b"p-2"),
            Some(&invoice),
            None,
            &limits,
        );
        assert_eq!(r.unwrap_err().reason, R::WrongKey);
        // attribution is keyed by the ancestor, not by the line's partner
        let attribution = serde_json::to_vec(&example("attribution")).unwrap();
        let key = Some(PARTNER.as_bytes());
        let r = decode_partner_record(
            TopicKind::Attribution,
            key,
            Some(&attribution),
            None,
            &limits,
        );
        let r = r.unwrap_err();
        assert_eq!(
            (r.reason, r.detail.contains("ancestor_id")),
            (R::WrongKey, true)
        );
    }

    #[test]
    fn ts_out_of_range() {
        let bytes = serde_json::to_vec(&example("usage")).unwrap();
        let limits = DecodeLimits::default();
        let skew_ms = 5 * 60 * 1000;
        let run = |record_ts| {
            decode_partner_record(
                TopicKind::Usage,
                Some(b"p-1"),
                Some(&bytes),
                record_ts,
                &limits,
            )
        };
        // ts exactly at record time + skew is allowed; one millisecond more is not
        assert!(run(Some(TS_MS - skew_ms)).is_ok());
        let r = run(Some(TS_MS - skew_ms - 1)).unwrap_err();
        assert_eq!((r.reason, r.detail.contains("ts")), (R::TsOutOfRange, true));
        // an event older than its record is fine; no record timestamp means no check
        for record_ts in [Some(TS_MS + 86_400_000), None, Some(-1), Some(i64::MAX)] {
            assert!(run(record_ts).is_ok(), "{record_ts:?}");
        }
        // the bound is configurable
        let tight = DecodeLimits {
            max_clock_skew: Duration::zero(),
            ..limits
        };
        let r = decode_partner_record(
            TopicKind::Usage,
            Some(b"p-1"),
            Some(&bytes),
            Some(TS_MS - 1),
            &tight,
        );
        assert_eq!(r.unwrap_err().reason, R::TsOutOfRange);
    }

    #[test]
    fn missing_refers_to() {
        for kind in ["refund", "chargeback"] {
            let v = with(example("invoices"), "kind", json!(kind));
            assert_rejected(TopicKind::Invoices, &v, "refers_to", R::MissingRefersTo);
            let null = with(v, "refers_to", Value::Null);
            assert_rejected(TopicKind::Invoices, &null, "refers_to", R::MissingRefersTo);
        }
    }

    #[test]
    fn control_kind_on_the_keyed_decoder_is_a_rejection() {
        let bytes = serde_json::to_vec(&example("month_close")).unwrap();
        let limits = DecodeLimits::default();
        let r = decode_partner_record(TopicKind::Control, None, Some(&bytes), None, &limits);
        assert_eq!(r.unwrap_err().reason, R::InvalidValue);
    }

    // ---- properties -------------------------------------------------------------------

    /// Reasons only the domain gives (dedup, refunds, arithmetic): never a decode result.
    const DOMAIN_REASONS: [DeadLetterReason; 4] = [
        R::OutsideDedupWindow,
        R::OverRefund,
        R::UnknownOriginal,
        R::ArithmeticOverflow,
    ];

    /// Strings that reach deep into the rules: decimals, timestamps, enum values, ids.
    const KNOWN_STRINGS: &str = "0 -0 1 -1 0.05 1234.50 -3.00 1e5 1_0 +1 EUR eur \
        99999999999999999999999999999 2026-05-14T09:30:00Z 2026-05-14T09:36:00Z 2026-05-14 \
        paid refund chargeback partner tier_change spiff volume_bonus fx_rate mdf_expense tenant \
        credit_purchase quota month_close approved rejected pilot block soft notify p-1 anc-1 \
        inv-1 inv-1:paid:anc-1 2026-04 gold";

    fn all_field_names() -> Vec<&'static str> {
        let mut names: Vec<&str> = [
            &USAGE_FIELDS[..],
            &INVOICE_FIELDS,
            &ATTRIBUTION_FIELDS,
            &CONTROL_FIELDS,
        ]
        .concat();
        names.sort_unstable();
        names.dedup();
        names
    }

    fn arb_string() -> impl Strategy<Value = String> {
        let known: Vec<String> = KNOWN_STRINGS
            .split_whitespace()
            .chain([""])
            .map(String::from)
            .collect();
        prop_oneof![
            3 => prop::sample::select(known),
            1 => "-?[0-9]{0,32}(\\.[0-9]{0,32})?",
            1 => ".{0,140}",
        ]
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            1 => Just(Value::Null),
            1 => any::<bool>().prop_map(Value::Bool),
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<u64>().prop_map(Value::from),
            1 => (0u64..1000).prop_map(Value::from),
            1 => any::<f64>().prop_map(Value::from),
            6 => arb_string().prop_map(Value::String),
        ];
        let nested = leaf.clone().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop_oneof![6 => leaf, 1 => nested]
    }

    /// A keyed topic, its record key and an object of known fields with random values:
    /// either built from scratch, or a valid example with a few fields replaced or removed
    /// and mostly the right key and topic (so that every rule is reached and some pass).
    fn arb_record() -> impl Strategy<Value = (TopicKind, Option<Vec<u8>>, Vec<u8>)> {
        let names = all_field_names();
        let field = (prop::sample::select(names.clone()), arb_value());
        let scratch = (
            arb_keyed_kind(),
            arb_key(),
            prop::collection::vec(field, 0..24),
        )
            .prop_map(|(kind, key, fields)| {
                let map = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                (kind, key, Value::Object(map))
            });
        let bases: Vec<&str> = ["usage", "invoices", "attribution"]
            .into_iter()
            .chain(CONTROL_TYPES)
            .collect();
        // An edit hits one of the example's own fields, or any known field.
        let target = prop_oneof![
            any::<prop::sample::Index>().prop_map(Ok),
            prop::sample::select(names).prop_map(Err)
        ];
        let edits =
            prop::collection::vec((target, prop::option::weighted(0.85, arb_value())), 0..3);
        let mutated = (
            prop::sample::select(bases),
            edits,
            arb_keyed_kind(),
            arb_key(),
            0..4,
        )
            .prop_map(|(base, edits, other_kind, other_key, coin)| {
                let v = edits.into_iter().fold(example(base), |v, (target, value)| {
                    let own: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
                    let field = target.map_or_else(str::to_owned, |i| i.get(&own).clone());
                    match value {
                        Some(value) => with(v, &field, value),
                        None => without(v, &field),
                    }
                });
                let (kind, key) = match base {
                    "usage" => (TopicKind::Usage, PARTNER),
                    "invoices" => (TopicKind::Invoices, PARTNER),
                    "attribution" => (TopicKind::Attribution, "anc-1"),
                    _ => return (other_kind, other_key, v),
                };
                if coin == 0 {
                    (other_kind, other_key, v)
                } else {
                    (kind, Some(key.as_bytes().to_vec()), v)
                }
            });
        prop_oneof![scratch, mutated]
            .prop_map(|(kind, key, v)| (kind, key, serde_json::to_vec(&v).unwrap()))
    }

    fn arb_keyed_kind() -> impl Strategy<Value = TopicKind> {
        prop::sample::select(&TopicKind::KEYED[..])
    }

    fn arb_key() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop_oneof![
            Just(None),
            Just(Some(b"p-1".to_vec())),
            Just(Some(b"anc-1".to_vec())),
            prop::collection::vec(any::<u8>(), 0..8).prop_map(Some),
        ]
    }

    fn arb_kind() -> impl Strategy<Value = TopicKind> {
        prop::sample::select(
            &[
                TopicKind::Usage,
                TopicKind::Invoices,
                TopicKind::Attribution,
                TopicKind::Control,
            ][..],
        )
    }

    fn id_ok(s: &str) -> bool {
        (1..=MAX_ID_CHARS).contains(&s.chars().count())
    }

    /// What the domain relies on, for any event the decoder lets through.
    fn assert_partner_invariants(e: &PartnerEvent, key: Option<&[u8]>) {
        assert_eq!(key, Some(e.partner_id().as_bytes()));
        match e {
            PartnerEvent::Usage(u) => {
                assert!(u.errors <= u.requests);
                assert!(id_ok(&u.event_id) && id_ok(&u.partner_id) && id_ok(&u.integration_id));
            }
            PartnerEvent::Invoice(i) => {
                let money = [
                    i.platform_fee,
                    i.overage,
                    i.processing_cost,
                    i.contract_value.unwrap_or_default(),
                ];
                assert!(money.iter().all(|m| !m.is_sign_negative()));
                assert_eq!(i.refers_to.is_some(), i.kind != InvoiceKind::Paid);
                assert!(i.currency.len() == 3 && id_ok(&i.invoice_id) && id_ok(&i.tenant_id));
            }
            PartnerEvent::Attribution(a) => {
                assert!(!a.override_rate.is_sign_negative());
                assert_eq!(
                    a.attribution_id,
                    format!("{}:{}:{}", a.invoice_id, kind_name(a.kind), a.ancestor_id)
                );
            }
        }
    }

    fn assert_control_invariants(e: &ControlEvent) {
        match e {
            ControlEvent::FxRate {
                currency,
                usd_per_unit,
                ..
            } => {
                assert!(*usd_per_unit > Decimal::ZERO && currency.len() == 3);
            }
            ControlEvent::MdfExpense { amount_usd, .. } => assert!(*amount_usd > Decimal::ZERO),
            ControlEvent::CreditPurchase {
                credits, paid_usd, ..
            } => {
                assert!(*credits > Decimal::ZERO && *paid_usd > Decimal::ZERO);
            }
            ControlEvent::MonthClose { month } => assert_eq!(month.len(), 7),
            other => assert!(other.partner_id().into_iter().all(id_ok)),
        }
    }

    fn assert_rejection_sane(r: &Rejection) {
        assert!(!r.detail.is_empty());
        assert!(!DOMAIN_REASONS.contains(&r.reason), "{r:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn arbitrary_bytes_never_panic(
            kind in arb_kind(),
            key in arb_key(),
            payload in prop::option::of(prop::collection::vec(any::<u8>(), 0..256)),
            record_ts in prop::option::of(any::<i64>()),
        ) {
            let limits = DecodeLimits::default();
            match decode_partner_record(kind, key.as_deref(), payload.as_deref(), record_ts, &limits) {
                Ok(e) => assert_partner_invariants(&e, key.as_deref()),
                Err(r) => assert_rejection_sane(&r),
            }
            match decode_control_record(payload.as_deref(), &limits) {
                Ok(e) => assert_control_invariants(&e),
                Err(r) => assert_rejection_sane(&r),
            }
        }

        #[test]
        fn arbitrary_objects_of_known_fields_never_panic(
            (kind, key, payload) in arb_record(),
            record_ts in prop::option::of(prop_oneof![Just(TS_MS), any::<i64>()]),
            max_record_bytes in prop_oneof![4 => Just(65_536usize), 1 => 0usize..512],
        ) {
            let limits = DecodeLimits { max_record_bytes, ..DecodeLimits::default() };
            match decode_partner_record(kind, key.as_deref(), Some(&payload), record_ts, &limits) {
                Ok(e) => assert_partner_invariants(&e, key.as_deref()),
                Err(r) => assert_rejection_sane(&r),
            }
            match decode_control_record(Some(&payload), &limits) {
                Ok(e) => assert_control_invariants(&e),
                Err(r) => assert_rejection_sane(&r),
            }
        }

        #[test]
        fn valid_usage_round_trips(
            event_id in "[A-Za-z0-9:_-]{1,128}",
            partner_id in "[a-z0-9-]{1,128}",
            tenant_id in prop::option::of("[a-z0-9]{1,16}"),
            secs in 0i64..4_102_444_800,
            requests in any::<u64>(),
            errors_permille in 0u64..=1000,
            auth_failures in any::<u64>(),
            bytes in any::<u64>(),
        ) {
            let errors = u64::try_from(u128::from(requests) * u128::from(errors_permille) / 1000).unwrap();
            let expected = UsageEvent {
                event_id, ts: DateTime::from_timestamp(secs, 0).unwrap(), partner_id, integration_id: "i".into(),
                tenant_id, requests, errors, auth_failures, bytes,
            };
            let payload = serde_json::to_vec(&expected).unwrap();
            let key = Some(expected.partner_id.as_bytes());
            let got = decode_partner_record(TopicKind::Usage, key, Some(&payload), None, &DecodeLimits::default());
            prop_assert_eq!(got, Ok(PartnerEvent::Usage(expected)));
        }

        #[test]
        fn valid_money_round_trips(
            mantissa in any::<i64>(),
            scale in 0u32..=18,
            kind in prop::sample::select(&INVOICE_KINDS[..]),
        ) {
            let amount = Decimal::new(mantissa, scale);
            let event = AttributionEvent {
                attribution_id: format!("inv-1:{}:anc-1", kind.0), ancestor_id: "anc-1".into(),
                partner_id: "p-1".into(), invoice_id: "inv-1".into(), kind: kind.1,
                ts: at("2026-05-14T09:30:00Z"), base_usd: amount, override_rate: amount.abs(), amount_usd: -amount,
            };
            // rust_decimal's serde-with-str writes money as strings, as the contract wants
            let payload = serde_json::to_vec(&event).unwrap();
            let limits = DecodeLimits::default();
            let got = decode_partner_record(TopicKind::Attribution, Some(b"anc-1"), Some(&payload), Some(TS_MS), &limits);
            prop_assert_eq!(got, Ok(PartnerEvent::Attribution(Box::new(event))));
        }
    }
}
