//! The state store's Lua scripts, with the layout of their KEYS and ARGV, and the Rust
//! side of that layout (building ARGV, reading the reply) so both live in one file.
//!
//! A Redis script runs atomically, but an error half-way does not roll back the writes it
//! already made: every script here checks everything it can (argument shape, key types,
//! the epoch) before its first write.

use redis::Script;

use super::PartitionWrite;

/// COMMIT: one partition's offsets, partner snapshots and dedup-window changes, fenced by
/// its ownership epoch.
///
/// KEYS[1] = epoch key (string, decimal), KEYS[2] = offsets hash, KEYS[3] = partners hash,
/// KEYS[4] = the awake set, KEYS[5] = the wake-time sorted set, KEYS[6..] = the dedup
/// sorted set of each partner with a dedup change, in ARGV's order (all with the
/// partition's hash tag, see `keys.rs`).
/// ARGV[1] = the epoch the writer holds (decimal);
/// ARGV[2] = n, the number of (topic, offset) pairs, then n pairs topic, next offset;
/// then m, the number of partners, then m pairs partner id, snapshot bytes;
/// then a, the number of partners to add to the awake set, and their a ids; then r and r
/// ids to remove from it;
/// then w and w pairs score (wall-clock millis), id to set in the wake-time set; then z and
/// z ids to remove from it;
/// then, for each dedup key: the eviction horizon (millis, "" for none), k, and k pairs
/// score (millis), id.
///
/// Returns `{"ok"}` after writing everything, or `{"fenced", current}` (current epoch as
/// decimal, "0" if the partition was never acquired) having written nothing. The layout is
/// checked whole before anything is written. Offsets are written as given, never compared
/// with the stored ones: the epoch already guarantees that only the current owner writes,
/// and it knows where it is.
pub(super) const COMMIT: &str = r#"
local function count(i)
  local c = tonumber(ARGV[i])
  if c == nil or c < 0 or c ~= math.floor(c) then return nil end
  return c
end
local bad = 'ERR warden commit: arguments do not follow the layout'
local n = count(2)
if n == nil then return redis.error_reply('ERR warden commit: bad offset pair count') end
local mi = 3 + 2 * n
local m = count(mi)
if m == nil then return redis.error_reply(bad) end
local ai = mi + 1 + 2 * m
local a = count(ai)
if a == nil then return redis.error_reply(bad) end
local ri = ai + 1 + a
local r = count(ri)
if r == nil then return redis.error_reply(bad) end
local wi = ri + 1 + r
local w = count(wi)
if w == nil then return redis.error_reply(bad) end
local zi = wi + 1 + 2 * w
local z = count(zi)
if z == nil then return redis.error_reply(bad) end
local di = zi + 1 + z
local i = di
for d = 6, #KEYS do
  local k = count(i + 1)
  if k == nil then return redis.error_reply(bad) end
  i = i + 2 + 2 * k
end
if i ~= #ARGV + 1 then return redis.error_reply(bad) end
for t = 2, #KEYS do
  local want = 'hash'
  if t == 4 then want = 'set' end
  if t > 4 then want = 'zset' end
  local got = redis.call('TYPE', KEYS[t]).ok
  if got ~= want and got ~= 'none' then
    return redis.error_reply('WRONGTYPE warden commit: ' .. KEYS[t] .. ' is a ' .. got)
  end
