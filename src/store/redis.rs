//! [`RedisStore`]: the production state store (CONTRACT §9), on one Redis or Redis
//! Cluster (every key of a partition shares a hash tag, see `keys.rs`).
//!
//! Layout per partition `p`: an epoch (`store::epoch`, taken by a script on acquire), an
//! offsets hash (topic → next offset) and a partners hash (partner id → snapshot). A commit is one Lua script
//! (`scripts.rs`) that refuses a stale epoch before writing anything. Snapshots are
//! opaque JSON bytes in which money is a decimal string, so money is never a Redis float
//! (no `INCRBYFLOAT`, no `HINCRBYFLOAT`): Redis only ever stores and returns our bytes.
//!
//! Executors: the daemon calls the store from several runtimes (actix arbiters, which are
//! current-thread tokio runtimes, and plain threads through `Handle::block_on`). The
//! connection manager's I/O and reconnect tasks live on the runtime it was created on, so
//! [`RedisStore::connect`] remembers that runtime and every operation is spawned onto it
//! and awaited through its `JoinHandle`, which any executor can await. The spawned task
//! carries the timeout itself, so a caller waits at most the configured timeout as long as
//! the connecting runtime is alive (a runtime that has shut down fails calls at once);
//! connect on the daemon's long-lived runtime.
//!
//! Errors: an unreachable or slow Redis is [`StoreError::Unavailable`]; data warden did not
//! write (a key of the wrong type, a non-numeric epoch or offset) is
//! [`StoreError::Corrupt`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, RedisError, Script};
use tokio::runtime::Handle;

use super::keys::Keys;
use super::scripts::{self, CommitReply};
use super::{epoch, Offsets, PartitionWrite, StateStore, StoreError};

/// Reconnection attempts after a lost connection before the manager gives up; the next
/// operation starts a new round, so a Redis that comes back is found again.
const RECONNECT_RETRIES: usize = 4;
/// redis 0.32 hands this to its backoff as the growth factor over a 1 s first delay.
const RECONNECT_BACKOFF_FACTOR: u64 = 2;
/// Cap on the delay between two reconnection attempts, in milliseconds.
const RECONNECT_MAX_DELAY_MS: u64 = 4_000;

/// The state store on Redis. Cheap to share (`Arc` it); every call is bounded by the
/// timeout given to [`RedisStore::connect`]. Clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    pub(super) conn: ConnectionManager,
    /// Commits only, one at a time. A commit is megabytes of arguments and a script Redis
    /// runs alone; on the shared connection, every load, decision and kill switch queued
    /// behind each commit already sent, and under an influx of new partners loads timed
    /// out by the ten thousand. On its own connection, Redis serves the other clients
    /// between commits, so a call waits for one script at most. One at a time, so a
    /// commit's deadline runs while Redis works on it, not while it waits behind others.
    bulk: Arc<tokio::sync::Mutex<ConnectionManager>>,
    runtime: Handle,
    pub(super) keys: Keys,
    acquire: Arc<Script>,
    commit: Arc<Script>,
    renew: Arc<Script>,
    timeout: Duration,
    /// Replicas that must acknowledge a commit ([`RedisStore::with_replica_acks`]).
    replica_acks: u32,
}

