//! Helpers shared by the integration tests: the real services `scripts/test`
//! starts (Redis, a Kafka-compatible broker), a producer and readers for topics,
//! a dedicated Redis a test may stop and restart, and the warden binary as a
//! child process.
//!
//! Invariants every test can rely on:
//! - nothing here sleeps to make time pass: waits are condition polls with a
//!   deadline, and a missed deadline is reported (bool or panic), never ignored;
//! - names from [`unique`] never collide between tests, runs or processes, so
//!   tests share one broker and one Redis without cleaning up;
//! - every child process started here is killed when its handle drops.
#![allow(dead_code)]

pub mod durable;
pub mod group;
pub mod stream;

/// Runs heavy multi-process tests of one test binary one at a time: several daemons
/// rebalancing against one shared broker at once made consumer-group rounds slow
/// enough on 2 cores to stall a test (seen once under load). Poison-tolerant.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tempfile::TempDir;

const SERVICES_HINT: &str = "run scripts/test: it starts Redis and the broker";
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- environment

/// `host:port` of the shared test broker (`WARDEN_TEST_BROKERS`).
pub fn brokers() -> String {
    std::env::var("WARDEN_TEST_BROKERS").expect(SERVICES_HINT)
}

/// URL of the shared test Redis (`WARDEN_TEST_REDIS_URL`). Never stop it: use
/// [`RedisServer`] for a Redis a test takes down.
pub fn redis_url() -> String {
    std::env::var("WARDEN_TEST_REDIS_URL").expect(SERVICES_HINT)
}

/// A connection to the shared test Redis outside warden's own client: to read what a
/// store wrote, or to write what warden never would.
pub async fn raw_redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("WARDEN_TEST_REDIS_URL parses")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection to the test Redis")
}

/// A name no other test, run or process uses: `<name>-<pid>-<counter>-<random>`.
/// Only `[A-Za-z0-9._-]` is added, so it is a valid topic, group or key prefix
/// when `name` is.
pub fn unique(name: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{name}-{}-{n}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A loopback port that was free a moment ago (the kernel picked it).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Polls `condition` every `poll_every` until it holds or `timeout` passes;
/// returns whether it held. A condition wait, not a timing assertion: assert on
/// the result.
pub fn wait_until(
    timeout: Duration,
    poll_every: Duration,
    mut condition: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(poll_every.min(deadline.saturating_duration_since(Instant::now())));
    }
}

// ---------------------------------------------------------------------- kafka

/// Client settings every test client shares.
pub fn kafka_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "10000");
    config
}

/// Creates the topics (name, partitions) with replication 1; a topic that
/// already exists is fine if its partition count matches. Returns once the
/// broker's metadata shows every topic with its partition count.
pub fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> =
        kafka_config(brokers).create().expect("admin client");
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT));
    // The admin client polls on its own thread, so a plain executor can wait.
    let results = futures::executor::block_on(admin.create_topics(&new_topics, &options))
        .unwrap_or_else(|e| panic!("CreateTopics {topics:?} failed: {e}"));
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => panic!("creating topic {name} failed: {code}"),
        }
    }
    let consumer: BaseConsumer = kafka_config(brokers).create().expect("metadata client");
    for &(name, partitions) in topics {
        let mut seen = None;
        let ready = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            seen = partition_count_of(&consumer, name);
            seen.is_some()
        });
        assert!(
            ready,
            "topic {name} never showed up in the broker's metadata"
        );
        assert_eq!(
            seen,
            Some(partitions as usize),
            "topic {name} exists with another partition count"
        );
    }
}

/// Partition count of `topic` per the broker's metadata (`None`: unknown yet).
pub fn partition_count(brokers: &str, topic: &str) -> Option<usize> {
    let consumer: BaseConsumer = kafka_config(brokers).create().expect("metadata client");
    partition_count_of(&consumer, topic)
}

fn partition_count_of(consumer: &BaseConsumer, topic: &str) -> Option<usize> {
    let metadata = consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT).ok()?;
    let t = metadata.topics().iter().find(|t| t.name() == topic)?;
    (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len())
}

