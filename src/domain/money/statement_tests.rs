use super::*;
use crate::domain::money::testkit::{d, t};
use crate::domain::money::{LineKind, OverridePart};

fn m(s: &str) -> Month {
    s.parse().unwrap()
}

fn line(id: &str, base: &str, commission: &str) -> StatementLine {
    StatementLine {
        line_id: format!("{id}:paid"),
        kind: LineKind::Paid,
        invoice_id: id.into(),
        ts: t("2026-05-03T10:00:00Z"),
        origin_month: None,
        refers_to: None,
        refers_to_month: None,
        from_partner_id: None,
        tenant_id: Some("ten".into()),
        currency: Some("USD".into()),
        amount: Some(d(base)),
        pricing: None,
        base_usd: d(base),
        commission_usd: d(commission),
        volume_bonus_usd: d("1.00"),
        coop_usd: d("0.50"),
        override_commission_usd: d("0"),
        overrides: vec![OverridePart {
            ancestor_id: "up".into(),
            override_rate: d("0.01"),
            amount_usd: d("0.25"),
        }],
    }
}

fn push(s: &mut Statements, month: &str, l: StatementLine) {
    let totals = s.totals_with(m(month), &l).unwrap();
    s.push(m(month), l, totals);
}

#[test]
fn totals_are_the_sum_of_the_lines() {
    let mut s = Statements::default();
    push(&mut s, "2026-05", line("a", "100.00", "12.00"));
    push(&mut s, "2026-05", line("b", "25.50", "3.06"));
    let st = s.statement(m("2026-05"));
    // revenue 100 + 25.50; commission (12 + 1) + (3.06 + 1) = 17.06; payout = commission.
    let t = &st.totals;
    assert_eq!(t.attributed_revenue_usd, d("125.50"));
    assert_eq!(
        (t.rate_commission_usd, t.volume_bonus_usd, t.commission_usd),
        (d("15.06"), d("2.00"), d("17.06"))
    );
    assert_eq!(
        (
            t.coop_accrued_usd,
            t.upline_overrides_usd,
            t.payout_usd,
            t.lines
        ),
        (d("1.00"), d("0.50"), d("17.06"), 2)
    );
    assert_eq!(st.status, StatementStatus::Open);
}

#[test]
fn legal_moves_and_illegal_ones() {
    let mut s = Statements::default();
    let may = m("2026-05");
    assert!(matches!(
        s.approve(may),
        Err(StatementError::Illegal {
            from: StatementStatus::Open,
            ..
        })
    ));
    assert!(matches!(
        s.mark_paid(may, "r"),
        Err(StatementError::Illegal { .. })
    ));
    assert_eq!(s.freeze(may), Transition::Changed);
    assert_eq!(s.freeze(may), Transition::Unchanged);
    assert!(matches!(
        s.mark_paid(may, "r"),
        Err(StatementError::Illegal {
            from: StatementStatus::Pending,
            ..
        })
    ));
    assert_eq!(s.approve(may), Ok(Transition::Changed));
    assert_eq!(s.approve(may), Ok(Transition::Unchanged));
    assert_eq!(s.mark_paid(may, " "), Err(StatementError::EmptyReference));
    assert_eq!(s.mark_paid(may, "wire-1"), Ok(Transition::Changed));
    assert_eq!(s.mark_paid(may, "wire-1"), Ok(Transition::Unchanged));
    assert!(matches!(
        s.mark_paid(may, "wire-2"),
        Err(StatementError::OtherReference { .. })
    ));
    assert!(matches!(
        s.approve(may),
        Err(StatementError::Illegal {
            from: StatementStatus::Paid,
            ..
        })
    ));
    assert_eq!(s.freeze(may), Transition::Unchanged);
    let st = s.statement(may);
    assert_eq!(
        (st.status, st.paid_reference.as_deref()),
        (StatementStatus::Paid, Some("wire-1"))
    );
}

#[test]
fn a_line_for_a_frozen_month_lands_in_the_next_open_one() {
    let mut s = Statements::default();
    s.freeze(m("2026-04"));
    s.freeze(m("2026-05"));
    assert_eq!(s.landing_month(m("2026-04")), m("2026-06"));
    assert_eq!(s.landing_month(m("2026-07")), m("2026-07"));
    s.freeze(m("2026-12"));
    assert_eq!(s.landing_month(m("2026-12")), m("2027-01"));
}

/// The auto-closer never closes a month before the oldest one closed, so a backdated line
/// for such a month would sit in a statement that never becomes payable: it lands in the
/// first open month instead, as for a frozen one.
#[test]
fn a_line_for_a_month_before_the_oldest_closed_one_lands_in_the_first_open_month() {
    let mut s = Statements::default();
    assert_eq!(s.landing_month(m("2026-03")), m("2026-03"));
    s.freeze(m("2026-05"));
    assert_eq!(s.landing_month(m("2026-03")), m("2026-06"));
    assert_eq!(s.landing_month(m("2025-11")), m("2026-06"));
    s.freeze(m("2026-06"));
    assert_eq!(s.landing_month(m("2026-03")), m("2026-07"));
}

/// Ids come from partners' events: one a spreadsheet would run as a formula is defused,
/// whichever of the characters that start one it begins with.
#[test]
fn a_csv_cell_that_would_start_a_formula_is_defused() {
    use super::super::statement_line::text;
    for formula in [
        "=1+1",
        "+1+1",
        "-2+3+cmd|' /C calc'!A0",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
    ] {
        let cell = text(formula);
        let unquoted = cell.trim_start_matches('"');
        assert!(unquoted.starts_with('\''), "{formula:?} -> {cell:?}");
    }
    assert_eq!(
        text("p-1"),
        "p-1",
        "an id with an inner dash is left as it is"
    );
}

#[test]
fn csv_has_a_header_the_lines_and_the_same_totals() {
    let mut s = Statements::default();
    let mut l = line("=cmd,1", "100.00", "12.00");
    l.tenant_id = Some("say \"hi\"".into());
    push(&mut s, "2026-05", l);
    push(&mut s, "2026-05", line("b", "25.50", "3.06"));
    let csv = s.statement(m("2026-05")).to_csv();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4);
    assert!(rows[0].starts_with("month,line_id,kind,"));
    assert!(rows[1].starts_with("2026-05,\"'=cmd,1:paid\",paid,\"'=cmd,1\",2026-05-03T10:00:00Z,"));
    assert!(rows[1].contains("\"say \"\"hi\"\"\""));
    assert!(rows[1].ends_with(",100.00,12.00,1.00,0.50,0,0.25"));
    assert_eq!(
        rows[3],
        "2026-05,total,,,,,,,,,,,,,,,,,,,,125.50,15.06,2.00,1.00,0,0.50"
    );
    let header_cols = rows[0].split(',').count();
    assert_eq!(rows[3].split(',').count(), header_cols);
}

#[test]
fn an_unknown_month_is_an_empty_open_statement() {
    let s = Statements::default();
    let st = s.statement(m("2030-01"));
    assert_eq!(
        (st.status, st.lines.len(), st.totals.clone()),
        (StatementStatus::Open, 0, StatementTotals::default())
    );
}
