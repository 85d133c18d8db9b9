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
//! - a person's manual level is replaced by the ladder only with a stricter level: an
//!   owner's decision at or below it is refused (and noted for a kill switch's lift);
//! - no key means `ok`: a decision back to `ok` deletes the hash;
//! - a person's decision is kept, in the write that applies it, until its enforcement-topic
//!   record is acknowledged (a kill switch in the switch registry, a manual level among
//!   the pending records), so a record the broker did not take is sent later, even by
//!   another instance or after a restart, and no `decision_id` goes missing.
//!
//! Keys of one target are not hash-tagged because the contract fixes the gateway's key
//! name; on Redis Cluster the script's three keys (four for a person's decision: the
//! switch registry and the pending records are one key each for the deployment) must then
//! be co-located by the operator (documented limit), unlike partition state and the audit
//! chain, which are hash-tagged.

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
    /// The level its `killed` decision replaced: with `created_at` (its `decided_at`), what
    /// a re-publication of that decision's record needs to have the same content. `None`
    /// for a switch registered before it was kept (its record was acknowledged first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// When its lift reached the data plane (the lift's `decided_at`), while the lift's
    /// record waits for the broker: the switch is no longer active, and is removed from the
    /// registry once that record is acknowledged. Without `lift_seq`: when a lift found it
    /// holding nothing (a later decision replaced its `killed`) or handed its hold to
    /// another switch still active on the target; nothing was written to the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifted_at: Option<String>,
    /// The seq of the key this switch holds when it is not its own: another switch on the
    /// same target, lifted while this one was active, handed its hold over (the key stays
    /// `killed` until the last active switch on a target is lifted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_seq: Option<u64>,
    /// The seq of the lift's `ok` decision, with `lifted_at`: the lift's record is rebuilt
    /// from the two, whatever happened to the outbox map meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lift_seq: Option<u64>,
    /// What the lift wrote (level, reason, rate; "" = no rate), noted with `lift_seq`: the
    /// level its owner had decided, or the termination the switch was set over, so its
    /// record is rebuilt with the content it was applied with. `None` for a lift noted
    /// before they were kept (it wrote `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lift_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lift_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lift_rps: Option<String>,
}

/// A level with its reason and rate, as a decision writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerLevel {
    pub level: String,
    pub reason: String,
    pub rate_limit_rps: Option<u64>,
}

/// What lies under a kill switch, kept by `PUBLISH` in `<prefix>:enfbase:<scope>:<id>`
/// whatever held the key meanwhile: what its lift puts back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiftBase {
    /// The level the target's owner last decided, applied or refused (a switch held the
    /// key); `None` when it never decided one, or its last was `ok` long enough ago to be
    /// forgotten.
    pub owner: Option<OwnerLevel>,
    /// A person's `terminated` is in force (set by a manual level, lifted only by another).
    pub terminated: bool,
    /// A person's manual level (reason `manual`) that no stricter owner decision has
    /// replaced since: it holds against the owner's milder ones.
    pub manual: Option<OwnerLevel>,
    /// The seq of the owner's decision noted (0: none): a lift passes it back, so a
    /// decision noted in between makes the lift read the base again.
    pub seq: u64,
}

/// A person's decision whose enforcement-topic record the broker has not acknowledged
/// yet, as kept in the store with the seq its write got: enough to rebuild the record
/// with the content it was first sent with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    #[serde(flatten)]
    pub write: DecisionWrite,
    pub seq: u64,
}

