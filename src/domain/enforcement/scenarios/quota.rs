//! Quotas through the whole state: the three overage policies, overrides, month rollover
//! and bursts.

use super::*;
use crate::domain::enforcement::QuotaSpec;
use Level::{Ok as L0, Suspend, Throttle, Warn};

type Row = (u64, Level, Level, Reason, Option<u64>);

/// Sends `n` events of 100 requests an hour apart (no burst, no anomaly) and returns, per
/// decision, the month's use when it came.
fn climb(sim: &mut Sim, n: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    for k in 1..=n {
        for d in sim.usage(k as i64 * 3_600, 100, 0, 0) {
            assert_eq!((d.scope, d.id.as_str()), (Scope::Partner, "p-1"));
            rows.push((k * 100, d.previous, d.level, d.reason, d.rate_limit_rps));
        }
    }
    rows
}

#[test]
fn block_warns_at_80_throttles_at_100_and_suspends_past_the_hard_ceiling() {
    let mut sim = Sim::new(quota_policy(1_000, 100, OveragePolicy::Block));
    assert_eq!(
        climb(&mut sim, 15),
        [
            (800, L0, Warn, Reason::QuotaWarn, None),
            (1_000, Warn, Throttle, Reason::QuotaExceeded, Some(50)),
            (1_300, Throttle, Suspend, Reason::QuotaHardCeiling, None),
        ]
    );
    let q = sim.state.quota("x", &sim.policy);
    assert_eq!((q.used, q.limit, q.overage), (1_500, 1_000, 500));
    assert_eq!(q.month.as_deref(), Some("2026-05"));
    // Suspended, its traffic is blocked: kept live to be lifted when the month ends.
    assert!(sim.state.calms_by_time());
}

#[test]
fn a_quota_warn_or_throttle_does_not_keep_a_partner_live() {
    // Traffic still flows under them, so the next event judges a new month.
    let mut sim = Sim::new(quota_policy(1_000, 0, OveragePolicy::Block));
    let rows = climb(&mut sim, 10);
    assert_eq!(rows.last().map(|r| r.2), Some(Throttle), "{rows:?}");
    assert!(!sim.state.calms_by_time());
}

#[test]
fn soft_records_overage_up_to_the_overshoot_then_throttles() {
    let mut sim = Sim::new(quota_policy(1_000, 100, OveragePolicy::Soft));
    assert_eq!(
        climb(&mut sim, 15),
        [
            (800, L0, Warn, Reason::QuotaWarn, None),
            (1_200, Warn, Throttle, Reason::QuotaSoftOverage, Some(50)),
        ]
    );
    assert_eq!(sim.state.quota("x", &sim.policy).overage, 500);
}

#[test]
fn notify_only_warns_however_far_past_the_quota() {
    let mut sim = Sim::new(quota_policy(1_000, 100, OveragePolicy::Notify));
    assert_eq!(
        climb(&mut sim, 30),
        [(800, L0, Warn, Reason::QuotaWarn, None)]
    );
    assert_eq!(sim.state.quota("x", &sim.policy).used, 3_000);
}

#[test]
fn an_override_governs_later_events_and_grants_no_burst() {
    let mut sim = Sim::new(quota_policy(1_000, 100, OveragePolicy::Block));
    climb(&mut sim, 9);
    assert_eq!(sim.state.partner_level().level, Warn);
    // A bigger monthly quota: nothing is re-judged until the next event.
    let bigger = QuotaSpec {
        monthly_requests: 2_000,
        burst_rps: 100,
        overage: OveragePolicy::Block,
    };
    sim.state.on_quota(None, bigger);
    assert_eq!(sim.state.partner_level().level, Warn);
    let s = 40_000;
    let d = sim.usage(s, 100, 0, 0);
    assert_eq!(
        (d[0].previous, d[0].level, d[0].reason),
        (Warn, L0, Reason::Calm)
    );
    // A bigger burst mid-second keeps the second's count: 100 + 60 > 150.
    sim.state.on_quota(
        None,
        QuotaSpec {
            burst_rps: 150,
            ..bigger
        },
    );
    let d = sim.usage(s, 60, 0, 0);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0].level, d[0].reason, d[0].rate_limit_rps),
        (Throttle, Reason::BurstExceeded, Some(75))
    );
    // A smaller monthly quota applies to the next event, with the month's use kept.
    sim.tick(s + 100);
    sim.state.on_quota(
        None,
        QuotaSpec {
            monthly_requests: 500,
            ..bigger
        },
    );
    let d = sim.usage(s + 200, 1, 0, 0);
    assert_eq!(
        (d[0].level, d[0].reason),
        (Suspend, Reason::QuotaHardCeiling)
    );
    assert_eq!(sim.state.quota("x", &sim.policy).used, 1_061);
}

/// A `quota` fact that moves `burst_rps` while the partner is throttled reaches the gateway
/// at the next event, not at the level's next change (maybe the end of the month).
#[test]
fn a_throttled_partners_new_burst_rate_is_decided_at_the_next_event() {
    let mut sim = Sim::new(quota_policy(1_000, 100, OveragePolicy::Block));
    let rows = climb(&mut sim, 10);
    assert_eq!(rows.last().map(|r| (r.2, r.4)), Some((Throttle, Some(50))));
    sim.state.on_quota(
        None,
        QuotaSpec {
            monthly_requests: 1_000,
            burst_rps: 1_000,
            overage: OveragePolicy::Block,
        },
    );
    let d = sim.usage(11 * 3_600, 1, 0, 0);
    assert_eq!(
        d.iter()
            .map(|d| (d.previous, d.level, d.rate_limit_rps))
            .collect::<Vec<_>>(),
        [(Throttle, Throttle, Some(500))]
    );
    assert_eq!(sim.usage(12 * 3_600, 1, 0, 0), []);
}

