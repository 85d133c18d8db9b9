//! Statements and months (CONTRACT §6, seed: monthly snapshot → pending → approved → paid).
//!
//! - GET `/v1/partners/{id}/statement?month=YYYY-MM` (viewer): the month's lines and
//!   totals, as JSON or, with `Accept: text/csv`, as CSV.
//! - POST `/v1/months/{month}/close` (finance): writes the `month_close` control fact;
//!   every owner freezes its partners' statements for that month as `pending`.
//! - POST `/v1/partners/{id}/statement/{month}/approve` and `…/paid` (finance): move a
//!   frozen statement's payout status, one compare-and-set each, audited before it happens.
//!
//! The lines of a frozen month live in the owner's snapshot and never change; the payout
//! status lives in the payout store, so any instance can move it.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use rdkafka::producer::FutureRecord;
use serde::Deserialize;
use serde_json::json;

use super::audit::record;
use super::error::{parse_json, ApiError};
use super::guard::{authorize, uuid_like, Need};
use super::ApiState;
use crate::actors::messages::GetState;
use crate::config::Role;
use crate::domain::audit::AuditEntry;
use crate::domain::money::{Month, Statement, StatementStatus};
use crate::domain::partner::PartnerState;
use crate::kafka::topics::partition_for_key;
use crate::store::statements::{Move, Payout, PayoutStatus};

const FINANCE: Need = Need::AnyOf(&[Role::Finance]);

#[derive(Debug, Deserialize)]
pub struct MonthQuery {
    month: Option<String>,
}

fn parse_month(raw: &str) -> Result<Month, ApiError> {
    raw.parse::<Month>()
        .map_err(|_| ApiError::BadRequest(format!("month must be YYYY-MM, got `{raw}`")))
}

/// The partner's state as of now: the live actor's, else the durable snapshot (another
/// instance may own it), with the control facts it has not applied yet applied to the
/// copy (a month closed while the partner was passivated reads as frozen).
pub(super) async fn current_state(state: &ApiState, id: &str) -> Result<PartnerState, ApiError> {
    let live = match state.registry.get(id) {
        Some(addr) => addr.send(GetState).await.ok(),
        None => None,
    };
    let mut partner = match live {
        Some(s) => s,
        None => {
            let p = partition_for_key(id.as_bytes(), state.partitions);
            let store = state.store.clone();
            let key = id.to_owned();
            let bytes = state
                .store_call(async move { store.load_partner(p, &key).await })
                .await?;
            match bytes {
                Some(b) => crate::store::snapshot::decode(&b)
                    .map_err(|e| ApiError::Internal(format!("stored state unreadable: {e}")))?,
                None if state.control.read().partner(id).is_some() => PartnerState::new(id),
                None => return Err(ApiError::NotFound(format!("partner {id}"))),
            }
        }
    };
    state
        .registry
        .shared()
        .with_context(&mut partner, |s, table, ctx| s.catch_up(table, ctx));
    Ok(partner)
}

/// [`current_state`] with the partner's tier at its event time: the tier enforcement
/// judges its quota by.
pub(super) async fn current_state_and_tier(
    state: &ApiState,
    id: &str,
) -> Result<(PartnerState, String), ApiError> {
    let partner = current_state(state, id).await?;
    let at = partner.event_clock().unwrap_or_else(Utc::now);
    let tier = state.control.read().tier(id).at(at).to_owned();
    Ok((partner, tier))
}

async fn payout(state: &ApiState, id: &str, month: Month) -> Result<Option<Payout>, ApiError> {
    let payouts = state.payouts.clone();
    let (id, month) = (id.to_owned(), month.to_string());
    state
        .store_call(async move { payouts.get(&id, &month).await })
        .await
}

/// The statement's status: the ledger's (`open`, `pending`), then the payout store's.
fn status_of(statement: &Statement, payout: Option<&Payout>) -> &'static str {
    match (statement.status, payout.map(|p| p.status)) {
        (StatementStatus::Open, _) => "open",
        (_, Some(PayoutStatus::Paid)) | (StatementStatus::Paid, _) => "paid",
        (_, Some(PayoutStatus::Approved)) | (StatementStatus::Approved, _) => "approved",
        _ => "pending",
    }
}

