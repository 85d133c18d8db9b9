//! Wiring: builds every component from the configuration, starts them in dependency
//! order, and stops them in reverse on shutdown. `run` is what `main` and the tests call.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use parking_lot::RwLock;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;

use crate::actors::registry::Registry;
use crate::config::{Config, StoreBackend};
use crate::domain::control::ControlTable;
use crate::domain::partner::ApplyRules;
use crate::http::{self, ApiOutputs, ApiState};
use crate::kafka::consumer::{self, ConsumerSettings};
use crate::kafka::control::ControlReader;
use crate::kafka::deadletter::DeadLetterSink;
use crate::kafka::decode::DecodeLimits;
use crate::kafka::pipeline::{Pipeline, PipelineOutputs, PipelineSettings};
use crate::kafka::topics::{ensure_topics, TopicMap};
use crate::metrics::METRICS;
use crate::publish::audit::AuditSink;
use crate::publish::DecisionPublisher;
use crate::simulator::Simulator;
use crate::store::audit::{AuditLog, MemoryAuditLog};
use crate::store::decisions::{DecisionStore, MemoryDecisions};
use crate::store::statements::{MemoryPayouts, PayoutStore};
use crate::store::{memory::MemoryStore, redis::RedisStore, StateStore};

/// What /readyz and the threads share about the daemon's condition.
#[derive(Debug, Default)]
pub struct Health {
    pub control_caught_up: AtomicBool,
    pub consuming: AtomicBool,
    pub store_lost: AtomicBool,
    pub stopping: AtomicBool,
    /// The consumer left the group with state not yet durable (the store was down
    /// through the grace period, say): the stop was not clean, and exits 1.
    pub left_undurable: AtomicBool,
}

impl Health {
    /// Ready = consuming and control caught up, and the store has not lost data
    /// (an unreachable store is reported, not a reason to go unready: CONTRACT §6).
    pub fn ready(&self) -> bool {
        self.control_caught_up.load(Ordering::SeqCst)
            && self.consuming.load(Ordering::SeqCst)
            && !self.store_lost.load(Ordering::SeqCst)
            && !self.stopping.load(Ordering::SeqCst)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A bad configuration or topic layout: exit code 2.
    #[error("configuration: {0}")]
    Config(String),
    /// Anything else that stops the daemon: exit code 1.
    #[error("{0}")]
    Fatal(String),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(_) => 2,
            RunError::Fatal(_) => 1,
        }
    }
}

/// Waits for `shutdown`, or for one of `threads` (those that run until the daemon stops)
/// to end on its own, checked once a second; the name of that thread, if one did.
async fn until_shutdown_or_a_thread_ends<'a>(
    shutdown: impl Future<Output = ()>,
    threads: &[(&'a str, Option<&std::thread::JoinHandle<()>>)],
) -> Option<&'a str> {
    let ended = async {
        loop {
            actix_rt::time::sleep(Duration::from_secs(1)).await;
            let finished = threads
                .iter()
                .find(|(_, t)| t.is_some_and(|t| t.is_finished()));
            if let Some((name, _)) = finished {
                return *name;
            }
        }
    };
    tokio::select! {
        _ = shutdown => None,
        name = ended => Some(name),
    }
}

fn fatal(context: &str) -> impl FnOnce(String) -> RunError + '_ {
    move |e| RunError::Fatal(format!("{context}: {e}"))
}

/// Runs the daemon until `shutdown` resolves, then drains and returns. Must be called
/// inside an actix `System`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("warden-io")
        .enable_all()
        .build()
        .map_err(|e| fatal("io runtime")(e.to_string()))?;
    let result = run_with_io(config, shutdown, io.handle().clone()).await;
    io.shutdown_background();
    result
}

