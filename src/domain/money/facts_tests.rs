use super::*;
use crate::domain::money::testkit::{d, partner_fact, t};

#[test]
fn approval_rank_follows_the_first_partner_fact() {
    let mut f = MoneyFacts::new();
    f.apply(0, &partner_fact("a", "gold", None));
    f.apply(1, &partner_fact("b", "gold", None));
    f.apply(2, &partner_fact("a", "silver", None)); // an update keeps its rank
    f.apply(3, &partner_fact("c", "gold", None));
    let rank = |p: &str| f.partner(p).unwrap().approval_rank;
    assert_eq!(
        (rank("a"), rank("b"), rank("c")),
        (Some(0), Some(1), Some(2))
    );
}

#[test]
fn replayed_offsets_change_nothing() {
    let mut f = MoneyFacts::new();
    assert_eq!(
        f.apply(5, &partner_fact("a", "gold", None)),
        FactOutcome::Applied
    );
    let before = f.clone();
    assert_eq!(
        f.apply(5, &partner_fact("a", "bronze", None)),
        FactOutcome::AlreadyApplied
    );
    assert_eq!(
        f.apply(2, &partner_fact("z", "bronze", None)),
        FactOutcome::AlreadyApplied
    );
    assert_eq!(f, before);
    assert_eq!(f.next_offset(), 6);
}

#[test]
fn tier_in_force_is_by_effective_from() {
    let mut f = MoneyFacts::new();
    f.apply(0, &partner_fact("a", "silver", None)); // effective 2026-01-01
    f.apply(
        1,
        &ControlEvent::TierChange {
            partner_id: "a".into(),
            tier: "gold".into(),
            effective_from: t("2026-05-15T00:00:00Z"),
        },
    );
    let p = f.partner("a").unwrap();
    assert_eq!(p.tier_at(t("2025-12-31T23:59:59Z")), None);
    assert_eq!(p.tier_at(t("2026-05-14T23:59:59Z")), Some("silver"));
    assert_eq!(p.tier_at(t("2026-05-15T00:00:00Z")), Some("gold"));
    assert_eq!(p.latest_tier(), Some("gold"));
}

#[test]
fn spiffs_replace_by_id_and_scope_by_partner() {
    let mut f = MoneyFacts::new();
    let spiff = |id: &str, p: Option<&str>, rate: &str| ControlEvent::Spiff {
        spiff_id: id.into(),
        partner_id: p.map(Into::into),
        from: t("2026-04-01T00:00:00Z"),
        to: t("2026-07-01T00:00:00Z"),
        extra_rate: d(rate),
        new_logo_only: false,
        min_contract_value_usd: None,
    };
    f.apply(0, &spiff("q2", None, "0.03"));
    f.apply(1, &spiff("mine", Some("a"), "0.01"));
    f.apply(2, &spiff("q2", None, "0.04"));
    let rates = |p: &str| f.spiffs_for(p).map(|s| s.extra_rate).collect::<Vec<_>>();
    assert_eq!(rates("a"), vec![d("0.01"), d("0.04")]);
    assert_eq!(rates("b"), vec![d("0.04")]);
}

#[test]
fn a_partners_own_volume_bonus_beats_the_program_wide_one() {
    let mut f = MoneyFacts::new();
    let vb = |p: Option<&str>, rate: &str| ControlEvent::VolumeBonus {
        partner_id: p.map(Into::into),
        monthly_threshold_usd: d("1000"),
        bonus_rate: d(rate),
    };
    f.apply(0, &vb(Some("a"), "0.03"));
    f.apply(1, &vb(None, "0.01"));
    f.apply(2, &vb(None, "0.02"));
    assert_eq!(f.volume_bonus_for("a").unwrap().bonus_rate, d("0.03"));
    assert_eq!(f.volume_bonus_for("b").unwrap().bonus_rate, d("0.02"));
}

#[test]
fn the_first_tenant_fact_is_the_activation() {
    let mut f = MoneyFacts::new();
    let tenant = |p: &str| ControlEvent::Tenant {
        tenant_id: "t1".into(),
        partner_id: p.into(),
        plan: crate::domain::event::TenantPlan::Pilot,
        started_at: t("2026-05-01T00:00:00Z"),
        deployment_value_usd: None,
    };
    f.apply(3, &tenant("a"));
    f.apply(4, &tenant("b")); // a migration
    assert_eq!(f.activation_of("t1"), Some(("a", 3)));
    assert_eq!(f.activation_of("t2"), None);
}

#[test]
fn a_later_partner_fact_clears_omitted_overrides() {
    let mut f = MoneyFacts::new();
    f.apply(0, &partner_fact("a", "gold", Some("p")));
    let mut with_rate = partner_fact("a", "gold", Some("p"));
    if let ControlEvent::Partner { override_rate, .. } = &mut with_rate {
        *override_rate = Some(d("0.03"));
    }
    f.apply(1, &with_rate);
    assert_eq!(f.partner("a").unwrap().override_rate, Some(d("0.03")));
    f.apply(2, &partner_fact("a", "gold", None));
    let p = f.partner("a").unwrap();
    assert_eq!((p.override_rate, p.parent_id.as_deref()), (None, None));
}
