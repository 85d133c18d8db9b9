//! Enforcement end to end through the real broker and Redis (issue: enforcement,
//! acceptance 1 and 7): the ladder climbs and calms with its dwell, each step appears once
//! in Redis (its channel), once on the enforcement topic and once in the audit log; an
//! expired pilot tenant is suspended at tenant scope and upgrading it lifts that.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::group::metric;
use common::stream::Stream;
use common::{Daemon, TestProducer};
use serde_json::{json, Value};

const SECURITY: &str = "test-security-token-0123456789abcdef";

/// Event-time policy small enough for a test: dwell 10 s, calm 15 s, a 10 s error window,
/// and no quota, burst or anomaly decisions in the way.
const POLICY: &str = r#"
[enforcement]
dwell = "10s"
calm = "15s"
[enforcement.tiers.default]
monthly_requests = 1000000000000
burst_rps = 100000000
overage = "notify"
error_rate_warn = 0.05
error_rate_throttle = 0.15
error_rate_suspend = 0.30
error_min_requests = 100
error_window = "10s"
anomaly_z_warn = 100000.0
anomaly_z_throttle = 200000.0
anomaly_min_windows = 100000
"#;

fn config(stream: &Stream, redis: &str) -> String {
    let mut c = stream.config(redis);
    c.push_str(&format!(
        "[[admin.tokens]]\nname = \"security\"\nsha256 = \"{}\"\nroles = [\"security\"]\n",
        warden::http::auth::token_hash(SECURITY)
    ));
    c.push_str(POLICY);
    c
}

fn usage(partner: &str, i: u64, ts: DateTime<Utc>, errors_share: f64) -> Vec<u8> {
    let requests = 50u64;
    serde_json::to_vec(&json!({
        "event_id": format!("{partner}-{i}"), "ts": ts, "partner_id": partner,
        "integration_id": format!("{partner}-int"), "requests": requests,
        "errors": (requests as f64 * errors_share) as u64,
    }))
    .unwrap()
}

/// Partner `id`'s decisions on the enforcement topic so far, in order (a target's
/// decisions share one partition).
fn partner_decisions(stream: &Stream, id: &str) -> Vec<Value> {
    common::consume_all(
        &stream.brokers,
        &stream.enforcement,
        10_000,
        Duration::from_secs(2),
    )
    .iter()
    .map(|r| serde_json::from_slice::<Value>(&r.3).unwrap())
    .filter(|d| d["scope"] == "partner" && d["id"] == id)
    .collect()
}

/// [`partner_decisions`], each once: a record re-published after a crash has the same
/// `decision_id` (the first copy is kept, in topic order).
fn distinct_partner_decisions(stream: &Stream, id: &str) -> Vec<Value> {
    let mut ids: Vec<String> = Vec::new();
    partner_decisions(stream, id)
        .into_iter()
        .filter(|d| {
            let decision = d["decision_id"].as_str().unwrap().to_owned();
            let first = !ids.contains(&decision);
            ids.push(decision);
            first
        })
        .collect()
}

/// Sends a `tenant` control fact: `tenant` of `partner` on `plan` since `started_at`.
fn send_tenant(
    producer: &mut TestProducer,
    stream: &Stream,
    (tenant, partner): (&str, &str),
    plan: &str,
    started_at: DateTime<Utc>,
) {
    let fact = json!({"type": "tenant", "tenant_id": tenant, "partner_id": partner, "plan": plan, "started_at": started_at});
    producer.send(&stream.control, Some(partner), fact.to_string().as_bytes());
}

