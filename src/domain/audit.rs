//! The audit chain (CONTRACT §4, `warden.audit.v1`): what a record is, how it is sealed
//! and how a chain is checked. Pure: the store assigns `seq` and `prev_hash` atomically
//! (see `store/audit.rs`); this module only computes and checks hashes.
//!
//! A record's `hash` is the hex SHA-256 of the record *without* `hash`, serialised as
//! RFC 8785 canonical JSON (JCS: keys sorted by UTF-16 code units, no whitespace, numbers
//! in the ECMAScript form). Each record carries the `hash` of the one before it as
//! `prev_hash`; the first carries [`GENESIS_PREV_HASH`]. So an edited record no longer
//! matches its own hash, and a removed or moved record breaks the sequence or the link
//! of the record after it.
//!
//! Limits of the canonical form, both from JCS numbers being IEEE doubles: `seq` and any
//! integer inside `detail` are exact only up to 2^53 (put larger numbers, and money, in
//! `detail` as strings); `at` is hashed as chrono writes it (RFC 3339, `Z`, as many
//! sub-second digits as needed), which reads back to the same instant and string.
//! Trailing records removed together with the head are not detectable from the records
//! alone: [`verify_through_head`] checks the chain reaches the head the store keeps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How the audit log names warden itself as an actor: a refusal summary, the ladder's
/// decisions, a month closed on time.
pub const ACTOR_WARDEN: &str = "warden";
/// The actor of a kill switch's lift when its TTL ran out.
pub const ACTOR_TTL: &str = "ttl";
/// The actor of a request without a valid token.
pub const ACTOR_ANONYMOUS: &str = "anonymous";
/// Actor names no admin token may take: its records would read as warden's own.
pub const RESERVED_ACTORS: [&str; 3] = [ACTOR_TTL, ACTOR_WARDEN, ACTOR_ANONYMOUS];

/// `prev_hash` of the first record: 64 zeros.
pub const GENESIS_PREV_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// What a caller records: the store turns it into an [`AuditRecord`] by giving it the next
/// `seq` and the chain's last hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The stable id of what is recorded (e.g. a decision id or a request id): an entry
    /// whose `ref` is already in the chain is not appended again.
    #[serde(rename = "ref")]
    pub ref_id: String,
    pub at: DateTime<Utc>,
    /// Who: a token name, `owner`, `ttl`, …
    pub actor: String,
    /// What was done or refused, e.g. `kill_switch.create`, `auth.denied`.
    pub action: String,
    /// What it was done to, e.g. `partner:p-1`.
    pub target: String,
    pub detail: serde_json::Value,
}

/// One record of the chain, exactly as published on `warden.audit.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub seq: u64,
    #[serde(rename = "ref")]
    pub ref_id: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The record as hashed: every field but `hash`, borrowed.
#[derive(Serialize)]
struct Unsealed<'a> {
    seq: u64,
    #[serde(rename = "ref")]
    ref_id: &'a str,
    at: &'a DateTime<Utc>,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    detail: &'a serde_json::Value,
    prev_hash: &'a str,
}

impl<'a> Unsealed<'a> {
    fn of(record: &'a AuditRecord) -> Self {
        Unsealed {
            seq: record.seq,
            ref_id: &record.ref_id,
            at: &record.at,
            actor: &record.actor,
            action: &record.action,
            target: &record.target,
            detail: &record.detail,
            prev_hash: &record.prev_hash,
        }
    }
}

impl AuditRecord {
    /// The entry this record was sealed from.
    pub fn entry(&self) -> AuditEntry {
        AuditEntry {
            ref_id: self.ref_id.clone(),
            at: self.at,
            actor: self.actor.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            detail: self.detail.clone(),
        }
    }

