//! Health signals of one subject (a partner or one of its integrations), over sliding
//! event-time windows. Each signal proposes a [`Target`]; the ladder follows the highest.
//!
//! - error rate: errors ÷ requests over `error_window`, silent below `error_min_requests`;
//! - auth failures: their count over `error_window`;
//! - volume anomaly: z-score against the subject's own EWMA baseline ([`Baseline`]);
//! - chargebacks: their count over `chargeback_window` (partner scope only: invoices name
//!   no integration).
//!
//! Signals never propose `terminated` or `killed`: those are people's levels.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::anomaly::{Baseline, Sampling};
use super::level::{Level, Reason};
use super::policy::TierPolicy;
use super::window::{Count, Traffic, Window};

/// A level a signal asks for, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub level: Level,
    pub reason: Reason,
}

impl Target {
    /// Nothing asks for anything.
    pub const CALM: Target = Target {
        level: Level::Ok,
        reason: Reason::Calm,
    };

    pub fn new(level: Level, reason: Reason) -> Self {
        Target { level, reason }
    }

    /// The highest of `targets`; on a tie the first listed wins, so the order of the
    /// list is the order of precedence between reasons.
    pub fn highest(targets: impl IntoIterator<Item = Target>) -> Target {
        targets.into_iter().fold(
            Target::CALM,
            |best, t| if t.level > best.level { t } else { best },
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    traffic: Window<Traffic>,
    volume: Baseline,
    #[serde(default, skip_serializing_if = "Window::is_empty")]
    chargebacks: Window<Count>,
}

impl Health {
    /// Adds one usage event at `ts`; `now` is the watermark (≥ `ts`).
    pub fn record_usage(
        &mut self,
        ts: DateTime<Utc>,
        traffic: Traffic,
        now: DateTime<Utc>,
        tier: &TierPolicy,
    ) {
        self.traffic.add(ts, traffic, now, tier.error_window);
        self.volume
            .record(ts, traffic.requests, &Sampling::of(tier));
    }

    pub fn record_chargeback(&mut self, ts: DateTime<Utc>, now: DateTime<Utc>, tier: &TierPolicy) {
        self.chargebacks
            .add(ts, Count(1), now, tier.chargeback_window);
    }

    /// Lets time pass: closes the volume window and forgets buckets that slid out.
    pub fn advance(&mut self, now: DateTime<Utc>, tier: &TierPolicy) {
        self.volume.roll(now, &Sampling::of(tier));
        self.traffic.prune(now);
        self.chargebacks.prune(now);
    }

    /// The earliest event time (epoch millis) at which time alone changes a signal: a
    /// window's oldest bucket sliding out, or the volume window closing. `None` when
    /// nothing is counted.
    pub fn changes_at_ms(&self) -> Option<i64> {
        [
            self.traffic.slides_at_ms(),
            self.chargebacks.slides_at_ms(),
            self.volume.closes_at_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Every signal's proposal at `now`, in order of precedence.
    pub fn signals(&self, now: DateTime<Utc>, tier: &TierPolicy) -> [Target; 4] {
        let traffic = self.traffic.sum(now);
        [
            error_rate(traffic, tier),
            chargebacks(self.chargebacks.sum(now).0, tier),
            auth_failures(traffic.auth_failures, tier),
            anomaly(
                self.volume
                    .z(now, tier.anomaly_min_windows, tier.anomaly_min_requests),
                tier,
            ),
        ]
    }

    /// The highest proposal at `now`.
    pub fn target(&self, now: DateTime<Utc>, tier: &TierPolicy) -> Target {
        Target::highest(self.signals(now, tier))
    }
}

fn error_rate(traffic: Traffic, tier: &TierPolicy) -> Target {
    if traffic.requests == 0 || traffic.requests < tier.error_min_requests {
        return Target::CALM;
    }
    let rate = traffic.errors as f64 / traffic.requests as f64;
    let level = if rate >= tier.error_rate_suspend {
        Level::Suspend
    } else if rate >= tier.error_rate_throttle {
        Level::Throttle
    } else if rate >= tier.error_rate_warn {
        Level::Warn
    } else {
        return Target::CALM;
    };
    Target::new(level, Reason::ErrorRate)
}

fn auth_failures(count: u64, tier: &TierPolicy) -> Target {
    let level = if count >= tier.auth_fail_throttle {
        Level::Throttle
    } else if count >= tier.auth_fail_warn {
        Level::Warn
    } else {
        return Target::CALM;
    };
    Target::new(level, Reason::AuthFailureSpike)
}

fn chargebacks(count: u64, tier: &TierPolicy) -> Target {
    let level = if count >= tier.chargeback_suspend {
        Level::Suspend
    } else if count >= tier.chargeback_warn {
        Level::Warn
    } else {
        return Target::CALM;
    };
    Target::new(level, Reason::ChargebackSpike)
}

fn anomaly(z: Option<f64>, tier: &TierPolicy) -> Target {
    let Some(z) = z else {
        return Target::CALM;
    };
    let level = if z >= tier.anomaly_z_throttle {
        Level::Throttle
    } else if z >= tier.anomaly_z_warn {
        Level::Warn
    } else {
        return Target::CALM;
    };
    Target::new(level, Reason::VolumeAnomaly)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_020 + secs, 0).unwrap()
    }

    fn traffic(requests: u64, errors: u64, auth_failures: u64) -> Traffic {
        Traffic {
            requests,
            errors,
            auth_failures,
        }
    }

    #[test]
    fn each_error_threshold_fires_once_reached_and_not_below_min_requests() {
        let tier = TierPolicy::default();
        let at = |req, err| error_rate(traffic(req, err, 0), &tier).level;
        assert_eq!(at(1000, 49), Level::Ok);
        assert_eq!(at(1000, 50), Level::Warn);
        assert_eq!(at(1000, 150), Level::Throttle);
        assert_eq!(at(1000, 300), Level::Suspend);
        // 99 requests, all errors: too small a sample to judge.
        assert_eq!(at(99, 99), Level::Ok);
        assert_eq!(at(0, 0), Level::Ok);
    }

    #[test]
    fn auth_and_chargeback_thresholds_fire_at_their_counts() {
        let tier = TierPolicy::default();
        assert_eq!(auth_failures(49, &tier), Target::CALM);
        assert_eq!(
            auth_failures(50, &tier),
            Target::new(Level::Warn, Reason::AuthFailureSpike)
        );
        assert_eq!(auth_failures(200, &tier).level, Level::Throttle);
        assert_eq!(chargebacks(2, &tier), Target::CALM);
        assert_eq!(chargebacks(3, &tier).level, Level::Warn);
        assert_eq!(
            chargebacks(10, &tier),
            Target::new(Level::Suspend, Reason::ChargebackSpike)
        );
        assert_eq!(anomaly(Some(3.9), &tier), Target::CALM);
        assert_eq!(anomaly(Some(4.0), &tier).level, Level::Warn);
        assert_eq!(anomaly(Some(8.0), &tier).level, Level::Throttle);
        assert_eq!(anomaly(None, &tier), Target::CALM);
    }

    #[test]
    fn highest_prefers_the_higher_level_then_the_first_listed() {
        let a = Target::new(Level::Warn, Reason::ErrorRate);
        let b = Target::new(Level::Warn, Reason::AuthFailureSpike);
        let c = Target::new(Level::Throttle, Reason::VolumeAnomaly);
        assert_eq!(Target::highest([a, b]), a);
        assert_eq!(Target::highest([b, a]), b);
        assert_eq!(Target::highest([a, c, b]), c);
        assert_eq!(Target::highest([]), Target::CALM);
    }

    #[test]
    fn signals_slide_out_of_their_windows() {
        let tier = TierPolicy::default();
        let mut h = Health::default();
        h.record_usage(t(0), traffic(1000, 400, 60), t(0), &tier);
        h.record_chargeback(t(0), t(0), &tier);
        assert_eq!(
            h.signals(t(0), &tier).map(|s| s.level),
            [Level::Suspend, Level::Ok, Level::Warn, Level::Ok]
        );
        assert_eq!(h.target(t(0), &tier).reason, Reason::ErrorRate);
        // Six minutes later the 5-minute window no longer holds the errors.
        h.advance(t(360), &tier);
        assert_eq!(h.target(t(360), &tier), Target::CALM);
        h.advance(t(8 * 86_400), &tier);
        assert!(h.chargebacks.is_empty());
    }
}
