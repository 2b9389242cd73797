//! cargo fuzz target `script_output`: [`rdht_fuzz::shim::script_output`] under libFuzzer (see that function for
//! the input and what is checked; fuzz/README.md for the commands).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rdht_fuzz::shim::script_output(data));
