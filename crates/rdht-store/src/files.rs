//! Complete files kept whole (specs/store.md §2.3): the files of registered artifacts,
//! each a plain file named by its DAG root, whose leaves are byte ranges of it.
//!
//! Owns: the `files/` directory (`files/<2 hex>/<64 hex>`, temporaries in `files/tmp/`),
//! installing a temporary under its root's name, positioned reads, removal, and the
//! three ways a file is placed elsewhere without copying its bytes through user space:
//! a reflink (`FICLONE`), a hard link, or `copy_file_range` ([`place`]). The in-memory
//! store keeps the same files in a map. Does not own: verification (every read is
//! checked against the DAG by the caller, `artifact.rs` and `store.rs`), which files
//! are live (the `"f"` entries of the index), or when a file is removed (`gc.rs`).
//!
//! Read first: [`Files`], [`place`], [`Placed`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use rdht_core::BlockId;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Where the complete files of a store live.
pub(crate) enum Files {
    /// `dir/<2 hex>/<64 hex>`, temporaries in `dir/tmp`.
    Disk { dir: PathBuf },
    /// The in-memory store: contents by root.
    Memory(Mutex<HashMap<BlockId, Bytes>>),
}

/// How a file was placed by [`place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// A reflink: a new inode sharing the extents (copy-on-write).
    Reflink,
    /// A hard link: the same inode.
    HardLink,
    /// A copy made in the kernel (`copy_file_range`, or a read/write loop where the
    /// kernel refuses it).
    Copy,
}

/// Which ways [`place`] may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reflink, then hard link, then copy.
    Link,
    /// Reflink, then copy: the destination gets its own inode, which may be rewritten
    /// in place without touching the source.
    OwnInode,
}

/// Places `src` at `dest` (which must not exist) without passing its bytes through
/// user space where the filesystem allows: a reflink, else (for [`Mode::Link`]) a hard
/// link, else `copy_file_range`. On failure nothing is left at `dest`: a copy cut short
/// by a full disk gives its space back at once.
pub fn place(src: &Path, dest: &Path, mode: Mode) -> io::Result<Placed> {
    // Only what this call made is removed (a `dest` already there is an error).
    let existed = fs::symlink_metadata(dest).is_ok();
    let placed = place_inner(src, dest, mode);
    if placed.is_err() && !existed && fs::symlink_metadata(dest).is_ok() {
        let _ = fs::remove_file(dest);
    }
    placed
}

fn place_inner(src: &Path, dest: &Path, mode: Mode) -> io::Result<Placed> {
    let from = File::open(src)?;
    let to = OpenOptions::new().write(true).create_new(true).open(dest)?;
    if rustix::fs::ioctl_ficlone(&to, &from).is_ok() {
        return Ok(Placed::Reflink);
    }
    if mode == Mode::Link {
        drop(to);
        fs::remove_file(dest)?;
        // Following a final symlink, so that a `/proc/self/fd/N` path links the file
        // its descriptor holds.
        let linked = rustix::fs::linkat(
            rustix::fs::CWD,
            src,
            rustix::fs::CWD,
            dest,
            rustix::fs::AtFlags::SYMLINK_FOLLOW,
        );
        if linked.is_ok() {
            return Ok(Placed::HardLink);
        }
        let to = OpenOptions::new().write(true).create_new(true).open(dest)?;
        copy(&from, &to)?;
        return Ok(Placed::Copy);
    }
    copy(&from, &to)?;
    Ok(Placed::Copy)
}

/// Copies all of `from` into `to` (both at offset 0) with `copy_file_range`, falling
/// back to positioned reads and writes where the kernel refuses it (e.g. across some
/// filesystems).
fn copy(from: &File, to: &File) -> io::Result<()> {
    let len = from.metadata()?.len();
    let mut done = 0u64;
    while done < len {
        let mut off_in = done;
        let mut off_out = done;
        let want = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), want) {
            Ok(0) => break,
            Ok(n) => done += n as u64,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return copy_by_reads(from, to, done, len),
        }
    }
    if done != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("source ended after {done} of {len} bytes"),
        ));
    }
    Ok(())
}

fn copy_by_reads(from: &File, to: &File, mut at: u64, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while at < len {
        let n = from.read_at(&mut buf, at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("source ended after {at} of {len} bytes"),
            ));
        }
        to.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

impl Files {
    /// The files of an on-disk store under `dir`: created if needed; temporaries left
    /// by an earlier run are removed.
    pub(crate) fn open(dir: &Path) -> io::Result<Files> {
        let tmp = dir.join("tmp");
        match fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir_all(&tmp)?;
        Ok(Files::Disk {
            dir: dir.to_path_buf(),
        })
    }

    /// Files kept in memory.
    pub(crate) fn memory() -> Files {
        Files::Memory(Mutex::new(HashMap::new()))
    }

    /// The directory, for an on-disk store.
    pub(crate) fn dir(&self) -> Option<&Path> {
        match self {
            Files::Disk { dir } => Some(dir),
            Files::Memory(_) => None,
        }
    }

    fn map(
        m: &Mutex<HashMap<BlockId, Bytes>>,
    ) -> std::sync::MutexGuard<'_, HashMap<BlockId, Bytes>> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where the file of `root` lives (on disk).
    pub(crate) fn path(dir: &Path, root: &BlockId) -> PathBuf {
        let hex = root.to_string();
        dir.join(&hex[..2]).join(hex)
    }

