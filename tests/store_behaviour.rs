//! One behaviour suite for every `StateStore` (in the spirit of Kuadrant/limitador's
//! test macro over backends): `for_each_backend!` generates each case once per backend,
//! as `memory::<case>` and `redis::<case>`. Then tests only Redis can fail: an unreachable
//! server, corrupt data, calls from other executors, a lost connection.
//!
//! The Redis backend needs `WARDEN_TEST_REDIS_URL` (scripts/test sets it); without it the
//! Redis tests fail rather than skip. Every test uses its own random key prefix, so tests
//! can share one Redis and run in parallel.

use std::sync::Arc;
use std::time::Duration;

use warden::domain::dedup::DedupDelta;
use warden::store::keys::Keys;
use warden::store::memory::MemoryStore;
use warden::store::redis::RedisStore;
use warden::store::{epoch, Offsets, PartitionWrite, StateStore, StoreError};

const TIMEOUT: Duration = Duration::from_secs(2);

mod common;

use common::redis_url;

fn unique_prefix() -> String {
    format!("warden-test-{:016x}", rand::random::<u64>())
}

async fn new_memory_store() -> MemoryStore {
    MemoryStore::new()
}

async fn new_redis_store() -> RedisStore {
    new_redis_store_with_keys().await.0
}

/// A store on a fresh prefix, and that prefix's keys for tests that touch Redis directly.
async fn new_redis_store_with_keys() -> (RedisStore, Keys) {
    let prefix = unique_prefix();
    let store = RedisStore::connect(&redis_url(), &prefix, TIMEOUT)
        .await
        .expect("connect to WARDEN_TEST_REDIS_URL");
    (store, Keys::new(prefix))
}

fn write(
    partition: i32,
    epoch: u64,
    offsets: &[(&str, i64)],
    partners: &[(&str, &[u8])],
) -> PartitionWrite {
    PartitionWrite {
        partition,
        epoch,
        offsets: offsets
            .iter()
            .map(|(topic, offset)| (topic.to_string(), *offset))
            .collect(),
        partners: partners
            .iter()
            .map(|(id, snapshot)| (id.to_string(), snapshot.to_vec()))
            .collect(),
        dedup: Vec::new(),
        awake: Vec::new(),
        wake: Vec::new(),
    }
}

fn offsets(pairs: &[(&str, i64)]) -> Offsets {
    pairs
        .iter()
        .map(|(topic, offset)| (topic.to_string(), *offset))
        .collect()
}

async fn sorted_partner_ids(store: &dyn StateStore, partition: i32) -> Vec<String> {
    let mut ids = store.partner_ids(partition).await.expect("partner_ids");
    ids.sort();
    ids
}

/// The cases, each against any store that starts empty.
mod cases {
    use super::*;

    pub async fn fresh_partition_has_no_offsets_and_no_partners(store: &dyn StateStore) {
        assert_eq!(store.offsets(0).await, Ok(Offsets::new()));
        assert_eq!(store.partner_ids(0).await, Ok(vec![]));
        assert_eq!(store.load_partner(0, "p-1").await, Ok(None));
        store.ping().await.expect("ping");
    }

    pub async fn acquire_takes_the_next_generation_per_partition(store: &dyn StateStore) {
        let mut taken = Vec::new();
        for _ in 0..3 {
            taken.push(store.acquire(1).await.expect("acquire"));
        }
        let generations: Vec<u64> = taken.iter().map(|e| epoch::generation(*e)).collect();
        assert_eq!(generations, [1, 2, 3]);
        assert!(taken.windows(2).all(|w| w[0] < w[1]), "{taken:?}");
        let other = store.acquire(2).await.expect("acquire");
        assert_eq!(
            epoch::generation(other),
            1,
            "partitions have their own epochs"
        );
    }

