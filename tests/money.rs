//! Money end to end through the real broker and Redis (issue: money, acceptance 1, 3, 4, 5):
//! the worked scenario of `tests/common/worked.rs` gives every hand-computed figure, also
//! across a SIGKILL; a late invoice for a frozen month becomes an adjustment; approve and
//! paid are finance's alone and audited; the reseller promo goes to exactly the first three
//! approved partners with two instances racing; running out of activation credits blocks
//! new activations through the enforcement path.

mod common;
#[path = "common/worked.rs"]
mod worked;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use common::group::metric;
use common::stream::{Stream, VIEWER_TOKEN};
use common::{wait_until, Daemon, TestProducer};
use rust_decimal::Decimal;
use serde_json::{json, Value};

const FINANCE: &str = "test-finance-token-0123456789abcdef";
const OPERATOR: &str = "test-operator-token-0123456789abcdef";
const SECURITY: &str = "test-security-token-0123456789abcdef";

/// The stream's config with finance, operator and security tokens, the given program and
/// no automatic month close (the scenario replays 2026 history).
fn config(stream: &Stream, redis: &str, program: &str) -> String {
    let mut c = stream.config(redis);
    for (name, token) in [
        ("finance", FINANCE),
        ("operator", OPERATOR),
        ("security", SECURITY),
    ] {
        c.push_str(&format!(
            "[[admin.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nroles = [\"{name}\"]\n",
            warden::http::auth::token_hash(token)
        ));
    }
    c.replace("[money]\n", &format!("[money]\nprogram = \"{program}\"\n"))
}

fn dec(v: &Value) -> Decimal {
    match v {
        Value::String(s) => Decimal::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}")),
        Value::Number(n) => Decimal::from_str(&n.to_string()).unwrap(),
        other => panic!("not a decimal: {other}"),
    }
}

fn partner(d: &Daemon, id: &str) -> Value {
    d.get_json_with_token(&format!("/v1/partners/{id}"), Some(VIEWER_TOKEN))
}

/// One field of the partner view; null while the partner is not known yet.
fn field(d: &Daemon, id: &str, name: &str) -> Value {
    let (status, v) = d.request(
        "GET",
        &format!("/v1/partners/{id}"),
        Some(VIEWER_TOKEN),
        None,
    );
    if status == 200 {
        v[name].clone()
    } else {
        Value::Null
    }
}

fn statement(d: &Daemon, id: &str, month: &str) -> Value {
    d.get_json_with_token(
        &format!("/v1/partners/{id}/statement?month={month}"),
        Some(VIEWER_TOKEN),
    )
}

fn send_records(p: &mut TestProducer, stream: &Stream, records: &[worked::Record]) {
    for r in records {
        let topic = match r.topic {
            worked::Topic::Control => &stream.control,
            worked::Topic::Invoices => &stream.invoices,
        };
        p.send(topic, r.key(), r.value.to_string().as_bytes());
    }
    p.flush();
}

/// Invoices applied (accrued, reversed or parked) over the scenario's partners.
fn invoices_applied(d: &Daemon) -> u64 {
    ["gold-1", "sub-1", "dist-1"]
        .iter()
        .map(|id| {
            let (status, v) = d.request(
                "GET",
                &format!("/v1/partners/{id}"),
                Some(VIEWER_TOKEN),
                None,
            );
            if status != 200 {
                return 0;
            }
            let i = &v["invoices"];
            ["paid", "refunds", "chargebacks"]
                .iter()
                .map(|k| i[*k].as_u64().unwrap_or(0))
                .sum::<u64>()
        })
        .sum()
}

/// Produces phases `range` of the scenario, waiting after each until the daemon applied it
/// (control facts counted by the control table, invoices by the partners), so facts and
/// invoices meet in the order the scenario needs.
fn play(
    d: &Daemon,
    p: &mut TestProducer,
    stream: &Stream,
    phases: &[Vec<worked::Record>],
    done: &mut (usize, u64),
) {
    for phase in phases {
        send_records(p, stream, phase);
        let controls = phase
            .iter()
            .filter(|r| r.topic == worked::Topic::Control)
            .count();
        let invoices = phase.len() - controls;
        done.0 += controls;
        done.1 += invoices as u64;
        let (want_facts, want_invoices) = *done;
        let applied = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
            metric(d, "warden_control_facts_total ") >= want_facts as f64
                && invoices_applied(d) >= want_invoices
        });
        assert!(applied, "phase not applied in time\n{}", d.output());
    }
}

