//! The store API type: opening and recovery, blocks, sessions and stats
//! (specs/store.md §3–§5).
//!
//! Owns: [`Store`] (one cheap-to-clone handle over a [`Backend`]), the [`BlockStore`]
//! trait the network layer needs, [`Session`]s that protect blocks of an ingest or a
//! fetch until their artifact is registered, and [`Stats`]. Does not own: artifact
//! ingest/export and registration (`artifact.rs`), GC and pins (`gc.rs`), records
//! (`records.rs`), or the network.
//!
//! Read first: [`Store::open`], [`BlockStore`], [`Session`].

use std::collections::{HashMap, HashSet};
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use rdht_core::{Block, BlockId, BlockSource, Encoded};

use crate::backend::{Backend, Batch, MemoryBackend, SledBackend, SledOptions};
use crate::error::{StoreError, hex_key};
use crate::files::Files;
use crate::keys::{self, FileRef, LeafLoc, LooseEntry, RefEntry};
use crate::packs::{Loc, Packs};
use crate::partial::Partials;
use crate::verified::Verified;

/// How a store behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Size cap on logical bytes (sum of the blocks' uncompressed lengths; LZ4-kept
    /// blocks take less on disk). When a registration
    /// takes the store over it, GC evicts unpinned artifacts, least recently used
    /// first, down to 90% of the cap. `None`: no cap.
    pub max_bytes: Option<u64>,
    /// Tuning of the sled backend (ignored by other backends).
    pub sled: SledOptions,
    /// Size at which a pack file is closed and a new one started (on-disk store).
    pub pack_size: u64,
    /// `fsync` each exported file before renaming it into place. Off by default: a
    /// crash then may leave an exported file empty, but never half-written under its
    /// final name *and* reported as complete by the store.
    pub sync_exports: bool,
    /// [`Store::ingest_outputs`] links each file into the store (a reflink, else a
    /// hard link on the same filesystem) rather than copying it, then hashes the
    /// store's copy once (specs/store.md §4.4). On by default. A file linked this way that is later
    /// rewritten in place is caught by the verification of every read and dropped.
    pub link_ingest: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_bytes: None,
            sled: SledOptions::default(),
            pack_size: crate::packs::PACK_SIZE,
            sync_exports: false,
            link_ingest: true,
        }
    }
}

/// Counters and sizes of a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Distinct blocks held in packs or inline (referenced by an artifact or loose);
    /// leaves of kept files are not counted here.
    pub blocks: u64,
    /// Sum of those blocks' lengths plus the sizes of the kept files.
    pub logical_bytes: u64,
    /// Complete files kept whole (specs/store.md §2.3).
    pub files: u64,
    /// Bytes the backend occupies on disk.
    pub disk_bytes: u64,
    /// Complete artifacts.
    pub artifacts: u64,
    /// Stored bytes of pinned artifacts (their distinct blocks).
    pub pinned_bytes: u64,
    /// Block reads since open.
    pub reads: u64,
    /// Reads that returned a verified block.
    pub hits: u64,
    /// Reads that found nothing (including corrupt blocks).
    pub misses: u64,
    /// Artifacts evicted by GC since open.
    pub evictions: u64,
    /// Corrupt blocks or index entries found (and removed) since open.
    pub corruptions: u64,
}

/// Mutable state guarded by the store lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) blocks: u64,
    pub(crate) logical: u64,
    pub(crate) files: u64,
    pub(crate) artifacts: u64,
    pub(crate) pinned: u64,
    pub(crate) clock: u64,
    /// Live sessions and the blocks each has put.
    pub(crate) sessions: HashMap<u64, HashSet<BlockId>>,
    /// Blocks put by live sessions, with how many sessions hold each: GC keeps them.
    pub(crate) protected: HashMap<BlockId, u32>,
    /// Block bytes removed from the index since the last compaction (they are dead in
    /// some pack); GC compacts once this reaches half a pack, and at its first run.
    pub(crate) dead_bytes: u64,
    /// Set at open: the first GC compacts (earlier runs may have left dead packs).
    pub(crate) compact_pending: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) reads: AtomicU64,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) corruptions: AtomicU64,
}

pub(crate) struct Inner {
    pub(crate) backend: Box<dyn Backend>,
    /// Pack files holding block bytes; `None`: bytes inline in the backend.
    pub(crate) packs: Option<Packs>,
    /// Complete files of registered artifacts.
    pub(crate) files: Files,
    pub(crate) path: PathBuf,
    pub(crate) config: Config,
    pub(crate) boot: u64,
    pub(crate) state: Mutex<State>,
    pub(crate) next_session: AtomicU64,
    pub(crate) counters: Counters,
    /// The last write that failed for a reason of the filesystem, until one succeeds.
    pub(crate) condition: crate::condition::Condition,
    /// The backend's [`Backend::generation`] the counters were built at.
    pub(crate) generation: AtomicU64,
    /// Space kept for the index (on disk only).
    pub(crate) reserve: Option<crate::reserve::Reserve>,
    /// Kept files verified whole since open, and as what (`verified.rs`).
    pub(crate) verified: Verified,
}

