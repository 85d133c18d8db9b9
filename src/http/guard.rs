//! Who may do what (CONTRACT §6), in one place: authentication, the role check, the
//! per-token rate limit, and the audit record of every refused attempt. A refusal has no
//! side effect other than its audit record.

use std::num::NonZeroU32;

use actix_web::HttpRequest;
use chrono::Utc;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;

use super::auth::Principal;
use super::error::ApiError;
use super::ApiState;
use crate::config::Role;
use crate::domain::audit::AuditEntry;

/// Requests per second and burst, per token.
pub struct ApiRateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    /// How long a refusal is held before it is answered (`admin.rate_limit_delay`).
    pub delay: std::time::Duration,
}

impl ApiRateLimit {
    pub fn new(per_second: u32, burst: u32, delay: std::time::Duration) -> Self {
        let quota =
            Quota::per_second(NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN));
        ApiRateLimit {
            limiter: RateLimiter::keyed(quota),
            delay,
        }
    }

    pub fn check(&self, token_name: &str) -> bool {
        self.limiter.check_key(&token_name.to_owned()).is_ok()
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Any authenticated role.
    Read,
    /// At least one of these roles.
    AnyOf(&'static [Role]),
}

/// Authenticates and authorizes `req` for `action`; a refusal is audited (best effort:
/// a refusal must not become a success because the audit store is down).
pub async fn authorize(
    req: &HttpRequest,
    state: &ApiState,
    need: Need,
    action: &str,
) -> Result<Principal, ApiError> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let principal = match state.auth.authenticate(header, Utc::now()) {
        Ok(p) => p,
        Err(e) => {
            refused(state, "anonymous", action, req.path(), 401).await;
            return Err(e);
        }
    };
    if !state.rate_limit.check(&principal.name) {
        // Held on a timer (no worker waits): a client retrying in a tight loop slows down.
        actix_rt::time::sleep(state.rate_limit.delay).await;
        return Err(ApiError::TooManyRequests);
    }
    let allowed = match need {
        Need::Read => principal.may_read(),
        Need::AnyOf(roles) => roles.iter().any(|r| principal.has(*r)),
    };
    if !allowed {
        refused(state, &principal.name, action, req.path(), 403).await;
        return Err(ApiError::Forbidden("this action"));
    }
    Ok(principal)
}

/// Audits a refused attempt (also used by handlers whose refusal depends on the target).
pub async fn refused(state: &ApiState, actor: &str, action: &str, path: &str, status: u16) {
    let entry = AuditEntry {
        ref_id: format!("refused:{}", uuid_like()),
        at: Utc::now(),
        actor: actor.to_owned(),
        action: format!("{action}.refused"),
        target: path.to_owned(),
        detail: json!({ "status": status }),
    };
    if let Err(e) = super::audit::record(state, entry).await {
        tracing::warn!(error = %e, "refused request not audited");
    }
}

/// A random id for records that have no natural one.
pub fn uuid_like() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
