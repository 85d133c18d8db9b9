//! POST /v1/partners/{id}/enforcement: a person sets a partner's level (CONTRACT §6).
//! Operators and security may set warn/throttle/suspend/ok; only security sets or lifts
//! `terminated`; `killed` belongs to kill switches. Audited before it takes effect; kept
//! among the pending records until its enforcement-topic record is acknowledged.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;

use super::audit::{aborted, record};
use super::error::ApiError;
use super::guard::{authorize, uuid_like, Need};
use super::topic_records::{forget_pending, send_record, RECORD_WAIT};
use super::ApiState;
use crate::config::Role;
use crate::domain::audit::AuditEntry;
use crate::domain::enforcement::{throttle_rps, Level, DEFAULT_TIER};
use crate::publish::count_transition;
use crate::store::decisions::DecisionWrite;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualLevel {
    level: String,
    reason: String,
}

pub async fn set_level(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(
        &req,
        &state,
        Need::AnyOf(&[Role::Operator, Role::Security]),
        "enforcement.set",
    )
    .await?;
    let partner = path.into_inner();
    if !super::guard::valid_id(&partner) {
        return Err(ApiError::BadRequest(
            "a partner id is 1-128 characters".into(),
        ));
    }
    let body: ManualLevel = super::error::parse_json(&body)?;
    if !["ok", "warn", "throttle", "suspend", "terminated"].contains(&body.level.as_str()) {
        return Err(ApiError::BadRequest(
            "level must be ok, warn, throttle, suspend or terminated".into(),
        ));
    }
    if body.reason.trim().is_empty() {
        return Err(ApiError::BadRequest("reason is required".into()));
    }
    let store = state.publisher.store().clone();
    let p = partner.clone();
    // The level and seq this person's decision replaces: the write is refused if another
    // decision (a kill switch, say) lands in between.
    // No key means `ok`, seq 0.
    let plane = state
        .store_call(async move { store.read("partner", &p).await })
        .await?
        .unwrap_or_default();
    let current = plane.get("level").cloned().unwrap_or_else(|| "ok".into());
    let current_seq = match plane.get("seq") {
        None if plane.is_empty() => 0,
        seq => seq.and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| {
            ApiError::Internal(format!(
                "the data-plane key of partner {partner} has no readable seq"
            ))
        })?,
    };
    let touches_termination = body.level == "terminated" || current == "terminated";
    if touches_termination && !who.has(Role::Security) {
        super::guard::refused(&state, &who.name, "enforcement.set", &req, 403).await;
        return Err(ApiError::Forbidden(
            "setting or lifting terminated (security only)",
        ));
    }
    if current == "killed" {
        return Err(ApiError::Conflict(
            "a kill switch holds this partner; lift it through /v1/kill-switches".into(),
        ));
    }
    // The partner as its owner keeps it (live or durable), under its tier at its event
    // time: what holds it, and the rate of a throttle.
    let known = match super::statements::current_state_and_tier(&state, &partner).await {
        Ok(known) => Some(known),
        Err(ApiError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let asked = serde_json::from_value::<Level>(json!(body.level)).ok();
    let held = known
        .as_ref()
        .map(|(p, tier)| p.immediate_level(tier, &state.policy))
        .filter(|held| asked.is_some_and(|asked| asked < held.level));
    if let Some(held) = held {
        // Its owner believes the level in force and would not decide it again: a lower
        // level written here would let the partner through until the quota month ends.
        return Err(ApiError::Conflict(format!(
            "partner {partner} is held at {} by {}, which lifts when its cause does (a \
             quota fact raising the limit, a new month, credits)",
            held.level.as_str(),
            held.reason.as_str()
        )));
    }
    // A throttle's rate as the owner would set it (CONTRACT §4): the quota's `burst_rps`
    // (a quota fact's, else the tier's; the default tier's for a partner warden knows
    // nothing of) × the throttle factor.
    let rate_limit_rps = if body.level == "throttle" {
        let burst_rps = known.as_ref().map_or_else(
            || state.policy.tier(DEFAULT_TIER).burst_rps,
            |(p, tier)| p.quota(tier, &state.policy).burst_rps,
        );
        throttle_rps(burst_rps, state.policy.throttle_factor)
    } else {
        None
    };
    let now = Utc::now();
    let outbox_id = format!("manual:{}", uuid_like());
    let audited = AuditEntry {
        ref_id: outbox_id.clone(),
        at: now,
        actor: who.name.clone(),
        action: "enforcement.set".into(),
        target: format!("partner:{partner}"),
        detail: json!({ "from": current, "to": body.level, "reason": body.reason }),
    };
    record(&state, audited.clone()).await?;
    let write = DecisionWrite {
        outbox_id,
        scope: "partner".into(),
        id: partner.clone(),
        level: body.level.clone(),
        reason: "manual".into(),
        rate_limit_rps,
        since: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        partner_id: partner.clone(),
        previous: current.clone(),
        by_person: true,
    };
    // In force and kept among the pending records in one write: its record is sent here
    // if the broker answers in time, else by the loop, on any instance, after a restart.
    let store = state.publisher.store().clone();
    let w = write.clone();
    let published = state
        .store_call(async move { store.publish_pending(&w, current_seq).await })
        .await?;
    let not_applied = if published.seq == 0 {
        Some(ApiError::Conflict(format!(
            "partner {partner}'s level changed while this request was made (it was {current}); \
             read it and try again"
        )))
    } else if !published.applied {
        // A fresh outbox id always applies; if it ever did not, nothing was kept.
        Some(ApiError::StoreUnavailable(
            "the level was not applied".into(),
        ))
    } else {
        None
    };
    if let Some(error) = not_applied {
        aborted(&state, &audited, &error).await;
        return Err(error);
    }
    count_transition(&write, &published);
    let records = &state.manual_records;
    let outbox_id = write.outbox_id.clone();
    let on_topic = send_record(records, &state, write, published.seq, RECORD_WAIT).await;
    if on_topic {
        forget_pending(&state, outbox_id).await;
    }
    Ok(HttpResponse::Ok().json(json!({
        "partner_id": partner,
        "level": body.level,
        "seq": published.seq,
        "topic_record": if on_topic { "acknowledged" } else { "pending" },
    })))
}