end
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return {'fenced', current or '0'}
end
-- Writes ARGV[from..to] as `cmd key a1 b1 a2 b2 ...` (pairs, or a set's members), 1000
-- arguments a call: a call per pair cost Lua and Redis a command each, and a flush writes
-- thousands of partners.
local function write_pairs(cmd, key, from, to)
  local j = from
  while j <= to do
    local upto = math.min(to, j + 999)
    redis.call(cmd, key, unpack(ARGV, j, upto))
    j = upto + 1
  end
end
write_pairs('HSET', KEYS[2], 3, mi - 1)
write_pairs('HSET', KEYS[3], mi + 1, ai - 1)
write_pairs('SADD', KEYS[4], ai + 1, ri - 1)
write_pairs('SREM', KEYS[4], ri + 1, wi - 1)
write_pairs('ZADD', KEYS[5], wi + 1, zi - 1)
write_pairs('ZREM', KEYS[5], zi + 1, di - 1)
i = di
for d = 6, #KEYS do
  local horizon = ARGV[i]
  local k = tonumber(ARGV[i + 1])
  write_pairs('ZADD', KEYS[d], i + 2, i + 1 + 2 * k)
  i = i + 2 + 2 * k
  if horizon ~= '' then
    redis.call('ZREMRANGEBYSCORE', KEYS[d], '-inf', '(' .. horizon)
  end
end
return {'ok'}
"#;

pub(super) fn commit_script() -> Script {
    Script::new(COMMIT)
}

/// ARGV for [`COMMIT`], moving the snapshots rather than copying them. The dedup keys
/// (KEYS[6..]) follow `write.dedup`'s order.
pub(super) fn commit_argv(write: PartitionWrite) -> Vec<Vec<u8>> {
    let ids: usize = write.dedup.iter().map(|(_, d)| 2 + 2 * d.added.len()).sum();
    let mut argv = Vec::with_capacity(3 + 2 * (write.offsets.len() + write.partners.len()) + ids);
    argv.push(write.epoch.to_string().into_bytes());
    argv.push(write.offsets.len().to_string().into_bytes());
    for (topic, offset) in write.offsets {
        argv.push(topic.into_bytes());
        argv.push(offset.to_string().into_bytes());
    }
    argv.push(write.partners.len().to_string().into_bytes());
    for (partner_id, snapshot) in write.partners {
        argv.push(partner_id.into_bytes());
        argv.push(snapshot);
    }
    let (awake, asleep): (Vec<_>, Vec<_>) = write.awake.into_iter().partition(|(_, a)| *a);
    for ids in [awake, asleep] {
        argv.push(ids.len().to_string().into_bytes());
        argv.extend(ids.into_iter().map(|(id, _)| id.into_bytes()));
    }
    let (timed, cleared): (Vec<_>, Vec<_>) =
        write.wake.into_iter().partition(|(_, at)| at.is_some());
    argv.push(timed.len().to_string().into_bytes());
    for (id, at) in timed {
        argv.push(at.unwrap_or_default().to_string().into_bytes());
        argv.push(id.into_bytes());
    }
    argv.push(cleared.len().to_string().into_bytes());
    argv.extend(cleared.into_iter().map(|(id, _)| id.into_bytes()));
    for (_, delta) in write.dedup {
        let horizon = delta
            .evict_below_ms
            .map(|ms| ms.to_string())
            .unwrap_or_default();
        argv.push(horizon.into_bytes());
        argv.push(delta.added.len().to_string().into_bytes());
        for (ms, id) in delta.added {
            argv.push(ms.to_string().into_bytes());
            argv.push(id.into_bytes());
        }
    }
    argv
}

/// What [`COMMIT`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CommitReply {
    Written,
    Fenced { current: u64 },
}

impl CommitReply {
    /// Reads the script's reply; an `Err` names a reply the script cannot have produced.
    pub(super) fn parse(reply: &[String]) -> Result<CommitReply, String> {
        match reply {
            [ok] if ok == "ok" => Ok(CommitReply::Written),
            [fenced, current] if fenced == "fenced" => current
                .parse()
                .map(|current| CommitReply::Fenced { current })
                .map_err(|_| format!("epoch {current:?} is not a number")),
            other => Err(format!("unexpected commit reply {other:?}")),
        }
    }
}

/// ACQUIRE: takes a partition's next epoch (`StateStore::acquire`, `store::epoch`): the
/// generation after the stored one, with the acquisition's tag.
///
/// KEYS[1] = epoch key. ARGV[1] = the tag (decimal, below 2^24).
///
/// Returns the new epoch (decimal). A stored value that is not a decimal epoch up to 2^53 - 1
/// (`store::epoch::MAX`: Lua's numbers are exact up to 2^53), or after which no epoch is
/// left, is refused as "not an integer epoch", having written nothing.
pub(super) const ACQUIRE: &str = r#"
if #ARGV ~= 1 or not string.match(ARGV[1], '^%d+$') or tonumber(ARGV[1]) >= 16777216 then
  return redis.error_reply('ERR warden acquire: arguments do not follow the layout')
end
local got = redis.call('TYPE', KEYS[1]).ok
if got ~= 'string' and got ~= 'none' then
  return redis.error_reply('WRONGTYPE warden acquire: ' .. KEYS[1] .. ' is a ' .. got)
