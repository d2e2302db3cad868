//! Fuzz target `config_toml`: see `infergate_fuzz::config_toml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infergate_fuzz::config_toml(data));
