//! Storage backends: the one ordered key-value map the store keeps everything in
//! (specs/store.md §2).
//!
//! Owns: the [`Backend`] trait (get, contains, prefix scan, atomic batch, flush), the
//! in-memory [`MemoryBackend`] and the on-disk [`SledBackend`]. Does not own: what the
//! keys mean (that is `keys.rs`) or any invariant between them (that is `store.rs`).
//!
//! The trait is deliberately small so that tests can wrap a backend and inject faults
//! (a full disk, a failed flush) the way redb's storage-backend trait does.
//!
//! Closing: sled 0.34 has no close call, and its detached I/O threads (log writes,
//! segment truncation) keep clones of its file handle, and so its `flock`, for a
//! while after the last `Db` is dropped. A [`SledBackend`] therefore waits, when it is
//! dropped or [closed](Backend::close), until that lock is free, so that a reopen in
//! the same process never meets a lock held by a database already gone.

use std::collections::BTreeMap;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

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

    /// Flushes and releases the backend. When it returns `Ok`, the same data can be
    /// opened again at once, in this process or another. Dropping a backend releases
    /// it too, but cannot report a failure.
    fn close(self: Box<Self>) -> io::Result<()> {
        self.flush()
    }
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

/// How long a closed sled database may keep its lock before close reports an error.
/// Its I/O threads finish a write or an fsync; seconds are already a sick disk.
pub const SLED_RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// The on-disk backend: one sled 0.34 tree (the default tree of the database).
pub struct SledBackend {
    db: sled::Db,
    path: PathBuf,
    /// Invariant: declared after `db`, so that it is dropped after it (fields drop in
    /// declaration order) and waits for the lock that `db`'s threads still hold.
    release: LockRelease,
}

/// Waits, once, for sled's lock on `<dir>/db` to be released.
struct LockRelease {
    lock_file: PathBuf,
    done: bool,
}

impl LockRelease {
    /// Polls, with a deadline, until the lock on `lock_file` can be taken (and then
    /// releases it at once). A file that is gone holds no lock.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.done = true;
        let file = match std::fs::File::open(&self.lock_file) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(100);
        loop {
            match file.try_lock() {
                Ok(()) => return file.unlock(),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "sled still holds its lock on {} {timeout:?} after the database was closed",
                            self.lock_file.display()
                        ),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }
}

impl Drop for LockRelease {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = self.wait(SLED_RELEASE_TIMEOUT)
        {
            tracing::warn!(error = %e, "closing the sled database");
        }
    }
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
            release: LockRelease {
                lock_file: path.join("db"),
                done: false,
            },
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

    fn close(self: Box<Self>) -> io::Result<()> {
        self.flush()?;
        let SledBackend {
            db, mut release, ..
        } = *self;
        drop(db);
        release.wait(SLED_RELEASE_TIMEOUT)
    }
}