/// Where the broker put one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
}

/// Delivery reports, by the send sequence number passed as the opaque.
#[derive(Default)]
struct DeliveryLog {
    reports: Mutex<HashMap<usize, Result<Delivered, String>>>,
}

impl ClientContext for DeliveryLog {}

impl ProducerContext for DeliveryLog {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let report = match result {
            Ok(m) => Ok(Delivered {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            }),
            Err((e, m)) => Err(format!("{} [{}]: {e}", m.topic(), m.partition())),
        };
        self.reports.lock().unwrap().insert(seq, report);
    }
}

/// A producer configured like the contract's writers: murmur2 partitioning (the
/// Java default, so keys land where every Kafka client puts them), acks=all.
pub struct TestProducer {
    producer: BaseProducer<DeliveryLog>,
    sent: usize,
    flushed: usize,
}

impl TestProducer {
    pub fn new(brokers: &str) -> TestProducer {
        let producer = kafka_config(brokers)
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .create_with_context(DeliveryLog::default())
            .expect("producer");
        TestProducer {
            producer,
            sent: 0,
            flushed: 0,
        }
    }

    /// Queues one record (partition from the key; a random one without key).
    pub fn send(&mut self, topic: &str, key: Option<&str>, payload: &[u8]) {
        self.send_with(topic, key, payload, None, None);
    }

    /// Queues one record with an explicit partition and/or record timestamp (ms).
    pub fn send_with(
        &mut self,
        topic: &str,
        key: Option<&str>,
        payload: &[u8],
        partition: Option<i32>,
        timestamp_ms: Option<i64>,
    ) {
        let seq = self.sent;
        let mut record: BaseRecord<'_, str, [u8], usize> =
            BaseRecord::with_opaque_to(topic, seq).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(ts) = timestamp_ms {
            record = record.timestamp(ts);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => panic!("cannot queue a record for {topic}: {e}"),
            }
        }
        self.sent += 1;
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until the broker acknowledged every record queued since the last
    /// flush; panics on any delivery error. Returns their placements in send order.
    pub fn flush(&mut self) -> Vec<Delivered> {
        let timeout = Duration::from_secs(60);
        self.producer
            .flush(timeout)
            .unwrap_or_else(|e| panic!("producer flush failed: {e}"));
        // flush() waits for librdkafka's queue to empty; the reports may still sit
        // in the event queue until polled.
        let (from, to) = (self.flushed, self.sent);
        let reported = wait_until(timeout, Duration::ZERO, || {
            self.producer.poll(Duration::from_millis(20));
            let reports = self.producer.context().reports.lock().unwrap();
            (from..to).all(|seq| reports.contains_key(&seq))
        });
        assert!(reported, "delivery reports missing after flush");
        let mut reports = self.producer.context().reports.lock().unwrap();
        let mut delivered = Vec::with_capacity(to - from);
        let mut errors = Vec::new();
        for seq in from..to {
            match reports.remove(&seq).expect("checked above") {
                Ok(d) => delivered.push(d),
                Err(e) => errors.push(e),
            }
        }
        self.flushed = to;
        assert!(
            errors.is_empty(),
            "{} deliveries failed, e.g. {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        delivered
    }

    /// Sends one record and waits for it: where it landed.
    pub fn send_sync(&mut self, topic: &str, key: Option<&str>, payload: &[u8]) -> Delivered {
        self.send(topic, key, payload);
        self.flush().pop().expect("one delivery")
    }
}

/// One record read back: (partition, offset, key, payload).
pub type Consumed = (i32, i64, Option<String>, Vec<u8>);

/// One record read back, with its record timestamp.
#[derive(Clone, Debug)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub timestamp: rdkafka::Timestamp,
}

/// Reads `topic` from the beginning of every partition, outside any group (no
/// commit), until `expected_count` records arrived or `timeout` passed. Sorted
/// by (partition, offset); the caller asserts on the count.
pub fn consume_all(
    brokers: &str,
    topic: &str,
    expected_count: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    consume_records(brokers, topic, expected_count, timeout)
        .into_iter()
        .map(|r| (r.partition, r.offset, r.key, r.payload))
        .collect()
}

