//! Content roots of files, with a sidecar cache so that a unit's `--extern` inputs are
//! not re-hashed by every dependent.
//!
//! A file's root is its `rdht_core` DAG root: a pure function of its bytes, the same on
//! every machine and the same the store computes. Outputs the shim writes get a sidecar
//! `<dir>/.rdht/<name>` holding `root size mtime_ns`; a sidecar whose size or mtime no
//! longer match is ignored.
//!
//! A tree can also be hashed with a cache file ([`hash_tree_cached`]) that remembers
//! each file's stamp (size, mtime, ctime, inode) and root, for trees that should never
//! change (unpacked registry packages): a unit then stats their files but reads only
//! those whose stamp changed. An edit changes the size or the times (ctime cannot be
//! set back), so it is hashed again. (An edit that keeps the size within one tick of
//! the file system's clock, a few milliseconds, keeps every stamp; people's edits of
//! unpacked packages are not that fast.)
//!
//! A proc macro's sidecar also names the build key of the unit it came from
//! ([`remember_origin`], [`origin_key`]).
//!
//! Owns: hashing files and directory trees, the sidecars and tree caches. Does not own:
//! which files matter (callers).

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rdht_core::{BlockId, BlockRef, BuildKey, DagBuilder};

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
    write_sidecar(path, root, None)
}

/// Records that `path` (as it is now) has root `root` and is the output of the unit
/// with build key `key` (a proc macro the shim built or fetched: its dependents count
/// it by that key, specs/build-key.md §4).
pub fn remember_origin(path: &Path, root: BlockId, key: BuildKey) -> std::io::Result<()> {
    write_sidecar(path, root, Some(key))
}

