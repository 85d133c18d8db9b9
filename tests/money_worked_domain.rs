//! The worked scenario of issue 3 (acceptance point 1), checked against the pure money
//! domain: every phase of `tests/common/worked.rs` is decoded with the crate's own decoder
//! and fed, in order, into one `MoneyFacts` and one `Ledger` per partner, the way an owner
//! applies it (control facts to the facts first, then to every ledger; attribution records
//! to the ancestor's ledger at once). Then every hand-computed figure is compared with
//! `Ledger::totals()` and the monthly statements.
//!
//! A mismatch is reported with all the others at once (field, expected, got), so one run
//! shows the whole picture.

#[path = "common/worked.rs"]
mod worked;

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use warden::domain::event::{AttributionEvent, ControlEvent, PartnerEvent, TopicKind};
use warden::domain::money::{
    ControlOutcome, FactOutcome, InvoiceOutcome, Ledger, MdfOutcome, MoneyFacts, MoneyTotals,
    Month, Program, StatementLine, StatementTotals, INSUFFICIENT_COOP_BALANCE,
};
use warden::kafka::decode::{decode_control_record, decode_partner_record, DecodeLimits};

use worked::{expected_month_totals, expected_totals, phases, Topic};

const PARTNERS: [&str; 3] = ["dist-1", "sub-1", "gold-1"];

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_else(|e| panic!("bad decimal {s:?}: {e}"))
}

/// The pure domain as one owner of every partner runs it.
struct World {
    program: Program,
    facts: MoneyFacts,
    ledgers: BTreeMap<String, Ledger>,
    next_control_offset: i64,
    limits: DecodeLimits,
}

impl World {
    fn new() -> World {
        let program = Program::builtin("default")
            .expect("a default program")
            .expect("the default program is valid");
        World {
            program,
            facts: MoneyFacts::new(),
            ledgers: PARTNERS
                .iter()
                .map(|p| (p.to_string(), Ledger::new(*p)))
                .collect(),
            next_control_offset: 0,
            limits: DecodeLimits::default(),
        }
    }

    /// Credits attribution records to their ancestors' ledgers, right away.
    fn credit(&mut self, attributions: Vec<AttributionEvent>) {
        for a in attributions {
            let ledger = self
                .ledgers
                .get_mut(&a.ancestor_id)
                .unwrap_or_else(|| panic!("attribution to unknown ancestor {}", a.ancestor_id));
            let outcome = ledger
                .apply_attribution(&a)
                .unwrap_or_else(|r| panic!("attribution {} rejected: {r:?}", a.attribution_id));
            assert_eq!(outcome, InvoiceOutcome::Accrued, "{}", a.attribution_id);
        }
    }

    fn control(&mut self, value: &serde_json::Value) {
        let payload = serde_json::to_vec(value).unwrap();
        let fact: ControlEvent = decode_control_record(Some(&payload), &self.limits)
            .unwrap_or_else(|r| panic!("control fact {value} rejected: {r:?}"));
        let offset = self.next_control_offset;
        self.next_control_offset += 1;
        match self.facts.apply(offset, &fact) {
            FactOutcome::Applied => {}
            FactOutcome::Ignored(_) if matches!(fact, ControlEvent::MdfExpense { .. }) => {}
            other => panic!("control fact {value}: {other:?}"),
        }
        for id in PARTNERS {
            let ledger = self.ledgers.get_mut(id).unwrap();
            let outcome = ledger.apply_control(offset, &fact, &self.facts, &self.program);
            let mut attributions = Vec::new();
            if let ControlOutcome::Fx(arrival) = outcome {
                assert!(
                    arrival.rejected.is_empty(),
                    "{id}: parked lines rejected on FX arrival: {:?}",
                    arrival.rejected
                );
                for (e, fx) in arrival.applied {
                    assert_eq!(fx.outcome, InvoiceOutcome::Accrued, "{}", e.invoice_id);
                    attributions.extend(fx.attributions);
                }
            }
            self.credit(attributions);
        }
    }

