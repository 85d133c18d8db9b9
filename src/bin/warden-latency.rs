//! warden-latency: the latency bench of BENCHMARKS.md, run by `scripts/bench-latency`
//! against a running warden, its broker and its Redis.
//!
//! 1. Event → decision: background usage traffic at `--rate` events/s; every
//!    `--probe-every-ms` a probe partner (quota: 10 requests a month, `block`) sends one
//!    event of 11 requests, which crosses its quota: warden decides `throttle`. A probe
//!    partner is new to warden (looked up in the store first), or with `--live-probes`
//!    live already (it sent one request before the timed part). Latency =
//!    from handing the event to the producer until the decision arrives on the Redis
//!    channel `<prefix>:enf` (where gateways that cache hear it).
//! 2. Kill switch: `POST /v1/kill-switches` → the switch's decision on the same channel,
//!    each next to its floor: the same client doing what any audited switch must (an HTTP
//!    round trip, then two fsynced Redis writes, the second publishing on the channel).
//!
//! Prints p50/p99/p999 and max of each (hdrhistogram, microseconds).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    brokers: String,
    #[arg(long)]
    redis_url: String,
    /// The daemon's `store.key_prefix`.
    #[arg(long)]
    prefix: String,
    #[arg(long)]
    usage_topic: String,
    #[arg(long)]
    control_topic: String,
    /// The daemon's other keyed topics (invoices, attribution): the floor consumer reads
    /// them too, as the daemon does, so both fetch the same partitions.
    #[arg(long = "also-read")]
    also_read: Vec<String>,
    /// The daemon's admin API, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    admin_url: String,
    /// A security token of the daemon.
    #[arg(long, env = "WARDEN_TOKEN")]
    token: String,
    /// Background usage events per second.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Partners the background traffic is spread over, round robin. With more of them
    /// than `rate × passivate_after`, each stays live: what the per-second tick costs
    /// with that many live actors shows in the decision latency.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    background_partners: u64,
    #[arg(long, default_value_t = 10)]
    probe_every_ms: u64,
    #[arg(long, default_value_t = 1000)]
    kill_switches: usize,
    /// The floor consumer's `fetch.wait.max.ms`: give it the daemon's value. (A broker
    /// that holds a fetch for its whole wait when nothing was there at the start, as tansu
    /// 0.6 does, adds up to this much to every record's latency.)
    #[arg(long, default_value_t = 500)]
    fetch_wait_ms: u32,
    /// Each probe partner first sends one event under its quota, before the timed part,
    /// so its crossing event meets a live actor (as a misbehaving partner's usually does)
    /// rather than a partner warden must first look up in the store.
    #[arg(long)]
    live_probes: bool,
}

type Waiting = Arc<Mutex<HashMap<String, Instant>>>;

/// `linger_ms`: 0 for the probes (each sent at once), larger for the background traffic,
/// whose batching only lightens the broker's load.
fn producer(brokers: &str, linger_ms: u32) -> Result<BaseProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms.to_string())
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

fn usage(partner: &str, id: &str, requests: u64) -> String {
    json!({
        "event_id": id, "ts": chrono::Utc::now(), "partner_id": partner,
        "integration_id": format!("{partner}-i"), "requests": requests, "errors": 0,
    })
    .to_string()
}

fn send(p: &BaseProducer, topic: &str, key: &str, value: &str) {
    let mut record = BaseRecord::to(topic).key(key).payload(value);
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                p.poll(Duration::from_millis(1));
            }
        }
    }
}

fn summary(name: &str, h: &Histogram<u64>) {
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "{name}: n={} p50={:.2}ms p99={:.2}ms p999={:.2}ms max={:.2}ms",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    );
}

