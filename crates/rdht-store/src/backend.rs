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
//! Write errors: sled 0.34 keeps the first I/O error its log writer meets (a full disk)
//! and fails every later write and flush with it until the database is opened again;
//! reads go on. A [`SledBackend`] whose write failed so opens its database again, at the
//! next write once the filesystem has room, at most once a second: what sled had applied
//! since its last successful flush is lost then, exactly as in a crash, which the store
//! is built to survive (specs/store.md §5.1, §7).
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
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

    /// How many times the backend opened its data again after a write error (losing
    /// what it had not flushed, as a crash would); the store then rebuilds its
    /// counters. Backends that never do stay at 0.
    fn generation(&self) -> u64 {
        0
    }

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
    fn generation(&self) -> u64 {
        (**self).generation()
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

/// How long a sled database whose write failed waits between attempts to open it
/// again.
const REVIVE_EVERY: Duration = Duration::from_secs(1);

/// The on-disk backend: one sled 0.34 tree (the default tree of the database).
pub struct SledBackend {
    /// `None` only after a reopen failed (every call then tries again).
    db: RwLock<Option<sled::Db>>,
    path: PathBuf,
    options: SledOptions,
    /// A write or flush failed with an I/O error, which sled keeps and returns for
    /// every later write: the database must be opened again.
    broken: AtomicBool,
    /// When the last reopen was tried.
    revived: Mutex<Option<Instant>>,
    /// Reopens that succeeded ([`Backend::generation`]).
    reopened: std::sync::atomic::AtomicU64,
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

fn open_sled(path: &Path, options: &SledOptions) -> io::Result<sled::Db> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(options.cache_capacity)
        .segment_size(options.segment_size)
        .mode(if options.low_space {
            sled::Mode::LowSpace
        } else {
            sled::Mode::HighThroughput
        });
    guard("open", || config.open())
}

impl SledBackend {
    /// Opens (creating if needed) the sled database in directory `path`.
    pub fn open(path: &Path, options: &SledOptions) -> io::Result<SledBackend> {
        let db = open_sled(path, options)?;
        Ok(SledBackend {
            db: RwLock::new(Some(db)),
            path: path.to_path_buf(),
            options: options.clone(),
            broken: AtomicBool::new(false),
            revived: Mutex::new(None),
            reopened: std::sync::atomic::AtomicU64::new(0),
            release: LockRelease {
                lock_file: path.join("db"),
                done: false,
            },
        })
    }

    /// The database, for one call.
    fn db(&self) -> io::Result<DbRef<'_>> {
        let g = self.db.read().unwrap_or_else(PoisonError::into_inner);
        if g.is_none() {
            return Err(io::Error::other(format!(
                "the sled database at {} could not be opened again after a write error",
                self.path.display()
            )));
        }
        Ok(DbRef(g))
    }

    /// Runs a write (`apply`, `flush`): first opens the database again if an earlier
    /// write failed and the filesystem has room now; marks it broken when this one
    /// fails with an I/O error.
    fn write<T>(&self, what: &str, f: impl FnOnce(&sled::Db) -> sled::Result<T>) -> io::Result<T> {
        if self.broken.load(Ordering::Acquire) {
            self.revive();
        }
        let db = self.db()?;
        let r = guard(what, || f(db.get()));
        if let Err(e) = &r
            && e.kind() != io::ErrorKind::InvalidData
        {
            self.broken.store(true, Ordering::Release);
        }
        r
    }

    /// Runs a lookup; one that fails while the database is broken (sled fails some
    /// reads after its first write error) opens it again if it can and tries once more.
    fn read<T>(&self, f: impl Fn(&sled::Db) -> sled::Result<T>) -> io::Result<T> {
        let first = {
            let db = self.db()?;
            guard("get", || f(db.get()))
        };
        match first {
            // sled returns the write error it kept: a full disk, a quota, a read-only
            // device (other errors are not worth losing unflushed batches for).
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::StorageFull
                        | io::ErrorKind::QuotaExceeded
                        | io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                self.broken.store(true, Ordering::Release);
                self.revive();
                let db = self.db()?;
                guard("get", || f(db.get()))
            }
            r => r,
        }
    }

    /// Opens the database again after a write error, when the last attempt is more
    /// than [`REVIVE_EVERY`] ago and the filesystem has room for a few log segments.
    fn revive(&self) {
        let room = 4 * self.options.segment_size as u64;
        match free_space(&self.path) {
            Ok(free) if free >= room => {}
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "statvfs");
                return;
            }
        }
        {
            let mut last = self.revived.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < REVIVE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let mut g = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if !self.broken.load(Ordering::Acquire) {
            return; // Another writer revived it meanwhile.
        }
        drop(g.take());
        let mut release = LockRelease {
            lock_file: self.path.join("db"),
            done: false,
        };
        let opened = release
            .wait(SLED_RELEASE_TIMEOUT)
            .and_then(|()| open_sled(&self.path, &self.options));
        match opened {
            Ok(db) => {
                *g = Some(db);
                self.broken.store(false, Ordering::Release);
                self.reopened.fetch_add(1, Ordering::AcqRel);
                tracing::warn!(path = %self.path.display(),
                    "index database opened again after a write error; writes since its last flush are lost, as in a crash");
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e,
                    "could not open the index database again after a write error");
            }
        }
    }
}

/// A read guard on an open database.
struct DbRef<'a>(RwLockReadGuard<'a, Option<sled::Db>>);

impl DbRef<'_> {
    fn get(&self) -> &sled::Db {
        // Invariant: `SledBackend::db` returns a `DbRef` only when the option is `Some`,
        // and it cannot change while this read guard lives.
        self.0.as_ref().expect("checked when the guard was taken")
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let s = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
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
        Ok(self.read(|db| db.get(key))?.map(ivec_bytes))
    }

    fn contains(&self, key: &[u8]) -> io::Result<bool> {
        self.read(|db| db.contains_key(key))
    }

    fn scan_prefix(&self, prefix: &[u8], f: &mut Visitor<'_>) -> io::Result<()> {
        let db = self.db()?;
        guard("scan", || {
            for item in db.get().scan_prefix(prefix) {
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
        self.write("write", |db| db.apply_batch(b))
    }

    fn flush(&self) -> io::Result<()> {
        self.write("flush", |db| db.flush()).map(drop)
    }

    fn size_on_disk(&self) -> io::Result<u64> {
        let db = self.db()?;
        guard("measure", || db.get().size_on_disk())
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn generation(&self) -> u64 {
        self.reopened.load(Ordering::Acquire)
    }

    fn close(self: Box<Self>) -> io::Result<()> {
        self.flush()?;
        let SledBackend {
            db, mut release, ..
        } = *self;
        drop(db.into_inner().unwrap_or_else(PoisonError::into_inner));
        release.wait(SLED_RELEASE_TIMEOUT)
    }
}