    pub async fn commit_then_read_back_offsets_and_partners(store: &dyn StateStore) {
        let epoch = store.acquire(5).await.expect("acquire");
        let topics = [
            ("warden.usage.v1", 42),
            ("warden.invoices.v1", 0),
            ("warden.attribution.v1", i64::MAX),
        ];
        let partners: [(&str, &[u8]); 2] = [("p-1", br#"{"owed":"12.50"}"#), ("p-2", b"{}")];
        store
            .commit(write(5, epoch, &topics, &partners))
            .await
            .expect("commit");

        assert_eq!(store.offsets(5).await, Ok(offsets(&topics)));
        assert_eq!(
            store.load_partner(5, "p-1").await,
            Ok(Some(br#"{"owed":"12.50"}"#.to_vec()))
        );
        assert_eq!(store.load_partner(5, "p-2").await, Ok(Some(b"{}".to_vec())));
        assert_eq!(store.load_partner(5, "p-3").await, Ok(None));
        assert_eq!(
            store.offsets(6).await,
            Ok(Offsets::new()),
            "other partitions are untouched"
        );
    }

    pub async fn commit_with_a_stale_epoch_is_fenced_and_writes_nothing(store: &dyn StateStore) {
        let first = store.acquire(3).await.expect("acquire");
        store
            .commit(write(3, first, &[("usage", 10)], &[("p-1", b"v1")]))
            .await
            .expect("commit");
        let current = store.acquire(3).await.expect("acquire");

        let stale = write(
            3,
            first,
            &[("usage", 99), ("invoices", 7)],
            &[("p-1", b"v2"), ("p-9", b"new")],
        );
        assert_eq!(
            store.commit(stale).await,
            Err(StoreError::Fenced {
                partition: 3,
                epoch: first,
                current
            })
        );
        assert_eq!(store.offsets(3).await, Ok(offsets(&[("usage", 10)])));
        assert_eq!(store.load_partner(3, "p-1").await, Ok(Some(b"v1".to_vec())));
        assert_eq!(store.load_partner(3, "p-9").await, Ok(None));
        assert_eq!(sorted_partner_ids(store, 3).await, ["p-1"]);
    }

    pub async fn commit_before_any_acquire_is_fenced(store: &dyn StateStore) {
        let never_acquired = write(4, 0, &[("usage", 1)], &[("p-1", b"x")]);
        assert_eq!(
            store.commit(never_acquired).await,
            Err(StoreError::Fenced {
                partition: 4,
                epoch: 0,
                current: 0
            })
        );
        let guessed = write(4, 1, &[("usage", 1)], &[("p-1", b"x")]);
        assert!(matches!(
            store.commit(guessed).await,
            Err(StoreError::Fenced { current: 0, .. })
        ));
        assert_eq!(store.offsets(4).await, Ok(Offsets::new()));
        assert_eq!(store.partner_ids(4).await, Ok(vec![]));
    }

    pub async fn a_newer_owner_fences_the_old_owner(store: &dyn StateStore) {
        let old = store.acquire(7).await.expect("old owner acquires");
        store
            .commit(write(7, old, &[("usage", 1)], &[("p-1", b"old")]))
            .await
            .expect("old owner commits");
        let new = store.acquire(7).await.expect("new owner acquires");
        assert!(new > old);

        let refused = store
            .commit(write(7, old, &[("usage", 2)], &[("p-1", b"old-2")]))
            .await;
        assert_eq!(
            refused,
            Err(StoreError::Fenced {
                partition: 7,
                epoch: old,
                current: new
            })
        );
        assert!(!refused.unwrap_err().is_retryable());
        store
            .commit(write(7, new, &[("usage", 2)], &[("p-1", b"new")]))
            .await
            .expect("new owner commits");
        assert_eq!(
            store.load_partner(7, "p-1").await,
            Ok(Some(b"new".to_vec()))
        );
        assert_eq!(store.offsets(7).await, Ok(offsets(&[("usage", 2)])));
    }

    /// A renewal moves the epoch on from the one held, fencing writes that still carry it;
    /// a retry of the same renewal (its reply lost) gets the same epoch; anyone else's, and
    /// a renewal from an epoch no longer held, is fenced and writes nothing.
    pub async fn a_renewal_fences_the_held_epoch_once_and_for_its_token_only(
        store: &dyn StateStore,
    ) {
        fn fenced<T>(epoch: u64, current: u64) -> Result<T, StoreError> {
            Err(StoreError::Fenced {
                partition: 9,
                epoch,
                current,
            })
        }
        assert_eq!(store.renew(9, 0, "t").await, fenced(0, 0), "never acquired");
        let held = store.acquire(9).await.expect("acquire");
        let renewed = epoch::renewed(held).expect("a next epoch");
        assert_eq!(store.renew(9, renewed, "t").await, fenced(renewed, held));
        assert_eq!(store.renew(9, held, "t-1").await, Ok(renewed));
        assert_eq!(store.renew(9, held, "t-1").await, Ok(renewed), "a retry");
        assert_eq!(
            store.renew(9, held, "t-2").await,
            fenced(held, renewed),
            "not its renewal"
        );
        assert_eq!(
            store.commit(write(9, held, &[("usage", 3)], &[])).await,
            fenced(held, renewed),
            "the abandoned write"
        );
        assert_eq!(store.offsets(9).await, Ok(Offsets::new()));
        store
            .commit(write(9, renewed, &[("usage", 4)], &[]))
            .await
            .expect("the renewed owner writes");
        // A new owner after the renewal: its retry no longer passes.
        let next = store.acquire(9).await.expect("acquire");
        assert_eq!(epoch::generation(next), epoch::generation(renewed) + 1);
        assert_eq!(store.renew(9, held, "t-1").await, fenced(held, next));
        assert_eq!(
            store.renew(9, next, "t-3").await,
            Ok(epoch::renewed(next).expect("a next epoch"))
        );
    }

    /// A failover to a replica that missed an acquisition hands its generation out again,
    /// but not its epoch: the tag keeps the owner that lost it fenced (its flush still in
    /// flight at the revocation, or a zombie), where two owners of one epoch would both
    /// write. `roll_back(epoch)` puts the stored epoch back, as such a failover does.
    pub async fn an_epoch_taken_again_after_the_store_went_back_fences_the_lost_one<F, Fut>(
        store: &dyn StateStore,
        roll_back: F,
    ) where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let before = store.acquire(3).await.expect("acquire");
        let lost = store.acquire(3).await.expect("acquire");
        store
            .commit(write(3, lost, &[("usage", 5)], &[("p-1", b"lost")]))
            .await
            .expect("commit");
        roll_back(before).await;
        let again = store.acquire(3).await.expect("acquire");
        assert_eq!(epoch::generation(again), epoch::generation(lost));
        // Alike with one draw in 16.7 million.
        assert_ne!(again, lost, "another tag");
        let refused = StoreError::Fenced {
            partition: 3,
            epoch: lost,
            current: again,
        };
        assert_eq!(
            store
                .commit(write(3, lost, &[("usage", 9)], &[("p-1", b"late")]))
                .await,
            Err(refused.clone())
        );
        assert_eq!(store.renew(3, lost, "t").await, Err(refused));
        store
            .commit(write(3, again, &[("usage", 6)], &[("p-1", b"new")]))
            .await
            .expect("the new owner writes");
        assert_eq!(store.offsets(3).await, Ok(offsets(&[("usage", 6)])));
        assert_eq!(
            store.load_partner(3, "p-1").await,
            Ok(Some(b"new".to_vec()))
        );
    }

    pub async fn partner_ids_lists_what_was_written(store: &dyn StateStore) {
        let epoch = store.acquire(2).await.expect("acquire");
        store
            .commit(write(2, epoch, &[], &[("b", b"1"), ("a", b"2")]))
            .await
            .expect("commit");
        store
            .commit(write(2, epoch, &[], &[("c", b"3"), ("a", b"4")]))
            .await
            .expect("commit");
        assert_eq!(sorted_partner_ids(store, 2).await, ["a", "b", "c"]);
        assert_eq!(
            store.partner_ids(1).await,
            Ok(vec![]),
            "other partitions are untouched"
        );
    }

    pub async fn later_commits_overwrite_per_partner_and_keep_the_others(store: &dyn StateStore) {
        let epoch = store.acquire(9).await.expect("acquire");
        let first = write(
            9,
            epoch,
            &[("usage", 10), ("invoices", 3)],
            &[("p-1", b"one"), ("p-2", b"two")],
        );
        store.commit(first).await.expect("commit");
        store
            .commit(write(9, epoch, &[("usage", 11)], &[("p-2", b"two-b")]))
            .await
            .expect("commit");

        assert_eq!(
            store.load_partner(9, "p-1").await,
            Ok(Some(b"one".to_vec()))
        );
        assert_eq!(
            store.load_partner(9, "p-2").await,
            Ok(Some(b"two-b".to_vec()))
        );
        assert_eq!(
            store.offsets(9).await,
            Ok(offsets(&[("usage", 11), ("invoices", 3)]))
        );
    }

    pub async fn an_empty_commit_checks_the_epoch_only(store: &dyn StateStore) {
        let epoch = store.acquire(8).await.expect("acquire");
        store
            .commit(write(8, epoch, &[], &[]))
            .await
            .expect("empty commit");
        assert_eq!(store.offsets(8).await, Ok(Offsets::new()));
        store.acquire(8).await.expect("acquire");
        assert!(matches!(
            store.commit(write(8, epoch, &[], &[])).await,
            Err(StoreError::Fenced { .. })
        ));
    }

    pub async fn a_large_snapshot_round_trips(store: &dyn StateStore) {
        // 100 KiB of every byte value: snapshots are opaque bytes, not text.
        let snapshot: Vec<u8> = (0..100 * 1024).map(|i| (i % 256) as u8).collect();
        let epoch = store.acquire(1).await.expect("acquire");
        store
            .commit(write(1, epoch, &[("usage", 1)], &[("big", &snapshot)]))
            .await
            .expect("commit");
        assert_eq!(store.load_partner(1, "big").await, Ok(Some(snapshot)));
    }

    pub async fn partners_of_a_large_flush_in_one_commit(store: &dyn StateStore) {
        let epoch = store.acquire(11).await.expect("acquire");
        // More than two of the commit script's 500-partner HSETs, the last one partial.
        let partners: Vec<(String, Vec<u8>)> = (0..1_203)
            .map(|i| {
                (
                    format!("partner-{i:04}"),
                    format!(r#"{{"n":{i}}}"#).into_bytes(),
                )
            })
            .collect();
        let commit = PartitionWrite {
            partition: 11,
            epoch,
            offsets: offsets(&[("usage", 1_203)]),
            partners: partners.clone(),
            dedup: Vec::new(),
            // More than one of the script's 1,000-argument SADDs, and a few removals.
            awake: partners
                .iter()
                .enumerate()
                .map(|(i, (id, _))| (id.clone(), i % 400 != 7))
                .collect(),
            // More than one of the script's 1,000-argument ZADDs.
            wake: partners
                .iter()
                .enumerate()
                .map(|(i, (id, _))| (id.clone(), Some(i as i64)))
                .collect(),
        };
        store.commit(commit).await.expect("commit");

        let expected_ids: Vec<String> = partners.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(sorted_partner_ids(store, 11).await, expected_ids);
        let mut awake = store.awake_partners(11).await.expect("awake");
        awake.sort();
        let expected_awake: Vec<String> = expected_ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 400 != 7)
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(awake, expected_awake);
        let mut wakes = store.wake_schedule(11).await.expect("wake schedule");
        wakes.sort();
        let expected_wakes: Vec<(String, i64)> = expected_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as i64))
            .collect();
        assert_eq!(wakes, expected_wakes);
        for (id, snapshot) in &partners {
            assert_eq!(
                store.load_partner(11, id).await.as_ref(),
                Ok(&Some(snapshot.clone())),
                "{id}"
            );
        }
    }

    /// Dedup ids are written incrementally with the snapshot, evicted by event time, and
    /// a fenced write adds none.
    pub async fn dedup_deltas_accumulate_evict_and_are_fenced(store: &dyn StateStore) {
        let id = |s: &str| s.to_owned();
        let delta = |added: &[(i64, &str)], below: Option<i64>| DedupDelta {
            added: added.iter().map(|(ms, i)| (*ms, i.to_string())).collect(),
            evict_below_ms: below,
        };
        let epoch = store.acquire(4).await.expect("acquire");
        let mut w = write(4, epoch, &[("usage", 2)], &[("p-1", b"{}")]);
        w.dedup = vec![(id("p-1"), delta(&[(1_000, "a"), (2_000, "b")], None))];
        store.commit(w).await.expect("commit");
        // Sent again (an unacknowledged delta) with a new id and a horizon past "a".
        let mut w = write(4, epoch, &[("usage", 3)], &[("p-1", b"{}")]);
        w.dedup = vec![(
            id("p-1"),
            delta(&[(1_000, "a"), (2_000, "b"), (3_000, "c")], Some(1_500)),
        )];
        store.commit(w).await.expect("commit");
        // A revival's one read gives the snapshot with its ids; none for a partner
        // without a snapshot.
        assert_eq!(
            store.load_state(4, "p-1").await,
            Ok(Some((
                b"{}".to_vec(),
                vec![(2_000, id("b")), (3_000, id("c"))]
            )))
        );
        assert_eq!(store.load_state(4, "p-2").await, Ok(None));
        // A stale owner writes no id.
        let newer = store.acquire(4).await.expect("acquire");
        assert!(newer > epoch);
        let mut stale = write(4, epoch, &[("usage", 9)], &[]);
        stale.dedup = vec![(id("p-1"), delta(&[(9_000, "z")], Some(8_000)))];
        assert!(matches!(
            store.commit(stale).await,
            Err(StoreError::Fenced { .. })
        ));
        let (_, ids) = store
            .load_state(4, "p-1")
            .await
            .expect("load")
            .expect("stored");
        assert_eq!(ids.len(), 2);
    }

    /// The partners the next owner starts at once: marked and unmarked by the commit that
    /// writes their snapshot, kept while not written, and untouched by a fenced write.
    pub async fn the_awake_set_follows_each_partners_last_snapshot(store: &dyn StateStore) {
        let mark = |pairs: &[(&str, bool)]| -> Vec<(String, bool)> {
            pairs.iter().map(|(id, a)| (id.to_string(), *a)).collect()
        };
        let sorted = |mut ids: Vec<String>| {
            ids.sort();
            ids
        };
        assert_eq!(store.awake_partners(6).await, Ok(Vec::new()));
        let epoch = store.acquire(6).await.expect("acquire");
        let mut w = write(
            6,
            epoch,
            &[("usage", 3)],
            &[("p-1", b"{}"), ("p-2", b"{}"), ("p-3", b"{}")],
        );
        w.awake = mark(&[("p-1", true), ("p-2", true), ("p-3", false)]);
        store.commit(w).await.expect("commit");
        assert_eq!(
            sorted(store.awake_partners(6).await.unwrap()),
            ["p-1", "p-2"]
        );
        // p-1 calmed down; p-2 not written: it keeps its mark.
        let mut w = write(6, epoch, &[("usage", 4)], &[("p-1", b"{}")]);
        w.awake = mark(&[("p-1", false)]);
        store.commit(w).await.expect("commit");
        assert_eq!(store.awake_partners(6).await, Ok(vec!["p-2".to_owned()]));
        assert_eq!(
            store.awake_partners(7).await,
            Ok(Vec::new()),
            "per partition"
        );
        // A stale owner changes nothing.
        store.acquire(6).await.expect("acquire");
        let mut stale = write(6, epoch, &[("usage", 9)], &[("p-3", b"{}")]);
        stale.awake = mark(&[("p-2", false), ("p-3", true)]);
        assert!(matches!(
            store.commit(stale).await,
            Err(StoreError::Fenced { .. })
        ));
        assert_eq!(store.awake_partners(6).await, Ok(vec!["p-2".to_owned()]));
    }

    /// When partners must be started on the wall clock: set, moved and cleared by the
    /// commits that carry the change, kept while not written, and untouched by a fenced
    /// write. Times are epoch millis, kept exactly.
    pub async fn wake_times_follow_the_commits_that_change_them(store: &dyn StateStore) {
        let at = |pairs: &[(&str, Option<i64>)]| -> Vec<(String, Option<i64>)> {
            pairs.iter().map(|(id, t)| (id.to_string(), *t)).collect()
        };
        let sorted = |mut v: Vec<(String, i64)>| {
            v.sort();
            v
        };
        let expiry = 1_782_592_000_123_i64;
        assert_eq!(store.wake_schedule(8).await, Ok(Vec::new()));
        let epoch = store.acquire(8).await.expect("acquire");
        let mut w = write(8, epoch, &[("usage", 1)], &[("p-1", b"{}"), ("p-2", b"{}")]);
        w.wake = at(&[("p-1", Some(expiry)), ("p-2", Some(expiry + 5))]);
        store.commit(w).await.expect("commit");
        assert_eq!(
            sorted(store.wake_schedule(8).await.unwrap()),
            [("p-1".to_owned(), expiry), ("p-2".to_owned(), expiry + 5)]
        );
        // p-1's pilot was paid (cleared), p-2's moved; a partner not listed keeps its time.
        let mut w = write(8, epoch, &[("usage", 2)], &[("p-1", b"{}"), ("p-3", b"{}")]);
        w.wake = at(&[("p-1", None), ("p-3", Some(expiry - 1))]);
        store.commit(w).await.expect("commit");
        assert_eq!(
            sorted(store.wake_schedule(8).await.unwrap()),
            [
                ("p-2".to_owned(), expiry + 5),
                ("p-3".to_owned(), expiry - 1)
            ]
        );
        assert_eq!(
            store.wake_schedule(9).await,
            Ok(Vec::new()),
            "per partition"
        );
        store.acquire(8).await.expect("acquire");
        let mut stale = write(8, epoch, &[("usage", 3)], &[("p-2", b"{}")]);
        stale.wake = at(&[("p-2", None)]);
        assert!(matches!(
            store.commit(stale).await,
            Err(StoreError::Fenced { .. })
        ));
        assert_eq!(store.wake_schedule(8).await.unwrap().len(), 2);
    }
}

/// Generates one `#[tokio::test]` per case in `mod $backend`, on a new store from `$new_store`.
macro_rules! behaviour_suite {
    ($backend:ident, $new_store:ident, [$($case:ident),+ $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let store = $new_store().await;
                    cases::$case(&store).await;
                }
            )+
        }
    };
}

