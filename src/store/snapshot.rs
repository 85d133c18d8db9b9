//! How a partner's state is kept in the store: its JSON, compressed with LZ4 behind a
//! one-byte format tag.
//!
//! Why compressed: every flush rewrites each changed partner whole, so snapshot bytes are
//! most of what warden sends Redis, what Redis appends to its AOF and fsyncs, and how long
//! the commit script holds Redis (and every kill switch behind it). A partner's JSON is
//! repetitive (bucket keys, level names, timestamps) and shrinks to about 40 % for a
//! microsecond or two per snapshot.
//!
//! Why JSON inside: serde's defaults keep old snapshots readable when fields are added, which
//! a positional binary format would not. Snapshots written before the tag existed are plain
//! JSON (they start with `{`) and are still read, so an upgrade needs no migration.

use crate::domain::partner::PartnerState;

/// First byte of a snapshot: LZ4 block (with its uncompressed size in front) of the JSON.
const TAG_LZ4_JSON: u8 = 0x01;
/// First byte of a plain JSON object: snapshots written before the tag existed.
const LEGACY_JSON: u8 = b'{';
/// A snapshot never inflates past this; a bigger size prefix means corrupt bytes, and
/// must not make the decoder allocate it.
const MAX_DECODED_BYTES: usize = 64 << 20;
/// The tag byte and LZ4's little-endian `u32` size prefix.
const HEADER: usize = 1 + 4;
const JSON_CAPACITY: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("partner state does not serialize: {0}")]
    Encode(String),
    #[error("empty snapshot")]
    Empty,
    #[error("unknown snapshot format tag 0x{0:02x}")]
    UnknownTag(u8),
    #[error("snapshot does not decompress: {0}")]
    Decompress(String),
    #[error("snapshot is not a partner state: {0}")]
    Json(String),
}

/// The bytes the store keeps for `state`.
pub fn encode(state: &PartnerState) -> Result<Vec<u8>, SnapshotError> {
    // Sized for a usage-only partner's JSON (1.5–2.5 KB), so it is rarely regrown.
    let mut json = Vec::with_capacity(JSON_CAPACITY);
    serde_json::to_writer(&mut json, state).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    // Tag, then LZ4's size prefix and block, compressed straight into the output.
    let bound = lz4_flex::block::get_maximum_output_size(json.len());
    let mut out = vec![0; HEADER + bound];
    out[0] = TAG_LZ4_JSON;
    let size = u32::try_from(json.len()).map_err(|_| {
        SnapshotError::Encode(format!("{} bytes of JSON is over 4 GiB", json.len()))
    })?;
    out[1..HEADER].copy_from_slice(&size.to_le_bytes());
    let written = lz4_flex::block::compress_into(&json, &mut out[HEADER..])
        .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    out.truncate(HEADER + written);
    Ok(out)
}

/// A partner state from the bytes the store keeps, in the current format or the legacy one.
pub fn decode(bytes: &[u8]) -> Result<PartnerState, SnapshotError> {
    let json = to_json(bytes)?;
    serde_json::from_slice(&json).map_err(|e| SnapshotError::Json(e.to_string()))
}