async fn run_with_io(
    config: Config,
    shutdown: impl Future<Output = ()>,
    io: tokio::runtime::Handle,
) -> Result<(), RunError> {
    let health = Arc::new(Health::default());
    let kafka = &config.kafka;

    // The in-process cluster lives as long as this function (embedded mode only).
    let mock = if kafka.embedded {
        Some(MockCluster::new(1).map_err(|e| fatal("embedded kafka")(e.to_string()))?)
    } else {
        None
    };
    let topics = TopicMap::from_config(kafka);
    METRICS.set_topics(&kafka.topics);
    if let Some(m) = &mock {
        // The mock cluster does not serve CreateTopics; it has its own call for it.
        for (name, n) in [
            (&topics.usage, kafka.partitions),
            (&topics.invoices, kafka.partitions),
            (&topics.attribution, kafka.partitions),
            (&topics.control, 1),
            (&topics.enforcement, kafka.partitions),
            (&topics.audit, 1),
            (&topics.deadletter, kafka.partitions),
        ] {
            m.create_topic(name, n, 1)
                .map_err(|e| fatal("embedded kafka")(e.to_string()))?;
        }
    }
    let brokers = match &mock {
        Some(m) => m.bootstrap_servers(),
        None => kafka.brokers.clone(),
    };
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", &brokers)
        .set("client.id", &kafka.client_id);
    for (k, v) in &kafka.properties {
        base.set(k, v);
    }

    type Stores = (
        Arc<dyn StateStore>,
        Arc<dyn DecisionStore>,
        Arc<dyn AuditLog>,
        Arc<dyn PayoutStore>,
    );
    let (store, decisions, audit, payouts): Stores = match config.store.backend {
        StoreBackend::Memory => (
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryDecisions::default()),
            Arc::new(MemoryAuditLog::new()),
            Arc::new(MemoryPayouts::default()),
        ),
        StoreBackend::Redis => {
            let (url, prefix, timeout) = (
                config.store.redis_url.clone(),
                config.store.key_prefix.clone(),
                config.store.timeout,
            );
            let replica_acks = config.store.replica_acks;
            let store = io
                .spawn(async move { RedisStore::connect(&url, &prefix, timeout).await })
                .await
                .map_err(|e| fatal("store")(e.to_string()))?
                .map_err(|e| fatal("redis")(e.to_string()))?
                .with_replica_acks(replica_acks);
            (
                Arc::new(store.clone()),
                Arc::new(store.decisions()),
                Arc::new(store.clone()),
                Arc::new(store.payouts()),
            )
        }
    };
    METRICS.store_up.set(1);

    let partitions = {
        let (base, topics, kafka, io) = (base.clone(), topics.clone(), kafka.clone(), io.clone());
        tokio::task::spawn_blocking(move || ensure_topics(&base, &topics, &kafka, &io))
            .await
            .map_err(|e| fatal("topics")(e.to_string()))?
            .map_err(|e| {
                if e.is_config_error() {
                    RunError::Config(e.to_string())
                } else {
                    fatal("topics")(e.to_string())
                }
            })?
    };

    let producer_lingering = |linger_ms: &str| -> Result<FutureProducer, RunError> {
        let mut c = base.clone();
        // Keyed like every producer of the input topics (Kafka's Java default, murmur2):
        // attribution records are keyed by the parent partner and read back by warden.
        // With librdkafka's own default (CRC32), a parent's attribution landed on another
        // partition than its usage, so two partition states each started an actor for
        // the same partner, and the registry, the admin view and the snapshots saw one
        // or the other.
        c.set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", linger_ms);
        // How long a record may wait for the broker before its send fails (and is retried
        // by whoever sent it): 30 s, unless `kafka.properties` says otherwise.
        if !kafka.properties.contains_key("message.timeout.ms") {
            c.set("message.timeout.ms", "30000");
        }
        c.create().map_err(|e| fatal("producer")(e.to_string()))
    };
    let producer = producer_lingering("5")?;
    // Dead letters have a producer (and a broker connection) of their own: a flush waits
    // for their acknowledgement, and it must not queue behind a storm of decisions.
    let dlq_producer = producer_lingering("0")?;
    let dlq = DeadLetterSink::new(dlq_producer, topics.deadletter.clone());
    let limits = DecodeLimits {
        max_record_bytes: kafka.max_record_bytes,
        max_clock_skew: chrono::Duration::from_std(kafka.max_clock_skew)
            .map_err(|e| RunError::Config(format!("kafka.max_clock_skew: {e}")))?,
    };

    // Control first: the keyed topics are consumed only once control has caught up.
    let control = Arc::new(RwLock::new(ControlTable::default()));
    let control_thread = {
        let reader = ControlReader {
            topic: topics.control.clone(),
            limits,
            table: control.clone(),
            dlq: dlq.clone(),
            io: io.clone(),
            health: health.clone(),
        };
        let mut c = base.clone();
        c.set("group.id", format!("{}-control", kafka.group_id));
        tokio::task::spawn_blocking(move || reader.spawn(c))
            .await
            .map_err(|e| fatal("control reader")(e.to_string()))?
            .map_err(|e| fatal("control reader")(e.to_string()))?
    };

    let arbiters: Vec<_> = (0..config.runtime.arbiter_count())
        .map(|_| Arbiter::new().handle())
        .collect();
    let rules = ApplyRules {
        dedup_window: chrono::Duration::from_std(config.runtime.dedup_window)
            .map_err(|e| RunError::Config(format!("runtime.dedup_window: {e}")))?,
        max_clock_skew: Some(
            chrono::Duration::from_std(config.kafka.max_clock_skew)
                .map_err(|e| RunError::Config(format!("kafka.max_clock_skew: {e}")))?,
        ),
    };
    let shared = crate::actors::partner::Shared {
        rules,
        mailbox_capacity: config.runtime.mailbox_capacity,
        outbox_waiting: Default::default(),
        control: control.clone(),
        policy: Arc::new(config.enforcement.clone()),
        program: Arc::new(
            config
                .money
                .load_program()
                .map_err(|(key, message)| RunError::Config(format!("{key}: {message}")))?,
        ),
    };
    let registry = Arc::new(Registry::new(arbiters.clone(), shared));

    let audit_sink = AuditSink::new(audit.clone(), producer.clone(), topics.audit.clone());
    // The audit topic follows the chain from the I/O runtime (ends with it).
    io.spawn(audit_sink.clone().tail());
    io.spawn(crate::outage::watch(
        config.store.failure_policy,
        producer.clone(),
        topics.enforcement.clone(),
        store.clone(),
    ));
    let publisher = DecisionPublisher::new(
        decisions.clone(),
        producer.clone(),
        (topics.enforcement.clone(), topics.attribution.clone()),
        audit_sink,
    );
    let outputs = ApiOutputs {
        partitions,
        io: io.clone(),
        publisher: publisher.clone(),
        payouts,
        control_topic: topics.control.clone(),
    };
    let api_state = ApiState::new(
        &config,
        registry.clone(),
        store.clone(),
        control.clone(),
        health.clone(),
        outputs,
    );
    actix_rt::spawn(crate::http::kill_switches::expire_loop(api_state.clone()));
    actix_rt::spawn(crate::http::topic_records::pending_loop(api_state.clone()));
    actix_rt::spawn(crate::http::guard::refusal_summary_loop(api_state.clone()));
    // Refusals summarized since the last round are written when the server has stopped.
    let refusals_state = api_state.clone();
    if config.money.auto_close {
        actix_rt::spawn(crate::http::statements::auto_close_loop(
            api_state.clone(),
            config.money.close_grace,
        ));
    }
    let server =
        http::serve(&config.admin, api_state).map_err(|e| fatal("admin api")(e.to_string()))?;
    println!("listening on http://{}", server.local_addr);
    if config.admin.generate_token {
        println!(
            "admin token (security): {}",
            server.generated_token.as_deref().unwrap_or("")
        );
    }
    let server_handle = server.handle.clone();
    actix_rt::spawn(server.future);

    if config.metrics.top_partners > 0 {
        actix_rt::spawn(crate::top_partners::run(
            registry.clone(),
            config.metrics.top_partners,
            config.metrics.top_partners_interval,
        ));
    }
    let simulator = config.simulator.enabled.then(|| {
        Simulator::new(config.simulator.clone(), topics.clone(), partitions)
            .spawn(base.clone(), health.clone())
    });

    tokio::pin!(shutdown);
    // Wait for control to catch up (or for a shutdown before it does).
    let caught_up = loop {
        if health.control_caught_up.load(Ordering::SeqCst) {
            break true;
        }
        tokio::select! {
            _ = &mut shutdown => break false,
            _ = actix_rt::time::sleep(Duration::from_millis(20)) => {}
        }
    };

    let consumer_thread = if caught_up {
        let settings = PipelineSettings {
            limits,
            flush_interval: kafka.flush_interval,
            max_unflushed: config.runtime.max_unflushed_events,
            passivate_after: config.runtime.passivate_after,
            partitions,
            flush_give_up: crate::kafka::pipeline::FLUSH_GIVE_UP,
        };
        let pipeline = Pipeline::new(
            settings,
            topics.clone(),
            store.clone(),
            registry.clone(),
            io.clone(),
            PipelineOutputs {
                dlq,
                publisher: publisher.clone(),
            },
            health.clone(),
        );
        let mut c = base.clone();
        c.set("group.id", &kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set(
                "session.timeout.ms",
                kafka.session_timeout.as_millis().to_string(),
            )
            .set(
                "max.poll.interval.ms",
                kafka.max_poll_interval.as_millis().to_string(),
            )
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", "1000");
        let keyed: Vec<String> = topics.keyed().iter().map(|s| s.to_string()).collect();
        let cs = ConsumerSettings {
            poll_batch: kafka.poll_batch,
            shutdown_grace: config.runtime.shutdown_grace,
        };
        Some(
            consumer::spawn(c, keyed, pipeline, cs)
                .map_err(|e| fatal("consumer")(e.to_string()))?,
        )
    } else {
        None
    };
    tracing::info!(partitions, "warden running");
    METRICS.ready.set(1);
    // The shutdown future may already have fired while waiting for control (and an
    // async fn must not be polled again after it completed). A consumer or control thread
    // that ends on its own (a panic) stops the daemon with exit code 1: alive but no longer
    // consuming is the failure nobody would see until the lag alerts.
    let ended_on_its_own = if caught_up {
        let threads = [
            ("consumer", consumer_thread.as_ref()),
            ("control", Some(&control_thread)),
        ];
        until_shutdown_or_a_thread_ends(&mut shutdown, &threads).await
    } else {
        None
    };
    if let Some(name) = ended_on_its_own {
        tracing::error!(thread = name, "thread ended on its own; shutting down");
    }

    tracing::info!("shutting down: draining");
    health.stopping.store(true, Ordering::SeqCst);
    METRICS.ready.set(0);
    // One deadline for all the threads, not one each: the contract's grace is the stop's.
    let deadline =
        tokio::time::Instant::now() + config.runtime.shutdown_grace + Duration::from_secs(2);
    // What made this stop unclean: each turns exit 0 into exit 1 (CONTRACT §8: exit 0
    // means drained, flushed and committed).
    let mut unclean: Vec<String> = ended_on_its_own
        .map(|name| format!("the {name} thread ended on its own"))
        .into_iter()
        .collect();
    for (name, thread) in [
        ("consumer", consumer_thread),
        ("control", Some(control_thread)),
        ("simulator", simulator.flatten()),
    ] {
        let Some(thread) = thread else { continue };
        // A thread already ended is joined whatever the time (the deadline may have passed
        // waiting for an earlier one).
        let joined = match thread.is_finished() {
            true => Ok(Ok(thread.join())),
            false => {
                let join = tokio::task::spawn_blocking(move || thread.join());
                tokio::time::timeout_at(deadline, join).await
            }
        };
        match joined {
            Ok(Ok(Ok(()))) => {}
            Err(_) => {
                tracing::error!(thread = name, "did not stop within the grace period");
                unclean.push(format!(
                    "the {name} thread did not stop within the grace period"
                ));
            }
            // Already reported as having ended on its own.
            Ok(_) if ended_on_its_own == Some(name) => {}
            Ok(_) => {
                tracing::error!(thread = name, "panicked while stopping");
                unclean.push(format!("the {name} thread panicked while stopping"));
            }
        }
    }
    if health.left_undurable.load(Ordering::SeqCst) {
        unclean.push(
            "the consumer left the group before its state was durable; the next owner \
             replays from the stored offsets"
                .to_owned(),
        );
    }
    server_handle.stop(true).await;
    crate::http::guard::write_refusal_summaries(&refusals_state).await;
    for a in arbiters {
        a.stop();
    }
    drop(mock);
    tracing::info!("stopped");
    match unclean.is_empty() {
        true => Ok(()),
        false => Err(RunError::Fatal(unclean.join("; "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that should run until the daemon stops but ends (a panic) is noticed and
    /// named; a shutdown first means none did.
    #[tokio::test]
    async fn a_thread_that_ends_on_its_own_is_noticed_and_a_shutdown_is_not_mistaken_for_it() {
        let running = std::thread::spawn(|| std::thread::sleep(Duration::from_secs(30)));
        let panicked = std::thread::spawn(|| panic!("a worker died"));
        let threads = [("consumer", Some(&running)), ("control", Some(&panicked))];
        let never = std::future::pending::<()>();
        assert_eq!(
            until_shutdown_or_a_thread_ends(never, &threads).await,
            Some("control")
        );
        let alive = [("consumer", Some(&running)), ("control", None)];
        assert_eq!(
            until_shutdown_or_a_thread_ends(std::future::ready(()), &alive).await,
            None
        );
    }
}
