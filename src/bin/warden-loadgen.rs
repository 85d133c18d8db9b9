//! warden-loadgen: produces realistic usage, invoice and control traffic to a
//! Kafka-protocol broker, keyed by partner id and partitioned like the contract's writers
//! (murmur2), and optionally writes the ground truth the daemon must end up with.
//!
//! The records come from [`warden::loadgen::Generator`]: the same flags (seed and start
//! time included) give the same records. The start time defaults to "now minus the event
//! time the run spans", and is printed so a run can be repeated byte for byte.
//!
//! Output: progress on stderr, one JSON summary line on stdout. Exit 1 if any record was
//! not acknowledged by the broker (the ground truth would then be wrong), 2 for bad flags.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde_json::json;
use warden::config::TopicsConfig;
use warden::loadgen::{Generator, GroundTruth, LoadSpec, Stream, Tally, MAX_PARTNERS};

#[derive(Debug, Parser)]
#[command(
    name = "warden-loadgen",
    about = "Produce realistic partner traffic (usage, invoices, control) to a Kafka-protocol broker"
)]
struct Args {
    /// Bootstrap servers, comma-separated.
    #[arg(long, env = "WARDEN_LOADGEN_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value_t = TopicsConfig::default().usage)]
    usage_topic: String,
    #[arg(long, default_value_t = TopicsConfig::default().invoices)]
    invoices_topic: String,
    #[arg(long, default_value_t = TopicsConfig::default().control)]
    control_topic: String,
    /// Number of partners (1..=1,000,000).
    #[arg(long, default_value_t = 10_000)]
    partners: usize,
    /// Zipf exponent of traffic over partners: 0 = uniform, ~1 = a few carry most.
    #[arg(long, default_value_t = 1.0)]
    skew: f64,
    /// Fraction of partners with high error rates, auth failures and chargebacks.
    #[arg(long, default_value_t = 0.01)]
    misbehaving: f64,
    /// Fraction of records that are invoices.
    #[arg(long, default_value_t = 0.02)]
    invoice_fraction: f64,
    /// Fraction of records that are control facts (partner, tier_change, quota, fx_rate).
    #[arg(long, default_value_t = 0.001)]
    control_fraction: f64,
    /// Fraction of usage and invoice records that are broken (CONTRACT §5 cases).
    #[arg(long, default_value_t = 0.0)]
    malformed: f64,
    /// Fraction of well-formed usage records that re-send a recent event id (dedup).
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// Records per second; 0 = as fast as the broker takes them.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Records to produce (default 100000 unless --duration is given).
    #[arg(long, conflicts_with = "duration")]
    count: Option<u64>,
    /// Produce for this long instead of a count (e.g. `30s`, `5m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Event time of the first record (RFC 3339). Default: now minus the span of the run.
    #[arg(long)]
    start_ts: Option<DateTime<Utc>>,
    /// Event time between records. Default: 1/rate, or 1ms when unpaced.
    #[arg(long, value_parser = humantime::parse_duration)]
    event_step: Option<Duration>,
    /// Write per-partner expected usage {partner_id: {events, requests, errors}} here.
    #[arg(long)]
    ground_truth: Option<PathBuf>,
    /// Create the topics when missing: usage and invoices with this many partitions,
    /// control with one (retention forever).
    #[arg(long, value_name = "PARTITIONS")]
    create_topics: Option<i32>,
    /// Producer acks.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Producer compression (none, gzip, snappy, lz4, zstd), if the broker supports it.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Extra librdkafka producer properties, `key=value`; repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    property: Vec<String>,
}

