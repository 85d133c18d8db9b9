//! parse_json of the admin API's request bodies: the input is the body.
//! Input format and invariants: fuzz/src/admin.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warden_fuzz::admin::admin_bodies(data);
});
