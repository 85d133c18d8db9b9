//! The admin API's enforcement side against the real broker and Redis (issue: enforcement,
//! acceptance 4, 5 and 6): kill switches reach Redis and the enforcement topic, survive a
//! restart, are lifted by DELETE or by their TTL; the authorization matrix; the audit
//! chain is verifiable and tampering is found; bodies are capped; tokens are rate-limited.

mod common;

use std::time::Duration;

use common::stream::{Stream, VIEWER_TOKEN};
use common::Daemon;
use serde_json::{json, Value};

const OPERATOR: &str = "test-operator-token-0123456789abcdef";
const FINANCE: &str = "test-finance-token-0123456789abcdef";
const SECURITY: &str = "test-security-token-0123456789abcdef";

fn config(stream: &Stream, redis: &str, extra: &str) -> String {
    let mut c = stream.config(redis);
    for (name, token, role) in [
        ("operator", OPERATOR, "operator"),
        ("finance", FINANCE, "finance"),
        ("security", SECURITY, "security"),
    ] {
        c.push_str(&format!(
            "[[admin.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nroles = [\"{role}\"]\n",
            warden::http::auth::token_hash(token)
        ));
    }
    c.push_str(extra);
    c
}

fn decisions_on_topic(stream: &Stream, at_least: usize) -> Vec<Value> {
    common::consume_all(
        &stream.brokers,
        &stream.enforcement,
        at_least,
        Duration::from_secs(30),
    )
    .iter()
    .map(|r| serde_json::from_slice(&r.3).unwrap())
    .collect()
}

fn audit_records(daemon: &Daemon) -> Vec<Value> {
    let body = daemon.get_json_with_token("/v1/audit?after_seq=0&limit=10000", Some(SECURITY));
    body["records"].as_array().unwrap().clone()
}

#[test]
fn kill_switch_reaches_redis_and_the_topic_survives_restart_and_is_lifted() {
    let stream = Stream::new("admin-kill");
    let redis = common::redis_url();
    let cfg = config(&stream, &redis, "");
    let mut daemon = Daemon::start(&cfg);
    daemon.wait_ready(Duration::from_secs(60));
    let body = json!({"scope": "partner", "target": "p-9", "reason": "credential leak"});
    let (status, created) =
        daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&body));
    assert_eq!(status, 201, "{created}");
    let key = format!("{}:enf:partner:p-9", stream.prefix);
    let h = common::redis_hash(&redis, &key);
    assert_eq!(h["level"], "killed");
    assert_eq!(h["reason"], "kill_switch");
    assert_eq!(h["seq"], created["seq"].to_string());
    let on_topic = decisions_on_topic(&stream, 1);
    assert_eq!(on_topic.len(), 1);
    assert_eq!(on_topic[0]["level"], "killed");
    assert_eq!(
        on_topic[0]["decision_id"],
        format!("partner:p-9:{}", created["seq"])
    );

    // A restart keeps the switch and the key.
    assert!(daemon.terminate().success());
    let mut daemon = Daemon::start(&cfg);
    daemon.wait_ready(Duration::from_secs(60));
    let listed = daemon.get_json_with_token("/v1/kill-switches", Some(VIEWER_TOKEN));
    assert_eq!(
        listed["kill_switches"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    assert_eq!(common::redis_hash(&redis, &key)["level"], "killed");

    // DELETE lifts it: no key (= ok), an `ok` decision on the topic.
    let id = created["id"].as_str().unwrap();
    let (status, _) = daemon.request(
        "DELETE",
        &format!("/v1/kill-switches/{id}"),
        Some(SECURITY),
        None,
    );
    assert_eq!(status, 200);
    assert!(common::redis_hash(&redis, &key).is_empty());
    let on_topic = decisions_on_topic(&stream, 2);
    assert_eq!(on_topic.len(), 2);
    assert_eq!(on_topic[1]["level"], "ok");
    assert_eq!(on_topic[1]["previous"], "killed");

    // A TTL switch is lifted by itself, audited with actor `ttl`.
    let body =
        json!({"scope": "integration", "target": "int-3", "reason": "storm", "ttl_seconds": 1});
    let (status, created) =
        daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&body));
    assert_eq!(status, 201);
    let ikey = format!("{}:enf:integration:int-3", stream.prefix);
    assert_eq!(common::redis_hash(&redis, &ikey)["level"], "killed");
    let lifted = common::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        common::redis_hash(&redis, &ikey).is_empty()
            && daemon.get_json_with_token("/v1/kill-switches", Some(VIEWER_TOKEN))["kill_switches"]
                .as_array()
                .is_some_and(|a| a.is_empty())
    });
    assert!(lifted, "TTL did not lift the switch");
    let ttl_lift = audit_records(&daemon)
        .into_iter()
        .find(|r| r["ref"] == format!("unkill:{}", created["id"].as_str().unwrap()))
        .expect("the TTL lift is audited");
    assert_eq!(ttl_lift["actor"], "ttl");
    assert!(daemon.terminate().success());
}

