//! The streaming core end to end (issue: streaming core, acceptance 1–5): the real
//! warden binary against the real broker and real Redis started by `scripts/test`.
//!
//! Ground truth always comes from what the test produced, never from the daemon. Totals
//! are read back from the durable snapshots in Redis, so "exact" means exact after every
//! crash, rebalance and outage the test injected.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::durable::{assert_totals_exact, durable_totals, total_events};
use common::group::{metric, restart_until_assigned, wait_assigned};
use common::stream::{Stream, PARTITIONS, VIEWER_TOKEN};
use common::{Daemon, RedisServer, TestProducer};
use serde_json::json;

/// Expected lifetime usage per partner, as produced.
type Truth = warden::loadgen::UsageTruth;

/// A deterministic usage event `i` over `partners` partners.
fn usage_event(i: u64, partners: u64, base: DateTime<Utc>) -> (String, Vec<u8>, Truth) {
    let partner = format!("p-{:05}", i % partners);
    let requests = 1 + (i * 7) % 50;
    let errors = if i % 5 == 0 { requests / 3 } else { 0 };
    let ts = base + chrono::Duration::milliseconds(i as i64 % 60_000);
    let payload = json!({
        "event_id": format!("e-{i}"),
        "ts": ts,
        "partner_id": partner,
        "integration_id": format!("{partner}-int"),
        "requests": requests,
        "errors": errors,
    });
    (
        partner,
        serde_json::to_vec(&payload).unwrap(),
        Truth {
            events: 1,
            requests,
            errors,
        },
    )
}

/// Produces `count` usage events (plus a re-send of every 97th one, which must count
/// once) and returns the ground truth.
fn produce_usage(
    stream: &Stream,
    range: std::ops::Range<u64>,
    partners: u64,
) -> HashMap<String, Truth> {
    let base = Utc::now();
    let mut producer = TestProducer::new(&stream.brokers);
    let mut truth: HashMap<String, Truth> = HashMap::new();
    for i in range {
        let (partner, payload, t) = usage_event(i, partners, base);
        producer.send(&stream.usage, Some(&partner), &payload);
        if i % 97 == 0 {
            // A producer retry: the same event id again.
            producer.send(&stream.usage, Some(&partner), &payload);
        }
        let e = truth.entry(partner).or_default();
        e.events += t.events;
        e.requests += t.requests;
        e.errors += t.errors;
    }
    producer.flush();
    truth
}

fn merge(into: &mut HashMap<String, Truth>, from: HashMap<String, Truth>) {
    for (k, v) in from {
        let e = into.entry(k).or_default();
        e.events += v.events;
        e.requests += v.requests;
        e.errors += v.errors;
    }
}

/// Acceptance 1: 200,000 usage events over 2,000 partners, totals exact.
#[test]
fn two_hundred_thousand_events_over_two_thousand_partners_are_exact() {
    let _serial = common::serial();
    let stream = Stream::new("core-200k");
    let redis = common::redis_url();
    let truth = produce_usage(&stream, 0..200_000, 2_000);
    assert_eq!(truth.len(), 2_000);
    let mut daemon = Daemon::start(&stream.config(&redis));
    daemon.wait_ready(Duration::from_secs(60));
    assert_totals_exact(&redis, &stream, &truth, Duration::from_secs(300));
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status:?}");
    // The API answers from the live actor or the store with the same totals.
    let (p, t) = truth.iter().next().unwrap();
    let mut again = Daemon::start(&stream.config(&redis));
    again.wait_ready(Duration::from_secs(60));
    let view = again.get_json_with_token(&format!("/v1/partners/{p}"), Some(VIEWER_TOKEN));
    let (status, _) = again.request("GET", &format!("/v1/partners/{p}"), None, None);
    assert_eq!(status, 401, "partner reads need a token");
    assert_eq!(view["usage"]["requests"], t.requests);
    assert_eq!(view["usage"]["errors"], t.errors);
    assert_eq!(view["usage"]["events"], t.events);
}