/// Every figure of the scenario, read from the API, against the hand-computed ones.
/// Returns the mismatches (empty = all equal).
fn mismatches(d: &Daemon) -> Vec<String> {
    let mut out = Vec::new();
    let mut views: BTreeMap<&str, Value> = BTreeMap::new();
    for e in worked::expected_totals() {
        let v = views
            .entry(e.partner_id)
            .or_insert_with(|| partner(d, e.partner_id));
        let got = &v[e.field];
        let want = Decimal::from_str(e.value).unwrap();
        if got.is_null() || dec(got) != want {
            out.push(format!(
                "{} {}: want {}, got {got}",
                e.partner_id, e.field, e.value
            ));
        }
    }
    for (id, month, fields) in worked::expected_month_totals() {
        let s = statement(d, id, month);
        for (field, value) in fields {
            let got = &s["totals"][field];
            if got.is_null() || dec(got) != Decimal::from_str(value).unwrap() {
                out.push(format!("{id} {month} {field}: want {value}, got {got}"));
            }
        }
        // Totals equal the sum of the lines (the rate commission column, as a sample of all).
        let lines = s["lines"].as_array().cloned().unwrap_or_default();
        let sum: Decimal = lines.iter().map(|l| dec(&l["base_usd"])).sum();
        if sum != dec(&s["totals"]["attributed_revenue_usd"]) {
            out.push(format!("{id} {month}: lines sum {sum} ≠ total"));
        }
    }
    out
}

fn wait_for_figures(d: &Daemon) {
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        last = mismatches(d);
        last.is_empty()
    });
    assert!(
        ok,
        "figures differ from the hand-computed ones:\n{}",
        last.join("\n")
    );
}

