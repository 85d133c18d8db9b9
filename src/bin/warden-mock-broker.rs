//! warden-mock-broker: librdkafka's in-process mock cluster (the one the embedded mode
//! runs), served on loopback for `scripts/bench-latency` with `WARDEN_BENCH_BROKER=mock`.
//!
//! Why: the latency targets are in milliseconds, and tansu's own produce-to-fetch path
//! on this machine is 60–100 ms, so next to it warden's share cannot be told apart from
//! the broker's. The mock cluster answers a fetch as soon as a record is there, as Apache
//! Kafka and Redpanda do, so the floor drops to what any consumer pays. It keeps its
//! records in memory and is not a broker to run anything on.
//!
//! Prints `bootstrap: HOST:PORT` on stdout once the topics exist, then serves until it
//! is signalled.

use anyhow::{bail, Context, Result};
use clap::Parser;
use rdkafka::mocking::MockCluster;

#[derive(Parser, Debug)]
struct Args {
    /// A topic to create, as `NAME:PARTITIONS` (the mock cluster does not serve
    /// CreateTopics). Repeat for each.
    #[arg(long = "topic", value_parser = parse_topic)]
    topics: Vec<(String, i32)>,
}

fn parse_topic(s: &str) -> Result<(String, i32), String> {
    let (name, n) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected NAME:PARTITIONS"))?;
    let n: i32 = n
        .parse()
        .map_err(|_| format!("{s:?}: partitions must be a number"))?;
    if name.is_empty() || n < 1 {
        return Err(format!("{s:?}: a name and at least one partition"));
    }
    Ok((name.to_owned(), n))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.topics.is_empty() {
        bail!("give at least one --topic NAME:PARTITIONS");
    }
    let cluster = MockCluster::new(1).context("mock cluster")?;
    for (name, n) in &args.topics {
        cluster
            .create_topic(name, *n, 1)
            .with_context(|| format!("create topic {name}"))?;
    }
    println!("bootstrap: {}", cluster.bootstrap_servers());
    use std::io::Write;
    std::io::stdout().flush()?;
    // Serves from librdkafka's own threads until the process is signalled.
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::parse_topic;

    #[test]
    fn a_topic_is_a_name_and_a_partition_count() {
        assert_eq!(parse_topic("run-1.usage:8"), Ok(("run-1.usage".into(), 8)));
        // A name may hold colons; the count is what follows the last one.
        assert_eq!(parse_topic("a:b:1"), Ok(("a:b".into(), 1)));
        for bad in ["usage", "usage:", ":8", "usage:0", "usage:-1", "usage:x"] {
            assert!(parse_topic(bad).is_err(), "{bad}");
        }
    }
}
