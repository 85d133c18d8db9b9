//! `decode`: warden's decoder (`decode_partner_record`: every CONTRACT §1/§5 rule, typed
//! money and timestamps, key and clock-skew checks) per keyed topic, next to the floor —
//! `serde_json::from_slice` of the same bytes into a plain `#[derive(Deserialize)]` struct
//! of strings and integers, with no validation at all.
//!
//! Payloads come from the load generator (usage, invoices) or are built like warden's
//! attribution records; several distinct records rotate so the branch predictor and
//! caches see realistic variety.

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::Deserialize;
use warden::domain::event::TopicKind;
use warden::kafka::decode::{decode_partner_record, DecodeLimits};
use warden::loadgen::{Generator, LoadSpec, Record, Stream};

/// The daemon's allocator, so each figure and its baseline are measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(dead_code)]
#[derive(Deserialize)]
struct BareUsage {
    event_id: String,
    ts: String,
    partner_id: String,
    integration_id: String,
    tenant_id: Option<String>,
    requests: u64,
    errors: u64,
    #[serde(default)]
    auth_failures: u64,
    #[serde(default)]
    bytes: u64,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct BareInvoice {
    invoice_id: String,
    ts: String,
    kind: String,
    partner_id: String,
    tenant_id: String,
    currency: String,
    platform_fee: String,
    overage: Option<String>,
    processing_cost: Option<String>,
    new_logo: Option<bool>,
    contract_value: Option<String>,
    refers_to: Option<String>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct BareAttribution {
    attribution_id: String,
    ancestor_id: String,
    partner_id: String,
    invoice_id: String,
    kind: String,
    ts: String,
    base_usd: String,
    override_rate: String,
    amount_usd: String,
}

const SAMPLES: usize = 64;

fn spec() -> LoadSpec {
    LoadSpec {
        partners: 10_000,
        skew: 1.0,
        misbehaving: 0.01,
        invoice_fraction: 0.5,
        control_fraction: 0.0,
        malformed: 0.0,
        duplicates: 0.0,
        seed: 42,
        start_ts: "2026-05-14T09:30:00Z".parse().unwrap(),
        event_step: chrono::Duration::milliseconds(1),
    }
}

/// `SAMPLES` records of `stream` as (key, payload).
fn samples(stream: Stream) -> Vec<(Vec<u8>, Vec<u8>)> {
    Generator::new(spec())
        .filter(|r: &Record| r.stream == stream)
        .take(SAMPLES)
        .map(|r| (r.key.unwrap_or_default().into_bytes(), r.payload))
        .collect()
}

fn attribution_samples() -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..SAMPLES)
        .map(|i| {
            let ancestor = format!("p-{:07}", i % 7);
            let invoice = format!("inv-2a-{i}");
            let payload = serde_json::json!({
                "attribution_id": format!("{invoice}:paid:{ancestor}"),
                "ancestor_id": ancestor,
                "partner_id": format!("p-{:07}", 100 + i),
                "invoice_id": invoice,
                "kind": "paid",
                "ts": "2026-05-14T09:30:00.123Z",
                "base_usd": format!("{}.{:02}", 100 + i * 37, i % 100),
                "override_rate": "0.02",
                "amount_usd": format!("{}.{:02}", 2 + i, i % 100),
            });
            (ancestor.into_bytes(), serde_json::to_vec(&payload).unwrap())
        })
        .collect()
}

fn bench_decode(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    // A record written a minute after the events: the clock-skew check runs and passes.
    let record_ts = "2026-05-14T09:31:00Z"
        .parse::<DateTime<Utc>>()
        .unwrap()
        .timestamp_millis();
    let topics = [
        (TopicKind::Usage, samples(Stream::Usage)),
        (TopicKind::Invoices, samples(Stream::Invoices)),
        (TopicKind::Attribution, attribution_samples()),
    ];
    for (kind, records) in &topics {
        assert_eq!(records.len(), SAMPLES);
        let mut group = c.benchmark_group(format!("decode/{}", kind.as_str()));
        let mean_len = records.iter().map(|(_, p)| p.len()).sum::<usize>() / records.len();
        group.throughput(Throughput::Bytes(mean_len as u64));
        let mut i = 0usize;
        group.bench_function("warden_decode_partner_record", |b| {
            b.iter(|| {
                let (key, payload) = &records[i % SAMPLES];
                i += 1;
                let event = decode_partner_record(
                    *kind,
                    Some(black_box(key.as_slice())),
                    Some(black_box(payload.as_slice())),
                    Some(record_ts),
                    &limits,
                );
                black_box(event.expect("valid record"))
            })
        });
        let mut i = 0usize;
        group.bench_function("baseline_serde_json_from_slice", |b| {
            b.iter(|| {
                let payload = black_box(records[i % SAMPLES].1.as_slice());
                i += 1;
                // Each arm returns its struct: dropping it is timed, as for warden's event.
                match kind {
                    TopicKind::Usage => {
                        drop(black_box(serde_json::from_slice::<BareUsage>(payload)))
                    }
                    TopicKind::Invoices => {
                        drop(black_box(serde_json::from_slice::<BareInvoice>(payload)))
                    }
                    _ => drop(black_box(serde_json::from_slice::<BareAttribution>(
                        payload,
                    ))),
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