#[test]
fn error_rate_climbs_the_ladder_with_dwell_and_calms_down_each_step_once_everywhere() {
    let stream = Stream::new("enf-ladder");
    let redis = common::redis_url();
    // Count channel messages from the start.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut sub_conn = client.get_connection().unwrap();
    let channel = format!("{}:enf", stream.prefix);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let chan = channel.clone();
    std::thread::spawn(move || {
        let mut pubsub = sub_conn.as_pubsub();
        pubsub.subscribe(&chan).unwrap();
        pubsub
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        while let Ok(msg) = pubsub.get_message() {
            if tx.send(msg.get_payload::<String>().unwrap()).is_err() {
                break;
            }
        }
    });

    // Event time: 30 s clean, 60 s at 40 % errors, 110 s clean; 10 events per second.
    let base = Utc::now() - chrono::Duration::minutes(30);
    let mut producer = TestProducer::new(&stream.brokers);
    for i in 0..2000u64 {
        let t = base + chrono::Duration::milliseconds(i as i64 * 100);
        let share = if (300..900).contains(&i) { 0.4 } else { 0.0 };
        producer.send(&stream.usage, Some("p-err"), &usage("p-err", i, t, share));
    }
    producer.flush();
    let mut daemon = Daemon::start(&config(&stream, &redis));
    daemon.wait_ready(Duration::from_secs(60));

    let want = ["warn", "throttle", "suspend", "throttle", "warn", "ok"];
    let mut decisions: Vec<Value> = Vec::new();
    let complete = common::wait_until(Duration::from_secs(90), Duration::from_millis(500), || {
        decisions = partner_decisions(&stream, "p-err");
        decisions.len() >= want.len()
    });
    assert!(
        complete,
        "decisions so far: {decisions:#?}\n{}",
        daemon.output()
    );
    let levels: Vec<&str> = decisions
        .iter()
        .map(|d| d["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, want, "{decisions:#?}");
    for d in &decisions[..3] {
        assert_eq!(d["reason"], "error_rate");
    }
    // One step per dwell (event time) on the way up.
    let at = |d: &Value| DateTime::parse_from_rfc3339(d["decided_at"].as_str().unwrap()).unwrap();
    for pair in decisions[..3].windows(2) {
        let gap = at(&pair[1]) - at(&pair[0]);
        assert!(
            gap >= chrono::Duration::seconds(10),
            "steps {} apart: {pair:#?}",
            gap
        );
    }
    // Back at ok: no key.
    assert!(common::redis_hash(&redis, &format!("{}:enf:partner:p-err", stream.prefix)).is_empty());

    // Once on the topic: distinct ids, no repeats.
    let ids: Vec<String> = decisions
        .iter()
        .map(|d| d["decision_id"].as_str().unwrap().to_owned())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a decision id repeated on the topic"
    );
    // Once on the channel.
    let mut channel_ids: Vec<String> = Vec::new();
    while let Ok(m) = rx.recv_timeout(Duration::from_secs(2)) {
        let v: Value = serde_json::from_str(&m).unwrap();
        if v["id"] == "p-err" {
            channel_ids.push(v["decision_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        channel_ids, ids,
        "each step exactly once on the channel, in order"
    );
    // Once in the audit log.
    let audit = daemon.get_json_with_token("/v1/audit?after_seq=0&limit=10000", Some(SECURITY));
    for id in &ids {
        let n = audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["ref"] == id.as_str())
            .count();
        assert_eq!(n, 1, "{id} in the audit log");
    }
    assert!(daemon.terminate().success());
}

/// A partner held by a kill switch: the ladder, which does not know of the switch, still
/// climbs and calms on the partner's errors, but the data plane refuses each of its
/// decisions, and a refused decision is not a change of level, so it reaches neither the
/// topic nor the channel. A gateway reading the topic in seq order must never see the kill
/// lowered. A partner with the same traffic and no switch climbs and calms as usual.
#[test]
fn the_ladder_never_lowers_a_kill_switch_on_the_topic() {
    let stream = Stream::new("enf-held");
    let redis = common::redis_url();
    let mut daemon = Daemon::start(&config(&stream, &redis));
    daemon.wait_ready(Duration::from_secs(60));
    let kill = json!({"scope": "partner", "target": "p-held", "reason": "credential leak"});
    let (status, created) =
        daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&kill));
    assert_eq!(status, 201, "{created}");

    // Both partners: 30 s clean, 60 s at 40 % errors, 110 s clean (event time).
    let base = Utc::now() - chrono::Duration::minutes(30);
    let mut producer = TestProducer::new(&stream.brokers);
    for i in 0..2000u64 {
        let t = base + chrono::Duration::milliseconds(i as i64 * 100);
        let share = if (300..900).contains(&i) { 0.4 } else { 0.0 };
        for p in ["p-held", "p-free"] {
            producer.send(&stream.usage, Some(p), &usage(p, i, t, share));
        }
    }
    producer.flush();
    let want = ["warn", "throttle", "suspend", "throttle", "warn", "ok"];
    let free_done = common::wait_until(Duration::from_secs(90), Duration::from_millis(500), || {
        partner_decisions(&stream, "p-free").len() >= want.len()
    });
    assert!(free_done, "{}", daemon.output());
    let held_applied =
        common::wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
            daemon.get_json_with_token("/v1/partners/p-held", Some(SECURITY))["usage"]["events"]
                == 2000
        });
    assert!(held_applied, "{}", daemon.output());
    // The held partner's ladder made the same steps as the free one's, and each reached
    // the data plane, which refused it: the publication map keeps every outbox id it was
    // given (`<prefix>:enfpub:…`, the owner's ids `p-held:<n>`, each with its seq).
    let handled = || {
        common::redis_hash(&redis, &format!("{}:enfpub:partner:p-held", stream.prefix))
            .keys()
            .filter(|k| {
                k.starts_with("p-held:") && !k.ends_with(":applied") && !k.ends_with(":produced")
            })
            .count()
    };
    let all_handled =
        common::wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
            handled() >= want.len()
        });
    assert!(
        all_handled,
        "{} of {} handled\n{}",
        handled(),
        want.len(),
        daemon.output()
    );
    assert_eq!(handled(), want.len(), "the held ladder's steps");
    // None applied (the data plane marks an applied outbox id before it is produced).
    let applied: Vec<String> =
        common::redis_hash(&redis, &format!("{}:enfpub:partner:p-held", stream.prefix))
            .into_keys()
            .filter(|k| k.starts_with("p-held:") && k.ends_with(":applied"))
            .collect();
    assert!(applied.is_empty(), "refused decisions applied: {applied:?}");

    let free: Vec<Value> = partner_decisions(&stream, "p-free");
    let levels: Vec<&str> = free.iter().map(|d| d["level"].as_str().unwrap()).collect();
    assert_eq!(
        levels, want,
        "the same traffic moves a partner with no switch"
    );
    let held = partner_decisions(&stream, "p-held");
    let levels: Vec<&str> = held.iter().map(|d| d["level"].as_str().unwrap()).collect();
    assert_eq!(levels, ["killed"], "{held:#?}");
    assert_eq!(held[0]["seq"], created["seq"]);
    let key = format!("{}:enf:partner:p-held", stream.prefix);
    let plane = common::redis_hash(&redis, &key);
    assert_eq!(plane["level"], "killed");
    assert_eq!(plane["seq"], created["seq"].to_string());
    assert!(daemon.terminate().success());
}

