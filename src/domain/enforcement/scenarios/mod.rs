//! Acceptance scenarios of enforcement, driven through [`EnforcementState`] with an
//! injected clock: the ladder (`ladder.rs`), quotas (`quota.rs`), people and pilots
//! (`people.rs`), a property over random traffic (`prop.rs`), and when a partner is due a
//! tick (`due.rs`).

mod due;
mod ladder;
mod people;
mod prop;
mod quota;

use chrono::{DateTime, Utc};

use super::{Decision, EnforcementPolicy, EnforcementState, Level, Reason, Scope, DEFAULT_TIER};
use crate::domain::event::{OveragePolicy, UsageEvent};

/// 2026-05-10T00:00:00Z: aligned to every window width used, mid-month.
pub(super) const BASE: i64 = 1_778_371_200;

pub(super) fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(BASE + secs, 0).unwrap()
}

/// Seconds since `BASE`.
pub(super) fn secs(at: DateTime<Utc>) -> i64 {
    at.timestamp() - BASE
}

/// Default timing (dwell 30 s, calm 5 m) with no quota and no burst limit, so only
/// health signals move levels.
pub(super) fn health_policy() -> EnforcementPolicy {
    quota_policy(0, 0, OveragePolicy::Block)
}

pub(super) fn quota_policy(monthly: u64, burst: u64, overage: OveragePolicy) -> EnforcementPolicy {
    let mut p = EnforcementPolicy::default();
    let tier = p.tiers.get_mut(DEFAULT_TIER).unwrap();
    tier.monthly_requests = monthly;
    tier.burst_rps = burst;
    tier.overage = overage;
    p
}

/// A partner `p-1` driven by events and ticks.
pub(super) struct Sim {
    pub state: EnforcementState,
    pub policy: EnforcementPolicy,
    pub log: Vec<Decision>,
    seq: u64,
}

impl Sim {
    pub fn new(policy: EnforcementPolicy) -> Self {
        assert!(policy.validate().is_empty(), "{:?}", policy.validate());
        Sim {
            state: EnforcementState::new("p-1"),
            policy,
            log: Vec::new(),
            seq: 0,
        }
    }

    pub fn event(
        &mut self,
        at: i64,
        integration: &str,
        requests: u64,
        errors: u64,
        auth: u64,
    ) -> Vec<Decision> {
        self.event_under("bronze-ish", at, integration, requests, errors, auth)
    }

    /// [`event`](Self::event), judged under `tier` (the tier in force at its time).
    pub fn event_under(
        &mut self,
        tier: &str,
        at: i64,
        integration: &str,
        requests: u64,
        errors: u64,
        auth: u64,
    ) -> Vec<Decision> {
        self.seq += 1;
        let e = UsageEvent {
            event_id: format!("e-{}", self.seq),
            ts: t(at),
            partner_id: "p-1".into(),
            integration_id: integration.into(),
            tenant_id: None,
            requests,
            errors,
            auth_failures: auth,
            bytes: 0,
        };
        let out = self.state.on_usage(&e, tier, &self.policy);
        self.log.extend(out.iter().cloned());
        out
    }

    pub fn usage(&mut self, at: i64, requests: u64, errors: u64, auth: u64) -> Vec<Decision> {
        self.event(at, "i-1", requests, errors, auth)
    }

    pub fn tick(&mut self, at: i64) -> Vec<Decision> {
        let out = self.state.tick(t(at), t(at), "bronze-ish", &self.policy);
        self.log.extend(out.iter().cloned());
        out
    }

    /// `(seconds, previous, level, reason)` of the logged decisions at `scope`.
    pub fn moves(&self, scope: Scope) -> Vec<(i64, Level, Level, Reason)> {
        self.log
            .iter()
            .filter(|d| d.scope == scope)
            .map(|d| (secs(d.at), d.previous, d.level, d.reason))
            .collect()
    }
}
