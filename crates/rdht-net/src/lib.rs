//! rdht-net: the libp2p swarm layer.
//!
//! Owns: Kademlia discovery, provider announcements, the records and block protocols,
//! private swarms (pnet). Does not own: the store's on-disk format; it sees blocks only
//! through a narrow trait.
//!
//! This crate is filled by the swarm issue; until then it only names its place.
