//! The fault-injection suite (issue: reliability, acceptance 1–7): real warden processes,
//! the real broker and real Redis on loopback, one fault each, and every partner's durable
//! totals compared with the ground truth of the generator that produced the events
//! (`warden::loadgen`), never with the daemon's own figures.
//!
//! Size: `WARDEN_FAULT_EVENTS` events per scenario, 100,000 by default (what CI runs). The
//! full suite is `WARDEN_FAULT_EVENTS=1000000 scripts/test --release --test faults`
//! (README, "Faults"). `WARDEN_FAULT_OUTAGE_SECS` sets the Redis outage (default 30).
//!
//! Each scenario prints one `fault-report:` line (events, rates, duplicates, fenced
//! writes) that the README quotes; timings are reported, never asserted.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::durable::{assert_totals_exact, durable_totals, total_events};
use common::group::{metric, restart_until_assigned, settles, wait_assigned};
use common::stream::{Stream, VIEWER_TOKEN};
use common::{wait_until, Daemon, RedisServer, TansuServer, TestProducer};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use warden::loadgen::{
    Generator, GroundTruth, LoadSpec, Record, Stream as LoadStream, Tally, UsageTruth,
};

fn events() -> usize {
    std::env::var("WARDEN_FAULT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Usage traffic over `partners`, a few misbehaving (so the ladder decides), with re-sent
/// ids, and `malformed` of the records broken on purpose. Event time starts far enough in
/// the past that no record is ahead of its broker timestamp.
fn spec(seed: u64, partners: usize, malformed: f64) -> LoadSpec {
    let step = chrono::Duration::milliseconds(1);
    LoadSpec {
        partners,
        skew: 0.8,
        misbehaving: 0.05,
        invoice_fraction: 0.0,
        control_fraction: 0.0,
        malformed,
        duplicates: 0.01,
        seed,
        start_ts: chrono::Utc::now() - step * (events() as i32) - chrono::Duration::hours(1),
        event_step: step,
    }
}

/// What a scenario produces and what the daemon must end up with.
struct Load {
    records: Vec<Record>,
    truth: HashMap<String, UsageTruth>,
    malformed: u64,
}

fn generate(spec: LoadSpec) -> Load {
    let records: Vec<Record> = Generator::new(spec).take(events()).collect();
    let (mut truth, mut tally) = (GroundTruth::default(), Tally::default());
    for r in &records {
        truth.observe(r);
        tally.observe(r);
    }
    Load {
        records,
        truth: truth.0.into_iter().collect(),
        malformed: tally.malformed,
    }
}

/// Produces the records on a thread of its own (the stream flows while faults happen).
fn produce(brokers: &str, stream: &Stream, records: Vec<Record>) -> thread::JoinHandle<()> {
    produce_paced(
        brokers,
        stream,
        records,
        0,
        Arc::new(AtomicU8::new(pace::FULL)),
    )
}

/// How [`produce_paced`] sends the records past its `trickle_from`.
mod pace {
    /// One every 10 ms.
    pub const TRICKLE: u8 = 0;
    /// None, until told otherwise.
    pub const HOLD: u8 = 1;
    /// As fast as the broker takes them.
    pub const FULL: u8 = 2;
}

/// As [`produce`], but the records from `trickle_from` on are sent as `flow` says (one of
/// [`pace`]'s values, which the scenario changes as it goes): the stream keeps flowing, or
/// stops, for as long as a scenario needs it to.
fn produce_paced(
    brokers: &str,
    stream: &Stream,
    records: Vec<Record>,
    trickle_from: usize,
    flow: Arc<AtomicU8>,
) -> thread::JoinHandle<()> {
    let (brokers, usage, invoices) = (
        brokers.to_owned(),
        stream.usage.clone(),
        stream.invoices.clone(),
    );
    thread::spawn(move || {
        let mut p = TestProducer::new(&brokers);
        for (i, r) in records.iter().enumerate() {
            let topic = match r.stream {
                LoadStream::Usage => &usage,
                LoadStream::Invoices => &invoices,
                LoadStream::Control => continue,
            };
            while i >= trickle_from && flow.load(Ordering::SeqCst) == pace::HOLD {
                thread::sleep(Duration::from_millis(10));
            }
            p.send(topic, r.key.as_deref(), &r.payload);
            let trickling = i >= trickle_from && flow.load(Ordering::SeqCst) == pace::TRICKLE;
            if i % 20_000 == 19_999 || trickling {
                p.flush();
            }
            if trickling {
                thread::sleep(Duration::from_millis(10));
            }
        }
        p.flush();
    })
}

fn durable(redis: &str, stream: &Stream) -> u64 {
    total_events(&durable_totals(redis, &stream.prefix))
}

/// Waits until `fraction` of the truth's events are durable.
fn wait_progress(redis: &str, stream: &Stream, truth: &HashMap<String, UsageTruth>, fraction: f64) {
    let total: u64 = truth.values().map(|t| t.events).sum();
    let floor = (total as f64 * fraction) as u64;
    let ok = wait_until(Duration::from_secs(600), Duration::from_millis(200), || {
        durable(redis, stream) >= floor
    });
    assert!(ok, "durable events never reached {floor} of {total}");
}

fn report(scenario: &str, fields: &[(&str, String)]) {
    let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!(
        "fault-report: {scenario} events={} {}",
        events(),
        fields.join(" ")
    );
}

/// Every record of the enforcement topic by decision id. Panics if an id was published
/// with two different contents (CONTRACT §4); returns (distinct ids, repeated records).
fn decisions_by_id(brokers: &str, topic: &str) -> (usize, usize) {
    let n = common::topic_record_count(brokers, topic).max(0) as usize;
    let records = common::consume_all(brokers, topic, n, Duration::from_secs(60));
    assert_eq!(records.len(), n, "enforcement topic not read whole");
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    let mut repeats = 0;
    for (_, _, _, payload) in &records {
        let v: Value = serde_json::from_slice(payload).expect("a decision is JSON");
        let id = v["decision_id"].as_str().expect("decision_id").to_owned();
        match by_id.get(&id) {
            Some(first) => {
                assert_eq!(first, &v, "decision {id} published with two contents");
                repeats += 1;
            }
            None => {
                by_id.insert(id, v);
            }
        }
    }
    (by_id.len(), repeats)
}

/// Acceptance 1: SIGKILL at 5 random points while the events stream: every total exact,
/// every decision id once (a re-publication after a crash repeats the same record, which
/// consumers keep once; it is counted and reported).
#[test]
fn sigkill_at_five_random_points_loses_and_doubles_nothing() {
    let _serial = common::serial();
    let redis = common::redis_url();
    let stream = Stream::new("fault-kill");
    let load = generate(spec(11, 2_000, 0.0));
    let cfg = stream.config(&redis);
    let mut daemon = Daemon::start(&cfg);
    wait_assigned(&[&daemon]);
    let producing = produce(&stream.brokers, &stream, load.records);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut points: Vec<f64> = (0..5).map(|_| rng.gen_range(0.05..0.9)).collect();
    points.sort_by(f64::total_cmp);
    let started = Instant::now();
    let mut alive_since = Instant::now();
    for (i, point) in points.iter().enumerate() {
        wait_progress(&redis, &stream, &load.truth, *point);
        // tansu 0.6 never completes the rebalance after a member that joined seconds ago
        // is killed (seen at 1M events: every restart then waits forever; Kafka evicts the
        // dead member after its session). Each member lives at least 10 s.
        thread::sleep(Duration::from_secs(10).saturating_sub(alive_since.elapsed()));
        daemon.kill9();
        eprintln!("kill {} at {:.0} % durable", i + 1, point * 100.0);
        daemon = restart_until_assigned(&cfg);
        alive_since = Instant::now();
    }
    producing.join().unwrap();
    assert_totals_exact(&redis, &stream, &load.truth, Duration::from_secs(900));
    let took = started.elapsed();
    let (ids, repeats) = decisions_by_id(&stream.brokers, &stream.enforcement);
    assert!(ids > 0, "the misbehaving partners caused no decision");
    report(
        "sigkill-x5",
        &[
            ("seconds", format!("{:.1}", took.as_secs_f64())),
            ("decision_ids", ids.to_string()),
            ("repeated_decision_records", repeats.to_string()),
        ],
    );
    daemon.terminate();
}

/// Acceptance 2: instances scaled 1 → 3 → 2 → 3, then a rolling restart, while the events
/// stream: totals exact. Fenced writes are reported (a graceful handover flushes before it
/// revokes, so there may be none; acceptance 3 forces them).
#[test]
fn a_rebalance_storm_with_a_rolling_restart_keeps_totals_exact() {
    let _serial = common::serial();
    let redis = common::redis_url();
    let stream = Stream::new("fault-storm");
    let load = generate(spec(12, 2_000, 0.0));
    let cfg = stream.config(&redis);
    let mut members = vec![Daemon::start(&cfg)];
    wait_assigned(&[&members[0]]);
    let producing = produce(&stream.brokers, &stream, load.records);
    let mut fenced = 0.0;
    let settle = |members: &Vec<Daemon>| {
        let refs: Vec<&Daemon> = members.iter().collect();
        assert!(
            settles(&refs, Duration::from_secs(120)),
            "the group did not settle with {} members",
            members.len()
        );
    };
    wait_progress(&redis, &stream, &load.truth, 0.15);
    members.push(Daemon::start(&cfg));
    members.push(Daemon::start(&cfg));
    settle(&members);
    wait_progress(&redis, &stream, &load.truth, 0.35);
    let mut leaving = members.pop().unwrap();
    fenced += metric(&leaving, "warden_fenced_writes_total");
    assert!(leaving.terminate().success());
    settle(&members);
    wait_progress(&redis, &stream, &load.truth, 0.5);
    members.push(Daemon::start(&cfg));
    settle(&members);
    wait_progress(&redis, &stream, &load.truth, 0.65);
    for i in 0..members.len() {
        fenced += metric(&members[i], "warden_fenced_writes_total");
        assert!(members[i].terminate().success());
        members[i] = Daemon::start(&cfg);
        settle(&members);
    }
    producing.join().unwrap();
    assert_totals_exact(&redis, &stream, &load.truth, Duration::from_secs(900));
    for m in &members {
        fenced += metric(m, "warden_fenced_writes_total");
    }
    report("rebalance-storm", &[("fenced_writes", fenced.to_string())]);
    for m in &mut members {
        m.terminate();
    }
}

/// Waits until the two members' assignment has not changed for `quiet` and covers every
/// partition (at most two minutes). tansu 0.6 wedges the group more often when a member
/// stops seconds after (re)joining, as in the SIGKILL scenario.
fn settle_for(a: &Daemon, b: &Daemon, quiet: Duration) {
    let owned = |d: &Daemon| metric(d, "warden_partitions_assigned ");
    let mut last = (owned(a), owned(b));
    let mut settled_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while settled_since.elapsed() < quiet && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
        let now = (owned(a), owned(b));
        if now != last || now.0 + now.1 != common::stream::PARTITIONS as f64 {
            settled_since = Instant::now();
            last = now;
        }
    }
}

/// Acceptance 3: an owner frozen (SIGSTOP) past its session, its partitions taken over,
/// then resumed: its late writes are refused and counted, totals exact.
#[test]
fn a_paused_owner_is_fenced_when_it_resumes() {
    let _serial = common::serial();
    let redis = common::redis_url();
    let stream = Stream::new("fault-stop");
    let load = generate(spec(13, 1_000, 0.0));
    let cfg = stream.config(&redis);
    // The paused owner flushes rarely (only when a decision or its bounds press it), and
    // the second half of the stream trickles until just before it is frozen, so it is
    // frozen holding applied events that are not durable: on waking, its first write of
    // them (a flush, or the drain when its partitions are revoked) carries the epoch it no
    // longer owns. The trickle stops first: tansu 0.6 never evicted a member frozen while
    // records were flowing to it (two runs out of two), and the takeover is not what this
    // scenario tests.
    let mut slow = Daemon::start_with_env(&cfg, &[("WARDEN_KAFKA__FLUSH_INTERVAL", "60s")]);
    let mut other = Daemon::start(&cfg);
    wait_assigned(&[&slow, &other]);
    let flow = Arc::new(AtomicU8::new(pace::TRICKLE));
    let half = load.records.len() / 2;
    let producing = produce_paced(&stream.brokers, &stream, load.records, half, flow.clone());
    wait_progress(&redis, &stream, &load.truth, 0.2);
    // tansu 0.6 sometimes keeps a frozen member in the group: the rebalance its silence
    // starts hands the other member only its own partitions again, and no later one comes
    // (seen with records flowing at the freeze, and about once in five freezes without;
    // Kafka evicts the member). Then the owner is woken, the group left to settle, and the
    // freeze tried again: at most three times.
    let mut attempt = 1;
    loop {
        settle_for(&slow, &other, Duration::from_secs(10));
        flow.store(pace::HOLD, Ordering::SeqCst);
        // The gauge is refreshed every second: one read after a refresh that followed the
        // trickle's end.
        thread::sleep(Duration::from_millis(1_500));
        let holding = metric(&slow, "warden_unflushed_events ");
        assert!(
            holding > 0.0,
            "the owner to pause held no unflushed events\n{}",
            slow.output()
        );
        slow.pause();
        let taken = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
            metric(&other, "warden_partitions_assigned ") == common::stream::PARTITIONS as f64
        });
        if taken {
            break;
        }
        assert!(
            attempt < 3,
            "the partitions of the paused owner were not taken over, three times\n--- the other owner:\n{}",
            other.output()
        );
        eprintln!("freeze {attempt}: the broker kept the frozen member; waking it to try again");
        slow.resume();
        flow.store(pace::TRICKLE, Ordering::SeqCst);
        attempt += 1;
    }
    flow.store(pace::FULL, Ordering::SeqCst);
    // Let the new owner write with its newer epoch before the old one wakes up.
    wait_progress(&redis, &stream, &load.truth, 0.5);
    slow.resume();
    let fenced = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        metric(&slow, "warden_fenced_writes_total") >= 1.0
    });
    assert!(
        fenced,
        "the resumed owner's late write was not refused\n{}",
        slow.output()
    );
    producing.join().unwrap();
    assert_totals_exact(&redis, &stream, &load.truth, Duration::from_secs(900));
    report(
        "sigstop",
        &[
            (
                "fenced_writes",
                metric(&slow, "warden_fenced_writes_total").to_string(),
            ),
            ("freezes", attempt.to_string()),
        ],
    );
    slow.terminate();
    other.terminate();
}

fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("WARDEN_FAULT_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30),
    )
}

/// Acceptance 4: Redis unreachable for 30 s while the events stream: the daemon stays in
/// the group and serves reads, applies `fail_closed` (a global suspend on the enforcement
/// topic, lifted after) with its metric, loses nothing, and its lag returns to zero.
#[test]
fn redis_down_thirty_seconds_fails_closed_loses_nothing_and_catches_up() {
    let _serial = common::serial();
    let load = generate(spec(14, 2_000, 0.0));
    let (mut redis, stream, mut daemon) = fail_closed_daemon("fault-redis");
    let url = redis.url();
    let (first, second) = {
        let mut records = load.records;
        let second = records.split_off(records.len() / 2);
        (records, second)
    };
    produce(&stream.brokers, &stream, first).join().unwrap();
    wait_progress(&url, &stream, &load.truth, 0.3);
    let live = durable_totals(&url, &stream.prefix)
        .keys()
        .next()
        .cloned()
        .expect("a durable partner");
    redis.stop();
    let down_at = Instant::now();
    let producing = produce(&stream.brokers, &stream, second);
    let degraded = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        metric(&daemon, "warden_store_degraded{policy=\"fail_closed\"}") == 1.0
    });
    assert!(
        degraded,
        "the failure policy was not applied\n{}",
        daemon.output()
    );
    // Reads are served from memory meanwhile.
    let (status, _) = daemon.request(
        "GET",
        &format!("/v1/partners/{live}"),
        Some(VIEWER_TOKEN),
        None,
    );
    assert_eq!(
        status, 200,
        "a live partner was not readable during the outage"
    );
    thread::sleep(outage().saturating_sub(down_at.elapsed()));
    assert!(
        daemon.wait_exit(Duration::from_millis(10)).is_none(),
        "exited during the outage"
    );
    redis.start();
    producing.join().unwrap();
    assert_totals_exact(&url, &stream, &load.truth, Duration::from_secs(900));
    let caught_up = wait_until(Duration::from_secs(120), Duration::from_millis(250), || {
        metric(&daemon, "warden_consumer_lag{") == 0.0
            && metric(&daemon, "warden_store_degraded{policy=\"fail_closed\"}") == 0.0
    });
    assert!(caught_up, "lag did not return to zero after the outage");
    let revoked = daemon.output().contains("partitions revoked");
    assert!(!revoked, "the daemon left the group during the outage");
    // The global decision went out, and was lifted (after the `ok` told at start).
    let global = global_store_levels(&stream);
    assert_eq!(global, ["ok", "suspend", "ok"], "fail_closed decisions");
    let counted = |from: &str, to: &str| {
        metric(
            &daemon,
            &format!("warden_enforcement_transitions_total{{from=\"{from}\",reason=\"store_unavailable\",to=\"{to}\"}} "),
        )
    };
    // The `ok` told at start changes nothing known, so only the outage's pair counts.
    assert_eq!(
        (counted("ok", "suspend"), counted("suspend", "ok")),
        (1.0, 1.0)
    );
    report(
        "redis-outage",
        &[("outage_seconds", outage().as_secs().to_string())],
    );
    assert!(daemon.terminate().success());
}

