//! Storage backends: the one ordered key-value map the store keeps everything in
//! (specs/store.md §2).
//!
//! Owns: the [`Backend`] trait (get, contains, prefix scan, atomic batch, flush), the
//! in-memory [`MemoryBackend`] and the on-disk [`SledBackend`]. Does not own: what the
//! keys mean (that is `keys.rs`) or any invariant between them (that is `store.rs`).
//!
//! The trait is deliberately small so that tests can wrap a backend and inject faults
//! (a full disk, a failed flush) the way redb's storage-backend trait does.

use std::collections::BTreeMap;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;

/// One write in a [`Batch`]: set `key` to a value, or remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set the key to this value.
    Put(Vec<u8>, Bytes),
    /// Remove the key.
    Remove(Vec<u8>),
}

/// Writes applied atomically: after a crash either all of them are visible or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
    bytes: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Vec<u8>, value: impl Into<Bytes>) {
        let value = value.into();
        self.bytes += key.len() + value.len();
        self.ops.push(Op::Put(key, value));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: Vec<u8>) {
        self.bytes += key.len();
        self.ops.push(Op::Remove(key));
    }

    /// The writes, in order (a later write to the same key wins).
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Key and value bytes in the batch.
    pub fn byte_len(&self) -> usize {
        self.bytes
    }
}

/// Called on each entry of a prefix scan with its key and value.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'a;

/// An ordered map from byte keys to byte values with atomic batches.
///
/// Errors are `io::Error`s so that a full disk or a permission problem keeps its kind;
/// the store adds the path and the operation.
pub trait Backend: Send + Sync + 'static {
    /// The value of `key`, if any.
    fn get(&self, key: &[u8]) -> io::Result<Option<Bytes>>;

    /// Whether `key` has a value.
    fn contains(&self, key: &[u8]) -> io::Result<bool>;

    /// Calls `f` on every entry whose key starts with `prefix`, in key order, until it
    /// returns `Break`. `f` must not call back into the backend.
    fn scan_prefix(&self, prefix: &[u8], f: &mut Visitor<'_>) -> io::Result<()>;

    /// Applies every write of `batch` atomically.
    fn apply(&self, batch: Batch) -> io::Result<()>;

    /// Makes every write applied so far durable.
    fn flush(&self) -> io::Result<()>;

    /// Bytes the backend occupies on disk (for memory: keys plus values).
    fn size_on_disk(&self) -> io::Result<u64>;

    /// Where the data lives, for error messages (`None` for memory).
    fn path(&self) -> Option<&Path>;
}

/// A shared backend: lets a test keep a handle to write behind the store's back.
impl<B: Backend> Backend for Arc<B> {
    fn get(&self, key: &[u8]) -> io::Result<Option<Bytes>> {
        (**self).get(key)
    }
    fn contains(&self, key: &[u8]) -> io::Result<bool> {
        (**self).contains(key)
    }
    fn scan_prefix(&self, prefix: &[u8], f: &mut Visitor<'_>) -> io::Result<()> {
        (**self).scan_prefix(prefix, f)
    }
    fn apply(&self, batch: Batch) -> io::Result<()> {
        (**self).apply(batch)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn size_on_disk(&self) -> io::Result<u64> {
        (**self).size_on_disk()
    }
    fn path(&self) -> Option<&Path> {
        (**self).path()
    }
}

/// A backend in a `BTreeMap`: nothing survives the last clone's drop. Clones share
/// the map. For tests and for nodes that want no disk cache at all.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    map: Arc<RwLock<BTreeMap<Vec<u8>, Bytes>>>,
}

impl MemoryBackend {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `f` on the value of `key` in place, for fault-injection tests that corrupt
    /// stored bytes. Returns false when the key has no value.
    pub fn corrupt(&self, key: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(key) {
            Some(v) => {
                let mut bytes = v.to_vec();
                f(&mut bytes);
                *v = bytes.into();
                true
            }
            None => false,
        }
    }
}