end
local max = 9007199254740991
local current = redis.call('GET', KEYS[1]) or '0'
local corrupt = 'ERR warden acquire: ' .. KEYS[1] .. ' is not an integer epoch'
if not string.match(current, '^%d+$') or #current > 16 or tonumber(current) > max then
  return redis.error_reply(corrupt)
end
local next = (math.floor(tonumber(current) / 16777216) + 1) * 16777216 + tonumber(ARGV[1])
if next > max then
  return redis.error_reply(corrupt .. ' (none left after it)')
end
next = string.format('%d', next)
redis.call('SET', KEYS[1], next)
return next
"#;

pub(super) fn acquire_script() -> Script {
    Script::new(ACQUIRE)
}

/// RENEW: moves a partition's epoch from the one its owner holds to the next, so that
/// writes still carrying the old one are fenced (`StateStore::renew`).
///
/// KEYS[1] = epoch key, KEYS[2] = renewal key (`<epoch>:<token>` of the last renewal).
/// ARGV[1] = the epoch held (decimal), ARGV[2] = the next one (decimal,
/// `store::epoch::renewed`: Lua's numbers would print a large one in exponent form),
/// ARGV[3] = the renewal's token (letters, digits and `-`).
///
/// Returns `{"ok", next}` when the epoch was `held` (now `next`), or was already `next`
/// through this very renewal (a retry after a lost reply); otherwise `{"fenced", current}`
/// ("0" if never acquired), having written nothing.
pub(super) const RENEW: &str = r#"
if #ARGV ~= 3 or not string.match(ARGV[1], '^%d+$') or not string.match(ARGV[2], '^%d+$')
  or not string.match(ARGV[3], '^[%w-]+$') then
  return redis.error_reply('ERR warden renew: arguments do not follow the layout')
end
for t = 1, 2 do
  local got = redis.call('TYPE', KEYS[t]).ok
  if got ~= 'string' and got ~= 'none' then
    return redis.error_reply('WRONGTYPE warden renew: ' .. KEYS[t] .. ' is a ' .. got)
  end
end
local current = redis.call('GET', KEYS[1])
local mine = ARGV[2] .. ':' .. ARGV[3]
if current == ARGV[1] and ARGV[1] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], mine)
  return {'ok', ARGV[2]}
end
if current == ARGV[2] and redis.call('GET', KEYS[2]) == mine then
  -- Written again, so that a WAIT after it (a retry on a new connection) covers it.
  redis.call('SET', KEYS[2], mine)
  return {'ok', ARGV[2]}
end
return {'fenced', current or '0'}
"#;

pub(super) fn renew_script() -> Script {
    Script::new(RENEW)
}

/// Reads [`RENEW`]'s reply: `Ok(next)`, or `Err(current)` when fenced; the outer `Err`
/// names a reply the script cannot have produced.
pub(super) fn parse_renew_reply(reply: &[String]) -> Result<Result<u64, u64>, String> {
    let number = |s: &String| {
        s.parse::<u64>()
            .map_err(|_| format!("epoch {s:?} is not a number"))
    };
    match reply {
        [ok, next] if ok == "ok" => number(next).map(Ok),
        [fenced, current] if fenced == "fenced" => number(current).map(Err),
        other => Err(format!("unexpected renew reply {other:?}")),
    }
}

/// The audit scripts' first check: the chain's four keys are of their types (or absent).
macro_rules! audit_key_types {
    () => {
        r#"
local kinds = {'hash', 'zset', 'hash', 'string'}
for i = 1, 4 do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= kinds[i] and t ~= 'none' then
    return redis.error_reply('WRONGTYPE warden audit append: ' .. KEYS[i] .. ' is a ' .. t)
  end
end
"#
    };
}

/// The chain's head as the store keeps it, as `seq` and `hash` (genesis when absent), or a
/// `corrupt` reply when only half of it is there.
macro_rules! audit_head {
    () => {
        r#"
local head = redis.call('HMGET', KEYS[1], 'seq', 'hash')
if (head[1] == false) ~= (head[2] == false) then
  return {'corrupt', KEYS[1] .. ' has only one of seq and hash'}
end
local seq = head[1] or '0'
local hash = head[2] or string.rep('0', 64)
"#
    };
}

/// `claim_of(holder, me)`: who holds the claim, as a conflict reply names it.
macro_rules! audit_claim_of {
    () => {
        r#"
local function claim_of(holder, me)
  if holder == me then return 'mine' end
  if holder then return 'other' end
  return 'none'
end
"#
    };
}

