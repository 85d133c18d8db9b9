//! People's levels, pilots, bounds and snapshots through the whole state.

use super::*;
use crate::domain::enforcement::{
    Capacity, EnforcementError, ManualOrder, QuotaSpec, TenantFact, MAX_TRACKED_INTEGRATIONS,
};
use crate::domain::event::TenantPlan;
use Level::{Killed, Ok as L0, Suspend, Terminated, Throttle, Warn};

fn order(scope: Scope, id: &str, level: Level, reason: Reason) -> ManualOrder {
    ManualOrder {
        scope,
        id: id.into(),
        level,
        reason,
        actor: "alice".into(),
    }
}

fn manual(sim: &mut Sim, o: &ManualOrder, at: i64) -> Result<Option<Decision>, EnforcementError> {
    let out = sim.state.manual(o, t(at), "x", &sim.policy);
    if let Ok(Some(d)) = &out {
        sim.log.push(d.clone());
    }
    out
}

#[test]
fn a_pilot_past_30_days_is_suspended_at_tenant_scope_and_paying_lifts_it() {
    let mut sim = Sim::new(EnforcementPolicy::default());
    let day = 86_400;
    let pilot = TenantFact {
        tenant_id: "t-1",
        partner_id: "p-1",
        plan: TenantPlan::Pilot,
        started_at: t(0),
    };
    assert_eq!(sim.state.on_tenant(pilot, t(day), &sim.policy), []);
    // Pilot age runs on the wall clock: the event-time watermark stays at 0.
    assert_eq!(sim.state.tick(t(0), t(30 * day), "x", &sim.policy), []);
    let d = sim.state.tick(t(0), t(30 * day + 1), "x", &sim.policy);
    assert_eq!(
        d,
        [Decision {
            scope: Scope::Tenant,
            id: "t-1".into(),
            partner_id: "p-1".into(),
            level: Suspend,
            previous: L0,
            reason: Reason::PilotExpired,
            rate_limit_rps: None,
            at: t(30 * day + 1),
        }]
    );
    assert_eq!(sim.state.levels()[1].id, "t-1");
    assert_eq!(sim.state.tick(t(0), t(45 * day), "x", &sim.policy), []);
    let paid = TenantFact {
        plan: TenantPlan::Paid,
        ..pilot
    };
    let d = sim.state.on_tenant(paid, t(46 * day), &sim.policy);
    assert_eq!((d.len(), d[0].previous, d[0].level), (1, Suspend, L0));
    assert_eq!(sim.state.levels().len(), 1);
    assert_eq!(sim.state.capacity().tenants, 0);
}

#[test]
fn terminated_and_killed_are_never_lowered_by_the_ladder_or_by_time() {
    let mut sim = Sim::new(quota_policy(1_000, 0, OveragePolicy::Block));
    let d = manual(
        &mut sim,
        &order(Scope::Partner, "p-1", Terminated, Reason::Manual),
        0,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (d.previous, d.level, d.reason),
        (L0, Terminated, Reason::Manual)
    );
    let kill = order(Scope::Integration, "i-1", Killed, Reason::KillSwitch);
    manual(&mut sim, &kill, 0).unwrap().unwrap();
    // An hour of errors, auth failures and quota overuse, ticks every 10 s, then a week.
    for s in (0..3_600).step_by(10) {
        sim.usage(s, 100, 100, 500);
        sim.tick(s);
    }
    for s in (3_600..7 * 86_400).step_by(3_600) {
        sim.tick(s);
    }
    assert_eq!(sim.log.len(), 2, "{:?}", sim.log);
    assert_eq!(sim.state.partner_level().level, Terminated);
    assert_eq!(sim.state.levels()[1].level, Killed);
    // A person lifts the partner's hold: the quota (3600 % used) still suspends it.
    let lift = order(Scope::Partner, "p-1", L0, Reason::Manual);
    let d = manual(&mut sim, &lift, 7 * 86_400).unwrap().unwrap();
    assert_eq!(
        (d.previous, d.level, d.reason),
        (Terminated, Suspend, Reason::Manual)
    );
    // The kill switch's TTL expiring lifts the integration's.
    let ttl = ManualOrder {
        actor: "ttl".into(),
        ..order(Scope::Integration, "i-1", L0, Reason::KillSwitch)
    };
    let d = manual(&mut sim, &ttl, 7 * 86_400).unwrap().unwrap();
    assert_eq!(
        (d.previous, d.level, d.reason),
        (Killed, L0, Reason::KillSwitch)
    );
}

#[test]
fn a_manual_level_below_a_quota_decision_leaves_the_quota_in_force() {
    let mut sim = Sim::new(quota_policy(1_000, 100, OveragePolicy::Block));
    for k in 0..10 {
        sim.usage(k * 60, 100, 0, 0);
    }
    assert_eq!(sim.state.partner_level().level, Throttle);
    let ok = order(Scope::Partner, "p-1", L0, Reason::Manual);
    assert_eq!(manual(&mut sim, &ok, 600), Ok(None));
    let suspend = order(Scope::Partner, "p-1", Suspend, Reason::Manual);
    let d = manual(&mut sim, &suspend, 600).unwrap().unwrap();
    assert_eq!(
        (d.previous, d.level, d.rate_limit_rps),
        (Throttle, Suspend, None)
    );
    // No signal holds the manual suspend: it calms to the quota's throttle.
    for s in (600..=1_000).step_by(10) {
        sim.tick(s);
    }
    let last = sim.log.last().unwrap();
    assert_eq!(
        (
            last.previous,
            last.level,
            last.reason,
            last.rate_limit_rps,
            secs(last.at)
        ),
        (Suspend, Throttle, Reason::QuotaExceeded, Some(50), 900)
    );
}

