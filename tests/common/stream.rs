//! One test's Kafka topics, consumer group and Redis key prefix (all unique), and the
//! daemon configuration pointing at them, shared by the integration tests.

use super::{brokers, create_topics, unique};

/// Partitions of every keyed test topic.
pub const PARTITIONS: i32 = 4;
/// A viewer token every test config accepts.
pub const VIEWER_TOKEN: &str = "test-viewer-token-0123456789abcdef";

/// One test's topics, consumer group and key prefix, all unique.
pub struct Stream {
    pub brokers: String,
    pub usage: String,
    pub invoices: String,
    pub attribution: String,
    pub control: String,
    pub deadletter: String,
    pub enforcement: String,
    pub audit: String,
    pub group: String,
    pub prefix: String,
}

impl Stream {
    pub fn new(name: &str) -> Stream {
        Stream::on(name, &brokers())
    }

    /// [`Stream::new`] on another broker (a test's own).
    pub fn on(name: &str, brokers: &str) -> Stream {
        let brokers = brokers.to_owned();
        let t = |role: &str| unique(&format!("{name}.{role}"));
        let s = Stream {
            usage: t("usage"),
            invoices: t("invoices"),
            attribution: t("attribution"),
            control: t("control"),
            deadletter: t("deadletter"),
            enforcement: t("enforcement"),
            audit: t("audit"),
            group: unique(&format!("{name}-group")),
            prefix: unique(name),
            brokers,
        };
        create_topics(
            &s.brokers,
            &[
                (&s.usage, PARTITIONS),
                (&s.invoices, PARTITIONS),
                (&s.attribution, PARTITIONS),
                (&s.control, 1),
                (&s.deadletter, PARTITIONS),
                (&s.enforcement, PARTITIONS),
                (&s.audit, 1),
            ],
        );
        s
    }

    pub fn config(&self, redis_url: &str) -> String {
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
flush_interval = "50ms"
session_timeout = "6s"
max_poll_interval = "20s"
[kafka.topics]
usage = "{usage}"
invoices = "{invoices}"
attribution = "{attribution}"
control = "{control}"
deadletter = "{deadletter}"
enforcement = "{enforcement}"
audit = "{audit}"
[store]
backend = "redis"
redis_url = "{redis_url}"
key_prefix = "{prefix}"
timeout = "500ms"
[runtime]
arbiters = 2
shutdown_grace = "20s"
[admin]
listen = "127.0.0.1:0"
[[admin.tokens]]
name = "test-viewer"
sha256 = "{viewer_hash}"
roles = ["viewer"]
[log]
level = "info"
[money]
# Tests replay 2026 history: no month closes unless a test closes it.
auto_close = false
"#,
            brokers = self.brokers,
            group = self.group,
            usage = self.usage,
            invoices = self.invoices,
            attribution = self.attribution,
            control = self.control,
            deadletter = self.deadletter,
            enforcement = self.enforcement,
            audit = self.audit,
            prefix = self.prefix,
            viewer_hash = warden::http::auth::token_hash(VIEWER_TOKEN),
        )
    }
}
