//! The worked scenario of issue 3, acceptance point 1: a three-level partner chain
//! (distributor → sub-distributor → Gold reseller) under the default program
//! (config/programs/default.toml), run through April–June 2026, as DATA (records in
//! CONTRACT §1 JSON) plus the figures it must produce (CONTRACT §2, §6).
//!
//! Every expected figure below was worked out by hand from CONTRACT §2, step by step in
//! the comments; none was obtained by running the code. Rounding is always half-even to
//! cents. Ties (an exact …5 in the third decimal) occur on purpose and are marked TIE:
//! - inv-a1: sub-1's override 0.05 × 2000.50 = 100.025 → 100.02 (half-up would give 100.03);
//! - inv-a2: sub-1's override 0.05 × 1082.50 = 54.125 → 54.12 (half-up: 54.13);
//! - inv-b2: the base 5250 EUR × 1.0825 = 5683.125 → 5683.12 (half-up: 5683.13), and
//!   every figure of inv-b2 and its refund depends on that base;
//! - inv-s2: dist-1's override 0.03 × 547.50 = 16.425 → 16.42 (half-up: 16.43);
//! - ties rounding up to an even cent: inv-a1 dist-1 60.015 → 60.02, inv-a2 commission
//!   162.375 → 162.38 and dist-1 32.475 → 32.48.
//!
//! Layout: [`phases`] is the input, in order. A phase holds only control facts or only
//! invoices, because the two topics are not ordered relative to each other: a test
//! produces one phase and waits until it is applied before producing the next. Within a
//! phase, the invoices of one partner are in the order given (one key → one partition);
//! the invoices of different partners are independent of each other's order.
//!
//! Included by integration tests as `#[path = "common/worked.rs"] mod worked;` — it uses
//! nothing of `tests/common/mod.rs`.
//!
//! # Cast
//! | partner | role | tier | parent | override_rate |
//! |---|---|---|---|---|
//! | dist-1 | distributor (top) | platinum | — | 0.03 |
//! | sub-1 | sub-distributor | silver (8 %) | dist-1 | 0.05 |
//! | gold-1 | reseller | gold (12 %), platinum (15 %) from 2026-06-15 | sub-1 | — |
//!
//! Co-op is 2 % for every tier. gold-1's chain is sub-1 (0.05) then dist-1 (0.03); sub-1's
//! chain is dist-1 (0.03). dist-1 has no lines of its own: it only earns overrides.
//!
//! Other facts: spiff `q2-new-logo` (every partner, [2026-04-01, 2026-07-01), +0.03,
//! new_logo_only, min_contract_value_usd 50000.00, the contract value converted at the
//! line's rate); volume bonus of gold-1 (monthly threshold 10000.00 USD, rate 0.01);
//! EUR 1.0825 as of 2026-04-01, later EUR 1.0950 as of 2026-05-15; JPY 0.0065 as of
//! 2026-04-10 (arrives after two JPY invoices, which wait parked); no CHF rate ever.
//!
//! # Lines of gold-1 (base in USD; commission = round(base × rate); co-op = round(base ×
//! 0.02); overrides: sub-1 round(base × 0.05), dist-1 round(base × 0.03))
//! | line | month | base | rate | commission | bonus | co-op | sub-1 | dist-1 |
//! |---|---|---|---|---|---|---|---|---|
//! | inv-a1 | 04 | 2000.50 | 0.12 | 240.06 | 0 | 40.01 | 100.02 | 60.02 |
//! | inv-a2 | 04 | 1082.50 | 0.15 | 162.38 | 0 | 21.65 | 54.12 | 32.48 |
//! | inv-a3 | 04 | 3000.00 | 0.12 | 360.00 | 0 | 60.00 | 150.00 | 90.00 |
//! | inv-a4 | 04 | 975.00 | 0.12 | 117.00 | 0 | 19.50 | 48.75 | 29.25 |
//! | inv-a5 | 04 | 802.47 | 0.12 | 96.30 | 0 | 16.05 | 40.12 | 24.07 |
//! | inv-b1 | 05 | 6000.00 | 0.12 | 720.00 | 0 | 120.00 | 300.00 | 180.00 |
//! | inv-b2 | 05 | 5683.12 | 0.12 | 681.97 | 16.83 | 113.66 | 284.16 | 170.49 |
//! | inv-b3 | 05 | 1000.00 | 0.12 | 120.00 | 10.00 | 20.00 | 50.00 | 30.00 |
//! | inv-c1 | 06 | 2190.00 | 0.15 | 328.50 | 0 | 43.80 | 109.50 | 65.70 |
//! | inv-c2 | 06 | 4000.00 | 0.15 | 600.00 | 0 | 80.00 | 200.00 | 120.00 |
//! | inv-b2-r1 refund | 06 | −1136.62 | | −136.39 | −3.37 | −22.73 | −56.83 | −34.10 |
//! | inv-b3-cb chargeback | 06 | −1000.00 | | −120.00 | −10.00 | −20.00 | −50.00 | −30.00 |
//! | inv-c5 (CHF) | — | parked for good: no CHF rate | | | | | | |
//!
//! # Lines of sub-1
//! | line | month | base | rate | commission | co-op | dist-1 |
//! |---|---|---|---|---|---|---|
//! | inv-s1 | 04 | 1500.00 | 0.08 | 120.00 | 30.00 | 45.00 |
//! | inv-s2 | 06 | 547.50 | 0.08 | 43.80 | 10.95 | 16.42 |