/// What [`DecisionStore::publish_lift`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiftWrite {
    /// A later decision had replaced the switch's `killed`: nothing was written.
    Superseded,
    /// The target's owner decided since the lift's level was read (the `base_seq` given no
    /// longer matches [`LiftBase::seq`]): nothing was written; read the base again.
    BaseMoved,
    /// The lift is in the data plane, applied by this call or an earlier one.
    /// `lifted_at` is the lift's time as the registry keeps it after the call: `None`
    /// when the switch is no longer registered (a lifter finished the lift already).
    Lifted {
        published: Published,
        lifted_at: Option<String>,
    },
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
    /// Whether `write`'s record was marked produced (and the mark has not expired).
    async fn is_produced(&self, write: &DecisionWrite) -> Result<bool, StoreError>;
    /// [`Self::publish`] of a kill switch's `killed` decision that also registers `switch`
    /// (with the seq the write got) in the same atomic write, so a target is never held at
    /// `killed` by a switch the registry does not know: one nobody could list, lift, or
    /// see expire. A re-publication (a known outbox id) leaves the registry as it is.
    async fn publish_switch(
        &self,
        write: &DecisionWrite,
        switch: &KillSwitch,
    ) -> Result<Published, StoreError>;
    /// [`Self::publish`] of the `ok` decision lifting the switch `switch_id`, only while the
    /// key still holds that switch's `killed` (its seq is `kill_seq`); nothing is written
    /// when a later decision replaced it. Applied, it also notes the lift's time
    /// (`write.since`), seq and what it wrote on the switch (`lifted_at`, `lift_seq`,
    /// `lift_level`, `lift_reason`, `lift_rps`). A
    /// re-publication (a known outbox id) answers as [`Self::publish`] does, whatever the
    /// key holds now.
    async fn publish_lift(
        &self,
        write: &DecisionWrite,
        switch_id: &str,
        kill_seq: u64,
        base_seq: Option<u64>,
    ) -> Result<LiftWrite, StoreError>;
    /// [`Self::publish`] of a person's decision (manual enforcement) that also keeps it,
    /// with the seq the write got, among the pending records in the same atomic write, so
    /// a decision in force always has its record sent: by this request, or later by any
    /// instance ([`Self::pending_records`]). A re-publication leaves them as they are.
    /// A first write happens only while the key still holds `expected_seq` (0: no key), the
    /// decision its person saw: otherwise nothing is written and the seq answered is 0, so
    /// a kill switch or a termination set meanwhile is never replaced unseen.
    async fn publish_pending(
        &self,
        write: &DecisionWrite,
        expected_seq: u64,
    ) -> Result<Published, StoreError>;
    /// The person's decisions whose records are not known to be acknowledged.
    async fn pending_records(&self) -> Result<Vec<PendingRecord>, StoreError>;
    /// Forgets a pending record once the broker acknowledged it.
    async fn remove_pending(&self, outbox_id: &str) -> Result<(), StoreError>;
    /// What a kill switch's lift puts back on the target (see [`LiftBase`]).
    async fn lift_base(&self, scope: &str, id: &str) -> Result<LiftBase, StoreError>;
    /// The hash a gateway reads, if any.
    async fn read(
        &self,
        scope: &str,
        id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError>;
    /// [`read`](Self::read) of each of `ids`, in order (one round trip per 1,000 on Redis).
    async fn read_many(
        &self,
        scope: &str,
        ids: &[String],
    ) -> Result<Vec<Option<BTreeMap<String, String>>>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.read(scope, id).await?);
        }
        Ok(out)
    }
    async fn remove_switch(&self, id: &str) -> Result<bool, StoreError>;
    async fn switches(&self) -> Result<Vec<KillSwitch>, StoreError>;
}

/// KEYS[1] = enf hash, KEYS[2] = seq counter, KEYS[3] = outbox id → seq hash, KEYS[4] =
/// what a lift puts back (see [`LiftBase`]: an owner's decision notes itself there,
/// applied or refused, when its seq is the newest noted, and drops a person's manual level
/// below it; a person's applied manual level notes or clears `terminated` and
/// `manual_level`), and for a person's decision KEYS[5] = a registry hash:
/// the kill-switch registry, or the pending records of manual levels.
/// ARGV[1] = outbox id, [2] level, [3] reason, [4] rate_limit_rps ("" = none), [5] since,
/// [6] "1" when a person decides, [7] scope, [8] id, [9] ttl of the outbox map (s),
/// [10] pub/sub channel, [11] partner id, [12] previous level (as the decider saw it);
/// with KEYS[5]: [13] the seq the key must still hold for a first write ("" = any),
/// [14] the entry's field, [15] a JSON object to register there with this write's seq
/// ("" = note `lifted_at` = ARGV[5], `lift_seq` and the level, reason and rate written,
/// as `lift_level`, `lift_reason`, `lift_rps`, on the registered entry instead), [16] for
/// a lift, the `seq` of KEYS[4] its level was read from ("" = not checked): if the owner
/// decided since, nothing is written and the reply's last element is 1 (read it again).
/// Returns {seq, applied (0|1), previous_was_held (0|1), produced (0|1), applied before
/// (0|1)}, seq 0 when the key no longer held ARGV[13] (nothing written); with KEYS[5] also
/// the entry's `lifted_at` after the call ("" = none), whether it is registered (0|1), and
/// whether a lift's base moved (0|1, see ARGV[16]).
/// An applied decision is also published on the channel as JSON. `produced` says the outbox id's
/// enforcement-topic record was acknowledged before (see `mark_produced`). Validates
/// before writing.
const PUBLISH: &str = r#"
local registry = #KEYS == 5
if #ARGV ~= (registry and 16 or 12) then
  return redis.error_reply('ERR warden publish: wrong number of arguments')
