//! The enforcement ladder of one target: the one state machine that moves its level.
//!
//! Legal moves are written down once, in [`Ladder::legal`]:
//! - `StepUp`: one level up the ladder (`ok → warn → throttle → suspend`), toward the
//!   highest signal target, at most one move per `dwell`;
//! - `StepDown`: one level down, once the highest target has stayed below the level for
//!   the whole of `calm` (a re-rise resets that clock, so an oscillating signal never
//!   flaps the level), and at most one move per `dwell`. It happens even while a lower
//!   signal is still active (Sentinel#1638: breakers must not stick);
//! - `Manual`: a person sets any ladder level (`ok`..=`suspend`), lifting a hold;
//! - `Hold`: a person sets `terminated` or `killed`. While held, signals, dwell and calm
//!   move nothing: only a person (`Manual`) lifts a hold.
//!
//! Anything else is an [`EnforcementError`], never a silent no-op. Time is injected: the
//! caller passes the event-time watermark.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::error::EnforcementError;
use super::health::Target;
use super::level::{Level, Reason};

/// How a ladder moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Move {
    StepUp,
    StepDown,
    Manual,
    Hold,
}

/// One move that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Level,
    pub to: Level,
    pub reason: Reason,
    pub by: Move,
    pub at: DateTime<Utc>,
}

/// A person's `terminated` or `killed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub level: Level,
    pub reason: Reason,
    pub actor: String,
    pub since: DateTime<Utc>,
}

/// `dwell` and `calm` as `chrono` durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub dwell: Duration,
    pub calm: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ladder {
    /// The health level, `ok`..=`suspend`.
    level: Level,
    reason: Reason,
    /// When the last move happened: the next one may come `dwell` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    moved_at: Option<DateTime<Utc>>,
    /// Since when the highest target has stayed below `level` (the calm clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    below_since: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hold: Option<Hold>,
}

impl Default for Ladder {
    fn default() -> Self {
        Ladder {
            level: Level::Ok,
            reason: Reason::Calm,
            moved_at: None,
            below_since: None,
            hold: None,
        }
    }
}

impl Ladder {
    /// The table of legal moves.
    pub fn legal(from: Level, to: Level, by: Move) -> bool {
        match by {
            Move::StepUp => from.is_ladder_level() && from.step_up() == Some(to),
            Move::StepDown => from.step_down() == Some(to),
            Move::Manual => to.is_ladder_level(),
            Move::Hold => !to.is_ladder_level(),
        }
    }

    /// The level in force: a hold, else the health level.
    pub fn level(&self) -> Level {
        self.hold.as_ref().map_or(self.level, |h| h.level)
    }

    pub fn reason(&self) -> Reason {
        self.hold.as_ref().map_or(self.reason, |h| h.reason)
    }

    pub fn hold(&self) -> Option<&Hold> {
        self.hold.as_ref()
    }

    /// Nothing to remember: at `ok`, no hold, no clock running.
    pub fn is_idle(&self) -> bool {
        self.level == Level::Ok && self.hold.is_none() && self.below_since.is_none()
    }

    /// One step up or down, checked against the table and against `dwell`.
    pub fn step(
        &mut self,
        by: Move,
        to: Level,
        reason: Reason,
        at: DateTime<Utc>,
        timing: Timing,
    ) -> Result<Transition, EnforcementError> {
        let from = self.level();
        let stepping = matches!(by, Move::StepUp | Move::StepDown);
        if !stepping || self.hold.is_some() || !Self::legal(from, to, by) {
            return Err(EnforcementError::IllegalTransition { from, to, by });
        }
        if let Some(until) = self.moved_at.map(|m| m + timing.dwell) {
            if at < until {
                return Err(EnforcementError::TooSoon { from, to, until });
            }
        }
        self.level = to;
        self.reason = reason;
        self.moved_at = Some(at);
        Ok(Transition {
            from,
            to,
            reason,
            by,
            at,
        })
    }

    /// Follows the highest health `target` at `now`: at most one step, when dwell (up)
    /// or calm and dwell (down) allow. Signals may not ask for people's levels.
    pub fn observe(
        &mut self,
        target: Target,
        now: DateTime<Utc>,
        timing: Timing,
    ) -> Result<Option<Transition>, EnforcementError> {
        if !target.level.is_ladder_level() {
            return Err(EnforcementError::IllegalTransition {
                from: self.level(),
                to: target.level,
                by: Move::StepUp,
            });
        }
        if self.hold.is_some() {
            self.below_since = None;
            return Ok(None);
        }
        if target.level >= self.level {
            self.below_since = None;
            let due = self.moved_at.is_none_or(|m| now >= m + timing.dwell);
            return match self.level.step_up() {
                Some(up) if target.level > self.level && due => self
                    .step(Move::StepUp, up, target.reason, now, timing)
                    .map(Some),
                _ => Ok(None),
            };
        }
        let since = *self.below_since.get_or_insert(now);
        let calm = now >= since + timing.calm;
        let due = self.moved_at.is_none_or(|m| now >= m + timing.dwell);
        let Some(down) = self.level.step_down().filter(|_| calm && due) else {
            return Ok(None);
        };
        // The signal that still holds the lower level is the reason; none means calm.
        let reason = if target.level == down && down != Level::Ok {
            target.reason
        } else {
            Reason::Calm
        };
        let moved = self.step(Move::StepDown, down, reason, now, timing)?;
        self.below_since = (target.level < down).then_some(now);
        Ok(Some(moved))
    }