/// Every decision on the enforcement topic of `stream` (JSON values), read whole: a short
/// read (the reader timing out on a loaded machine) would look like a missing decision,
/// as seen once in CI with a 30 s read.
pub fn enforcement_decisions(stream: &stream::Stream) -> Vec<serde_json::Value> {
    let n = topic_record_count(&stream.brokers, &stream.enforcement).max(0) as usize;
    let decisions = consume_all(
        &stream.brokers,
        &stream.enforcement,
        n,
        Duration::from_secs(120),
    );
    assert_eq!(decisions.len(), n, "enforcement topic not read whole");
    decisions
        .iter()
        .filter_map(|(_, _, _, v)| serde_json::from_slice(v).ok())
        .collect()
}

/// [`consume_all`] with the record timestamps.
pub fn consume_records(
    brokers: &str,
    topic: &str,
    expected_count: usize,
    timeout: Duration,
) -> Vec<ConsumedRecord> {
    let consumer: BaseConsumer = kafka_config(brokers)
        .set("group.id", unique("warden-test-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("reader");
    let partitions = partition_count_of(&consumer, topic)
        .unwrap_or_else(|| panic!("topic {topic} does not exist"));
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::new();
    let deadline = Instant::now() + timeout;
    while records.len() < expected_count && Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = result.unwrap_or_else(|e| panic!("reading {topic}: {e}"));
        records.push(ConsumedRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: m.payload().unwrap_or_default().to_vec(),
            timestamp: m.timestamp(),
        });
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// The broker's (low, high) watermarks of each partition of `topic`, in partition order.
pub fn watermarks(brokers: &str, topic: &str) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = kafka_config(brokers).create().expect("metadata client");
    let partitions = partition_count_of(&consumer, topic)
        .unwrap_or_else(|| panic!("topic {topic} does not exist"));
    (0..partitions as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, KAFKA_TIMEOUT)
                .unwrap_or_else(|e| panic!("watermarks of {topic}[{p}]: {e}"))
        })
        .collect()
}

/// Records in `topic` per the broker's watermarks: Σ (high − low) over partitions.
pub fn topic_record_count(brokers: &str, topic: &str) -> i64 {
    watermarks(brokers, topic)
        .into_iter()
        .map(|(low, high)| high - low)
        .sum()
}

// ---------------------------------------------------------------------- redis

/// Waits up to `timeout` for the hash `key` in Redis (a decision key, or a lift base) to
/// hold `level`.
pub fn wait_for_level(redis: &str, key: &str, level: &str, timeout: Duration) -> bool {
    wait_until(timeout, Duration::from_millis(100), || {
        redis_hash(redis, key).get("level").map(String::as_str) == Some(level)
    })
}

/// A hash in Redis (a data-plane key, as a gateway reads it); empty if absent.
pub fn redis_hash(url: &str, key: &str) -> std::collections::BTreeMap<String, String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd("HGETALL").arg(key).query(&mut conn).unwrap()
}

/// A tansu broker of the test's own on sqlite storage, so it keeps its data across a
/// restart on the same port (the shared broker of `scripts/test` is never restarted).
pub struct TansuServer {
    port: u16,
    dir: TempDir,
    bin: String,
    child: Option<Child>,
}

impl TansuServer {
    pub fn start_new() -> TansuServer {
        let bin = std::env::var("WARDEN_TEST_TANSU_BIN").unwrap_or_else(|_| "tansu".to_owned());
        let dir = tempfile::Builder::new()
            .prefix("warden-tansu-")
            .tempdir()
            .expect("temp dir");
        let mut server = TansuServer {
            port: free_port(),
            dir,
            bin,
            child: None,
        };
        server.start();
        server
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// (Re)starts it on its port and database; waits until the port accepts connections.
    pub fn start(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .expect("tansu log");
        // As scripts/lib/services.sh starts it: cwd is its own dir (it reads a .env there),
        // the database path is relative to it, optional exporters stay off.
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--cluster-id",
                "warden-test",
                "--listener-url",
                &url,
            ])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("tansu log"))
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        let port = self.port;
        let up = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let log = std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default();
        assert!(up, "tansu did not listen on {port}:\n{log}");
    }

    /// SIGTERM and wait: a broker restart, not a crash (sqlite keeps what it acknowledged).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            if wait_exit(&mut child, Duration::from_secs(20)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for TansuServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A redis-server of the test's own (AOF, fsync always) that it may stop and
