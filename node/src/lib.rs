//! rdht-node: the daemon that runs on every machine. It glues `rdht-store`, `rdht-net`
//! and the local API together. It owns configuration, identity and lifecycle; it does
//! not own formats, storage layout or wire protocols.
//!
//! The daemon binary is added by the daemon issue; until then this crate only names
//! its place.
