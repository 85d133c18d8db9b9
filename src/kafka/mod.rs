//! The way in: the consumer group over the keyed topics, the control-topic reader, and
//! the one place record bytes become typed events (`decode`).

pub mod consumer;
pub mod control;
pub mod deadletter;
pub mod decode;
mod fetch_progress;
mod flush;
pub mod pipeline;
mod publish_queue;
mod rebalance;
pub mod topics;
mod wake_schedule;
