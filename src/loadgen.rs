//! Deterministic synthetic traffic for warden's input topics (CONTRACT §1), used by the
//! `warden-loadgen` binary, the benches and their tests.
//!
//! A [`Generator`] is an endless iterator of [`Record`]s — usage, invoice and control
//! records keyed by partner id — that depends on nothing but its [`LoadSpec`]: the same
//! spec (seed and start time included) gives the same records, byte for byte. Traffic is
//! skewed like a real program's (Zipf over partners: a few carry most of it), a fraction
//! of partners misbehave (error storms, auth-failure spikes, chargebacks), a fraction of
//! records is deliberately broken (every case is a CONTRACT §5 rejection) and a fraction
//! of usage records re-sends an earlier event, as a producer retry does.
//!
//! [`GroundTruth`] counts what the daemon must end up with: each usage event id once,
//! malformed records never.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The most partners a spec may name (ids are `p-0000000` … `p-0999999`).
pub const MAX_PARTNERS: usize = 1_000_000;
/// How many recent usage records a duplicate may re-send: recent, so always inside the
/// daemon's dedup window.
const RECENT: usize = 256;
const CURRENCIES: [(&str, f64); 4] = [("USD", 0.7), ("EUR", 0.15), ("GBP", 0.1), ("JPY", 0.05)];
const TIERS: [&str; 4] = ["bronze", "silver", "gold", "platinum"];

/// What to generate. Fractions are probabilities per record, in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    pub partners: usize,
    /// Zipf exponent of traffic over partners: 0 = uniform, ~1 = a few carry most.
    pub skew: f64,
    /// Fraction of partners with high error rates, auth failures and chargebacks.
    pub misbehaving: f64,
    /// Fraction of records that are invoices (the rest, after control, is usage).
    pub invoice_fraction: f64,
    /// Fraction of records that are control facts.
    pub control_fraction: f64,
    /// Fraction of usage and invoice records that are broken (dead letters by design).
    pub malformed: f64,
    /// Fraction of well-formed usage records that re-send a recent usage event.
    pub duplicates: f64,
    pub seed: u64,
    /// Event time of record 0; record `i` has `start_ts + i × event_step`.
    pub start_ts: DateTime<Utc>,
    pub event_step: Duration,
}

impl LoadSpec {
    /// Every problem of the spec, or `Ok`.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.partners == 0 || self.partners > MAX_PARTNERS {
            problems.push(format!("partners must be 1..={MAX_PARTNERS}"));
        }
        if !(self.skew.is_finite() && self.skew >= 0.0) {
            problems.push("skew must be a finite number >= 0".to_owned());
        }
        for (name, f) in [
            ("misbehaving", self.misbehaving),
            ("invoice-fraction", self.invoice_fraction),
            ("control-fraction", self.control_fraction),
            ("malformed", self.malformed),
            ("duplicates", self.duplicates),
        ] {
            if !(0.0..=1.0).contains(&f) {
                problems.push(format!("{name} must be in [0, 1]"));
            }
        }
        if self.invoice_fraction + self.control_fraction > 1.0 {
            problems.push("invoice-fraction + control-fraction must be <= 1".to_owned());
        }
        if self.event_step < Duration::zero() {
            problems.push("event-step must not be negative".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// The topic a record is for, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Usage,
    Invoices,
    Control,
}

/// How a record is broken; each is a dead-letter reason of CONTRACT §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformation {
    NotJson,
    MissingField,
    WrongType,
    ErrorsExceedRequests,
    WrongKey,
    MoneyAsNumber,
    NegativeMoney,
    UnknownEnumValue,
}

const USAGE_MALFORMATIONS: [Malformation; 5] = [
    Malformation::NotJson,
    Malformation::MissingField,
    Malformation::WrongType,
    Malformation::ErrorsExceedRequests,
    Malformation::WrongKey,
];
const INVOICE_MALFORMATIONS: [Malformation; 5] = [
    Malformation::NotJson,
    Malformation::MissingField,
    Malformation::MoneyAsNumber,
    Malformation::NegativeMoney,
    Malformation::UnknownEnumValue,
];

/// What a record is, for ground truth and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A usage event sent for the first time: the daemon counts it.
    Usage {
        requests: u64,
        errors: u64,
    },
    /// A re-send of an earlier usage record (same key, same bytes): counted once.
    Duplicate,
    Invoice,
    Control,
    Malformed(Malformation),
}

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub stream: Stream,
    /// The partner id (the record key); `None` for program-wide control facts.
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub kind: Kind,
}