#[test]
fn the_worked_scenario_gives_every_hand_computed_figure() {
    let redis = common::redis_url();
    let stream = Stream::new("money-worked");
    let mut d = Daemon::start(&config(&stream, &redis, "default"));
    d.wait_ready(Duration::from_secs(60));
    let mut p = TestProducer::new(&stream.brokers);
    let phases = worked::phases();
    let mut done = (0, 0);
    play(&d, &mut p, &stream, &phases, &mut done);
    wait_for_figures(&d);

    // The parked CHF line is visible, and so is the metric.
    assert_eq!(partner(&d, "gold-1")["parked_invoices"], json!(1));
    assert!(metric(&d, "warden_invoices_parked ") >= 1.0);
    // Gross commission metrics: accrued and reversed both counted.
    assert!(metric(&d, "warden_commission_usd_total ") > 0.0);
    assert!(metric(&d, "warden_commission_reversed_usd_total ") > 0.0);

    // MDF: approved and drawn, refused for balance, rejected — in the wallet's records.
    let june = statement(&d, "gold-1", "2026-06");
    assert_eq!(june["status"], "open");

    // CSV: the same lines and totals.
    let url = format!(
        "{}/v1/partners/gold-1/statement?month=2026-05",
        d.base_url()
    );
    let csv = ureq::get(&url)
        .set("Authorization", &format!("Bearer {VIEWER_TOKEN}"))
        .set("Accept", "text/csv")
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let may = statement(&d, "gold-1", "2026-05");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows.len(),
        1 + may["lines"].as_array().unwrap().len() + 1,
        "{csv}"
    );
    let total_row = rows.last().unwrap();
    assert!(total_row.starts_with("2026-05,total"), "{total_row}");
    let revenue = may["totals"]["attributed_revenue_usd"].as_str().unwrap();
    assert!(total_row.contains(revenue), "{total_row} lacks {revenue}");

    // The overrides went through the attribution topic, one record per ancestor and line.
    // gold-1: 10 accrued lines and 2 reversals × 2 ancestors; sub-1: 2 lines × 1.
    // All of the topic (a record may come twice, never a third id): 26 distinct ids.
    let arrived = common::wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        common::topic_record_count(&stream.brokers, &stream.attribution) >= 26
    });
    assert!(arrived, "fewer than 26 attribution records");
    let n = common::topic_record_count(&stream.brokers, &stream.attribution) as usize;
    let records = common::consume_all(
        &stream.brokers,
        &stream.attribution,
        n,
        Duration::from_secs(60),
    );
    assert_eq!(records.len(), n, "attribution topic not read whole");
    let ids: std::collections::BTreeSet<String> = records
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.3).ok())
        .filter_map(|v| v["attribution_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 26, "{ids:?}");
    assert!(ids.contains("inv-a1:paid:sub-1") && ids.contains("inv-a1:paid:dist-1"));
    assert!(ids.contains("inv-s1:paid:dist-1"));
    assert!(ids.contains("inv-b3-cb:chargeback:dist-1"), "{ids:?}");
    d.terminate();
}

#[test]
fn a_sigkill_in_the_middle_of_the_scenario_changes_no_figure() {
    let _serial = common::serial();
    let redis = common::redis_url();
    let stream = Stream::new("money-crash");
    let cfg = config(&stream, &redis, "default");
    let mut d = Daemon::start(&cfg);
    d.wait_ready(Duration::from_secs(60));
    let mut p = TestProducer::new(&stream.brokers);
    let phases = worked::phases();
    let mut done = (0, 0);
    play(&d, &mut p, &stream, &phases[..3], &mut done);
    // Phase 4 is produced and the daemon killed while it applies it.
    send_records(&mut p, &stream, &phases[3]);
    std::thread::sleep(Duration::from_millis(150));
    d.kill9();
    let mut d = Daemon::start(&cfg);
    d.wait_ready(Duration::from_secs(60));
    let invoices = phases[3]
        .iter()
        .filter(|r| r.topic == worked::Topic::Invoices)
        .count() as u64;
    done.1 += invoices;
    let (_, want) = done;
    assert!(
        wait_until(Duration::from_secs(90), Duration::from_millis(200), || {
            invoices_applied(&d) >= want
        }),
        "phase 4 not applied after the restart\n{}",
        d.output()
    );
    play(&d, &mut p, &stream, &phases[4..], &mut done);
    wait_for_figures(&d);
    d.terminate();
}

fn invoice(partner: &str, id: &str, ts: &str, fee: &str) -> Value {
    json!({
        "invoice_id": id, "ts": ts, "kind": "paid", "partner_id": partner,
        "tenant_id": format!("{partner}-t"), "currency": "USD", "platform_fee": fee,
    })
}

fn partner_fact(id: &str, tier: &str) -> Value {
    json!({
        "type": "partner", "partner_id": id, "name": id, "tier": tier,
        "tier_effective_from": "2026-01-01T00:00:00Z",
    })
}

/// A line waiting for an FX rate is applied when a control fact brings the rate, not an
/// event (CONTRACT §2). So its partner is not passivated while it waits: the gauge keeps
/// counting the line, and the rate books it live (the commission counter moves), with no
/// further event from the partner.
#[test]
fn a_line_waiting_for_its_rate_stays_live_through_passivation_and_is_booked_when_it_comes() {
    let redis = common::redis_url();
    let stream = Stream::new("money-parked-idle");
    let cfg = config(&stream, &redis, "default")
        .replace("[runtime]\n", "[runtime]\npassivate_after = \"1s\"\n");
    assert!(cfg.contains("passivate_after = \"1s\""));
    let mut d = Daemon::start(&cfg);
    d.wait_ready(Duration::from_secs(60));
    let mut p = TestProducer::new(&stream.brokers);
    p.send_sync(
        &stream.control,
        Some("fx-1"),
        partner_fact("fx-1", "gold").to_string().as_bytes(),
    );
    let mut eur = invoice("fx-1", "inv-eur-1", "2026-04-10T10:00:00Z", "1000.00");
    eur["currency"] = json!("EUR");
    p.send_sync(&stream.invoices, Some("fx-1"), eur.to_string().as_bytes());
    assert!(wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || field(&d, "fx-1", "parked_invoices") == 1
    ));
    // A calm partner heard from after fx-1 is passivated: the rounds that passivated it
    // found fx-1 idle longer, and kept it live, still counting its line.
    let calm = json!({
        "event_id": "fx-calm-1", "ts": "2026-04-10T10:00:00Z", "partner_id": "fx-calm",
        "integration_id": "fx-calm-int", "requests": 1, "errors": 0,
    });
    p.send_sync(&stream.usage, Some("fx-calm"), calm.to_string().as_bytes());
    let calm_passivated = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        // Not found until its event is applied.
        let (_, v) = d.request("GET", "/v1/partners/fx-calm", Some(VIEWER_TOKEN), None);
        v["usage"]["events"] == 1 && v["source"] == "store"
    });
    assert!(calm_passivated, "{}", partner(&d, "fx-calm"));
    assert_eq!(partner(&d, "fx-1")["source"], "live");
    assert_eq!(common::group::metric(&d, "warden_invoices_parked"), 1.0);
    let rate = json!({"type": "fx_rate", "currency": "EUR", "usd_per_unit": "1.10",
        "as_of": "2026-04-01T00:00:00Z"});
    p.send_sync(&stream.control, None, rate.to_string().as_bytes());
    // Gold: 12 % of 1,100.00 USD.
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            common::group::metric(&d, "warden_commission_usd_total") == 132.0
        }),
        "the rate did not book the line live"
    );
    assert_eq!(common::group::metric(&d, "warden_invoices_parked"), 0.0);
    assert_eq!(field(&d, "fx-1", "commission_usd"), "132.00");
    d.terminate();
}

