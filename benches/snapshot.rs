//! `snapshot`: the serde_json encode (every flush, per dirty partner) and decode (every
//! revival from the store) of a `PartnerState`, alone and as stored (`store::snapshot`:
//! the JSON, LZ4-compressed), holding a realistic dedup window of 1,000
//! usage ids and 100 invoice ids, next to the floor: the same ids and counters as a plain
//! `#[derive(Serialize, Deserialize)]` struct.
//!
//! `snapshot/usage_partner` encodes what most flushes write: a usage-only partner of
//! median size from the in-process pipeline bench's stream (about 2 KB of JSON).
//!
//! Decoding a snapshot does not rebuild the dedup index; the first apply after a revival
//! does, so `warden_decode_then_apply` is what a revival really costs.

use std::collections::HashMap;
use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use warden::domain::event::TopicKind;
use warden::domain::event::{InvoiceEvent, InvoiceKind, PartnerEvent, UsageEvent};
use warden::domain::partner::{ApplyEnv, PartnerState};
use warden::kafka::decode::{decode_partner_record, DecodeLimits};
use warden::loadgen::{Generator, LoadSpec};
use warden::store::snapshot;

/// The daemon's allocator, so each figure and its baseline are measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE_IDS: i64 = 1_000;
const INVOICE_IDS: i64 = 100;

/// The same information as a `PartnerState`, in the plainest shape serde handles.
#[derive(Serialize, Deserialize)]
struct BareSnapshot {
    partner_id: String,
    counters: [u64; 9],
    newest: Option<String>,
    usage_ids: Vec<(String, String)>,
    invoice_ids: Vec<String>,
}

fn t0() -> DateTime<Utc> {
    "2026-05-14T09:30:00Z".parse().unwrap()
}

fn usage(seq: i64) -> PartnerEvent {
    PartnerEvent::Usage(UsageEvent {
        event_id: format!("u-2a-{seq}"),
        ts: t0() + chrono::Duration::seconds(seq),
        partner_id: "p-0000042".into(),
        integration_id: "p-0000042-i1".into(),
        tenant_id: None,
        requests: 10,
        errors: 1,
        auth_failures: 0,
        bytes: 4096,
    })
}

fn state() -> PartnerState {
    let env = ApplyEnv::default();
    let rules = env.ctx();
    let mut s = PartnerState::new("p-0000042");
    for seq in 0..USAGE_IDS {
        s.apply(&usage(seq), &rules).unwrap();
    }
    for seq in 0..INVOICE_IDS {
        let invoice = PartnerEvent::Invoice(Box::new(InvoiceEvent {
            invoice_id: format!("inv-2a-{seq}"),
            ts: t0() + chrono::Duration::seconds(seq),
            kind: InvoiceKind::Paid,
            partner_id: "p-0000042".into(),
            tenant_id: "t-42-1".into(),
            currency: "USD".into(),
            platform_fee: Decimal::new(12345, 2),
            overage: Decimal::ZERO,
            processing_cost: Decimal::ZERO,
            new_logo: false,
            contract_value: None,
            refers_to: None,
        }));
        s.apply(&invoice, &rules).unwrap();
    }
    assert_eq!(s.dedup_entries() as i64, USAGE_IDS);
    assert_eq!(s.summary().invoices.paid as i64, INVOICE_IDS);
    s
}

fn bare() -> BareSnapshot {
    let ts = |seq: i64| (t0() + chrono::Duration::seconds(seq)).to_rfc3339();
    BareSnapshot {
        partner_id: "p-0000042".into(),
        counters: [
            USAGE_IDS as u64,
            10_000,
            1_000,
            0,
            4_096_000,
            INVOICE_IDS as u64,
            0,
            0,
            0,
        ],
        newest: Some(ts(USAGE_IDS - 1)),
        usage_ids: (0..USAGE_IDS)
            .map(|seq| (ts(seq), format!("u-2a-{seq}")))
            .collect(),
        invoice_ids: (0..INVOICE_IDS)
            .map(|seq| format!("inv-2a-{seq}:paid"))
            .collect(),
    }
}

