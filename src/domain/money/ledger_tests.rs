//! Hand-computed figures for the invoice and attribution paths (arithmetic in the comments).

use super::testkit::{
    chain_facts, chargeback, d, default_program, gold_facts, m, paid, partner_fact, program,
    refund, t,
};
use super::*;
use crate::domain::event::{ControlEvent, DeadLetterReason, InvoiceKind};

#[test]
fn a_paid_line_accrues_commission_coop_and_overrides() {
    let (f, prog) = (chain_facts(), default_program());
    let mut l = Ledger::new("p");
    let fx = l
        .apply_invoice(&paid("inv-1", "2026-05-14T09:30:00Z", "1234.50"), &f, &prog)
        .unwrap();
    // base 1234.50; gold 12 % = 148.14; co-op 2 % = 24.69;
    // sub 3 % = 37.035 → 37.04 (half-even: 37.035 → 37.04, 4 is even); dist 2 % = 24.69.
    assert_eq!(fx.outcome, InvoiceOutcome::Accrued);
    assert_eq!(
        (fx.commission_accrued_usd, fx.coop_accrued_usd),
        (d("148.14"), d("24.69"))
    );
    let ids: Vec<(&str, Decimal)> = fx
        .attributions
        .iter()
        .map(|a| (a.attribution_id.as_str(), a.amount_usd))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("inv-1:paid:sub", d("37.04")),
            ("inv-1:paid:dist", d("24.69"))
        ]
    );
    assert!(fx
        .attributions
        .iter()
        .all(|a| a.base_usd == d("1234.50") && a.partner_id == "p"));
    let tot = l.totals();
    assert_eq!(
        (
            tot.attributed_revenue_usd,
            tot.commission_usd,
            tot.coop_accrued_usd,
            tot.coop_balance_usd
        ),
        (d("1234.50"), d("148.14"), d("24.69"), d("24.69"))
    );
    let st = l.statement(m("2026-05"));
    assert_eq!(st.lines.len(), 1);
    assert_eq!(st.totals.upline_overrides_usd, d("61.73"));
    assert_eq!(l.coop_wallet().postings()[0].id, "inv-1:paid");
}

#[test]
fn duplicates_are_no_ops_and_wrong_partner_is_refused() {
    let (f, prog) = (gold_facts(), default_program());
    let mut l = Ledger::new("p");
    let e = paid("inv-1", "2026-05-14T09:30:00Z", "100");
    l.apply_invoice(&e, &f, &prog).unwrap();
    let before = l.clone();
    assert_eq!(
        l.apply_invoice(&e, &f, &prog).unwrap().outcome,
        InvoiceOutcome::Duplicate
    );
    assert_eq!(l, before);
    let mut other = e.clone();
    other.partner_id = "q".into();
    assert_eq!(
        l.apply_invoice(&other, &f, &prog).unwrap_err().reason,
        DeadLetterReason::WrongKey
    );
}

#[test]
fn refunds_reverse_in_proportion_up_the_chain_and_chargebacks_are_flagged() {
    let (f, prog) = (chain_facts(), default_program());
    let mut l = Ledger::new("p");
    l.apply_invoice(&paid("inv-1", "2026-05-14T09:30:00Z", "1234.50"), &f, &prog)
        .unwrap();
    // Refund 411.50 of 1234.50 (p = 1/3): base 1234.50 × 411.50 / 1234.50 = 411.50;
    // commission 148.14 × 411.5 / 1234.5 = 49.38; co-op 24.69 → 8.23;
    // sub 37.04 → 12.3466… → 12.35; dist 24.69 → 8.23.
    let fx = l
        .apply_invoice(
            &refund("cn-1", "inv-1", "2026-05-20T00:00:00Z", "411.50"),
            &f,
            &prog,
        )
        .unwrap();
    assert_eq!(
        (fx.outcome, fx.chargeback, fx.commission_reversed_usd),
        (InvoiceOutcome::Reversed, false, d("49.38"))
    );
    let att: Vec<(&str, Decimal, Decimal)> = fx
        .attributions
        .iter()
        .map(|a| (a.attribution_id.as_str(), a.amount_usd, a.base_usd))
        .collect();
    assert_eq!(
        att,
        vec![
            ("cn-1:refund:sub", d("-12.35"), d("-411.50")),
            ("cn-1:refund:dist", d("-8.23"), d("-411.50"))
        ]
    );
    assert!(fx
        .attributions
        .iter()
        .all(|a| a.kind == InvoiceKind::Refund));
    // The rest as a chargeback: exactly what is left (823.00 of base, 98.76, 16.46, 24.69, 16.46).
    let fx = l
        .apply_invoice(
            &chargeback("cb-1", "inv-1", "2026-05-21T00:00:00Z", "823.00"),
            &f,
            &prog,
        )
        .unwrap();
    assert!(fx.chargeback);
    assert_eq!(fx.commission_reversed_usd, d("98.76"));
    assert_eq!(fx.attributions[0].amount_usd, d("-24.69"));
    let tot = l.totals();
    assert_eq!(
        (
            tot.attributed_revenue_usd,
            tot.commission_usd,
            tot.coop_accrued_usd,
            tot.coop_balance_usd
        ),
        (d("0"), d("0"), d("0"), d("0"))
    );
    let st = l.statement(m("2026-05"));
    assert_eq!(st.lines[1].refers_to_month, Some(m("2026-05")));
    assert_eq!(st.lines[2].kind, LineKind::Chargeback);
}

