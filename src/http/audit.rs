//! The audit log over HTTP: GET /v1/audit (security), and `record`, the one way handlers
//! append (to the store's chain, then to `warden.audit.v1`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use super::guard::{authorize, Need};
use super::ApiState;
use crate::config::Role;
use crate::domain::audit::{AuditEntry, AuditRecord};

/// Appends `entry` to the chain and publishes the sealed record. `Err` means the record
/// is not durable: callers that must fail closed (kill switches) stop there.
pub async fn record(state: &ApiState, entry: AuditEntry) -> Result<Option<AuditRecord>, ApiError> {
    let sink = state.publisher.audit().clone();
    state
        .io
        .spawn(async move { sink.record(entry).await })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::StoreUnavailable(format!("audit log: {e}")))
}

/// Records that an action audited before it ran did not take effect, for a reason known
/// for certain (a compare-and-set refused it, say): `<ref>:aborted`, action
/// `<action>.aborted`, with the answer given. Best effort, as the refusal's own audit: the
/// caller's answer does not wait on it. Not for a store call that failed or timed out,
/// whose write may have landed.
pub async fn aborted(state: &ApiState, first: &AuditEntry, error: &ApiError) {
    let detail = serde_json::json!({
        "status": actix_web::ResponseError::status_code(error).as_u16(),
        "reason": error.to_string(),
    });
    follow_up(state, first, "aborted", &first.actor, detail).await;
}

/// Records what became of an action audited before it ran: `<ref>:<outcome>`, action
/// `<action>.<outcome>`, by `actor`, on the same target. Best effort: a failure is
/// logged, not answered (the action's own record stands, and the action happened).
pub async fn follow_up(
    state: &ApiState,
    first: &AuditEntry,
    outcome: &str,
    actor: &str,
    detail: serde_json::Value,
) {
    let entry = AuditEntry {
        ref_id: format!("{}:{outcome}", first.ref_id),
        at: chrono::Utc::now(),
        actor: actor.to_owned(),
        action: format!("{}.{outcome}", first.action),
        target: first.target.clone(),
        detail,
    };
    if let Err(e) = record(state, entry).await {
        tracing::warn!(error = %e, audit_ref = %first.ref_id, outcome, "follow-up of an audited action not audited");
    }
}

#[derive(Debug, Deserialize)]
pub struct AfterQuery {
    #[serde(default)]
    after_seq: u64,
    limit: Option<usize>,
}

pub async fn list(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Need::AnyOf(&[Role::Security]), "audit.read").await?;
    let q: AfterQuery = super::error::parse_query(&req)?;
    let log = state.publisher.audit().log.clone();
    let (after, limit) = (q.after_seq, q.limit.unwrap_or(1_000).min(10_000));
    let records = state
        .store_call(async move { log.after(after, limit).await })
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "records": records })))
}
