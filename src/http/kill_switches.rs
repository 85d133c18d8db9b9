//! Kill switches (CONTRACT §3, §6): set by security at global, partner, integration or
//! tenant scope, effective at once (written straight to the data plane, bypassing the
//! ladder), optional TTL, listed and lifted through the API, kept in the store so they
//! survive restarts. Fail closed: a switch whose audit record cannot be written is not
//! executed (503).

use std::collections::HashSet;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;

use super::audit::record;
use super::error::ApiError;
use super::guard::{authorize, uuid_like, Need};
use super::topic_records::{ensure_sent, past_grace, send_record, RECORD_WAIT};
use super::ApiState;
use crate::config::Role;
use crate::domain::audit::{AuditEntry, ACTOR_TTL};
use crate::metrics::{METRICS, SCOPES};
use crate::publish::{count_transition, DecisionPublisher};
use crate::store::decisions::{DecisionWrite, KillSwitch, LiftWrite, OwnerLevel};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSwitch {
    scope: String,
    target: String,
    reason: String,
    ttl_seconds: Option<u64>,
}

/// How often a lift reads what to put back again when its target's owner keeps deciding.
const MAX_LIFT_ATTEMPTS: u32 = 5;

/// The longest TTL a switch takes: ten years (a longer one is a typo, or no TTL meant).
const MAX_TTL_SECONDS: u64 = 10 * 365 * 86_400;

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
    if !super::guard::valid_id(&body.target) || body.reason.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "target (1-128 characters) and reason are required".into(),
        ));
    }
    if body
        .ttl_seconds
        .is_some_and(|s| s == 0 || s > MAX_TTL_SECONDS)
    {
        return Err(ApiError::BadRequest(format!(
            "ttl_seconds must be between 1 and {MAX_TTL_SECONDS} (10 years); leave it out \
             for a switch that lasts until lifted"
        )));
    }
    let now = Utc::now();
    let id = format!("ks-{}", &uuid_like()[..16]);
    let expires_at = body
        .ttl_seconds
        .map(|s| now + chrono::Duration::seconds(s as i64));
    // Audit first: no record, no kill. The level it replaces is read meanwhile (one round
    // trip less before the switch reaches the data plane).
    let entry = AuditEntry {
        ref_id: format!("kill:{id}"),
        at: now,
        actor: who.name.clone(),
        action: "kill_switch.create".into(),
        target: format!("{}:{}", body.scope, body.target),
        detail: json!({ "id": id, "reason": body.reason, "ttl_seconds": body.ttl_seconds }),
    };
    let (audited, previous) = futures::join!(
        record(&state, entry.clone()),
        current_level(&state, &body.scope, &body.target)
    );
    audited?;
    let switch = KillSwitch {
        id,
        scope: body.scope,
        target: body.target,
        reason: body.reason,
        actor: who.name,
        created_at: rfc3339(now),
        expires_at: expires_at.map(rfc3339),
        seq: 0,
        previous: Some(previous),
        lifted_at: None,
        lift_seq: None,
        lift_level: None,
        lift_reason: None,
        lift_rps: None,
        hold_seq: None,
    };
    let write = set_write(&switch);
    let store = state.publisher.store().clone();
    let (w, s) = (write.clone(), switch.clone());
    // In force and registered in one write: never a kill the registry does not know.
    let published = state
        .store_call(async move { store.publish_switch(&w, &s).await })
        .await?;
    if !published.applied {
        // A fresh outbox id always applies; if it ever did not, nothing was registered.
        return Err(ApiError::StoreUnavailable(
            "the kill switch was not applied".into(),
        ));
    }
    count_transition(&write, &published);
    let switch = KillSwitch {
        seq: published.seq,
        ..switch
    };
    // The create's record was written before the level it replaced was known: say what
    // the switch changed, from and to, once it is in force. After the key and its
    // channel message, so a gateway sees the kill no later; the answer and the topic
    // record wait for this one append.
    let detail = applied_detail(&entry.detail, &write, published.seq);
    super::audit::follow_up(&state, &entry, "applied", &entry.actor, detail).await;
    // The topic record follows: here if the broker answers in time, else from the loop.
    let records = &state.switch_records;
    let on_topic = send_record(records, &state, write, published.seq, RECORD_WAIT).await;
    refresh_gauges(&state.publisher).await;
    let mut body = serde_json::to_value(&switch).map_err(|e| ApiError::Internal(e.to_string()))?;
    body["topic_record"] = json!(if on_topic { "acknowledged" } else { "pending" });
    Ok(HttpResponse::Created().json(body))
}