/// A refund that waited with its original for a rate and is found to exceed it when the
/// rate arrives is a rule rejection like any other (CONTRACT §2 `over_refund`, §5): it goes
/// to the dead-letter topic under its own record's id, not only to the audit log.
#[test]
fn a_parked_refund_rejected_when_its_rate_arrives_is_dead_lettered_under_its_record() {
    let redis = common::redis_url();
    let stream = Stream::new("money-parked-reject");
    let mut d = Daemon::start(&config(&stream, &redis, "default"));
    d.wait_ready(Duration::from_secs(60));
    let mut p = TestProducer::new(&stream.brokers);
    p.send_sync(
        &stream.control,
        Some("fx-2"),
        partner_fact("fx-2", "gold").to_string().as_bytes(),
    );
    let mut paid = invoice("fx-2", "inv-eur-9", "2026-04-10T10:00:00Z", "100.00");
    paid["currency"] = json!("EUR");
    p.send_sync(&stream.invoices, Some("fx-2"), paid.to_string().as_bytes());
    let mut refund = invoice("fx-2", "ref-eur-9", "2026-04-11T10:00:00Z", "150.00");
    refund["currency"] = json!("EUR");
    refund["kind"] = json!("refund");
    refund["refers_to"] = json!("inv-eur-9");
    let at = p.send_sync(
        &stream.invoices,
        Some("fx-2"),
        refund.to_string().as_bytes(),
    );
    assert!(wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || field(&d, "fx-2", "parked_invoices") == 2
    ));
    let rate = json!({"type": "fx_rate", "currency": "EUR", "usd_per_unit": "1.10",
        "as_of": "2026-04-01T00:00:00Z"});
    p.send_sync(&stream.control, None, rate.to_string().as_bytes());
    let dead = common::consume_all(
        &stream.brokers,
        &stream.deadletter,
        1,
        Duration::from_secs(30),
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter: Value = serde_json::from_slice(&dead[0].3).unwrap();
    assert_eq!(letter["reason"], "over_refund", "{letter}");
    assert_eq!(letter["source_topic"], stream.invoices.as_str());
    assert_eq!(
        (letter["partition"].as_i64(), letter["offset"].as_i64()),
        (Some(at.partition as i64), Some(at.offset)),
        "{letter}"
    );
    // The original is booked: 12 % of 110.00 USD.
    assert_eq!(field(&d, "fx-2", "commission_usd"), "13.20");
    assert_eq!(field(&d, "fx-2", "parked_invoices"), 0);
    d.terminate();
}

