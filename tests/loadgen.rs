//! The load generator (`warden::loadgen`, `warden-loadgen`): deterministic for a seed,
//! skewed like a real program, honest about what it broke, and a ground truth that is a
//! recount of what it sent — checked with warden's own decoder, so a record the generator
//! calls valid is one the daemon applies and a malformed one is one it dead-letters.
//!
//! Only the last test needs the broker (`scripts/test` starts it).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use warden::domain::event::{PartnerEvent, TopicKind};
use warden::kafka::decode::{decode_control_record, decode_partner_record, DecodeLimits};
use warden::loadgen::{Generator, GroundTruth, Kind, LoadSpec, Record, Stream, Tally, UsageTruth};

fn spec(seed: u64) -> LoadSpec {
    LoadSpec {
        partners: 10_000,
        skew: 1.0,
        misbehaving: 0.05,
        invoice_fraction: 0.1,
        control_fraction: 0.01,
        malformed: 0.05,
        duplicates: 0.05,
        seed,
        start_ts: "2026-05-14T09:30:00Z".parse().unwrap(),
        event_step: chrono::Duration::milliseconds(1),
    }
}

fn records(spec: LoadSpec, n: usize) -> Vec<Record> {
    Generator::new(spec).take(n).collect()
}

fn topic_kind(stream: Stream) -> Option<TopicKind> {
    match stream {
        Stream::Usage => Some(TopicKind::Usage),
        Stream::Invoices => Some(TopicKind::Invoices),
        Stream::Control => None,
    }
}

/// Decodes a keyed record as the daemon does (record timestamp: well after every `ts`).
fn decode(r: &Record) -> Option<Result<PartnerEvent, String>> {
    let kind = topic_kind(r.stream)?;
    let record_ts = Utc::now().timestamp_millis();
    Some(
        decode_partner_record(
            kind,
            r.key.as_deref().map(str::as_bytes),
            Some(&r.payload),
            Some(record_ts),
            &DecodeLimits::default(),
        )
        .map_err(|e| format!("{:?}: {}", e.reason, e.detail)),
    )
}

#[test]
fn the_same_seed_gives_the_same_records_and_another_seed_does_not() {
    let a = records(spec(7), 5_000);
    assert_eq!(a, records(spec(7), 5_000));
    let b = records(spec(8), 5_000);
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    assert!(same < 50, "{same} of 5000 records equal across seeds");
}

#[test]
fn skew_puts_most_traffic_on_a_few_partners() {
    let share_of_top_percent = |skew: f64| {
        let mut per_partner: HashMap<String, u64> = HashMap::new();
        for r in records(LoadSpec { skew, ..spec(1) }, 50_000) {
            *per_partner.entry(r.key.unwrap_or_default()).or_default() += 1;
        }
        let mut counts: Vec<u64> = per_partner.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: u64 = counts.iter().take(100).sum();
        top as f64 / 50_000.0
    };
    let skewed = share_of_top_percent(1.1);
    let uniform = share_of_top_percent(0.0);
    assert!(skewed > 0.5, "top 1% of partners carry only {skewed:.3}");
    assert!(uniform < 0.05, "uniform traffic: top 1% carry {uniform:.3}");
}

#[test]
fn ground_truth_equals_a_recount_of_the_decoded_records() {
    let all = records(spec(3), 40_000);
    let mut truth = GroundTruth::default();
    let mut tally = Tally::default();
    for r in &all {
        truth.observe(r);
        tally.observe(r);
    }
    // The recount: decode every keyed record with warden's decoder, count each usage
    // event id of a partner once.
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut recount: BTreeMap<String, UsageTruth> = BTreeMap::new();
    for r in &all {
        let Some(decoded) = decode(r) else { continue };
        match (decoded, r.kind) {
            (Ok(PartnerEvent::Usage(e)), Kind::Usage { .. } | Kind::Duplicate) => {
                assert_eq!(r.key.as_deref(), Some(e.partner_id.as_str()));
                if seen.insert((e.partner_id.clone(), e.event_id.clone())) {
                    let t = recount.entry(e.partner_id).or_default();
                    t.events += 1;
                    t.requests += e.requests;
                    t.errors += e.errors;
                } else {
                    assert_eq!(
                        r.kind,
                        Kind::Duplicate,
                        "a repeated id not marked duplicate"
                    );
                }
            }
            (Ok(PartnerEvent::Invoice(_)), Kind::Invoice) => {}
            (Err(_), Kind::Malformed(_)) => {}
            (got, kind) => panic!("{kind:?} record decoded as {got:?}: {r:?}"),
        }
    }
    assert_eq!(truth.0, recount);
    assert!(
        tally.duplicates > 1_000 && tally.malformed > 1_000,
        "{tally:?}"
    );
    assert_eq!(tally.records, 40_000);
    assert_eq!(tally.keyed + tally.control, tally.records);
    // The file format: {partner_id: {events, requests, errors}}.
    let json: serde_json::Value = serde_json::to_value(&truth).unwrap();
    let (id, first) = recount.iter().next().unwrap();
    assert_eq!(json[id]["events"], first.events);
    assert_eq!(json[id]["requests"], first.requests);
    assert_eq!(json[id]["errors"], first.errors);
}