/// Every case against every backend.
macro_rules! for_each_backend {
    ($($case:ident),+ $(,)?) => {
        behaviour_suite!(memory, new_memory_store, [$($case),+]);
        behaviour_suite!(redis, new_redis_store, [$($case),+]);
    };
}

for_each_backend!(
    fresh_partition_has_no_offsets_and_no_partners,
    acquire_takes_the_next_generation_per_partition,
    commit_then_read_back_offsets_and_partners,
    commit_with_a_stale_epoch_is_fenced_and_writes_nothing,
    commit_before_any_acquire_is_fenced,
    a_newer_owner_fences_the_old_owner,
    a_renewal_fences_the_held_epoch_once_and_for_its_token_only,
    partner_ids_lists_what_was_written,
    later_commits_overwrite_per_partner_and_keep_the_others,
    an_empty_commit_checks_the_epoch_only,
    a_large_snapshot_round_trips,
    partners_of_a_large_flush_in_one_commit,
    dedup_deltas_accumulate_evict_and_are_fenced,
    the_awake_set_follows_each_partners_last_snapshot,
    wake_times_follow_the_commits_that_change_them,
);

/// The stored epoch put back, as a failover to a replica that missed writes does: each
/// backend's own way.
mod went_back {
    use super::*;
    use ::redis::AsyncCommands;

