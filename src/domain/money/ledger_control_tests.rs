//! Hand-computed figures for the control paths: FX arrivals, month close, MDF, credits,
//! status (arithmetic in the comments).

use super::testkit::{d, default_program, gold_facts, m, paid, partner_fact, program, refund, t};
use super::*;
use crate::domain::event::{ControlEvent, MdfDecision, TenantPlan};

#[test]
fn a_currency_without_a_rate_parks_then_applies_when_the_rate_arrives() {
    let (mut f, prog) = (gold_facts(), default_program());
    let mut l = Ledger::new("p");
    let mut e = paid("inv-eur", "2026-05-14T00:00:00Z", "1000");
    e.currency = "EUR".into();
    let fx = l.apply_invoice(&e, &f, &prog).unwrap();
    assert!(fx.parked && fx.attributions.is_empty());
    let mut r = refund("cn-eur", "inv-eur", "2026-05-15T00:00:00Z", "250");
    r.currency = "EUR".into();
    assert!(l.apply_invoice(&r, &f, &prog).unwrap().parked);
    assert_eq!(l.totals().parked_invoices, 2);
    assert_eq!(
        l.apply_invoice(&e, &f, &prog).unwrap().outcome,
        InvoiceOutcome::Duplicate
    );
    // The first EUR rate is dated after the line: used, flagged fx_after_ts.
    let fact = ControlEvent::FxRate {
        currency: "EUR".into(),
        usd_per_unit: d("1.0825"),
        as_of: t("2026-05-20T00:00:00Z"),
    };
    f.apply(1, &fact);
    let ControlOutcome::Fx(arrival) = l.apply_control(1, &fact, &f, &prog) else {
        panic!("fx")
    };
    assert_eq!(arrival.applied.len(), 2);
    assert!(arrival.rejected.is_empty());
    // 1000 EUR × 1.0825 = 1082.50 USD; 12 % = 129.90. Refund 250/1000: 270.625 → 270.62 base.
    let tot = l.totals();
    assert_eq!(
        (tot.parked_invoices, tot.attributed_revenue_usd),
        (0, d("811.88"))
    );
    let st = l.statement(m("2026-05"));
    let pricing = st.lines[0].pricing.as_ref().unwrap();
    assert!(pricing.fx_after_ts);
    assert_eq!(
        (pricing.usd_per_unit, pricing.fx_as_of, st.lines[0].base_usd),
        (d("1.0825"), Some(t("2026-05-20T00:00:00Z")), d("1082.50"))
    );
    assert_eq!(st.lines[1].base_usd, d("-270.62"));
    // Each line keeps its own currency and amount (the refunded amount on the reversal)
    // beside the USD it was booked at.
    let kept: Vec<_> = st
        .lines
        .iter()
        .map(|l| (l.currency.as_deref(), l.amount))
        .collect();
    assert_eq!(
        kept,
        [
            (Some("EUR"), Some(d("1000"))),
            (Some("EUR"), Some(d("250")))
        ]
    );
    // A later rate never re-rates the line; a second arrival finds nothing parked.
    let later = ControlEvent::FxRate {
        currency: "EUR".into(),
        usd_per_unit: d("2"),
        as_of: t("2026-05-01T00:00:00Z"),
    };
    f.apply(2, &later);
    assert_eq!(
        l.apply_control(2, &later, &f, &prog),
        ControlOutcome::Fx(FxArrival::default())
    );
    assert_eq!(l.statement(m("2026-05")).lines[0].base_usd, d("1082.50"));
}

#[test]
fn a_late_line_for_a_frozen_month_is_an_adjustment_in_the_open_month() {
    let (mut f, prog) = (gold_facts(), default_program());
    f.apply(
        1,
        &ControlEvent::VolumeBonus {
            partner_id: Some("p".into()),
            monthly_threshold_usd: d("100"),
            bonus_rate: d("0.10"),
        },
    );
    let mut l = Ledger::new("p");
    l.apply_invoice(&paid("a", "2026-04-10T00:00:00Z", "150"), &f, &prog)
        .unwrap();
    let close = ControlEvent::MonthClose {
        month: "2026-04".into(),
    };
    assert_eq!(
        l.apply_control(2, &close, &f, &prog),
        ControlOutcome::MonthClosed {
            month: m("2026-04"),
            transition: Transition::Changed
        }
    );
    let frozen = l.statement(m("2026-04"));
    // April's late line: April's base 150 → 200, bonus f(200) − f(150) = 10.00 − 5.00 = 5.00.
    let fx = l
        .apply_invoice(&paid("late", "2026-04-30T00:00:00Z", "50"), &f, &prog)
        .unwrap();
    assert_eq!(fx.commission_accrued_usd, d("11.00")); // 12 % of 50 = 6.00 + 5.00
    assert_eq!(l.statement(m("2026-04")), frozen);
    let may = l.statement(m("2026-05"));
    assert_eq!(
        (may.lines.len(), may.lines[0].origin_month),
        (1, Some(m("2026-04")))
    );
    assert_eq!(may.totals.commission_usd, d("11.00"));
    assert_eq!(l.month_base_usd(m("2026-04")), d("200"));
    assert_eq!(l.month_base_usd(m("2026-05")), d("0"));
    let bad = ControlEvent::MonthClose {
        month: "April".into(),
    };
    assert!(matches!(
        l.apply_control(3, &bad, &f, &prog),
        ControlOutcome::Ignored(_)
    ));
}

