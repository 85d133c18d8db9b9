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
use super::refusals::Admission;
use super::ApiState;
use crate::config::Role;
use crate::domain::audit::{AuditEntry, ACTOR_ANONYMOUS, ACTOR_WARDEN};
use crate::metrics::METRICS;

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
            refused(state, ACTOR_ANONYMOUS, action, req, 401).await;
            return Err(e);
        }
    };
    // The role first: a wrong-role attempt is a 403 and audited (CONTRACT §6), however
    // fast it comes; past its source's rate it goes into a summary (`refused`), never
    // answered 429 unseen.
    let allowed = match need {
        Need::Read => principal.may_read(),
        Need::AnyOf(roles) => roles.iter().any(|r| principal.has(*r)),
    };
    if !allowed {
        refused(state, &principal.name, action, req, 403).await;
        return Err(ApiError::Forbidden("this action"));
    }
    if !state.rate_limit.check(&principal.name) {
        // Held on a timer (no worker waits): a client retrying in a tight loop slows down.
        actix_rt::time::sleep(state.rate_limit.delay).await;
        return Err(ApiError::TooManyRequests);
    }
    Ok(principal)
}

/// Audits a refused attempt (also used by handlers whose refusal depends on the target)
/// on its own while its source is within its rate, else in the source's next summary (see
/// [`super::refusals`]). The source of a caller with a valid token (a 403) is the token,
/// whatever its peer, and its summary names the token and each action; that of a caller
/// without one (`anonymous`, a 401) is its peer address. The path is cut to 256 bytes: the
/// caller chose it.
pub async fn refused(state: &ApiState, actor: &str, action: &str, req: &HttpRequest, status: u16) {
    let peer = req.peer_addr().map(|a| a.ip());
    let admission = match actor {
        ACTOR_ANONYMOUS => state.refusals.admit(peer),
        token => state.refusals.admit_token(token, action),
    };
    if admission == Admission::Summarized {
        METRICS.admin_refusals_summarized.inc();
        return;
    }
    let entry = AuditEntry {
        ref_id: format!("refused:{}", uuid_like()),
        at: Utc::now(),
        actor: actor.to_owned(),
        action: format!("{action}.refused"),
        target: cut(req.path(), 256).to_owned(),
        detail: json!({ "status": status, "peer": peer.map(|ip| ip.to_string()) }),
    };
    if let Err(e) = super::audit::record(state, entry).await {
        tracing::warn!(error = %e, "refused request not audited");
    }
}

/// Writes the refusals summarized since the last round, one record per peer, every
/// minute, on every instance (each summarizes what it refused).
pub async fn refusal_summary_loop(state: ApiState) {
    loop {
        actix_rt::time::sleep(SUMMARY_ROUND).await;
        write_refusal_summaries(&state).await;
    }
}

/// How often refusal summaries are written (and so the most time one covers).
const SUMMARY_ROUND: std::time::Duration = std::time::Duration::from_secs(60);

/// One summary record per peer for what [`refused`] counted instead of auditing, for the
/// busiest peers of the round, and one for all the others together (see
/// [`super::refusals::RefusalAudit::take`]): a round writes a bounded number of records
/// however many addresses the refusals came from.
pub async fn write_refusal_summaries(state: &ApiState) {
    for summary in state.refusals.take() {
        let mut detail = json!({ "refused": summary.refused });
        if summary.peers > 1 {
            detail["peers"] = json!(summary.peers);
        }
        // The daemon writes the summary; the refused requests' own actors (anonymous or a
        // token's name) are in the records audited one by one.
        let target = format!("peer:{}", summary.peer);
        let entry = summary_entry(ACTOR_WARDEN.into(), target, detail);
        if let Err(e) = super::audit::record(state, entry).await {
            tracing::warn!(error = %e, peer = %summary.peer, count = summary.refused, "refusal summary not audited; kept for the next");
            state.refusals.give_back(summary);
        }
    }
    for (token, actions) in state.refusals.take_tokens() {
        let refused: u64 = actions.values().sum();
        // The token's holder tried these: the summary is theirs.
        let detail = json!({ "refused": refused, "actions": actions });
        let entry = summary_entry(token.clone(), format!("token:{token}"), detail);
        if let Err(e) = super::audit::record(state, entry).await {
            tracing::warn!(error = %e, %token, count = refused, "refusal summary not audited; kept for the next");
            state.refusals.give_back_token((token, actions));
        }
    }
}

/// A summary record of one round's refusals (`detail` gains the round's length).
fn summary_entry(actor: String, target: String, mut detail: serde_json::Value) -> AuditEntry {
    detail["within_seconds"] = json!(SUMMARY_ROUND.as_secs());
    AuditEntry {
        ref_id: format!("refused:summary:{}", uuid_like()),
        at: Utc::now(),
        actor,
        action: "admin.refused.summary".into(),
        target,
        detail,
    }
}

/// The longest prefix of `s` within `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An id as the contract has them (CONTRACT §2: 1–128 characters, as the decoder takes
/// them from events), so the API can name every partner an event can, and nothing longer.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= 128
}

/// A random id for records that have no natural one.
pub fn uuid_like() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
