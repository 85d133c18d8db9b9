//! The enforcement policy: the `[enforcement]` table of the configuration.
//!
//! Global timing (dwell, calm, burst hold, pilot age), quota fractions and one
//! [`TierPolicy`] per partner tier, with a `default` entry for tiers not listed. Durations
//! are humantime strings ("30s", "5m", "30days"). Ratios of counts are `f64`; no money
//! lives here. [`EnforcementPolicy::validate`] lists every range problem at once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::duration_str;
use crate::domain::event::OveragePolicy;

/// The tier used when a partner's tier has no entry of its own.
pub const DEFAULT_TIER: &str = "default";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnforcementPolicy {
    /// Least time between two moves of the health ladder.
    #[serde(with = "duration_str")]
    pub dwell: Duration,
    /// How long the highest health target must stay below the level before one step down.
    #[serde(with = "duration_str")]
    pub calm: Duration,
    /// How long (event time) a burst throttle stays after the last second over the limit.
    #[serde(with = "duration_str")]
    pub burst_hold: Duration,
    /// `rate_limit_rps` of a throttle = the quota's `burst_rps` × this.
    pub throttle_factor: f64,
    /// Monthly use (used ÷ quota) at which a quota warns.
    pub warn_fraction: f64,
    /// `soft` overage: use allowed past 100 % before the throttle (0.1 = up to 110 %).
    pub soft_overshoot: f64,
    /// `block` overage: use past which the throttle becomes a suspend (1.2 = 120 %).
    pub hard_ceiling: f64,
    /// A pilot tenant older than this (wall clock) and not upgraded is suspended.
    #[serde(with = "duration_str")]
    pub pilot_max_age: Duration,
    pub tiers: BTreeMap<String, TierPolicy>,
}

/// Quota defaults and health thresholds of one tier.
///
/// `monthly_requests = 0` or `burst_rps = 0` means "no such limit".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierPolicy {
    pub monthly_requests: u64,
    pub burst_rps: u64,
    pub overage: OveragePolicy,
    /// errors ÷ requests over `error_window` at which the error signal proposes each level.
    pub error_rate_warn: f64,
    pub error_rate_throttle: f64,
    pub error_rate_suspend: f64,
    /// Below this many requests in the window the error rate says nothing.
    pub error_min_requests: u64,
    /// Window of the error-rate and auth-failure signals.
    #[serde(with = "duration_str")]
    pub error_window: Duration,
    /// z-score of the current window's volume against the baseline.
    pub anomaly_z_warn: f64,
    pub anomaly_z_throttle: f64,
    /// Windows with traffic needed before the baseline is trusted.
    pub anomaly_min_windows: u32,
    /// Below this many requests in the open window the anomaly signal says nothing: a
    /// partner of one request a minute that sends nine is not abusing anything.
    pub anomaly_min_requests: u64,
    /// One sample of request volume.
    #[serde(with = "duration_str")]
    pub anomaly_window: Duration,
    /// Weight of the newest window in the EWMA mean and variance.
    pub ewma_alpha: f64,
    /// Auth failures within `error_window` at which the signal proposes warn / throttle.
    pub auth_fail_warn: u64,
    pub auth_fail_throttle: u64,
    /// Chargebacks within `chargeback_window` at which the signal proposes warn / suspend.
    pub chargeback_warn: u64,
    pub chargeback_suspend: u64,
    #[serde(with = "duration_str")]
    pub chargeback_window: Duration,
}

