//! The consumer thread's state: which partition numbers this instance owns, what has been
//! handed to partner actors, and what is durable.
//!
//! Invariants (CONTRACT §9):
//! - every record polled from an owned partition is either handed to its partner's actor,
//!   queued as a dead letter, or held in the partition's `stalled` queue — never dropped;
//! - once a partition has stalled events, every later event of it joins the queue, so a
//!   partner's events reach its actor in offset order;
//! - a partition is flushed only while nothing is stalled, so the offsets written with the
//!   snapshots are exactly "everything below was applied, nothing above was";
//! - a flush that is due while partners load sets a [`Barrier`]: its offsets are taken then,
//!   and later records wait behind it (not delivered, not paused) until the loads are in
//!   and the flush has started, so cold partners cannot hold a partition's flush back;
//! - offsets are committed to Kafka only after that write succeeded (lag reporting only).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use actix::dev::SendError;
use actix::Addr;
use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::deadletter::{DeadLetter, DeadLetterSink, PendingDeadLetter};
use super::decode::{decode_partner_record, DecodeLimits};
use super::fetch_progress::{FetchProgress, PartitionStats};
use super::publish_queue::{PublishQueue, Stage};
use super::topics::{check_partition, partition_for_key, TopicMap};
use super::wake_schedule::WakeSchedule;
use crate::actors::messages::{AckOutbox, DedupDurable, Tick, TickChange, TickRound};
use crate::actors::messages::{ApplyBatch, Sourced};
use crate::actors::partner::{PartnerActor, TickDue};
use crate::actors::registry::Registry;
use crate::app::Health;
use crate::domain::event::PartnerEvent;
use crate::domain::partner::PartnerState;
use crate::domain::partner::{Outbound, OutboxEntry};
use crate::metrics::METRICS;
use crate::publish::{DecisionPublisher, Outgoing};
use crate::store::decisions::DecisionWrite;
use crate::store::{epoch, StateStore, StoreError};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub limits: DecodeLimits,
    pub flush_interval: Duration,
    pub max_unflushed: usize,
    pub passivate_after: Duration,
    /// Partition count of the keyed topics (to find which partners a partition holds).
    pub partitions: i32,
    /// How long a reset waits for the flush in flight before it fences it and goes on
    /// ([`FLUSH_GIVE_UP`]; shorter in tests).
    pub flush_give_up: Duration,
}

/// A reset waits this long for a flush in flight. A flush waits for its partners'
/// snapshots and its dead letters' acknowledgements, which the broker may hold longer.
pub const FLUSH_GIVE_UP: Duration = Duration::from_secs(60);

/// Attempts at renewing the epoch to fence an abandoned flush, a pause apart: the reset
/// runs on the consumer thread, so it is bounded.
const RENEW_ATTEMPTS: u32 = 3;
const RENEW_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A live partner actor of a partition.
pub(super) struct Slot {
    pub addr: Addr<PartnerActor>,
    pub last_routed: Instant,
    /// When the partner is next due a tick (kept by its actor).
    pub due: Arc<TickDue>,
}

/// What this instance knows about one owned partition number.
pub(super) struct PartitionState {
    /// The ownership epoch taken on assignment: what this ownership's loads, ticks and
    /// publications are told apart by.
    pub epoch: u64,
    /// The epoch its commits carry: `epoch`, until a reset that gave up on a flush renews
    /// it (`StateStore::renew`) so that flush's commit, should it still come, is fenced.
    pub fence: u64,
    /// A renewal asked for and not answered: it may have landed, so nothing is committed
    /// until it is settled ([`Pipeline::settle_renewal`]).
    pub renewal: Option<PendingRenewal>,
    /// Next offset per topic: every record below it was handed over (actor, dead letter
    /// or the stalled queue).
    pub next: BTreeMap<String, i64>,
    /// Next offset per topic as stored with the last successful snapshot.
    pub durable: BTreeMap<String, i64>,
    pub partners: HashMap<String, Slot>,
    /// Partners with events applied since their last snapshot: the next flush must take
    /// them all, since its offsets cover their events.
    pub dirty: HashSet<String>,
    /// Partners changed by time alone (a ladder calming down, a quota month, a control
    /// fact): no offset depends on them, so a flush takes what fits under
    /// [`MAX_FLUSH_PARTNERS`] and leaves the rest for the next one.
    pub ticked: HashSet<String>,
    pub stalled: VecDeque<Sourced>,
    /// Dead letters the next flush must see acknowledged before it stores their offsets.
    pub pending_dlq: Vec<PendingDeadLetter>,
    pub unflushed: usize,
    pub paused: bool,
    pub last_flush: Instant,
    pub retry_at: Instant,
    pub failures: u32,
    /// Newest event time routed on this partition (the event-time watermark) and when the
    /// last record arrived, so a silent partition's watermark can follow the wall clock.
    pub watermark: Option<DateTime<Utc>>,
    pub last_record: Instant,
    /// When reading this partition last (re)started (assignment, reset): fetch statistics
    /// from before it describe a position given up.
    pub reading_since: Instant,
    /// Outbox items from durable snapshots on their way out, in outbox order.
    pub to_publish: PublishQueue,
    /// Control offset up to which this partition's partners with money-moving facts
    /// (MDF, credit purchases, tenants) were woken to apply them.
    pub control_cursor: i64,
    /// Partners the previous owner left awake (an outbox to publish, a level only time
    /// brings back) still to start; a silent partner would otherwise wait for an event.
    pub to_wake: Vec<String>,
    /// Partners to start at a wall-clock time (a pilot's expiry), as durable in the store.
    pub wakes: WakeSchedule,
    /// The flush on its way to the store, if any (one at a time per partition).
    pub flushing: Option<InFlight>,
    /// A partner of this partition has an outbox item waiting: flush without waiting for
    /// the interval, so a decision reaches the data plane as soon as it can be durable.
    pub urgent: bool,
    /// A publication's data-plane stage is on its way (one at a time, so a later decision
    /// never reaches the data plane before an earlier one; broker stages overlap).
    pub publishing: bool,
    /// After a publication that got nothing out, the next waits until then.
    pub retry_publish_at: Instant,
    /// Partners whose state is being read from the store, with their events meanwhile (in
    /// offset order). The partition is not flushed until they are applied.
    pub loading: HashMap<String, Vec<Sourced>>,
    /// After a load that failed, stalled events are not delivered again until then.
    pub load_retry_at: Instant,
    /// Bumped by every reset: loads started before one are stale.
    pub resets: u64,
    /// Flushes started so far (numbers them).
    pub flush_seq: u64,
    /// A flush that is due but waits for loads, with the records polled since.
    pub barrier: Option<Barrier>,
    /// Assigned with no stored offsets while the group's commits were unreadable: new, or
    /// a store that lost its data. Paused, and nothing applied, until the group says which
    /// ([`Pipeline::check_unverified`]).
    pub unverified: bool,
}

/// A flush decided while partners of the partition were loading. Its offsets are the
/// partition's at that moment; records polled after wait here, so the loads it waits for
/// are the ones already started, and it starts a load round trip later at most. Released
/// (delivered in order, behind the flush's snapshot requests) when the flush starts.
pub(super) struct Barrier {
    pub offsets: BTreeMap<String, i64>,
    pub held: Vec<Sourced>,
    /// The partners of `held` (each becomes dirty once they are delivered).
    pub held_partners: HashSet<String>,
    pub dead_letters: Vec<PendingDeadLetter>,
}

impl Barrier {
    pub fn new(offsets: BTreeMap<String, i64>) -> Self {
        Barrier {
            offsets,
            held: Vec::new(),
            held_partners: HashSet::new(),
            dead_letters: Vec::new(),
        }
    }

    /// Holds a record until the barrier's flush has started.
    pub fn hold(&mut self, record: Sourced) {
        let partner = record.event.partner_id();
        if !self.held_partners.contains(partner) {
            self.held_partners.insert(partner.to_owned());
        }
        self.held.push(record);
    }

    /// Records polled behind the barrier (they count toward the unflushed bound).
    pub fn records(&self) -> usize {
        self.held.len() + self.dead_letters.len()
    }
}

/// A renewal of a partition's epoch sent without an answer.
pub(super) struct PendingRenewal {
    /// The epoch it moves on from.
    pub held: u64,
    /// What makes a retry the same renewal.
    pub token: String,
}

/// What asking the store about a pending renewal came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settled {
    /// Renewed (or nothing was pending): the partition commits under its new epoch.
    Renewed,
    /// Another owner has the partition: it was let go.
    LetGo,
    /// No answer yet: still pending.
    Unanswered,
}

/// What a partition's flush in flight holds back.
pub(super) struct InFlight {
    /// Its number among this partition's flushes.
    pub seq: u64,
    /// Events it makes durable (back-pressure counts them until it ends).
    pub events: usize,
    /// Partners it snapshotted: they stay live until it ends, since a failed write is
    /// written again from their actors.
    pub partners: HashSet<String>,
}

/// Work the io runtime finished for the consumer thread.
pub(super) enum Completion {
    Flush(super::flush::FlushJob, super::flush::FlushResult),
    /// A publication's data-plane stage ended: of the items handed to it (`ids`, in
    /// order), the first `passed` are on the data plane; the rest wait to be tried again.
    DataPlane {
        partition: i32,
        epoch: u64,
        ids: Vec<String>,
        passed: usize,
    },
    /// Partner states read for events waiting on them: (partition, epoch, resets).
    Loaded((i32, u64, u64), Vec<(String, Option<PartnerState>)>),
    /// A round of ticks ended: each partition's (epoch, resets) when it began, and the
    /// partners whose state it changed.
    Ticked(HashMap<i32, (u64, u64)>, Vec<TickChange>),
    /// Its broker stage ended: `done[i]` says whether `ids[i]` is fully published.
    Produced {
        partition: i32,
        epoch: u64,
        ids: Vec<String>,
        done: Vec<bool>,
    },
}

/// Most partners one flush snapshots. A flush's write is one Redis script, and Redis runs
/// nothing else meanwhile: 48,000 fresh partners in one write held every other client
/// (loads, decisions, kill switches) for a second, their calls timed out and were retried,
/// and the retries piled up in memory. A partition that may have half of this many
/// partners for its next flush flushes at once; at the whole of it, it stops fetching
/// until its flush has started. Stopping costs a refetch (librdkafka drops what it had
/// prefetched), so the bound sits above what a partition meets in a normal start (10,000
/// new partners over 8 partitions never reach it); at 1,024, counting held records rather
/// than their partners, `bench-e2e` fell from 0.75 to 0.28 of the bare consumer. Offsets
/// stay exact: a flush still snapshots every partner with events below its offsets; only
/// partners changed by time alone wait for a later one.
pub(super) const MAX_FLUSH_PARTNERS: usize = 4_096;

/// Most partners one tick round wakes from the store for their partition (the rest wait
/// for the next rounds): the loads wait on the consumer thread.
const MAX_WAKE_PER_ROUND: usize = 1_000;

/// Most outbox items of a partition waiting to be published. Publication needs the audit
/// log and the data plane; while they lag, the partition stops fetching rather than
/// queueing the decisions of every later event in memory.
pub(super) const MAX_PUBLISH_BACKLOG: usize = 10_000;

/// A round of ticks taking longer than this is logged (and `warden_tick_round_age_seconds`
/// shows one in flight): rounds normally end within a second.
const LONG_ROUND: Duration = Duration::from_secs(10);

/// Rounds of ticks start this far apart (one at a time).
const ROUND_PERIOD: Duration = Duration::from_secs(1);

/// Whether a new round of ticks starts now: none in flight, and a [`ROUND_PERIOD`] since
/// the last one started. Asked on every loop, so a round that overran its period is
/// followed at once; asked once a second, a 1.1 s round made the period 2 s.
fn round_due(in_flight: bool, since_last_start: Duration) -> bool {
    !in_flight && since_last_start >= ROUND_PERIOD
}

impl PartitionState {
    pub fn new(epoch: u64, offsets: BTreeMap<String, i64>) -> Self {
        let now = Instant::now();
        PartitionState {
            epoch,
            fence: epoch,
            renewal: None,
            next: offsets.clone(),
            durable: offsets,
            partners: HashMap::new(),
            dirty: HashSet::new(),
            ticked: HashSet::new(),
            stalled: VecDeque::new(),
            pending_dlq: Vec::new(),
            unflushed: 0,
            paused: false,
            last_flush: now,
            retry_at: now,
            failures: 0,
            watermark: None,
            last_record: now,
            reading_since: now,
            to_publish: PublishQueue::default(),
            control_cursor: 0,
            to_wake: Vec::new(),
            wakes: WakeSchedule::default(),
            flushing: None,
            urgent: false,
            publishing: false,
            retry_publish_at: now,
            loading: HashMap::new(),
            load_retry_at: now,
            resets: 0,
            flush_seq: 0,
            barrier: None,
            unverified: false,
        }
    }

    /// Events polled and not yet durable: applied, in flight or held behind a barrier.
    pub fn not_durable(&self) -> usize {
        self.unflushed
            + self.flushing.as_ref().map_or(0, |f| f.events)
            + self.barrier.as_ref().map_or(0, Barrier::records)
    }

