//! Typed input events: what the decoder (`kafka::decode`) turns record bytes into.
//!
//! These types carry only values that passed every rule of CONTRACT §1 and §5, so the
//! domain never re-validates shapes: money is a `Decimal` that is known to be ≥ 0 where
//! the contract says so, `errors ≤ requests` holds, ids are 1–128 characters.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The input topics, by role. The names are configurable; the roles are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicKind {
    Usage,
    Invoices,
    Attribution,
    Control,
}

impl TopicKind {
    pub const ALL: [TopicKind; 4] = [
        TopicKind::Usage,
        TopicKind::Invoices,
        TopicKind::Attribution,
        TopicKind::Control,
    ];
    pub const KEYED: [TopicKind; 3] = [
        TopicKind::Usage,
        TopicKind::Invoices,
        TopicKind::Attribution,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Usage => "usage",
            TopicKind::Invoices => "invoices",
            TopicKind::Attribution => "attribution",
            TopicKind::Control => "control",
        }
    }
}

/// One record of `warden.usage.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub event_id: String,
    pub ts: DateTime<Utc>,
    pub partner_id: String,
    pub integration_id: String,
    pub tenant_id: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub auth_failures: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceKind {
    Paid,
    Refund,
    Chargeback,
}

impl InvoiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceKind::Paid => "paid",
            InvoiceKind::Refund => "refund",
            InvoiceKind::Chargeback => "chargeback",
        }
    }
}

/// One record of `warden.invoices.v1`. For refunds and chargebacks `refers_to` is set
/// (the decoder guarantees it) and `platform_fee + overage` is the refunded amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceEvent {
    pub invoice_id: String,
    pub ts: DateTime<Utc>,
    pub kind: InvoiceKind,
    pub partner_id: String,
    pub tenant_id: String,
    pub currency: String,
    pub platform_fee: Decimal,
    pub overage: Decimal,
    pub processing_cost: Decimal,
    pub new_logo: bool,
    pub contract_value: Option<Decimal>,
    pub refers_to: Option<String>,
}

/// One record of `warden.attribution.v1`: an override owed to `ancestor_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributionEvent {
    pub attribution_id: String,
    pub ancestor_id: String,
    pub partner_id: String,
    pub invoice_id: String,
    pub kind: InvoiceKind,
    pub ts: DateTime<Utc>,
    pub base_usd: Decimal,
    pub override_rate: Decimal,
    pub amount_usd: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MdfDecision {
    Approved,
    Rejected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantPlan {
    Pilot,
    Paid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OveragePolicy {
    Block,
    Soft,
    Notify,
}

/// A fact of `warden.control.v1`, tagged by `type` (CONTRACT §1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlEvent {
    Partner {
        partner_id: String,
        name: String,
        tier: String,
        tier_effective_from: DateTime<Utc>,
        parent_id: Option<String>,
        override_rate: Option<Decimal>,
        coop_rate: Option<Decimal>,
        commission_rate: Option<Decimal>,
        net_of_cost: Option<bool>,
    },
    TierChange {
        partner_id: String,
        tier: String,
        effective_from: DateTime<Utc>,
    },
    Spiff {
        spiff_id: String,
        partner_id: Option<String>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        extra_rate: Decimal,
        new_logo_only: bool,
        min_contract_value_usd: Option<Decimal>,
    },
    VolumeBonus {
        partner_id: Option<String>,
        monthly_threshold_usd: Decimal,
        bonus_rate: Decimal,
    },
    FxRate {
        currency: String,
        usd_per_unit: Decimal,
        as_of: DateTime<Utc>,
    },
    MdfExpense {
        expense_id: String,
        partner_id: String,
        amount_usd: Decimal,
        campaign: String,
        decision: MdfDecision,
    },
    Tenant {
        tenant_id: String,
        partner_id: String,
        plan: TenantPlan,
        started_at: DateTime<Utc>,
        deployment_value_usd: Option<Decimal>,
    },
    CreditPurchase {
        purchase_id: String,
        partner_id: String,
        credits: Decimal,
        paid_usd: Decimal,
    },
    Quota {
        partner_id: String,
        integration_id: Option<String>,
        monthly_requests: u64,
        burst_rps: u64,
        overage: OveragePolicy,
    },
    MonthClose {
        month: String,
    },
}

impl ControlEvent {
    /// The partner a fact is scoped to; `None` reaches every partner.
    pub fn partner_id(&self) -> Option<&str> {
        match self {
            ControlEvent::Partner { partner_id, .. }
            | ControlEvent::TierChange { partner_id, .. }
            | ControlEvent::MdfExpense { partner_id, .. }
            | ControlEvent::Tenant { partner_id, .. }
            | ControlEvent::CreditPurchase { partner_id, .. }
            | ControlEvent::Quota { partner_id, .. } => Some(partner_id),
            ControlEvent::Spiff { partner_id, .. }
            | ControlEvent::VolumeBonus { partner_id, .. } => partner_id.as_deref(),
            ControlEvent::FxRate { .. } | ControlEvent::MonthClose { .. } => None,
        }
    }
}

/// A decoded record of a keyed topic, ready to be routed to its partner's actor.
///
/// The money events are boxed: an invoice is 208 bytes and an attribution 160, against
/// 144 for usage, the bulk of the traffic, and every event routed but not yet applied
/// (an influx puts hundreds of thousands in mailboxes) is the size of the largest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartnerEvent {
    Usage(UsageEvent),
    Invoice(Box<InvoiceEvent>),
    Attribution(Box<AttributionEvent>),
}