    /// A fresh temporary path (on disk); nothing is created.
    pub(crate) fn temp(dir: &Path) -> PathBuf {
        dir.join("tmp").join(format!(
            "{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Whether the file of `root` is present (not verified).
    pub(crate) fn contains(&self, root: &BlockId) -> bool {
        match self {
            Files::Disk { dir } => Files::path(dir, root).is_file(),
            Files::Memory(m) => Files::map(m).contains_key(root),
        }
    }

    /// `len` bytes at `offset` of the file of `root`; `None` when the file is missing
    /// or shorter (the caller treats both as a miss).
    pub(crate) fn read_at(
        &self,
        root: &BlockId,
        offset: u64,
        len: u32,
    ) -> io::Result<Option<Vec<u8>>> {
        match self {
            Files::Disk { dir } => {
                let f = match File::open(Files::path(dir, root)) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                let mut buf = vec![0u8; len as usize];
                match f.read_exact_at(&mut buf, offset) {
                    Ok(()) => Ok(Some(buf)),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Files::Memory(m) => {
                let map = Files::map(m);
                let Some(b) = map.get(root) else {
                    return Ok(None);
                };
                let (Ok(start), Some(end)) = (
                    usize::try_from(offset),
                    usize::try_from(offset)
                        .ok()
                        .and_then(|s| s.checked_add(len as usize)),
                ) else {
                    return Ok(None);
                };
                Ok(b.get(start..end).map(<[u8]>::to_vec))
            }
        }
    }

    /// The whole content of `root`, for the in-memory store.
    pub(crate) fn memory_bytes(&self, root: &BlockId) -> Option<Bytes> {
        match self {
            Files::Memory(m) => Files::map(m).get(root).cloned(),
            Files::Disk { .. } => None,
        }
    }

    /// Keeps `bytes` as the file of `root` (in-memory store).
    pub(crate) fn insert_memory(&self, root: BlockId, bytes: Bytes) {
        if let Files::Memory(m) = self {
            Files::map(m).insert(root, bytes);
        }
    }

    /// Readies temporary `tmp` to be installed: sets its mode and syncs it, so it is
    /// durable before an index entry names it.
    pub(crate) fn prepare(tmp: &Path, executable: bool) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let f = File::open(tmp)?;
        let mode = if executable { 0o755 } else { 0o644 };
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()
    }

    /// Renames prepared temporary `tmp` to the name of `root` and syncs the directory.
    /// If the file is present already, the present one is kept.
    pub(crate) fn commit(dir: &Path, tmp: &Path, root: &BlockId) -> io::Result<()> {
        let dest = Files::path(dir, root);
        if dest.is_file() {
            return Ok(());
        }
        let parent = dest.parent().unwrap_or(dir);
        fs::create_dir_all(parent)?;
        fs::rename(tmp, &dest)?;
        File::open(parent)?.sync_all()
    }

    /// Removes the file of `root` (absent is not an error).
    pub(crate) fn remove(&self, root: &BlockId) -> io::Result<()> {
        match self {
            Files::Disk { dir } => match fs::remove_file(Files::path(dir, root)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
            Files::Memory(m) => {
                Files::map(m).remove(root);
                Ok(())
            }
        }
    }

    /// Roots of every file present (on disk: names that parse as a root).
    pub(crate) fn list(&self) -> io::Result<Vec<BlockId>> {
        match self {
            Files::Memory(m) => Ok(Files::map(m).keys().copied().collect()),
            Files::Disk { dir } => {
                let mut out = Vec::new();
                for fan in fs::read_dir(dir)? {
                    let fan = fan?;
                    let name = fan.file_name();
                    if name.len() != 2 || !fan.file_type()?.is_dir() {
                        continue;
                    }
                    for f in fs::read_dir(fan.path())? {
                        let f = f?;
                        if let Some(root) = f.file_name().to_str().and_then(parse_root) {
                            out.push(root);
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// Bytes the files occupy (on disk: their sizes; hard links count once here even
    /// if a target directory shares them).
    pub(crate) fn size(&self) -> io::Result<u64> {
        match self {
            Files::Memory(m) => Ok(Files::map(m).values().map(|b| b.len() as u64).sum()),
            Files::Disk { dir } => {
                let mut total = 0;
                for fan in fs::read_dir(dir)? {
                    let fan = fan?;
                    if !fan.file_type()?.is_dir() {
                        continue;
                    }
                    for f in fs::read_dir(fan.path())? {
                        total += f?.metadata().map_or(0, |m| m.len());
                    }
                }
                Ok(total)
            }
        }
    }
}

fn parse_root(name: &str) -> Option<BlockId> {
    if name.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(name.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(BlockId::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_links_or_copies_and_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::write(&src, vec![5u8; 70_000]).unwrap();
        let a = d.path().join("a");
        let how = place(&src, &a, Mode::Link).unwrap();
        assert!(matches!(how, Placed::Reflink | Placed::HardLink), "{how:?}");
        assert_eq!(fs::read(&a).unwrap(), vec![5u8; 70_000]);
        let b = d.path().join("b");
        let how = place(&src, &b, Mode::OwnInode).unwrap();
        assert_ne!(how, Placed::HardLink);
        assert_eq!(fs::read(&b).unwrap(), vec![5u8; 70_000]);
        assert!(place(&src, &b, Mode::Link).is_err());
        // A descriptor's path links (or clones) the file it holds.
        let held = File::open(&src).unwrap();
        let c = d.path().join("c");
        let via = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&held)
        ));
        let how = place(&via, &c, Mode::Link).unwrap();
        assert!(matches!(how, Placed::Reflink | Placed::HardLink), "{how:?}");
        assert_eq!(fs::read(&c).unwrap(), vec![5u8; 70_000]);
        assert_eq!(
            parse_root(&BlockId::from_bytes([0xab; 32]).to_string()),
            Some(BlockId::from_bytes([0xab; 32]))
        );
        assert_eq!(parse_root("zz"), None);
    }
}