/// The node's store of blocks, artifacts and build records. Clone it freely: clones
/// share one backend. Every method is safe to call from several threads.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("boot", &self.inner.boot)
            .finish()
    }
}

/// The block operations the network layer needs. A miss is `Ok(None)` / `Ok(false)`.
pub trait BlockStore: Send + Sync {
    /// The block `id`, verified against its hash. A stored block that fails the check
    /// is removed, counted in [`Stats::corruptions`] and reported as a miss.
    fn get(&self, id: &BlockId) -> Result<Option<Block>, StoreError>;
    /// Whether block `id` is stored (not verified; `get` verifies).
    fn has(&self, id: &BlockId) -> Result<bool, StoreError>;
    /// Stores a block, loose until an artifact registration references it. Returns
    /// true if it was not stored before.
    fn put(&self, block: &Block) -> Result<bool, StoreError>;
    /// Stores `bytes` as block `id`, refusing bytes that are not a valid block hashing
    /// to `id`.
    fn put_bytes(&self, id: BlockId, bytes: Bytes) -> Result<bool, StoreError> {
        let block =
            Block::verified(id, bytes).map_err(|source| StoreError::InvalidBlock { id, source })?;
        self.put(&block)
    }
    /// Deletes a loose block. Refuses ([`StoreError::BlockInUse`]) a block that a
    /// complete artifact holds. Returns true if something was deleted.
    fn delete(&self, id: &BlockId) -> Result<bool, StoreError>;
}

impl Store {
    /// Opens (creating if needed) the on-disk store in directory `path`: a sled index
    /// in `path/index` and block bytes in pack files in `path/packs`.
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Store, StoreError> {
        let path = path.as_ref();
        let open_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Backend {
                op: "open",
                path: p,
                source,
            }
        };
        let index = path.join("index");
        let backend = SledBackend::open(&index, &config.sled).map_err(open_err(&index))?;
        Store::with_backend_and_packs(Box::new(backend), &path.join("packs"), config)
    }

    /// A store over `backend` for the index and pack files in `packs` for block bytes.
    pub fn with_backend_and_packs(
        backend: Box<dyn Backend>,
        packs: &Path,
        config: Config,
    ) -> Result<Store, StoreError> {
        let packs = Packs::open(packs, config.pack_size).map_err(|source| StoreError::Backend {
            op: "open",
            path: packs.to_path_buf(),
            source,
        })?;
        let files_dir = packs.dir().with_file_name("files");
        let files = Files::open(&files_dir).map_err(|source| StoreError::Backend {
            op: "open",
            path: files_dir,
            source,
        })?;
        Store::build(backend, Some(packs), files, config)
    }

    /// A store that lives in memory only. (It cannot fail today; the `Result` keeps
    /// the signature of [`Store::open`].)
    pub fn memory(config: Config) -> Result<Store, StoreError> {
        Store::with_backend(Box::new(MemoryBackend::new()), config)
    }

    /// A store over any backend, block bytes inline in it (used by tests to inject
    /// faults). Runs recovery: loose
    /// blocks left by an earlier open are reclaimed and counters are rebuilt.
    pub fn with_backend(backend: Box<dyn Backend>, config: Config) -> Result<Store, StoreError> {
        Store::build(backend, None, Files::memory(), config)
    }

    fn build(
        backend: Box<dyn Backend>,
        packs: Option<Packs>,
        files: Files,
        config: Config,
    ) -> Result<Store, StoreError> {
        let path = backend.path().map(Path::to_path_buf).unwrap_or_default();
        let reserve = files
            .dir()
            .map(|d| crate::reserve::Reserve::open(d.with_file_name("reserve")));
        let mut inner = Inner {
            backend,
            packs,
            files,
            path,
            config,
            boot: 0,
            state: Mutex::new(State::default()),
            next_session: AtomicU64::new(1),
            counters: Counters::default(),
            condition: Default::default(),
            generation: AtomicU64::new(0),
            reserve,
            verified: Verified::default(),
        };
        inner.recover()?;
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// Current counters and sizes.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        self.inner.recount_if_reopened()?;
        let mut disk_bytes = self
            .inner
            .backend
            .size_on_disk()
            .map_err(self.inner.err("measure"))?;
        if let Some(p) = &self.inner.packs {
            disk_bytes += p.size().map_err(self.inner.pack_err("measure"))?;
        }
        disk_bytes += self
            .inner
            .files
            .size()
            .map_err(self.inner.files_err("measure"))?;
        let st = self.inner.lock();
        let c = &self.inner.counters;
        Ok(Stats {
            blocks: st.blocks,
            logical_bytes: st.logical,
            files: st.files,
            disk_bytes,
            artifacts: st.artifacts,
            pinned_bytes: st.pinned,
            reads: c.reads.load(Ordering::Relaxed),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            corruptions: c.corruptions.load(Ordering::Relaxed),
        })
    }

    /// The database directory (empty for a memory store).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The last write that failed for a reason of the filesystem (a full disk, a
    /// quota, a read-only device), while no ingest, registration or put of new blocks
    /// has succeeded since (specs/store.md §7.1).
    pub fn write_failure(&self) -> Option<crate::WriteFailure> {
        self.inner.condition.get()
    }

    /// Free and total bytes of the filesystem holding the store (`None` for a memory
    /// store).
    pub fn disk_space(&self) -> Option<io::Result<(u64, u64)>> {
        let dir = self.inner.files.dir()?;
        Some(
            rustix::fs::statvfs(dir)
                .map(|s| {
                    (
                        s.f_bavail.saturating_mul(s.f_frsize),
                        s.f_blocks.saturating_mul(s.f_frsize),
                    )
                })
                .map_err(io::Error::from),
        )
    }

    /// Writes and removes a 64 KiB temporary in the store's `files/tmp`, so that a
    /// filesystem that has filled up is seen (and recorded, [`Store::write_failure`])
    /// before a write of the store fails on it. A success clears nothing: only the
    /// store's own writes do. Nothing is written for a memory store.
    pub fn probe_writes(&self) -> Result<(), StoreError> {
        let Some(dir) = self.inner.files.dir() else {
            return Ok(());
        };
        let tmp = Files::temp(dir);
        let wrote = std::fs::File::create(&tmp).and_then(|mut f| {
            std::io::Write::write_all(&mut f, &[0u8; 64 << 10])?;
            f.sync_data()
        });
        let _ = std::fs::remove_file(&tmp);
        self.inner
            .noted_failure(wrote.map_err(|source| StoreError::Backend {
                op: "write",
                path: dir.to_path_buf(),
                source,
            }))
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    /// Flushes and closes the store. When it returns `Ok`, the same directory can be
    /// opened again at once, in this process or another (sled's file lock is free).
    /// Refuses, with [`StoreError::InUse`], while other clones or sessions live; the
    /// store then stays open through them.
    pub fn close(self) -> Result<(), StoreError> {
        let inner = Arc::try_unwrap(self.inner).map_err(|inner| StoreError::InUse {
            path: inner.path.clone(),
            handles: Arc::strong_count(&inner) - 1,
        })?;
        inner.flush()?;
        let Inner { backend, path, .. } = inner;
        backend.close().map_err(|source| StoreError::Backend {
            op: "close",
            path,
            source,
        })
    }

    /// Starts a session: blocks put through it are protected from GC until the session
    /// registers their artifact or is dropped. The network layer fetches an artifact's
    /// blocks through a session, then calls [`Session::register`].
    pub fn session(&self) -> Session {
        let id = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        self.inner.lock().sessions.insert(id, HashSet::new());
        Session {
            store: self.clone(),
            id,
            partials: Mutex::new(Partials::default()),
        }
    }
}

