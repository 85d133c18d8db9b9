//! The real broker (tansu, started by scripts/test) does what the daemon needs:
//! keyed records land where Kafka's murmur2 puts them, so the keyed topics are
//! co-partitioned (CONTRACT §1); a consumer group gets every record once,
//! commits, and a successor in the group resumes at the commit; record
//! timestamps and watermarks come back as produced.
//!
//! Also checks the helpers in tests/common that other suites build on.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::{brokers, create_topics, unique, TestProducer};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, Timestamp, TopicPartitionList};

const PARTITIONS: i32 = 4;
const WAIT: Duration = Duration::from_secs(60);

/// Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), the hash the
/// Java client's default partitioner and librdkafka's `murmur2_random` use.
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition the contract's partitioner picks for `key` among `n`.
fn partition_for(key: &str, n: i32) -> i32 {
    ((murmur2(key.as_bytes()) & 0x7fff_ffff) % n as u32) as i32
}

#[test]
fn murmur2_matches_kafkas_reference_values() {
    // From Kafka's UtilsTest.testMurmur2 (Java ints, hence the `as i32`).
    let cases: [(&[u8], i32); 6] = [
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        (b"abc", 479_470_107),
    ];
    for (data, expected) in cases {
        assert_eq!(
            murmur2(data) as i32,
            expected,
            "murmur2({:?})",
            String::from_utf8_lossy(data)
        );
    }
}

#[test]
fn keyed_records_land_in_the_murmur2_partition_of_every_topic() {
    let brokers = brokers();
    let (usage, invoices) = (unique("smoke.usage"), unique("smoke.invoices"));
    create_topics(&brokers, &[(&usage, PARTITIONS), (&invoices, PARTITIONS)]);
    assert_eq!(
        common::partition_count(&brokers, &usage),
        Some(PARTITIONS as usize)
    );

    let mut producer = TestProducer::new(&brokers);
    let keys: Vec<String> = (0..64).map(|i| format!("partner-{i}")).collect();
    for topic in [&usage, &invoices] {
        for (i, key) in keys.iter().enumerate() {
            producer.send(topic, Some(key), format!("{topic}/{i}").as_bytes());
        }
    }
    let delivered = producer.flush();
    assert_eq!(delivered.len(), 2 * keys.len());

    let mut partition_of: HashMap<(String, String), i32> = HashMap::new();
    for d in &delivered {
        let key = d.key.clone().expect("keyed");
        assert_eq!(
            d.partition,
            partition_for(&key, PARTITIONS),
            "{key} in {}",
            d.topic
        );
        partition_of.insert((d.topic.clone(), key), d.partition);
    }
    // Co-partitioning: a key has the same partition number in both topics, and
    // the keys spread over every partition (so the check is not vacuous).
    for key in &keys {
        assert_eq!(
            partition_of[&(usage.clone(), key.clone())],
            partition_of[&(invoices.clone(), key.clone())]
        );
    }
    let used: BTreeSet<i32> = delivered.iter().map(|d| d.partition).collect();
    assert_eq!(used, (0..PARTITIONS).collect());

    // Read back outside any group: the broker stored each where it reported.
    let read = common::consume_all(&brokers, &usage, keys.len(), WAIT);
    assert_eq!(read.len(), keys.len());
    for (partition, offset, key, payload) in &read {
        let key = key.as_deref().expect("keyed");
        assert_eq!(*partition, partition_for(key, PARTITIONS));
        let sent = delivered
            .iter()
            .find(|d| d.topic == usage && d.key.as_deref() == Some(key))
            .expect("sent");
        assert_eq!((sent.partition, sent.offset), (*partition, *offset));
        let i = keys.iter().position(|k| k == key).expect("known key");
        assert_eq!(payload, format!("{usage}/{i}").as_bytes());
    }
}