impl fmt::Debug for RedisStore {
    // No URL here: it may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("key_prefix", &self.keys.prefix())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host:port/db`), giving up after
    /// `timeout`, which also bounds every later operation.
    ///
    /// An unreachable Redis is `Unavailable`; a malformed URL or key prefix, which no
    /// retry can fix, is `Corrupt`.
    ///
    /// # Panics
    /// When not called within a tokio runtime.
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        timeout: Duration,
    ) -> Result<RedisStore, StoreError> {
        Keys::validate_prefix(key_prefix).map_err(|problem| {
            StoreError::Corrupt(format!("redis key prefix {key_prefix:?}: {problem}"))
        })?;
        // The error does not include the URL, which may hold a password.
        let client =
            Client::open(url).map_err(|err| StoreError::Corrupt(format!("redis url: {err}")))?;
        // No response timeout on the connection: every call is bounded by `run`, and a
        // commit's bound grows with its size (`commit_deadline`), which a flat per-response
        // timeout here would cut short.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_factor(RECONNECT_BACKOFF_FACTOR)
            .set_max_delay(RECONNECT_MAX_DELAY_MS);
        let connect = || async {
            let manager = ConnectionManager::new_with_config(client.clone(), config.clone());
            match tokio::time::timeout(timeout, manager).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(err)) => Err(classify("connect", err)),
                Err(_) => Err(StoreError::Unavailable(format!(
                    "redis connect: no connection within {timeout:?}"
                ))),
            }
        };
        let conn = connect().await?;
        let bulk = Arc::new(tokio::sync::Mutex::new(connect().await?));
        Ok(RedisStore {
            conn,
            bulk,
            runtime: Handle::current(),
            keys: Keys::new(key_prefix),
            acquire: Arc::new(scripts::acquire_script()),
            commit: Arc::new(scripts::commit_script()),
            renew: Arc::new(scripts::renew_script()),
            timeout,
            replica_acks: 0,
        })
    }

    /// A commit counts only once `n` replicas have it (CONTRACT §9). Otherwise a failover
    /// to a replica that missed it rolls the state back after its decisions went out and
    /// its offsets moved on: events lost, or counted twice. A commit the replicas do not
    /// acknowledge within as long as the commit may take fails as `NotReplicated`, and is
    /// retried like any failed commit; until then nothing it holds is published.
    pub fn with_replica_acks(mut self, n: u32) -> RedisStore {
        self.replica_acks = n;
        self
    }

    /// The whole hash at `key` (empty when there is none), as `M`.
    pub(super) async fn hash<M>(&self, what: &'static str, key: String) -> Result<M, StoreError>
    where
        M: redis::FromRedisValue + Send + 'static,
    {
        self.run(what, move |mut conn| async move {
            redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        })
        .await
    }

    /// Runs `op` on the connecting runtime with the store's timeout (see the module doc).
    pub(super) async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_on(self.conn.clone(), what, self.timeout, op).await
    }

    /// [`run`](Self::run) on the given connection, with the given deadline.
    async fn run_on<T, F, Fut>(
        &self,
        conn: ConnectionManager,
        what: &'static str,
        timeout: Duration,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let op = op(conn);
        let task = self
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, op).await });
        match task.await {
            Ok(Ok(result)) => result,
            Ok(Err(_elapsed)) => Err(StoreError::Unavailable(format!(
                "redis {what}: no answer within {timeout:?}"
            ))),
            Err(join) => Err(StoreError::Unavailable(format!(
                "redis {what}: task did not finish: {join}"
            ))),
        }
    }
}

/// Every member of the sorted set at `key`, with its score.
fn zrange_all(key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("ZRANGE");
    cmd.arg(key).arg(0).arg(-1).arg("WITHSCORES");
    cmd
}

/// A score of epoch millis (dedup ids, wake times): scores come back as doubles, and
/// millis are far below 2^53, so they are exact.
fn millis(score: f64) -> i64 {
    score as i64
}

/// A dedup sorted set read `WITHSCORES`, as `[epoch millis, id]`.
fn dedup_ids(raw: Vec<(String, f64)>) -> Vec<(i64, String)> {
    raw.into_iter().map(|(id, ms)| (millis(ms), id)).collect()
}

/// How long a commit may take: the store's timeout, plus what Redis needs to take in and
/// apply and fsync a big one: about 200 ms a MiB and 10 µs an entry. With
/// `appendfsync always`, Redis answers a commit only once its megabytes are on disk, and
/// on the bench machine's disk that alone took a second for 3 MiB now and then (at 50 ms
/// a MiB, such commits failed and were sent again). A commit that times out has still
/// been sent, so Redis runs it all the same; failing it only made the next try bigger, and
/// a partition holding 100,000 fresh partners never got a flush through a flat 500 ms.
fn commit_deadline(timeout: Duration, write: &PartitionWrite) -> Duration {
    let bytes: usize = write
        .partners
        .iter()
        .map(|(id, snapshot)| id.len() + snapshot.len())
        .chain(
            write
                .dedup
                .iter()
                .flat_map(|(_, d)| d.added.iter().map(|(_, id)| id.len() + 16)),
        )
        .sum();
    let entries = write.partners.len()
        + write
            .dedup
            .iter()
            .map(|(_, d)| d.added.len())
            .sum::<usize>();
    timeout
        + Duration::from_micros((bytes as u64).saturating_mul(200_000) >> 20)
        + Duration::from_micros(10 * entries as u64)
}

