//! Fuzz target `url_path`: see `infergate_fuzz::url_path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate_fuzz::url_path(data));
