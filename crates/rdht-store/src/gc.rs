//! Pins and garbage collection (specs/store.md §6).
//!
//! Owns: [`Store::pin`]/[`Store::unpin`], [`Store::gc`], [`Store::gc_to`],
//! [`Store::remove_artifact`] and pack compaction. GC first reclaims loose blocks that
//! no live session has put, then evicts unpinned artifacts least recently used first
//! until the logical size is at most the target. Evicting an artifact decrements the
//! reference count of each block on its block list; a block whose count reaches zero is
//! deleted unless a live session has put it (then it stays, loose). Eviction is one
//! atomic batch; compaction then empties mostly-dead packs (specs/store.md §6). Does
//! not own: deciding what to pin (the daemon pins what it built).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use rdht_core::{Block, BlockId};

use crate::backend::Batch;
use crate::error::StoreError;
use crate::keys::{self, ArtifactMeta, FileRef, LooseEntry, RefEntry};
use crate::packs::{Loc, Packs};
use crate::store::{Inner, State, Store};

/// What one GC run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Artifacts evicted, least recently used first.
    pub evicted: Vec<BlockId>,
    /// Blocks deleted (loose or no longer referenced).
    pub blocks_removed: u64,
    /// Sum of their lengths.
    pub bytes_freed: u64,
    /// Logical bytes after the run (may exceed the target if pins hold the rest).
    pub logical_bytes: u64,
    /// Pack files deleted (their live blocks, if any, moved to the current pack).
    pub packs_removed: u64,
}

/// Changes a GC run makes to the counters, applied once its batch is written.
#[derive(Debug, Default)]
struct Delta {
    blocks: u64,
    bytes: u64,
    /// Bytes of blocks removed from packs (dead pack bytes, for compaction).
    block_bytes: u64,
    files: u64,
    artifacts: u64,
    pinned: u64,
    /// Kept files whose last holder went: deleted once the batch is durable.
    unlink: Vec<BlockId>,
}

/// Pending reference counts of one run: `None` means the entry goes.
#[derive(Default)]
struct Overlay {
    blocks: HashMap<BlockId, Option<RefEntry>>,
    files: HashMap<BlockId, Option<FileRef>>,
}

impl Store {
    /// Pins artifact `root`: GC never evicts it.
    pub fn pin(&self, root: &BlockId) -> Result<(), StoreError> {
        self.set_pin(root, true)
    }

    /// Unpins artifact `root`: GC may evict it when the store is over its cap.
    pub fn unpin(&self, root: &BlockId) -> Result<(), StoreError> {
        self.set_pin(root, false)
    }

    fn set_pin(&self, root: &BlockId, pinned: bool) -> Result<(), StoreError> {
        let inner = &self.inner;
        let mut st = inner.lock();
        let key = keys::id_key(keys::ARTIFACT, root.as_bytes());
        let v = inner
            .backend
            .get(&key)
            .map_err(inner.err("read"))?
            .ok_or(StoreError::UnknownArtifact { root: *root })?;
        let mut meta = ArtifactMeta::decode(&v)
            .ok_or_else(|| inner.corrupt_index(&key, "artifact entry does not decode"))?;
        if meta.pinned == pinned {
            return Ok(());
        }
        meta.pinned = pinned;
        let mut batch = Batch::new();
        batch.put(key, meta.encode());
        inner.apply(batch)?;
        inner.flush()?;
        if pinned {
            st.pinned += meta.stored_bytes;
        } else {
            st.pinned -= meta.stored_bytes;
        }
        Ok(())
    }