/// Where a block's stored bytes were found.
pub(crate) enum Origin {
    /// By its `"b"` entry, whose value was this.
    Index(Bytes),
    /// In the kept file of this root (a leaf, by its locator).
    File(BlockId),
}

/// A block's stored bytes (unverified) and where they were found.
pub(crate) struct Raw {
    /// The stored form, not yet decoded or verified.
    pub(crate) encoded: Encoded,
    pub(crate) origin: Origin,
}

/// Protects the blocks it stores from GC until they are registered or it is dropped.
#[derive(Debug)]
pub struct Session {
    pub(crate) store: Store,
    pub(crate) id: u64,
    /// Files being written in place by [`Session::write_leaf`], removed with the
    /// session unless registration installed them.
    pub(crate) partials: Mutex<Partials>,
}

impl Session {
    /// Stores a block on behalf of this session. Returns true if it was new.
    pub fn put(&self, block: &Block) -> Result<bool, StoreError> {
        Ok(self
            .store
            .inner
            .put_blocks(self.id, std::slice::from_ref(block))?
            > 0)
    }

    /// Stores several blocks in one atomic write. Returns how many were new.
    pub fn put_many(&self, blocks: &[Block]) -> Result<u64, StoreError> {
        self.store.inner.put_blocks(self.id, blocks)
    }

    /// Stores `bytes` as block `id`, refusing bytes that do not hash to `id`.
    pub fn put_bytes(&self, id: BlockId, bytes: Bytes) -> Result<bool, StoreError> {
        let block =
            Block::verified(id, bytes).map_err(|source| StoreError::InvalidBlock { id, source })?;
        self.put(&block)
    }

