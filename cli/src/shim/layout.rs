//! Where an artifact's files go, in the artifact and on disk (specs/build-key.md §5):
//! rustc's outputs under `out/`, its messages in `rdht/stdout` and `rdht/stderr`, and
//! the scratch directories the shim exports and rebuilds into.
//!
//! Owns: those names. Does not own: what is in the files.

use std::path::{Path, PathBuf};

/// Prefix of rustc's output files inside an artifact.
pub const OUT: &str = "out/";
/// What rustc printed on stdout, normalised.
pub const STDOUT: &str = "rdht/stdout";
/// What rustc printed on stderr, normalised.
pub const STDERR: &str = "rdht/stderr";

/// A unique scratch directory next to the outputs (same file system, for renames).
pub fn scratch(out_dir: &Path, what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    out_dir.join(format!(".rdht-{what}-{}-{nanos}", std::process::id()))
}