/// A tier change moves a throttled partner's rate at the next tick (the watermark's
/// tier); a late event after it, judged under the tier of its own time, does not set the
/// old rate back (which every late event would otherwise flip, with a decision each).
#[test]
fn a_late_event_under_the_older_tier_does_not_set_its_rate_back() {
    let mut policy = quota_policy(1_000, 100, OveragePolicy::Block);
    let mut gold = policy.tiers[DEFAULT_TIER].clone();
    gold.burst_rps = 1_000;
    policy.tiers.insert("gold".into(), gold);
    let mut sim = Sim::new(policy);
    let rows = climb(&mut sim, 10);
    assert_eq!(rows.last().map(|r| (r.2, r.4)), Some((Throttle, Some(50))));
    let rates = |d: Vec<Decision>| -> Vec<(Level, Level, Option<u64>)> {
        d.iter()
            .filter(|d| d.scope == Scope::Partner)
            .map(|d| (d.previous, d.level, d.rate_limit_rps))
            .collect()
    };
    let now = 11 * 3_600;
    let d = sim.state.tick(t(now), t(now), "gold", &sim.policy);
    assert_eq!(rates(d), [(Throttle, Throttle, Some(500))]);
    for (k, at) in [now - 60, now - 30, now - 1].into_iter().enumerate() {
        let d = sim.event_under(DEFAULT_TIER, at, "i-1", 1, 0, 0);
        assert_eq!(rates(d), [], "late event {k}");
        assert_eq!(sim.state.tick(t(now), t(now), "gold", &sim.policy), []);
    }
    // An on-time event under the old tier (a tier change withdrawn) does move it back.
    let d = sim.event_under(DEFAULT_TIER, now + 1, "i-1", 1, 0, 0);
    assert_eq!(rates(d), [(Throttle, Throttle, Some(50))]);
}

#[test]
fn an_integration_quota_decides_at_integration_scope() {
    let mut sim = Sim::new(quota_policy(0, 0, OveragePolicy::Block));
    let spec = QuotaSpec {
        monthly_requests: 100,
        burst_rps: 60,
        overage: OveragePolicy::Block,
    };
    sim.state.on_quota(Some("i-9"), spec);
    let d = sim.event(0, "i-9", 30, 0, 0);
    assert_eq!(d, []);
    let d = sim.event(10, "i-9", 50, 0, 0);
    assert_eq!(
        (d[0].scope, d[0].id.as_str(), d[0].level),
        (Scope::Integration, "i-9", Warn)
    );
    let d = sim.event(20, "i-9", 20, 0, 0);
    assert_eq!((d[0].level, d[0].rate_limit_rps), (Throttle, Some(30)));
    assert_eq!(
        sim.event(30, "i-1", 1_000, 0, 0),
        [],
        "other integrations are unlimited"
    );
    assert_eq!(sim.state.integration_quota("i-9").unwrap().used, 100);
    assert_eq!(sim.state.integration_quota("i-1"), None);
}

#[test]
fn a_new_month_lifts_quota_decisions_and_starts_from_zero() {
    let mut sim = Sim::new(quota_policy(1_000, 100, OveragePolicy::Block));
    climb(&mut sim, 13);
    assert_eq!(sim.state.partner_level().level, Suspend);
    // 2026-06-01T00:00:00Z is 22 days after BASE.
    let june = 22 * 86_400;
    assert_eq!(sim.tick(june - 1), []);
    let d = sim.tick(june);
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].previous, d[0].level, d[0].reason, secs(d[0].at)),
        (Suspend, L0, Reason::Calm, june)
    );
    let q = sim.state.quota("x", &sim.policy);
    assert_eq!((q.used, q.month.as_deref()), (0, Some("2026-06")));
    // A late May event does not count toward June.
    sim.usage(june - 10, 90, 0, 0);
    assert_eq!(sim.state.quota("x", &sim.policy).used, 0);
    for k in 0..9 {
        sim.usage(june + 10 + k, 90, 0, 0);
    }
    assert_eq!(sim.state.quota("x", &sim.policy).used, 810);
    assert_eq!(sim.state.partner_level().level, Warn);
}

#[test]
fn a_burst_throttles_at_half_the_burst_rate_until_the_hold_ends() {
    let mut sim = Sim::new(quota_policy(0, 100, OveragePolicy::Block));
    assert_eq!(sim.usage(0, 60, 0, 0), []);
    let d = sim.usage(0, 50, 0, 0);
    assert_eq!(
        d,
        [Decision {
            scope: Scope::Partner,
            id: "p-1".into(),
            partner_id: "p-1".into(),
            level: Throttle,
            previous: L0,
            reason: Reason::BurstExceeded,
            rate_limit_rps: Some(50),
            at: t(0),
        }]
    );
    // The hold ends by time alone: the partner stays live (not passivated) until then.
    assert!(sim.state.calms_by_time());
    // The hold is 30 s after the end of second 0.
    assert_eq!(sim.tick(30), []);
    assert!(sim.state.calms_by_time());
    let d = sim.tick(31);
    assert_eq!(
        (d[0].previous, d[0].level, d[0].reason),
        (Throttle, L0, Reason::Calm)
    );
    assert!(!sim.state.calms_by_time());
}