/// The global `store` decisions on `stream`'s enforcement topic, in the order produced:
/// (level, seq).
fn global_store_decisions(stream: &Stream) -> Vec<(String, u64)> {
    common::enforcement_decisions(stream)
        .into_iter()
        .filter(|v| v["scope"] == "global" && v["id"] == "store")
        .map(|v| {
            let level = v["level"].as_str().unwrap_or_default().to_owned();
            (level, v["seq"].as_u64().unwrap_or_default())
        })
        .collect()
}

/// The levels of [`global_store_decisions`], in order.
fn global_store_levels(stream: &Stream) -> Vec<String> {
    global_store_decisions(stream)
        .into_iter()
        .map(|(level, _)| level)
        .collect()
}

/// `stream`'s daemon config on the Redis at `url`, under the `fail_closed` policy.
fn fail_closed_config(stream: &Stream, url: &str) -> String {
    stream
        .config(url)
        .replace("[store]\n", "[store]\nfailure_policy = \"fail_closed\"\n")
}

/// A Redis of the test's own (to stop, pause or restrict), a stream named `name`, and a
/// `fail_closed` daemon on both that owns the stream's partitions.
fn fail_closed_daemon(name: &str) -> (RedisServer, Stream, Daemon) {
    let redis = RedisServer::start_new();
    let stream = Stream::new(name);
    let daemon = Daemon::start(&fail_closed_config(&stream, &redis.url()));
    wait_assigned(&[&daemon]);
    (redis, stream, daemon)
}

