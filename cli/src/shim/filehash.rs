//! Content roots of files, with a sidecar cache so that a unit's `--extern` inputs are
//! not re-hashed by every dependent.
//!
//! A file's root is its `rdht_core` DAG root: a pure function of its bytes, the same on
//! every machine and the same the store computes. Outputs the shim writes get a sidecar
//! `<dir>/.rdht/<name>` holding `root size mtime_ns`; a sidecar whose size or mtime no
//! longer match is ignored.
//!
//! Owns: hashing files and directory trees, and the sidecars. Does not own: which files
//! matter (callers).

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rdht_core::{BlockId, BlockRef, DagBuilder};

/// Directory of sidecars next to outputs.
pub const SIDECAR_DIR: &str = ".rdht";

fn io_err(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The DAG root of the file at `path`, computed by reading it.
pub fn hash_file(path: &Path) -> std::io::Result<BlockId> {
    let mut f = fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut builder = DagBuilder::new();
    let mut emit = |_: BlockRef<'_>| Ok::<(), std::convert::Infallible>(());
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        let Ok(()) = builder.update(&buf[..n], &mut emit);
    }
    let Ok(root) = builder.finish(&mut emit);
    Ok(root.id)
}

fn sidecar(path: &Path) -> Option<PathBuf> {
    Some(path.parent()?.join(SIDECAR_DIR).join(path.file_name()?))
}

fn stamp(meta: &fs::Metadata) -> (u64, i128) {
    (
        meta.len(),
        meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
    )
}

/// Records that `path` (as it is now) has root `root`.
pub fn remember(path: &Path, root: BlockId) -> std::io::Result<()> {
    let Some(side) = sidecar(path) else {
        return Ok(());
    };
    let meta = fs::metadata(path).map_err(|e| io_err(path, e))?;
    let (size, mtime) = stamp(&meta);
    if let Some(dir) = side.parent() {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    fs::write(&side, format!("{root} {size} {mtime}\n")).map_err(|e| io_err(&side, e))
}

/// The root of `path`: from its sidecar when still valid, else by hashing (and then
/// remembered).
pub fn file_root(path: &Path) -> std::io::Result<BlockId> {
    let meta = fs::metadata(path).map_err(|e| io_err(path, e))?;
    if let Some(side) = sidecar(path)
        && let Ok(text) = fs::read_to_string(&side)
    {
        let mut parts = text.split_whitespace();
        let (size, mtime) = stamp(&meta);
        if let (Some(root), Some(s), Some(m)) = (parts.next(), parts.next(), parts.next())
            && s == size.to_string()
            && m == mtime.to_string()
            && let Ok(root) = root.parse()
        {
            return Ok(root);
        }
    }
    let root = hash_file(path)?;
    // A read-only target dir only costs the cache.
    let _ = remember(path, root);
    Ok(root)
}

/// Every regular file under `dir` as (relative `/` path, root), sorted by path.
/// Hidden entries are skipped, and so are subdirectories for which `skip_dir` is true.
pub fn hash_tree(
    dir: &Path,
    skip_dir: &dyn Fn(&Path) -> bool,
) -> std::io::Result<Vec<(String, BlockId)>> {
    fn walk(
        root: &Path,
        dir: &Path,
        skip_dir: &dyn Fn(&Path) -> bool,
        out: &mut Vec<(String, BlockId)>,
    ) -> std::io::Result<()> {
        for e in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let e = e.map_err(|e| io_err(dir, e))?;
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let path = e.path();
            let meta = fs::metadata(&path).map_err(|e| io_err(&path, e))?;
            if meta.is_dir() {
                if !e.file_type().map(|t| t.is_symlink()).unwrap_or(false) && !skip_dir(&path) {
                    walk(root, &path, skip_dir, out)?;
                }
            } else if meta.is_file() {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push((rel.to_string_lossy().into_owned(), hash_file(&path)?));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, skip_dir, &mut out)?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_is_used_until_the_file_changes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("libx.rlib");
        fs::write(&p, b"one").unwrap();
        let r1 = file_root(&p).unwrap();
        assert_eq!(r1, DagBuilder::build(b"one").0.id);
        assert!(d.path().join(".rdht/libx.rlib").exists());
        // A lying sidecar for the current stamp is believed (it is our own cache)...
        let fake = DagBuilder::build(b"fake").0.id;
        remember(&p, fake).unwrap();
        assert_eq!(file_root(&p).unwrap(), fake);
        // ...until the file changes size.
        fs::write(&p, b"three").unwrap();
        assert_eq!(file_root(&p).unwrap(), DagBuilder::build(b"three").0.id);
    }

    #[test]
    fn trees_are_sorted_and_skip_hidden_and_excluded() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("src/a")).unwrap();
        fs::create_dir_all(d.path().join("target/debug")).unwrap();
        fs::create_dir_all(d.path().join(".git")).unwrap();
        fs::write(d.path().join("src/a/m.rs"), b"m").unwrap();
        fs::write(d.path().join("Cargo.toml"), b"c").unwrap();
        fs::write(d.path().join("target/debug/x"), b"x").unwrap();
        fs::write(d.path().join(".git/HEAD"), b"h").unwrap();
        let skip = |p: &Path| p.file_name().is_some_and(|n| n == "target");
        let t = hash_tree(d.path(), &skip).unwrap();
        let names: Vec<_> = t.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["Cargo.toml", "src/a/m.rs"]);
    }
}
