//! Fuzz target `tensor_proto`: see `infergate_fuzz::tensor_proto`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate_fuzz::tensor_proto(data));
