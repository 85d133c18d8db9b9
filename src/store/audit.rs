//! The audit log (CONTRACT §4, `warden.audit.v1`): one append-only, hash-chained log for
//! the whole deployment, on Redis ([`RedisStore`]) or in memory ([`MemoryAuditLog`]), with
//! one behaviour suite over both (`tests/audit_store.rs`).
//!
//! Appends are optimistic: the record is sealed in Rust after the chain's head as last
//! read (SHA-256, which Lua in Redis cannot compute), then one script (`AUDIT_APPEND` in
//! `scripts.rs`) appends it only if the head has not moved and its `ref` is new. A moved
//! head comes back with the script's answer and the record is sealed again, at most
//! [`MAX_APPEND_ATTEMPTS`] times within the store's timeout. So `seq` and `prev_hash` are
//! assigned atomically in the store, whichever instance appends. Within one process,
//! appends take turns (see [`append_turn`]), so retries are only needed between
//! instances; there, a writer that keeps losing takes a short claim on the chain (see the
//! script), so no instance starves while others append back to back.
//!
//! Fail closed: an append that returns an error may or may not have been written (a reply
//! lost after the script ran); retrying it with the same `ref` is safe and answers
//! [`AppendOutcome::AlreadyRecorded`] if it was. Either outcome of `Ok` means the record
//! is durable, and only then may the recorded action go ahead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::Script;

use super::redis::{classify, RedisStore};
use super::scripts::AUDIT_APPEND;
use super::StoreError;
use crate::domain::audit::{self, AuditEntry, AuditRecord, ChainError, ChainHead};

/// How many times an append is sealed again after other appends moved the head first.
pub const MAX_APPEND_ATTEMPTS: usize = 64;
/// Records per round trip when [`AuditLog::all`] reads the whole log.
const PAGE: usize = 1_000;

/// What [`AuditLog::append`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendOutcome {
    /// The entry is now this record of the chain.
    Appended(AuditRecord),
    /// The entry's `ref` was already in the chain, at this `seq`: nothing was appended
    /// (whatever the rest of the entry says, the first record of a ref stands).
    AlreadyRecorded(u64),
}

/// The deployment's audit chain. Every method is bounded by the store's timeout.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Seals `entry` as the next record of the chain, unless its `ref` is already in it.
    async fn append(&self, entry: AuditEntry) -> Result<AppendOutcome, StoreError>;

    /// Up to `limit` records with `seq > after_seq`, in `seq` order.
    async fn after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;

    /// Every record, in order (for verification; reads the log in pages).
    async fn all(&self) -> Result<Vec<AuditRecord>, StoreError>;

    /// Where the chain ends, as the store keeps it ([`ChainHead::genesis`] when empty).
    async fn head(&self) -> Result<ChainHead, StoreError>;
}

/// Reads the whole log and checks it, through the head the store keeps (which also
/// catches removed trailing records). The outer `Err` is a store that could not be read;
/// the inner one the first record that does not fit the chain.
pub async fn verify_log(log: &dyn AuditLog) -> Result<Result<usize, ChainError>, StoreError> {
    // Head first: appends in between only add records after it.
    let head = log.head().await?;
    let records = log.all().await?;
    Ok(audit::verify_through_head(&records, &head))
}

/// Conflicts after which an append asks for the claim (see `AUDIT_APPEND`).
const CLAIM_AFTER_CONFLICTS: usize = 2;
/// How long a claim holds the chain for its claimant at most, in milliseconds: the
/// longest others wait when a claimant dies.
const CLAIM_MS: u64 = 200;
/// The random pause after a conflict is at most `min(attempt, MAX_BACKOFF_STEPS)` steps.
const BACKOFF_STEP_MICROS: u64 = 250;
const MAX_BACKOFF_STEPS: usize = 8;

/// This process's turn at appending to the chain of one key prefix, holding the head as
/// the last append made here left it.
type AppendTurn = Arc<tokio::sync::Mutex<Option<ChainHead>>>;

/// Appends of one process to one chain take turns (a FIFO async mutex, held across the
/// append's round trips on purpose): without them, appenders of one process would
/// collide with each other, and an unlucky one could lose every retry. Between them the
/// turn keeps the head, so an append usually takes one round trip. The head is only a
/// hint: the script checks it, and other processes are handled by conflict and retry.
/// Keyed by prefix because `RedisStore` has nowhere to keep it; one entry per prefix
/// ever used (one in production).
fn append_turn(prefix: &str) -> AppendTurn {
    static TURNS: LazyLock<Mutex<HashMap<String, AppendTurn>>> = LazyLock::new(Mutex::default);
    Arc::clone(TURNS.lock().entry(prefix.to_owned()).or_default())
}

