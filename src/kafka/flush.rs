//! Making a partition's progress durable: snapshots of its dirty partners, their dead
//! letters acknowledged by the broker, then one atomic write of snapshots + offsets
//! guarded by the ownership epoch; Kafka's group offsets are committed only after that.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::deadletter::{DeadLetter, DeadLetterSink};
use super::pipeline::{pause, Pipeline};
use super::topics::TopicMap;
use crate::actors::messages::TakeSnapshot;
use crate::actors::partner::PartnerActor;
use crate::metrics::METRICS;
use crate::store::{PartitionWrite, StateStore, StoreError};

/// Everything one flush of one partition needs, owned, so flushes run concurrently.
struct FlushJob {
    partition: i32,
    epoch: u64,
    offsets: BTreeMap<String, i64>,
    actors: Vec<Addr<PartnerActor>>,
    dead_letters: Vec<DeadLetter>,
}

/// The outboxes of the snapshots written (to publish now), and how many dedup ids of each
/// partner's delta became durable (to acknowledge to its actor).
struct Written {
    outboxes: Vec<(String, Vec<crate::domain::partner::OutboxEntry>)>,
    dedup: Vec<(String, usize)>,
}

enum FlushResult {
    Durable(Written),
    Fenced(StoreError),
    /// Not durable; retry later. Dead letters not yet acknowledged come back.
    Failed {
        error: String,
        dead_letters: Vec<DeadLetter>,
    },
}

async fn run_job(
    job: FlushJob,
    store: Arc<dyn StateStore>,
    dlq: DeadLetterSink,
    topics: TopicMap,
) -> (i32, FlushResult) {
    let p = job.partition;
    let replies = join_all(job.actors.iter().map(|a| a.send(TakeSnapshot))).await;
    let mut partners = Vec::with_capacity(replies.len());
    let mut outboxes = Vec::new();
    let mut dedup = Vec::new();
    let mut dedup_acks = Vec::new();
    let mut dead_letters = job.dead_letters;
    let mut actor_error = None;
    for reply in replies {
        match reply {
            Ok(Ok(snap)) => {
                dead_letters.extend(snap.rejections.into_iter().map(|r| DeadLetter {
                    source_topic: topics.name(r.source.topic).to_owned(),
                    partition: r.source.partition,
                    offset: r.source.offset,
                    reason: r.rejection.reason,
                    detail: r.rejection.detail,
                    // The typed event, re-serialized: the domain saw only the decoded form.
                    payload: event_json(&r.source.event),
                }));
                if !snap.outbox.is_empty() {
                    outboxes.push((snap.partner_id.clone(), snap.outbox));
                }
                if !snap.dedup.is_empty() {
                    dedup_acks.push((snap.partner_id.clone(), snap.dedup.added.len()));
                    dedup.push((snap.partner_id.clone(), snap.dedup));
                }
                partners.push((snap.partner_id, snap.bytes));
            }
            Ok(Err(e)) => actor_error = Some(format!("snapshot: {e}")),
            Err(e) => actor_error = Some(format!("actor mailbox: {e}")),
        }
    }
    if let Err(unacked) = dlq.send_all(dead_letters).await {
        return (
            p,
            FlushResult::Failed {
                error: "dead letters not acknowledged".into(),
                dead_letters: unacked,
            },
        );
    }
    if let Some(error) = actor_error {
        return (
            p,
            FlushResult::Failed {
                error,
                dead_letters: Vec::new(),
            },
        );
    }
    let started = Instant::now();
    let write = PartitionWrite {
        partition: p,
        epoch: job.epoch,
        offsets: job.offsets,
        partners,
        dedup,
    };
    let res = store.commit(write).await;
    METRICS
        .store_op_seconds
        .with_label_values(&["commit"])
        .observe(started.elapsed().as_secs_f64());
    match res {
        Ok(()) => (
            p,
            FlushResult::Durable(Written {
                outboxes,
                dedup: dedup_acks,
            }),
        ),
        Err(e @ StoreError::Fenced { .. }) => (p, FlushResult::Fenced(e)),
        Err(e) => (
            p,
            FlushResult::Failed {
                error: e.to_string(),
                dead_letters: Vec::new(),
            },
        ),
    }
}

fn event_json(event: &crate::domain::event::PartnerEvent) -> Vec<u8> {
    use crate::domain::event::PartnerEvent;
    let v = match event {
        PartnerEvent::Usage(e) => serde_json::to_vec(e),
        PartnerEvent::Invoice(e) => serde_json::to_vec(e),
        PartnerEvent::Attribution(e) => serde_json::to_vec(e),
    };
    v.unwrap_or_default()
}

