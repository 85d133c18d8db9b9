//! Partition ownership changes (CONTRACT §9), run inside librdkafka's rebalance callback
//! on the consumer thread:
//! - assign: take the ownership epoch first (fencing every earlier owner), then read the
//!   offsets stored with the state and start each partition exactly there (the earliest
//!   record when the store has none) — the group's committed offsets are never the truth;
//! - revoke: deliver what is stalled, flush, stop the partition's actors, then let go.
//!
//! A store that has no offsets for a partition the group has commits for has lost data:
//! that partition is not consumed, the daemon goes unready and says so. While the group's
//! commits cannot be read, such a partition waits, paused, until they can.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::pipeline::{PartitionState, Pipeline};
use super::wake_schedule::WakeSchedule;
use crate::metrics::METRICS;
use crate::store::StoreError;

/// What a new owner reads when it takes a partition.
struct Acquired {
    epoch: u64,
    offsets: crate::store::Offsets,
    /// Partners to start at once.
    awake: Vec<String>,
    /// Partners to start at a wall-clock time.
    wakes: WakeSchedule,
}

/// Reads of the group's committed offsets on assignment, a pause apart: a coordinator
/// still loading after a restart (when an emptied Redis is also likeliest) answers with
/// an error at first. Bounded, since the rebalance callback holds the consumer.
const COMMITTED_ATTEMPTS: u32 = 3;
const COMMITTED_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Between two reads of the group's commits for partitions still unchecked (see
/// [`Pipeline::check_unverified`]).
const UNVERIFIED_RETRY: Duration = Duration::from_secs(2);

/// Whether the group has a commit for partition `p` (`None`: the commits were unreadable).
fn group_committed(committed: Option<&TopicPartitionList>, p: i32) -> bool {
    committed.is_some_and(|c| {
        c.elements()
            .iter()
            .any(|e| e.partition() == p && matches!(e.offset(), Offset::Offset(o) if o > 0))
    })
}