/// Under `fail_closed`, an instance that dies during an outage leaves its global suspend in
/// force on the topic, and the daemon does not start without its store, so the next
/// instance starts only once the outage is over and sees none. It must still lift the
/// suspend: otherwise gateways block every partner until someone notices.
#[test]
fn a_global_suspend_left_by_an_instance_dead_in_an_outage_is_lifted_by_the_next_start() {
    let _serial = common::serial();
    let (mut redis, stream, mut first) = fail_closed_daemon("fault-redis-restart");
    redis.stop();
    let degraded = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        // Readiness pings the store, so the outage shows with no event flowing.
        first.request("GET", "/readyz", None, None);
        metric(&first, "warden_store_degraded{policy=\"fail_closed\"}") == 1.0
    });
    assert!(
        degraded,
        "the failure policy was not applied\n{}",
        first.output()
    );
    first.kill9();
    let left = global_store_levels(&stream);
    assert_eq!(left.last().map(String::as_str), Some("suspend"), "{left:?}");

    redis.start();
    let mut second = Daemon::start(&fail_closed_config(&stream, &redis.url()));
    let lifted = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        let decisions = global_store_decisions(&stream);
        match decisions.as_slice() {
            [.., (suspend, suspended_at), (ok, lifted_at)] => {
                suspend == "suspend" && ok == "ok" && lifted_at > suspended_at
            }
            _ => false,
        }
    });
    assert!(
        lifted,
        "the suspend was not lifted: {:?}\n{}",
        global_store_decisions(&stream),
        second.output()
    );
    assert!(second.terminate().success());
}