/// A usage-only partner as the daemon snapshots most of them: the median-sized state (by
/// its JSON) of 10,000 partners after 200,000 events of the load generator's stream (Zipf
/// 0.9, 1 % misbehaving), the stream the in-process pipeline bench runs.
fn usage_partner() -> PartnerState {
    let spec = LoadSpec {
        partners: 10_000,
        skew: 0.9,
        misbehaving: 0.01,
        invoice_fraction: 0.0,
        control_fraction: 0.0,
        malformed: 0.0,
        duplicates: 0.0,
        seed: 42,
        start_ts: t0(),
        event_step: chrono::Duration::milliseconds(1),
    };
    let record_ts = (t0() + chrono::Duration::minutes(30)).timestamp_millis();
    let env = ApplyEnv::default();
    let rules = env.ctx();
    let limits = DecodeLimits::default();
    let mut states: HashMap<String, PartnerState> = HashMap::new();
    for r in Generator::new(spec).take(200_000) {
        let key = r.key.unwrap_or_default();
        let event = decode_partner_record(
            TopicKind::Usage,
            Some(key.as_bytes()),
            Some(&r.payload),
            Some(record_ts),
            &limits,
        )
        .unwrap();
        let state = states
            .entry(key.clone())
            .or_insert_with(|| PartnerState::new(key));
        state.apply(&event, &rules).unwrap();
    }
    let mut by_size: Vec<(usize, String)> = states
        .iter()
        .map(|(id, s)| (serde_json::to_vec(s).unwrap().len(), id.clone()))
        .collect();
    by_size.sort();
    let median = by_size[by_size.len() / 2].1.clone();
    states.remove(&median).unwrap()
}

fn bench_snapshot(c: &mut Criterion) {
    let partner = usage_partner();
    let partner_json = serde_json::to_vec(&partner).unwrap();
    let mut group = c.benchmark_group("snapshot/usage_partner");
    group.throughput(Throughput::Bytes(partner_json.len() as u64));
    group.bench_function("warden_encode_json", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&partner)).unwrap()))
    });
    group.bench_function("warden_encode_stored_lz4", |b| {
        b.iter(|| black_box(snapshot::encode(black_box(&partner)).unwrap()))
    });
    group.finish();
    eprintln!(
        "usage partner: {} bytes of JSON, {} bytes stored",
        partner_json.len(),
        snapshot::encode(&partner).unwrap().len()
    );

    let state = state();
    let bytes = serde_json::to_vec(&state).unwrap();
    let stored = snapshot::encode(&state).unwrap();
    let bare = bare();
    let bare_bytes = serde_json::to_vec(&bare).unwrap();
    let env = ApplyEnv::default();
    let rules = env.ctx();
    let next = usage(USAGE_IDS);

    let mut group = c.benchmark_group("snapshot/encode");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("warden_partner_state", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&state)).unwrap()))
    });
    group.bench_function("warden_stored_lz4", |b| {
        b.iter(|| black_box(snapshot::encode(black_box(&state)).unwrap()))
    });
    group.bench_function("baseline_plain_struct", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&bare)).unwrap()))
    });
    group.finish();

    let mut group = c.benchmark_group("snapshot/decode");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("warden_partner_state", |b| {
        b.iter(|| black_box(serde_json::from_slice::<PartnerState>(black_box(&bytes)).unwrap()))
    });
    group.bench_function("warden_stored_lz4", |b| {
        b.iter(|| black_box(snapshot::decode(black_box(&stored)).unwrap()))
    });
    group.bench_function("warden_decode_then_apply", |b| {
        b.iter(|| {
            let mut s = snapshot::decode(black_box(&stored)).unwrap();
            black_box(s.apply(black_box(&next), &rules).unwrap());
            black_box(s)
        })
    });
    group.bench_function("baseline_plain_struct", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<BareSnapshot>(black_box(&bare_bytes)).unwrap())
        })
    });
    group.finish();
    eprintln!(
        "snapshot sizes: PartnerState {} bytes of JSON, {} bytes stored, plain struct {} bytes",
        bytes.len(),
        stored.len(),
        bare_bytes.len()
    );
}

criterion_group!(benches, bench_snapshot);
criterion_main!(benches);