#[test]
fn over_refund_and_unknown_original_are_rejected_without_trace() {
    let (f, prog) = (gold_facts(), default_program());
    let mut l = Ledger::new("p");
    l.apply_invoice(&paid("inv-1", "2026-05-14T09:30:00Z", "100"), &f, &prog)
        .unwrap();
    l.apply_invoice(
        &refund("cn-1", "inv-1", "2026-05-15T00:00:00Z", "60"),
        &f,
        &prog,
    )
    .unwrap();
    let before = l.clone();
    let err = l
        .apply_invoice(
            &refund("cn-2", "inv-1", "2026-05-16T00:00:00Z", "40.01"),
            &f,
            &prog,
        )
        .unwrap_err();
    assert_eq!(err.reason, DeadLetterReason::OverRefund);
    let err = l
        .apply_invoice(
            &refund("cn-3", "nope", "2026-05-16T00:00:00Z", "1"),
            &f,
            &prog,
        )
        .unwrap_err();
    assert_eq!(err.reason, DeadLetterReason::UnknownOriginal);
    let mut eur = refund("cn-4", "inv-1", "2026-05-16T00:00:00Z", "1");
    eur.currency = "EUR".into();
    assert_eq!(
        l.apply_invoice(&eur, &f, &prog).unwrap_err().reason,
        DeadLetterReason::InvalidValue
    );
    let mut no_ref = refund("cn-5", "inv-1", "2026-05-16T00:00:00Z", "1");
    no_ref.refers_to = None;
    assert_eq!(
        l.apply_invoice(&no_ref, &f, &prog).unwrap_err().reason,
        DeadLetterReason::MissingRefersTo
    );
    assert_eq!(l, before);
    // The rejected id was not marked seen: the right amount still applies.
    assert!(l
        .apply_invoice(
            &refund("cn-2", "inv-1", "2026-05-16T00:00:00Z", "40"),
            &f,
            &prog
        )
        .is_ok());
}

#[test]
fn volume_bonus_is_monthly_and_reversals_keep_the_month_base() {
    let (mut f, prog) = (gold_facts(), default_program());
    f.apply(
        1,
        &ControlEvent::VolumeBonus {
            partner_id: None,
            monthly_threshold_usd: d("1000"),
            bonus_rate: d("0.02"),
        },
    );
    let mut l = Ledger::new("p");
    l.apply_invoice(&paid("a", "2026-05-01T00:00:00Z", "800"), &f, &prog)
        .unwrap();
    // 800 → 1300: bonus 0.02 × 300 = 6.00; commission 12 % of 500 = 60.00 → 66.00 total.
    let fx = l
        .apply_invoice(&paid("b", "2026-05-02T00:00:00Z", "500"), &f, &prog)
        .unwrap();
    assert_eq!(fx.commission_accrued_usd, d("66.00"));
    l.apply_invoice(&refund("rb", "b", "2026-05-03T00:00:00Z", "500"), &f, &prog)
        .unwrap();
    assert_eq!(l.month_base_usd(m("2026-05")), d("1300"));
    // Next line 100 → base 1400: bonus f(1400) − f(1300) = 8.00 − 6.00 = 2.00.
    let fx = l
        .apply_invoice(&paid("c", "2026-05-04T00:00:00Z", "100"), &f, &prog)
        .unwrap();
    assert_eq!(fx.commission_accrued_usd, d("14.00"));
    // Another month starts from 0.
    let fx = l
        .apply_invoice(&paid("d", "2026-06-01T00:00:00Z", "100"), &f, &prog)
        .unwrap();
    assert_eq!(fx.commission_accrued_usd, d("12.00"));
}

