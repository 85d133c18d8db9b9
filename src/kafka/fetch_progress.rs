//! How far each partition's reading has got, from librdkafka's statistics.
//!
//! A silent partition's event-time watermark follows the wall clock so its ladders calm
//! down (CONTRACT §3). That is only right when the partition is silent because nothing is
//! left to read: a new owner whose first fetch is slow, or a partition behind a backlog,
//! would otherwise judge calm steps by wall time before the older records it has not read
//! yet. The statistics (every second, no broker round trip) say, per partition, up to
//! where the application was handed records (`app_offset`, which librdkafka also moves
//! past transaction markers) and where the log ends for this consumer (the last stable
//! offset under `read_committed`, else the high watermark). The fetch queue's length is
//! no use here: the group's partitions all forward into one queue, so it counts every
//! partition's records.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long after a partition's reading (re)started statistics are trusted: more than
/// the statistics interval (1 s), so at least one was emitted after it.
pub const STATS_MARGIN: Duration = Duration::from_millis(1_500);

/// One partition of one topic, as the latest statistics saw it.
#[derive(Debug, Clone, Copy)]
struct Reading {
    /// The log's end (the high watermark): the lag gauge's source.
    high: i64,
    /// Where reading this partition ends for this consumer now (see [`FetchProgress::record`]).
    end: i64,
    /// The offset after the last record librdkafka handed to the application, past
    /// control records (negative before the first).
    handed_out: i64,
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
    /// The log's end offset (high watermark); negative when not known yet.
    pub high: i64,
    /// The last stable offset (the end a `read_committed` consumer can reach); negative
    /// when the broker does not report one.
    pub last_stable: i64,
    /// The offset after the last record handed to the application (past control records
    /// too); negative before the first.
    pub handed_out: i64,
}

