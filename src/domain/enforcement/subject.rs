//! One decided target (partner, integration or tenant): its ladder, and the level last
//! decided for it.
//!
//! The level in force is the highest of the ladder's level (a person's hold, or the health
//! level) and the immediate targets (quota, burst, pilot), which move without dwell.
//! [`Subject::settle`] compares it with the level last decided and returns a
//! [`Decision`] exactly when it changed: every change of level is one decision, and so is
//! a `throttle` whose rate changed; a target that changes neither produces none.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::decision::{Decision, LevelView};
use super::health::Target;
use super::ladder::Ladder;
use super::level::{Level, Reason, Scope};

/// The level last decided (what the gateway sees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Published {
    level: Level,
    reason: Reason,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::domain::stamp::opt"
    )]
    since: Option<DateTime<Utc>>,
    /// The rate a `throttle` was decided with. A state saved before it was kept reads as
    /// `None`, so a throttled target decides its rate once more after an upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_limit_rps: Option<u64>,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            level: Level::Ok,
            reason: Reason::Calm,
            since: None,
            rate_limit_rps: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub ladder: Ladder,
    published: Published,
}

/// A throttle's rate for [`Subject::settle`]: `rps` for a new `throttle`, and whether a
/// throttle already decided at another rate is decided again at this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub rps: Option<u64>,
    pub refresh: bool,
}

impl Rate {
    /// No rate (a tenant's levels), nothing to refresh.
    pub const NONE: Rate = Rate {
        rps: None,
        refresh: false,
    };

    /// `rps`, in force now.
    #[cfg(test)]
    pub fn current(rps: Option<u64>) -> Rate {
        Rate { rps, refresh: true }
    }
}

/// What a decision needs to know about its target.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub scope: Scope,
    pub id: &'a str,
    pub partner_id: &'a str,
}

impl Subject {
    pub fn level(&self) -> Level {
        self.published.level
    }

    pub fn view(&self, scope: Scope, id: &str) -> LevelView {
        LevelView {
            scope,
            id: id.to_owned(),
            level: self.published.level,
            reason: self.published.reason,
            since: self.published.since,
        }
    }

    /// At `ok`, nothing held, no ladder clock running.
    pub fn is_idle(&self) -> bool {
        self.published.level == Level::Ok && self.ladder.is_idle()
    }

    /// The level in force given the `immediate` targets, as a target. On a tie the
    /// immediate ones come first (they name the cause the gateway can act on), and a
    /// signal's reason beats `calm`.
    pub fn in_force(&self, immediate: &[Target]) -> Target {
        let ladder = Target::new(self.ladder.level(), self.ladder.reason());
        immediate
            .iter()
            .copied()
            .chain([ladder])
            .fold(Target::CALM, |best, t| {
                let calm_tie = t.level == best.level && best.reason == Reason::Calm;
                if t.level > best.level || calm_tie {
                    t
                } else {
                    best
                }
            })
    }

    /// Decides, if the level in force differs from the one last decided, or is `throttle`
    /// at another rate (a `quota` fact or a tier change moved `burst_rps`: the gateway must
    /// not keep the old rate until the level next changes). `cause` names a person's reason
    /// for a manual change; otherwise the reason is the target's, or `calm` when nothing
    /// holds the target above `ok`. `rate` is used when the level is `throttle`.
    pub fn settle(
        &mut self,
        key: Key<'_>,
        immediate: &[Target],
        cause: Option<Reason>,
        rate: Rate,
        at: DateTime<Utc>,
    ) -> Option<Decision> {
        let now = self.in_force(immediate);
        let previous = self.published.level;
        let rate_limit_rps = rate.rps.filter(|_| now.level == Level::Throttle);
        let same_level = now.level == previous;
        if same_level && (!rate.refresh || rate_limit_rps == self.published.rate_limit_rps) {
            return None;
        }
        let reason = match cause {
            Some(reason) => reason,
            None if now.level == Level::Ok => Reason::Calm,
            None => now.reason,
        };
        self.published = Published {
            level: now.level,
            reason,
            // A new rate is not a new level: the level is still in force since it began.
            since: if same_level {
                self.published.since
            } else {
                Some(at)
            },
            rate_limit_rps,
        };
        Some(Decision {
            scope: key.scope,
            id: key.id.to_owned(),
            partner_id: key.partner_id.to_owned(),
            level: now.level,
            previous,
            reason,
            rate_limit_rps,
            at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000 + secs, 0).unwrap()
    }

    const KEY: Key<'static> = Key {
        scope: Scope::Integration,
        id: "i-1",
        partner_id: "p-1",
    };