/// `WAIT`'s timeout for a write with this deadline: at least 1 ms, since 0 waits for ever.
fn wait_millis(deadline: Duration) -> u64 {
    u64::try_from(deadline.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Runs `script` (its source is `source`) on `keys` and `argv`; with `replicas` asked for,
/// `WAIT`s up to `wait_ms` for them in the same request. WAIT counts the replicas that
/// have this client's last write: sent alone, a reconnection in between would ask about a
/// new client with no writes, and pass. Returns the script's reply and, with replicas
/// asked for, how many acknowledged it.
async fn eval_waited<A: redis::ToRedisArgs>(
    conn: &mut ConnectionManager,
    what: &'static str,
    (script, source): (&Script, &'static str),
    keys: &[String],
    argv: A,
    (replicas, wait_ms): (u32, u64),
) -> Result<(Vec<String>, Option<u32>), StoreError> {
    if replicas == 0 {
        let mut invocation = script.prepare_invoke();
        invocation.key(keys).arg(argv);
        let reply = invocation
            .invoke_async(conn)
            .await
            .map_err(|e| classify(what, e))?;
        return Ok((reply, None));
    }
    let (reply, acked) = redis::pipe()
        .cmd("EVAL")
        .arg(source)
        .arg(keys.len())
        .arg(keys)
        .arg(argv)
        .cmd("WAIT")
        .arg(replicas)
        .arg(wait_ms)
        .query_async(conn)
        .await
        .map_err(|e| classify(what, e))?;
    Ok((reply, Some(acked)))
}

fn not_replicated(what: &str, acked: u32, replicas: u32, wait_ms: u64) -> StoreError {
    StoreError::NotReplicated(format!(
        "redis {what}: acknowledged by {acked} of {replicas} replicas within {wait_ms} ms"
    ))
}

#[async_trait]
impl StateStore for RedisStore {
    async fn acquire(&self, partition: i32) -> Result<u64, StoreError> {
        // Not waited on by replicas (`store.replica_acks`): a partition is taken inside the
        // rebalance callback, and a replica down would hold it there past the poll
        // interval. A failover that loses the acquisition puts back the previous owner's
        // epoch: a late write of that owner (a flush in flight at its revocation) then
        // lands, whole (its snapshots with their offsets), and this owner, refused with a
        // lower generation, takes the partition again and reads it from the store. The
        // next acquisition gets the lost generation again, but not its tag
        // (`store::epoch`), so two owners never share an epoch.
        let key = self.keys.epoch(partition);
        let script = Arc::clone(&self.acquire);
        let tag = epoch::random_tag();
        self.run("acquire", |mut conn| async move {
            let epoch: String = script
                .key(&key)
                .arg(tag)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| classify("acquire", e))?;
            epoch
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("{key}: epoch {epoch:?} is not a number")))
        })
        .await
    }

    async fn renew(&self, partition: i32, held: u64, token: &str) -> Result<u64, StoreError> {
        // Waited on by replicas like a commit: a failover that lost the renewal would put
        // the epoch back under the owner, and refuse its every commit as fenced.
        let keys = [self.keys.epoch(partition), self.keys.renewal(partition)];
        let next = epoch::renewed(held)
            .ok_or_else(|| StoreError::Corrupt(format!("epoch {held} has no next")))?;
        let argv = [held.to_string(), next.to_string(), token.to_owned()];
        let script = Arc::clone(&self.renew);
        let (replicas, wait_ms) = (self.replica_acks, wait_millis(self.timeout));
        let deadline = self.timeout * if replicas > 0 { 2 } else { 1 };
        let reply = self
            .run_on(
                self.conn.clone(),
                "renew",
                deadline,
                |mut conn| async move {
                    let (reply, acked) = eval_waited(
                        &mut conn,
                        "renew",
                        (&script, scripts::RENEW),
                        &keys,
                        &argv[..],
                        (replicas, wait_ms),
                    )
                    .await?;
                    let reply = scripts::parse_renew_reply(&reply).map_err(|problem| {
                        StoreError::Corrupt(format!("redis renew: {problem}"))
                    })?;
                    if let Some(acked) = acked.filter(|a| *a < replicas) {
                        if reply.is_ok() {
                            return Err(not_replicated("renew", acked, replicas, wait_ms));
                        }
                    }
                    Ok(reply)
                },
            )
            .await?;
        reply.map_err(|current| StoreError::Fenced {
            partition,
            epoch: held,
            current,
        })
    }

    async fn offsets(&self, partition: i32) -> Result<Offsets, StoreError> {
        let key = self.keys.offsets(partition);
        self.run("offsets", |mut conn| async move {
            let raw: Vec<(String, String)> = redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| classify("offsets", e))?;
            raw.into_iter()
                .map(|(topic, offset)| match offset.parse::<i64>() {
                    Ok(offset) => Ok((topic, offset)),
                    Err(_) => Err(StoreError::Corrupt(format!(
                        "{key}: offset {offset:?} of {topic:?} is not an integer"
                    ))),
                })
                .collect()
        })
        .await
    }

    async fn commit(&self, write: PartitionWrite) -> Result<(), StoreError> {
        let (partition, epoch) = (write.partition, write.epoch);
        let mut keys = vec![
            self.keys.epoch(partition),
            self.keys.offsets(partition),
            self.keys.partners(partition),
            self.keys.awake(partition),
            self.keys.wake(partition),
        ];
        keys.extend(
            write
                .dedup
                .iter()
                .map(|(partner, _)| self.keys.dedup(partition, partner)),
        );
        let script = Arc::clone(&self.commit);
        // Replicas take a big commit about as long as the primary did: WAIT gets the same
        // budget, after it.
        let budget = commit_deadline(self.timeout, &write);
        let (replicas, wait_ms) = (self.replica_acks, wait_millis(budget));
        let deadline = budget * if replicas > 0 { 2 } else { 1 };
        let turn = self.bulk.lock().await;
        let reply = self
            .run_on(turn.clone(), "commit", deadline, |mut conn| async move {
                let argv = scripts::commit_argv(write);
                let (reply, acked) = eval_waited(
                    &mut conn,
                    "commit",
                    (&script, scripts::COMMIT),
                    &keys,
                    argv,
                    (replicas, wait_ms),
                )
                .await?;
                let reply = CommitReply::parse(&reply)
                    .map_err(|problem| StoreError::Corrupt(format!("redis commit: {problem}")))?;
                if let Some(acked) = acked.filter(|a| *a < replicas) {
                    if reply == CommitReply::Written {
                        return Err(not_replicated("commit", acked, replicas, wait_ms));
                    }
                }
                Ok(reply)
            })
            .await?;
        match reply {
            CommitReply::Written => Ok(()),
            CommitReply::Fenced { current } => Err(StoreError::Fenced {
                partition,
                epoch,
                current,
            }),
        }
    }

    async fn load_partner(
        &self,
        partition: i32,
        partner_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.keys.partners(partition);
        let field = partner_id.to_owned();
        self.run("load_partner", |mut conn| async move {
            redis::cmd("HGET")
                .arg(&key)
                .arg(&field)
                .query_async(&mut conn)
                .await
                .map_err(|e| classify("load_partner", e))
        })
        .await
    }

    async fn load_state(
        &self,
        partition: i32,
        partner_id: &str,
    ) -> Result<Option<(Vec<u8>, Vec<(i64, String)>)>, StoreError> {
        let (partners, dedup) = (
            self.keys.partners(partition),
            self.keys.dedup(partition, partner_id),
        );
        let field = partner_id.to_owned();
        self.run("load_state", |mut conn| async move {
            // MULTI/EXEC: no commit runs between the two reads. The keys share the
            // partition's hash tag, so this holds on a cluster too.
            let (snapshot, raw): (Option<Vec<u8>>, Vec<(String, f64)>) = redis::pipe()
                .atomic()
                .cmd("HGET")
                .arg(&partners)
                .arg(&field)
                .add_command(zrange_all(&dedup))
                .query_async(&mut conn)
                .await
                .map_err(|e| classify("load_state", e))?;
            Ok(snapshot.map(|bytes| (bytes, dedup_ids(raw))))
        })
        .await
    }

    async fn awake_partners(&self, partition: i32) -> Result<Vec<String>, StoreError> {
        let key = self.keys.awake(partition);
        self.run("awake_partners", |mut conn| async move {
            redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| classify("awake_partners", e))
        })
        .await
    }

    async fn wake_schedule(&self, partition: i32) -> Result<Vec<(String, i64)>, StoreError> {
        let key = self.keys.wake(partition);
        self.run("wake_schedule", |mut conn| async move {
            let raw: Vec<(String, f64)> = zrange_all(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| classify("wake_schedule", e))?;
            Ok(raw.into_iter().map(|(id, ms)| (id, millis(ms))).collect())
        })
        .await
    }

    async fn partner_ids(&self, partition: i32) -> Result<Vec<String>, StoreError> {
        let key = self.keys.partners(partition);
        self.run("partner_ids", |mut conn| async move {
            redis::cmd("HKEYS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| classify("partner_ids", e))
        })
        .await
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        let key = self.keys.probe();
        self.run("probe", |mut conn| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(chrono::Utc::now().timestamp_millis())
                .arg("PX")
                .arg(60_000)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| classify("probe", e))
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run("ping", |mut conn| async move {
            let pong: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(|e| classify("ping", e))?;
            match pong.as_str() {
                "PONG" => Ok(()),
                other => Err(StoreError::Corrupt(format!(
                    "redis ping: answered {other:?}"
                ))),
            }
        })
        .await
    }
}

