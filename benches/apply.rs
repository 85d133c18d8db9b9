//! `apply`: `PartnerState::apply` — the pure domain step every event goes through, with
//! enforcement and money (what the actor calls) — for a new usage event, a duplicate usage
//! event and a new invoice (a commission line: FX, rate, co-op, bonus, wallet, statement),
//! and `tick_due_ms` (when the partner is next due a tick, computed after every batch), next
//! to the floor: adding three counters to a bare `HashMap<String, (u64, u64, u64)>`
//! entry of 10k partners.
//!
//! The states are realistic and steady: the usage dedup window holds ~1,000 ids and each
//! new event evicts one as event time advances (the window is 1,000 s, events are 1 s
//! apart; a flush every 100 events acknowledges the new ids, untimed, as the daemon's
//! does); the invoice id set holds 1,000–2,000 ids (it is reset, untimed, every 1,000
//! applies, since invoice ids are kept forever and would otherwise grow with the run).
//! Building the events is untimed: the daemon does that in decode, benched separately.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rust_decimal::Decimal;
use warden::domain::enforcement::DEFAULT_TIER;
use warden::domain::event::{InvoiceEvent, InvoiceKind, PartnerEvent, UsageEvent};
use warden::domain::partner::{Applied, ApplyEnv, PartnerState};

/// The daemon's allocator, so each figure and its baseline are measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WINDOW_IDS: i64 = 1_000;
const PARTNERS: usize = 10_000;
/// Events between two flushes of the partner (a partner at 1,000 events/s, flushed every
/// 100 ms): the window evicts only ids the store acknowledged.
const FLUSH_EVERY: u64 = 100;

fn t0() -> DateTime<Utc> {
    "2026-05-14T09:30:00Z".parse().unwrap()
}

fn usage(seq: i64) -> PartnerEvent {
    PartnerEvent::Usage(UsageEvent {
        event_id: format!("u-2a-{seq}"),
        ts: t0() + chrono::Duration::seconds(seq),
        partner_id: "p-0000042".into(),
        integration_id: "p-0000042-i1".into(),
        tenant_id: Some("t-42-1".into()),
        requests: 1 + (seq as u64 * 7) % 300,
        errors: (seq as u64 * 7) % 3,
        auth_failures: 0,
        bytes: 4096,
    })
}

fn invoice(seq: i64) -> PartnerEvent {
    PartnerEvent::Invoice(Box::new(InvoiceEvent {
        invoice_id: format!("inv-2a-{seq}"),
        ts: t0() + chrono::Duration::seconds(seq),
        kind: InvoiceKind::Paid,
        partner_id: "p-0000042".into(),
        tenant_id: "t-42-1".into(),
        currency: "USD".into(),
        platform_fee: Decimal::new(12345, 2),
        overage: Decimal::new(1234, 2),
        processing_cost: Decimal::new(308, 2),
        new_logo: false,
        contract_value: None,
        refers_to: None,
    }))
}

fn bench_apply(c: &mut Criterion) {
    let mut env = ApplyEnv {
        tier: DEFAULT_TIER.into(),
        ..ApplyEnv::default()
    };
    env.rules.dedup_window = chrono::Duration::seconds(WINDOW_IDS);
    let ctx = env.ctx();
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(1));

    // A partner in steady state: a full window; every new event evicts the oldest id.
    let mut state = PartnerState::new("p-0000042");
    for seq in 0..WINDOW_IDS {
        assert_eq!(state.apply(&usage(seq), &ctx), Ok(Applied::Counted));
    }
    state.dedup_acknowledged(usize::MAX);
    let mut seq = WINDOW_IDS;
    group.bench_function("warden_usage_new_id", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let n = (iters - done).min(FLUSH_EVERY);
                let events: Vec<PartnerEvent> = (seq + 1..=seq + n as i64).map(usage).collect();
                seq += n as i64;
                let started = Instant::now();
                for event in &events {
                    let _ = black_box(state.apply(black_box(event), &ctx));
                }
                timed += started.elapsed();
                // The flush (untimed): the store holds the new ids, so eviction may pass them.
                state.dedup_acknowledged(usize::MAX);
                done += n;
            }
            timed
        })
    });
    assert!(state.dedup_entries() as i64 <= WINDOW_IDS + FLUSH_EVERY as i64);

    // A producer retry of the newest event: found in the window, nothing changes.
    let newest = usage(seq);
    group.bench_function("warden_usage_duplicate", |b| {
        b.iter(|| black_box(state.apply(black_box(&newest), &ctx)))
    });
    assert_eq!(state.apply(&newest, &ctx), Ok(Applied::Duplicate));

    // What the actor adds to every batch: when the partner is next due a tick.
    group.bench_function("warden_tick_due", |b| {
        b.iter(|| black_box(black_box(&state).tick_due_ms(ctx.policy)))
    });
    assert!(state.tick_due_ms(ctx.policy).is_some());

    let mut base = PartnerState::new("p-0000042");
    for seq in 0..1_000 {
        base.apply(&invoice(seq), &ctx).unwrap();
    }
    let mut next = 1_000i64;
    group.bench_function("warden_invoice_new_id", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let n = (iters - done).min(1_000);
                let mut state = base.clone();
                let events: Vec<PartnerEvent> = (next..next + n as i64).map(invoice).collect();
                next += n as i64;
                let started = Instant::now();
                for event in &events {
                    let _ = black_box(state.apply(black_box(event), &ctx));
                }
                timed += started.elapsed();
                done += n;
            }
            timed
        })
    });

    // The floor: three counters of one of 10k partners, found by id.
    let ids: Vec<String> = (0..PARTNERS).map(|i| format!("p-{i:07}")).collect();
    let mut totals: HashMap<String, (u64, u64, u64)> =
        ids.iter().map(|id| (id.clone(), (0, 0, 0))).collect();
    let mut i = 0usize;
    group.bench_function("baseline_hashmap_update", |b| {
        b.iter(|| {
            let id = black_box(ids[i % PARTNERS].as_str());
            i += 1;
            if let Some(t) = totals.get_mut(id) {
                t.0 += 1;
                t.1 += black_box(17);
                t.2 += black_box(1);
            }
        })
    });
    black_box(&totals);
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