/// The JSON text of a stored snapshot (for tools that read the store, and for `decode`).
pub fn to_json(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, SnapshotError> {
    match bytes.first() {
        None => Err(SnapshotError::Empty),
        Some(&LEGACY_JSON) => Ok(std::borrow::Cow::Borrowed(bytes)),
        Some(&TAG_LZ4_JSON) => {
            let decompress =
                |e: lz4_flex::block::DecompressError| SnapshotError::Decompress(e.to_string());
            let (size, block) =
                lz4_flex::block::uncompressed_size(&bytes[1..]).map_err(decompress)?;
            if size > MAX_DECODED_BYTES {
                return Err(SnapshotError::Decompress(format!(
                    "claims {size} bytes, over the {MAX_DECODED_BYTES}-byte limit"
                )));
            }
            lz4_flex::block::decompress(block, size)
                .map(std::borrow::Cow::Owned)
                .map_err(decompress)
        }
        Some(&other) => Err(SnapshotError::UnknownTag(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{PartnerEvent, UsageEvent};
    use crate::domain::partner::ApplyEnv;
    use chrono::DateTime;

    /// A partner after `events` usage events 7 s apart, spread over `integrations`, the
    /// `i`-th with `requests(i)` requests and `errors(i)` errors.
    fn partner_after(
        id: &str,
        events: i64,
        integrations: i64,
        traffic: impl Fn(i64) -> (u64, u64),
    ) -> PartnerState {
        let mut s = PartnerState::new(id);
        let env = ApplyEnv::default();
        for i in 0..events {
            let (requests, errors) = traffic(i);
            let e = PartnerEvent::Usage(UsageEvent {
                event_id: format!("u-{i}"),
                ts: DateTime::from_timestamp(1_780_000_000 + i * 7, 0).unwrap(),
                partner_id: id.into(),
                integration_id: format!("{id}-i{}", i % integrations),
                tenant_id: None,
                requests,
                errors,
                auth_failures: 0,
                bytes: 100,
            });
            s.apply(&e, &env.ctx()).unwrap();
        }
        s
    }

    fn busy_partner() -> PartnerState {
        partner_after("p-0000042", 60, 3, |i| (10 + i as u64, (i % 4) as u64))
    }

    /// What a snapshot holds: the dedup ids travel beside it (`PartitionWrite::dedup`), so
    /// states are compared by their JSON, not with `==`.
    fn json_of(s: &PartnerState) -> String {
        serde_json::to_string(s).unwrap()
    }

    #[test]
    fn round_trips_and_is_smaller_than_the_json() {
        let s = busy_partner();
        let bytes = encode(&s).unwrap();
        assert_eq!(bytes[0], TAG_LZ4_JSON);
        let json = serde_json::to_vec(&s).unwrap();
        assert!(
            bytes.len() * 2 < json.len(),
            "{} vs {}",
            bytes.len(),
            json.len()
        );
        assert!(json_of(&decode(&bytes).unwrap()) == json_of(&s));
        assert!(to_json(&bytes).unwrap().as_ref() == json.as_slice());
    }

    #[test]
    fn what_a_partner_never_used_is_left_out_and_read_back_as_default() {
        // Usage without errors on two integrations: calm, no money, no tenants.
        let s = partner_after("p-0000043", 6, 2, |_| (1, 0));
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        for key in ["invoices", "duplicates_skipped", "control_applied"] {
            assert!(v.get(key).is_none(), "{key} is at its default: {v}");
        }
        let enforcement = &v["enforcement"];
        for key in ["tenants", "untracked_integration_events"] {
            assert!(enforcement.get(key).is_none(), "{key}: {enforcement}");
        }
        let calm = enforcement["integrations"]
            .as_object()
            .unwrap()
            .values()
            .filter(|i| i.get("subject").is_none())
            .count();
        assert!(
            calm > 0,
            "a calm integration's subject is left out: {enforcement}"
        );
        // The dedup ids are stored apart from the snapshot (`DedupWindow`).
        let read_back = |bytes: &[u8]| {
            let mut back = decode(bytes).unwrap();
            back.restore_dedup(s.dedup_delta().added);
            back
        };
        assert_eq!(read_back(&encode(&s).unwrap()), s);

        // A snapshot written before they were left out spells them out, and still loads.
        let mut spelled = v.clone();
        spelled["invoices"] =
            serde_json::json!({"paid": 0, "refunds": 0, "chargebacks": 0, "attributions": 0});
        spelled["duplicates_skipped"] = 0.into();
        spelled["control_applied"] = 0.into();
        spelled["enforcement"]["tenants"] = serde_json::json!({"map": {}});
        spelled["enforcement"]["untracked_integration_events"] = 0.into();
        for i in spelled["enforcement"]["integrations"]
            .as_object_mut()
            .unwrap()
            .values_mut()
        {
            if i.get("subject").is_none() {
                i["subject"] = serde_json::json!({
                    "ladder": {"level": "ok", "reason": "calm"},
                    "published": {"level": "ok", "reason": "calm"}
                });
            }
        }
        assert_eq!(read_back(&serde_json::to_vec(&spelled).unwrap()), s);
    }

    #[test]
    fn reads_the_plain_json_written_before_the_tag() {
        let s = busy_partner();
        let legacy = serde_json::to_vec(&s).unwrap();
        assert!(json_of(&decode(&legacy).unwrap()) == json_of(&s));
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        assert_eq!(decode(&[]), Err(SnapshotError::Empty));
        assert_eq!(decode(b"\x07abc"), Err(SnapshotError::UnknownTag(7)));
        assert!(matches!(
            decode(&[TAG_LZ4_JSON, 1]),
            Err(SnapshotError::Decompress(_))
        ));
        // A size prefix of 4 GiB must be refused before anything is allocated.
        assert!(matches!(
            decode(&[TAG_LZ4_JSON, 0xff, 0xff, 0xff, 0xff, 0]),
            Err(SnapshotError::Decompress(_))
        ));
        let mut bytes = encode(&busy_partner()).unwrap();
        bytes.truncate(bytes.len() / 2);
        assert!(decode(&bytes).is_err());
        let not_state = {
            let mut b = vec![TAG_LZ4_JSON];
            b.extend(lz4_flex::compress_prepend_size(b"[1,2]"));
            b
        };
        assert!(matches!(decode(&not_state), Err(SnapshotError::Json(_))));
    }
}