/// AUDIT_APPEND: one record at the end of the deployment's audit chain, if the chain still
/// ends where the writer read it (optimistic concurrency: the record's hash is SHA-256,
/// computed in Rust, which Lua in Redis cannot do) and its `ref` is not in it yet.
///
/// Fairness between instances: a writer that keeps losing asks for the claim, a key with
/// a short expiry naming it; while someone else holds it, every other append is refused
/// as a conflict, so the claimant's next try (with the head this reply gave it) succeeds
/// and releases the claim. An expired claim (a claimant that died) frees the chain again.
///
/// KEYS[1] = head hash `{seq, hash}`, KEYS[2] = log sorted set (record JSON scored by
/// seq), KEYS[3] = refs hash (ref → seq), KEYS[4] = claim string (claimant id); all four
/// tagged `{audit}`, see `keys.rs`.
/// ARGV[1] = the head seq the record was sealed after ("0" for an empty chain),
/// ARGV[2] = that head's hash (64 zeros for an empty chain), ARGV[3] = the record's seq,
/// ARGV[4] = the record's hash, ARGV[5] = its ref, ARGV[6] = its JSON, ARGV[7] = the
/// writer's claimant id, ARGV[8] = "1" to take the claim on a conflict if nobody holds
/// it, else "0", ARGV[9] = the claim's lifetime in milliseconds.
///
/// Returns `{"appended"}` having written the record, its ref and the new head;
/// `{"duplicate", seq}` when the ref is already recorded (at seq); `{"conflict", seq,
/// hash, claim}` with the current head when another append came first or another writer
/// holds the claim (taking the claim if asked and free; `claim` is "mine" when the
/// writer now holds it, "other" when another writer does, else "none");
/// `{"corrupt", what}` when the head is half there. Only "appended" writes a record;
/// "appended" and "duplicate" release the writer's claim.
pub(super) const AUDIT_APPEND: &str = concat!(
    audit_key_types!(),
    audit_claim_of!(),
    r#"
if #ARGV ~= 9 then
  return redis.error_reply('ERR warden audit append: expected 9 arguments')
end
local holder = redis.call('GET', KEYS[4])
local recorded = redis.call('HGET', KEYS[3], ARGV[5])
if recorded then
  if holder == ARGV[7] then
    redis.call('DEL', KEYS[4])
  end
  return {'duplicate', recorded}
end
"#,
    audit_head!(),
    r#"
if (holder and holder ~= ARGV[7]) or seq ~= ARGV[1] or hash ~= ARGV[2] then
  if not holder and ARGV[8] == '1' then
    redis.call('SET', KEYS[4], ARGV[7], 'PX', ARGV[9])
    holder = ARGV[7]
  end
  return {'conflict', seq, hash, claim_of(holder, ARGV[7])}
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[6])
redis.call('HSET', KEYS[3], ARGV[5], ARGV[3])
redis.call('HSET', KEYS[1], 'seq', ARGV[3], 'hash', ARGV[4])
if holder then
  redis.call('DEL', KEYS[4])
end
return {'appended'}
"#
);

/// AUDIT_APPEND_MANY: a run of records, sealed one after the other from the head the
/// writer read, appended in one script: what `AUDIT_APPEND` would do for each in turn, for
/// one script call instead of one per record (a decision storm appends one per decision).
/// It never takes the claim: a batch that meets a conflict leaves its records to the
/// one-by-one appends, which do.
///
/// KEYS as `AUDIT_APPEND`. ARGV[1] = the head seq the first record was sealed after,
/// ARGV[2] = that head's hash, ARGV[3] = the writer's claimant id, then four per record:
/// its seq, its hash, its ref, its JSON (seqs consecutive from ARGV[1] + 1).
///
/// Returns `{"appended", n}` having written the first n records (all of them, unless the
/// record after them has a ref already recorded: then `{"appended", n, "duplicate",
/// seq}`, and the records sealed after that one are not written either); `{"conflict",
/// seq, hash, claim}` with nothing written when the head moved or another writer holds the
/// claim; `{"corrupt", what}` when the head is half there. Releases the writer's claim
/// when it wrote or met a duplicate.
pub(super) const AUDIT_APPEND_MANY: &str = concat!(
    audit_key_types!(),
    audit_claim_of!(),
    r#"
if #ARGV < 7 or (#ARGV - 3) % 4 ~= 0 then
  return redis.error_reply('ERR warden audit append: expected 3 + 4n arguments')
end
local base = tonumber(ARGV[1])
if base == nil then
  return redis.error_reply('ERR warden audit append: bad head seq')
end
for i = 4, #ARGV, 4 do
  if tonumber(ARGV[i]) ~= base + i / 4 then
    return redis.error_reply('ERR warden audit append: seqs are not consecutive')
  end
end
local holder = redis.call('GET', KEYS[4])
"#,
    audit_head!(),
    r#"
if (holder and holder ~= ARGV[3]) or seq ~= ARGV[1] or hash ~= ARGV[2] then
  return {'conflict', seq, hash, claim_of(holder, ARGV[3])}
end
local n = 0
local recorded = false
for i = 4, #ARGV, 4 do
  recorded = redis.call('HGET', KEYS[3], ARGV[i + 2])
  if recorded then break end
  redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 3])
  redis.call('HSET', KEYS[3], ARGV[i + 2], ARGV[i])
  n = n + 1
