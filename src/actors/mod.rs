//! Thin actix shells around the domain: one [`partner::PartnerActor`] per partner, spread
//! over one arbiter per core by [`registry::Registry`]. Handlers call plain domain code;
//! they never touch Kafka or Redis (the pipeline and the store adapters do).

pub mod messages;
pub mod partner;
pub mod registry;