impl Pipeline {
    /// Builds the assignment with each partition's stored offsets.
    pub fn on_assign<C: ConsumerContext>(
        &mut self,
        assigned: &TopicPartitionList,
        consumer: &BaseConsumer<C>,
    ) -> TopicPartitionList {
        let numbers: BTreeSet<i32> = assigned.elements().iter().map(|e| e.partition()).collect();
        let committed = (0..COMMITTED_ATTEMPTS).find_map(|attempt| {
            if attempt > 0 {
                std::thread::sleep(COMMITTED_RETRY_PAUSE);
            }
            match consumer.committed_offsets(assigned.clone(), Duration::from_secs(5)) {
                Ok(list) => Some(list),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "group's committed offsets unreadable");
                    None
                }
            }
        });
        if committed.is_none() {
            tracing::error!(
                "the consumer group's committed offsets could not be read: partitions with no \
                 stored offsets wait, paused, until they are (RUNBOOK: WardenStoreLost)"
            );
        }
        let mut out = TopicPartitionList::new();
        for p in numbers {
            self.drop_partition(p);
            let Some(Acquired {
                epoch,
                offsets,
                awake,
                wakes,
            }) = self.acquire(p)
            else {
                tracing::warn!(
                    partition = p,
                    "shutting down before partition could be acquired"
                );
                continue;
            };
            if offsets.is_empty() && group_committed(committed.as_ref(), p) {
                self.store_lost(p, "the consumer group has committed");
                continue;
            }
            for topic in self.topics.keyed() {
                let offset = offsets
                    .get(topic)
                    .map(|o| Offset::Offset(*o))
                    .unwrap_or(Offset::Beginning);
                if let Err(e) = out.add_partition_offset(topic, p, offset) {
                    tracing::error!(topic, partition = p, error = %e, "cannot set start offset");
                }
            }
            tracing::info!(
                partition = p,
                epoch,
                ?offsets,
                awake = awake.len(),
                timed = wakes.len(),
                "partition assigned"
            );
            // No stored offsets, and no word from the group on whether it has commits: new,
            // or a store emptied meanwhile. Nothing is applied until the group answers.
            let unverified = offsets.is_empty() && committed.is_none();
            let mut ps = PartitionState::new(epoch, offsets);
            ps.unverified = unverified;
            // Started at the next tick round, events or not (see `wake_sleepers`).
            ps.to_wake = awake;
            ps.wakes = wakes;
            self.partitions.insert(p, ps);
            // Per-partition series exist from assignment to revocation (CONTRACT §7).
            for topic in self.topics.keyed() {
                METRICS
                    .consumer_lag
                    .with_label_values(&[topic, &p.to_string()])
                    .set(0);
            }
        }
        METRICS
            .partitions_assigned
            .set(self.partitions.len() as i64);
        out
    }

    /// Takes the epoch, then reads the offsets and the partners to start at once; retries
    /// while the store is unreachable (heartbeats go on in librdkafka's own thread
    /// meanwhile).
    fn acquire(&self, p: i32) -> Option<Acquired> {
        let mut backoff = Duration::from_millis(50);
        loop {
            if self
                .health
                .stopping
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return None;
            }
            let started = Instant::now();
            let res: Result<Acquired, StoreError> = self.io.block_on(async {
                let epoch = self.store.acquire(p).await?;
                let offsets = self.store.offsets(p).await?;
                let awake = self.store.awake_partners(p).await?;
                let wakes = WakeSchedule::from_store(self.store.wake_schedule(p).await?);
                Ok(Acquired {
                    epoch,
                    offsets,
                    awake,
                    wakes,
                })
            });
            METRICS.store_op("acquire", started);
            match res {
                Ok(v) => {
                    METRICS.store_up.set(1);
                    return Some(v);
                }
                Err(e) => {
                    METRICS.store_up.set(0);
                    METRICS.store_errors.with_label_values(&["acquire"]).inc();
                    tracing::warn!(partition = p, error = %e, "cannot acquire partition yet; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Reads the group's commits again for partitions assigned while they were unreadable
    /// (every [`UNVERIFIED_RETRY`], on the consumer thread, bounded by a short timeout). A
    /// partition the group has commits for is the store's loss, as at assignment; one it
    /// has none for is new, and is read from its first record.
    pub fn check_unverified<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let unverified: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, ps)| ps.unverified)
            .map(|(p, _)| *p)
            .collect();
        if unverified.is_empty() || self.unverified_checked.elapsed() < UNVERIFIED_RETRY {
            return;
        }
        self.unverified_checked = Instant::now();
        let mut tpl = TopicPartitionList::new();
        for p in &unverified {
            for topic in self.topics.keyed() {
                tpl.add_partition(topic, *p);
            }
        }
        let committed = match consumer.committed_offsets(tpl, Duration::from_secs(1)) {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(partitions = ?unverified, error = %e, "group's committed offsets still unreadable; those partitions stay paused");
                return;
            }
        };
        for p in unverified {
            // Written meanwhile: another owner took it (this one missed a rebalance), and
            // neither a loss nor this instance's to read.
            let stored = self.io.block_on(self.store.offsets(p));
            if stored.as_ref().is_ok_and(|o| !o.is_empty()) {
                tracing::warn!(
                    partition = p,
                    "another owner wrote the partition meanwhile; letting it go"
                );
                self.let_go(p, consumer);
                continue;
            }
            if group_committed(Some(&committed), p) {
                self.store_lost(p, "the consumer group has committed");
                self.let_go(p, consumer);
                continue;
            }
            tracing::info!(
                partition = p,
                "the group has no commits for it: a new partition, read from its first record"
            );
            // Records polled meanwhile were not applied: read them again, from the start.
            // Until reading is moved back there, nothing may be applied: it stays waiting.
            if self.reset_partition(p, consumer) {
                if let Some(ps) = self.partitions.get_mut(&p) {
                    ps.unverified = false;
                }
            }
        }
    }

    /// Flushes and lets go of every owned partition.
    pub fn on_revoke<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        if !self.drain(consumer, deadline) {
            tracing::warn!("revocation: not every partition became durable; the next owner re-reads from the store");
        }
        let owned: Vec<i32> = self.partitions.keys().copied().collect();
        for p in owned {
            self.drop_partition(p);
        }
        METRICS.partitions_assigned.set(0);
        tracing::info!("partitions revoked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_counts_as_committed_only_with_a_commit_read_for_it() {
        let mut committed = TopicPartitionList::new();
        committed
            .add_partition_offset("usage", 0, Offset::Offset(120))
            .unwrap();
        committed
            .add_partition_offset("usage", 1, Offset::Invalid)
            .unwrap();
        assert!(group_committed(Some(&committed), 0));
        assert!(!group_committed(Some(&committed), 1), "new: no commit");
        assert!(!group_committed(None, 0), "unreadable: not a commit");
    }
}
