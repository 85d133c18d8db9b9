//! Tenants of a partner: expired pilots, and people's decisions at tenant scope.
//!
//! A pilot (`ControlEvent::Tenant` with `plan = pilot`) older than `pilot_max_age` on the
//! WALL clock and not upgraded is suspended at tenant scope (`pilot_expired`); a later
//! `paid` fact lifts it. The newest fact for a tenant is its plan. A fact naming another
//! partner means the tenant migrated away: this partner forgets it (and lifts what it
//! decided for it).
//!
//! Memory: only tenants that need watching are kept — pilots, and tenants with a level or
//! a person's decision — at most [`MAX_TRACKED_TENANTS`] per partner. A pilot fact beyond
//! that bound is not tracked (so it cannot expire) and is counted in
//! [`Tenants::untracked_facts`], which the actor exports as a metric: never silent.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::decision::{Decision, LevelView};
use super::duration::chrono_dur;
use super::error::EnforcementError;
use super::health::Target;
use super::ladder::Timing;
use super::level::{Level, Reason, Scope};
use super::subject::{Key, Rate, Subject};
use crate::domain::event::TenantPlan;

/// Most tenants one partner's state tracks.
pub const MAX_TRACKED_TENANTS: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tenant {
    /// `started_at` of the tenant's pilot; `None` once paid (or never a pilot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pilot_since: Option<DateTime<Utc>>,
    /// Its activation was refused for want of credits: blocked until credits arrive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    credits_refused: bool,
    subject: Subject,
}

impl Tenant {
    /// Nothing to watch: not a pilot, not waiting for credits, nothing decided or held.
    fn is_forgettable(&self) -> bool {
        self.pilot_since.is_none() && !self.credits_refused && self.subject.is_idle()
    }

    fn pilot_target(&self, wall_now: DateTime<Utc>, max_age: std::time::Duration) -> Target {
        if self.credits_refused {
            return Target::new(Level::Suspend, Reason::InsufficientCredits);
        }
        match self.pilot_since {
            Some(since) if pilot_expired(since, wall_now, max_age) => {
                Target::new(Level::Suspend, Reason::PilotExpired)
            }
            _ => Target::CALM,
        }
    }
}

/// Whether a pilot started at `since` is past its age at `wall_now`.
fn pilot_expired(
    since: DateTime<Utc>,
    wall_now: DateTime<Utc>,
    max_age: std::time::Duration,
) -> bool {
    wall_now - since > chrono_dur(max_age)
}

/// A tenant fact, as this partner's state needs it.
#[derive(Debug, Clone, Copy)]
pub struct TenantFact<'a> {
    pub tenant_id: &'a str,
    /// The partner the fact names (the tenant's owner from now on).
    pub partner_id: &'a str,
    pub plan: TenantPlan,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenants {
    map: BTreeMap<String, Tenant>,
    /// Pilot facts not tracked because [`MAX_TRACKED_TENANTS`] was reached.
    #[serde(default, skip_serializing_if = "crate::domain::is_default")]
    untracked_facts: u64,
}

/// The clocks and rules a tenant evaluation needs.
#[derive(Debug, Clone, Copy)]
pub struct TenantClock {
    /// Event-time watermark: drives the tenant ladder's dwell and calm.
    pub watermark: DateTime<Utc>,
    /// Wall clock: drives pilot age; decisions are stamped with it.
    pub wall_now: DateTime<Utc>,
    pub timing: Timing,
    pub pilot_max_age: std::time::Duration,
}

impl Tenants {
    /// Tenants tracked now.
    pub fn tracked(&self) -> usize {
        self.map.len()
    }

    pub fn untracked_facts(&self) -> u64 {
        self.untracked_facts
    }

