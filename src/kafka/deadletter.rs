//! Dead letters (CONTRACT §4, §5): every rejected record goes to the dead-letter topic
//! with its reason and source coordinates, and the broker acknowledges it before the
//! offset past the bad record is stored. The id is (source_topic, partition, offset), so
//! a re-delivery after a crash is recognisable as the same dead letter.

use std::time::Duration;

use base64::Engine;
use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::domain::event::DeadLetterReason;

/// At most this much of the original payload is kept (CONTRACT §4).
pub const MAX_PAYLOAD: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub source_topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: DeadLetterReason,
    pub detail: String,
    pub payload: Vec<u8>,
}

impl DeadLetter {
    pub fn id(&self) -> String {
        format!("{}:{}:{}", self.source_topic, self.partition, self.offset)
    }

    /// The record value: `payload` when the bytes are UTF-8, else `payload_b64`.
    pub fn to_json(&self) -> Vec<u8> {
        let cut = &self.payload[..self.payload.len().min(MAX_PAYLOAD)];
        let mut v = json!({
            "source_topic": self.source_topic,
            "partition": self.partition,
            "offset": self.offset,
            "reason": self.reason.as_str(),
            "detail": self.detail,
        });
        match std::str::from_utf8(cut) {
            Ok(text) => v["payload"] = json!(text),
            // A cut in the middle of a UTF-8 sequence: keep the valid prefix as text.
            Err(e) if e.error_len().is_none() && self.payload.len() > MAX_PAYLOAD => {
                v["payload"] = json!(String::from_utf8_lossy(&cut[..e.valid_up_to()]))
            }
            Err(_) => {
                v["payload_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(cut))
            }
        }
        if self.payload.len() > MAX_PAYLOAD {
            v["payload_truncated"] = json!(true);
        }
        // unwrap: serializing a serde_json::Value cannot fail.
        serde_json::to_vec(&v).unwrap()
    }
}

/// Produces dead letters and waits for the broker's acknowledgement.
#[derive(Clone)]
pub struct DeadLetterSink {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetterSink {
    pub fn new(producer: FutureProducer, topic: String) -> Self {
        DeadLetterSink { producer, topic }
    }

    /// Sends every record and waits for all acknowledgements. On failure returns the
    /// records that were not acknowledged, so the caller keeps them and retries.
    pub async fn send_all(&self, records: Vec<DeadLetter>) -> Result<(), Vec<DeadLetter>> {
        if records.is_empty() {
            return Ok(());
        }
        let sends = records.iter().map(|r| {
            let id = r.id();
            let value = r.to_json();
            let producer = self.producer.clone();
            let topic = self.topic.clone();
            async move {
                let rec = FutureRecord::to(&topic).key(&id).payload(&value);
                producer
                    .send(rec, Duration::from_secs(5))
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }
        });
        let results = join_all(sends).await;
        let failed: Vec<DeadLetter> = records
            .into_iter()
            .zip(results)
            .filter_map(|(r, res)| match res {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(id = %r.id(), error = %e, "dead letter not acknowledged; will retry");
                    Some(r)
                }
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl(payload: &[u8]) -> DeadLetter {
        DeadLetter {
            source_topic: "warden.usage.v1".into(),
            partition: 3,
            offset: 42,
            reason: DeadLetterReason::NotJson,
            detail: "x".into(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn utf8_payload_is_kept_as_text() {
        let v: serde_json::Value = serde_json::from_slice(&dl(b"{not json").to_json()).unwrap();
        assert_eq!(v["payload"], "{not json");
        assert_eq!(v["reason"], "not_json");
        assert_eq!(v["offset"], 42);
        assert!(v.get("payload_b64").is_none());
    }

    #[test]
    fn binary_payload_is_base64() {
        let v: serde_json::Value =
            serde_json::from_slice(&dl(&[0xff, 0xfe, 0x00]).to_json()).unwrap();
        assert_eq!(v["payload_b64"], "//4A");
        assert!(v.get("payload").is_none());
    }

    #[test]
    fn oversized_payload_is_cut_to_64_kib() {
        let big = vec![b'a'; MAX_PAYLOAD + 10];
        let v: serde_json::Value = serde_json::from_slice(&dl(&big).to_json()).unwrap();
        assert_eq!(v["payload"].as_str().unwrap().len(), MAX_PAYLOAD);
        assert_eq!(v["payload_truncated"], true);
    }
}
