//! The closed vocabularies of enforcement: [`Level`], [`Scope`] and [`Reason`].
//!
//! All three are metric labels and wire values (CONTRACT §4, §7), so each is a closed
//! enum with an `ALL` list (every series exists from start at 0) and an `as_str` that is
//! the same text serde writes.

use serde::{Deserialize, Serialize};

/// How hard a target is held, in order of severity (`Ord` follows the declaration order).
///
/// `Ok`..=`Suspend` are the ladder's levels; `Terminated` and `Killed` are set and lifted
/// only by people (CONTRACT §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warn,
    Throttle,
    Suspend,
    Terminated,
    Killed,
}

impl Level {
    pub const ALL: [Level; 6] = [
        Level::Ok,
        Level::Warn,
        Level::Throttle,
        Level::Suspend,
        Level::Terminated,
        Level::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Throttle => "throttle",
            Level::Suspend => "suspend",
            Level::Terminated => "terminated",
            Level::Killed => "killed",
        }
    }

    /// Whether the ladder (signals, calm, dwell) may hold this level. The others are
    /// people's levels.
    pub fn is_ladder_level(self) -> bool {
        self <= Level::Suspend
    }

    /// The next ladder level up, `None` at `Suspend` and above.
    pub fn step_up(self) -> Option<Level> {
        match self {
            Level::Ok => Some(Level::Warn),
            Level::Warn => Some(Level::Throttle),
            Level::Throttle => Some(Level::Suspend),
            Level::Suspend | Level::Terminated | Level::Killed => None,
        }
    }

    /// The next ladder level down, `None` at `Ok` and for people's levels.
    pub fn step_down(self) -> Option<Level> {
        match self {
            Level::Warn => Some(Level::Ok),
            Level::Throttle => Some(Level::Warn),
            Level::Suspend => Some(Level::Throttle),
            Level::Ok | Level::Terminated | Level::Killed => None,
        }
    }
}

/// What a decision is about. `Global` is the kill switch's scope; a partner's state owns
/// the other three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Global,
    Partner,
    Integration,
    Tenant,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::Global,
        Scope::Partner,
        Scope::Integration,
        Scope::Tenant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Partner => "partner",
            Scope::Integration => "integration",
            Scope::Tenant => "tenant",
        }
    }
}