/// Acceptance 2: SIGKILL three times mid-stream; totals still exact.
#[test]
fn sigkill_three_times_mid_stream_loses_and_doubles_nothing() {
    let _serial = common::serial();
    let stream = Stream::new("core-kill");
    let redis = common::redis_url();
    let partners = 500;
    let mut truth = HashMap::new();
    let mut daemon = Daemon::start(&stream.config(&redis));
    wait_assigned(&[&daemon]);
    for round in 0..4u64 {
        let chunk = produce_usage(&stream, round * 15_000..(round + 1) * 15_000, partners);
        merge(&mut truth, chunk);
        if round < 3 {
            // Kill once some, but not all, of the new events are durable.
            let floor: u64 = truth.values().map(|t| t.events).sum::<u64>() - 15_000;
            let progressed =
                common::wait_until(Duration::from_secs(120), Duration::from_millis(100), || {
                    total_events(&durable_totals(&redis, &stream.prefix)) > floor + 1_000
                });
            assert!(progressed, "daemon made no progress before kill {round}");
            daemon.kill9();
            daemon = restart_until_assigned(&stream.config(&redis));
        }
    }
    assert_totals_exact(&redis, &stream, &truth, Duration::from_secs(300));
    daemon.terminate();
}

/// Acceptance 3: two daemons in one group; one stops mid-stream.
#[test]
fn two_instances_one_stopped_mid_stream_totals_exact() {
    let _serial = common::serial();
    let stream = Stream::new("core-two");
    let redis = common::redis_url();
    let partners = 400;
    let mut a = Daemon::start(&stream.config(&redis));
    let mut b = Daemon::start(&stream.config(&redis));
    a.wait_ready(Duration::from_secs(60));
    b.wait_ready(Duration::from_secs(60));
    // Both are members owning partitions before the stream starts: stopping a member in
    // the middle of its first join wedged tansu's group coordinator (a broker issue, seen
    // twice; real Kafka completes that rebalance).
    wait_assigned(&[&a, &b]);
    let producer_stream = Arc::new(stream);
    let ps = producer_stream.clone();
    let producing = thread::spawn(move || {
        let mut truth = HashMap::new();
        for round in 0..6u64 {
            merge(
                &mut truth,
                produce_usage(&ps, round * 8_000..(round + 1) * 8_000, partners),
            );
        }
        truth
    });
    let stream = producer_stream;
    let started = common::wait_until(Duration::from_secs(120), Duration::from_millis(100), || {
        total_events(&durable_totals(&redis, &stream.prefix)) > 10_000
    });
    assert!(started, "no progress with two instances");
    let status = b.terminate();
    assert!(status.success(), "stopped instance exit status {status:?}");
    let truth = producing.join().unwrap();
    assert_totals_exact(&redis, &stream, &truth, Duration::from_secs(300));
    a.terminate();
}

/// Acceptance 5: Redis stopped for 10 s mid-stream; the daemon stays, totals exact.
#[test]
fn redis_outage_mid_stream_keeps_the_daemon_in_the_group_and_totals_exact() {
    let _serial = common::serial();
    let stream = Stream::new("core-redis");
    let mut redis = RedisServer::start_new();
    let url = redis.url();
    let partners = 300;
    let mut daemon = Daemon::start(&stream.config(&url));
    daemon.wait_ready(Duration::from_secs(60));
    let mut truth = produce_usage(&stream, 0..20_000, partners);
    // Round 1 durable, then the store goes away while round 2 streams in.
    let progressed =
        common::wait_until(Duration::from_secs(120), Duration::from_millis(100), || {
            total_events(&durable_totals(&url, &stream.prefix)) >= 20_000
        });
    assert!(progressed);
    redis.stop();
    let stopped_at = std::time::Instant::now();
    // Half of these partners are new: their state cannot be loaded while the store is
    // down, so their partitions stall and are paused (back-pressure), not buffered.
    merge(
        &mut truth,
        produce_usage(&stream, 20_000..40_000, partners * 2),
    );
    let paused = common::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        metric(&daemon, "warden_partitions_paused") > 0.0
    });
    assert!(
        paused,
        "no partition paused while the store was down\n{}",
        daemon.output()
    );
    assert!(metric(&daemon, "warden_backpressure_total") > 0.0);
    // The failure policy (`fail_open`, the default) is applied, and says so.
    let degraded = common::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        metric(&daemon, "warden_store_degraded{policy=\"fail_open\"}") == 1.0
    });
    assert!(
        degraded,
        "the failure policy was not applied\n{}",
        daemon.output()
    );
    // The outage lasts 10 s in all.
    thread::sleep(Duration::from_secs(10).saturating_sub(stopped_at.elapsed()));
    assert!(
        daemon.wait_exit(Duration::from_millis(10)).is_none(),
        "daemon exited while Redis was down\n{}",
        daemon.output()
    );
    // Reads are still served while the store is down.
    let (status, _) = daemon.request("GET", "/healthz", None, None);
    assert_eq!(status, 200);
    redis.start();
    merge(&mut truth, produce_usage(&stream, 40_000..50_000, partners));
    assert_totals_exact(&url, &stream, &truth, Duration::from_secs(300));
    let recovered = common::wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        metric(&daemon, "warden_store_degraded{policy=\"fail_open\"}") == 0.0
    });
    assert!(recovered, "still degraded after the outage");
    // `fail_open` tells gateways nothing: no global decision went out, before or after.
    let global = common::enforcement_decisions(&stream)
        .iter()
        .filter(|v| v["scope"] == "global")
        .count();
    assert_eq!(global, 0, "a global decision under fail_open");
    let revoked = daemon
        .stdout_lines()
        .iter()
        .chain(daemon.stderr_lines().iter())
        .any(|l| l.contains("partitions revoked"));
    assert!(
        !revoked,
        "the daemon left its partitions during the outage\n{}",
        daemon.output()
    );
    assert!(daemon.terminate().success());
}

