//! Kill switches (CONTRACT §3, §6): set by security at global, partner, integration or
//! tenant scope, effective at once (written straight to the data plane, bypassing the
//! ladder), optional TTL, listed and lifted through the API, kept in the store so they
//! survive restarts. Fail closed: a switch whose audit record cannot be written is not
//! executed (503).

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;

use super::audit::record;
use super::error::ApiError;
use super::guard::{authorize, uuid_like, Need};
use super::ApiState;
use crate::config::Role;
use crate::domain::audit::AuditEntry;
use crate::metrics::{METRICS, SCOPES};
use crate::publish::DecisionPublisher;
use crate::store::decisions::{DecisionWrite, KillSwitch};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSwitch {
    scope: String,
    target: String,
    reason: String,
    ttl_seconds: Option<u64>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub async fn create(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(
        &req,
        &state,
        Need::AnyOf(&[Role::Security]),
        "kill_switch.create",
    )
    .await?;
    // Parsed only after authorization: a refused caller learns nothing from the body.
    let body: NewSwitch = super::error::parse_json(&body)?;
    if !SCOPES.contains(&body.scope.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "scope must be one of {SCOPES:?}"
        )));
    }
    if body.target.is_empty() || body.target.len() > 128 || body.reason.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "target (1-128 chars) and reason are required".into(),
        ));
    }
    let now = Utc::now();
    let id = format!("ks-{}", &uuid_like()[..16]);
    let expires_at = body
        .ttl_seconds
        .map(|s| now + chrono::Duration::seconds(s.min(10 * 365 * 86_400) as i64));
    // Audit first: no record, no kill. The level it replaces is read meanwhile (one round
    // trip less before the switch reaches the data plane).
    let (audited, previous) = futures::join!(
        record(
            &state,
            AuditEntry {
                ref_id: format!("kill:{id}"),
                at: now,
                actor: who.name.clone(),
                action: "kill_switch.create".into(),
                target: format!("{}:{}", body.scope, body.target),
                detail: json!({ "id": id, "reason": body.reason, "ttl_seconds": body.ttl_seconds }),
            },
        ),
        current_level(&state, &body.scope, &body.target)
    );
    audited?;
    let write = switch_write(
        &format!("ks:{id}:set"),
        &body.scope,
        &body.target,
        "killed",
        &previous,
        now,
    );
    let seq = publish(&state.publisher, write).await?;
    let switch = KillSwitch {
        id: id.clone(),
        scope: body.scope,
        target: body.target,
        reason: body.reason,
        actor: who.name,
        created_at: rfc3339(now),
        expires_at: expires_at.map(rfc3339),
        seq,
    };
    let store = state.publisher.store().clone();
    let s = switch.clone();
    state
        .store_call(async move { store.put_switch(&s).await })
        .await?;
    refresh_gauges(&state.publisher).await;
    Ok(HttpResponse::Created().json(switch))
}

pub async fn list(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Need::Read, "kill_switch.list").await?;
    let store = state.publisher.store().clone();
    let switches = state
        .store_call(async move { store.switches().await })
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "kill_switches": switches })))
}

pub async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(
        &req,
        &state,
        Need::AnyOf(&[Role::Security]),
        "kill_switch.lift",
    )
    .await?;
    let id = path.into_inner();
    let store = state.publisher.store().clone();
    let switches = state
        .store_call(async move { store.switches().await })
        .await?;
    let switch = switches
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("kill switch {id}")))?;
    lift(&state.publisher, &state, &switch, &who.name).await?;
    Ok(HttpResponse::Ok().json(json!({ "lifted": switch.id })))
}

