//! [`MemoryStore`]: the state store of the embedded mode and of tests, with the same
//! semantics as [`super::redis::RedisStore`] (the behaviour suite in
//! `tests/store_behaviour.rs` runs against both).
//!
//! One mutex around all partitions: every operation is a few map look-ups, the lock is
//! never held across an `.await`, and a commit is atomic because it happens under it.
//! Nothing here is durable; the process is the store's lifetime.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{epoch, Offsets, PartitionWrite, StateStore, StoreError};

#[derive(Debug, Default)]
pub struct MemoryStore {
    partitions: Mutex<HashMap<i32, Partition>>,
    /// Test hook: while set, every call fails with `Unavailable` (a simulated outage).
    unavailable: AtomicBool,
}

/// Epoch 0 means "never acquired", as a missing epoch key does in Redis.
#[derive(Debug, Default)]
struct Partition {
    epoch: u64,
    /// The last renewal: (the epoch it set, its token).
    renewal: Option<(u64, String)>,
    offsets: Offsets,
    partners: BTreeMap<String, Vec<u8>>,
    /// Partners the next owner starts at once.
    awake: std::collections::BTreeSet<String>,
    /// Partner id → when to start it (wall-clock millis).
    wake: BTreeMap<String, i64>,
    /// Partner id → (dedup id → event time in millis).
    dedup: HashMap<String, HashMap<String, i64>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Simulates an outage (`true`) or its end (`false`): while unavailable every call
    /// returns [`StoreError::Unavailable`] and changes nothing.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Sets `partition`'s epoch as a store that went back would hold it (a failover to a
    /// replica that missed writes, a restore): for tests of what owners then do.
    pub fn set_epoch(&self, partition: i32, epoch: u64) {
        self.partitions.lock().entry(partition).or_default().epoch = epoch;
    }

    fn check_available(&self) -> Result<(), StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "memory store: simulated outage".to_owned(),
            ));
        }
        Ok(())
    }

    /// Runs `read` on the partition, or on an empty one if it was never touched (reads do
    /// not create partitions).
    fn read<T>(&self, partition: i32, read: impl FnOnce(&Partition) -> T) -> Result<T, StoreError> {
        self.check_available()?;
        let partitions = self.partitions.lock();
        Ok(match partitions.get(&partition) {
            Some(state) => read(state),
            None => read(&Partition::default()),
        })
    }
}

/// A partner's dedup ids as `[epoch millis, id]`, oldest first.
fn dedup_ids(state: &Partition, partner_id: &str) -> Vec<(i64, String)> {
    let mut ids: Vec<(i64, String)> = state
        .dedup
        .get(partner_id)
        .map(|ids| ids.iter().map(|(id, ms)| (*ms, id.clone())).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn acquire(&self, partition: i32) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut partitions = self.partitions.lock();
        let state = partitions.entry(partition).or_default();
        state.epoch = epoch::acquired_after(state.epoch, epoch::random_tag()).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "memory store: partition {partition}'s epoch {} has no next",
                state.epoch
            ))
        })?;
        Ok(state.epoch)
    }

    async fn renew(&self, partition: i32, held: u64, token: &str) -> Result<u64, StoreError> {
        self.check_available()?;
        let mut partitions = self.partitions.lock();
        let state = partitions.entry(partition).or_default();
        let next = epoch::renewed(held).ok_or_else(|| {
            StoreError::Corrupt(format!("memory store: epoch {held} has no next"))
        })?;
        if held != 0 && state.epoch == held {
            state.epoch = next;
            state.renewal = Some((next, token.to_owned()));
            return Ok(next);
        }
        if state.epoch == next && state.renewal.as_ref() == Some(&(next, token.to_owned())) {
            return Ok(next);
        }
        Err(StoreError::Fenced {
            partition,
            epoch: held,
            current: state.epoch,
        })
    }

    async fn offsets(&self, partition: i32) -> Result<Offsets, StoreError> {
        self.read(partition, |state| state.offsets.clone())
    }

    async fn commit(&self, write: PartitionWrite) -> Result<(), StoreError> {
        self.check_available()?;
        let mut partitions = self.partitions.lock();
        let current = partitions
            .get(&write.partition)
            .map_or(0, |state| state.epoch);
        if current == 0 || current != write.epoch {
            return Err(StoreError::Fenced {
                partition: write.partition,
                epoch: write.epoch,
                current,
            });
        }
        let state = partitions.entry(write.partition).or_default();
        state.offsets.extend(write.offsets);
        state.partners.extend(write.partners);
        for (partner, awake) in write.awake {
            if awake {
                state.awake.insert(partner);
            } else {
                state.awake.remove(&partner);
            }
        }
        for (partner, at) in write.wake {
            match at {
                Some(ms) => state.wake.insert(partner, ms),
                None => state.wake.remove(&partner),
            };
        }
        for (partner, delta) in write.dedup {
            let ids = state.dedup.entry(partner).or_default();
            ids.extend(delta.added.into_iter().map(|(ms, id)| (id, ms)));
            if let Some(below) = delta.evict_below_ms {
                ids.retain(|_, ms| *ms >= below);
            }
        }
        Ok(())
    }

    async fn load_partner(
        &self,
        partition: i32,
        partner_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(partition, |state| state.partners.get(partner_id).cloned())
    }

    async fn load_state(
        &self,
        partition: i32,
        partner_id: &str,
    ) -> Result<Option<(Vec<u8>, Vec<(i64, String)>)>, StoreError> {
        self.read(partition, |state| {
            let snapshot = state.partners.get(partner_id).cloned()?;
            Some((snapshot, dedup_ids(state, partner_id)))
        })
    }

    async fn awake_partners(&self, partition: i32) -> Result<Vec<String>, StoreError> {
        self.read(partition, |state| state.awake.iter().cloned().collect())
    }

    async fn wake_schedule(&self, partition: i32) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(partition, |state| {
            state
                .wake
                .iter()
                .map(|(id, ms)| (id.clone(), *ms))
                .collect()
        })
    }

    async fn partner_ids(&self, partition: i32) -> Result<Vec<String>, StoreError> {
        self.read(partition, |state| state.partners.keys().cloned().collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check_available()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_outage_fails_every_call_and_changes_nothing() {
        let store = MemoryStore::new();
        let epoch = store.acquire(1).await.expect("available");
        store.set_unavailable(true);
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.acquire(1).await,
            Err(StoreError::Unavailable(_))
        ));
        let write = PartitionWrite {
            partition: 1,
            epoch,
            offsets: [("usage".to_owned(), 5)].into_iter().collect(),
            partners: vec![("p".to_owned(), b"{}".to_vec())],
            dedup: Vec::new(),
            awake: Vec::new(),
            wake: Vec::new(),
        };
        let failed = store.commit(write.clone()).await.expect_err("unavailable");
        assert!(failed.is_retryable());
        assert!(matches!(
            store.offsets(1).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.load_partner(1, "p").await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.partner_ids(1).await,
            Err(StoreError::Unavailable(_))
        ));

        store.set_unavailable(false);
        // The failed acquire did not move the epoch and the failed commit wrote nothing.
        assert!(store.offsets(1).await.expect("available").is_empty());
        store.commit(write).await.expect("the epoch is still ours");
        assert_eq!(
            store.offsets(1).await.expect("available").get("usage"),
            Some(&5)
        );
    }

    #[tokio::test]
    async fn reads_do_not_create_partitions() {
        let store = MemoryStore::new();
        assert!(store.offsets(4).await.expect("available").is_empty());
        assert!(store.partitions.lock().is_empty());
    }
}