/// LESSONS (refund after payout): a refund of a line whose month is frozen (closed, then
/// approved and paid by finance, which lives outside the ledger) never changes that
/// statement. Dated in the frozen month, it lands in the open month as a negative
/// adjustment naming its origin; dated later, it is a line of its own month.
#[test]
fn a_refund_after_its_month_is_frozen_is_a_negative_adjustment_in_the_open_month() {
    let (f, prog) = (gold_facts(), default_program());
    let mut l = Ledger::new("p");
    l.apply_invoice(&paid("a", "2026-04-10T00:00:00Z", "1000"), &f, &prog)
        .unwrap(); // commission 120.00
    let close = ControlEvent::MonthClose {
        month: "2026-04".into(),
    };
    l.apply_control(2, &close, &f, &prog);
    let frozen = l.statement(m("2026-04"));
    assert_eq!(frozen.totals.commission_usd, d("120.00"));
    let late = refund("r-late", "a", "2026-04-20T00:00:00Z", "250");
    let fx = l.apply_invoice(&late, &f, &prog).unwrap();
    assert_eq!(fx.commission_reversed_usd, d("30.00"));
    l.apply_invoice(
        &refund("r-may", "a", "2026-05-03T00:00:00Z", "250"),
        &f,
        &prog,
    )
    .unwrap();
    assert_eq!(
        l.statement(m("2026-04")),
        frozen,
        "paid statements never change"
    );
    let may = l.statement(m("2026-05"));
    let origins: Vec<Option<Month>> = may.lines.iter().map(|line| line.origin_month).collect();
    assert_eq!(origins, [Some(m("2026-04")), None]);
    assert_eq!(may.totals.commission_usd, d("-60.00"));
    assert_eq!(l.totals().commission_usd, d("60.00"));
}

#[test]
fn mdf_draws_on_the_coop_balance_through_control_facts() {
    let (f, prog) = (gold_facts(), default_program());
    let mut l = Ledger::new("p");
    l.apply_invoice(&paid("a", "2026-05-01T00:00:00Z", "1000"), &f, &prog)
        .unwrap(); // co-op 20.00
    let mdf = |id: &str, amount: &str, decision| ControlEvent::MdfExpense {
        expense_id: id.into(),
        partner_id: "p".into(),
        amount_usd: d(amount),
        campaign: "webinar".into(),
        decision,
    };
    assert_eq!(
        l.apply_control(5, &mdf("e1", "15", MdfDecision::Approved), &f, &prog),
        ControlOutcome::Mdf(MdfOutcome::Drawn)
    );
    assert_eq!(
        l.apply_control(6, &mdf("e2", "5.01", MdfDecision::Approved), &f, &prog),
        ControlOutcome::Mdf(MdfOutcome::Refused)
    );
    assert_eq!(
        l.apply_control(7, &mdf("e3", "1", MdfDecision::Rejected), &f, &prog),
        ControlOutcome::Mdf(MdfOutcome::Rejected)
    );
    assert_eq!(
        l.apply_control(8, &mdf("e1", "15", MdfDecision::Approved), &f, &prog),
        ControlOutcome::Mdf(MdfOutcome::Duplicate)
    );
    let other = ControlEvent::MdfExpense {
        expense_id: "x".into(),
        partner_id: "q".into(),
        amount_usd: d("1"),
        campaign: "c".into(),
        decision: MdfDecision::Approved,
    };
    assert_eq!(
        l.apply_control(9, &other, &f, &prog),
        ControlOutcome::NoEffect
    );
    let tot = l.totals();
    assert_eq!(
        (
            tot.coop_accrued_usd,
            tot.mdf_drawn_usd,
            tot.coop_balance_usd
        ),
        (d("20.00"), d("15"), d("5.00"))
    );
}

