//! One behaviour suite for every `AuditLog` (like `tests/store_behaviour.rs`):
//! `for_each_backend!` generates each case as `memory::<case>` and `redis::<case>`. Then
//! what only Redis can show: tampering with the stored records, data warden did not
//! write, several store instances appending to one chain.
//!
//! The Redis backend needs `WARDEN_TEST_REDIS_URL` (scripts/test sets it); without it the
//! Redis tests fail rather than skip. Every test uses its own random key prefix.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::json;
use warden::domain::audit::{
    self, AuditEntry, AuditRecord, ChainHead, ChainProblem, GENESIS_PREV_HASH,
};
use warden::store::audit::{verify_log, AppendOutcome, AuditLog, MemoryAuditLog};
use warden::store::keys::Keys;
use warden::store::redis::RedisStore;
use warden::store::StoreError;

const TIMEOUT: Duration = Duration::from_secs(5);

mod common;

use common::redis_url;

fn unique_prefix() -> String {
    format!("warden-test-{:016x}", rand::random::<u64>())
}

async fn new_memory_log() -> Arc<dyn AuditLog> {
    Arc::new(MemoryAuditLog::new())
}

async fn new_redis_log() -> Arc<dyn AuditLog> {
    Arc::new(new_redis_store_with_keys().await.0)
}

async fn redis_store_on(prefix: &str) -> RedisStore {
    RedisStore::connect(&redis_url(), prefix, TIMEOUT)
        .await
        .expect("connect to WARDEN_TEST_REDIS_URL")
}

/// A store on a fresh prefix, and that prefix's keys for tests that touch Redis directly.
async fn new_redis_store_with_keys() -> (RedisStore, Keys) {
    let prefix = unique_prefix();
    (redis_store_on(&prefix).await, Keys::new(prefix))
}

fn entry(ref_id: &str) -> AuditEntry {
    AuditEntry {
        ref_id: ref_id.to_owned(),
        at: Utc.with_ymd_and_hms(2026, 6, 1, 9, 30, 0).unwrap(),
        actor: "sec-bot".to_owned(),
        action: "kill_switch.create".to_owned(),
        target: format!("partner:{ref_id}"),
        detail: json!({"reason": "fraud", "scope": "partner"}),
    }
}

async fn append_new(log: &dyn AuditLog, entry: AuditEntry) -> AuditRecord {
    match log.append(entry).await.expect("append") {
        AppendOutcome::Appended(record) => record,
        other => panic!("expected a new record, got {other:?}"),
    }
}

async fn append_n(log: &dyn AuditLog, n: usize) -> Vec<AuditRecord> {
    let mut records = Vec::with_capacity(n);
    for i in 1..=n {
        records.push(append_new(log, entry(&format!("ref-{i}"))).await);
    }
    records
}

