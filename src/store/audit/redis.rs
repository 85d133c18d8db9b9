//! The audit log on Redis: [`AuditLog`] for [`RedisStore`], with the `AUDIT_APPEND`
//! script (`scripts.rs`) and the keys `<prefix>:{audit}:head|log|refs|claim` (`keys.rs`).
//! How appends stay atomic and fair is in the parent module's doc.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::Script;

use super::{append_one_by_one, AppendOutcome, AuditLog};
use crate::domain::audit::{AuditEntry, AuditRecord, ChainHead};
use crate::store::redis::{classify, RedisStore};
use crate::store::scripts::{AUDIT_APPEND, AUDIT_APPEND_MANY};
use crate::store::StoreError;

/// How many times an append is sealed again after other appends moved the head first
/// (waits while another writer holds the claim are bounded by the claim's lifetime
/// instead; the store's timeout bounds the whole append).
pub const MAX_CONFLICTS: usize = 64;
/// Records per round trip when [`AuditLog::all`] reads the whole log.
const PAGE: usize = 1_000;

/// Conflicts after which an append asks for the claim (see `AUDIT_APPEND`).
const CLAIM_AFTER_CONFLICTS: usize = 2;
/// How long a claim holds the chain for its claimant at most, in milliseconds: the
/// longest others wait when a claimant dies.
const CLAIM_MS: u64 = 200;
/// The longest random pause while another writer holds the claim.
const CLAIM_WAIT_MICROS: u64 = 2_000;
/// The random pause after a conflict is at most `min(conflicts, MAX_BACKOFF_STEPS)` steps.
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
/// The batch append script, likewise.
static APPEND_MANY_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(AUDIT_APPEND_MANY));

#[async_trait]
impl AuditLog for RedisStore {
    async fn append(&self, entry: AuditEntry) -> Result<AppendOutcome, StoreError> {
        let keys = self.audit_keys();
        let turn = append_turn(self.keys.prefix());
        self.run("audit append", move |mut conn| async move {
            // Waiting for our turn counts against the timeout too.
            let mut known_head = turn.lock_owned().await;
            // Taken, not copied: after an error or a timeout the head is read again.
            let mut head = match known_head.take() {
                Some(head) => head,
                None => read_head(&mut conn, &keys[0]).await?,
            };
            let mut attempt = Attempt::new();
            loop {
                let record = head.seal_next(entry.clone());
                match attempt.run(&mut conn, &keys, &head, &record).await? {
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
                        claim,
                    } => {
                        head = current;
                        attempt.after_conflict(claim).await?;
                    }
                }
            }
        })
        .await
    }

    /// One script for the lot (`AUDIT_APPEND_MANY`): each entry is sealed after the one
    /// before it, Redis appends them in one go (one fsync, one script call rather than one
    /// per record) and the chain's turn is held once. The first entry the script refuses
    /// (a ref already recorded, another process's append in between) and everything after
    /// it take the one-by-one way, with its conflict handling.
    async fn append_many(
        &self,
        entries: Vec<AuditEntry>,
    ) -> (Vec<AppendOutcome>, Option<StoreError>) {
        if entries.len() < 2 {
            return append_one_by_one(self, entries).await;
        }
        let keys = self.audit_keys();
        // A batch is the publication's, in the background: its wait for the turn does not
        // count against the timeout (8 partitions' batches queue here in a decision storm,
        // and counting the wait failed them and sent them again). A single append (a
        // person's request) still counts it.
        let mut known_head = append_turn(self.keys.prefix()).lock_owned().await;
        let batch = entries.clone();
        let pipelined = self
            .run("audit append", move |mut conn| async move {
                let mut head = match known_head.take() {
                    Some(head) => head,
                    None => read_head(&mut conn, &keys[0]).await?,
                };
                let claimant = format!("{:016x}", rand::random::<u64>());
                let mut sealed = Vec::with_capacity(batch.len());
                let mut after = head.clone();
                for entry in batch {
                    let record = after.seal_next(entry);
                    after = record.head();
                    sealed.push(record);
                }
                let reply: Vec<String> = many_invocation(&keys, &head, &sealed, &claimant)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| classify("audit append", e))?;
                let reply = ManyReply::parse(&reply).map_err(|problem| {
                    StoreError::Corrupt(format!("redis audit append: {problem}"))
                })?;
                let mut outcomes = Vec::with_capacity(sealed.len());
                match reply {
                    ManyReply::Appended { n, duplicate } => {
                        let appended: Vec<AuditRecord> = sealed.into_iter().take(n).collect();
                        if let Some(last) = appended.last() {
                            head = last.head();
                        }
                        outcomes.extend(appended.into_iter().map(AppendOutcome::Appended));
                        outcomes.extend(duplicate.map(AppendOutcome::AlreadyRecorded));
                    }
                    // Another process appended first: the one-by-one appends take over,
                    // from the head it left.
                    ManyReply::Conflict { head: current } => head = current,
                }
                // Only what this process knows was appended: the next append checks it.
                *known_head = Some(head);
                Ok(outcomes)
            })
            .await;
        let mut outcomes = match pipelined {
            Ok(outcomes) => outcomes,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let rest: Vec<AuditEntry> = entries.into_iter().skip(outcomes.len()).collect();
        let (more, error) = append_one_by_one(self, rest).await;
        outcomes.extend(more);
        (outcomes, error)
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

impl RedisStore {
    /// The chain's keys in `AUDIT_APPEND`'s order: head, log, refs, claim.
    fn audit_keys(&self) -> [String; 4] {
        [
            self.keys.audit_head(),
            self.keys.audit_log(),
            self.keys.audit_refs(),
            self.keys.audit_claim(),
        ]
    }
}

/// `AUDIT_APPEND_MANY` for `records`, sealed one after the other from `head`.
fn many_invocation(
    keys: &[String; 4],
    head: &ChainHead,
    records: &[AuditRecord],
    claimant: &str,
) -> redis::ScriptInvocation<'static> {
    let mut invocation = APPEND_MANY_SCRIPT.key(&keys[..]);
    invocation.arg(head.seq).arg(&head.hash).arg(claimant);
    for record in records {
        // unwrap: an AuditRecord is strings, integers and a serde_json::Value.
        let json = serde_json::to_string(record).expect("an audit record serializes");
        invocation
            .arg(record.seq)
            .arg(&record.hash)
            .arg(&record.ref_id)
            .arg(json);
    }
    invocation
}