/// A person's `ok` over a health `throttle` is not undone by the ladder calming down: the
/// owner, which still believes `throttle`, steps down to `warn` and then `ok`, and its
/// `warn` would have put the partner back at `warn` after a person cleared it. The calm
/// step is refused (it never raises the key), so the topic reads warn, throttle, the
/// person's ok, and the owner's own ok.
#[test]
fn a_persons_ok_is_not_undone_by_the_ladder_calming_down() {
    let stream = Stream::new("enf-manual-ok");
    let redis = common::redis_url();
    let mut daemon = Daemon::start(&config(&stream, &redis));
    daemon.wait_ready(Duration::from_secs(60));
    let base = Utc::now() - chrono::Duration::minutes(30);
    let at = |i: u64| base + chrono::Duration::milliseconds(i as i64 * 100);
    let mut producer = TestProducer::new(&stream.brokers);
    // 20 % errors (throttle's band) for 20 s of event time: warn, then throttle.
    for i in 0..200u64 {
        producer.send(&stream.usage, Some("p-ok"), &usage("p-ok", i, at(i), 0.2));
    }
    producer.flush();
    let key = format!("{}:enf:partner:p-ok", stream.prefix);
    assert!(
        common::wait_for_level(&redis, &key, "throttle", Duration::from_secs(60)),
        "{}",
        daemon.output()
    );
    let ok = json!({"level": "ok", "reason": "false alarm"});
    let (status, body) = daemon.request(
        "POST",
        "/v1/partners/p-ok/enforcement",
        Some(SECURITY),
        Some(&ok),
    );
    assert_eq!(status, 200, "{body}");
    // 50 s clean: the owner calms throttle -> warn -> ok, 15 s a step.
    for i in 200..700u64 {
        producer.send(&stream.usage, Some("p-ok"), &usage("p-ok", i, at(i), 0.0));
    }
    producer.flush();
    let base_key = format!("{}:enfbase:partner:p-ok", stream.prefix);
    let calmed = common::wait_for_level(&redis, &base_key, "ok", Duration::from_secs(60));
    assert!(
        calmed,
        "{:?}\n{}",
        common::redis_hash(&redis, &base_key),
        daemon.output()
    );
    let decisions = || -> Vec<(String, String)> {
        distinct_partner_decisions(&stream, "p-ok")
            .iter()
            .map(|d| {
                (
                    d["level"].as_str().unwrap().to_owned(),
                    d["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let mut seen = Vec::new();
    // The owner's `ok` is in the base before its record is on the topic.
    common::wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        seen = decisions();
        seen.last().is_some_and(|(l, r)| l == "ok" && r != "manual")
    });
    let levels: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(levels, ["warn", "throttle", "ok", "ok"], "{seen:?}");
    assert_eq!(seen[2].1, "manual", "{seen:?}");
    assert!(common::redis_hash(&redis, &key).is_empty());
    assert!(daemon.terminate().success());
}

/// Ticks go only to partners with something due (issue 6): a partner left off `ok` by its
/// last events is ticked every round and calms down without another event, while 300 calm
/// partners with one event each are left alone by nearly every round.
#[test]
fn a_silent_partner_calms_down_while_calm_partners_are_not_ticked() {
    let stream = Stream::new("enf-due");
    let redis = common::redis_url();
    let base = Utc::now() - chrono::Duration::minutes(30);
    let mut producer = TestProducer::new(&stream.brokers);
    for k in 0..300 {
        let id = format!("p-calm-{k}");
        producer.send(&stream.usage, Some(&id), &usage(&id, 0, base, 0.0));
    }
    // 40 % errors for two seconds of event time, then nothing.
    for i in 0..20u64 {
        let t = base + chrono::Duration::milliseconds(i as i64 * 100);
        producer.send(&stream.usage, Some("p-err"), &usage("p-err", i, t, 0.4));
    }
    producer.flush();
    let mut daemon = Daemon::start(&config(&stream, &redis));
    daemon.wait_ready(Duration::from_secs(60));

    let mut levels: Vec<String> = Vec::new();
    let calm = common::wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        levels = partner_decisions(&stream, "p-err")
            .iter()
            .map(|d| d["level"].as_str().unwrap().to_owned())
            .collect();
        levels.len() >= 2 && levels.last().is_some_and(|l| l == "ok")
    });
    assert!(calm, "decisions so far: {levels:?}\n{}", daemon.output());
    assert_eq!(levels.first().map(String::as_str), Some("warn"));
    let sent = metric(&daemon, "warden_partner_ticks_total{outcome=\"sent\"}");
    let not_due = metric(&daemon, "warden_partner_ticks_total{outcome=\"not_due\"}");
    // Each calm partner is due a few times (started, its windows closing); p-err every
    // round while off `ok`. Ticking everyone every round would make `not_due` zero.
    assert!(
        sent > 0.0 && not_due > 4.0 * sent,
        "ticks sent {sent}, not due {not_due}"
    );
    // Rounds end (each once its last tick is handled), and are timed.
    assert!(metric(&daemon, "warden_tick_round_seconds_count") > 1.0);
    assert!(daemon.terminate().success());
}

/// A partner left off `ok` by its last events calms down with no event ever again
/// (CONTRACT §3): it is not passivated while its ladder is off `ok` (idle partners are
/// passivated after 1 s here), and when its owner dies the next owner starts it at once
/// from the store, without waiting for an event that a suspended partner may never send.
#[test]
fn a_silent_partner_off_ok_calms_down_through_passivation_and_a_crash() {
    let stream = Stream::new("enf-asleep");
    let redis = common::redis_url();
    // Event time: 30 s clean, then 60 s at 40 % errors, then nothing.
    let base = Utc::now() - chrono::Duration::minutes(30);
    let mut producer = TestProducer::new(&stream.brokers);
    for i in 0..900u64 {
        let t = base + chrono::Duration::milliseconds(i as i64 * 100);
        let share = if i >= 300 { 0.4 } else { 0.0 };
        producer.send(
            &stream.usage,
            Some("p-quiet"),
            &usage("p-quiet", i, t, share),
        );
    }
    producer.flush();
    let cfg = config(&stream, &redis)
        .replace("[runtime]\n", "[runtime]\npassivate_after = \"1s\"\n")
        .replace("calm = \"15s\"", "calm = \"20s\"");
    assert!(cfg.contains("passivate_after = \"1s\"") && cfg.contains("calm = \"20s\""));
    let mut daemon = Daemon::start(&cfg);
    let started = std::time::Instant::now();
    daemon.wait_ready(Duration::from_secs(60));
    let key = format!("{}:enf:partner:p-quiet", stream.prefix);
    let levels = || -> Vec<String> {
        distinct_partner_decisions(&stream, "p-quiet")
            .iter()
            .map(|d| d["level"].as_str().unwrap().to_owned())
            .collect()
    };
    let suspended = common::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        levels().iter().any(|l| l == "suspend")
    });
    assert!(suspended, "{:?}\n{}", levels(), daemon.output());
    // Passivated while idle if that were allowed: a calm step is 20 s away. A calm partner
    // heard from after p-quiet is passivated: the rounds that did it found p-quiet idle
    // longer, and kept it live.
    let last = base + chrono::Duration::milliseconds(900 * 100);
    producer.send(
        &stream.usage,
        Some("p-calm"),
        &usage("p-calm", 0, last, 0.0),
    );
    producer.flush();
    // Null until the partner is known.
    let source = |id: &str| {
        let path = format!("/v1/partners/{id}");
        daemon.request("GET", &path, Some(SECURITY), None).1["source"].clone()
    };
    let calm_passivated =
        common::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            source("p-calm") == "store"
        });
    assert!(calm_passivated, "{}", daemon.output());
    assert_eq!(source("p-quiet"), "live");
    // tansu 0.6 may never rebalance after a member that joined seconds ago is killed: it
    // lives 10 s.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    let passivations = metric(&daemon, "warden_passivations_total");
    let before_crash = common::redis_hash(&redis, &key);
    assert!(
        before_crash.contains_key("level"),
        "still off ok when the owner dies: {before_crash:?}"
    );
    daemon.kill9();

    let mut daemon = common::group::restart_until_assigned(&cfg);
    let calmed = common::wait_until(Duration::from_secs(150), Duration::from_millis(500), || {
        common::redis_hash(&redis, &key).is_empty()
    });
    assert!(
        calmed,
        "still {:?} with no event; decisions {:?}\n{}",
        common::redis_hash(&redis, &key),
        levels(),
        daemon.output()
    );
    let want = ["warn", "throttle", "suspend", "throttle", "warn", "ok"];
    let got = levels();
    assert_eq!(got, want, "passivations before the crash: {passivations}");
    assert!(daemon.terminate().success());
}