/// Delivery outcomes, counted from librdkafka's delivery reports.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden-loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let count = match (args.count, args.duration) {
        (Some(n), _) => Some(n),
        (None, None) => Some(100_000),
        (None, Some(_)) => None,
    };
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        return Err("--rate must be >= 0".into());
    }
    let step = match (args.event_step, args.rate > 0.0) {
        (Some(step), _) => step,
        (None, true) => Duration::from_secs_f64(1.0 / args.rate),
        (None, false) => Duration::from_millis(1),
    };
    // The records this run may send, for the default start: the whole run's event time
    // ends a minute before now, so no `ts` is ahead of its record timestamp. Unpaced
    // duration runs assume at most 1M records/s.
    let most = count.unwrap_or_else(|| {
        let secs = args.duration.unwrap_or_default().as_secs_f64();
        let per_sec = if args.rate > 0.0 { args.rate } else { 1e6 };
        (secs * per_sec).ceil() as u64
    });
    let span = step.saturating_mul(u32::try_from(most).unwrap_or(u32::MAX));
    let start_ts = args.start_ts.unwrap_or_else(|| {
        let span = chrono::Duration::from_std(span).unwrap_or(chrono::Duration::days(365));
        Utc::now() - span - chrono::Duration::minutes(1)
    });
    let spec = LoadSpec {
        partners: args.partners,
        skew: args.skew,
        misbehaving: args.misbehaving,
        invoice_fraction: args.invoice_fraction,
        control_fraction: args.control_fraction,
        malformed: args.malformed,
        duplicates: args.duplicates,
        seed: args.seed,
        start_ts,
        event_step: chrono::Duration::from_std(step).map_err(|e| format!("--event-step: {e}"))?,
    };
    spec.validate()
        .map_err(|e| format!("{e} (partners up to {MAX_PARTNERS})"))?;
    eprintln!(
        "warden-loadgen: seed {} start-ts {} event-step {:?}",
        args.seed,
        start_ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        step
    );

    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", &args.brokers);
    if let Some(partitions) = args.create_topics {
        create_topics(&base, args, partitions)?;
    }
    let producer = producer(&base, args)?;
    let mut generator = Generator::new(spec);
    let mut truth = GroundTruth::default();
    let mut tally = Tally::default();
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    // Pacing: check the clock every `chunk` records, sleep when ahead of the rate.
    let chunk = if args.rate > 0.0 {
        ((args.rate / 1000.0) as u64).max(1)
    } else {
        1024
    };
    let mut sent: u64 = 0;
    while count.is_none_or(|n| sent < n) {
        if sent % chunk == 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if args.rate > 0.0 {
                let due = started + Duration::from_secs_f64(sent as f64 / args.rate);
                if let Some(ahead) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(ahead);
                }
            }
        }
        // unwrap: the generator is endless.
        let record = generator.next().unwrap();
        let topic = match record.stream {
            Stream::Usage => &args.usage_topic,
            Stream::Invoices => &args.invoices_topic,
            Stream::Control => &args.control_topic,
        };
        send(&producer, topic, record.key.as_deref(), &record.payload)?;
        truth.observe(&record);
        tally.observe(&record);
        sent += 1;
        if sent % 100_000 == 0 {
            eprintln!(
                "warden-loadgen: {sent} records queued ({:.0}/s)",
                sent as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| format!("flush: {e}"))?;
    // flush() empties librdkafka's queue; the last delivery reports may still wait in the
    // event queue until polled.
    let ctx = producer.context();
    let reported = || ctx.ok.load(Ordering::Relaxed) + ctx.failed.load(Ordering::Relaxed);
    let wait_until = Instant::now() + Duration::from_secs(30);
    while reported() < sent && Instant::now() < wait_until {
        producer.poll(Duration::from_millis(50));
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(path) = &args.ground_truth {
        let bytes = serde_json::to_vec(&truth).map_err(|e| format!("ground truth: {e}"))?;
        std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let (ok, failed) = (
        ctx.ok.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    let summary = json!({
        "tally": tally,
        "acknowledged": ok,
        "failed": failed,
        "partners_with_usage": truth.0.len(),
        "elapsed_seconds": elapsed,
        "records_per_second": sent as f64 / elapsed.max(1e-9),
        "start_ts": start_ts,
    });
    println!("{summary}");
    if ok != sent {
        eprintln!(
            "warden-loadgen: {} of {sent} records not acknowledged (first error: {})",
            sent - ok,
            ctx.first_error.lock().as_deref().unwrap_or("no report")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// A producer tuned for throughput: large batches, a short linger, a deep queue, and
/// murmur2 partitioning so keys land where the contract's writers put them.
fn producer(base: &ClientConfig, args: &Args) -> Result<BaseProducer<Deliveries>, String> {
    let mut c = base.clone();
    c.set("partitioner", "murmur2_random")
        .set("acks", &args.acks)
        .set("compression.type", &args.compression)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "120000");
    for p in &args.property {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("-X {p}: expected key=value"))?;
        c.set(k, v);
    }
    c.create_with_context(Deliveries::default())
        .map_err(|e| format!("producer: {e}"))
}

/// Queues one record, waiting for room while librdkafka's queue is full.
fn send(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    key: Option<&str>,
    payload: &[u8],
) -> Result<(), String> {
    let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).payload(payload);
    if let Some(key) = key {
        record = record.key(key);
    }
    loop {
        match producer.send(record) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(format!("cannot queue a record for {topic}: {e}")),
        }
    }
}

fn create_topics(base: &ClientConfig, args: &Args, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> =
        base.create().map_err(|e| format!("admin client: {e}"))?;
    let topics = [
        NewTopic::new(&args.usage_topic, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&args.invoices_topic, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&args.control_topic, 1, TopicReplication::Fixed(1))
            .set("retention.ms", "-1")
            .set("cleanup.policy", "delete"),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    // The admin client polls on its own thread, so a plain executor can wait.
    let results = futures::executor::block_on(admin.create_topics(&topics, &options))
        .map_err(|e| format!("create topics: {e}"))?;
    for result in results {
        match result {
            Ok(name) => eprintln!("warden-loadgen: created topic {name}"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("create topic {name}: {code}")),
        }
    }
    // Creation is asynchronous on most brokers: wait until every topic is visible.
    let names = [&args.usage_topic, &args.invoices_topic, &args.control_topic];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(|e| format!("metadata: {e}"))?;
        let visible = names.iter().all(|n| {
            md.topics().iter().any(|t| {
                t.name() == n.as_str() && t.error().is_none() && !t.partitions().is_empty()
            })
        });
        if visible {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("topics {names:?} not visible after 30s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