fn seqs(records: &[AuditRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

/// The cases, each against any log that starts empty.
mod cases {
    use super::*;

    pub async fn an_empty_log_verifies(log: Arc<dyn AuditLog>) {
        assert_eq!(log.head().await, Ok(ChainHead::genesis()));
        assert_eq!(log.after(0, 10).await, Ok(vec![]));
        assert_eq!(log.all().await, Ok(vec![]));
        assert_eq!(verify_log(&*log).await, Ok(Ok(0)));
    }

    pub async fn appends_get_consecutive_seqs_and_chain(log: Arc<dyn AuditLog>) {
        let records = append_n(&*log, 3).await;
        assert_eq!(seqs(&records), [1, 2, 3]);
        assert_eq!(records[0].prev_hash, GENESIS_PREV_HASH);
        assert_eq!(records[1].prev_hash, records[0].hash);
        assert_eq!(records[2].prev_hash, records[1].hash);
        for record in &records {
            assert_eq!(audit::hash_of(record), record.hash);
        }
        assert_eq!(log.head().await, Ok(records[2].head()));
        assert_eq!(log.all().await, Ok(records.clone()), "stored as returned");
        assert_eq!(verify_log(&*log).await, Ok(Ok(3)));
    }

    pub async fn a_repeated_ref_is_recorded_once(log: Arc<dyn AuditLog>) {
        let first = append_new(&*log, entry("ks-1")).await;
        append_new(&*log, entry("ks-2")).await;
        let mut retried = entry("ks-1");
        retried.detail = json!({"reason": "a retry says something else"});
        assert_eq!(
            log.append(retried).await,
            Ok(AppendOutcome::AlreadyRecorded(first.seq))
        );
        assert_eq!(
            log.append(entry("ks-2")).await,
            Ok(AppendOutcome::AlreadyRecorded(2))
        );
        let all = log.all().await.expect("all");
        assert_eq!(seqs(&all), [1, 2]);
        assert_eq!(all[0], first, "the first record of a ref stands");
        assert_eq!(log.head().await.expect("head").seq, 2);
        assert_eq!(append_new(&*log, entry("ks-3")).await.seq, 3);
    }

    pub async fn concurrent_appenders_make_one_gap_free_chain(log: Arc<dyn AuditLog>) {
        const TASKS: usize = 8;
        const EACH: usize = 50;
        let appenders: Vec<_> = (0..TASKS)
            .map(|task| {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut seqs = Vec::with_capacity(EACH);
                    for i in 0..EACH {
                        let record = append_new(&*log, entry(&format!("t{task}-{i}"))).await;
                        seqs.push(record.seq);
                    }
                    seqs
                })
            })
            .collect();
        let mut assigned = Vec::new();
        for appender in appenders {
            let seqs = appender.await.expect("appender task");
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
            assigned.extend(seqs);
        }
        assigned.sort_unstable();
        let total = (TASKS * EACH) as u64;
        assert_eq!(assigned, (1..=total).collect::<Vec<_>>());

        let all = log.all().await.expect("all");
        assert_eq!(audit::verify(&all), Ok(TASKS * EACH));
        let refs: HashSet<&str> = all.iter().map(|r| r.ref_id.as_str()).collect();
        assert_eq!(refs.len(), TASKS * EACH, "every ref once");
        assert_eq!(verify_log(&*log).await, Ok(Ok(TASKS * EACH)));
    }

    pub async fn concurrent_appends_of_one_ref_record_it_once(log: Arc<dyn AuditLog>) {
        append_new(&*log, entry("before")).await;
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let log = Arc::clone(&log);
                tokio::spawn(async move { log.append(entry("kill-7")).await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for racer in racers {
            outcomes.push(racer.await.expect("racer task").expect("append"));
        }
        let appended: Vec<_> = outcomes
            .iter()
            .filter_map(|o| match o {
                AppendOutcome::Appended(record) => Some(record.seq),
                AppendOutcome::AlreadyRecorded(_) => None,
            })
            .collect();
        assert_eq!(appended, [2], "{outcomes:?}");
        assert!(outcomes.iter().all(|o| match o {
            AppendOutcome::Appended(_) => true,
            AppendOutcome::AlreadyRecorded(seq) => *seq == 2,
        }));
        assert_eq!(verify_log(&*log).await, Ok(Ok(2)));
    }

    /// A batch is recorded as its entries would be one by one: in order, chained, a ref
    /// already in the chain (before the batch or earlier in it) skipped and the rest kept.
    pub async fn a_batch_appends_in_order_and_skips_recorded_refs(log: Arc<dyn AuditLog>) {
        let before = append_new(&*log, entry("b-2")).await;
        let batch = ["b-1", "b-2", "b-3", "b-3", "b-4"].map(entry).to_vec();
        let (outcomes, error) = log.append_many(batch).await;
        assert_eq!(error, None);
        let seqs_of: Vec<Option<u64>> = outcomes
            .iter()
            .map(|o| match o {
                AppendOutcome::Appended(r) => Some(r.seq),
                AppendOutcome::AlreadyRecorded(_) => None,
            })
            .collect();
        assert_eq!(seqs_of, [Some(2), None, Some(3), None, Some(4)]);
        assert_eq!(outcomes[1], AppendOutcome::AlreadyRecorded(before.seq));
        assert_eq!(outcomes[3], AppendOutcome::AlreadyRecorded(3));
        let all = log.all().await.expect("all");
        let refs: Vec<&str> = all.iter().map(|r| r.ref_id.as_str()).collect();
        assert_eq!(refs, ["b-2", "b-1", "b-3", "b-4"]);
        assert_eq!(verify_log(&*log).await, Ok(Ok(4)));
        assert_eq!(log.append_many(Vec::new()).await, (Vec::new(), None));
        assert_eq!(
            append_new(&*log, entry("b-5")).await.seq,
            5,
            "the head moved on"
        );
    }

    /// Batches and single appends racing make one gap-free chain, every ref once.
    pub async fn concurrent_batches_make_one_gap_free_chain(log: Arc<dyn AuditLog>) {
        const TASKS: usize = 6;
        const BATCHES: usize = 10;
        const EACH: usize = 7;
        let appenders: Vec<_> = (0..TASKS)
            .map(|task| {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    for b in 0..BATCHES {
                        if task % 2 == 0 {
                            let batch = (0..EACH)
                                .map(|i| entry(&format!("t{task}-{b}-{i}")))
                                .collect();
                            let (outcomes, error) = log.append_many(batch).await;
                            assert_eq!((outcomes.len(), error), (EACH, None));
                        } else {
                            for i in 0..EACH {
                                append_new(&*log, entry(&format!("t{task}-{b}-{i}"))).await;
                            }
                        }
                    }
                })
            })
            .collect();
        for appender in appenders {
            appender.await.expect("appender task");
        }
        let total = TASKS * BATCHES * EACH;
        let all = log.all().await.expect("all");
        assert_eq!(seqs(&all), (1..=total as u64).collect::<Vec<_>>());
        let refs: HashSet<&str> = all.iter().map(|r| r.ref_id.as_str()).collect();
        assert_eq!(refs.len(), total, "every ref once");
        assert_eq!(verify_log(&*log).await, Ok(Ok(total)));
    }

    pub async fn after_paginates_in_seq_order(log: Arc<dyn AuditLog>) {
        let records = append_n(&*log, 25).await;
        let first = log.after(0, 10).await.expect("page 1");
        let second = log.after(10, 10).await.expect("page 2");
        let third = log.after(20, 10).await.expect("page 3");
        assert_eq!(seqs(&first), (1..=10).collect::<Vec<_>>());
        assert_eq!(seqs(&second), (11..=20).collect::<Vec<_>>());
        assert_eq!(seqs(&third), (21..=25).collect::<Vec<_>>());
        assert_eq!(log.after(25, 10).await, Ok(vec![]));
        assert_eq!(log.after(1_000, 10).await, Ok(vec![]));
        assert_eq!(log.after(3, 0).await, Ok(vec![]));
        assert_eq!(log.after(3, 1).await, Ok(vec![records[3].clone()]));

        assert_eq!(audit::verify(&first), Ok(10));
        assert_eq!(audit::verify_continuing(&first[9].head(), &second), Ok(10));
        assert_eq!(audit::verify_continuing(&second[9].head(), &third), Ok(5));
        let pages: Vec<AuditRecord> = [first, second, third].concat();
        assert_eq!(pages, records);
    }

    pub async fn records_keep_their_content(log: Arc<dyn AuditLog>) {
        let at = Utc
            .timestamp_opt(1_780_000_000, 123_456_789)
            .single()
            .expect("valid time");
        let sent = AuditEntry {
            ref_id: "req-Ω-1".to_owned(),
            at,
            actor: "token:ops \"night\"".to_owned(),
            action: "auth.denied".to_owned(),
            target: "/v1/kill-switches".to_owned(),
            detail: json!({"status": 403, "why": {"role": "viewer", "needed": "security"},
                           "note": "line\nbreak ✓"}),
        };
        let record = append_new(&*log, sent.clone()).await;
        let stored = log.all().await.expect("all");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0], record);
        assert_eq!(stored[0].entry(), sent);
        assert_eq!(audit::hash_of(&stored[0]), record.hash);
    }
}

