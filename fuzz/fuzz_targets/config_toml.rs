//! Config::from_toml_str: the input is the file's text.
//! Input format and invariants: fuzz/src/config.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warden_fuzz::config::config_toml(data);
});
