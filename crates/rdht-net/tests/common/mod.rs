//! Shared helpers for rdht-net's integration tests and benchmarks: deterministic
//! artifacts, in-process nodes on 127.0.0.1:0, polling with deadlines.
//!
//! Does not own: any assertion about behaviour (each test states its own).

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

pub use rdht_testkit::{data, text};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdht_core::{Block, BlockId, DagBuilder, FileEntry, Labels, Manifest};
use rdht_net::{
    BlockSource, BootstrapPeer, FetchConfig, MemoryBlocks, NodeConfig, NodeHandle, SwarmConfig,
};

/// An artifact: its root, every block (manifest DAG and file DAGs), the file bytes.
pub struct Artifact {
    pub root: BlockId,
    pub blocks: Vec<Block>,
    pub files: Vec<(String, Vec<u8>)>,
}

impl Artifact {
    /// Files of pseudo-random (incompressible) bytes.
    pub fn new(seed: u64, sizes: &[usize]) -> Artifact {
        Artifact::with(seed, sizes, data)
    }

    /// Files of compressible text.
    pub fn text(seed: u64, sizes: &[usize]) -> Artifact {
        Artifact::with(seed, sizes, text)
    }

    fn with(seed: u64, sizes: &[usize], content: fn(u64, usize) -> Vec<u8>) -> Artifact {
        let mut blocks = Vec::new();
        let mut entries = Vec::new();
        let mut files = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let bytes = content(seed * 1000 + i as u64, size);
            let (link, bs) = DagBuilder::build(&bytes);
            blocks.extend(bs);
            let path = format!("lib/file-{i}.rlib");
            entries.push(FileEntry {
                path: path.clone(),
                executable: false,
                size: size as u64,
                root: link.id,
            });
            files.push((path, bytes));
        }
        let labels = Labels {
            crate_name: format!("crate{seed}"),
            crate_version: "1.0.0".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            rustc: "rustc 1.95.0".into(),
            crate_types: vec!["lib".into()],
        };
        let manifest = Manifest::new(labels, entries).unwrap();
        let (link, mblocks) = manifest.to_dag();
        blocks.extend(mblocks);
        Artifact {
            root: link.id,
            blocks,
            files,
        }
    }

    /// Distinct blocks.
    pub fn distinct(&self) -> usize {
        let mut ids: Vec<BlockId> = self.blocks.iter().map(|b| b.id()).collect();
        ids.sort_unstable_by_key(|i| *i.as_bytes());
        ids.dedup();
        ids.len()
    }

    pub fn store(&self) -> Arc<MemoryBlocks> {
        let s = Arc::new(MemoryBlocks::new());
        s.insert_blocks(self.blocks.iter().cloned());
        s
    }

    /// A store holding every block LZ4-encoded where that saves enough, as the
    /// daemon's store keeps them.
    pub fn store_compressed(&self) -> Arc<MemoryBlocks> {
        let s = Arc::new(MemoryBlocks::new());
        s.insert_blocks(self.blocks.iter().cloned().map(Block::compressed));
        s
    }

    /// Asserts `store` holds exactly this artifact's blocks, byte for byte, and that
    /// the files reassemble.
    pub fn assert_exactly_in(&self, store: &MemoryBlocks) {
        assert_eq!(store.len(), self.distinct(), "distinct blocks held");
        for b in &self.blocks {
            assert_eq!(
                store.get(&b.id()).map(|e| e.decode().unwrap()).as_ref(),
                Some(b.bytes()),
                "block {}",
                b.id()
            );
        }
        let mut map: std::collections::HashMap<BlockId, bytes::Bytes> = store
            .ids()
            .into_iter()
            .map(|id| (id, store.get(&id).unwrap().decode().unwrap()))
            .collect();
        let manifest = Manifest::from_dag(self.root, &mut map).unwrap();
        assert_eq!(manifest.files().len(), self.files.len());
        for entry in manifest.files() {
            // The manifest sorts paths; look each file up by name.
            let (path, bytes) = self.files.iter().find(|(p, _)| *p == entry.path).unwrap();
            let back =
                rdht_core::assemble_to_vec(entry.root, rdht_core::Limits::default(), &mut map)
                    .unwrap();
            assert!(back == *bytes, "file {path} differs");
        }
    }
}

pub fn fetch_config() -> FetchConfig {
    FetchConfig {
        max_providers: 4,
        stall_timeout: Duration::from_secs(20),
        hedge_after: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(10),
        ban_duration: Duration::from_secs(600),
        batch_bytes: 256 * 1024,
        // Far beyond a loaded test machine's answer times: only the tests about it
        // shorten it.
        reply_bound: Duration::from_secs(5),
        backoff: rdht_net::BackoffConfig::default(),
    }
}

pub fn swarm(name: &str, bootstrap: Vec<BootstrapPeer>) -> SwarmConfig {
    let mut c = SwarmConfig::loopback(name);
    c.bootstrap = bootstrap;
    c.bootstrap_timeout = Duration::from_secs(10);
    c.query_timeout = Duration::from_secs(20);
    c
}

pub async fn node(swarms: Vec<SwarmConfig>, source: Arc<dyn BlockSource>) -> NodeHandle {
    let mut cfg = NodeConfig::new(swarms);
    cfg.fetch = fetch_config();
    NodeHandle::start(cfg, source).await.unwrap()
}

pub async fn node_with(cfg: NodeConfig, source: Arc<dyn BlockSource>) -> NodeHandle {
    NodeHandle::start(cfg, source).await.unwrap()
}

/// The node's address in `swarm`, as a bootstrap entry.
pub async fn addr(node: &NodeHandle, swarm: &str) -> BootstrapPeer {
    let addrs = node.listen_addrs().await.unwrap();
    let (_, list) = addrs.into_iter().find(|(n, _)| n == swarm).unwrap();
    BootstrapPeer {
        peer: node.peer_id(),
        addr: list[0].clone(),
    }
}

/// Polls `f` until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
