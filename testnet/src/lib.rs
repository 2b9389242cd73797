//! rdht-testnet: the multi-node harness (real daemons on loopback or in network
//! namespaces) and the demo.
//!
//! Filled by the testnet issue; until then this crate only names its place.