    #[tokio::test]
    async fn memory() {
        let store = new_memory_store().await;
        let roll_back = |epoch| {
            store.set_epoch(3, epoch);
            std::future::ready(())
        };
        cases::an_epoch_taken_again_after_the_store_went_back_fences_the_lost_one(
            &store, roll_back,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        let (store, keys) = new_redis_store_with_keys().await;
        let roll_back = |epoch: u64| {
            let key = keys.epoch(3);
            async move {
                let mut raw = common::raw_redis().await;
                let _: () = raw.set(key, epoch.to_string()).await.expect("set");
            }
        };
        cases::an_epoch_taken_again_after_the_store_went_back_fences_the_lost_one(
            &store, roll_back,
        )
        .await;
    }
}

/// What only a networked store can get wrong.
mod redis_only {
    use super::*;
    use ::redis::AsyncCommands;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_server_is_unavailable_not_a_hang() {
        let result = RedisStore::connect(
            "redis://127.0.0.1:1/",
            &unique_prefix(),
            Duration::from_millis(500),
        )
        .await;
        let err = result.expect_err("nothing listens on port 1");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(err.is_retryable());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_key_prefix_or_url_is_refused_for_good() {
        let braced = RedisStore::connect(&redis_url(), "warden{x}", TIMEOUT)
            .await
            .expect_err("braces move the hash tag");
        assert!(!braced.is_retryable(), "{braced:?}");
        let url = RedisStore::connect("not a url", &unique_prefix(), TIMEOUT)
            .await
            .expect_err("malformed url");
        assert!(!url.is_retryable(), "{url:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn works_from_other_executors() {
        let store = Arc::new(new_redis_store().await);

        // An actix arbiter is a current-thread runtime on its own thread.
        let on_arbiter = Arc::clone(&store);
        let from_current_thread = on_plain_thread(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(on_arbiter.acquire(1))
        })
        .await;
        let generation = |taken: Result<u64, StoreError>| taken.map(epoch::generation);
        assert_eq!(generation(from_current_thread), Ok(1));

        // A plain thread entering the daemon's runtime with Handle::block_on.
        let handle = tokio::runtime::Handle::current();
        let on_thread = Arc::clone(&store);
        assert_eq!(
            generation(on_plain_thread(move || handle.block_on(on_thread.acquire(1))).await),
            Ok(2)
        );

        // Even an executor that is not tokio at all.
        let outside = Arc::clone(&store);
        assert_eq!(
            generation(
                on_plain_thread(move || futures::executor::block_on(outside.acquire(1))).await
            ),
            Ok(3)
        );
    }

    async fn on_plain_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(move || {
            std::thread::spawn(work).join().expect("thread panicked")
        })
        .await
        .expect("blocking task")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_warden_did_not_write_is_corrupt() {
        let (store, keys) = new_redis_store_with_keys().await;
        let mut raw = common::raw_redis().await;

        let _: () = raw
            .hset(keys.offsets(1), "usage", "forty-two")
            .await
            .expect("hset");
        assert!(matches!(
            store.offsets(1).await,
            Err(StoreError::Corrupt(_))
        ));

        let _: () = raw.set(keys.epoch(2), "not-a-number").await.expect("set");
        assert!(matches!(
            store.acquire(2).await,
            Err(StoreError::Corrupt(_))
        ));
        // Past 2^53 - 1, what Lua counts exactly: refused, not rounded.
        let _: () = raw
            .set(keys.epoch(2), "9007199254740993")
            .await
            .expect("set");
        assert!(matches!(
            store.acquire(2).await,
            Err(StoreError::Corrupt(_))
        ));
        let unmoved: String = raw.get(keys.epoch(2)).await.expect("get");
        assert_eq!(unmoved, "9007199254740993", "checked before writing");
        let _: () = raw
            .hset(keys.epoch(12), "not", "a string")
            .await
            .expect("hset");
        assert!(matches!(
            store.acquire(12).await,
            Err(StoreError::Corrupt(_))
        ));

        let _: () = raw
            .hset(keys.renewal(5), "not", "a string")
            .await
            .expect("hset");
        let held = store.acquire(5).await.expect("acquire");
        assert!(matches!(
            store.renew(5, held, "t").await,
            Err(StoreError::Corrupt(_))
        ));
        let unmoved: String = raw.get(keys.epoch(5)).await.expect("get");
        assert_eq!(unmoved, held.to_string(), "checked before writing");

        let _: () = raw.set(keys.partners(3), "not a hash").await.expect("set");
        assert!(matches!(
            store.partner_ids(3).await,
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.load_partner(3, "p").await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_into_a_key_of_the_wrong_type_is_corrupt_and_writes_nothing() {
        let (store, keys) = new_redis_store_with_keys().await;
        let mut raw = common::raw_redis().await;
        let _: () = raw.set(keys.partners(4), "not a hash").await.expect("set");

        let epoch = store.acquire(4).await.expect("acquire");
        let failed = store
            .commit(write(4, epoch, &[("usage", 5)], &[("p-1", b"x")]))
            .await;
        assert!(matches!(failed, Err(StoreError::Corrupt(_))), "{failed:?}");
        // The offsets come first in the script, yet were not written.
        assert_eq!(store.offsets(4).await, Ok(Offsets::new()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_are_the_documented_ones() {
        let (store, keys) = new_redis_store_with_keys().await;
        let epoch = store.acquire(6).await.expect("acquire");
        store
            .commit(write(6, epoch, &[("usage", 17)], &[("p-1", b"{}")]))
            .await
            .expect("commit");

        let mut raw = common::raw_redis().await;
        let stored_epoch: String = raw.get(keys.epoch(6)).await.expect("get");
        assert_eq!(stored_epoch, epoch.to_string());
        let stored_offset: String = raw.hget(keys.offsets(6), "usage").await.expect("hget");
        assert_eq!(stored_offset, "17");
        let snapshot: Vec<u8> = raw.hget(keys.partners(6), "p-1").await.expect("hget");
        assert_eq!(snapshot, b"{}");
        // An epoch counted before tags existed, epochs of 15 and 16 digits, and the last
        // generation Lua counts exactly: the next generation follows each, until none is
        // left.
        for (stored, generations) in [
            ("41", &[1][..]),
            ("999999999999999", &[59_604_645, 59_604_646]),
            ("9007199221186565", &[536_870_911]),
        ] {
            let _: () = raw.set(keys.epoch(13), stored).await.expect("set");
            for generation in generations {
                let taken = store.acquire(13).await.expect("acquire");
                assert_eq!(epoch::generation(taken), *generation, "after {stored}");
                let written: String = raw.get(keys.epoch(13)).await.expect("get");
                assert_eq!(written, taken.to_string());
            }
        }
        let last: String = raw.get(keys.epoch(13)).await.expect("get");
        let none_left = store.acquire(13).await;
        assert!(
            matches!(none_left, Err(StoreError::Corrupt(_))),
            "{none_left:?}"
        );
        let unmoved: String = raw.get(keys.epoch(13)).await.expect("get");
        assert_eq!(unmoved, last);
        let renewed = store.renew(6, epoch, "tok").await.expect("renew");
        let stored_epoch: String = raw.get(keys.epoch(6)).await.expect("get");
        assert_eq!(stored_epoch, renewed.to_string());
        let renewal: String = raw.get(keys.renewal(6)).await.expect("get");
        assert_eq!(renewal, format!("{renewed}:tok"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recovers_after_the_server_goes_away_and_comes_back() {
        let proxy = proxy::Proxy::start("127.0.0.1:0".parse().expect("addr")).await;
        let addr = proxy.addr();
        let store = RedisStore::connect(
            &format!("redis://{addr}/"),
            &unique_prefix(),
            Duration::from_millis(500),
        )
        .await
        .expect("connect through the proxy");
        let first = store.acquire(1).await.expect("acquire");
        assert_eq!(epoch::generation(first), 1);

        proxy.stop().await;
        let down = store.acquire(1).await.expect_err("nothing listens");
        assert!(down.is_retryable(), "{down:?}");
        assert!(store.ping().await.expect_err("still down").is_retryable());

        let proxy = proxy::Proxy::start(addr).await;
        // Reconnecting takes the manager's backoff; poll until it is back (bounded).
        let mut answer = store.ping().await;
        for _ in 0..100 {
            if answer.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer = store.ping().await;
        }
        assert_eq!(answer, Ok(()), "the store reconnects once Redis is back");
        let epoch = store.acquire(1).await.expect("acquire after reconnecting");
        assert_eq!(
            epoch::generation(epoch),
            2,
            "the epoch survived in Redis: {epoch}"
        );
        proxy.stop().await;
    }

    /// A TCP forwarder to the test Redis that can be cut, standing in for a Redis restart.
    mod proxy {
        use std::net::SocketAddr;
        use std::sync::Arc;

        use parking_lot::Mutex;
        use tokio::net::{TcpListener, TcpStream};
        use tokio::task::JoinHandle;

        pub struct Proxy {
            addr: SocketAddr,
            accept: JoinHandle<()>,
            links: Arc<Mutex<Vec<JoinHandle<()>>>>,
        }

        impl Proxy {
            pub async fn start(listen: SocketAddr) -> Proxy {
                let target = redis_addr();
                let listener = TcpListener::bind(listen).await.expect("bind the proxy");
                let addr = listener.local_addr().expect("proxy address");
                let links = Arc::new(Mutex::new(Vec::new()));
                let accept = tokio::spawn(accept_loop(listener, target, Arc::clone(&links)));
                Proxy {
                    addr,
                    accept,
                    links,
                }
            }

            pub fn addr(&self) -> SocketAddr {
                self.addr
            }

            /// Closes the listener and every forwarded connection, and waits until they are.
            pub async fn stop(self) {
                self.accept.abort();
                let _ = self.accept.await;
                let links: Vec<_> = self.links.lock().drain(..).collect();
                for link in links {
                    link.abort();
                    let _ = link.await;
                }
            }
        }

        async fn accept_loop(
            listener: TcpListener,
            target: String,
            links: Arc<Mutex<Vec<JoinHandle<()>>>>,
        ) {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                links.lock().push(tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        }

        fn redis_addr() -> String {
            let info = ::redis::IntoConnectionInfo::into_connection_info(super::redis_url())
                .expect("WARDEN_TEST_REDIS_URL parses");
            match info.addr {
                ::redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
                other => panic!("the proxy test needs a redis:// URL, not {other:?}"),
            }
        }
    }
}

/// CONTRACT §9: with replicas, a snapshot counts only once they acknowledge it (`WAIT`),
/// so a failover never rolls back state whose decisions went out and offsets moved on.
mod replicas {
    use super::*;
    use common::RedisServer;

    fn replica_of(primary: &RedisServer) -> RedisServer {
        let replica = RedisServer::start_new();
        let mut conn = ::redis::Client::open(replica.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let _: () = ::redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(primary.port())
            .query(&mut conn)
            .unwrap();
        let mut primary_conn = ::redis::Client::open(primary.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let online = common::wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            let info: String = ::redis::cmd("INFO")
                .arg("replication")
                .query(&mut primary_conn)
                .unwrap();
            info.contains("state=online")
        });
        assert!(online, "the replica did not sync");
        replica
    }

    async fn store_on(server: &RedisServer, acks: u32) -> RedisStore {
        RedisStore::connect(&server.url(), &unique_prefix(), TIMEOUT)
            .await
            .expect("connect")
            .with_replica_acks(acks)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_counts_only_once_the_replicas_have_it() {
        let primary = RedisServer::start_new();
        let mut replica = replica_of(&primary);
        let store = store_on(&primary, 1).await;
        let first = store.acquire(0).await.expect("acquire");
        store
            .commit(write(0, first, &[("usage", 7)], &[("p-1", b"{}")]))
            .await
            .expect("one replica acknowledges");

        // The replica is gone: the write reaches the primary, but does not count.
        replica.kill9();
        let failed = store
            .commit(write(0, first, &[("usage", 8)], &[("p-1", b"{}")]))
            .await
            .expect_err("no replica to acknowledge");
        assert!(failed.is_retryable(), "{failed}");
        assert!(
            failed
                .to_string()
                .contains("acknowledged by 0 of 1 replicas"),
            "{failed}"
        );
        assert!(matches!(failed, StoreError::NotReplicated(_)), "{failed:?}");
        // Taking a partition does not wait for them: it runs in the rebalance callback.
        let taken = store.acquire(3).await.expect("an epoch without replicas");
        // A renewal does: lost in a failover, it would leave its owner fenced by itself.
        // Not counted, it is asked again with its token, and lands once.
        for _ in 0..2 {
            let unconfirmed = store.renew(3, taken, "r-1").await.expect_err("no replica");
            assert!(
                matches!(unconfirmed, StoreError::NotReplicated(_)),
                "{unconfirmed:?}"
            );
        }
        let back = replica_of(&primary);
        let mut renewed = store.renew(3, taken, "r-1").await;
        for _ in 0..50 {
            if renewed.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            renewed = store.renew(3, taken, "r-1").await;
        }
        assert_eq!(
            renewed,
            Ok(epoch::renewed(taken).expect("a next epoch")),
            "once a replica has it"
        );
        drop(back);

        // More replicas asked for than there are: never durable. Without replicas asked
        // for, the same primary takes commits as before.
        let mut replica = replica_of(&primary);
        let two = store_on(&primary, 2).await;
        let epoch = two.acquire(1).await.expect("acquire");
        let failed = two
            .commit(write(1, epoch, &[("usage", 1)], &[("p-2", b"{}")]))
            .await
            .expect_err("one replica of two");
        assert!(
            failed
                .to_string()
                .contains("acknowledged by 1 of 2 replicas"),
            "{failed}"
        );
        let none = store_on(&primary, 0).await;
        let epoch = none.acquire(2).await.expect("acquire");
        none.commit(write(2, epoch, &[("usage", 1)], &[("p-3", b"{}")]))
            .await
            .expect("no replicas asked for");
        // A fenced write is still reported as fenced, not as unacknowledged.
        store.acquire(0).await.expect("a newer owner");
        let stale = store
            .commit(write(0, first, &[("usage", 9)], &[("p-1", b"{}")]))
            .await;
        assert!(matches!(stale, Err(StoreError::Fenced { .. })), "{stale:?}");
        replica.kill9();
    }
}