/// Acceptance 4: 1,000 malformed records of every CONTRACT §5 kind among valid ones.
#[test]
fn malformed_records_go_to_the_dead_letter_topic_with_their_reason() {
    let _serial = common::serial();
    let stream = Stream::new("core-dlq");
    let redis = common::redis_url();
    let base = Utc::now();
    let mut producer = TestProducer::new(&stream.brokers);
    let mut truth: HashMap<String, Truth> = HashMap::new();
    // reason → how many of that kind were produced
    let mut expected: BTreeMap<&str, usize> = BTreeMap::new();
    let partners = 50u64;
    let mut bad = 0usize;
    let mut i = 0u64;
    while bad < 1_000 {
        let (partner, payload, t) = usage_event(i, partners, base);
        producer.send(&stream.usage, Some(&partner), &payload);
        let e = truth.entry(partner.clone()).or_default();
        e.events += 1;
        e.requests += t.requests;
        e.errors += t.errors;
        let (topic, key, value, reason): (&str, String, Vec<u8>, &str) = match bad % 14 {
            0 => (&stream.usage, partner.clone(), b"{not json".to_vec(), "not_json"),
            1 => (&stream.usage, partner.clone(), json!({"event_id": format!("m{bad}"), "ts": base, "partner_id": partner, "integration_id": "i", "errors": 0}).to_string().into_bytes(), "missing_field"),
            2 => (&stream.usage, partner.clone(), json!({"event_id": format!("m{bad}"), "ts": base, "partner_id": partner, "integration_id": "i", "requests": "ten", "errors": 0}).to_string().into_bytes(), "wrong_type"),
            3 => (&stream.invoices, partner.clone(), json!({"invoice_id": format!("m{bad}"), "ts": base, "kind": "paid", "partner_id": partner, "tenant_id": "t", "currency": "USD", "platform_fee": 10.5}).to_string().into_bytes(), "money_as_number"),
            4 => (&stream.invoices, partner.clone(), json!({"invoice_id": format!("m{bad}"), "ts": base, "kind": "paid", "partner_id": partner, "tenant_id": "t", "currency": "USD", "platform_fee": "-1.00"}).to_string().into_bytes(), "negative_money"),
            5 => (&stream.usage, partner.clone(), json!({"event_id": format!("m{bad}"), "ts": base, "partner_id": partner, "integration_id": "i", "requests": 1, "errors": 2}).to_string().into_bytes(), "errors_exceed_requests"),
            6 => (&stream.invoices, partner.clone(), json!({"invoice_id": format!("m{bad}"), "ts": base, "kind": "gift", "partner_id": partner, "tenant_id": "t", "currency": "USD", "platform_fee": "1"}).to_string().into_bytes(), "unknown_enum_value"),
            7 => (&stream.usage, partner.clone(), vec![b' '; 5 * 1024], "record_too_large"),
            8 => (&stream.usage, "someone-else".to_string(), json!({"event_id": format!("m{bad}"), "ts": base, "partner_id": partner, "integration_id": "i", "requests": 1, "errors": 0}).to_string().into_bytes(), "wrong_key"),
            9 => (&stream.usage, partner.clone(), json!({"event_id": format!("m{bad}"), "ts": Utc::now() + chrono::Duration::hours(2), "partner_id": partner, "integration_id": "i", "requests": 1, "errors": 0}).to_string().into_bytes(), "ts_out_of_range"),
            10 => (&stream.invoices, partner.clone(), json!({"invoice_id": format!("m{bad}"), "ts": base, "kind": "refund", "partner_id": partner, "tenant_id": "t", "currency": "USD", "platform_fee": "1"}).to_string().into_bytes(), "missing_refers_to"),
            11 => (&stream.usage, partner.clone(), json!({"event_id": format!("m{bad}"), "ts": "yesterday", "partner_id": partner, "integration_id": "i", "requests": 1, "errors": 0}).to_string().into_bytes(), "invalid_value"),
            // A valid event, keyed right, on a partition its key does not name.
            12 => (&stream.usage, partner.clone(), json!({"event_id": format!("m{bad}"), "ts": base, "partner_id": partner, "integration_id": "i", "requests": 1, "errors": 0}).to_string().into_bytes(), "wrong_partition"),
            // Older than the partner's newest ts minus the 24 h dedup window.
            _ => (&stream.usage, partner.clone(), json!({"event_id": format!("m{bad}"), "ts": base - chrono::Duration::hours(25), "partner_id": partner, "integration_id": "i", "requests": 1, "errors": 0}).to_string().into_bytes(), "outside_dedup_window"),
        };
        let key = if reason == "wrong_key" {
            key
        } else {
            partner.clone()
        };
        let partition = (reason == "wrong_partition").then(|| {
            (warden::kafka::topics::partition_for_key(key.as_bytes(), PARTITIONS) + 1) % PARTITIONS
        });
        producer.send_with(topic, Some(&key), &value, partition, None);
        *expected.entry(reason).or_default() += 1;
        bad += 1;
        i += 1;
    }
    producer.flush();
    // A small record cap keeps the oversized records small for the broker too.
    let config = stream
        .config(&redis)
        .replace("[kafka]\n", "[kafka]\nmax_record_bytes = 4096\n");
    let mut daemon = Daemon::start(&config);
    daemon.wait_ready(Duration::from_secs(60));
    assert_totals_exact(&redis, &stream, &truth, Duration::from_secs(300));
    let records = common::consume_all(
        &stream.brokers,
        &stream.deadletter,
        1_000,
        Duration::from_secs(120),
    );
    assert_eq!(records.len(), 1_000, "dead letters");
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = std::collections::BTreeSet::new();
    for r in &records {
        let v: serde_json::Value = serde_json::from_slice(&r.3).unwrap();
        *got.entry(v["reason"].as_str().unwrap().to_owned())
            .or_default() += 1;
        assert!(v["offset"].is_i64() && v["partition"].is_i64() && v["source_topic"].is_string());
        ids.insert((
            v["source_topic"].as_str().unwrap().to_owned(),
            v["partition"].as_i64(),
            v["offset"].as_i64(),
        ));
    }
    assert_eq!(
        ids.len(),
        1_000,
        "every dead letter names a distinct source record"
    );
    let want: BTreeMap<String, usize> = expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(got, want);
    let metrics = daemon.request("GET", "/metrics", None, None).1;
    let text = metrics.as_str().unwrap();
    let counted: u64 = text
        .lines()
        .filter(|l| l.starts_with("warden_events_total{outcome=\"dead_letter\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, 1_000, "warden_events_total{{outcome=dead_letter}}");
    assert!(daemon.terminate().success());
}

/// With the smallest mailboxes, idle actors passivated after a second and revived from
/// the store on their next event, totals stay exact.
#[test]
fn tiny_mailboxes_and_passivation_keep_totals_exact() {
    let _serial = common::serial();
    let stream = Stream::new("core-bp");
    let redis = common::redis_url();
    let env = [
        ("WARDEN_RUNTIME__MAILBOX_CAPACITY", "1"),
        ("WARDEN_RUNTIME__MAX_UNFLUSHED_EVENTS", "200"),
        ("WARDEN_RUNTIME__PASSIVATE_AFTER", "1s"),
        ("WARDEN_KAFKA__POLL_BATCH", "5000"),
    ];
    let mut truth = produce_usage(&stream, 0..30_000, 200);
    let mut daemon = Daemon::start_with_env(&stream.config(&redis), &env);
    daemon.wait_ready(Duration::from_secs(60));
    assert_totals_exact(&redis, &stream, &truth, Duration::from_secs(300));
    // Idle partners leave memory, except those off `ok` (throttled for bursting, or
    // erring): they must keep ticking to calm down with no further event, and leave once
    // back at `ok` (a burst hold is 30 s).
    let live_by_level =
        |level: &str| metric(&daemon, &format!("warden_partners{{level=\"{level}\"}}"));
    let off_ok = || -> f64 {
        ["warn", "throttle", "suspend"]
            .iter()
            .map(|l| live_by_level(l))
            .sum()
    };
    let passivated =
        common::wait_until(Duration::from_secs(150), Duration::from_millis(200), || {
            live_by_level("ok") == 0.0
                && metric(&daemon, "warden_actors ") == off_ok()
                && metric(&daemon, "warden_passivations_total") >= 150.0
        });
    assert!(
        passivated,
        "live at ok {}, off ok {}, actors {}, passivations {}\n{}",
        live_by_level("ok"),
        off_ok(),
        metric(&daemon, "warden_actors "),
        metric(&daemon, "warden_passivations_total"),
        daemon.output()
    );
    // ...and come back from the store with their totals on their next event.
    merge(&mut truth, produce_usage(&stream, 30_000..40_000, 200));
    assert_totals_exact(&redis, &stream, &truth, Duration::from_secs(300));
    assert!(daemon.terminate().success());
}

/// CONTRACT §8: exit 0 means drained, flushed and committed. A SIGTERM while the store is
/// down cannot make the last events durable: the daemon still stops within its grace, but
/// exits 1 and says why, and the next start replays what was left (nothing lost).
#[test]
fn a_stop_that_cannot_make_its_state_durable_exits_1_and_loses_nothing() {
    let _serial = common::serial();
    let stream = Stream::new("core-unclean-stop");
    let mut redis = RedisServer::start_new();
    let url = redis.url();
    let config = stream
        .config(&url)
        .replace("shutdown_grace = \"20s\"", "shutdown_grace = \"3s\"");
    let mut daemon = Daemon::start(&config);
    daemon.wait_ready(Duration::from_secs(60));
    let mut truth = produce_usage(&stream, 0..2_000, 50);
    assert_totals_exact(&url, &stream, &truth, Duration::from_secs(120));
    redis.stop();
    merge(&mut truth, produce_usage(&stream, 2_000..3_000, 50));
    let consumed = common::wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        metric(&daemon, "warden_partitions_paused") > 0.0
            || metric(&daemon, "warden_store_degraded{policy=\"fail_open\"}") == 1.0
    });
    assert!(
        consumed,
        "the store's outage went unnoticed\n{}",
        daemon.output()
    );
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(1), "{}", daemon.output());
    let said = daemon
        .stderr_lines()
        .iter()
        .chain(daemon.stdout_lines().iter())
        .any(|l| l.contains("before its state was durable"));
    assert!(
        said,
        "the unclean stop was not explained\n{}",
        daemon.output()
    );
    redis.start();
    let mut again = Daemon::start(&stream.config(&url));
    again.wait_ready(Duration::from_secs(60));
    assert_totals_exact(&url, &stream, &truth, Duration::from_secs(120));
    assert!(again.terminate().success());
}

