//! cargo fuzz target `shim_args`: [`rdht_fuzz::shim::args`] under libFuzzer (see that function for
//! the input and what is checked; fuzz/README.md for the commands).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rdht_fuzz::shim::args(data));
