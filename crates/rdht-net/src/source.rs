//! The narrow view the network has of local storage: read blocks and records to serve
//! them ([`BlockSource`]), and hand over verified blocks from a fetch ([`BlockSink`]).
//!
//! Owns: the two traits and [`MemoryBlocks`], an in-memory implementation for tests,
//! benchmarks and small tools. Does not own: any on-disk format (the daemon implements
//! these traits over rdht-store).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rdht_core::{Block, BlockId, BuildKey, BuildRecord, Encoded};

/// What a node serves: blocks by id and signed records by build key.
///
/// Calls are synchronous and should be quick (an index lookup and a read); they run on
/// the async runtime's worker threads.
pub trait BlockSource: Send + Sync + 'static {
    /// Block `id` as held (raw, or LZ4 for a leaf), or `None` when it is not held. It
    /// need not be re-verified: receivers verify every block. LZ4 data must decode to a
    /// leaf (specs/blocks.md §8): the server walks only raw interior blocks.
    fn get_block(&self, id: &BlockId) -> std::io::Result<Option<Encoded>>;

    /// Signed records held for build key `key` (empty when none).
    fn build_records(&self, key: &BuildKey) -> std::io::Result<Vec<BuildRecord>>;

    /// Called after a block of `bytes` bytes (as sent) went to a peer (traffic counters).
    fn served(&self, bytes: u64) {
        let _ = bytes;
    }
}

/// Where a fetch delivers blocks. Every block given has been verified against the DAG
/// being fetched (hash, kind, size, shape).
pub trait BlockSink: Send + Sync {
    /// Takes one verified block: a block of the manifest's DAG, or an interior block
    /// of a file's. An error aborts the fetch.
    fn put_block(&self, block: Block) -> std::io::Result<()>;

    /// Takes one verified leaf of the file whose DAG root is `file` (`size` bytes, as
    /// the manifest lists it); its data starts at `offset` in the file. A fetch hands
    /// over every leaf of a file it fetches, in file order, except those the local
    /// source already held. By default the leaf is taken like any block.
    fn put_leaf(&self, file: BlockId, size: u64, offset: u64, block: Block) -> std::io::Result<()> {
        let _ = (file, size, offset);
        self.put_block(block)
    }
}

impl<T: BlockSink + ?Sized> BlockSink for Arc<T> {
    fn put_block(&self, block: Block) -> std::io::Result<()> {
        (**self).put_block(block)
    }

    fn put_leaf(&self, file: BlockId, size: u64, offset: u64, block: Block) -> std::io::Result<()> {
        (**self).put_leaf(file, size, offset, block)
    }
}

/// An in-memory block and record store, usable as both source and sink.
#[derive(Debug, Default)]
pub struct MemoryBlocks {
    blocks: RwLock<HashMap<BlockId, Encoded>>,
    records: RwLock<HashMap<BuildKey, Vec<BuildRecord>>>,
}

impl MemoryBlocks {
    /// An empty store.
    pub fn new() -> MemoryBlocks {
        MemoryBlocks::default()
    }

    /// Adds blocks, each in its LZ4 form when it has one ([`Block::compressed`]).
    pub fn insert_blocks(&self, blocks: impl IntoIterator<Item = Block>) {
        let mut map = self.blocks.write().unwrap_or_else(|e| e.into_inner());
        for b in blocks {
            map.insert(b.id(), b.encoded());
        }
    }

    /// Adds raw bytes under an id without checking them (tests use this to make a
    /// corrupting peer).
    pub fn insert_raw(&self, id: BlockId, encoded: Encoded) {
        self.blocks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, encoded);
    }

    /// Adds a record.
    pub fn insert_record(&self, record: BuildRecord) {
        self.records
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(record.key())
            .or_default()
            .push(record);
    }

    /// What is held for `id`.
    pub fn get(&self, id: &BlockId) -> Option<Encoded> {
        self.blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Number of distinct blocks held.
    pub fn len(&self) -> usize {
        self.blocks.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no block is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every block id held.
    pub fn ids(&self) -> Vec<BlockId> {
        self.blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }
}

impl BlockSource for MemoryBlocks {
    fn get_block(&self, id: &BlockId) -> std::io::Result<Option<Encoded>> {
        Ok(self.get(id))
    }

    fn build_records(&self, key: &BuildKey) -> std::io::Result<Vec<BuildRecord>> {
        Ok(self
            .records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
            .unwrap_or_default())
    }
}

impl BlockSink for MemoryBlocks {
    fn put_block(&self, block: Block) -> std::io::Result<()> {
        self.insert_blocks([block]);
        Ok(())
    }
}
