//! Property tests of the money rules (10,000 cases each).

use proptest::prelude::*;

use super::testkit::{d, default_program, paid, partner_fact, t};
use super::*;
use crate::domain::event::{
    AttributionEvent, ControlEvent, InvoiceEvent, InvoiceKind, MdfDecision,
};

const MONTHS: [&str; 2] = ["2026-05", "2026-06"];

/// Built once: every case starts from a clone.
static PROGRAM: std::sync::OnceLock<Program> = std::sync::OnceLock::new();
static FACTS: std::sync::OnceLock<MoneyFacts> = std::sync::OnceLock::new();

/// Gold partner "p" under "sub" (3 %) under "dist" (2 %); a new-logo spiff of 3 % from
/// May 10 to June 10; a 2 % volume bonus above 2000 a month; EUR at 1.0825.
fn facts() -> MoneyFacts {
    let mut f = MoneyFacts::new();
    let with_rate = |id: &str, parent: Option<&str>, rate: Option<&str>| {
        let mut e = partner_fact(id, "gold", parent);
        if let ControlEvent::Partner { override_rate, .. } = &mut e {
            *override_rate = rate.map(d);
        }
        e
    };
    f.apply(0, &with_rate("dist", None, Some("0.02")));
    f.apply(1, &with_rate("sub", Some("dist"), Some("0.03")));
    f.apply(2, &with_rate("p", Some("sub"), None));
    f.apply(
        3,
        &ControlEvent::Spiff {
            spiff_id: "s".into(),
            partner_id: None,
            from: t("2026-05-10T00:00:00Z"),
            to: t("2026-06-10T00:00:00Z"),
            extra_rate: d("0.03"),
            new_logo_only: true,
            min_contract_value_usd: None,
        },
    );
    f.apply(
        4,
        &ControlEvent::VolumeBonus {
            partner_id: None,
            monthly_threshold_usd: d("2000"),
            bonus_rate: d("0.02"),
        },
    );
    f.apply(
        5,
        &ControlEvent::FxRate {
            currency: "EUR".into(),
            usd_per_unit: d("1.0825"),
            as_of: t("2026-01-01T00:00:00Z"),
        },
    );
    f
}

#[derive(Debug, Clone)]
enum Op {
    Paid {
        fee: i64,
        overage: i64,
        day: i64,
        currency: u8,
        new_logo: bool,
    },
    Refund {
        pick: usize,
        permille: i64,
        chargeback: bool,
        day: i64,
    },
    Mdf {
        cents: i64,
        approved: bool,
    },
    Freeze {
        month: usize,
    },
    GbpArrives,
    Attribution {
        cents: i64,
        day: i64,
    },
}

