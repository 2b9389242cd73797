//! Error types of rdht-net: configuration files, node start-up and lookups, fetches.
//!
//! Owns: the error enums every public function returns. Does not own: logging (callers
//! decide what to report) or exit codes (the binaries map these).
//! Read first: [`NetError`], then [`FetchError`]. Spec: `specs/swarm.md` §7.

use std::path::PathBuf;

use libp2p::{Multiaddr, PeerId};
use rdht_core::BlockId;

/// A configuration file (swarm key, bootstrap list) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The bootstrap list file could not be read.
    #[error("reading bootstrap file {path}: {source}")]
    BootstrapUnreadable {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A line of the bootstrap list is not a multiaddr ending in `/p2p/<peer id>`.
    #[error("bootstrap file {path} line {line}: {reason}")]
    BootstrapMalformed {
        /// The file (or `<inline>` for text parsed from memory).
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The swarm key file could not be read.
    #[error("reading swarm key file {path}: {source}")]
    SwarmKeyUnreadable {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The swarm key file is not in the `/key/swarm/psk/1.0.0/` base16 format.
    #[error("swarm key file {path} line {line}: {reason}")]
    SwarmKeyMalformed {
        /// The file (or `<inline>` for text parsed from memory).
        path: PathBuf,
        /// The 1-based line number of the offending line.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Two swarms share a name, or a swarm has no name.
    #[error("swarm configuration: {reason}")]
    InvalidSwarms {
        /// What is wrong.
        reason: String,
    },
}

/// Starting a node or talking to its swarms failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A configuration file or value is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The transport (TCP, pnet, noise, yamux) could not be built.
    #[error("swarm {swarm}: building the transport: {reason}")]
    Transport {
        /// The swarm's name.
        swarm: String,
        /// What failed.
        reason: String,
    },
    /// A listen address was refused or never came up.
    #[error("swarm {swarm}: listening on {addr}: {reason}")]
    Listen {
        /// The swarm's name.
        swarm: String,
        /// The address.
        addr: Multiaddr,
        /// What failed.
        reason: String,
    },
    /// Every bootstrap peer of a swarm failed to connect (wrong address, wrong swarm
    /// key, peer down, or timeout).
    #[error("swarm {swarm}: no reachable bootstrap peer ({tried} tried; last error: {last_error})")]
    NoReachableBootstrap {
        /// The swarm's name.
        swarm: String,
        /// How many bootstrap peers were dialled.
        tried: usize,
        /// The last dial error seen.
        last_error: String,
    },
    /// The local provider store refused a key (it holds `max_provider_keys` keys).
    #[error("swarm {swarm}: cannot announce {key}: the provider store is full")]
    ProviderStoreFull {
        /// The swarm's name.
        swarm: String,
        /// The key, as `build:<hex>` or `artifact:<hex>`.
        key: String,
    },
    /// The announcement's DHT query timed out before the provider record reached the
    /// closest peers.
    #[error("swarm {swarm}: announcing {key} timed out")]
    AnnounceTimedOut {
        /// The swarm's name.
        swarm: String,
        /// The key, as `build:<hex>` or `artifact:<hex>`.
        key: String,
    },
    /// No swarm of that name is configured.
    #[error("no swarm named {name:?} is configured")]
    UnknownSwarm {
        /// The name asked for.
        name: String,
    },
    /// The node was shut down (or its task ended) before the request was answered.
    #[error("the node is shut down")]
    Stopped,
}

/// Why a provider was dropped from a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// It sent a block that failed verification, or broke the wire format. It is banned.
    Corrupt(String),
    /// It sent nothing for longer than the stall timeout, or for the hedge delay while
    /// another provider had nothing left to do. It is not banned.
    Stalled,
    /// The stream or connection failed (peer killed, disconnected, refused the stream).
    Disconnected(String),
    /// It said it does not hold a block the DAG needs.
    Missing(BlockId),
    /// It had not answered when the caller's deadline passed (not a fault: nothing is
    /// held against it).
    Unanswered,
    /// It is remembered as unreachable (in back-off), or did not answer within the
    /// reply bound and is now: not asked again until its back-off ends.
    Unreachable,
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::Corrupt(why) => write!(f, "corrupt: {why}"),
            DropReason::Stalled => write!(f, "stalled"),
            DropReason::Disconnected(why) => write!(f, "disconnected: {why}"),
            DropReason::Missing(id) => write!(f, "missing block {id}"),
            DropReason::Unanswered => write!(f, "no answer before the deadline"),
            DropReason::Unreachable => write!(f, "unreachable (backing off)"),
        }
    }
}

/// Fetching an artifact failed. Nothing unverified was handed to the sink either way.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No swarm knows a provider of the artifact (besides banned peers and ourselves).
    #[error("no provider of artifact {root} was found")]
    NoProviders {
        /// The artifact root.
        root: BlockId,
    },
    /// Every provider was dropped before the artifact was complete.
    #[error("fetching artifact {root}: all {tried} providers failed (last: {last})")]
    AllProvidersFailed {
        /// The artifact root.
        root: BlockId,
        /// How many providers were tried.
        tried: usize,
        /// Why the last one was dropped.
        last: DropReason,
    },
    /// The artifact's manifest verified block by block but does not decode.
    #[error("artifact {root}: its manifest is invalid: {reason}")]
    BadManifest {
        /// The artifact root.
        root: BlockId,
        /// The decoder's message.
        reason: String,
    },
    /// The caller's sink refused a verified block.
    #[error("artifact {root}: the sink refused block {block}: {source}")]
    Sink {
        /// The artifact root.
        root: BlockId,
        /// The block.
        block: BlockId,
        /// The sink's error.
        source: std::io::Error,
    },
    /// The local block source failed while looking for blocks already held.
    #[error("artifact {root}: reading local block {block}: {source}")]
    Source {
        /// The artifact root.
        root: BlockId,
        /// The block.
        block: BlockId,
        /// The source's error.
        source: std::io::Error,
    },
    /// A provider lookup failed.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// A record fetch from one peer failed; used in logs and [`crate::RecordsReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFailure {
    /// The peer.
    pub peer: PeerId,
    /// What went wrong.
    pub reason: DropReason,
}