#[test]
fn a_late_invoice_for_a_frozen_month_is_an_adjustment_and_payouts_are_finances_alone() {
    let redis = common::redis_url();
    let stream = Stream::new("money-close");
    let mut d = Daemon::start(&config(&stream, &redis, "default"));
    d.wait_ready(Duration::from_secs(60));
    let mut p = TestProducer::new(&stream.brokers);
    p.send_sync(
        &stream.control,
        Some("late-1"),
        partner_fact("late-1", "gold").to_string().as_bytes(),
    );
    p.send(
        &stream.invoices,
        Some("late-1"),
        invoice("late-1", "inv-apr-1", "2026-04-10T10:00:00Z", "1000.00")
            .to_string()
            .as_bytes(),
    );
    p.flush();
    assert!(wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || { field(&d, "late-1", "commission_usd") == "120.00" }
    ));

    // Closing: finance only; an open (current) month cannot be closed.
    let (status, _) = d.request("POST", "/v1/months/2026-04/close", Some(OPERATOR), None);
    assert_eq!(status, 403);
    let current = chrono::Utc::now().format("%Y-%m").to_string();
    let (status, _) = d.request(
        "POST",
        &format!("/v1/months/{current}/close"),
        Some(FINANCE),
        None,
    );
    assert_eq!(status, 409);
    let (status, body) = d.request("POST", "/v1/months/2026-04/close", Some(FINANCE), None);
    assert_eq!(status, 200, "{body}");
    assert!(wait_until(
        Duration::from_secs(15),
        Duration::from_millis(100),
        || { statement(&d, "late-1", "2026-04")["status"] == "pending" }
    ));
    let frozen = statement(&d, "late-1", "2026-04");
    let frozen_bytes = serde_json::to_string(&(&frozen["lines"], &frozen["totals"])).unwrap();

    // A late April invoice lands in May, naming April.
    p.send(
        &stream.invoices,
        Some("late-1"),
        invoice("late-1", "inv-apr-late", "2026-04-28T10:00:00Z", "500.00")
            .to_string()
            .as_bytes(),
    );
    p.flush();
    assert!(wait_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || { field(&d, "late-1", "commission_usd") == "180.00" }
    ));
    let may = statement(&d, "late-1", "2026-05");
    let lines = may["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{may}");
    assert_eq!(lines[0]["origin_month"], "2026-04", "{may}");
    assert_eq!(dec(&lines[0]["commission_usd"]), Decimal::new(6000, 2));
    let after = statement(&d, "late-1", "2026-04");
    assert_eq!(
        serde_json::to_string(&(&after["lines"], &after["totals"])).unwrap(),
        frozen_bytes,
        "the frozen statement changed"
    );

    // Approve and paid: refused for every role but finance, with no effect.
    let approve = "/v1/partners/late-1/statement/2026-04/approve";
    let paid = "/v1/partners/late-1/statement/2026-04/paid";
    let reference = json!({ "reference": "PAY-2026-04-0001" });
    for token in [None, Some(VIEWER_TOKEN), Some(OPERATOR), Some(SECURITY)] {
        let (status, _) = d.request("POST", approve, token, None);
        assert_eq!(status, if token.is_none() { 401 } else { 403 });
        let (status, _) = d.request("POST", paid, token, Some(&reference));
        assert_eq!(status, if token.is_none() { 401 } else { 403 });
    }
    assert_eq!(statement(&d, "late-1", "2026-04")["status"], "pending");
    // Paid before approved is refused; an open month cannot be approved.
    let (status, _) = d.request("POST", paid, Some(FINANCE), Some(&reference));
    assert_eq!(status, 409);
    let (status, _) = d.request(
        "POST",
        "/v1/partners/late-1/statement/2026-05/approve",
        Some(FINANCE),
        None,
    );
    assert_eq!(status, 409);
    let (status, body) = d.request("POST", approve, Some(FINANCE), None);
    assert_eq!(
        (status, body["status"].clone()),
        (200, json!("approved")),
        "{body}"
    );
    // Eight finance requests race to mark it paid, each with its own reference: one
    // wins. Each is audited before its compare-and-set, so a loser that got that far
    // leaves `statements.paid.aborted` under its ref: the audit never shows two payments.
    let answers: Vec<(u16, Value, Value)> = std::thread::scope(|scope| {
        let racing: Vec<_> = (1..=8)
            .map(|i| {
                let d = &d;
                scope.spawn(move || {
                    let r = json!({ "reference": format!("PAY-2026-04-000{i}") });
                    let (status, body) = d.request("POST", paid, Some(FINANCE), Some(&r));
                    (status, body, r)
                })
            })
            .collect();
        racing.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<&(u16, Value, Value)> = answers
        .iter()
        .filter(|(status, body, _)| *status == 200 && body["status"] == "paid")
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(status, ..)| *status == 200 || *status == 409),
        "{answers:?}"
    );
    let reference = winners[0].2.clone();
    // Repeating is harmless; another reference is a conflict.
    let (status, body) = d.request("POST", paid, Some(FINANCE), Some(&reference));
    assert_eq!((status, body["changed"].clone()), (200, json!(false)));
    let (status, _) = d.request(
        "POST",
        paid,
        Some(FINANCE),
        Some(&json!({"reference": "OTHER"})),
    );
    assert_eq!(status, 409);
    let s = statement(&d, "late-1", "2026-04");
    assert_eq!(
        (s["status"].clone(), s["payment_reference"].clone()),
        (json!("paid"), reference["reference"].clone())
    );
    assert_eq!(
        serde_json::to_string(&(&s["lines"], &s["totals"])).unwrap(),
        frozen_bytes
    );

    // Audited: the close, the approval and the payment (once each), and the refusals.
    let audit = d.get_json_with_token("/v1/audit?after_seq=0", Some(SECURITY));
    let records = audit["records"].as_array().cloned().unwrap_or_default();
    let count = |action: &str| records.iter().filter(|r| r["action"] == action).count();
    assert_eq!(count("months.close"), 1, "{audit}");
    assert_eq!(count("statements.approved"), 1, "{audit}");
    let aborted: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "statements.paid.aborted")
        .collect();
    assert_eq!(
        count("statements.paid"),
        1 + aborted.len(),
        "every payment audited but not made says so: {audit}"
    );
    for a in &aborted {
        let first = a["ref"].as_str().unwrap().strip_suffix(":aborted").unwrap();
        assert!(records
            .iter()
            .any(|r| r["ref"] == first && r["action"] == "statements.paid"));
        assert_eq!(a["detail"]["status"], 409);
    }
    let refused = records
        .iter()
        .filter(|r| {
            r["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("statements.") && a.ends_with(".refused"))
        })
        .count();
    assert_eq!(refused, 8, "refusals not audited once each: {audit}");
    d.terminate();
}

