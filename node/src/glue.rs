//! Adapters that let the swarm layer read and fill the store without knowing its format.
//!
//! Owns: [`ServeStore`] (rdht-net's `BlockSource` over the store) and [`FetchSink`]
//! (rdht-net's `BlockSink` into a store session, counting bytes for progress: a file's
//! leaves are written in place, at their offsets, the other blocks put in batches). Does not
//! own: verification (rdht-net verifies before handing blocks over; the store verifies
//! again on read) or registration (the caller registers the session once complete).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdht_core::{Block, BlockId, BuildKey, BuildRecord, Encoded};
use rdht_store::{BlockStore, Session, Store};
use tokio::sync::mpsc::UnboundedSender;

/// Serves blocks and records from the store to peers, counting the bytes sent.
#[derive(Debug, Clone)]
pub struct ServeStore {
    /// The store.
    pub store: Store,
    /// Block bytes sent to peers.
    pub bytes_out: Arc<AtomicU64>,
}

impl rdht_net::BlockSource for ServeStore {
    fn get_block(&self, id: &BlockId) -> std::io::Result<Option<Encoded>> {
        // Verified (decoded and hashed) before it is served, then sent as stored.
        BlockStore::get(&self.store, id)
            .map(|b| b.map(|b| b.encoded()))
            .map_err(std::io::Error::other)
    }

    fn build_records(&self, key: &BuildKey) -> std::io::Result<Vec<BuildRecord>> {
        self.store.records(key).map_err(std::io::Error::other)
    }

    fn served(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Runs `f`, telling a multi-threaded tokio runtime first that this worker blocks (its
/// other tasks move to another worker). Elsewhere it just runs `f`.
fn on_blocking_worker<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Block bytes gathered before one atomic store write.
const SINK_BATCH: usize = 1 << 20;

/// Receives verified blocks of a fetch into a store session, written in batches of
/// about [`SINK_BATCH`] bytes (one index write per batch, not per block).
///
/// Invariant: the caller calls [`FetchSink::finish`] after every fetch attempt, so no
/// received block stays only in memory.
pub struct FetchSink<'a> {
    session: &'a Session,
    bytes: AtomicU64,
    total_in: Arc<AtomicU64>,
    progress: Option<UnboundedSender<u64>>,
    pending: Mutex<(Vec<Block>, usize)>,
}

impl<'a> FetchSink<'a> {
    /// A sink into `session`; received bytes are added to `total_in` and, when given,
    /// the running count is sent to `progress`.
    pub fn new(
        session: &'a Session,
        total_in: Arc<AtomicU64>,
        progress: Option<UnboundedSender<u64>>,
    ) -> Self {
        FetchSink {
            session,
            bytes: AtomicU64::new(0),
            total_in,
            progress,
            pending: Mutex::new((Vec::new(), 0)),
        }
    }

    /// Writes the blocks still buffered. On failure, names the batch's first block.
    pub fn finish(&self) -> Result<(), Box<(BlockId, rdht_store::StoreError)>> {
        let blocks = {
            let mut p = self.lock();
            p.1 = 0;
            std::mem::take(&mut p.0)
        };
        let Some(first) = blocks.first().map(Block::id) else {
            return Ok(());
        };
        self.session
            .put_many(&blocks)
            .map(drop)
            .map_err(|e| Box::new((first, e)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Block>, usize)> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FetchSink<'_> {
    /// Counts a block of `len` bytes that took `wire` bytes on the wire.
    fn count(&self, len: u64, wire: u64) {
        self.total_in.fetch_add(wire, Ordering::Relaxed);
        let done = self.bytes.fetch_add(len, Ordering::Relaxed) + len;
        if let Some(tx) = &self.progress {
            let _ = tx.send(done);
        }
    }
}

impl rdht_net::BlockSink for FetchSink<'_> {
    fn put_leaf(&self, file: BlockId, size: u64, offset: u64, block: Block) -> std::io::Result<()> {
        let len = block.bytes().len() as u64;
        let wire = block.lz4().map_or(len, |d| d.len() as u64);
        // Written once, in place: registration renames the file into the store.
        self.session
            .write_leaf(file, size, offset, &block)
            .map_err(std::io::Error::other)?;
        self.count(len, wire);
        Ok(())
    }

    fn put_block(&self, block: Block) -> std::io::Result<()> {
        let len = block.bytes().len() as u64;
        // As received: a block that came LZ4-encoded keeps that form.
        let wire = block.lz4().map_or(len, |d| d.len() as u64);
        let full = {
            let mut p = self.lock();
            p.0.push(block);
            p.1 += len as usize;
            p.1 >= SINK_BATCH
        };
        if full {
            // A batch write can wait for the store's lock behind a whole ingest: off
            // the runtime's workers, so the swarms and the API go on meanwhile.
            on_blocking_worker(|| self.finish()).map_err(|e| std::io::Error::other(e.1))?;
        }
        self.count(len, wire);
        Ok(())
    }
}
