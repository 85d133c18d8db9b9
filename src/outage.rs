//! The store's failure policy (CONTRACT §9): what warden does about new decisions while the
//! state store is unreachable.
//!
//! The store is also the data plane, so while it is down no decision reaches a gateway
//! through it, whatever warden does; and the pipeline keeps polling with the partitions it
//! cannot make durable paused, so nothing is lost either way. The policy decides what
//! gateways following `warden.enforcement.v1` are told:
//! - `fail_open`: nothing. Decisions made meanwhile stay in their partners' outboxes and
//!   are published once the store is back (traffic is not blocked because of the outage).
//! - `fail_closed`: a global `suspend` (reason `store_unavailable`) is published at once,
//!   and a global `ok` when the store answers again, and also when the instance starts
//!   (an earlier run's suspend may still be in force; see [`first_told`]).
//!
//! Either way `warden_store_degraded{policy}` is 1 for the outage's length.
//!
//! The outage starts at the first failed call that the watcher's own probe confirms (see
//! [`probe`]), and ends only once every call has succeeded for [`STEADY`]: warden's Redis
//! connections reconnect each on its own schedule, and lifting at the first success
//! flapped a global suspension on and off while the last of them came back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::config::FailurePolicy;
use crate::metrics::METRICS;
use crate::store::StateStore;

/// The global target a `fail_closed` decision is about.
pub const STORE_TARGET: &str = "store";

/// The (previous, new) level of a `fail_closed` global decision: `suspend` when the store
/// went down, `ok` when it came back.
fn global_move(down: bool) -> (&'static str, &'static str) {
    if down {
        ("ok", "suspend")
    } else {
        ("suspend", "ok")
    }
}