    /// Runs GC to the configured cap ([`crate::Config::max_bytes`]); without a cap it
    /// only reclaims unprotected loose blocks.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        self.gc_to(self.inner.config.max_bytes.unwrap_or(u64::MAX))
    }

    /// Reclaims unprotected loose blocks, then evicts unpinned artifacts least recently
    /// used first until logical bytes are at most `target`.
    pub fn gc_to(&self, target: u64) -> Result<GcReport, StoreError> {
        let inner = &self.inner;
        let mut st = inner.lock();
        let mut batch = Batch::new();
        let mut delta = Delta::default();
        let mut report = GcReport::default();
        inner.reclaim_loose(&st, &mut batch, &mut delta, &mut report)?;

        if st.logical - delta.bytes > target {
            let mut candidates = Vec::new();
            let mut bad = None;
            inner
                .backend
                .scan_prefix(&[keys::ARTIFACT], &mut |k, v| {
                    match (keys::id_after_prefix(k), ArtifactMeta::decode(v)) {
                        (Some(root), Some(m)) if !m.pinned => candidates.push((0, root, m)),
                        (Some(_), Some(_)) => {}
                        _ => bad = Some(k.to_vec()),
                    }
                    ControlFlow::Continue(())
                })
                .map_err(inner.err("read"))?;
            if let Some(k) = bad {
                return Err(inner.corrupt_index(&k, "artifact entry does not decode"));
            }
            for c in &mut candidates {
                c.0 = self.used_or_zero(&c.1)?;
            }
            candidates.sort_unstable_by_key(|c| (c.0, c.1));
            let mut overlay = Overlay::default();
            for (_, root, meta) in candidates {
                if st.logical - delta.bytes <= target {
                    break;
                }
                inner.evict(
                    &st,
                    &root,
                    &meta,
                    &mut overlay,
                    &mut batch,
                    &mut delta,
                    &mut report,
                )?;
                report.evicted.push(root);
            }
            put_overlay(overlay, &mut batch);
        }
        commit(inner, &mut st, batch, &delta)?;
        inner
            .counters
            .evictions
            .fetch_add(report.evicted.len() as u64, Ordering::Relaxed);
        if let Some(packs) = &inner.packs
            && (st.compact_pending || st.dead_bytes >= inner.config.pack_size / 2)
        {
            inner.compact(&mut st, packs, &mut report)?;
            st.compact_pending = false;
            st.dead_bytes = 0;
        }
        report.logical_bytes = st.logical;
        if !report.evicted.is_empty() || report.blocks_removed > 0 {
            tracing::info!(
                evicted = report.evicted.len(),
                blocks = report.blocks_removed,
                bytes = report.bytes_freed,
                "store gc"
            );
        }
        Ok(report)
    }

    /// Removes artifact `root` even if it is pinned, reclaiming blocks no other
    /// artifact holds. Returns false if it was not registered.
    pub fn remove_artifact(&self, root: &BlockId) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let mut st = inner.lock();
        let key = keys::id_key(keys::ARTIFACT, root.as_bytes());
        let Some(v) = inner.backend.get(&key).map_err(inner.err("read"))? else {
            return Ok(false);
        };
        let meta = ArtifactMeta::decode(&v)
            .ok_or_else(|| inner.corrupt_index(&key, "artifact entry does not decode"))?;
        let mut batch = Batch::new();
        let mut delta = Delta::default();
        let mut report = GcReport::default();
        let mut overlay = Overlay::default();
        inner.evict(
            &st,
            root,
            &meta,
            &mut overlay,
            &mut batch,
            &mut delta,
            &mut report,
        )?;
        put_overlay(overlay, &mut batch);
        commit(inner, &mut st, batch, &delta)?;
        Ok(true)
    }

    fn used_or_zero(&self, root: &BlockId) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let key = keys::id_key(keys::USED, root.as_bytes());
        Ok(inner
            .backend
            .get(&key)
            .map_err(inner.err("read"))?
            .and_then(|v| keys::decode_u64(&v))
            .unwrap_or(0))
    }

    /// Called after a registration: when the store is over its cap, runs GC down to
    /// the low-water mark (90% of the cap), so that a full store does not run GC on
    /// every registration. A GC failure is logged, not returned: the registration
    /// itself succeeded.
    pub(crate) fn gc_if_over_cap(&self) {
        let Some(cap) = self.inner.config.max_bytes else {
            return;
        };
        if self.inner.lock().logical <= cap {
            return;
        }
        if let Err(e) = self.gc_to(cap - cap / 10) {
            tracing::warn!(error = %e, "store gc after registration failed");
        }
    }
}

