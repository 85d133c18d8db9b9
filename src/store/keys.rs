//! The one place the state store's Redis keys are built.
//!
//! Every key of partition `p` carries the hash tag `{p<p>}`, so Redis Cluster puts them in
//! one slot and the commit script (which touches the epoch, the offsets and the partners
//! of one partition atomically) never fails with `CROSSSLOT`. The prefix separates
//! deployments (and tests) sharing one Redis; it must not contain `{` or `}`, since Redis
//! hashes the first `{…}` of a key and a brace in the prefix would move the tag.

/// Builds the keys of one deployment's state store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// # Panics
    /// If `prefix` is not valid (see [`Keys::validate_prefix`]); callers that take it from
    /// configuration validate it first.
    pub fn new(prefix: impl Into<String>) -> Keys {
        let prefix = prefix.into();
        if let Err(problem) = Keys::validate_prefix(&prefix) {
            panic!("invalid Redis key prefix {prefix:?}: {problem}");
        }
        Keys { prefix }
    }

    /// Why `prefix` cannot be a key prefix, if it cannot: it must be non-empty and free of
    /// `{` and `}` (they would change the hash tag that keeps a partition in one slot).
    pub fn validate_prefix(prefix: &str) -> Result<(), String> {
        if prefix.is_empty() {
            return Err("it is empty".to_owned());
        }
        if prefix.contains(['{', '}']) {
            return Err("it contains '{' or '}', which would change the keys' hash tag".to_owned());
        }
        Ok(())
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{p<partition>}`: the hash tag shared by every key of the partition.
    pub fn hash_tag(partition: i32) -> String {
        format!("{{p{partition}}}")
    }

    /// The key the outage watcher writes to check that the store takes writes.
    pub fn probe(&self) -> String {
        format!("{}:probe", self.prefix())
    }

    /// String: the partition's ownership epoch (decimal, `store::epoch`: taken by the
    /// acquire script, moved on by the renewal script).
    pub fn epoch(&self, partition: i32) -> String {
        self.key(partition, "epoch")
    }

    /// String `<epoch>:<token>`: the last renewal of the epoch (`StateStore::renew`), so a
    /// retried renewal is recognised as its own.
    pub fn renewal(&self, partition: i32) -> String {
        self.key(partition, "renewal")
    }

    /// Hash: input topic name → next offset to read (decimal).
    pub fn offsets(&self, partition: i32) -> String {
        self.key(partition, "offsets")
    }

    /// Hash: partner id → that partner's snapshot (opaque JSON bytes).
    pub fn partners(&self, partition: i32) -> String {
        self.key(partition, "partners")
    }

    /// Set: the partners the next owner starts at once, not at their next event: those
    /// whose last snapshot has an outbox to publish, or a level only time brings back (a
    /// health ladder off `ok`, a burst hold, a suspension). A silent partner must still
    /// get there.
    pub fn awake(&self, partition: i32) -> String {
        self.key(partition, "awake")
    }

    /// Sorted set: partners to start at a wall-clock time (epoch millis), live or not: a
    /// pilot tenant expires on the wall clock, and its partner may be silent by then.
    pub fn wake(&self, partition: i32) -> String {
        self.key(partition, "wake")
    }

    /// Sorted set: one partner's dedup ids, scored by event time (epoch millis).
    pub fn dedup(&self, partition: i32, partner_id: &str) -> String {
        self.key(partition, &format!("dedup:{partner_id}"))
    }

    fn key(&self, partition: i32, what: &str) -> String {
        format!("{}:{}:{what}", self.prefix, Keys::hash_tag(partition))
    }
}

/// The audit chain's keys (CONTRACT §4): one chain per deployment, so one hash tag,
/// `{audit}`, for all three keys the append script touches.
impl Keys {
    pub const AUDIT_HASH_TAG: &'static str = "{audit}";

    /// Hash `{seq, hash}`: the last record appended (absent while the chain is empty).
    pub fn audit_head(&self) -> String {
        self.audit_key("head")
    }

    /// Sorted set: each record's JSON, scored by its `seq`.
    pub fn audit_log(&self) -> String {
        self.audit_key("log")
    }

    /// Hash: `ref` → `seq` of the record that has it (what makes an append idempotent).
    pub fn audit_refs(&self) -> String {
        self.audit_key("refs")
    }

    /// String with a short expiry: the process whose appends lost too often and now has
    /// the chain to itself until it appends (what keeps appends fair between instances).
    pub fn audit_claim(&self) -> String {
        self.audit_key("claim")
    }

    fn audit_key(&self, what: &str) -> String {
        format!("{}:{}:{what}", self.prefix, Keys::AUDIT_HASH_TAG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of `key` Redis Cluster hashes: the first `{…}` with something inside.
    fn hashed_part(key: &str) -> &str {
        let open = key.find('{').expect("key has a hash tag");
        let close = open + 1 + key[open + 1..].find('}').expect("hash tag is closed");
        assert!(close > open + 1, "empty hash tag in {key}");
        &key[open + 1..close]
    }

    #[test]
    fn key_shapes() {
        let keys = Keys::new("warden");
        assert_eq!(keys.epoch(7), "warden:{p7}:epoch");
        assert_eq!(keys.renewal(7), "warden:{p7}:renewal");
        assert_eq!(keys.offsets(7), "warden:{p7}:offsets");
        assert_eq!(keys.partners(7), "warden:{p7}:partners");
        assert_eq!(keys.prefix(), "warden");
    }

    #[test]
    fn every_key_of_a_partition_shares_its_hash_tag() {
        let keys = Keys::new("warden:test-42");
        for partition in [0, 1, 12, 1023, i32::MAX] {
            let expected = format!("p{partition}");
            for key in [
                keys.epoch(partition),
                keys.offsets(partition),
                keys.partners(partition),
            ] {
                assert_eq!(hashed_part(&key), expected, "{key}");
            }
        }
    }

    #[test]
    fn partitions_get_distinct_keys() {
        let keys = Keys::new("w");
        assert_ne!(keys.epoch(1), keys.epoch(11));
        assert_ne!(
            hashed_part(&keys.offsets(1)),
            hashed_part(&keys.offsets(11))
        );
        assert_ne!(keys.offsets(3), keys.partners(3));
    }

    #[test]
    fn prefixes_that_would_move_the_hash_tag_are_rejected() {
        assert!(Keys::validate_prefix("warden").is_ok());
        assert!(Keys::validate_prefix("warden:{x}").is_err());
        assert!(Keys::validate_prefix("a}b").is_err());
        assert!(Keys::validate_prefix("").is_err());
    }

    #[test]
    #[should_panic(expected = "invalid Redis key prefix")]
    fn new_refuses_a_braced_prefix() {
        let _ = Keys::new("{bad}");
    }
}