/// A store call that times out once is no outage: `/readyz`'s ping, held behind a Redis
/// paused for longer than `store.timeout`, used to put every partner under a global
/// suspend under `fail_closed`. The watcher now confirms with writes of its own.
#[test]
fn a_store_call_that_times_out_once_is_no_outage_under_fail_closed() {
    let _serial = common::serial();
    let (redis, stream, mut daemon) = fail_closed_daemon("fault-redis-blip");
    let url = redis.url();
    let levels = || global_store_levels(&stream);
    let told = wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        levels() == ["ok"]
    });
    assert!(told, "no ok at start: {:?}", levels());
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut last_pause = 0;
    for _ in 0..3 {
        // 1.2 s: more than the store's 500 ms timeout, less than the watcher's probe.
        last_pause = chrono::Utc::now().timestamp_millis();
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1_200)
            .arg("ALL")
            .query(&mut conn)
            .unwrap();
        let (_, body) = daemon.request("GET", "/readyz", None, None);
        assert_eq!(body["store_up"], false, "the ping was not held: {body}");
        thread::sleep(Duration::from_secs(2));
    }
    // The watcher judged the last blip: it probed (a write stamped with its time) after the
    // last pause began, and a suspend would follow that probe at once.
    let probe_key = format!("{}:probe", stream.prefix);
    let judged = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let written: Option<i64> = redis::cmd("GET").arg(&probe_key).query(&mut conn).unwrap();
        written.is_some_and(|at| at >= last_pause)
    });
    assert!(judged, "the watcher never probed after the last pause");
    thread::sleep(Duration::from_secs(1));
    assert_eq!(
        metric(&daemon, "warden_store_degraded{policy=\"fail_closed\"}"),
        0.0
    );
    assert_eq!(levels(), ["ok"], "a global suspend went out");
    // Each failed readiness ping is counted where the runbook says to look.
    assert!(metric(&daemon, "warden_store_errors_total{op=\"ping\"}") >= 3.0);
    assert!(daemon.terminate().success());
}