fn put_overlay(overlay: Overlay, batch: &mut Batch) {
    for (id, r) in overlay.blocks {
        let key = keys::id_key(keys::REF, id.as_bytes());
        match r {
            Some(r) => batch.put(key, r.encode()),
            None => batch.remove(key),
        }
    }
    for (id, r) in overlay.files {
        let key = keys::id_key(keys::FILE, id.as_bytes());
        match r {
            Some(r) => batch.put(key, r.encode()),
            None => batch.remove(key),
        }
    }
}

/// Applies a run's batch, makes it durable, deletes the kept files it released and
/// updates the counters. Runs under the store lock, so a registration never sees a
/// file whose entry is gone still on disk, or the reverse.
fn commit(inner: &Inner, st: &mut State, batch: Batch, d: &Delta) -> Result<(), StoreError> {
    inner.apply(batch)?;
    inner.flush()?;
    for root in &d.unlink {
        // A file a target directory links to keeps its data there: unlinking the
        // store's name never changes the target's file.
        inner.verified.forget(root);
        inner
            .files
            .remove(root)
            .map_err(inner.files_err("remove"))?;
    }
    st.blocks -= d.blocks;
    st.logical -= d.bytes;
    st.dead_bytes += d.block_bytes;
    st.files -= d.files;
    st.artifacts -= d.artifacts;
    st.pinned -= d.pinned;
    Ok(())
}

/// Blocks moved per batch while compacting a pack (bounds memory to ~4 MiB).
const COMPACT_CHUNK: usize = 256;

impl Inner {
    /// Deletes every pack file (but the current one) less than half of whose bytes are
    /// live, first moving its live blocks to the current pack. Each moved chunk is made
    /// durable in its new pack before the index points to it, and the index is flushed
    /// before the old pack is deleted, so a crash at any point leaves every index entry
    /// pointing at durable bytes.
    fn compact(
        &self,
        st: &mut State,
        packs: &Packs,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let current = packs.current();
        let mut live: HashMap<u32, Vec<(BlockId, Loc)>> = HashMap::new();
        self.backend
            .scan_prefix(&[keys::BLOCK], &mut |k, v| {
                // An entry that does not decode is left for reads to report as corrupt.
                if let (Some(id), Some(loc)) = (keys::id_after_prefix(k), Loc::decode(v)) {
                    live.entry(loc.pack).or_default().push((id, loc));
                }
                ControlFlow::Continue(())
            })
            .map_err(self.err("read"))?;
        for n in packs.list().map_err(self.pack_err("list"))? {
            if n == current {
                continue;
            }
            let size = std::fs::metadata(packs.path(n)).map_or(0, |m| m.len());
            let entries = live.remove(&n).unwrap_or_default();
            let live_bytes: u64 = entries.iter().map(|(_, l)| u64::from(l.len)).sum();
            if live_bytes * 2 >= size && live_bytes > 0 {
                continue;
            }
            for chunk in entries.chunks(COMPACT_CHUNK) {
                self.move_blocks(st, packs, chunk)?;
            }
            self.flush()?;
            packs.remove(n).map_err(self.pack_err("delete"))?;
            report.packs_removed += 1;
        }
        Ok(())
    }