#[test]
fn tier_changes_are_prospective_and_accrued_lines_keep_their_rate() {
    let (mut f, prog) = (MoneyFacts::new(), default_program());
    f.apply(0, &partner_fact("p", "silver", None));
    let mut l = Ledger::new("p");
    l.apply_invoice(&paid("a", "2026-05-10T00:00:00Z", "100"), &f, &prog)
        .unwrap(); // 8.00
    f.apply(
        1,
        &ControlEvent::TierChange {
            partner_id: "p".into(),
            tier: "gold".into(),
            effective_from: t("2026-05-15T00:00:00Z"),
        },
    );
    let before_change = l
        .apply_invoice(&paid("b", "2026-05-14T00:00:00Z", "100"), &f, &prog)
        .unwrap();
    let after_change = l
        .apply_invoice(&paid("c", "2026-05-15T00:00:00Z", "100"), &f, &prog)
        .unwrap();
    assert_eq!(
        (
            before_change.commission_accrued_usd,
            after_change.commission_accrued_usd
        ),
        (d("8.00"), d("12.00"))
    );
    let st = l.statement(m("2026-05"));
    assert_eq!(st.lines[0].pricing.as_ref().unwrap().tier, "silver");
    assert_eq!(st.totals.commission_usd, d("28.00"));
}

/// A partner's own rates take effect when their fact arrives, and only for lines booked
/// after it (LESSONS, "rates need versions"): a line accrued before keeps its rate, and
/// its refund reverses at that rate, not the new one.
#[test]
fn a_partner_rate_change_leaves_accrued_lines_and_their_refunds_at_the_old_rate() {
    let (mut f, prog) = (MoneyFacts::new(), default_program());
    f.apply(0, &partner_fact("p", "silver", None));
    let mut l = Ledger::new("p");
    let before = l
        .apply_invoice(&paid("a", "2026-05-10T00:00:00Z", "100"), &f, &prog)
        .unwrap();
    assert_eq!(before.commission_accrued_usd, d("8.00"), "silver, 8 %");
    let mut rates = partner_fact("p", "silver", None);
    if let ControlEvent::Partner {
        coop_rate,
        commission_rate,
        ..
    } = &mut rates
    {
        (*coop_rate, *commission_rate) = (Some(d("0.05")), Some(d("0.30")));
    }
    f.apply(1, &rates);
    let after = l
        .apply_invoice(&paid("b", "2026-05-11T00:00:00Z", "100"), &f, &prog)
        .unwrap();
    assert_eq!(
        after.commission_accrued_usd,
        d("30.00"),
        "the partner's own rate"
    );
    l.apply_invoice(&refund("r", "a", "2026-05-12T00:00:00Z", "50"), &f, &prog)
        .unwrap();
    let st = l.statement(m("2026-05"));
    let commissions: Vec<_> = st.lines.iter().map(|l| l.commission_usd).collect();
    assert_eq!(
        commissions,
        [d("8.00"), d("30.00"), d("-4.00")],
        "half of 8.00"
    );
    let coop: Vec<_> = st.lines.iter().map(|l| l.coop_usd).collect();
    assert_eq!(coop, [d("2.00"), d("5.00"), d("-1.00")], "co-op alike");
    assert_eq!(st.totals.commission_usd, d("34.00"));
}

#[test]
fn the_first_three_approved_resellers_earn_the_promo() {
    let prog = program("reseller");
    let mut f = MoneyFacts::new();
    for (i, p) in ["r1", "r2", "r3", "r4"].iter().enumerate() {
        f.apply(i as i64, &partner_fact(p, "standard", None));
    }
    let earned = |p: &str| {
        let mut l = Ledger::new(p);
        let mut e = paid("i", "2026-05-01T00:00:00Z", "99.99");
        e.partner_id = p.into();
        e.overage = d("0.02");
        l.apply_invoice(&e, &f, &prog)
            .unwrap()
            .commission_accrued_usd
    };
    // base 100.01: 50 % = 50.005 → 50.00 (half-even); 20 % = 20.002 → 20.00.
    assert_eq!(
        [earned("r1"), earned("r3"), earned("r4")],
        [d("50.00"), d("50.00"), d("20.00")]
    );
}

