//! cargo fuzz target `shim_json`: [`rdht_fuzz::shim::rustc_json`] under libFuzzer (see that function for
//! the input and what is checked; fuzz/README.md for the commands).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rdht_fuzz::shim::rustc_json(data));
