//! What a partner's state holds in memory (issue "Performance", target 4: memory per
//! active partner), counted by the allocator rather than read from RSS, so the figure is
//! the state's own and the same on every run: the bytes each allocation asked for, by the
//! thread that made it (tests run on threads of their own).
//!
//! `scripts/bench-scale` measures the process (actors, buffers, allocator slack included);
//! these bounds keep the state itself from growing back.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use chrono::{DateTime, Utc};
use warden::domain::event::{PartnerEvent, TopicKind, UsageEvent};
use warden::domain::partner::{Applied, ApplyEnv, PartnerState};
use warden::kafka::decode::{decode_partner_record, DecodeLimits};
use warden::loadgen::{Generator, LoadSpec};

thread_local! {
    /// Bytes allocated minus bytes freed by this thread.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

struct Counting;

fn count(delta: isize) {
    // `try_with`: the slot is gone while the thread's locals are torn down.
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting only
// touches a const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

/// `bench-scale`'s active phase in small: `partners` partners, five usage events each
/// (uniform, seed 7, no misbehaving), decoded as the daemon decodes them.
fn bench_scale_events(partners: usize) -> Vec<PartnerEvent> {
    let start_ts: DateTime<Utc> = "2026-05-14T09:30:00Z".parse().unwrap();
    let spec = LoadSpec {
        partners,
        skew: 0.0,
        misbehaving: 0.0,
        invoice_fraction: 0.0,
        control_fraction: 0.0,
        malformed: 0.0,
        duplicates: 0.0,
        seed: 7,
        start_ts,
        event_step: chrono::Duration::milliseconds(1),
    };
    let record_ts = (start_ts + chrono::Duration::hours(1)).timestamp_millis();
    Generator::new(spec)
        .take(5 * partners)
        .map(|r| {
            decode_partner_record(
                TopicKind::Usage,
                r.key.as_deref().map(str::as_bytes),
                Some(&r.payload),
                Some(record_ts),
                &DecodeLimits::default(),
            )
            .expect("generated records are valid")
        })
        .collect()
}

/// A usage-only partner (bench-scale's five events, every id acknowledged by a flush)
/// holds under 3 KiB, its struct included: 2.4 KB. It held 4.3 KB while every partner
/// carried an empty 520-byte ledger and a B-tree of its integrations, kept its emptied
/// outbox's capacity, and held each dedup id three times.
#[test]
fn a_usage_only_partner_holds_under_three_kib() {
    const PARTNERS: usize = 2_000;
    let events = bench_scale_events(PARTNERS);
    let env = ApplyEnv::default();
    let ctx = env.ctx();
    let mut ids: Vec<&str> = events.iter().map(PartnerEvent::partner_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut index = std::collections::HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        index.insert(*id, i);
    }

    let before = live();
    let mut states: Vec<PartnerState> = Vec::with_capacity(ids.len());
    states.extend(ids.iter().map(|id| PartnerState::new(*id)));
    for event in &events {
        let state = &mut states[index[event.partner_id()]];
        assert_eq!(state.apply(event, &ctx), Ok(Applied::Counted));
    }
    // The flush made every id durable, and the outbox was published and acknowledged.
    for state in &mut states {
        let delta = state.dedup_delta();
        state.dedup_acknowledged(delta.added.len());
        let published = state.outbox().last().map_or(0, |e| e.n);
        state.ack_outbox(published);
    }
    let per_partner = (live() - before) / states.len() as isize;

    println!(
        "a usage-only partner after five events: {per_partner} bytes ({} of them the struct)",
        std::mem::size_of::<PartnerState>()
    );
    let counted: u64 = states.iter().map(|s| s.usage.events).sum();
    assert_eq!(counted, events.len() as u64);
    assert!(per_partner < 3_072, "{per_partner} bytes per partner");
}

fn usage(seq: i64) -> PartnerEvent {
    let t0: DateTime<Utc> = "2026-05-14T09:30:00Z".parse().unwrap();
    PartnerEvent::Usage(UsageEvent {
        event_id: format!("01JV7Q8ZK3-usage-{seq:012}"),
        ts: t0 + chrono::Duration::seconds(seq),
        partner_id: "p-0000042".into(),
        integration_id: "p-0000042-i1".into(),
        tenant_id: None,
        requests: 10,
        errors: 0,
        auth_failures: 0,
        bytes: 1_000,
    })
}

/// Each id in the dedup window costs its own length and some 55 bytes (the entry, the
/// index slot, room to grow): it is held once, not once per structure (164 bytes for a
/// 29-byte id when the index and the eviction order each had a copy). The bound leaves
/// room for both tables having just doubled (about 70 bytes besides the id).
#[test]
fn a_dedup_id_is_held_once() {
    let env = ApplyEnv::default();
    let ctx = env.ctx();
    let mut state = PartnerState::new("p-0000042");
    assert_eq!(state.apply(&usage(0), &ctx), Ok(Applied::Counted));
    state.dedup_acknowledged(usize::MAX);

    let before = live();
    const IDS: i64 = 10_000;
    for seq in 1..=IDS {
        assert_eq!(state.apply(&usage(seq), &ctx), Ok(Applied::Counted));
        if seq % 100 == 0 {
            state.dedup_acknowledged(usize::MAX);
        }
    }
    state.dedup_acknowledged(usize::MAX);
    assert_eq!(
        state.dedup_entries() as i64,
        IDS + 1,
        "a 24 h window keeps them all"
    );
    let id_len = "01JV7Q8ZK3-usage-000000000000".len() as isize;
    let per_id = (live() - before) / IDS as isize;
    println!("a dedup id of {id_len} bytes: {per_id} bytes in the window");
    assert!(per_id < id_len + 96, "{per_id} bytes per {id_len}-byte id");
}
