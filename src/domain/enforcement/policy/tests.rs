//! Unit tests of `policy`.

use super::*;

#[test]
fn defaults_are_valid_and_higher_tiers_get_bigger_quotas() {
    let p = EnforcementPolicy::default();
    assert_eq!(p.validate(), Vec::<(String, String)>::new());
    let quota = |t: &str| (p.tier(t).monthly_requests, p.tier(t).burst_rps);
    assert!(quota("bronze") < quota("silver"));
    assert!(quota("silver") < quota("gold"));
    assert!(quota("gold") < quota("platinum"));
    assert_eq!(p.dwell, Duration::from_secs(30));
    assert_eq!(p.calm, Duration::from_secs(300));
    assert_eq!(p.pilot_max_age, Duration::from_secs(30 * 86_400));
}

#[test]
fn unknown_tier_falls_back_to_default_entry_then_built_in() {
    let mut p = EnforcementPolicy::default();
    p.tiers.get_mut(DEFAULT_TIER).unwrap().burst_rps = 7;
    assert_eq!(p.tier("diamond").burst_rps, 7);
    assert_eq!(p.tier("gold").burst_rps, 1_000);
    p.tiers.clear();
    assert_eq!(p.tier("gold"), &TierPolicy::default());
}

#[test]
fn toml_with_humantime_durations_and_partial_tiers_parses() {
    let text = r#"
        dwell = "10s"
        calm = "2m"
        pilot_max_age = "14days"
        [tiers.default]
        burst_rps = 9
        overage = "notify"
        error_window = "1m"
    "#;
    let p: EnforcementPolicy = toml::from_str(text).unwrap();
    assert_eq!(p.dwell, Duration::from_secs(10));
    assert_eq!(p.calm, Duration::from_secs(120));
    assert_eq!(p.pilot_max_age, Duration::from_secs(14 * 86_400));
    let t = p.tier("anything");
    assert_eq!((t.burst_rps, t.overage), (9, OveragePolicy::Notify));
    assert_eq!(t.error_window, Duration::from_secs(60));
    assert_eq!(t.monthly_requests, TierPolicy::default().monthly_requests);
    // A table given in full replaces the built-in tier list.
    assert!(!p.tiers.contains_key("gold"));
    let back: EnforcementPolicy = toml::from_str(&toml::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
}

#[test]
fn unknown_keys_and_bad_durations_are_rejected() {
    let err = toml::from_str::<EnforcementPolicy>("dwel = \"1s\"").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let err = toml::from_str::<EnforcementPolicy>("calm = \"soon\"").unwrap_err();
    assert!(err.to_string().contains("invalid duration"), "{err}");
    let err = toml::from_str::<EnforcementPolicy>("[tiers.x]\nburst = 1").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn validate_lists_every_problem_with_its_key() {
    let mut p = EnforcementPolicy {
        dwell: Duration::from_secs(60),
        calm: Duration::from_secs(10),
        throttle_factor: 0.0,
        warn_fraction: f64::NAN,
        hard_ceiling: 0.9,
        ..EnforcementPolicy::default()
    };
    let gold = p.tiers.get_mut("gold").unwrap();
    gold.error_rate_throttle = 0.01;
    gold.ewma_alpha = 1.5;
    gold.error_window = Duration::from_secs(3);
    gold.chargeback_suspend = 1;
    let keys: Vec<String> = p.validate().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "calm",
            "throttle_factor",
            "warn_fraction",
            "hard_ceiling",
            "tiers.gold.error_rate_throttle",
            "tiers.gold.error_window",
            "tiers.gold.ewma_alpha",
            "tiers.gold.chargeback_suspend",
        ]
    );
    p.tiers.remove(DEFAULT_TIER);
    assert!(p.validate().iter().any(|(k, _)| k == "tiers"));
}
