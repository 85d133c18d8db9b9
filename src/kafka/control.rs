//! The control-topic reader: every instance reads all of `warden.control.v1` from its
//! start, outside the consumer group (CONTRACT §1), into the global [`ControlTable`].
//! Readiness waits until the high watermark found at start has been read.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::RwLock;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::deadletter::{DeadLetter, DeadLetterSink, PendingDeadLetter};
use super::decode::{decode_control_record, DecodeLimits};
use crate::app::Health;
use crate::domain::control::ControlTable;
use crate::domain::event::TopicKind;
use crate::metrics::{Outcome, METRICS};

pub struct ControlReader {
    pub topic: String,
    pub limits: DecodeLimits,
    pub table: Arc<RwLock<ControlTable>>,
    pub dlq: DeadLetterSink,
    pub io: tokio::runtime::Handle,
    pub health: Arc<Health>,
}

impl ControlReader {
    /// Starts reading on its own thread; returns once the consumer is assigned.
    pub fn spawn(
        self,
        mut client_config: ClientConfig,
    ) -> Result<JoinHandle<()>, rdkafka::error::KafkaError> {
        // assign() needs a group.id, but no group is joined and nothing is committed.
        client_config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let consumer: BaseConsumer = client_config.create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let (_, high) = consumer.fetch_watermarks(&self.topic, 0, Duration::from_secs(10))?;
        tracing::info!(topic = %self.topic, high_watermark = high, "reading the control topic");
        let handle = std::thread::Builder::new()
            .name("warden-control".into())
            .spawn(move || self.run(consumer, high))
            .map_err(|e| rdkafka::error::KafkaError::ClientCreation(e.to_string()))?;
        Ok(handle)
    }

    fn run(self, consumer: BaseConsumer, start_high: i64) {
        if start_high <= 0 {
            self.caught_up();
        }
        while !self.health.stopping.load(Ordering::SeqCst) {
            let Some(res) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = match res {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "control topic error");
                    continue;
                }
            };
            match decode_control_record(m.payload(), &self.limits) {
                Ok(fact) => {
                    self.table.write().apply(m.offset(), &fact);
                    METRICS.control_facts.inc();
                    METRICS.count_events(TopicKind::Control, Outcome::Applied, 1);
                }
                Err(rejection) => {
                    METRICS.dead_letter(TopicKind::Control, rejection.reason);
                    let dl = DeadLetter {
                        source_topic: self.topic.clone(),
                        partition: m.partition(),
                        offset: m.offset(),
                        reason: rejection.reason,
                        detail: rejection.detail,
                        payload: m.payload().unwrap_or_default().to_vec(),
                    };
                    // Retry until acknowledged: a control dead letter must not go missing.
                    let mut pending = vec![PendingDeadLetter::Unsent(dl)];
                    while let Err(unacked) = self
                        .io
                        .block_on(self.dlq.send_all(std::mem::take(&mut pending)))
                    {
                        pending = unacked;
                        if self.health.stopping.load(Ordering::SeqCst) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            if m.offset() + 1 >= start_high && !self.health.control_caught_up.load(Ordering::SeqCst)
            {
                self.caught_up();
            }
        }
    }

    fn caught_up(&self) {
        self.health.control_caught_up.store(true, Ordering::SeqCst);
        METRICS.control_caught_up.set(1);
        tracing::info!("control topic caught up");
    }
}