#[test]
fn consumer_group_gets_every_record_once_and_a_successor_resumes_at_the_commit() {
    let brokers = brokers();
    let topics = [unique("smoke.group.a"), unique("smoke.group.b")];
    create_topics(
        &brokers,
        &[(&topics[0], PARTITIONS), (&topics[1], PARTITIONS)],
    );
    let group = unique("smoke-group");

    let mut producer = TestProducer::new(&brokers);
    let mut sent = BTreeSet::new();
    for i in 0..1_000 {
        let topic = &topics[i % 2];
        let key = format!("partner-{}", i % 37);
        let payload = format!("record-{i}");
        producer.send(topic, Some(&key), payload.as_bytes());
        sent.insert((topic.clone(), key, payload));
    }
    let delivered = producer.flush();
    assert_eq!(delivered.len(), 1_000);

    // First member: everything, exactly once.
    let first = group_consumer(&brokers, &group, &topics);
    let mut received = Vec::new();
    let deadline = Instant::now() + WAIT;
    while received.len() < sent.len() && Instant::now() < deadline {
        if let Some(m) = first.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            let key = String::from_utf8(m.key().expect("keyed").to_vec()).expect("utf-8 key");
            assert_eq!(m.partition(), partition_for(&key, PARTITIONS), "{key}");
            let payload = String::from_utf8(m.payload().expect("payload").to_vec()).expect("utf-8");
            received.push((
                m.topic().to_owned(),
                m.partition(),
                m.offset(),
                key,
                payload,
            ));
        }
    }
    assert_eq!(
        received.len(),
        sent.len(),
        "records received by the first member"
    );
    let got: BTreeSet<(String, String, String)> = received
        .iter()
        .map(|(t, _, _, k, p)| (t.clone(), k.clone(), p.clone()))
        .collect();
    assert_eq!(got.len(), received.len(), "a record arrived twice");
    assert_eq!(got, sent);
    // A TopicPartitionList the consumer returned holds librdkafka partition
    // references: it must be gone before the consumer drops, or the drop hangs.
    {
        let assigned = first.assignment().expect("assignment");
        assert_eq!(
            assigned.count(),
            2 * PARTITIONS as usize,
            "the only member owns every partition"
        );
    }

    // Commit the next offset of every partition consumed (offsets are stored
    // explicitly: enable.auto.offset.store=false).
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for (topic, partition, offset, _, _) in &received {
        let entry = next.entry((topic.clone(), *partition)).or_insert(0);
        *entry = (*entry).max(offset + 1);
    }
    assert_eq!(
        next.len(),
        2 * PARTITIONS as usize,
        "records in every partition"
    );
    let mut commit = TopicPartitionList::new();
    for ((topic, partition), offset) in &next {
        commit
            .add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .expect("offset");
    }
    first.commit(&commit, CommitMode::Sync).expect("commit");
    let committed = offsets_of(
        &first
            .committed_offsets(commit.clone(), Duration::from_secs(10))
            .expect("committed"),
    );
    assert_eq!(committed, next);
    drop(first); // closes: leaves the group

    // Every record is below its partition's high watermark, i.e. the commit
    // covers the whole topic.
    for topic in &topics {
        assert_eq!(common::topic_record_count(&brokers, topic), 500, "{topic}");
    }

    // Second member of the same group: starts at the commit, so the only record
    // it sees is the one produced after it.
    let marker = producer.send_sync(&topics[0], Some("partner-marker"), b"after-commit");
    let second = group_consumer(&brokers, &group, &topics);
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while seen.is_empty() && Instant::now() < deadline {
        if let Some(m) = second.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            seen.push((
                m.topic().to_owned(),
                m.partition(),
                m.offset(),
                m.payload().map(<[u8]>::to_vec),
            ));
        }
    }
    assert_eq!(
        seen,
        vec![(
            topics[0].clone(),
            marker.partition,
            marker.offset,
            Some(b"after-commit".to_vec())
        )]
    );
    let resumed = second
        .committed_offsets(commit, Duration::from_secs(10))
        .expect("committed");
    assert_eq!(
        offsets_of(&resumed),
        next,
        "the successor sees the first member's commit"
    );
}

#[test]
fn two_members_with_range_own_the_same_partition_numbers_of_every_topic() {
    let brokers = brokers();
    let topics = [unique("smoke.range.a"), unique("smoke.range.b")];
    create_topics(
        &brokers,
        &[(&topics[0], PARTITIONS), (&topics[1], PARTITIONS)],
    );
    let group = unique("smoke-range");
    let members = [
        group_consumer(&brokers, &group, &topics),
        group_consumer(&brokers, &group, &topics),
    ];

    // Both must keep polling for the rebalance to complete.
    let mut owned: Vec<BTreeMap<String, BTreeSet<i32>>> = Vec::new();
    let settled = common::wait_until(WAIT, Duration::ZERO, || {
        for member in &members {
            let _ = member.poll(Duration::from_millis(50));
        }
        owned = members.iter().map(owned_partitions).collect();
        owned
            .iter()
            .all(|o| o.values().map(BTreeSet::len).sum::<usize>() == PARTITIONS as usize)
    });
    assert!(settled, "the group never split 8 partitions 4/4: {owned:?}");
    let mut all = BTreeSet::new();
    for o in &owned {
        // range assigns partition p of every subscribed topic to the same member
        assert_eq!(
            o.get(&topics[0]),
            o.get(&topics[1]),
            "co-partitioned ownership: {owned:?}"
        );
        for (topic, partitions) in o {
            all.extend(partitions.iter().map(|p| (topic.clone(), *p)));
        }
    }
    assert_eq!(
        all.len(),
        2 * PARTITIONS as usize,
        "every partition has exactly one owner: {owned:?}"
    );
}

