//! `pipeline_inprocess`: the daemon's per-event path on one thread, without Kafka or
//! threads in between — 100k usage records over 10k partners (Zipf 0.9, from the load
//! generator), 12 partitions by murmur2 of the key — next to the floor: `serde_json` into a
//! plain struct and three counters in a `HashMap`.
//!
//! What each iteration does, as the daemon does it (`kafka/pipeline.rs`, `kafka/flush.rs`,
//! `actors/partner.rs`):
//! - poll batches of 2,000 records (`kafka.poll_batch`): decode each with
//!   `decode_partner_record`, advance the partition's next offset, group by partition
//!   and then by partner in offset order;
//! - a partner seen for the first time is loaded from the store (a miss: a new state);
//! - per partner batch, the actor's control catch-up (a read of the shared control table);
//! - apply each event with enforcement (`PartnerState::apply_with`, the default program)
//!   and the actor's per-event bookkeeping: two clock reads, the
//!   `warden_event_apply_seconds` histogram, `warden_events_total`, and the hdrhistogram
//!   window once per partner batch;
//! - every 10,000 events (a 100 ms `flush_interval` at 100k events/s) and at the end:
//!   encode every dirty partner (`store::snapshot::encode`) and commit one `PartitionWrite`
//!   per partition with its offsets to a `MemoryStore` through the `StateStore` trait
//!   (tokio current-thread).
//!
//! Not here: the hop from the consumer thread to the actors' arbiters (actix mailboxes)
//! and the broker and Redis round trips: `scripts/bench-e2e` measures those.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use futures::future::join_all;
use parking_lot::RwLock;
use serde::Deserialize;
use warden::domain::control::ControlTable;
use warden::domain::enforcement::EnforcementPolicy;
use warden::domain::event::{PartnerEvent, TopicKind};
use warden::domain::money::Program;
use warden::domain::partner::{Applied, ApplyContext, ApplyRules, PartnerState};
use warden::kafka::decode::{decode_partner_record, DecodeLimits};
use warden::kafka::topics::partition_for_key;
use warden::latency::APPLY_LATENCY;
use warden::loadgen::{Generator, LoadSpec};
use warden::metrics::METRICS;
use warden::store::memory::MemoryStore;
use warden::store::{snapshot, PartitionWrite, StateStore};

const EVENTS: usize = 100_000;
const PARTNERS: usize = 10_000;
const PARTITIONS: i32 = 12;
const POLL_BATCH: usize = 2_000;
const FLUSH_EVERY: usize = 10_000;
const TOPIC: &str = "warden.usage.v1";

struct Polled {
    partition: i32,
    offset: i64,
    key: Vec<u8>,
    payload: Vec<u8>,
}

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
}

fn records() -> Vec<Polled> {
    let spec = LoadSpec {
        partners: PARTNERS,
        skew: 0.9,
        misbehaving: 0.01,
        invoice_fraction: 0.0,
        control_fraction: 0.0,
        malformed: 0.0,
        duplicates: 0.0,
        seed: 42,
        start_ts: "2026-05-14T09:30:00Z".parse().unwrap(),
        event_step: chrono::Duration::milliseconds(1),
    };
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    Generator::new(spec)
        .take(EVENTS)
        .map(|r| {
            let key = r.key.unwrap_or_default().into_bytes();
            let partition = partition_for_key(&key, PARTITIONS);
            let offset = offsets.entry(partition).or_default();
            *offset += 1;
            Polled {
                partition,
                offset: *offset - 1,
                key,
                payload: r.payload,
            }
        })
        .collect()
}

/// One owned partition: what the pipeline keeps about it between flushes.
#[derive(Default)]
struct Partition {
    epoch: u64,
    next: i64,
    dirty: HashSet<String>,
}

struct Daemon {
    shared: Arc<Shared>,
    store: Arc<dyn StateStore>,
    partitions: BTreeMap<i32, Partition>,
    partners: HashMap<String, PartnerState>,
}

impl Daemon {
    /// Assignment: take every partition's epoch (untimed: once per rebalance, not per event).
    fn assigned(rt: &tokio::runtime::Runtime, shared: &Arc<Shared>) -> Daemon {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let partitions = (0..PARTITIONS)
            .map(|p| {
                let epoch = rt.block_on(store.acquire(p)).unwrap();
                (
                    p,
                    Partition {
                        epoch,
                        ..Partition::default()
                    },
                )
            })
            .collect();
        Daemon {
            shared: Arc::clone(shared),
            store,
            partitions,
            partners: HashMap::new(),
        }
    }

    fn route(&mut self, rt: &tokio::runtime::Runtime, batch: &[Polled], record_ts: i64) {
        let limits = DecodeLimits::default();
        let mut per_partition: BTreeMap<i32, Vec<PartnerEvent>> = BTreeMap::new();
        for m in batch {
            // unwrap: every partition is owned.
            let ps = self.partitions.get_mut(&m.partition).unwrap();
            ps.next = m.offset + 1;
            let event = decode_partner_record(
                TopicKind::Usage,
                Some(m.key.as_slice()),
                Some(m.payload.as_slice()),
                Some(record_ts),
                &limits,
            )
            .expect("generated records are valid");
            per_partition.entry(m.partition).or_default().push(event);
        }
        for (p, events) in per_partition {
            let mut order: Vec<String> = Vec::new();
            let mut groups: HashMap<String, Vec<PartnerEvent>> = HashMap::new();
            for e in events {
                if let Some(g) = groups.get_mut(e.partner_id()) {
                    g.push(e);
                } else {
                    order.push(e.partner_id().to_owned());
                    groups.insert(e.partner_id().to_owned(), vec![e]);
                }
            }
            let missing: Vec<&String> = order
                .iter()
                .filter(|id| !self.partners.contains_key(*id))
                .collect();
            let store = &self.store;
            let loaded = rt.block_on(join_all(
                missing
                    .iter()
                    .map(|id| async move { (*id, store.load_partner(p, id).await) }),
            ));
            for (id, res) in loaded {
                let state = match res.unwrap() {
                    Some(bytes) => snapshot::decode(&bytes).unwrap(),
                    None => PartnerState::new(id.clone()),
                };
                self.partners.insert(id.clone(), state);
            }
            let ps = self.partitions.get_mut(&p).unwrap();
            for id in order {
                let group = groups.remove(&id).unwrap();
                let state = self.partners.get_mut(&id).unwrap();
                apply_batch(&self.shared, state, group);
                ps.dirty.insert(id);
            }
        }
    }

