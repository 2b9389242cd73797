//! rdht-node: the daemon that runs on every machine. It glues `rdht-store`, `rdht-net`
//! and the local API together.
//!
//! Owns: configuration ([`config`]), identity (`identity`), the data-directory lock
//! (`lock`), trusted builders (`trust`), the store/swarm adapters (`glue`), the checks
//! and tallies of submitted jobs (`submit`) and the daemon's lifecycle and request
//! handling ([`daemon`]). Does not own: formats (`rdht-core`), storage layout
//! (`rdht-store`) or wire protocols (`rdht-net`, `rdht-api`).
//!
//! Only what `main.rs` needs is public ([`config`] and [`daemon::run`]); the rest is
//! crate-private, so rustc reports what nothing uses.

pub mod config;
pub mod daemon;
pub(crate) mod glue;
pub(crate) mod identity;
pub(crate) mod lock;
pub(crate) mod submit;
pub(crate) mod trust;