/// Lifts `switch` (API or TTL): audited once (the ref is the same for both paths, so a
/// TTL expiry racing a DELETE is recorded once), compare-and-delete on its seq, an `ok`
/// decision on the topic, removed from the registry.
pub async fn lift(
    publisher: &DecisionPublisher,
    state: &ApiState,
    switch: &KillSwitch,
    actor: &str,
) -> Result<(), ApiError> {
    let entry = AuditEntry {
        ref_id: format!("unkill:{}", switch.id),
        at: Utc::now(),
        actor: actor.to_owned(),
        action: "kill_switch.lift".into(),
        target: format!("{}:{}", switch.scope, switch.target),
        detail: json!({ "id": switch.id }),
    };
    let recorded = record(state, entry).await?;
    let store = publisher.store().clone();
    let (scope, target, seq) = (switch.scope.clone(), switch.target.clone(), switch.seq);
    let deleted = state
        .store_call(async move { store.lift_if_seq(&scope, &target, seq).await })
        .await?;
    if deleted && recorded.is_some() {
        let outbox_id = format!("ks:{}:lift", switch.id);
        let write = switch_write(
            &outbox_id,
            &switch.scope,
            &switch.target,
            "ok",
            "killed",
            Utc::now(),
        );
        publish(publisher, write).await?;
    }
    let store = publisher.store().clone();
    let id = switch.id.clone();
    state
        .store_call(async move { store.remove_switch(&id).await })
        .await?;
    refresh_gauges(publisher).await;
    Ok(())
}

async fn publish(publisher: &DecisionPublisher, write: DecisionWrite) -> Result<u64, ApiError> {
    let p = publisher.clone();
    let w = write.clone();
    // The data-plane write and the topic record, on the I/O runtime.
    let (published, seq) = p.publish_one(&w).await;
    if !published {
        return Err(ApiError::StoreUnavailable("decision not published".into()));
    }
    Ok(seq)
}

async fn current_level(state: &ApiState, scope: &str, target: &str) -> String {
    let store = state.publisher.store().clone();
    let (scope, target) = (scope.to_owned(), target.to_owned());
    state
        .store_call(async move { store.read(&scope, &target).await })
        .await
        .ok()
        .flatten()
        .and_then(|m| m.get("level").cloned())
        .unwrap_or_else(|| "ok".into())
}

/// The data-plane write of a kill switch being set (`killed`) or lifted (`ok`): a
/// person's decision, so it may replace a held level.
fn switch_write(
    outbox_id: &str,
    scope: &str,
    target: &str,
    level: &str,
    previous: &str,
    at: DateTime<Utc>,
) -> DecisionWrite {
    DecisionWrite {
        outbox_id: outbox_id.to_owned(),
        scope: scope.to_owned(),
        id: target.to_owned(),
        level: level.to_owned(),
        reason: "kill_switch".into(),
        rate_limit_rps: None,
        since: rfc3339(at),
        partner_id: partner_of(scope, target),
        previous: previous.to_owned(),
        by_person: true,
    }
}

fn partner_of(scope: &str, target: &str) -> String {
    if scope == "partner" {
        target.to_owned()
    } else {
        String::new()
    }
}

/// Sets `warden_kill_switches_active{scope}` from the registry (shared by all instances).
pub async fn refresh_gauges(publisher: &DecisionPublisher) {
    if let Ok(switches) = publisher.store().switches().await {
        for scope in SCOPES {
            let n = switches.iter().filter(|s| s.scope == scope).count();
            METRICS
                .kill_switches_active
                .with_label_values(&[scope])
                .set(n as i64);
        }
    }
}

/// Lifts expired switches every second (wall clock), on whichever instance sees them
/// first; the audit ref makes a race between instances harmless.
pub async fn expire_loop(state: ApiState) {
    loop {
        actix_rt::time::sleep(Duration::from_secs(1)).await;
        let publisher = state.publisher.clone();
        let store = publisher.store().clone();
        let Ok(Ok(switches)) = state.io.spawn(async move { store.switches().await }).await else {
            continue;
        };
        let now = Utc::now();
        for s in switches {
            let expired = s
                .expires_at
                .as_deref()
                .and_then(|e| DateTime::parse_from_rfc3339(e).ok())
                .is_some_and(|e| e.with_timezone(&Utc) <= now);
            if expired {
                if let Err(e) = lift(&publisher, &state, &s, "ttl").await {
                    tracing::warn!(id = %s.id, error = %e, "kill switch TTL lift failed; will retry");
                }
            }
        }
        refresh_gauges(&publisher).await;
    }
}
