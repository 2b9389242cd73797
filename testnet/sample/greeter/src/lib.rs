//! A path dependency whose code comes from its build script.

include!(concat!(env!("OUT_DIR"), "/greeting.rs"));