/// CONTRACT §9: a store that comes back empty while the group has commits is detected;
/// the daemon goes unready and does not silently replay.
#[test]
fn an_emptied_store_is_detected_not_silently_replayed() {
    let _serial = common::serial();
    let stream = Stream::new("core-lost");
    let mut redis = RedisServer::start_new();
    let url = redis.url();
    let truth = produce_usage(&stream, 0..5_000, 50);
    let mut daemon = Daemon::start(&stream.config(&url));
    daemon.wait_ready(Duration::from_secs(60));
    assert_totals_exact(&url, &stream, &truth, Duration::from_secs(120));
    assert!(daemon.terminate().success());
    // The store loses everything (e.g. restored from nothing).
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    redis.stop();
    redis.start();
    let mut again = Daemon::start(&stream.config(&url));
    let lost = common::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        metric(&again, "warden_store_lost") == 1.0
    });
    assert!(lost, "an empty store was not detected\n{}", again.output());
    // The gauge alerts read says so too, before anything probed readiness.
    assert_eq!(metric(&again, "warden_ready "), 0.0);
    let (status, body) = again.request("GET", "/readyz", None, None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["store_lost"], true);
    assert!(
        durable_totals(&url, &stream.prefix).is_empty(),
        "nothing may be replayed into the empty store"
    );
    assert!(again.terminate().success());
}