#[test]
fn requests_outside_the_rules_are_errors_and_change_nothing() {
    let mut sim = Sim::new(EnforcementPolicy::default());
    sim.usage(0, 10, 0, 0);
    let before = sim.state.clone();
    let cases = [
        (
            order(Scope::Global, "*", Killed, Reason::KillSwitch),
            EnforcementError::UnsupportedScope(Scope::Global),
        ),
        (
            order(Scope::Partner, "p-2", Warn, Reason::Manual),
            EnforcementError::UnknownTarget {
                scope: Scope::Partner,
                id: "p-2".into(),
            },
        ),
        (
            order(Scope::Integration, "i-7", Suspend, Reason::ErrorRate),
            EnforcementError::NotManualReason(Reason::ErrorRate),
        ),
    ];
    for (o, err) in cases {
        assert_eq!(manual(&mut sim, &o, 10), Err(err));
    }
    assert_eq!(sim.state, before);
}

#[test]
fn integrations_past_the_bound_are_counted_and_idle_ones_are_forgotten() {
    let mut sim = Sim::new(quota_policy(0, 0, OveragePolicy::Block));
    let configured = QuotaSpec {
        monthly_requests: 10,
        burst_rps: 0,
        overage: OveragePolicy::Notify,
    };
    for n in 0..MAX_TRACKED_INTEGRATIONS + 40 {
        sim.event(n as i64, &format!("i-{n}"), 1, 0, 0);
    }
    sim.state.on_quota(Some("late-but-configured"), configured);
    let d = sim.event(400, "late-but-configured", 9, 0, 0);
    assert_eq!((d[0].scope, d[0].level), (Scope::Integration, Warn));
    let err = manual(
        &mut sim,
        &order(Scope::Integration, "i-new", Killed, Reason::KillSwitch),
        400,
    );
    assert_eq!(
        err,
        Err(EnforcementError::AtCapacity {
            scope: Scope::Integration,
            cap: MAX_TRACKED_INTEGRATIONS
        })
    );
    assert_eq!(
        sim.state.capacity(),
        Capacity {
            integrations: MAX_TRACKED_INTEGRATIONS + 1,
            integration_cap: MAX_TRACKED_INTEGRATIONS,
            untracked_integration_events: 40,
            tenants: 0,
            tenant_cap: crate::domain::enforcement::MAX_TRACKED_TENANTS,
            untracked_tenant_facts: 0,
        }
    );
    // Past June 1st (new month, use back to zero) and a week without traffic, only the
    // configured integration stays.
    for h in 1..=31 * 24 {
        sim.tick(h * 3_600);
    }
    assert_eq!(sim.state.capacity().integrations, 1);
    assert_eq!(sim.state.quota("x", &sim.policy).used, 0);
}

#[test]
fn the_state_round_trips_through_json_and_decides_the_same_afterwards() {
    let mut sim = Sim::new(quota_policy(10_000, 500, OveragePolicy::Soft));
    for s in (0..900).step_by(10) {
        sim.usage(s, 100, if s > 600 { 40 } else { 1 }, 2);
        sim.event(s, "i-2", 50, 0, 0);
        sim.tick(s);
    }
    sim.state.on_chargeback(t(900), "x", &sim.policy);
    sim.state.on_quota(
        Some("i-2"),
        QuotaSpec {
            monthly_requests: 5_000,
            burst_rps: 10,
            overage: OveragePolicy::Block,
        },
    );
    let pilot = TenantFact {
        tenant_id: "t-1",
        partner_id: "p-1",
        plan: TenantPlan::Pilot,
        started_at: t(0),
    };
    sim.state.on_tenant(pilot, t(900), &sim.policy);
    manual(
        &mut sim,
        &order(Scope::Tenant, "t-2", Killed, Reason::KillSwitch),
        900,
    )
    .unwrap();
    assert!(!sim.log.is_empty());

    let json = serde_json::to_string(&sim.state).unwrap();
    assert!(
        json.len() < 4_096,
        "snapshot is {} bytes: {json}",
        json.len()
    );
    let restored = serde_json::from_str(&json).unwrap();
    assert_eq!(sim.state, restored);
    let mut twin = Sim::new(sim.policy.clone());
    twin.state = restored;
    for s in (910..3_000).step_by(10) {
        let a = sim.usage(s, 100, 60, 0);
        let b = twin.usage(s, 100, 60, 0);
        assert_eq!(a, b);
        assert_eq!(sim.tick(s), twin.tick(s));
    }
    assert_eq!(sim.state, twin.state);
}