/// `terminated` leaves only by a person's order (CONTRACT §3), and a target stays killed
/// while any switch on it is active: of two switches stacked over a termination, the top
/// one's TTL ends only that switch (the target stays `killed`, nothing goes on the topic);
/// lifting the last gives the termination back, on the key and the topic.
#[test]
fn a_kill_switch_over_a_termination_gives_the_termination_back_when_lifted() {
    let stream = Stream::new("admin-kill-terminated");
    let redis = common::redis_url();
    let mut daemon = Daemon::start(&config(&stream, &redis, ""));
    daemon.wait_ready(Duration::from_secs(60));
    let terminate = json!({"level": "terminated", "reason": "contract ended"});
    let (status, body) = daemon.request(
        "POST",
        "/v1/partners/p-7/enforcement",
        Some(SECURITY),
        Some(&terminate),
    );
    assert_eq!(status, 200, "{body}");
    let under = json!({"scope": "partner", "target": "p-7", "reason": "leak"});
    let (status, first) = daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&under));
    assert_eq!(status, 201, "{first}");
    let kill = json!({"scope": "partner", "target": "p-7", "reason": "leak", "ttl_seconds": 1});
    let (status, created) =
        daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&kill));
    assert_eq!(status, 201, "{created}");
    let key = format!("{}:enf:partner:p-7", stream.prefix);
    // The TTL ends the top switch: it leaves the list (and the audit says so), the one
    // under it is still listed, and the target stays killed.
    let listed = || -> Vec<String> {
        daemon.get_json_with_token("/v1/kill-switches", Some(SECURITY))["kill_switches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let expired = common::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        listed() == [first["id"].as_str().unwrap()]
    });
    assert!(expired, "TTL did not end the top switch: {:?}", listed());
    let ttl_lift = format!("unkill:{}", created["id"].as_str().unwrap());
    let audit = daemon.get_json_with_token("/v1/audit?after_seq=0&limit=1000", Some(SECURITY));
    let records = audit["records"].as_array().unwrap();
    assert!(
        records.iter().any(|r| r["ref"] == ttl_lift.as_str()),
        "the TTL's end is audited"
    );
    // A person's level is audited with what it replaced and why (LESSONS: records with
    // before and after, as Unleash's have).
    let set = records
        .iter()
        .find(|r| r["action"] == "enforcement.set")
        .expect("the termination is audited");
    assert_eq!(
        (&set["target"], &set["detail"]),
        (
            &json!("partner:p-7"),
            &json!({"from": "ok", "to": "terminated", "reason": "contract ended"})
        ),
        "{set}"
    );
    let h = common::redis_hash(&redis, &key);
    assert_eq!(h["level"], "killed", "{h:?}");
    assert_eq!(
        common::group::metric(&daemon, "warden_kill_switches_active{scope=\"partner\"}"),
        1.0
    );
    // A DELETE of one of two active switches says which one still holds the target.
    let (status, extra) = daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&under));
    assert_eq!(status, 201, "{extra}");
    let lift = |switch: &Value| {
        let path = format!("/v1/kill-switches/{}", switch["id"].as_str().unwrap());
        daemon.request("DELETE", &path, Some(SECURITY), None)
    };
    let (status, ended) = lift(&extra);
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["topic_record"], "none", "{ended}");
    assert_eq!(ended["still_killed_by"], json!([first["id"]]), "{ended}");
    assert_eq!(common::redis_hash(&redis, &key)["level"], "killed");
    let (status, lifted) = lift(&first);
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(lifted["still_killed_by"], json!([]), "{lifted}");
    let h = common::redis_hash(&redis, &key);
    assert_eq!(h["level"], "terminated", "{h:?}");
    assert_eq!(h["reason"], "manual");
    let on_topic = distinct_decisions(&stream, 5);
    let levels: Vec<(&str, &str)> = on_topic
        .iter()
        .map(|d| {
            (
                d["previous"].as_str().unwrap(),
                d["level"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        levels,
        [
            ("ok", "terminated"),
            ("terminated", "killed"),
            ("killed", "killed"),
            ("killed", "killed"),
            ("killed", "terminated")
        ]
    );
    assert!(listed().is_empty());
    // Still a person's to lift: an operator may not.
    let ok = json!({"level": "ok", "reason": "reinstated"});
    let (status, _) = daemon.request(
        "POST",
        "/v1/partners/p-7/enforcement",
        Some(OPERATOR),
        Some(&ok),
    );
    assert_eq!(status, 403);
    assert!(daemon.terminate().success());
}

/// Gives partner `id` (gold) a quota of `monthly` requests and `burst_rps` (block) through
/// the control topic, and waits until the daemon shows it.
fn partner_with_quota(daemon: &Daemon, stream: &Stream, id: &str, monthly: u64, burst_rps: u64) {
    let mut p = common::TestProducer::new(&stream.brokers);
    let partner = json!({"type": "partner", "partner_id": id, "name": id, "tier": "gold",
        "tier_effective_from": "2026-01-01T00:00:00Z"});
    let quota = json!({"type": "quota", "partner_id": id, "monthly_requests": monthly,
        "burst_rps": burst_rps, "overage": "block"});
    for fact in [partner, quota] {
        p.send_sync(&stream.control, Some(id), fact.to_string().as_bytes());
    }
    let shown = common::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let path = format!("/v1/partners/{id}");
        let (status, v) = daemon.request("GET", &path, Some(VIEWER_TOKEN), None);
        status == 200 && v["quota"]["limit"] == monthly && v["quota"]["burst_rps"] == burst_rps
    });
    assert!(shown, "the quota of {id} never showed");
}

/// The partner views show what the gateway enforces, the data-plane key, not the owner's
/// ladder (which never holds a kill or a person's level): a killed partner is listed as
/// killed, first, and under `?level=killed`; and with no key the partner is `ok`
/// (CONTRACT §4), whatever the actor last decided.
#[test]
fn the_partner_views_show_the_level_the_gateway_enforces() {
    let stream = Stream::new("admin-views");
    let redis = common::redis_url();
    let mut daemon = Daemon::start(&config(&stream, &redis, ""));
    daemon.wait_ready(Duration::from_secs(60));
    partner_with_quota(&daemon, &stream, "p-v", 100, 1000);
    send_usage(&stream, "p-v", "v-1", 85);
    let key = format!("{}:enf:partner:p-v", stream.prefix);
    let warned = common::wait_for_level(&redis, &key, "warn", Duration::from_secs(30));
    assert!(warned, "85 of 100 did not warn\n{}", daemon.output());
    let listed_as = |query: &str| -> Vec<(String, String)> {
        let body = daemon.get_json_with_token(&format!("/v1/partners{query}"), Some(VIEWER_TOKEN));
        body["partners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let id = p["partner_id"].as_str().unwrap_or_default().to_owned();
                (
                    id,
                    p["enforcement"]["level"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    };
    let level_of = || {
        daemon.get_json_with_token("/v1/partners/p-v", Some(VIEWER_TOKEN))["enforcement"]["level"]
            .clone()
    };
    let body = json!({"scope": "partner", "target": "p-v", "reason": "credential leak"});
    let (status, created) =
        daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&body));
    assert_eq!(status, 201, "{created}");
    let killed = vec![("p-v".to_owned(), "killed".to_owned())];
    let listed = common::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        listed_as("?level=killed") == killed && listed_as("").first() == killed.first()
    });
    assert!(listed, "not listed as killed: {:?}", listed_as(""));
    assert_eq!(level_of(), "killed");
    let id = created["id"].as_str().unwrap();
    let (status, _) = daemon.request(
        "DELETE",
        &format!("/v1/kill-switches/{id}"),
        Some(SECURITY),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(common::redis_hash(&redis, &key)["level"], "warn");
    // The key goes (as a person's `ok` or a lift to `ok` does): no key means `ok`, though
    // the owner's actor still holds its `warn`.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query(&mut client.get_connection().unwrap())
        .unwrap();
    assert_eq!(level_of(), "ok");
    let ok = vec![("p-v".to_owned(), "ok".to_owned())];
    let listed = common::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        listed_as("?level=ok") == ok && listed_as("?level=warn").is_empty()
    });
    assert!(listed, "not listed as ok: {:?}", listed_as(""));
    assert!(daemon.terminate().success());
}