end
if n > 0 then
  local last = 4 * n
  redis.call('HSET', KEYS[1], 'seq', ARGV[last], 'hash', ARGV[last + 1])
end
if holder then
  redis.call('DEL', KEYS[4])
end
if recorded then
  return {'appended', tostring(n), 'duplicate', recorded}
end
return {'appended', tostring(n)}
"#
);

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> String {
        text.to_owned()
    }

    #[test]
    fn argv_layout_is_epoch_offsets_partners_awake_wake_times_then_dedup() {
        let write = PartitionWrite {
            partition: 3,
            epoch: 12,
            offsets: [(s("usage"), 40), (s("invoices"), 7)].into_iter().collect(),
            partners: vec![
                (s("p-1"), b"{\"a\":1}".to_vec()),
                (s("p-2"), b"{}".to_vec()),
            ],
            dedup: vec![(
                s("p-1"),
                crate::domain::dedup::DedupDelta {
                    added: vec![(1_000, s("e-1"))],
                    evict_below_ms: Some(500),
                },
            )],
            awake: vec![(s("p-2"), false), (s("p-1"), true)],
            wake: vec![(s("p-2"), None), (s("p-1"), Some(86_400_000))],
        };
        let argv: Vec<String> = commit_argv(write)
            .into_iter()
            .map(|arg| String::from_utf8(arg).expect("test args are UTF-8"))
            .collect();
        // Offsets is a BTreeMap, so topics come in name order.
        assert_eq!(
            argv,
            [
                "12",
                "2",
                "invoices",
                "7",
                "usage",
                "40",
                "2",
                "p-1",
                "{\"a\":1}",
                "p-2",
                "{}",
                "1",
                "p-1",
                "1",
                "p-2",
                "1",
                "86400000",
                "p-1",
                "1",
                "p-2",
                "500",
                "1",
                "1000",
                "e-1"
            ]
        );
    }

    #[test]
    fn argv_of_an_empty_write_is_epoch_and_six_zeros() {
        let write = PartitionWrite {
            partition: 0,
            epoch: 1,
            ..PartitionWrite::default()
        };
        let zero = || b"0".to_vec();
        assert_eq!(
            commit_argv(write),
            vec![
                b"1".to_vec(),
                zero(),
                zero(),
                zero(),
                zero(),
                zero(),
                zero()
            ]
        );
    }

    #[test]
    fn replies_are_parsed() {
        assert_eq!(CommitReply::parse(&[s("ok")]), Ok(CommitReply::Written));
        assert_eq!(
            CommitReply::parse(&[s("fenced"), s("9")]),
            Ok(CommitReply::Fenced { current: 9 })
        );
        assert!(CommitReply::parse(&[s("fenced"), s("nine")]).is_err());
        assert!(CommitReply::parse(&[s("fenced")]).is_err());
        assert!(CommitReply::parse(&[]).is_err());
        assert!(CommitReply::parse(&[s("OK")]).is_err());
    }

    #[test]
    fn script_validates_before_its_first_write() {
        let first_write = COMMIT.find("HSET").expect("the script writes with HSET");
        for check in ["error_reply('ERR warden commit: bad", "TYPE", "GET"] {
            let at = COMMIT.find(check).expect("the script has the check");
            assert!(at < first_write, "{check} comes after the first write");
        }
    }
}
