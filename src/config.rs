//! The daemon's configuration: built-in defaults, then a TOML file, then environment
//! overrides `WARDEN_<SECTION>__<KEY>` (CONTRACT §8).
//!
//! Invariants:
//! - Unknown sections and keys are errors; nothing is silently ignored.
//! - Every problem is reported at once, each naming where the value came from (the file
//!   or `env WARDEN_…`) and the dotted key (`admin.tokens[1].sha256`), so an operator
//!   fixes a file in one pass instead of one restart per mistake.
//! - A `Config` that is returned has passed every semantic rule (ranges, cross-field
//!   rules); the rest of the daemon does not re-check it.
//! - Secrets never reach `Debug`: tokens are stored as hashes, the Redis URL's password
//!   and secret-looking Kafka properties are redacted.
//!
//! How: the file is parsed to a `toml::Table`, env overrides are written into it, then
//! each key is deserialized on its own (every struct is `#[serde(default)]`) so one bad
//! value cannot hide the next; bad keys are dropped, the whole is deserialized, and the
//! semantic rules run on the result, skipping keys that already failed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// Prefix of environment overrides; variables without `__` after it (e.g. a CLI's
/// `WARDEN_CONFIG`) are not overrides and are left alone.
pub const ENV_PREFIX: &str = "WARDEN_";

#[derive(Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub store: StoreConfig,
    pub runtime: RuntimeConfig,
    pub admin: AdminConfig,
    pub simulator: SimulatorConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    /// `[enforcement]`: ladder timing, quotas and health thresholds per tier.
    pub enforcement: crate::domain::enforcement::EnforcementPolicy,
    /// `[money]`: the partner program and month closing.
    pub money: MoneyConfig,
}

// Written out rather than derived only so that the redacting impls below are the ones used.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("kafka", &self.kafka)
            .field("store", &self.store)
            .field("runtime", &self.runtime)
            .field("admin", &self.admin)
            .field("simulator", &self.simulator)
            .field("log", &self.log)
            .field("metrics", &self.metrics)
            .field("enforcement", &self.enforcement)
            .field("money", &self.money)
            .finish()
    }
}

#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// true = rdkafka's in-process mock cluster; `brokers` must then be empty.
    pub embedded: bool,
    /// Comma-separated bootstrap servers; required when not embedded.
    pub brokers: String,
    pub group_id: String,
    pub client_id: String,
    pub topics: TopicsConfig,
    pub create_input_topics: bool,
    /// Partition count for the keyed topics the daemon creates when no input topic exists
    /// yet; existing input topics' count wins (a warning says when it differs).
    pub partitions: i32,
    pub replication_factor: i32,
    pub max_record_bytes: usize,
    #[serde(with = "duration_str")]
    pub max_clock_skew: Duration,
    pub poll_batch: usize,
    #[serde(with = "duration_str")]
    pub flush_interval: Duration,
    #[serde(with = "duration_str")]
    pub session_timeout: Duration,
    #[serde(with = "duration_str")]
    pub max_poll_interval: Duration,
    /// Extra librdkafka properties passed through (e.g. `security.protocol`).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            embedded: false,
            brokers: String::new(),
            group_id: "warden".into(),
            client_id: "warden".into(),
            topics: TopicsConfig::default(),
            create_input_topics: false,
            partitions: 12,
            replication_factor: 1,
            max_record_bytes: 65_536,
            max_clock_skew: Duration::from_secs(5 * 60),
            poll_batch: 2000,
            flush_interval: Duration::from_millis(100),
            session_timeout: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(300),
            properties: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret_property(k) {
                        "***"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("embedded", &self.embedded)
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("client_id", &self.client_id)
            .field("topics", &self.topics)
            .field("create_input_topics", &self.create_input_topics)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("max_clock_skew", &self.max_clock_skew)
            .field("poll_batch", &self.poll_batch)
            .field("flush_interval", &self.flush_interval)
            .field("session_timeout", &self.session_timeout)
            .field("max_poll_interval", &self.max_poll_interval)
            .field("properties", &properties)
            .finish()
    }
}

fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", ".pem", "oauthbearer.config"]
        .iter()
        .any(|s| key.contains(s))
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    pub usage: String,
    pub invoices: String,
    pub attribution: String,
    pub control: String,
    pub enforcement: String,
    pub audit: String,
    pub deadletter: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            usage: "warden.usage.v1".into(),
            invoices: "warden.invoices.v1".into(),
            attribution: "warden.attribution.v1".into(),
            control: "warden.control.v1".into(),
            enforcement: "warden.enforcement.v1".into(),
            audit: "warden.audit.v1".into(),
            deadletter: "warden.deadletter.v1".into(),
        }
    }
}

impl TopicsConfig {
    /// (key, topic) pairs, in declaration order.
    pub fn all(&self) -> [(&'static str, &str); 7] {
        [
            ("usage", &self.usage),
            ("invoices", &self.invoices),
            ("attribution", &self.attribution),
            ("control", &self.control),
            ("enforcement", &self.enforcement),
            ("audit", &self.audit),
            ("deadletter", &self.deadletter),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    #[default]
    FailOpen,
    FailClosed,
}

impl FailurePolicy {
    pub const ALL: [FailurePolicy; 2] = [FailurePolicy::FailOpen, FailurePolicy::FailClosed];

    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailOpen => "fail_open",
            FailurePolicy::FailClosed => "fail_closed",
        }
    }
}

#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub redis_url: String,
    pub key_prefix: String,
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    pub failure_policy: FailurePolicy,
    /// Replicas that must acknowledge a snapshot before it counts as durable (CONTRACT §9:
    /// Redis `WAIT`); 0 with no replicas. Only the Redis backend has replicas.
    pub replica_acks: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "warden".into(),
            timeout: Duration::from_millis(500),
            failure_policy: FailurePolicy::FailOpen,
            replica_acks: 0,
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("failure_policy", &self.failure_policy)
            .field("replica_acks", &self.replica_acks)
            .finish()
    }
}

/// `redis://user:pw@host` → `redis://user:***@host`; a URL without credentials is unchanged.
/// Text that is not a URL (no `://`) but names a host after `@` may hold a password
/// anywhere before it (`redis:/:pw@host`): all of that is hidden.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_owned(),
        };
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or("", |(user, _)| user);
    format!("{scheme}://{user}:***@{host}")
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// 0 = one per core; see [`RuntimeConfig::arbiter_count`].
    pub arbiters: usize,
    pub mailbox_capacity: usize,
    #[serde(with = "duration_str")]
    pub passivate_after: Duration,
    #[serde(with = "duration_str")]
    pub dedup_window: Duration,
    #[serde(with = "duration_str")]
    pub shutdown_grace: Duration,
    /// Events applied but not yet durable per partition before the partition is paused.
    pub max_unflushed_events: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            arbiters: 0,
            mailbox_capacity: 64,
            passivate_after: Duration::from_secs(5 * 60),
            dedup_window: Duration::from_secs(24 * 3600),
            shutdown_grace: Duration::from_secs(10),
            max_unflushed_events: 50_000,
        }
    }
}

impl RuntimeConfig {
    /// The configured arbiter count, with 0 resolved to the number of cores (1 if unknown).
    pub fn arbiter_count(&self) -> usize {
        match self.arbiters {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: String,
    pub body_limit_bytes: usize,
    /// true = print a random security token per start (the embedded mode).
    pub generate_token: bool,
    pub tokens: Vec<TokenConfig>,
    /// Admin API requests per second allowed per token (429 beyond the burst).
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// How long a 429 is held before it is sent: a client hammering in a loop is slowed to
    /// a few requests per second per connection instead of costing the event path CPU.
    /// The wait holds a timer, not a worker, so other clients are not blocked.
    #[serde(with = "duration_str")]
    pub rate_limit_delay: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 16_384,
            generate_token: false,
            tokens: Vec::new(),
            rate_limit_per_second: 50,
            rate_limit_burst: 100,
            rate_limit_delay: Duration::from_millis(50),
        }
    }
}