/// The append script, hashed once (`EVALSHA`, loaded again by the client after a flush).
static APPEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(AUDIT_APPEND));

#[async_trait]
impl AuditLog for RedisStore {
    async fn append(&self, entry: AuditEntry) -> Result<AppendOutcome, StoreError> {
        let keys = [
            self.keys.audit_head(),
            self.keys.audit_log(),
            self.keys.audit_refs(),
            self.keys.audit_claim(),
        ];
        let turn = append_turn(self.keys.prefix());
        self.run("audit append", move |mut conn| async move {
            // Waiting for our turn counts against the timeout too.
            let mut known_head = turn.lock_owned().await;
            // Taken, not copied: after an error or a timeout the head is read again.
            let mut head = match known_head.take() {
                Some(head) => head,
                None => read_head(&mut conn, &keys[0]).await?,
            };
            let claimant = format!("{:016x}", rand::random::<u64>());
            for attempt in 1..=MAX_APPEND_ATTEMPTS {
                let record = head.seal_next(entry.clone());
                // unwrap: an AuditRecord is strings, integers and a serde_json::Value.
                let json = serde_json::to_string(&record).expect("an audit record serializes");
                let want_claim = attempt > CLAIM_AFTER_CONFLICTS;
                let reply: Vec<String> = APPEND_SCRIPT
                    .key(&keys[..])
                    .arg(head.seq)
                    .arg(&head.hash)
                    .arg(record.seq)
                    .arg(&record.hash)
                    .arg(&record.ref_id)
                    .arg(json)
                    .arg(&claimant)
                    .arg(if want_claim { "1" } else { "0" })
                    .arg(CLAIM_MS)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| classify("audit append", e))?;
                match AppendReply::parse(&reply).map_err(|problem| {
                    StoreError::Corrupt(format!("redis audit append: {problem}"))
                })? {
                    AppendReply::Appended => {
                        *known_head = Some(record.head());
                        return Ok(AppendOutcome::Appended(record));
                    }
                    AppendReply::Duplicate { seq } => {
                        *known_head = Some(head);
                        return Ok(AppendOutcome::AlreadyRecorded(seq));
                    }
                    AppendReply::Conflict {
                        head: current,
                        claimed,
                    } => {
                        head = current;
                        if !claimed {
                            // Another process appended first, or holds the claim: wait a
                            // little, at random, so instances do not keep colliding.
                            let cap = attempt.min(MAX_BACKOFF_STEPS) as u64 * BACKOFF_STEP_MICROS;
                            let pause = rand::random::<u64>() % (cap + 1);
                            tokio::time::sleep(Duration::from_micros(pause)).await;
                        }
                    }
                }
            }
            Err(StoreError::Unavailable(format!(
                "redis audit append: other appends came first {MAX_APPEND_ATTEMPTS} times"
            )))
        })
        .await
    }

    async fn after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.keys.audit_log();
        self.run("audit after", move |mut conn| async move {
            let raw: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(&key)
                .arg(format!("({after_seq}"))
                .arg("+inf")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut conn)
                .await
                .map_err(|e| classify("audit after", e))?;
            raw.iter().map(|json| parse_record(&key, json)).collect()
        })
        .await
    }

    async fn all(&self) -> Result<Vec<AuditRecord>, StoreError> {
        // Paged by rank, not by the seq inside the records, so edited records cannot
        // make the read skip or repeat; appends only add ranks at the end.
        let key = self.keys.audit_log();
        let mut records = Vec::new();
        loop {
            let (page_key, start) = (key.clone(), records.len());
            let page: Vec<String> = self
                .run("audit all", move |mut conn| async move {
                    redis::cmd("ZRANGE")
                        .arg(&page_key)
                        .arg(start)
                        .arg(start + PAGE - 1)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| classify("audit all", e))
                })
                .await?;
            for json in &page {
                records.push(parse_record(&key, json)?);
            }
            if page.len() < PAGE {
                return Ok(records);
            }
        }
    }

    async fn head(&self) -> Result<ChainHead, StoreError> {
        let key = self.keys.audit_head();
        self.run("audit head", move |mut conn| async move {
            read_head(&mut conn, &key).await
        })
        .await
    }
}