/// What `AUDIT_APPEND_MANY` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ManyReply {
    /// The first `n` records are appended; the next one's ref was recorded at `duplicate`.
    Appended { n: usize, duplicate: Option<u64> },
    /// Nothing appended: the chain ends at `head`, or another writer holds the claim.
    Conflict { head: ChainHead },
}

impl ManyReply {
    fn parse(reply: &[String]) -> Result<ManyReply, String> {
        let number = |text: &str, what: &str| {
            text.parse::<u64>()
                .map_err(|_| format!("{what} {text:?} is not a number"))
        };
        match reply {
            [appended, n] if appended == "appended" => Ok(ManyReply::Appended {
                n: number(n, "count")? as usize,
                duplicate: None,
            }),
            [appended, n, duplicate, seq] if appended == "appended" && duplicate == "duplicate" => {
                Ok(ManyReply::Appended {
                    n: number(n, "count")? as usize,
                    duplicate: Some(number(seq, "recorded seq")?),
                })
            }
            [conflict, seq, hash, _claim] if conflict == "conflict" => {
                parse_head(seq, hash.clone()).map(|head| ManyReply::Conflict { head })
            }
            [corrupt, what] if corrupt == "corrupt" => Err(what.clone()),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }
}

/// `AUDIT_APPEND` for `record`, sealed after `head` (ARGV as `scripts.rs` lays it out).
fn append_invocation(
    keys: &[String; 4],
    head: &ChainHead,
    record: &AuditRecord,
    claimant: &str,
    want_claim: bool,
) -> redis::ScriptInvocation<'static> {
    // unwrap: an AuditRecord is strings, integers and a serde_json::Value.
    let json = serde_json::to_string(record).expect("an audit record serializes");
    let mut invocation = APPEND_SCRIPT.key(&keys[..]);
    invocation
        .arg(head.seq)
        .arg(&head.hash)
        .arg(record.seq)
        .arg(&record.hash)
        .arg(&record.ref_id)
        .arg(json)
        .arg(claimant)
        .arg(if want_claim { "1" } else { "0" })
        .arg(CLAIM_MS);
    invocation
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

/// One append's tries of `AUDIT_APPEND`: its claimant id, its conflicts so far.
struct Attempt {
    claimant: String,
    conflicts: usize,
}

impl Attempt {
    fn new() -> Attempt {
        Attempt {
            claimant: format!("{:016x}", rand::random::<u64>()),
            conflicts: 0,
        }
    }

    /// Runs the script for `record`, sealed after `head`. `keys`: head, log, refs, claim.
    async fn run(
        &self,
        conn: &mut ConnectionManager,
        keys: &[String; 4],
        head: &ChainHead,
        record: &AuditRecord,
    ) -> Result<AppendReply, StoreError> {
        let want_claim = self.conflicts >= CLAIM_AFTER_CONFLICTS;
        let reply: Vec<String> = append_invocation(keys, head, record, &self.claimant, want_claim)
            .invoke_async(conn)
            .await
            .map_err(|e| classify("audit append", e))?;
        AppendReply::parse(&reply)
            .map_err(|problem| StoreError::Corrupt(format!("redis audit append: {problem}")))
    }