pub async fn list(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Need::Read, "kill_switch.list").await?;
    let store = state.publisher.store().clone();
    let switches = state
        .store_call(async move { store.switches().await })
        .await?;
    // A switch whose lift waits for its record is lifted already.
    let active: Vec<KillSwitch> = switches
        .into_iter()
        .filter(|s| s.lifted_at.is_none())
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "kill_switches": active })))
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
    let lifted = lift(&state, &switch, &who.name, RECORD_WAIT).await?;
    // A target stays killed while another switch on it is active: say which, from the
    // registry the gauges are refreshed from (best effort: the lift is done, and a failed
    // read must not answer it as failed).
    let registry = refresh_gauges(&state.publisher).await;
    let still: Option<Vec<String>> = registry.map(|all| {
        all.into_iter()
            .filter(|s| {
                s.lifted_at.is_none() && s.scope == switch.scope && s.target == switch.target
            })
            .map(|s| s.id)
            .collect()
    });
    let record = match lifted {
        Lift::Done => "acknowledged",
        Lift::RecordPending => "pending",
        Lift::Superseded => "none",
    };
    Ok(HttpResponse::Ok()
        .json(json!({ "lifted": switch.id, "topic_record": record, "still_killed_by": still })))
}

/// What a lift did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lift {
    /// Lifted in the data plane, its record acknowledged, the switch gone from the registry.
    Done,
    /// Lifted in the data plane (the switch is no longer active and carries `lifted_at`);
    /// its record is not acknowledged yet, and [`expire_loop`] finishes the lift.
    RecordPending,
    /// A later decision had replaced the switch's `killed`: nothing to lift, and the
    /// switch is gone from the registry.
    Superseded,
}

