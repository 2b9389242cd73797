//! rdht-net: the libp2p swarm layer of rdht.
//!
//! Peers find who holds a build through Kademlia provider records and stream its blocks
//! over a protocol of their own, verifying every block on arrival.
//!
//! - [`NodeHandle`]: start a node ([`NodeHandle::start`]) over one or more swarms
//!   ([`SwarmConfig`]), announce ([`NodeHandle::provide`]), look up
//!   ([`NodeHandle::find_providers`]), fetch signed records
//!   ([`NodeHandle::fetch_records`]) and whole artifacts ([`NodeHandle::fetch_artifact`]).
//! - [`BlockSource`] / [`BlockSink`]: the only view of storage this crate has.
//! - [`SwarmKey`], [`parse_bootstrap`]: the private-swarm key and bootstrap list files.
//! - [`wire`]: protocol names, message layouts and limits.
//!
//! Owns: Kademlia discovery, provider announcements, the records and block protocols,
//! private swarms (pnet), banning, remembering unreachable peers (back-off). Does not own: the store's on-disk format (it sees
//! blocks only through [`BlockSource`] and [`BlockSink`]), block or record formats
//! (rdht-core). Normative spec: `specs/swarm.md`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use rdht_net::{MemoryBlocks, NodeConfig, NodeHandle, SwarmConfig};
//! # async fn demo(root: rdht_core::BlockId) -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(MemoryBlocks::new());
//! let node = NodeHandle::start(NodeConfig::new(vec![SwarmConfig::loopback("public")]), store.clone()).await?;
//! let report = node.fetch_artifact(root, &*store).await?;
//! println!("{} blocks", report.blocks_fetched);
//! node.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod error;
mod fetch;
mod health;
mod node;
mod source;
mod swarm;
pub mod wire;

pub use config::{
    AnnouncePolicy, BootstrapPeer, ConnLimits, FetchConfig, MAX_CONFIG_FILE_LEN, NodeConfig,
    PROVIDER_REPUBLISH, PROVIDER_TTL, REPLY_BOUND, SWARM_KEY_ENCODING, SWARM_KEY_HEADER,
    SwarmConfig, SwarmKey, TransportKind, inline_path, parse_bootstrap, read_bootstrap_file,
};
pub use error::{ConfigError, DropReason, FetchError, NetError, PeerFailure};
pub use fetch::FetchReport;
pub use health::{BackoffConfig, UnreachablePeer};
pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};
pub use node::{Announcement, FetchedRecord, NodeHandle, Reach, RecordsReport};
pub use source::{BlockSink, BlockSource, MemoryBlocks};
pub use swarm::{Connection, Lookup, Reachability, SwarmReach};
pub use wire::ProviderKey;
