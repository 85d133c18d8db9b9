//! `pipeline_inprocess`: the daemon's per-event path on one thread, without Kafka or
//! threads in between — 100k usage records over 10k partners (Zipf 0.9, from the load
//! generator), 12 partitions by murmur2 of the key — next to the floor: `serde_json` into a
//! plain struct and three counters in a `HashMap`.
//!
//! What each iteration does, as the daemon does it (`kafka/pipeline.rs`, `kafka/flush.rs`,
//! `actors/partner.rs`):
//! - poll batches of 2,000 records (`kafka.poll_batch`): decode each with
//!   `decode_partner_record`, advance the partition's next offset, group by partition
//!   and then by partner in offset order (`kafka::pipeline::group_by_partner`);
//! - a partner seen for the first time is loaded from the store (a miss: a new state);
//! - per partner batch, what the partner actor's `ApplyBatch` handler does, by the same
//!   function (`actors::partner::Shared::apply_batch`): the control catch-up (a read of
//!   the shared control table), then each event applied with enforcement (the default
//!   program) and its metrics: two clock reads, the `warden_event_apply_seconds`
//!   histogram, `warden_events_total`, and the hdrhistogram window;
//! - every 10,000 events (a 100 ms `flush_interval` at 100k events/s) and at the end:
//!   encode every dirty partner (`store::snapshot::encode`), copy its outbox out, and
//!   commit one `PartitionWrite` per partition with its offsets to a `MemoryStore`
//!   through the `StateStore` trait (tokio current-thread); then acknowledge the dedup
//!   ids and the outbox (as the daemon does once the decisions are published).
//!
//! Two ways of driving it:
//! - `warden_decode_route_apply_snapshot`: one thread, a flush every 10,000 events (a
//!   100 ms `flush_interval` at 100k events/s); the figure of every earlier pass;
//! - `warden_2_workers_timed_flush`: the configuration, two cores. Two threads
//!   each own half of the partitions (the daemon spreads partitions' actors over its
//!   arbiters) and share one store; a partition flushes as the daemon's does, when its
//!   `flush_interval` (the default, 100 ms) has passed or when it is pressing by the
//!   daemon's own rule (`kafka::pipeline::pressing`, with the default
//!   `max_unflushed_events`). So the work of a flush is spread over more events as the
//!   rate rises, as in the daemon. Every partner is new: each is created once in the
//!   100k events, and snapshotted at least once;
//! - `warden_2_workers_timed_flush_steady`: the same, in steady state. The stream's first
//!   100k events are routed and flushed untimed, so the partners are live, with the
//!   windows and outboxes they built; the next 100k are timed. Their windows now span
//!   more event time, so each snapshot is larger than in the first variant.
//!
//! All use the daemon's allocator (mimalloc). Not here: the hop from the consumer thread
//! to the actors' arbiters (actix mailboxes) and the broker and Redis round trips:
//! `scripts/bench-e2e` measures those.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use futures::future::join_all;
use parking_lot::RwLock;
use serde::Deserialize;
use warden::actors::messages::Sourced;
use warden::actors::partner::{OutboxWaiting, Shared};
use warden::config::{KafkaConfig, RuntimeConfig};
use warden::domain::control::ControlTable;
use warden::domain::enforcement::EnforcementPolicy;
use warden::domain::event::TopicKind;
use warden::domain::money::Program;
use warden::domain::partner::{ApplyRules, PartnerState};
use warden::kafka::decode::{decode_partner_record, DecodeLimits};
use warden::kafka::pipeline::{group_by_partner, pressing};
use warden::kafka::topics::partition_for_key;
use warden::loadgen::{Generator, LoadSpec};
use warden::store::memory::MemoryStore;
use warden::store::{snapshot, PartitionWrite, StateStore};

const EVENTS: usize = 100_000;
const PARTNERS: usize = 10_000;
const PARTITIONS: i32 = 12;
const POLL_BATCH: usize = 2_000;
const FLUSH_EVERY: usize = 10_000;
const TOPIC: &str = "warden.usage.v1";
const WORKERS: i32 = 2;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone)]
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

/// `EVENTS` records of the generated stream, after the first `skip` of it.
fn generated(skip: usize) -> Vec<Polled> {
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
        .take(skip + EVENTS)
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
        .skip(skip)
        .collect()
}

/// One owned partition: what the pipeline keeps about it between flushes.
struct Partition {
    epoch: u64,
    next: i64,
    dirty: HashSet<String>,
    unflushed: usize,
    last_flush: Instant,
}

struct Daemon {
    shared: Arc<Shared>,
    store: Arc<dyn StateStore>,
    partitions: BTreeMap<i32, Partition>,
    partners: HashMap<String, PartnerState>,
    /// The daemon's defaults: `kafka.flush_interval`, `runtime.max_unflushed_events`.
    flush_interval: Duration,
    max_unflushed: usize,
}

impl Daemon {
    /// Assignment of every partition (untimed: once per rebalance, not per event).
    fn assigned(rt: &tokio::runtime::Runtime, shared: &Arc<Shared>) -> Daemon {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        Daemon::owning(rt, shared, store, 0..PARTITIONS)
    }