/// Lifts `switch` (API or TTL): audited once (the ref is the same for both paths, so a
/// TTL expiry racing a DELETE is recorded once, and once more as `.applied`, with what
/// was put back, by the path that ends the switch; an attempt that gives up is recorded
/// as aborted), then the decision putting back what was
/// under the switch ([`restored_level`]) in the data plane, if the key still holds the
/// switch's `killed` (compare-and-set on its seq). The records go out in seq order, the
/// `killed` one first (it may still wait from an outage), and the switch leaves the
/// registry once both are acknowledged. Repeating it is safe: a lift already in the data
/// plane is rebuilt from what its write noted on the switch (`lifted_at`, `lift_seq`,
/// `lift_level`...), so its record has one content whoever sends it.
pub async fn lift(
    state: &ApiState,
    switch: &KillSwitch,
    actor: &str,
    wait: Duration,
) -> Result<Lift, ApiError> {
    // A lift already in the data plane was audited before it was applied.
    let audited = if switch.lifted_at.is_none() {
        let entry = AuditEntry {
            ref_id: format!("unkill:{}", switch.id),
            at: Utc::now(),
            actor: actor.to_owned(),
            action: "kill_switch.lift".into(),
            target: format!("{}:{}", switch.scope, switch.target),
            detail: json!({ "id": switch.id }),
        };
        let appended = record(state, entry.clone()).await?.is_some();
        Some((entry, appended))
    } else {
        None
    };
    // The lift's record to send: (write, seq, acknowledged before), or none.
    let lift_record = match (&switch.lifted_at, switch.lift_seq) {
        (Some(at), Some(seq)) => Some((noted_lift_write(switch, at.clone()), seq, false)),
        _ => {
            // What to put back is read, then written if the owner has not decided since
            // (else read again): a decision refused under the switch in between would
            // otherwise be lost to an older base.
            let mut attempts = 0;
            let (write, lifted) = loop {
                let (restore, base_seq) = restored_level(state, switch).await?;
                let write = lift_write(switch, restore, rfc3339(Utc::now()));
                let store = state.publisher.store().clone();
                let (w, id, seq) = (write.clone(), switch.id.clone(), switch.seq);
                let lifted = state
                    .store_call(
                        async move { store.publish_lift(&w, &id, seq, Some(base_seq)).await },
                    )
                    .await?;
                attempts += 1;
                match lifted {
                    LiftWrite::BaseMoved if attempts < MAX_LIFT_ATTEMPTS => continue,
                    LiftWrite::BaseMoved => {
                        let error = ApiError::StoreUnavailable(format!(
                            "the target's owner decided {MAX_LIFT_ATTEMPTS} times during the \
                             lift; nothing was lifted, try again"
                        ));
                        if let Some((entry, _)) = &audited {
                            lift_aborted(state, entry, &error).await;
                        }
                        return Err(error);
                    }
                    lifted => break (write, lifted),
                }
            };
            match lifted {
                // (Not reached: the loop above returns on it.)
                LiftWrite::BaseMoved => None,
                LiftWrite::Superseded => {
                    // Ended without a write (a later decision holds the key): ended all
                    // the same, and said so.
                    if let Some((entry, _)) = &audited {
                        lift_ended(state, entry, actor, None).await;
                    }
                    None
                }
                LiftWrite::Lifted { published, .. } if published.applied => {
                    count_transition(&write, &published);
                    if let Some((entry, _)) = &audited {
                        lift_ended(state, entry, actor, Some((&write, published.seq))).await;
                    }
                    Some((write, published.seq, published.produced))
                }
                // Another lifter (a DELETE racing the TTL) applied it first: its record
                // is rebuilt from what that write noted on the switch, if still there.
                LiftWrite::Lifted { published, .. } => {
                    noted_switch(state, &switch.id).await?.and_then(|s| {
                        Some((
                            noted_lift_write(&s, s.lifted_at.clone()?),
                            published.seq,
                            published.produced,
                        ))
                    })
                }
            }
        }
    };
    let set_sent = set_record_sent(state, switch, wait).await;
    let outcome = match lift_record {
        None if set_sent => Lift::Superseded,
        Some((_, _, true)) if set_sent => Lift::Done,
        Some((write, seq, false)) if set_sent => {
            if send_record(&state.switch_records, state, write, seq, wait).await {
                Lift::Done
            } else {
                Lift::RecordPending
            }
        }
        _ => Lift::RecordPending,
    };
    if outcome != Lift::RecordPending {
        let store = state.publisher.store().clone();
        let id = switch.id.clone();
        state
            .store_call(async move { store.remove_switch(&id).await })
            .await?;
    }
    Ok(outcome)
}

/// A lift that gave up (its target's owner kept deciding) is recorded as aborted, so the
/// chain does not read as if the switch were lifted: `<lift ref>:<attempt>:aborted`, with
/// an attempt of its own for each request of a person (a switch may be tried and
/// abandoned more than once), and one for the TTL, whose loop tries again every second
/// and is recorded giving up once. Best effort, as every `.aborted` record: the caller's
/// answer does not wait on it.
async fn lift_aborted(state: &ApiState, lift: &AuditEntry, error: &ApiError) {
    let attempt = if lift.actor == ACTOR_TTL {
        ACTOR_TTL.to_owned()
    } else {
        uuid_like()
    };
    let attempt = AuditEntry {
        ref_id: format!("{}:{attempt}", lift.ref_id),
        ..lift.clone()
    };
    super::audit::aborted(state, &attempt, error).await;
}