/// Holds only the SHA-256 of a token, so `Debug` is safe.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// 64 lowercase hex characters.
    pub sha256: String,
    pub roles: Vec<Role>,
    #[serde(
        deserialize_with = "utc_datetime_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Finance,
    Security,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Finance, Role::Security];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Finance => "finance",
            Role::Security => "security",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}; expected viewer, operator, finance or security")
            })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorConfig {
    pub enabled: bool,
    pub partners: usize,
    pub events_per_second: u32,
    /// Share of partners that misbehave (a probability, not money).
    pub misbehaving_fraction: f64,
    /// Share of events that are invoices.
    pub invoice_fraction: f64,
    pub seed: u64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            enabled: false,
            partners: 1000,
            events_per_second: 2000,
            misbehaving_fraction: 0.01,
            invoice_fraction: 0.02,
            seed: 42,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` env-filter directive, e.g. `info` or `warden=debug,rdkafka=warn`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `[money]`: which partner program runs, and how months close (CONTRACT §2).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MoneyConfig {
    /// A shipped program: `default`, `reseller` or `credits` (config/programs/).
    pub program: String,
    /// A program file instead of a shipped one (relative paths are relative to the
    /// config file's directory). Switching program is this config change.
    pub program_file: Option<std::path::PathBuf>,
    /// Close each month automatically once `close_grace` has passed after its end (wall
    /// clock), with any older month still open. Off when replaying history.
    pub auto_close: bool,
    #[serde(with = "duration_str")]
    pub close_grace: Duration,
}

impl Default for MoneyConfig {
    fn default() -> Self {
        MoneyConfig {
            program: "default".into(),
            program_file: None,
            auto_close: true,
            close_grace: Duration::from_secs(6 * 3600),
        }
    }
}

impl MoneyConfig {
    /// The configured program, or every problem with it as (config key, message).
    pub fn load_program(&self) -> Result<crate::domain::money::Program, (String, String)> {
        use crate::domain::money::Program;
        match &self.program_file {
            Some(path) => Program::load(path).map_err(|e| ("money.program_file".into(), e.to_string())),
            None => match Program::builtin(&self.program) {
                Some(res) => res.map_err(|e| ("money.program".into(), e.to_string())),
                None => Err((
                    "money.program".into(),
                    format!(
                        "unknown program `{}`: expected default, reseller or credits (or set money.program_file)",
                        self.program
                    ),
                )),
            },
        }
    }
}

/// `[metrics]`: opt-in views that cost series.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// 0 (default) = no per-partner series at all. N > 0 exports a bounded top-N view
    /// (`warden_partner_top_requests{partner_id}`) of the busiest live partners.
    pub top_partners: usize,
    /// How often the top-N view is recomputed.
    #[serde(with = "duration_str")]
    pub top_partners_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            top_partners: 0,
            top_partners_interval: Duration::from_secs(15),
        }
    }
}

/// Every problem found in one load; `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", join_lines(.problems))]
pub struct ConfigErrors {
    pub problems: Vec<ConfigProblem>,
}

fn join_lines(problems: &[ConfigProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file path, or `env WARDEN_X__Y` for a value from the environment.
    pub origin: String,
    /// Dotted key, e.g. `kafka.poll_batch` or `admin.tokens[1].sha256`; empty when the
    /// problem concerns the whole file (unreadable, bad syntax).
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line per problem, whatever a value echoed in the message contains (a value
        // with a newline was found by fuzzing).
        let message = self.message.replace('\n', "\\n").replace('\r', "\\r");
        let key = self.key.replace('\n', "\\n").replace('\r', "\\r");
        match key.is_empty() {
            true => write!(f, "{}: {}", self.origin, message),
            false => write!(f, "{}: {}: {}", self.origin, key, message),
        }
    }
}

impl Config {
    /// Loads `path`, then applies the `WARDEN_…` overrides found in `env` (given as an
    /// iterator so tests need not touch the process environment).
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => from_parts(&text, &origin, path.parent(), env.into_iter().collect()),
            Err(e) => Err(ConfigErrors {
                problems: vec![ConfigProblem {
                    origin,
                    key: String::new(),
                    message: format!("cannot read the file: {e}"),
                }],
            }),
        }
    }

    /// [`Config::load`] with the process environment's `WARDEN_…` variables.
    pub fn load_from_process_env(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load(path, process_env())
    }

    /// The embedded default ([`EMBEDDED_DEFAULT`]) with the process environment's
    /// `WARDEN_…` variables: what `warden` runs with no `--config`, from any directory.
    pub fn embedded_default_from_process_env() -> Result<Config, ConfigErrors> {
        from_parts(
            EMBEDDED_DEFAULT,
            EMBEDDED_ORIGIN,
            None,
            process_env().collect(),
        )
    }

    /// Parses TOML text without environment overrides; `origin` names it in problems.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
        from_parts(text, origin, Path::new(origin).parent(), Vec::new())
    }
}

/// `config/warden.toml`, compiled into the binary: `warden` with no `--config` needs no
/// file, so it runs the same from any working directory.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/warden.toml");

/// How problems in [`EMBEDDED_DEFAULT`] (or its overrides) name their origin.
pub const EMBEDDED_ORIGIN: &str = "embedded default (config/warden.toml)";

/// The process environment's `WARDEN_…` variables.
fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| {
        let k = k.into_string().ok().filter(|k| k.starts_with(ENV_PREFIX))?;
        // A non-UTF-8 value is kept lossily so that it is reported rather than dropped.
        Some((k, v.to_string_lossy().into_owned()))
    })
}

/// Durations as humantime strings ("100ms", "5m", "24h"): one helper for all config.
use crate::domain::enforcement::duration::duration_str;

/// Accepts a TOML date-time or a string, both RFC 3339 with an offset.
fn utc_datetime_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    use serde::de::{Error, Unexpected};
    const EXPECTED: &str = "an RFC 3339 date-time with an offset, e.g. 2026-01-01T00:00:00Z";
    let text = match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Datetime(dt) => dt.to_string(),
        other => {
            return Err(D::Error::invalid_type(
                Unexpected::Other(other.type_str()),
                &EXPECTED,
            ))
        }
    };
    DateTime::parse_from_rfc3339(&text)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|e| {
            D::Error::custom(format!(
                "invalid date-time {text:?}: {e}; expected {EXPECTED}"
            ))
        })
}

