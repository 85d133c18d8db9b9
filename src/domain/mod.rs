//! The partner program's rules as plain Rust: no I/O, no clocks of its own (time is
//! passed in), unit-tested directly. Adapters (kafka/, actors/, store/, http/) call in.

pub mod audit;
pub mod control;
pub mod dedup;
pub mod enforcement;
pub mod event;
pub mod money;
pub mod partner;