/// One usage event of `requests` clean requests for `partner`, now, and its ack.
fn send_usage(stream: &Stream, partner: &str, event_id: &str, requests: u64) {
    let usage = json!({"event_id": event_id, "ts": chrono::Utc::now(), "partner_id": partner,
        "integration_id": format!("{partner}-i"), "requests": requests, "errors": 0,
        "auth_failures": 0, "bytes": 0});
    let mut p = common::TestProducer::new(&stream.brokers);
    p.send_sync(&stream.usage, Some(partner), usage.to_string().as_bytes());
}

/// CONTRACT §4: a throttle's `rate_limit_rps` is the quota's `burst_rps` × the throttle
/// factor, a person's throttle too: the partner's quota fact (80 × 0.5 here), else its
/// tier's.
#[test]
fn a_manual_throttle_carries_the_partners_rate_limit() {
    let stream = Stream::new("admin-manual-throttle");
    let redis = common::redis_url();
    let mut daemon = Daemon::start(&config(&stream, &redis, ""));
    daemon.wait_ready(Duration::from_secs(60));
    partner_with_quota(&daemon, &stream, "p-q", 1000, 80);
    let throttle = json!({"level": "throttle", "reason": "abuse report"});
    // A partner the control topic does not know has the default tier's quota.
    let policy = warden::domain::enforcement::EnforcementPolicy::default();
    let default_rps = (policy.tiers["default"].burst_rps as f64 * policy.throttle_factor) as u64;
    let default_rps = default_rps.to_string();
    for (target, expected) in [("p-q", "40"), ("p-unknown", default_rps.as_str())] {
        let (status, body) = daemon.request(
            "POST",
            &format!("/v1/partners/{target}/enforcement"),
            Some(OPERATOR),
            Some(&throttle),
        );
        assert_eq!(status, 200, "{body}");
        let h = common::redis_hash(&redis, &format!("{}:enf:partner:{target}", stream.prefix));
        assert_eq!(h["level"], "throttle");
        assert_eq!(h["rate_limit_rps"], expected, "{target}");
    }
    let on_topic = distinct_decisions(&stream, 2);
    let q = on_topic.iter().find(|d| d["id"] == "p-q").unwrap();
    assert_eq!(q["rate_limit_rps"], 40);
    assert!(daemon.terminate().success());
}

/// An operator's manual level holds against the partner's owner: a quota throttle decided
/// after it is milder than the operator's `suspend`, so it is refused (and noted for a kill
/// switch's lift), and the data plane keeps the operator's level.
#[test]
fn a_manual_suspend_is_not_ended_by_a_milder_quota_decision() {
    let stream = Stream::new("admin-manual-hold");
    let redis = common::redis_url();
    let mut daemon = Daemon::start(&config(&stream, &redis, ""));
    daemon.wait_ready(Duration::from_secs(60));
    partner_with_quota(&daemon, &stream, "p-mh", 100, 1000);
    let suspend = json!({"level": "suspend", "reason": "fraud review"});
    let (status, body) = daemon.request(
        "POST",
        "/v1/partners/p-mh/enforcement",
        Some(OPERATOR),
        Some(&suspend),
    );
    assert_eq!(status, 200, "{body}");
    // 110 of 100: the owner throttles (block).
    send_usage(&stream, "p-mh", "mh-1", 110);
    let base = format!("{}:enfbase:partner:p-mh", stream.prefix);
    let decided = common::wait_for_level(&redis, &base, "throttle", Duration::from_secs(30));
    assert!(decided, "the owner's throttle was never published");
    let h = common::redis_hash(&redis, &format!("{}:enf:partner:p-mh", stream.prefix));
    assert_eq!(
        (h["level"].as_str(), h["reason"].as_str()),
        ("suspend", "manual"),
        "{h:?}"
    );
    assert!(daemon.terminate().success());
}

