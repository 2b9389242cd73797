//! rdht-cli: the `rdht` admin CLI and the `cargo-dht-build` shim ([`shim`]). Both reach
//! the daemon only through the `rdht-api` client, never through node internals.
//!
//! Owns: turning command-line input into API requests ([`files`] for `put`), files the
//! CLI writes itself ([`swarm_key`]), and how answers are shown ([`show`]). Does not own:
//! the daemon's behaviour or the wire format.

pub mod files;
pub mod shim;
pub mod show;
pub mod swarm_key;
