//! Fuzz target `plugin_output`: see `infergate_fuzz::plugin_output`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate_fuzz::plugin_output(data));
