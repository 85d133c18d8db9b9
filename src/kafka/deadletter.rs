//! Dead letters (CONTRACT §4, §5): every rejected record goes to the dead-letter topic
//! with its reason and source coordinates, and the broker acknowledges it before the
//! offset past the bad record is stored. The id is (source_topic, partition, offset), so
//! a re-delivery after a crash is recognisable as the same dead letter.

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use futures::future::{join_all, Either};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

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

/// A dead letter waiting for the flush that stores the offset past it.
pub enum PendingDeadLetter {
    /// Sent when it was found: the flush waits only for an acknowledgement that has
    /// usually arrived by then, instead of a broker round trip of its own.
    Sent(DeadLetter, JoinHandle<KafkaResult<()>>),
    /// To send (with the flush).
    Unsent(DeadLetter),
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

    fn send(&self, r: &DeadLetter) -> impl Future<Output = KafkaResult<()>> + Send + 'static {
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
    }

    /// Starts sending `letter` on `io` now; [`Self::send_all`] waits for it later. A send
    /// whose offset never becomes durable (a crash, a reset) is sent again under the same
    /// id when the record is read again: at least once, as CONTRACT §4 allows.
    pub fn start(&self, io: &Handle, letter: DeadLetter) -> PendingDeadLetter {
        let ack = io.spawn(self.send(&letter));
        PendingDeadLetter::Sent(letter, ack)
    }

    /// Sends every record not sent yet and waits for all acknowledgements. On failure
    /// returns the records that were not acknowledged, so the caller keeps them and
    /// retries.
    pub async fn send_all(
        &self,
        pending: Vec<PendingDeadLetter>,
    ) -> Result<(), Vec<PendingDeadLetter>> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(pending.len());
        let mut acks = Vec::with_capacity(pending.len());
        for p in pending {
            let (r, ack) = match p {
                PendingDeadLetter::Sent(r, ack) => (
                    r,
                    Either::Left(async move {
                        ack.await.unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "dead letter send task ended");
                            Err(KafkaError::Canceled)
                        })
                    }),
                ),
                PendingDeadLetter::Unsent(r) => {
                    let send = self.send(&r);
                    (r, Either::Right(send))
                }
            };
            records.push(r);
            acks.push(ack);
        }
        let results = join_all(acks).await;
        let failed: Vec<PendingDeadLetter> = records
            .into_iter()
            .zip(results)
            .filter_map(|(r, res)| match res {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(id = %r.id(), error = %e, "dead letter not acknowledged; will retry");
                    Some(PendingDeadLetter::Unsent(r))
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
