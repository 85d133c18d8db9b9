//! The output of enforcement: a [`Decision`] per change of level, returned as data. The
//! actor writes it to the outbox with the state that produced it; publish/ turns it into
//! the Redis hash, the `warden:enf` message and the `warden.enforcement.v1` record
//! (which add `seq` and `decision_id`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::level::{Level, Reason, Scope};

/// One change of level of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub scope: Scope,
    /// The partner, integration or tenant id, by `scope`.
    pub id: String,
    pub partner_id: String,
    pub level: Level,
    pub previous: Level,
    pub reason: Reason,
    /// Set on `throttle`: the quota's `burst_rps` × the throttle factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_rps: Option<u64>,
    #[serde(with = "crate::domain::stamp")]
    pub at: DateTime<Utc>,
}

/// The level a target is at now (for the API and the `warden_partners{level}` gauge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelView {
    pub scope: Scope,
    pub id: String,
    pub level: Level,
    pub reason: Reason,
    /// When the level was decided; `None` for a target that was never decided (`ok`).
    pub since: Option<DateTime<Utc>>,
}