async fn read_head(conn: &mut ConnectionManager, key: &str) -> Result<ChainHead, StoreError> {
    let (seq, hash): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(key)
        .arg("seq")
        .arg("hash")
        .query_async(conn)
        .await
        .map_err(|e| classify("audit head", e))?;
    match (seq, hash) {
        (None, None) => Ok(ChainHead::genesis()),
        (Some(seq), Some(hash)) => parse_head(&seq, hash)
            .map_err(|problem| StoreError::Corrupt(format!("{key}: {problem}"))),
        _ => Err(StoreError::Corrupt(format!(
            "{key} has only one of seq and hash"
        ))),
    }
}

fn parse_head(seq: &str, hash: String) -> Result<ChainHead, String> {
    let seq = seq
        .parse()
        .map_err(|_| format!("seq {seq:?} is not a number"))?;
    Ok(ChainHead { seq, hash })
}

fn parse_record(key: &str, json: &str) -> Result<AuditRecord, StoreError> {
    serde_json::from_str(json)
        .map_err(|err| StoreError::Corrupt(format!("{key}: not an audit record ({err})")))
}

/// What `AUDIT_APPEND` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AppendReply {
    Appended,
    Duplicate {
        seq: u64,
    },
    /// The chain ends at `head`; `claimed` when the writer now holds the claim.
    Conflict {
        head: ChainHead,
        claimed: bool,
    },
}

impl AppendReply {
    /// Reads the script's reply; an `Err` names a reply it cannot have produced, or a
    /// head that is half there.
    fn parse(reply: &[String]) -> Result<AppendReply, String> {
        match reply {
            [appended] if appended == "appended" => Ok(AppendReply::Appended),
            [duplicate, seq] if duplicate == "duplicate" => seq
                .parse()
                .map(|seq| AppendReply::Duplicate { seq })
                .map_err(|_| format!("recorded seq {seq:?} is not a number")),
            [conflict, seq, hash, claimed] if conflict == "conflict" => {
                let claimed = match claimed.as_str() {
                    "1" => true,
                    "0" => false,
                    other => return Err(format!("claim flag {other:?} is not 0 or 1")),
                };
                parse_head(seq, hash.clone()).map(|head| AppendReply::Conflict { head, claimed })
            }
            [corrupt, what] if corrupt == "corrupt" => Err(what.clone()),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }
}

/// The audit log of the embedded mode and of tests: the same semantics as on Redis, in a
/// mutex (held for one append, never across an `.await`). Not durable.
#[derive(Debug, Default)]
pub struct MemoryAuditLog {
    chain: Mutex<MemoryChain>,
    /// Test hook: while set, every call fails with `Unavailable` and changes nothing.
    unavailable: AtomicBool,
}

#[derive(Debug, Default)]
struct MemoryChain {
    /// `records[i].seq == i + 1`.
    records: Vec<AuditRecord>,
    refs: HashMap<String, u64>,
}

impl MemoryAuditLog {
    pub fn new() -> MemoryAuditLog {
        MemoryAuditLog::default()
    }

    /// Simulates an outage (`true`) or its end (`false`).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    fn check_available(&self) -> Result<(), StoreError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "memory audit log: simulated outage".to_owned(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn append(&self, entry: AuditEntry) -> Result<AppendOutcome, StoreError> {
        self.check_available()?;
        let mut chain = self.chain.lock();
        if let Some(&seq) = chain.refs.get(&entry.ref_id) {
            return Ok(AppendOutcome::AlreadyRecorded(seq));
        }
        let head = chain
            .records
            .last()
            .map_or_else(ChainHead::genesis, AuditRecord::head);
        let record = head.seal_next(entry);
        chain.refs.insert(record.ref_id.clone(), record.seq);
        chain.records.push(record.clone());
        Ok(AppendOutcome::Appended(record))
    }

    async fn after(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.check_available()?;
        let chain = self.chain.lock();
        let start = chain.records.partition_point(|r| r.seq <= after_seq);
        Ok(chain.records[start..].iter().take(limit).cloned().collect())
    }

    async fn all(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.check_available()?;
        Ok(self.chain.lock().records.clone())
    }

