//! Making a partition's progress durable: snapshots of its dirty partners, their dead
//! letters acknowledged by the broker, then one atomic write of snapshots + offsets
//! guarded by the ownership epoch; Kafka's group offsets are committed only after that.
//!
//! The write runs on the io runtime while the consumer thread goes on polling and
//! applying: a flush is *started* on the consumer thread (the snapshot requests are queued
//! in each actor's mailbox right there, behind every batch already routed to it, so each
//! snapshot holds exactly the events below the offsets captured with it) and *finished*
//! when its [`Completion`] comes back. One flush per partition is in flight at a time, so
//! a partition's writes reach the store in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::Request;
use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::deadletter::{DeadLetter, DeadLetterSink, PendingDeadLetter};
use super::pipeline::{Barrier, Completion, InFlight, Pipeline, Settled};
use super::topics::TopicMap;
use crate::actors::messages::TakeSnapshot;
use crate::actors::partner::PartnerActor;
use crate::metrics::METRICS;
use crate::store::{PartitionWrite, StateStore, StoreError};

/// Between two questions about a partition's unanswered epoch renewal, each of which
/// blocks the consumer thread for up to the store's timeout.
const RENEWAL_RETRY: Duration = Duration::from_secs(1);

/// A flush on its way to the store: what the consumer thread handed over when it started.
pub(super) struct FlushJob {
    pub partition: i32,
    /// The epoch its commit carries: the partition's fence when it started.
    pub epoch: u64,
    /// This partition's flush number: an abandoned flush's late result is not the next's.
    pub seq: u64,
    /// The offsets the snapshots include (the partition's `next` when it started).
    pub offsets: BTreeMap<String, i64>,
    /// The partners snapshotted (they stay live until the flush ends).
    pub partners: Vec<String>,
    /// Events routed before the flush started: durable once it succeeds.
    pub events: usize,
    /// The durable wake times of its partners that have one.
    pub known_wakes: std::collections::HashMap<String, i64>,
}

/// The outboxes of the snapshots written (to publish now), and how many dedup ids of each
/// partner's delta became durable (to acknowledge to its actor).
pub(super) struct Written {
    outboxes: Vec<(String, Vec<crate::domain::partner::OutboxEntry>)>,
    dedup: Vec<(String, usize)>,
    /// The wake-time changes it wrote.
    wake: Vec<(String, Option<i64>)>,
}

pub(super) enum FlushResult {
    Durable(Written),
    Fenced(StoreError),
    /// Not durable; retry later. Dead letters not yet acknowledged come back.
    Failed {
        error: String,
        dead_letters: Vec<PendingDeadLetter>,
        /// The store did not answer (not: answered and refused, or replicas behind).
        store_down: bool,
    },
    /// Not durable because a partner's actor is gone (it stopped on a bug): no retry can
    /// take its snapshot, so the partition is read again from what is durable.
    ActorLost(String),
}

type SnapshotRequest = Request<PartnerActor, TakeSnapshot>;