impl From<&rdkafka::statistics::Partition> for PartitionStats {
    fn from(p: &rdkafka::statistics::Partition) -> Self {
        PartitionStats {
            high: p.hi_offset,
            last_stable: p.ls_offset,
            handed_out: p.app_offset,
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
        // Under `read_committed` (librdkafka's default) nothing past the last stable
        // offset can be read yet: records of an open transaction are not a backlog.
        let end = if stats.last_stable >= 0 {
            stats.last_stable.min(stats.high)
        } else {
            stats.high
        };
        self.readings.insert(
            (topic.to_owned(), partition),
            Reading {
                high: stats.high,
                end,
                handed_out: stats.handed_out,
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

    /// Whether `partition` had been read to its end on every topic, by statistics that
    /// arrived at least [`STATS_MARGIN`] after `reading_since` (when the partition was
    /// assigned, its position reset, or its fetching resumed): statistics emitted before,
    /// and served after, describe a position given up. `positions` gives each topic with
    /// the application's own next offset (negative: none), which is where a new owner
    /// starts when nothing is left to hand out. Unknown counts as not caught up.
    pub fn caught_up<'a>(
        &self,
        partition: i32,
        reading_since: Instant,
        positions: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> bool {
        positions.into_iter().all(|(topic, next)| {
            self.readings
                .get(&(topic.to_owned(), partition))
                .is_some_and(|r| {
                    r.seen > reading_since + STATS_MARGIN
                        && (r.end == 0 || r.handed_out.max(next) >= r.end)
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(high: i64, last_stable: i64, handed_out: i64) -> PartitionStats {
        PartitionStats {
            high,
            last_stable,
            handed_out,
        }
    }

    /// What the rules above rest on, checked against librdkafka itself: once a consumer
    /// has polled every record, its statistics show every record handed out, on a
    /// partition with records and on an empty one; a partition whose records were not
    /// handed out is not caught up, whatever the other partitions do.
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
        cluster.create_topic(TOPIC, 3, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        for (partition, n) in [(0, 5), (2, 3)] {
            for i in 0..n {
                let payload = i.to_string();
                let record = BaseRecord::<(), _>::to(TOPIC)
                    .partition(partition)
                    .payload(&payload);
                producer.send(record).unwrap();
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        let consumer: BaseConsumer<Capture> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "fetch-progress")
            .set("enable.auto.commit", "false")
            .set("statistics.interval.ms", "100")
            .create_with_context(Capture(Mutex::new(FetchProgress::default())))
            .unwrap();
        // Partitions 0 and 1 from their start; 2 from where its records end minus three,
        // so three of its records wait, and it is paused at once: never handed out.
        let mut assignment = TopicPartitionList::new();
        for p in 0..3 {
            assignment
                .add_partition_offset(TOPIC, p, Offset::Beginning)
                .unwrap();
        }
        let mut paused = TopicPartitionList::new();
        paused.add_partition(TOPIC, 2);
        let since = Instant::now() - STATS_MARGIN;
        consumer.assign(&assignment).unwrap();
        consumer.pause(&paused).unwrap();
        let caught_up = |c: &BaseConsumer<Capture>, p| {
            c.context()
                .0
                .lock()
                .unwrap()
                .caught_up(p, since, [(TOPIC, -1)])
        };
        let mut read = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while (read < 5 || !caught_up(&consumer, 0) || !caught_up(&consumer, 1))
            && Instant::now() < deadline
        {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                use rdkafka::Message;
                assert_ne!(m.partition(), 2, "a paused partition's record");
                read += 1;
            }
        }
        assert_eq!(read, 5);
        assert!(caught_up(&consumer, 0), "the partition with records");
        assert!(caught_up(&consumer, 1), "the empty partition");
        let progress = consumer.context().0.lock().unwrap();
        assert_eq!(progress.high(TOPIC, 0), Some(5));
        assert!(
            !progress.caught_up(2, since, [(TOPIC, -1)]),
            "records never handed out"
        );
    }

    #[test]
    fn a_partition_is_caught_up_only_when_every_topic_was_read_to_its_end() {
        let since = Instant::now();
        let later = since + STATS_MARGIN + Duration::from_millis(10);
        let mut progress = FetchProgress::default();
        progress.record("usage", 3, stats(100, 100, 100), later);
        assert!(
            !progress.caught_up(3, since, [("usage", -1), ("invoices", -1)]),
            "invoices unknown"
        );
        progress.record("invoices", 3, stats(7, 7, 5), later);
        assert!(
            !progress.caught_up(3, since, [("usage", -1), ("invoices", -1)]),
            "invoices behind"
        );
        progress.record("invoices", 3, stats(7, 7, 7), later);
        assert!(progress.caught_up(3, since, [("usage", -1), ("invoices", -1)]));
        assert!(
            !progress.caught_up(4, since, [("usage", -1), ("invoices", -1)]),
            "another partition"
        );
    }

    /// A new owner starts at the stored offsets; with nothing past them, librdkafka hands
    /// out nothing, and the application's own position says it is at the end.
    #[test]
    fn the_applications_own_position_counts() {
        let since = Instant::now();
        let later = since + STATS_MARGIN + Duration::from_millis(10);
        let mut progress = FetchProgress::default();
        progress.record("usage", 0, stats(40, 40, -1001), later);
        assert!(!progress.caught_up(0, since, [("usage", 39)]));
        assert!(progress.caught_up(0, since, [("usage", 40)]));
    }

    /// Under `read_committed` an open transaction's records cannot be read yet: the end is
    /// the last stable offset. A broker that reports none leaves the high watermark.
    #[test]
    fn the_end_is_the_last_stable_offset_when_there_is_one() {
        let since = Instant::now();
        let later = since + STATS_MARGIN + Duration::from_millis(10);
        let mut progress = FetchProgress::default();
        progress.record("usage", 0, stats(20, 12, 12), later);
        assert!(progress.caught_up(0, since, [("usage", -1)]));
        progress.record("usage", 0, stats(20, -1, 12), later);
        assert!(!progress.caught_up(0, since, [("usage", -1)]));
    }

    #[test]
    fn statistics_from_before_an_assignment_say_nothing_about_it() {
        let before = Instant::now();
        let mut progress = FetchProgress::default();
        progress.record("usage", 0, stats(10, 10, 10), before);
        let assigned = before + Duration::from_millis(5);
        assert!(!progress.caught_up(0, assigned, [("usage", -1)]));
        // Within the margin: possibly emitted before the assignment and served after.
        progress.record(
            "usage",
            0,
            stats(10, 10, 10),
            assigned + Duration::from_millis(5),
        );
        assert!(!progress.caught_up(0, assigned, [("usage", -1)]));
        progress.record("usage", 0, stats(10, 10, 10), assigned + STATS_MARGIN * 2);
        assert!(progress.caught_up(0, assigned, [("usage", -1)]));
    }

    #[test]
    fn a_position_not_yet_known_is_not_caught_up() {
        let since = Instant::now();
        let later = since + STATS_MARGIN + Duration::from_millis(10);
        let mut progress = FetchProgress::default();
        // librdkafka reports -1001 (no offset) before the first record is handed out.
        progress.record("usage", 0, stats(4, 4, -1001), later);
        assert!(!progress.caught_up(0, since, [("usage", -1)]));
        // An empty log has nothing to hand out.
        progress.record("usage", 0, stats(0, 0, -1001), later);
        assert!(progress.caught_up(0, since, [("usage", -1)]));
        assert_eq!(progress.high("usage", 0), Some(0));
        // An unknown end leaves the reading as it was.
        progress.record("usage", 0, stats(-1, -1, 5), later);
        assert_eq!(progress.high("usage", 0), Some(0));
    }
}