pub async fn get_statement(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Need::Read, "statements.read").await?;
    let q: MonthQuery = super::error::parse_query(&req)?;
    let id = path.into_inner();
    let month = parse_month(
        q.month
            .as_deref()
            .ok_or_else(|| ApiError::BadRequest("month=YYYY-MM is required".into()))?,
    )?;
    let partner = current_state(&state, &id).await?;
    let statement = partner.ledger().statement(month);
    let payout = match statement.status {
        StatementStatus::Open => None,
        _ => payout(&state, &id, month).await?,
    };
    let status = status_of(&statement, payout.as_ref());
    let wants_csv = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    if wants_csv {
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header(("X-Statement-Status", status))
            .body(statement.to_csv()));
    }
    Ok(HttpResponse::Ok().json(json!({
        "partner_id": id,
        "month": month.to_string(),
        "status": status,
        "payment_reference": payout.and_then(|p| p.reference),
        "lines": statement.lines,
        "totals": statement.totals,
    })))
}

/// POST /v1/months/{month}/close: a month that has ended is closed by writing its
/// `month_close` fact to the control topic (repeats are harmless). Answers once this
/// instance's control table has it (202 if that takes longer than a few seconds).
pub async fn close_month(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, FINANCE, "months.close").await?;
    let month = parse_month(&path.into_inner())?;
    if month >= Month::of(Utc::now()) {
        return Err(ApiError::Conflict(format!(
            "{month} has not ended yet: only a past month can be closed"
        )));
    }
    if state.control.read().is_closed(month) {
        return Ok(HttpResponse::Ok().json(json!({ "month": month.to_string(), "closed": true })));
    }
    record(
        &state,
        AuditEntry {
            ref_id: format!("months.close:{month}:{}", uuid_like()),
            at: Utc::now(),
            actor: who.name.clone(),
            action: "months.close".into(),
            target: format!("month:{month}"),
            detail: json!({ "month": month.to_string() }),
        },
    )
    .await?;
    write_month_close(&state, month).await?;
    for _ in 0..50 {
        if state.control.read().is_closed(month) {
            return Ok(
                HttpResponse::Ok().json(json!({ "month": month.to_string(), "closed": true }))
            );
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(HttpResponse::Accepted().json(json!({ "month": month.to_string(), "closed": false })))
}

/// Produces `{"type":"month_close","month":…}` (no key: it reaches every partner).
pub(crate) async fn write_month_close(state: &ApiState, month: Month) -> Result<(), ApiError> {
    let producer = state.publisher.producer().clone();
    let topic = state.control_topic.clone();
    let value = json!({ "type": "month_close", "month": month.to_string() }).to_string();
    state
        .io
        .spawn(async move {
            producer
                .send(
                    FutureRecord::<(), String>::to(&topic).payload(&value),
                    Duration::from_secs(5),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e.to_string())
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::StoreUnavailable(format!("control topic: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaidBody {
    reference: String,
}

pub async fn approve(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, FINANCE, "statements.approve").await?;
    let (id, month) = path.into_inner();
    let month = parse_month(&month)?;
    move_payout(&state, &who.name, &id, month, PayoutStatus::Approved, None).await
}

pub async fn mark_paid(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, FINANCE, "statements.paid").await?;
    let (id, month) = path.into_inner();
    let month = parse_month(&month)?;
    let body: PaidBody = parse_json(&body)?;
    let reference = body.reference.trim();
    if reference.is_empty() || reference.len() > 256 {
        return Err(ApiError::BadRequest(
            "reference is required (1–256 characters)".into(),
        ));
    }
    move_payout(
        &state,
        &who.name,
        &id,
        month,
        PayoutStatus::Paid,
        Some(reference),
    )
    .await
}

/// pending → approved, approved → paid: checked, audited (fail closed), then one
/// compare-and-set. Repeating a move that already happened (same reference) is a no-op.
async fn move_payout(
    state: &ApiState,
    actor: &str,
    id: &str,
    month: Month,
    to: PayoutStatus,
    reference: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    if !state.control.read().is_closed(month) {
        return Err(ApiError::Conflict(format!(
            "{month} is open: close the month first"
        )));
    }
    // The partner must exist (its statement may be empty).
    current_state(state, id).await?;
    let current = payout(state, id, month).await?;
    let from = current.as_ref().map(|p| p.status);
    let answer = |p: &Payout, changed: bool| {
        HttpResponse::Ok().json(json!({
            "partner_id": id, "month": month.to_string(), "status": p.status.as_str(),
            "payment_reference": p.reference, "changed": changed,
        }))
    };
    let expected = match to {
        PayoutStatus::Approved => None,
        PayoutStatus::Paid => Some(PayoutStatus::Approved),
        PayoutStatus::Pending => return Err(ApiError::BadRequest("not a move".into())),
    };
    if let Some(p) = current.as_ref().filter(|p| p.status == to) {
        if to == PayoutStatus::Approved || p.reference.as_deref() == reference {
            return Ok(answer(p, false));
        }
        return Err(ApiError::Conflict(format!(
            "{month} was paid with another reference"
        )));
    }
    if from != expected {
        let now = from.map_or("pending", PayoutStatus::as_str);
        return Err(ApiError::Conflict(format!(
            "statement {month} is {now}: it cannot become {}",
            to.as_str()
        )));
    }
    let action = format!("statements.{}", to.as_str());
    let audited = AuditEntry {
        ref_id: format!("{action}:{id}:{month}:{}", uuid_like()),
        at: Utc::now(),
        actor: actor.to_owned(),
        action: action.clone(),
        target: format!("partner:{id}"),
        detail: json!({
            "month": month.to_string(), "from": from.map_or("pending", PayoutStatus::as_str),
            "to": to.as_str(), "reference": reference,
        }),
    };
    record(state, audited.clone()).await?;
    let payouts = state.payouts.clone();
    let (pid, m, r) = (
        id.to_owned(),
        month.to_string(),
        reference.map(str::to_owned),
    );
    let moved = state
        .store_call(async move {
            payouts
                .transition(&pid, &m, expected, to, r.as_deref())
                .await
        })
        .await?;
    match moved {
        Move::Done(p) => Ok(answer(&p, true)),
        Move::Refused(now) => {
            // Another finance request moved it first (both were audited): this one did not.
            let error = ApiError::Conflict(format!(
                "statement {month} moved meanwhile (now {})",
                now.map_or("pending", PayoutStatus::as_str)
            ));
            super::audit::aborted(state, &audited, &error).await;
            Err(error)
        }
    }
}

/// Closes each month once its grace has passed (CONTRACT §2; see [`Month::due_for_close`]),
/// on every instance:
/// the fact is idempotent, and the audit record's stable ref keeps one record per month.
pub async fn auto_close_loop(state: ApiState, grace: Duration) {
    let grace = chrono::Duration::from_std(grace).unwrap_or_else(|_| chrono::Duration::hours(6));
    loop {
        if !state
            .health
            .control_caught_up
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            // Until control is read, every month looks open.
            actix_rt::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let due = {
            let table = state.control.read();
            Month::due_for_close(Utc::now(), grace, table.closed_months())
        };
        for month in due {
            let audited = record(
                &state,
                AuditEntry {
                    ref_id: format!("months.close:auto:{month}"),
                    at: Utc::now(),
                    actor: crate::domain::audit::ACTOR_WARDEN.into(),
                    action: "months.close".into(),
                    target: format!("month:{month}"),
                    detail: json!({ "month": month.to_string(), "by": "auto_close" }),
                },
            )
            .await;
            let written = match audited {
                Ok(_) => write_month_close(&state, month).await,
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => tracing::info!(%month, "month closed automatically"),
                Err(e) => {
                    // Oldest first: a later month is not closed before this one.
                    tracing::warn!(%month, error = %e, "month close not done; will retry");
                    break;
                }
            }
        }
        actix_rt::time::sleep(Duration::from_secs(30)).await;
    }
}