/// Zipf-distributed ranks `0..n` with exponent `s`, by inverse CDF (binary search).
#[derive(Debug, Clone)]
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let cumulative = (1..=n.max(1))
            .map(|k| {
                acc += (k as f64).powf(-s);
                acc
            })
            .collect();
        Zipf { cumulative }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        // unwrap-free: `new` makes at least one entry.
        let total = self.cumulative[self.cumulative.len() - 1];
        let u = rng.gen::<f64>() * total;
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.cumulative.len() - 1)
    }
}

/// The id of partner `i`.
pub fn partner_id(i: usize) -> String {
    format!("p-{i:07}")
}

#[derive(Serialize)]
struct UsageBody<'a> {
    event_id: &'a str,
    ts: &'a str,
    partner_id: &'a str,
    integration_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<&'a str>,
    requests: u64,
    errors: u64,
    auth_failures: u64,
    bytes: u64,
}

/// A recent paid invoice, which a refund or chargeback can refer to.
#[derive(Debug, Clone)]
struct Paid {
    partner: usize,
    invoice_id: String,
    tenant_id: String,
    currency: &'static str,
    fee_cents: u64,
}

/// The endless, deterministic record stream of a [`LoadSpec`].
pub struct Generator {
    spec: LoadSpec,
    rng: StdRng,
    zipf: Zipf,
    misbehaving: Vec<bool>,
    seq: u64,
    recent_usage: Vec<(String, Vec<u8>)>,
    recent_paid: Vec<Paid>,
}

impl Generator {
    /// # Panics
    /// If the spec is invalid ([`LoadSpec::validate`]); callers validate user input first.
    pub fn new(spec: LoadSpec) -> Generator {
        if let Err(problems) = spec.validate() {
            panic!("invalid load spec: {problems}");
        }
        // The misbehaving set has its own stream, so it does not move with the traffic mix.
        let mut pick = StdRng::seed_from_u64(spec.seed ^ 0x6d69_7362_6568_6176);
        let misbehaving = (0..spec.partners)
            .map(|_| pick.gen_bool(spec.misbehaving))
            .collect();
        Generator {
            rng: StdRng::seed_from_u64(spec.seed),
            zipf: Zipf::new(spec.partners, spec.skew),
            misbehaving,
            seq: 0,
            recent_usage: Vec::with_capacity(RECENT),
            recent_paid: Vec::with_capacity(RECENT),
            spec,
        }
    }

    pub fn spec(&self) -> &LoadSpec {
        &self.spec
    }

    pub fn is_misbehaving(&self, partner: usize) -> bool {
        self.misbehaving.get(partner).copied().unwrap_or(false)
    }