/// The attempt that ends a switch records it (`unkill:<id>:applied`, once, whatever the
/// outcome) with who ended it and how: `applied`, with what the lift put back (`to`, its
/// reason and rate, its decision), or `superseded` (a later decision holds the key, and
/// the switch ends without a write). The lift's own record is written before what it
/// puts back is known (a termination, an owner's throttle, `ok`), and after an
/// `.aborted` record the chain would otherwise never say the switch ended. Best effort:
/// the switch has ended and the lift's intent is audited.
async fn lift_ended(
    state: &ApiState,
    lift: &AuditEntry,
    actor: &str,
    applied: Option<(&DecisionWrite, u64)>,
) {
    let detail = match applied {
        Some((write, seq)) => applied_detail(&lift.detail, write, seq),
        None => {
            let mut detail = lift.detail.clone();
            detail["outcome"] = json!("superseded");
            detail
        }
    };
    super::audit::follow_up(state, lift, "applied", actor, detail).await;
}

/// `detail` with what `write` did in the data plane (`outcome` `applied`): `from` and `to`
/// levels, the reason and rate put there, and the decision's id (`<scope>:<id>:<seq>`).
fn applied_detail(
    detail: &serde_json::Value,
    write: &DecisionWrite,
    seq: u64,
) -> serde_json::Value {
    let mut detail = detail.clone();
    detail["outcome"] = json!("applied");
    detail["from"] = json!(write.previous);
    detail["to"] = json!(write.level);
    detail["to_reason"] = json!(write.reason);
    detail["rate_limit_rps"] = json!(write.rate_limit_rps);
    detail["decision_id"] = json!(format!("{}:{}:{seq}", write.scope, write.id));
    detail
}

