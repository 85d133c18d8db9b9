//! The small CLI for people (`warden kill`, `unkill`, `status`, `audit verify`): thin
//! clients of the admin API and the store, so every action goes through the same
//! authorization and audit as the API.

use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::ApiArgs;
use crate::config::{Config, StoreBackend};
use crate::store::audit::verify_log;
use crate::store::redis::RedisStore;

/// Calls the admin API; returns the HTTP status and the JSON (or text) body.
pub fn call(
    api: &ApiArgs,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let url = format!("{}{path}", api.url.trim_end_matches('/'));
    let req = agent
        .request(method, &url)
        .set("Authorization", &format!("Bearer {}", api.token));
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("{method} {url}: {e}")),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

pub fn kill(
    api: &ApiArgs,
    scope: &str,
    target: &str,
    reason: &str,
    ttl: Option<u64>,
) -> Result<(u16, Value), String> {
    call(
        api,
        "POST",
        "/v1/kill-switches",
        Some(json!({"scope": scope, "target": target, "reason": reason, "ttl_seconds": ttl})),
    )
}

pub fn unkill(api: &ApiArgs, id: &str) -> Result<(u16, Value), String> {
    call(api, "DELETE", &format!("/v1/kill-switches/{id}"), None)
}

pub fn status(api: &ApiArgs, partner: &str) -> Result<(u16, Value), String> {
    call(api, "GET", &format!("/v1/partners/{partner}"), None)
}

/// Verifies the deployment's audit chain in the configured store. Ok(count) or a
/// message naming the first bad record.
pub fn audit_verify(config: &Config) -> Result<usize, String> {
    if config.store.backend != StoreBackend::Redis {
        return Err(
            "audit verify reads the Redis store; the memory store lives only inside the daemon"
                .into(),
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (url, prefix, timeout) = (
        config.store.redis_url.clone(),
        config.store.key_prefix.clone(),
        config.store.timeout.max(Duration::from_secs(5)),
    );
    let result = rt.block_on(async move {
        let store = RedisStore::connect(&url, &prefix, timeout)
            .await
            .map_err(|e| e.to_string())?;
        verify_log(&store).await.map_err(|e| e.to_string())
    });
    rt.shutdown_background();
    match result? {
        Ok(n) => Ok(n),
        Err(bad) => Err(format!("audit chain broken: {bad}")),
    }
}