    fn invoice(&mut self, value: &serde_json::Value, key: Option<&str>) {
        let payload = serde_json::to_vec(value).unwrap();
        let event = decode_partner_record(
            TopicKind::Invoices,
            key.map(str::as_bytes),
            Some(&payload),
            None,
            &self.limits,
        )
        .unwrap_or_else(|r| panic!("invoice {value} rejected by the decoder: {r:?}"));
        let PartnerEvent::Invoice(e) = event else {
            panic!("not an invoice: {value}");
        };
        let ledger = self
            .ledgers
            .get_mut(&e.partner_id)
            .unwrap_or_else(|| panic!("invoice of unknown partner {}", e.partner_id));
        let fx = ledger
            .apply_invoice(&e, &self.facts, &self.program)
            .unwrap_or_else(|r| panic!("invoice {} rejected: {r:?}", e.invoice_id));
        assert_ne!(fx.outcome, InvoiceOutcome::Duplicate, "{}", e.invoice_id);
        self.credit(fx.attributions);
    }

    fn ledger(&self, id: &str) -> &Ledger {
        &self.ledgers[id]
    }
}

fn run() -> World {
    let mut w = World::new();
    for (i, phase) in phases().iter().enumerate() {
        let topic = phase.first().map(|r| r.topic);
        assert!(
            phase.iter().all(|r| Some(r.topic) == topic),
            "phase {} mixes control facts and invoices",
            i + 1
        );
        for r in phase {
            match r.topic {
                Topic::Control => w.control(&r.value),
                Topic::Invoices => w.invoice(&r.value, r.key()),
            }
        }
    }
    w
}

fn total_field(t: &MoneyTotals, field: &str) -> String {
    match field {
        "attributed_revenue_usd" => t.attributed_revenue_usd.to_string(),
        "commission_usd" => t.commission_usd.to_string(),
        "override_commission_usd" => t.override_commission_usd.to_string(),
        "coop_accrued_usd" => t.coop_accrued_usd.to_string(),
        "coop_balance_usd" => t.coop_balance_usd.to_string(),
        "mdf_drawn_usd" => t.mdf_drawn_usd.to_string(),
        "parked_invoices" => t.parked_invoices.to_string(),
        other => panic!("unknown totals field {other}"),
    }
}

fn statement_field(t: &StatementTotals, field: &str) -> String {
    match field {
        "attributed_revenue_usd" => t.attributed_revenue_usd.to_string(),
        "rate_commission_usd" => t.rate_commission_usd.to_string(),
        "volume_bonus_usd" => t.volume_bonus_usd.to_string(),
        "commission_usd" => t.commission_usd.to_string(),
        "override_commission_usd" => t.override_commission_usd.to_string(),
        "coop_accrued_usd" => t.coop_accrued_usd.to_string(),
        "upline_overrides_usd" => t.upline_overrides_usd.to_string(),
        "payout_usd" => t.payout_usd.to_string(),
        "lines" => t.lines.to_string(),
        other => panic!("unknown statement field {other}"),
    }
}

/// Numeric comparison (`0` equals `0.00`).
fn same(expected: &str, got: &str) -> bool {
    d(expected) == d(got)
}

#[test]
fn worked_scenario_totals_match_the_hand_computed_figures() {
    let w = run();
    let mut wrong = Vec::new();
    for x in expected_totals() {
        let got = total_field(&w.ledger(x.partner_id).totals(), x.field);
        if !same(x.value, &got) {
            wrong.push(format!(
                "{} {}: expected {}, got {got}",
                x.partner_id, x.field, x.value
            ));
        }
    }
    // Every partner and field of §6's money part is covered.
    for p in PARTNERS {
        assert_eq!(
            expected_totals()
                .iter()
                .filter(|x| x.partner_id == p)
                .count(),
            7,
            "{p}"
        );
        let t = w.ledger(p).totals();
        assert_eq!(t.coop_clawback_due_usd, Decimal::ZERO, "{p}: no clawback");
    }
    assert!(wrong.is_empty(), "totals differ:\n{}", wrong.join("\n"));
}

