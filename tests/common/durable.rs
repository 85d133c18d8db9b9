//! Reading every partner's durable totals back from Redis and comparing them with the
//! ground truth the test produced: "exact" means exact after every fault injected.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use warden::domain::partner::PartnerState;
use warden::loadgen::UsageTruth;
use warden::store::redis::RedisStore;
use warden::store::{snapshot, StateStore};

use super::stream::{Stream, PARTITIONS};

/// A store on `redis_url` under `prefix`, with the runtime to call it on.
fn store(redis_url: &str, prefix: &str) -> (tokio::runtime::Runtime, RedisStore) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt
        .block_on(RedisStore::connect(
            redis_url,
            prefix,
            Duration::from_secs(5),
        ))
        .unwrap();
    (rt, store)
}

/// Every partner's durable totals in Redis.
pub fn durable_totals(redis_url: &str, prefix: &str) -> BTreeMap<String, UsageTruth> {
    let (rt, store) = store(redis_url, prefix);
    rt.block_on(async {
        let mut out = BTreeMap::new();
        for p in 0..PARTITIONS {
            for id in store.partner_ids(p).await.unwrap() {
                let bytes = store.load_partner(p, &id).await.unwrap().unwrap();
                let s: PartnerState = snapshot::decode(&bytes).unwrap();
                out.insert(
                    id,
                    UsageTruth {
                        events: s.usage.events,
                        requests: s.usage.requests,
                        errors: s.usage.errors,
                    },
                );
            }
        }
        out
    })
}

pub fn total_events(totals: &BTreeMap<String, UsageTruth>) -> u64 {
    totals.values().map(|t| t.events).sum()
}

/// The usage topic's end on every partition (its high watermarks).
fn usage_ends(stream: &Stream) -> BTreeMap<i32, i64> {
    let ends = super::watermarks(&stream.brokers, &stream.usage);
    (0..).zip(ends.into_iter().map(|(_, high)| high)).collect()
}

/// Partitions whose offsets, stored with the snapshots, are still short of `ends`.
fn short_of(redis_url: &str, prefix: &str, topic: &str, ends: &BTreeMap<i32, i64>) -> Vec<String> {
    let (rt, store) = store(redis_url, prefix);
    rt.block_on(async {
        let mut short = Vec::new();
        for (&p, &end) in ends {
            let stored = store.offsets(p).await.unwrap().get(topic).copied();
            if stored.is_none_or(|o| o < end) {
                short.push(format!("{p}: {stored:?} of {end}"));
            }
        }
        short
    })
}

/// Waits until every event of the truth is durable and the offsets stored with the
/// snapshots cover the usage topic to its end (as read just before them), then compares
/// every partner. State and offsets are committed together, so from then on the durable
/// totals hold every record produced so far, and an over-count is already there to see.
pub fn assert_totals_exact(
    redis_url: &str,
    stream: &Stream,
    truth: &HashMap<String, UsageTruth>,
    timeout: Duration,
) {
    let prefix = stream.prefix.as_str();
    let expected: u64 = truth.values().map(|t| t.events).sum();
    let mut short = Vec::new();
    let covered = super::wait_until(timeout, Duration::from_millis(500), || {
        let ends = usage_ends(stream);
        short = short_of(redis_url, prefix, &stream.usage, &ends);
        short.is_empty() && total_events(&durable_totals(redis_url, prefix)) >= expected
    });
    if !covered {
        let last = durable_totals(redis_url, prefix);
        let short_partners: Vec<String> = truth
            .iter()
            .filter(|(k, v)| last.get(*k).map(|t| t.events) != Some(v.events))
            .take(20)
            .map(|(k, v)| {
                let p = warden::kafka::topics::partition_for_key(k.as_bytes(), PARTITIONS);
                format!(
                    "{k} (partition {p}): want {} got {:?}",
                    v.events,
                    last.get(k).map(|t| t.events)
                )
            })
            .collect();
        panic!(
            "never durable to the topic's end (partition: stored of end {short:?}); \
             durable events {} of {expected}; e.g. {short_partners:#?}",
            total_events(&last),
        );
    }
    let actual = durable_totals(redis_url, prefix);
    let want: BTreeMap<String, UsageTruth> = truth.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let diffs: Vec<_> = want
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(v))
        .take(10)
        .map(|(k, v)| format!("{k}: want {v:?}, got {:?}", actual.get(k)))
        .collect();
    assert!(
        diffs.is_empty(),
        "{} partners differ, e.g. {diffs:#?}",
        want.len()
    );
    assert_eq!(
        actual.len(),
        want.len(),
        "partners with state that were never produced"
    );
}
