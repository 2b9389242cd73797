//! rdht-store: the node's embedded store of blocks, artifacts and build records.
//!
//! Owns: the `BlockStore` trait, its sled and in-memory backends, pins and size-capped GC.
//! Does not own: formats (that is `rdht-core`) or anything about the network.
//!
//! This crate is filled by the block store issue; until then it only names its place.