#[test]
fn worked_scenario_monthly_statements_match_the_hand_computed_figures() {
    let w = run();
    let mut wrong = Vec::new();
    for (partner, month, fields) in expected_month_totals() {
        let month: Month = month.parse().unwrap();
        let st = w.ledger(partner).statement(month);
        for (field, expected) in fields {
            let got = statement_field(&st.totals, field);
            if !same(expected, &got) {
                wrong.push(format!(
                    "{partner} {month} {field}: expected {expected}, got {got}"
                ));
            }
        }
    }
    for p in PARTNERS {
        let months: Vec<String> = w
            .ledger(p)
            .statement_months()
            .iter()
            .map(|m| m.to_string())
            .collect();
        if months != ["2026-04", "2026-05", "2026-06"] {
            wrong.push(format!("{p}: statement months {months:?}"));
        }
    }
    assert!(wrong.is_empty(), "statements differ:\n{}", wrong.join("\n"));
}

fn line<'a>(lines: &'a [StatementLine], line_id: &str) -> &'a StatementLine {
    lines
        .iter()
        .find(|l| l.line_id == line_id)
        .unwrap_or_else(|| panic!("no line {line_id}"))
}

/// The rules the scenario exercises, line by line (rates used, spiffs, FX, MDF, parking).
#[test]
fn worked_scenario_lines_show_the_rules_they_exercise() {
    let w = run();
    let gold = w.ledger("gold-1");
    let april = gold.statement("2026-04".parse().unwrap()).lines;
    let may = gold.statement("2026-05".parse().unwrap()).lines;
    let june = gold.statement("2026-06".parse().unwrap()).lines;
    let pricing = |l: &StatementLine| l.pricing.clone().expect("a paid line has pricing");
    let spiffs = |l: &StatementLine| -> Vec<String> {
        pricing(l)
            .spiffs
            .iter()
            .map(|s| s.spiff_id.clone())
            .collect()
    };
    let ts = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();

    // inv-a1: the TIE 100.025 → 100.02 on sub-1's override; 60.015 → 60.02 on dist-1's.
    let a1 = line(&april, "inv-a1:paid");
    let ups: Vec<(String, Decimal)> = a1
        .overrides
        .iter()
        .map(|o| (o.ancestor_id.clone(), o.amount_usd))
        .collect();
    assert_eq!(
        ups,
        vec![
            ("sub-1".to_string(), d("100.02")),
            ("dist-1".to_string(), d("60.02"))
        ]
    );
    // inv-a2: spiff met through the conversion (47000 EUR = 50877.50 USD); 162.375 → 162.38.
    let a2 = line(&april, "inv-a2:paid");
    assert_eq!(spiffs(a2), ["q2-new-logo"]);
    assert_eq!(
        (pricing(a2).rate, a2.commission_usd),
        (d("0.15"), d("162.38"))
    );
    // inv-a3: new logo but 40000 < 50000: no spiff.
    assert!(spiffs(line(&april, "inv-a3:paid")).is_empty());
    // inv-a4: parked, then applied with the first JPY rate, later than its ts.
    let a4 = pricing(line(&april, "inv-a4:paid"));
    assert_eq!(
        (a4.usd_per_unit, a4.fx_as_of, a4.fx_after_ts),
        (d("0.0065"), Some(ts("2026-04-10T00:00:00Z")), true)
    );
    let a5 = pricing(line(&april, "inv-a5:paid"));
    assert_eq!((a5.usd_per_unit, a5.fx_after_ts), (d("0.0065"), false));
    assert_eq!(line(&april, "inv-a5:paid").base_usd, d("802.47"));
    // inv-b2: converted at 1.0825 (the 05-15 rate came later and never re-rates it);
    // base TIE 5683.125 → 5683.12; the threshold is crossed inside it: bonus 16.83.
    let b2 = line(&may, "inv-b2:paid");
    assert_eq!(pricing(b2).usd_per_unit, d("1.0825"));
    assert_eq!(
        (b2.base_usd, b2.volume_bonus_usd),
        (d("5683.12"), d("16.83"))
    );
    assert_eq!(line(&may, "inv-b3:paid").volume_bonus_usd, d("10.00"));
    // inv-c1: gold before 06-15, the 05-15 EUR rate, spiff; inv-c2: platinum after 06-15.
    let c1 = pricing(line(&june, "inv-c1:paid"));
    assert_eq!(
        (c1.tier.as_str(), c1.usd_per_unit, c1.rate),
        ("gold", d("1.0950"), d("0.15"))
    );
    let c2 = pricing(line(&june, "inv-c2:paid"));
    assert_eq!((c2.tier.as_str(), c2.rate), ("platinum", d("0.15")));
    assert!(c2.spiffs.is_empty());
    // The partial refund and the chargeback, in June.
    let r1 = line(&june, "inv-b2-r1:refund");
    assert_eq!(
        (
            r1.base_usd,
            r1.commission_usd,
            r1.volume_bonus_usd,
            r1.coop_usd
        ),
        (d("-1136.62"), d("-136.39"), d("-3.37"), d("-22.73"))
    );
    let cb = line(&june, "inv-b3-cb:chargeback");
    assert_eq!(
        (
            cb.base_usd,
            cb.commission_usd,
            cb.volume_bonus_usd,
            cb.coop_usd
        ),
        (d("-1000.00"), d("-120.00"), d("-10.00"), d("-20.00"))
    );
    // The CHF line waits, visible.
    let parked: Vec<&str> = gold
        .parked()
        .iter()
        .map(|p| p.event.invoice_id.as_str())
        .collect();
    assert_eq!(parked, ["inv-c5"]);
    // MDF: covered, refused for balance, rejected.
    let mdf = |id: &str| gold.coop_wallet().mdf_record(id).expect(id).outcome;
    assert_eq!(mdf("mdf-1"), MdfOutcome::Drawn);
    assert_eq!(mdf("mdf-2"), MdfOutcome::Refused);
    assert_eq!(mdf("mdf-2").reason(), Some(INSUFFICIENT_COOP_BALANCE));
    assert_eq!(mdf("mdf-3"), MdfOutcome::Rejected);
    // sub-1's own June line: the TIE 16.425 → 16.42 on dist-1's override.
    let sub_june = w
        .ledger("sub-1")
        .statement("2026-06".parse().unwrap())
        .lines;
    let s2 = line(&sub_june, "inv-s2:paid");
    assert_eq!(s2.overrides[0].amount_usd, d("16.42"));
}

/// The data follows CONTRACT §1: money and rates are JSON strings, and every record
/// has the key its topic asks for.
#[test]
fn worked_scenario_records_follow_the_contract_shapes() {
    const MONEY: [&str; 12] = [
        "platform_fee",
        "overage",
        "processing_cost",
        "contract_value",
        "override_rate",
        "extra_rate",
        "min_contract_value_usd",
        "monthly_threshold_usd",
        "bonus_rate",
        "usd_per_unit",
        "amount_usd",
        "coop_rate",
    ];
    for r in phases().iter().flatten() {
        let obj = r.value.as_object().expect("a JSON object");
        for (k, v) in obj {
            if MONEY.contains(&k.as_str()) {
                assert!(v.is_string(), "{k} must be a string in {}", r.value);
            }
        }
        match r.topic {
            Topic::Control => assert!(obj.contains_key("type"), "{}", r.value),
            Topic::Invoices => assert!(r.key().is_some(), "{}", r.value),
        }
    }
}
