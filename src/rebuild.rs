//! `warden rebuild`: the explicit operator command that rebuilds partner state from the
//! input topics after the store lost it (CONTRACT §9: a lost store is detected and the
//! daemon stays unready; rebuilding is never a silent replay).
//!
//! What it does, in this order, refusing before it changes anything when a check fails:
//! 1. the consumer group must have no member: every instance is stopped (a running one
//!    would keep writing the state being deleted). A broker that cannot list a group's
//!    members (tansu) needs `--group-checked-by-hand`;
//! 2. every partition of the keyed input topics must still start at offset 0, so the
//!    topics hold every record since the program started (with shorter retention a
//!    rebuild undercounts: restore a backup instead);
//! 3. it deletes the partition state in the store, and only that: the keys
//!    `<prefix>:{p<N>}:*` (epochs, offsets, partner snapshots, dedup ids, awake and wake
//!    sets). Decisions, kill switches, payouts and the audit chain cannot be rebuilt from
//!    Kafka and are kept;
//! 4. it stores, for each partition, offset 0 of each keyed topic, taken under a fresh
//!    ownership epoch: the stored offsets are the truth (§9), so the next start reads
//!    every record from the first, whatever the group has committed.
//!
//! `deploy/RUNBOOK.md` (WardenStoreLost) says when to use it.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::config::{Config, StoreBackend};
use crate::store::redis::RedisStore;
use crate::store::{PartitionWrite, StateStore};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub partitions: i32,
    pub deleted_keys: u64,
}

/// Runs the rebuild for `config`'s deployment; an error says what was refused or failed
/// and whether anything had changed.
///
/// `group_checked_by_hand`: the broker cannot list the group's members (not every
/// Kafka-protocol broker implements it), and the operator has checked that every instance
/// is stopped.
pub fn rebuild(config: &Config, group_checked_by_hand: bool) -> Result<Rebuilt, String> {
    if config.store.backend != StoreBackend::Redis || config.kafka.embedded {
        return Err(
            "rebuild works on a deployment's Redis store and Kafka brokers; the embedded \
             default and the memory store keep nothing to rebuild"
                .into(),
        );
    }
    let kafka = &config.kafka;
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", format!("{}-rebuild", kafka.client_id))
        .set("group.id", format!("{}-rebuild", kafka.group_id));
    for (k, v) in &kafka.properties {
        client.set(k, v);
    }
    let consumer: BaseConsumer = client.create().map_err(|e| format!("kafka client: {e}"))?;
    check_group(&consumer, config, group_checked_by_hand)?;
    let partitions = check_topics(&consumer, config)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let store = &config.store;
    let timeout = store.timeout.max(Duration::from_secs(5));
    let keyed: Vec<String> = [
        &kafka.topics.usage,
        &kafka.topics.invoices,
        &kafka.topics.attribution,
    ]
    .into_iter()
    .cloned()
    .collect();
    rt.block_on(async move {
        let redis = RedisStore::connect(&store.redis_url, &store.key_prefix, timeout)
            .await
            .map_err(|e| format!("store: {e} (nothing was changed)"))?;
        let deleted_keys = redis
            .delete_partition_state()
            .await
            .map_err(|e| format!("store: deleting the partition state: {e}"))?;
        for p in 0..partitions {
            let offsets = keyed.iter().map(|t| (t.clone(), 0)).collect();
            let write = |epoch| PartitionWrite {
                partition: p,
                epoch,
                offsets,
                partners: Vec::new(),
                dedup: Vec::new(),
                awake: Vec::new(),
                wake: Vec::new(),
            };
            let stored = async {
                let epoch = redis.acquire(p).await?;
                redis.commit(write(epoch)).await
            };
            stored.await.map_err(|e| {
                format!(
                    "store: partition {p}: {e} ({deleted_keys} keys deleted; run rebuild \
                     again, it starts over)"
                )
            })?;
        }
        Ok(Rebuilt {
            partitions,
            deleted_keys,
        })
    })
}

/// The consumer group has no member: every instance is stopped.
fn check_group(consumer: &BaseConsumer, config: &Config, by_hand: bool) -> Result<(), String> {
    let kafka = &config.kafka;
    let groups = match consumer.fetch_group_list(Some(&kafka.group_id), KAFKA_TIMEOUT) {
        Ok(groups) => groups,
        Err(_) if by_hand => return Ok(()),
        Err(e) => {
            return Err(format!(
                "kafka: the consumer group's members could not be read ({e}). Make sure \
                 every warden instance is stopped, then pass --group-checked-by-hand \
                 (nothing was changed)"
            ))
        }
    };
    let members: usize = groups
        .groups()
        .iter()
        .filter(|g| g.name() == kafka.group_id)
        .map(|g| g.members().len())
        .sum();
    if members > 0 {
        return Err(format!(
            "consumer group {} has {members} member(s): stop every warden instance first \
             (nothing was changed)",
            kafka.group_id
        ));
    }
    Ok(())
}

/// Every keyed partition starts at offset 0; returns the keyed topics' partition count.
fn check_topics(consumer: &BaseConsumer, config: &Config) -> Result<i32, String> {
    let kafka = &config.kafka;
    let mut partitions = None;
    for topic in [
        &kafka.topics.usage,
        &kafka.topics.invoices,
        &kafka.topics.attribution,
    ] {
        let md = consumer
            .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
            .map_err(|e| format!("kafka: metadata of {topic}: {e}"))?;
        let n = md
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map_or(0, |t| t.partitions().len()) as i32;
        if n == 0 {
            return Err(format!(
                "kafka: topic {topic} does not exist (nothing was changed)"
            ));
        }
        if partitions.is_some_and(|p| p != n) {
            return Err(format!(
                "kafka: {topic} has {n} partitions, unlike the other keyed topics (nothing \
                 was changed)"
            ));
        }
        partitions = Some(n);
        for p in 0..n {
            let (low, _) = consumer
                .fetch_watermarks(topic, p, KAFKA_TIMEOUT)
                .map_err(|e| format!("kafka: offsets of {topic}/{p}: {e}"))?;
            if low > 0 {
                return Err(format!(
                    "{topic}/{p} starts at offset {low}: the records before it are gone, and \
                     a rebuild would undercount. Restore the store from a backup instead \
                     (nothing was changed)"
                ));
            }
        }
    }
    partitions.ok_or_else(|| "kafka: no keyed topic".to_owned())
}