    fn flush(&mut self, rt: &tokio::runtime::Runtime) {
        for (p, ps) in self.partitions.iter_mut() {
            if ps.dirty.is_empty() {
                continue;
            }
            let mut partners = Vec::with_capacity(ps.dirty.len());
            let mut dedup = Vec::new();
            for id in ps.dirty.drain() {
                let state = &self.partners[&id];
                let delta = state.dedup_delta();
                partners.push((id.clone(), snapshot::encode(state).unwrap()));
                if !delta.is_empty() {
                    dedup.push((id, delta));
                }
            }
            let acks: Vec<(String, usize)> = dedup
                .iter()
                .map(|(id, d)| (id.clone(), d.added.len()))
                .collect();
            let write = PartitionWrite {
                partition: *p,
                epoch: ps.epoch,
                offsets: [(TOPIC.to_owned(), ps.next)].into_iter().collect(),
                partners,
                dedup,
            };
            rt.block_on(self.store.commit(write)).unwrap();
            for (id, n) in acks {
                if let Some(state) = self.partners.get_mut(&id) {
                    state.dedup_acknowledged(n);
                }
            }
        }
    }
}

/// What the partner actors share: the control table (empty here: no control facts) and
/// the enforcement policy (the default program).
struct Shared {
    control: RwLock<ControlTable>,
    policy: EnforcementPolicy,
    rules: ApplyRules,
    program: Program,
}

/// The partner actor's `ApplyBatch` handler, without the mailbox: control catch-up, then
/// apply with enforcement, with its per-event metrics.
fn apply_batch(shared: &Shared, state: &mut PartnerState, events: Vec<PartnerEvent>) {
    let table = shared.control.read();
    let tier = table.tier_of(&state.partner_id).to_owned();
    let ctx = ApplyContext {
        rules: &shared.rules,
        tier: &tier,
        policy: &shared.policy,
        money: table.money(),
        program: &shared.program,
        wall_now: chrono::Utc::now(),
    };
    let caught_up = state.catch_up(&table, &ctx);
    assert!(!caught_up, "the bench has no control facts");
    let mut nanos = Vec::with_capacity(events.len());
    for event in events {
        let started = Instant::now();
        let outcome = state.apply(&event, &ctx);
        let took = started.elapsed();
        METRICS.event_apply_seconds.observe(took.as_secs_f64());
        nanos.push(took.as_nanos() as u64);
        let outcome = match outcome {
            Ok(Applied::Counted) => "applied",
            Ok(Applied::Duplicate) => "duplicate",
            Err(_) => "dead_letter",
        };
        METRICS.events.with_label_values(&["usage", outcome]).inc();
    }
    APPLY_LATENCY.record_all(&nanos);
}

fn bench_pipeline(c: &mut Criterion) {
    let records = records();
    let record_ts = "2026-05-14T10:00:00Z"
        .parse::<DateTime<Utc>>()
        .unwrap()
        .timestamp_millis();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let shared = Arc::new(Shared {
        control: RwLock::new(ControlTable::default()),
        policy: EnforcementPolicy::default(),
        rules: ApplyRules::default(),
        program: Program::builtin("default").unwrap().unwrap(),
    });

    let mut group = c.benchmark_group("pipeline_inprocess");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.bench_function("warden_decode_route_apply_snapshot", |b| {
        b.iter_batched(
            || Daemon::assigned(&rt, &shared),
            |mut daemon| {
                let mut since_flush = 0;
                for batch in records.chunks(POLL_BATCH) {
                    daemon.route(&rt, black_box(batch), record_ts);
                    since_flush += batch.len();
                    if since_flush >= FLUSH_EVERY {
                        daemon.flush(&rt);
                        since_flush = 0;
                    }
                }
                daemon.flush(&rt);
                // Returned, so dropping 10k states is not timed.
                daemon
            },
            BatchSize::PerIteration,
        )
    });
    // Check once that the path did the work: every partner durable with its events.
    let mut daemon = Daemon::assigned(&rt, &shared);
    for batch in records.chunks(POLL_BATCH) {
        daemon.route(&rt, batch, record_ts);
    }
    daemon.flush(&rt);
    let counted: u64 = daemon.partners.values().map(|s| s.usage.events).sum();
    assert_eq!(counted, EVENTS as u64);

    group.bench_function("baseline_serde_json_hashmap", |b| {
        b.iter_batched(
            HashMap::<String, (u64, u64, u64)>::new,
            |mut totals| {
                for m in black_box(&records) {
                    let e: BareUsage = serde_json::from_slice(&m.payload).unwrap();
                    let t = totals.entry(e.partner_id).or_default();
                    t.0 += 1;
                    t.1 += e.requests;
                    t.2 += e.errors;
                }
                totals
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_pipeline);
criterion_main!(benches);