/// Requests with no token are audited one by one up to a rate per peer; a flood past it
/// is counted and audited as one summary per peer (written at the latest when the daemon
/// stops), so anyone who can reach the port cannot grow the audit chain without limit.
#[test]
fn a_flood_of_unauthenticated_requests_is_audited_in_a_bounded_number_of_records() {
    let stream = Stream::new("admin-refusal-flood");
    let redis = common::redis_url();
    let cfg = config(&stream, &redis, "");
    let mut daemon = Daemon::start(&cfg);
    daemon.wait_ready(Duration::from_secs(60));
    const FLOOD: usize = 300;
    for _ in 0..FLOOD {
        let (status, _) = daemon.request("GET", "/v1/audit?after_seq=0", None, None);
        assert_eq!(status, 401);
    }
    let summarized = common::group::metric(&daemon, "warden_admin_refusals_summarized_total");
    let one_by_one = audit_records(&daemon)
        .iter()
        .filter(|r| r["action"] == "audit.read.refused")
        .count();
    assert!(summarized > 0.0, "the flood was not summarized");
    assert_eq!(
        one_by_one + summarized as usize,
        FLOOD,
        "every refusal is accounted for"
    );
    assert!(
        one_by_one < FLOOD / 2,
        "{one_by_one} records for {FLOOD} refusals"
    );
    // From the same peer, past its budget: a token holder's refused attempts are budgeted
    // by their token, so they are still audited one by one, naming the token and the
    // action (the peer's summary would hide them).
    // Past the token's own budget, they are counted for the token's summary.
    const TRIES: usize = 70;
    let kill = json!({"scope": "partner", "target": "p-1", "reason": "x"});
    for _ in 0..TRIES {
        let (status, _) = daemon.request("POST", "/v1/kill-switches", Some(OPERATOR), Some(&kill));
        assert_eq!(status, 403);
    }
    let attempts = audit_records(&daemon)
        .into_iter()
        .filter(|r| r["action"] == "kill_switch.create.refused" && r["actor"] == "operator")
        .count();
    assert!(
        (60..TRIES).contains(&attempts),
        "the operator's first attempts are each audited: {attempts}"
    );
    let summarized_tries =
        common::group::metric(&daemon, "warden_admin_refusals_summarized_total") - summarized;
    assert_eq!(attempts + summarized_tries as usize, TRIES);
    assert!(daemon.terminate().success());
    let mut daemon = Daemon::start(&cfg);
    daemon.wait_ready(Duration::from_secs(60));
    let summaries: Vec<Value> = audit_records(&daemon)
        .into_iter()
        .filter(|r| r["action"] == "admin.refused.summary")
        .collect();
    // One per source, or two if the minute's round came during the flood.
    let of = |target: &str| -> Vec<&Value> {
        summaries.iter().filter(|r| r["target"] == target).collect()
    };
    let by_peer = of("peer:127.0.0.1");
    let by_token = of("token:operator");
    assert_eq!(
        by_peer.len() + by_token.len(),
        summaries.len(),
        "{summaries:?}"
    );
    let in_summaries: u64 = by_peer
        .iter()
        .map(|r| r["detail"]["refused"].as_u64().unwrap())
        .sum();
    assert_eq!(in_summaries, summarized as u64);
    let tried: u64 = by_token
        .iter()
        .map(|r| {
            assert_eq!(r["actor"], "operator");
            r["detail"]["actions"]["kill_switch.create"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(tried as usize, TRIES - attempts);
    assert!(daemon.terminate().success());
}

/// A partner its quota throttles stays throttled through a kill switch: the lift puts back
/// the level the owner decided (it believes it in force and would not decide it again),
/// and a person cannot set a level below it by hand either (CONTRACT §3: quota decisions
/// are immediate).
#[test]
fn a_kill_switch_lift_puts_back_the_quota_throttle_and_a_manual_ok_cannot_lift_it() {
    let stream = Stream::new("admin-kill-quota");
    let redis = common::redis_url();
    let mut daemon = Daemon::start(&config(&stream, &redis, ""));
    daemon.wait_ready(Duration::from_secs(60));
    partner_with_quota(&daemon, &stream, "p-qk", 100, 1000);
    // 110 of 100: throttled (block), not past the hard ceiling.
    send_usage(&stream, "p-qk", "qk-1", 110);
    let key = format!("{}:enf:partner:p-qk", stream.prefix);
    let level = || common::redis_hash(&redis, &key).get("level").cloned();
    assert!(common::wait_for_level(
        &redis,
        &key,
        "throttle",
        Duration::from_secs(30)
    ));
    let kill = json!({"scope": "partner", "target": "p-qk", "reason": "leak", "ttl_seconds": 1});
    let (status, created) =
        daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&kill));
    assert_eq!(status, 201, "{created}");
    assert!(common::wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || level().as_deref() != Some("killed")
    ));
    let h = common::redis_hash(&redis, &key);
    assert_eq!(
        (
            h["level"].as_str(),
            h["reason"].as_str(),
            h["rate_limit_rps"].as_str()
        ),
        ("throttle", "quota_exceeded", "500"),
        "{h:?}"
    );
    let on_topic = distinct_decisions(&stream, 3);
    let moves: Vec<(&str, &str, &str)> = on_topic
        .iter()
        .map(|d| {
            (
                d["previous"].as_str().unwrap(),
                d["level"].as_str().unwrap(),
                d["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("ok", "throttle", "quota_exceeded"),
            ("throttle", "killed", "kill_switch"),
            ("killed", "throttle", "quota_exceeded")
        ]
    );
    let ok = json!({"level": "ok", "reason": "customer asked"});
    let (status, body) = daemon.request(
        "POST",
        "/v1/partners/p-qk/enforcement",
        Some(OPERATOR),
        Some(&ok),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(level().as_deref(), Some("throttle"));
    // Above it is a person's to set.
    let suspend = json!({"level": "suspend", "reason": "abuse"});
    let (status, body) = daemon.request(
        "POST",
        "/v1/partners/p-qk/enforcement",
        Some(OPERATOR),
        Some(&suspend),
    );
    assert_eq!(status, 200, "{body}");
    assert!(daemon.terminate().success());
}

/// The distinct decisions on the enforcement topic (a consumer keeps the first record of
/// each id), once at least `at_least` are there. Every copy of an id must be the same.
fn distinct_decisions(stream: &Stream, at_least: usize) -> Vec<Value> {
    let mut distinct: Vec<Value> = Vec::new();
    common::wait_until(Duration::from_secs(90), Duration::from_millis(200), || {
        distinct.clear();
        let records = common::consume_all(
            &stream.brokers,
            &stream.enforcement,
            usize::MAX,
            Duration::from_secs(2),
        );
        for (_, _, _, payload) in records {
            let v: Value = serde_json::from_slice(&payload).unwrap();
            match distinct
                .iter()
                .find(|d| d["decision_id"] == v["decision_id"])
            {
                Some(first) => assert_eq!(first, &v, "one decision id with two contents"),
                None => distinct.push(v),
            }
        }
        distinct.len() >= at_least
    });
    distinct
}

/// The broker down when security sets or lifts a switch: the data plane and the registry
/// change at once and together (a kill the registry did not know could never be listed,
/// lifted or expire), and each decision's record reaches the topic once the broker is
/// back, in seq order and with one content per id. Sends time out after 2 s here, so the
/// outage outlasts several failed sends, and a TTL switch expires during it.
#[test]
fn a_kill_switch_set_and_lifted_while_the_broker_is_down_takes_effect_and_its_records_follow() {
    let redis = common::redis_url();
    let mut broker = common::TansuServer::start_new();
    let stream = Stream::on("admin-kill-down", &broker.brokers());
    let short_sends = "[kafka.properties]\n\"message.timeout.ms\" = \"2000\"\n";
    let mut daemon = Daemon::start(&config(&stream, &redis, short_sends));
    daemon.wait_ready(Duration::from_secs(60));
    let key = format!("{}:enf:partner:p-7", stream.prefix);
    let registry = format!("{}:killswitches", stream.prefix);
    let listed = |daemon: &Daemon| {
        daemon.get_json_with_token("/v1/kill-switches", Some(VIEWER_TOKEN))["kill_switches"]
            .as_array()
            .unwrap()
            .clone()
    };

    broker.stop();
    let body = json!({"scope": "partner", "target": "p-7", "reason": "credential leak"});
    let (status, created) =
        daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&body));
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["topic_record"], "pending");
    assert_eq!(common::redis_hash(&redis, &key)["level"], "killed");
    let id = created["id"].as_str().unwrap().to_owned();
    let active = listed(&daemon);
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(active[0]["id"], id.as_str());
    assert_eq!(active[0]["seq"], created["seq"]);
    // A TTL switch that expires before the broker is back.
    let brief = json!({"scope": "partner", "target": "p-8", "reason": "storm", "ttl_seconds": 1});
    let (status, expiring) =
        daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&brief));
    assert_eq!(status, 201, "{expiring}");
    let p8 = format!("{}:enf:partner:p-8", stream.prefix);
    let expired = common::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        common::redis_hash(&redis, &p8).is_empty()
    });
    assert!(
        expired,
        "the TTL lifts the data plane while the broker is down"
    );
    std::thread::sleep(Duration::from_secs(6));

    broker.start();
    let on_topic = distinct_decisions(&stream, 3);
    assert_eq!(on_topic.len(), 3, "{on_topic:?}");
    let of = |target: &str| -> Vec<Value> {
        on_topic
            .iter()
            .filter(|d| d["id"] == target)
            .cloned()
            .collect()
    };
    let p7 = of("p-7");
    assert_eq!(p7.len(), 1, "{p7:?}");
    assert_eq!(p7[0]["level"], "killed");
    assert_eq!(
        p7[0]["decision_id"],
        format!("partner:p-7:{}", created["seq"])
    );
    assert_eq!(p7[0]["decided_at"], created["created_at"]);
    assert_eq!(p7[0]["previous"], "ok");
    // The expired switch's `killed` record is not lost to its lift, and comes first.
    let p8_records = of("p-8");
    let levels: Vec<&str> = p8_records
        .iter()
        .map(|d| d["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["killed", "ok"], "{p8_records:?}");
    assert_eq!(p8_records[0]["seq"], expiring["seq"]);
    let p8_gone = common::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        !common::redis_hash(&redis, &registry).contains_key(expiring["id"].as_str().unwrap())
    });
    assert!(
        p8_gone,
        "the expired switch leaves the registry once both records are out"
    );

    broker.stop();
    let (status, lifted) = daemon.request(
        "DELETE",
        &format!("/v1/kill-switches/{id}"),
        Some(SECURITY),
        None,
    );
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(lifted["topic_record"], "pending");
    assert!(
        common::redis_hash(&redis, &key).is_empty(),
        "lifted at once"
    );
    assert!(listed(&daemon).is_empty(), "a lifted switch is not active");
    // Kept, with the lift's time, until the lift's record is acknowledged.
    let kept = common::redis_hash(&redis, &registry);
    let kept: Value = serde_json::from_str(&kept[&id]).unwrap();
    assert!(kept["lifted_at"].is_string(), "{kept}");

    broker.start();
    let on_topic = distinct_decisions(&stream, 4);
    assert_eq!(on_topic.len(), 4, "{on_topic:?}");
    let p7: Vec<&Value> = on_topic.iter().filter(|d| d["id"] == "p-7").collect();
    assert_eq!(p7.len(), 2, "{p7:?}");
    assert_eq!(p7[1]["level"], "ok");
    assert_eq!(p7[1]["previous"], "killed");
    assert_eq!(p7[1]["decided_at"], kept["lifted_at"]);
    assert_eq!(p7[1]["seq"], kept["lift_seq"]);
    let gone = common::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        common::redis_hash(&redis, &registry).is_empty()
    });
    assert!(gone, "the lift is finished once its record is acknowledged");
    assert!(daemon.terminate().success());
}