/// The field names serde's derive gives a struct, read by a deserializer that only
/// records what `deserialize_struct` is asked for (so the list cannot drift from the
/// structs above).
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("probe only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    // The probe always errs once it has recorded the fields; the error carries nothing.
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

// ---- Loading: parse, overlay the environment, check key by key ------------------------

/// Collects problems and knows where each key's value came from.
struct Collector {
    file: String,
    /// Dotted path set (or table created) by an env override → the variable's name.
    env_origin: BTreeMap<String, String>,
    /// Dotted path set by an env override → its raw text.
    env_raw: BTreeMap<String, String>,
    problems: Vec<ConfigProblem>,
    /// Keys that already have a problem: rules about them or inside them are skipped, so
    /// a bad value replaced by its default does not produce a second, misleading problem.
    failed: BTreeSet<String>,
}

impl Collector {
    fn origin(&self, key: &str) -> String {
        // Problems quote a key holding dots (`kafka.properties."group.id"`); overrides
        // are recorded by their segments joined with dots.
        let unquoted = key.replace('"', "");
        self.env_origin
            .iter()
            .filter(|(path, _)| is_within(key, path) || is_within(&unquoted, path))
            .max_by_key(|(path, _)| path.len())
            .map_or_else(|| self.file.clone(), |(_, var)| format!("env {var}"))
    }

    fn push(&mut self, key: &str, message: impl Into<String>) {
        let origin = self.origin(key);
        self.push_at(origin, key, message);
    }

    fn push_at(&mut self, origin: String, key: &str, message: impl Into<String>) {
        self.failed.insert(key.to_owned());
        let (key, message) = (key.to_owned(), message.into());
        self.problems.push(ConfigProblem {
            origin,
            key,
            message,
        });
    }

    /// Reports `message` at `keys[0]` unless `ok`, or unless one of `keys` already failed.
    fn require(&mut self, ok: bool, keys: &[&str], message: impl fmt::Display) {
        let tainted = keys
            .iter()
            .any(|k| self.failed.iter().any(|f| is_within(k, f)));
        if !ok && !tainted {
            self.push(keys[0], message.to_string());
        }
    }

    /// Problems come out grouped by section, in the order of [`Config`]'s fields.
    fn into_result(mut self, config: Option<Config>) -> Result<Config, ConfigErrors> {
        let sections = field_names::<Config>();
        self.problems.sort_by_key(|p| {
            let section = p.key.split(['.', '[']).next().unwrap_or_default();
            match p.key.is_empty() {
                true => 0,
                false => {
                    1 + sections
                        .iter()
                        .position(|s| *s == section)
                        .unwrap_or(sections.len())
                }
            }
        });
        match config {
            Some(config) if self.problems.is_empty() => Ok(config),
            _ => Err(ConfigErrors {
                problems: self.problems,
            }),
        }
    }
}

/// Whether `key` is `path` or lies inside it (`a.b` and `a[0].b` are within `a`).
fn is_within(key: &str, path: &str) -> bool {
    key.strip_prefix(path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

fn join_key(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    match path.is_empty() {
        true => key,
        false => format!("{path}.{key}"),
    }
}

/// Parses `text` (named `origin` in problems) with the `WARDEN_…` overrides in `env`; a
/// relative `money.program_file` is resolved against `dir`, the directory of the file the
/// text came from (none: the working directory's, for the embedded default).
fn from_parts(
    text: &str,
    origin: &str,
    dir: Option<&Path>,
    env: Vec<(String, String)>,
) -> Result<Config, ConfigErrors> {
    let mut c = Collector {
        file: origin.to_owned(),
        env_origin: BTreeMap::new(),
        env_raw: BTreeMap::new(),
        problems: Vec::new(),
        failed: BTreeSet::new(),
    };
    let mut root = match text.parse::<Table>() {
        Ok(root) => root,
        Err(e) => {
            c.push_at(origin.to_owned(), "", syntax_message(text, &e));
            return c.into_result(None);
        }
    };
    apply_env(&mut root, env, &mut c);
    check_table::<Config>(&mut root, "", &mut c);
    match Value::Table(root).try_into::<Config>() {
        Ok(mut config) => {
            // A relative program file is the config file's neighbour.
            if let (Some(file), Some(dir)) = (config.money.program_file.as_mut(), dir) {
                if file.is_relative() {
                    *file = dir.join(&*file);
                }
            }
            validate(&config, &mut c);
            c.into_result(Some(config))
        }
        Err(e) => {
            // Not expected: every key that fails alone was removed above.
            c.push_at(origin.to_owned(), "", e.message().to_owned());
            c.into_result(None)
        }
    }
}

fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else {
        return format!("invalid TOML: {message}");
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("invalid TOML at line {line}, column {column}: {message}")
}

/// The keys of a top-level section.
fn section_keys(section: &str) -> &'static [&'static str] {
    match section {
        "kafka" => field_names::<KafkaConfig>(),
        "store" => field_names::<StoreConfig>(),
        "runtime" => field_names::<RuntimeConfig>(),
        "admin" => field_names::<AdminConfig>(),
        "simulator" => field_names::<SimulatorConfig>(),
        "log" => field_names::<LogConfig>(),
        "metrics" => field_names::<MetricsConfig>(),
        "money" => field_names::<MoneyConfig>(),
        "enforcement" => field_names::<crate::domain::enforcement::EnforcementPolicy>(),
        _ => &[],
    }
}

/// Writes `WARDEN_A__B__C=v` into `a.b.c`. Applied in name order, so a more specific
/// variable (`…__TOPICS__USAGE`) lands after a broader one (`…__TOPICS`) and wins.
fn apply_env(root: &mut Table, mut env: Vec<(String, String)>, c: &mut Collector) {
    env.sort();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            // `WARDEN_STORE_REDIS_URL` for `WARDEN_STORE__REDIS_URL`: silently ignored, the
            // file's value would be used. Only section names are checked, so other
            // variables of the prefix (`WARDEN_TEST_*`, `WARDEN_BENCH_*`) stay free.
            let lower = rest.to_ascii_lowercase();
            // Only the spelling of a key the section has: other variables of the prefix
            // (`WARDEN_TEST_*`, or `WARDEN_METRICS_SERVICE_HOST` that Kubernetes injects for
            // a Service named `warden-metrics`) stay free.
            let typo = field_names::<Config>().iter().find_map(|section| {
                let key = lower.strip_prefix(&format!("{section}_"))?;
                section_keys(section)
                    .contains(&key)
                    .then(|| (section, key.to_owned()))
            });
            if let Some((section, key)) = typo {
                c.push_at(
                    format!("env {var}"),
                    &format!("{section}.{key}"),
                    format!(
                        "not an override: write WARDEN_{}__{}",
                        section.to_ascii_uppercase(),
                        key.to_ascii_uppercase()
                    ),
                );
            }
            continue;
        }
        let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let key = segments.join(".");
        let origin = format!("env {var}");
        if segments.iter().any(String::is_empty) {
            c.push_at(
                origin,
                &key,
                "malformed override; expected WARDEN_<SECTION>__<KEY>",
            );
            continue;
        }
        match insert_at(root, &segments, parse_env_value(&raw)) {
            Ok((created, resolved)) => {
                for path in created {
                    c.env_origin.insert(path, var.clone());
                }
                let key = resolved.join(".");
                c.env_origin.insert(key.clone(), var);
                c.env_raw.insert(key, raw);
            }
            Err(parent) => c.push_at(
                origin,
                &key,
                format!("cannot override: {parent} is not a table"),
            ),
        }
    }
}

/// Sets `a.b.c`, creating missing tables; returns the paths of the tables it created
/// (their keys came from the environment), or the path that is not a table.
/// Sets `value` at `segments` (lowercase, as environment names carry no case), making the
/// tables on the way. A segment names a key the file spells in another case (a tier
/// `Gold`) when that is the only key it matches: an override must reach the file's entry,
/// not create a new one beside it. Returns the tables created and the path as resolved.
fn insert_at(
    root: &mut Table,
    segments: &[String],
    value: Value,
) -> Result<(Vec<String>, Vec<String>), String> {
    let Some((last, parents)) = segments.split_last() else {
        return Err(String::new());
    };
    let spelled = |table: &Table, segment: &String| -> String {
        if table.contains_key(segment) {
            return segment.clone();
        }
        let mut same = table.keys().filter(|k| k.eq_ignore_ascii_case(segment));
        match (same.next(), same.next()) {
            (Some(only), None) => only.clone(),
            _ => segment.clone(),
        }
    };
    let mut created = Vec::new();
    let mut resolved = Vec::with_capacity(segments.len());
    let mut table = root;
    for segment in parents {
        let segment = spelled(table, segment);
        resolved.push(segment.clone());
        if !table.contains_key(&segment) {
            created.push(resolved.join("."));
        }
        let entry = table.entry(segment).or_insert(Value::Table(Table::new()));
        match entry {
            Value::Table(inner) => table = inner,
            _ => return Err(resolved.join(".")),
        }
    }
    let last = spelled(table, last);
    resolved.push(last.clone());
    table.insert(last, value);
    Ok((created, resolved))
}

/// A TOML value when the text is one (`12`, `true`, `["a"]`), else the text as a string
/// (`host:9092`, `redis`, `250ms`).
fn parse_env_value(raw: &str) -> Value {
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut table) if table.len() == 1 => table
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        _ => Value::String(raw.to_owned()),
    }
}

/// A struct checked key by key by [`check_table`].
trait Section: DeserializeOwned {
    /// Checks `value` itself when it is a nested table or array of tables and returns
    /// true; false leaves it to be deserialized as a whole.
    fn check_nested(_key: &str, _value: &mut Value, _path: &str, _c: &mut Collector) -> bool {
        false
    }
}

impl Section for TopicsConfig {}
impl Section for StoreConfig {}
impl Section for RuntimeConfig {}
impl Section for TokenConfig {}
impl Section for SimulatorConfig {}
impl Section for LogConfig {}
impl Section for MetricsConfig {}
impl Section for MoneyConfig {}
impl Section for crate::domain::enforcement::TierPolicy {}

impl Section for crate::domain::enforcement::EnforcementPolicy {
    /// `tiers` overlays the built-in tiers, key by key: a file or variable that sets one
    /// tier's `burst_rps` changes that, not every other tier and field. A tier not built in
    /// starts from the `default` tier as configured. Each tier's keys are checked under its
    /// own name.
    fn check_nested(key: &str, value: &mut Value, path: &str, c: &mut Collector) -> bool {
        use crate::domain::enforcement::{EnforcementPolicy, TierPolicy, DEFAULT_TIER};
        let ("tiers", Value::Table(tiers)) = (key, value) else {
            return false;
        };
        let built_in = EnforcementPolicy::default().tiers;
        let as_table = |tier: &TierPolicy| match Value::try_from(tier) {
            Ok(Value::Table(t)) => t,
            _ => Table::new(),
        };
        // `default` first: a tier not built in starts from it as this deployment sets it.
        let mut names: Vec<String> = tiers.keys().cloned().collect();
        names.sort_by_key(|name| name != DEFAULT_TIER);
        let mut deployment_default: Option<Table> = None;
        for name in names {
            let dotted = join_key(path, &name);
            let Some(Value::Table(given)) = tiers.get_mut(&name) else {
                tiers.remove(&name);
                c.push(&dotted, "expected a table of the tier's keys");
                continue;
            };
            check_table::<TierPolicy>(given, &dotted, c);
            let base = match built_in.get(&name) {
                Some(tier) => as_table(tier),
                None => deployment_default.clone().unwrap_or_else(|| {
                    built_in.get(DEFAULT_TIER).map(as_table).unwrap_or_default()
                }),
            };
            let mut merged = base;
            merged.extend(std::mem::take(given));
            if name == DEFAULT_TIER {
                deployment_default = Some(merged.clone());
            }
            *given = merged;
        }
        for (name, tier) in &built_in {
            if !tiers.contains_key(name) {
                tiers.insert(name.clone(), Value::Table(as_table(tier)));
            }
        }
        true
    }
}