    /// Stops fetching partition `p` for back-pressure (`warden_backpressure_total`),
    /// unless it is paused already.
    pub fn pause_for_backpressure<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        topics: &TopicMap,
        p: i32,
    ) {
        if !self.paused {
            METRICS.mailbox_full.inc();
            self.paused = true;
            pause(consumer, topics, p, true);
        }
    }

    /// The watermark ticks use: the newest event time, moved on by the wall clock while
    /// nothing arrives (CONTRACT §3: a silent partner still calms down). Only once the
    /// partition was read to its end (`caught_up`): a partition behind a backlog, or a new
    /// owner's before its first fetch, is waiting for older events, not silent.
    pub fn tick_watermark(&self, idle_after: Duration, caught_up: bool) -> Option<DateTime<Utc>> {
        let w = self.watermark?;
        let idle = self.last_record.elapsed();
        if caught_up && idle > idle_after {
            chrono::Duration::from_std(idle - idle_after)
                .ok()
                .map(|d| w + d)
        } else {
            Some(w)
        }
    }

    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
            || !self.ticked.is_empty()
            || !self.pending_dlq.is_empty()
            || self.next != self.durable
    }

    /// The partners the next flush snapshots: every dirty one, and as many of those
    /// changed by time alone as fit under [`MAX_FLUSH_PARTNERS`]. A storm of ladders
    /// calming down at once (every partner throttled in the same second) is written over
    /// several flushes instead of one commit that holds Redis for seconds.
    pub fn take_flush_partners(&mut self) -> Vec<String> {
        let mut taken = std::mem::take(&mut self.dirty);
        let room = MAX_FLUSH_PARTNERS.saturating_sub(taken.len());
        let mut moved = 0;
        self.ticked.retain(|id| {
            if taken.contains(id) {
                false
            } else if moved < room {
                moved += 1;
                taken.insert(id.clone());
                false
            } else {
                true
            }
        });
        taken.into_iter().collect()
    }

    /// Whether the partition holds as much as it may before it stops fetching: events not
    /// durable, partners for its next flush, or items waiting to be published.
    pub fn over_bounds(&self, max_unflushed: usize) -> bool {
        self.not_durable() >= max_unflushed
            || self.partners_to_flush() >= MAX_FLUSH_PARTNERS
            || self.to_publish.len() >= MAX_PUBLISH_BACKLOG
    }

    /// About how many partners the next flush will take: the dirty ones, those loading,
    /// and those with records held behind a barrier (dirty once delivered). Counting only
    /// the dirty ones let an influx of new partners (every one loads, later records wait
    /// behind a barrier) make flushes of tens of thousands of partners; counting held
    /// records rather than their partners paused a partition on one busy partner's
    /// records. (Stalled records pause their partition by themselves.)
    fn partners_to_flush(&self) -> usize {
        self.dirty.len()
            + self.loading.len()
            + self.barrier.as_ref().map_or(0, |b| b.held_partners.len())
    }

    /// Whether enough is pending to flush without waiting for the interval.
    pub fn flush_pressing(&self, max_unflushed: usize) -> bool {
        self.urgent || pressing(self.unflushed, self.partners_to_flush(), max_unflushed)
    }
}

/// Whether a partition with `unflushed` events not yet durable and `partners` for its
/// next flush flushes at once rather than at its interval: at half of either bound, so
/// the flush starts well before the partition would stop fetching. Public for the
/// in-process bench, which flushes as the daemon does.
pub fn pressing(unflushed: usize, partners: usize, max_unflushed: usize) -> bool {
    unflushed >= max_unflushed / 2 || partners >= MAX_FLUSH_PARTNERS / 2
}

/// `events` grouped by partner: each partner once, in the order of its first event, with
/// its events in their order. Public for the in-process bench, which groups as the
/// daemon does.
///
/// A poll batch spreads over many partners (with 10k partners, a 2,000-record batch has
/// one or two events for most of them), so this runs about once per event: one hash of
/// the partner id per event, one copy of each id, and each group allocated once at its
/// final size.
pub fn group_by_partner(events: Vec<Sourced>) -> Vec<(String, Vec<Sourced>)> {
    let mut slot_of = Vec::with_capacity(events.len());
    let mut groups: Vec<(String, Vec<Sourced>)> = {
        let mut slots: HashMap<&str, usize> = HashMap::new();
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for e in &events {
            let id = e.event.partner_id();
            let slot = *slots.entry(id).or_insert_with(|| {
                seen.push((id, 0));
                seen.len() - 1
            });
            seen[slot].1 += 1;
            slot_of.push(slot);
        }
        seen.into_iter()
            .map(|(id, n)| (id.to_owned(), Vec::with_capacity(n)))
            .collect()
    };
    for (e, slot) in events.into_iter().zip(slot_of) {
        groups[slot].1.push(e);
    }
    groups
}

/// Where the pipeline writes besides the state store.
pub struct PipelineOutputs {
    pub dlq: DeadLetterSink,
    pub publisher: DecisionPublisher,
}

pub struct Pipeline {
    pub(super) settings: PipelineSettings,
    pub(super) topics: TopicMap,
    pub(super) store: Arc<dyn StateStore>,
    pub(super) registry: Arc<Registry>,
    pub(super) io: tokio::runtime::Handle,
    pub(super) dlq: DeadLetterSink,
    pub(super) publisher: DecisionPublisher,
    pub(super) health: Arc<Health>,
    pub(super) partitions: BTreeMap<i32, PartitionState>,
    pub(super) last_maintenance: Instant,
    /// When partitions assigned unverified last had the group's commits read.
    pub(super) unverified_checked: Instant,
    /// A round of ticks was sent and has not ended: no new round until it has (and no
    /// passivation: a partner the tick changed must not be stopped unsnapshotted).
    pub(super) ticking: bool,
    /// A drain is under way (revocation, shutdown): every partition is let go after it.
    pub(super) draining: bool,
    /// The drain let a partition go unflushed (a lost actor): it did not end durable.
    pub(super) drain_lost: bool,
    /// When the round in flight (or the last one) was started.
    pub(super) round_started: Instant,
    /// The control table's next offset when the last round began: a round that finds it
    /// moved ticks every partner, so each catches up the facts (a tenant, credits, a
    /// quota, an FX rate) without waiting for its next event or due time.
    pub(super) control_ticked: Option<i64>,
    /// How far each partition was read, from librdkafka's statistics: the lag gauge, and
    /// whether a silent partition's watermark may follow the wall clock.
    pub(super) fetch_progress: FetchProgress,
    /// Flushes and publications ended on the io runtime, taken in by the consumer thread.
    pub(super) completions: (mpsc::Sender<Completion>, mpsc::Receiver<Completion>),
}

impl Pipeline {
    pub fn new(
        settings: PipelineSettings,
        topics: TopicMap,
        store: Arc<dyn StateStore>,
        registry: Arc<Registry>,
        io: tokio::runtime::Handle,
        outputs: PipelineOutputs,
        health: Arc<Health>,
    ) -> Self {
        let PipelineOutputs { dlq, publisher } = outputs;
        Pipeline {
            settings,
            topics,
            store,
            registry,
            io,
            dlq,
            publisher,
            health,
            partitions: BTreeMap::new(),
            last_maintenance: Instant::now(),
            unverified_checked: Instant::now(),
            ticking: false,
            draining: false,
            drain_lost: false,
            round_started: Instant::now(),
            control_ticked: None,
            fetch_progress: FetchProgress::default(),
            completions: mpsc::channel(),
        }
    }

    /// [`watermark_ceiling`] at the wall clock now.
    fn watermark_ceiling_now(&self) -> DateTime<Utc> {
        watermark_ceiling(Utc::now(), self.settings.limits.max_clock_skew)
    }

