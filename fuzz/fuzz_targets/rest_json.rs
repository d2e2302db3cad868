//! Fuzz target `rest_json`: see `infergate_fuzz::rest_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate_fuzz::rest_json(data));