/// CONTRACT §6: `coop_balance_usd` = accrued − MDF drawn, also once a refund reversed
/// co-op already drawn: the balance goes below zero, nothing more can be drawn, and the
/// clawback due says what future accruals recover first.
#[test]
fn the_coop_balance_is_accrued_minus_drawn_after_a_clawback() {
    let (f, prog) = (gold_facts(), default_program());
    let mut l = Ledger::new("p");
    l.apply_invoice(&paid("a", "2026-05-01T00:00:00Z", "1000"), &f, &prog)
        .unwrap(); // co-op 20.00
    let draw = ControlEvent::MdfExpense {
        expense_id: "e1".into(),
        partner_id: "p".into(),
        amount_usd: d("15"),
        campaign: "webinar".into(),
        decision: MdfDecision::Approved,
    };
    assert_eq!(
        l.apply_control(5, &draw, &f, &prog),
        ControlOutcome::Mdf(MdfOutcome::Drawn)
    );
    l.apply_invoice(&refund("r", "a", "2026-05-03T00:00:00Z", "1000"), &f, &prog)
        .unwrap();
    let tot = l.totals();
    assert_eq!(
        (
            tot.coop_accrued_usd,
            tot.mdf_drawn_usd,
            tot.coop_balance_usd,
            tot.coop_available_usd,
            tot.coop_clawback_due_usd
        ),
        (d("0.00"), d("15"), d("-15.00"), d("0"), d("15.00"))
    );
    assert_eq!(
        tot.coop_balance_usd,
        tot.coop_accrued_usd - tot.mdf_drawn_usd
    );
}

fn tenant(id: &str, partner: &str, value: Option<&str>) -> ControlEvent {
    ControlEvent::Tenant {
        tenant_id: id.into(),
        partner_id: partner.into(),
        plan: TenantPlan::Pilot,
        started_at: t("2026-05-01T00:00:00Z"),
        deployment_value_usd: value.map(d),
    }
}

#[test]
fn credits_are_bought_consumed_by_activations_and_migrations_are_free() {
    let prog = program("credits");
    let mut f = MoneyFacts::new();
    f.apply(0, &partner_fact("p", "specialist", None));
    let mut l = Ledger::new("p");
    let buy = ControlEvent::CreditPurchase {
        purchase_id: "b1".into(),
        partner_id: "p".into(),
        credits: d("1500"),
        paid_usd: d("1200"),
    };
    let ControlOutcome::Credits(fx) = l.apply_control(1, &buy, &f, &prog) else {
        panic!()
    };
    assert_eq!(fx.outcome, TenantOutcome::Purchased);
    // Specialist 20 % off: 1500 × 0.80 = 1200.00.
    assert_eq!(
        l.credit_wallet()
            .purchase_record("b1")
            .unwrap()
            .expected_paid_usd,
        d("1200.00")
    );
    let t1 = tenant("t1", "p", Some("600"));
    f.apply(2, &t1);
    let ControlOutcome::Credits(fx) = l.apply_control(2, &t1, &f, &prog) else {
        panic!()
    };
    // 1500 − 600 = 900 < 1000 low water: activated with a warning.
    assert_eq!(
        (fx.outcome, fx.signals.clone()),
        (
            TenantOutcome::Activated,
            vec![CreditSignal::LowCredits { balance: d("900") }]
        )
    );
    let t2 = tenant("t2", "p", Some("1000"));
    f.apply(3, &t2);
    let ControlOutcome::Credits(fx) = l.apply_control(3, &t2, &f, &prog) else {
        panic!()
    };
    assert_eq!(fx.outcome, TenantOutcome::Refused);
    assert!(
        matches!(&fx.signals[0], CreditSignal::InsufficientCredits { tenant_id, .. } if tenant_id == "t2")
    );
    // t1 upgraded to paid: not an activation. A tenant of another partner migrating in: free.
    let mut up = tenant("t1", "p", Some("600"));
    if let ControlEvent::Tenant { plan, .. } = &mut up {
        *plan = TenantPlan::Paid;
    }
    f.apply(4, &up);
    let ControlOutcome::Credits(fx) = l.apply_control(4, &up, &f, &prog) else {
        panic!()
    };
    assert_eq!(fx.outcome, TenantOutcome::NotAnActivation);
    f.apply(5, &tenant("t9", "q", Some("50")));
    let mig = tenant("t9", "p", Some("50"));
    f.apply(6, &mig);
    let ControlOutcome::Credits(fx) = l.apply_control(6, &mig, &f, &prog) else {
        panic!()
    };
    assert_eq!(fx.outcome, TenantOutcome::NotAnActivation);
    assert_eq!(l.totals().credits_balance, d("900"));
    // A purchase lets t2 through.
    let buy2 = ControlEvent::CreditPurchase {
        purchase_id: "b2".into(),
        partner_id: "p".into(),
        credits: d("500"),
        paid_usd: d("400"),
    };
    let ControlOutcome::Credits(fx) = l.apply_control(7, &buy2, &f, &prog) else {
        panic!()
    };
    assert_eq!(
        fx.activated
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>(),
        ["t2"]
    );
    assert_eq!(l.totals().credits_balance, d("400"));
    assert_eq!(
        l.status(t("2026-06-01T00:00:00Z"), &prog).tenants_onboarded,
        2
    );
}

