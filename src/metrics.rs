//! Every metric warden exports, defined once (CONTRACT §7).
//!
//! Names use the `warden_` prefix, base units and `_total` for counters. Labels come from
//! closed sets; no label ever takes a partner id. Series of closed sets are created at
//! start-up at 0 so dashboards and alerts see them before the first event.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::enforcement::{Level, Reason};
use crate::domain::event::{DeadLetterReason, TopicKind};

pub struct Metrics {
    pub registry: Registry,
    pub events: IntCounterVec,
    /// `events`' series, resolved once ([`TopicKind::ALL`] × [`Outcome::ALL`]): a labelled
    /// lookup hashes its labels under the vector's lock, and the actors count every batch.
    events_by_topic: [[IntCounter; Outcome::ALL.len()]; TopicKind::ALL.len()],
    pub dead_letters: IntCounterVec,
    pub event_apply_seconds: Histogram,
    pub consumer_lag: IntGaugeVec,
    pub fenced_writes: IntCounter,
    pub store_up: IntGauge,
    pub store_op_seconds: HistogramVec,
    pub flush_stage_seconds: HistogramVec,
    pub store_errors: IntCounterVec,
    pub flushes: IntCounterVec,
    pub actors_active: IntGauge,
    pub passivations: IntCounter,
    /// `warden_partner_ticks_total{outcome="sent"}`: ticks sent to partners with something
    /// due (or to all, after control facts).
    pub ticks_sent: IntCounter,
    /// `warden_partner_ticks_total{outcome="not_due"}`: live partners a round left alone.
    pub ticks_not_due: IntCounter,
    /// From a round of ticks sent to its last tick handled.
    pub tick_round_seconds: Histogram,
    /// Age of the round in flight (0 when none): time-driven changes wait while it grows.
    pub tick_round_age_seconds: prometheus::Gauge,
    pub actor_revivals: IntCounter,
    pub mailbox_full: IntCounter,
    pub partitions_paused: IntGauge,
    pub partitions_assigned: IntGauge,
    pub unflushed_events: IntGauge,
    pub control_caught_up: IntGauge,
    pub control_facts: IntCounter,
    pub store_lost: IntGauge,
    pub ready: IntGauge,
    pub build_info: IntGaugeVec,
    /// Which topic plays which role (`warden_consumer_lag`'s `topic` is the configured
    /// name): dashboards join on it instead of guessing from names.
    pub topic_info: IntGaugeVec,
    pub partners: IntGaugeVec,
    pub enforcement_transitions: IntCounterVec,
    pub kill_switches_active: IntGaugeVec,
    pub commission_usd: prometheus::Counter,
    pub commission_reversed_usd: prometheus::Counter,
    pub coop_accrued_usd: prometheus::Counter,
    pub admin_requests: IntCounterVec,
    pub mailbox_events: IntGauge,
    pub invoices_parked: IntGauge,
    /// Refused admin requests past their peer's audit rate, written as summaries.
    pub admin_refusals_summarized: IntCounter,
    /// Events and facts the per-partner tracking bounds left out (kind: integration_event,
    /// tenant_fact): a bound that is reached is never silent.
    pub untracked: IntCounterVec,
    pub store_degraded: IntGaugeVec,
    pub apply_latency_quantiles: prometheus::GaugeVec,
    pub partner_top_requests: IntGaugeVec,
}

/// Admin API routes (the `route` label's closed set) and the statuses it answers with.
pub const ROUTES: [&str; 14] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/partners",
    "/v1/partners/{id}",
    "/v1/partners/{id}/enforcement",
    "/v1/kill-switches",
    "/v1/kill-switches/{id}",
    "/v1/audit",
    "/v1/partners/{id}/statement",
    "/v1/partners/{id}/statement/{month}/approve",
    "/v1/partners/{id}/statement/{month}/paid",
    "/v1/months/{month}/close",
    "other",
];
pub const STATUSES: [&str; 12] = [
    "200", "201", "202", "400", "401", "403", "404", "409", "413", "429", "500", "503",
];