impl Section for Config {
    fn check_nested(key: &str, value: &mut Value, path: &str, c: &mut Collector) -> bool {
        let Value::Table(t) = value else {
            return false;
        };
        match key {
            "kafka" => check_table::<KafkaConfig>(t, path, c),
            "store" => check_table::<StoreConfig>(t, path, c),
            "runtime" => check_table::<RuntimeConfig>(t, path, c),
            "admin" => check_table::<AdminConfig>(t, path, c),
            "simulator" => check_table::<SimulatorConfig>(t, path, c),
            "log" => check_table::<LogConfig>(t, path, c),
            "metrics" => check_table::<MetricsConfig>(t, path, c),
            "money" => check_table::<MoneyConfig>(t, path, c),
            "enforcement" => {
                check_table::<crate::domain::enforcement::EnforcementPolicy>(t, path, c)
            }
            _ => return false,
        }
        true
    }
}

impl Section for KafkaConfig {
    fn check_nested(key: &str, value: &mut Value, path: &str, c: &mut Collector) -> bool {
        match (key, value) {
            ("topics", Value::Table(t)) => check_table::<TopicsConfig>(t, path, c),
            ("properties", Value::Table(t)) => {
                t.retain(|name, v| {
                    // From the environment, a property is its variable's text as written
                    // (`60000`, or an all-digit password), not the number it parses as.
                    if let Some(raw) = c.env_raw.get(&format!("{path}.{name}")) {
                        *v = Value::String(raw.clone());
                    }
                    let ok = v.is_str();
                    if !ok {
                        let message = format!("invalid type: {}, expected a string", v.type_str());
                        c.push(&join_key(path, name), message);
                    }
                    ok
                });
            }
            _ => return false,
        }
        true
    }
}

impl Section for AdminConfig {
    fn check_nested(key: &str, value: &mut Value, path: &str, c: &mut Collector) -> bool {
        let ("tokens", Value::Array(items)) = (key, value) else {
            return false;
        };
        for (i, item) in items.iter_mut().enumerate() {
            let item_path = format!("{path}[{i}]");
            match item {
                Value::Table(t) => check_table::<TokenConfig>(t, &item_path, c),
                other => {
                    let message = format!("invalid type: {}, expected a table", other.type_str());
                    c.push(&item_path, message);
                    *other = Value::Table(Table::new());
                }
            }
        }
        true
    }
}

/// Checks every key of `table` on its own against `T`, reporting and removing the
/// unknown and the invalid ones so that the whole can then be deserialized.
fn check_table<T: Section>(table: &mut Table, path: &str, c: &mut Collector) {
    let fields = field_names::<T>();
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let dotted = join_key(path, &key);
        if !fields.contains(&key.as_str()) {
            table.remove(&key);
            let what = if path.is_empty() {
                "unknown section"
            } else {
                "unknown key"
            };
            c.push(
                &dotted,
                format!("{what} (expected one of: {})", fields.join(", ")),
            );
            continue;
        }
        let Some(value) = table.get_mut(&key) else {
            continue;
        };
        if T::check_nested(&key, value, &dotted, c) {
            continue;
        }
        if let Err(message) = check_value::<T>(&key, value, &dotted, c) {
            table.remove(&key);
            c.push(&dotted, message);
        }
    }
}

/// Deserializes `{key = value}` alone into `T`. A value from the environment that read
/// as a TOML number or boolean but is wanted as a string (a numeric group id) is
/// retried as its raw text.
fn check_value<T: DeserializeOwned>(
    key: &str,
    value: &mut Value,
    dotted: &str,
    c: &Collector,
) -> Result<(), String> {
    let Err(message) = deserialize_one::<T>(key, value.clone()) else {
        return Ok(());
    };
    if let Some(raw) = c.env_raw.get(dotted) {
        let text = Value::String(raw.clone());
        if !value.is_str() && deserialize_one::<T>(key, text.clone()).is_ok() {
            *value = text;
            return Ok(());
        }
    }
    Err(message)
}

fn deserialize_one<T: DeserializeOwned>(key: &str, value: Value) -> Result<(), String> {
    let mut one = Table::new();
    one.insert(key.to_owned(), value);
    Value::Table(one)
        .try_into::<T>()
        .map(drop)
        .map_err(|e| e.message().trim().to_owned())
}

// ---- Semantic rules: ranges, enums, cross-field ---------------------------------------

const MIB: usize = 1024 * 1024;

/// librdkafka properties that have their own key here, that warden sets itself (a value
/// here would be silently overridden), or that would break a guarantee.
const MANAGED_PROPERTIES: [(&str, &str); 18] = [
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("metadata.broker.list", "set kafka.brokers instead"),
    ("group.id", "set kafka.group_id instead"),
    ("client.id", "set kafka.client_id instead"),
    ("session.timeout.ms", "set kafka.session_timeout instead"),
    (
        "max.poll.interval.ms",
        "set kafka.max_poll_interval instead",
    ),
    (
        "enable.auto.offset.store",
        "offsets are stored only once the state is durable",
    ),
    (
        "enable.auto.commit",
        "offsets are committed only once the state is durable",
    ),
    (
        "auto.offset.reset",
        "a partition never consumed starts at the earliest record (CONTRACT §9)",
    ),
    (
        "partition.assignment.strategy",
        "warden takes and releases whole partitions (eager `range`)",
    ),
    (
        "enable.partition.eof",
        "warden sets it for its own consumer",
    ),
    (
        "statistics.interval.ms",
        "warden reads the statistics every second for its lag metrics",
    ),
    (
        "acks",
        "every record warden produces waits for all in-sync replicas",
    ),
    (
        "request.required.acks",
        "an alias of acks: every record warden produces waits for all in-sync replicas",
    ),
    (
        "delivery.timeout.ms",
        "an alias: set message.timeout.ms instead",
    ),
    (
        "partitioner",
        "records are keyed like the input topics' producers (murmur2)",
    ),
    (
        "linger.ms",
        "warden sets it per producer (decisions are sent at once)",
    ),
    (
        "queue.buffering.max.ms",
        "an alias of linger.ms, which warden sets per producer",
    ),
];

fn validate(config: &Config, c: &mut Collector) {
    validate_kafka(&config.kafka, c);
    validate_topics(&config.kafka.topics, c);
    validate_store(&config.store, c);
    validate_runtime(&config.runtime, c);
    validate_admin(&config.admin, c);
    validate_simulator(&config.simulator, c);
    validate_log(&config.log, c);
    for (key, message) in config.enforcement.validate() {
        let key = if key.starts_with("enforcement.") {
            key
        } else {
            format!("enforcement.{key}")
        };
        c.push(&key, message);
    }
    if let Err((key, message)) = config.money.load_program() {
        c.push(&key, message);
    }
    if config.metrics.top_partners > 1_000 {
        c.push("metrics.top_partners", "at most 1000 (each is a series)");
    }
    if config.metrics.top_partners_interval < Duration::from_millis(100) {
        // Each round asks every live actor for its summary: 0 would never stop asking.
        c.push("metrics.top_partners_interval", "must be at least 100ms");
    }
}

fn range<T: PartialOrd + fmt::Display>(c: &mut Collector, key: &str, v: T, lo: T, hi: T) {
    let message = format!("must be between {lo} and {hi}, got {v}");
    c.require(lo <= v && v <= hi, &[key], message);
}

fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

fn validate_kafka(k: &KafkaConfig, c: &mut Collector) {
    let brokers = ["kafka.brokers", "kafka.embedded"];
    if k.embedded {
        let message = "embedded uses the in-process cluster; remove kafka.brokers";
        c.require(k.brokers.is_empty(), &brokers, message);
    } else {
        let message = r#"required when kafka.embedded = false (e.g. "kafka-0:9092,kafka-1:9092")"#;
        c.require(!k.brokers.trim().is_empty(), &brokers, message);
    }
    c.require(
        !k.group_id.is_empty(),
        &["kafka.group_id"],
        "must not be empty",
    );
    c.require(
        !k.client_id.is_empty(),
        &["kafka.client_id"],
        "must not be empty",
    );
    range(c, "kafka.partitions", k.partitions, 1, 10_000);
    range(c, "kafka.replication_factor", k.replication_factor, 1, 10);
    range(
        c,
        "kafka.max_record_bytes",
        k.max_record_bytes,
        1024,
        16 * MIB,
    );
    range(c, "kafka.poll_batch", k.poll_batch, 1, 100_000);
    validate_kafka_timing(k, c);
    for (name, value) in &k.properties {
        let key = join_key("kafka.properties", name);
        if let Some((_, why)) = MANAGED_PROPERTIES.iter().find(|(p, _)| p == name) {
            c.require(false, &[&key], format!("managed by warden; {why}"));
        } else if let Err(why) = librdkafka_accepts(name, value) {
            c.require(false, &[&key], why);
        }
    }
}