    /// Where the chain stands after this record.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// The hash `record` must carry: of every field but its own `hash` (whatever that holds).
pub fn hash_of(record: &AuditRecord) -> String {
    let unsealed = Unsealed::of(record);
    let canonical = match plain_canonical(&unsealed) {
        Some(bytes) => bytes,
        // unwrap: JCS fails only on non-finite floats, which a serde_json::Value cannot
        // hold, and on non-string map keys, which neither it nor `Unsealed` has.
        None => serde_jcs::to_vec(&unsealed).expect("an audit record is valid JSON"),
    };
    hex::encode(Sha256::digest(&canonical))
}

/// Integers up to this magnitude are exact IEEE doubles, so JCS writes them as their
/// plain digits.
const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// `unsealed` in RFC 8785 canonical form, written directly when it holds no number but
/// integers within ±2^53: JCS is then compact JSON with every object's keys in UTF-16
/// code-unit order, and serde_json writes strings as JCS does (ECMAScript's escapes).
/// `None` otherwise (floats, larger integers), for `serde_jcs`, which writes numbers in
/// the ECMAScript form. A decision's seal spent 92 % of its time in `serde_jcs`, which
/// buffers and sorts every object as it goes; every decision has only strings and
/// integers. The property test below holds this to `serde_jcs` byte for byte.
fn plain_canonical(unsealed: &Unsealed<'_>) -> Option<Vec<u8>> {
    if unsealed.seq > MAX_EXACT_INTEGER {
        return None;
    }
    type Write<'w> = &'w dyn Fn(&mut Vec<u8>) -> Option<()>;
    // Every field but `hash`, in code-unit order of their names.
    let members: [(&str, Write<'_>); 8] = [
        ("action", &|out| write_json(out, unsealed.action)),
        ("actor", &|out| write_json(out, unsealed.actor)),
        ("at", &|out| write_json(out, unsealed.at)),
        ("detail", &|out| write_plain_value(out, unsealed.detail)),
        ("prev_hash", &|out| write_json(out, unsealed.prev_hash)),
        ("ref", &|out| write_json(out, unsealed.ref_id)),
        ("seq", &|out| write_json(out, &unsealed.seq)),
        ("target", &|out| write_json(out, unsealed.target)),
    ];
    let mut out = Vec::with_capacity(512);
    for (i, (name, write)) in members.iter().enumerate() {
        out.push(if i == 0 { b'{' } else { b',' });
        write_json(&mut out, name)?;
        out.push(b':');
        write(&mut out)?;
    }
    out.push(b'}');
    Some(out)
}

fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Option<()> {
    serde_json::to_writer(out, value).ok()
}

/// `value` in canonical form; `None` at the first number that is not a plain integer.
fn write_plain_value(out: &mut Vec<u8>, value: &serde_json::Value) -> Option<()> {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            let exact = n
                .as_u64()
                .map(|u| u <= MAX_EXACT_INTEGER)
                .or_else(|| n.as_i64().map(|i| i.unsigned_abs() <= MAX_EXACT_INTEGER));
            if exact != Some(true) {
                return None;
            }
            write_json(out, n)
        }
        Value::Null | Value::Bool(_) | Value::String(_) => write_json(out, value),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_plain_value(out, item)?;
            }
            out.push(b']');
            Some(())
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, key)?;
                out.push(b':');
                write_plain_value(out, item)?;
            }
            out.push(b'}');
            Some(())
        }
    }
}

/// The record for `entry` at `seq`, after the record whose hash is `prev_hash`.
pub fn seal(seq: u64, prev_hash: &str, entry: AuditEntry) -> AuditRecord {
    let mut record = AuditRecord {
        seq,
        ref_id: entry.ref_id,
        at: entry.at,
        actor: entry.actor,
        action: entry.action,
        target: entry.target,
        detail: entry.detail,
        prev_hash: prev_hash.to_owned(),
        hash: String::new(),
    };
    record.hash = hash_of(&record);
    record
}

/// Where a chain ends: the last record's `seq` and `hash` (0 and 64 zeros when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    pub fn genesis() -> ChainHead {
        ChainHead {
            seq: 0,
            hash: GENESIS_PREV_HASH.to_owned(),
        }
    }

    /// The next record's `seq` and `prev_hash`.
    pub fn seal_next(&self, entry: AuditEntry) -> AuditRecord {
        seal(self.seq + 1, &self.hash, entry)
    }
}