/// A manual level set while the broker is down takes effect at once, and its record is
/// not lost with the request, nor with the process: the daemon is killed before the
/// broker is back, and the next one sends the record, with the seq the request answered.
/// With the broker up, the record is acknowledged within the request.
#[test]
fn a_manual_level_set_while_the_broker_is_down_has_its_record_sent_after_a_crash() {
    let redis = common::redis_url();
    let mut broker = common::TansuServer::start_new();
    let stream = Stream::on("admin-manual-down", &broker.brokers());
    let short_sends = "[kafka.properties]\n\"message.timeout.ms\" = \"2000\"\n";
    let cfg = config(&stream, &redis, short_sends);
    let mut daemon = Daemon::start(&cfg);
    daemon.wait_ready(Duration::from_secs(60));
    let key = format!("{}:enf:partner:p-5", stream.prefix);
    let pending = format!("{}:enfpending", stream.prefix);

    broker.stop();
    let throttle = json!({"level": "throttle", "reason": "abuse report"});
    let (status, set) = daemon.request(
        "POST",
        "/v1/partners/p-5/enforcement",
        Some(OPERATOR),
        Some(&throttle),
    );
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["topic_record"], "pending");
    let h = common::redis_hash(&redis, &key);
    assert_eq!(h["level"], "throttle", "in force at once");
    assert_eq!(h["seq"], set["seq"].to_string());
    assert_eq!(common::redis_hash(&redis, &pending).len(), 1);
    std::thread::sleep(Duration::from_secs(3));
    daemon.kill9();

    broker.start();
    let mut daemon = Daemon::start(&cfg);
    daemon.wait_ready(Duration::from_secs(60));
    let on_topic = distinct_decisions(&stream, 1);
    assert_eq!(on_topic.len(), 1, "{on_topic:?}");
    let record = &on_topic[0];
    assert_eq!(record["decision_id"], format!("partner:p-5:{}", set["seq"]));
    assert_eq!(record["level"], "throttle");
    assert_eq!(record["previous"], "ok");
    assert_eq!(record["reason"], "manual");
    assert_eq!(record["decided_at"], h["since"].as_str());
    assert_eq!(
        (&record["scope"], &record["id"], &record["partner_id"]),
        (&json!("partner"), &json!("p-5"), &json!("p-5"))
    );
    // A throttle's rate, the same on the key and the record (CONTRACT §4).
    assert!(record["rate_limit_rps"].as_u64().is_some(), "{record}");
    assert_eq!(record["rate_limit_rps"].to_string(), h["rate_limit_rps"]);
    let forgotten = common::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        common::redis_hash(&redis, &pending).is_empty()
    });
    assert!(forgotten, "an acknowledged record leaves the pending ones");

    // Broker up: acknowledged within the request, nothing left pending.
    let ok = json!({"level": "ok", "reason": "resolved"});
    let (status, lifted) = daemon.request(
        "POST",
        "/v1/partners/p-5/enforcement",
        Some(OPERATOR),
        Some(&ok),
    );
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(lifted["topic_record"], "acknowledged");
    assert!(common::redis_hash(&redis, &key).is_empty());
    assert!(common::redis_hash(&redis, &pending).is_empty());
    let on_topic = distinct_decisions(&stream, 2);
    assert_eq!(on_topic.len(), 2, "{on_topic:?}");
    assert_eq!(on_topic[1]["level"], "ok");
    assert_eq!(on_topic[1]["seq"], lifted["seq"]);
    assert!(daemon.terminate().success());
}

