//! Where an artifact's files go, in the artifact and on disk (specs/build-key.md §5):
//! rustc's outputs under `out/`, its messages in `rdht/stdout` and `rdht/stderr`, and
//! the scratch directories the shim exports and rebuilds into; and those of a
//! build-script run's two artifacts (§10.3): `OUT_DIR` under `outdir/`, the script's
//! output in `rdht/stdout` and `rdht/stderr`, and the declaration in `rdht/declared`.
//!
//! Owns: those names. Does not own: what is in the files.

use std::path::{Path, PathBuf};

/// Prefix of rustc's output files inside an artifact.
pub const OUT: &str = "out/";
/// What rustc printed on stdout, normalised.
pub const STDOUT: &str = "rdht/stdout";
/// What rustc printed on stderr, normalised.
pub const STDERR: &str = "rdht/stderr";

/// Prefix of a build-script run's `OUT_DIR` files inside its artifact.
pub const RUN_OUT_DIR: &str = "outdir/";
/// The `OUT_DIR` files of a run stored normalised (they named a local root), one
/// relative path per line, sorted; absent when there are none.
pub const RUN_NORMALIZED: &str = "rdht/normalized";
/// The only file of a declaration artifact: the encoded `runkey::Declaration`.
pub const DECLARED: &str = "rdht/declared";

/// A unique scratch directory next to the outputs (same file system, for renames).
pub fn scratch(out_dir: &Path, what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    out_dir.join(format!(".rdht-{what}-{}-{nanos}", std::process::id()))
}