/// A control fact reaches a live partner with nothing due at the next round, not at its
/// next event or due time: the round after control facts arrive ticks every partner.
#[test]
fn a_control_fact_reaches_a_live_partner_with_nothing_due() {
    let stream = Stream::new("enf-fact");
    let redis = common::redis_url();
    let mut producer = TestProducer::new(&stream.brokers);
    let old = Utc::now() - chrono::Duration::minutes(30);
    producer.send(
        &stream.usage,
        Some("p-quiet"),
        &usage("p-quiet", 0, old, 0.0),
    );
    // Later events of other partners move every partition's watermark past p-quiet's
    // windows: after its first tick it has nothing due until the next month.
    let later = Utc::now() - chrono::Duration::minutes(1);
    for k in 0..200 {
        let id = format!("p-later-{k}");
        producer.send(&stream.usage, Some(&id), &usage(&id, 0, later, 0.0));
    }
    producer.flush();
    let mut daemon = Daemon::start(&config(&stream, &redis));
    daemon.wait_ready(Duration::from_secs(60));
    let skipping = common::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        metric(&daemon, "warden_partner_ticks_total{outcome=\"not_due\"}") >= 600.0
    });
    assert!(
        skipping,
        "rounds never left partners alone\n{}",
        daemon.output()
    );

    let expired = Utc::now() - chrono::Duration::days(31);
    send_tenant(
        &mut producer,
        &stream,
        ("t-late", "p-quiet"),
        "pilot",
        expired,
    );
    producer.flush();
    let key = format!("{}:enf:tenant:t-late", stream.prefix);
    let suspended = common::wait_for_level(&redis, &key, "suspend", Duration::from_secs(30));
    assert!(
        suspended,
        "the fact did not reach the silent partner\n{}",
        daemon.output()
    );
    assert!(daemon.terminate().success());
}