/// Enforcement levels, in order (CONTRACT §3): the `level` label's closed set.
pub const LEVELS: [&str; 6] = ["ok", "warn", "throttle", "suspend", "terminated", "killed"];
/// Kill-switch scopes (CONTRACT §4): the `scope` label's closed set.
pub const SCOPES: [&str; 4] = ["global", "partner", "integration", "tenant"];

/// The stages of a partition flush, in order (`warden_flush_stage_seconds{stage}`).
pub const FLUSH_STAGES: [&str; 3] = ["snapshots", "dead_letters", "commit"];

/// `outcome` label values of `warden_events_total`: a closed set, so a count can only
/// land on a series that exists from start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    DeadLetter,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Applied, Outcome::Duplicate, Outcome::DeadLetter];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLetter => "dead_letter",
        }
    }

    /// Its place in [`Outcome::ALL`].
    fn index(self) -> usize {
        match self {
            Outcome::Applied => 0,
            Outcome::Duplicate => 1,
            Outcome::DeadLetter => 2,
        }
    }
}

/// `kind`'s place in [`TopicKind::ALL`].
fn topic_index(kind: TopicKind) -> usize {
    match kind {
        TopicKind::Usage => 0,
        TopicKind::Invoices => 1,
        TopicKind::Attribution => 2,
        TopicKind::Control => 3,
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The `route` label for a matched pattern: one of [`ROUTES`], never a raw path.
pub fn route_label(pattern: Option<&str>) -> &'static str {
    pattern
        .and_then(|p| ROUTES.iter().find(|r| **r == p).copied())
        .unwrap_or("other")
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // unwrap: names are unique constants of this module; a clash is a programming error
    // caught by the unit test below.
    registry.register(Box::new(metric.clone())).unwrap();
    metric
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).unwrap(),
            )
        };
        let gauge = |name: &str, help: &str| reg(&r, IntGauge::new(name, help).unwrap());
        let counter = |name: &str, help: &str| reg(&r, IntCounter::new(name, help).unwrap());
        let latency_buckets = vec![
            0.000_001, 0.000_005, 0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05,
            0.1, 0.5, 1.0,
        ];
        // Network calls and flush stages: a commit may outlast `store.timeout` by design
        // and dead letters wait for the broker (up to `message.timeout.ms`, 30 s), so the
        // buckets reach past a second, and start where a loopback round trip does.
        let io_buckets = vec![
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let ticks = counter_vec(
            "warden_partner_ticks_total",
            "Per-second time ticks by outcome: sent to a live partner, or not due (nothing time-driven due).",
            &["outcome"],
        );
        let events = counter_vec(
            "warden_events_total",
            "Input records by topic role and outcome (applied, duplicate, dead_letter).",
            &["topic", "outcome"],
        );
        let events_by_topic = TopicKind::ALL.map(|kind| {
            Outcome::ALL.map(|outcome| events.with_label_values(&[kind.as_str(), outcome.as_str()]))
        });
        let m = Metrics {
            events,
            events_by_topic,
            dead_letters: counter_vec(
                "warden_dead_letters_total",
                "Records sent to the dead-letter topic, by reason.",
                &["reason"],
            ),
            event_apply_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("warden_event_apply_seconds", "Time to apply one event in its partner actor.")
                        .buckets(latency_buckets),
                )
                .unwrap(),
            ),
            consumer_lag: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("warden_consumer_lag", "Records behind the high watermark, per assigned partition."),
                    &["topic", "partition"],
                )
                .unwrap(),
            ),
            fenced_writes: counter(
                "warden_fenced_writes_total",
                "Snapshot writes refused because another owner took the partition.",
            ),
            store_up: gauge("warden_store_up", "1 when the state store answered its last call, else 0."),
            store_op_seconds: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("warden_store_op_seconds", "State store call latency by operation.")
                        .buckets(io_buckets.clone()),
                    &["op"],
                )
                .unwrap(),
            ),
            flush_stage_seconds: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "warden_flush_stage_seconds",
                        "Time a partition flush spends in each stage: snapshots (actors answer), dead_letters (broker acknowledges), commit (the store's atomic write).",
                    )
                    .buckets(io_buckets),
                    &["stage"],
                )
                .unwrap(),
            ),
            store_errors: counter_vec("warden_store_errors_total", "Failed state store calls by operation.", &["op"]),
            flushes: counter_vec(
                "warden_flushes_total",
                "Partition snapshot writes by result (ok, fenced, error).",
                &["result"],
            ),
            actors_active: gauge("warden_actors", "Partner actors alive in memory."),
            passivations: counter("warden_passivations_total", "Idle partner actors written out and stopped."),
            ticks_sent: ticks.with_label_values(&["sent"]),
            ticks_not_due: ticks.with_label_values(&["not_due"]),
            tick_round_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("warden_tick_round_seconds", "Time from a round of ticks being sent to its last tick handled.")
                        .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
                )
                .unwrap(),
            ),
            tick_round_age_seconds: reg(
                &r,
                prometheus::Gauge::new(
                    "warden_tick_round_age_seconds",
                    "Age of the round of ticks in flight, 0 when none: calm-downs, pilot expiry and new quota months wait while it grows.",
                )
                .unwrap(),
            ),
            actor_revivals: counter("warden_actor_starts_total", "Partner actors started (new or revived from the store)."),
            mailbox_full: counter(
                "warden_backpressure_total",
                "Times a partition was paused because an actor mailbox or the store could not take more.",
            ),
            partitions_paused: gauge("warden_partitions_paused", "Assigned partitions currently paused by back-pressure."),
            partitions_assigned: gauge("warden_partitions_assigned", "Partition numbers owned by this instance."),
            unflushed_events: gauge("warden_unflushed_events", "Events applied in memory and not yet durable."),
            control_caught_up: gauge(
                "warden_control_caught_up",
                "1 once the control topic was read up to its high watermark at start.",
            ),
            control_facts: counter("warden_control_facts_total", "Control facts applied to the global table."),
            store_lost: gauge(
                "warden_store_lost",
                "1 when the store has no offsets for a partition the group has commits for (data loss).",
            ),
            ready: gauge("warden_ready", "1 when /readyz answers 200."),
            build_info: reg(
                &r,
                IntGaugeVec::new(Opts::new("warden_build_info", "Build information; always 1."), &["version"]).unwrap(),
            ),
            topic_info: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("warden_topic_info", "The topic configured for each role; always 1."),
                    &["role", "topic"],
                )
                .unwrap(),
            ),
            partners: reg(
                &r,
                IntGaugeVec::new(Opts::new("warden_partners", "Partners in memory by enforcement level."), &["level"])
                    .unwrap(),
            ),
            enforcement_transitions: counter_vec(
                "warden_enforcement_transitions_total",
                "Enforcement level changes by previous level, new level and reason; from = to = throttle is a throttle's new rate.",
                &["from", "to", "reason"],
            ),
            kill_switches_active: reg(
                &r,
                IntGaugeVec::new(Opts::new("warden_kill_switches_active", "Active kill switches by scope."), &["scope"])
                    .unwrap(),
            ),
            commission_usd: reg(
                &r,
                prometheus::Counter::new("warden_commission_usd_total", "Commission accrued, gross, in USD (reporting only; money is decimal in state).")
                    .unwrap(),
            ),
            commission_reversed_usd: reg(
                &r,
                prometheus::Counter::new("warden_commission_reversed_usd_total", "Commission reversed by refunds and chargebacks, in USD.")
                    .unwrap(),
            ),
            coop_accrued_usd: reg(
                &r,
                prometheus::Counter::new("warden_coop_accrued_usd_total", "Co-op funds accrued, in USD.").unwrap(),
            ),
            admin_requests: counter_vec(
                "warden_admin_requests_total",
                "Admin API requests by route pattern and status code.",
                &["route", "status"],
            ),
            mailbox_events: gauge(
                "warden_mailbox_events",
                "Events handed to partner actors and not yet applied (all mailboxes).",
            ),
            store_degraded: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "warden_store_degraded",
                        "1 while the state store is unreachable, by the failure policy applied (CONTRACT §9).",
                    ),
                    &["policy"],
                )
                .unwrap(),
            ),
            invoices_parked: gauge(
                "warden_invoices_parked",
                "Invoice lines of live partners waiting for the first FX rate of their currency.",
            ),
            admin_refusals_summarized: counter(
                "warden_admin_refusals_summarized_total",
                "Refused admin requests (401, 403) past their peer's audit rate: audited in one summary record per peer per minute instead of one each.",
            ),
            untracked: counter_vec(
                "warden_untracked_total",
                "Usage events past a partner's tracked integrations (counted for the partner, no integration-scope checks) and tenant facts past its tracked tenants.",
                &["kind"],
            ),
            apply_latency_quantiles: reg(
                &r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "warden_event_apply_latency_seconds",
                        "Apply latency quantiles over the last 1-2 minutes (hdrhistogram).",
                    ),
                    &["quantile"],
                )
                .unwrap(),
            ),
            partner_top_requests: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "warden_partner_top_requests",
                        "Opt-in (metrics.top_partners): lifetime requests of the N busiest live partners.",
                    ),
                    &["partner_id"],
                )
                .unwrap(),
            ),
            registry: r,
        };
        m.init_closed_sets();
        m
    }

    /// Creates every series of a closed label set at 0 (CONTRACT §7).
    fn init_closed_sets(&self) {
        // `warden_events_total`: every series was created with `events_by_topic`.
        for reason in DeadLetterReason::ALL {
            self.dead_letters.with_label_values(&[reason.as_str()]);
        }
        for policy in crate::config::FailurePolicy::ALL {
            self.store_degraded.with_label_values(&[policy.as_str()]);
        }
        for result in ["ok", "fenced", "error"] {
            self.flushes.with_label_values(&[result]);
        }
        for stage in FLUSH_STAGES {
            self.flush_stage_seconds.with_label_values(&[stage]);
        }
        for op in ["acquire", "commit", "load", "ping", "renew"] {
            self.store_op_seconds.with_label_values(&[op]);
            self.store_errors.with_label_values(&[op]);
        }
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for level in LEVELS {
            self.partners.with_label_values(&[level]);
        }
        for kind in ["integration_event", "tenant_fact"] {
            self.untracked.with_label_values(&[kind]);
        }
        for reason in Reason::ALL {
            for to in reason.levels_it_sets() {
                // `throttle` to `throttle` is a throttle's new rate (a quota or tier change).
                let possible = |from: &&Level| *from != to || *to == Level::Throttle;
                for from in Level::ALL.iter().filter(possible) {
                    self.enforcement_transitions.with_label_values(&[
                        from.as_str(),
                        to.as_str(),
                        reason.as_str(),
                    ]);
                }
            }
        }
        for scope in SCOPES {
            self.kill_switches_active.with_label_values(&[scope]);
        }
        for route in ROUTES {
            for status in STATUSES {
                self.admin_requests.with_label_values(&[route, status]);
            }
        }
    }

    /// Notes the configured topic of each role (`warden_topic_info`).
    pub fn set_topics(&self, topics: &crate::config::TopicsConfig) {
        for (role, topic) in topics.all() {
            self.topic_info.with_label_values(&[role, topic]).set(1);
        }
    }

    /// Records how long a flush stage (one of [`FLUSH_STAGES`]) took since `started`.
    pub fn flush_stage(&self, stage: &str, started: std::time::Instant) {
        self.flush_stage_seconds
            .with_label_values(&[stage])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Records how long a store call (`acquire`, `commit`, `load`, `ping`) took since
    /// `started`.
    pub fn store_op(&self, op: &str, started: std::time::Instant) {
        self.store_op_seconds
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Adds `n` to `warden_events_total{topic, outcome}`.
    pub fn count_events(&self, topic: TopicKind, outcome: Outcome, n: u64) {
        self.events_by_topic[topic_index(topic)][outcome.index()].inc_by(n);
    }

    pub fn dead_letter(&self, topic: TopicKind, reason: DeadLetterReason) {
        self.count_events(topic, Outcome::DeadLetter, 1);
        self.dead_letters
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some((p50, p99, p999)) = crate::latency::APPLY_LATENCY.quantiles() {
            for (q, v) in [("0.5", p50), ("0.99", p99), ("0.999", p999)] {
                self.apply_latency_quantiles.with_label_values(&[q]).set(v);
            }
        }
        let mut buf = Vec::new();
        // unwrap: encoding into a Vec cannot fail for well-formed metric families.
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each (topic, outcome) counts on its own series: the table's indexes follow `ALL`.
    #[test]
    fn every_topic_and_outcome_counts_on_its_own_series() {
        // A registry of its own: other tests count on the global one meanwhile.
        let m = Metrics::new();
        let mut n = 0;
        for (t, topic) in TopicKind::ALL.into_iter().enumerate() {
            assert_eq!(topic_index(topic), t);
            for (o, outcome) in Outcome::ALL.into_iter().enumerate() {
                assert_eq!(outcome.index(), o);
                n += 1;
                m.count_events(topic, outcome, n);
                let series = m
                    .events
                    .with_label_values(&[topic.as_str(), outcome.as_str()]);
                assert_eq!(series.get(), n);
            }
        }
    }

    #[test]
    fn closed_sets_exist_at_zero_and_no_partner_label() {
        let text = METRICS.render();
        // Exists; not necessarily at 0: `actors::partner`'s tests dead-letter a usage
        // event, and `kafka::pipeline`'s fence partitions, through the same process-wide
        // registry.
        assert!(text.contains("warden_events_total{outcome=\"dead_letter\",topic=\"invoices\"} 0"));
        assert!(text.contains("warden_events_total{outcome=\"dead_letter\",topic=\"usage\"} "));
        assert!(text.contains("warden_dead_letters_total{reason=\"wrong_key\"} 0"));
        assert!(text
            .lines()
            .any(|l| l.starts_with("warden_fenced_writes_total ")));
        assert!(text.contains("warden_partner_ticks_total{outcome=\"not_due\"} "));
        assert!(text.contains("warden_tick_round_age_seconds 0"));
        assert!(!text.contains("partner_id=") && !text.contains("partner=\""));
        for series in [
            "warden_kill_switches_active{scope=\"tenant\"} 0",
            "warden_partners{level=\"killed\"} 0",
            "warden_admin_requests_total{route=\"/readyz\",status=\"503\"} 0",
            "warden_commission_usd_total 0",
            "warden_enforcement_transitions_total{from=\"throttle\",reason=\"error_rate\",to=\"suspend\"} ",
            "warden_untracked_total{kind=\"tenant_fact\"} ",
            "warden_enforcement_transitions_total{from=\"killed\",reason=\"kill_switch\",to=\"ok\"} ",
            "warden_enforcement_transitions_total{from=\"ok\",reason=\"store_unavailable\",to=\"suspend\"} ",
            "warden_enforcement_transitions_total{from=\"throttle\",reason=\"quota_exceeded\",to=\"throttle\"} ",
            "warden_admin_requests_total{route=\"/readyz\",status=\"500\"} 0",
            // Store calls and flush stages reach past a second (commits, broker acks). Not
            // necessarily at 0: `kafka::pipeline`'s tests flush to a memory store.
            "warden_store_op_seconds_bucket{op=\"commit\",le=\"30\"} ",
        ] {
            assert!(text.contains(series), "missing {series}");
        }
    }
}