    /// A person's move: `ok`..=`suspend` lifts any hold and sets the health level (the
    /// dwell and calm clocks restart at `at`); `terminated`/`killed` holds. `Ok(None)`
    /// when the ladder is already there.
    pub fn manual(
        &mut self,
        to: Level,
        reason: Reason,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Transition>, EnforcementError> {
        if !reason.is_manual() {
            return Err(EnforcementError::NotManualReason(reason));
        }
        let from = self.level();
        let by = if to.is_ladder_level() {
            Move::Manual
        } else {
            Move::Hold
        };
        if !Self::legal(from, to, by) {
            return Err(EnforcementError::IllegalTransition { from, to, by });
        }
        if from == to {
            return Ok(None);
        }
        if by == Move::Hold {
            self.hold = Some(Hold {
                level: to,
                reason,
                actor: actor.to_owned(),
                since: at,
            });
        } else {
            self.hold = None;
            self.level = to;
            self.reason = reason;
            self.moved_at = Some(at);
            self.below_since = None;
        }
        Ok(Some(Transition {
            from,
            to,
            reason,
            by,
            at,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000 + secs, 0).unwrap()
    }

    const TIMING: Timing = Timing {
        dwell: Duration::seconds(30),
        calm: Duration::seconds(300),
    };

    fn target(level: Level) -> Target {
        if level == Level::Ok {
            Target::CALM
        } else {
            Target::new(level, Reason::ErrorRate)
        }
    }

    fn moves(ladder: &mut Ladder, plan: &[(i64, Level)]) -> Vec<(i64, Level)> {
        let mut out = Vec::new();
        for &(s, l) in plan {
            if let Some(m) = ladder.observe(target(l), t(s), TIMING).unwrap() {
                out.push(((m.at - t(0)).num_seconds(), m.to));
            }
        }
        out
    }

    #[test]
    fn the_table_allows_single_steps_manual_and_holds_only() {
        use Level::*;
        assert!(Ladder::legal(Ok, Warn, Move::StepUp));
        assert!(!Ladder::legal(Ok, Throttle, Move::StepUp));
        assert!(!Ladder::legal(Suspend, Terminated, Move::StepUp));
        assert!(Ladder::legal(Suspend, Throttle, Move::StepDown));
        assert!(!Ladder::legal(Killed, Suspend, Move::StepDown));
        assert!(!Ladder::legal(Terminated, Suspend, Move::StepDown));
        assert!(Ladder::legal(Killed, Ok, Move::Manual));
        assert!(!Ladder::legal(Ok, Killed, Move::Manual));
        assert!(Ladder::legal(Ok, Terminated, Move::Hold));
        assert!(!Ladder::legal(Ok, Suspend, Move::Hold));
    }

    #[test]
    fn an_illegal_step_is_an_error_and_changes_nothing() {
        let mut l = Ladder::default();
        let before = l.clone();
        let err = l
            .step(
                Move::StepUp,
                Level::Throttle,
                Reason::ErrorRate,
                t(0),
                TIMING,
            )
            .unwrap_err();
        assert_eq!(
            err,
            EnforcementError::IllegalTransition {
                from: Level::Ok,
                to: Level::Throttle,
                by: Move::StepUp
            }
        );
        let err = l
            .step(Move::StepDown, Level::Ok, Reason::Calm, t(0), TIMING)
            .unwrap_err();
        assert!(matches!(err, EnforcementError::IllegalTransition { .. }));
        let err = l
            .step(Move::Manual, Level::Warn, Reason::Manual, t(0), TIMING)
            .unwrap_err();
        assert!(matches!(err, EnforcementError::IllegalTransition { .. }));
        assert_eq!(l, before);
    }

    #[test]
    fn a_step_within_dwell_is_too_soon() {
        let mut l = Ladder::default();
        l.step(Move::StepUp, Level::Warn, Reason::ErrorRate, t(0), TIMING)
            .unwrap();
        let err = l
            .step(
                Move::StepUp,
                Level::Throttle,
                Reason::ErrorRate,
                t(29),
                TIMING,
            )
            .unwrap_err();
        assert_eq!(
            err,
            EnforcementError::TooSoon {
                from: Level::Warn,
                to: Level::Throttle,
                until: t(30)
            }
        );
        assert!(err.is_retryable());
        l.step(
            Move::StepUp,
            Level::Throttle,
            Reason::ErrorRate,
            t(30),
            TIMING,
        )
        .unwrap();
        assert_eq!(l.level(), Level::Throttle);
    }

    #[test]
    fn climbs_one_step_per_dwell_and_calms_one_step_per_calm() {
        let mut l = Ladder::default();
        let plan: Vec<(i64, Level)> = (0..=70)
            .map(|s| (s, Level::Suspend))
            .chain((71..=1_000).step_by(10).map(|s| (s, Level::Ok)))
            .collect();
        assert_eq!(
            moves(&mut l, &plan),
            [
                (0, Level::Warn),
                (30, Level::Throttle),
                (60, Level::Suspend),
                (371, Level::Throttle),
                (671, Level::Warn),
                (971, Level::Ok),
            ]
        );
    }

    #[test]
    fn a_re_rise_resets_the_calm_clock() {
        let mut l = Ladder::default();
        moves(&mut l, &[(0, Level::Warn)]);
        // Below for 290 s, back at warn for one observation, below again: no step down
        // until a whole calm has passed after the re-rise.
        let out = moves(
            &mut l,
            &[
                (10, Level::Ok),
                (300, Level::Ok),
                (301, Level::Warn),
                (302, Level::Ok),
                (601, Level::Ok),
                (602, Level::Ok),
            ],
        );
        assert_eq!(out, [(602, Level::Ok)]);
        assert_eq!(l.reason(), Reason::Calm);
    }

    #[test]
    fn steps_down_while_a_lower_signal_is_active_and_takes_its_reason() {
        let mut l = Ladder::default();
        moves(&mut l, &[(0, Level::Throttle), (30, Level::Throttle)]);
        assert_eq!(l.level(), Level::Throttle);
        let auth = Target::new(Level::Warn, Reason::AuthFailureSpike);
        assert_eq!(l.observe(auth, t(40), TIMING).unwrap(), None);
        let m = l.observe(auth, t(340), TIMING).unwrap().unwrap();
        assert_eq!(
            (m.from, m.to, m.reason),
            (Level::Throttle, Level::Warn, Reason::AuthFailureSpike)
        );
        // The lower signal still holds warn: no further step.
        assert_eq!(l.observe(auth, t(2_000), TIMING).unwrap(), None);
        assert_eq!(l.level(), Level::Warn);
    }

    #[test]
    fn signals_never_set_or_lower_people_levels() {
        let mut l = Ladder::default();
        let err = l
            .observe(Target::new(Level::Killed, Reason::ErrorRate), t(0), TIMING)
            .unwrap_err();
        assert!(matches!(err, EnforcementError::IllegalTransition { .. }));
        l.manual(Level::Terminated, Reason::Manual, "alice", t(0))
            .unwrap()
            .unwrap();
        for s in (0..100_000).step_by(100) {
            assert_eq!(l.observe(Target::CALM, t(s), TIMING).unwrap(), None);
            assert_eq!(
                l.observe(target(Level::Suspend), t(s), TIMING).unwrap(),
                None
            );
        }
        assert_eq!(l.level(), Level::Terminated);
        assert_eq!(l.hold().unwrap().actor, "alice");
        let err = l
            .step(
                Move::StepDown,
                Level::Suspend,
                Reason::Calm,
                t(200_000),
                TIMING,
            )
            .unwrap_err();
        assert!(matches!(err, EnforcementError::IllegalTransition { .. }));
    }

    #[test]
    fn a_person_lifts_a_hold_and_the_ladder_resumes_from_there() {
        let mut l = Ladder::default();
        l.manual(Level::Killed, Reason::KillSwitch, "sec", t(0))
            .unwrap();
        assert_eq!(
            l.manual(Level::Killed, Reason::KillSwitch, "sec", t(1)),
            Ok(None)
        );
        assert_eq!(
            l.manual(Level::Ok, Reason::ErrorRate, "sec", t(2)),
            Err(EnforcementError::NotManualReason(Reason::ErrorRate))
        );
        let m = l
            .manual(Level::Throttle, Reason::Manual, "ttl", t(10))
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.from, m.to, m.by),
            (Level::Killed, Level::Throttle, Move::Manual)
        );
        assert!(l.hold().is_none());
        // Dwell restarts at the manual move; calm then lowers it one step.
        assert_eq!(l.observe(Target::CALM, t(20), TIMING).unwrap(), None);
        let m = l.observe(Target::CALM, t(320), TIMING).unwrap().unwrap();
        assert_eq!((m.from, m.to), (Level::Throttle, Level::Warn));
    }
}