/// The first record that does not fit the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq} (position {index}): {problem}")]
pub struct ChainError {
    /// The `seq` the bad record carries (for [`ChainProblem::Missing`], the head's).
    pub seq: u64,
    /// Its index in the records checked.
    pub index: usize,
    pub problem: ChainProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainProblem {
    /// Its content does not match its hash: the record was edited.
    #[error("hash mismatch (stored {stored}, computed {computed}): the record was edited")]
    Edited { stored: String, computed: String },
    /// Its `seq` is not the previous one + 1: records before it were removed, or
    /// records were reordered.
    #[error("expected seq {expected}: records were removed or reordered")]
    OutOfSequence { expected: u64 },
    /// Its `prev_hash` is not the previous record's hash: the record before it was
    /// removed or replaced.
    #[error("prev_hash is not the previous record's hash: a record was removed or replaced")]
    BrokenLink,
    /// The records end before the store's head: trailing records were removed.
    #[error("the chain ends at seq {last}, its head is at {head}: records were removed")]
    Missing { last: u64, head: u64 },
    /// The record at the head's `seq` is not the one the head names: it was replaced.
    #[error("the record at the head's seq is not the head's: records were replaced")]
    HeadMismatch,
}

/// Checks a whole chain from its first record; the number of records verified.
pub fn verify(records: &[AuditRecord]) -> Result<usize, ChainError> {
    verify_continuing(&ChainHead::genesis(), records)
}

/// Checks `records` as the continuation of a chain that stood at `from` (a page read
/// after a page already verified); the number of records verified.
pub fn verify_continuing(from: &ChainHead, records: &[AuditRecord]) -> Result<usize, ChainError> {
    let mut previous = from.clone();
    for (index, record) in records.iter().enumerate() {
        let fail = |problem| ChainError {
            seq: record.seq,
            index,
            problem,
        };
        let computed = hash_of(record);
        if computed != record.hash {
            return Err(fail(ChainProblem::Edited {
                stored: record.hash.clone(),
                computed,
            }));
        }
        let expected = previous.seq + 1;
        if record.seq != expected {
            return Err(fail(ChainProblem::OutOfSequence { expected }));
        }
        if record.prev_hash != previous.hash {
            return Err(fail(ChainProblem::BrokenLink));
        }
        previous = record.head();
    }
    Ok(records.len())
}

/// [`verify`], then checks the chain reaches `head`: what the store says was appended
/// last, read before the records (so later appends may follow it). This catches removed
/// trailing records, which leave no gap behind them.
pub fn verify_through_head(records: &[AuditRecord], head: &ChainHead) -> Result<usize, ChainError> {
    let verified = verify(records)?;
    // After `verify`, records[i].seq == i + 1.
    let at_head = match head.seq {
        0 => Some(ChainHead::genesis()),
        seq => usize::try_from(seq - 1)
            .ok()
            .and_then(|index| records.get(index))
            .map(AuditRecord::head),
    };
    let problem = match at_head {
        Some(reached) if reached.hash == head.hash => return Ok(verified),
        Some(_) => ChainProblem::HeadMismatch,
        None => ChainProblem::Missing {
            last: records.last().map_or(0, |r| r.seq),
            head: head.seq,
        },
    };
    Err(ChainError {
        seq: head.seq,
        index: records
            .len()
            .min(usize::try_from(head.seq).unwrap_or(usize::MAX)),
        problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn entry(n: u64) -> AuditEntry {
        AuditEntry {
            ref_id: format!("ref-{n}"),
            at: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, n as u32).unwrap(),
            actor: "ops".to_owned(),
            action: "kill_switch.create".to_owned(),
            target: format!("partner:p-{n}"),
            detail: json!({"reason": "fraud", "scope": {"kind": "partner", "n": n}}),
        }
    }

    fn chain(len: u64) -> Vec<AuditRecord> {
        let mut head = ChainHead::genesis();
        (1..=len)
            .map(|n| {
                let record = head.seal_next(entry(n));
                head = record.head();
                record
            })
            .collect()
    }

    #[test]
    fn a_chain_of_five_verifies_and_links() {
        let records = chain(5);
        assert_eq!(verify(&records), Ok(5));
        assert_eq!(records[0].prev_hash, GENESIS_PREV_HASH);
        assert_eq!(GENESIS_PREV_HASH.len(), 64);
        for pair in records.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
            assert_eq!(pair[1].seq, pair[0].seq + 1);
        }
        assert!(records
            .iter()
            .all(|r| r.hash.len() == 64 && r.hash.bytes().all(|b| b.is_ascii_hexdigit())));
        assert_eq!(verify(&[]), Ok(0));
    }

    #[test]
    fn editing_any_field_of_record_three_is_detected_there() {
        type Edit = fn(&mut AuditRecord);
        let edits: Vec<(&str, Edit)> = vec![
            ("seq", |r| r.seq = 30),
            ("ref", |r| r.ref_id.push('x')),
            ("at", |r| r.at += chrono::Duration::nanoseconds(1)),
            ("actor", |r| r.actor = "mallory".to_owned()),
            ("action", |r| r.action = "kill_switch.lift".to_owned()),
            ("target", |r| r.target = "partner:p-9".to_owned()),
            ("detail", |r| r.detail["scope"]["n"] = json!(4)),
            ("prev_hash", |r| r.prev_hash = GENESIS_PREV_HASH.to_owned()),
            ("hash", |r| r.hash = "ab".repeat(32)),
        ];
        for (field, edit) in edits {
            let mut records = chain(5);
            edit(&mut records[2]);
            let err = verify(&records).expect_err(field);
            assert_eq!(err.index, 2, "{field}");
            assert!(
                matches!(err.problem, ChainProblem::Edited { .. }),
                "{field}: {err}"
            );
            if field != "seq" {
                assert_eq!(err.seq, 3, "{field}");
            }
        }
    }

    #[test]
    fn a_resealed_edit_breaks_the_link_of_the_next_record() {
        let mut records = chain(5);
        let forged = seal(
            3,
            &records[1].hash,
            AuditEntry {
                actor: "mallory".to_owned(),
                ..records[2].entry()
            },
        );
        records[2] = forged;
        let err = verify(&records).expect_err("record 4 links to the original 3");
        assert_eq!((err.seq, err.index), (4, 3));
        assert_eq!(err.problem, ChainProblem::BrokenLink);
    }

    #[test]
    fn deleting_record_three_is_detected_at_record_four() {
        let mut records = chain(5);
        records.remove(2);
        let err = verify(&records).expect_err("gap");
        assert_eq!(err.seq, 4);
        assert_eq!(err.problem, ChainProblem::OutOfSequence { expected: 3 });
    }

    #[test]
    fn deleting_the_first_record_is_detected() {
        let mut records = chain(3);
        records.remove(0);
        let err = verify(&records).expect_err("gap");
        assert_eq!(err.seq, 2);
        assert_eq!(err.problem, ChainProblem::OutOfSequence { expected: 1 });
    }

    #[test]
    fn reordering_is_detected() {
        let mut records = chain(5);
        records.swap(1, 3);
        let err = verify(&records).expect_err("reordered");
        assert_eq!((err.seq, err.index), (4, 1));
        assert_eq!(err.problem, ChainProblem::OutOfSequence { expected: 2 });

        // Renumbering the moved records (and resealing them) still breaks the links.
        let mut records = chain(5);
        let (second, fourth) = (records[1].entry(), records[3].entry());
        records[1] = seal(2, &records[0].hash, fourth);
        records[3] = seal(4, &records[2].hash, second);
        let err = verify(&records).expect_err("relinked");
        assert_eq!(err.seq, 3);
        assert_eq!(err.problem, ChainProblem::BrokenLink);
    }

    #[test]
    fn a_page_verifies_as_the_continuation_of_the_previous_one() {
        let records = chain(6);
        let (first, second) = records.split_at(3);
        assert_eq!(verify(first), Ok(3));
        assert_eq!(verify_continuing(&first[2].head(), second), Ok(3));
        let err = verify_continuing(&first[1].head(), second).expect_err("skips a record");
        assert_eq!(err.problem, ChainProblem::OutOfSequence { expected: 3 });
        assert!(verify(second).is_err(), "a later page is not a whole chain");
    }

    #[test]
    fn removed_trailing_records_are_caught_by_the_head() {
        let records = chain(5);
        let head = records[4].head();
        assert_eq!(verify_through_head(&records, &head), Ok(5));
        assert_eq!(
            verify_through_head(&records, &records[3].head()),
            Ok(5),
            "records appended after the head was read"
        );
        assert_eq!(verify_through_head(&[], &ChainHead::genesis()), Ok(0));

        let err = verify_through_head(&records[..3], &head).expect_err("truncated");
        assert_eq!(err.seq, 5);
        assert_eq!(err.problem, ChainProblem::Missing { last: 3, head: 5 });
        let err = verify_through_head(&[], &head).expect_err("emptied");
        assert_eq!(err.problem, ChainProblem::Missing { last: 0, head: 5 });

        // The last record replaced by a validly sealed other one: no gap, no broken link.
        let mut replaced = records.clone();
        replaced[4] = seal(5, &records[3].hash, entry(9));
        assert_eq!(verify(&replaced), Ok(5));
        let err = verify_through_head(&replaced, &head).expect_err("replaced");
        assert_eq!((err.seq, err.problem), (5, ChainProblem::HeadMismatch));
    }

    #[test]
    fn record_json_has_the_contract_field_names_and_round_trips() {
        let record = chain(1).remove(0);
        let value = serde_json::to_value(&record).expect("serialize");
        let mut names: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "action",
                "actor",
                "at",
                "detail",
                "hash",
                "prev_hash",
                "ref",
                "seq",
                "target"
            ]
        );
        assert_eq!(value["at"], "2026-03-01T12:00:01Z");
        let back: AuditRecord = serde_json::from_value(value.clone()).expect("deserialize");
        assert_eq!(back, record);
        assert_eq!(verify(&[back]), Ok(1));