end
-- The entry to register, or the registered one a lift notes itself on: read before any
-- write, so an entry that is not a JSON object fails the script having written nothing.
local entry = nil
if registry then
  local raw = ARGV[15]
  if raw == '' then raw = redis.call('HGET', KEYS[5], ARGV[14]) end
  if raw then
    local ok, decoded = pcall(cjson.decode, raw)
    if not ok or type(decoded) ~= 'table' or not pcall(cjson.encode, decoded) then
      return redis.error_reply('ERR warden publish: registry entry ' .. ARGV[14] .. ' is not a JSON object')
    end
    entry = decoded
  end
end
local function reply(seq, applied, held, produced, before, stale)
  if not registry then return {seq, applied, held, produced, before} end
  local lifted_at = ''
  if entry and type(entry.lifted_at) == 'string' then lifted_at = entry.lifted_at end
  return {seq, applied, held, produced, before, lifted_at, entry and 1 or 0, stale or 0}
end
local RANKS = {ok = 0, warn = 1, throttle = 2, suspend = 3, terminated = 4, killed = 5}
local function rank(l) return RANKS[l] or 0 end
-- The lift base is kept while it holds something a lift would put back.
local function keep_base()
  local owner = redis.call('HGET', KEYS[4], 'level')
  local manual = redis.call('HGET', KEYS[4], 'manual_level')
  if redis.call('HEXISTS', KEYS[4], 'terminated') == 1
    or (manual and manual ~= 'ok') or (owner and owner ~= 'ok') then
    redis.call('PERSIST', KEYS[4])
  else
    redis.call('EXPIRE', KEYS[4], ARGV[9])
  end