#![allow(dead_code)]

use serde_json::{json, Value};

/// The input topic a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// `warden.control.v1` (key: the fact's `partner_id`, or none).
    Control,
    /// `warden.invoices.v1` (key: the `partner_id`).
    Invoices,
}

/// One record of the scenario: its topic and its JSON value (CONTRACT §1).
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: Topic,
    pub value: Value,
}

impl Record {
    /// The record key CONTRACT §1 asks for: the `partner_id` (none for a control fact
    /// without one).
    pub fn key(&self) -> Option<&str> {
        self.value.get("partner_id").and_then(Value::as_str)
    }
}

fn control(value: Value) -> Record {
    Record {
        topic: Topic::Control,
        value,
    }
}

fn invoice(value: Value) -> Record {
    Record {
        topic: Topic::Invoices,
        value,
    }
}

/// The scenario, phase by phase. Each phase holds only control facts or only invoices.
pub fn phases() -> Vec<Vec<Record>> {
    vec![
        // ---------------------------------------------------------------- phase 1: control
        // The chain, the Q2 spiff, gold-1's volume bonus, and the first EUR rate.
        vec![
            control(json!({
                "type": "partner", "partner_id": "dist-1", "name": "Distributor One",
                "tier": "platinum", "tier_effective_from": "2026-01-01T00:00:00Z",
                "override_rate": "0.03"
            })),
            control(json!({
                "type": "partner", "partner_id": "sub-1", "name": "Sub-distributor One",
                "tier": "silver", "tier_effective_from": "2026-01-01T00:00:00Z",
                "parent_id": "dist-1", "override_rate": "0.05"
            })),
            control(json!({
                "type": "partner", "partner_id": "gold-1", "name": "Gold Reseller One",
                "tier": "gold", "tier_effective_from": "2026-01-01T00:00:00Z",
                "parent_id": "sub-1"
            })),
            control(json!({
                "type": "spiff", "spiff_id": "q2-new-logo",
                "from": "2026-04-01T00:00:00Z", "to": "2026-07-01T00:00:00Z",
                "extra_rate": "0.03", "new_logo_only": true,
                "min_contract_value_usd": "50000.00"
            })),
            control(json!({
                "type": "volume_bonus", "partner_id": "gold-1",
                "monthly_threshold_usd": "10000.00", "bonus_rate": "0.01"
            })),
            control(json!({
                "type": "fx_rate", "currency": "EUR", "usd_per_unit": "1.0825",
                "as_of": "2026-04-01T00:00:00Z"
            })),
        ],
        // --------------------------------------------------------------- phase 2: invoices
        // April. gold-1 is gold (0.12) all month; its April base stays below the bonus
        // threshold (7860.47 < 10000 at the end), so no April bonus.
        vec![
            // inv-a1, USD, not a new logo: base = 2000.00 + 0.50 = 2000.50 (USD: no rate).
            //   rate 0.12 → commission 2000.50 × 0.12 = 240.06 (exact).
            //   co-op 2000.50 × 0.02 = 40.01 (exact).
            //   sub-1 2000.50 × 0.05 = 100.025 → TIE, 2 is even → 100.02.
            //   dist-1 2000.50 × 0.03 = 60.015 → TIE, 1 is odd → 60.02.
            //   April base 0 → 2000.50.
            invoice(json!({
                "invoice_id": "inv-a1", "ts": "2026-04-08T10:00:00Z", "kind": "paid",
                "partner_id": "gold-1", "tenant_id": "t-a1", "currency": "USD",
                "platform_fee": "2000.00", "overage": "0.50"
            })),
            // inv-a2, EUR, new logo, contract 47000.00 EUR. Rate: newest EUR as_of ≤ ts is
            //   1.0825 (as of 04-01). base = 1000.00 × 1.0825 = 1082.50 (exact).
            //   Spiff: in window, new logo; contract in USD at the line's rate
            //   47000 × 1.0825 = 50877.50 ≥ 50000 → applies (47000 itself would not).
            //   rate 0.12 + 0.03 = 0.15 → 1082.50 × 0.15 = 162.375 → TIE, 7 odd → 162.38.
            //   co-op 1082.50 × 0.02 = 21.65.
            //   sub-1 1082.50 × 0.05 = 54.125 → TIE, 2 even → 54.12.
            //   dist-1 1082.50 × 0.03 = 32.475 → TIE, 7 odd → 32.48.
            //   April base 2000.50 → 3083.00.
            invoice(json!({
                "invoice_id": "inv-a2", "ts": "2026-04-15T12:00:00Z", "kind": "paid",
                "partner_id": "gold-1", "tenant_id": "t-a2", "currency": "EUR",
                "platform_fee": "1000.00", "new_logo": true, "contract_value": "47000.00"
            })),
            // inv-a3, USD, new logo but contract 40000.00 < 50000 → no spiff: rate 0.12.
            //   base 3000.00; commission 360.00; co-op 60.00; sub-1 150.00; dist-1 90.00.
            //   April base 3083.00 → 6083.00.
            invoice(json!({
                "invoice_id": "inv-a3", "ts": "2026-04-22T09:00:00Z", "kind": "paid",
                "partner_id": "gold-1", "tenant_id": "t-a3", "currency": "USD",
                "platform_fee": "3000.00", "new_logo": true, "contract_value": "40000.00"
            })),
            // inv-a4, JPY, ts 04-05: no JPY rate yet → parked. Applied in phase 3.
            invoice(json!({
                "invoice_id": "inv-a4", "ts": "2026-04-05T09:00:00Z", "kind": "paid",
                "partner_id": "gold-1", "tenant_id": "t-a4", "currency": "JPY",
                "platform_fee": "150000"
            })),
            // inv-a5, JPY, ts 04-20: parked too. Applied in phase 3.
            invoice(json!({
                "invoice_id": "inv-a5", "ts": "2026-04-20T09:00:00Z", "kind": "paid",
                "partner_id": "gold-1", "tenant_id": "t-a5", "currency": "JPY",
                "platform_fee": "123457"
            })),
            // inv-s1, sub-1's own line, USD: silver 0.08, no volume bonus for sub-1.
            //   base 1500.00; commission 120.00; co-op 30.00; dist-1 1500 × 0.03 = 45.00.
            invoice(json!({
                "invoice_id": "inv-s1", "ts": "2026-04-25T09:00:00Z", "kind": "paid",
                "partner_id": "sub-1", "tenant_id": "t-s1", "currency": "USD",
                "platform_fee": "1500.00"
            })),
        ],
        // ---------------------------------------------------------------- phase 3: control
        // The first JPY rate, as of 04-10. The two parked JPY lines are applied now, in
        // arrival order, at 0.0065 (gold, rate 0.12, no spiff, no bonus):
        //   inv-a4 (ts 04-05): no rate as_of ≤ 04-05, and the first rate ever seen (04-10)
        //     is later than ts → applied with it, fx_after_ts.
        //     base 150000 × 0.0065 = 975.00; commission 975 × 0.12 = 117.00;
        //     co-op 19.50; sub-1 48.75; dist-1 29.25. April base 6083.00 → 7058.00.
        //   inv-a5 (ts 04-20): 04-10 ≤ ts → 0.0065, not after ts.
        //     base 123457 × 0.0065 = 802.4705 → 802.47;
        //     commission 802.47 × 0.12 = 96.2964 → 96.30; co-op 802.47 × 0.02 = 16.0494
        //     → 16.05; sub-1 802.47 × 0.05 = 40.1235 → 40.12; dist-1 802.47 × 0.03 =
        //     24.0741 → 24.07. April base 7058.00 → 7860.47 (< 10000: no bonus).
        vec![control(json!({
            "type": "fx_rate", "currency": "JPY", "usd_per_unit": "0.0065",
            "as_of": "2026-04-10T00:00:00Z"
        }))],
        // --------------------------------------------------------------- phase 4: invoices
        // May: gold-1 crosses its 10000.00 monthly threshold in the middle of inv-b2.
        // Line bonus = round(0.01 × max(0, after − 10000)) − round(0.01 × max(0, before − 10000)).
        vec![
            // inv-b1, USD: base 6000.00; commission 720.00; co-op 120.00; sub-1 300.00;
            //   dist-1 180.00. May base 0 → 6000.00: bonus 0 − 0 = 0.
            invoice(json!({
                "invoice_id": "inv-b1", "ts": "2026-05-05T09:00:00Z", "kind": "paid",
                "partner_id": "gold-1", "tenant_id": "t-b1", "currency": "USD",
                "platform_fee": "6000.00"
            })),
            // inv-b2, EUR 5000.00 + 250.00 overage = 5250.00 EUR. The only EUR rate known
            //   is 1.0825 (04-01): the 05-15 rate arrives in phase 5, after this line, and
            //   never re-rates it. base = 5250 × 1.0825 = 5683.125 → TIE, 2 even → 5683.12.
            //   commission 5683.12 × 0.12 = 681.9744 → 681.97.
            //   co-op 5683.12 × 0.02 = 113.6624 → 113.66.
            //   sub-1 5683.12 × 0.05 = 284.156 → 284.16.
            //   dist-1 5683.12 × 0.03 = 170.4936 → 170.49.
            //   May base 6000.00 → 11683.12: bonus round(0.01 × 1683.12 = 16.8312) − 0 = 16.83.
            invoice(json!({
                "invoice_id": "inv-b2", "ts": "2026-05-20T00:00:00Z", "kind": "paid",
                "partner_id": "gold-1", "tenant_id": "t-b2", "currency": "EUR",
                "platform_fee": "5000.00", "overage": "250.00"
            })),
            // inv-b3, USD: base 1000.00; commission 120.00; co-op 20.00; sub-1 50.00;
            //   dist-1 30.00. May base 11683.12 → 12683.12:
            //   bonus round(0.01 × 2683.12 = 26.8312) − 16.83 = 26.83 − 16.83 = 10.00.
            //   May bonus in all: 16.83 + 10.00 = 26.83 = round(0.01 × (12683.12 − 10000)).
            invoice(json!({
                "invoice_id": "inv-b3", "ts": "2026-05-28T09:00:00Z", "kind": "paid",
                "partner_id": "gold-1", "tenant_id": "t-b3", "currency": "USD",
                "platform_fee": "1000.00"
            })),
        ],
        // ---------------------------------------------------------------- phase 5: control
        vec![
            // A later EUR rate, as of 05-15: for EUR lines applied from now on with ts ≥ 05-15.
            control(json!({
                "type": "fx_rate", "currency": "EUR", "usd_per_unit": "1.0950",
                "as_of": "2026-05-15T00:00:00Z"
            })),
            // Mid-month tier change: gold-1 platinum (0.15) from 06-15, sent before June.
            control(json!({
                "type": "tier_change", "partner_id": "gold-1", "tier": "platinum",
                "effective_from": "2026-06-15T00:00:00Z"
            })),
            // gold-1's co-op balance now: April 40.01 + 21.65 + 60.00 + 19.50 + 16.05 = 157.21;
            // May 120.00 + 113.66 + 20.00 = 253.66; in all 410.87, nothing drawn.
            // mdf-1 approved 300.00: 300.00 ≤ 410.87 → drawn; balance 110.87.
            control(json!({
                "type": "mdf_expense", "expense_id": "mdf-1", "partner_id": "gold-1",
                "amount_usd": "300.00", "campaign": "Q2 webinar series", "decision": "approved"
            })),
            // mdf-2 approved 200.00: 200.00 > 110.87 → refused, insufficient_coop_balance.
            control(json!({
                "type": "mdf_expense", "expense_id": "mdf-2", "partner_id": "gold-1",
                "amount_usd": "200.00", "campaign": "Trade show booth", "decision": "approved"
            })),
            // mdf-3 rejected 50.00 (the balance would cover it): untouched; balance 110.87.
            control(json!({
                "type": "mdf_expense", "expense_id": "mdf-3", "partner_id": "gold-1",
                "amount_usd": "50.00", "campaign": "Swag", "decision": "rejected"
            })),
        ],
        // --------------------------------------------------------------- phase 6: invoices
        // June: before and after the tier change, a partial refund, a chargeback, a line
        // parked for good. June's paid base 2190.00 + 4000.00 = 6190.00 < 10000: no bonus
        // (reversals do not change the month base).
        vec![
            // inv-c1, EUR, ts 06-02 (before 06-15: gold 0.12), new logo, contract 60000 EUR.
            //   Rate: newest EUR as_of ≤ 06-02 is 1.0950 (05-15).
            //   base 2000.00 × 1.0950 = 2190.00. Contract 60000 × 1.0950 = 65700 ≥ 50000 →
            //   spiff: rate 0.15 → commission 2190.00 × 0.15 = 328.50.
            //   co-op 43.80; sub-1 2190 × 0.05 = 109.50; dist-1 2190 × 0.03 = 65.70.
            invoice(json!({
                "invoice_id": "inv-c1", "ts": "2026-06-02T09:00:00Z", "kind": "paid",
                "partner_id": "gold-1", "tenant_id": "t-c1", "currency": "EUR",
                "platform_fee": "2000.00", "new_logo": true, "contract_value": "60000.00"
            })),
            // inv-c2, USD, ts 06-20 (from 06-15: platinum 0.15), not a new logo.
            //   base 4000.00; commission 600.00; co-op 80.00; sub-1 200.00; dist-1 120.00.
            invoice(json!({
                "invoice_id": "inv-c2", "ts": "2026-06-20T09:00:00Z", "kind": "paid",
                "partner_id": "gold-1", "tenant_id": "t-c2", "currency": "USD",
                "platform_fee": "4000.00"
            })),
            // inv-b2-r1: partial refund of inv-b2, 1050.00 of 5250.00 EUR (share 0.2).
            //   Each part: round(part × 1050 ÷ 5250), multiplying first.
            //   base 5683.12 × 1050 = 5967276.00 ÷ 5250 = 1136.624 → 1136.62.
            //   commission 681.97 × 1050 ÷ 5250 = 136.394 → 136.39.
            //   co-op 113.66 → 22.732 → 22.73; bonus 16.83 → 3.366 → 3.37.
            //   sub-1 284.16 → 56.832 → 56.83; dist-1 170.49 → 34.098 → 34.10.
            //   Lands in June (the refund's ts), for gold-1 and for the ancestors.
            invoice(json!({
                "invoice_id": "inv-b2-r1", "ts": "2026-06-10T09:00:00Z", "kind": "refund",
                "partner_id": "gold-1", "tenant_id": "t-b2", "currency": "EUR",
                "platform_fee": "1050.00", "refers_to": "inv-b2"
            })),
            // inv-b3-cb: chargeback of all of inv-b3 (1000.00 of 1000.00 USD): the share
            //   reaches 1, so exactly what is left of each part is reversed: base 1000.00,
            //   commission 120.00, bonus 10.00, co-op 20.00, sub-1 50.00, dist-1 30.00.
            //   Co-op: the balance (≥ 110.87) covers 20.00 and 22.73: no clawback.
            invoice(json!({
                "invoice_id": "inv-b3-cb", "ts": "2026-06-12T09:00:00Z", "kind": "chargeback",
                "partner_id": "gold-1", "tenant_id": "t-b3", "currency": "USD",
                "platform_fee": "1000.00", "refers_to": "inv-b3"
            })),
            // inv-c5, CHF: no CHF rate ever → stays parked (parked_invoices = 1 for gold-1).
            invoice(json!({
                "invoice_id": "inv-c5", "ts": "2026-06-25T09:00:00Z", "kind": "paid",
                "partner_id": "gold-1", "tenant_id": "t-c5", "currency": "CHF",
                "platform_fee": "800.00"
            })),
            // inv-s2, sub-1's own EUR line, ts 06-16: 1.0950 (05-15) → base 500.00 × 1.0950
            //   = 547.50; silver 0.08 → 43.80; co-op 10.95;
            //   dist-1 547.50 × 0.03 = 16.425 → TIE, 2 even → 16.42.
            invoice(json!({
                "invoice_id": "inv-s2", "ts": "2026-06-16T09:00:00Z", "kind": "paid",
                "partner_id": "sub-1", "tenant_id": "t-s2", "currency": "EUR",
                "platform_fee": "500.00"
            })),
        ],
    ]
}

