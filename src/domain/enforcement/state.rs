//! [`EnforcementState`]: everything enforcement knows about one partner, and the calls
//! that change it. The actor owns one inside the partner's state, calls it for every
//! applied event and on time ticks, and executes the returned decisions.
//!
//! Clocks: ladders, windows, bursts and quota months run on the event-time watermark —
//! the newest `ts` or tick watermark seen, which never goes backwards — so the same events
//! give the same decisions. Pilot age runs on the wall clock passed to `on_tenant`/`tick`.
//!
//! Memory per partner is bounded: windows are fixed bucket rings, the volume baseline is
//! five numbers, at most [`MAX_TRACKED_INTEGRATIONS`] integrations without a configured
//! quota are tracked (usage of others counts at partner scope only and is counted in
//! [`Capacity::untracked_integration_events`]), integrations idle for
//! [`INTEGRATION_IDLE`] with nothing decided are forgotten, and tenants are bounded by
//! `pilot::MAX_TRACKED_TENANTS`. Integrations with a quota set by a control fact are always
//! tracked: their number is bounded by what operators configure, not by traffic.

use litemap::LiteMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::decision::{Decision, LevelView};
use super::duration::chrono_dur;
use super::error::EnforcementError;
use super::health::Target;
use super::ladder::Timing;
use super::level::{Level, Reason, Scope};
use super::metered::{Metered, Quotas};
use super::pilot::{TenantClock, TenantFact, Tenants, MAX_TRACKED_TENANTS};
use super::policy::{EnforcementPolicy, TierPolicy};
use super::quota::{Month, QuotaSpec, QuotaView};
use super::subject::Key;
use crate::domain::event::UsageEvent;

/// Most integrations without a configured quota tracked per partner.
pub const MAX_TRACKED_INTEGRATIONS: usize = 256;
/// [`EnforcementState::tick_due_ms`]: due at the next tick, whatever the watermark.
pub const DUE_NOW: i64 = i64::MIN;
/// An integration with no usage for this long, at `ok`, nothing held and nothing used this
/// month, is forgotten (its windows are long empty; its baseline is re-learnt).
pub const INTEGRATION_IDLE: Duration = Duration::days(7);

/// A person's decision (admin API, kill switch or its TTL expiring).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualOrder {
    pub scope: Scope,
    pub id: String,
    pub level: Level,
    /// `manual` or `kill_switch`.
    pub reason: Reason,
    /// Who (token name, or `ttl`): kept with a hold, and for the audit record.
    pub actor: String,
}

/// How close the partner is to its tracking bounds (exported as metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub integrations: usize,
    pub integration_cap: usize,
    pub untracked_integration_events: u64,
    pub tenants: usize,
    pub tenant_cap: usize,
    pub untracked_tenant_facts: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnforcementState {
    partner_id: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::domain::stamp::opt"
    )]
    clock: Option<DateTime<Utc>>,
    /// The current quota month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    month: Option<Month>,
    partner: Metered,
    /// A sorted vector (most partners have one to three integrations; a B-tree's first
    /// leaf took 360 bytes), in the same JSON form as a map. Boxed: a `Metered` is 300
    /// bytes, and the vector doubles as it grows.
    #[serde(default, skip_serializing_if = "LiteMap::is_empty")]
    integrations: LiteMap<String, Box<Metered>>,
    #[serde(default, skip_serializing_if = "crate::domain::is_default")]
    tenants: Tenants,
    #[serde(default, skip_serializing_if = "crate::domain::is_default")]
    untracked_integration_events: u64,
    /// The partner's activation credits are below the program's low-water mark: warned.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    credits_low: bool,
}

impl EnforcementState {
    pub fn new(partner_id: impl Into<String>) -> Self {
        EnforcementState {
            partner_id: partner_id.into(),
            ..Default::default()
        }
    }

    pub fn partner_id(&self) -> &str {
        &self.partner_id
    }