    async fn head(&self) -> Result<ChainHead, StoreError> {
        self.check_available()?;
        Ok(self
            .chain
            .lock()
            .records
            .last()
            .map_or_else(ChainHead::genesis, AuditRecord::head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::GENESIS_PREV_HASH;
    use crate::store::keys::Keys;
    use chrono::{TimeZone, Utc};

    fn s(text: &str) -> String {
        text.to_owned()
    }

    fn entry(ref_id: &str) -> AuditEntry {
        AuditEntry {
            ref_id: s(ref_id),
            at: Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap(),
            actor: s("ops"),
            action: s("partner.enforcement.set"),
            target: s("partner:p-1"),
            detail: serde_json::json!({"level": "warn"}),
        }
    }

    #[test]
    fn replies_are_parsed() {
        assert_eq!(
            AppendReply::parse(&[s("appended")]),
            Ok(AppendReply::Appended)
        );
        assert_eq!(
            AppendReply::parse(&[s("duplicate"), s("12")]),
            Ok(AppendReply::Duplicate { seq: 12 })
        );
        assert_eq!(
            AppendReply::parse(&[s("conflict"), s("0"), s(GENESIS_PREV_HASH), s("0")]),
            Ok(AppendReply::Conflict {
                head: ChainHead::genesis(),
                claimed: false
            })
        );
        assert_eq!(
            AppendReply::parse(&[s("conflict"), s("4"), s("h4"), s("1")]),
            Ok(AppendReply::Conflict {
                head: ChainHead {
                    seq: 4,
                    hash: s("h4")
                },
                claimed: true
            })
        );
        assert!(AppendReply::parse(&[s("duplicate"), s("x")]).is_err());
        assert!(AppendReply::parse(&[s("conflict"), s("-1"), s("h"), s("0")]).is_err());
        assert!(AppendReply::parse(&[s("conflict"), s("1"), s("h"), s("yes")]).is_err());
        assert!(AppendReply::parse(&[s("conflict"), s("1"), s("h")]).is_err());
        let corrupt = AppendReply::parse(&[s("corrupt"), s("half a head")]);
        assert_eq!(corrupt, Err(s("half a head")));
        assert!(AppendReply::parse(&[]).is_err());
        assert!(AppendReply::parse(&[s("ok")]).is_err());
    }

    #[test]
    fn audit_keys_share_one_hash_tag_and_differ_from_partition_keys() {
        let keys = Keys::new("warden");
        assert_eq!(keys.audit_head(), "warden:{audit}:head");
        assert_eq!(keys.audit_log(), "warden:{audit}:log");
        assert_eq!(keys.audit_refs(), "warden:{audit}:refs");
        assert_eq!(keys.audit_claim(), "warden:{audit}:claim");
        assert!(![keys.epoch(0), keys.offsets(0), keys.partners(0)]
            .iter()
            .any(|key| key.contains(Keys::AUDIT_HASH_TAG)));
    }

    #[test]
    fn the_script_knows_the_genesis_hash_and_validates_before_writing() {
        assert!(AUDIT_APPEND.contains("string.rep('0', 64)"));
        assert_eq!(GENESIS_PREV_HASH, "0".repeat(64));
        let first_write = AUDIT_APPEND.find("ZADD").expect("the script writes");
        for check in ["TYPE", "#ARGV ~= 9", "HGET", "'conflict'", "'corrupt'"] {
            let at = AUDIT_APPEND.find(check).expect("the script has the check");
            assert!(at < first_write, "{check} comes after the first write");
        }
    }

    #[tokio::test]
    async fn an_outage_fails_every_call_and_appends_nothing() {
        let log = MemoryAuditLog::new();
        log.append(entry("a")).await.expect("available");
        log.set_unavailable(true);
        let failed = log.append(entry("b")).await.expect_err("unavailable");
        assert!(failed.is_retryable());
        assert!(log.after(0, 10).await.is_err());
        assert!(log.all().await.is_err());
        assert!(log.head().await.is_err());
        assert!(verify_log(&log).await.is_err());

        log.set_unavailable(false);
        assert_eq!(log.all().await.expect("available").len(), 1);
        match log.append(entry("b")).await.expect("available") {
            AppendOutcome::Appended(record) => assert_eq!(record.seq, 2),
            other => panic!("b was not recorded during the outage: {other:?}"),
        }
        assert_eq!(verify_log(&log).await, Ok(Ok(2)));
    }
}
