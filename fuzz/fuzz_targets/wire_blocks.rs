//! cargo fuzz target `wire_blocks`: [`rdht_fuzz::net::wire_blocks`] under libFuzzer (see that function for
//! the input and what is checked; fuzz/README.md for the commands).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rdht_fuzz::net::wire_blocks(data));
