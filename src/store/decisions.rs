//! The data-plane side of enforcement (CONTRACT §4): the `<prefix>:enf:<scope>:<id>` hash a
//! gateway reads on every request, its per-key `seq` counter, the `<prefix>:enf` channel,
//! and the kill-switch registry.
//!
//! Rules kept here, in one Lua script per write so they hold whoever writes (owner, API,
//! TTL expiry) and however often a write is retried:
//! - `seq` comes from a per-key counter that only grows; a write whose `seq` is not above
//!   the stored one is refused, so replays and stale owners cannot roll a decision back;
//! - an outbox id is given its `seq` once and keeps it, so a decision re-published after a
//!   crash has the same `decision_id` (and the same content);
//! - a key held at `killed` or `terminated` is never lowered by the ladder;
//! - no key means `ok`: a decision back to `ok` deletes the hash.
//!
//! Keys of one target are not hash-tagged because the contract fixes the gateway's key
//! name; on Redis Cluster the script's three keys must then be co-located by the operator
//! (documented limit), unlike partition state, which is hash-tagged.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::Script;
use serde::{Deserialize, Serialize};

use super::redis::RedisStore;
use super::StoreError;

/// How long an outbox id → seq mapping is kept: far longer than any re-publication.
const PUBLISHED_TTL_SECS: i64 = 7 * 24 * 3600;

/// One decision to write to the data plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionWrite {
    /// Stable id of this decision in its producer's outbox (e.g. `p-1:17`): re-publishing
    /// the same outbox id reuses its seq.
    pub outbox_id: String,
    pub scope: String,
    pub id: String,
    pub level: String,
    pub reason: String,
    pub rate_limit_rps: Option<u64>,
    /// RFC 3339 time the level took effect.
    pub since: String,
    /// The partner the target belongs to (the target itself for partner scope).
    pub partner_id: String,
    /// The level before this decision, as its decider saw it.
    pub previous: String,
    /// A person's decision (API, kill switch): may replace `killed`/`terminated`.
    pub by_person: bool,
}

/// What the store did with a [`DecisionWrite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    /// `false` when refused: seq not above the stored one, or a held kill/termination.
    pub applied: bool,
    /// The level stored before this write (`ok` when there was no key).
    pub previous_was_held: bool,
    /// This outbox id's enforcement-topic record was acknowledged before: a re-publication
    /// after a crash need not produce it again.
    pub produced: bool,
    /// This outbox id was applied by an earlier publication (whose audit record may be
    /// missing, if that one failed after the data-plane write).
    pub applied_before: bool,
}

/// A kill switch as kept in the registry (survives restarts; listed by the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    pub id: String,
    pub scope: String,
    pub target: String,
    pub reason: String,
    pub actor: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// The seq its `killed` write got: lifting is a compare-and-delete on it.
    pub seq: u64,
}

#[async_trait]
pub trait DecisionStore: Send + Sync + 'static {
    async fn publish(&self, write: &DecisionWrite) -> Result<Published, StoreError>;
    /// [`Self::publish`] of each write, in order (Redis: one round trip for the lot).
    /// On `Err`, any prefix may have been applied: publishing again is safe.
    async fn publish_many(&self, writes: &[DecisionWrite]) -> Result<Vec<Published>, StoreError> {
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            out.push(self.publish(w).await?);
        }
        Ok(out)
    }
    /// Records that the enforcement-topic records of `writes` were acknowledged by the
    /// broker (kept as long as the outbox id's seq).
    async fn mark_produced(&self, writes: &[DecisionWrite]) -> Result<(), StoreError>;
    /// Deletes the key if its seq is still `seq` (a kill switch being lifted); returns
    /// whether it was deleted. A later decision on the key is left alone.
    async fn lift_if_seq(&self, scope: &str, id: &str, seq: u64) -> Result<bool, StoreError>;
    /// The hash a gateway reads, if any.
    async fn read(
        &self,
        scope: &str,
        id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError>;
    async fn put_switch(&self, switch: &KillSwitch) -> Result<(), StoreError>;
    async fn remove_switch(&self, id: &str) -> Result<bool, StoreError>;
    async fn switches(&self) -> Result<Vec<KillSwitch>, StoreError>;
}