impl Default for TierPolicy {
    fn default() -> Self {
        TierPolicy {
            monthly_requests: 1_000_000,
            burst_rps: 50,
            overage: OveragePolicy::Block,
            error_rate_warn: 0.05,
            error_rate_throttle: 0.15,
            error_rate_suspend: 0.30,
            error_min_requests: 100,
            error_window: Duration::from_secs(5 * 60),
            anomaly_z_warn: 4.0,
            anomaly_z_throttle: 8.0,
            anomaly_min_windows: 10,
            anomaly_min_requests: 100,
            anomaly_window: Duration::from_secs(60),
            ewma_alpha: 0.1,
            auth_fail_warn: 50,
            auth_fail_throttle: 200,
            chargeback_warn: 3,
            chargeback_suspend: 10,
            chargeback_window: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl TierPolicy {
    fn with_quota(monthly_requests: u64, burst_rps: u64, overage: OveragePolicy) -> Self {
        TierPolicy {
            monthly_requests,
            burst_rps,
            overage,
            ..TierPolicy::default()
        }
    }
}

impl Default for EnforcementPolicy {
    fn default() -> Self {
        let tiers = [
            (DEFAULT_TIER, TierPolicy::default()),
            (
                "bronze",
                TierPolicy::with_quota(1_000_000, 50, OveragePolicy::Block),
            ),
            (
                "silver",
                TierPolicy::with_quota(5_000_000, 200, OveragePolicy::Block),
            ),
            (
                "gold",
                TierPolicy::with_quota(20_000_000, 1_000, OveragePolicy::Soft),
            ),
            (
                "platinum",
                TierPolicy::with_quota(100_000_000, 5_000, OveragePolicy::Soft),
            ),
        ];
        EnforcementPolicy {
            dwell: Duration::from_secs(30),
            calm: Duration::from_secs(5 * 60),
            burst_hold: Duration::from_secs(30),
            throttle_factor: 0.5,
            warn_fraction: 0.8,
            soft_overshoot: 0.1,
            hard_ceiling: 1.2,
            pilot_max_age: Duration::from_secs(30 * 24 * 3600),
            tiers: tiers
                .into_iter()
                .map(|(name, t)| (name.to_owned(), t))
                .collect(),
        }
    }
}

/// A window must hold at least one second per bucket.
const MIN_WINDOW: Duration = Duration::from_secs(crate::domain::enforcement::window::BUCKETS);
/// Longest duration accepted anywhere (ten years): keeps time arithmetic far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

impl EnforcementPolicy {
    /// The thresholds of `tier`, or of the `default` entry, or the built-in default.
    pub fn tier(&self, tier: &str) -> &TierPolicy {
        static BUILT_IN: std::sync::OnceLock<TierPolicy> = std::sync::OnceLock::new();
        self.tiers
            .get(tier)
            .or_else(|| self.tiers.get(DEFAULT_TIER))
            .unwrap_or_else(|| BUILT_IN.get_or_init(TierPolicy::default))
    }

    /// Every range problem, as `(key relative to the [enforcement] table, message)`;
    /// prefix the key with `enforcement.` to report it against the file.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut check = |ok: bool, key: &str, msg: String| {
            if !ok {
                out.push((key.to_owned(), msg));
            }
        };
        duration_in(&mut check, "dwell", self.dwell, Duration::from_secs(1));
        duration_in(
            &mut check,
            "calm",
            self.calm,
            self.dwell.max(Duration::from_secs(1)),
        );
        duration_in(
            &mut check,
            "burst_hold",
            self.burst_hold,
            Duration::from_secs(1),
        );
        duration_in(
            &mut check,
            "pilot_max_age",
            self.pilot_max_age,
            Duration::from_secs(1),
        );
        ratio_in(
            &mut check,
            "throttle_factor",
            self.throttle_factor,
            0.0,
            1.0,
            false,
        );
        ratio_in(
            &mut check,
            "warn_fraction",
            self.warn_fraction,
            0.0,
            1.0,
            false,
        );
        ratio_in(
            &mut check,
            "soft_overshoot",
            self.soft_overshoot,
            0.0,
            10.0,
            true,
        );
        ratio_in(
            &mut check,
            "hard_ceiling",
            self.hard_ceiling,
            1.0,
            11.0,
            false,
        );
        check(
            self.tiers.contains_key(DEFAULT_TIER),
            "tiers",
            format!("needs a `{DEFAULT_TIER}` entry for partners whose tier is not listed"),
        );
        for (name, t) in &self.tiers {
            t.validate(&format!("tiers.{name}"), &mut check);
        }
        out
    }
}

impl TierPolicy {
    fn validate(&self, at: &str, check: &mut impl FnMut(bool, &str, String)) {
        let key = |field: &str| format!("{at}.{field}");
        ratio_in(
            check,
            &key("error_rate_warn"),
            self.error_rate_warn,
            0.0,
            1.0,
            false,
        );
        let ordered = self.error_rate_warn <= self.error_rate_throttle
            && self.error_rate_throttle <= self.error_rate_suspend
            && self.error_rate_suspend <= 1.0;
        check(
            ordered,
            &key("error_rate_throttle"),
            "needs error_rate_warn ≤ error_rate_throttle ≤ error_rate_suspend ≤ 1".into(),
        );
        check(
            self.error_min_requests >= 1,
            &key("error_min_requests"),
            "must be at least 1".into(),
        );
        duration_in(check, &key("error_window"), self.error_window, MIN_WINDOW);
        duration_in(
            check,
            &key("anomaly_window"),
            self.anomaly_window,
            Duration::from_secs(1),
        );
        duration_in(
            check,
            &key("chargeback_window"),
            self.chargeback_window,
            MIN_WINDOW,
        );
        let z_ok = self.anomaly_z_warn.is_finite()
            && self.anomaly_z_warn > 0.0
            && self.anomaly_z_throttle.is_finite()
            && self.anomaly_z_throttle >= self.anomaly_z_warn;
        check(
            z_ok,
            &key("anomaly_z_throttle"),
            "needs 0 < anomaly_z_warn ≤ anomaly_z_throttle".into(),
        );
        check(
            self.anomaly_min_windows >= 1,
            &key("anomaly_min_windows"),
            "must be at least 1".into(),
        );
        ratio_in(check, &key("ewma_alpha"), self.ewma_alpha, 0.0, 1.0, false);
        check(
            self.auth_fail_warn >= 1 && self.auth_fail_throttle >= self.auth_fail_warn,
            &key("auth_fail_throttle"),
            "needs 1 ≤ auth_fail_warn ≤ auth_fail_throttle".into(),
        );
        check(
            self.chargeback_warn >= 1 && self.chargeback_suspend >= self.chargeback_warn,
            &key("chargeback_suspend"),
            "needs 1 ≤ chargeback_warn ≤ chargeback_suspend".into(),
        );
    }
}

/// `lo < v ≤ hi` (or `lo ≤ v ≤ hi` when `lo_inclusive`), and finite.
fn ratio_in(
    check: &mut impl FnMut(bool, &str, String),
    key: &str,
    v: f64,
    lo: f64,
    hi: f64,
    lo_inclusive: bool,
) {
    let above = if lo_inclusive { v >= lo } else { v > lo };
    let open = if lo_inclusive { "[" } else { "(" };
    check(
        v.is_finite() && above && v <= hi,
        key,
        format!("must be in {open}{lo}, {hi}], got {v}"),
    );
}

fn duration_in(check: &mut impl FnMut(bool, &str, String), key: &str, d: Duration, min: Duration) {
    check(
        d >= min && d <= MAX_DURATION,
        key,
        format!(
            "must be between {} and {}, got {}",
            humantime::format_duration(min),
            humantime::format_duration(MAX_DURATION),
            humantime::format_duration(d)
        ),
    );
}

#[cfg(test)]
mod tests;
