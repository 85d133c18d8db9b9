//! Reading every partner's durable totals back from Redis and comparing them with the
//! ground truth the test produced: "exact" means exact after every fault injected.

use std::collections::{BTreeMap, HashMap};
use std::thread;
use std::time::Duration;

use warden::domain::partner::PartnerState;
use warden::loadgen::UsageTruth;
use warden::store::redis::RedisStore;
use warden::store::{snapshot, StateStore};

use super::stream::PARTITIONS;

/// Every partner's durable totals in Redis.
pub fn durable_totals(redis_url: &str, prefix: &str) -> BTreeMap<String, UsageTruth> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = RedisStore::connect(redis_url, prefix, Duration::from_secs(5))
            .await
            .unwrap();
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

/// Waits until the durable event count reaches the truth's, then compares every partner.
pub fn assert_totals_exact(
    redis_url: &str,
    prefix: &str,
    truth: &HashMap<String, UsageTruth>,
    timeout: Duration,
) {
    let expected: u64 = truth.values().map(|t| t.events).sum();
    let mut last = BTreeMap::new();
    let reached = super::wait_until(timeout, Duration::from_millis(500), || {
        last = durable_totals(redis_url, prefix);
        total_events(&last) >= expected
    });
    if !reached {
        let short: Vec<String> = truth
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
            "durable events {} never reached {expected}; e.g. {short:#?}",
            total_events(&last)
        );
    }
    // Let a possible over-count show up before comparing.
    thread::sleep(Duration::from_millis(300));
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
