//! cargo fuzz target `codec`: [`rdht_fuzz::core::codec`] under libFuzzer (see that function for
//! the input and what is checked; fuzz/README.md for the commands).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rdht_fuzz::core::codec(data));
