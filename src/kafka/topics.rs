//! Topic names by role, and the start-up check of the topic layout (CONTRACT §1):
//! the keyed topics are co-partitioned, control has exactly one partition, and the topics
//! warden writes exist (created when missing; input topics only when configured).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::domain::event::{DeadLetterReason, Rejection, TopicKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMap {
    pub usage: String,
    pub invoices: String,
    pub attribution: String,
    pub control: String,
    pub enforcement: String,
    pub audit: String,
    pub deadletter: String,
}

impl TopicMap {
    pub fn from_config(kafka: &KafkaConfig) -> Self {
        let t = &kafka.topics;
        TopicMap {
            usage: t.usage.clone(),
            invoices: t.invoices.clone(),
            attribution: t.attribution.clone(),
            control: t.control.clone(),
            enforcement: t.enforcement.clone(),
            audit: t.audit.clone(),
            deadletter: t.deadletter.clone(),
        }
    }

    /// The role of an input topic, by name.
    pub fn kind_of(&self, name: &str) -> Option<TopicKind> {
        if name == self.usage {
            Some(TopicKind::Usage)
        } else if name == self.invoices {
            Some(TopicKind::Invoices)
        } else if name == self.attribution {
            Some(TopicKind::Attribution)
        } else if name == self.control {
            Some(TopicKind::Control)
        } else {
            None
        }
    }

    pub fn name(&self, kind: TopicKind) -> &str {
        match kind {
            TopicKind::Usage => &self.usage,
            TopicKind::Invoices => &self.invoices,
            TopicKind::Attribution => &self.attribution,
            TopicKind::Control => &self.control,
        }
    }

    /// The co-partitioned topics the consumer group subscribes to.
    pub fn keyed(&self) -> [&str; 3] {
        [&self.usage, &self.invoices, &self.attribution]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("topic {0} does not exist and kafka.create_input_topics is off")]
    MissingInput(String),
    #[error("topics are not co-partitioned: {0}")]
    NotCoPartitioned(String),
    #[error("control topic {0} must have exactly 1 partition, has {1}")]
    ControlPartitions(String, usize),
    #[error("kafka: {0}")]
    Kafka(String),
}

impl TopologyError {
    /// Layout problems are configuration errors (exit 2); broker errors are runtime (exit 1).
    pub fn is_config_error(&self) -> bool {
        !matches!(self, TopologyError::Kafka(_))
    }
}

