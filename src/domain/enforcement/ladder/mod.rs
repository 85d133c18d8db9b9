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

use super::duration::later;
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
    #[serde(with = "crate::domain::stamp")]
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::domain::stamp::opt"
    )]
    moved_at: Option<DateTime<Utc>>,
    /// Since when the highest target has stayed below `level` (the calm clock).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::domain::stamp::opt"
    )]
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

    /// When the ladder last moved: the next step waits for `dwell` after it.
    pub fn moved_at(&self) -> Option<DateTime<Utc>> {
        self.moved_at
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
        if let Some(until) = self.moved_at.map(|m| later(m, timing.dwell)) {
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
            let due = self.moved_at.is_none_or(|m| now >= later(m, timing.dwell));
            return match self.level.step_up() {
                Some(up) if target.level > self.level && due => self
                    .step(Move::StepUp, up, target.reason, now, timing)
                    .map(Some),
                _ => Ok(None),
            };
        }
        let since = *self.below_since.get_or_insert(now);
        let calm = now >= later(since, timing.calm);
        let due = self.moved_at.is_none_or(|m| now >= later(m, timing.dwell));
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
mod tests;