    /// Decodes a poll batch and hands each partner its events.
    pub fn route<C: ConsumerContext>(
        &mut self,
        batch: &[BorrowedMessage<'_>],
        consumer: &BaseConsumer<C>,
    ) {
        let mut per_partition: BTreeMap<i32, Vec<Sourced>> = BTreeMap::new();
        // One clock read for the batch: it was polled at once.
        let polled_at = Instant::now();
        let ceiling = self.watermark_ceiling_now();
        for m in batch {
            let Some(kind) = self.topics.kind_of(m.topic()) else {
                continue;
            };
            let p = m.partition();
            let Some(ps) = self.partitions.get_mut(&p) else {
                continue;
            };
            if ps.unverified {
                // Not applied, nor counted as read: a verified partition is read again
                // from its first record.
                if !ps.paused {
                    ps.paused = true;
                    pause(consumer, &self.topics, p, true);
                }
                continue;
            }
            match ps.next.get_mut(m.topic()) {
                Some(next) => *next = m.offset() + 1,
                None => {
                    ps.next.insert(m.topic().to_owned(), m.offset() + 1);
                }
            }
            ps.last_record = polled_at;
            if ps.barrier.is_none() {
                ps.unflushed += 1;
            }
            let decoded = check_partition(m.key(), p, self.settings.partitions).and_then(|()| {
                decode_partner_record(
                    kind,
                    m.key(),
                    m.payload(),
                    m.timestamp().to_millis(),
                    &self.settings.limits,
                )
            });
            match decoded {
                Ok(mut event) => {
                    place_in_time(&mut event, &mut ps.watermark, ceiling);
                    let sourced = Sourced {
                        topic: kind,
                        partition: p,
                        offset: m.offset(),
                        event,
                    };
                    match ps.barrier.as_mut() {
                        Some(b) => b.hold(sourced),
                        None => per_partition.entry(p).or_default().push(sourced),
                    }
                }
                Err(rejection) => {
                    METRICS.dead_letter(kind, rejection.reason);
                    let dead = self.dlq.start(
                        &self.io,
                        DeadLetter {
                            source_topic: m.topic().to_owned(),
                            partition: p,
                            offset: m.offset(),
                            reason: rejection.reason,
                            detail: rejection.detail,
                            payload: m.payload().unwrap_or_default().to_vec(),
                        },
                    );
                    match ps.barrier.as_mut() {
                        Some(b) => b.dead_letters.push(dead),
                        None => ps.pending_dlq.push(dead),
                    }
                }
            }
        }
        for (p, events) in per_partition {
            self.deliver(p, events, false, consumer);
        }
    }

    /// Retries every stalled queue; resumes partitions whose queue drained.
    pub fn retry_stalled<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let now = Instant::now();
        let stalled: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, ps)| !ps.stalled.is_empty() && now >= ps.load_retry_at)
            .map(|(p, _)| *p)
            .collect();
        for p in stalled {
            let Some(ps) = self.partitions.get_mut(&p) else {
                continue;
            };
            let events: Vec<Sourced> = ps.stalled.drain(..).collect();
            self.deliver(p, events, true, consumer);
        }
        self.resume_if_clear(consumer);
    }

    /// Hands `events` (one partition, offset order) to their actors, starting or reviving
    /// actors as needed. Whatever cannot be handed over now joins the stalled queue and the
    /// partition is paused: back-pressure reaches Kafka, never an unbounded queue.
    pub(super) fn deliver<C: ConsumerContext>(
        &mut self,
        p: i32,
        events: Vec<Sourced>,
        retry: bool,
        consumer: &BaseConsumer<C>,
    ) {
        let Some(ps) = self.partitions.get_mut(&p) else {
            return;
        };
        if !retry && !ps.stalled.is_empty() {
            ps.stalled.extend(events);
            return;
        }
        let mut to_load = Vec::new();
        let mut actor_lost = false;
        for (id, group) in group_by_partner(events) {
            // A partner without a live actor waits, with its events, for its state to be
            // read from the store; the other partners' events go on meanwhile.
            if let Some(pending) = ps.loading.get_mut(&id) {
                pending.extend(group);
                continue;
            }
            let Some(slot) = ps.partners.get_mut(&id) else {
                ps.loading.insert(id.clone(), group);
                to_load.push(id);
                continue;
            };
            let n = group.len() as i64;
            match slot.addr.try_send(ApplyBatch(group)) {
                Ok(()) => {
                    METRICS.mailbox_events.add(n);
                    slot.last_routed = Instant::now();
                    ps.dirty.insert(id);
                }
                Err(SendError::Full(ApplyBatch(group))) => {
                    ps.stalled.extend(group);
                }
                Err(SendError::Closed(ApplyBatch(group))) => {
                    tracing::error!(partner_id = %id, partition = p, "partner actor stopped unexpectedly");
                    ps.stalled.extend(group);
                    actor_lost = true;
                }
            }
        }
        if !to_load.is_empty() {
            let (store, done) = (self.store.clone(), self.completions.0.clone());
            let key = (p, ps.epoch, ps.resets);
            self.io.spawn(async move {
                let states = load_states(store, p, to_load).await;
                let _ = done.send(Completion::Loaded(key, states));
            });
        }
        if actor_lost {
            self.reset_partition(p, consumer);
            return;
        }
        if !ps.stalled.is_empty() {
            ps.pause_for_backpressure(consumer, &self.topics, p);
        }
    }

    /// Loads the durable state of partners without a live actor, waiting for it (the
    /// control wake-up path; events load without waiting, see [`Self::deliver`]). A partner
    /// whose state cannot be read now is left out.
    fn load_partners(&self, p: i32, ids: &[String]) -> Vec<(String, PartnerState)> {
        if ids.is_empty() {
            return Vec::new();
        }
        let loaded = self
            .io
            .block_on(load_states(self.store.clone(), p, ids.to_vec()));
        loaded
            .into_iter()
            .filter_map(|(id, state)| state.map(|s| (id, s)))
            .collect()
    }

    /// Partner states loaded for events that were waiting for them: each partner's actor
    /// starts and gets its events; a partner whose state could not be read puts its events
    /// at the head of the stalled queue (in their order), to be loaded again.
    fn loaded<C: ConsumerContext>(
        &mut self,
        (p, epoch, resets): (i32, u64, u64),
        states: Vec<(String, Option<PartnerState>)>,
        consumer: &BaseConsumer<C>,
    ) {
        let ceiling = self.watermark_ceiling_now();
        let Some(ps) = self.partitions.get_mut(&p) else {
            return;
        };
        if ps.epoch != epoch || ps.resets != resets {
            return;
        }
        for (id, state) in states {
            let Some(pending) = ps.loading.remove(&id) else {
                continue;
            };
            let Some(state) = state else {
                ps.load_retry_at = Instant::now() + Duration::from_millis(100);
                requeue_front(&mut ps.stalled, pending);
                continue;
            };
            if !ps.partners.contains_key(&id) {
                start_loaded(ps, &self.registry, vec![(id.clone(), state)], ceiling);
            }
            let Some(slot) = ps.partners.get_mut(&id) else {
                requeue_front(&mut ps.stalled, pending);
                continue;
            };
            let n = pending.len() as i64;
            match slot.addr.try_send(ApplyBatch(pending)) {
                Ok(()) => {
                    METRICS.mailbox_events.add(n);
                    ps.dirty.insert(id);
                }
                Err(SendError::Full(ApplyBatch(pending)))
                | Err(SendError::Closed(ApplyBatch(pending))) => {
                    requeue_front(&mut ps.stalled, pending);
                }
            }
        }
        if !ps.stalled.is_empty() {
            ps.pause_for_backpressure(consumer, &self.topics, p);
        }
    }

    fn resume_if_clear<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        for (p, ps) in self.partitions.iter_mut() {
            if ps.paused
                && !ps.unverified
                && ps.stalled.is_empty()
                && ps.loading.is_empty()
                && !ps.over_bounds(self.settings.max_unflushed)
            {
                ps.paused = false;
                // Fetching starts again from here: statistics from before say nothing.
                ps.reading_since = Instant::now();
                pause(consumer, &self.topics, *p, false);
            }
        }
    }

    /// Forgets everything not durable about `p` and reads it again from the stored
    /// offsets: the way back from a lost actor, without losing or doubling an event.
    /// Returns whether reading was moved back there (a failed seek is logged).
    pub(super) fn reset_partition<C: ConsumerContext>(
        &mut self,
        p: i32,
        consumer: &BaseConsumer<C>,
    ) -> bool {
        // Draining, the partition is let go anyway: nothing more of it can become durable,
        // and waiting here for its flush would hold the rebalance callback (or shutdown).
        // Its next owner reads it from the store.
        if self.draining {
            tracing::warn!(
                partition = p,
                "lost actor while draining; letting the partition go unflushed"
            );
            self.drain_lost = true;
            self.let_go(p, consumer);
            return false;
        }
        // A flush in flight may still make later offsets durable: re-read from the end of
        // what is durable once it has ended, never from before it.
        let deadline = Instant::now() + self.settings.flush_give_up;
        while self
            .partitions
            .get(&p)
            .is_some_and(|ps| ps.flushing.is_some())
        {
            let now = Instant::now();
            if now >= deadline {
                tracing::error!(
                    partition = p,
                    "flush in flight did not end; fencing it and resetting anyway"
                );
                if !self.fence_abandoned_flush(p, consumer) {
                    return false;
                }
                break;
            }
            self.wait_for_completion(consumer, deadline - now);
        }
        let (awake, wakes, offsets) = self.io.block_on(async {
            tokio::join!(
                self.store.awake_partners(p),
                self.store.wake_schedule(p),
                self.store.offsets(p)
            )
        });
        let durable_awake = match awake {
            Ok(ids) => Some(ids),
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "awake partners unreadable at reset; waking the live ones only");
                None
            }
        };
        let Some(ps) = self.partitions.get_mut(&p) else {
            return false;
        };
        // A commit reported failed may have been applied all the same (a timeout, replicas
        // that did not confirm): the stored offsets, with the snapshots stored with them,
        // are the truth (CONTRACT §9). Behind what was acknowledged, the store lost
        // writes; empty, it lost everything, which is never replayed silently.
        match offsets {
            // A topic it had offsets for is gone (all of them, for an emptied store): read
            // from its start, it would replay silently.
            Ok(stored) if ps.durable.keys().any(|t| !stored.contains_key(t)) => {
                self.store_lost(p, "it acknowledged writes for");
                self.let_go(p, consumer);
                return false;
            }
            Ok(stored) => {
                if !stored_is_newer(&stored, &ps.durable) {
                    tracing::error!(partition = p, ?stored, durable = ?ps.durable, "stored offsets are behind what the store acknowledged (lost writes: a failover?); reading from the store's");
                }
                ps.durable = stored;
            }
            Err(e) => {
                METRICS.store_errors.with_label_values(&["load"]).inc();
                tracing::warn!(partition = p, error = %e, "stored offsets unreadable at reset; reading from the last acknowledged ones");
            }
        }
        ps.flushing = None;
        ps.loading.clear();
        ps.resets += 1;
        // Replay brings back only partners with records past the durable offsets: those
        // that must stay live with no event, or with an outbox to publish, are woken instead.
        // The queue first, in its order (money first), then the rest.
        let keep_live = ps
            .partners
            .iter()
            .filter(|(_, slot)| slot.due.keep_live())
            .map(|(id, _)| id.clone());
        let rest: Vec<String> = keep_live.chain(durable_awake.unwrap_or_default()).collect();
        ps.to_wake = each_once(std::mem::take(&mut ps.to_wake).into_iter().chain(rest));
        // Partners woken for their time lose what that waking did: wake them again. So do
        // those woken for money facts: the control cursor starts over, as for a new owner.
        match wakes {
            Ok(stored) => ps.wakes = WakeSchedule::from_store(stored),
            Err(_) => ps.wakes.rearm(),
        }
        ps.control_cursor = 0;
        for id in ps.partners.keys() {
            self.registry.stop(id);
        }
        ps.partners.clear();
        ps.dirty.clear();
        ps.ticked.clear();
        ps.stalled.clear();
        ps.pending_dlq.clear();
        ps.barrier = None;
        ps.unflushed = 0;
        ps.next = ps.durable.clone();
        ps.reading_since = Instant::now();
        let mut moved = true;
        for topic in self.topics.keyed() {
            let offset = ps
                .durable
                .get(topic)
                .map(|o| Offset::Offset(*o))
                .unwrap_or(Offset::Beginning);
            if let Err(e) = consumer.seek(topic, p, offset, Duration::from_secs(5)) {
                tracing::error!(topic, partition = p, error = %e, "seek after reset failed");
                moved = false;
            }
        }
        moved
    }

    /// Renews `p`'s epoch so that the flush in flight, given up on, can no longer commit:
    /// landing after the commits of the replay, its older snapshots and offsets would
    /// overwrite theirs, and the dedup ids the replay wrote would then take the events
    /// between as duplicates. Returns false when another owner has the partition (it is
    /// let go). A store that does not answer is asked again a few times; after that the
    /// reset goes on, and the partition commits nothing until the renewal is settled (it
    /// may have landed: committing under the old epoch would then be refused as fenced).
    fn fence_abandoned_flush<C: ConsumerContext>(
        &mut self,
        p: i32,
        consumer: &BaseConsumer<C>,
    ) -> bool {
        let Some(ps) = self.partitions.get_mut(&p) else {
            return false;
        };
        // One token for every attempt: a retry after a lost reply is the same renewal.
        ps.renewal = Some(PendingRenewal {
            held: ps.fence,
            token: format!("{:032x}", rand::random::<u128>()),
        });
        for attempt in 1..=RENEW_ATTEMPTS {
            match self.settle_renewal(p, consumer) {
                Settled::Renewed => return true,
                Settled::LetGo => return false,
                Settled::Unanswered if attempt < RENEW_ATTEMPTS => {
                    std::thread::sleep(RENEW_RETRY_PAUSE)
                }
                Settled::Unanswered => {}
            }
        }
        tracing::error!(
            partition = p,
            "the epoch's renewal is unanswered; resetting, and committing nothing of the \
             partition until it is settled"
        );
        true
    }

    /// Asks the store once more for `p`'s pending renewal (the same token: it may have
    /// landed already), and takes in the answer.
    pub(super) fn settle_renewal<C: ConsumerContext>(
        &mut self,
        p: i32,
        consumer: &BaseConsumer<C>,
    ) -> Settled {
        let Some((held, token)) = self
            .partitions
            .get(&p)
            .and_then(|ps| ps.renewal.as_ref())
            .map(|r| (r.held, r.token.clone()))
        else {
            return Settled::Renewed;
        };
        let started = Instant::now();
        let answer = self.io.block_on(self.store.renew(p, held, &token));
        METRICS.store_op("renew", started);
        match answer {
            Ok(fence) => {
                if let Some(ps) = self.partitions.get_mut(&p) {
                    ps.fence = fence;
                    ps.renewal = None;
                }
                Settled::Renewed
            }
            Err(e @ StoreError::Fenced { .. }) => {
                self.fenced(p, &e, consumer);
                Settled::LetGo
            }
            Err(e) => {
                METRICS.store_errors.with_label_values(&["renew"]).inc();
                if matches!(e, StoreError::Corrupt(_)) {
                    tracing::error!(partition = p, error = %e, "could not renew the epoch: the store holds data warden did not write");
                } else {
                    tracing::warn!(partition = p, error = %e, "could not renew the epoch");
                }
                Settled::Unanswered
            }
        }
    }

    /// A write of `p` was refused as fenced (`refusal`): another owner took the partition,
    /// and it is let go. An epoch of a *lower generation* than the one written is taken for
    /// a store that went back (a failover that lost writes, a restore), after which no
    /// rebalance will come for the partition: letting it go would leave it unread in
    /// silence. The same generation with another tag is another owner (`store::epoch`,
    /// which says when a lower generation is one too).
    pub(super) fn fenced<C: ConsumerContext>(
        &mut self,
        p: i32,
        refusal: &StoreError,
        consumer: &BaseConsumer<C>,
    ) {
        METRICS.fenced_writes.inc();
        if let StoreError::Fenced { epoch, current, .. } = refusal {
            if epoch::went_back(*epoch, *current) {
                self.store_went_back(p, *epoch, *current, consumer);
                return;
            }
        }
        tracing::warn!(partition = p, error = %refusal, "partition fenced: another owner took it; dropping it");
        self.let_go(p, consumer);
    }

    /// Partition `p`'s epoch in the store went back below the one this owner holds. It may
    /// be the epoch alone that was lost (taking a partition is not waited on by replicas),
    /// or state too: the partition is taken again, as on assignment, and read from the
    /// store's offsets, whose check at the reset tells a store that lost its data
    /// (unready, `WardenStoreLost`) from one that is only behind (logged).
    fn store_went_back<C: ConsumerContext>(
        &mut self,
        p: i32,
        held: u64,
        current: u64,
        consumer: &BaseConsumer<C>,
    ) {
        tracing::error!(
            partition = p,
            held,
            current,
            held_generation = epoch::generation(held),
            current_generation = epoch::generation(current),
            "the store's epoch went back below this owner's (a failover or a restore lost \
             writes): taking the partition again and reading it from the store"
        );
        let started = Instant::now();
        let taken = self.io.block_on(self.store.acquire(p));
        METRICS.store_op("acquire", started);
        match taken {
            Ok(fence) => {
                if let Some(ps) = self.partitions.get_mut(&p) {
                    ps.fence = fence;
                    ps.renewal = None;
                }
                self.reset_partition(p, consumer);
            }
            Err(e) => {
                METRICS.store_errors.with_label_values(&["acquire"]).inc();
                tracing::error!(partition = p, error = %e, "could not take the partition again; letting it go until the next rebalance");
                self.let_go(p, consumer);
            }
        }
    }

    /// The store has no offsets for partition `p` although it had some (`why`): it lost
    /// its data (CONTRACT §9). The instance goes unready; rebuilding is for an operator.
    pub(super) fn store_lost(&self, p: i32, why: &str) {
        tracing::error!(
            partition = p,
            "the store has no offsets for a partition {why}: the store lost its data; not \
             consuming this partition (RUNBOOK: WardenStoreLost)"
        );
        self.health
            .store_lost
            .store(true, std::sync::atomic::Ordering::SeqCst);
        METRICS.store_lost.set(1);
    }

    /// Stops reading partition `p` and forgets it, without writing anything.
    pub(super) fn let_go<C: ConsumerContext>(&mut self, p: i32, consumer: &BaseConsumer<C>) {
        self.drop_partition(p);
        pause(consumer, &self.topics, p, true);
    }

    /// Stops and forgets the actors of `p` (revocation, fencing). Nothing is written.
    pub(super) fn drop_partition(&mut self, p: i32) {
        for topic in self.topics.keyed() {
            let _ = METRICS
                .consumer_lag
                .remove_label_values(&[topic, &p.to_string()]);
        }
        if let Some(ps) = self.partitions.remove(&p) {
            for id in ps.partners.keys() {
                self.registry.stop(id);
            }
        }
    }

    /// Passivates idle partners, refreshes gauges. Cheap; called every loop, acts ≤ 1/s.
    pub fn record_fetch_stats(&mut self, topic: &str, partition: i32, stats: PartitionStats) {
        self.fetch_progress
            .record(topic, partition, stats, Instant::now());
    }

    pub fn maintenance(&mut self) {
        // Idle partners are passivated when a round ends (`ticked`).
        self.tick();
        if self.last_maintenance.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_maintenance = Instant::now();
        let round_age = if self.ticking {
            self.round_started.elapsed().as_secs_f64()
        } else {
            0.0
        };
        METRICS.tick_round_age_seconds.set(round_age);
        let mut unflushed = 0;
        let mut paused = 0;
        for (p, ps) in self.partitions.iter_mut() {
            unflushed += ps.not_durable();
            paused += ps.paused as i64;
            for topic in self.topics.keyed() {
                if let Some(high) = self.fetch_progress.high(topic, *p) {
                    let next = ps.next.get(topic).copied().unwrap_or(0);
                    METRICS
                        .consumer_lag
                        .with_label_values(&[topic, &p.to_string()])
                        .set((high - next).max(0));
                }
            }
        }
        METRICS.unflushed_events.set(unflushed as i64);
        METRICS.partitions_paused.set(paused);
        METRICS
            .partitions_assigned
            .set(self.partitions.len() as i64);
    }

    /// Stops the actors of `p` idle for `passivate_after` with nothing to write: not dirty,
    /// not changed by the last tick, not in a flush, no events waiting for them, nothing of
    /// their outbox on its way out (an actor stopped before it hears an item is published
    /// keeps it in its durable snapshot, and publishes it again at every revival).
    fn passivate_idle(&mut self, p: i32) {
        let Some(ps) = self.partitions.get_mut(&p) else {
            return;
        };
        let (idle, now) = (self.settings.passivate_after, Instant::now());
        let (dirty, ticked) = (&ps.dirty, &ps.ticked);
        let in_flight = ps.flushing.as_ref().map(|f| &f.partners);
        let held = ps.barrier.iter().flat_map(|b| b.held.iter());
        let stalled_ids: HashSet<&str> = ps
            .stalled
            .iter()
            .chain(held)
            .map(|s| s.event.partner_id())
            .collect();
        let publishing = ps.to_publish.partners();
        let registry = &self.registry;
        ps.partners.retain(|id, slot| {
            // A partner whose level only time brings back must keep ticking, events or
            // not, and one with lines waiting for an FX rate must be there when it comes.
            // (A pilot's expiry wakes it at its time: see `WakeSchedule`.)
            let keep = slot.due.keep_live()
                || dirty.contains(id)
                || ticked.contains(id)
                || in_flight.is_some_and(|f| f.contains(id))
                || stalled_ids.contains(id.as_str())
                || publishing.contains(id.as_str())
                || now.duration_since(slot.last_routed) < idle;
            if !keep {
                registry.stop(id);
                METRICS.passivations.inc();
            }
            keep
        });
    }

    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }
}