/// Why a target is at its level. Closed: it is the `reason` label of
/// `warden_enforcement_transitions_total`, never free text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    QuotaWarn,
    QuotaExceeded,
    QuotaSoftOverage,
    QuotaHardCeiling,
    BurstExceeded,
    ErrorRate,
    VolumeAnomaly,
    AuthFailureSpike,
    ChargebackSpike,
    PilotExpired,
    InsufficientCredits,
    /// A step down (or back to `ok`) because no signal holds the level any more.
    Calm,
    Manual,
    KillSwitch,
    /// The state store is unreachable and the policy is `fail_closed` (global scope).
    StoreUnavailable,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::QuotaWarn,
        Reason::QuotaExceeded,
        Reason::QuotaSoftOverage,
        Reason::QuotaHardCeiling,
        Reason::BurstExceeded,
        Reason::ErrorRate,
        Reason::VolumeAnomaly,
        Reason::AuthFailureSpike,
        Reason::ChargebackSpike,
        Reason::PilotExpired,
        Reason::InsufficientCredits,
        Reason::Calm,
        Reason::Manual,
        Reason::KillSwitch,
        Reason::StoreUnavailable,
    ];

    /// The levels a decision with this reason can set: with every other level as `from`,
    /// the closed set of `warden_enforcement_transitions_total` created at start (CONTRACT
    /// §7). A health signal's reason also names its steps down, one at a time.
    pub fn levels_it_sets(self) -> &'static [Level] {
        use Level::*;
        match self {
            Reason::QuotaWarn => &[Warn],
            Reason::QuotaExceeded | Reason::QuotaSoftOverage | Reason::BurstExceeded => &[Throttle],
            Reason::QuotaHardCeiling | Reason::PilotExpired => &[Suspend],
            Reason::ErrorRate
            | Reason::VolumeAnomaly
            | Reason::AuthFailureSpike
            | Reason::ChargebackSpike => &[Warn, Throttle, Suspend],
            Reason::InsufficientCredits => &[Warn, Suspend],
            Reason::Calm => &[Ok, Warn, Throttle],
            Reason::Manual => &[Ok, Warn, Throttle, Suspend, Terminated],
            Reason::KillSwitch => &[Ok, Killed],
            Reason::StoreUnavailable => &[Ok, Suspend],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::QuotaWarn => "quota_warn",
            Reason::QuotaExceeded => "quota_exceeded",
            Reason::QuotaSoftOverage => "quota_soft_overage",
            Reason::QuotaHardCeiling => "quota_hard_ceiling",
            Reason::BurstExceeded => "burst_exceeded",
            Reason::ErrorRate => "error_rate",
            Reason::VolumeAnomaly => "volume_anomaly",
            Reason::AuthFailureSpike => "auth_failure_spike",
            Reason::ChargebackSpike => "chargeback_spike",
            Reason::PilotExpired => "pilot_expired",
            Reason::InsufficientCredits => "insufficient_credits",
            Reason::Calm => "calm",
            Reason::Manual => "manual",
            Reason::KillSwitch => "kill_switch",
            Reason::StoreUnavailable => "store_unavailable",
        }
    }

    /// Reasons a person may give to `EnforcementState::manual`.
    pub fn is_manual(self) -> bool {
        matches!(self, Reason::Manual | Reason::KillSwitch)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn serde_text<T: Serialize>(v: T) -> String {
        serde_json::to_value(v)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn every_as_str_is_distinct_and_matches_serde() {
        let levels: BTreeSet<_> = Level::ALL.iter().map(|l| l.as_str()).collect();
        assert_eq!(levels.len(), Level::ALL.len());
        let scopes: BTreeSet<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(scopes.len(), Scope::ALL.len());
        let reasons: BTreeSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(reasons.len(), Reason::ALL.len());
        for l in Level::ALL {
            assert_eq!(serde_text(l), l.as_str());
            let back: Level = serde_json::from_value(serde_json::json!(l.as_str())).unwrap();
            assert_eq!(back, l);
        }
        for s in Scope::ALL {
            assert_eq!(serde_text(s), s.as_str());
        }
        for r in Reason::ALL {
            assert_eq!(serde_text(r), r.as_str());
            let back: Reason = serde_json::from_value(serde_json::json!(r.as_str())).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn levels_are_ordered_by_severity() {
        let mut sorted = Level::ALL;
        sorted.sort();
        assert_eq!(sorted, Level::ALL);
        assert!(Level::Suspend < Level::Terminated && Level::Terminated < Level::Killed);
    }

    #[test]
    fn steps_walk_the_ladder_one_level_at_a_time_and_stop_at_its_ends() {
        assert_eq!(Level::Ok.step_up(), Some(Level::Warn));
        assert_eq!(Level::Throttle.step_up(), Some(Level::Suspend));
        assert_eq!(Level::Suspend.step_up(), None);
        assert_eq!(Level::Suspend.step_down(), Some(Level::Throttle));
        assert_eq!(Level::Ok.step_down(), None);
        assert_eq!(Level::Killed.step_down(), None);
        assert_eq!(Level::Terminated.step_up(), None);
        let ladder: Vec<_> = Level::ALL
            .into_iter()
            .filter(|l| l.is_ladder_level())
            .collect();
        assert_eq!(
            ladder,
            [Level::Ok, Level::Warn, Level::Throttle, Level::Suspend]
        );
    }

    #[test]
    fn only_manual_and_kill_switch_are_manual_reasons() {
        let manual: Vec<_> = Reason::ALL.into_iter().filter(|r| r.is_manual()).collect();
        assert_eq!(manual, [Reason::Manual, Reason::KillSwitch]);
    }
}