    /// Copies `entries` to the current pack and points the index at the copies. A block
    /// that fails verification is dropped as corrupt instead.
    fn move_blocks(
        &self,
        st: &mut State,
        packs: &Packs,
        entries: &[(BlockId, Loc)],
    ) -> Result<(), StoreError> {
        let mut good = Vec::with_capacity(entries.len());
        let mut batch = Batch::new();
        for (id, loc) in entries {
            let bytes = packs.read(loc).map_err(self.pack_err("read"))?;
            match bytes.map(|b| Block::from_encoded(*id, loc.encoded(b))) {
                // Blocks stored raw by earlier versions are compressed on the move.
                Some(Ok(block)) => good.push(block.compressed()),
                other => {
                    let why = match other {
                        Some(Err(e)) => e.to_string(),
                        _ => "its bytes are missing from the pack".to_string(),
                    };
                    tracing::error!(block = %id, error = %why, "corrupt block found while compacting; removing it");
                    self.counters.corruptions.fetch_add(1, Ordering::Relaxed);
                    batch.remove(keys::id_key(keys::BLOCK, id.as_bytes()));
                    if self.ref_entry(id)?.is_none()
                        && let Some(l) = self.loose_entry(id)?
                    {
                        batch.remove(keys::id_key(keys::LOOSE, id.as_bytes()));
                        st.blocks -= 1;
                        st.logical -= u64::from(l.len);
                    }
                }
            }
        }
        let refs: Vec<&Block> = good.iter().collect();
        let values = self.block_values(&refs)?;
        for (block, value) in good.iter().zip(values) {
            batch.put(keys::id_key(keys::BLOCK, block.id().as_bytes()), value);
        }
        packs.sync().map_err(self.pack_err("flush"))?;
        self.apply(batch)
    }

    /// Adds to `batch` the release of artifact `root`'s kept files: each count goes
    /// down; a file whose count reaches zero loses its entry and its leaves' locators,
    /// and is deleted after the batch (specs/store.md §6).
    fn release_files(
        &self,
        root: &BlockId,
        overlay: &mut Overlay,
        batch: &mut Batch,
        delta: &mut Delta,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let mut chunks = Vec::new();
        self.backend
            .scan_prefix(
                &keys::id_key(keys::FILE_LIST, root.as_bytes()),
                &mut |k, v| {
                    chunks.push((k.to_vec(), v.to_vec()));
                    ControlFlow::Continue(())
                },
            )
            .map_err(self.err("read"))?;
        for (key, list) in chunks {
            if list.len() % 32 != 0 {
                return Err(self.corrupt_index(&key, "file list is not a whole number of ids"));
            }
            for chunk in list.chunks_exact(32) {
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(chunk);
                let file = BlockId::from_bytes(bytes);
                let current = match overlay.files.get(&file) {
                    Some(r) => *r,
                    None => self.file_ref(&file)?,
                };
                let Some(r) = current else {
                    continue;
                };
                if r.count > 1 {
                    overlay.files.insert(
                        file,
                        Some(FileRef {
                            count: r.count - 1,
                            size: r.size,
                        }),
                    );
                    continue;
                }
                overlay.files.insert(file, None);
                for leaf in self.file_leaves(&file, r.size) {
                    batch.remove(keys::leaf_key(&leaf, &file));
                }
                delta.unlink.push(file);
                delta.files += 1;
                delta.bytes += r.size;
                report.bytes_freed += r.size;
            }
            batch.remove(key);
        }
        Ok(())
    }

    /// The leaf ids of kept file `file` (`size` bytes), read from its interior blocks.
    /// Stops at an interior block it cannot read: the locators left behind name a file
    /// that is gone, which reads treat as a miss.
    fn file_leaves(&self, file: &BlockId, size: u64) -> Vec<BlockId> {
        let mut v = rdht_core::DagVerifier::new(*file, Some(size), rdht_core::Limits::default());
        let mut leaves = Vec::new();
        if rdht_core::dag::height_for(size) == 0 {
            return vec![*file];
        }
        while let Some(id) = v.next_expected() {
            if let Some((leaf, len)) = v.next_leaf() {
                leaves.push(leaf);
                if v.skip_leaf(len + 1).is_err() {
                    break;
                }
                continue;
            }
            let pushed = match self.read_raw(&id) {
                Ok(Some(raw)) => v.push_encoded(raw.encoded).is_ok(),
                _ => false,
            };
            if !pushed {
                break;
            }
        }
        leaves
    }