    /// Assignment of `owned`: take each partition's epoch in `store`.
    fn owning(
        rt: &tokio::runtime::Runtime,
        shared: &Arc<Shared>,
        store: Arc<dyn StateStore>,
        owned: impl Iterator<Item = i32>,
    ) -> Daemon {
        let partitions = owned
            .map(|p| {
                let epoch = rt.block_on(store.acquire(p)).unwrap();
                let partition = Partition {
                    epoch,
                    next: 0,
                    dirty: HashSet::new(),
                    unflushed: 0,
                    last_flush: Instant::now(),
                };
                (p, partition)
            })
            .collect();
        Daemon {
            shared: Arc::clone(shared),
            store,
            partitions,
            partners: HashMap::new(),
            flush_interval: KafkaConfig::default().flush_interval,
            max_unflushed: RuntimeConfig::default().max_unflushed_events,
        }
    }

    fn route(&mut self, rt: &tokio::runtime::Runtime, batch: &[Polled], record_ts: i64) {
        let limits = DecodeLimits::default();
        let mut per_partition: BTreeMap<i32, Vec<Sourced>> = BTreeMap::new();
        for m in batch {
            // unwrap: every partition is owned.
            let ps = self.partitions.get_mut(&m.partition).unwrap();
            ps.next = m.offset + 1;
            ps.unflushed += 1;
            let event = decode_partner_record(
                TopicKind::Usage,
                Some(m.key.as_slice()),
                Some(m.payload.as_slice()),
                Some(record_ts),
                &limits,
            )
            .expect("generated records are valid");
            per_partition.entry(m.partition).or_default().push(Sourced {
                topic: TopicKind::Usage,
                partition: m.partition,
                offset: m.offset,
                event,
            });
        }
        for (p, events) in per_partition {
            let groups = group_by_partner(events);
            let missing: Vec<&String> = groups
                .iter()
                .map(|(id, _)| id)
                .filter(|id| !self.partners.contains_key(*id))
                .collect();
            let store = &self.store;
            let loaded = rt.block_on(join_all(
                missing
                    .iter()
                    .map(|id| async move { (*id, store.load_partner(p, id).await) }),
            ));
            let loaded: Vec<(String, PartnerState)> = loaded
                .into_iter()
                .map(|(id, res)| {
                    let state = match res.unwrap() {
                        Some(bytes) => snapshot::decode(&bytes).unwrap(),
                        None => PartnerState::new(id.clone()),
                    };
                    (id.clone(), state)
                })
                .collect();
            self.partners.extend(loaded);
            let ps = self.partitions.get_mut(&p).unwrap();
            for (id, group) in groups {
                let state = self.partners.get_mut(&id).unwrap();
                let rejected = self.shared.apply_batch(state, group);
                assert!(rejected.is_empty(), "generated records are valid");
                ps.dirty.insert(id);
            }
        }
    }

    /// Flushes every partition with changes.
    fn flush(&mut self, rt: &tokio::runtime::Runtime) {
        self.flush_where(rt, |_| true);
    }

    /// Flushes the partitions that the daemon's pipeline would flush now.
    fn flush_due(&mut self, rt: &tokio::runtime::Runtime) {
        let now = Instant::now();
        let (interval, max_unflushed) = (self.flush_interval, self.max_unflushed);
        self.flush_where(rt, |ps| {
            now.duration_since(ps.last_flush) >= interval
                || pressing(ps.unflushed, ps.dirty.len(), max_unflushed)
        });
    }

    /// Snapshots the dirty partners of each partition with changes that is `due`, and
    /// commits them with the partition's offsets.
    fn flush_where(&mut self, rt: &tokio::runtime::Runtime, due: impl Fn(&Partition) -> bool) {
        for (p, ps) in self.partitions.iter_mut() {
            if ps.dirty.is_empty() || !due(ps) {
                continue;
            }
            ps.unflushed = 0;
            ps.last_flush = Instant::now();
            let mut partners = Vec::with_capacity(ps.dirty.len());
            let mut dedup = Vec::new();
            let mut outboxes = Vec::new();
            let mut awake = Vec::with_capacity(ps.dirty.len());
            let mut wakes = Vec::new();
            for id in ps.dirty.drain() {
                let state = &self.partners[&id];
                let delta = state.dedup_delta();
                // Whether the next owner starts it at once, as the actor's snapshot says.
                awake.push((
                    id.clone(),
                    state.calms_by_time() || !state.outbox().is_empty(),
                ));
                // When to start it on the wall clock, as the actor's snapshot says; this
                // load has no pilots, so every partner's time stays unset.
                if let Some(at) = state.wake_at_ms(&self.shared.policy) {
                    wakes.push((id.clone(), Some(at)));
                }
                partners.push((id.clone(), snapshot::encode(state).unwrap()));
                // The decisions to publish once the snapshot is durable, copied out as
                // the actor's `TakeSnapshot` does.
                let outbox = state.outbox().to_vec();
                if let Some(last) = outbox.last() {
                    outboxes.push((id.clone(), last.n, outbox));
                }
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
                awake,
                wake: wakes,
            };
            rt.block_on(self.store.commit(write)).unwrap();
            for (id, n) in acks {
                if let Some(state) = self.partners.get_mut(&id) {
                    state.dedup_acknowledged(n);
                }
            }
            // Publication (a Kafka produce, not in this bench) and its ack: the published
            // decisions leave the outbox, so the next snapshot no longer holds them.
            for (id, last, outbox) in outboxes {
                black_box(outbox);
                if let Some(state) = self.partners.get_mut(&id) {
                    state.ack_outbox(last);
                }
            }
        }
    }
}