/// Pauses (or resumes) partition `p` of every keyed topic.
pub(super) fn pause<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &TopicMap,
    p: i32,
    pause: bool,
) {
    let mut tpl = TopicPartitionList::new();
    for t in topics.keyed() {
        tpl.add_partition(t, p);
    }
    let res = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = res {
        tracing::warn!(partition = p, pause, error = %e, "pause/resume failed");
    }
    if pause {
        tracing::debug!(partition = p, "partition paused (back-pressure)");
    }
}

impl Pipeline {
    /// Queues the outbox entries of durable snapshots for publication (once each).
    pub(super) fn queue_outbox(&mut self, p: i32, outboxes: Vec<(String, Vec<OutboxEntry>)>) {
        let Some(ps) = self.partitions.get_mut(&p) else {
            return;
        };
        for (partner, entries) in outboxes {
            for e in entries {
                let id = format!("{partner}:{}", e.n);
                if !ps.to_publish.contains(&id) {
                    let item = outgoing(id.clone(), &e);
                    ps.to_publish.push(partner.clone(), e.n, id, item);
                }
            }
        }
    }

    /// Tells each actor how many of its dedup ids the last durable write holds.
    pub(super) fn acknowledge_dedup(&mut self, p: i32, acks: Vec<(String, usize)>) {
        let Some(ps) = self.partitions.get(&p) else {
            return;
        };
        for (partner, n) in acks {
            if let Some(slot) = ps.partners.get(&partner) {
                // Losing one only means the ids are written again with the next flush.
                slot.addr.do_send(DedupDurable(n));
            }
        }
    }

    /// Starts publishing the waiting outbox items of every owned partition whose previous
    /// data-plane stage has ended: the data plane first, in order, then the broker.
    pub fn publish_decisions(&mut self) {
        let now = Instant::now();
        for (p, ps) in self.partitions.iter_mut() {
            if ps.publishing || now < ps.retry_publish_at {
                continue;
            }
            let (ids, items) = ps.to_publish.next_batch();
            if items.is_empty() {
                continue;
            }
            ps.publishing = true;
            let publisher = self.publisher.clone();
            let done = self.completions.0.clone();
            let (partition, epoch) = (*p, ps.epoch);
            self.io.spawn(async move {
                let staged = publisher.write_data_plane(&items).await;
                let passed = staged.items;
                let produced_ids = ids[..passed].to_vec();
                let _ = done.send(Completion::DataPlane {
                    partition,
                    epoch,
                    ids,
                    passed,
                });
                let produced = publisher.produce_staged(staged).await;
                let _ = done.send(Completion::Produced {
                    partition,
                    epoch,
                    ids: produced_ids,
                    done: produced,
                });
            });
        }
    }

    /// Moves the items of `ids` to their next stage (`next(i)` for the i-th), then tells
    /// each actor what is published in order, so its next snapshot drops it from the outbox.
    fn advance(&mut self, p: i32, epoch: u64, ids: &[String], next: impl Fn(usize) -> Stage) {
        let Some(ps) = self.partitions.get_mut(&p) else {
            return;
        };
        if ps.epoch != epoch {
            return;
        }
        // Only the published prefix leaves and is acknowledged: an actor keeps everything
        // from its first unpublished item on.
        let mut acks: HashMap<String, u64> = HashMap::new();
        for q in ps.to_publish.advance(ids, next) {
            let e = acks.entry(q.partner).or_default();
            *e = (*e).max(q.n);
        }
        for (partner, n) in acks {
            if let Some(slot) = ps.partners.get_mut(&partner) {
                // The partner is not marked for a flush here: its next tick does (at most a
                // second later), so in a decision storm a partner is rewritten once a
                // second, not after every publication. Until then it must not be
                // passivated, or its durable snapshot would keep the published entries:
                // an ack counts as activity.
                slot.addr.do_send(AckOutbox(n));
                slot.last_routed = Instant::now();
            }
        }
    }

    /// A data-plane stage ended; what it did not pass is tried again after a pause.
    fn data_plane_written(&mut self, p: i32, epoch: u64, ids: &[String], passed: usize) {
        if let Some(ps) = self.partitions.get_mut(&p) {
            if ps.epoch == epoch {
                ps.publishing = false;
                if passed < ids.len() {
                    // The data plane or the audit log is not taking them now.
                    ps.retry_publish_at = Instant::now() + Duration::from_millis(100);
                }
            }
        }
        self.advance(p, epoch, ids, |i| {
            if i < passed {
                Stage::Producing
            } else {
                Stage::Waiting
            }
        });
    }

    /// A broker stage ended; what the broker did not acknowledge is published again (its
    /// data-plane write is not repeated: the store knows its outbox id).
    fn produced(&mut self, p: i32, epoch: u64, ids: &[String], done: &[bool]) {
        self.advance(p, epoch, ids, |i| {
            if done.get(i).copied().unwrap_or(false) {
                Stage::Done
            } else {
                Stage::Waiting
            }
        });
    }

    /// Takes in every flush and publication that ended, without waiting.
    pub fn take_completions<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        while let Ok(c) = self.completions.1.try_recv() {
            self.completed(c, consumer);
        }
    }

    /// Waits up to `timeout` for one flush or publication to end, then takes in all that did.
    pub fn wait_for_completion<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        timeout: Duration,
    ) {
        if let Ok(c) = self.completions.1.recv_timeout(timeout) {
            self.completed(c, consumer);
            self.take_completions(consumer);
        }
    }

    fn completed<C: ConsumerContext>(&mut self, c: Completion, consumer: &BaseConsumer<C>) {
        match c {
            Completion::Flush(job, result) => self.flush_ended(job, result, consumer),
            Completion::Loaded(key, states) => self.loaded(key, states, consumer),
            Completion::Ticked(began, changed) => self.ticked(began, changed),
            Completion::DataPlane {
                partition,
                epoch,
                ids,
                passed,
            } => self.data_plane_written(partition, epoch, &ids, passed),
            Completion::Produced {
                partition,
                epoch,
                ids,
                done,
            } => self.produced(partition, epoch, &ids, &done),
        }
    }

    /// Whether the io runtime is working for this thread (a flush or a publication in
    /// flight), or a flush should start as soon as possible: the poll loop then polls
    /// briefly, so what ends is taken in without delay.
    pub fn busy(&self) -> bool {
        self.registry.shared().outbox_waiting.any()
            || self.partitions.values().any(|ps| {
                ps.flushing.is_some()
                    || ps.publishing
                    || ps.urgent
                    || ps.barrier.is_some()
                    || !ps.to_publish.is_empty()
                    || !ps.loading.is_empty()
            })
    }

    /// Marks the partitions of partners whose outbox grew: they flush without waiting.
    pub(super) fn mark_urgent(&mut self) {
        for id in self.registry.shared().outbox_waiting.take() {
            let p = partition_for_key(id.as_bytes(), self.settings.partitions);
            if let Some(ps) = self.partitions.get_mut(&p) {
                ps.urgent = true;
            }
        }
    }

    /// Shutdown: publishes what durable snapshots hold, until done or `deadline`.
    pub fn finish_publishing<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        deadline: Instant,
    ) {
        loop {
            self.take_completions(consumer);
            self.publish_decisions();
            let pending = self
                .partitions
                .values()
                .any(|ps| ps.publishing || !ps.to_publish.is_empty());
            let now = Instant::now();
            if !pending || now >= deadline {
                return;
            }
            self.wait_for_completion(consumer, (deadline - now).min(Duration::from_millis(20)));
        }
    }

    /// Lets time pass for the live partners with something due (ladder calm-down and
    /// dwell, windows sliding, quota months, pilot expiry: [`TickDue`]), or for every live
    /// partner when control facts arrived since the last round; partners whose state
    /// changed are snapshotted by the flushes after the round ends (`ticked`).
    ///
    /// Ticking every live partner every second kept the actors' threads busy at 100,000
    /// live partners, most of which had nothing due.
    ///
    /// Nothing waits for a reply per actor. Waiting on this thread held it for 40–50 ms
    /// every second at 9,600 live partners (half of every second at 100k); awaiting the
    /// replies on the io runtime instead cost that runtime more in wake-ups than the ticks
    /// cost the actors. Each tick holds the round, which ends when the last is handled or
    /// dropped ([`TickRound`]); one round at a time.
    pub fn tick(&mut self) {
        if !round_due(self.ticking, self.round_started.elapsed()) {
            return;
        }
        self.round_started = Instant::now();
        self.wake_sleepers();
        let began: HashMap<i32, (u64, u64)> = self
            .partitions
            .iter()
            .filter(|(_, ps)| !ps.partners.is_empty())
            .map(|(p, ps)| (*p, (ps.epoch, ps.resets)))
            .collect();
        if began.is_empty() {
            return;
        }
        self.ticking = true;
        let control_at = self.registry.shared().control.read().next_offset();
        let everyone = self.control_ticked != Some(control_at);
        self.control_ticked = Some(control_at);
        let done = self.completions.0.clone();
        let round = TickRound::new(move |changed| {
            let _ = done.send(Completion::Ticked(began, changed));
        });
        let wall_now = Utc::now();
        let (mut sent, mut not_due) = (0, 0);
        for (&partition, ps) in self.partitions.iter() {
            // No record yet: no event time to move ladders by, but control facts still apply.
            // A partition paused (back-pressure, a store outage) or with events waiting is
            // behind, whatever the statistics say: a paused fetch leaves its end stale.
            let caught_up = !ps.paused
                && ps.stalled.is_empty()
                && self.fetch_progress.caught_up(
                    partition,
                    ps.reading_since,
                    self.topics
                        .keyed()
                        .into_iter()
                        .map(|t| (t, ps.next.get(t).copied().unwrap_or(-1))),
                );
            let watermark = ps.tick_watermark(Duration::from_secs(2), caught_up);
            for slot in ps.partners.values() {
                // A due time read before the actor handled its queued batches is at most
                // one round late: the batches' events judge the partner themselves.
                if !everyone && !slot.due.is_due(watermark) {
                    not_due += 1;
                    continue;
                }
                sent += 1;
                // Queued behind the batches routed so far; a stopped actor's mailbox drops
                // it, which still counts toward the round's end.
                slot.addr.do_send(Tick {
                    watermark,
                    wall_now,
                    partition,
                    round: round.clone(),
                });
            }
        }
        METRICS.ticks_sent.inc_by(sent);
        METRICS.ticks_not_due.inc_by(not_due);
    }

    /// A round of ticks ended: the partners it changed join the next flushes, and the
    /// idle ones it did not change are passivated, in each partition not revoked or reset
    /// since the round began.
    fn ticked(&mut self, began: HashMap<i32, (u64, u64)>, changed: Vec<TickChange>) {
        self.ticking = false;
        let took = self.round_started.elapsed();
        METRICS.tick_round_seconds.observe(took.as_secs_f64());
        if took > LONG_ROUND {
            tracing::warn!(
                seconds = took.as_secs_f64(),
                "a round of ticks took long: some partner's mailbox was backed up, and \
                 time-driven changes waited for it"
            );
        }
        let current =
            |ps: &PartitionState, epoch: u64, resets: u64| ps.epoch == epoch && ps.resets == resets;
        for change in changed {
            let p = change.partition;
            let (Some(&(epoch, resets)), Some(ps)) = (began.get(&p), self.partitions.get_mut(&p))
            else {
                continue;
            };
            if !current(ps, epoch, resets) || !ps.partners.contains_key(&change.partner_id) {
                continue;
            }
            // A decision flushes its partition without waiting, as one from an event does
            // (a flush started before the round ended did not take this partner).
            ps.urgent |= change.decided;
            if !ps.dirty.contains(&change.partner_id) {
                ps.ticked.insert(change.partner_id);
            }
        }
        for (p, (epoch, resets)) in began {
            if self
                .partitions
                .get(&p)
                .is_some_and(|ps| current(ps, epoch, resets))
            {
                self.passivate_idle(p);
            }
        }
    }
}

/// The furthest a partition's watermark may run ahead of the wall clock: the skew an
/// event's `ts` may have. A producer whose clock runs ahead sets its records' timestamps
/// ahead too, so the decode check against the record timestamp passes; its events still
/// apply to its own partner, but must not move every other partner of the partition into
/// the future (their windows would drop their real events as too old, their quota month
/// could roll).
fn watermark_ceiling(wall_now: DateTime<Utc>, skew: chrono::Duration) -> DateTime<Utc> {
    wall_now.checked_add_signed(skew).unwrap_or(wall_now)
}

/// A usage event time past `ceiling` (the wall clock plus the skew allowed) counts at
/// the ceiling. Its requests are counted all the same, but one event from a host whose
/// clock runs ahead must not move its partner's enforcement clock hours into the future:
/// the quota month would roll and the partner's real events would then count as late (out
/// of the month, the windows and the burst second). Invoices keep their `ts`: it dates
/// their money.
fn clamp_usage_ts(event: &mut PartnerEvent, ceiling: DateTime<Utc>) {
    if let PartnerEvent::Usage(e) = event {
        e.ts = e.ts.min(ceiling);
    }
}

/// Where a decoded event stands in event time: a usage `ts` past `ceiling` counts at it
/// ([`clamp_usage_ts`]), and the partition's watermark moves to the event, not past it.
fn place_in_time(
    event: &mut PartnerEvent,
    watermark: &mut Option<DateTime<Utc>>,
    ceiling: DateTime<Utc>,
) {
    clamp_usage_ts(event, ceiling);
    advance_watermark(watermark, event.ts(), ceiling);
}

/// Moves `watermark` to `ts` if later, but not past `ceiling`.
fn advance_watermark(
    watermark: &mut Option<DateTime<Utc>>,
    ts: DateTime<Utc>,
    ceiling: DateTime<Utc>,
) {
    let next = ts.min(ceiling);
    if watermark.is_none_or(|w| next > w) {
        *watermark = Some(next);
    }
}

