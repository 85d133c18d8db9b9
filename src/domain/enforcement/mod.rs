//! Enforcement of one partner (CONTRACT §3): signals propose levels, the ladder moves,
//! decisions come out as data.
//!
//! Pure: no I/O and no clock of its own. The actor owns one [`EnforcementState`] per
//! partner, calls `on_usage` / `on_chargeback` / `on_quota` / `on_tenant` for every applied
//! fact and `tick` as time passes, and writes the returned [`Decision`]s to the outbox with
//! the state. `manual` is the people's door (admin API, kill switches).
//!
//! Layout, one concept per file:
//! - `level`: the closed vocabularies (`Level`, `Scope`, `Reason`);
//! - `ladder`: the one state machine of legal moves (dwell, calm, holds);
//! - `window`, `anomaly`, `health`: the health signals over event-time windows;
//! - `quota`: monthly quotas and bursts; `pilot`: tenants;
//! - `subject`, `metered`: one decided target and its level in force;
//! - `state`: the partner's whole enforcement state; `policy`: its configuration;
//! - `decision`, `error`, `duration`: outputs, errors, saturating time arithmetic;
//! - `scenarios` (tests only): the acceptance scenarios and the ladder property.

mod anomaly;
mod decision;
pub(crate) mod duration;
mod error;
mod health;
mod ladder;
mod level;
mod metered;
mod pilot;
mod policy;
mod quota;
mod state;
mod subject;
mod window;

#[cfg(test)]
mod scenarios;

pub use decision::{Decision, LevelView};
pub use error::EnforcementError;
pub use health::Target;
pub use ladder::{Hold, Ladder, Move, Timing, Transition};
pub use level::{Level, Reason, Scope};
pub use pilot::{TenantFact, MAX_TRACKED_TENANTS};
pub use policy::{EnforcementPolicy, TierPolicy, DEFAULT_TIER};
pub use quota::{monthly_target, throttle_rps, Meter, Month, QuotaSpec, QuotaView};
pub use state::{
    Capacity, EnforcementState, ManualOrder, DUE_NOW, INTEGRATION_IDLE, MAX_TRACKED_INTEGRATIONS,
};
