//! Partition ownership changes (CONTRACT §9), run inside librdkafka's rebalance callback
//! on the consumer thread:
//! - assign: take the ownership epoch first (fencing every earlier owner), then read the
//!   offsets stored with the state and start each partition exactly there (the earliest
//!   record when the store has none) — the group's committed offsets are never the truth;
//! - revoke: deliver what is stalled, flush, stop the partition's actors, then let go.
//!
//! A store that has no offsets for a partition the group has commits for has lost data:
//! that partition is not consumed, the daemon goes unready and says so.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::pipeline::{PartitionState, Pipeline};
use crate::metrics::METRICS;
use crate::store::StoreError;

/// Reads of the group's committed offsets before a partition without stored offsets is
/// taken as possibly lost.
const COMMITTED_ATTEMPTS: u32 = 3;

/// Whether partition `p`, assigned with `no_stored_offsets`, may have had its state lost:
/// the group has commits for it, or they could not be read (`committed` is `None`). Then
/// the partition may be new or lost, and only reading it from the start would tell, which
/// is the silent replay CONTRACT §9 forbids.
fn possibly_lost(no_stored_offsets: bool, committed: Option<&TopicPartitionList>, p: i32) -> bool {
    no_stored_offsets
        && committed.is_none_or(|c| {
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
        // Read a few times before giving up: a group coordinator still loading after a
        // restart (when an emptied Redis is also likeliest) answers with an error.
        let committed = (0..COMMITTED_ATTEMPTS).find_map(|attempt| {
            match consumer.committed_offsets(assigned.clone(), Duration::from_secs(10)) {
                Ok(list) => Some(list),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "group's committed offsets unreadable");
                    None
                }
            }
        });
        let mut out = TopicPartitionList::new();
        for p in numbers {
            self.drop_partition(p);
            let Some((epoch, offsets, awake)) = self.acquire(p) else {
                tracing::warn!(
                    partition = p,
                    "shutting down before partition could be acquired"
                );
                continue;
            };
            if possibly_lost(offsets.is_empty(), committed.as_ref(), p) {
                if committed.is_some() {
                    tracing::error!(
                        partition = p,
                        "the store has no offsets for a partition the consumer group has committed: \
                         the store lost its data; not consuming this partition (RUNBOOK: WardenStoreLost)"
                    );
                } else {
                    tracing::error!(
                        partition = p,
                        "the store has no offsets for this partition and the consumer group's commits \
                         could not be read: it is new or its state was lost; not consuming it \
                         (restart to read them again; RUNBOOK: WardenStoreLost)"
                    );
                }
                self.health
                    .store_lost
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                METRICS.store_lost.set(1);
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
                "partition assigned"
            );
            let mut ps = PartitionState::new(epoch, offsets);
            // Started at the next tick round, events or not (see `wake_sleepers`).
            ps.to_wake = awake;
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
    fn acquire(&self, p: i32) -> Option<(u64, crate::store::Offsets, Vec<String>)> {
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
            type Acquired = (u64, crate::store::Offsets, Vec<String>);
            let res: Result<Acquired, StoreError> = self.io.block_on(async {
                let epoch = self.store.acquire(p).await?;
                let offsets = self.store.offsets(p).await?;
                let awake = self.store.awake_partners(p).await?;
                Ok((epoch, offsets, awake))
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

    /// A partition with no stored offsets is consumed from the start only when the group
    /// is known to have no commits for it; commits that could not be read are no answer.
    #[test]
    fn a_partition_without_stored_offsets_is_lost_unless_the_group_has_none_for_it() {
        let mut committed = TopicPartitionList::new();
        committed
            .add_partition_offset("usage", 0, Offset::Offset(120))
            .unwrap();
        committed
            .add_partition_offset("usage", 1, Offset::Invalid)
            .unwrap();
        assert!(
            possibly_lost(true, Some(&committed), 0),
            "the group committed it"
        );
        assert!(!possibly_lost(true, Some(&committed), 1), "new: no commit");
        assert!(
            possibly_lost(true, None, 1),
            "the commits could not be read"
        );
        assert!(!possibly_lost(false, None, 0), "the store has its offsets");
    }
}
