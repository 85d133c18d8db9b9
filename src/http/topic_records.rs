//! The enforcement-topic records of people's decisions (kill switches, manual levels).
//! Their data-plane write is done first, in the request; the record follows, and a request
//! waits for the broker only briefly. A record the broker has not acknowledged stays known
//! to the store (switch registry, pending records), and a once-a-second loop sends it, on
//! whichever instance sees it first, so a broker outage delays a record but never loses it
//! (CONTRACT §4: no id may go missing).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::ApiState;
use crate::store::decisions::DecisionWrite;

/// How long a request waits for its decision's record to be acknowledged before
/// answering; a record still in flight then is left to the loop.
pub const RECORD_WAIT: Duration = Duration::from_secs(2);

/// How old a decision must be before the loop sends its record: younger, its request is
/// still sending it (and would answer `pending` if the loop's send got there first), and
/// another instance's loop would only add a copy. Leaves room for clocks apart.
pub const LOOP_GRACE: Duration = Duration::from_secs(5);

/// Whether a decision made at `at` (RFC 3339) is old enough for the loop to send its
/// record (see [`LOOP_GRACE`]). A time that does not parse is treated as old.
pub fn past_grace(at: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
    chrono::DateTime::parse_from_rfc3339(at).map_or(true, |t| {
        now.signed_duration_since(t)
            .to_std()
            .is_ok_and(|age| age >= LOOP_GRACE)
    })
}

/// Records by outbox id: those in flight, so the loop never queues a second copy of one
/// the broker has not answered, and those acknowledged while this process ran, so it
/// stops asking the store about them.
#[derive(Debug, Default)]
pub struct TopicRecords {
    in_flight: Mutex<HashSet<String>>,
    acknowledged: Mutex<HashSet<String>>,
}

impl TopicRecords {
    pub fn is_acknowledged(&self, outbox_id: &str) -> bool {
        self.acknowledged.lock().contains(outbox_id)
    }

    fn note_acknowledged(&self, outbox_id: String) {
        self.acknowledged.lock().insert(outbox_id);
    }

    /// Forgets the acknowledged records whose decisions the store no longer keeps.
    pub fn keep_only(&self, kept: &HashSet<String>) {
        self.acknowledged
            .lock()
            .retain(|outbox_id| kept.contains(outbox_id));
    }
}

/// Produces a decision's record (its data-plane write is done, with `seq`) on the io
/// runtime, marks it produced once acknowledged, and waits up to `wait` for that. The send
/// goes on after the wait; `false` means not acknowledged yet (or already in flight).
pub async fn send_record(
    records: &Arc<TopicRecords>,
    state: &ApiState,
    write: DecisionWrite,
    seq: u64,
    wait: Duration,
) -> bool {
    if records.is_acknowledged(&write.outbox_id) {
        return true;
    }
    if !records.in_flight.lock().insert(write.outbox_id.clone()) {
        return false;
    }
    let records = Arc::clone(records);
    let publisher = state.publisher.clone();
    let task = state.io.spawn(async move {
        let acknowledged = publisher.produce_decision(&write, seq).await;
        records.in_flight.lock().remove(&write.outbox_id);
        if acknowledged {
            records.note_acknowledged(write.outbox_id);
        } else {
            tracing::warn!(outbox_id = %write.outbox_id, "enforcement record not acknowledged; will retry");
        }
        acknowledged
    });
    matches!(actix_rt::time::timeout(wait, task).await, Ok(Ok(true)))
}

/// Whether a decision's record is acknowledged: known here, or marked in the store (sent
/// before a restart, or by another instance); if not, sends it and waits up to `wait`.
pub async fn ensure_sent(
    records: &Arc<TopicRecords>,
    state: &ApiState,
    write: DecisionWrite,
    seq: u64,
    wait: Duration,
) -> bool {
    if records.is_acknowledged(&write.outbox_id) {
        return true;
    }
    let store = state.publisher.store().clone();
    let w = write.clone();
    match state
        .store_call(async move { store.is_produced(&w).await })
        .await
    {
        Ok(true) => {
            records.note_acknowledged(write.outbox_id);
            true
        }
        Ok(false) => send_record(records, state, write, seq, wait).await,
        Err(e) => {
            tracing::debug!(error = %e, "enforcement record state unknown; will retry");
            false
        }
    }
}

/// Every second: sends the records of manual levels the broker had not acknowledged,
/// and forgets each once it is. Every instance does this; a record may go out more than
/// once (same id, same content), in seq order per target.
pub async fn pending_loop(state: ApiState) {
    loop {
        actix_rt::time::sleep(Duration::from_secs(1)).await;
        finish_pending(&state).await;
    }
}

/// One pass of [`pending_loop`].
pub async fn finish_pending(state: &ApiState) {
    let store = state.publisher.store().clone();
    let mut pending = match state
        .store_call(async move { store.pending_records().await })
        .await
    {
        Ok(pending) => pending,
        Err(e) => {
            tracing::warn!(error = %e, "pending enforcement records unreadable; will retry");
            return;
        }
    };
    // A target's records are queued in seq order (one producer keeps a partition's order).
    pending.sort_by(|a, b| {
        (&a.write.scope, &a.write.id, a.seq).cmp(&(&b.write.scope, &b.write.id, b.seq))
    });
    let records = &state.manual_records;
    let now = chrono::Utc::now();
    for p in pending.iter().filter(|p| past_grace(&p.write.since, now)) {
        let outbox_id = p.write.outbox_id.clone();
        if ensure_sent(records, state, p.write.clone(), p.seq, Duration::ZERO).await {
            forget_pending(state, outbox_id).await;
        }
    }
    records.keep_only(&pending.iter().map(|p| p.write.outbox_id.clone()).collect());
}

/// Removes an acknowledged record from the pending ones; a failure is left to the loop,
/// which finds it acknowledged next time.
pub async fn forget_pending(state: &ApiState, outbox_id: String) {
    let store = state.publisher.store().clone();
    if let Err(e) = state
        .store_call(async move { store.remove_pending(&outbox_id).await })
        .await
    {
        tracing::debug!(error = %e, "pending record not removed; will retry");
    }
}