    /// Waits as the claim suggests before the next try, or gives up.
    async fn after_conflict(&mut self, claim: Claim) -> Result<(), StoreError> {
        match claim {
            // Nobody else can append now: try again at once.
            Claim::Mine => {}
            // Bounded by the claim's lifetime (and the store's timeout).
            Claim::Other => sleep_up_to(CLAIM_WAIT_MICROS).await,
            // Another process appended first: wait a little, at random, so instances do
            // not keep colliding.
            Claim::None => {
                self.conflicts += 1;
                if self.conflicts > MAX_CONFLICTS {
                    return Err(StoreError::Unavailable(format!(
                        "redis audit append: other appends came first {MAX_CONFLICTS} times"
                    )));
                }
                let steps = self.conflicts.min(MAX_BACKOFF_STEPS) as u64;
                sleep_up_to(steps * BACKOFF_STEP_MICROS).await;
            }
        }
        Ok(())
    }
}

async fn sleep_up_to(micros: u64) {
    let pause = rand::random::<u64>() % (micros + 1);
    tokio::time::sleep(Duration::from_micros(pause)).await;
}

/// What `AUDIT_APPEND` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AppendReply {
    Appended,
    Duplicate {
        seq: u64,
    },
    /// The chain ends at `head`; `claim` says who holds the claim now.
    Conflict {
        head: ChainHead,
        claim: Claim,
    },
}

/// Who holds the claim on the chain (see `AUDIT_APPEND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    Mine,
    Other,
    None,
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
            [conflict, seq, hash, claim] if conflict == "conflict" => {
                let claim = match claim.as_str() {
                    "mine" => Claim::Mine,
                    "other" => Claim::Other,
                    "none" => Claim::None,
                    other => return Err(format!("unknown claim {other:?}")),
                };
                parse_head(seq, hash.clone()).map(|head| AppendReply::Conflict { head, claim })
            }
            [corrupt, what] if corrupt == "corrupt" => Err(what.clone()),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::GENESIS_PREV_HASH;
    use crate::store::keys::Keys;

    fn s(text: &str) -> String {
        text.to_owned()
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
            AppendReply::parse(&[s("conflict"), s("0"), s(GENESIS_PREV_HASH), s("none")]),
            Ok(AppendReply::Conflict {
                head: ChainHead::genesis(),
                claim: Claim::None
            })
        );
        for (text, claim) in [("mine", Claim::Mine), ("other", Claim::Other)] {
            let head = ChainHead {
                seq: 4,
                hash: s("h4"),
            };
            assert_eq!(
                AppendReply::parse(&[s("conflict"), s("4"), s("h4"), s(text)]),
                Ok(AppendReply::Conflict { head, claim })
            );
        }
        assert!(AppendReply::parse(&[s("duplicate"), s("x")]).is_err());
        assert!(AppendReply::parse(&[s("conflict"), s("-1"), s("h"), s("none")]).is_err());
        assert!(AppendReply::parse(&[s("conflict"), s("1"), s("h"), s("1")]).is_err());
        assert!(AppendReply::parse(&[s("conflict"), s("1"), s("h")]).is_err());
        let corrupt = AppendReply::parse(&[s("corrupt"), s("half a head")]);
        assert_eq!(corrupt, Err(s("half a head")));
        assert!(AppendReply::parse(&[]).is_err());
        assert!(AppendReply::parse(&[s("ok")]).is_err());
    }

    #[test]
    fn batch_replies_are_parsed() {
        assert_eq!(
            ManyReply::parse(&[s("appended"), s("3")]),
            Ok(ManyReply::Appended {
                n: 3,
                duplicate: None
            })
        );
        assert_eq!(
            ManyReply::parse(&[s("appended"), s("0"), s("duplicate"), s("7")]),
            Ok(ManyReply::Appended {
                n: 0,
                duplicate: Some(7)
            })
        );
        assert_eq!(
            ManyReply::parse(&[s("conflict"), s("4"), s("h4"), s("other")]),
            Ok(ManyReply::Conflict {
                head: ChainHead {
                    seq: 4,
                    hash: s("h4")
                }
            })
        );
        assert!(ManyReply::parse(&[s("appended"), s("x")]).is_err());
        assert!(ManyReply::parse(&[s("appended"), s("1"), s("duplicate"), s("?")]).is_err());
        assert_eq!(
            ManyReply::parse(&[s("corrupt"), s("half a head")]),
            Err(s("half a head"))
        );
        assert!(ManyReply::parse(&[]).is_err());
    }

    #[test]
    fn the_batch_script_checks_everything_before_its_first_write() {
        let first_write = AUDIT_APPEND_MANY.find("ZADD").expect("the script writes");
        for check in [
            "TYPE",
            "(#ARGV - 3) % 4",
            "not consecutive",
            "'corrupt'",
            "'conflict'",
        ] {
            let at = AUDIT_APPEND_MANY
                .find(check)
                .expect("the script has the check");
            assert!(at < first_write, "{check} comes after the first write");
        }
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
        for check in ["TYPE", "#ARGV ~= 9", "HGET", "'corrupt'", "'conflict'"] {
            let at = AUDIT_APPEND.find(check).expect("the script has the check");
            assert!(at < first_write, "{check} comes after the first write");
        }
    }
}