/// Starts the actors of partners just loaded from the store. One whose outbox holds
/// entries made durable before a crash but not yet published is marked dirty, so the next
/// flush publishes them. The partition's watermark is raised to the event time their
/// ladders had run to: a silent partition's watermark must go on from where the previous
/// owner left it (CONTRACT §3), not stay unknown until a record comes, or its ladders never
/// calm down.
fn start_loaded(
    ps: &mut PartitionState,
    registry: &Registry,
    loaded: Vec<(String, PartnerState)>,
    ceiling: DateTime<Utc>,
) {
    for (id, state) in loaded {
        if !state.outbox().is_empty() {
            ps.dirty.insert(id.clone());
        }
        if let Some(clock) = state.event_clock() {
            advance_watermark(&mut ps.watermark, clock, ceiling);
        }
        let (addr, due) = registry.start(state);
        ps.partners.insert(
            id,
            Slot {
                addr,
                last_routed: Instant::now(),
                due,
            },
        );
    }
}

/// Reads partners' durable states (snapshot and dedup ids) concurrently. `None` for a
/// partner whose state cannot be read now (the store is down, or it is unreadable).
async fn load_states(
    store: Arc<dyn StateStore>,
    p: i32,
    ids: Vec<String>,
) -> Vec<(String, Option<PartnerState>)> {
    let started = Instant::now();
    let store = &store;
    let results = join_all(ids.into_iter().map(|id| async move {
        let loaded = store.load_state(p, &id).await;
        (id, loaded)
    }))
    .await;
    METRICS.store_op("load", started);
    results
        .into_iter()
        .map(|(id, res)| {
            let state = match res {
                Ok(None) => Some(PartnerState::new(id.clone())),
                Ok(Some((bytes, ids))) => match crate::store::snapshot::decode(&bytes) {
                    Ok(mut state) => {
                        state.restore_dedup(ids);
                        Some(state)
                    }
                    Err(e) => {
                        tracing::error!(partner_id = %id, partition = p, error = %e, "stored partner state is unreadable; its events are held");
                        None
                    }
                },
                Err(e) => {
                    METRICS.store_errors.with_label_values(&["load"]).inc();
                    METRICS.store_up.set(0);
                    tracing::warn!(partner_id = %id, partition = p, error = %e, "cannot load partner state; holding its events");
                    None
                }
            };
            (id, state)
        })
        .collect()
}

/// Puts one partner's events back at the head of the stalled queue, in their order: they
/// come before any later event of that partner already queued there.
fn requeue_front(stalled: &mut VecDeque<Sourced>, events: Vec<Sourced>) {
    for e in events.into_iter().rev() {
        stalled.push_front(e);
    }
}

/// What to publish for an outbox entry (its outbox id is its stable identity).
fn outgoing(outbox_id: String, e: &OutboxEntry) -> Outgoing {
    match &e.item {
        Outbound::Decision(d) => Outgoing::Decision(decision_write(outbox_id, d)),
        Outbound::Attribution(a) => Outgoing::Attribution(a.clone()),
        Outbound::Audit(note) => Outgoing::Audit(note.clone()),
    }
}

impl Pipeline {
    /// Starts the actors of owned partners that must not wait for their next event: those
    /// that have money-moving control facts to apply (an MDF expense, a credit purchase, a
    /// tenant), so their wallets move, and those the previous owner left awake; the tick
    /// that follows applies the facts, calms the ladders, and the flush after publishes
    /// what their outboxes hold.
    ///
    /// Both kinds wait in the partition's `to_wake` queue, money first, and one round
    /// loads at most [`MAX_WAKE_PER_ROUND`] of them: the loads wait on the consumer thread,
    /// and a new assignment finds every partner that ever had a money fact. The control
    /// cursor moves at once, since the queue keeps what it found.
    fn wake_sleepers(&mut self) {
        let control = self.registry.shared().control.clone();
        let owned: Vec<i32> = self.partitions.keys().copied().collect();
        for p in owned {
            let Some(ps) = self.partitions.get_mut(&p) else {
                continue;
            };
            if ps.unverified {
                // Its store may have lost its data: nothing starts before the group says.
                continue;
            }
            let (moved, next) = {
                let table = control.read();
                let (moved, next) = table.money_moves_since(ps.control_cursor);
                let moved: Vec<String> = moved
                    .into_iter()
                    .filter(|id| partition_for_key(id.as_bytes(), self.settings.partitions) == p)
                    .map(str::to_owned)
                    .collect();
                (moved, next)
            };
            ps.control_cursor = next;
            // Partners whose wall-clock time came (a pilot's expiry) queue behind the rest.
            let timed = ps.wakes.take_due(Utc::now().timestamp_millis());
            if !timed.is_empty() {
                ps.to_wake = each_once(std::mem::take(&mut ps.to_wake).into_iter().chain(timed));
            }
            let wanted = next_wakes(&mut ps.to_wake, moved, MAX_WAKE_PER_ROUND, |id| {
                ps.partners.contains_key(id) || ps.loading.contains_key(id)
            });
            let loaded = self.load_partners(p, &wanted);
            let ceiling = self.watermark_ceiling_now();
            let Some(ps) = self.partitions.get_mut(&p) else {
                continue;
            };
            // A partner the store could not give now is tried again in a later round, after
            // those still waiting: one whose state stays unreadable does not hold the others.
            let got: HashSet<&str> = loaded.iter().map(|(id, _)| id.as_str()).collect();
            let missing = wanted
                .iter()
                .filter(|id| !got.contains(id.as_str()))
                .cloned();
            ps.to_wake.extend(missing);
            // A partner with a wake time is snapshotted after its tick even if the tick
            // decided nothing, so its next time (a later pilot's) is written.
            let with_time: Vec<String> = loaded
                .iter()
                .map(|(id, _)| id)
                .filter(|id| ps.wakes.has(id))
                .cloned()
                .collect();
            start_loaded(ps, &self.registry, loaded, ceiling);
            ps.ticked.extend(with_time);
        }
    }
}

/// Whether `stored` offsets are at or past `durable` for every topic `durable` has.
fn stored_is_newer(stored: &BTreeMap<String, i64>, durable: &BTreeMap<String, i64>) -> bool {
    durable
        .iter()
        .all(|(topic, o)| stored.get(topic).is_some_and(|s| s >= o))
}

/// `ids` in their order, each at its first place only: the wake queue's order is its
/// priority (money first).
fn each_once(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen: HashSet<String> = HashSet::new();
    ids.filter(|id| seen.insert(id.clone())).collect()
}

/// Queues `moved` (partners with new money facts) ahead of the partners already waiting
/// in `to_wake`, and takes this round's share from the front: at most `cap` partners that
/// are not `live` already (a live partner applies its facts at the tick and needs no
/// load, so it leaves the queue). Each partner is queued once.
fn next_wakes(
    to_wake: &mut Vec<String>,
    moved: Vec<String>,
    cap: usize,
    live: impl Fn(&str) -> bool,
) -> Vec<String> {
    if !moved.is_empty() {
        *to_wake = each_once(moved.into_iter().chain(std::mem::take(to_wake)));
    }
    let mut taken = Vec::new();
    let mut kept = Vec::with_capacity(to_wake.len());
    for id in std::mem::take(to_wake) {
        if live(&id) {
            continue;
        }
        if taken.len() < cap {
            taken.push(id);
        } else {
            kept.push(id);
        }
    }
    *to_wake = kept;
    taken
}