/// Generates one `#[tokio::test]` per case in `mod $backend`, on a new log from `$new_log`.
macro_rules! behaviour_suite {
    ($backend:ident, $new_log:ident, [$($case:ident),+ $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    cases::$case($new_log().await).await;
                }
            )+
        }
    };
}

/// Every case against every backend.
macro_rules! for_each_backend {
    ($($case:ident),+ $(,)?) => {
        behaviour_suite!(memory, new_memory_log, [$($case),+]);
        behaviour_suite!(redis, new_redis_log, [$($case),+]);
    };
}

for_each_backend!(
    an_empty_log_verifies,
    appends_get_consecutive_seqs_and_chain,
    a_repeated_ref_is_recorded_once,
    concurrent_appenders_make_one_gap_free_chain,
    concurrent_appends_of_one_ref_record_it_once,
    a_batch_appends_in_order_and_skips_recorded_refs,
    concurrent_batches_make_one_gap_free_chain,
    after_paginates_in_seq_order,
    records_keep_their_content,
);

/// What only a store that can be reached from outside can show.
mod redis_only {
    use super::*;
    use ::redis::AsyncCommands;

    /// The stored JSON of the record at `seq`.
    async fn stored_json(
        raw: &mut ::redis::aio::MultiplexedConnection,
        keys: &Keys,
        seq: u64,
    ) -> String {
        let mut members: Vec<String> = raw
            .zrangebyscore(keys.audit_log(), seq, seq)
            .await
            .expect("zrangebyscore");
        assert_eq!(members.len(), 1, "one record at seq {seq}");
        members.remove(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edited_detail_is_detected_at_its_seq() {
        let (store, keys) = new_redis_store_with_keys().await;
        append_n(&store, 5).await;
        let mut raw = common::raw_redis().await;

        let original = stored_json(&mut raw, &keys, 3).await;
        let mut edited: serde_json::Value = serde_json::from_str(&original).expect("json");
        edited["detail"]["reason"] = json!("routine maintenance");
        let _: () = raw.zrem(keys.audit_log(), &original).await.expect("zrem");
        let _: () = raw
            .zadd(keys.audit_log(), edited.to_string(), 3)
            .await
            .expect("zadd");

        let records = store.all().await.expect("all");
        assert_eq!(seqs(&records), [1, 2, 3, 4, 5], "the edit kept its place");
        assert_eq!(records[2].detail["reason"], "routine maintenance");
        let err = audit::verify(&records).expect_err("edited");
        assert_eq!(err.seq, 3);
        assert!(matches!(err.problem, ChainProblem::Edited { .. }), "{err}");
        let err = verify_log(&store)
            .await
            .expect("readable")
            .expect_err("edited");
        assert_eq!(err.seq, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_record_is_detected_at_the_next_seq() {
        let (store, keys) = new_redis_store_with_keys().await;
        append_n(&store, 5).await;
        let mut raw = common::raw_redis().await;
        let removed: u64 = raw
            .zrembyscore(keys.audit_log(), 3, 3)
            .await
            .expect("zremrangebyscore");
        assert_eq!(removed, 1);

        let err = verify_log(&store)
            .await
            .expect("readable")
            .expect_err("gap");
        assert_eq!(err.seq, 4);
        assert_eq!(err.problem, ChainProblem::OutOfSequence { expected: 3 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_last_record_is_caught_by_the_head() {
        let (store, keys) = new_redis_store_with_keys().await;
        append_n(&store, 4).await;
        let mut raw = common::raw_redis().await;
        let _: u64 = raw
            .zrembyscore(keys.audit_log(), 4, 4)
            .await
            .expect("zremrangebyscore");

        assert_eq!(audit::verify(&store.all().await.expect("all")), Ok(3));
        let err = verify_log(&store)
            .await
            .expect("readable")
            .expect_err("truncated");
        assert_eq!(err.problem, ChainProblem::Missing { last: 3, head: 4 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_are_the_documented_ones() {
        let (store, keys) = new_redis_store_with_keys().await;
        let records = append_n(&store, 2).await;
        let mut raw = common::raw_redis().await;

        let head: (String, String) = raw
            .hget(keys.audit_head(), &["seq", "hash"])
            .await
            .expect("hmget");
        assert_eq!(head, ("2".to_owned(), records[1].hash.clone()));
        let seq: String = raw.hget(keys.audit_refs(), "ref-1").await.expect("hget");
        assert_eq!(seq, "1");
        let stored: AuditRecord =
            serde_json::from_str(&stored_json(&mut raw, &keys, 2).await).expect("a record");
        assert_eq!(stored, records[1]);
        let claimed: bool = raw.exists(keys.audit_claim()).await.expect("exists");
        assert!(!claimed, "no claim is left behind");
        for key in [
            keys.audit_head(),
            keys.audit_log(),
            keys.audit_refs(),
            keys.audit_claim(),
        ] {
            assert!(key.contains(":{audit}:"), "{key}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_warden_did_not_write_is_corrupt_and_appends_nothing() {
        let (store, keys) = new_redis_store_with_keys().await;
        append_n(&store, 1).await;
        let mut raw = common::raw_redis().await;

        let _: () = raw
            .zadd(keys.audit_log(), "not a record", 2)
            .await
            .expect("zadd");
        assert!(matches!(store.all().await, Err(StoreError::Corrupt(_))));
        assert!(matches!(
            store.after(1, 5).await,
            Err(StoreError::Corrupt(_))
        ));

        let (store, keys) = new_redis_store_with_keys().await;
        let _: () = raw.set(keys.audit_refs(), "not a hash").await.expect("set");
        let failed = store.append(entry("a")).await;
        assert!(matches!(failed, Err(StoreError::Corrupt(_))), "{failed:?}");
        assert_eq!(store.head().await, Ok(ChainHead::genesis()));
        let exists: bool = raw.exists(keys.audit_log()).await.expect("exists");
        assert!(!exists, "nothing was appended");

        let (store, keys) = new_redis_store_with_keys().await;
        let _: () = raw.hset(keys.audit_head(), "seq", "7").await.expect("hset");
        assert!(matches!(store.head().await, Err(StoreError::Corrupt(_))));
        let failed = store.append(entry("a")).await;
        assert!(matches!(failed, Err(StoreError::Corrupt(_))), "{failed:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn instances_sharing_a_prefix_append_to_one_chain() {
        let prefix = unique_prefix();
        let instances = [redis_store_on(&prefix).await, redis_store_on(&prefix).await];
        let instances: Vec<Arc<RedisStore>> = instances.into_iter().map(Arc::new).collect();
        let appenders: Vec<_> = instances
            .iter()
            .enumerate()
            .flat_map(|(n, store)| {
                (0..3).map(move |task| {
                    let store = Arc::clone(store);
                    tokio::spawn(async move {
                        for i in 0..20 {
                            append_new(&*store, entry(&format!("i{n}-t{task}-{i}"))).await;
                        }
                    })
                })
            })
            .collect();
        for appender in appenders {
            appender.await.expect("appender task");
        }
        assert_eq!(verify_log(&*instances[0]).await, Ok(Ok(120)));
        assert_eq!(instances[1].head().await, instances[0].head().await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_made_by_another_process_is_built_upon() {
        let (store, keys) = new_redis_store_with_keys().await;
        let records = append_n(&store, 2).await;

        // Another instance appends seq 3 behind this one's back, as the script would.
        let foreign = records[1].head().seal_next(entry("elsewhere"));
        let mut raw = common::raw_redis().await;
        let json = serde_json::to_string(&foreign).expect("json");
        let _: () = raw.zadd(keys.audit_log(), json, 3).await.expect("zadd");
        let _: () = raw
            .hset(keys.audit_refs(), "elsewhere", 3)
            .await
            .expect("hset");
        let _: () = raw
            .hset_multiple(
                keys.audit_head(),
                &[("seq", "3"), ("hash", foreign.hash.as_str())],
            )
            .await
            .expect("hset");

        let mine = append_new(&store, entry("here")).await;
        assert_eq!(mine.seq, 4);
        assert_eq!(mine.prev_hash, foreign.hash);
        assert_eq!(
            store.append(entry("elsewhere")).await,
            Ok(AppendOutcome::AlreadyRecorded(3))
        );
        assert_eq!(verify_log(&store).await, Ok(Ok(4)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_left_by_a_dead_writer_only_delays_appends() {
        let (store, keys) = new_redis_store_with_keys().await;
        append_new(&store, entry("first")).await;
        let mut raw = common::raw_redis().await;
        let _: () = ::redis::cmd("SET")
            .arg(keys.audit_claim())
            .arg("a-writer-that-died")
            .arg("PX")
            .arg(1_000)
            .query_async(&mut raw)
            .await
            .expect("set the claim");

        let appender = store.clone();
        let append = tokio::spawn(async move { append_new(&appender, entry("second")).await });
        // While the claim lives, the chain does not move; once it expires, the append lands.
        let mut held_checks = 0;
        loop {
            let ttl: i64 = ::redis::cmd("PTTL")
                .arg(keys.audit_claim())
                .query_async(&mut raw)
                .await
                .expect("pttl");
            let head = store.head().await.expect("head");
            let still: i64 = ::redis::cmd("PTTL")
                .arg(keys.audit_claim())
                .query_async(&mut raw)
                .await
                .expect("pttl");
            if ttl <= 0 || still <= 0 {
                break;
            }
            assert_eq!(head.seq, 1, "appended while another writer held the claim");
            held_checks += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(held_checks > 0, "the claim was never seen held");
        let record = append.await.expect("append task");
        assert_eq!(record.seq, 2);
        assert_eq!(verify_log(&store).await, Ok(Ok(2)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_from_a_thread_outside_tokio() {
        let store = Arc::new(new_redis_store_with_keys().await.0);
        let outside = Arc::clone(&store);
        let outcome = tokio::task::spawn_blocking(move || {
            std::thread::spawn(move || futures::executor::block_on(outside.append(entry("x"))))
                .join()
                .expect("thread")
        })
        .await
        .expect("blocking task");
        assert!(matches!(outcome, Ok(AppendOutcome::Appended(ref r)) if r.seq == 1));
        assert_eq!(store.head().await.expect("head").seq, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_redis_refuses_the_append_and_a_retry_records_it_once() {
        let proxy = Proxy::start("127.0.0.1:0").await;
        let addr = proxy.addr;
        let store = RedisStore::connect(
            &format!("redis://{addr}/"),
            &unique_prefix(),
            Duration::from_millis(500),
        )
        .await
        .expect("connect through the proxy");
        append_new(&store, entry("before")).await;

        proxy.stop().await;
        // Fail closed: a retryable error, never a pretend success.
        let down = store
            .append(entry("ks-9"))
            .await
            .expect_err("redis is gone");
        assert!(down.is_retryable(), "{down:?}");

        let proxy = Proxy::start(&addr.to_string()).await;
        let mut outcome = store.append(entry("ks-9")).await;
        for _ in 0..100 {
            if outcome.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            outcome = store.append(entry("ks-9")).await;
        }
        match outcome.expect("appended once redis is back") {
            AppendOutcome::Appended(record) => assert_eq!(record.seq, 2),
            AppendOutcome::AlreadyRecorded(seq) => assert_eq!(seq, 2),
        }
        assert_eq!(
            store.append(entry("ks-9")).await,
            Ok(AppendOutcome::AlreadyRecorded(2))
        );
        assert_eq!(verify_log(&store).await, Ok(Ok(2)));
        proxy.stop().await;
    }

    /// A TCP forwarder to the test Redis that can be cut, standing in for a lost Redis.
    struct Proxy {
        addr: std::net::SocketAddr,
        accept: tokio::task::JoinHandle<()>,
        links: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    }

    impl Proxy {
        async fn start(listen: &str) -> Proxy {
            let info = ::redis::IntoConnectionInfo::into_connection_info(redis_url())
                .expect("WARDEN_TEST_REDIS_URL parses");
            let target = match info.addr {
                ::redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
                other => panic!("the proxy test needs a redis:// URL, not {other:?}"),
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .expect("bind the proxy");
            let addr = listener.local_addr().expect("proxy address");
            let links = Arc::new(parking_lot::Mutex::new(Vec::new()));
            let accepted = Arc::clone(&links);
            let accept = tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let target = target.clone();
                    accepted.lock().push(tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    }));
                }
            });
            Proxy {
                addr,
                accept,
                links,
            }
        }

        /// Closes the listener and every forwarded connection, and waits until they are.
        async fn stop(self) {
            self.accept.abort();
            let _ = self.accept.await;
            let links: Vec<_> = self.links.lock().drain(..).collect();
            for link in links {
                link.abort();
                let _ = link.await;
            }
        }
    }
}