#[test]
fn attributions_are_credited_once_to_the_ancestor() {
    let (f, prog) = (chain_facts(), default_program());
    let mut child = Ledger::new("p");
    let fx = child
        .apply_invoice(&paid("inv-1", "2026-05-14T09:30:00Z", "1234.50"), &f, &prog)
        .unwrap();
    let mut sub = Ledger::new("sub");
    assert_eq!(
        sub.apply_attribution(&fx.attributions[0]),
        Ok(InvoiceOutcome::Accrued)
    );
    assert_eq!(
        sub.apply_attribution(&fx.attributions[0]),
        Ok(InvoiceOutcome::Duplicate)
    );
    assert_eq!(
        sub.apply_attribution(&fx.attributions[1])
            .unwrap_err()
            .reason,
        DeadLetterReason::WrongKey
    );
    let rv = child
        .apply_invoice(
            &refund("cn", "inv-1", "2026-05-20T00:00:00Z", "1234.50"),
            &f,
            &prog,
        )
        .unwrap();
    sub.apply_attribution(&rv.attributions[0]).unwrap();
    let st = sub.statement(m("2026-05"));
    assert_eq!(st.lines[0].from_partner_id.as_deref(), Some("p"));
    assert_eq!(
        (
            st.totals.override_commission_usd,
            sub.totals().override_commission_usd
        ),
        (d("0"), d("0"))
    );
    assert_eq!(st.lines[1].override_commission_usd, d("-37.04"));
}

#[test]
fn a_looping_chain_is_rejected() {
    let mut f = MoneyFacts::new();
    f.apply(0, &partner_fact("p", "gold", Some("q")));
    f.apply(1, &partner_fact("q", "gold", Some("p")));
    let mut l = Ledger::new("p");
    let err = l
        .apply_invoice(
            &paid("i", "2026-05-01T00:00:00Z", "1"),
            &f,
            &default_program(),
        )
        .unwrap_err();
    assert_eq!(err.reason, DeadLetterReason::InvalidValue);
    assert!(err.detail.contains(CHAIN_LOOPS));
    assert_eq!(l, Ledger::new("p"));
}

#[test]
fn overflow_is_rejected_and_leaves_no_trace() {
    let (f, prog) = (gold_facts(), default_program());
    let mut l = Ledger::new("p");
    l.apply_invoice(&paid("a", "2026-05-01T00:00:00Z", "1"), &f, &prog)
        .unwrap();
    let before = l.clone();
    let mut huge = paid("b", "2026-05-01T00:00:00Z", "1");
    huge.platform_fee = Decimal::MAX;
    assert_eq!(
        l.apply_invoice(&huge, &f, &prog).unwrap_err().reason,
        DeadLetterReason::ArithmeticOverflow
    );
    assert_eq!(l, before);
}

#[test]
fn the_ledger_round_trips_and_totals_are_strings() {
    let (f, prog) = (chain_facts(), default_program());
    let mut l = Ledger::new("p");
    l.apply_invoice(&paid("inv-1", "2026-05-14T09:30:00Z", "1234.50"), &f, &prog)
        .unwrap();
    l.apply_invoice(
        &refund("cn-1", "inv-1", "2026-05-20T00:00:00Z", "100"),
        &f,
        &prog,
    )
    .unwrap();
    l.freeze(m("2026-05"));
    let json = serde_json::to_string(&l).unwrap();
    let back: Ledger = serde_json::from_str(&json).unwrap();
    assert_eq!(back, l);
    let totals = serde_json::to_value(l.totals()).unwrap();
    assert_eq!(totals["attributed_revenue_usd"], "1134.50");
    assert_eq!(totals["commission_usd"], "136.14");
}

/// An invoice dated year 26 (an upstream's two-digit-year bug) is a valid §1 timestamp: its
/// line, and the override it sends up the chain, must not make either partner's snapshot
/// unreadable (which would hold its partition's events from then on).
#[test]
fn a_line_dated_in_year_26_keeps_its_partners_and_their_ancestors_snapshots_readable() {
    let (f, prog) = (chain_facts(), default_program());
    let mut l = Ledger::new("p");
    let fx = l
        .apply_invoice(&paid("typo", "0026-05-14T09:30:00Z", "100"), &f, &prog)
        .unwrap();
    assert_eq!(fx.outcome, InvoiceOutcome::Accrued);
    let mut sub = Ledger::new("sub");
    sub.apply_attribution(&fx.attributions[0]).unwrap();
    for ledger in [&l, &sub] {
        let json = serde_json::to_string(ledger).unwrap();
        let back: Ledger = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, ledger);
    }
}
