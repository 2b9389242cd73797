//! Which kept files this open of the store has verified whole, and as what: each one's
//! inode, size and modification time when its bytes last hashed to its DAG
//! (specs/store.md §4.5.1). An export that places a kept file by hard link or reflink
//! skips hashing it again while the file still has that identity; any write to a file
//! changes its modification time, so a file modified since is hashed (and dropped as
//! modified) at the next export.
//!
//! Owns: [`Stamp`] and [`Verified`] (in memory only, empty at every open). Does not
//! own: the hashing (`artifact.rs`, `Store::verify_file`) or the files (`files.rs`).
//!
//! Invariant: a stamp is recorded only after the file's bytes hashed to its DAG, and
//! only for a modification time at least [`SETTLED`] before the recording, unless the
//! store set that time itself right after the check (a hard-linked export), so that a
//! write in the same timestamp tick as a recorded check cannot go unseen.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rdht_core::BlockId;

/// How old a modification time must be, when a check is recorded, for the check to be
/// reused (file timestamps are only as fine as the kernel's clock tick).
pub(crate) const SETTLED: Duration = Duration::from_secs(2);

/// What identifies one version of a file's bytes on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_s: i64,
    mtime_ns: i64,
}

impl Stamp {
    /// The stamp of a file from its metadata.
    pub(crate) fn of(m: &Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_s: m.mtime(),
            mtime_ns: m.mtime_nsec(),
        }
    }

    /// Whether the modification time is at least [`SETTLED`] before `now`.
    fn settled(&self, now: SystemTime) -> bool {
        let Ok(now) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let mtime = self.mtime_s as i128 * 1_000_000_000 + self.mtime_ns as i128;
        now.as_nanos() as i128 - mtime >= SETTLED.as_nanos() as i128
    }
}

/// The kept files verified whole since the store was opened, by file root.
#[derive(Debug, Default)]
pub(crate) struct Verified(Mutex<HashMap<BlockId, Stamp>>);

impl Verified {
    /// Whether file `root` was verified with exactly this stamp.
    pub(crate) fn holds(&self, root: &BlockId, stamp: &Stamp) -> bool {
        self.lock().get(root) == Some(stamp)
    }

    /// Records that file `root` hashed to its DAG with `stamp`, read before the check:
    /// kept only when its modification time had settled.
    pub(crate) fn checked(&self, root: BlockId, stamp: Stamp) {
        if stamp.settled(SystemTime::now()) {
            self.lock().insert(root, stamp);
        } else {
            self.lock().remove(&root);
        }
    }

    /// Records `stamp` for file `root` whose modification time the store itself just
    /// set, right after the file hashed to its DAG.
    pub(crate) fn touched(&self, root: BlockId, stamp: Stamp) {
        self.lock().insert(root, stamp);
    }

    /// Forgets file `root` (dropped as modified, or removed).
    pub(crate) fn forget(&self, root: &BlockId) {
        self.lock().remove(root);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BlockId, Stamp>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_settled_or_self_set_time_is_kept_and_any_change_misses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let root = BlockId::from_bytes([1; 32]);
        let v = Verified::default();
        let fresh = Stamp::of(&std::fs::metadata(&p).unwrap());
        v.checked(root, fresh);
        assert!(!v.holds(&root, &fresh), "written just now: not settled");
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let settled = Stamp::of(&std::fs::metadata(&p).unwrap());
        v.checked(root, settled);
        assert!(v.holds(&root, &settled));
        std::fs::write(&p, b"abd").unwrap();
        let changed = Stamp::of(&std::fs::metadata(&p).unwrap());
        assert!(!v.holds(&root, &changed), "a write changes the stamp");
        v.touched(root, changed);
        assert!(v.holds(&root, &changed));
        v.forget(&root);
        assert!(!v.holds(&root, &changed));
    }
}