impl Backend for MemoryBackend {
    fn get(&self, key: &[u8]) -> io::Result<Option<Bytes>> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        Ok(map.get(key).cloned())
    }

    fn contains(&self, key: &[u8]) -> io::Result<bool> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        Ok(map.contains_key(key))
    }

    fn scan_prefix(&self, prefix: &[u8], f: &mut Visitor<'_>) -> io::Result<()> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        for (k, v) in map.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            if f(k, v).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: Batch) -> io::Result<()> {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        for op in batch.ops {
            match op {
                Op::Put(k, v) => {
                    map.insert(k, v);
                }
                Op::Remove(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn size_on_disk(&self) -> io::Result<u64> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        Ok(map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum())
    }

    fn path(&self) -> Option<&Path> {
        None
    }
}

/// Tuning for the sled backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SledOptions {
    /// sled's page cache, in bytes.
    pub cache_capacity: u64,
    /// sled's log segment size (a power of two, at most 16 MiB). Values larger than
    /// a quarter of a segment go to separate blob files.
    pub segment_size: usize,
    /// sled's `Mode::LowSpace` (clean log segments more eagerly) instead of
    /// `Mode::HighThroughput`.
    pub low_space: bool,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            cache_capacity: 64 << 20,
            segment_size: 512 << 10,
            low_space: false,
        }
    }
}

/// The on-disk backend: one sled 0.34 tree (the default tree of the database).
pub struct SledBackend {
    db: sled::Db,
    path: PathBuf,
}

impl std::fmt::Debug for SledBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledBackend")
            .field("path", &self.path)
            .finish()
    }
}

impl SledBackend {
    /// Opens (creating if needed) the sled database in directory `path`.
    pub fn open(path: &Path, options: &SledOptions) -> io::Result<SledBackend> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity)
            .segment_size(options.segment_size)
            .mode(if options.low_space {
                sled::Mode::LowSpace
            } else {
                sled::Mode::HighThroughput
            });
        let db = guard("open", || config.open())?;
        Ok(SledBackend {
            db,
            path: path.to_path_buf(),
        })
    }
}

/// Runs a sled call, turning a panic into an `InvalidData` error. sled 0.34 panics on
/// some corrupt files (e.g. "tried to serialize Uninitialized" while recovering a
/// damaged snapshot); the store must return an error instead.
fn guard<T>(what: &str, f: impl FnOnce() -> sled::Result<T>) -> io::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Ok(r?),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sled panicked during {what} (its files are probably corrupt): {msg}"),
            ))
        }
    }
}

/// Wraps sled's value without copying it.
fn ivec_bytes(v: sled::IVec) -> Bytes {
    Bytes::from_owner(v)
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> io::Result<Option<Bytes>> {
        Ok(guard("get", || self.db.get(key))?.map(ivec_bytes))
    }

    fn contains(&self, key: &[u8]) -> io::Result<bool> {
        guard("get", || self.db.contains_key(key))
    }

    fn scan_prefix(&self, prefix: &[u8], f: &mut Visitor<'_>) -> io::Result<()> {
        guard("scan", || {
            for item in self.db.scan_prefix(prefix) {
                let (k, v) = item?;
                if f(&k, &v).is_break() {
                    break;
                }
            }
            Ok(())
        })
    }

    fn apply(&self, batch: Batch) -> io::Result<()> {
        let mut b = sled::Batch::default();
        for op in batch.ops {
            match op {
                Op::Put(k, v) => b.insert(k, &v[..]),
                Op::Remove(k) => b.remove(k),
            }
        }
        guard("write", || self.db.apply_batch(b))
    }

    fn flush(&self) -> io::Result<()> {
        guard("flush", || self.db.flush()).map(drop)
    }

    fn size_on_disk(&self) -> io::Result<u64> {
        guard("measure", || self.db.size_on_disk())
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }
}