#[test]
fn the_reseller_promo_goes_to_exactly_the_first_three_approved_partners_with_two_instances() {
    let _serial = common::serial();
    let redis = common::redis_url();
    let stream = Stream::new("money-promo");
    let cfg = config(&stream, &redis, "reseller");
    let mut a = Daemon::start(&cfg);
    let mut b = Daemon::start(&cfg);
    a.wait_ready(Duration::from_secs(60));
    b.wait_ready(Duration::from_secs(60));
    // Two producers race to approve eight partners.
    let ids: Vec<String> = (0..8).map(|i| format!("promo-{i}")).collect();
    std::thread::scope(|s| {
        for half in ids.chunks(4) {
            let brokers = stream.brokers.clone();
            let control = stream.control.clone();
            s.spawn(move || {
                let mut p = TestProducer::new(&brokers);
                for id in half {
                    p.send(
                        &control,
                        Some(id),
                        partner_fact(id, "standard").to_string().as_bytes(),
                    );
                }
                p.flush();
            });
        }
    });
    // The approval order is the control topic's order, the same for everyone.
    let order: Vec<String> =
        common::consume_all(&stream.brokers, &stream.control, 8, Duration::from_secs(20))
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.3).ok())
            .filter_map(|v| v["partner_id"].as_str().map(str::to_owned))
            .collect();
    assert_eq!(order.len(), 8);
    let mut p = TestProducer::new(&stream.brokers);
    for id in &ids {
        p.send(
            &stream.invoices,
            Some(id),
            invoice(id, &format!("{id}-inv"), "2026-05-05T00:00:00Z", "1000.00")
                .to_string()
                .as_bytes(),
        );
    }
    p.flush();
    for (rank, id) in order.iter().enumerate() {
        let want = if rank < 3 { "500.00" } else { "200.00" };
        for d in [&a, &b] {
            let ok = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
                field(d, id, "commission_usd") == want
            });
            assert!(
                ok,
                "{id} (approved #{rank}) should earn {want}: {}",
                partner(d, id)
            );
        }
    }
    a.terminate();
    b.terminate();
}