    /// Applies a tenant fact of (or leaving) `partner_id`'s tenants.
    pub fn on_fact(
        &mut self,
        fact: TenantFact<'_>,
        owner: &str,
        clock: TenantClock,
    ) -> Vec<Decision> {
        let stays = fact.partner_id == owner && fact.plan == TenantPlan::Pilot;
        if !self.map.contains_key(fact.tenant_id) {
            if !stays {
                return Vec::new();
            }
            if self.map.len() >= MAX_TRACKED_TENANTS {
                self.untracked_facts = self.untracked_facts.saturating_add(1);
                return Vec::new();
            }
        }
        let left = fact.partner_id != owner;
        // It moved to another partner, whose owner judges it from now on; both write the
        // one tenant key, so this one writes only what that one will agree with. A pilot
        // already past its age there is suspended by the new owner: forgotten here without
        // a word, so no lift of ours can land after that suspension.
        if left
            && fact.plan == TenantPlan::Pilot
            && pilot_expired(fact.started_at, clock.wall_now, clock.pilot_max_age)
        {
            self.map.remove(fact.tenant_id);
            return Vec::new();
        }
        let tenant = self.map.entry(fact.tenant_id.to_owned()).or_default();
        tenant.pilot_since = stays.then_some(fact.started_at);
        if left {
            // Its activation here no longer holds it either.
            tenant.credits_refused = false;
        }
        self.evaluate_one(fact.tenant_id, owner, clock)
            .into_iter()
            .collect()
    }

    /// A tenant's activation refused (`refused`) or let through by credits (CONTRACT §3:
    /// a partner out of credits has new activations refused at tenant scope).
    pub fn on_credits(
        &mut self,
        tenant_id: &str,
        refused: bool,
        owner: &str,
        clock: TenantClock,
    ) -> Option<Decision> {
        if !self.map.contains_key(tenant_id) {
            if !refused {
                return None;
            }
            if self.map.len() >= MAX_TRACKED_TENANTS {
                self.untracked_facts = self.untracked_facts.saturating_add(1);
                return None;
            }
        }
        let tenant = self.map.entry(tenant_id.to_owned()).or_default();
        tenant.credits_refused = refused;
        self.evaluate_one(tenant_id, owner, clock)
    }

    /// The wall-clock time, in epoch millis, at which the first of its pilots that an
    /// expiry would still suspend expires (it may be past: expired, not judged yet): a
    /// partner passivated meanwhile must be started then, or its pilot would run on until
    /// the partner's next event. A tenant at `suspend` or above already (refused credits,
    /// a person's level, the expiry itself) gives none, so a woken partner's next time is
    /// its next pilot's.
    pub fn next_pilot_expiry_ms(&self, max_age: std::time::Duration) -> Option<i64> {
        self.map
            .values()
            .filter(|t| t.subject.level() < Level::Suspend)
            .filter_map(|t| t.pilot_since)
            // The first millisecond past the age (`pilot_expired` is strict).
            .map(|since| {
                (since + chrono_dur(max_age))
                    .timestamp_millis()
                    .saturating_add(1)
            })
            .min()
    }

    /// Time passing: pilot expiry (wall clock), tenant ladders calming (event time).
    pub fn tick(&mut self, owner: &str, clock: TenantClock) -> Vec<Decision> {
        let ids: Vec<String> = self.map.keys().cloned().collect();
        ids.iter()
            .filter_map(|id| self.evaluate_one(id, owner, clock))
            .collect()
    }

    fn evaluate_one(&mut self, id: &str, owner: &str, clock: TenantClock) -> Option<Decision> {
        let tenant = self.map.get_mut(id)?;
        // unwrap: the calm target is `ok`, a ladder level, the one thing observe checks.
        tenant
            .subject
            .ladder
            .observe(Target::CALM, clock.watermark, clock.timing)
            .expect("the calm target is a ladder level");
        let pilot = tenant.pilot_target(clock.wall_now, clock.pilot_max_age);
        let key = Key {
            scope: Scope::Tenant,
            id,
            partner_id: owner,
        };
        let decision = tenant
            .subject
            .settle(key, &[pilot], None, Rate::NONE, clock.wall_now);
        if tenant.is_forgettable() {
            self.map.remove(id);
        }
        decision
    }

