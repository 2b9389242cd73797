//! rdht-cli: the `rdht` admin CLI and the `cargo-dht-build` shim. Both reach the daemon
//! only through the `rdht-api` client, never through node internals.
//!
//! The binaries are added by the daemon and cargo shim issues; until then this crate
//! only names its place.
