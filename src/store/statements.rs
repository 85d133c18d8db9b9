//! Statement status after a month is frozen (seed: snapshot → pending → approved → paid).
//!
//! The lines of a frozen month live in the owner's partner snapshot and never change;
//! the payout status lives here, apart from it, so finance can move it through the API
//! on any instance. Each move is one compare-and-set, so two racing calls cannot both
//! approve or both pay.

use std::collections::HashMap;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::Script;
use serde::{Deserialize, Serialize};

use super::redis::RedisStore;
use super::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    Pending,
    Approved,
    Paid,
}

impl PayoutStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PayoutStatus::Pending => "pending",
            PayoutStatus::Approved => "approved",
            PayoutStatus::Paid => "paid",
        }
    }

    fn parse(s: &str) -> Option<PayoutStatus> {
        match s {
            "pending" => Some(PayoutStatus::Pending),
            "approved" => Some(PayoutStatus::Approved),
            "paid" => Some(PayoutStatus::Paid),
            _ => None,
        }
    }
}

/// A statement's payout record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub status: PayoutStatus,
    pub reference: Option<String>,
}

/// The outcome of a move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    Done(Payout),
    /// The statement was not in the state the move needs (current status, if any).
    Refused(Option<PayoutStatus>),
}

#[async_trait]
pub trait PayoutStore: Send + Sync + 'static {
    async fn get(&self, partner_id: &str, month: &str) -> Result<Option<Payout>, StoreError>;
    /// `from` → `to` if the statement is at `from` (`None` = no record yet: freezing).
    async fn transition(
        &self,
        partner_id: &str,
        month: &str,
        from: Option<PayoutStatus>,
        to: PayoutStatus,
        reference: Option<&str>,
    ) -> Result<Move, StoreError>;
}

/// KEYS[1] = payout hash; ARGV[1] = expected status ("" = none), ARGV[2] = new status,
/// ARGV[3] = reference ("" = none). Returns {1, status} when moved, {0, current} otherwise.
const TRANSITION: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'status') or ''
if cur ~= ARGV[1] then return {0, cur} end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'reference', ARGV[3]) end
return {1, ARGV[2]}
"#;

#[derive(Clone)]
pub struct RedisPayouts {
    store: RedisStore,
    prefix: String,
    script: std::sync::Arc<Script>,
}

impl RedisStore {
    pub fn payouts(&self) -> RedisPayouts {
        RedisPayouts {
            prefix: self.keys.prefix().to_owned(),
            store: self.clone(),
            script: std::sync::Arc::new(Script::new(TRANSITION)),
        }
    }
}

impl RedisPayouts {
    fn key(&self, partner_id: &str, month: &str) -> String {
        format!("{}:payout:{partner_id}:{month}", self.prefix)
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[async_trait]
impl PayoutStore for RedisPayouts {
    async fn get(&self, partner_id: &str, month: &str) -> Result<Option<Payout>, StoreError> {
        let key = self.key(partner_id, month);
        let map: HashMap<String, String> = self.store.hash("read payout", key).await?;
        match map.get("status") {
            None => Ok(None),
            Some(s) => {
                let status = PayoutStatus::parse(s)
                    .ok_or_else(|| StoreError::Corrupt(format!("payout status {s}")))?;
                Ok(Some(Payout {
                    status,
                    reference: map.get("reference").cloned(),
                }))
            }
        }
    }

    async fn transition(
        &self,
        partner_id: &str,
        month: &str,
        from: Option<PayoutStatus>,
        to: PayoutStatus,
        reference: Option<&str>,
    ) -> Result<Move, StoreError> {
        let key = self.key(partner_id, month);
        let script = self.script.clone();
        let args = [
            from.map(|f| f.as_str()).unwrap_or("").to_owned(),
            to.as_str().to_owned(),
            reference.unwrap_or("").to_owned(),
        ];
        let reference = reference.map(str::to_owned);
        self.store
            .run("payout transition", move |mut conn| async move {
                let (moved, status): (u8, String) = script
                    .key(&key)
                    .arg(&args[0])
                    .arg(&args[1])
                    .arg(&args[2])
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                if moved == 1 {
                    Ok(Move::Done(Payout {
                        status: to,
                        reference,
                    }))
                } else {
                    Ok(Move::Refused(PayoutStatus::parse(&status)))
                }
            })
            .await
    }
}

#[derive(Debug, Default)]
pub struct MemoryPayouts {
    inner: Mutex<HashMap<(String, String), Payout>>,
}

#[async_trait]
impl PayoutStore for MemoryPayouts {
    async fn get(&self, partner_id: &str, month: &str) -> Result<Option<Payout>, StoreError> {
        Ok(self
            .inner
            .lock()
            .get(&(partner_id.to_owned(), month.to_owned()))
            .cloned())
    }

    async fn transition(
        &self,
        partner_id: &str,
        month: &str,
        from: Option<PayoutStatus>,
        to: PayoutStatus,
        reference: Option<&str>,
    ) -> Result<Move, StoreError> {
        let mut m = self.inner.lock();
        let key = (partner_id.to_owned(), month.to_owned());
        let current = m.get(&key).map(|p| p.status);
        if current != from {
            return Ok(Move::Refused(current));
        }
        let reference = reference
            .map(str::to_owned)
            .or_else(|| m.get(&key).and_then(|p| p.reference.clone()));
        let payout = Payout {
            status: to,
            reference,
        };
        m.insert(key, payout.clone());
        Ok(Move::Done(payout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pending_approved_paid_in_order_only() {
        let s = MemoryPayouts::default();
        assert_eq!(s.get("p", "2026-05").await.unwrap(), None);
        let approve_early = s
            .transition(
                "p",
                "2026-05",
                Some(PayoutStatus::Pending),
                PayoutStatus::Approved,
                None,
            )
            .await;
        assert_eq!(approve_early.unwrap(), Move::Refused(None));
        let freeze = s
            .transition("p", "2026-05", None, PayoutStatus::Pending, None)
            .await
            .unwrap();
        assert!(matches!(freeze, Move::Done(_)));
        let again = s
            .transition("p", "2026-05", None, PayoutStatus::Pending, None)
            .await
            .unwrap();
        assert_eq!(again, Move::Refused(Some(PayoutStatus::Pending)));
        let pay_early = s
            .transition(
                "p",
                "2026-05",
                Some(PayoutStatus::Approved),
                PayoutStatus::Paid,
                Some("r"),
            )
            .await;
        assert_eq!(
            pay_early.unwrap(),
            Move::Refused(Some(PayoutStatus::Pending))
        );
        s.transition(
            "p",
            "2026-05",
            Some(PayoutStatus::Pending),
            PayoutStatus::Approved,
            None,
        )
        .await
        .unwrap();
        let paid = s
            .transition(
                "p",
                "2026-05",
                Some(PayoutStatus::Approved),
                PayoutStatus::Paid,
                Some("wire-1"),
            )
            .await
            .unwrap();
        assert_eq!(
            paid,
            Move::Done(Payout {
                status: PayoutStatus::Paid,
                reference: Some("wire-1".into())
            })
        );
        assert_eq!(
            s.get("p", "2026-05")
                .await
                .unwrap()
                .unwrap()
                .reference
                .as_deref(),
            Some("wire-1")
        );
    }
}
