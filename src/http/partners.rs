//! GET /v1/partners/{id}: what warden knows of a partner. A live actor answers from
//! memory; otherwise the latest durable snapshot answers (another instance may own it).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::error::ApiError;
use super::ApiState;
use crate::actors::messages::GetSummary;
use crate::domain::enforcement::Level;
use crate::domain::partner::PartnerSummary;

pub async fn get_partner(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    super::guard::authorize(&req, &state, super::guard::Need::Read, "partners.read").await?;
    let id = path.into_inner();
    let (summary, source) = match state.registry.get(&id) {
        Some(addr) => match addr.send(GetSummary).await {
            Ok(s) => (s, "live"),
            Err(_) => (load(&state, &id).await?, "store"),
        },
        None => (load(&state, &id).await?, "store"),
    };
    let mut body = view(&state, &summary, source);
    // What the gateway enforces is the data-plane key: a kill switch or a person's level
    // shows there first (the actor's own view follows its ladder). With the store
    // unreachable, the actor's view is all there is.
    let store = state.publisher.store().clone();
    let key_id = id.clone();
    if let Ok(Ok(plane)) = state
        .io
        .spawn(async move { store.read("partner", &key_id).await })
        .await
    {
        body["enforcement"] = Enforced::from_plane(plane.as_ref()).body;
    }
    Ok(HttpResponse::Ok().json(body))
}

/// What the gateway enforces on a partner: its data-plane key, where kill switches and
/// people's levels are (the owner's actor only follows its ladder). No key means `ok`
/// (CONTRACT §4), whatever the actor last decided.
#[derive(Debug, Clone)]
pub struct Enforced {
    /// For ranking the list; a level this version does not know ranks as `ok`.
    level: Level,
    body: serde_json::Value,
}

impl Enforced {
    fn from_plane(plane: Option<&std::collections::BTreeMap<String, String>>) -> Enforced {
        let Some(plane) = plane else {
            return Enforced {
                level: Level::Ok,
                body: json!({ "level": "ok", "reason": null, "since": null, "decision_id": null }),
            };
        };
        let named = plane.get("level").map(String::as_str);
        Enforced {
            level: Level::ALL
                .into_iter()
                .find(|l| Some(l.as_str()) == named)
                .unwrap_or(Level::Ok),
            body: json!({
                "level": named,
                "reason": plane.get("reason"),
                "since": plane.get("since"),
                "decision_id": plane.get("decision_id"),
            }),
        }
    }

    /// The actor's own view, when the store cannot be read.
    fn from_actor(s: &PartnerSummary) -> Enforced {
        Enforced {
            level: s.enforcement.as_ref().map_or(Level::Ok, |v| v.level),
            body: actor_enforcement(s),
        }
    }
}

/// The partner's level as its owner's actor sees it (its ladder and quotas).
fn actor_enforcement(s: &PartnerSummary) -> serde_json::Value {
    match &s.enforcement {
        Some(v) => {
            json!({ "level": v.level.as_str(), "reason": v.since.map(|_| v.reason.as_str()), "since": v.since })
        }
        None => json!({ "level": "ok", "reason": null, "since": null }),
    }
}

async fn load(state: &ApiState, id: &str) -> Result<PartnerSummary, ApiError> {
    // The snapshot, caught up with the control facts its owner has not applied yet; the
    // quota as enforcement judges it, under the tier at the partner's event time.
    let (partner, tier) = super::statements::current_state_and_tier(state, id).await?;
    let program = state.registry.shared().program.clone();
    Ok(partner.summary_in(&tier, &state.policy, &program, chrono::Utc::now()))
}