/// Makes sure every topic exists and the layout holds; returns the keyed partition count.
pub fn ensure_topics(
    client_config: &ClientConfig,
    topics: &TopicMap,
    kafka: &KafkaConfig,
    io: &tokio::runtime::Handle,
) -> Result<i32, TopologyError> {
    let admin: AdminClient<DefaultClientContext> = client_config
        .create()
        .map_err(|e| TopologyError::Kafka(e.to_string()))?;
    let timeout = Duration::from_secs(10);
    let counts =
        |admin: &AdminClient<DefaultClientContext>| -> Result<Vec<(String, usize)>, TopologyError> {
            let md = admin
                .inner()
                .fetch_metadata(None, timeout)
                .map_err(|e| TopologyError::Kafka(format!("metadata: {e}")))?;
            Ok(md
                .topics()
                .iter()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| (t.name().to_owned(), t.partitions().len()))
                .collect())
        };
    let existing = counts(&admin)?;
    let count_of = |name: &str, existing: &[(String, usize)]| {
        existing.iter().find(|(n, _)| n == name).map(|(_, c)| *c)
    };

    let found =
        count_of(&topics.usage, &existing).or_else(|| count_of(&topics.invoices, &existing));
    // The input topics' layout wins (their producers are keyed to it); a different
    // `kafka.partitions` is said out loud, since deploy sizes replicas by it.
    if let Some(found) = found.filter(|&n| n != kafka.partitions as usize) {
        tracing::warn!(
            key = "kafka.partitions",
            configured = kafka.partitions,
            found,
            topic = %topics.usage,
            "the input topics have another partition count than kafka.partitions; \
             using theirs (update kafka.partitions and the replica bound)"
        );
    }
    let partitions = found.map(|c| c as i32).unwrap_or(kafka.partitions);

    let mut wanted: Vec<(String, i32, bool)> = Vec::new();
    for name in [&topics.usage, &topics.invoices] {
        if count_of(name, &existing).is_none() {
            if !kafka.create_input_topics {
                return Err(TopologyError::MissingInput(name.clone()));
            }
            wanted.push((name.clone(), partitions, false));
        }
    }
    if count_of(&topics.control, &existing).is_none() {
        if !kafka.create_input_topics {
            return Err(TopologyError::MissingInput(topics.control.clone()));
        }
        wanted.push((topics.control.clone(), 1, true));
    }
    if count_of(&topics.attribution, &existing).is_none() {
        wanted.push((topics.attribution.clone(), partitions, false));
    }
    for name in [&topics.enforcement, &topics.audit, &topics.deadletter] {
        if count_of(name, &existing).is_none() {
            let n = if name == &topics.audit { 1 } else { partitions };
            wanted.push((name.clone(), n, false));
        }
    }
    if !wanted.is_empty() {
        let rf = kafka.replication_factor;
        let new_topics: Vec<NewTopic> = wanted
            .iter()
            .map(|(name, n, forever)| {
                let t = NewTopic::new(name, *n, TopicReplication::Fixed(rf));
                if *forever {
                    t.set("retention.ms", "-1").set("cleanup.policy", "delete")
                } else {
                    t
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(timeout));
        let results = io
            .block_on(admin.create_topics(new_topics.iter(), &opts))
            .map_err(|e| TopologyError::Kafka(format!("create topics: {e}")))?;
        for r in results {
            if let Err((name, code)) = r {
                if code != RDKafkaErrorCode::TopicAlreadyExists {
                    return Err(TopologyError::Kafka(format!("create topic {name}: {code}")));
                }
            }
        }
        tracing::info!(topics = ?wanted.iter().map(|w| &w.0).collect::<Vec<_>>(), "created missing topics");
    }

    // Re-read until every topic is visible (creation is asynchronous on most brokers).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let existing = loop {
        let existing = counts(&admin)?;
        let all = [
            &topics.usage,
            &topics.invoices,
            &topics.attribution,
            &topics.control,
            &topics.enforcement,
            &topics.audit,
            &topics.deadletter,
        ]
        .iter()
        .all(|n| count_of(n, &existing).is_some());
        if all || std::time::Instant::now() > deadline {
            break existing;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut keyed = Vec::new();
    for name in topics.keyed() {
        let c = count_of(name, &existing)
            .ok_or_else(|| TopologyError::Kafka(format!("topic {name} not visible")))?;
        keyed.push(format!("{name}={c}"));
        if c as i32 != partitions {
            return Err(TopologyError::NotCoPartitioned(keyed.join(", ")));
        }
    }
    let control = count_of(&topics.control, &existing).unwrap_or(0);
    if control != 1 {
        return Err(TopologyError::ControlPartitions(
            topics.control.clone(),
            control,
        ));
    }
    Ok(partitions)
}

/// Kafka's default partitioner (murmur2 of the key, Java client compatible), so the
/// admin API can find which partition — and so which snapshot — holds a partner.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions.max(1) as u32) as i32
}

/// CONTRACT §1: a keyed record must sit on the partition murmur2 of its key names. One
/// from a producer with another partitioner (librdkafka's default is CRC32) would give its
/// partner a second state on a second partition: split quotas, two decision sequences,
/// and a statement that misses part of it. Such a record is dead-lettered instead. A
/// record without a key passes here; the decoder rejects it (`wrong_key`).
pub fn check_partition(
    key: Option<&[u8]>,
    partition: i32,
    partitions: i32,
) -> Result<(), Rejection> {
    let Some(key) = key else { return Ok(()) };
    let expected = partition_for_key(key, partitions);
    if expected == partition {
        return Ok(());
    }
    Err(Rejection::new(
        DeadLetterReason::WrongPartition,
        format!(
            "record on partition {partition}, but murmur2 of its key names partition {expected} \
             of {partitions} (produce with the murmur2 partitioner)"
        ),
    ))
}

/// Murmur2 as in `org.apache.kafka.common.utils.Utils.murmur2` (seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Reference values from Kafka's own UtilsTest (murmur2 of these strings).
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn a_record_off_its_keys_partition_is_rejected() {
        let key = b"p-00042";
        let home = partition_for_key(key, 12);
        assert_eq!(check_partition(Some(key), home, 12), Ok(()));
        let away = (home + 1) % 12;
        let rejection = check_partition(Some(key), away, 12).unwrap_err();
        assert_eq!(rejection.reason, DeadLetterReason::WrongPartition);
        assert!(
            rejection.detail.contains(&format!("partition {away}"))
                && rejection
                    .detail
                    .contains(&format!("names partition {home}")),
            "{}",
            rejection.detail
        );
        // No key: the decoder's `wrong_key` is the clearer reason.
        assert_eq!(check_partition(None, away, 12), Ok(()));
        // One partition: every key is at home.
        assert_eq!(check_partition(Some(key), 0, 1), Ok(()));
    }

    #[test]
    fn partitions_are_in_range() {
        for i in 0..1000 {
            let p = partition_for_key(format!("p-{i}").as_bytes(), 7);
            assert!((0..7).contains(&p));
        }
    }
}
