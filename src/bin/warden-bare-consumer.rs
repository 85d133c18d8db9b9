//! warden-bare-consumer: the baseline of `scripts/bench-e2e`. Reads a topic from the start
//! of every partition with a plain rdkafka `BaseConsumer` — the same client library and
//! fetch settings warden's consumer uses — and does nothing with each record but touch
//! its bytes. What warden adds on top (decode, routing, actors, durable snapshots) is the
//! difference between the two figures.
//!
//! `--also-read` adds topics to fetch (all their records count too): warden fetches its
//! three input topics, so that is the broker's work it must be compared with.
//!
//! Prints one JSON line: records read, seconds from the first record to the last, and
//! records per second over that span. Exit 1 if `--expect` records did not arrive within
//! `--timeout`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "warden-bare-consumer",
    about = "Read a topic with a bare rdkafka consumer and report records/s"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long)]
    topic: String,
    /// Also fetch every partition of these topics (warden's other input topics, which it
    /// fetches alongside the usage topic, so the broker serves the same partitions).
    #[arg(long = "also-read")]
    also_read: Vec<String>,
    /// Stop after this many records.
    #[arg(long)]
    expect: u64,
    /// Give up after this long (e.g. `5m`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    timeout: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("warden-bare-consumer: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set(
            "group.id",
            format!("warden-bare-consumer-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    // Assigned, not subscribed: no group join in the timed span.
    let mut assignment = TopicPartitionList::new();
    let mut partitions = 0;
    for topic in std::iter::once(&args.topic).chain(&args.also_read) {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| format!("metadata: {e}"))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        if count == 0 {
            return Err(format!("topic {topic} not found"));
        }
        for p in 0..count as i32 {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| format!("assignment: {e}"))?;
        }
        partitions += count;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("assign: {e}"))?;
    let deadline = Instant::now() + args.timeout;
    let mut read: u64 = 0;
    let mut bytes: u64 = 0;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    while read < args.expect && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                read += 1;
                bytes += m.payload().map_or(0, |p| p.len() as u64)
                    + m.key().map_or(0, |k| k.len() as u64);
            }
            Some(Err(e)) => eprintln!("warden-bare-consumer: {e}"),
            None => {}
        }
    }
    let span = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    println!(
        "{}",
        json!({
            "records": read,
            "bytes": bytes,
            "partitions": partitions,
            "seconds": span,
            "records_per_second": if span > 0.0 { read as f64 / span } else { 0.0 },
        })
    );
    Ok(read >= args.expect)
}