/// KEYS[1] = enf hash, KEYS[2] = seq counter, KEYS[3] = outbox id → seq hash.
/// ARGV[1] = outbox id, [2] level, [3] reason, [4] rate_limit_rps ("" = none), [5] since,
/// [6] "1" when a person decides, [7] scope, [8] id, [9] ttl of the outbox map (s),
/// [10] pub/sub channel, [11] partner id, [12] previous level (as the decider saw it).
/// Returns {seq, applied (0|1), previous_was_held (0|1), produced (0|1), applied before
/// (0|1)}; an applied
/// decision is also published on the channel as JSON. `produced` says the outbox id's
/// enforcement-topic record was acknowledged before (see `mark_produced`). Validates
/// before writing.
const PUBLISH: &str = r#"
local produced = redis.call('HEXISTS', KEYS[3], ARGV[1] .. ':produced')
local before = redis.call('HEXISTS', KEYS[3], ARGV[1] .. ':applied')
local seq = redis.call('HGET', KEYS[3], ARGV[1])
if seq then
  seq = tonumber(seq)
else
  seq = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[3], ARGV[1], seq)
  redis.call('EXPIRE', KEYS[3], ARGV[9])
end
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local level = redis.call('HGET', KEYS[1], 'level')
local held = (level == 'killed' or level == 'terminated')
if before == 1 or seq <= cur then return {seq, 0, held and 1 or 0, produced, before} end
if held and ARGV[6] ~= '1' then return {seq, 0, 1, produced, before} end
redis.call('HSET', KEYS[3], ARGV[1] .. ':applied', 1)
local decision_id = ARGV[7] .. ':' .. ARGV[8] .. ':' .. seq
if ARGV[2] == 'ok' then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'level', ARGV[2], 'reason', ARGV[3], 'rate_limit_rps', ARGV[4],
    'since', ARGV[5], 'seq', seq, 'decision_id', decision_id)
end
local rps = cjson.null
if ARGV[4] ~= '' then rps = tonumber(ARGV[4]) end
redis.call('PUBLISH', ARGV[10], cjson.encode({decision_id = decision_id, scope = ARGV[7], id = ARGV[8],
  partner_id = ARGV[11], level = ARGV[2], previous = ARGV[12], reason = ARGV[3],
  rate_limit_rps = rps, seq = seq, decided_at = ARGV[5]}))
return {seq, 1, held and 1 or 0, produced, before}
"#;

/// KEYS[1] = enf hash; ARGV[1] = seq. Deletes only if the stored seq is still ARGV[1].
const LIFT_IF_SEQ: &str = r#"
if redis.call('HGET', KEYS[1], 'seq') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// Key names for the data plane, under the deployment's key prefix.
#[derive(Debug, Clone)]
pub struct DecisionKeys {
    prefix: String,
}

impl DecisionKeys {
    pub fn new(prefix: &str) -> Self {
        DecisionKeys {
            prefix: prefix.to_owned(),
        }
    }
    pub fn enf(&self, scope: &str, id: &str) -> String {
        format!("{}:enf:{scope}:{id}", self.prefix)
    }
    pub fn seq(&self, scope: &str, id: &str) -> String {
        format!("{}:enfseq:{scope}:{id}", self.prefix)
    }
    pub fn published(&self, scope: &str, id: &str) -> String {
        format!("{}:enfpub:{scope}:{id}", self.prefix)
    }
    /// The pub/sub channel gateways that cache subscribe to.
    pub fn channel(&self) -> String {
        format!("{}:enf", self.prefix)
    }
    pub fn switches(&self) -> String {
        format!("{}:killswitches", self.prefix)
    }
}

/// The `warden.enforcement.v1` record (CONTRACT §4) of a published decision: built only
/// from the write and its seq, so a re-publication has the same content.
pub fn decision_json(w: &DecisionWrite, seq: u64) -> String {
    serde_json::json!({
        "decision_id": format!("{}:{}:{seq}", w.scope, w.id),
        "scope": w.scope,
        "id": w.id,
        "partner_id": w.partner_id,
        "level": w.level,
        "previous": w.previous,
        "reason": w.reason,
        "rate_limit_rps": w.rate_limit_rps,
        "seq": seq,
        "decided_at": w.since,
    })
    .to_string()
}

/// Redis-backed data plane, sharing the state store's connection and timeout.
#[derive(Clone)]
pub struct RedisDecisions {
    store: RedisStore,
    keys: DecisionKeys,
    publish: std::sync::Arc<Script>,
    lift: std::sync::Arc<Script>,
}