#[test]
fn authorization_matrix_with_no_side_effect_on_refusal_and_every_attempt_audited() {
    let stream = Stream::new("admin-authz");
    let redis = common::redis_url();
    let mut daemon = Daemon::start(&config(&stream, &redis, ""));
    daemon.wait_ready(Duration::from_secs(60));
    let kill = json!({"scope": "partner", "target": "p-1", "reason": "x"});
    let manual = json!({"level": "throttle", "reason": "abuse report"});
    let terminate = json!({"level": "terminated", "reason": "contract ended"});
    let callers: [(&str, Option<&str>); 6] = [
        ("none", None),
        ("bad", Some("not-a-real-token")),
        ("viewer", Some(VIEWER_TOKEN)),
        ("operator", Some(OPERATOR)),
        ("finance", Some(FINANCE)),
        ("security", Some(SECURITY)),
    ];
    // (caller, method, path, body) → expected status
    let mut refused = 0;
    for (who, token) in callers {
        let expect_kill = match who {
            "none" | "bad" => 401,
            "security" => 201,
            _ => 403,
        };
        let (status, body) = daemon.request("POST", "/v1/kill-switches", token, Some(&kill));
        assert_eq!(status, expect_kill, "{who} POST /v1/kill-switches: {body}");
        if status == 201 {
            let id = body["id"].as_str().unwrap().to_owned();
            // Nobody else may lift it.
            for (other, t) in callers.iter().filter(|(w, _)| *w != "security") {
                let (s, _) = daemon.request("DELETE", &format!("/v1/kill-switches/{id}"), *t, None);
                let want = if matches!(*other, "none" | "bad") {
                    401
                } else {
                    403
                };
                assert_eq!(s, want, "{other} DELETE");
                refused += 1;
            }
            let (s, _) = daemon.request("DELETE", &format!("/v1/kill-switches/{id}"), token, None);
            assert_eq!(s, 200);
        } else {
            refused += 1;
            let listed = daemon.get_json_with_token("/v1/kill-switches", Some(VIEWER_TOKEN));
            assert!(
                listed["kill_switches"].as_array().unwrap().is_empty(),
                "refusal had a side effect"
            );
        }
        let expect_manual = match who {
            "none" | "bad" => 401,
            "operator" | "security" => 200,
            _ => 403,
        };
        let (status, body) =
            daemon.request("POST", "/v1/partners/p-2/enforcement", token, Some(&manual));
        assert_eq!(status, expect_manual, "{who} POST enforcement: {body}");
        if status != 200 {
            refused += 1;
        }
        let expect_terminate = match who {
            "none" | "bad" => 401,
            "security" => 200,
            _ => 403,
        };
        let (status, body) = daemon.request(
            "POST",
            "/v1/partners/p-3/enforcement",
            token,
            Some(&terminate),
        );
        assert_eq!(status, expect_terminate, "{who} terminate: {body}");
        if status != 200 {
            refused += 1;
            let h = common::redis_hash(&redis, &format!("{}:enf:partner:p-3", stream.prefix));
            assert!(
                h.is_empty() || who == "operator",
                "a refused terminate changed the key: {h:?}"
            );
        }
    }
    // An operator cannot lift a termination either.
    let (status, _) = daemon.request(
        "POST",
        "/v1/partners/p-3/enforcement",
        Some(OPERATOR),
        Some(&json!({"level": "ok", "reason": "x"})),
    );
    assert_eq!(status, 403);
    refused += 1;
    assert_eq!(
        common::redis_hash(&redis, &format!("{}:enf:partner:p-3", stream.prefix))["level"],
        "terminated"
    );
    // A bad query from a caller without a token is a 401 (audited), not a 400.
    let (status, _) = daemon.request("GET", "/v1/audit?after_seq=x", None, None);
    assert_eq!(status, 401);
    refused += 1;
    let (status, _) = daemon.request("GET", "/v1/audit?after_seq=x", Some(SECURITY), None);
    assert_eq!(status, 400);
    // Bad switches and levels are refused before anything is audited or written: a TTL of
    // 0 or past ten years (it used to be capped silently, the audit keeping the uncapped
    // value), and ids longer than the contract's 128 characters.
    let long = "p".repeat(129);
    for bad in [
        json!({"scope": "partner", "target": "p-9", "reason": "x", "ttl_seconds": 0}),
        json!({"scope": "partner", "target": "p-9", "reason": "x", "ttl_seconds": 400_000_000u64}),
        json!({"scope": "partner", "target": long, "reason": "x"}),
    ] {
        let (status, body) =
            daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&bad));
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = daemon.request(
        "POST",
        &format!("/v1/partners/{long}/enforcement"),
        Some(SECURITY),
        Some(&json!({"level": "suspend", "reason": "x"})),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = daemon.request(
        "POST",
        &format!("/v1/partners/{}/enforcement", "é".repeat(128)),
        Some(SECURITY),
        Some(&json!({"level": "warn", "reason": "x"})),
    );
    assert_eq!(status, 200, "128 characters, not bytes: {body}");

    let records = audit_records(&daemon);
    let refusals = records
        .iter()
        .filter(|r| r["action"].as_str().unwrap().ends_with(".refused"))
        .count();
    assert_eq!(refusals, refused, "every refused attempt is audited once");
    let kills = records
        .iter()
        .filter(|r| r["action"] == "kill_switch.create")
        .count();
    assert_eq!(kills, 1);
    assert!(daemon.terminate().success());
}