/// One expected figure of a partner's live state (CONTRACT §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub partner_id: &'static str,
    pub field: &'static str,
    pub value: &'static str,
}

const fn e(partner_id: &'static str, field: &'static str, value: &'static str) -> Expect {
    Expect {
        partner_id,
        field,
        value,
    }
}

/// The live totals of every partner at the end of the scenario (net of reversals).
pub fn expected_totals() -> Vec<Expect> {
    vec![
        // gold-1 — attributed revenue = the sum of its bases:
        //   April 2000.50 + 1082.50 + 3000.00 + 975.00 + 802.47 = 7860.47
        //   May 6000.00 + 5683.12 + 1000.00 = 12683.12
        //   June 2190.00 + 4000.00 − 1136.62 − 1000.00 = 4053.38
        //   7860.47 + 12683.12 + 4053.38 = 24596.97
        e("gold-1", "attributed_revenue_usd", "24596.97"),
        // commission (rate + bonus):
        //   April 240.06 + 162.38 + 360.00 + 117.00 + 96.30 = 975.74
        //   May 720.00 + 681.97 + 120.00 = 1521.97, + bonus 26.83 = 1548.80
        //   June 328.50 + 600.00 − 136.39 − 120.00 = 672.11, bonus −3.37 − 10.00 = −13.37
        //     → 658.74
        //   975.74 + 1548.80 + 658.74 = 3183.28
        e("gold-1", "commission_usd", "3183.28"),
        e("gold-1", "override_commission_usd", "0.00"),
        // co-op: April 157.21; May 253.66; June 43.80 + 80.00 − 22.73 − 20.00 = 81.07;
        //   157.21 + 253.66 + 81.07 = 491.94
        e("gold-1", "coop_accrued_usd", "491.94"),
        // balance = accrued − drawn = 491.94 − 300.00 = 191.94 (no clawback)
        e("gold-1", "coop_balance_usd", "191.94"),
        e("gold-1", "mdf_drawn_usd", "300.00"),
        e("gold-1", "parked_invoices", "1"),
        // sub-1 — own lines: base 1500.00 + 547.50 = 2047.50; commission 120.00 + 43.80 =
        // 163.80; co-op 30.00 + 10.95 = 40.95.
        e("sub-1", "attributed_revenue_usd", "2047.50"),
        e("sub-1", "commission_usd", "163.80"),
        // overrides from gold-1 (0.05):
        //   April 100.02 + 54.12 + 150.00 + 48.75 + 40.12 = 393.01
        //   May 300.00 + 284.16 + 50.00 = 634.16
        //   June 109.50 + 200.00 − 56.83 − 50.00 = 202.67
        //   393.01 + 634.16 + 202.67 = 1229.84
        e("sub-1", "override_commission_usd", "1229.84"),
        e("sub-1", "coop_accrued_usd", "40.95"),
        e("sub-1", "coop_balance_usd", "40.95"),
        e("sub-1", "mdf_drawn_usd", "0.00"),
        e("sub-1", "parked_invoices", "0"),
        // dist-1 — no lines of its own; overrides (0.03):
        //   April from gold-1 60.02 + 32.48 + 90.00 + 29.25 + 24.07 = 235.82,
        //     from sub-1 45.00 → 280.82
        //   May from gold-1 180.00 + 170.49 + 30.00 = 380.49
        //   June from gold-1 65.70 + 120.00 − 34.10 − 30.00 = 121.60,
        //     from sub-1 16.42 → 138.02
        //   280.82 + 380.49 + 138.02 = 799.33
        e("dist-1", "attributed_revenue_usd", "0.00"),
        e("dist-1", "commission_usd", "0.00"),
        e("dist-1", "override_commission_usd", "799.33"),
        e("dist-1", "coop_accrued_usd", "0.00"),
        e("dist-1", "coop_balance_usd", "0.00"),
        e("dist-1", "mdf_drawn_usd", "0.00"),
        e("dist-1", "parked_invoices", "0"),
    ]
}

