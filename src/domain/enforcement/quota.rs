//! Quotas: monthly requests and a burst rate, per partner and per integration where one
//! is configured.
//!
//! The monthly decision is a pure function of the month's use and the quota
//! ([`monthly_target`]), judged whenever an event is applied, so a quota change
//! (`ControlEvent::Quota`) takes effect for the events applied after it and never re-judges
//! the past on its own. Changing a quota resets nothing: the month's use and the current
//! second's burst count carry over, so a change never grants a fresh burst
//! (governor#273). Quota months are calendar months (UTC) of event time.
//!
//! Burst: requests per second of event time (the second of each event's `ts`). A second
//! over `burst_rps` throttles until `burst_hold` after that second ends. Events of an
//! earlier second than the newest one seen are late and do not count toward the burst (the
//! second they belong to is over); they still count toward the month.

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::duration::later;
use super::health::Target;
use super::level::{Level, Reason};
use super::policy::{EnforcementPolicy, TierPolicy};
use crate::domain::event::OveragePolicy;

/// A quota: `0` means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaSpec {
    pub monthly_requests: u64,
    pub burst_rps: u64,
    pub overage: OveragePolicy,
}

impl QuotaSpec {
    pub fn of_tier(tier: &TierPolicy) -> Self {
        QuotaSpec {
            monthly_requests: tier.monthly_requests,
            burst_rps: tier.burst_rps,
            overage: tier.overage,
        }
    }

    /// `rate_limit_rps` of a throttle: `burst_rps × throttle_factor`, at least 1;
    /// `None` when there is no burst limit to scale.
    pub fn throttle_rps(&self, throttle_factor: f64) -> Option<u64> {
        throttle_rps(self.burst_rps, throttle_factor)
    }
}

/// A calendar month (UTC) as `year × 12 + month0`: ordered, compact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Month(i32);

impl Month {
    pub fn of(ts: DateTime<Utc>) -> Self {
        Month(ts.year() * 12 + ts.month0() as i32)
    }

    /// The first instant of the month after this one (when use starts from zero again),
    /// in epoch millis.
    pub fn next_start_ms(self) -> i64 {
        let next = self.0.saturating_add(1);
        chrono::NaiveDate::from_ymd_opt(next.div_euclid(12), next.rem_euclid(12) as u32 + 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(i64::MAX, |d| d.and_utc().timestamp_millis())
    }

    /// `YYYY-MM`.
    pub fn label(self) -> String {
        format!(
            "{:04}-{:02}",
            self.0.div_euclid(12),
            self.0.rem_euclid(12) + 1
        )
    }
}

/// `rate_limit_rps` of a throttle under a quota of `burst_rps` (CONTRACT §4): `burst_rps ×
/// throttle_factor`, at least 1; none without a burst limit.
pub fn throttle_rps(burst_rps: u64, throttle_factor: f64) -> Option<u64> {
    (burst_rps > 0).then(|| ((burst_rps as f64 * throttle_factor) as u64).max(1))
}

/// `fraction` in billionths: the policy's fractions (0.8, 1.2, 0.1) are exact in it, so
/// thresholds compare in integers, exactly, whatever the limit.
fn billionths(fraction: f64) -> u128 {
    (fraction.max(0.0) * 1e9).round() as u128
}

/// Whether `used` is past `limit × fraction` (or at it, with `or_equal`), exactly: far from
/// the threshold floats decide (the per-event path), near it integers in billionths do.
fn beyond(used: u64, limit: u64, fraction: f64, or_equal: bool) -> bool {
    let threshold = limit as f64 * fraction;
    let margin = 1.0 + threshold.abs() * 1e-9;
    let used_f = used as f64;
    if used_f > threshold + margin {
        return true;
    }
    if used_f < threshold - margin {
        return false;
    }
    beyond_exactly(used, limit, fraction, or_equal)
}

/// [`beyond`] in integers, billionths of a request: exact, whatever the limit.
fn beyond_exactly(used: u64, limit: u64, fraction: f64, or_equal: bool) -> bool {
    let used_b = u128::from(used) * 1_000_000_000;
    let threshold_b = u128::from(limit) * billionths(fraction);
    if or_equal {
        used_b >= threshold_b
    } else {
        used_b > threshold_b
    }
}

/// The monthly decision for `used` requests against `spec`.
pub fn monthly_target(used: u64, spec: &QuotaSpec, policy: &EnforcementPolicy) -> Target {
    let limit = spec.monthly_requests;
    if limit == 0 {
        return Target::CALM;
    }
    // Against `limit × fraction` exactly: 1.2 × 1003 is 1203.6, so 1204 is past it and
    // 802 has not reached 0.8 × 1003. (Rounding the threshold made both off by one.)
    let past = |fraction: f64| beyond(used, limit, fraction, false);
    let reached_warn = beyond(used, limit, policy.warn_fraction, true);
    let (level, reason) = match spec.overage {
        OveragePolicy::Block if past(policy.hard_ceiling) => {
            (Level::Suspend, Reason::QuotaHardCeiling)
        }
        OveragePolicy::Block if used >= limit => (Level::Throttle, Reason::QuotaExceeded),
        OveragePolicy::Soft if past(1.0 + policy.soft_overshoot) => {
            (Level::Throttle, Reason::QuotaSoftOverage)
        }
        _ if reached_warn => (Level::Warn, Reason::QuotaWarn),
        _ => return Target::CALM,
    };
    Target::new(level, reason)
}

/// The current second's burst count and the throttle it caused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Burst {
    second: i64,
    count: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::domain::stamp::opt"
    )]
    until: Option<DateTime<Utc>>,
}