impl Pipeline {
    /// Flushes every partition that is due (or every partition with changes, when `force`).
    /// Returns whether every owned partition is now durable.
    pub fn flush<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, force: bool) -> bool {
        let now = Instant::now();
        let interval = self.settings.flush_interval;
        let max_unflushed = self.settings.max_unflushed;
        let mut jobs = Vec::new();
        for (p, ps) in self.partitions.iter_mut() {
            if !ps.stalled.is_empty() || !ps.has_changes() {
                continue;
            }
            let due = force
                || (now >= ps.retry_at
                    && (now.duration_since(ps.last_flush) >= interval
                        || ps.unflushed >= max_unflushed / 2));
            if !due {
                continue;
            }
            let actors = ps
                .dirty
                .iter()
                .filter_map(|id| ps.partners.get(id))
                .map(|s| s.addr.clone())
                .collect();
            jobs.push(FlushJob {
                partition: *p,
                epoch: ps.epoch,
                offsets: ps.next.clone(),
                actors,
                dead_letters: std::mem::take(&mut ps.pending_dlq),
            });
        }
        if jobs.is_empty() {
            return self.partitions.values().all(|ps| !ps.has_changes());
        }
        let store = self.store.clone();
        let dlq = self.dlq.clone();
        let topics = self.topics.clone();
        let results = self.io.block_on(join_all(
            jobs.into_iter()
                .map(|j| run_job(j, store.clone(), dlq.clone(), topics.clone())),
        ));
        let mut commit = TopicPartitionList::new();
        for (p, result) in results {
            match result {
                FlushResult::Durable(written) => {
                    self.queue_outbox(p, written.outboxes);
                    self.acknowledge_dedup(p, written.dedup);
                    METRICS.flushes.with_label_values(&["ok"]).inc();
                    METRICS.store_up.set(1);
                    let Some(ps) = self.partitions.get_mut(&p) else {
                        continue;
                    };
                    ps.durable = ps.next.clone();
                    ps.dirty.clear();
                    ps.unflushed = 0;
                    ps.failures = 0;
                    ps.last_flush = Instant::now();
                    for (topic, offset) in &ps.durable {
                        // unwrap-free: a bad offset only skips lag reporting.
                        let _ = commit.add_partition_offset(topic, p, Offset::Offset(*offset));
                    }
                }
                FlushResult::Fenced(e) => {
                    METRICS.flushes.with_label_values(&["fenced"]).inc();
                    METRICS.fenced_writes.inc();
                    tracing::warn!(partition = p, error = %e, "partition fenced: another owner took it; dropping it");
                    self.drop_partition(p);
                    pause(consumer, &self.topics, p, true);
                }
                FlushResult::Failed {
                    error,
                    dead_letters,
                } => {
                    METRICS.flushes.with_label_values(&["error"]).inc();
                    METRICS.store_errors.with_label_values(&["commit"]).inc();
                    let Some(ps) = self.partitions.get_mut(&p) else {
                        continue;
                    };
                    if error.contains("unavailable") {
                        METRICS.store_up.set(0);
                    }
                    ps.pending_dlq.extend(dead_letters);
                    ps.failures = ps.failures.saturating_add(1);
                    let backoff =
                        Duration::from_millis(50u64.saturating_mul(1 << ps.failures.min(6)));
                    ps.retry_at = Instant::now() + backoff.min(Duration::from_secs(2));
                    tracing::warn!(partition = p, error = %error, failures = ps.failures, "flush failed; will retry");
                    if ps.unflushed >= max_unflushed && !ps.paused {
                        METRICS.mailbox_full.inc();
                        ps.paused = true;
                        pause(consumer, &self.topics, p, true);
                    }
                }
            }
        }
        if commit.count() > 0 {
            if let Err(e) = consumer.commit(&commit, CommitMode::Async) {
                tracing::debug!(error = %e, "group offset commit failed (lag reporting only)");
            }
        }
        self.partitions.values().all(|ps| !ps.has_changes())
    }

    /// Shutdown or revocation: deliver what is stalled, then flush until durable or the
    /// deadline passes. What is not durable by then is read again by the next owner.
    pub fn drain<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        deadline: Instant,
    ) -> bool {
        loop {
            self.retry_stalled(consumer);
            let stalled = self.partitions.values().any(|ps| !ps.stalled.is_empty());
            if !stalled && self.flush(consumer, true) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
