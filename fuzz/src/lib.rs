//! The checks behind warden's fuzz targets, one module per input surface.
//!
//! Each check takes the fuzzer's bytes, calls the function under test, panics when an
//! invariant is broken and otherwise returns whether the input was accepted. The fuzz
//! targets (fuzz_targets/*.rs) are one call each; tests/fuzz_corpora.rs includes these
//! same files with `#[path]` and replays the corpora through them, so CI asserts exactly
//! what the fuzzers assert. The files therefore do not refer to each other.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod decode;