fn paid_op() -> impl Strategy<Value = Op> {
    (0i64..500_000, 0i64..20_000, 0i64..61, 0u8..3, any::<bool>()).prop_map(
        |(fee, overage, day, currency, new_logo)| Op::Paid {
            fee,
            overage,
            day,
            currency,
            new_logo,
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => paid_op(),
        3 => (any::<usize>(), 1i64..=1000, any::<bool>(), 0i64..61)
            .prop_map(|(pick, permille, chargeback, day)| Op::Refund { pick, permille, chargeback, day }),
        2 => (0i64..5_000, any::<bool>()).prop_map(|(cents, approved)| Op::Mdf { cents, approved }),
        1 => (0usize..2).prop_map(|month| Op::Freeze { month }),
        1 => Just(Op::GbpArrives),
        1 => (-2_000i64..5_000, 0i64..61).prop_map(|(cents, day)| Op::Attribution { cents, day }),
    ]
}

fn cents(c: i64) -> Decimal {
    Decimal::new(c, 2)
}

fn day(n: i64) -> chrono::DateTime<chrono::Utc> {
    t("2026-05-01T12:00:00Z") + chrono::Duration::days(n)
}

/// Applies ops with ids derived from their position; collects every effect.
struct Run {
    ledger: Ledger,
    facts: MoneyFacts,
    program: Program,
    /// Paid invoices with the position of the op that made them.
    paid: Vec<(usize, InvoiceEvent)>,
    effects: Vec<LedgerEffects>,
}

impl Run {
    fn new() -> Run {
        Run {
            ledger: Ledger::new("p"),
            facts: FACTS.get_or_init(facts).clone(),
            program: PROGRAM.get_or_init(default_program).clone(),
            paid: Vec::new(),
            effects: Vec::new(),
        }
    }

    fn invoice(&mut self, e: &InvoiceEvent) {
        if let Ok(fx) = self.ledger.apply_invoice(e, &self.facts, &self.program) {
            self.effects.push(fx);
        }
    }

    /// A refund or chargeback of `permille`/1000 of an invoice of an earlier op (so a
    /// replayed prefix sees the same originals).
    fn reversal(
        &self,
        i: usize,
        pick: usize,
        permille: i64,
        chargeback: bool,
        n: i64,
    ) -> Option<InvoiceEvent> {
        let earlier: Vec<&InvoiceEvent> = self
            .paid
            .iter()
            .filter(|(j, _)| *j < i)
            .map(|(_, e)| e)
            .collect();
        let original = earlier.get(pick % earlier.len().max(1))?;
        let gross = original.platform_fee + original.overage;
        let amount = (gross * Decimal::from(permille) / Decimal::from(1000))
            .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::ToZero);
        Some(InvoiceEvent {
            invoice_id: format!("cn-{i}"),
            kind: if chargeback {
                InvoiceKind::Chargeback
            } else {
                InvoiceKind::Refund
            },
            refers_to: Some(original.invoice_id.clone()),
            ts: day(n),
            platform_fee: amount,
            overage: Decimal::ZERO,
            ..(*original).clone()
        })
    }

    fn apply(&mut self, i: usize, op: &Op) {
        match op {
            Op::Paid {
                fee,
                overage,
                day: n,
                currency,
                new_logo,
            } => {
                let mut e = paid(&format!("inv-{i}"), "2026-05-01T00:00:00Z", "0");
                e.ts = day(*n);
                e.platform_fee = cents(*fee);
                e.overage = cents(*overage);
                e.currency = ["USD", "EUR", "GBP"][*currency as usize].into();
                e.new_logo = *new_logo;
                self.invoice(&e);
                self.paid.push((i, e));
            }
            Op::Refund {
                pick,
                permille,
                chargeback,
                day: n,
            } => {
                if let Some(e) = self.reversal(i, *pick, *permille, *chargeback, *n) {
                    self.invoice(&e);
                }
            }
            Op::Mdf { cents: c, approved } => {
                let decision = if *approved {
                    MdfDecision::Approved
                } else {
                    MdfDecision::Rejected
                };
                self.ledger
                    .apply_mdf(&format!("e-{i}"), cents(*c), decision);
            }
            Op::Freeze { month } => {
                self.ledger.freeze(MONTHS[*month].parse().unwrap());
            }
            Op::GbpArrives => {
                let fact = ControlEvent::FxRate {
                    currency: "GBP".into(),
                    usd_per_unit: d("1.27"),
                    as_of: t("2026-05-20T00:00:00Z"),
                };
                self.facts.apply(100 + i as i64, &fact);
                if let ControlOutcome::Fx(arrival) =
                    self.ledger
                        .apply_control(100 + i as i64, &fact, &self.facts, &self.program)
                {
                    self.effects
                        .extend(arrival.applied.into_iter().map(|(_, fx)| fx));
                }
            }
            Op::Attribution { cents: c, day: n } => {
                let a = AttributionEvent {
                    attribution_id: format!("child-{i}:paid:p"),
                    ancestor_id: "p".into(),
                    partner_id: "child".into(),
                    invoice_id: format!("child-{i}"),
                    kind: InvoiceKind::Paid,
                    ts: day(*n),
                    base_usd: cents(c.abs() * 10),
                    override_rate: d("0.1"),
                    amount_usd: cents(*c),
                };
                self.ledger.apply_attribution(&a).unwrap();
            }
        }
    }
}

fn all_months(l: &Ledger) -> Vec<Month> {
    l.statement_months()
}