fn bench_pipeline(c: &mut Criterion) {
    let records = generated(0);
    let record_ts = "2026-05-14T10:00:00Z"
        .parse::<DateTime<Utc>>()
        .unwrap()
        .timestamp_millis();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // The control table is empty (no control facts); the default program and policy.
    let shared = Arc::new(Shared {
        rules: ApplyRules::default(),
        mailbox_capacity: 1,
        control: Arc::new(RwLock::new(ControlTable::default())),
        policy: Arc::new(EnforcementPolicy::default()),
        program: Arc::new(Program::builtin("default").unwrap().unwrap()),
        outbox_waiting: Arc::new(OutboxWaiting::default()),
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

    // The configuration: two workers on two cores, the daemon's timed flush.
    let shares = by_worker(&records);
    group.bench_function("warden_2_workers_timed_flush", |b| {
        b.iter_custom(|iters| time_workers(&shared, &[], &shares, record_ts, iters))
    });
    assert_eq!(
        events_counted(&shared, &[&shares], record_ts),
        EVENTS as u64
    );

    // The same two workers in steady state: the partners are live (loaded, with state and
    // windows) from the stream's first 100k events, routed and flushed untimed; then
    // the next 100k events of the same stream are timed. A daemon meets a partner for
    // the first time once per assignment, and every event after that costs this.
    let next = by_worker(&generated(EVENTS));
    group.bench_function("warden_2_workers_timed_flush_steady", |b| {
        b.iter_custom(|iters| time_workers(&shared, &[&shares], &next, record_ts, iters))
    });
    assert_eq!(
        events_counted(&shared, &[&shares, &next], record_ts),
        2 * EVENTS as u64
    );

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

/// Each worker's records: those of the partitions it owns (`p % WORKERS == w`).
fn by_worker(records: &[Polled]) -> Vec<Vec<Polled>> {
    (0..WORKERS)
        .map(|w| {
            let mine = records.iter().filter(|m| m.partition % WORKERS == w);
            mine.cloned().collect()
        })
        .collect()
}

/// One daemon per worker, each owning the partitions `p % WORKERS == w`, all on one store;
/// each with its own current-thread runtime, as each of the daemon's arbiters has.
fn new_workers(shared: &Arc<Shared>) -> Vec<(tokio::runtime::Runtime, Daemon)> {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    (0..WORKERS)
        .map(|w| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let owned = (0..PARTITIONS).filter(|p| p % WORKERS == w);
            let daemon = Daemon::owning(&rt, shared, Arc::clone(&store), owned);
            (rt, daemon)
        })
        .collect()
}

/// `iters` times: fresh workers route each share of `warm` untimed, then `timed`; the
/// total time of `timed`. Dropping the workers' states is not timed.
fn time_workers(
    shared: &Arc<Shared>,
    warm: &[&[Vec<Polled>]],
    timed: &[Vec<Polled>],
    record_ts: i64,
    iters: u64,
) -> Duration {
    let mut took = Duration::ZERO;
    for _ in 0..iters {
        let mut workers = new_workers(shared);
        for shares in warm {
            run_workers(&mut workers, shares, record_ts);
        }
        let started = Instant::now();
        run_workers(&mut workers, timed, record_ts);
        took += started.elapsed();
        drop(workers);
    }
    took
}

/// Fresh workers route every stage in turn; the usage events their partners counted
/// (a check that the timed path did the work).
fn events_counted(shared: &Arc<Shared>, stages: &[&[Vec<Polled>]], record_ts: i64) -> u64 {
    let mut workers = new_workers(shared);
    for shares in stages {
        run_workers(&mut workers, shares, record_ts);
    }
    workers
        .iter()
        .flat_map(|(_, d)| d.partners.values())
        .map(|s| s.usage.events)
        .sum()
}

/// Each worker on its own thread routes its share in poll batches and flushes what is
/// due after each, then flushes the rest at the end (a drain).
fn run_workers(
    workers: &mut [(tokio::runtime::Runtime, Daemon)],
    shares: &[Vec<Polled>],
    record_ts: i64,
) {
    std::thread::scope(|scope| {
        for ((rt, daemon), share) in workers.iter_mut().zip(shares) {
            scope.spawn(move || {
                for batch in share.chunks(POLL_BATCH) {
                    daemon.route(rt, black_box(batch), record_ts);
                    daemon.flush_due(rt);
                }
                daemon.flush(rt);
            });
        }
    });
}

criterion_group!(benches, bench_pipeline);
criterion_main!(benches);