#[test]
fn audit_verify_names_an_edited_record() {
    let stream = Stream::new("admin-audit");
    let redis = common::redis_url();
    let cfg = config(&stream, &redis, "");
    let mut daemon = Daemon::start(&cfg);
    daemon.wait_ready(Duration::from_secs(60));
    for i in 0..5 {
        let body = json!({"scope": "tenant", "target": format!("t-{i}"), "reason": "test"});
        let (status, _) = daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&body));
        assert_eq!(status, 201);
    }
    // The chain is copied to the audit topic, every record once, and it verifies there too:
    // each switch's create, and its follow-up with what it changed.
    let mut on_topic: Vec<warden::domain::audit::AuditRecord> = Vec::new();
    let copied = common::wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        on_topic = common::consume_all(&stream.brokers, &stream.audit, 10, Duration::from_secs(2))
            .iter()
            .map(|r| serde_json::from_slice(&r.3).unwrap())
            .collect();
        on_topic.len() >= 10
    });
    assert!(copied, "audit topic has {} records", on_topic.len());
    on_topic.sort_by_key(|r| r.seq);
    on_topic.dedup_by_key(|r| r.seq);
    assert_eq!(
        on_topic.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    let applied = on_topic[1].entry();
    assert_eq!(applied.action, "kill_switch.create.applied");
    assert_eq!(
        (&applied.detail["from"], &applied.detail["to"]),
        (&json!("ok"), &json!("killed"))
    );
    assert_eq!(warden::domain::audit::verify(&on_topic), Ok(10));
    assert!(daemon.terminate().success());
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["audit", "verify", "--config"])
            .arg(daemon.config_path())
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("10 records"));

    // Edit record 3 in the store.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:{{audit}}:*", stream.prefix))
        .query(&mut conn)
        .unwrap();
    let log_key = keys
        .iter()
        .find(|k| k.ends_with(":log"))
        .expect("audit log key")
        .clone();
    let kind: String = redis::cmd("TYPE").arg(&log_key).query(&mut conn).unwrap();
    verify_after_edit(&mut conn, &log_key, &kind, 3);
    let out = verify();
    assert!(
        !out.status.success(),
        "an edited record must fail verification"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("audit record 3 "),
        "verify must name record 3: {err}"
    );
}

/// Rewrites record `seq`'s detail inside the stored log, whatever structure holds it.
fn verify_after_edit(conn: &mut redis::Connection, key: &str, kind: &str, seq: u64) {
    match kind {
        "list" => {
            let raw: String = redis::cmd("LINDEX")
                .arg(key)
                .arg(seq as i64 - 1)
                .query(conn)
                .unwrap();
            let edited = raw.replacen("\"reason\":\"test\"", "\"reason\":\"edited\"", 1);
            assert_ne!(raw, edited, "record shape changed: {raw}");
            let _: () = redis::cmd("LSET")
                .arg(key)
                .arg(seq as i64 - 1)
                .arg(&edited)
                .query(conn)
                .unwrap();
        }
        "zset" => {
            let raw: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg(seq)
                .arg(seq)
                .query(conn)
                .unwrap();
            let edited = raw[0].replacen("\"reason\":\"test\"", "\"reason\":\"edited\"", 1);
            assert_ne!(raw[0], edited, "record shape changed: {}", raw[0]);
            let _: () = redis::cmd("ZREM")
                .arg(key)
                .arg(&raw[0])
                .query(conn)
                .unwrap();
            let _: () = redis::cmd("ZADD")
                .arg(key)
                .arg(seq)
                .arg(&edited)
                .query(conn)
                .unwrap();
        }
        "hash" => {
            let raw: String = redis::cmd("HGET").arg(key).arg(seq).query(conn).unwrap();
            let edited = raw.replacen("\"reason\":\"test\"", "\"reason\":\"edited\"", 1);
            assert_ne!(raw, edited, "record shape changed: {raw}");
            let _: () = redis::cmd("HSET")
                .arg(key)
                .arg(seq)
                .arg(&edited)
                .query(conn)
                .unwrap();
        }
        other => panic!("unexpected audit log type {other}"),
    }
}