/// Use of one subject (partner or integration) against its quota.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    /// A quota set by a control fact; `None` = the tier's (partner) or none (integration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<QuotaSpec>,
    /// Requests in the current quota month.
    used: u64,
    burst: Burst,
}

impl Meter {
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Adds requests of the current quota month.
    pub fn count_month(&mut self, requests: u64) {
        self.used = self.used.saturating_add(requests);
    }

    /// Adds requests to the burst second of `ts`; a second over `burst_rps` throttles until
    /// `hold` after it ends.
    pub fn count_burst(
        &mut self,
        ts: DateTime<Utc>,
        requests: u64,
        burst_rps: u64,
        hold: Duration,
    ) {
        let second = ts.timestamp();
        if second > self.burst.second {
            self.burst.second = second;
            self.burst.count = 0;
        }
        if second < self.burst.second {
            return;
        }
        self.burst.count = self.burst.count.saturating_add(requests);
        if burst_rps > 0 && self.burst.count > burst_rps {
            // From the end of the second, not from the event: every event of one second
            // holds to the same instant, whatever its fraction.
            let second_starts = DateTime::from_timestamp(second, 0).unwrap_or(ts);
            let end = later(later(second_starts, Duration::seconds(1)), hold);
            self.burst.until = self.burst.until.max(Some(end));
        }
    }

    /// When the burst hold ends (throttle until then).
    pub fn burst_until(&self) -> Option<DateTime<Utc>> {
        self.burst.until
    }

    /// Throttle while a burst hold runs at `now`.
    pub fn burst_target(&self, now: DateTime<Utc>) -> Target {
        match self.burst.until {
            Some(until) if now < until => Target::new(Level::Throttle, Reason::BurstExceeded),
            _ => Target::CALM,
        }
    }

    /// A new quota month: use starts again from zero (the burst second is untouched).
    pub fn reset_month(&mut self) {
        self.used = 0;
    }

    /// Nothing worth keeping besides a configured quota.
    pub fn is_idle(&self, now: DateTime<Utc>) -> bool {
        self.used == 0 && self.burst.until.is_none_or(|u| u <= now)
    }
}

/// What the API shows of a quota (`quota: {used, limit}` plus the overage recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaView {
    pub month: Option<String>,
    pub used: u64,
    /// `0` = no monthly limit.
    pub limit: u64,
    /// Requests above the limit this month (recorded for `soft`, informative otherwise).
    pub overage: u64,
    pub burst_rps: u64,
    pub policy: OveragePolicy,
}