/// The data-plane write for a decision.
fn decision_write(outbox_id: String, d: &crate::domain::enforcement::Decision) -> DecisionWrite {
    DecisionWrite {
        outbox_id,
        scope: d.scope.as_str().to_owned(),
        id: d.id.clone(),
        level: d.level.as_str().to_owned(),
        reason: d.reason.as_str().to_owned(),
        rate_limit_rps: d.rate_limit_rps,
        since: d.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        partner_id: d.partner_id.clone(),
        previous: d.previous.as_str().to_owned(),
        by_person: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::publish_queue;

    /// A pipeline driven as the consumer thread drives it, outside any runtime: a memory
    /// store, actors on one arbiter, and Kafka clients pointed at no broker (what they
    /// send fails and is logged).
    struct Harness {
        pipeline: Pipeline,
        consumer: BaseConsumer,
        store: Arc<crate::store::memory::MemoryStore>,
        io: tokio::runtime::Runtime,
        _arbiter: actix_rt::Arbiter,
        _system: actix_rt::SystemRunner,
    }

    impl Harness {
        fn new() -> Harness {
            Harness::on("127.0.0.1:1")
        }

        /// With its Kafka clients on `brokers`.
        fn on(brokers: &str) -> Harness {
            Harness::with(brokers, 1)
        }

        /// With its Kafka clients on `brokers`, whose keyed topics have `partitions`.
        fn with(brokers: &str, partitions: i32) -> Harness {
            use rdkafka::config::ClientConfig;
            let system = actix_rt::System::new();
            let arbiter = actix_rt::Arbiter::new();
            let io = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let store = Arc::new(crate::store::memory::MemoryStore::new());
            let shared = crate::actors::partner::Shared::for_tests();
            let registry = Arc::new(Registry::new(vec![arbiter.handle()], shared));
            let on_brokers = |c: &mut ClientConfig| {
                c.set("bootstrap.servers", brokers);
            };
            let mut config = ClientConfig::new();
            on_brokers(&mut config);
            let producer: rdkafka::producer::FutureProducer = config.create().unwrap();
            let kafka = crate::config::KafkaConfig::default();
            let names = &kafka.topics;
            let audit = crate::publish::audit::AuditSink::new(
                Arc::new(crate::store::audit::MemoryAuditLog::new()),
                producer.clone(),
                names.audit.clone(),
            );
            let publisher = DecisionPublisher::new(
                Arc::new(crate::store::decisions::MemoryDecisions::default()),
                producer.clone(),
                (names.enforcement.clone(), names.attribution.clone()),
                audit,
            );
            let outputs = PipelineOutputs {
                dlq: DeadLetterSink::new(producer, names.deadletter.clone()),
                publisher,
            };
            let settings = PipelineSettings {
                limits: DecodeLimits::default(),
                flush_interval: Duration::from_millis(50),
                max_unflushed: 10_000,
                passivate_after: Duration::from_secs(300),
                partitions,
                flush_give_up: Duration::from_millis(300),
            };
            let store_dyn: Arc<dyn StateStore> = store.clone();
            let pipeline = Pipeline::new(
                settings,
                TopicMap::from_config(&kafka),
                store_dyn,
                registry,
                io.handle().clone(),
                outputs,
                Arc::new(Health::default()),
            );
            let mut consumer = ClientConfig::new();
            on_brokers(&mut consumer);
            let consumer = consumer.set("group.id", "harness").create().unwrap();
            Harness {
                pipeline,
                consumer,
                store,
                io,
                _arbiter: arbiter,
                _system: system,
            }
        }

        /// Owns partition 0, as an assignment with nothing stored would leave it.
        fn own_partition_0(&mut self) {
            let epoch = self.io.block_on(self.store.acquire(0)).unwrap();
            self.pipeline
                .partitions
                .insert(0, PartitionState::new(epoch, BTreeMap::new()));
        }

        fn partition(&self) -> &PartitionState {
            &self.pipeline.partitions[&0]
        }

        /// Takes in completions until partition 0's flush in flight has ended (its
        /// partition may be let go meanwhile), for up to ten seconds.
        fn await_flush(&mut self) {
            for _ in 0..100 {
                if self
                    .pipeline
                    .partitions
                    .get(&0)
                    .is_none_or(|ps| ps.flushing.is_none())
                {
                    break;
                }
                self.pipeline
                    .wait_for_completion(&self.consumer, Duration::from_millis(100));
            }
        }

        /// Stores partition 0's usage offset under its current epoch, as a commit would.
        fn store_usage_offset(&self, offset: i64) {
            let write = crate::store::PartitionWrite {
                partition: 0,
                epoch: self.partition().fence,
                offsets: BTreeMap::from([("usage".to_owned(), offset)]),
                ..Default::default()
            };
            self.io.block_on(self.store.commit(write)).unwrap();
        }
    }

    /// A reset loses what partners woken for money facts did, unless it was durable: it
    /// wakes them again, as a new owner would, rather than leave the facts to the
    /// partners' next events.
    #[test]
    fn a_reset_wakes_the_partners_of_money_facts_again() {
        let mut h = Harness::new();
        h.own_partition_0();
        let expense = crate::domain::event::ControlEvent::MdfExpense {
            expense_id: "x-1".into(),
            partner_id: "p-m".into(),
            amount_usd: rust_decimal::Decimal::ONE,
            campaign: "c".into(),
            decision: crate::domain::event::MdfDecision::Approved,
        };
        h.pipeline
            .registry
            .shared()
            .control
            .write()
            .apply(0, &expense);
        h.pipeline.wake_sleepers();
        assert!(
            h.partition().partners.contains_key("p-m"),
            "woken for its fact"
        );
        // Stopped without a durable snapshot (its mailbox closes at once: nothing to wait
        // for), then the partition is reset, as after a lost actor.
        h.pipeline.registry.stop("p-m");
        h.pipeline.partitions.get_mut(&0).unwrap().partners.clear();
        h.pipeline.wake_sleepers();
        assert!(
            !h.partition().partners.contains_key("p-m"),
            "the cursor moved on"
        );
        h.pipeline.reset_partition(0, &h.consumer);
        assert_eq!(h.partition().resets, 1);
        h.pipeline.wake_sleepers();
        assert!(
            h.partition().partners.contains_key("p-m"),
            "woken again after the reset"
        );
    }

    /// A decision flushes its partition at once, so that it is published the moment the
    /// event causing it is applied (LESSONS, "limits computed on read are late"): with an
    /// hour's flush interval, a calm event waits for the interval, and an event that
    /// throttles its partner starts a flush at the next flush call.
    #[test]
    fn a_decision_flushes_its_partition_without_waiting_for_the_interval() {
        let mut h = Harness::new();
        h.pipeline.settings.flush_interval = Duration::from_secs(3600);
        h.own_partition_0();
        let event = |id: &str, offset: i64, requests: u64| {
            let mut e = usage("p-1");
            e.offset = offset;
            if let crate::domain::event::PartnerEvent::Usage(u) = &mut e.event {
                u.event_id = id.to_owned();
                u.requests = requests;
                u.errors = requests;
            }
            e
        };
        let flushing = |h: &Harness| h.partition().flushing.is_some();
        h.pipeline
            .deliver(0, vec![event("calm", 0, 1)], false, &h.consumer);
        for _ in 0..20 {
            h.pipeline.flush(&h.consumer, false);
            assert!(!flushing(&h), "a calm event waits for the interval");
            std::thread::sleep(Duration::from_millis(10));
        }
        h.pipeline
            .deliver(0, vec![event("storm", 1, 1_000_000)], false, &h.consumer);
        let mut started = false;
        for _ in 0..500 {
            h.pipeline.flush(&h.consumer, false);
            if flushing(&h) {
                started = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(started, "the throttle's partition flushes without waiting");
        h.await_flush();
        let stored = h.io.block_on(h.store.load_partner(0, "p-1")).unwrap();
        let state = crate::store::snapshot::decode(&stored.expect("flushed")).unwrap();
        assert_eq!(state.usage.events, 2, "both events in the flush");
    }

    /// A mock cluster with the default keyed topics, two partitions each.
    fn two_partition_cluster() -> (
        rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        crate::config::KafkaConfig,
        TopicMap,
    ) {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        let kafka = crate::config::KafkaConfig::default();
        let keyed = TopicMap::from_config(&kafka);
        for topic in keyed.keyed() {
            cluster.create_topic(topic, 2, 1).unwrap();
        }
        (cluster, kafka, keyed)
    }

    /// The group coordinator refuses the next `n` reads of committed offsets.
    fn refuse_offset_fetches<C: rdkafka::ClientContext>(
        cluster: &rdkafka::mocking::MockCluster<'_, C>,
        n: usize,
    ) {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        let refused = RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED;
        cluster.request_errors(RDKafkaApiKey::OffsetFetch, &vec![refused; n]);
    }

    /// CONTRACT §9: a store that comes back empty is detected, never replayed silently.
    /// Partitions assigned with no stored offsets while the group's commits cannot be read
    /// apply nothing until they can: then the one the group has commits for is the store's
    /// loss (unready), and the one it has none for is new and read from its start.
    #[test]
    fn partitions_assigned_while_the_group_is_silent_wait_for_its_commits() {
        use rdkafka::consumer::CommitMode;
        let (cluster, kafka, keyed) = two_partition_cluster();
        let mut h = Harness::on(&cluster.bootstrap_servers());
        // The group read partition 0 before; the store has since lost everything.
        let mut done = TopicPartitionList::new();
        done.add_partition_offset(&kafka.topics.usage, 0, Offset::Offset(120))
            .unwrap();
        h.consumer.commit(&done, CommitMode::Sync).unwrap();
        // Every read of the commits at assignment fails.
        refuse_offset_fetches(&cluster, 3);
        let mut assigned = TopicPartitionList::new();
        for topic in keyed.keyed() {
            assigned.add_partition(topic, 0);
            assigned.add_partition(topic, 1);
        }
        let out = h.pipeline.on_assign(&assigned, &h.consumer);
        super::super::consumer::take_assignment(&h.consumer, &out).unwrap();
        let parts = &h.pipeline.partitions;
        assert!(parts[&0].unverified && parts[&1].unverified);
        assert!(!h
            .pipeline
            .health
            .store_lost
            .load(std::sync::atomic::Ordering::SeqCst));
        // The group answers at the next check.
        h.pipeline.unverified_checked = Instant::now() - Duration::from_secs(10);
        h.pipeline.check_unverified(&h.consumer);
        assert!(
            h.pipeline
                .health
                .store_lost
                .load(std::sync::atomic::Ordering::SeqCst),
            "a committed partition with an empty store is a loss"
        );
        assert!(!h.pipeline.partitions.contains_key(&0), "not consumed");
        let new = &h.pipeline.partitions[&1];
        assert!(
            !new.unverified && new.resets == 1,
            "new: read from its first record"
        );
    }

    /// Partners started at their wake time: one whose pilot expired is suspended though
    /// its partition has no event time yet (pilots expire on the wall clock), and one
    /// whose tick decides nothing (its stored time was stale) is snapshotted all the
    /// same, so its next pilot's time replaces the stale one and is not lost.
    #[test]
    fn partners_woken_at_their_time_are_judged_and_their_next_time_written() {
        use crate::domain::event::{ControlEvent, TenantPlan};
        use crate::domain::partner::ApplyEnv;
        let mut h = Harness::new();
        h.own_partition_0();
        let env = ApplyEnv::default();
        let pilot = |tenant: &str, partner: &str, days_ago: i64| ControlEvent::Tenant {
            tenant_id: tenant.into(),
            partner_id: partner.into(),
            plan: TenantPlan::Pilot,
            started_at: Utc::now() - chrono::Duration::days(days_ago),
            deployment_value_usd: None,
        };
        // Both passivated before their time; neither has an event, so no event time.
        let mut expired = PartnerState::new("p-expired");
        expired.apply_control(0, &pilot("t-old", "p-expired", 31), &env.ctx());
        let mut young = PartnerState::new("p-young");
        young.apply_control(1, &pilot("t-new", "p-young", 20), &env.ctx());
        let in_ten_days = young.wake_at_ms(&env.policy).unwrap();
        let past = (Utc::now() - chrono::Duration::hours(1)).timestamp_millis();
        let epoch = h.partition().epoch;
        let snapshot = |s: &PartnerState| crate::store::snapshot::encode(s).unwrap();
        h.io.block_on(h.store.commit(crate::store::PartitionWrite {
            partition: 0,
            epoch,
            partners: vec![
                ("p-expired".into(), snapshot(&expired)),
                ("p-young".into(), snapshot(&young)),
            ],
            wake: vec![
                ("p-expired".into(), expired.wake_at_ms(&env.policy)),
                ("p-young".into(), Some(past)),
            ],
            ..Default::default()
        }))
        .unwrap();
        let stored = h.io.block_on(h.store.wake_schedule(0)).unwrap();
        h.pipeline.partitions.get_mut(&0).unwrap().wakes = WakeSchedule::from_store(stored);

        // A round: both are due, started and ticked; then a flush.
        h.pipeline.round_started = Instant::now() - ROUND_PERIOD;
        h.pipeline.tick();
        assert!(h.pipeline.ticking, "a round started");
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.pipeline.ticking && Instant::now() < deadline {
            h.pipeline
                .wait_for_completion(&h.consumer, Duration::from_millis(50));
        }
        while !h.pipeline.flush(&h.consumer, true) && Instant::now() < deadline {
            h.pipeline
                .wait_for_completion(&h.consumer, Duration::from_millis(50));
        }
        let stored = h.io.block_on(h.store.wake_schedule(0)).unwrap();
        assert_eq!(stored, [("p-young".to_owned(), in_ten_days)]);
        let queued = h.partition().to_publish.partners();
        assert!(
            queued.contains("p-expired"),
            "its suspension is on its way out"
        );
    }

    /// Records of a partition assigned while the group's commits were unreadable are
    /// polled but not applied, and the partition is paused; once the group says it has
    /// no commits for it, the same records are read again from its start and applied.
    #[test]
    fn an_unverified_partition_applies_nothing_until_verified_then_reads_from_its_start() {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let (cluster, kafka, keyed) = two_partition_cluster();
        let brokers = cluster.bootstrap_servers();
        let mut h = Harness::with(&brokers, 2);
        let partner = (0..)
            .map(|i| format!("p-{i}"))
            .find(|id| partition_for_key(id.as_bytes(), 2) == 1)
            .unwrap();
        let producer: BaseProducer = rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        for i in 0..3 {
            let payload = serde_json::json!({
                "event_id": format!("e-{i}"), "ts": Utc::now(), "partner_id": partner,
                "integration_id": "i", "requests": 1, "errors": 0,
            })
            .to_string();
            let record = BaseRecord::to(&kafka.topics.usage)
                .partition(1)
                .key(&partner)
                .payload(&payload);
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        refuse_offset_fetches(&cluster, 3);
        let mut assigned = TopicPartitionList::new();
        for topic in keyed.keyed() {
            assigned.add_partition(topic, 1);
        }
        let out = h.pipeline.on_assign(&assigned, &h.consumer);
        super::super::consumer::take_assignment(&h.consumer, &out).unwrap();
        assert!(h.pipeline.partitions[&1].unverified);
        fn poll_three(consumer: &BaseConsumer) -> Vec<BorrowedMessage<'_>> {
            let mut batch = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while batch.len() < 3 && Instant::now() < deadline {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    batch.push(m);
                }
            }
            assert_eq!(batch.len(), 3, "the records were polled");
            batch
        }
        let batch = poll_three(&h.consumer);
        h.pipeline.route(&batch, &h.consumer);
        drop(batch);
        let ps = &h.pipeline.partitions[&1];
        assert!(
            ps.next.is_empty() && ps.partners.is_empty(),
            "nothing applied"
        );
        assert!(ps.paused);
        h.pipeline.retry_stalled(&h.consumer);
        assert!(
            h.pipeline.partitions[&1].paused,
            "not resumed while unverified"
        );

        h.pipeline.unverified_checked = Instant::now() - Duration::from_secs(10);
        h.pipeline.check_unverified(&h.consumer);
        assert!(!h.pipeline.partitions[&1].unverified, "new: no commits");
        h.pipeline.retry_stalled(&h.consumer);
        assert!(!h.pipeline.partitions[&1].paused, "resumed once verified");
        let batch = poll_three(&h.consumer);
        assert_eq!(
            batch.iter().map(|m| m.offset()).collect::<Vec<_>>(),
            [0, 1, 2],
            "read again from the start"
        );
        h.pipeline.route(&batch, &h.consumer);
        drop(batch);
        let ps = &h.pipeline.partitions[&1];
        assert_eq!(ps.next.get(&kafka.topics.usage), Some(&3));
        let handed = ps.partners.contains_key(&partner) || ps.loading.contains_key(&partner);
        assert!(
            handed,
            "on its way to its actor (live, or its state loading)"
        );
    }

    /// A flush that met a stopped actor reads the partition again from what is durable:
    /// its live partners are let go and reading restarts at the stored offsets.
    #[test]
    fn a_flush_that_lost_an_actor_resets_its_partition() {
        let mut h = Harness::new();
        h.own_partition_0();
        let (addr, due) = h.pipeline.registry.start(PartnerState::new("p-1"));
        let ps = h.pipeline.partitions.get_mut(&0).unwrap();
        ps.partners.insert(
            "p-1".into(),
            Slot {
                addr,
                last_routed: Instant::now(),
                due,
            },
        );
        ps.next.insert("usage".into(), 40);
        ps.durable.insert("usage".into(), 20);
        ps.flushing = Some(InFlight {
            seq: 1,
            events: 3,
            partners: HashSet::from(["p-1".to_owned()]),
        });
        let job = super::super::flush::FlushJob {
            partition: 0,
            epoch: ps.fence,
            seq: 1,
            offsets: ps.next.clone(),
            partners: vec!["p-1".into()],
            events: 3,
            known_wakes: HashMap::new(),
        };
        // An earlier commit reported failed had landed all the same: the store is at 30.
        h.store_usage_offset(30);
        let lost = super::super::flush::FlushResult::ActorLost("mailbox closed".into());
        h.pipeline.flush_ended(job, lost, &h.consumer);
        let ps = h.partition();
        assert_eq!(ps.resets, 1, "the partition was read again");
        assert!(ps.partners.is_empty() && ps.flushing.is_none());
        let stored = BTreeMap::from([("usage".to_owned(), 30)]);
        assert_eq!(
            ps.next, stored,
            "from the stored offsets, not from 40 nor 20"
        );
    }

    /// A reset that gives up on a flush in flight fences it: should that flush's commit
    /// still land, after the replay's, it is refused, and its result changes nothing.
    /// Another owner having taken the partition meanwhile, the reset lets it go.
    #[test]
    fn a_reset_that_gives_up_on_a_flush_fences_it() {
        // A broker that answers: the flush's group commit would hold an unanswered
        // consumer's close for most of a minute.
        let (cluster, _, _) = two_partition_cluster();
        let mut h = Harness::on(&cluster.bootstrap_servers());
        h.own_partition_0();
        h.store_usage_offset(30);
        let held = h.partition().fence;
        let ps = h.pipeline.partitions.get_mut(&0).unwrap();
        // A flush that never ends (its dead letters unacknowledged, say).
        ps.flushing = Some(InFlight {
            seq: 1,
            events: 10,
            partners: HashSet::new(),
        });
        let abandoned = super::super::flush::FlushJob {
            partition: 0,
            epoch: ps.fence,
            seq: 1,
            offsets: BTreeMap::from([("usage".to_owned(), 40)]),
            partners: Vec::new(),
            events: 10,
            known_wakes: HashMap::new(),
        };
        // (Its seek fails: this consumer has no assignment.)
        h.pipeline.reset_partition(0, &h.consumer);
        let ps = h.partition();
        assert_eq!(
            ps.fence,
            epoch::renewed(held).unwrap(),
            "the epoch was renewed"
        );
        assert_eq!(ps.epoch, held, "the ownership is the same");
        assert_eq!(ps.next, BTreeMap::from([("usage".to_owned(), 30)]));
        // The replay flushes under the new epoch, then the abandoned commit lands.
        let ps = h.pipeline.partitions.get_mut(&0).unwrap();
        ps.next.insert("usage".to_owned(), 50);
        h.pipeline.flush(&h.consumer, true);
        h.await_flush();
        assert_eq!(h.partition().durable["usage"], 50, "the replay's flush");
        let late = crate::store::PartitionWrite {
            partition: 0,
            epoch: abandoned.epoch,
            offsets: abandoned.offsets.clone(),
            ..Default::default()
        };
        let refused = h.io.block_on(h.store.commit(late));
        assert!(
            matches!(refused, Err(StoreError::Fenced { current, .. }) if current == epoch::renewed(held).unwrap()),
            "{refused:?}"
        );
        let stored = h.io.block_on(h.store.offsets(0)).unwrap();
        assert_eq!(stored, BTreeMap::from([("usage".to_owned(), 50)]));
        // Its result, fenced, is not taken for another owner's.
        let fenced = super::super::flush::FlushResult::Fenced(refused.unwrap_err());
        h.pipeline.flush_ended(abandoned, fenced, &h.consumer);
        assert!(h.pipeline.partitions.contains_key(&0), "still owned");

        // Another owner took the partition while the flush hung: the reset lets it go.
        let mut taken = Harness::new();
        taken.own_partition_0();
        taken.pipeline.partitions.get_mut(&0).unwrap().flushing = Some(InFlight {
            seq: 1,
            events: 1,
            partners: HashSet::new(),
        });
        taken.io.block_on(taken.store.acquire(0)).unwrap();
        taken.pipeline.reset_partition(0, &taken.consumer);
        assert!(!taken.pipeline.partitions.contains_key(&0), "let go");
    }

    /// A store whose renewals land but whose first `lose` answers are lost.
    struct LostRenewReplies {
        inner: Arc<crate::store::memory::MemoryStore>,
        lose: std::sync::atomic::AtomicU32,
    }

    #[async_trait::async_trait]
    impl StateStore for LostRenewReplies {
        async fn acquire(&self, p: i32) -> Result<u64, StoreError> {
            self.inner.acquire(p).await
        }
        async fn renew(&self, p: i32, held: u64, token: &str) -> Result<u64, StoreError> {
            let answer = self.inner.renew(p, held, token).await;
            let lost = self
                .lose
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok();
            if lost {
                return Err(StoreError::Unavailable("the answer was lost".into()));
            }
            answer
        }
        async fn offsets(&self, p: i32) -> Result<crate::store::Offsets, StoreError> {
            self.inner.offsets(p).await
        }
        async fn commit(&self, w: crate::store::PartitionWrite) -> Result<(), StoreError> {
            self.inner.commit(w).await
        }
        async fn load_partner(&self, p: i32, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.load_partner(p, id).await
        }
        async fn load_state(
            &self,
            p: i32,
            id: &str,
        ) -> Result<Option<(Vec<u8>, Vec<(i64, String)>)>, StoreError> {
            self.inner.load_state(p, id).await
        }
        async fn awake_partners(&self, p: i32) -> Result<Vec<String>, StoreError> {
            self.inner.awake_partners(p).await
        }
        async fn wake_schedule(&self, p: i32) -> Result<Vec<(String, i64)>, StoreError> {
            self.inner.wake_schedule(p).await
        }
        async fn partner_ids(&self, p: i32) -> Result<Vec<String>, StoreError> {
            self.inner.partner_ids(p).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
    }

    /// A renewal whose every answer at the reset is lost may have landed: the partition
    /// then commits nothing until the same renewal, asked again, is answered. Committing
    /// under the old epoch would be refused as fenced, and the partition dropped with no
    /// other owner to take it.
    #[test]
    fn an_unanswered_renewal_holds_commits_until_it_is_settled() {
        let (cluster, _, _) = two_partition_cluster();
        let mut h = Harness::on(&cluster.bootstrap_servers());
        h.own_partition_0();
        h.store_usage_offset(30);
        let held = h.partition().fence;
        h.pipeline.store = Arc::new(LostRenewReplies {
            inner: h.store.clone(),
            // Two more than the reset asks: the flush loop's first question goes
            // unanswered too.
            lose: std::sync::atomic::AtomicU32::new(RENEW_ATTEMPTS + 2),
        });
        h.pipeline.partitions.get_mut(&0).unwrap().flushing = Some(InFlight {
            seq: 1,
            events: 1,
            partners: HashSet::new(),
        });
        h.pipeline.reset_partition(0, &h.consumer);
        let ps = h.partition();
        assert_eq!(ps.fence, held, "no answer: not renewed yet");
        assert!(ps.renewal.is_some(), "pending");
        // It landed all the same.
        let old = crate::store::PartitionWrite {
            partition: 0,
            epoch: held,
            ..Default::default()
        };
        assert!(matches!(
            h.io.block_on(h.store.commit(old)),
            Err(StoreError::Fenced { current, .. }) if current == epoch::renewed(held).unwrap()
        ));
        h.pipeline
            .partitions
            .get_mut(&0)
            .unwrap()
            .next
            .insert("usage".to_owned(), 50);
        // Unanswered: nothing is committed, and it asks again later, not at once.
        h.pipeline.flush(&h.consumer, true);
        h.pipeline.flush(&h.consumer, true);
        let ps = h.partition();
        assert!(
            ps.renewal.is_some() && ps.flushing.is_none(),
            "still pending"
        );
        let stored = h.io.block_on(h.store.offsets(0)).unwrap();
        assert_eq!(stored["usage"], 30, "nothing committed meanwhile");
        for _ in 0..100 {
            h.pipeline.flush(&h.consumer, true);
            if h.pipeline
                .partitions
                .get(&0)
                .is_none_or(|ps| ps.durable["usage"] == 50)
            {
                break;
            }
            h.pipeline
                .wait_for_completion(&h.consumer, Duration::from_millis(100));
        }
        assert!(h.pipeline.partitions.contains_key(&0), "still owned");
        let ps = h.partition();
        assert_eq!(
            (ps.fence, ps.renewal.is_none()),
            (epoch::renewed(held).unwrap(), true)
        );
        assert_eq!(ps.durable["usage"], 50, "committed under the renewed epoch");
    }

    /// A commit refused with an epoch of a lower generation than the one it carried met a
    /// store that went back (a failover to a replica that missed writes): no owner has
    /// that epoch, so no rebalance will come for the partition. It is taken again and read
    /// from the store: with its offsets there, it goes on (from them); with them gone, the
    /// store lost its data, and the instance goes unready. Refused with a higher
    /// generation, or the same one with another tag (the store went back, then another
    /// instance took the partition), the partition is let go: its new owner has it.
    #[test]
    fn a_fence_below_the_epoch_written_takes_the_partition_again() {
        enum Store {
            TakenByAnother,
            WentBackThenTakenByAnother,
            WentBackKeepingOffsets,
            WentBackToNothing,
        }
        for case in [
            Store::TakenByAnother,
            Store::WentBackThenTakenByAnother,
            Store::WentBackKeepingOffsets,
            Store::WentBackToNothing,
        ] {
            let (cluster, _, _) = two_partition_cluster();
            let mut h = Harness::on(&cluster.bootstrap_servers());
            h.own_partition_0();
            let before = h.partition().fence;
            let taken = h.io.block_on(h.store.acquire(0)).unwrap();
            // This owner holds `held` (its tag in the middle of the range, so that one below
            // it exists); the store held `before` when it wrote offset 30.
            let held = epoch::generation(taken) * epoch::GENERATION + epoch::GENERATION / 2;
            h.store.set_epoch(0, held);
            let ps = h.pipeline.partitions.get_mut(&0).unwrap();
            ps.fence = held;
            ps.durable.insert("usage".to_owned(), 30);
            let replica = Arc::new(crate::store::memory::MemoryStore::new());
            match case {
                Store::TakenByAnother => {
                    h.io.block_on(h.store.acquire(0)).unwrap();
                }
                Store::WentBackThenTakenByAnother => {
                    // The store lost this owner's acquisition, then another instance took
                    // the partition: the same generation, another tag. A tag below this
                    // owner's, so that comparing whole epochs would call it a store that
                    // went back and take the partition from its owner.
                    let other = held - 1;
                    assert_eq!(epoch::generation(other), epoch::generation(held));
                    h.store.set_epoch(0, other);
                }
                Store::WentBackKeepingOffsets => {
                    replica.set_epoch(0, before);
                    let write = crate::store::PartitionWrite {
                        partition: 0,
                        epoch: before,
                        offsets: BTreeMap::from([("usage".to_owned(), 30)]),
                        ..Default::default()
                    };
                    h.io.block_on(replica.commit(write)).unwrap();
                    h.pipeline.store = replica.clone();
                }
                Store::WentBackToNothing => h.pipeline.store = replica.clone(),
            }
            h.pipeline
                .partitions
                .get_mut(&0)
                .unwrap()
                .next
                .insert("usage".to_owned(), 50);
            h.pipeline.flush(&h.consumer, true);
            h.await_flush();
            let owned = h.pipeline.partitions.get(&0);
            match case {
                Store::TakenByAnother | Store::WentBackThenTakenByAnother => {
                    assert!(owned.is_none() && !store_lost(&h.pipeline), "let go");
                }
                Store::WentBackKeepingOffsets => {
                    let ps = owned.expect("taken again");
                    assert_eq!(
                        epoch::generation(ps.fence),
                        epoch::generation(held),
                        "the store's next epoch"
                    );
                    assert_ne!(ps.fence, held, "its own tag");
                    assert_eq!(ps.next["usage"], 30, "read again from the store's offsets");
                    assert!(!store_lost(&h.pipeline));
                }
                Store::WentBackToNothing => {
                    assert!(owned.is_none() && store_lost(&h.pipeline), "lost, unready");
                }
            }
        }
    }

    /// A lost actor met while draining (revocation, shutdown) lets its partition go at
    /// once, rather than waiting for the flush in flight to reset it: the rebalance
    /// callback is not held, the epoch is not renewed, and the next owner reads the store.
    #[test]
    fn a_lost_actor_while_draining_lets_its_partition_go() {
        let mut h = Harness::new();
        h.own_partition_0();
        let held = h.partition().fence;
        let (addr, due) = h.pipeline.registry.start(PartnerState::new("p-1"));
        h.pipeline.registry.stop("p-1");
        // Its mailbox closes once its arbiter has run the stop.
        for _ in 0..500 {
            if !addr.connected() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!addr.connected());
        let ps = h.pipeline.partitions.get_mut(&0).unwrap();
        ps.partners.insert(
            "p-1".into(),
            Slot {
                addr,
                last_routed: Instant::now(),
                due,
            },
        );
        ps.stalled.push_back(usage("p-1"));
        ps.flushing = Some(InFlight {
            seq: 1,
            events: 1,
            partners: HashSet::new(),
        });
        let durable = h
            .pipeline
            .drain(&h.consumer, Instant::now() + Duration::from_secs(5));
        assert!(!h.pipeline.partitions.contains_key(&0), "let go");
        assert!(!durable, "the drain says it did not end durable");
        assert!(!h.pipeline.draining, "the drain ended");
        // Not renewed: the next owner's acquire fences the flush in flight.
        let next = h.io.block_on(h.store.acquire(0)).unwrap();
        assert_eq!(epoch::generation(next), epoch::generation(held) + 1);
    }

    /// At a reset the store's offsets are the truth even behind what it acknowledged (it
    /// lost writes: its snapshots are as old), and a store with none at all lost its data:
    /// that partition is not read again from its start, and the instance goes unready.
    #[test]
    fn a_reset_follows_the_store_and_detects_an_emptied_one() {
        let mut h = Harness::new();
        h.own_partition_0();
        h.store_usage_offset(10);
        let ps = h.pipeline.partitions.get_mut(&0).unwrap();
        ps.durable = BTreeMap::from([("usage".to_owned(), 20)]);
        h.pipeline.reset_partition(0, &h.consumer);
        let behind = BTreeMap::from([("usage".to_owned(), 10)]);
        assert_eq!(h.partition().next, behind, "the store's, behind or not");
        assert!(!store_lost(&h.pipeline));

        let mut missing = Harness::new();
        missing.own_partition_0();
        missing.store_usage_offset(10);
        let ps = missing.pipeline.partitions.get_mut(&0).unwrap();
        ps.durable = BTreeMap::from([("usage".to_owned(), 10), ("invoices".to_owned(), 4)]);
        missing.pipeline.reset_partition(0, &missing.consumer);
        assert!(
            store_lost(&missing.pipeline),
            "a topic's offsets gone is a loss, not a replay of that topic from its start"
        );

        let mut emptied = Harness::new();
        emptied.own_partition_0();
        let ps = emptied.pipeline.partitions.get_mut(&0).unwrap();
        ps.durable = BTreeMap::from([("usage".to_owned(), 20)]);
        emptied.pipeline.reset_partition(0, &emptied.consumer);
        assert!(store_lost(&emptied.pipeline), "an emptied store is a loss");
        assert!(
            !emptied.pipeline.partitions.contains_key(&0),
            "not read from its start"
        );
    }

    fn store_lost(pipeline: &Pipeline) -> bool {
        pipeline
            .health
            .store_lost
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether offsets read back at a reset are behind the durable ones: the reset follows
    /// the store either way, and logs it when they are (the store lost writes).
    #[test]
    fn stored_offsets_count_only_when_not_behind_the_durable_ones() {
        let at = |pairs: &[(&str, i64)]| -> BTreeMap<String, i64> {
            pairs.iter().map(|(t, o)| (t.to_string(), *o)).collect()
        };
        let durable = at(&[("usage", 10), ("invoices", 4)]);
        assert!(stored_is_newer(
            &at(&[("usage", 12), ("invoices", 4)]),
            &durable
        ));
        assert!(stored_is_newer(&durable, &durable));
        assert!(!stored_is_newer(
            &at(&[("usage", 9), ("invoices", 9)]),
            &durable
        ));
        assert!(
            !stored_is_newer(&at(&[("usage", 12)]), &durable),
            "a topic missing"
        );
        assert!(stored_is_newer(&at(&[("usage", 1)]), &BTreeMap::new()));
    }

    fn usage(partner: &str) -> Sourced {
        Sourced {
            topic: crate::domain::event::TopicKind::Usage,
            partition: 0,
            offset: 0,
            event: crate::domain::event::PartnerEvent::Usage(crate::domain::event::UsageEvent {
                event_id: format!("{partner}-e"),
                ts: Utc::now(),
                partner_id: partner.to_owned(),
                integration_id: "i".into(),
                tenant_id: None,
                requests: 1,
                errors: 0,
                auth_failures: 0,
                bytes: 0,
            }),
        }
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// A new assignment may find every partner that ever had a money fact: one round
    /// loads at most its share, money first, and the rest wait for the next rounds.
    #[test]
    fn a_round_wakes_at_most_its_share_money_first_and_keeps_the_rest_queued() {
        let mut to_wake = ids(&["a1", "a2"]);
        let moved = ids(&["m1", "m2", "a2", "m1", "m3"]);
        let live = |id: &str| id == "m2";

        let first = next_wakes(&mut to_wake, moved, 2, live);
        assert_eq!(
            first,
            ids(&["m1", "a2"]),
            "money first, live partners skipped"
        );
        assert_eq!(to_wake, ids(&["m3", "a1"]), "each partner queued once");

        let second = next_wakes(&mut to_wake, Vec::new(), 2, live);
        assert_eq!(second, ids(&["m3", "a1"]));
        assert!(to_wake.is_empty());

        // A partner that came alive since it was queued leaves the queue without a load.
        let mut to_wake = ids(&["b1", "b2", "b3"]);
        let third = next_wakes(&mut to_wake, Vec::new(), 1, |id| id == "b1");
        assert_eq!(third, ids(&["b2"]));
        assert_eq!(to_wake, ids(&["b3"]));
    }

    #[test]
    fn a_round_starts_a_period_after_the_last_and_at_once_after_one_that_overran() {
        let ms = Duration::from_millis;
        assert!(!round_due(false, ms(999)), "within the period");
        assert!(round_due(false, ms(1_000)), "a period after the last began");
        assert!(!round_due(true, ms(1_100)), "one at a time");
        // The round that began 1.1 s ago has just ended: the next starts now, not at 2 s.
        assert!(round_due(false, ms(1_100)));
    }

    /// A producer with its clock a day ahead moves the watermark only to the wall clock
    /// plus the skew allowed; history (past `ts`) moves it as before.
    #[test]
    fn a_future_ts_moves_the_watermark_no_further_than_the_skew_allowed() {
        let now = Utc::now();
        let ceiling = watermark_ceiling(now, chrono::Duration::seconds(300));
        assert_eq!(ceiling, now + chrono::Duration::seconds(300));
        let mut w = None;
        let past = now - chrono::Duration::days(30);
        advance_watermark(&mut w, past, ceiling);
        assert_eq!(w, Some(past));
        advance_watermark(&mut w, now + chrono::Duration::days(1), ceiling);
        assert_eq!(w, Some(ceiling));
        // Never backwards: an older event, or a ceiling below the watermark.
        advance_watermark(&mut w, past, ceiling);
        assert_eq!(w, Some(ceiling));
        advance_watermark(&mut w, now + chrono::Duration::days(2), now);
        assert_eq!(w, Some(ceiling));
    }

    /// A store whose late commit (one the client gave up on, still run by Redis) lands
    /// right after the first read of a revival.
    struct Straddling {
        inner: crate::store::memory::MemoryStore,
        late: parking_lot::Mutex<Option<crate::store::PartitionWrite>>,
    }

    #[async_trait::async_trait]
    impl StateStore for Straddling {
        async fn acquire(&self, p: i32) -> Result<u64, crate::store::StoreError> {
            self.inner.acquire(p).await
        }
        async fn renew(
            &self,
            p: i32,
            held: u64,
            token: &str,
        ) -> Result<u64, crate::store::StoreError> {
            self.inner.renew(p, held, token).await
        }
        async fn offsets(&self, p: i32) -> Result<crate::store::Offsets, crate::store::StoreError> {
            self.inner.offsets(p).await
        }
        async fn commit(
            &self,
            w: crate::store::PartitionWrite,
        ) -> Result<(), crate::store::StoreError> {
            self.inner.commit(w).await
        }
        async fn load_partner(
            &self,
            p: i32,
            id: &str,
        ) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
            let read = self.inner.load_partner(p, id).await;
            let late = self.late.lock().take();
            if let Some(w) = late {
                self.inner.commit(w).await.expect("the late commit");
            }
            read
        }
        async fn load_state(
            &self,
            p: i32,
            id: &str,
        ) -> Result<Option<(Vec<u8>, Vec<(i64, String)>)>, crate::store::StoreError> {
            let read = self.inner.load_state(p, id).await;
            let late = self.late.lock().take();
            if let Some(w) = late {
                self.inner.commit(w).await.expect("the late commit");
            }
            read
        }
        async fn awake_partners(&self, p: i32) -> Result<Vec<String>, crate::store::StoreError> {
            self.inner.awake_partners(p).await
        }
        async fn wake_schedule(
            &self,
            p: i32,
        ) -> Result<Vec<(String, i64)>, crate::store::StoreError> {
            self.inner.wake_schedule(p).await
        }
        async fn partner_ids(&self, p: i32) -> Result<Vec<String>, crate::store::StoreError> {
            self.inner.partner_ids(p).await
        }
        async fn ping(&self) -> Result<(), crate::store::StoreError> {
            self.inner.ping().await
        }
    }

    /// A commit landing while a partner is revived (after a reset, say) is seen whole or
    /// not at all: the older snapshot with the newer dedup ids would take the replayed
    /// event as a duplicate, and it would never be counted.
    #[tokio::test]
    async fn a_revival_reads_snapshot_and_dedup_ids_at_one_point() {
        use crate::domain::dedup::DedupDelta;
        use crate::domain::partner::{Applied, ApplyEnv};
        let store = Straddling {
            inner: crate::store::memory::MemoryStore::new(),
            late: parking_lot::Mutex::new(None),
        };
        let epoch = store.acquire(0).await.unwrap();
        let env = ApplyEnv::default();
        let state = PartnerState::new("p-1");
        let before = crate::store::snapshot::encode(&state).unwrap();
        store
            .commit(crate::store::PartitionWrite {
                partition: 0,
                epoch,
                partners: vec![("p-1".into(), before)],
                ..Default::default()
            })
            .await
            .unwrap();
        // The late commit: the event applied, its snapshot and its id.
        let event = usage("p-1").event;
        let mut after = state.clone();
        assert_eq!(after.apply(&event, &env.ctx()), Ok(Applied::Counted));
        *store.late.lock() = Some(crate::store::PartitionWrite {
            partition: 0,
            epoch,
            partners: vec![(
                "p-1".into(),
                crate::store::snapshot::encode(&after).unwrap(),
            )],
            dedup: vec![(
                "p-1".into(),
                DedupDelta {
                    added: vec![(event.ts().timestamp_millis(), "p-1-e".into())],
                    evict_below_ms: None,
                },
            )],
            ..Default::default()
        });
        let store: Arc<dyn StateStore> = Arc::new(store);
        let mut loaded = load_states(store, 0, vec!["p-1".into()]).await;
        let (_, revived) = loaded.pop().unwrap();
        let mut revived = revived.expect("readable");
        // Replayed from the older offsets: counted once, whichever side of the commit the
        // read fell on.
        let _ = revived.apply(&event, &env.ctx());
        assert_eq!(revived.summary().usage.events, 1);
    }

    /// A usage event from a host whose clock runs 12 h ahead, an hour before a month ends,
    /// counts at the ceiling: its partner's month does not roll early. Its requests are
    /// kept; an invoice keeps its `ts`, which dates its money.
    #[test]
    fn a_usage_ts_past_the_ceiling_counts_at_the_ceiling() {
        let now: DateTime<Utc> = "2026-05-31T23:00:00Z".parse().unwrap();
        let ceiling = watermark_ceiling(now, chrono::Duration::seconds(300));
        let ahead: DateTime<Utc> = "2026-06-01T11:00:00Z".parse().unwrap();
        let mut event = usage("p-1").event;
        if let PartnerEvent::Usage(e) = &mut event {
            e.ts = ahead;
            e.requests = 7;
        }
        let mut watermark = None;
        place_in_time(&mut event, &mut watermark, ceiling);
        assert_eq!(event.ts(), ceiling);
        assert_eq!(watermark, Some(ceiling));
        assert_eq!(
            crate::domain::money::Month::of(event.ts()).to_string(),
            "2026-05"
        );
        assert!(matches!(&event, PartnerEvent::Usage(e) if e.requests == 7));
        // Within the skew, or in the past: unchanged.
        let mut on_time = usage("p-1").event;
        let ts = on_time.ts();
        clamp_usage_ts(&mut on_time, ts + chrono::Duration::seconds(1));
        assert_eq!(on_time.ts(), ts);
        let mut invoice = PartnerEvent::Invoice(Box::new(crate::domain::event::InvoiceEvent {
            ts: ahead,
            ..crate::domain::money::testkit::paid("inv-1", "2026-05-31T22:00:00Z", "10")
        }));
        clamp_usage_ts(&mut invoice, ceiling);
        assert_eq!(invoice.ts(), ahead);
    }

    /// A silent partition's watermark follows the wall clock after 2 s, but only once it
    /// was read to its end: a new owner still fetching a backlog must not judge calm steps
    /// before the older events it has not read.
    #[test]
    fn only_a_partition_read_to_its_end_has_its_watermark_follow_the_wall_clock() {
        let mut ps = PartitionState::new(1, BTreeMap::new());
        let idle_after = Duration::from_secs(2);
        assert_eq!(
            ps.tick_watermark(idle_after, true),
            None,
            "no event time yet"
        );
        let w = Utc::now() - chrono::Duration::hours(1);
        ps.watermark = Some(w);
        ps.last_record = Instant::now() - Duration::from_secs(12);
        assert_eq!(
            ps.tick_watermark(idle_after, false),
            Some(w),
            "still reading"
        );
        let moved = ps.tick_watermark(idle_after, true).expect("a watermark");
        assert!(
            moved >= w + chrono::Duration::seconds(10),
            "silent for 12 s, 2 s allowed: moved by {}",
            moved - w
        );
        ps.last_record = Instant::now();
        assert_eq!(
            ps.tick_watermark(idle_after, true),
            Some(w),
            "a record just came"
        );
    }

    /// Each partner once, in the order of its first event, with its own events in offset
    /// order: what keeps a partner's events in order on their way to its actor.
    #[test]
    fn grouping_keeps_first_seen_partner_order_and_each_partners_event_order() {
        let batch: Vec<Sourced> = ["b", "a", "b", "c", "a", "b"]
            .into_iter()
            .enumerate()
            .map(|(offset, partner)| Sourced {
                offset: offset as i64,
                ..usage(partner)
            })
            .collect();
        let grouped: Vec<(String, Vec<i64>)> = group_by_partner(batch)
            .into_iter()
            .map(|(id, events)| (id, events.iter().map(|e| e.offset).collect()))
            .collect();
        assert_eq!(
            grouped,
            [
                ("b".to_owned(), vec![0, 2, 5]),
                ("a".to_owned(), vec![1, 4]),
                ("c".to_owned(), vec![3]),
            ]
        );
        assert!(group_by_partner(Vec::new()).is_empty());
    }

    #[test]
    fn a_partition_stops_fetching_at_any_of_its_bounds_and_flushes_before() {
        let max_unflushed = 100_000;
        let mut ps = PartitionState::new(1, BTreeMap::new());
        assert!(!ps.over_bounds(max_unflushed));
        assert!(!ps.flush_pressing(max_unflushed));

        // Many fresh partners with one event each: a flush is pressing at half the
        // partner bound, fetching stops at the whole of it, whatever the event count.
        ps.dirty = (0..MAX_FLUSH_PARTNERS / 2)
            .map(|i| format!("p-{i}"))
            .collect();
        assert!(ps.flush_pressing(max_unflushed));
        assert!(!ps.over_bounds(max_unflushed));
        ps.dirty = (0..MAX_FLUSH_PARTNERS).map(|i| format!("p-{i}")).collect();
        assert!(ps.over_bounds(max_unflushed));
        ps.dirty.clear();

        // Partners still loading, and records waiting behind a barrier, count too: each
        // makes a partner dirty once delivered.
        ps.loading = (0..MAX_FLUSH_PARTNERS / 2)
            .map(|i| (format!("l-{i}"), Vec::new()))
            .collect();
        assert!(!ps.over_bounds(max_unflushed));
        let mut barrier = Barrier::new(BTreeMap::new());
        // One busy partner's records count once.
        for _ in 0..MAX_FLUSH_PARTNERS {
            barrier.hold(usage("busy"));
        }
        ps.barrier = Some(barrier);
        assert!(!ps.over_bounds(max_unflushed));
        for i in 0..MAX_FLUSH_PARTNERS / 2 {
            ps.barrier.as_mut().unwrap().hold(usage(&format!("h-{i}")));
        }
        assert!(ps.over_bounds(max_unflushed));
        ps.loading.clear();
        ps.barrier = None;
        assert!(!ps.over_bounds(max_unflushed));

        // Events not yet durable.
        ps.unflushed = max_unflushed / 2;
        assert!(ps.flush_pressing(max_unflushed));
        ps.unflushed = max_unflushed;
        assert!(ps.over_bounds(max_unflushed));
        ps.unflushed = 0;

        // Decisions waiting for the audit log and the data plane.
        ps.to_publish = publish_queue::queue(MAX_PUBLISH_BACKLOG - 1);
        assert!(!ps.over_bounds(max_unflushed));
        ps.to_publish = publish_queue::queue(MAX_PUBLISH_BACKLOG);
        assert!(ps.over_bounds(max_unflushed));
        assert!(!ps.flush_pressing(max_unflushed));
    }

    #[test]
    fn a_flush_takes_every_dirty_partner_and_only_as_many_ticked_as_fit() {
        let mut ps = PartitionState::new(1, BTreeMap::new());
        ps.dirty = (0..10).map(|i| format!("d-{i}")).collect();
        // Ticked partners, two of which also had events.
        ps.ticked = (0..MAX_FLUSH_PARTNERS + 5)
            .map(|i| format!("t-{i}"))
            .chain(["d-0".to_owned(), "d-1".to_owned()])
            .collect();
        let first: HashSet<String> = ps.take_flush_partners().into_iter().collect();
        assert_eq!(first.len(), MAX_FLUSH_PARTNERS);
        assert!((0..10).all(|i| first.contains(&format!("d-{i}"))));
        assert!(ps.dirty.is_empty());
        // What did not fit waits, and keeps the partition's changes pending.
        assert_eq!(ps.ticked.len(), 15);
        assert!(ps.ticked.iter().all(|id| !first.contains(id)));
        assert!(ps.has_changes());
        let second: HashSet<String> = ps.take_flush_partners().into_iter().collect();
        assert_eq!(second.len(), 15);
        assert!(first.is_disjoint(&second));
        assert!(!ps.has_changes());
    }
}