/// A tenant waiting here for credits that moves to another partner leaves the queue: a
/// later purchase here does not charge for it, and the activation queued behind it, which
/// fits the balance, goes through at once.
#[test]
fn a_waiting_tenant_that_moves_away_is_withdrawn_and_the_queue_moves_on() {
    let prog = program("credits");
    let mut f = MoneyFacts::new();
    f.apply(0, &partner_fact("p", "specialist", None));
    let mut l = Ledger::new("p");
    let buy = |id: &str, credits: &str| ControlEvent::CreditPurchase {
        purchase_id: id.into(),
        partner_id: "p".into(),
        credits: d(credits),
        paid_usd: d(credits),
    };
    l.apply_control(1, &buy("b1", "300"), &f, &prog);
    let mut offset = 2;
    let mut apply = |l: &mut Ledger, f: &mut MoneyFacts, fact: ControlEvent| {
        f.apply(offset, &fact);
        let ControlOutcome::Credits(fx) = l.apply_control(offset, &fact, f, &prog) else {
            panic!("credits")
        };
        offset += 1;
        fx
    };
    // t-big (1,000) does not fit 300 and waits; t-small (200) would fit but queues behind it.
    let fx = apply(&mut l, &mut f, tenant("t-big", "p", Some("1000")));
    assert_eq!(fx.outcome, TenantOutcome::Refused);
    let fx = apply(&mut l, &mut f, tenant("t-small", "p", Some("200")));
    assert_eq!(fx.outcome, TenantOutcome::Refused);
    // t-big moves to q: withdrawn here, and t-small goes through (300 − 200 = 100).
    let fx = apply(&mut l, &mut f, tenant("t-big", "q", Some("1000")));
    assert_eq!(fx.outcome, TenantOutcome::Withdrawn);
    let through: Vec<&str> = fx.activated.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(through, ["t-small"]);
    assert!(l.credit_wallet().waiting().is_empty());
    assert_eq!(l.totals().credits_balance, d("100"));
    // A later purchase is all balance: nothing is charged for the tenant that left.
    let fx = apply(&mut l, &mut f, buy("b2", "2000"));
    assert!(fx.activated.is_empty());
    assert_eq!(l.totals().credits_balance, d("2100"));
    let charged: Vec<&str> = l
        .credit_wallet()
        .postings()
        .iter()
        .filter(|p| p.kind == CreditPostingKind::Activation)
        .map(|p| p.id.as_str())
        .collect();
    assert_eq!(charged, ["t-small"]);
    // A fact naming another partner for a tenant not waiting here changes nothing.
    let fx = apply(&mut l, &mut f, tenant("t-other", "q", Some("5")));
    assert_eq!(fx.outcome, TenantOutcome::NotAnActivation);
    assert_eq!(l.totals().credits_balance, d("2100"));
}

#[test]
fn status_counts_activations_and_never_touches_money() {
    let prog = default_program();
    let mut f = gold_facts();
    let mut l = Ledger::new("p");
    for i in 0..10 {
        let fact = tenant(&format!("t{i}"), "p", None);
        f.apply(10 + i, &fact);
        l.apply_control(10 + i, &fact, &f, &prog);
    }
    let totals = l.totals();
    let v = l.status(t("2026-06-01T00:00:00Z"), &prog);
    assert_eq!((v.status, v.tenants_onboarded), (PartnerStatus::Active, 10));
    assert_eq!(l.totals(), totals);
    // A credit purchase outside a credits program changes nothing.
    let buy = ControlEvent::CreditPurchase {
        purchase_id: "b".into(),
        partner_id: "p".into(),
        credits: d("1"),
        paid_usd: d("1"),
    };
    let ControlOutcome::Credits(fx) = l.apply_control(30, &buy, &f, &prog) else {
        panic!()
    };
    assert_eq!(fx.outcome, TenantOutcome::NotACreditsProgram);
}