impl QuotaView {
    pub fn new(month: Option<Month>, used: u64, spec: &QuotaSpec) -> Self {
        let overage = if spec.monthly_requests == 0 {
            0
        } else {
            used.saturating_sub(spec.monthly_requests)
        };
        QuotaView {
            month: month.map(Month::label),
            used,
            limit: spec.monthly_requests,
            overage,
            burst_rps: spec.burst_rps,
            policy: spec.overage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(overage: OveragePolicy) -> QuotaSpec {
        QuotaSpec {
            monthly_requests: 1_000,
            burst_rps: 100,
            overage,
        }
    }

    fn levels(overage: OveragePolicy) -> Vec<(u64, Level, Reason)> {
        let p = EnforcementPolicy::default();
        [0, 799, 800, 999, 1_000, 1_100, 1_101, 1_200, 1_201, 5_000]
            .into_iter()
            .map(|used| {
                let t = monthly_target(used, &spec(overage), &p);
                (used, t.level, t.reason)
            })
            .collect()
    }

    #[test]
    fn block_warns_at_80_throttles_at_100_and_suspends_past_the_ceiling() {
        use Level::*;
        use Reason::*;
        assert_eq!(
            levels(OveragePolicy::Block),
            [
                (0, Ok, Calm),
                (799, Ok, Calm),
                (800, Warn, QuotaWarn),
                (999, Warn, QuotaWarn),
                (1_000, Throttle, QuotaExceeded),
                (1_100, Throttle, QuotaExceeded),
                (1_101, Throttle, QuotaExceeded),
                (1_200, Throttle, QuotaExceeded),
                (1_201, Suspend, QuotaHardCeiling),
                (5_000, Suspend, QuotaHardCeiling),
            ]
        );
    }

    /// The float fast path never decides differently from the exact comparison.
    #[test]
    fn the_fast_path_agrees_with_integers_near_and_far_from_the_threshold() {
        for limit in [1, 7, 999, 1_003, 1_000_000_003, u64::MAX / 4] {
            for fraction in [0.0, 0.1, 0.8, 1.0, 1.1, 1.2, 2.5] {
                let at = (limit as f64 * fraction) as u64;
                for used in [
                    0,
                    at.saturating_sub(3),
                    at.saturating_sub(1),
                    at,
                    at + 1,
                    at + 3,
                    u64::MAX,
                ] {
                    for or_equal in [false, true] {
                        assert_eq!(
                            beyond(used, limit, fraction, or_equal),
                            beyond_exactly(used, limit, fraction, or_equal),
                            "used {used} limit {limit} fraction {fraction} or_equal {or_equal}"
                        );
                    }
                }
            }
        }
    }

    /// Thresholds that are not whole requests are compared exactly, not rounded.
    #[test]
    fn fractional_thresholds_are_compared_exactly() {
        let policy = EnforcementPolicy::default();
        let spec = |monthly_requests, overage| QuotaSpec {
            monthly_requests,
            burst_rps: 100,
            overage,
        };
        let level = |used, s: &QuotaSpec| monthly_target(used, s, &policy).level;
        let block = spec(1_003, OveragePolicy::Block);
        // 0.8 × 1003 = 802.4; 1.2 × 1003 = 1203.6.
        assert_eq!(level(802, &block), Level::Ok);
        assert_eq!(level(803, &block), Level::Warn);
        assert_eq!(level(1_203, &block), Level::Throttle);
        assert_eq!(level(1_204, &block), Level::Suspend);
        // 1.1 × 1005 = 1105.5.
        let soft = spec(1_005, OveragePolicy::Soft);
        assert_eq!(level(1_105, &soft), Level::Warn);
        assert_eq!(level(1_106, &soft), Level::Throttle);
        // Float noise is not a fraction: 1.1 × 1000 is 1100.
        let soft = spec(1_000, OveragePolicy::Soft);
        assert_eq!(level(1_100, &soft), Level::Warn);
        assert_eq!(level(1_101, &soft), Level::Throttle);
        // Nor is a large limit a reason to round: 0.8 × 1,000,000,003 = 800,000,002.4.
        let large = spec(1_000_000_003, OveragePolicy::Block);
        assert_eq!(level(800_000_002, &large), Level::Ok);
        assert_eq!(level(800_000_003, &large), Level::Warn);
        // 1.2 × 2,000,000,003 = 2,400,000,003.6.
        let large = spec(2_000_000_003, OveragePolicy::Block);
        assert_eq!(level(2_400_000_003, &large), Level::Throttle);
        assert_eq!(level(2_400_000_004, &large), Level::Suspend);
    }

    #[test]
    fn soft_allows_the_overshoot_then_throttles_and_notify_only_warns() {
        use Level::*;
        use Reason::*;
        let soft: Vec<_> = levels(OveragePolicy::Soft)
            .into_iter()
            .map(|x| (x.0, x.1))
            .collect();
        assert_eq!(
            soft,
            [
                (0, Ok),
                (799, Ok),
                (800, Warn),
                (999, Warn),
                (1_000, Warn),
                (1_100, Warn),
                (1_101, Throttle),
                (1_200, Throttle),
                (1_201, Throttle),
                (5_000, Throttle)
            ]
        );
        assert_eq!(levels(OveragePolicy::Soft)[6].2, QuotaSoftOverage);
        assert!(levels(OveragePolicy::Notify)
            .iter()
            .all(|&(used, l, r)| if used >= 800 {
                (l, r) == (Warn, QuotaWarn)
            } else {
                l == Ok
            }));
    }

    #[test]
    fn zero_means_no_limit() {
        let p = EnforcementPolicy::default();
        let none = QuotaSpec {
            monthly_requests: 0,
            burst_rps: 0,
            overage: OveragePolicy::Block,
        };
        assert_eq!(monthly_target(u64::MAX, &none, &p), Target::CALM);
        assert_eq!(none.throttle_rps(0.5), None);
        let mut m = Meter::default();
        let t0 = DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        m.count_burst(t0, u64::MAX, 0, Duration::seconds(30));
        assert_eq!(m.burst_target(t0), Target::CALM);
    }

    #[test]
    fn burst_throttles_for_hold_after_the_second_and_ignores_late_seconds() {
        let hold = Duration::seconds(30);
        let t = |s: i64| DateTime::from_timestamp(1_780_000_000 + s, 0).unwrap();
        let mut m = Meter::default();
        m.count_burst(t(0), 60, 100, hold);
        m.count_burst(t(0), 40, 100, hold);
        assert_eq!(
            m.burst_target(t(0)),
            Target::CALM,
            "100 in a second is allowed"
        );
        m.count_burst(t(1), 100, 100, hold);
        m.count_burst(t(0), 500, 100, hold);
        assert_eq!(
            m.burst_target(t(1)),
            Target::CALM,
            "a late second does not count"
        );
        m.count_burst(t(1), 1, 100, hold);
        assert_eq!(m.burst_target(t(1)).reason, Reason::BurstExceeded);
        assert_eq!(m.burst_target(t(31)).level, Level::Throttle);
        assert_eq!(m.burst_target(t(32)), Target::CALM);
        assert!(m.is_idle(t(32)));
    }

    #[test]
    fn a_burst_holds_from_the_end_of_its_second_whatever_the_events_fraction() {
        let hold = Duration::seconds(30);
        let second = DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        let ends = second + Duration::seconds(31);
        for fraction in [0, 1, 500, 900, 999] {
            let mut m = Meter::default();
            m.count_burst(second + Duration::milliseconds(fraction), 101, 100, hold);
            assert_eq!(m.burst_until(), Some(ends), "{fraction} ms into the second");
            assert_eq!(
                m.burst_target(ends - Duration::milliseconds(1)).level,
                Level::Throttle
            );
            assert_eq!(m.burst_target(ends), Target::CALM);
        }
    }

    #[test]
    fn throttle_rate_is_burst_times_factor_and_months_are_calendar_months() {
        assert_eq!(spec(OveragePolicy::Block).throttle_rps(0.5), Some(50));
        let tiny = QuotaSpec {
            burst_rps: 1,
            ..spec(OveragePolicy::Block)
        };
        assert_eq!(tiny.throttle_rps(0.5), Some(1));
        let jan31: DateTime<Utc> = "2026-01-31T23:59:59Z".parse().unwrap();
        let feb1: DateTime<Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
        let dec: DateTime<Utc> = "2025-12-15T00:00:00Z".parse().unwrap();
        assert!(Month::of(jan31) < Month::of(feb1));
        assert!(Month::of(dec) < Month::of(jan31));
        assert_eq!(Month::of(feb1).label(), "2026-02");
        assert_eq!(Month::of(dec).label(), "2025-12");
        let view = QuotaView::new(Some(Month::of(feb1)), 1_150, &spec(OveragePolicy::Soft));
        assert_eq!((view.used, view.limit, view.overage), (1_150, 1_000, 150));
    }
}