    #[test]
    fn decides_only_on_a_change_of_level_with_the_cause_and_the_rate() {
        let mut s = Subject::default();
        assert_eq!(
            s.settle(KEY, &[Target::CALM], None, Rate::current(Some(50)), t(0)),
            None
        );
        let over = Target::new(Level::Throttle, Reason::QuotaExceeded);
        let d = s
            .settle(KEY, &[over], None, Rate::current(Some(50)), t(1))
            .unwrap();
        assert_eq!(
            d,
            Decision {
                scope: Scope::Integration,
                id: "i-1".into(),
                partner_id: "p-1".into(),
                level: Level::Throttle,
                previous: Level::Ok,
                reason: Reason::QuotaExceeded,
                rate_limit_rps: Some(50),
                at: t(1),
            }
        );
        let burst = Target::new(Level::Throttle, Reason::BurstExceeded);
        assert_eq!(
            s.settle(KEY, &[burst], None, Rate::current(Some(50)), t(2)),
            None
        );
        let d = s
            .settle(KEY, &[Target::CALM], None, Rate::current(Some(50)), t(3))
            .unwrap();
        assert_eq!(
            (d.previous, d.level, d.reason, d.rate_limit_rps),
            (Level::Throttle, Level::Ok, Reason::Calm, None)
        );
        assert_eq!(s.view(Scope::Integration, "i-1").since, Some(t(3)));
    }

    #[test]
    fn a_throttle_whose_rate_changes_is_decided_again_at_the_same_level() {
        let mut s = Subject::default();
        let over = Target::new(Level::Throttle, Reason::QuotaExceeded);
        s.settle(KEY, &[over], None, Rate::current(Some(50)), t(1))
            .unwrap();
        assert_eq!(
            s.settle(KEY, &[over], None, Rate::current(Some(50)), t(2)),
            None
        );
        let d = s
            .settle(KEY, &[over], None, Rate::current(Some(500)), t(3))
            .unwrap();
        assert_eq!(
            (d.previous, d.level, d.reason, d.rate_limit_rps, d.at),
            (
                Level::Throttle,
                Level::Throttle,
                Reason::QuotaExceeded,
                Some(500),
                t(3)
            )
        );
        assert_eq!(
            s.settle(KEY, &[over], None, Rate::current(Some(500)), t(4)),
            None
        );
        // The level is still in force since it began.
        assert_eq!(s.view(Scope::Integration, "i-1").since, Some(t(1)));
        // Other levels carry no rate: a new one changes nothing there.
        let warn = Target::new(Level::Warn, Reason::QuotaWarn);
        s.settle(KEY, &[warn], None, Rate::current(Some(500)), t(5))
            .unwrap();
        assert_eq!(
            s.settle(KEY, &[warn], None, Rate::current(Some(7)), t(6)),
            None
        );
    }

    #[test]
    fn a_hold_outranks_every_immediate_target() {
        let mut s = Subject::default();
        s.ladder
            .manual(Level::Killed, Reason::KillSwitch, "sec", t(0))
            .unwrap();
        let suspend = Target::new(Level::Suspend, Reason::QuotaHardCeiling);
        let d = s
            .settle(KEY, &[suspend], Some(Reason::KillSwitch), Rate::NONE, t(0))
            .unwrap();
        assert_eq!((d.level, d.reason), (Level::Killed, Reason::KillSwitch));
        assert_eq!(s.in_force(&[suspend]).level, Level::Killed);
    }

    #[test]
    fn on_a_tie_a_signal_reason_beats_calm() {
        let s = Subject::default();
        let warn = Target::new(Level::Warn, Reason::QuotaWarn);
        assert_eq!(s.in_force(&[Target::CALM, warn]), warn);
        assert_eq!(s.in_force(&[]), Target::CALM);
    }
}
