//! rdht-node: the daemon that runs on every machine. It glues `rdht-store`, `rdht-net`
//! and the local API together.
//!
//! Owns: configuration ([`config`]), identity ([`identity`]), the data-directory lock
//! ([`lock`]), trusted builders ([`trust`]), the store/swarm adapters ([`glue`]),
//! background store-and-publish jobs ([`submit`]) and the daemon's lifecycle and request
//! handling ([`daemon`]). Does not own: formats
//! (`rdht-core`), storage layout (`rdht-store`) or wire protocols (`rdht-net`,
//! `rdht-api`).

pub mod config;
pub mod daemon;
pub mod glue;
pub mod identity;
pub mod lock;
pub mod submit;
pub mod trust;