/// A Redis that answers but refuses writes (here `min-replicas-to-write` with no replica;
/// out of memory or a read-only replica after a failover do the same) keeps no state: under
/// `fail_closed` that is an outage, although every ping succeeds.
#[test]
fn a_store_that_refuses_writes_is_an_outage_under_fail_closed() {
    let _serial = common::serial();
    let (redis, stream, mut daemon) = fail_closed_daemon("fault-redis-readonly");
    let url = redis.url();
    let levels = || global_store_levels(&stream);
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let min_replicas = |conn: &mut redis::Connection, n: u32| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-to-write")
            .arg(n)
            .query(conn)
            .unwrap();
    };
    min_replicas(&mut conn, 1);
    let records = generate(spec(16, 200, 0.0)).records;
    produce(&stream.brokers, &stream, records).join().unwrap();
    let suspended = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        levels().last().map(String::as_str) == Some("suspend")
    });
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
    assert!(
        suspended,
        "no global suspend: {:?}\n{}",
        levels(),
        daemon.output()
    );
    min_replicas(&mut conn, 0);
    let lifted = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        levels().last().map(String::as_str) == Some("ok")
    });
    assert!(lifted, "not lifted: {:?}", levels());
    assert!(daemon.terminate().success());
}

/// Acceptance 5: the broker restarted (sqlite storage keeps its data): consumption resumes
/// by itself, nothing lost or doubled.
#[test]
fn a_broker_restart_resumes_by_itself() {
    let _serial = common::serial();
    let redis = common::redis_url();
    let mut broker = TansuServer::start_new();
    let stream = Stream::on("fault-broker", &broker.brokers());
    let load = generate(spec(15, 1_000, 0.0));
    let mut daemon = Daemon::start(&stream.config(&redis));
    wait_assigned(&[&daemon]);
    let (first, second) = {
        let mut records = load.records;
        let second = records.split_off(records.len() / 2);
        (records, second)
    };
    produce(&broker.brokers(), &stream, first).join().unwrap();
    wait_progress(&redis, &stream, &load.truth, 0.25);
    broker.stop();
    thread::sleep(Duration::from_secs(3));
    broker.start();
    produce(&broker.brokers(), &stream, second).join().unwrap();
    assert_totals_exact(&redis, &stream, &load.truth, Duration::from_secs(900));
    report("broker-restart", &[]);
    assert!(daemon.terminate().success());
}

