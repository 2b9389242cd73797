//! Build-script runs as cache units (specs/build-key.md §10).
//!
//! Cargo runs a build script itself, so the shim puts a [`launcher`] at the path cargo
//! executes once the script is compiled; the launcher runs [`run`], which names the run
//! in two steps ([`inputs`]: the declaration key, then the run key from the values of
//! what the script declared, read by [`output`]), serves it from the cache
//! ([`restore`]) or runs the script and shares the run ([`capture`]).
//!
//! Owns: everything between cargo and a build script. Does not own: the compile of the
//! script (`unit.rs`), the daemon or the key hashes (`rdht_core::runkey`).

mod capture;
pub mod inputs;
pub mod launcher;
pub mod output;
mod restore;
pub mod run;
