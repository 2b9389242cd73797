//! cargo fuzz target `wire_records`: [`rdht_fuzz::net::wire_records`] under libFuzzer (see that function for
//! the input and what is checked; fuzz/README.md for the commands).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rdht_fuzz::net::wire_records(data));