/// A pilot age short enough for a test, and partners passivated after a second idle.
const PILOT_AGE_SECS: i64 = 30;

fn pilot_config(stream: &Stream, redis: &str) -> String {
    let cfg = config(stream, redis)
        .replace(
            "[enforcement]\n",
            &format!("[enforcement]\npilot_max_age = \"{PILOT_AGE_SECS}s\"\n"),
        )
        .replace("[runtime]\n", "[runtime]\npassivate_after = \"1s\"\n");
    assert!(cfg.contains("pilot_max_age") && cfg.contains("passivate_after"));
    cfg
}

/// `partner`'s wake time in the store (wall-clock millis), if it has one.
fn stored_wake(stream: &Stream, redis: &str, partner: &str) -> Option<i64> {
    let p =
        warden::kafka::topics::partition_for_key(partner.as_bytes(), common::stream::PARTITIONS);
    let key = warden::store::keys::Keys::new(stream.prefix.clone()).wake(p);
    let mut conn = redis::Client::open(redis)
        .unwrap()
        .get_connection()
        .unwrap();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(&key)
        .arg(partner)
        .query(&mut conn)
        .unwrap();
    score.map(|ms| ms as i64)
}

/// A pilot tenant and one usage event of its partner, then nothing more from either.
fn pilot_of_a_silent_partner(stream: &Stream, (tenant, partner): (&str, &str)) -> DateTime<Utc> {
    let mut producer = TestProducer::new(&stream.brokers);
    let started = Utc::now();
    send_tenant(&mut producer, stream, (tenant, partner), "pilot", started);
    producer.send(
        &stream.usage,
        Some(partner),
        &usage(partner, 0, started, 0.0),
    );
    producer.flush();
    started
}