/// (partner, month `YYYY-MM`, [(`StatementTotals` field, value)]).
pub type MonthTotals = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

/// Each partner's monthly statement totals (fields of `StatementTotals`). Every line
/// lands in the month of its own `ts` (no month is closed): a reversal in the month of the
/// refund/chargeback, an override in the month of the descendant's line.
pub fn expected_month_totals() -> Vec<MonthTotals> {
    // payout_usd = commission_usd + override_commission_usd;
    // commission_usd = rate_commission_usd + volume_bonus_usd.
    vec![
        // gold-1, April: inv-a1..a5 (5 lines).
        //   revenue 7860.47; rate commission 975.74; bonus 0.
        //   co-op 40.01 + 21.65 + 60.00 + 19.50 + 16.05 = 157.21.
        //   upline: a1 100.02 + 60.02 = 160.04; a2 54.12 + 32.48 = 86.60; a3 240.00;
        //   a4 48.75 + 29.25 = 78.00; a5 40.12 + 24.07 = 64.19;
        //   160.04 + 86.60 + 240.00 + 78.00 + 64.19 = 628.83.
        (
            "gold-1",
            "2026-04",
            vec![
                ("attributed_revenue_usd", "7860.47"),
                ("rate_commission_usd", "975.74"),
                ("volume_bonus_usd", "0.00"),
                ("commission_usd", "975.74"),
                ("override_commission_usd", "0.00"),
                ("coop_accrued_usd", "157.21"),
                ("upline_overrides_usd", "628.83"),
                ("payout_usd", "975.74"),
                ("lines", "5"),
            ],
        ),
        // gold-1, May: inv-b1..b3 (3 lines).
        //   revenue 12683.12; rate commission 1521.97; bonus 16.83 + 10.00 = 26.83;
        //   commission 1548.80; co-op 253.66;
        //   upline b1 480.00 + b2 (284.16 + 170.49 = 454.65) + b3 80.00 = 1014.65.
        (
            "gold-1",
            "2026-05",
            vec![
                ("attributed_revenue_usd", "12683.12"),
                ("rate_commission_usd", "1521.97"),
                ("volume_bonus_usd", "26.83"),
                ("commission_usd", "1548.80"),
                ("override_commission_usd", "0.00"),
                ("coop_accrued_usd", "253.66"),
                ("upline_overrides_usd", "1014.65"),
                ("payout_usd", "1548.80"),
                ("lines", "3"),
            ],
        ),
        // gold-1, June: inv-c1, inv-c2, inv-b2-r1, inv-b3-cb (4 lines; inv-c5 is parked).
        //   revenue 4053.38; rate commission 672.11; bonus −13.37; commission 658.74;
        //   co-op 81.07; upline c1 175.20 + c2 320.00 − r1 (56.83 + 34.10 = 90.93) − cb 80.00
        //   = 324.27.
        (
            "gold-1",
            "2026-06",
            vec![
                ("attributed_revenue_usd", "4053.38"),
                ("rate_commission_usd", "672.11"),
                ("volume_bonus_usd", "-13.37"),
                ("commission_usd", "658.74"),
                ("override_commission_usd", "0.00"),
                ("coop_accrued_usd", "81.07"),
                ("upline_overrides_usd", "324.27"),
                ("payout_usd", "658.74"),
                ("lines", "4"),
            ],
        ),
        // sub-1, April: inv-s1 + 5 overrides from gold-1 (6 lines).
        //   payout 120.00 + 393.01 = 513.01.
        (
            "sub-1",
            "2026-04",
            vec![
                ("attributed_revenue_usd", "1500.00"),
                ("rate_commission_usd", "120.00"),
                ("volume_bonus_usd", "0.00"),
                ("commission_usd", "120.00"),
                ("override_commission_usd", "393.01"),
                ("coop_accrued_usd", "30.00"),
                ("upline_overrides_usd", "45.00"),
                ("payout_usd", "513.01"),
                ("lines", "6"),
            ],
        ),
        // sub-1, May: 3 overrides from gold-1.
        (
            "sub-1",
            "2026-05",
            vec![
                ("attributed_revenue_usd", "0.00"),
                ("rate_commission_usd", "0.00"),
                ("volume_bonus_usd", "0.00"),
                ("commission_usd", "0.00"),
                ("override_commission_usd", "634.16"),
                ("coop_accrued_usd", "0.00"),
                ("upline_overrides_usd", "0.00"),
                ("payout_usd", "634.16"),
                ("lines", "3"),
            ],
        ),
        // sub-1, June: inv-s2 + 4 override lines (c1, c2, r1, cb) = 5 lines.
        //   payout 43.80 + 202.67 = 246.47.
        (
            "sub-1",
            "2026-06",
            vec![
                ("attributed_revenue_usd", "547.50"),
                ("rate_commission_usd", "43.80"),
                ("volume_bonus_usd", "0.00"),
                ("commission_usd", "43.80"),
                ("override_commission_usd", "202.67"),
                ("coop_accrued_usd", "10.95"),
                ("upline_overrides_usd", "16.42"),
                ("payout_usd", "246.47"),
                ("lines", "5"),
            ],
        ),
        // dist-1, April: 5 override lines from gold-1 + 1 from sub-1 = 6; 280.82.
        (
            "dist-1",
            "2026-04",
            vec![
                ("attributed_revenue_usd", "0.00"),
                ("rate_commission_usd", "0.00"),
                ("volume_bonus_usd", "0.00"),
                ("commission_usd", "0.00"),
                ("override_commission_usd", "280.82"),
                ("coop_accrued_usd", "0.00"),
                ("upline_overrides_usd", "0.00"),
                ("payout_usd", "280.82"),
                ("lines", "6"),
            ],
        ),
        // dist-1, May: 3 override lines; 380.49.
        (
            "dist-1",
            "2026-05",
            vec![
                ("attributed_revenue_usd", "0.00"),
                ("rate_commission_usd", "0.00"),
                ("volume_bonus_usd", "0.00"),
                ("commission_usd", "0.00"),
                ("override_commission_usd", "380.49"),
                ("coop_accrued_usd", "0.00"),
                ("upline_overrides_usd", "0.00"),
                ("payout_usd", "380.49"),
                ("lines", "3"),
            ],
        ),
        // dist-1, June: 4 override lines from gold-1 + 1 from sub-1 = 5; 138.02.
        (
            "dist-1",
            "2026-06",
            vec![
                ("attributed_revenue_usd", "0.00"),
                ("rate_commission_usd", "0.00"),
                ("volume_bonus_usd", "0.00"),
                ("commission_usd", "0.00"),
                ("override_commission_usd", "138.02"),
                ("coop_accrued_usd", "0.00"),
                ("upline_overrides_usd", "0.00"),
                ("payout_usd", "138.02"),
                ("lines", "5"),
            ],
        ),
    ]
}