    /// The event time of the current record (saturating at chrono's range).
    fn ts(&self) -> String {
        let step = self.spec.event_step.num_microseconds().unwrap_or(i64::MAX);
        let offset = Duration::microseconds(step.saturating_mul(self.seq as i64));
        self.spec
            .start_ts
            .checked_add_signed(offset)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    fn usage(&mut self, partner: usize) -> Record {
        let malformation = self
            .rng
            .gen_bool(self.spec.malformed)
            .then(|| USAGE_MALFORMATIONS[self.rng.gen_range(0..USAGE_MALFORMATIONS.len())]);
        if malformation.is_none()
            && !self.recent_usage.is_empty()
            && self.rng.gen_bool(self.spec.duplicates)
        {
            let (key, payload) =
                self.recent_usage[self.rng.gen_range(0..self.recent_usage.len())].clone();
            return Record {
                stream: Stream::Usage,
                key: Some(key),
                payload,
                kind: Kind::Duplicate,
            };
        }
        let pid = partner_id(partner);
        let bad = self.is_misbehaving(partner);
        // Log-uniform 1..~1000 requests per record: most are small, a few are bursts.
        let requests = (self.rng.gen_range(0.0f64..6.9).exp()) as u64 + 1;
        let error_rate = if bad {
            self.rng.gen_range(0.3..0.9)
        } else {
            self.rng.gen_range(0.0..0.02)
        };
        let mut errors = (requests as f64 * error_rate) as u64;
        let auth_failures = if bad {
            self.rng.gen_range(0..=errors)
        } else {
            u64::from(self.rng.gen_bool(0.01))
        };
        let bytes = requests * self.rng.gen_range(200..4000);
        let integration = format!("{pid}-i{}", self.rng.gen_range(0..3));
        let tenant = self
            .rng
            .gen_bool(0.5)
            .then(|| format!("t-{partner}-{}", self.rng.gen_range(0..4)));
        let event_id = format!("u-{:x}-{}", self.spec.seed, self.seq);
        if malformation == Some(Malformation::ErrorsExceedRequests) {
            errors = requests + 1;
        }
        let ts = self.ts();
        let body = UsageBody {
            event_id: &event_id,
            ts: &ts,
            partner_id: &pid,
            integration_id: &integration,
            tenant_id: tenant.as_deref(),
            requests,
            errors,
            auth_failures,
            bytes,
        };
        let Some(m) = malformation else {
            // unwrap: a struct of strings and integers always serializes.
            let payload = serde_json::to_vec(&body).unwrap();
            if self.recent_usage.len() < RECENT {
                self.recent_usage.push((pid.clone(), payload.clone()));
            } else {
                let slot = (self.seq as usize) % RECENT;
                self.recent_usage[slot] = (pid.clone(), payload.clone());
            }
            return Record {
                stream: Stream::Usage,
                key: Some(pid),
                payload,
                kind: Kind::Usage { requests, errors },
            };
        };
        // unwrap: as above.
        let mut value = serde_json::to_value(&body).unwrap();
        let mut key = pid;
        match m {
            Malformation::MissingField => {
                if let Some(o) = value.as_object_mut() {
                    o.remove("event_id");
                }
            }
            Malformation::WrongType => value["requests"] = json!(requests.to_string()),
            Malformation::WrongKey => key = partner_id((partner + 1) % MAX_PARTNERS),
            _ => {}
        }
        self.malformed(Stream::Usage, key, value, m)
    }

    fn invoice(&mut self, partner: usize) -> Record {
        let malformation = self
            .rng
            .gen_bool(self.spec.malformed)
            .then(|| INVOICE_MALFORMATIONS[self.rng.gen_range(0..INVOICE_MALFORMATIONS.len())]);
        let invoice_id = format!("inv-{:x}-{}", self.spec.seed, self.seq);
        let chargeback_rate = if self.is_misbehaving(partner) {
            0.2
        } else {
            0.01
        };
        let reversal = if self.recent_paid.is_empty() {
            None
        } else if self.rng.gen_bool(chargeback_rate) {
            Some("chargeback")
        } else if self.rng.gen_bool(0.05) {
            Some("refund")
        } else {
            None
        };
        let (partner, kind, tenant, currency, fee_cents, refers_to) = match reversal {
            Some(kind) => {
                // One reversal per paid invoice, so none is an over-refund.
                let i = self.rng.gen_range(0..self.recent_paid.len());
                let o = self.recent_paid.swap_remove(i);
                let part = self.rng.gen_range(1..=o.fee_cents.max(1));
                (
                    o.partner,
                    kind,
                    o.tenant_id,
                    o.currency,
                    part,
                    Some(o.invoice_id),
                )
            }
            None => {
                let u = self.rng.gen::<f64>();
                let mut acc = 0.0;
                let currency = CURRENCIES
                    .iter()
                    .find(|(_, w)| {
                        acc += w;
                        u < acc
                    })
                    .map_or("USD", |(c, _)| c);
                let tenant = format!("t-{partner}-{}", self.rng.gen_range(0..4));
                let fee = self.rng.gen_range(1_000..500_000);
                (partner, "paid", tenant, currency, fee, None)
            }
        };
        let pid = partner_id(partner);
        let money = |cents: u64| format!("{}.{:02}", cents / 100, cents % 100);
        let mut value = json!({
            "invoice_id": invoice_id,
            "ts": self.ts(),
            "kind": kind,
            "partner_id": pid,
            "tenant_id": tenant,
            "currency": currency,
            "platform_fee": money(fee_cents),
            "overage": money(fee_cents / 10),
            "processing_cost": money(fee_cents / 40),
            "new_logo": self.rng.gen_bool(0.1),
        });
        if let Some(original) = refers_to {
            value["refers_to"] = json!(original);
        } else if self.rng.gen_bool(0.3) {
            value["contract_value"] = json!(money(fee_cents * 12));
        }
        if let Some(m) = malformation {
            match m {
                Malformation::MissingField => {
                    if let Some(o) = value.as_object_mut() {
                        o.remove("currency");
                    }
                }
                Malformation::MoneyAsNumber => {
                    value["platform_fee"] = json!(fee_cents as f64 / 100.0)
                }
                Malformation::NegativeMoney => {
                    value["platform_fee"] = json!(format!("-{}", money(fee_cents)))
                }
                Malformation::UnknownEnumValue => value["kind"] = json!("gift"),
                _ => {}
            }
            return self.malformed(Stream::Invoices, pid, value, m);
        }
        if kind == "paid" {
            let paid = Paid {
                partner,
                invoice_id,
                tenant_id: tenant,
                currency,
                fee_cents,
            };
            if self.recent_paid.len() < RECENT {
                self.recent_paid.push(paid);
            } else {
                let slot = (self.seq as usize) % RECENT;
                self.recent_paid[slot] = paid;
            }
        }
        Record {
            stream: Stream::Invoices,
            key: Some(pid),
            // unwrap: a JSON value always serializes.
            payload: serde_json::to_vec(&value).unwrap(),
            kind: Kind::Invoice,
        }
    }

    fn malformed(
        &mut self,
        stream: Stream,
        key: String,
        value: serde_json::Value,
        m: Malformation,
    ) -> Record {
        let payload = match m {
            // A record cut short, as a crashed writer leaves it.
            Malformation::NotJson => {
                let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
                bytes.truncate(bytes.len() / 2);
                bytes
            }
            // unwrap: a JSON value always serializes.
            _ => serde_json::to_vec(&value).unwrap(),
        };
        Record {
            stream,
            key: Some(key),
            payload,
            kind: Kind::Malformed(m),
        }
    }

    fn control(&mut self, partner: usize) -> Record {
        let pid = partner_id(partner);
        let ts = self.ts();
        let (key, value) = match self.rng.gen_range(0..4) {
            0 => {
                let tier = TIERS[self.rng.gen_range(0..TIERS.len())];
                let v = json!({"type": "partner", "partner_id": pid, "name": format!("Partner {partner}"),
                    "tier": tier, "tier_effective_from": ts});
                (Some(pid), v)
            }
            1 => {
                let tier = TIERS[self.rng.gen_range(0..TIERS.len())];
                let v = json!({"type": "tier_change", "partner_id": pid, "tier": tier, "effective_from": ts});
                (Some(pid), v)
            }
            2 => {
                let overage = ["block", "soft", "notify"][self.rng.gen_range(0..3)];
                let v = json!({"type": "quota", "partner_id": pid,
                    "monthly_requests": self.rng.gen_range(100_000u64..100_000_000),
                    "burst_rps": self.rng.gen_range(10u64..5_000), "overage": overage});
                (Some(pid), v)
            }
            _ => {
                let (currency, rate) =
                    [("EUR", 1.08), ("GBP", 1.27), ("JPY", 0.0067)][self.rng.gen_range(0..3)];
                let jitter = 1.0 + self.rng.gen_range(-0.01..0.01);
                let v = json!({"type": "fx_rate", "currency": currency,
                    "usd_per_unit": format!("{:.6}", rate * jitter), "as_of": ts});
                (None, v)
            }
        };
        Record {
            stream: Stream::Control,
            key,
            // unwrap: a JSON value always serializes.
            payload: serde_json::to_vec(&value).unwrap(),
            kind: Kind::Control,
        }
    }
}

impl Iterator for Generator {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        let partner = self.zipf.sample(&mut self.rng);
        let u = self.rng.gen::<f64>();
        let record = if u < self.spec.control_fraction {
            self.control(partner)
        } else if u < self.spec.control_fraction + self.spec.invoice_fraction {
            self.invoice(partner)
        } else {
            self.usage(partner)
        };
        self.seq += 1;
        Some(record)
    }
}