/// CONTRACT §3: a pilot expires on the wall clock, also for a partner that went silent and
/// was passivated before it did (a passivated partner is judged only when started).
#[test]
fn a_silent_partners_pilot_is_suspended_when_it_expires() {
    let stream = Stream::new("enf-pilot-silent");
    let redis = common::redis_url();
    let started = pilot_of_a_silent_partner(&stream, ("t-quiet", "p-quiet"));
    let mut daemon = Daemon::start(&pilot_config(&stream, &redis));
    daemon.wait_ready(Duration::from_secs(60));
    let passivated =
        common::wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            metric(&daemon, "warden_passivations_total") >= 1.0
        });
    assert!(
        passivated,
        "the silent partner was not passivated\n{}",
        daemon.output()
    );
    let key = format!("{}:enf:tenant:t-quiet", stream.prefix);
    assert!(
        common::redis_hash(&redis, &key).is_empty(),
        "suspended before its partner was passivated: the test shows nothing"
    );
    let expiry = (started + chrono::Duration::seconds(PILOT_AGE_SECS)).timestamp_millis();
    assert_eq!(stored_wake(&stream, &redis, "p-quiet"), Some(expiry + 1));
    let suspended = common::wait_for_level(&redis, &key, "suspend", Duration::from_secs(90));
    assert!(
        suspended,
        "the pilot of a passivated partner did not expire\n{}",
        daemon.output()
    );
    let decision = common::redis_hash(&redis, &key);
    assert_eq!(decision["reason"], "pilot_expired");
    // Judged at its time, and its entry is gone once the suspension is durable.
    let cleared = common::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        stored_wake(&stream, &redis, "p-quiet").is_none()
    });
    assert!(cleared, "the wake time outlived the suspension");
    assert!(daemon.terminate().success());
}