#[test]
fn running_out_of_credits_blocks_new_activations_through_enforcement() {
    let redis = common::redis_url();
    let stream = Stream::new("money-credits");
    let mut d = Daemon::start(&config(&stream, &redis, "credits"));
    d.wait_ready(Duration::from_secs(60));
    let mut p = TestProducer::new(&stream.brokers);
    let tenant = |t: &str, value: &str| {
        json!({
            "type": "tenant", "tenant_id": t, "partner_id": "cred-1", "plan": "paid",
            "started_at": "2026-06-01T00:00:00Z", "deployment_value_usd": value,
        })
        .to_string()
    };
    let purchase = |id: &str, credits: &str, paid: &str| {
        json!({
            "type": "credit_purchase", "purchase_id": id, "partner_id": "cred-1",
            "credits": credits, "paid_usd": paid,
        })
        .to_string()
    };
    let key = Some("cred-1");
    p.send(
        &stream.control,
        key,
        partner_fact("cred-1", "specialist").to_string().as_bytes(),
    );
    p.send(
        &stream.control,
        key,
        purchase("buy-1", "3000", "2400").as_bytes(),
    );
    p.send(&stream.control, key, tenant("t-a", "2500").as_bytes());
    p.send(&stream.control, key, tenant("t-b", "1000").as_bytes());
    p.flush();
    // No keyed event at all: the owner wakes the partner for its money facts.
    let tenant_key = format!("{}:enf:tenant:t-b", stream.prefix);
    let partner_key = format!("{}:enf:partner:cred-1", stream.prefix);
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            let h = common::redis_hash(&redis, &tenant_key);
            h.get("level").map(String::as_str) == Some("suspend")
                && h.get("reason").map(String::as_str) == Some("insufficient_credits")
        }),
        "t-b not blocked\n{}",
        d.output()
    );
    let warned = common::redis_hash(&redis, &partner_key);
    assert_eq!(
        warned.get("level").map(String::as_str),
        Some("warn"),
        "{warned:?}"
    );
    assert_eq!(
        dec(&partner(&d, "cred-1")["credits_balance"]),
        Decimal::new(500, 0)
    );
    // t-a got its credits: it is not blocked.
    assert!(common::redis_hash(&redis, &format!("{}:enf:tenant:t-a", stream.prefix)).is_empty());

    // A purchase lets t-b through: its block and the warning are lifted.
    p.send(
        &stream.control,
        key,
        purchase("buy-2", "5000", "4000").as_bytes(),
    );
    p.flush();
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            common::redis_hash(&redis, &tenant_key).is_empty()
                && common::redis_hash(&redis, &partner_key).is_empty()
        }),
        "t-b not lifted\n{}",
        d.output()
    );
    assert_eq!(
        dec(&partner(&d, "cred-1")["credits_balance"]),
        Decimal::new(4500, 0)
    );
    d.terminate();
}