fn sum_lines(lines: &[StatementLine]) -> StatementTotals {
    let mut t = StatementTotals::default();
    for l in lines {
        let upline: Decimal = l.overrides.iter().map(|o| o.amount_usd).sum();
        t.attributed_revenue_usd += l.base_usd;
        t.rate_commission_usd += l.commission_usd;
        t.volume_bonus_usd += l.volume_bonus_usd;
        t.commission_usd += l.commission_usd + l.volume_bonus_usd;
        t.override_commission_usd += l.override_commission_usd;
        t.coop_accrued_usd += l.coop_usd;
        t.upline_overrides_usd += upline;
        t.payout_usd += l.commission_usd + l.volume_bonus_usd + l.override_commission_usd;
        t.lines += 1;
    }
    t
}

fn month_totals(l: &Ledger) -> Vec<(Month, Decimal, Decimal, Decimal, Decimal)> {
    all_months(l)
        .into_iter()
        .map(|m| {
            let t = l.statement(m).totals;
            (
                m,
                t.attributed_revenue_usd,
                t.commission_usd,
                t.coop_accrued_usd,
                t.upline_overrides_usd,
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn any_order_of_the_same_paid_invoices_gives_the_same_month_totals(
        ops in proptest::collection::vec(paid_op(), 1..16).prop_flat_map(|ops| {
            let n = ops.len();
            (Just(ops), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
    ) {
        let (ops, order) = ops;
        let mut a = Run::new();
        for (i, op) in ops.iter().enumerate() { a.apply(i, op); }
        let mut b = Run::new();
        for &i in &order { b.apply(i, &ops[i]); }
        prop_assert_eq!(month_totals(&a.ledger), month_totals(&b.ledger));
        prop_assert_eq!(a.ledger.totals(), b.ledger.totals());
    }

    #[test]
    fn replaying_any_prefix_twice_changes_nothing(
        ops in proptest::collection::vec(op(), 1..24),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut run = Run::new();
        for (i, op) in ops.iter().enumerate() { run.apply(i, op); }
        let done = run.ledger.clone();
        let k = cut.index(ops.len() + 1);
        for (i, op) in ops.iter().enumerate().take(k) { run.apply(i, op); }
        prop_assert_eq!(&run.ledger, &done);
    }

    #[test]
    fn commission_coop_and_overrides_never_exceed_the_base(ops in proptest::collection::vec(op(), 1..24)) {
        let mut run = Run::new();
        for (i, op) in ops.iter().enumerate() { run.apply(i, op); }
        for m in all_months(&run.ledger) {
            for l in run.ledger.statement(m).lines.iter().filter(|l| l.kind == LineKind::Paid) {
                let upline: Decimal = l.overrides.iter().map(|o| o.amount_usd).sum();
                let paid_out = l.commission_usd + l.volume_bonus_usd + l.coop_usd + upline;
                prop_assert!(paid_out <= l.base_usd, "{} > {} on {}", paid_out, l.base_usd, l.line_id);
                prop_assert!(l.commission_usd >= Decimal::ZERO && l.volume_bonus_usd >= Decimal::ZERO);
            }
        }
    }

    #[test]
    fn the_wallet_never_goes_negative(ops in proptest::collection::vec(op(), 1..32)) {
        let mut run = Run::new();
        for (i, op) in ops.iter().enumerate() {
            run.apply(i, op);
            let w = run.ledger.coop_wallet();
            prop_assert!(w.balance() >= Decimal::ZERO);
            prop_assert!(w.clawback_due() >= Decimal::ZERO);
            let sum: Decimal = w.postings().iter().map(|p| p.amount_usd).sum();
            prop_assert_eq!(sum, w.balance());
            prop_assert_eq!(w.balance() - w.clawback_due(), w.accrued() - w.drawn());
        }
    }

    #[test]
    fn statement_totals_are_the_sum_of_their_lines(ops in proptest::collection::vec(op(), 1..24)) {
        let mut run = Run::new();
        for (i, op) in ops.iter().enumerate() { run.apply(i, op); }
        let l = &run.ledger;
        for m in all_months(l) {
            let st = l.statement(m);
            prop_assert_eq!(&st.totals, &sum_lines(&st.lines));
        }
        let lines: Vec<StatementLine> = all_months(l).into_iter().flat_map(|m| l.statement(m).lines).collect();
        let all = sum_lines(&lines);
        let tot = l.totals();
        prop_assert_eq!(all.attributed_revenue_usd, tot.attributed_revenue_usd);
        prop_assert_eq!(all.commission_usd, tot.commission_usd);
        prop_assert_eq!(all.override_commission_usd, tot.override_commission_usd);
        prop_assert_eq!(all.coop_accrued_usd, tot.coop_accrued_usd);
        let csv_rows = all_months(l).into_iter().map(|m| l.statement(m).to_csv().lines().count()).sum::<usize>();
        prop_assert_eq!(csv_rows, lines.len() + 2 * all_months(l).len());
    }

    #[test]
    fn refunds_in_any_split_reverse_exactly_the_original_parts(
        fee in 1i64..1_000_000,
        overage in 0i64..50_000,
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        new_logo in any::<bool>(),
        currency in 0u8..2,
    ) {
        let mut run = Run::new();
        run.apply(0, &Op::Paid { fee, overage, day: 12, currency, new_logo });
        let gross = fee + overage;
        let mut points: Vec<i64> = cuts.iter().map(|c| c.index(gross as usize + 1) as i64).collect();
        points.push(0);
        points.push(gross);
        points.sort_unstable();
        let original = run.ledger.statement("2026-05".parse().unwrap()).lines[0].clone();
        for (k, w) in points.windows(2).enumerate() {
            let mut e = run.paid[0].1.clone();
            e.invoice_id = format!("cn-{k}");
            e.kind = InvoiceKind::Refund;
            e.refers_to = Some("inv-0".into());
            e.platform_fee = cents(w[1] - w[0]);
            e.overage = Decimal::ZERO;
            run.ledger.apply_invoice(&e, &run.facts, &run.program).unwrap();
        }
        let st = run.ledger.statement("2026-05".parse().unwrap());
        let rev = sum_lines(&st.lines[1..]);
        prop_assert_eq!(rev.attributed_revenue_usd, -original.base_usd);
        prop_assert_eq!(rev.rate_commission_usd, -original.commission_usd);
        prop_assert_eq!(rev.volume_bonus_usd, -original.volume_bonus_usd);
        prop_assert_eq!(rev.coop_accrued_usd, -original.coop_usd);
        for (i, o) in original.overrides.iter().enumerate() {
            let reversed: Decimal = st.lines[1..].iter().map(|l| l.overrides[i].amount_usd).sum();
            prop_assert_eq!(reversed, -o.amount_usd);
        }
        // Nothing is left to refund: one more cent is an over-refund.
        let mut more = run.paid[0].1.clone();
        more.invoice_id = "cn-more".into();
        more.kind = InvoiceKind::Refund;
        more.refers_to = Some("inv-0".into());
        more.platform_fee = cents(1);
        more.overage = Decimal::ZERO;
        let err = run.ledger.apply_invoice(&more, &run.facts, &run.program).unwrap_err();
        prop_assert_eq!(err.reason, crate::domain::event::DeadLetterReason::OverRefund);
        prop_assert_eq!(run.ledger.totals().attributed_revenue_usd, Decimal::ZERO);
    }

    #[test]
    fn every_reversal_part_is_zero_or_negative(ops in proptest::collection::vec(op(), 1..32)) {
        let mut run = Run::new();
        for (i, op) in ops.iter().enumerate() { run.apply(i, op); }
        for m in all_months(&run.ledger) {
            for l in run.ledger.statement(m).lines.iter().filter(|l| matches!(l.kind, LineKind::Refund | LineKind::Chargeback)) {
                prop_assert!(l.base_usd <= Decimal::ZERO && l.commission_usd <= Decimal::ZERO);
                prop_assert!(l.volume_bonus_usd <= Decimal::ZERO && l.coop_usd <= Decimal::ZERO);
                prop_assert!(l.overrides.iter().all(|o| o.amount_usd <= Decimal::ZERO));
            }
        }
        for fx in run.effects.iter().filter(|fx| fx.outcome == InvoiceOutcome::Reversed) {
            prop_assert!(fx.attributions.iter().all(|a| a.amount_usd <= Decimal::ZERO && a.base_usd <= Decimal::ZERO));
            prop_assert!(fx.commission_reversed_usd >= Decimal::ZERO);
        }
    }
}
