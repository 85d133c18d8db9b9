//! decode_control_record: the input is the payload.
//! Input format and invariants: fuzz/src/decode.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warden_fuzz::decode::control(data);
});
