//! Adapters that let the swarm layer read and fill the store without knowing its format.
//!
//! Owns: [`ServeStore`] (rdht-net's `BlockSource` over the store) and [`FetchSink`]
//! (rdht-net's `BlockSink` into a store session, counting bytes for progress). Does not
//! own: verification (rdht-net verifies before handing blocks over; the store verifies
//! again on read) or registration (the caller registers the session once complete).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rdht_core::{Block, BlockId, BuildKey, BuildRecord};
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
    fn get_block(&self, id: &BlockId) -> std::io::Result<Option<Bytes>> {
        BlockStore::get(&self.store, id)
            .map(|b| b.map(Block::into_bytes))
            .map_err(std::io::Error::other)
    }

    fn build_records(&self, key: &BuildKey) -> std::io::Result<Vec<BuildRecord>> {
        self.store.records(key).map_err(std::io::Error::other)
    }

    fn served(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Receives verified blocks of a fetch into a store session.
pub struct FetchSink<'a> {
    session: &'a Session,
    bytes: AtomicU64,
    total_in: Arc<AtomicU64>,
    progress: Option<UnboundedSender<u64>>,
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
        }
    }
}

impl rdht_net::BlockSink for FetchSink<'_> {
    fn put_block(&self, block: Block) -> std::io::Result<()> {
        let len = block.bytes().len() as u64;
        self.session.put(&block).map_err(std::io::Error::other)?;
        self.total_in.fetch_add(len, Ordering::Relaxed);
        let done = self.bytes.fetch_add(len, Ordering::Relaxed) + len;
        if let Some(tx) = &self.progress {
            let _ = tx.send(done);
        }
        Ok(())
    }
}
