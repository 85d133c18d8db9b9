//! What can go wrong when enforcement is asked to do something, and whether asking again
//! later can help.

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::ladder::Move;
use super::level::{Level, Reason, Scope};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnforcementError {
    /// The move is not in the ladder's table of legal transitions.
    #[error("illegal transition {} → {} by {by:?}", from.as_str(), to.as_str())]
    IllegalTransition { from: Level, to: Level, by: Move },
    /// A legal step asked for before `dwell` has passed since the last move.
    #[error("{} → {} is not allowed before {until}", from.as_str(), to.as_str())]
    TooSoon {
        from: Level,
        to: Level,
        until: DateTime<Utc>,
    },
    /// People give `manual` or `kill_switch` as their reason, never a signal's.
    #[error("`{}` is a signal's reason, not a person's", .0.as_str())]
    NotManualReason(Reason),
    /// A partner's state decides for its own partner, integrations and tenants only.
    #[error("scope `{}` is not decided by a partner's state", .0.as_str())]
    UnsupportedScope(Scope),
    #[error("{} `{id}` is not this partner's", scope.as_str())]
    UnknownTarget { scope: Scope, id: String },
    /// The bound on tracked integrations or tenants is reached (see `Capacity`).
    #[error("this partner already tracks {cap} {}s", scope.as_str())]
    AtCapacity { scope: Scope, cap: usize },
}

impl EnforcementError {
    /// Whether the same request can succeed later without anything else changing.
    pub fn is_retryable(&self) -> bool {
        matches!(self, EnforcementError::TooSoon { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_too_soon_is_retryable_and_messages_name_the_levels() {
        let illegal = EnforcementError::IllegalTransition {
            from: Level::Ok,
            to: Level::Suspend,
            by: Move::StepUp,
        };
        assert!(!illegal.is_retryable());
        assert_eq!(
            illegal.to_string(),
            "illegal transition ok → suspend by StepUp"
        );
        let soon = EnforcementError::TooSoon {
            from: Level::Warn,
            to: Level::Throttle,
            until: DateTime::from_timestamp(0, 0).unwrap(),
        };
        assert!(soon.is_retryable());
        assert!(!EnforcementError::NotManualReason(Reason::ErrorRate).is_retryable());
        assert_eq!(
            EnforcementError::UnsupportedScope(Scope::Global).to_string(),
            "scope `global` is not decided by a partner's state"
        );
    }
}