/// Whether a switch's `killed` record is acknowledged; if not, sends it and waits up to
/// `wait`.
async fn set_record_sent(state: &ApiState, switch: &KillSwitch, wait: Duration) -> bool {
    if switch.previous.is_none() {
        // Registered before `previous` was kept, which was only after its record was
        // acknowledged.
        return true;
    }
    let records = &state.switch_records;
    ensure_sent(records, state, set_write(switch), switch.seq, wait).await
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

/// The outbox ids of a switch's two decisions, setting and lifting it.
fn set_outbox_id(switch_id: &str) -> String {
    format!("ks:{switch_id}:set")
}

fn lift_outbox_id(switch_id: &str) -> String {
    format!("ks:{switch_id}:lift")
}

/// The `killed` decision of `switch`, as first published: its `decided_at` is the
/// switch's creation and its `previous` the level it replaced, so a re-publication has
/// the same content.
fn set_write(switch: &KillSwitch) -> DecisionWrite {
    switch_write(
        &set_outbox_id(&switch.id),
        &switch.scope,
        &switch.target,
        "killed",
        switch.previous.as_deref().unwrap_or("ok"),
        switch.created_at.clone(),
    )
}

/// What a lift puts in the data plane ([`LiftBase`]): a person's termination still in
/// force under the switch (a termination leaves only by a person's order, CONTRACT §3,
/// not by a switch's TTL; also when switches are stacked), else a person's manual level
/// that no stricter owner decision replaced, else the level the target's
/// owner last decided, refused or not while the switch held the key (a quota suspension
/// must not end because a kill was lifted: the owner, which believes it in force, would
/// not decide it again), else `ok`. A switch set over a termination before the base was
/// kept says so in its `previous`.
async fn restored_level(
    state: &ApiState,
    switch: &KillSwitch,
) -> Result<(OwnerLevel, u64), ApiError> {
    let store = state.publisher.store().clone();
    let (scope, target) = (switch.scope.clone(), switch.target.clone());
    let base = state
        .store_call(async move { store.lift_base(&scope, &target).await })
        .await?;
    if base.terminated || switch.previous.as_deref() == Some("terminated") {
        let terminated = OwnerLevel {
            level: "terminated".into(),
            reason: "manual".into(),
            rate_limit_rps: None,
        };
        return Ok((terminated, base.seq));
    }
    // A person's manual level the owner has not replaced with a stricter one holds
    // against the owner's milder ones, as it would have without the switch.
    let level = base
        .manual
        .or(base.owner)
        .filter(|o| o.level != "ok")
        .unwrap_or_else(lifted_to_ok);
    Ok((level, base.seq))
}

/// A lift with nothing under the switch: `ok`, for the kill switch's reason.
fn lifted_to_ok() -> OwnerLevel {
    OwnerLevel {
        level: "ok".into(),
        reason: "kill_switch".into(),
        rate_limit_rps: None,
    }
}

/// The lift's data-plane write putting `restore` back at `since`.
fn lift_write(switch: &KillSwitch, restore: OwnerLevel, since: String) -> DecisionWrite {
    let mut write = switch_write(
        &lift_outbox_id(&switch.id),
        &switch.scope,
        &switch.target,
        &restore.level,
        "killed",
        since,
    );
    write.reason = restore.reason;
    write.rate_limit_rps = restore.rate_limit_rps;
    write
}

/// The lift's write as the write that applied it noted on the switch, for its record. A
/// lift noted before what it wrote was kept wrote `ok`.
fn noted_lift_write(switch: &KillSwitch, lifted_at: String) -> DecisionWrite {
    let restore = match &switch.lift_level {
        Some(level) => OwnerLevel {
            level: level.clone(),
            reason: switch.lift_reason.clone().unwrap_or_default(),
            rate_limit_rps: switch.lift_rps.as_deref().and_then(|r| r.parse().ok()),
        },
        None => lifted_to_ok(),
    };
    lift_write(switch, restore, lifted_at)
}

/// The switch `id` as registered now, if it still is.
async fn noted_switch(state: &ApiState, id: &str) -> Result<Option<KillSwitch>, ApiError> {
    let store = state.publisher.store().clone();
    let switches = state
        .store_call(async move { store.switches().await })
        .await?;
    Ok(switches.into_iter().find(|s| s.id == id))
}

/// The data-plane write of a kill switch being set (`killed`) or lifted (`ok`): a
/// person's decision, so it may replace a held level.
fn switch_write(
    outbox_id: &str,
    scope: &str,
    target: &str,
    level: &str,
    previous: &str,
    since: String,
) -> DecisionWrite {
    DecisionWrite {
        outbox_id: outbox_id.to_owned(),
        scope: scope.to_owned(),
        id: target.to_owned(),
        level: level.to_owned(),
        reason: "kill_switch".into(),
        rate_limit_rps: None,
        since,
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

/// Sets `warden_kill_switches_active{scope}` from the registry (shared by all instances):
/// a switch whose lift waits for its record is no longer active.
pub async fn refresh_gauges(publisher: &DecisionPublisher) -> Option<Vec<KillSwitch>> {
    let switches = publisher.store().switches().await.ok()?;
    for scope in SCOPES {
        let n = switches
            .iter()
            .filter(|s| s.scope == scope && s.lifted_at.is_none())
            .count();
        METRICS
            .kill_switches_active
            .with_label_values(&[scope])
            .set(n as i64);
    }
    Some(switches)
}

/// Every second (wall clock), on whichever instance sees them first: lifts expired
/// switches, finishes lifts whose record the broker had not acknowledged, and sends the
/// `killed` record of an active switch whose record was not acknowledged (the broker was
/// down when it was set). The audit ref and the outbox ids make races between instances
/// harmless: at worst a record is sent twice, with the same id and content.
pub async fn expire_loop(state: ApiState) {
    loop {
        actix_rt::time::sleep(Duration::from_secs(1)).await;
        let publisher = state.publisher.clone();
        let store = publisher.store().clone();
        let Ok(Ok(switches)) = state.io.spawn(async move { store.switches().await }).await else {
            continue;
        };
        let now = Utc::now();
        for s in &switches {
            let expired = s
                .expires_at
                .as_deref()
                .and_then(|e| DateTime::parse_from_rfc3339(e).ok())
                .is_some_and(|e| e.with_timezone(&Utc) <= now);
            if expired || s.lifted_at.is_some() {
                if let Err(e) = lift(&state, s, ACTOR_TTL, Duration::ZERO).await {
                    tracing::warn!(id = %s.id, error = %e, "kill switch lift failed; will retry");
                }
            } else if past_grace(&s.created_at, now) {
                // An active switch set while the broker was down: its record goes now.
                set_record_sent(&state, s, Duration::ZERO).await;
            }
        }
        // Only the records of switches still registered need remembering.
        let registered: HashSet<String> = switches
            .iter()
            .flat_map(|s| [set_outbox_id(&s.id), lift_outbox_id(&s.id)])
            .collect();
        state.switch_records.keep_only(&registered);
        refresh_gauges(&publisher).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::store::audit::{AuditLog, MemoryAuditLog};
    use crate::store::decisions::{
        DecisionStore, LiftBase, MemoryDecisions, PendingRecord, Published,
    };
    use crate::store::StoreError;

    /// The memory data plane, whose target's owner decides during each of the next
    /// `moves` lifts: each answers `BaseMoved`.
    #[derive(Default)]
    struct BusyOwner {
        plane: MemoryDecisions,
        moves: AtomicU32,
    }

    #[async_trait]
    impl DecisionStore for BusyOwner {
        async fn publish(&self, w: &DecisionWrite) -> Result<Published, StoreError> {
            self.plane.publish(w).await
        }
        async fn mark_produced(&self, writes: &[DecisionWrite]) -> Result<(), StoreError> {
            self.plane.mark_produced(writes).await
        }
        async fn is_produced(&self, w: &DecisionWrite) -> Result<bool, StoreError> {
            self.plane.is_produced(w).await
        }
        async fn publish_switch(
            &self,
            w: &DecisionWrite,
            switch: &KillSwitch,
        ) -> Result<Published, StoreError> {
            self.plane.publish_switch(w, switch).await
        }
        async fn publish_lift(
            &self,
            w: &DecisionWrite,
            switch_id: &str,
            kill_seq: u64,
            base_seq: Option<u64>,
        ) -> Result<LiftWrite, StoreError> {
            let busy = self
                .moves
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if busy.is_ok() {
                return Ok(LiftWrite::BaseMoved);
            }
            self.plane
                .publish_lift(w, switch_id, kill_seq, base_seq)
                .await
        }
        async fn publish_pending(
            &self,
            w: &DecisionWrite,
            expected_seq: u64,
        ) -> Result<Published, StoreError> {
            self.plane.publish_pending(w, expected_seq).await
        }
        async fn pending_records(&self) -> Result<Vec<PendingRecord>, StoreError> {
            self.plane.pending_records().await
        }
        async fn remove_pending(&self, outbox_id: &str) -> Result<(), StoreError> {
            self.plane.remove_pending(outbox_id).await
        }
        async fn lift_base(&self, scope: &str, id: &str) -> Result<LiftBase, StoreError> {
            self.plane.lift_base(scope, id).await
        }
        async fn read(
            &self,
            scope: &str,
            id: &str,
        ) -> Result<Option<std::collections::BTreeMap<String, String>>, StoreError> {
            self.plane.read(scope, id).await
        }
        async fn remove_switch(&self, id: &str) -> Result<bool, StoreError> {
            self.plane.remove_switch(id).await
        }
        async fn switches(&self) -> Result<Vec<KillSwitch>, StoreError> {
            self.plane.switches().await
        }
    }

    /// The admin API's state on memory stores, its Kafka clients pointed at no broker
    /// (records wait as pending).
    fn api_state(
        io: &tokio::runtime::Runtime,
        plane: Arc<BusyOwner>,
        log: Arc<MemoryAuditLog>,
    ) -> ApiState {
        use rdkafka::config::ClientConfig;
        let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create()
            .unwrap();
        let audit =
            crate::publish::audit::AuditSink::new(log, producer.clone(), "warden.audit.v1".into());
        let publisher = DecisionPublisher::new(
            plane,
            producer,
            (
                "warden.enforcement.v1".into(),
                "warden.attribution.v1".into(),
            ),
            audit,
        );
        let arbiter = actix_rt::Arbiter::new();
        let shared = crate::actors::partner::Shared::for_tests();
        let registry = Arc::new(crate::actors::registry::Registry::new(
            vec![arbiter.handle()],
            shared,
        ));
        ApiState::new(
            &crate::config::Config::default(),
            registry,
            Arc::new(crate::store::memory::MemoryStore::new()),
            Arc::default(),
            Arc::default(),
            super::super::ApiOutputs {
                partitions: 1,
                io: io.handle().clone(),
                publisher,
                payouts: Arc::new(crate::store::statements::MemoryPayouts::default()),
                control_topic: "warden.control.v1".into(),
            },
        )
    }

    /// What each lift test starts from: the admin API's state on a busy-owner data plane
    /// and a memory audit log, the runtime its store calls run on, and a switch on partner
    /// `target` registered as `create` registers one.
    struct Fixture {
        _system: actix_rt::SystemRunner,
        plane: Arc<BusyOwner>,
        log: Arc<MemoryAuditLog>,
        io: tokio::runtime::Runtime,
        switch: KillSwitch,
        state: ApiState,
    }

    impl Fixture {
        fn new(id: &str, target: &str) -> Fixture {
            let _system = actix_rt::System::new();
            let plane = Arc::new(BusyOwner::default());
            let log = Arc::new(MemoryAuditLog::new());
            let (io, switch) = registered_switch(&plane, id, target);
            let state = api_state(&io, plane.clone(), log.clone());
            Fixture {
                _system,
                plane,
                log,
                io,
                switch,
                state,
            }
        }
    }

    /// A runtime for the API's store calls, and a switch on partner `target` registered in
    /// `plane`, as `create` registers one.
    fn registered_switch(
        plane: &BusyOwner,
        id: &str,
        target: &str,
    ) -> (tokio::runtime::Runtime, KillSwitch) {
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let switch = KillSwitch {
            id: id.into(),
            scope: "partner".into(),
            target: target.into(),
            reason: "leak".into(),
            actor: "sec".into(),
            created_at: rfc3339(Utc::now()),
            expires_at: None,
            seq: 0,
            previous: Some("ok".into()),
            lifted_at: None,
            lift_seq: None,
            lift_level: None,
            lift_reason: None,
            lift_rps: None,
            hold_seq: None,
        };
        let published = io
            .block_on(plane.publish_switch(&set_write(&switch), &switch))
            .unwrap();
        let switch = KillSwitch {
            seq: published.seq,
            ..switch
        };
        (io, switch)
    }

    /// The actions and actors of the chain, in order.
    fn actions(io: &tokio::runtime::Runtime, log: &MemoryAuditLog) -> Vec<(String, String)> {
        io.block_on(log.all())
            .unwrap()
            .into_iter()
            .map(|r| (r.entry().action.clone(), r.entry().actor.clone()))
            .collect()
    }

    fn pair(action: &str, actor: &str) -> (String, String) {
        (action.to_owned(), actor.to_owned())
    }

    /// A lift that gives up because the target's owner keeps deciding is recorded as
    /// aborted, and the later lift that applies it is recorded as applied: the chain never
    /// reads as lifted while the switch holds, nor as aborted once it is lifted.
    #[test]
    fn an_aborted_lift_is_audited_and_so_is_the_retry_that_lifts() {
        let Fixture {
            _system,
            plane,
            log,
            io,
            switch,
            state,
        } = Fixture::new("ks-1", "p-1");
        let wait = Duration::from_millis(10);
        let level = |io: &tokio::runtime::Runtime| {
            io.block_on(plane.read("partner", "p-1"))
                .unwrap()
                .map(|h| h["level"].clone())
        };
        // Twice the owner decides through every attempt: nothing is lifted, each time
        // recorded as aborted.
        for _ in 0..2 {
            plane.moves.store(MAX_LIFT_ATTEMPTS, Ordering::SeqCst);
            let refused = io.block_on(lift(&state, &switch, "alice", wait));
            assert!(
                matches!(refused, Err(ApiError::StoreUnavailable(_))),
                "{refused:?}"
            );
            assert_eq!(level(&io).as_deref(), Some("killed"));
        }
        assert_eq!(
            actions(&io, &log),
            [
                pair("kill_switch.lift", "alice"),
                pair("kill_switch.lift.aborted", "alice"),
                pair("kill_switch.lift.aborted", "alice"),
            ]
        );
        // Then a retry lifts it, under fewer moves than its attempts.
        plane.moves.store(MAX_LIFT_ATTEMPTS - 1, Ordering::SeqCst);
        let lifted = io.block_on(lift(&state, &switch, "bob", wait));
        assert!(lifted.is_ok(), "{lifted:?}");
        assert_ne!(level(&io).as_deref(), Some("killed"), "lifted");
        assert_eq!(
            actions(&io, &log)[3..],
            [pair("kill_switch.lift.applied", "bob")],
            "the lift that applied it"
        );
    }

    /// The TTL's loop tries an expired switch again every second: its give-ups are
    /// recorded once, not once a second for as long as the owner keeps deciding.
    #[test]
    fn the_ttls_give_ups_on_a_lift_are_recorded_once() {
        let Fixture {
            _system,
            plane,
            log,
            io,
            switch,
            state,
        } = Fixture::new("ks-3", "p-3");
        for _ in 0..3 {
            plane.moves.store(MAX_LIFT_ATTEMPTS, Ordering::SeqCst);
            let refused = io.block_on(lift(&state, &switch, ACTOR_TTL, Duration::ZERO));
            assert!(refused.is_err(), "{refused:?}");
        }
        assert_eq!(
            actions(&io, &log),
            [
                pair("kill_switch.lift", ACTOR_TTL),
                pair("kill_switch.lift.aborted", ACTOR_TTL),
            ]
        );
    }

    /// A switch ended without a write after an aborted lift (another switch took the
    /// target's key over meanwhile) is recorded as ended, with how.
    #[test]
    fn a_switch_superseded_after_an_aborted_lift_is_recorded_as_ended() {
        let Fixture {
            _system,
            plane,
            log,
            io,
            switch: first,
            state,
        } = Fixture::new("ks-4", "p-4");
        plane.moves.store(MAX_LIFT_ATTEMPTS, Ordering::SeqCst);
        let refused = io.block_on(lift(&state, &first, "alice", Duration::ZERO));
        assert!(refused.is_err(), "{refused:?}");
        let second = KillSwitch {
            id: "ks-5".into(),
            seq: 0,
            ..first.clone()
        };
        io.block_on(plane.publish_switch(&set_write(&second), &second))
            .unwrap();
        let ended = io.block_on(lift(&state, &first, "bob", Duration::ZERO));
        assert!(
            matches!(ended, Ok(Lift::Superseded | Lift::RecordPending)),
            "{ended:?}"
        );
        let chain = io.block_on(log.all()).unwrap();
        let last = chain.last().unwrap().entry();
        assert_eq!(
            (
                last.action.as_str(),
                last.actor.as_str(),
                &last.detail["outcome"]
            ),
            ("kill_switch.lift.applied", "bob", &json!("superseded")),
            "{chain:?}"
        );
    }

    /// A lift that applies at its first attempt is recorded, then followed by what it
    /// put back once that is known.
    #[test]
    fn a_lift_at_the_first_attempt_is_recorded_with_what_it_put_back() {
        let Fixture {
            _system,
            plane,
            log,
            io,
            switch,
            state,
        } = Fixture::new("ks-2", "p-2");
        plane.moves.store(1, Ordering::SeqCst);
        let lifted = io.block_on(lift(&state, &switch, "alice", Duration::from_millis(10)));
        assert!(lifted.is_ok(), "{lifted:?}");
        assert_eq!(
            actions(&io, &log),
            [
                pair("kill_switch.lift", "alice"),
                pair("kill_switch.lift.applied", "alice")
            ]
        );
        let chain = io.block_on(log.all()).unwrap();
        let applied = &chain[1].entry().detail;
        let put_back = io.block_on(plane.read("partner", "p-2")).unwrap();
        let put_back = put_back.as_ref().map_or("ok", |h| h["level"].as_str());
        assert_eq!(
            (&applied["from"], &applied["to"], &applied["outcome"]),
            (&json!("killed"), &json!(put_back), &json!("applied")),
            "{applied}"
        );
        assert!(applied["decision_id"]
            .as_str()
            .is_some_and(|d| d.starts_with("partner:p-2:")));
    }
}
