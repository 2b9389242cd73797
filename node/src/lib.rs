//! rdht-node: the daemon that runs on every machine. It glues `rdht-store`, `rdht-net`
//! and the local API together.
//!
//! Owns: configuration ([`config`]), identity ([`identity`]), the data-directory lock
//! ([`lock`]) and the daemon's lifecycle. Does not own: formats (`rdht-core`), storage
//! layout (`rdht-store`) or wire protocols (`rdht-net`, `rdht-api`).

pub mod config;
pub mod identity;
pub mod lock;