/// Records, for each awaited target, the time from its start to its decision's arrival.
async fn listen(url: String, channel: String, waiting: Waiting, hist: Arc<Mutex<Histogram<u64>>>) {
    let client = match redis::Client::open(url) {
        Ok(c) => c,
        Err(e) => return eprintln!("redis: {e}"),
    };
    let mut pubsub = match client.get_async_pubsub().await {
        Ok(p) => p,
        Err(e) => return eprintln!("redis pubsub: {e}"),
    };
    if let Err(e) = pubsub.subscribe(&channel).await {
        return eprintln!("subscribe: {e}");
    }
    let mut messages = pubsub.on_message();
    while let Some(m) = messages.next().await {
        let arrived = Instant::now();
        let Ok(payload) = m.get_payload::<String>() else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&payload) else {
            continue;
        };
        let Some(id) = v["id"].as_str() else { continue };
        if let Some(started) = waiting.lock().remove(id) {
            let micros = arrived.duration_since(started).as_micros() as u64;
            let _ = hist.lock().record(micros.max(1));
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let channel = format!("{}:enf", args.prefix);
    let waiting: Waiting = Arc::default();
    let decisions = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let switches = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let events = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));

    // Probe partners get a tiny quota first.
    let probes = (args.seconds * 1000 / args.probe_every_ms.max(1)) as usize;
    let p = producer(&args.brokers, 1)?;
    for i in 0..probes {
        let id = format!("probe-{i}");
        let fact = json!({
            "type": "quota", "partner_id": id, "monthly_requests": 10,
            "burst_rps": 1_000_000_000u64, "overage": "block",
        });
        send(&p, &args.control_topic, &id, &fact.to_string());
    }
    p.flush(Duration::from_secs(30))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    if args.live_probes {
        // One request of ten: no decision, and the 11 of the timed event cross the quota.
        for i in 0..probes {
            let id = format!("probe-{i}");
            send(
                &p,
                &args.usage_topic,
                &id,
                &usage(&id, &format!("{id}-w"), 1),
            );
        }
        p.flush(Duration::from_secs(30))?;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    tokio::spawn(listen(
        args.redis_url.clone(),
        channel.clone(),
        waiting.clone(),
        events.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. Background traffic with a probe every `probe_every_ms`.
    let (rate, seconds, every) = (args.rate, args.seconds, args.probe_every_ms.max(1));
    let background_partners = args.background_partners;
    let (brokers, topic, w) = (
        args.brokers.clone(),
        args.usage_topic.clone(),
        waiting.clone(),
    );
    // The broker's own floor, in the same run: when a bare consumer of the usage topic
    // (assigned at its end, no group) sees each probe.
    let floor = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let floor_waiting: Waiting = Arc::default();
    let stop_floor = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fetch_wait_ms = args.fetch_wait_ms;
    let also = args.also_read.clone();
    let floor_thread = {
        let (brokers, topic) = (args.brokers.clone(), args.usage_topic.clone());
        let (hist, waiting, stop) = (floor.clone(), floor_waiting.clone(), stop_floor.clone());
        std::thread::spawn(move || {
            bare_consumer(
                &brokers,
                &topic,
                &waiting,
                &hist,
                &stop,
                fetch_wait_ms,
                &also,
            )
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fw = floor_waiting.clone();
    let sent = tokio::task::spawn_blocking(move || -> Result<u64> {
        let p = producer(&brokers, 20)?;
        let probe_producer = producer(&brokers, 0)?;
        let start = Instant::now();
        let mut n = 0u64;
        let mut next_probe = 0usize;
        while start.elapsed() < Duration::from_secs(seconds) {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while n < due {
                let partner = format!("bg-{}", n % background_partners);
                send(
                    &p,
                    &topic,
                    &partner,
                    &usage(&partner, &format!("bg-{n}"), 1),
                );
                n += 1;
            }
            let probe_due = (start.elapsed().as_millis() as u64 / every) as usize;
            while next_probe < probe_due.min(probes) {
                let id = format!("probe-{next_probe}");
                let now = Instant::now();
                w.lock().insert(id.clone(), now);
                fw.lock().insert(id.clone(), now);
                send(
                    &probe_producer,
                    &topic,
                    &id,
                    &usage(&id, &format!("{id}-x"), 11),
                );
                next_probe += 1;
            }
            p.poll(Duration::from_micros(100));
            probe_producer.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(30))?;
        probe_producer.flush(Duration::from_secs(30))?;
        Ok(n)
    })
    .await??;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let missing = waiting.lock().len();
    stop_floor.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Ok(Err(e)) = floor_thread.join() {
        eprintln!("bare consumer: {e}");
    }
    waiting.lock().clear();
    *decisions.lock() = events.lock().clone();

    // 2. Kill switches, one at a time (their own waiting list: the first listener is
    // still subscribed).
    let waiting: Waiting = Arc::default();
    tokio::spawn(listen(
        args.redis_url.clone(),
        channel.clone(),
        waiting.clone(),
        switches.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The floor of a kill switch, on the same channel through its own listener: what any
    // audited switch costs this client at least (see `floor_switch`).
    let floor_waiting: Waiting = Arc::default();
    let floor_switches = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    tokio::spawn(listen(
        args.redis_url.clone(),
        channel.clone(),
        floor_waiting.clone(),
        floor_switches.clone(),
    ));
    let mut floor_redis = redis::Client::open(args.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await
        .context("redis connection for the kill-switch floor")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    // The first few warm the paths up (connections, scripts) and are not recorded.
    const WARM_UP: usize = 20;
    for i in 0..WARM_UP + args.kill_switches {
        // The floor first, then the real switch: both meet the same conditions.
        let floor_target = format!("ks-floor-{i}");
        if i >= WARM_UP {
            floor_waiting
                .lock()
                .insert(floor_target.clone(), Instant::now());
        }
        floor_switch(&agent, &args, &mut floor_redis, &channel, &floor_target).await?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while floor_waiting.lock().contains_key(&floor_target) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }

        let target = format!("ks-probe-{i}");
        let url = format!("{}/v1/kill-switches", args.admin_url);
        let auth = format!("Bearer {}", args.token);
        if i >= WARM_UP {
            waiting.lock().insert(target.clone(), Instant::now());
        }
        let body = json!({"scope": "partner", "target": target, "reason": "latency bench"});
        let post_agent = agent.clone();
        let response = tokio::task::spawn_blocking(move || {
            agent_post(&post_agent, &url, &auth, body).context("POST /v1/kill-switches")
        });
        let (status, created) = response.await??;
        if status != 201 {
            bail!("kill switch refused: {status} {created}");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while waiting.lock().contains_key(&target) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        if let Some(id) = created["id"].as_str() {
            let url = format!("{}/v1/kill-switches/{id}", args.admin_url);
            let _ = agent
                .delete(&url)
                .set("Authorization", &format!("Bearer {}", args.token))
                .call();
        }
    }
    println!(
        "background: {sent} usage events in {seconds} s ({} /s); probes without a decision: {missing}",
        sent / seconds.max(1)
    );
    summary(
        "event -> read by a bare consumer (the broker's floor)",
        &floor.lock(),
    );
    summary("event -> decision on the Redis channel", &decisions.lock());
    summary(
        "kill switch POST -> decision on the Redis channel",
        &switches.lock(),
    );
    summary(
        "kill-switch floor (HTTP round trip + 2 fsynced Redis writes) -> Redis channel",
        &floor_switches.lock(),
    );
    Ok(())
}

/// What any audited kill switch must do, done by this client with nothing of warden's in
/// between: one HTTP round trip to the daemon (`GET /healthz`, on the same agent as the
/// switches), one durable write for the audit record, then one durable write of the level
/// that publishes the decision on the channel. Redis runs with `appendfsync always`, so
/// each write waits for its fsync, as warden's do.
async fn floor_switch(
    agent: &ureq::Agent,
    args: &Args,
    redis: &mut redis::aio::MultiplexedConnection,
    channel: &str,
    target: &str,
) -> Result<()> {
    let url = format!("{}/healthz", args.admin_url);
    let get_agent = agent.clone();
    tokio::task::spawn_blocking(move || {
        get_agent
            .get(&url)
            .call()
            .map(|_| ())
            .context("GET /healthz")
    })
    .await??;
    let prefix = &args.prefix;
    let record = json!({"ref": format!("floor:{target}"), "action": "kill_switch.create"});
    let _: () = redis::cmd("ZADD")
        .arg(format!("{prefix}:bench-floor:audit"))
        .arg(chrono::Utc::now().timestamp_micros())
        .arg(record.to_string())
        .query_async(redis)
        .await?;
    let decision = json!({"id": target, "level": "killed", "reason": "kill_switch"});
    let _: () = redis::Script::new(
        "redis.call('HSET', KEYS[1], 'level', 'killed') redis.call('PUBLISH', ARGV[1], ARGV[2])",
    )
    .key(format!("{prefix}:bench-floor:enf:{target}"))
    .arg(channel)
    .arg(decision.to_string())
    .invoke_async(redis)
    .await?;
    Ok(())
}

/// Reads every partition of `topic` from its end (assigned, no group) and records, for
/// each awaited probe, the time from its production until this consumer got it.
fn bare_consumer(
    brokers: &str,
    topic: &str,
    waiting: &Waiting,
    hist: &Mutex<Histogram<u64>>,
    stop: &std::sync::atomic::AtomicBool,
    fetch_wait_ms: u32,
    also_read: &[String],
) -> Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "warden-latency-floor")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for name in std::iter::once(topic).chain(also_read.iter().map(String::as_str)) {
        let metadata = consumer.fetch_metadata(Some(name), Duration::from_secs(10))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                assignment.add_partition_offset(name, p.id(), Offset::End)?;
            }
        }
    }
    consumer.assign(&assignment)?;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let arrived = Instant::now();
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        if let Some(started) = waiting.lock().remove(key) {
            let micros = arrived.duration_since(started).as_micros() as u64;
            let _ = hist.lock().record(micros.max(1));
        }
    }
    Ok(())
}

/// One POST on the bench's agent (kept-alive connections, as a security tool would hold).
fn agent_post(agent: &ureq::Agent, url: &str, auth: &str, body: Value) -> Result<(u16, Value)> {
    let r = match agent.post(url).set("Authorization", auth).send_json(body) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.into()),
    };
    let status = r.status();
    Ok((status, r.into_json().unwrap_or(Value::Null)))
}