    /// A person's level for tenant `id` (see `Ladder::manual`); the tenant is tracked from
    /// then on until it is back at `ok` with nothing held.
    pub fn manual(
        &mut self,
        id: &str,
        owner: &str,
        level: Level,
        reason: Reason,
        actor: &str,
        clock: TenantClock,
    ) -> Result<Option<Decision>, EnforcementError> {
        if !self.map.contains_key(id) && self.map.len() >= MAX_TRACKED_TENANTS {
            return Err(EnforcementError::AtCapacity {
                scope: Scope::Tenant,
                cap: MAX_TRACKED_TENANTS,
            });
        }
        let tenant = self.map.entry(id.to_owned()).or_default();
        tenant
            .subject
            .ladder
            .manual(level, reason, actor, clock.watermark)?;
        let pilot = tenant.pilot_target(clock.wall_now, clock.pilot_max_age);
        let key = Key {
            scope: Scope::Tenant,
            id,
            partner_id: owner,
        };
        let decision =
            tenant
                .subject
                .settle(key, &[pilot], Some(reason), Rate::NONE, clock.wall_now);
        if tenant.is_forgettable() {
            self.map.remove(id);
        }
        Ok(decision)
    }

    /// Tenants not at `ok`.
    pub fn views(&self) -> impl Iterator<Item = LevelView> + '_ {
        self.map
            .iter()
            .filter(|(_, t)| t.subject.level() != Level::Ok)
            .map(|(id, t)| t.subject.view(Scope::Tenant, id))
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn day(d: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000 + d * 86_400, 0).unwrap()
    }

    fn clock(wall_now: DateTime<Utc>) -> TenantClock {
        TenantClock {
            watermark: day(0),
            wall_now,
            timing: Timing {
                dwell: Duration::seconds(30),
                calm: Duration::seconds(300),
            },
            pilot_max_age: std::time::Duration::from_secs(30 * 86_400),
        }
    }

    fn fact(plan: TenantPlan, partner_id: &str) -> TenantFact<'_> {
        TenantFact {
            tenant_id: "t-1",
            partner_id,
            plan,
            started_at: day(0),
        }
    }

    /// The wake time is the first instant a tick suspends the pilot: a millisecond before
    /// it nothing happens, at it the suspension does. Suspended and paid tenants have none.
    #[test]
    fn the_next_pilot_expiry_is_when_a_tick_suspends_it() {
        let mut ts = Tenants::default();
        assert_eq!(ts.next_pilot_expiry_ms(clock(day(1)).pilot_max_age), None);
        ts.on_fact(fact(TenantPlan::Pilot, "p-1"), "p-1", clock(day(1)));
        let later = TenantFact {
            tenant_id: "t-2",
            started_at: day(5),
            ..fact(TenantPlan::Pilot, "p-1")
        };
        ts.on_fact(later, "p-1", clock(day(5)));
        let age = clock(day(1)).pilot_max_age;
        let wake = ts.next_pilot_expiry_ms(age).expect("two young pilots");
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap();
        assert!(ts.clone().tick("p-1", clock(at(wake - 1))).is_empty());
        let d = ts.tick("p-1", clock(at(wake)));
        assert_eq!(
            d.iter()
                .map(|d| (d.id.as_str(), d.level))
                .collect::<Vec<_>>(),
            [("t-1", Level::Suspend)]
        );
        // t-1 is suspended now: the next wake is t-2's, and none once it is paid.
        let next = ts.next_pilot_expiry_ms(age).expect("t-2 still young");
        assert_eq!(next - wake, 5 * 86_400_000);
        let paid = TenantFact {
            plan: TenantPlan::Paid,
            ..later
        };
        ts.on_fact(paid, "p-1", clock(at(wake)));
        assert_eq!(ts.next_pilot_expiry_ms(age), None);
    }

    /// A pilot past its age that no tick has judged yet keeps its (past) time, so the
    /// partner is woken at once; one already suspended for another reason (refused
    /// credits) gives none, so a partner woken for it is not woken for it again.
    #[test]
    fn a_pilot_keeps_its_wake_until_an_expiry_would_change_nothing() {
        let age = clock(day(0)).pilot_max_age;
        let mut ts = Tenants::default();
        ts.on_fact(fact(TenantPlan::Pilot, "p-1"), "p-1", clock(day(1)));
        let expiry = ts.next_pilot_expiry_ms(age).expect("a young pilot");
        assert!(
            expiry < day(31).timestamp_millis(),
            "past at day 31, still given"
        );
        let refused = ts.on_credits("t-1", true, "p-1", clock(day(2)));
        assert_eq!(refused.map(|d| d.level), Some(Level::Suspend));
        assert_eq!(ts.next_pilot_expiry_ms(age), None);
    }

    #[test]
    fn an_expired_pilot_is_suspended_and_paid_lifts_it() {
        let mut ts = Tenants::default();
        assert!(ts
            .on_fact(fact(TenantPlan::Pilot, "p-1"), "p-1", clock(day(1)))
            .is_empty());
        assert!(
            ts.tick("p-1", clock(day(30))).is_empty(),
            "exactly 30 days is not older"
        );
        let d = ts.tick("p-1", clock(day(30) + Duration::seconds(1)));
        assert_eq!(d.len(), 1);
        assert_eq!(
            (
                d[0].scope,
                d[0].id.as_str(),
                d[0].level,
                d[0].previous,
                d[0].reason
            ),
            (
                Scope::Tenant,
                "t-1",
                Level::Suspend,
                Level::Ok,
                Reason::PilotExpired
            )
        );
        assert_eq!(d[0].at, day(30) + Duration::seconds(1));
        assert!(ts.tick("p-1", clock(day(40))).is_empty());
        let d = ts.on_fact(fact(TenantPlan::Paid, "p-1"), "p-1", clock(day(41)));
        assert_eq!(
            (d[0].level, d[0].previous, d[0].reason),
            (Level::Ok, Level::Suspend, Reason::Calm)
        );
        assert_eq!(ts.tracked(), 0, "a paid tenant at ok needs no memory");
    }

    #[test]
    fn a_tenant_migrating_away_is_forgotten_and_lifted() {
        let mut ts = Tenants::default();
        ts.on_fact(fact(TenantPlan::Pilot, "p-1"), "p-1", clock(day(31)));
        assert_eq!(ts.views().count(), 1);
        let d = ts.on_fact(fact(TenantPlan::Paid, "p-2"), "p-1", clock(day(32)));
        assert_eq!((d[0].level, d[0].partner_id.as_str()), (Level::Ok, "p-1"));
        assert_eq!(ts.tracked(), 0);
        assert!(ts
            .on_fact(fact(TenantPlan::Paid, "p-1"), "p-1", clock(day(33)))
            .is_empty());
        // Moved as the expired pilot it is: the new owner suspends it, so this one forgets
        // it without a lift that could land after that suspension.
        let mut ts = Tenants::default();
        ts.on_fact(fact(TenantPlan::Pilot, "p-1"), "p-1", clock(day(31)));
        assert!(ts
            .on_fact(fact(TenantPlan::Pilot, "p-2"), "p-1", clock(day(32)))
            .is_empty());
        assert_eq!(ts.tracked(), 0);
    }

    #[test]
    fn the_tenant_bound_is_counted_not_silent() {
        let mut ts = Tenants::default();
        for n in 0..MAX_TRACKED_TENANTS + 3 {
            let id = format!("t-{n}");
            let f = TenantFact {
                tenant_id: &id,
                ..fact(TenantPlan::Pilot, "p-1")
            };
            ts.on_fact(f, "p-1", clock(day(1)));
        }
        assert_eq!(ts.tracked(), MAX_TRACKED_TENANTS);
        assert_eq!(ts.untracked_facts(), 3);
        let err = ts
            .manual(
                "t-new",
                "p-1",
                Level::Killed,
                Reason::KillSwitch,
                "sec",
                clock(day(1)),
            )
            .unwrap_err();
        assert_eq!(
            err,
            EnforcementError::AtCapacity {
                scope: Scope::Tenant,
                cap: MAX_TRACKED_TENANTS
            }
        );
    }

    #[test]
    fn a_kill_switch_holds_a_paid_tenant_until_a_person_lifts_it() {
        let mut ts = Tenants::default();
        let d = ts
            .manual(
                "t-9",
                "p-1",
                Level::Killed,
                Reason::KillSwitch,
                "sec",
                clock(day(1)),
            )
            .unwrap()
            .unwrap();
        assert_eq!((d.level, d.reason), (Level::Killed, Reason::KillSwitch));
        assert!(ts.tick("p-1", clock(day(90))).is_empty());
        let d = ts
            .manual(
                "t-9",
                "p-1",
                Level::Ok,
                Reason::KillSwitch,
                "ttl",
                clock(day(91)),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.previous, d.level, d.reason),
            (Level::Killed, Level::Ok, Reason::KillSwitch)
        );
        assert_eq!(ts.tracked(), 0);
    }
}
