//! cargo fuzz target `declaration`: [`rdht_fuzz::core::declaration`] under libFuzzer (see that function for
//! the input and what is checked; fuzz/README.md for the commands).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rdht_fuzz::core::declaration(data));