fn write_sidecar(path: &Path, root: BlockId, key: Option<BuildKey>) -> std::io::Result<()> {
    let Some(side) = sidecar(path) else {
        return Ok(());
    };
    let meta = fs::metadata(path).map_err(|e| io_err(path, e))?;
    let (size, mtime) = stamp(&meta);
    if let Some(dir) = side.parent() {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let origin = key.map(|k| format!(" {k}")).unwrap_or_default();
    fs::write(&side, format!("{root} {size} {mtime}{origin}\n")).map_err(|e| io_err(&side, e))
}

/// The root of `path` and, when the shim recorded one, the build key of the unit it is
/// the output of, from a sidecar that still matches the file.
fn from_sidecar(path: &Path, meta: &fs::Metadata) -> Option<(BlockId, Option<BuildKey>)> {
    let text = fs::read_to_string(sidecar(path)?).ok()?;
    let mut parts = text.split_whitespace();
    let (size, mtime) = stamp(meta);
    let (root, s, m) = (parts.next()?, parts.next()?, parts.next()?);
    if s != size.to_string() || m != mtime.to_string() {
        return None;
    }
    let key = match parts.next() {
        Some(k) => Some(k.parse().ok()?),
        None => None,
    };
    Some((root.parse().ok()?, key))
}

/// The root of `path`: from its sidecar when still valid, else by hashing (and then
/// remembered).
pub fn file_root(path: &Path) -> std::io::Result<BlockId> {
    let meta = fs::metadata(path).map_err(|e| io_err(path, e))?;
    if let Some((root, _)) = from_sidecar(path, &meta) {
        return Ok(root);
    }
    let root = hash_file(path)?;
    // A read-only target dir only costs the cache.
    let _ = remember(path, root);
    Ok(root)
}

/// The build key the shim recorded for `path` ([`remember_origin`]), if its sidecar
/// still matches the file.
pub fn origin_key(path: &Path) -> Option<BuildKey> {
    let meta = fs::metadata(path).ok()?;
    from_sidecar(path, &meta)?.1
}

/// A file found by [`walk_tree`]: relative `/` path, absolute path, metadata.
type Found = (String, PathBuf, fs::Metadata);

/// Every regular file under `dir`, sorted by relative path. Hidden entries are skipped,
/// and so are subdirectories for which `skip_dir` is true (and symlinked directories).
fn walk_tree(dir: &Path, skip_dir: &dyn Fn(&Path) -> bool) -> std::io::Result<Vec<Found>> {
    fn walk(
        root: &Path,
        dir: &Path,
        skip_dir: &dyn Fn(&Path) -> bool,
        out: &mut Vec<Found>,
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
                out.push((rel.to_string_lossy().into_owned(), path, meta));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, skip_dir, &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every regular file under `dir` as (relative `/` path, root), sorted by path.
/// Hidden entries are skipped, and so are subdirectories for which `skip_dir` is true.
/// Every file is read.
pub fn hash_tree(
    dir: &Path,
    skip_dir: &dyn Fn(&Path) -> bool,
) -> std::io::Result<Vec<(String, BlockId)>> {
    walk_tree(dir, skip_dir)?
        .into_iter()
        .map(|(rel, path, _)| Ok((rel, hash_file(&path)?)))
        .collect()
}

/// Largest file whose text is normalised before hashing ([`hash_tree_normalized`]).
const MAX_NORMALIZED: u64 = 1 << 20;

/// Files by relative path with their roots, and the paths of those hashed normalised.
pub type NormalizedTree = (Vec<(String, BlockId)>, Vec<String>);

/// [`hash_tree`] where each UTF-8 text file of at most 1 MiB that `normalize` changes
/// (it names a machine-local root) is hashed as normalised; those are also returned
/// by relative path. Other files are hashed as they are.
pub fn hash_tree_normalized(
    dir: &Path,
    normalize: &dyn Fn(&str) -> String,
) -> std::io::Result<NormalizedTree> {
    let mut named = Vec::new();
    let mut out = Vec::new();
    for (rel, path, meta) in walk_tree(dir, &|_| false)? {
        let text = (meta.len() <= MAX_NORMALIZED)
            .then(|| fs::read(&path).ok())
            .flatten()
            .and_then(|b| String::from_utf8(b).ok());
        let root = match text.map(|t| (normalize(&t), t)) {
            Some((n, t)) if n != t => {
                named.push(rel.clone());
                hash_bytes(n.as_bytes())
            }
            _ => hash_file(&path)?,
        };
        out.push((rel, root));
    }
    Ok((out, named))
}

/// The DAG root of `bytes`.
fn hash_bytes(bytes: &[u8]) -> BlockId {
    let mut builder = DagBuilder::new();
    let mut emit = |_: BlockRef<'_>| Ok::<(), std::convert::Infallible>(());
    let Ok(()) = builder.update(bytes, &mut emit);
    let Ok(root) = builder.finish(&mut emit);
    root.id
}

/// Header of a tree cache file; the tree's directory follows it on the same line.
const TREE_CACHE_HEADER: &str = "rdht-tree-cache v1 ";
/// Largest tree cache file read; a larger one is ignored (and rewritten).
const MAX_TREE_CACHE: u64 = 64 << 20;

/// A file's stamp for the tree cache: size, mtime and ctime (ns), inode.
fn tree_stamp(meta: &fs::Metadata) -> String {
    let (size, mtime) = stamp(meta);
    let ctime = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
    format!("{size} {mtime} {ctime} {}", meta.ino())
}

/// Reads `cache` (written for `dir`): relative path → (stamp, root). Anything unreadable
/// or malformed gives an empty map: the cache only saves reads.
fn read_tree_cache(
    cache: &Path,
    dir: &Path,
) -> std::collections::HashMap<String, (String, BlockId)> {
    let mut map = std::collections::HashMap::new();
    let Ok(meta) = fs::metadata(cache) else {
        return map;
    };
    if meta.len() > MAX_TREE_CACHE {
        return map;
    }
    let Ok(text) = fs::read_to_string(cache) else {
        return map;
    };
    let mut lines = text.lines();
    if lines.next() != Some(&format!("{TREE_CACHE_HEADER}{}", dir.display())) {
        return map;
    }
    for line in lines {
        // root size mtime ctime ino path (the path last: it may hold spaces).
        let mut parts = line.splitn(6, ' ');
        let (Some(root), Some(size), Some(mtime), Some(ctime), Some(ino), Some(rel)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return std::collections::HashMap::new();
        };
        let Ok(root) = root.parse::<BlockId>() else {
            return std::collections::HashMap::new();
        };
        map.insert(
            rel.to_string(),
            (format!("{size} {mtime} {ctime} {ino}"), root),
        );
    }
    map
}

/// [`hash_tree`] that reads only files whose stamp differs from the one in `cache` (a
/// file this function keeps), and rewrites `cache` when anything changed. Returns
/// exactly what [`hash_tree`] would.
pub fn hash_tree_cached(
    dir: &Path,
    skip_dir: &dyn Fn(&Path) -> bool,
    cache: &Path,
) -> std::io::Result<Vec<(String, BlockId)>> {
    let known = read_tree_cache(cache, dir);
    let found = walk_tree(dir, skip_dir)?;
    let mut changed = found.len() != known.len();
    let mut out = Vec::with_capacity(found.len());
    let mut text = format!("{TREE_CACHE_HEADER}{}\n", dir.display());
    for (rel, path, meta) in found {
        let st = tree_stamp(&meta);
        let root = match known.get(&rel) {
            Some((s, root)) if *s == st => *root,
            _ => {
                changed = true;
                hash_file(&path)?
            }
        };
        if !rel.contains('\n') {
            text.push_str(&format!("{root} {st} {rel}\n"));
        }
        out.push((rel, root));
    }
    if changed {
        // A read-only target dir only costs the cache.
        if let Some(d) = cache.parent() {
            let _ = fs::create_dir_all(d);
        }
        let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
        if fs::write(&tmp, text).is_ok() {
            let _ = fs::rename(&tmp, cache);
        }
    }
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

    #[test]
    fn cached_trees_equal_fresh_ones_and_see_every_edit() {
        let d = tempfile::tempdir().unwrap();
        let pkg = d.path().join("pkg");
        fs::create_dir_all(pkg.join("src")).unwrap();
        fs::write(pkg.join("src/lib.rs"), b"pub fn f() {}\n").unwrap();
        fs::write(pkg.join("a b.txt"), b"spaced").unwrap();
        let cache = d.path().join("cache/pkg");
        let none = |_: &Path| false;
        let fresh = hash_tree(&pkg, &none).unwrap();
        assert_eq!(hash_tree_cached(&pkg, &none, &cache).unwrap(), fresh);
        assert!(cache.is_file());
        // A cached entry is believed while the stamp holds (so a lying cache shows)...
        let text = fs::read_to_string(&cache).unwrap();
        let fake = DagBuilder::build(b"fake").0.id;
        let real = fresh.iter().find(|(p, _)| p == "src/lib.rs").unwrap().1;
        fs::write(&cache, text.replace(&real.to_string(), &fake.to_string())).unwrap();
        let cached = hash_tree_cached(&pkg, &none, &cache).unwrap();
        assert_eq!(
            cached.iter().find(|(p, _)| p == "src/lib.rs").unwrap().1,
            fake
        );
        // ...and an edit of the same length is seen, a new file is added. (The clock
        // is moved on as a person's edit would: within one tick of the file system's
        // clock, a same-length edit would keep every stamp.)
        fs::write(pkg.join("src/lib.rs"), b"pub fn g() {}\n").unwrap();
        let later = fs::metadata(pkg.join("src/lib.rs"))
            .unwrap()
            .modified()
            .unwrap()
            + std::time::Duration::from_secs(1);
        fs::File::options()
            .write(true)
            .open(pkg.join("src/lib.rs"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        fs::write(pkg.join("src/new.rs"), b"//").unwrap();
        let edited = hash_tree_cached(&pkg, &none, &cache).unwrap();
        assert_eq!(edited, hash_tree(&pkg, &none).unwrap());
        assert_ne!(edited, fresh);
        assert_eq!(edited.len(), 3);
        // A cache written for another directory is ignored.
        let other = d.path().join("other");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join("x"), b"x").unwrap();
        assert_eq!(
            hash_tree_cached(&other, &none, &cache).unwrap(),
            hash_tree(&other, &none).unwrap()
        );
    }
}
