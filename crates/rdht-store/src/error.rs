//! The store's error type (specs/store.md §7).
//!
//! Owns: [`StoreError`], one enum whose every variant names what failed (a path, a
//! block, an artifact root) and why. Does not own: exit codes or user-facing wording
//! (binaries do that). A cache miss is never an error: it is `Ok(None)` or `false`.

use std::io;
use std::path::PathBuf;

use rdht_core::{BlockError, BlockId, DagError, ManifestError};

/// Something the store could not do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed: disk full, permission denied, I/O error, or sled found its
    /// own files corrupt. `path` is the database directory (empty for memory).
    #[error("store {op} failed at {path}: {source}")]
    Backend {
        /// What the store was doing, e.g. "open", "write", "flush".
        op: &'static str,
        /// The database directory.
        path: PathBuf,
        /// The cause; its kind tells a full disk from a permission problem.
        source: io::Error,
    },
    /// A file being ingested or exported could not be read or written.
    #[error("{op} {path}: {source}")]
    File {
        /// What was being done, e.g. "reading", "creating", "renaming to".
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The store on disk was written by another format version.
    #[error("store at {path} has format version {found}; this build reads {expected}")]
    Format {
        /// The database directory.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// `put_block` was given bytes that are not a valid block or do not hash to the id.
    #[error("refusing block {id}: {source}")]
    InvalidBlock {
        /// The id the bytes were offered as.
        id: BlockId,
        /// What is wrong.
        source: BlockError,
    },
    /// An artifact's DAG is incomplete or does not verify.
    #[error("artifact {root} does not verify: {source}")]
    Dag {
        /// The artifact root.
        root: BlockId,
        /// The first block that is missing or bad.
        source: Box<DagError>,
    },
    /// An artifact's manifest does not decode.
    #[error("artifact {root} has an invalid manifest: {source}")]
    Manifest {
        /// The artifact root.
        root: BlockId,
        /// What is wrong.
        source: Box<ManifestError>,
    },
    /// Files offered for ingest do not form a valid manifest (bad path, duplicate…).
    #[error("cannot ingest: {0}")]
    IngestManifest(#[source] Box<ManifestError>),
    /// A file to ingest is not a regular file.
    #[error("cannot ingest {path}: not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A file changed size while it was being ingested.
    #[error("{path} changed while it was ingested: expected {expected} bytes, read {read}")]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// Its size when ingest started.
        expected: u64,
        /// The bytes actually read.
        read: u64,
    },
    /// An export destination is in the way (e.g. a directory where a file goes).
    #[error("cannot export to {path}: {reason}")]
    Destination {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// `delete_block` on a block that complete artifacts still hold.
    #[error("block {id} is held by {holders} artifact(s); evict them instead")]
    BlockInUse {
        /// The block.
        id: BlockId,
        /// How many artifacts hold it.
        holders: u32,
    },
    /// No complete artifact with this root is registered.
    #[error("no artifact {root} in the store")]
    UnknownArtifact {
        /// The root.
        root: BlockId,
    },
    /// An index entry of the store does not decode; the store was damaged on disk.
    #[error("store index entry {key} is corrupt: {reason}")]
    CorruptIndex {
        /// The key, in hex.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// [`Store::close`](crate::Store::close) while other handles to the store live.
    #[error("cannot close the store at {path}: {handles} other handle(s) still use it")]
    InUse {
        /// The database directory.
        path: PathBuf,
        /// How many other clones (and open sessions) hold it.
        handles: usize,
    },
    /// A block DAG in the store is wider than this platform can count.
    #[error("artifact {root} has more than {max} blocks")]
    TooManyBlocks {
        /// The artifact root.
        root: BlockId,
        /// The limit.
        max: u64,
    },
}

impl StoreError {
    /// True when the cause is a full disk (ENOSPC or EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        self.io_kind() == Some(io::ErrorKind::StorageFull)
            || self.io_kind() == Some(io::ErrorKind::QuotaExceeded)
    }

    /// True when the cause is a permission problem.
    pub fn is_permission_denied(&self) -> bool {
        self.io_kind() == Some(io::ErrorKind::PermissionDenied)
    }

    /// The kind of the underlying I/O error, if there is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            StoreError::Backend { source, .. } | StoreError::File { source, .. } => {
                Some(source.kind())
            }
            _ => None,
        }
    }
}

/// Hex of a key, for [`StoreError::CorruptIndex`].
pub(crate) fn hex_key(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len() * 2);
    for b in key {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