/// Acceptance 6: 1 % malformed records among the stream: exactly that many dead letters
/// (distinct source coordinates), the valid totals exact, no partition stuck.
#[test]
fn one_percent_malformed_gives_exactly_that_many_dead_letters() {
    let _serial = common::serial();
    let redis = common::redis_url();
    let stream = Stream::new("fault-malformed");
    let load = generate(spec(16, 2_000, 0.01));
    let daemon = Daemon::start(&stream.config(&redis));
    wait_assigned(&[&daemon]);
    let malformed = load.malformed;
    assert!(malformed > 0);
    produce(&stream.brokers, &stream, load.records)
        .join()
        .unwrap();
    assert_totals_exact(&redis, &stream, &load.truth, Duration::from_secs(900));
    let dead = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        common::topic_record_count(&stream.brokers, &stream.deadletter) >= malformed as i64
    });
    assert!(dead, "dead letters missing");
    let records = common::consume_all(
        &stream.brokers,
        &stream.deadletter,
        malformed as usize,
        Duration::from_secs(60),
    );
    let sources: HashSet<(String, i64, i64)> = records
        .iter()
        .filter_map(|(_, _, _, v)| serde_json::from_slice::<Value>(v).ok())
        .map(|v| {
            (
                v["source_topic"].as_str().unwrap_or_default().to_owned(),
                v["partition"].as_i64().unwrap_or(-1),
                v["offset"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        common::topic_record_count(&stream.brokers, &stream.deadletter),
        malformed as i64,
        "dead letters on the topic"
    );
    assert_eq!(sources.len() as u64, malformed, "distinct dead letters");
    let (_, m) = daemon.request("GET", "/metrics", None, None);
    let counted: f64 = m
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("warden_events_total{"))
        .filter(|l| l.contains("outcome=\"dead_letter\"") && l.contains("topic=\"usage\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, malformed as f64, "dead letters counted");
    let drained = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        metric(&daemon, "warden_consumer_lag{") == 0.0
    });
    assert!(drained, "a partition is stuck");
    report("malformed", &[("dead_letters", malformed.to_string())]);
}

/// Consumes `records` with a fresh daemon and returns events per second, while `abuse`
/// runs against its admin API.
fn consumption_rate(
    redis: &str,
    name: &str,
    records: &[Record],
    truth: &HashMap<String, UsageTruth>,
    abuse: impl FnOnce(String, Arc<AtomicBool>) -> thread::JoinHandle<u64>,
) -> (f64, u64) {
    let stream = Stream::new(name);
    produce(&stream.brokers, &stream, records.to_vec())
        .join()
        .unwrap();
    let env = [
        ("WARDEN_ADMIN__RATE_LIMIT_PER_SECOND", "100"),
        ("WARDEN_ADMIN__RATE_LIMIT_BURST", "50"),
        ("WARDEN_ADMIN__BODY_LIMIT_BYTES", "4096"),
    ];
    let daemon = Daemon::start_with_env(&stream.config(redis), &env);
    let stop = Arc::new(AtomicBool::new(false));
    let abusing = abuse(daemon.base_url().to_owned(), stop.clone());
    let started = Instant::now();
    let total: u64 = truth.values().map(|t| t.events).sum();
    let done = wait_until(Duration::from_secs(900), Duration::from_millis(100), || {
        durable(redis, &stream) >= total
    });
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let requests = abusing.join().unwrap();
    assert!(done, "{name}: not every event became durable");
    assert_totals_exact(redis, &stream, truth, Duration::from_secs(60));
    (total as f64 / seconds, requests)
}

/// Acceptance 7: admin API abuse on loopback. A burst of 5,000 requests from one token
/// gets 429 after the configured burst; bodies over the cap get 413; slow clients holding
/// connections open do not block others; event throughput during the abuse is reported
/// next to the quiet run's.
#[test]
fn admin_api_abuse_is_refused_without_slowing_consumption() {
    let _serial = common::serial();
    let redis = common::redis_url();
    let load = generate(spec(17, 1_000, 0.0));
    let (quiet, _) = consumption_rate(&redis, "fault-quiet", &load.records, &load.truth, |_, _| {
        thread::spawn(|| 0)
    });
    let (abused, requests) = consumption_rate(
        &redis,
        "fault-abuse",
        &load.records,
        &load.truth,
        |base, stop| {
            thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(10))
                    .build();
                let auth = format!("Bearer {VIEWER_TOKEN}");
                // Slow clients: connections that send a byte of their request now and then.
                let addr = base.trim_start_matches("http://").to_owned();
                let mut slow: Vec<std::net::TcpStream> = (0..32)
                    .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
                    .collect();
                let mut sent = 0u64;
                // The burst: 5,000 requests from one token, 50 connections at once.
                let burst_started = Instant::now();
                let statuses: Vec<u16> = thread::scope(|s| {
                    let workers: Vec<_> = (0..50)
                        .map(|_| {
                            let (agent, auth, base) = (&agent, &auth, &base);
                            s.spawn(move || {
                                (0..100)
                                    .map(|_| {
                                        match agent
                                            .get(&format!("{base}/v1/partners"))
                                            .set("Authorization", auth)
                                            .call()
                                        {
                                            Ok(r) => r.status(),
                                            Err(ureq::Error::Status(s, _)) => s,
                                            Err(e) => panic!("request failed: {e}"),
                                        }
                                    })
                                    .collect::<Vec<u16>>()
                            })
                        })
                        .collect();
                    workers
                        .into_iter()
                        .flat_map(|w| w.join().unwrap())
                        .collect()
                });
                sent += statuses.len() as u64;
                let allowed = statuses.iter().filter(|s| **s == 200).count() as f64;
                let refused = statuses.iter().filter(|s| **s == 429).count();
                // At most the burst (50) plus the refill (100/s) over the burst's length.
                let ceiling = 50.0 + 100.0 * burst_started.elapsed().as_secs_f64() + 1.0;
                assert!(allowed <= ceiling, "{allowed} allowed, ceiling {ceiling}");
                assert!(
                    refused > 0 && allowed + refused as f64 == 5_000.0,
                    "{statuses:?}"
                );
                // An oversized body: 413 (the token has to wait for its bucket first).
                let big = "x".repeat(8_192);
                let status = loop {
                    let r = agent
                        .post(&format!("{base}/v1/kill-switches"))
                        .set("Authorization", &auth)
                        .send_string(&big);
                    let s = match r {
                        Ok(r) => r.status(),
                        Err(ureq::Error::Status(s, _)) => s,
                        Err(e) => panic!("request failed: {e}"),
                    };
                    sent += 1;
                    if s != 429 {
                        break s;
                    }
                    thread::sleep(Duration::from_millis(20));
                };
                assert_eq!(status, 413, "oversized body");
                // Others are served while the slow clients hold their connections.
                for (i, s) in slow.iter_mut().enumerate() {
                    let _ = s.write_all(&b"GET /healthz HTTP/1.1\r\nHost: x\r\n"[i % 8..i % 8 + 1]);
                }
                let r = agent
                    .get(&format!("{base}/healthz"))
                    .call()
                    .map(|r| r.status());
                assert!(matches!(r, Ok(200)), "a slow client blocked others: {r:?}");
                // Keep up the pressure until the consumption is done.
                while !stop.load(Ordering::SeqCst) {
                    let _ = agent
                        .get(&format!("{base}/v1/partners"))
                        .set("Authorization", &auth)
                        .call();
                    sent += 1;
                }
                drop(slow);
                sent
            })
        },
    );
    report(
        "admin-abuse",
        &[
            ("quiet_events_per_s", format!("{quiet:.0}")),
            ("abused_events_per_s", format!("{abused:.0}")),
            ("ratio", format!("{:.3}", abused / quiet)),
            ("admin_requests", requests.to_string()),
        ],
    );
}