/// The CONTRACT §6 shape (fields are only ever added).
fn view(state: &ApiState, s: &PartnerSummary, source: &str) -> serde_json::Value {
    let control = state.control.read();
    let facts = control.partner(&s.partner_id);
    let m = &s.money;
    let cents = |d: rust_decimal::Decimal| crate::domain::money::round_cents(d).to_string();
    json!({
        "partner_id": s.partner_id,
        // The tier in force now: a change dated later is not in force yet.
        "tier": facts.map(|_| control.tier(&s.partner_id).at(chrono::Utc::now())),
        "parent_id": facts.and_then(|f| f.parent_id.clone()),
        "attributed_revenue_usd": cents(m.attributed_revenue_usd),
        "commission_usd": cents(m.commission_usd),
        "override_commission_usd": cents(m.override_commission_usd),
        "coop_balance_usd": cents(m.coop_balance_usd),
        "coop_accrued_usd": cents(m.coop_accrued_usd),
        "mdf_drawn_usd": cents(m.mdf_drawn_usd),
        "coop_available_usd": cents(m.coop_available_usd),
        "coop_clawback_due_usd": cents(m.coop_clawback_due_usd),
        "credits_balance": m.credits_balance.to_string(),
        "parked_invoices": m.parked_invoices,
        "usage": {
            "events": s.usage.events,
            "requests": s.usage.requests,
            "errors": s.usage.errors,
            "auth_failures": s.usage.auth_failures,
            "bytes": s.usage.bytes,
        },
        "invoices": s.invoices,
        "duplicates_skipped": s.duplicates_skipped,
        "last_seen": s.last_seen,
        "enforcement": actor_enforcement(s),
        "levels": s.levels,
        "quota": match &s.quota {
            Some(q) => json!({ "used": q.used, "limit": q.limit, "month": q.month, "overage": q.overage, "burst_rps": q.burst_rps, "policy": q.policy }),
            None => json!({ "used": null, "limit": null }),
        },
        "status": s.status.as_ref().map(|v| v.status),
        "status_detail": s.status,
        "tracking": s.tracking,
        "source": source,
    })
}

/// How long one scan of the live partners serves the list: asking every actor costs one
/// message per live partner, so a client polling the list (within its rate limit) must
/// not cost the event path more than one scan per second.
const LIST_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The summaries of every live partner with what the gateway enforces on each (their
/// data-plane keys, read in one round trip per thousand), at most [`LIST_TTL`] old.
async fn live_summaries(state: &ApiState) -> std::sync::Arc<Vec<(PartnerSummary, Enforced)>> {
    let fresh = || {
        state
            .partner_list
            .lock()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < LIST_TTL)
            .map(|(_, list)| list.clone())
    };
    if let Some(list) = fresh() {
        return list;
    }
    // One scan at a time: a burst of requests after the list expired waits for one scan
    // (a message per live partner, a key read per live partner) instead of each taking
    // its own, which would cost the event path and the store as much as the burst.
    let _scanning = state.partner_list_scanning.lock().await;
    if let Some(list) = fresh() {
        return list;
    }
    let replies = futures::future::join_all(
        state
            .registry
            .addresses()
            .iter()
            .map(|a| a.send(GetSummary)),
    )
    .await;
    let summaries: Vec<PartnerSummary> = replies.into_iter().flatten().collect();
    let ids: Vec<String> = summaries.iter().map(|s| s.partner_id.clone()).collect();
    let store = state.publisher.store().clone();
    let planes = state
        .io
        .spawn(async move { store.read_many("partner", &ids).await })
        .await;
    let list: Vec<(PartnerSummary, Enforced)> = match planes {
        Ok(Ok(planes)) if planes.len() == summaries.len() => summaries
            .into_iter()
            .zip(planes)
            .map(|(s, plane)| {
                let enforced = Enforced::from_plane(plane.as_ref());
                (s, enforced)
            })
            .collect(),
        _ => summaries
            .into_iter()
            .map(|s| {
                let enforced = Enforced::from_actor(&s);
                (s, enforced)
            })
            .collect(),
    };
    let list = std::sync::Arc::new(list);
    *state.partner_list.lock() = Some((std::time::Instant::now(), list.clone()));
    list
}

#[derive(Debug, serde::Deserialize)]
pub struct ListQuery {
    level: Option<String>,
    limit: Option<usize>,
}

/// GET /v1/partners?level=L&limit=N: the partners live on this instance, worst level
/// first (then busiest). Partners passivated or owned elsewhere are not listed.
pub async fn list_partners(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    super::guard::authorize(&req, &state, super::guard::Need::Read, "partners.list").await?;
    let q: ListQuery = super::error::parse_query(&req)?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    let live = live_summaries(&state).await;
    // Levels as the gateway enforces them: a killed or terminated partner is listed so.
    let mut listed: Vec<&(PartnerSummary, Enforced)> = live
        .iter()
        .filter(|(_, e)| q.level.as_deref().is_none_or(|l| e.body["level"] == l))
        .collect();
    listed.sort_by(|(a, ea), (b, eb)| {
        eb.level
            .cmp(&ea.level)
            .then(b.usage.requests.cmp(&a.usage.requests))
            .then(a.partner_id.cmp(&b.partner_id))
    });
    listed.truncate(limit);
    let items: Vec<serde_json::Value> = listed
        .iter()
        .map(|(s, e)| {
            let mut item = view(&state, s, "live");
            item["enforcement"] = e.body.clone();
            item
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "partners": items })))
}
