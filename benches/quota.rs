//! `quota`: one quota check — count a request against a key's monthly quota and its burst
//! second, and say whether it is allowed — for 10,000 keys visited in turn, in warden
//! (`Meter` + `monthly_target` + `burst_target`, the calls `EnforcementState` makes per
//! usage event) next to two peers checking the same keys in memory:
//! - `governor`: a keyed GCRA limiter (`check_key`), the floor of in-process rate limiting;
//! - `limitador` (in-memory storage): a limit with the key as a variable
//!   (`check_rate_limited_and_update`), what Limitador does per request.
//!
//! Each check is for one request. warden's event time advances 100 µs per check.

use std::collections::HashMap;
use std::hint::black_box;
use std::num::NonZeroU32;

use chrono::{DateTime, Duration, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use governor::{Quota, RateLimiter};
use warden::domain::enforcement::{
    monthly_target, EnforcementPolicy, Level, Meter, QuotaSpec, DEFAULT_TIER,
};
use warden::domain::event::OveragePolicy;

/// The daemon's allocator, so each figure and its baseline are measured as it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: usize = 10_000;

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("p-{i:07}")).collect()
}

fn bench_quota(c: &mut Criterion) {
    let ids = keys();
    let mut group = c.benchmark_group("quota");
    group.throughput(Throughput::Elements(1));

    // warden: the partner's meter, found by id, then both targets.
    let policy = EnforcementPolicy::default();
    let tier = policy.tier(DEFAULT_TIER).clone();
    let spec = QuotaSpec {
        monthly_requests: u64::MAX / 2,
        burst_rps: 1_000,
        overage: OveragePolicy::Block,
    };
    let hold = Duration::seconds(5);
    let mut meters: HashMap<String, Meter> =
        ids.iter().map(|k| (k.clone(), Meter::default())).collect();
    let t0: DateTime<Utc> = "2026-05-14T09:30:00Z".parse().unwrap();
    let mut i = 0usize;
    group.bench_function("warden_meter_check", |b| {
        b.iter(|| {
            let key = black_box(ids[i % KEYS].as_str());
            let now = t0 + Duration::microseconds(100 * i as i64);
            i += 1;
            let meter = meters.get_mut(key).expect("every key has a meter");
            meter.count_month(1);
            meter.count_burst(now, 1, spec.burst_rps, hold);
            let monthly = monthly_target(meter.used(), &spec, &policy);
            let burst = meter.burst_target(now);
            black_box(monthly.level.max(burst.level) < Level::Throttle)
        })
    });
    black_box(&tier);

    // governor: keyed GCRA, 1,000 per second per key.
    let limiter = RateLimiter::keyed(Quota::per_second(NonZeroU32::new(1_000).unwrap()));
    let mut j = 0usize;
    group.bench_function("governor_keyed_check", |b| {
        b.iter(|| {
            let key = &ids[j % KEYS];
            j += 1;
            black_box(limiter.check_key(black_box(key)).is_ok())
        })
    });

    // limitador, in-memory: one limit, the key as its variable.
    let rl = limitador::RateLimiter::new(KEYS as u64 * 2);
    let namespace = limitador::limit::Namespace::from("warden");
    let variable = limitador::limit::Expression::parse("partner").expect("a variable");
    rl.add_limit(limitador::limit::Limit::new(
        "warden",
        1_000,
        1,
        Vec::new(),
        vec![variable],
    ));
    let contexts: Vec<limitador::limit::Context> = ids
        .iter()
        .map(|k| HashMap::from([("partner".to_string(), k.clone())]).into())
        .collect();
    let mut k = 0usize;
    group.bench_function("limitador_in_memory_check", |b| {
        b.iter(|| {
            let ctx = &contexts[k % KEYS];
            k += 1;
            let r = rl
                .check_rate_limited_and_update(&namespace, black_box(ctx), 1, false)
                .expect("in-memory check");
            black_box(r.limited)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_quota);
criterion_main!(benches);