    /// Writes verified leaf `block` of the file whose DAG root is `file` (`size` bytes)
    /// at `offset`, in place in a temporary file this session owns (specs/store.md
    /// §4.4). Nothing reads it until [`Session::register`] has checked every leaf
    /// against the DAG and installed the file; the leaf is not a block of the store
    /// before that, and is gone with the session if it never registers.
    pub fn write_leaf(
        &self,
        file: BlockId,
        size: u64,
        offset: u64,
        block: &Block,
    ) -> Result<(), StoreError> {
        if block.kind() != rdht_core::BlockKind::Leaf {
            return Err(StoreError::Dag {
                root: file,
                source: Box::new(rdht_core::DagError::BadShape {
                    block: block.id(),
                    reason: "an interior block is not file data".into(),
                }),
            });
        }
        let inner = &self.store.inner;
        let dir = inner.files.dir();
        let tmp = dir.map_or_else(PathBuf::new, |d| d.join("tmp"));
        let mut partials = self
            .partials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if dir.is_some() && !partials.0.contains_key(&file) {
            // A new file in files/tmp leaves the space kept for the index (§7.1).
            inner.room_for(size, &tmp)?;
        }
        let written = partials
            .write(dir, file, size, offset, block.id(), block.payload())
            .map_err(|source| StoreError::File {
                op: "writing a fetched leaf into",
                path: tmp,
                source,
            });
        inner.noted_failure(written)
    }

    /// The store this session writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut st = self.store.inner.lock();
        if let Some(ids) = st.sessions.remove(&self.id) {
            for id in ids {
                if let Some(n) = st.protected.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        st.protected.remove(&id);
                    }
                }
            }
        }
    }
}

impl BlockStore for Store {
    fn get(&self, id: &BlockId) -> Result<Option<Block>, StoreError> {
        let inner = &self.inner;
        let Some(raw) = inner.read_raw(id)? else {
            return Ok(None);
        };
        match Block::from_encoded(*id, raw.encoded) {
            Ok(block) => {
                inner.counters.hits.fetch_add(1, Ordering::Relaxed);
                Ok(Some(block))
            }
            Err(e) => {
                inner.counters.misses.fetch_add(1, Ordering::Relaxed);
                inner.remove_corrupt(id, &raw.origin, &e)?;
                Ok(None)
            }
        }
    }

    fn has(&self, id: &BlockId) -> Result<bool, StoreError> {
        let inner = &self.inner;
        if inner
            .backend
            .contains(&keys::id_key(keys::BLOCK, id.as_bytes()))
            .map_err(inner.err("read"))?
        {
            return Ok(true);
        }
        Ok(inner.leaf_loc(id)?.is_some())
    }

    fn put(&self, block: &Block) -> Result<bool, StoreError> {
        Ok(self.inner.put_blocks(0, std::slice::from_ref(block))? > 0)
    }

    fn delete(&self, id: &BlockId) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let mut st = inner.lock();
        if let Some(r) = inner.ref_entry(id)? {
            return Err(StoreError::BlockInUse {
                id: *id,
                holders: r.count,
            });
        }
        let loose = inner.loose_entry(id)?;
        let bkey = keys::id_key(keys::BLOCK, id.as_bytes());
        let present = inner.backend.contains(&bkey).map_err(inner.err("read"))?;
        if loose.is_none() && !present {
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.remove(bkey);
        batch.remove(keys::id_key(keys::LOOSE, id.as_bytes()));
        inner.apply(batch)?;
        if let Some(l) = loose {
            st.blocks -= 1;
            st.logical -= u64::from(l.len);
            st.dead_bytes += u64::from(l.len);
        }
        Ok(true)
    }
}

/// Reads blocks for [`rdht_core::assemble`] and [`rdht_core::Manifest::from_dag`];
/// every block is verified (and a corrupt one removed) before it is returned.
impl BlockSource for Store {
    type Error = StoreError;
    fn get_block(&mut self, id: &BlockId) -> Result<Option<Bytes>, StoreError> {
        Ok(BlockStore::get(self, id)?.map(Block::into_bytes))
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the on-disk state inconsistent
        // (every change is one atomic batch); the counters are at worst stale.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn err(&self, op: &'static str) -> impl Fn(io::Error) -> StoreError + '_ {
        move |source| StoreError::Backend {
            op,
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.before_index_write();
        let r = self.backend.apply(batch).map_err(self.err("write"));
        self.noted_failure(r)
    }

    /// Gives the index the reserve when the filesystem is full, recording that as a
    /// write failure (specs/store.md §7.1).
    fn before_index_write(&self) {
        if let Some(source) = self.reserve.as_ref().and_then(|r| r.before_index_write()) {
            let e = StoreError::Backend {
                op: "write",
                path: self.path.parent().unwrap_or(&self.path).to_path_buf(),
                source,
            };
            self.condition.failed(&e, &self.path);
        }
    }

    /// Checks that a bulk write of `len` bytes into `path` (packs, `files/tmp`) leaves
    /// the space kept for the index (specs/store.md §7.1); a refusal is a full disk.
    pub(crate) fn room_for(&self, len: u64, path: &Path) -> Result<(), StoreError> {
        let Some(r) = &self.reserve else {
            return Ok(());
        };
        self.noted_failure(r.room_for(len).map_err(|source| StoreError::Backend {
            op: "write",
            path: path.to_path_buf(),
            source,
        }))
    }

    /// Records a failed write of `r` in the store's condition; returns `r`.
    pub(crate) fn noted_failure<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r {
            self.condition
                .failed(e, self.files.dir().unwrap_or(self.path.as_path()));
        }
        r
    }