end
local produced = redis.call('HEXISTS', KEYS[3], ARGV[1] .. ':produced')
local before = redis.call('HEXISTS', KEYS[3], ARGV[1] .. ':applied')
local stored = redis.call('HGET', KEYS[1], 'seq')
local cur = tonumber(stored or '0')
local level = redis.call('HGET', KEYS[1], 'level')
-- What the ladder may not replace with this level: a kill or a termination, or a
-- person's manual level unless this one is stricter.
-- The ladder calming down (a step below the level the owner believed in force, with
-- reason `calm`: no signal holds the lower level) never raises the key: the key is below
-- the owner's belief where a person set it lower (a manual level, `ok` included), and
-- calming is no reason to overrule them. A step down that a signal, a quota, burst,
-- credits or pilot level holds names that cause: it is evidence, and applies.
local calming = ARGV[6] ~= '1' and rank(ARGV[2]) < rank(ARGV[12]) and ARGV[3] == 'calm'
-- An owner deciding the level it believes in force again (a throttle's new rate) only
-- refreshes the key where that level is in force: where a person has set another level
-- (`ok` included: no key), a new rate is no reason to put the owner's level back.
local refreshing = ARGV[6] ~= '1' and ARGV[2] == 'throttle' and ARGV[12] == 'throttle'
local held = (level == 'killed' or level == 'terminated')
  or (level and redis.call('HGET', KEYS[1], 'reason') == 'manual' and rank(ARGV[2]) <= rank(level))
  or (calming and rank(ARGV[2]) > rank(level or 'ok'))
  or (refreshing and (level or 'ok') ~= ARGV[2])
local seq = redis.call('HGET', KEYS[3], ARGV[1])
-- A known outbox id was applied (`before`) or refused when first written: either way a
-- re-publication changes nothing. The key's seq alone cannot tell, since a later `ok`
-- may have deleted the key (and its seq) since.
local known = seq ~= false
if seq then
  seq = tonumber(seq)
else
  -- A lift (a switch's registry entry, nothing to register) compares the key with the
  -- seq its switch holds: its own, or one handed over by another switch's lift.
  -- A first lift of a switch no longer registered: another lifter finished it (handed its
  -- hold over, or found it superseded) and removed it: nothing is left to lift.
  if registry and ARGV[15] == '' and entry == nil then
    return reply(0, 0, held and 1 or 0, produced, before)
  end
  local lifting = registry and ARGV[15] == ''
  local expect = ARGV[13]
  if lifting and entry.hold_seq then expect = tostring(entry.hold_seq) end
  if registry and expect ~= '' and (stored or '0') ~= expect then
    if lifting then
      -- Superseded: the switch holds nothing any more, so it is no longer active.
      entry.lifted_at = ARGV[5]
      redis.call('HSET', KEYS[5], ARGV[14], cjson.encode(entry))
    end
    return reply(0, 0, held and 1 or 0, produced, before)
  end
  if lifting then
    -- Other switches still active on the target keep it killed: they take the hold over,
    -- and this switch is lifted with nothing written to the key.
    local others = {}
    local all = redis.call('HGETALL', KEYS[5])
    for i = 1, #all, 2 do
      if all[i] ~= ARGV[14] then
        local ok, other = pcall(cjson.decode, all[i + 1])
        if ok and type(other) == 'table' and other.scope == ARGV[7] and other.target == ARGV[8]
          and type(other.lifted_at) ~= 'string' then
          other.hold_seq = cur
          others[#others + 1] = {all[i], other}
        end
      end
    end
    if #others > 0 then
      for _, o in ipairs(others) do redis.call('HSET', KEYS[5], o[1], cjson.encode(o[2])) end
      entry.lifted_at = ARGV[5]
      redis.call('HSET', KEYS[5], ARGV[14], cjson.encode(entry))
      return reply(0, 0, held and 1 or 0, produced, before)
    end
  end
  if lifting and ARGV[16] ~= '' and (redis.call('HGET', KEYS[4], 'seq') or '0') ~= ARGV[16] then
    -- The owner decided since the lift read what to put back: it reads it again.
    return reply(0, 0, held and 1 or 0, produced, before, 1)
  end
  seq = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[3], ARGV[1], seq)
  redis.call('EXPIRE', KEYS[3], ARGV[9])
end
if ARGV[6] ~= '1' then
  -- What the owner last decided, refused or not: a person's lift puts it back.
  local noted = tonumber(redis.call('HGET', KEYS[4], 'seq') or '0')
  if seq > noted then
    redis.call('HSET', KEYS[4], 'level', ARGV[2], 'reason', ARGV[3], 'rate_limit_rps', ARGV[4],
      'seq', seq)
    -- A stricter level replaces a person's manual one (or would, under a switch); a calm
    -- step does not (see `calming`), nor a refresh (see `refreshing`).
    local manual_level = redis.call('HGET', KEYS[4], 'manual_level')
    if manual_level and not calming and not refreshing and rank(ARGV[2]) > rank(manual_level) then
      redis.call('HDEL', KEYS[4], 'manual_level', 'manual_rps')
    end
    keep_base()
  end
end
if known or seq <= cur then return reply(seq, 0, held and 1 or 0, produced, before) end
if held and ARGV[6] ~= '1' then return reply(seq, 0, 1, produced, before) end
if entry then
  if ARGV[15] ~= '' then
    entry.seq = seq
  else
    entry.lifted_at = ARGV[5]
    entry.lift_seq = seq
    entry.lift_level = ARGV[2]
    entry.lift_reason = ARGV[3]
    entry.lift_rps = ARGV[4]
  end
  redis.call('HSET', KEYS[5], ARGV[14], cjson.encode(entry))
end
if ARGV[6] == '1' and ARGV[3] == 'manual' then
  -- A person's own level: a termination, or a manual level the ladder has not replaced,
  -- is what a kill switch's lift puts back.
  if ARGV[2] == 'terminated' then
    redis.call('HSET', KEYS[4], 'terminated', 1)
  else
    redis.call('HDEL', KEYS[4], 'terminated')
  end
  if ARGV[2] == 'terminated' then
    redis.call('HDEL', KEYS[4], 'manual_level', 'manual_rps')
  else
    -- `ok` too: it stands against calm steps, and a lift puts it back.
    redis.call('HSET', KEYS[4], 'manual_level', ARGV[2], 'manual_rps', ARGV[4])
  end
  keep_base()
end
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
return reply(seq, 1, held and 1 or 0, produced, before)
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
    /// What a kill switch's lift puts back (see [`LiftBase`]).
    pub fn base(&self, scope: &str, id: &str) -> String {
        format!("{}:enfbase:{scope}:{id}", self.prefix)
    }
    /// The pub/sub channel gateways that cache subscribe to.
    pub fn channel(&self) -> String {
        format!("{}:enf", self.prefix)
    }
    pub fn switches(&self) -> String {
        format!("{}:killswitches", self.prefix)
    }
    /// Manual levels whose enforcement-topic record waits for the broker.
    pub fn pending(&self) -> String {
        format!("{}:enfpending", self.prefix)
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
}

impl RedisStore {
    pub fn decisions(&self) -> RedisDecisions {
        RedisDecisions {
            keys: DecisionKeys::new(self.keys.prefix()),
            store: self.clone(),
            publish: std::sync::Arc::new(Script::new(PUBLISH)),
        }
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisDecisions {
    /// The keys and arguments of `PUBLISH` for one write.
    fn publish_call(&self, w: &DecisionWrite) -> ([String; 4], Vec<String>) {
        let keys = [
            self.keys.enf(&w.scope, &w.id),
            self.keys.seq(&w.scope, &w.id),
            self.keys.published(&w.scope, &w.id),
            self.keys.base(&w.scope, &w.id),
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

    /// The keys and arguments of `PUBLISH` for a person's decision: the registry key and
    /// ARGV[13..15] after the write's own (see the script).
    fn registry_call(
        &self,
        w: &DecisionWrite,
        registry: String,
        expected_seq: &str,
        entry_id: &str,
        entry_json: String,
        base_seq: Option<u64>,
    ) -> (Vec<String>, Vec<String>) {
        let (keys, mut args) = self.publish_call(w);
        let mut keys = keys.to_vec();
        keys.push(registry);
        let base = base_seq.map(|b| b.to_string()).unwrap_or_default();
        args.extend([
            expected_seq.to_owned(),
            entry_id.to_owned(),
            entry_json,
            base,
        ]);
        (keys, args)
    }

    /// Runs `PUBLISH` with `keys` and `args`; `R` is the reply's shape (see the script).
    async fn invoke_publish<R: redis::FromRedisValue + Send + 'static>(
        &self,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, StoreError> {
        let script = self.publish.clone();
        self.store
            .run("publish decision", move |mut conn| async move {
                let mut inv = script.prepare_invoke();
                inv.key(&keys[..]).arg(&args[..]);
                inv.invoke_async(&mut conn).await.map_err(unavailable)
            })
            .await
    }

    /// `PUBLISH` with a registry key: what it did, the entry's `lifted_at` after it
    /// ("" = none), whether the entry is registered, and whether a lift's base moved.
    async fn invoke_registry(
        &self,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<(Published, String, bool, bool), StoreError> {
        type Reply = (u64, u8, u8, u8, u8, String, u8, u8);
        let (seq, applied, held, produced, before, lifted_at, registered, stale): Reply =
            self.invoke_publish(keys, args).await?;
        let p = published((seq, applied, held, produced, before));
        Ok((p, lifted_at, registered == 1, stale == 1))
    }
}

/// A lift's outcome from what `PUBLISH` answered (seq 0: refused) and the switch's
/// `lifted_at` as registered after it (`None`: not registered; `Some("")`: no lift noted).
fn lift_write(published: Published, lifted_at: Option<String>, stale: bool) -> LiftWrite {
    if stale {
        return LiftWrite::BaseMoved;
    }
    if published.seq == 0 {
        return LiftWrite::Superseded;
    }
    LiftWrite::Lifted {
        published,
        lifted_at: lifted_at.filter(|at| !at.is_empty()),
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
        let calls: Vec<([String; 4], Vec<String>)> =
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
        let (keys, args) = self.publish_call(w);
        let reply: (u64, u8, u8, u8, u8) = self.invoke_publish(keys.to_vec(), args).await?;
        Ok(published(reply))
    }

    async fn publish_switch(
        &self,
        w: &DecisionWrite,
        switch: &KillSwitch,
    ) -> Result<Published, StoreError> {
        let json = serde_json::to_string(switch).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (keys, args) = self.registry_call(w, self.keys.switches(), "", &switch.id, json, None);
        Ok(self.invoke_registry(keys, args).await?.0)
    }

    async fn publish_lift(
        &self,
        w: &DecisionWrite,
        switch_id: &str,
        kill_seq: u64,
        base_seq: Option<u64>,
    ) -> Result<LiftWrite, StoreError> {
        let (keys, args) = self.registry_call(
            w,
            self.keys.switches(),
            &kill_seq.to_string(),
            switch_id,
            String::new(),
            base_seq,
        );
        let (published, lifted_at, registered, stale) = self.invoke_registry(keys, args).await?;
        Ok(lift_write(
            published,
            registered.then_some(lifted_at),
            stale,
        ))
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

    async fn is_produced(&self, w: &DecisionWrite) -> Result<bool, StoreError> {
        let key = self.keys.published(&w.scope, &w.id);
        let field = format!("{}:produced", w.outbox_id);
        self.store
            .run("is produced", move |mut conn| async move {
                let found: bool = redis::cmd("HEXISTS")
                    .arg(&key)
                    .arg(&field)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                Ok(found)
            })
            .await
    }

    async fn lift_base(&self, scope: &str, id: &str) -> Result<LiftBase, StoreError> {
        let key = self.keys.base(scope, id);
        let map: HashMap<String, String> = self.store.hash("read lift base", key).await?;
        Ok(lift_base_of(&map))
    }

    async fn read(
        &self,
        scope: &str,
        id: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        let key = self.keys.enf(scope, id);
        let map: BTreeMap<String, String> = self.store.hash("read decision", key).await?;
        Ok((!map.is_empty()).then_some(map))
    }

    async fn read_many(
        &self,
        scope: &str,
        ids: &[String],
    ) -> Result<Vec<Option<BTreeMap<String, String>>>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1_000) {
            let keys: Vec<String> = chunk.iter().map(|id| self.keys.enf(scope, id)).collect();
            let maps: Vec<BTreeMap<String, String>> = self
                .store
                .run("read decisions", move |mut conn| async move {
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.hgetall(key);
                    }
                    pipe.query_async(&mut conn).await.map_err(unavailable)
                })
                .await?;
            out.extend(maps.into_iter().map(|m| (!m.is_empty()).then_some(m)));
        }
        Ok(out)
    }

    async fn publish_pending(
        &self,
        w: &DecisionWrite,
        expected_seq: u64,
    ) -> Result<Published, StoreError> {
        // `seq` is set by the script; 0 here only to give the entry its shape.
        let entry = PendingRecord {
            write: w.clone(),
            seq: 0,
        };
        let json = serde_json::to_string(&entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let expected = expected_seq.to_string();
        let (keys, args) =
            self.registry_call(w, self.keys.pending(), &expected, &w.outbox_id, json, None);
        Ok(self.invoke_registry(keys, args).await?.0)
    }

    async fn pending_records(&self) -> Result<Vec<PendingRecord>, StoreError> {
        let what = ("list pending records", "pending record");
        self.registry_entries(self.keys.pending(), what).await
    }

    async fn remove_pending(&self, outbox_id: &str) -> Result<(), StoreError> {
        self.registry_remove(self.keys.pending(), outbox_id, "remove pending record")
            .await
            .map(|_| ())
    }

    async fn remove_switch(&self, id: &str) -> Result<bool, StoreError> {
        self.registry_remove(self.keys.switches(), id, "remove kill switch")
            .await
    }

    async fn switches(&self) -> Result<Vec<KillSwitch>, StoreError> {
        let what = ("list kill switches", "kill switch");
        self.registry_entries(self.keys.switches(), what).await
    }
}

impl RedisDecisions {
    /// The entries of a registry hash (kill switches, pending records) that decode;
    /// `what` names the operation and an entry, for errors and logs.
    async fn registry_entries<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: String,
        (operation, entry): (&'static str, &'static str),
    ) -> Result<Vec<T>, StoreError> {
        let map: HashMap<String, String> = self.store.hash(operation, key).await?;
        Ok(readable_entries(&map, entry))
    }

    /// Removes `field` from a registry hash; whether it was there.
    async fn registry_remove(
        &self,
        key: String,
        field: &str,
        what: &'static str,
    ) -> Result<bool, StoreError> {
        let field = field.to_owned();
        self.store
            .run(what, move |mut conn| async move {
                let n: u64 = redis::cmd("HDEL")
                    .arg(&key)
                    .arg(&field)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                Ok(n == 1)
            })
            .await
    }
}

/// The lift base as noted by `PUBLISH`.
fn lift_base_of(map: &HashMap<String, String>) -> LiftBase {
    LiftBase {
        owner: map.get("level").map(|level| OwnerLevel {
            level: level.clone(),
            reason: map.get("reason").cloned().unwrap_or_default(),
            rate_limit_rps: map.get("rate_limit_rps").and_then(|r| r.parse().ok()),
        }),
        terminated: map.contains_key("terminated"),
        manual: map.get("manual_level").map(|level| OwnerLevel {
            level: level.clone(),
            reason: "manual".into(),
            rate_limit_rps: map.get("manual_rps").and_then(|r| r.parse().ok()),
        }),
        seq: map.get("seq").and_then(|s| s.parse().ok()).unwrap_or(0),
    }
}

/// A registry hash's entries that decode. An entry warden did not write is left out (and
/// logged), not fatal: it would otherwise stop every TTL lift, the list and every DELETE,
/// or every pending record behind it.
fn readable_entries<T: serde::de::DeserializeOwned>(
    map: &HashMap<String, String>,
    what: &str,
) -> Vec<T> {
    map.iter()
        .filter_map(|(id, v)| match serde_json::from_str(v) {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::error!(entry = %id, error = %e, "{what} entry unreadable; left out");
                None
            }
        })
        .collect()
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
    pending: BTreeMap<String, PendingRecord>,
    /// The owner's last level per target, with its seq.
    owner: HashMap<(String, String), (u64, OwnerLevel)>,
    /// Targets a person's manual `terminated` holds.
    terminated: std::collections::HashSet<(String, String)>,
    /// A person's manual level per target that no stricter owner level replaced since.
    manual: HashMap<(String, String), OwnerLevel>,
}

/// How strict a level is: its place in the domain's order, which `PUBLISH`'s `RANKS`
/// spells out (an unknown level ranks as `ok`).
fn rank(level: &str) -> usize {
    use crate::domain::enforcement::Level;
    Level::ALL
        .iter()
        .position(|l| l.as_str() == level)
        .unwrap_or(0)
}

/// The key seq a switch's lift compares with: its own `killed`'s, or one handed over.
fn held_seq(switch: &KillSwitch, kill_seq: u64) -> u64 {
    switch.hold_seq.unwrap_or(kill_seq)
}

impl MemoryPlane {
    /// The seq the key of `target` holds (0: no key).
    fn key_seq(&self, target: &(String, String)) -> u64 {
        self.keys
            .get(target)
            .and_then(|m| m.get("seq"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    }

    /// What `PUBLISH` does for a first lift before it writes (see the script): a switch
    /// that no longer holds the key (its own seq, or one handed over), or one with other
    /// switches still active on its target (they take the hold over), is lifted with
    /// nothing written to the key. `None`: the lift goes on to write.
    fn lift_without_writing(
        &mut self,
        w: &DecisionWrite,
        switch_id: &str,
        kill_seq: u64,
    ) -> Option<LiftWrite> {
        // No longer registered: another lifter finished it; nothing is left to lift.
        let Some(switch) = self.switches.get(switch_id) else {
            return Some(LiftWrite::Superseded);
        };
        let expected = held_seq(switch, kill_seq);
        let cur_seq = self.key_seq(&(w.scope.clone(), w.id.clone()));
        let others: Vec<String> = self
            .switches
            .values()
            .filter(|s| s.id != switch_id && s.scope == w.scope && s.target == w.id)
            .filter(|s| s.lifted_at.is_none())
            .map(|s| s.id.clone())
            .collect();
        if expected == cur_seq && others.is_empty() {
            return None;
        }
        if expected == cur_seq {
            for id in others {
                if let Some(s) = self.switches.get_mut(&id) {
                    s.hold_seq = Some(cur_seq);
                }
            }
        }
        if let Some(s) = self.switches.get_mut(switch_id) {
            s.lifted_at = Some(w.since.clone());
        }
        Some(LiftWrite::Superseded)
    }

    /// What `PUBLISH` does (see the script); seq 0 when `expected_seq` no longer held.
    fn publish(&mut self, w: &DecisionWrite, expected_seq: Option<u64>) -> Published {
        let produced = self.produced.contains(&w.outbox_id);
        let applied_before = self.applied.contains(&w.outbox_id);
        let target = (w.scope.clone(), w.id.clone());
        let cur_seq = self.key_seq(&target);
        let current = self.keys.get(&target);
        let key_level = current
            .and_then(|m| m.get("level"))
            .map_or("ok", String::as_str);
        let manual = current.is_some_and(|m| m.get("reason").is_some_and(|r| r == "manual"));
        // The ladder calming down never raises the key (see the script's `calming`).
        let calming = !w.by_person && rank(&w.level) < rank(&w.previous) && w.reason == "calm";
        // A throttle's new rate refreshes only a key at that level (see `refreshing`).
        let refreshing = !w.by_person && w.level == "throttle" && w.previous == "throttle";
        // What the ladder may not replace with this level: a kill or a termination, a
        // person's manual level unless this one is stricter, a level a calm step would
        // raise, or another level than the one a refresh is for.
        let held = key_level == "killed"
            || key_level == "terminated"
            || (manual && rank(&w.level) <= rank(key_level))
            || (calming && rank(&w.level) > rank(key_level))
            || (refreshing && key_level != w.level);
        let known = self.published.contains_key(&w.outbox_id);
        let seq = match self.published.get(&w.outbox_id) {
            Some(s) => *s,
            None if expected_seq.is_some_and(|e| e != cur_seq) => {
                return Published {
                    seq: 0,
                    applied: false,
                    previous_was_held: held,
                    produced,
                    applied_before,
                };
            }
            None => {
                let c = self.counters.entry(target.clone()).or_default();
                *c += 1;
                let s = *c;
                self.published.insert(w.outbox_id.clone(), s);
                s
            }
        };
        if !w.by_person
            && self
                .owner
                .get(&target)
                .is_none_or(|(noted, _)| seq > *noted)
        {
            let level = OwnerLevel {
                level: w.level.clone(),
                reason: w.reason.clone(),
                rate_limit_rps: w.rate_limit_rps,
            };
            self.owner.insert(target.clone(), (seq, level));
            if !calming
                && !refreshing
                && self
                    .manual
                    .get(&target)
                    .is_some_and(|m| rank(&w.level) > rank(&m.level))
            {
                self.manual.remove(&target);
            }
        }
        if known || seq <= cur_seq || (held && !w.by_person) {
            return Published {
                seq,
                applied: false,
                previous_was_held: held,
                produced,
                applied_before,
            };
        }
        if w.by_person && w.reason == "manual" {
            if w.level == "terminated" {
                self.terminated.insert(target.clone());
            } else {
                self.terminated.remove(&target);
            }
            if w.level == "terminated" {
                self.manual.remove(&target);
            } else {
                let level = OwnerLevel {
                    level: w.level.clone(),
                    reason: "manual".into(),
                    rate_limit_rps: w.rate_limit_rps,
                };
                self.manual.insert(target.clone(), level);
            }
        }
        if w.level == "ok" {
            self.keys.remove(&target);
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
            self.keys.insert(target, m);
        }
        self.applied.insert(w.outbox_id.clone());
        Published {
            seq,
            applied: true,
            previous_was_held: held,
            produced,
            applied_before,
        }
    }
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
        Ok(self.inner.lock().publish(w, None))
    }

    async fn is_produced(&self, w: &DecisionWrite) -> Result<bool, StoreError> {
        Ok(self.inner.lock().produced.contains(&w.outbox_id))
    }

    async fn publish_switch(
        &self,
        w: &DecisionWrite,
        switch: &KillSwitch,
    ) -> Result<Published, StoreError> {
        let mut plane = self.inner.lock();
        let p = plane.publish(w, None);
        if p.applied {
            let registered = KillSwitch {
                seq: p.seq,
                ..switch.clone()
            };
            plane.switches.insert(switch.id.clone(), registered);
        }
        Ok(p)
    }

    async fn publish_lift(
        &self,
        w: &DecisionWrite,
        switch_id: &str,
        kill_seq: u64,
        base_seq: Option<u64>,
    ) -> Result<LiftWrite, StoreError> {
        let mut plane = self.inner.lock();
        if !plane.published.contains_key(&w.outbox_id) {
            if let Some(handed) = plane.lift_without_writing(w, switch_id, kill_seq) {
                return Ok(handed);
            }
            let target = (w.scope.clone(), w.id.clone());
            let noted = plane.owner.get(&target).map_or(0, |(seq, _)| *seq);
            if base_seq.is_some_and(|b| b != noted) {
                return Ok(LiftWrite::BaseMoved);
            }
        }
        // The key the switch holds: its own `killed`, or one handed over to it.
        let holds = plane
            .switches
            .get(switch_id)
            .map_or(kill_seq, |s| held_seq(s, kill_seq));
        let p = plane.publish(w, Some(holds));
        if p.applied {
            if let Some(s) = plane.switches.get_mut(switch_id) {
                s.lifted_at = Some(w.since.clone());
                s.lift_seq = Some(p.seq);
                s.lift_level = Some(w.level.clone());
                s.lift_reason = Some(w.reason.clone());
                s.lift_rps = Some(w.rate_limit_rps.map(|r| r.to_string()).unwrap_or_default());
            }
        }
        let lifted_at = plane
            .switches
            .get(switch_id)
            .map(|s| s.lifted_at.clone().unwrap_or_default());
        Ok(lift_write(p, lifted_at, false))
    }

    async fn lift_base(&self, scope: &str, id: &str) -> Result<LiftBase, StoreError> {
        let plane = self.inner.lock();
        let target = (scope.to_owned(), id.to_owned());
        Ok(LiftBase {
            owner: plane.owner.get(&target).map(|(_, level)| level.clone()),
            terminated: plane.terminated.contains(&target),
            manual: plane.manual.get(&target).cloned(),
            seq: plane.owner.get(&target).map_or(0, |(seq, _)| *seq),
        })
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

    async fn publish_pending(
        &self,
        w: &DecisionWrite,
        expected_seq: u64,
    ) -> Result<Published, StoreError> {
        let mut plane = self.inner.lock();
        let p = plane.publish(w, Some(expected_seq));
        if p.applied {
            let entry = PendingRecord {
                write: w.clone(),
                seq: p.seq,
            };
            plane.pending.insert(w.outbox_id.clone(), entry);
        }
        Ok(p)
    }

    async fn pending_records(&self) -> Result<Vec<PendingRecord>, StoreError> {
        Ok(self.inner.lock().pending.values().cloned().collect())
    }

    async fn remove_pending(&self, outbox_id: &str) -> Result<(), StoreError> {
        self.inner.lock().pending.remove(outbox_id);
        Ok(())
    }

    async fn remove_switch(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.inner.lock().switches.remove(id).is_some())
    }

    async fn switches(&self) -> Result<Vec<KillSwitch>, StoreError> {
        Ok(self.inner.lock().switches.values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script's ranks and the memory plane's are the domain's order of levels.
    #[test]
    fn publish_ranks_levels_in_the_domains_order() {
        let table = PUBLISH
            .lines()
            .find_map(|l| l.strip_prefix("local RANKS = {"))
            .expect("RANKS in PUBLISH");
        let ranks: Vec<(String, usize)> = table
            .trim_end_matches('}')
            .split(',')
            .map(|entry| {
                let (level, n) = entry.split_once('=').expect("level = rank");
                (level.trim().to_owned(), n.trim().parse().expect("a rank"))
            })
            .collect();
        let names = crate::domain::enforcement::Level::ALL.map(|l| l.as_str());
        assert_eq!(ranks.len(), names.len());
        for (level, n) in &ranks {
            assert_eq!(names[*n], level.as_str());
            assert_eq!(rank(level), *n);
        }
    }
}