/// The wake time is durable with the partner's snapshot: an owner that never saw the
/// partner live (a restart, a rebalance) still starts it when its pilot expires.
#[test]
fn a_new_owner_wakes_a_silent_partner_when_its_pilot_expires() {
    let stream = Stream::new("enf-pilot-owner");
    let redis = common::redis_url();
    let cfg = pilot_config(&stream, &redis);
    let started = pilot_of_a_silent_partner(&stream, ("t-moved", "p-moved"));
    let mut first = Daemon::start(&cfg);
    first.wait_ready(Duration::from_secs(60));
    let expiry = (started + chrono::Duration::seconds(PILOT_AGE_SECS)).timestamp_millis();
    let stored = common::wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        stored_wake(&stream, &redis, "p-moved") == Some(expiry + 1)
    });
    assert!(stored, "no wake time stored\n{}", first.output());
    assert!(first.terminate().success());
    let key = format!("{}:enf:tenant:t-moved", stream.prefix);
    assert!(
        common::redis_hash(&redis, &key).is_empty(),
        "suspended before the restart: the test shows nothing"
    );

    let mut second = Daemon::start(&cfg);
    second.wait_ready(Duration::from_secs(60));
    // The second owner wakes it for its tenant fact, then lets it go: only the stored
    // wake time can bring it back at the expiry.
    let passivated =
        common::wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            metric(&second, "warden_passivations_total") >= 1.0
        });
    assert!(passivated, "not passivated\n{}", second.output());
    assert!(
        common::redis_hash(&redis, &key).is_empty(),
        "suspended before its partner was passivated: the test shows nothing"
    );
    let suspended = common::wait_for_level(&redis, &key, "suspend", Duration::from_secs(90));
    assert!(
        suspended,
        "the new owner did not wake the partner\n{}",
        second.output()
    );
    assert_eq!(common::redis_hash(&redis, &key)["reason"], "pilot_expired");
    assert!(second.terminate().success());
}

#[test]
fn an_expired_pilot_is_suspended_at_tenant_scope_until_upgraded() {
    let stream = Stream::new("enf-pilot");
    let redis = common::redis_url();
    let mut producer = TestProducer::new(&stream.brokers);
    let expired = Utc::now() - chrono::Duration::days(31);
    send_tenant(
        &mut producer,
        &stream,
        ("t-pilot", "p-pilot"),
        "pilot",
        expired,
    );
    let young = Utc::now() - chrono::Duration::days(3);
    send_tenant(
        &mut producer,
        &stream,
        ("t-young", "p-pilot"),
        "pilot",
        young,
    );
    producer.send(
        &stream.usage,
        Some("p-pilot"),
        &usage("p-pilot", 0, Utc::now(), 0.0),
    );
    producer.flush();
    let mut daemon = Daemon::start(&config(&stream, &redis));
    daemon.wait_ready(Duration::from_secs(60));
    let key = format!("{}:enf:tenant:t-pilot", stream.prefix);
    let suspended = common::wait_for_level(&redis, &key, "suspend", Duration::from_secs(60));
    assert!(
        suspended,
        "expired pilot not suspended\n{}",
        daemon.output()
    );
    assert_eq!(common::redis_hash(&redis, &key)["reason"], "pilot_expired");
    assert!(
        common::redis_hash(&redis, &format!("{}:enf:tenant:t-young", stream.prefix)).is_empty()
    );
    assert!(
        common::redis_hash(&redis, &format!("{}:enf:partner:p-pilot", stream.prefix)).is_empty(),
        "tenant scope only"
    );

    // Upgrading to paid lifts it.
    send_tenant(
        &mut producer,
        &stream,
        ("t-pilot", "p-pilot"),
        "paid",
        Utc::now(),
    );
    producer.flush();
    let lifted = common::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        common::redis_hash(&redis, &key).is_empty()
    });
    assert!(
        lifted,
        "upgrade did not lift the pilot suspension\n{}",
        daemon.output()
    );
    assert!(daemon.terminate().success());
}
