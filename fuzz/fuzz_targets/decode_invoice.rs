//! decode_partner_record on the invoices topic: key, record timestamp and payload from the input.
//! Input format and invariants: fuzz/src/decode.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warden_fuzz::decode::invoice(data);
});