    /// Adds to `batch` the removal of every loose block no live session protects.
    fn reclaim_loose(
        &self,
        st: &State,
        batch: &mut Batch,
        delta: &mut Delta,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let mut loose = Vec::new();
        let mut bad = None;
        self.backend
            .scan_prefix(&[keys::LOOSE], &mut |k, v| {
                match (keys::id_after_prefix(k), LooseEntry::decode(v)) {
                    (Some(id), Some(l)) => loose.push((id, l)),
                    _ => bad = Some(k.to_vec()),
                }
                ControlFlow::Continue(())
            })
            .map_err(self.err("read"))?;
        if let Some(k) = bad {
            return Err(self.corrupt_index(&k, "loose mark does not decode"));
        }
        for (id, l) in loose {
            if self.is_protected(st, &id) {
                continue;
            }
            batch.remove(keys::id_key(keys::LOOSE, id.as_bytes()));
            if self.ref_entry(&id)?.is_none() {
                batch.remove(keys::id_key(keys::BLOCK, id.as_bytes()));
                delta.blocks += 1;
                delta.bytes += u64::from(l.len);
                delta.block_bytes += u64::from(l.len);
                report.blocks_removed += 1;
                report.bytes_freed += u64::from(l.len);
            }
        }
        Ok(())
    }

    /// Adds to `batch` the removal of artifact `root` and of the blocks only it holds.
    #[allow(clippy::too_many_arguments)]
    fn evict(
        &self,
        st: &State,
        root: &BlockId,
        meta: &ArtifactMeta,
        overlay: &mut Overlay,
        batch: &mut Batch,
        delta: &mut Delta,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        for n in 0..meta.chunks() {
            let key = keys::list_key(root, n);
            let list = self
                .backend
                .get(&key)
                .map_err(self.err("read"))?
                .ok_or_else(|| self.corrupt_index(&key, "artifact block list chunk is missing"))?;
            if list.len() % 32 != 0 {
                return Err(self.corrupt_index(&key, "block list is not a whole number of ids"));
            }
            for chunk in list.chunks_exact(32) {
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(chunk);
                let id = BlockId::from_bytes(bytes);
                let current = match overlay.blocks.get(&id) {
                    Some(r) => *r,
                    None => self.ref_entry(&id)?,
                };
                let Some(r) = current else {
                    continue;
                };
                if r.count > 1 {
                    overlay.blocks.insert(
                        id,
                        Some(RefEntry {
                            count: r.count - 1,
                            len: r.len,
                        }),
                    );
                    continue;
                }
                overlay.blocks.insert(id, None);
                let loose = self.loose_entry(&id)?;
                if self.is_protected(st, &id) {
                    // A live session still wants it: it stays, as a loose block (I1).
                    if loose.is_none() {
                        let mark = LooseEntry {
                            boot: self.boot,
                            session: 0,
                            len: r.len,
                        };
                        batch.put(keys::id_key(keys::LOOSE, id.as_bytes()), mark.encode());
                    }
                    continue;
                }
                batch.remove(keys::id_key(keys::BLOCK, id.as_bytes()));
                if loose.is_some() {
                    batch.remove(keys::id_key(keys::LOOSE, id.as_bytes()));
                }
                delta.blocks += 1;
                delta.bytes += u64::from(r.len);
                delta.block_bytes += u64::from(r.len);
                report.blocks_removed += 1;
                report.bytes_freed += u64::from(r.len);
            }
            batch.remove(key);
        }
        self.release_files(root, overlay, batch, delta, report)?;
        batch.remove(keys::id_key(keys::ARTIFACT, root.as_bytes()));
        batch.remove(keys::id_key(keys::USED, root.as_bytes()));
        delta.artifacts += 1;
        if meta.pinned {
            delta.pinned += meta.stored_bytes;
        }
        Ok(())
    }
}
