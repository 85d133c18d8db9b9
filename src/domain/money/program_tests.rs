use super::*;
use std::str::FromStr;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[test]
fn the_default_program_has_the_contract_rates() {
    let p = Program::builtin("default").unwrap().unwrap();
    for (tier, rate) in [
        ("bronze", "0.05"),
        ("silver", "0.08"),
        ("gold", "0.12"),
        ("platinum", "0.15"),
    ] {
        assert_eq!(p.tier(tier).unwrap().commission_rate, d(rate), "{tier}");
        assert_eq!(p.tier(tier).unwrap().coop_rate, d("0.02"), "{tier}");
    }
    assert_eq!(p.tier("Gold"), p.tier("gold"));
    assert!(p.promo.is_none() && !p.is_credits() && p.downline_overrides);
}

#[test]
fn the_reseller_program_has_the_launch_promo() {
    let p = Program::builtin("reseller").unwrap().unwrap();
    assert_eq!(p.tier(&p.default_tier).unwrap().commission_rate, d("0.20"));
    assert_eq!(
        p.promo,
        Some(Promo {
            first_n_approved: 3,
            rate: d("0.50")
        })
    );
    assert_eq!(p.status, StatusRules::default());
}

#[test]
fn the_credits_program_discounts_and_has_no_overrides() {
    let p = Program::builtin("credits").unwrap().unwrap();
    assert!(p.is_credits() && !p.downline_overrides);
    assert_eq!(p.default_tier, "authorized");
    for (tier, disc) in [
        ("authorized", "0.10"),
        ("specialist", "0.20"),
        ("regional", "0.30"),
        ("strategic", "0.40"),
    ] {
        assert_eq!(
            p.tier(tier).unwrap().credit_discount,
            Some(d(disc)),
            "{tier}"
        );
    }
}

#[test]
fn floats_and_unknown_keys_are_refused() {
    let float = "name='x'\ndefault_tier='a'\n[tiers.a]\ncommission_rate=0.05\n";
    assert!(matches!(
        Program::from_toml(float, "f"),
        Err(ProgramError::Parse { .. })
    ));
    let unknown = "name='x'\ndefault_tier='a'\nbogus=1\n[tiers.a]\ncommission_rate='0.05'\n";
    let err = Program::from_toml(unknown, "f").unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn validate_lists_every_problem_with_its_key() {
    let text = r#"
        name = ""
        default_tier = "missing"
        [tiers.Gold]
        commission_rate = "1.5"
        coop_rate = "-0.01"
        credit_discount = "0.1"
        [promo]
        first_n_approved = 0
        rate = "2"
        [status]
        active_min_tenants_per_year = 10
        window_days = 0
        lock_after_tenants = 0
        lock_years = 0
    "#;
    let Err(ProgramError::Invalid { problems, .. }) = Program::from_toml(text, "t") else {
        panic!("expected invalid");
    };
    let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "name",
        "default_tier",
        "tiers.Gold",
        "tiers.Gold.commission_rate",
        "tiers.Gold.coop_rate",
        "tiers.Gold.credit_discount",
        "promo.first_n_approved",
        "promo.rate",
        "status.window_days",
        "status.lock_after_tenants",
        "status.lock_years",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
}

#[test]
fn a_credits_program_needs_discounts_and_no_overrides() {
    let text = r#"
        name = "c"
        default_tier = "a"
        [tiers.a]
        commission_rate = "0"
        [credits]
        low_water_credits = "-1"
    "#;
    let Err(ProgramError::Invalid { problems, .. }) = Program::from_toml(text, "t") else {
        panic!("expected invalid");
    };
    let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "tiers.a.credit_discount",
            "credits.low_water_credits",
            "downline_overrides"
        ]
    );
}

#[test]
fn a_program_round_trips_through_toml() {
    let p = Program::builtin("credits").unwrap().unwrap();
    let text = toml::to_string(&p).unwrap();
    assert_eq!(Program::from_toml(&text, "rt").unwrap(), p);
}