/// The enforcement-topic record of a `fail_closed` global decision. Its seq is the
/// decision time in milliseconds: it only grows, whichever instance decides.
pub fn global_decision(down: bool, at: chrono::DateTime<Utc>) -> (String, String) {
    let seq = at.timestamp_millis().max(0) as u64;
    let (previous, level) = global_move(down);
    let value = json!({
        "decision_id": format!("global:{STORE_TARGET}:{seq}"),
        "scope": "global",
        "id": STORE_TARGET,
        "partner_id": null,
        "level": level,
        "previous": previous,
        "reason": "store_unavailable",
        "seq": seq,
        "decided_at": at.to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    (format!("global:{STORE_TARGET}"), value.to_string())
}

/// How long the store must answer every call before an outage ends.
pub const STEADY: Duration = Duration::from_secs(3);

/// Whether the store is degraded, from samples of its reachability: degraded at the first
/// sample down, not any more once every sample for [`STEADY`] was up.
#[derive(Debug, Default)]
pub struct Reachability {
    degraded: bool,
    up_since: Option<Instant>,
}

impl Reachability {
    /// Takes one sample; returns whether the store is degraded now.
    pub fn observe(&mut self, up: bool, now: Instant) -> bool {
        if !up {
            self.degraded = true;
            self.up_since = None;
        } else if self.degraded {
            let since = *self.up_since.get_or_insert(now);
            if now.duration_since(since) >= STEADY {
                self.degraded = false;
            }
        }
        self.degraded
    }
}

/// Writes in one probe, each bounded by the store's timeout, and the pause between two.
const PROBE_TRIES: usize = 4;
const PROBE_PAUSE: Duration = Duration::from_millis(250);

/// Whether the store takes a write, tried [`PROBE_TRIES`] times about a second apart in
/// all. A failed call alone is no outage: one readiness ping or commit that timed out
/// behind a long commit (Redis runs a commit alone, and a big one may outlast
/// `store.timeout` by design) would otherwise put every partner under a global suspend
/// under `fail_closed`. A write, not a ping: a Redis out of memory or read-only answers
/// pings but keeps no state. A gauge left at 0 by the last call of an idle instance is
/// refreshed the same way.
pub async fn probe(store: &dyn StateStore) -> bool {
    for attempt in 0..PROBE_TRIES {
        if attempt > 0 {
            tokio::time::sleep(PROBE_PAUSE).await;
        }
        if store.probe_write().await.is_ok() {
            return true;
        }
    }
    false
}

/// Store calls that failed so far, whatever their `op` (`warden_store_errors_total`).
fn store_errors() -> u64 {
    use prometheus::core::Collector;
    METRICS
        .store_errors
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// What gateways are told first. Under `fail_closed` an instance cannot know whether a
/// global suspend from an earlier run is in force: if every instance restarted during an
/// outage (the daemon does not start without its store), none of them would ever tell the
/// `ok`, and gateways would block every partner until someone noticed. So it tells what it
/// sees as soon as it starts, and `ok` is harmless when nothing was suspended.
fn first_told(policy: FailurePolicy) -> Option<bool> {
    match policy {
        FailurePolicy::FailOpen => Some(false),
        FailurePolicy::FailClosed => None,
    }
}

/// Follows the store's reachability (`warden_store_up`, kept by every store call of the
/// pipeline) and applies `policy` on each change, and under `fail_closed` once at start
/// (see [`first_told`]). Runs until the process ends.
pub async fn watch(
    policy: FailurePolicy,
    producer: FutureProducer,
    topic: String,
    store: Arc<dyn StateStore>,
) {
    let gauge = METRICS.store_degraded.with_label_values(&[policy.as_str()]);
    // Whether the last state told was degraded (`None`: nothing told yet).
    let mut told_degraded = first_told(policy);
    let mut reachability = Reachability::default();
    let mut errors = store_errors();
    loop {
        // Down if the last call failed, or any call failed since the last sample.
        let (now_errors, last_up) = (store_errors(), METRICS.store_up.get() == 1);
        let calls_up = last_up && now_errors == errors;
        let up = calls_up || probe(store.as_ref()).await;
        if !calls_up {
            // The probe is the store's last call now.
            METRICS.store_up.set(i64::from(up));
        }
        errors = now_errors;
        let down = reachability.observe(up, Instant::now());
        if told_degraded != Some(down) {
            let told = match policy {
                FailurePolicy::FailOpen => true,
                FailurePolicy::FailClosed => {
                    let (key, value) = global_decision(down, Utc::now());
                    let sent = producer
                        .send(
                            FutureRecord::to(&topic).key(&key).payload(&value),
                            Duration::from_secs(5),
                        )
                        .await
                        .is_ok();
                    // Counted like every decision (CONTRACT §3); the `ok` told at start is
                    // not known to change anything.
                    if sent && told_degraded.is_some() {
                        let (from, to) = global_move(down);
                        METRICS
                            .enforcement_transitions
                            .with_label_values(&[from, to, "store_unavailable"])
                            .inc();
                    }
                    sent
                }
            };
            // Not told: tried again on the next round.
            if told {
                let first = told_degraded.is_none();
                told_degraded = Some(down);
                gauge.set(i64::from(down));
                if first && !down {
                    tracing::info!(
                        policy = policy.as_str(),
                        "state store reachable at start: global ok published"
                    );
                } else if down {
                    tracing::warn!(
                        policy = policy.as_str(),
                        "state store unreachable: failure policy applied"
                    );
                } else {
                    tracing::info!(policy = policy.as_str(), "state store reachable again");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_starts_at_once_and_ends_only_after_steady_answers() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = Reachability::default();
        assert!(!r.observe(true, at(0)));
        assert!(
            r.observe(false, at(250)),
            "the first failure starts the outage"
        );
        // One connection back, another not yet: answers and failures alternate.
        assert!(r.observe(true, at(500)));
        assert!(r.observe(false, at(750)));
        assert!(r.observe(true, at(1_000)));
        assert!(r.observe(true, at(1_000 + STEADY.as_millis() as u64 - 1)));
        assert!(!r.observe(true, at(1_000 + STEADY.as_millis() as u64)));
        assert!(!r.observe(true, at(60_000)));
        assert!(
            r.observe(false, at(60_250)),
            "a new outage starts at once again"
        );
    }

    #[test]
    fn fail_closed_decisions_suspend_then_lift_with_growing_seq() {
        let t0: chrono::DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
        let (key, down) = global_decision(true, t0);
        let (_, up) = global_decision(false, t0 + chrono::Duration::seconds(30));
        let down: serde_json::Value = serde_json::from_str(&down).unwrap();
        let up: serde_json::Value = serde_json::from_str(&up).unwrap();
        assert_eq!(key, "global:store");
        assert_eq!(
            (down["level"].as_str(), up["level"].as_str()),
            (Some("suspend"), Some("ok"))
        );
        assert_eq!(down["reason"], "store_unavailable");
        assert!(up["seq"].as_u64() > down["seq"].as_u64());
        assert_eq!(
            down["decision_id"],
            format!("global:store:{}", down["seq"].as_u64().unwrap())
        );
    }
}