/// Whether librdkafka takes `name = value`, checked here so a typo fails at start (and in
/// `check-config`) as a bad configuration naming its key, not later as a runtime error.
/// librdkafka's own message repeats the value, so it is not passed on for a property
/// whose value may be a secret.
fn librdkafka_accepts(name: &str, value: &str) -> Result<(), String> {
    let mut config = rdkafka::ClientConfig::new();
    config.set(name, value);
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(rdkafka::error::KafkaError::ClientConfig(_, description, _, _))
            if !is_secret_property(name) && !description.contains(value) =>
        {
            Err(format!("librdkafka refuses it: {description}"))
        }
        Err(_) => Err(
            "librdkafka refuses it (an unknown property, or a value it cannot \
                       take; the message is not shown, as it would show the value)"
                .to_owned(),
        ),
    }
}

fn validate_kafka_timing(k: &KafkaConfig, c: &mut Collector) {
    c.require(
        !k.flush_interval.is_zero() && k.flush_interval <= Duration::from_secs(60),
        &["kafka.flush_interval"],
        format!(
            "must be more than 0 and at most 60s, got {}",
            human(k.flush_interval)
        ),
    );
    // librdkafka's own limits, checked here so a bad value fails at start with its key.
    c.require(
        k.session_timeout >= Duration::from_millis(1)
            && k.session_timeout <= Duration::from_secs(3600),
        &["kafka.session_timeout"],
        format!(
            "must be between 1ms and 1h, got {}",
            human(k.session_timeout)
        ),
    );
    c.require(
        k.max_poll_interval > k.session_timeout,
        &["kafka.max_poll_interval", "kafka.session_timeout"],
        format!(
            "must be greater than kafka.session_timeout ({}), got {}",
            human(k.session_timeout),
            human(k.max_poll_interval)
        ),
    );
    c.require(
        k.max_poll_interval <= Duration::from_secs(24 * 3600),
        &["kafka.max_poll_interval"],
        format!("must be at most 24h, got {}", human(k.max_poll_interval)),
    );
}

fn validate_topics(t: &TopicsConfig, c: &mut Collector) {
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (name, topic) in t.all() {
        let key = format!("kafka.topics.{name}");
        if !is_topic_name(topic) {
            let message = format!("must be 1 to 249 of a-z A-Z 0-9 . _ -, got {topic:?}");
            c.require(false, &[&key], message);
        } else if let Some(first) = seen.get(topic) {
            let message =
                format!("same topic as {first} ({topic:?}); every topic must be distinct");
            c.require(false, &[&key, first], message);
        } else {
            seen.insert(topic, key);
        }
    }
}

