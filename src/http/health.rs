//! Liveness, readiness and the Prometheus endpoint. No authentication (CONTRACT §6).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::ApiState;
use crate::metrics::METRICS;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "alive" }))
}

/// 200 when consuming with control caught up; the store's reachability is in the body
/// but is not a reason to go unready.
pub async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    use std::sync::atomic::Ordering::SeqCst;
    let h = &state.health;
    let store = state.store.clone();
    let timeout = state.store_timeout;
    let started = std::time::Instant::now();
    let store_up = state
        .io
        .spawn(async move { tokio::time::timeout(timeout, store.ping()).await })
        .await
        .map(|r| matches!(r, Ok(Ok(()))))
        .unwrap_or(false);
    METRICS.store_op("ping", started);
    if !store_up {
        METRICS.store_errors.with_label_values(&["ping"]).inc();
    }
    METRICS.store_up.set(store_up as i64);
    METRICS.ready.set(i64::from(h.ready()));
    let body = json!({
        "ready": h.ready(),
        "control_caught_up": h.control_caught_up.load(SeqCst),
        "consuming": h.consuming.load(SeqCst),
        "store_up": store_up,
        "store_lost": h.store_lost.load(SeqCst),
    });
    if h.ready() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    // What /readyz would answer now, so the gauge follows a lost store or a consumer that
    // stopped whether or not anything probes readiness.
    METRICS.ready.set(i64::from(state.health.ready()));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(METRICS.render())
}
