//! The partner program's rules as plain Rust: no I/O, no clocks of its own (time is
//! passed in), unit-tested directly. Adapters (kafka/, actors/, store/, http/) call in.

pub mod audit;
pub mod control;
pub mod dedup;
pub mod enforcement;
pub mod event;
pub mod money;
pub mod partner;
pub mod stamp;

/// For `skip_serializing_if`: a field at its default is left out of a snapshot (and
/// restored by `#[serde(default)]`), so a flush encodes and writes only what a partner
/// has actually used. Most partners never see a chargeback, a tenant or a control fact.
pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
