//! How far each partition's reading has got, from librdkafka's statistics.
//!
//! A silent partition's event-time watermark follows the wall clock so its ladders calm
//! down (CONTRACT §3). That is only right when the partition is silent because nothing is
//! left to read: a new owner whose first fetch is slow, or a partition behind a backlog,
//! would otherwise judge calm steps by wall time before the older records it has not read
//! yet. The statistics (every second, no broker round trip) say whether the fetch position
//! has reached the end of the log and nothing fetched waits to be polled.

use std::collections::HashMap;
use std::time::Instant;

/// One partition of one topic, as the latest statistics saw it.
#[derive(Debug, Clone, Copy)]
struct Reading {
    /// The log's end (the high watermark): the lag gauge's source.
    high: i64,
    /// The fetch position had reached `high` and the fetch queue was empty.
    caught_up: bool,
    /// When these statistics arrived: older than a (re)assignment or a seek, they describe
    /// a position given up.
    seen: Instant,
}

/// The latest reading per (topic, partition).
#[derive(Debug, Default)]
pub struct FetchProgress {
    readings: HashMap<(String, i32), Reading>,
}

/// The figures of one partition in librdkafka's statistics that say how far it was read.
#[derive(Debug, Clone, Copy)]
pub struct PartitionStats {
    /// The log's end offset; negative when not known yet.
    pub high: i64,
    /// The next offset the client will fetch (past control records); negative while the
    /// start position is being looked up.
    pub next_fetch: i64,
    /// Records fetched and not yet handed to the application.
    pub queued: i64,
}

impl From<&rdkafka::statistics::Partition> for PartitionStats {
    fn from(p: &rdkafka::statistics::Partition) -> Self {
        PartitionStats {
            high: p.hi_offset,
            next_fetch: p.next_offset,
            queued: p.fetchq_cnt,
        }
    }
}

impl FetchProgress {
    /// Takes one partition's statistics, received at `now`. A partition whose end is not
    /// known yet is left as it was.
    pub fn record(&mut self, topic: &str, partition: i32, stats: PartitionStats, now: Instant) {
        if stats.high < 0 {
            return;
        }
        let caught_up =
            stats.next_fetch >= 0 && stats.next_fetch >= stats.high && stats.queued == 0;
        self.readings.insert(
            (topic.to_owned(), partition),
            Reading {
                high: stats.high,
                caught_up,
                seen: now,
            },
        );
    }

    /// The log's end as last seen, for the lag gauge.
    pub fn high(&self, topic: &str, partition: i32) -> Option<i64> {
        self.readings
            .get(&(topic.to_owned(), partition))
            .map(|r| r.high)
    }