        let mut extra = value;
        extra["note"] = json!("added later");
        assert!(serde_json::from_value::<AuditRecord>(extra).is_err());
    }

    #[test]
    fn sub_second_times_round_trip_to_the_same_hash() {
        let mut e = entry(1);
        e.at = Utc
            .timestamp_opt(1_772_366_400, 123_456_700)
            .single()
            .expect("valid");
        let record = seal(1, GENESIS_PREV_HASH, e);
        let text = serde_json::to_string(&record).expect("serialize");
        let back: AuditRecord = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, record);
        assert_eq!(hash_of(&back), record.hash);
    }

    #[test]
    fn the_hash_is_sha256_of_the_hand_built_canonical_json() {
        let record = seal(
            7,
            GENESIS_PREV_HASH,
            AuditEntry {
                ref_id: "ks-1".to_owned(),
                at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
                actor: "sec-bot".to_owned(),
                action: "kill_switch.create".to_owned(),
                target: "partner:p-1".to_owned(),
                // Keys written out of order, with a non-ASCII and an escaped character.
                detail: json!({"z": "last", "a": {"y": "2", "b": "1"}, "reason": "fraud \"é\"\n"}),
            },
        );
        // RFC 8785 by hand: keys in code-unit order at every level, no whitespace, `é`
        // as itself, `"` and newline escaped, integers as plain digits, no `hash`.
        let canonical = concat!(
            r#"{"action":"kill_switch.create","actor":"sec-bot","at":"2026-01-02T03:04:05Z","#,
            r#""detail":{"a":{"b":"1","y":"2"},"reason":"fraud \"é\"\n","z":"last"},"#,
            r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","#,
            r#""ref":"ks-1","seq":7,"target":"partner:p-1"}"#
        );
        assert_eq!(
            record.hash,
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
    }

    #[test]
    fn canonical_json_is_key_order_independent() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":{"d":"1","c":"2"},"a":"x","é":"u","Z":"z"}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"Z":"z","é":"u","a":"x","b":{"c":"2","d":"1"}}"#).unwrap();
        let canonical = serde_jcs::to_string(&a).expect("canonical");
        assert_eq!(canonical, serde_jcs::to_string(&b).expect("canonical"));
        assert_eq!(
            canonical,
            r#"{"Z":"z","a":"x","b":{"c":"2","d":"1"},"é":"u"}"#
        );

        let mut one = entry(1);
        let mut other = entry(1);
        one.detail = a;
        other.detail = b;
        assert_eq!(
            seal(1, GENESIS_PREV_HASH, one).hash,
            seal(1, GENESIS_PREV_HASH, other).hash
        );
    }

    /// Seals a record holding `detail`, and checks that it takes the direct path and
    /// that the path writes what `serde_jcs` writes.
    fn assert_written_directly_as_jcs(seq: u64, detail: serde_json::Value) {
        let mut e = entry(seq);
        e.detail = detail;
        let record = seal(seq, GENESIS_PREV_HASH, e);
        let unsealed = Unsealed::of(&record);
        let direct = plain_canonical(&unsealed).expect("strings and integers only");
        assert_eq!(direct, serde_jcs::to_vec(&unsealed).expect("canonical"));
    }

    /// The shape of every decision's record (`publish::decision_audit`): strings, an
    /// integer and a null.
    #[test]
    fn a_decision_record_is_written_directly_and_exactly_as_jcs_writes_it() {
        assert_written_directly_as_jcs(
            17,
            json!({
                "decision_id": "partner:p-3:17", "partner_id": "p-3", "from": "ok",
                "to": "throttle", "reason": "burst_exceeded", "rate_limit_rps": 25,
                "since": "2026-05-14T09:30:00.012Z", "tenant": null,
            }),
        );
    }

    #[test]
    fn the_direct_path_sorts_keys_by_utf16_code_units_not_bytes() {
        assert_written_directly_as_jcs(
            1,
            json!({"\u{fb01}": "1", "\u{1f600}": {"\u{fb01}": 1, "\u{1f600}": 2}}),
        );
    }

    #[test]
    fn a_float_or_a_huge_integer_goes_through_serde_jcs() {
        for detail in [
            json!({"x": 1.5}),
            json!([1u64 << 60]),
            json!({"n": -(1i64 << 54)}),
        ] {
            let mut e = entry(1);
            e.detail = detail;
            let record = seal(1, GENESIS_PREV_HASH, e);
            assert_eq!(plain_canonical(&Unsealed::of(&record)), None);
        }
        let record = seal(u64::MAX, GENESIS_PREV_HASH, entry(1));
        assert_eq!(plain_canonical(&Unsealed::of(&record)), None);
    }

    mod canonical_form {
        use super::*;
        use proptest::prelude::*;
        use serde_json::Value;

        /// Short ASCII names, any printable text, and any string at all (control
        /// characters, quotes, backslashes, characters beyond the BMP).
        fn text() -> impl Strategy<Value = String> {
            prop_oneof!["[a-zA-Z_]{0,8}", "\\PC{0,8}", any::<String>()]
        }

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                (-(1i64 << 53)..=(1i64 << 53)).prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                    .prop_map(Value::from),
                text().prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 40, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::vec((text(), inner), 0..6)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// Whatever the record holds, the direct path (when it applies) writes exactly
            /// what `serde_jcs` writes, so every hash is the one JCS defines.
            #[test]
            fn the_direct_path_writes_what_serde_jcs_writes(
                seq in prop_oneof![0u64..1_000_000, any::<u64>()],
                secs in 0i64..4_000_000_000,
                nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000],
                strings in prop::collection::vec(text(), 5),
                detail in value(),
            ) {
                let record = AuditRecord {
                    seq,
                    ref_id: strings[0].clone(),
                    at: DateTime::from_timestamp(secs, nanos).expect("in range"),
                    actor: strings[1].clone(),
                    action: strings[2].clone(),
                    target: strings[3].clone(),
                    detail,
                    prev_hash: strings[4].clone(),
                    hash: String::new(),
                };
                let unsealed = Unsealed::of(&record);
                let jcs = serde_jcs::to_vec(&unsealed).expect("canonical");
                if let Some(direct) = plain_canonical(&unsealed) {
                    prop_assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&jcs));
                }
                prop_assert_eq!(hash_of(&record), hex::encode(Sha256::digest(&jcs)));
            }
        }
    }

    #[test]
    fn canonical_keys_sort_by_utf16_code_units() {
        // U+1F600 (surrogates 0xD83D…) sorts before U+FB01 in UTF-16, after it in UTF-8.
        let value = json!({"\u{fb01}": "1", "\u{1f600}": "2"});
        assert_eq!(
            serde_jcs::to_string(&value).expect("canonical"),
            "{\"\u{1f600}\":\"2\",\"\u{fb01}\":\"1\"}"
        );
    }
}