#[test]
fn bodies_are_capped_and_tokens_rate_limited() {
    let stream = Stream::new("admin-abuse");
    let redis = common::redis_url();
    let extra_admin = "";
    let cfg = config(&stream, &redis, extra_admin).replace(
        "[admin]\n",
        "[admin]\nbody_limit_bytes = 1024\nrate_limit_per_second = 1\nrate_limit_burst = 20\n",
    );
    let mut daemon = Daemon::start(&cfg);
    daemon.wait_ready(Duration::from_secs(60));
    let big = json!({"scope": "partner", "target": "p-1", "reason": "x".repeat(4096)});
    let (status, _) = daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&big));
    assert_eq!(status, 413);
    let listed = daemon.get_json_with_token("/v1/kill-switches", Some(SECURITY));
    assert!(listed["kill_switches"].as_array().unwrap().is_empty());
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(
            daemon
                .request("GET", "/v1/kill-switches", Some(VIEWER_TOKEN), None)
                .0,
        );
    }
    assert!(
        statuses.contains(&429),
        "a burst past the limit must get 429: {statuses:?}"
    );
    // Past its rate, a wrong-role attempt is still a 403 and audited (one by one or in
    // the token's summary): never a 429 that no record shows.
    let summarized = common::group::metric(&daemon, "warden_admin_refusals_summarized_total");
    let kill = json!({"scope": "partner", "target": "p-1", "reason": "x"});
    for _ in 0..5 {
        let (status, _) =
            daemon.request("POST", "/v1/kill-switches", Some(VIEWER_TOKEN), Some(&kill));
        assert_eq!(status, 403);
    }
    let audited = audit_records(&daemon)
        .into_iter()
        .filter(|r| r["action"] == "kill_switch.create.refused" && r["actor"] == "test-viewer")
        .count();
    let summarized =
        common::group::metric(&daemon, "warden_admin_refusals_summarized_total") - summarized;
    assert_eq!(audited + summarized as usize, 5);
    // Another token is not affected by the viewer's burst.
    let (status, _) = daemon.request("GET", "/v1/kill-switches", Some(OPERATOR), None);
    assert_eq!(status, 200);
    assert!(daemon.terminate().success());
}

/// Fail closed: with the store (and so the audit log) unreachable, a kill switch is
/// refused with 503 and nothing is executed.
#[test]
fn a_kill_switch_that_cannot_be_audited_is_not_executed() {
    let stream = Stream::new("admin-closed");
    let mut redis = common::RedisServer::start_new();
    let url = redis.url();
    let mut daemon = Daemon::start(&config(&stream, &url, ""));
    daemon.wait_ready(Duration::from_secs(60));
    redis.stop();
    let body = json!({"scope": "partner", "target": "p-5", "reason": "leak"});
    let (status, answer) = daemon.request("POST", "/v1/kill-switches", Some(SECURITY), Some(&body));
    assert_eq!(status, 503, "{answer}");
    redis.start();
    assert!(common::redis_hash(&url, &format!("{}:enf:partner:p-5", stream.prefix)).is_empty());
    // Once the store answers again (the client reconnects with backoff):
    let mut listed = Value::Null;
    let back = common::wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let (status, body) = daemon.request("GET", "/v1/kill-switches", Some(VIEWER_TOKEN), None);
        listed = body;
        status == 200
    });
    assert!(back, "store did not come back: {listed}");
    assert!(
        listed["kill_switches"].as_array().unwrap().is_empty(),
        "{listed}"
    );
    // Watermarks, not a read that a slow reader would also find empty.
    assert_eq!(
        common::topic_record_count(&stream.brokers, &stream.enforcement),
        0,
        "no decision may be published"
    );
    assert!(daemon.terminate().success());
}

/// The CLI for people (`warden kill`, `status`, `unkill`) goes through the admin API with
/// the token from the environment.
#[test]
fn the_people_cli_kills_reports_and_lifts() {
    let stream = Stream::new("admin-cli");
    let redis = common::redis_url();
    let mut producer = common::TestProducer::new(&stream.brokers);
    let event = json!({"event_id": "e1", "ts": chrono::Utc::now(), "partner_id": "p-7", "integration_id": "i", "requests": 3, "errors": 0});
    producer.send(&stream.usage, Some("p-7"), event.to_string().as_bytes());
    producer.flush();
    let mut daemon = Daemon::start(&config(&stream, &redis, ""));
    daemon.wait_ready(Duration::from_secs(60));
    let cli = |args: &[&str], token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(args)
            .env("WARDEN_URL", daemon.base_url())
            .env("WARDEN_TOKEN", token)
            .output()
            .unwrap()
    };
    let out = cli(
        &[
            "kill",
            "--scope",
            "partner",
            "--target",
            "p-7",
            "--reason",
            "runaway integration",
        ],
        SECURITY,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        common::redis_hash(&redis, &format!("{}:enf:partner:p-7", stream.prefix))["level"],
        "killed"
    );
    // A viewer's token cannot kill: the CLI reports the refusal and exits non-zero.
    let refused = cli(
        &[
            "kill", "--scope", "partner", "--target", "p-8", "--reason", "x",
        ],
        VIEWER_TOKEN,
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("403"));
    let known = common::wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        cli(&["status", "p-7"], VIEWER_TOKEN).status.success()
    });
    assert!(known, "warden status p-7 never answered");
    let status = cli(&["status", "p-7"], VIEWER_TOKEN);
    let view: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(view["usage"]["requests"], 3);
    assert_eq!(
        view["enforcement"]["level"], "killed",
        "the partner view shows the kill: {view}"
    );
    let out = cli(&["unkill", &id], SECURITY);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(common::redis_hash(&redis, &format!("{}:enf:partner:p-7", stream.prefix)).is_empty());
    assert!(daemon.terminate().success());
}