    /// [`Inner::noted_failure`], and a success ends the condition: `r` is an ingest or
    /// a registration. Called without the store lock: after the backend opened its
    /// database again (§7.1), the counters are rebuilt from the index here.
    pub(crate) fn noted<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_ok() {
            self.cleared();
        }
        if let Err(e) = self.recount_if_reopened() {
            tracing::warn!(error = %e, "recounting the store after its index was reopened");
        }
        self.noted_failure(r)
    }

    /// A write succeeded: the write failure ends if the filesystem has room again
    /// (specs/store.md §7.1), not while small writes fit and large ones fail.
    fn cleared(&self) {
        if self.reserve.as_ref().is_none_or(|r| r.roomy()) {
            self.condition.cleared();
        }
    }

    /// Rebuilds the counters of §3 from the index if the backend opened its database
    /// again since they were last built (its batches after the last flush are gone).
    pub(crate) fn recount_if_reopened(&self) -> Result<(), StoreError> {
        let generation = self.backend.generation();
        if self.generation.load(Ordering::Acquire) == generation {
            return Ok(());
        }
        let (fresh, _) = self.count_index()?;
        let mut st = self.lock();
        st.blocks = fresh.blocks;
        st.logical = fresh.logical;
        st.files = fresh.files;
        st.artifacts = fresh.artifacts;
        st.pinned = fresh.pinned;
        st.clock = st.clock.max(fresh.clock);
        self.generation.store(generation, Ordering::Release);
        tracing::info!(path = %self.path.display(), "store counters rebuilt after its index was reopened");
        Ok(())
    }

    pub(crate) fn pack_err(&self, op: &'static str) -> impl Fn(io::Error) -> StoreError + '_ {
        move |source| StoreError::Backend {
            op,
            path: self
                .packs
                .as_ref()
                .map(|p| p.dir().to_path_buf())
                .unwrap_or_default(),
            source,
        }
    }

    /// Makes everything written so far durable: pack files first, then the index.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.before_index_write();
        let r = match &self.packs {
            Some(p) => p.sync().map_err(self.pack_err("flush")),
            None => Ok(()),
        }
        .and_then(|()| self.backend.flush().map_err(self.err("flush")));
        self.noted_failure(r)
    }

    /// Index values for `blocks`: their locations after appending them to the current
    /// pack (LZ4-compressed when the block carries an LZ4 form), or the raw bytes
    /// themselves when there are no packs.
    pub(crate) fn block_values(&self, blocks: &[&Block]) -> Result<Vec<Bytes>, StoreError> {
        match &self.packs {
            None => Ok(blocks.iter().map(|b| b.bytes().clone()).collect()),
            Some(p) => {
                let encoded: Vec<Encoded> = blocks.iter().map(|b| b.encoded()).collect();
                let len = encoded.iter().map(|e| e.stored_len() as u64).sum();
                self.room_for(len, p.dir())?;
                let locs =
                    self.noted_failure(p.append(&encoded).map_err(self.pack_err("write")))?;
                self.cleared();
                Ok(locs.into_iter().map(|l| Bytes::from(l.encode())).collect())
            }
        }
    }

    pub(crate) fn files_err(&self, op: &'static str) -> impl Fn(io::Error) -> StoreError + '_ {
        move |source| StoreError::Backend {
            op,
            path: self.files.dir().map(Path::to_path_buf).unwrap_or_default(),
            source,
        }
    }

    /// Length of the stored block `id` (tag included) from its index entry or its
    /// locator in a kept file that is present, without reading it.
    pub(crate) fn stored_len(&self, id: &BlockId) -> Result<Option<u32>, StoreError> {
        let v = self
            .backend
            .get(&keys::id_key(keys::BLOCK, id.as_bytes()))
            .map_err(self.err("read"))?;
        if let Some(v) = v {
            return Ok(Some(match &self.packs {
                Some(_) => Loc::decode(&v).map_or(0, |l| l.block_len()),
                None => v.len() as u32,
            }));
        }
        Ok(self.leaf_loc(id)?.map(|(_, l)| l.len + 1))
    }

    /// A locator of leaf `id` in a kept file that is present (not verified).
    pub(crate) fn leaf_loc(&self, id: &BlockId) -> Result<Option<(BlockId, LeafLoc)>, StoreError> {
        let mut found = Vec::new();
        self.backend
            .scan_prefix(&keys::id_key(keys::LEAF, id.as_bytes()), &mut |k, v| {
                if let (Some(file), Some(loc)) = (k.get(33..65), LeafLoc::decode(v)) {
                    let mut b = [0u8; 32];
                    b.copy_from_slice(file);
                    found.push((BlockId::from_bytes(b), loc));
                }
                if found.len() >= 8 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .map_err(self.err("read"))?;
        Ok(found
            .into_iter()
            .find(|(file, _)| self.files.contains(file)))
    }

    /// The reference entry of kept file `root`.
    pub(crate) fn file_ref(&self, root: &BlockId) -> Result<Option<FileRef>, StoreError> {
        let key = keys::id_key(keys::FILE, root.as_bytes());
        match self.backend.get(&key).map_err(self.err("read"))? {
            None => Ok(None),
            Some(v) => FileRef::decode(&v)
                .map(Some)
                .ok_or_else(|| self.corrupt_index(&key, "file entry is not 12 bytes")),
        }
    }

    pub(crate) fn corrupt_index(&self, key: &[u8], reason: &'static str) -> StoreError {
        self.counters.corruptions.fetch_add(1, Ordering::Relaxed);
        StoreError::CorruptIndex {
            key: hex_key(key),
            reason,
        }
    }

    pub(crate) fn ref_entry(&self, id: &BlockId) -> Result<Option<RefEntry>, StoreError> {
        let key = keys::id_key(keys::REF, id.as_bytes());
        match self.backend.get(&key).map_err(self.err("read"))? {
            None => Ok(None),
            Some(v) => RefEntry::decode(&v)
                .map(Some)
                .ok_or_else(|| self.corrupt_index(&key, "reference count is not 8 bytes")),
        }
    }

    pub(crate) fn loose_entry(&self, id: &BlockId) -> Result<Option<LooseEntry>, StoreError> {
        let key = keys::id_key(keys::LOOSE, id.as_bytes());
        match self.backend.get(&key).map_err(self.err("read"))? {
            None => Ok(None),
            Some(v) => LooseEntry::decode(&v)
                .map(Some)
                .ok_or_else(|| self.corrupt_index(&key, "loose mark is not 20 bytes")),
        }
    }

    /// Whether a live session has put block `id` (GC must keep it).
    pub(crate) fn is_protected(&self, st: &State, id: &BlockId) -> bool {
        st.protected.contains_key(id)
    }

    /// Stored form of block `id` (undecoded, unverified), counting the read and a miss.
    /// With packs, an index entry that does not decode or points past a pack's end
    /// yields empty bytes, which fail verification and are handled as corruption.
    pub(crate) fn read_raw(&self, id: &BlockId) -> Result<Option<Raw>, StoreError> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let index = self
            .backend
            .get(&keys::id_key(keys::BLOCK, id.as_bytes()))
            .map_err(self.err("read"))?;
        let Some(index) = index else {
            if let Some((file, loc)) = self.leaf_loc(id)? {
                // A short file reads as empty bytes, which fail verification.
                let data = self
                    .files
                    .read_at(&file, loc.offset, loc.len)
                    .map_err(self.files_err("read"))?
                    .unwrap_or_default();
                let mut bytes = Vec::with_capacity(data.len() + 1);
                if !data.is_empty() || loc.len == 0 {
                    bytes.push(rdht_core::block::LEAF_TAG);
                    bytes.extend_from_slice(&data);
                }
                return Ok(Some(Raw {
                    encoded: Encoded::Raw(bytes.into()),
                    origin: Origin::File(file),
                }));
            }
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        let encoded = match &self.packs {
            None => Encoded::Raw(index.clone()),
            Some(p) => match Loc::decode(&index) {
                None => Encoded::Raw(Bytes::new()),
                Some(loc) => loc.encoded(
                    p.read(&loc)
                        .map_err(self.pack_err("read"))?
                        .unwrap_or_default(),
                ),
            },
        };
        Ok(Some(Raw {
            encoded,
            origin: Origin::Index(index),
        }))
    }

    /// A stored block failed its check: log it, count it and remove its bytes so it is
    /// never returned. Its reference entry stays: the artifacts holding it are now
    /// incomplete until the block is put again.
    pub(crate) fn remove_corrupt(
        &self,
        id: &BlockId,
        origin: &Origin,
        e: &dyn std::fmt::Display,
    ) -> Result<(), StoreError> {
        let index = match origin {
            Origin::Index(index) => index,
            Origin::File(file) => return self.drop_file(file, e),
        };
        let mut st = self.lock();
        let bkey = keys::id_key(keys::BLOCK, id.as_bytes());
        let now = self.backend.get(&bkey).map_err(self.err("read"))?;
        if now.as_ref() != Some(index) {
            // Moved (compaction) or replaced since it was read: not this entry's fault.
            return Ok(());
        }
        tracing::error!(block = %id, error = %e, path = %self.path.display(),
            "corrupt block in store; removing it");
        self.counters.corruptions.fetch_add(1, Ordering::Relaxed);
        let loose = self.loose_entry(id).unwrap_or(None);
        let mut batch = Batch::new();
        batch.remove(keys::id_key(keys::BLOCK, id.as_bytes()));
        let referenced = self.ref_entry(id).unwrap_or(None).is_some();
        if !referenced {
            batch.remove(keys::id_key(keys::LOOSE, id.as_bytes()));
        }
        self.apply(batch)?;
        if let (Some(l), false) = (loose, referenced) {
            st.blocks -= 1;
            st.logical -= u64::from(l.len);
        }
        Ok(())
    }

    /// A kept file failed verification: log it, count it and remove it so it is never
    /// read again. Its `"f"` entry and locators stay: the artifacts holding it are
    /// incomplete until a fetch or an ingest of the same content installs it again.
    pub(crate) fn drop_file(
        &self,
        root: &BlockId,
        e: &dyn std::fmt::Display,
    ) -> Result<(), StoreError> {
        let _st = self.lock();
        tracing::error!(file = %root, error = %e, path = %self.path.display(),
            "kept file in store was modified; removing it");
        self.counters.corruptions.fetch_add(1, Ordering::Relaxed);
        self.verified.forget(root);
        self.files.remove(root).map_err(self.files_err("remove"))
    }

    /// Stores blocks in one atomic batch with loose marks for `session`. Returns how
    /// many were new to the index.
    pub(crate) fn put_blocks(&self, session: u64, blocks: &[Block]) -> Result<u64, StoreError> {
        // Compressed before the lock, so concurrent puts do not queue behind it; a
        // block that turns out to be stored already costs the work for nothing.
        let compressed: Vec<Block>;
        let blocks = if self.packs.is_some() {
            compressed = blocks.iter().map(|b| b.clone().compressed()).collect();
            &compressed[..]
        } else {
            blocks
        };
        let mut st = self.lock();
        let mut batch = Batch::new();
        let mut writes: Vec<&Block> = Vec::new();
        let mut new = 0u64;
        let mut new_bytes = 0u64;
        let mut seen = HashSet::new();
        for block in blocks {
            let id = block.id();
            if !seen.insert(id) {
                continue;
            }
            if session != 0
                && st
                    .sessions
                    .get_mut(&session)
                    .is_some_and(|ids| ids.insert(id))
            {
                *st.protected.entry(id).or_insert(0) += 1;
            }
            let bkey = keys::id_key(keys::BLOCK, id.as_bytes());
            let len = block.bytes().len() as u32;
            let held = self.ref_entry(&id)?.is_some();
            let loose = if held { None } else { self.loose_entry(&id)? };
            if held || loose.is_some() {
                // Already accounted for; re-put only if its bytes were lost (repair).
                if !self.backend.contains(&bkey).map_err(self.err("read"))? {
                    writes.push(block);
                }
                continue;
            }
            let mark = LooseEntry {
                boot: self.boot,
                session,
                len,
            };
            batch.put(keys::id_key(keys::LOOSE, id.as_bytes()), mark.encode());
            writes.push(block);
            new += 1;
            new_bytes += u64::from(len);
        }
        let values = self.block_values(&writes)?;
        for (block, value) in writes.iter().zip(values) {
            batch.put(keys::id_key(keys::BLOCK, block.id().as_bytes()), value);
        }
        self.apply(batch)?;
        st.blocks += new;
        st.logical += new_bytes;
        Ok(new)
    }

    fn set_format(&self) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put(
            keys::META_FORMAT.to_vec(),
            keys::FORMAT_VERSION.to_le_bytes().to_vec(),
        );
        self.apply(batch)
    }

    /// Runs at open: checks the format, starts a new boot, reclaims loose blocks of
    /// earlier boots (left by crashed or abandoned ingests and fetches) and rebuilds
    /// the counters from the index.
    fn recover(&mut self) -> Result<(), StoreError> {
        let b = &self.backend;
        let found = match b.get(keys::META_FORMAT).map_err(self.err("open"))? {
            None => None,
            Some(v) => Some(
                <[u8; 4]>::try_from(&v[..])
                    .map(u32::from_le_bytes)
                    .map_err(|_| self.corrupt_index(keys::META_FORMAT, "not 4 bytes"))?,
            ),
        };
        match found {
            // A new store, or format 1 or 2: format 3 without kept files (format 1 also
            // without LZ4 Locs). It is marked 3 before anything is written, so older
            // versions refuse it instead of reading its artifacts as incomplete.
            None => self.set_format()?,
            Some(v) if keys::FORMAT_UPGRADABLE.contains(&v) => {
                tracing::info!(from = v, to = keys::FORMAT_VERSION, path = %self.path.display(),
                    "upgrading store format; artifacts stored before keep their files in packs");
                self.set_format()?;
            }
            Some(keys::FORMAT_VERSION) => {}
            Some(found) => {
                return Err(StoreError::Format {
                    path: self.path.clone(),
                    found,
                    expected: keys::FORMAT_VERSION,
                });
            }
        }
        let boot = match b.get(keys::META_BOOT).map_err(self.err("open"))? {
            None => 0,
            Some(v) => keys::decode_u64(&v)
                .ok_or_else(|| self.corrupt_index(keys::META_BOOT, "not 8 bytes"))?,
        } + 1;
        self.boot = boot;
        let mut batch = Batch::new();
        batch.put(keys::META_BOOT.to_vec(), boot.to_le_bytes().to_vec());
        self.apply(batch)?;

        // Reclaim loose blocks of earlier boots.
        let mut stale = Vec::new();
        let mut bad = None;
        b.scan_prefix(&[keys::LOOSE], &mut |k, v| {
            match (keys::id_after_prefix(k), LooseEntry::decode(v)) {
                (Some(id), Some(_)) => stale.push(id),
                _ => bad = Some(k.to_vec()),
            }
            ControlFlow::Continue(())
        })
        .map_err(self.err("open"))?;
        if let Some(k) = bad {
            return Err(self.corrupt_index(&k, "loose mark key or value has the wrong length"));
        }
        let mut batch = Batch::new();
        for id in &stale {
            batch.remove(keys::id_key(keys::LOOSE, id.as_bytes()));
            if self.ref_entry(id)?.is_none() {
                batch.remove(keys::id_key(keys::BLOCK, id.as_bytes()));
            }
        }
        if !stale.is_empty() {
            tracing::info!(blocks = stale.len(), path = %self.path.display(),
                "reclaiming loose blocks left by an earlier run");
        }
        self.apply(batch)?;
        self.flush()?;

        let (st, kept) = self.count_index()?;
        // Files installed by a registration that never wrote its batch.
        for root in self.files.list().map_err(self.files_err("open"))? {
            if !kept.contains(&root) {
                self.files.remove(&root).map_err(self.files_err("open"))?;
            }
        }
        let st = State {
            compact_pending: true,
            ..st
        };
        *self.state.get_mut().unwrap_or_else(PoisonError::into_inner) = st;
        Ok(())
    }

    /// The counters of §3 and the kept files' roots, rebuilt from the index: at open,
    /// and after the backend opened its database again (a write error, §7.1).
    fn count_index(&self) -> Result<(State, HashSet<BlockId>), StoreError> {
        let b = &self.backend;
        let mut st = State::default();
        let mut bad = None;
        b.scan_prefix(&[keys::REF], &mut |k, v| {
            match (keys::id_after_prefix(k), RefEntry::decode(v)) {
                (Some(_), Some(r)) => {
                    st.blocks += 1;
                    st.logical += u64::from(r.len);
                }
                _ => bad = Some(k.to_vec()),
            }
            ControlFlow::Continue(())
        })
        .map_err(self.err("open"))?;
        // Loose blocks (none at open, after recovery): the live sessions' blocks.
        let mut loose = Vec::new();
        b.scan_prefix(&[keys::LOOSE], &mut |k, v| {
            if let (Some(id), Some(l)) = (keys::id_after_prefix(k), LooseEntry::decode(v)) {
                loose.push((id, l.len));
            }
            ControlFlow::Continue(())
        })
        .map_err(self.err("open"))?;
        for (id, len) in loose {
            if self.ref_entry(&id)?.is_none() {
                st.blocks += 1;
                st.logical += u64::from(len);
            }
        }
        let mut kept = std::collections::HashSet::new();
        b.scan_prefix(&[keys::FILE], &mut |k, v| {
            match (keys::id_after_prefix(k), FileRef::decode(v)) {
                (Some(root), Some(f)) => {
                    st.files += 1;
                    st.logical += f.size;
                    kept.insert(root);
                }
                _ => bad = Some(k.to_vec()),
            }
            ControlFlow::Continue(())
        })
        .map_err(self.err("open"))?;
        b.scan_prefix(&[keys::ARTIFACT], &mut |k, v| {
            match (keys::id_after_prefix(k), keys::ArtifactMeta::decode(v)) {
                (Some(_), Some(m)) => {
                    st.artifacts += 1;
                    if m.pinned {
                        st.pinned += m.stored_bytes;
                    }
                }
                _ => bad = Some(k.to_vec()),
            }
            ControlFlow::Continue(())
        })
        .map_err(self.err("open"))?;
        b.scan_prefix(&[keys::USED], &mut |k, v| {
            match keys::decode_u64(v) {
                Some(t) => st.clock = st.clock.max(t + 1),
                None => bad = Some(k.to_vec()),
            }
            ControlFlow::Continue(())
        })
        .map_err(self.err("open"))?;
        if let Some(k) = bad {
            return Err(self.corrupt_index(&k, "index entry has the wrong length or version"));
        }
        Ok((st, kept))
    }
}
