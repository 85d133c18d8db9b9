//! A metered subject: the partner itself, or one of its integrations. It has health
//! signals feeding its ladder, a quota meter, and the decided level ([`Subject`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::decision::Decision;
use super::duration::chrono_dur;
use super::health::{Health, Target};
use super::ladder::Timing;
use super::level::Reason;
use super::policy::{EnforcementPolicy, TierPolicy};
use super::quota::{monthly_target, Meter, QuotaSpec};
use super::subject::{Key, Rate, Subject};
use super::window::Traffic;
use crate::domain::event::UsageEvent;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metered {
    /// Left out while calm (`ok`, never moved), as most integrations are.
    #[serde(default, skip_serializing_if = "crate::domain::is_default")]
    pub subject: Subject,
    pub health: Health,
    pub meter: Meter,
    /// Newest event time of this subject's own usage.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::domain::stamp::opt"
    )]
    pub last_seen: Option<DateTime<Utc>>,
}

/// The quotas that apply to a subject when it is judged.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    /// Its own quota; `None` = no quota decisions at this scope.
    pub own: Option<QuotaSpec>,
    /// The quota whose `burst_rps` sets a throttle's rate (the own one, else the partner's).
    pub rate: QuotaSpec,
    /// A further immediate target of the subject (e.g. a partner low on activation
    /// credits is warned); `Target::CALM` when there is none.
    pub advisory: Target,
    /// Whether `rate` is the one in force at the subject's clock, so a throttle already
    /// decided at another rate is decided again at this one. A late event is judged
    /// under the tier of its own time, and must not set an older tier's rate back after
    /// a tick set the newer one (the rate would flip at every late event).
    pub refresh_rate: bool,
}

impl Metered {
    /// Counts one usage event: always in the health windows, in the month when
    /// `this_month`, in the burst second against `burst_rps`.
    pub fn record(
        &mut self,
        e: &UsageEvent,
        this_month: bool,
        burst_rps: u64,
        now: DateTime<Utc>,
        tier: &TierPolicy,
        policy: &EnforcementPolicy,
    ) {
        let traffic = Traffic {
            requests: e.requests,
            errors: e.errors,
            auth_failures: e.auth_failures,
        };
        self.health.record_usage(e.ts, traffic, now, tier);
        if this_month {
            self.meter.count_month(e.requests);
        }
        self.meter
            .count_burst(e.ts, e.requests, burst_rps, chrono_dur(policy.burst_hold));
        self.last_seen = self.last_seen.max(Some(e.ts));
    }

    /// The quota and burst targets at `now`.
    pub fn immediate(
        &self,
        quotas: Quotas,
        now: DateTime<Utc>,
        policy: &EnforcementPolicy,
    ) -> [Target; 3] {
        let monthly = quotas.own.map_or(Target::CALM, |spec| {
            monthly_target(self.meter.used(), &spec, policy)
        });
        [monthly, self.meter.burst_target(now), quotas.advisory]
    }

    /// Lets time pass to `now`, moves the ladder toward the health target and decides if
    /// the level in force changed.
    pub fn evaluate(
        &mut self,
        key: Key<'_>,
        quotas: Quotas,
        now: DateTime<Utc>,
        tier: &TierPolicy,
        policy: &EnforcementPolicy,
    ) -> Option<Decision> {
        self.health.advance(now, tier);
        let target = self.health.target(now, tier);
        let timing = Timing {
            dwell: chrono_dur(policy.dwell),
            calm: chrono_dur(policy.calm),
        };
        // unwrap: health signals only propose ladder levels (health.rs), the one thing
        // observe rejects; the clock passed in never goes backwards (state.rs).
        self.subject
            .ladder
            .observe(target, now, timing)
            .expect("health targets are ladder levels");
        self.settle(key, quotas, None, (now, now), policy)
    }

    /// The earliest event time at which time alone could change this subject's level in
    /// force, judged at `now`: a time at or before `now` means at the next tick (a ladder
    /// clock is running, or a window has buckets to drop). `None`: only an event or a
    /// control fact can.
    ///
    /// An idle subject's level moves with time only when a health signal changes (a
    /// window's oldest bucket slides out, the volume window closes), its burst hold ends,
    /// or the dwell after its last move ends (a signal already above `ok` then steps up).
    ///
    /// In epoch millis of event time, as `now_ms` and `dwell_ms`: this runs after every
    /// batch an actor handles.
    pub fn tick_due_ms(&self, now_ms: i64, dwell_ms: i64) -> Option<i64> {
        if !self.subject.is_idle() {
            return Some(now_ms);
        }
        let ahead = |t: Option<i64>| t.filter(|t| *t > now_ms);
        let burst_ends = self.meter.burst_until().map(|u| u.timestamp_millis());
        let dwell_ends = self
            .subject
            .ladder
            .moved_at()
            .map(|m| m.timestamp_millis().saturating_add(dwell_ms));
        [
            self.health.changes_at_ms(),
            ahead(burst_ends),
            ahead(dwell_ends),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Decides if the level in force changed, without moving the ladder. `(now, at)`:
    /// the event-time watermark the burst hold is judged at, and the decision's stamp.
    pub fn settle(
        &mut self,
        key: Key<'_>,
        quotas: Quotas,
        cause: Option<Reason>,
        (now, at): (DateTime<Utc>, DateTime<Utc>),
        policy: &EnforcementPolicy,
    ) -> Option<Decision> {
        let immediate = self.immediate(quotas, now, policy);
        let rate = Rate {
            rps: quotas.rate.throttle_rps(policy.throttle_factor),
            refresh: quotas.refresh_rate,
        };
        self.subject.settle(key, &immediate, cause, rate, at)
    }
}