    /// Whether every one of `topics` had been read to its end on `partition`, by
    /// statistics that arrived after `reading_since` (when the partition was assigned or
    /// its position reset). Unknown counts as not caught up.
    pub fn caught_up<'a>(
        &self,
        topics: impl IntoIterator<Item = &'a str>,
        partition: i32,
        reading_since: Instant,
    ) -> bool {
        topics.into_iter().all(|topic| {
            self.readings
                .get(&(topic.to_owned(), partition))
                .is_some_and(|r| r.caught_up && r.seen > reading_since)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stats(high: i64, next_fetch: i64, queued: i64) -> PartitionStats {
        PartitionStats {
            high,
            next_fetch,
            queued,
        }
    }

    /// What the rules above rest on, checked against librdkafka itself: once a consumer
    /// has polled every record, its statistics show the fetch position at the log's end
    /// and nothing queued, on a partition with records and on an empty one.
    #[test]
    fn librdkafka_statistics_show_a_partition_read_to_its_end() {
        use std::sync::Mutex;

        use rdkafka::client::ClientContext;
        use rdkafka::config::ClientConfig;
        use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        use rdkafka::{Offset, Statistics, TopicPartitionList};

        struct Capture(Mutex<FetchProgress>);
        impl ClientContext for Capture {
            fn stats(&self, statistics: Statistics) {
                let mut progress = self.0.lock().unwrap();
                for (name, topic) in &statistics.topics {
                    for (p, part) in &topic.partitions {
                        if *p >= 0 {
                            progress.record(name, *p, part.into(), Instant::now());
                        }
                    }
                }
            }
        }
        impl ConsumerContext for Capture {}

        const TOPIC: &str = "fetch-progress";
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic(TOPIC, 2, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        for i in 0..5 {
            producer
                .send(
                    BaseRecord::<(), _>::to(TOPIC)
                        .partition(0)
                        .payload(&i.to_string()),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        let consumer: BaseConsumer<Capture> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "fetch-progress")
            .set("enable.auto.commit", "false")
            .set("statistics.interval.ms", "100")
            .create_with_context(Capture(Mutex::new(FetchProgress::default())))
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for p in 0..2 {
            assignment
                .add_partition_offset(TOPIC, p, Offset::Beginning)
                .unwrap();
        }
        let assigned = Instant::now();
        consumer.assign(&assignment).unwrap();
        let mut read = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        let caught_up = |c: &BaseConsumer<Capture>, p| {
            c.context()
                .0
                .lock()
                .unwrap()
                .caught_up([TOPIC], p, assigned)
        };
        while (read < 5 || !caught_up(&consumer, 0) || !caught_up(&consumer, 1))
            && Instant::now() < deadline
        {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(20)) {
                read += 1;
            }
        }
        assert_eq!(read, 5);
        assert!(caught_up(&consumer, 0), "the partition with records");
        assert!(caught_up(&consumer, 1), "the empty partition");
        let progress = consumer.context().0.lock().unwrap();
        assert_eq!(progress.high(TOPIC, 0), Some(5));
        assert_eq!(progress.high(TOPIC, 1), Some(0));
    }

    #[test]
    fn a_partition_is_caught_up_only_when_every_topic_was_read_to_its_end() {
        let since = Instant::now();
        let later = since + Duration::from_millis(10);
        let mut progress = FetchProgress::default();
        progress.record("usage", 3, stats(100, 100, 0), later);
        assert!(
            !progress.caught_up(["usage", "invoices"], 3, since),
            "invoices unknown"
        );
        progress.record("invoices", 3, stats(7, 5, 0), later);
        assert!(
            !progress.caught_up(["usage", "invoices"], 3, since),
            "invoices behind"
        );
        progress.record("invoices", 3, stats(7, 7, 2), later);
        assert!(
            !progress.caught_up(["usage", "invoices"], 3, since),
            "fetched records not yet polled"
        );
        progress.record("invoices", 3, stats(7, 7, 0), later);
        assert!(progress.caught_up(["usage", "invoices"], 3, since));
        assert!(
            !progress.caught_up(["usage", "invoices"], 4, since),
            "another partition"
        );
    }

    #[test]
    fn statistics_from_before_an_assignment_say_nothing_about_it() {
        let before = Instant::now();
        let mut progress = FetchProgress::default();
        progress.record("usage", 0, stats(10, 10, 0), before);
        let assigned = before + Duration::from_millis(5);
        assert!(!progress.caught_up(["usage"], 0, assigned));
        progress.record(
            "usage",
            0,
            stats(10, 10, 0),
            assigned + Duration::from_millis(5),
        );
        assert!(progress.caught_up(["usage"], 0, assigned));
    }

    #[test]
    fn a_position_still_being_looked_up_is_not_caught_up() {
        let since = Instant::now();
        let later = since + Duration::from_millis(1);
        let mut progress = FetchProgress::default();
        // librdkafka reports -1001 (no offset) while it asks where to start.
        progress.record("usage", 0, stats(0, -1001, 0), later);
        assert!(!progress.caught_up(["usage"], 0, since));
        // An empty log read from its start is caught up.
        progress.record("usage", 0, stats(0, 0, 0), later);
        assert!(progress.caught_up(["usage"], 0, since));
        assert_eq!(progress.high("usage", 0), Some(0));
        // An unknown end leaves the reading as it was.
        progress.record("usage", 0, stats(-1, 5, 0), later);
        assert_eq!(progress.high("usage", 0), Some(0));
    }
}
