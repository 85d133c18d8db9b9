//! The consumer thread: one rdkafka consumer-group member over the keyed topics.
//!
//! It runs on a plain thread (not an async task) because librdkafka calls the rebalance
//! callback from inside `poll`, and that callback must block until the partition is
//! flushed or its offsets are read from the store. It keeps polling at all times — also
//! while partitions are paused by back-pressure or the store is down — so it never
//! leaves the group for exceeding `max.poll.interval.ms`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::TopicPartitionList;

use super::pipeline::Pipeline;

/// The consumer's context: the pipeline lives here so the rebalance callback can reach it.
/// The poll loop never holds the lock while calling `poll`, so the callback can take it.
pub struct WardenContext {
    pipeline: Mutex<Pipeline>,
    /// Bumped by every rebalance: messages polled before one are stale.
    generation: AtomicU64,
}

impl ClientContext for WardenContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            _ => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }

    /// librdkafka's statistics carry each partition's high watermark: the lag gauge's
    /// source, without a broker round trip on the poll thread.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut pipeline = self.pipeline.lock();
        for (name, topic) in &statistics.topics {
            for (p, part) in &topic.partitions {
                if *p >= 0 {
                    pipeline.record_high_watermark(name, *p, part.hi_offset);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", error = %error, "{reason}");
    }
}

impl ConsumerContext for WardenContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assignment = self.pipeline.lock().on_assign(tpl, consumer);
                if let Err(e) = consumer.assign(&assignment) {
                    tracing::error!(error = %e, "assign failed");
                }
                // A fresh owner starts unpaused: librdkafka keeps a partition's pause flag
                // across assignments, so one paused by its previous owner here (back-pressure,
                // or fenced) would otherwise never be read again.
                if let Err(e) = consumer.resume(&assignment) {
                    tracing::warn!(error = %e, "resume after assign failed");
                }
            }
            other => {
                if other != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::error!(error = ?other, "rebalance error; releasing partitions");
                }
                self.pipeline.lock().on_revoke(consumer);
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

pub struct ConsumerSettings {
    pub poll_batch: usize,
    pub shutdown_grace: Duration,
}

/// Creates the group member and starts the poll loop on its own thread. The thread ends
/// when `stop` is set: it drains, flushes and leaves the group within `shutdown_grace`.
pub fn spawn(
    client_config: ClientConfig,
    topics: Vec<String>,
    pipeline: Pipeline,
    settings: ConsumerSettings,
) -> Result<JoinHandle<()>, KafkaError> {
    let health = pipeline.health();
    let context = WardenContext {
        pipeline: Mutex::new(pipeline),
        generation: AtomicU64::new(0),
    };
    let consumer: BaseConsumer<WardenContext> = client_config.create_with_context(context)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let handle = std::thread::Builder::new()
        .name("warden-consumer".into())
        .spawn(move || {
            health.consuming.store(true, Ordering::SeqCst);
            poll_loop(&consumer, &settings, &health);
            let deadline = Instant::now() + settings.shutdown_grace;
            let durable = {
                let mut pipeline = consumer.context().pipeline.lock();
                let started = Instant::now();
                let durable = pipeline.drain(&consumer, deadline);
                let drained = started.elapsed();
                // Decisions of the final snapshots reach the data plane before we leave.
                pipeline.finish_publishing(&consumer, deadline);
                tracing::info!(?drained, published = ?started.elapsed(), "consumer drained and published");
                durable
            };
            tracing::info!(durable, "consumer drained; leaving the group");
            consumer.unsubscribe();
            drop(consumer);
            health.consuming.store(false, Ordering::SeqCst);
        })
        .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
    Ok(handle)
}

fn poll_loop(
    consumer: &BaseConsumer<WardenContext>,
    settings: &ConsumerSettings,
    health: &crate::app::Health,
) {
    let ctx = consumer.context();
    let mut batch = Vec::with_capacity(settings.poll_batch);
    while !health.stopping.load(Ordering::SeqCst) {
        batch.clear();
        let mut generation = ctx.generation.load(Ordering::SeqCst);
        // Briefly while the io runtime works for this thread, so what it finishes (a
        // flush, a publication) is taken in at once; otherwise long enough to idle cheaply.
        let mut timeout = if ctx.pipeline.lock().busy() {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(5)
        };
        while batch.len() < settings.poll_batch {
            match consumer.poll(timeout) {
                Some(Ok(m)) => {
                    let now = ctx.generation.load(Ordering::SeqCst);
                    if now != generation {
                        // A rebalance ran inside this poll: what was polled before it
                        // belongs to the old assignment and will be read again.
                        batch.clear();
                        generation = now;
                    }
                    batch.push(m);
                }
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                None => break,
            }
            timeout = Duration::ZERO;
        }
        if ctx.generation.load(Ordering::SeqCst) != generation {
            batch.clear();
        }
        let mut pipeline = ctx.pipeline.lock();
        pipeline.take_completions(consumer);
        pipeline.route(&batch, consumer);
        pipeline.retry_stalled(consumer);
        pipeline.flush(consumer, false);
        pipeline.publish_decisions();
        pipeline.maintenance();
    }
}