#[test]
fn the_malformed_fraction_is_honoured_and_every_case_is_rejected() {
    let all = records(
        LoadSpec {
            malformed: 0.1,
            ..spec(5)
        },
        40_000,
    );
    let keyed: Vec<&Record> = all.iter().filter(|r| r.stream != Stream::Control).collect();
    let rejected = keyed
        .iter()
        .filter(|r| matches!(decode(r), Some(Err(_))))
        .count();
    let marked = keyed
        .iter()
        .filter(|r| matches!(r.kind, Kind::Malformed(_)))
        .count();
    assert_eq!(
        rejected, marked,
        "every malformed record, and only those, is rejected"
    );
    let fraction = rejected as f64 / keyed.len() as f64;
    assert!(
        (fraction - 0.1).abs() < 0.01,
        "malformed fraction {fraction:.4}"
    );
    let none = records(
        LoadSpec {
            malformed: 0.0,
            ..spec(5)
        },
        10_000,
    );
    assert!(none.iter().all(|r| !matches!(r.kind, Kind::Malformed(_))));
}

#[test]
fn control_facts_decode_and_misbehaving_partners_err_more() {
    let spec = spec(9);
    let generator = Generator::new(spec.clone());
    let bad: Vec<bool> = (0..spec.partners)
        .map(|p| generator.is_misbehaving(p))
        .collect();
    let (mut good_rate, mut bad_rate) = ((0u64, 0u64), (0u64, 0u64));
    for r in generator.take(40_000) {
        if r.stream == Stream::Control {
            decode_control_record(Some(&r.payload), &DecodeLimits::default())
                .unwrap_or_else(|e| panic!("control fact rejected: {e:?}: {r:?}"));
            continue;
        }
        if let (Kind::Usage { requests, errors }, Some(key)) = (r.kind, &r.key) {
            let p: usize = key.trim_start_matches("p-").parse().unwrap();
            let acc = if bad[p] {
                &mut bad_rate
            } else {
                &mut good_rate
            };
            acc.0 += errors;
            acc.1 += requests;
        }
    }
    let rate = |(e, r): (u64, u64)| e as f64 / r.max(1) as f64;
    assert!(
        rate(bad_rate) > 0.3,
        "misbehaving error rate {}",
        rate(bad_rate)
    );
    assert!(
        rate(good_rate) < 0.02,
        "normal error rate {}",
        rate(good_rate)
    );
}

/// The binary against the real broker: it creates the topics, every record is
/// acknowledged, the topics hold what the summary says, and the ground-truth file is the
/// generator's for the same flags.
#[test]
fn the_binary_produces_to_the_broker_and_writes_the_ground_truth() {
    let brokers = common::brokers();
    let usage = common::unique("loadgen.usage");
    let invoices = common::unique("loadgen.invoices");
    let control = common::unique("loadgen.control");
    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.json");
    let start_ts = "2026-05-14T09:30:00Z";
    let output = Command::new(env!("CARGO_BIN_EXE_warden-loadgen"))
        .args(["--brokers", &brokers, "--usage-topic", &usage])
        .args(["--invoices-topic", &invoices, "--control-topic", &control])
        .args([
            "--create-topics",
            "3",
            "--count",
            "3000",
            "--partners",
            "200",
        ])
        .args([
            "--seed",
            "11",
            "--start-ts",
            start_ts,
            "--event-step",
            "1ms",
        ])
        .args(["--malformed", "0.02", "--duplicates", "0.03"])
        .args(["--invoice-fraction", "0.1", "--control-fraction", "0.01"])
        .arg("--ground-truth")
        .arg(&truth_path)
        .output()
        .expect("run warden-loadgen");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "warden-loadgen failed:\n{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["acknowledged"], 3000, "{summary}");

    let expected_spec = LoadSpec {
        partners: 200,
        skew: 1.0,
        misbehaving: 0.01,
        invoice_fraction: 0.1,
        control_fraction: 0.01,
        malformed: 0.02,
        duplicates: 0.03,
        seed: 11,
        start_ts: start_ts.parse::<DateTime<Utc>>().unwrap(),
        event_step: chrono::Duration::milliseconds(1),
    };
    let mut truth = GroundTruth::default();
    let mut tally = Tally::default();
    for r in records(expected_spec, 3000) {
        truth.observe(&r);
        tally.observe(&r);
    }
    let written: GroundTruth =
        serde_json::from_slice(&std::fs::read(&truth_path).unwrap()).unwrap();
    assert_eq!(written, truth);
    assert_eq!(summary["tally"], serde_json::to_value(tally).unwrap());

    for (topic, n) in [
        (&usage, tally.usage),
        (&invoices, tally.invoices),
        (&control, tally.control),
    ] {
        assert_eq!(
            common::topic_record_count(&brokers, topic),
            n as i64,
            "{topic}"
        );
    }
    assert_eq!(common::partition_count(&brokers, &usage), Some(3));
    assert_eq!(common::partition_count(&brokers, &control), Some(1));
    // Keys are partner ids, partitioned with murmur2 like every contract writer.
    let read = common::consume_all(
        &brokers,
        &usage,
        tally.usage as usize,
        Duration::from_secs(60),
    );
    assert_eq!(read.len() as u64, tally.usage);
    for (partition, _, key, _) in read {
        let key = key.expect("usage records are keyed");
        assert_eq!(
            warden::kafka::topics::partition_for_key(key.as_bytes(), 3),
            partition,
            "{key}"
        );
    }
}