impl PartnerEvent {
    /// The partner whose actor applies this event (the ancestor for attribution).
    pub fn partner_id(&self) -> &str {
        match self {
            PartnerEvent::Usage(e) => &e.partner_id,
            PartnerEvent::Invoice(e) => &e.partner_id,
            PartnerEvent::Attribution(e) => &e.ancestor_id,
        }
    }

    pub fn ts(&self) -> DateTime<Utc> {
        match self {
            PartnerEvent::Usage(e) => e.ts,
            PartnerEvent::Invoice(e) => e.ts,
            PartnerEvent::Attribution(e) => e.ts,
        }
    }
}

/// Why a record went to the dead-letter topic. A closed set: it is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Not UTF-8 or not a JSON object.
    NotJson,
    MissingField,
    WrongType,
    /// Money or a rate given as a JSON number instead of a decimal string.
    MoneyAsNumber,
    NegativeMoney,
    /// A string that is not a decimal, a timestamp that is not RFC 3339, an id out of length,
    /// an unknown currency code: the shape is right, the value is not.
    InvalidValue,
    ErrorsExceedRequests,
    UnknownEnumValue,
    RecordTooLarge,
    WrongKey,
    /// A keyed record on a partition other than murmur2 of its key names (a producer with
    /// another partitioner): applied, its partner would have two owners.
    WrongPartition,
    TsOutOfRange,
    OutsideDedupWindow,
    OverRefund,
    UnknownOriginal,
    ArithmeticOverflow,
    MissingRefersTo,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 17] = [
        DeadLetterReason::NotJson,
        DeadLetterReason::MissingField,
        DeadLetterReason::WrongType,
        DeadLetterReason::MoneyAsNumber,
        DeadLetterReason::NegativeMoney,
        DeadLetterReason::InvalidValue,
        DeadLetterReason::ErrorsExceedRequests,
        DeadLetterReason::UnknownEnumValue,
        DeadLetterReason::RecordTooLarge,
        DeadLetterReason::WrongKey,
        DeadLetterReason::WrongPartition,
        DeadLetterReason::TsOutOfRange,
        DeadLetterReason::OutsideDedupWindow,
        DeadLetterReason::OverRefund,
        DeadLetterReason::UnknownOriginal,
        DeadLetterReason::ArithmeticOverflow,
        DeadLetterReason::MissingRefersTo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::NotJson => "not_json",
            DeadLetterReason::MissingField => "missing_field",
            DeadLetterReason::WrongType => "wrong_type",
            DeadLetterReason::MoneyAsNumber => "money_as_number",
            DeadLetterReason::NegativeMoney => "negative_money",
            DeadLetterReason::InvalidValue => "invalid_value",
            DeadLetterReason::ErrorsExceedRequests => "errors_exceed_requests",
            DeadLetterReason::UnknownEnumValue => "unknown_enum_value",
            DeadLetterReason::RecordTooLarge => "record_too_large",
            DeadLetterReason::WrongKey => "wrong_key",
            DeadLetterReason::WrongPartition => "wrong_partition",
            DeadLetterReason::TsOutOfRange => "ts_out_of_range",
            DeadLetterReason::OutsideDedupWindow => "outside_dedup_window",
            DeadLetterReason::OverRefund => "over_refund",
            DeadLetterReason::UnknownOriginal => "unknown_original",
            DeadLetterReason::ArithmeticOverflow => "arithmetic_overflow",
            DeadLetterReason::MissingRefersTo => "missing_refers_to",
        }
    }
}

/// A rejection with a human-readable detail (field name, value) for the dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: DeadLetterReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: DeadLetterReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}