/// Why the daemon resumes every partition it is assigned (src/kafka/consumer.rs): a
/// partition paused by its previous owner (back-pressure, or fenced) stays paused across
/// an unassign and a new assign at a stored offset in librdkafka, and is read again only
/// once resumed.
#[test]
fn a_pause_survives_reassignment_until_resumed() {
    let brokers = brokers();
    let topic = unique("smoke-pause");
    create_topics(&brokers, &[(&topic, 1)]);
    let mut producer = TestProducer::new(&brokers);
    let mut produce = |from: usize| {
        for i in from..from + 10 {
            producer.send(&topic, Some("k"), format!("r{i}").as_bytes());
        }
        producer.flush();
    };
    produce(0);
    let consumer: BaseConsumer = common::kafka_config(&brokers)
        .set("group.id", unique("smoke-pause-group"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    // Reads until `want` records came or `within` passed.
    let read = |want: usize, within: Duration| {
        let deadline = Instant::now() + within;
        let mut n = 0;
        while n < want && Instant::now() < deadline {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                n += 1;
            }
        }
        n
    };
    let at = |offset: Offset| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, offset).expect("offset");
        tpl
    };
    consumer.assign(&at(Offset::Beginning)).expect("assign");
    assert_eq!(read(10, WAIT), 10, "the first owner reads the partition");
    // The owner pauses it (back-pressure), then loses it; a new assignment at the offset
    // the store holds starts paused.
    consumer.pause(&at(Offset::Offset(10))).expect("pause");
    consumer.unassign().expect("unassign");
    produce(10);
    consumer
        .assign(&at(Offset::Offset(10)))
        .expect("assign again");
    assert_eq!(
        read(1, Duration::from_secs(3)),
        0,
        "librdkafka no longer keeps the pause across assignments: the resume in \
         src/kafka/consumer.rs may go"
    );
    consumer.resume(&at(Offset::Offset(10))).expect("resume");
    assert_eq!(read(10, WAIT), 10);
}

#[test]
fn record_timestamps_come_back_as_produced() {
    let brokers = brokers();
    let topic = unique("smoke.timestamps");
    create_topics(&brokers, &[(&topic, 1)]);
    let mut producer = TestProducer::new(&brokers);
    let stamps = [1_700_000_000_000_i64, 1_700_000_000_001, 1_600_000_000_000];
    for (i, ts) in stamps.iter().enumerate() {
        producer.send_with(
            &topic,
            Some("k"),
            format!("{i}").as_bytes(),
            None,
            Some(*ts),
        );
    }
    producer.flush();
    let read = common::consume_records(&brokers, &topic, stamps.len(), WAIT);
    let got: Vec<(i64, Timestamp)> = read.iter().map(|r| (r.offset, r.timestamp)).collect();
    let want: Vec<(i64, Timestamp)> = stamps
        .iter()
        .enumerate()
        .map(|(i, ts)| (i as i64, Timestamp::CreateTime(*ts)))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        common::topic_record_count(&brokers, &topic),
        stamps.len() as i64
    );
}

#[test]
fn dedicated_redis_keeps_acknowledged_writes_across_stop_and_crash() {
    let mut redis = common::RedisServer::start_new();
    let url = redis.url();
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = client.get_connection().expect("connect");
    redis::cmd("SET")
        .arg("smoke:a")
        .arg("1")
        .exec(&mut conn)
        .expect("SET");

    redis.stop();
    assert!(
        !common::redis_ping(redis.port()),
        "still answering after stop()"
    );
    redis.start();
    let mut conn = client.get_connection().expect("reconnect");
    redis::cmd("SET")
        .arg("smoke:b")
        .arg("2")
        .exec(&mut conn)
        .expect("SET");

    redis.kill9();
    redis.start();
    assert_eq!(redis.url(), url, "same port after restart");
    let mut conn = client.get_connection().expect("reconnect");
    let values: Vec<Option<String>> = redis::cmd("MGET")
        .arg("smoke:a")
        .arg("smoke:b")
        .query(&mut conn)
        .expect("MGET");
    assert_eq!(values, vec![Some("1".to_owned()), Some("2".to_owned())]);
}

#[test]
fn helpers_parse_the_daemon_listening_line() {
    assert_eq!(
        common::parse_listening(
            "2026-01-01T00:00:00Z INFO warden: listening on http://127.0.0.1:8080"
        )
        .as_deref(),
        Some("http://127.0.0.1:8080")
    );
    assert_eq!(
        common::parse_listening(
            r#"{"fields":{"message":"listening on http://[::1]:9"},"level":"INFO"}"#
        )
        .as_deref(),
        Some("http://[::1]:9")
    );
    assert_eq!(common::parse_listening("listening on http://"), None);
    assert_eq!(
        common::strip_ansi("\u{1b}[32mINFO\u{1b}[0m listening"),
        "INFO listening"
    );
}

fn group_consumer(brokers: &str, group: &str, topics: &[String]) -> BaseConsumer {
    let consumer: BaseConsumer = common::kafka_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("group consumer");
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).expect("subscribe");
    consumer
}

/// The member's current assignment, by topic (the list is dropped here, see
/// the note on TopicPartitionList in the group test).
fn owned_partitions(consumer: &BaseConsumer) -> BTreeMap<String, BTreeSet<i32>> {
    let mut owned: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for e in consumer.assignment().expect("assignment").elements() {
        owned
            .entry(e.topic().to_owned())
            .or_default()
            .insert(e.partition());
    }
    owned
}

fn offsets_of(list: &TopicPartitionList) -> BTreeMap<(String, i32), i64> {
    list.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => ((e.topic().to_owned(), e.partition()), o),
            other => panic!(
                "{}[{}] has no committed offset: {other:?}",
                e.topic(),
                e.partition()
            ),
        })
        .collect()
}
