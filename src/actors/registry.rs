//! Where partner actors live: one arbiter (thread) per core, a partner always on the same
//! one (routed by a hash of its id), and a concurrent map from partner id to address so
//! the admin API can reach a live actor.
//!
//! Only the pipeline thread inserts and removes entries, so "is there an actor for p" has
//! one writer and cannot race with passivation.

use std::hash::BuildHasher;
use std::sync::Arc;

use actix::{Actor, Addr, ArbiterHandle};
use dashmap::DashMap;

use super::partner::{PartnerActor, Shared, TickDue};
use crate::domain::partner::PartnerState;

pub struct Registry {
    arbiters: Vec<ArbiterHandle>,
    actors: DashMap<String, Addr<PartnerActor>>,
    hasher: std::collections::hash_map::RandomState,
    /// One copy for every actor: each holds a pointer to it, not its own copy (56 bytes).
    shared: Arc<Shared>,
}

impl Registry {
    /// `arbiters` must not be empty.
    pub fn new(arbiters: Vec<ArbiterHandle>, shared: Shared) -> Self {
        assert!(
            !arbiters.is_empty(),
            "the registry needs at least one arbiter"
        );
        Registry {
            arbiters,
            actors: DashMap::new(),
            hasher: Default::default(),
            shared: Arc::new(shared),
        }
    }

    /// What every partner actor shares (control table, policy, program).
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn get(&self, partner_id: &str) -> Option<Addr<PartnerActor>> {
        self.actors.get(partner_id).map(|a| a.clone())
    }

    pub fn contains(&self, partner_id: &str) -> bool {
        self.actors.contains_key(partner_id)
    }

    pub fn len(&self) -> usize {
        self.actors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }

    /// Every live actor (for opt-in reporting; not on hot paths).
    pub fn addresses(&self) -> Vec<Addr<PartnerActor>> {
        self.actors.iter().map(|e| e.value().clone()).collect()
    }

    /// Starts the actor for `state` on its arbiter and registers it. Returns its address
    /// and when it is next due a tick (its actor keeps that up to date).
    pub fn start(&self, state: PartnerState) -> (Addr<PartnerActor>, Arc<TickDue>) {
        let h = self.hasher.hash_one(&state.partner_id);
        let arbiter = &self.arbiters[(h % self.arbiters.len() as u64) as usize];
        let id = state.partner_id.clone();
        let due = Arc::new(TickDue::new());
        let actor = PartnerActor::new(state, &self.shared, Arc::clone(&due));
        let addr = PartnerActor::start_in_arbiter(arbiter, move |_ctx| actor);
        self.actors.insert(id, addr.clone());
        (addr, due)
    }

    /// Unregisters and stops the actor (after the messages already queued).
    pub fn stop(&self, partner_id: &str) {
        if let Some((_, addr)) = self.actors.remove(partner_id) {
            addr.do_send(super::messages::Stop);
        }
    }
}