/// Bad data (retrying cannot help) or an unavailable Redis (retrying can)?
pub(super) fn classify(what: &str, err: RedisError) -> StoreError {
    if is_bad_data(&err) {
        StoreError::Corrupt(format!("redis {what}: {err}"))
    } else {
        StoreError::Unavailable(format!("redis {what}: {err}"))
    }
}

/// A reply of the wrong type, an operation on a key of the wrong type (also as raised
/// inside a script, which older servers wrap in `ERR`), or arithmetic on a non-integer
/// (also an epoch that is not one, as `ACQUIRE` reports it).
fn is_bad_data(err: &RedisError) -> bool {
    err.kind() == ErrorKind::TypeError
        || err.code() == Some("WRONGTYPE")
        || err
            .detail()
            .is_some_and(|detail| detail.contains("WRONGTYPE") || detail.contains("not an integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_commit_gets_time_for_its_size_and_a_small_one_the_timeout() {
        let timeout = Duration::from_millis(500);
        let small = PartitionWrite {
            partners: vec![("p-1".into(), vec![0; 700])],
            ..Default::default()
        };
        let small_deadline = commit_deadline(timeout, &small);
        assert!(small_deadline >= timeout && small_deadline < timeout + Duration::from_millis(1));
        // 12,500 fresh partners (700-byte snapshots, 5 new ids each): one partition's
        // first flush when 100,000 partners arrive at once.
        let big = PartitionWrite {
            partners: (0..12_500)
                .map(|i| (format!("p-{i:07}"), vec![0; 700]))
                .collect(),
            dedup: (0..12_500)
                .map(|i| {
                    let added = (0..5).map(|k| (k, format!("p-{i:07}-e{k}"))).collect();
                    (
                        format!("p-{i:07}"),
                        crate::domain::dedup::DedupDelta {
                            added,
                            evict_below_ms: None,
                        },
                    )
                })
                .collect(),
            ..Default::default()
        };
        let big_deadline = commit_deadline(timeout, &big);
        assert!(
            big_deadline > timeout + Duration::from_millis(1_000),
            "{big_deadline:?}"
        );
        assert!(big_deadline < Duration::from_secs(10), "{big_deadline:?}");
    }

    #[test]
    fn wrong_types_and_non_integers_are_corrupt() {
        let wrongtype = redis::make_extension_error(
            "WRONGTYPE".to_owned(),
            Some("Operation against a key holding the wrong kind of value".to_owned()),
        );
        assert!(matches!(classify("x", wrongtype), StoreError::Corrupt(_)));
        let in_script = RedisError::from((
            ErrorKind::ResponseError,
            "An error was signalled by the server",
            "Error running script: WRONGTYPE Operation against a key".to_owned(),
        ));
        assert!(matches!(classify("x", in_script), StoreError::Corrupt(_)));
        let not_integer = RedisError::from((
            ErrorKind::ResponseError,
            "An error was signalled by the server",
            "value is not an integer or out of range".to_owned(),
        ));
        assert!(matches!(classify("x", not_integer), StoreError::Corrupt(_)));
        let type_error =
            RedisError::from((ErrorKind::TypeError, "Response was of incompatible type"));
        assert!(matches!(classify("x", type_error), StoreError::Corrupt(_)));
    }

    #[test]
    fn outages_are_unavailable() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(classify("x", refused).is_retryable());
        let loading = RedisError::from((
            ErrorKind::BusyLoadingError,
            "Redis is loading the dataset in memory",
        ));
        assert!(classify("x", loading).is_retryable());
        let read_only = RedisError::from((
            ErrorKind::ReadOnly,
            "You can't write against a read only replica.",
        ));
        assert!(classify("x", read_only).is_retryable());
        let oom =
            redis::make_extension_error("OOM".to_owned(), Some("command not allowed".to_owned()));
        assert!(classify("x", oom).is_retryable());
    }
}