impl RedisStore {
    pub fn decisions(&self) -> RedisDecisions {
        RedisDecisions {
            keys: DecisionKeys::new(self.keys.prefix()),
            store: self.clone(),
            publish: std::sync::Arc::new(Script::new(PUBLISH)),
            lift: std::sync::Arc::new(Script::new(LIFT_IF_SEQ)),
        }
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisDecisions {
    /// The keys and arguments of `PUBLISH` for one write.
    fn publish_call(&self, w: &DecisionWrite) -> ([String; 3], Vec<String>) {
        let keys = [
            self.keys.enf(&w.scope, &w.id),
            self.keys.seq(&w.scope, &w.id),
            self.keys.published(&w.scope, &w.id),
        ];
        let args: Vec<String> = vec![
            w.outbox_id.clone(),
            w.level.clone(),
            w.reason.clone(),
            w.rate_limit_rps.map(|r| r.to_string()).unwrap_or_default(),
            w.since.clone(),
            if w.by_person { "1".into() } else { "0".into() },
            w.scope.clone(),
            w.id.clone(),
            PUBLISHED_TTL_SECS.to_string(),
            self.keys.channel(),
            w.partner_id.clone(),
            w.previous.clone(),
        ];
        (keys, args)
    }
}

/// `PUBLISH`'s reply: {seq, applied, held, produced, applied before}.
fn published((seq, applied, held, produced, before): (u64, u8, u8, u8, u8)) -> Published {
    Published {
        seq,
        applied: applied == 1,
        previous_was_held: held == 1,
        produced: produced == 1,
        applied_before: before == 1,
    }
}

#[async_trait]
impl DecisionStore for RedisDecisions {
    async fn publish_many(&self, writes: &[DecisionWrite]) -> Result<Vec<Published>, StoreError> {
        if writes.len() < 2 {
            let mut out = Vec::with_capacity(1);
            for w in writes {
                out.push(self.publish(w).await?);
            }
            return Ok(out);
        }
        let script = self.publish.clone();
        let calls: Vec<([String; 3], Vec<String>)> =
            writes.iter().map(|w| self.publish_call(w)).collect();
        self.store
            .run("publish decisions", move |mut conn| async move {
                // In order, back to back: what one-by-one calls would do, in one round trip.
                let mut pipe = redis::pipe();
                pipe.load_script(&script).ignore();
                for (keys, args) in &calls {
                    let mut inv = script.key(&keys[..]);
                    for a in args {
                        inv.arg(a);
                    }
                    pipe.invoke_script(&inv);
                }
                let replies: Vec<(u64, u8, u8, u8, u8)> =
                    pipe.query_async(&mut conn).await.map_err(unavailable)?;
                Ok(replies.into_iter().map(published).collect())
            })
            .await
    }

    async fn publish(&self, w: &DecisionWrite) -> Result<Published, StoreError> {
        let script = self.publish.clone();
        let (keys, args) = self.publish_call(w);
        self.store
            .run("publish decision", move |mut conn| async move {
                let mut inv = script.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                for a in &args {
                    inv.arg(a);
                }
                let reply: (u64, u8, u8, u8, u8) =
                    inv.invoke_async(&mut conn).await.map_err(unavailable)?;
                Ok(published(reply))
            })
            .await
    }

    async fn mark_produced(&self, writes: &[DecisionWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let marks: Vec<(String, String)> = writes
            .iter()
            .map(|w| {
                (
                    self.keys.published(&w.scope, &w.id),
                    format!("{}:produced", w.outbox_id),
                )
            })
            .collect();
        self.store
            .run("mark produced", move |mut conn| async move {
                let mut pipe = redis::pipe();
                for (key, field) in &marks {
                    pipe.hset(key, field, 1).ignore();
                }
                pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
            })
            .await
    }

    async fn lift_if_seq(&self, scope: &str, id: &str, seq: u64) -> Result<bool, StoreError> {
        let script = self.lift.clone();
        let key = self.keys.enf(scope, id);
        self.store
            .run("lift decision", move |mut conn| async move {
                let deleted: u8 = script
                    .key(&key)
                    .arg(seq)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                Ok(deleted == 1)
            })
            .await
    }

    async fn read(
        &self,
        scope: &str,
        id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        let key = self.keys.enf(scope, id);
        self.store
            .run("read decision", move |mut conn| async move {
                let map: BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                Ok((!map.is_empty()).then_some(map))
            })
            .await
    }

    async fn put_switch(&self, s: &KillSwitch) -> Result<(), StoreError> {
        let key = self.keys.switches();
        let (id, json) = (
            s.id.clone(),
            serde_json::to_string(s).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        );
        self.store
            .run("put kill switch", move |mut conn| async move {
                let _: () = redis::cmd("HSET")
                    .arg(&key)
                    .arg(&id)
                    .arg(&json)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                Ok(())
            })
            .await
    }

    async fn remove_switch(&self, id: &str) -> Result<bool, StoreError> {
        let key = self.keys.switches();
        let id = id.to_owned();
        self.store
            .run("remove kill switch", move |mut conn| async move {
                let n: u64 = redis::cmd("HDEL")
                    .arg(&key)
                    .arg(&id)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                Ok(n == 1)
            })
            .await
    }

    async fn switches(&self) -> Result<Vec<KillSwitch>, StoreError> {
        let key = self.keys.switches();
        self.store
            .run("list kill switches", move |mut conn| async move {
                let map: HashMap<String, String> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                map.values()
                    .map(|v| {
                        serde_json::from_str(v)
                            .map_err(|e| StoreError::Corrupt(format!("kill switch: {e}")))
                    })
                    .collect()
            })
            .await
    }
}

/// In-memory data plane for the embedded mode, with the same rules as the Lua scripts.
#[derive(Debug, Default)]
pub struct MemoryDecisions {
    inner: Mutex<MemoryPlane>,
}

#[derive(Debug, Default)]
struct MemoryPlane {
    keys: HashMap<(String, String), BTreeMap<String, String>>,
    counters: HashMap<(String, String), u64>,
    published: HashMap<String, u64>,
    produced: std::collections::HashSet<String>,
    applied: std::collections::HashSet<String>,
    switches: BTreeMap<String, KillSwitch>,
}

#[async_trait]
impl DecisionStore for MemoryDecisions {
    async fn mark_produced(&self, writes: &[DecisionWrite]) -> Result<(), StoreError> {
        let mut p = self.inner.lock();
        for w in writes {
            p.produced.insert(w.outbox_id.clone());
        }
        Ok(())
    }

    async fn publish(&self, w: &DecisionWrite) -> Result<Published, StoreError> {
        let mut p = self.inner.lock();
        let produced = p.produced.contains(&w.outbox_id);
        let applied_before = p.applied.contains(&w.outbox_id);
        let target = (w.scope.clone(), w.id.clone());
        let seq = match p.published.get(&w.outbox_id) {
            Some(s) => *s,
            None => {
                let c = p.counters.entry(target.clone()).or_default();
                *c += 1;
                let s = *c;
                p.published.insert(w.outbox_id.clone(), s);
                s
            }
        };
        let current = p.keys.get(&target);
        let cur_seq = current
            .and_then(|m| m.get("seq"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let held = current
            .and_then(|m| m.get("level"))
            .is_some_and(|l| l == "killed" || l == "terminated");
        if applied_before || seq <= cur_seq || (held && !w.by_person) {
            return Ok(Published {
                seq,
                applied: false,
                previous_was_held: held,
                produced,
                applied_before,
            });
        }
        if w.level == "ok" {
            p.keys.remove(&target);
        } else {
            let mut m = BTreeMap::new();
            m.insert("level".into(), w.level.clone());
            m.insert("reason".into(), w.reason.clone());
            m.insert(
                "rate_limit_rps".into(),
                w.rate_limit_rps.map(|r| r.to_string()).unwrap_or_default(),
            );
            m.insert("since".into(), w.since.clone());
            m.insert("seq".into(), seq.to_string());
            m.insert("decision_id".into(), format!("{}:{}:{seq}", w.scope, w.id));
            p.keys.insert(target, m);
        }
        p.applied.insert(w.outbox_id.clone());
        Ok(Published {
            seq,
            applied: true,
            previous_was_held: held,
            produced,
            applied_before,
        })
    }

    async fn lift_if_seq(&self, scope: &str, id: &str, seq: u64) -> Result<bool, StoreError> {
        let mut p = self.inner.lock();
        let target = (scope.to_owned(), id.to_owned());
        let matches = p
            .keys
            .get(&target)
            .and_then(|m| m.get("seq"))
            .is_some_and(|s| *s == seq.to_string());
        if matches {
            p.keys.remove(&target);
        }
        Ok(matches)
    }

    async fn read(
        &self,
        scope: &str,
        id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        Ok(self
            .inner
            .lock()
            .keys
            .get(&(scope.to_owned(), id.to_owned()))
            .cloned())
    }

    async fn put_switch(&self, s: &KillSwitch) -> Result<(), StoreError> {
        self.inner.lock().switches.insert(s.id.clone(), s.clone());
        Ok(())
    }

    async fn remove_switch(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.inner.lock().switches.remove(id).is_some())
    }

    async fn switches(&self) -> Result<Vec<KillSwitch>, StoreError> {
        Ok(self.inner.lock().switches.values().cloned().collect())
    }
}