/// start again on the same port and directory, so its data survives.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    bin: String,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start_new() -> RedisServer {
        let bin = std::env::var("WARDEN_TEST_REDIS_SERVER_BIN")
            .unwrap_or_else(|_| "redis-server".to_owned());
        let dir = tempfile::Builder::new()
            .prefix("warden-redis-")
            .tempdir()
            .expect("temp dir");
        let mut server = RedisServer {
            port: free_port(),
            dir,
            bin,
            child: None,
        };
        server.start();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// (Re)starts it on its port and directory; waits until it answers PING
    /// (after replaying its AOF).
    pub fn start(&mut self) {
        assert!(
            !self.is_running(),
            "redis on port {} already running",
            self.port
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("redis log");
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin));
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            self.is_running() && redis_ping(self.port)
        });
        assert!(
            up,
            "redis-server on port {} did not start:\n{}",
            self.port,
            self.log_tail()
        );
    }

    /// Graceful stop (SIGTERM: redis flushes its AOF), waiting for the exit.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            signal(child.id(), "TERM");
            if wait_exit(child, Duration::from_secs(30)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server on port {} ignored SIGTERM", self.port);
            }
        }
        self.child = None;
    }

    /// Crash stop (SIGKILL); with `appendfsync always` acknowledged writes survive.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// True when a Redis on the loopback port answers PING with PONG (not LOADING).
pub fn redis_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

// --------------------------------------------------------------------- daemon

/// The warden binary running as a child process with a TOML config of the
/// test's. Its output is captured line by line (and echoed to stderr, which the
/// test harness shows for failing tests).
pub struct Daemon {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    base_url: Option<String>,
    config_path: PathBuf,
    agent: ureq::Agent,
    _dir: TempDir,
}

impl Daemon {
    /// Starts it and waits until it prints `listening on http://HOST:PORT`.
    pub fn start(config_toml: &str) -> Daemon {
        Daemon::start_with_env(config_toml, &[])
    }

    pub fn start_with_env(config_toml: &str, env: &[(&str, &str)]) -> Daemon {
        let mut daemon = Daemon::spawn_with_env(config_toml, env);
        daemon.wait_listening(Duration::from_secs(60));
        daemon
    }

    /// Starts it without waiting (for tests of start-up failures).
    pub fn spawn(config_toml: &str) -> Daemon {
        Daemon::spawn_with_env(config_toml, &[])
    }