/// Expected lifetime usage of one partner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTruth {
    pub events: u64,
    pub requests: u64,
    pub errors: u64,
}

/// What the daemon must end up with, per partner: each usage event id counted once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroundTruth(pub BTreeMap<String, UsageTruth>);

impl GroundTruth {
    pub fn observe(&mut self, record: &Record) {
        if let (Kind::Usage { requests, errors }, Some(key)) = (record.kind, &record.key) {
            let t = self.0.entry(key.clone()).or_default();
            t.events += 1;
            t.requests += requests;
            t.errors += errors;
        }
    }
}

/// Counts of what was generated, by stream and kind (printed by the binary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub records: u64,
    pub usage: u64,
    pub invoices: u64,
    pub control: u64,
    /// Usage and invoice records: what the consumer group reads.
    pub keyed: u64,
    pub malformed: u64,
    pub duplicates: u64,
}

impl Tally {
    pub fn observe(&mut self, record: &Record) {
        self.records += 1;
        match record.stream {
            Stream::Usage => self.usage += 1,
            Stream::Invoices => self.invoices += 1,
            Stream::Control => self.control += 1,
        }
        self.keyed += u64::from(record.stream != Stream::Control);
        match record.kind {
            Kind::Malformed(_) => self.malformed += 1,
            Kind::Duplicate => self.duplicates += 1,
            _ => {}
        }
    }
}