fn is_topic_name(s: &str) -> bool {
    (1..=249).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn validate_store(s: &StoreConfig, c: &mut Collector) {
    if s.backend == StoreBackend::Redis {
        let ok = s.redis_url.starts_with("redis://") || s.redis_url.starts_with("rediss://");
        let message = format!(
            r#"must start with redis:// or rediss:// when store.backend = "redis", got {:?}"#,
            redact_url(&s.redis_url)
        );
        c.require(ok, &["store.redis_url", "store.backend"], message);
    }
    let prefix_ok = !s.key_prefix.is_empty()
        && !s
            .key_prefix
            .chars()
            .any(|ch| ch == '{' || ch == '}' || ch.is_whitespace());
    // Braces would change which Redis Cluster slot a key hashes to.
    let message = "must be non-empty, without '{', '}' or whitespace";
    c.require(prefix_ok, &["store.key_prefix"], message);
    c.require(
        !s.timeout.is_zero(),
        &["store.timeout"],
        "must be more than 0",
    );
}

fn validate_runtime(r: &RuntimeConfig, c: &mut Collector) {
    let message = format!(
        "must be at most 1024 (0 = one per core), got {}",
        r.arbiters
    );
    c.require(r.arbiters <= 1024, &["runtime.arbiters"], message);
    range(
        c,
        "runtime.mailbox_capacity",
        r.mailbox_capacity,
        1,
        100_000,
    );
    let message = "must be at least 1";
    c.require(
        r.max_unflushed_events >= 1,
        &["runtime.max_unflushed_events"],
        message,
    );
    for (key, d) in [
        ("runtime.passivate_after", r.passivate_after),
        ("runtime.dedup_window", r.dedup_window),
        ("runtime.shutdown_grace", r.shutdown_grace),
    ] {
        c.require(!d.is_zero(), &[key], "must be more than 0");
    }
}

fn validate_admin(a: &AdminConfig, c: &mut Collector) {
    let message = format!(
        r#"must be an address and port such as "127.0.0.1:8080", got {:?}"#,
        a.listen
    );
    c.require(
        a.listen.parse::<SocketAddr>().is_ok(),
        &["admin.listen"],
        message,
    );
    range(c, "admin.body_limit_bytes", a.body_limit_bytes, 1, 16 * MIB);
    range(
        c,
        "admin.rate_limit_per_second",
        a.rate_limit_per_second as usize,
        1,
        1_000_000,
    );
    range(
        c,
        "admin.rate_limit_burst",
        a.rate_limit_burst as usize,
        1,
        1_000_000,
    );
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut hashes: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, token) in a.tokens.iter().enumerate() {
        let key = |field: &str| format!("admin.tokens[{i}].{field}");
        let name_key = key("name");
        if token.name.is_empty() {
            c.require(false, &[&name_key], "required");
        } else if crate::domain::audit::RESERVED_ACTORS.contains(&token.name.as_str()) {
            let message = format!(
                "{:?} is how the audit log names warden itself; choose another name",
                token.name
            );
            c.require(false, &[&name_key], message);
        } else if let Some(first) = names.get(token.name.as_str()) {
            let first_key = format!("admin.tokens[{first}].name");
            let message = format!(
                "duplicate token name {:?} (also admin.tokens[{first}])",
                token.name
            );
            c.require(false, &[&name_key, &first_key], message);
        } else {
            names.insert(&token.name, i);
        }
        let message = "must be 64 lowercase hex characters, the SHA-256 of the token \
                       (`warden token new` prints it)";
        c.require(is_sha256_hex(&token.sha256), &[&key("sha256")], message);
        // One token, one principal: the same secret under two entries would act as
        // whichever the lookup found.
        if let Some(first) = hashes.get(token.sha256.as_str()) {
            let message = format!("the same token as admin.tokens[{first}]");
            c.require(false, &[&key("sha256")], message);
        } else {
            hashes.insert(&token.sha256, i);
        }
        let message = "at least one role is required (viewer, operator, finance, security)";
        c.require(!token.roles.is_empty(), &[&key("roles")], message);
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn validate_simulator(s: &SimulatorConfig, c: &mut Collector) {
    c.require(
        s.partners >= 1,
        &["simulator.partners"],
        "must be at least 1",
    );
    let message = "must be at least 1";
    c.require(
        s.events_per_second >= 1,
        &["simulator.events_per_second"],
        message,
    );
    for (key, v) in [
        ("simulator.misbehaving_fraction", s.misbehaving_fraction),
        ("simulator.invoice_fraction", s.invoice_fraction),
    ] {
        let message = format!("must be between 0 and 1, got {v}");
        c.require((0.0..=1.0).contains(&v), &[key], message);
    }
}

fn validate_log(l: &LogConfig, c: &mut Collector) {
    if l.level.trim().is_empty() {
        c.require(false, &["log.level"], r#"must not be empty (e.g. "info")"#);
    } else if let Err(e) = tracing_subscriber::EnvFilter::try_new(&l.level) {
        c.require(
            false,
            &["log.level"],
            format!("invalid filter {:?}: {e}", l.level),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "[kafka]\nbrokers = \"k:9092\"\n";
    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn errors(text: &str) -> ConfigErrors {
        Config::from_toml_str(text, "x.toml").expect_err("expected problems")
    }

    fn keys(e: &ConfigErrors) -> Vec<&str> {
        e.problems.iter().map(|p| p.key.as_str()).collect()
    }

    fn problem<'a>(e: &'a ConfigErrors, key: &str) -> &'a ConfigProblem {
        e.problems
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("no problem at {key}: {e}"))
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_str(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        from_parts(text, "x.toml", None, env(vars))
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = Config::default();
        assert!(!c.kafka.embedded && c.kafka.brokers.is_empty());
        assert_eq!(
            (c.kafka.group_id.as_str(), c.kafka.client_id.as_str()),
            ("warden", "warden")
        );
        assert_eq!(c.kafka.topics.usage, "warden.usage.v1");
        assert_eq!(c.kafka.topics.deadletter, "warden.deadletter.v1");
        assert_eq!((c.kafka.partitions, c.kafka.replication_factor), (12, 1));
        assert_eq!(
            (c.kafka.max_record_bytes, c.kafka.poll_batch),
            (65_536, 2000)
        );
        assert_eq!(c.kafka.max_clock_skew, Duration::from_secs(300));
        assert_eq!(c.kafka.flush_interval, Duration::from_millis(100));
        assert_eq!(c.kafka.session_timeout, Duration::from_secs(10));
        assert_eq!(c.kafka.max_poll_interval, Duration::from_secs(300));
        assert_eq!(c.store.backend, StoreBackend::Memory);
        assert_eq!(c.store.replica_acks, 0);
        assert_eq!(c.store.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(c.store.timeout, Duration::from_millis(500));
        assert_eq!(c.store.failure_policy, FailurePolicy::FailOpen);
        assert_eq!((c.runtime.arbiters, c.runtime.mailbox_capacity), (0, 64));
        assert_eq!(c.runtime.dedup_window, Duration::from_secs(24 * 3600));
        assert_eq!(c.runtime.max_unflushed_events, 50_000);
        assert_eq!(
            (c.admin.listen.as_str(), c.admin.body_limit_bytes),
            ("127.0.0.1:8080", 16_384)
        );
        assert!(!c.admin.generate_token && c.admin.tokens.is_empty());
        assert_eq!(
            (
                c.simulator.partners,
                c.simulator.events_per_second,
                c.simulator.seed
            ),
            (1000, 2000, 42)
        );
        assert_eq!(
            (c.log.format, c.log.level.as_str()),
            (LogFormat::Text, "info")
        );
        assert!(c.runtime.arbiter_count() >= 1);
        let fixed = RuntimeConfig {
            arbiters: 3,
            ..RuntimeConfig::default()
        };
        assert_eq!(fixed.arbiter_count(), 3);
    }

    #[test]
    fn the_program_is_chosen_by_config_and_a_bad_one_is_named() {
        let c = Config::from_toml_str(VALID, "x.toml").unwrap();
        assert_eq!(c.money.load_program().unwrap().name, "default");
        let reseller = format!("{VALID}[money]\nprogram = \"reseller\"\n");
        let c = Config::from_toml_str(&reseller, "x.toml").unwrap();
        assert!(c.money.load_program().unwrap().promo.is_some());

        let e = errors(&format!("{VALID}[money]\nprogram = \"gold-rush\"\n"));
        assert_eq!(keys(&e), ["money.program"]);
        assert!(problem(&e, "money.program").message.contains("gold-rush"));

        // A program file is read relative to the config file, and its own problems are
        // reported with the file's path.
        let dir = std::env::temp_dir().join(format!("warden-prog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("bad.toml"),
            "name = \"x\"\ndefault_tier = \"gold\"\n[tiers.gold]\ncommission_rate = 0.1\n",
        )
        .unwrap();
        let origin = dir.join("warden.toml");
        let text = format!("{VALID}[money]\nprogram_file = \"bad.toml\"\n");
        let e = Config::from_toml_str(&text, &origin.display().to_string()).unwrap_err();
        assert_eq!(keys(&e), ["money.program_file"]);
        let message = &problem(&e, "money.program_file").message;
        assert!(
            message.contains(&dir.join("bad.toml").display().to_string()),
            "{message}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_file_lacks_only_the_brokers() {
        let e = errors("");
        assert_eq!(keys(&e), ["kafka.brokers"]);
        assert_eq!(e.problems[0].origin, "x.toml");
        assert_eq!(
            Config::from_toml_str(VALID, "x.toml")
                .unwrap()
                .kafka
                .brokers,
            "k:9092"
        );
    }

    #[test]
    fn file_values_replace_defaults() {
        let text = r#"
            [kafka]
            brokers = "a:9092,b:9092"
            poll_batch = 10
            [kafka.topics]
            usage = "u.v2"
            [kafka.properties]
            "security.protocol" = "ssl"
            [store]
            backend = "redis"
            redis_url = "rediss://r:6380"
            failure_policy = "fail_closed"
            [log]
            format = "json"
        "#;
        let c = Config::from_toml_str(text, "x.toml").unwrap();
        assert_eq!(c.kafka.brokers, "a:9092,b:9092");
        assert_eq!(c.kafka.poll_batch, 10);
        assert_eq!(c.kafka.topics.usage, "u.v2");
        assert_eq!(c.kafka.topics.invoices, "warden.invoices.v1");
        assert_eq!(c.kafka.properties["security.protocol"], "ssl");
        assert_eq!(c.store.backend, StoreBackend::Redis);
        assert_eq!(c.store.failure_policy, FailurePolicy::FailClosed);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.runtime, RuntimeConfig::default());
    }

    #[test]
    fn env_overrides_win_over_the_file_and_parse_their_values() {
        let text = "[kafka]\nbrokers = \"file:9092\"\npoll_batch = 10\n";
        let c = load_str(
            text,
            &[
                ("WARDEN_KAFKA__BROKERS", "host:9092"),
                ("WARDEN_KAFKA__POLL_BATCH", "500"),
                ("WARDEN_KAFKA__CREATE_INPUT_TOPICS", "true"),
                ("WARDEN_KAFKA__FLUSH_INTERVAL", "250ms"),
                ("WARDEN_KAFKA__GROUP_ID", "1234"),
                ("WARDEN_KAFKA__TOPICS__USAGE", "custom.usage"),
                ("WARDEN_KAFKA__PROPERTIES__MESSAGE.TIMEOUT.MS", "60000"),
                ("WARDEN_STORE__BACKEND", "redis"),
                ("WARDEN_SIMULATOR__INVOICE_FRACTION", "0.5"),
                ("WARDEN_CONFIG", "not an override"),
                ("HOME", "/root"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "host:9092");
        assert_eq!(c.kafka.poll_batch, 500);
        assert!(c.kafka.create_input_topics);
        assert_eq!(c.kafka.flush_interval, Duration::from_millis(250));
        assert_eq!(c.kafka.group_id, "1234");
        assert_eq!(c.kafka.topics.usage, "custom.usage");
        assert_eq!(
            c.kafka
                .properties
                .get("message.timeout.ms")
                .map(String::as_str),
            Some("60000")
        );
        assert_eq!(c.store.backend, StoreBackend::Redis);
        assert_eq!(c.simulator.invoice_fraction, 0.5);
    }

    #[test]
    fn unknown_keys_and_sections_name_the_file_and_key() {
        let e = errors(
            "[kafka]\nbrokers = \"k:1\"\nbogus = 1\n[kafka.topics]\nextra = \"t\"\n[nope]\nx = 1\n",
        );
        assert_eq!(keys(&e), ["kafka.bogus", "kafka.topics.extra", "nope"]);
        let bogus = problem(&e, "kafka.bogus");
        assert_eq!(bogus.origin, "x.toml");
        assert!(bogus.message.starts_with("unknown key"), "{bogus}");
        assert!(bogus
            .to_string()
            .starts_with("x.toml: kafka.bogus: unknown key"));
        assert!(problem(&e, "nope").message.starts_with("unknown section"));
    }

    #[test]
    fn replica_acks_is_a_count_of_replicas() {
        let c = Config::from_toml_str(
            "[kafka]\nembedded = true\n[store]\nreplica_acks = 2\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.store.replica_acks, 2);
        let e = errors("[kafka]\nembedded = true\n[store]\nreplica_acks = -1\n");
        assert_eq!(keys(&e), ["store.replica_acks"], "{e}");
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let text = r#"
            [kafka]
            brokers = "k:9092"
            poll_batch = "x"
            partitions = 0
            [store]
            backend = "mongo"
            [runtime]
            passivate_after = "soon"
            [admin]
            listen = "nowhere"
            [simulator]
            misbehaving_fraction = 1.5
            [log]
            format = "xml"
        "#;
        let e = errors(text);
        let expected = [
            "kafka.poll_batch",
            "kafka.partitions",
            "store.backend",
            "runtime.passivate_after",
            "admin.listen",
            "simulator.misbehaving_fraction",
            "log.format",
        ];
        assert_eq!(keys(&e), expected, "{e}");
        assert!(e.problems.iter().all(|p| p.origin == "x.toml"));
        assert_eq!(
            problem(&e, "kafka.poll_batch").to_string(),
            r#"x.toml: kafka.poll_batch: invalid type: string "x", expected usize"#
        );
        assert!(problem(&e, "store.backend")
            .message
            .contains("unknown variant `mongo`"));
        assert!(problem(&e, "runtime.passivate_after")
            .message
            .contains("invalid duration \"soon\""));
        assert_eq!(
            problem(&e, "kafka.partitions").message,
            "must be between 1 and 10000, got 0"
        );
        assert_eq!(e.to_string().lines().count(), expected.len());
    }

    #[test]
    fn env_problems_name_the_variable() {
        let e = load_str(
            VALID,
            &[
                ("WARDEN_KAFKA__POLL_BATCH", "lots"),
                ("WARDEN_KAFKA__PARTITIONS", "0"),
                ("WARDEN_NOPE__X", "1"),
                ("WARDEN_KAFKA__BROKERS__X", "1"),
                ("WARDEN_KAFKA____X", "1"),
                ("WARDEN_STORE_REDIS_URL", "redis://typo:6379"),
                ("WARDEN_TEST_REDIS_URL", "redis://not-ours:6379"),
                ("WARDEN_METRICS_SERVICE_HOST", "10.0.0.7"),
            ],
        )
        .unwrap_err();
        let origin = |key: &str| problem(&e, key).origin.clone();
        assert_eq!(origin("kafka.poll_batch"), "env WARDEN_KAFKA__POLL_BATCH");
        assert_eq!(origin("kafka.partitions"), "env WARDEN_KAFKA__PARTITIONS");
        assert_eq!(origin("nope"), "env WARDEN_NOPE__X");
        assert_eq!(origin("kafka.brokers.x"), "env WARDEN_KAFKA__BROKERS__X");
        assert_eq!(origin("kafka..x"), "env WARDEN_KAFKA____X");
        let typo = problem(&e, "store.redis_url");
        assert_eq!(typo.origin, "env WARDEN_STORE_REDIS_URL");
        assert_eq!(
            typo.message,
            "not an override: write WARDEN_STORE__REDIS_URL"
        );
        assert_eq!(e.problems.len(), 6, "{e}");
        let poll = problem(&e, "kafka.poll_batch").to_string();
        assert_eq!(
            poll,
            r#"env WARDEN_KAFKA__POLL_BATCH: kafka.poll_batch: invalid type: string "lots", expected usize"#
        );
    }

    #[test]
    fn invalid_syntax_reports_the_file_with_line_and_column() {
        let e = errors("[kafka]\nbrokers = \"k:1\"\npoll_batch = = 3\n");
        assert_eq!(e.problems.len(), 1);
        let p = &e.problems[0];
        assert_eq!((p.origin.as_str(), p.key.as_str()), ("x.toml", ""));
        assert!(
            p.message.starts_with("invalid TOML at line 3, column 14"),
            "{p}"
        );
        assert_eq!(e.to_string().lines().count(), 1);
    }

    #[test]
    fn durations_parse_and_bad_ones_are_rejected() {
        let text = "[kafka]\nbrokers = \"k:1\"\nmax_clock_skew = \"90s\"\n[runtime]\ndedup_window = \"2days\"\npassivate_after = \"1h 30m\"\n";
        let c = Config::from_toml_str(text, "x.toml").unwrap();
        assert_eq!(c.kafka.max_clock_skew, Duration::from_secs(90));
        assert_eq!(c.runtime.dedup_window, Duration::from_secs(2 * 86_400));
        assert_eq!(c.runtime.passivate_after, Duration::from_secs(5400));
        let back = toml::to_string(&c).unwrap();
        assert!(back.contains("max_clock_skew = \"1m 30s\""), "{back}");
        assert_eq!(Config::from_toml_str(&back, "round-trip").unwrap(), c);

        let e = errors(
            "[kafka]\nbrokers = \"k:1\"\nflush_interval = 100\nmax_clock_skew = \"5 parsecs\"\n",
        );
        assert!(problem(&e, "kafka.flush_interval")
            .message
            .contains("invalid type: integer `100`, expected a duration string"));
        assert!(problem(&e, "kafka.max_clock_skew")
            .message
            .contains("invalid duration \"5 parsecs\""));
        let e = errors("[kafka]\nbrokers = \"k:1\"\nflush_interval = \"0s\"\n");
        assert_eq!(
            problem(&e, "kafka.flush_interval").message,
            "must be more than 0 and at most 60s, got 0s"
        );
    }

    #[test]
    fn token_problems_are_indexed() {
        let text = format!(
            r#"
            [kafka]
            brokers = "k:1"
            [[admin.tokens]]
            name = "ok"
            sha256 = "{HASH}"
            roles = ["viewer", "finance"]
            expires_at = 2030-01-01T00:00:00Z
            [[admin.tokens]]
            name = "bad"
            sha256 = "ABC"
            roles = ["admin"]
            [[admin.tokens]]
            name = "ok"
            sha256 = "{HASH}"
            expires_at = "2030-01-01T00:00:00"
            "#
        );
        let e = errors(&text);
        assert_eq!(
            keys(&e),
            [
                "admin.tokens[1].roles",
                "admin.tokens[2].expires_at",
                "admin.tokens[1].sha256",
                "admin.tokens[2].name",
                "admin.tokens[2].sha256",
                "admin.tokens[2].roles",
            ],
            "{e}"
        );
        assert!(problem(&e, "admin.tokens[1].roles")
            .message
            .contains("unknown variant `admin`"));
        assert!(problem(&e, "admin.tokens[2].name")
            .message
            .contains("duplicate token name \"ok\""));
        let e = errors("[kafka]\nbrokers = \"k:1\"\n[admin]\ntokens = [1]\n");
        assert_eq!(
            keys(&e),
            ["admin.tokens[0]"],
            "a non-table token hides no other rule"
        );
    }

    #[test]
    fn tokens_parse_with_roles_and_expiry() {
        let text = format!(
            "[kafka]\nbrokers = \"k:1\"\n[[admin.tokens]]\nname = \"a\"\nsha256 = \"{HASH}\"\nroles = [\"security\"]\nexpires_at = \"2030-01-01T02:00:00+02:00\"\n"
        );
        let c = Config::from_toml_str(&text, "x.toml").unwrap();
        let token = &c.admin.tokens[0];
        assert_eq!(token.roles, [Role::Security]);
        assert_eq!(
            token.expires_at.unwrap().to_rfc3339(),
            "2030-01-01T00:00:00+00:00"
        );
        assert_eq!("finance".parse::<Role>(), Ok(Role::Finance));
        assert!("root".parse::<Role>().is_err());
    }

    /// librdkafka's properties are checked at load, as a bad configuration naming the
    /// key and its origin, never with a value that may be a secret; the ones warden sets
    /// itself are refused rather than silently overridden.
    #[test]
    fn kafka_properties_are_checked_at_load_without_showing_secrets() {
        let text = r#"
            [kafka]
            brokers = "k:1"
            [kafka.properties]
            "sasl.passwrd" = "s3cret-typo"
            "socket.timeout.ms" = "soon"
            "partition.assignment.strategy" = "cooperative-sticky"
            "linger.ms" = "50"
            "security.protocol" = "sasl_ssl"
            "sasl.password" = "fine"
        "#;
        let e = load_str(
            text,
            &[("WARDEN_KAFKA__PROPERTIES__QUEUED.MAX.MESSAGESKBYTES", "x")],
        )
        .expect_err("problems");
        let typo = problem(&e, "kafka.properties.\"sasl.passwrd\"");
        assert!(typo.message.starts_with("librdkafka refuses it"), "{typo}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let bad = problem(&e, "kafka.properties.\"socket.timeout.ms\"");
        assert!(bad.message.starts_with("librdkafka refuses it"), "{bad}");
        for managed in ["partition.assignment.strategy", "linger.ms"] {
            let p = problem(&e, &format!("kafka.properties.{managed:?}"));
            assert!(p.message.starts_with("managed by warden"), "{p}");
        }
        // From the environment: the problem names the variable, not the file.
        let env = problem(&e, "kafka.properties.\"queued.max.messageskbytes\"");
        assert_eq!(
            env.origin,
            "env WARDEN_KAFKA__PROPERTIES__QUEUED.MAX.MESSAGESKBYTES"
        );
        assert_eq!(e.problems.len(), 5, "{e}");
    }

    #[test]
    fn a_redis_url_that_is_not_a_url_is_not_echoed_with_its_password() {
        let text = "[kafka]\nbrokers = \"k:1\"\n[store]\nbackend = \"redis\"\n\
                    redis_url = \"redis:/:hunter2@redis:6379\"\n";
        let e = errors(text);
        let url = problem(&e, "store.redis_url");
        assert!(url.message.contains("***@redis:6379"), "{url}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(redact_url("plain-host:6379"), "plain-host:6379");
    }

    #[test]
    fn cross_field_and_format_rules() {
        let text = r#"
            [kafka]
            embedded = true
            brokers = "k:1"
            session_timeout = "30s"
            max_poll_interval = "30s"
            [kafka.topics]
            audit = "warden.usage.v1"
            control = "bad topic"
            [kafka.properties]
            "enable.auto.offset.store" = "true"
            "linger.ms" = 5
            [store]
            backend = "redis"
            redis_url = "http://user:pw@r:6379"
            key_prefix = "{w}"
        "#;
        let e = errors(text);
        let brokers = problem(&e, "kafka.brokers");
        assert_eq!(
            brokers.message,
            "embedded uses the in-process cluster; remove kafka.brokers"
        );
        assert!(problem(&e, "kafka.max_poll_interval")
            .message
            .starts_with("must be greater than kafka.session_timeout"));
        assert!(problem(&e, "kafka.topics.audit")
            .message
            .contains("same topic as kafka.topics.usage"));
        assert!(problem(&e, "kafka.topics.control")
            .message
            .contains("\"bad topic\""));
        assert!(problem(&e, "kafka.properties.\"enable.auto.offset.store\"")
            .message
            .starts_with("managed by warden"));
        assert!(problem(&e, "kafka.properties.\"linger.ms\"")
            .message
            .contains("expected a string"));
        let url = problem(&e, "store.redis_url");
        assert!(
            url.message.contains("user:***@r") && !url.message.contains("pw"),
            "{url}"
        );
        assert!(problem(&e, "store.key_prefix")
            .message
            .starts_with("must be non-empty"));
        assert_eq!(e.problems.len(), 8, "{e}");
    }

    /// Setting one key of one tier changes that key: the other tiers and the tier's other
    /// keys keep their built-in values, and a mistake names its tier.
    #[test]
    fn a_tier_setting_overlays_the_built_in_tiers() {
        let builtin = crate::domain::enforcement::EnforcementPolicy::default();
        let text = "[kafka]\nbrokers = \"k:1\"\n[enforcement.tiers.diamond]\nburst_rps = 9000\n\
                    [enforcement.tiers.default]\nerror_rate_warn = 0.06\n";
        let c = load_str(
            text,
            &[("WARDEN_ENFORCEMENT__TIERS__GOLD__BURST_RPS", "2000")],
        )
        .unwrap();
        let tiers = &c.enforcement.tiers;
        assert_eq!(tiers["gold"].burst_rps, 2000);
        assert_eq!(
            tiers["gold"].monthly_requests,
            builtin.tiers["gold"].monthly_requests
        );
        assert_eq!(tiers["platinum"], builtin.tiers["platinum"]);
        assert_eq!(tiers["default"].error_rate_warn, 0.06);
        assert_eq!(
            tiers["default"].burst_rps,
            builtin.tiers["default"].burst_rps
        );
        // A new tier starts from `default` as configured; built-in tiers do not.
        assert_eq!(tiers["diamond"].burst_rps, 9000);
        assert_eq!(tiers["diamond"].error_rate_warn, 0.06);
        assert_eq!(tiers["diamond"].overage, builtin.tiers["default"].overage);
        assert_eq!(
            tiers["gold"].error_rate_warn,
            builtin.tiers["gold"].error_rate_warn
        );
        // The file's spelling of a tier is the one an override reaches.
        let c = load_str(
            "[kafka]\nbrokers = \"k:1\"\n[enforcement.tiers.Diamond]\nburst_rps = 9000\n",
            &[("WARDEN_ENFORCEMENT__TIERS__DIAMOND__BURST_RPS", "7000")],
        )
        .unwrap();
        assert_eq!(c.enforcement.tiers["Diamond"].burst_rps, 7000);
        assert!(!c.enforcement.tiers.contains_key("diamond"));
        let e = errors("[kafka]\nbrokers = \"k:1\"\n[enforcement.tiers.gold]\nburst_rpss = 5\n");
        assert!(problem(&e, "enforcement.tiers.gold.burst_rpss")
            .message
            .starts_with("unknown key"));
    }

    #[test]
    fn the_top_partners_view_is_not_refreshed_in_a_loop() {
        let e = errors("[kafka]\nbrokers = \"k:1\"\n[metrics]\ntop_partners_interval = \"0s\"\n");
        assert_eq!(
            problem(&e, "metrics.top_partners_interval").message,
            "must be at least 100ms"
        );
    }

    #[test]
    fn a_bad_value_does_not_cascade_into_rules_that_use_it() {
        let e = errors(
            "[kafka]\nbrokers = \"k:1\"\nsession_timeout = \"later\"\nmax_poll_interval = \"1s\"\n",
        );
        assert_eq!(keys(&e), ["kafka.session_timeout"], "{e}");
    }

    #[test]
    fn shipped_configs_load_cleanly() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let embedded =
            Config::load(&dir.join("warden.toml"), Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        assert!(embedded.kafka.embedded && embedded.kafka.create_input_topics);
        assert_eq!(embedded.kafka.partitions, 8);
        assert!(embedded.admin.generate_token && embedded.simulator.enabled);
        assert_eq!(embedded.simulator.partners, 1000);
        let production = Config::load(&dir.join("production.toml"), Vec::new())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            production.kafka.brokers,
            "kafka-0.kafka:9092,kafka-1.kafka:9092"
        );
        assert_eq!(production.store.backend, StoreBackend::Redis);
        assert_eq!(production.admin.listen, "0.0.0.0:8080");
        assert_eq!(production.admin.tokens[0].roles, [Role::Security]);
        assert!(!production.simulator.enabled);
        assert_eq!(production.log.format, LogFormat::Json);
    }

    #[test]
    fn load_reads_a_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(
            &path,
            "[kafka]\nembedded = true\n[log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        let c = Config::load(&path, env(&[("WARDEN_LOG__FORMAT", "json")])).unwrap();
        assert_eq!(
            (c.log.level.as_str(), c.log.format),
            ("debug", LogFormat::Json)
        );
        std::fs::write(&path, "[kafka]\npoll_batch = -1\n").unwrap();
        let e = Config::load(&path, Vec::new()).unwrap_err();
        assert_eq!(keys(&e), ["kafka.poll_batch", "kafka.brokers"]);
        assert!(e
            .problems
            .iter()
            .all(|p| p.origin == path.display().to_string()));
        let missing = dir.path().join("missing.toml");
        let e = Config::load(&missing, Vec::new()).unwrap_err();
        assert_eq!(e.problems[0].origin, missing.display().to_string());
        assert!(e.problems[0].message.starts_with("cannot read the file"));
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut c = Config::default();
        c.store.redis_url = "redis://app:hunter2@r:6379".into();
        c.kafka
            .properties
            .insert("sasl.password".into(), "s3cret".into());
        c.kafka
            .properties
            .insert("security.protocol".into(), "sasl_ssl".into());
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("s3cret"),
            "{debug}"
        );
        assert!(debug.contains("redis://app:***@r:6379") && debug.contains("sasl_ssl"));
        assert_eq!(redact_url("redis://r:6379"), "redis://r:6379");
    }

    #[test]
    fn field_names_come_from_serde() {
        let fields = field_names::<KafkaConfig>();
        assert_eq!(fields.len(), 15);
        assert!(fields.contains(&"poll_batch") && fields.contains(&"properties"));
        assert_eq!(
            field_names::<Config>(),
            [
                "kafka",
                "store",
                "runtime",
                "admin",
                "simulator",
                "log",
                "metrics",
                "enforcement",
                "money"
            ]
        );
    }

    /// A token named like warden's own actors would write audit records that read as
    /// warden's (a TTL's lift, say); one secret under two entries would act as whichever
    /// the lookup found.
    #[test]
    fn a_token_may_not_take_a_reserved_actor_name_or_another_tokens_secret() {
        let other = "1".repeat(64);
        let text = format!(
            r#"
            [kafka]
            brokers = "k:1"
            [[admin.tokens]]
            name = "ttl"
            sha256 = "{HASH}"
            roles = ["security"]
            [[admin.tokens]]
            name = "bob"
            sha256 = "{other}"
            roles = ["viewer"]
            [[admin.tokens]]
            name = "carol"
            sha256 = "{other}"
            roles = ["security"]
            "#
        );
        let e = errors(&text);
        assert_eq!(
            keys(&e),
            ["admin.tokens[0].name", "admin.tokens[2].sha256"],
            "{e}"
        );
        assert!(problem(&e, "admin.tokens[0].name")
            .message
            .contains("names warden itself"));
        assert!(problem(&e, "admin.tokens[2].sha256")
            .message
            .contains("admin.tokens[1]"));
    }

    /// A relative `money.program_file` given for the embedded default (no file to be a
    /// neighbour of) is relative to the working directory (the crate root, for tests).
    #[test]
    fn a_relative_program_file_with_the_embedded_default_is_the_working_directorys() {
        let vars = env(&[(
            "WARDEN_MONEY__PROGRAM_FILE",
            "config/programs/reseller.toml",
        )]);
        let c = from_parts(EMBEDDED_DEFAULT, EMBEDDED_ORIGIN, None, vars).expect("valid");
        assert_eq!(
            c.money.program_file.as_deref(),
            Some(Path::new("config/programs/reseller.toml"))
        );
        assert_eq!(c.money.load_program().unwrap().name, "reseller");
    }
}