    /// The event-time watermark enforcement runs on.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.clock
    }

    /// Applies one usage event (after dedup) and returns the decisions it causes.
    pub fn on_usage(
        &mut self,
        e: &UsageEvent,
        tier: &str,
        policy: &EnforcementPolicy,
    ) -> Vec<Decision> {
        let tp = policy.tier(tier);
        // Judged under the tier at its own time: only an on-time event's is current.
        let on_time = self.clock.is_none_or(|c| e.ts >= c);
        let now = self.advance(e.ts);
        let rolled = self.roll_month(now);
        let this_month = self.month == Some(Month::of(e.ts));
        let partner_quota = self.partner_quota(tp);
        self.partner
            .record(e, this_month, partner_quota.burst_rps, now, tp, policy);
        let record = |unit: &mut Metered| {
            let burst_rps = unit.meter.spec.map_or(0, |s| s.burst_rps);
            unit.record(e, this_month, burst_rps, now, tp, policy);
        };
        // One search for a known integration; the id is copied only for a new one.
        let tracked = match self.integrations.get_mut(&e.integration_id) {
            Some(unit) => {
                record(unit);
                true
            }
            None => {
                if self.integrations.len() < MAX_TRACKED_INTEGRATIONS {
                    record(
                        self.integrations
                            .entry(e.integration_id.clone())
                            .or_default(),
                    );
                    true
                } else {
                    self.untracked_integration_events =
                        self.untracked_integration_events.saturating_add(1);
                    false
                }
            }
        };
        if rolled {
            return self.evaluate_all(now, tp, policy, on_time);
        }
        let mut out: Vec<Decision> = self
            .evaluate_partner(now, tp, policy, on_time)
            .into_iter()
            .collect();
        if tracked {
            out.extend(self.evaluate_integration(&e.integration_id, now, tp, policy, on_time));
        }
        out
    }

    /// Counts a chargeback (a health signal of the partner) at its `ts`.
    pub fn on_chargeback(
        &mut self,
        ts: DateTime<Utc>,
        tier: &str,
        policy: &EnforcementPolicy,
    ) -> Vec<Decision> {
        let tp = policy.tier(tier);
        let on_time = self.clock.is_none_or(|c| ts >= c);
        let now = self.advance(ts);
        let rolled = self.roll_month(now);
        self.partner.health.record_chargeback(ts, now, tp);
        if rolled {
            return self.evaluate_all(now, tp, policy, on_time);
        }
        self.evaluate_partner(now, tp, policy, on_time)
            .into_iter()
            .collect()
    }

    /// Sets the partner's quota (`integration_id = None`) or an integration's. It governs
    /// the events applied after it: nothing is re-judged now, and the month's use and the
    /// current burst second carry over (no fresh burst).
    pub fn on_quota(&mut self, integration_id: Option<&str>, spec: QuotaSpec) {
        let unit = match integration_id {
            None => &mut self.partner,
            Some(id) => self.integrations.entry(id.to_owned()).or_default(),
        };
        unit.meter.spec = Some(spec);
    }

    /// Applies a tenant fact; `fact.partner_id` other than this partner means the tenant
    /// migrated away. Pilot age is judged at `wall_now`.
    pub fn on_tenant(
        &mut self,
        fact: TenantFact<'_>,
        wall_now: DateTime<Utc>,
        policy: &EnforcementPolicy,
    ) -> Vec<Decision> {
        let clock = self.tenant_clock(wall_now, policy);
        self.tenants.on_fact(fact, &self.partner_id, clock)
    }

    /// The partner's activation credits (credits programs): `low` = below the low-water
    /// mark (the partner is warned); `refused` tenants wait for credits and are blocked
    /// from activating (tenant scope `suspend`, `insufficient_credits`); `activated`
    /// tenants got their credits and are lifted.
    pub fn on_credits(
        &mut self,
        low: bool,
        refused: &[&str],
        activated: &[&str],
        wall_now: DateTime<Utc>,
        tier: &str,
        policy: &EnforcementPolicy,
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        if low != self.credits_low {
            self.credits_low = low;
            let tp = policy.tier(tier);
            let now = self.clock.unwrap_or(wall_now);
            out.extend(self.evaluate_partner(now, tp, policy, true));
        }
        let clock = self.tenant_clock(wall_now, policy);
        for tenant in refused {
            out.extend(
                self.tenants
                    .on_credits(tenant, true, &self.partner_id, clock),
            );
        }
        for tenant in activated {
            out.extend(
                self.tenants
                    .on_credits(tenant, false, &self.partner_id, clock),
            );
        }
        out
    }

    /// Time passing: the partition's event-time `watermark` (ladders calm down and climb,
    /// windows slide, bursts end, quota months roll over) and the wall clock (pilots expire).
    pub fn tick(
        &mut self,
        watermark: DateTime<Utc>,
        wall_now: DateTime<Utc>,
        tier: &str,
        policy: &EnforcementPolicy,
    ) -> Vec<Decision> {
        let tp = policy.tier(tier);
        let now = self.advance(watermark);
        self.roll_month(now);
        let mut out = self.evaluate_all(now, tp, policy, true);
        let clock = self.tenant_clock(wall_now, policy);
        out.extend(self.tenants.tick(&self.partner_id, clock));
        self.integrations.retain(|_, m| {
            let idle = m.last_seen.is_none_or(|seen| now - seen > INTEGRATION_IDLE);
            !(idle && m.meter.spec.is_none() && m.subject.is_idle() && m.meter.is_idle(now))
        });
        out
    }

    /// When, on the wall clock (epoch millis), the next of this partner's pilots expires
    /// (see [`Tenants::next_pilot_expiry_ms`]).
    pub fn next_pilot_expiry_ms(&self, policy: &EnforcementPolicy) -> Option<i64> {
        self.tenants.next_pilot_expiry_ms(policy.pilot_max_age)
    }

    /// The wall clock alone passing (no event time yet): pilots expire.
    pub fn tick_pilots(
        &mut self,
        wall_now: DateTime<Utc>,
        policy: &EnforcementPolicy,
    ) -> Vec<Decision> {
        let clock = self.tenant_clock(wall_now, policy);
        self.tenants.tick(&self.partner_id, clock)
    }

    /// The earliest event time, in epoch millis, at which [`EnforcementState::tick`]
    /// could change anything (a decision, a quota month, an idle integration forgotten):
    /// [`DUE_NOW`] when the next tick must run (a ladder clock is running, a tenant is
    /// tracked, or a change is pending at the partner's own clock), `None` when only an
    /// event or a control fact can. Ticking only at this time gives the same decisions as
    /// ticking every second (`scenarios/due.rs`).
    pub fn tick_due_ms(&self, policy: &EnforcementPolicy) -> Option<i64> {
        // Pilots expire on the wall clock and tenant ladders calm down: tick while any is tracked.
        if self.tenants.tracked() > 0 {
            return Some(DUE_NOW);
        }
        let now = self.clock.map_or(DUE_NOW, |c| c.timestamp_millis());
        let dwell = i64::try_from(policy.dwell.as_millis()).unwrap_or(i64::MAX);
        let units = std::iter::once(&self.partner).chain(self.integrations.values().map(|m| &**m));
        let forgotten = self.integrations.values().filter_map(|m| {
            let seen = m.last_seen?.timestamp_millis();
            let idle = INTEGRATION_IDLE.num_milliseconds();
            Some(seen.saturating_add(idle).saturating_add(1)).filter(|t| *t > now)
        });
        let due = units
            .filter_map(|unit| unit.tick_due_ms(now, dwell))
            .chain(self.month.map(Month::next_start_ms))
            .chain(forgotten)
            .min()?;
        Some(if due <= now { DUE_NOW } else { due })
    }

    /// A person's level for a target of this partner: `terminated`/`killed` hold until a
    /// person sets another level; `ok`..=`suspend` lift any hold and set the health ladder
    /// there (it then follows its signals). Quota, burst and pilot decisions still apply
    /// on top, so the result may stay higher than asked (`Ok(None)` when nothing changes).
    pub fn manual(
        &mut self,
        order: &ManualOrder,
        now: DateTime<Utc>,
        tier: &str,
        policy: &EnforcementPolicy,
    ) -> Result<Option<Decision>, EnforcementError> {
        if !order.reason.is_manual() {
            return Err(EnforcementError::NotManualReason(order.reason));
        }
        let tp = policy.tier(tier);
        // The ladder's clocks run on event time; before any event, on `now`.
        let ladder_now = self.clock.unwrap_or(now);
        let partner_quota = self.partner_quota(tp);
        let (unit, quotas) = match order.scope {
            Scope::Global => return Err(EnforcementError::UnsupportedScope(Scope::Global)),
            Scope::Tenant => {
                let clock = self.tenant_clock(now, policy);
                let (id, owner) = (order.id.as_str(), self.partner_id.as_str());
                return self.tenants.manual(
                    id,
                    owner,
                    order.level,
                    order.reason,
                    &order.actor,
                    clock,
                );
            }
            Scope::Partner if order.id != self.partner_id => {
                return Err(EnforcementError::UnknownTarget {
                    scope: Scope::Partner,
                    id: order.id.clone(),
                })
            }
            Scope::Partner => (
                &mut self.partner,
                partner_quotas(partner_quota, self.credits_low, true),
            ),
            Scope::Integration => {
                let known = self.integrations.contains_key(&order.id);
                if !known && self.integrations.len() >= MAX_TRACKED_INTEGRATIONS {
                    return Err(EnforcementError::AtCapacity {
                        scope: Scope::Integration,
                        cap: MAX_TRACKED_INTEGRATIONS,
                    });
                }
                let unit: &mut Metered = self.integrations.entry(order.id.clone()).or_default();
                let quotas = integration_quotas(unit, partner_quota, true);
                (unit, quotas)
            }
        };
        unit.subject
            .ladder
            .manual(order.level, order.reason, &order.actor, ladder_now)?;
        let key = Key {
            scope: order.scope,
            id: &order.id,
            partner_id: &self.partner_id,
        };
        Ok(unit.settle(key, quotas, Some(order.reason), (ladder_now, now), policy))
    }

    /// The partner's level in force.
    pub fn partner_level(&self) -> LevelView {
        self.partner.subject.view(Scope::Partner, &self.partner_id)
    }

    /// The partner's level, then every integration and tenant not at `ok`.
    pub fn levels(&self) -> Vec<LevelView> {
        let integrations = self
            .integrations
            .iter()
            .filter(|(_, m)| m.subject.level() != Level::Ok)
            .map(|(id, m)| m.subject.view(Scope::Integration, id));
        std::iter::once(self.partner_level())
            .chain(integrations)
            .chain(self.tenants.views())
            .collect()
    }

    /// The partner's monthly quota and its use.
    pub fn quota(&self, tier: &str, policy: &EnforcementPolicy) -> QuotaView {
        let spec = self.partner_quota(policy.tier(tier));
        QuotaView::new(self.month, self.partner.meter.used(), &spec)
    }

    /// An integration's quota and use, when it has a quota of its own.
    pub fn integration_quota(&self, integration_id: &str) -> Option<QuotaView> {
        let unit = self.integrations.get(integration_id)?;
        let spec = unit.meter.spec?;
        Some(QuotaView::new(self.month, unit.meter.used(), &spec))
    }

    pub fn capacity(&self) -> Capacity {
        Capacity {
            integrations: self.integrations.len(),
            integration_cap: MAX_TRACKED_INTEGRATIONS,
            untracked_integration_events: self.untracked_integration_events,
            tenants: self.tenants.tracked(),
            tenant_cap: MAX_TRACKED_TENANTS,
            untracked_tenant_facts: self.tenants.untracked_facts(),
        }
    }

    /// Whether the partner or an integration must be ticked to leave its level, events or
    /// not: a health ladder off `ok` (or with its calm clock running), a burst hold, or a
    /// suspension of any cause (a suspended partner's traffic is blocked, so no event may
    /// ever come to lift it at a new month). Left out: a quota `warn` or `throttle`, which
    /// lasts until the month ends while traffic still flows, so the next event judges it;
    /// and tenants, whose level waits for a fact (a paid plan, credits) that wakes their
    /// partner.
    pub fn calms_by_time(&self) -> bool {
        std::iter::once(&self.partner)
            .chain(self.integrations.values().map(|m| &**m))
            .any(|m| {
                !m.subject.ladder.is_idle()
                    || m.subject.level() >= Level::Suspend
                    || m.meter
                        .burst_until()
                        .is_some_and(|until| self.clock.is_none_or(|now| until > now))
            })
    }

    /// The newest event time seen (events and ticks' watermarks).
    pub fn clock(&self) -> Option<DateTime<Utc>> {
        self.clock
    }

    /// The highest level the partner's quota, burst and credits hold it at, at its event
    /// time (CONTRACT §3: immediate decisions): what no person's lower level may replace,
    /// since the owner, believing it in force, would not decide it again.
    pub fn partner_immediate(&self, tier: &str, policy: &EnforcementPolicy) -> Target {
        let quotas = partner_quotas(
            self.partner_quota(policy.tier(tier)),
            self.credits_low,
            true,
        );
        let now = self.clock.unwrap_or(DateTime::UNIX_EPOCH);
        self.partner
            .immediate(quotas, now, policy)
            .into_iter()
            .fold(
                Target::CALM,
                |held, t| if t.level > held.level { t } else { held },
            )
    }

    fn advance(&mut self, t: DateTime<Utc>) -> DateTime<Utc> {
        let now = self.clock.map_or(t, |c| c.max(t));
        self.clock = Some(now);
        now
    }

    /// Starts a new quota month when `now` is in a later one: use starts from zero
    /// everywhere. Returns whether it did (then every subject must be re-judged).
    fn roll_month(&mut self, now: DateTime<Utc>) -> bool {
        let month = Month::of(now);
        match self.month {
            Some(current) if current >= month => false,
            None => {
                self.month = Some(month);
                false
            }
            Some(_) => {
                self.month = Some(month);
                self.partner.meter.reset_month();
                for (_, unit) in self.integrations.iter_mut() {
                    unit.meter.reset_month();
                }
                true
            }
        }
    }

    fn partner_quota(&self, tier: &TierPolicy) -> QuotaSpec {
        self.partner
            .meter
            .spec
            .unwrap_or_else(|| QuotaSpec::of_tier(tier))
    }

    fn tenant_clock(&self, wall_now: DateTime<Utc>, policy: &EnforcementPolicy) -> TenantClock {
        TenantClock {
            watermark: self.clock.unwrap_or(wall_now),
            wall_now,
            timing: Timing {
                dwell: chrono_dur(policy.dwell),
                calm: chrono_dur(policy.calm),
            },
            pilot_max_age: policy.pilot_max_age,
        }
    }

    /// `refresh_rate`: `tp` is the tier in force at the clock (see [`Quotas`]).
    fn evaluate_partner(
        &mut self,
        now: DateTime<Utc>,
        tp: &TierPolicy,
        policy: &EnforcementPolicy,
        refresh_rate: bool,
    ) -> Option<Decision> {
        let quotas = partner_quotas(self.partner_quota(tp), self.credits_low, refresh_rate);
        let key = Key {
            scope: Scope::Partner,
            id: &self.partner_id,
            partner_id: &self.partner_id,
        };
        self.partner.evaluate(key, quotas, now, tp, policy)
    }

    fn evaluate_integration(
        &mut self,
        id: &str,
        now: DateTime<Utc>,
        tp: &TierPolicy,
        policy: &EnforcementPolicy,
        refresh_rate: bool,
    ) -> Option<Decision> {
        let partner_quota = self.partner_quota(tp);
        let unit = self.integrations.get_mut(id)?;
        let quotas = integration_quotas(unit, partner_quota, refresh_rate);
        let key = Key {
            scope: Scope::Integration,
            id,
            partner_id: &self.partner_id,
        };
        unit.evaluate(key, quotas, now, tp, policy)
    }

    fn evaluate_all(
        &mut self,
        now: DateTime<Utc>,
        tp: &TierPolicy,
        policy: &EnforcementPolicy,
        refresh_rate: bool,
    ) -> Vec<Decision> {
        let mut out: Vec<Decision> = self
            .evaluate_partner(now, tp, policy, refresh_rate)
            .into_iter()
            .collect();
        let partner_quota = self.partner_quota(tp);
        for (id, unit) in self.integrations.iter_mut() {
            let quotas = integration_quotas(unit, partner_quota, refresh_rate);
            let key = Key {
                scope: Scope::Integration,
                id,
                partner_id: &self.partner_id,
            };
            out.extend(unit.evaluate(key, quotas, now, tp, policy));
        }
        out
    }
}

fn partner_quotas(spec: QuotaSpec, credits_low: bool, refresh_rate: bool) -> Quotas {
    Quotas {
        own: Some(spec),
        rate: spec,
        advisory: if credits_low {
            Target::new(Level::Warn, Reason::InsufficientCredits)
        } else {
            Target::CALM
        },
        refresh_rate,
    }
}

fn integration_quotas(unit: &Metered, partner: QuotaSpec, refresh_rate: bool) -> Quotas {
    Quotas {
        own: unit.meter.spec,
        rate: unit.meter.spec.unwrap_or(partner),
        advisory: Target::CALM,
        refresh_rate,
    }
}