    pub fn spawn_with_env(config_toml: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("warden-daemon-")
            .tempdir()
            .expect("temp dir");
        let config_path = dir.path().join("warden.toml");
        std::fs::write(&config_path, config_toml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn warden");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pid = child.id();
        capture(
            child.stdout.take().expect("piped"),
            Arc::clone(&stdout),
            format!("[warden {pid} out]"),
        );
        capture(
            child.stderr.take().expect("piped"),
            Arc::clone(&stderr),
            format!("[warden {pid} err]"),
        );
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        Daemon {
            child,
            stdout,
            stderr,
            base_url: None,
            config_path,
            agent,
            _dir: dir,
        }
    }

    /// Waits for the `listening on http://HOST:PORT` line; panics with the
    /// captured output if the process exits or the time runs out.
    pub fn wait_listening(&mut self, timeout: Duration) -> String {
        let mut found = None;
        let ok = wait_until(timeout, Duration::from_millis(25), || {
            found = self.stdout_lines().iter().find_map(|l| parse_listening(l));
            found.is_some() || !matches!(self.child.try_wait(), Ok(None))
        });
        match found {
            Some(url) => {
                self.base_url = Some(url.clone());
                url
            }
            None if ok => panic!(
                "warden exited ({:?}) before listening\n{}",
                self.child.try_wait(),
                self.output()
            ),
            None => panic!(
                "warden did not print `listening on http://…` within {timeout:?}\n{}",
                self.output()
            ),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// `http://HOST:PORT`, no trailing slash.
    pub fn base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .expect("warden is not listening yet")
    }

    /// GET `path`, expecting a 2xx with a JSON body.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        self.get_json_with_token(path, None)
    }

    pub fn get_json_with_token(&self, path: &str, token: Option<&str>) -> serde_json::Value {
        let (status, body) = self.request("GET", path, token, None);
        assert!(
            (200..300).contains(&status),
            "GET {path} -> {status}: {body}"
        );
        body
    }

    /// Any request; any status. The body is JSON if it parses, else a string.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.base_url());
        let mut req = self.agent.request(method, &url);
        if let Some(token) = token {
            req = req.set("Authorization", &format!("Bearer {token}"));
        }
        let result = match body {
            Some(json) => req.send_json(json.clone()),
            None => req.call(),
        };
        let response = match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {url}: {e}"),
        };
        let status = response.status();
        let text = response.into_string().unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, value)
    }

    /// Polls GET /readyz until it answers 200; panics with the output otherwise.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let url = format!("{}/readyz", self.base_url());
        let ready = wait_until(
            timeout,
            Duration::from_millis(100),
            || matches!(self.agent.get(&url).call(), Ok(r) if r.status() == 200),
        );
        assert!(
            ready,
            "warden not ready within {timeout:?}\n{}",
            self.output()
        );
    }

    /// SIGKILL: a crash, nothing flushed.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process freezes (a long GC pause, a stalled VM), holding what it owns.
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    /// SIGCONT after [`Daemon::pause`].
    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }

    /// SIGTERM, then waits up to 60 s for the exit; panics if it does not exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.terminate_within(Duration::from_secs(60))
    }

    pub fn terminate_within(&mut self, timeout: Duration) -> ExitStatus {
        signal(self.child.id(), "TERM");
        match self.wait_exit(timeout) {
            Some(status) => status,
            None => {
                self.kill9();
                panic!("warden ignored SIGTERM for {timeout:?}\n{}", self.output());
            }
        }
    }

    /// Waits for the process to exit by itself: its status, or None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, timeout)
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether any stdout or stderr line so far contains `needle`.
    pub fn output_contains(&self, needle: &str) -> bool {
        self.stdout_lines()
            .iter()
            .chain(self.stderr_lines().iter())
            .any(|l| l.contains(needle))
    }

    /// All captured output, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- warden stdout ---\n{}\n--- warden stderr ---\n{}",
            self.stdout_lines().join("\n"),
            self.stderr_lines().join("\n")
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Reads `from` line by line into `into` (ANSI colours stripped), echoing each.
fn capture(from: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>, prefix: String) {
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            eprintln!("{prefix} {line}");
            into.lock().unwrap().push(line);
        }
    });
}

/// `line` without ANSI escape sequences (CSI: ESC [ params final-byte).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `http://HOST:PORT` from a line containing `listening on http://HOST:PORT`
/// (plain text or inside a JSON log line).
pub fn parse_listening(line: &str) -> Option<String> {
    let start = line.find("listening on http://")? + "listening on ".len();
    let rest = &line[start..];
    let end = rest
        .char_indices()
        .skip("http://".len())
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']' | '-')))
        .map_or(rest.len(), |(i, _)| i);
    let url = rest[..end].trim_end_matches(['.', ':']);
    (url.len() > "http://".len()).then(|| url.to_owned())
}

/// `kill -<sig> <pid>` through the system's kill(1): no unsafe, no libc.
fn signal(pid: u32, sig: &str) {
    // A process that already exited makes kill(1) fail; the caller's wait sees that.
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(timeout, Duration::from_millis(25), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}