async fn write_snapshots(
    (partition, epoch): (i32, u64),
    offsets: BTreeMap<String, i64>,
    known_wakes: &std::collections::HashMap<String, i64>,
    requests: Vec<SnapshotRequest>,
    dead_letters: Vec<PendingDeadLetter>,
    (store, dlq, topics): (Arc<dyn StateStore>, DeadLetterSink, TopicMap),
) -> FlushResult {
    let stage = Instant::now();
    let replies = join_all(requests).await;
    METRICS.flush_stage("snapshots", stage);
    let mut partners = Vec::with_capacity(replies.len());
    let mut outboxes = Vec::new();
    let mut dedup = Vec::new();
    let mut dedup_acks = Vec::new();
    let mut awake = Vec::with_capacity(replies.len());
    let mut wakes = Vec::new();
    let mut dead_letters = dead_letters;
    let mut actor_error = None;
    let mut actor_lost = None;
    for reply in replies {
        match reply {
            Ok(Ok(snap)) => {
                dead_letters.extend(snap.rejections.into_iter().map(|r| {
                    PendingDeadLetter::Unsent(DeadLetter {
                        source_topic: topics.name(r.source.topic).to_owned(),
                        partition: r.source.partition,
                        offset: r.source.offset,
                        reason: r.rejection.reason,
                        detail: r.rejection.detail,
                        // The typed event, re-serialized: the domain saw only the decoded form.
                        payload: event_json(&r.source.event),
                    })
                }));
                if !snap.outbox.is_empty() {
                    outboxes.push((snap.partner_id.clone(), snap.outbox));
                }
                if !snap.dedup.is_empty() {
                    dedup_acks.push((snap.partner_id.clone(), snap.dedup.added.len()));
                    dedup.push((snap.partner_id.clone(), snap.dedup));
                }
                awake.push((snap.partner_id.clone(), snap.awake));
                wakes.push((snap.partner_id.clone(), snap.wake_at));
                partners.push((snap.partner_id, snap.bytes));
            }
            Ok(Err(e)) => actor_error = Some(format!("snapshot: {e}")),
            Err(actix::MailboxError::Closed) => {
                actor_lost = Some("a partner actor stopped; its mailbox is closed".to_owned());
            }
            Err(e) => actor_error = Some(format!("actor mailbox: {e}")),
        }
    }
    let stage = Instant::now();
    let acknowledged = dlq.send_all(dead_letters).await;
    METRICS.flush_stage("dead_letters", stage);
    if let Err(unacked) = acknowledged {
        return FlushResult::Failed {
            error: "dead letters not acknowledged".into(),
            dead_letters: unacked,
            store_down: false,
        };
    }
    if let Some(error) = actor_lost {
        return FlushResult::ActorLost(error);
    }
    if let Some(error) = actor_error {
        return FlushResult::Failed {
            error,
            dead_letters: Vec::new(),
            store_down: false,
        };
    }
    let started = Instant::now();
    let wake = super::wake_schedule::changes(known_wakes, wakes);
    let write = PartitionWrite {
        partition,
        epoch,
        offsets,
        partners,
        dedup,
        awake,
        wake: wake.clone(),
    };
    let res = store.commit(write).await;
    METRICS.store_op("commit", started);
    METRICS.flush_stage("commit", started);
    match res {
        Ok(()) => FlushResult::Durable(Written {
            outboxes,
            dedup: dedup_acks,
            wake,
        }),
        Err(e @ StoreError::Fenced { .. }) => FlushResult::Fenced(e),
        Err(e) => FlushResult::Failed {
            store_down: matches!(e, StoreError::Unavailable(_)),
            error: e.to_string(),
            dead_letters: Vec::new(),
        },
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
    /// Starts a flush of every partition that is due (or of every partition with changes,
    /// when `force`) and has none in flight, after taking in the flushes that ended.
    /// Returns whether every owned partition is durable, with nothing in flight.
    pub fn flush<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, force: bool) -> bool {
        self.take_completions(consumer);
        self.mark_urgent();
        let now = Instant::now();
        let interval = self.settings.flush_interval;
        let max_unflushed = self.settings.max_unflushed;
        let mut started = Vec::new();
        let mut released = Vec::new();
        let mut unsettled = None;
        for (p, ps) in self.partitions.iter_mut() {
            // Past any of its bounds (events not durable, held records included; partners
            // for the next flush; items to publish) the partition stops fetching until a
            // flush or the publication brings it back under.
            if ps.over_bounds(max_unflushed) {
                ps.pause_for_backpressure(consumer, &self.topics, *p);
            }
            // Its renewal unanswered, it commits nothing; it asks again once it has
            // something to commit, one partition a call (each question may block this
            // thread for the store's timeout).
            if ps.renewal.is_some() {
                if now >= ps.retry_at && ps.has_changes() && unsettled.is_none() {
                    unsettled = Some(*p);
                }
                continue;
            }
            if ps.flushing.is_some() || !ps.has_changes() {
                continue;
            }
            let due = ps.barrier.is_some()
                || force
                || (now >= ps.retry_at
                    && (ps.flush_pressing(max_unflushed)
                        || now.duration_since(ps.last_flush) >= interval));
            if !due {
                continue;
            }
            // Loads (and a full mailbox) hold a flush back: their events are below the
            // offsets. Later records wait behind a barrier meanwhile, so a partition that
            // keeps meeting new partners still flushes one load round trip later.
            if !ps.stalled.is_empty() || !ps.loading.is_empty() {
                if ps.barrier.is_none() {
                    ps.barrier = Some(Barrier::new(ps.next.clone()));
                }
                continue;
            }
            let (offsets, release) = match ps.barrier.take() {
                Some(b) => (b.offsets, Some((b.held, b.dead_letters))),
                None => (ps.next.clone(), None),
            };
            let partners = ps.take_flush_partners();
            // Queued now, on this thread: each lands behind the batches routed so far. A
            // fresh clone of the address, because `try_send` may have parked the slot's
            // own sender, and a parked sender's request would only be queued when the io
            // runtime first polls it, possibly behind a later batch.
            let requests: Vec<SnapshotRequest> = partners
                .iter()
                .filter_map(|id| ps.partners.get(id))
                .map(|s| s.addr.clone().send(TakeSnapshot))
                .collect();
            ps.flush_seq += 1;
            let known_wakes = ps.wakes.known(&partners);
            let job = FlushJob {
                partition: *p,
                epoch: ps.fence,
                seq: ps.flush_seq,
                offsets,
                partners,
                events: std::mem::take(&mut ps.unflushed),
                known_wakes,
            };
            ps.urgent = false;
            ps.last_flush = now;
            ps.flushing = Some(InFlight {
                seq: job.seq,
                events: job.events,
                partners: job.partners.iter().cloned().collect(),
            });
            let dead_letters = std::mem::take(&mut ps.pending_dlq);
            started.push((job, requests, dead_letters));
            // The held records go to their actors behind the snapshot requests queued
            // above, so the snapshots hold exactly what is below the barrier's offsets.
            if let Some((held, dead_letters)) = release {
                ps.unflushed = held.len() + dead_letters.len();
                ps.pending_dlq = dead_letters;
                released.push((*p, held));
            }
        }
        for (job, requests, dead_letters) in started {
            let io = (self.store.clone(), self.dlq.clone(), self.topics.clone());
            let done = self.completions.0.clone();
            let offsets = job.offsets.clone();
            self.io.spawn(async move {
                let result = write_snapshots(
                    (job.partition, job.epoch),
                    offsets,
                    &job.known_wakes,
                    requests,
                    dead_letters,
                    io,
                )
                .await;
                // The pipeline is gone only when the consumer thread has ended.
                let _ = done.send(Completion::Flush(job, result));
            });
        }
        // Settled, the partition flushes at the next call; unanswered, it asks again a
        // while after this answer (not after this call began: the question took time).
        if let Some(p) = unsettled {
            if self.settle_renewal(p, consumer) == Settled::Unanswered {
                if let Some(ps) = self.partitions.get_mut(&p) {
                    ps.retry_at = Instant::now() + RENEWAL_RETRY;
                }
            }
        }
        // Only once every started flush is on its way: a delivery that finds an actor gone
        // resets its partition, and a reset waits for the partition's flush to end.
        for (p, held) in released {
            self.deliver(p, held, false, consumer);
        }
        self.all_durable()
    }

    /// Every owned partition durable, and no flush in flight.
    pub(super) fn all_durable(&self) -> bool {
        self.partitions
            .values()
            .all(|ps| ps.flushing.is_none() && !ps.has_changes())
    }

    /// Takes in one ended flush: on success the offsets it wrote become the durable ones
    /// (and are committed to the group, for lag), its outboxes are queued for publication
    /// and its dedup ids acknowledged; on failure its partners are dirty again.
    pub(super) fn flush_ended<C: ConsumerContext>(
        &mut self,
        job: FlushJob,
        result: FlushResult,
        consumer: &BaseConsumer<C>,
    ) {
        let p = job.partition;
        match self.partitions.get_mut(&p) {
            // A flush of an ownership that ended (revoked, fenced, reassigned) changes nothing.
            Some(ps)
                if ps.fence == job.epoch
                    && ps.flushing.as_ref().is_some_and(|f| f.seq == job.seq) =>
            {
                ps.flushing = None
            }
            _ => return,
        }
        match result {
            FlushResult::Durable(written) => {
                self.queue_outbox(p, written.outboxes);
                self.acknowledge_dedup(p, written.dedup);
                METRICS.flushes.with_label_values(&["ok"]).inc();
                METRICS.store_up.set(1);
                let Some(ps) = self.partitions.get_mut(&p) else {
                    return;
                };
                ps.failures = 0;
                ps.wakes.committed(written.wake);
                let mut commit = TopicPartitionList::new();
                for (topic, offset) in &job.offsets {
                    // unwrap-free: a bad offset only skips lag reporting.
                    let _ = commit.add_partition_offset(topic, p, Offset::Offset(*offset));
                }
                ps.durable = job.offsets;
                if let Err(e) = consumer.commit(&commit, CommitMode::Async) {
                    tracing::debug!(error = %e, "group offset commit failed (lag reporting only)");
                }
            }
            FlushResult::Fenced(e) => {
                METRICS.flushes.with_label_values(&["fenced"]).inc();
                self.fenced(p, &e, consumer);
            }
            FlushResult::ActorLost(error) => {
                // Retrying would fail the same way for ever, and the partition would stop
                // becoming durable; only a later event for that very partner reset it.
                METRICS.flushes.with_label_values(&["error"]).inc();
                tracing::error!(partition = p, error = %error, "flush failed: a partner actor is gone; reading the partition again from what is durable");
                self.reset_partition(p, consumer);
            }
            FlushResult::Failed {
                error,
                dead_letters,
                store_down,
            } => {
                METRICS.flushes.with_label_values(&["error"]).inc();
                METRICS.store_errors.with_label_values(&["commit"]).inc();
                let max_unflushed = self.settings.max_unflushed;
                let Some(ps) = self.partitions.get_mut(&p) else {
                    return;
                };
                if store_down {
                    METRICS.store_up.set(0);
                }
                // Not durable: its partners are written again with the next flush (their
                // actors kept every change, the dedup delta and the outbox).
                ps.dirty.extend(job.partners);
                ps.unflushed += job.events;
                ps.pending_dlq.extend(dead_letters);
                ps.failures = ps.failures.saturating_add(1);
                let backoff = Duration::from_millis(50u64.saturating_mul(1 << ps.failures.min(6)));
                ps.retry_at = Instant::now() + backoff.min(Duration::from_secs(2));
                tracing::warn!(partition = p, error = %error, failures = ps.failures, "flush failed; will retry");
                if ps.unflushed >= max_unflushed {
                    ps.pause_for_backpressure(consumer, &self.topics, p);
                }
            }
        }
    }

    /// Shutdown or revocation: deliver what is stalled, then flush until durable or the
    /// deadline passes. What is not durable by then is read again by the next owner.
    pub fn drain<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        deadline: Instant,
    ) -> bool {
        self.draining = true;
        self.drain_lost = false;
        let durable = self.drain_until(consumer, deadline);
        self.draining = false;
        durable && !self.drain_lost
    }

    fn drain_until<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        deadline: Instant,
    ) -> bool {
        loop {
            self.retry_stalled(consumer);
            let stalled = self.partitions.values().any(|ps| !ps.stalled.is_empty());
            // A round of ticks in flight may still change partners: its end joins them to
            // the flush, so the drain waits for it too.
            if !stalled && self.flush(consumer, true) && !self.ticking {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.wait_for_completion(consumer, (deadline - now).min(Duration::from_millis(20)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::messages::Stop;
    use crate::actors::partner::{Shared, TickDue};
    use crate::config::KafkaConfig;
    use crate::domain::partner::PartnerState;
    use crate::store::memory::MemoryStore;
    use actix::Actor;
    use rdkafka::config::ClientConfig;

    /// A partner actor that stopped (a bug in a handler) can never give its snapshot: the
    /// flush says so, and the partition is read again, instead of retrying for ever.
    #[test]
    fn a_flush_that_meets_a_stopped_actor_reports_the_actor_lost() {
        actix_rt::System::new().block_on(async {
            let shared = Arc::new(Shared::for_tests());
            let live =
                PartnerActor::new(PartnerState::new("p-1"), &shared, Arc::new(TickDue::new()))
                    .start();
            let gone =
                PartnerActor::new(PartnerState::new("p-2"), &shared, Arc::new(TickDue::new()))
                    .start();
            let _ = gone.send(Stop).await;
            let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
            let epoch = store.acquire(0).await.unwrap();
            let producer = ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:1")
                .create()
                .unwrap();
            let kafka = KafkaConfig::default();
            let dlq = DeadLetterSink::new(producer, kafka.topics.deadletter.clone());
            let io = (store.clone(), dlq, TopicMap::from_config(&kafka));
            let requests = vec![live.send(TakeSnapshot), gone.send(TakeSnapshot)];
            let none = std::collections::HashMap::new();
            let result =
                write_snapshots((0, epoch), BTreeMap::new(), &none, requests, Vec::new(), io).await;
            let outcome = match &result {
                FlushResult::ActorLost(_) => "actor lost",
                FlushResult::Failed { .. } => "failed",
                FlushResult::Durable(_) => "durable",
                FlushResult::Fenced(_) => "fenced",
            };
            assert_eq!(outcome, "actor lost");
            // Nothing was written: the partition's state stays what was durable.
            assert_eq!(store.partner_ids(0).await.unwrap(), Vec::<String>::new());
        });
    }
}
