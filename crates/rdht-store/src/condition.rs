//! The store's write condition (specs/store.md §7.1): the last write that failed for a
//! reason of the filesystem (a full disk, a quota, a read-only or failing device), so
//! the daemon can say why nothing is being stored, until a write succeeds again.
//!
//! Owns: [`WriteFailure`], which I/O errors count ([`Condition::failed`]) and what
//! clears them ([`Condition::cleared`], called by the store after an ingest, a
//! registration or a put of new blocks succeeded). Does not own: how the failure is
//! shown (the daemon and the CLI), or the error values themselves (`error.rs`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::error::StoreError;

/// A write of the store that failed for a reason of its filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    /// The error's name, as `errno(3)` spells it: `ENOSPC`, `EDQUOT`, `EROFS`, `EIO`…
    pub errno: String,
    /// The whole error, as the store reported it.
    pub message: String,
    /// The path written to: the index, pack or files directory of the store.
    pub path: PathBuf,
    /// When the first write of this run of failures failed.
    pub first: SystemTime,
    /// When the last one failed.
    pub last: SystemTime,
    /// Writes that failed since a write last succeeded.
    pub failures: u64,
}

/// The store's current write failure, if any.
#[derive(Debug, Default)]
pub(crate) struct Condition(Mutex<Option<WriteFailure>>);

impl Condition {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<WriteFailure>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `e` if it is a write failure of the store's filesystem: any I/O error
    /// of the store's own directories (`Backend`), and a full disk, a quota or a
    /// read-only filesystem met while copying a file into the store (`File`, whose
    /// path names the file, so the failure names `files_dir`).
    pub(crate) fn failed(&self, e: &StoreError, files_dir: &Path) {
        let (path, source) = match e {
            StoreError::Backend { path, source, .. }
                if source.kind() != io::ErrorKind::NotFound =>
            {
                (path.clone(), source)
            }
            StoreError::File { source, .. } if is_filesystem(source.kind()) => {
                (files_dir.to_path_buf(), source)
            }
            _ => return,
        };
        let now = SystemTime::now();
        let mut slot = self.slot();
        let (first, failures) = slot.as_ref().map_or((now, 0), |f| (f.first, f.failures));
        *slot = Some(WriteFailure {
            errno: errno_name(source),
            message: e.to_string(),
            path,
            first,
            last: now,
            failures: failures + 1,
        });
    }

    /// A write succeeded: the failure, if any, is over.
    pub(crate) fn cleared(&self) {
        let mut slot = self.slot();
        if let Some(f) = slot.take() {
            tracing::info!(errno = %f.errno, path = %f.path.display(), failures = f.failures,
                "store writes succeed again");
        }
    }

    /// The current failure.
    pub(crate) fn get(&self) -> Option<WriteFailure> {
        self.slot().clone()
    }
}

/// Kinds that say the filesystem refused a write (rather than a file being gone).
fn is_filesystem(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::StorageFull
            | io::ErrorKind::QuotaExceeded
            | io::ErrorKind::ReadOnlyFilesystem
            | io::ErrorKind::FileTooLarge
    )
}

/// The `errno` name of `e`: from its OS code where it has one, else from its kind
/// (sled hands back its first error as a copy that keeps only the kind).
pub fn errno_name(e: &io::Error) -> String {
    const NAMES: [(i32, &str); 12] = [
        (1, "EPERM"),
        (2, "ENOENT"),
        (5, "EIO"),
        (13, "EACCES"),
        (24, "EMFILE"),
        (27, "EFBIG"),
        (28, "ENOSPC"),
        (30, "EROFS"),
        (36, "ENAMETOOLONG"),
        (122, "EDQUOT"),
        (23, "ENFILE"),
        (117, "EUCLEAN"),
    ];
    if let Some(code) = e.raw_os_error() {
        return NAMES
            .iter()
            .find(|(c, _)| *c == code)
            .map_or_else(|| format!("errno {code}"), |(_, n)| n.to_string());
    }
    match e.kind() {
        io::ErrorKind::StorageFull => "ENOSPC",
        io::ErrorKind::QuotaExceeded => "EDQUOT",
        io::ErrorKind::ReadOnlyFilesystem => "EROFS",
        io::ErrorKind::PermissionDenied => "EACCES",
        io::ErrorKind::FileTooLarge => "EFBIG",
        io::ErrorKind::NotFound => "ENOENT",
        _ => "EIO",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_named_and_cleared_by_a_write() {
        let c = Condition::default();
        let full = StoreError::Backend {
            op: "write",
            path: "/d/packs".into(),
            source: io::Error::from_raw_os_error(28),
        };
        c.failed(&full, Path::new("/d/files"));
        // sled's copy of its first error keeps only the kind.
        let copy = StoreError::Backend {
            op: "flush",
            path: "/d/index".into(),
            source: io::Error::new(io::ErrorKind::StorageFull, "Os { code: 28 }"),
        };
        c.failed(&copy, Path::new("/d/files"));
        let f = c.get().unwrap();
        assert_eq!((f.errno.as_str(), f.failures), ("ENOSPC", 2));
        assert_eq!(f.path, Path::new("/d/index"));
        // A file gone from under an ingest is not the store's filesystem.
        let gone = StoreError::File {
            op: "reading",
            path: "/t/out.rlib".into(),
            source: io::Error::from_raw_os_error(2),
        };
        c.cleared();
        c.failed(&gone, Path::new("/d/files"));
        assert_eq!(c.get(), None);
        let copying = StoreError::File {
            op: "copying into the store",
            path: "/t/out.rlib".into(),
            source: io::Error::from_raw_os_error(122),
        };
        c.failed(&copying, Path::new("/d/files"));
        let f = c.get().unwrap();
        assert_eq!(
            (f.errno.as_str(), f.path.as_path()),
            ("EDQUOT", Path::new("/d/files"))
        );
    }
}
