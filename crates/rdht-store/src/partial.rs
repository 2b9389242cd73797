//! Files of a fetch written in place (issue 17, specs/store.md §4.4): each verified
//! leaf a peer sends goes straight to its offset in a temporary file that the fetch's
//! [`Session`](crate::Session) owns, so registration renames that file into `files/`
//! instead of assembling it from stored blocks, and the export that follows is a link.
//!
//! Owns: [`Partial`] (one file being written: its temporary, which leaves are where)
//! and [`Partials`] (a session's, by file root). Does not own: verification (callers
//! hand over only leaves a `DagVerifier` accepted, and registration walks the DAG
//! against this map before it installs anything), installing into `files/`
//! (`artifact.rs`), or removing what a crash left (`Files::open` empties `files/tmp`).
//!
//! Invariant: a partial file is never read as a kept file: it lives under `files/tmp`
//! with no index entry, until registration has checked every leaf's id and offset.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rdht_core::BlockId;

use crate::files::Files;
use crate::keys::LeafLoc;

/// Where a partial file's bytes go.
#[derive(Debug)]
enum Body {
    /// A temporary under `files/tmp` (on-disk store).
    Disk { path: PathBuf, file: File },
    /// Bytes in memory (in-memory store).
    Memory(Vec<u8>),
}

/// One file being written in place by a fetch.
#[derive(Debug)]
pub(crate) struct Partial {
    size: u64,
    body: Body,
    /// Leaves written, by offset: id and data length. Registration checks these against
    /// the verified DAG before the file is used.
    leaves: BTreeMap<u64, (BlockId, u32)>,
}

impl Partial {
    /// A new, empty partial file of `size` bytes: a temporary under `dir`'s `tmp` for
    /// an on-disk store (`dir` is `files/`), else memory.
    fn create(dir: Option<&Path>, size: u64) -> io::Result<Partial> {
        let body = match dir {
            Some(dir) => {
                let path = Files::temp(dir);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                Body::Disk { path, file }
            }
            None => Body::Memory(Vec::new()),
        };
        Ok(Partial {
            size,
            body,
            leaves: BTreeMap::new(),
        })
    }

    /// Writes leaf `id`'s `data` at `offset`. Writing the same leaf again (a fetch
    /// retried, a batch hedged to another peer) rewrites the same bytes.
    pub(crate) fn write(&mut self, offset: u64, id: BlockId, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| invalid("leaf too large"))?;
        let end = offset
            .checked_add(u64::from(len))
            .filter(|&e| e <= self.size)
            .ok_or_else(|| invalid("leaf ends past the file's size"))?;
        match &mut self.body {
            Body::Disk { file, .. } => file.write_all_at(data, offset)?,
            Body::Memory(v) => {
                let (start, end) = (to_usize(offset)?, to_usize(end)?);
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[start..end].copy_from_slice(data);
            }
        }
        self.leaves.insert(offset, (id, len));
        Ok(())
    }

    /// The leaf written at `offset`: its id and data length.
    pub(crate) fn leaf_at(&self, offset: u64) -> Option<(BlockId, u32)> {
        self.leaves.get(&offset).copied()
    }

    /// Every leaf written, with its place in the file.
    pub(crate) fn locators(&self) -> Vec<(BlockId, LeafLoc)> {
        self.leaves
            .iter()
            .map(|(&offset, &(id, len))| (id, LeafLoc { offset, len }))
            .collect()
    }

    /// Readies the file to be installed as a kept file: mode set and synced (disk), so
    /// it is durable before an index entry names it. Returns the temporary's path, or
    /// the bytes (memory). The caller removes the temporary if it is not installed.
    pub(crate) fn finish(mut self, executable: bool) -> io::Result<Finished> {
        // What is left in `self` is dropped with nothing to remove.
        match std::mem::replace(&mut self.body, Body::Memory(Vec::new())) {
            Body::Disk { path, file } => {
                use std::os::unix::fs::PermissionsExt;
                let mode = if executable { 0o755 } else { 0o644 };
                let done = file
                    .set_len(self.size)
                    .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(mode)))
                    .and_then(|()| file.sync_all());
                drop(file);
                match done {
                    Ok(()) => Ok(Finished::Temp(path)),
                    Err(e) => {
                        let _ = std::fs::remove_file(&path);
                        Err(e)
                    }
                }
            }
            Body::Memory(mut v) => {
                v.resize(to_usize(self.size)?, 0);
                Ok(Finished::Memory(v.into()))
            }
        }
    }

    /// The `len` bytes written at `offset`.
    pub(crate) fn read_at(&self, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        match &self.body {
            Body::Disk { file, .. } => file.read_exact_at(&mut buf, offset)?,
            Body::Memory(v) => {
                let start = to_usize(offset)?;
                let src = v
                    .get(start..start.saturating_add(buf.len()))
                    .ok_or_else(|| invalid("read past what was written"))?;
                buf.copy_from_slice(src);
            }
        }
        Ok(buf)
    }

    /// The temporary's path (disk).
    pub(crate) fn path(&self) -> Option<&Path> {
        match &self.body {
            Body::Disk { path, .. } => Some(path),
            Body::Memory(_) => None,
        }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Body::Disk { path, .. } = &self.body {
            // Best effort: a leftover is removed at the next open (files/tmp).
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A partial file readied by [`Partial::finish`].
pub(crate) enum Finished {
    /// A synced temporary to rename into `files/`.
    Temp(PathBuf),
    /// The bytes (in-memory store).
    Memory(bytes::Bytes),
}

/// A session's partial files, by file (DAG) root.
#[derive(Debug, Default)]
pub(crate) struct Partials(pub(crate) HashMap<BlockId, Partial>);

impl Partials {
    /// Writes leaf `id`'s `data` at `offset` of the file `root` of `size` bytes,
    /// creating its temporary (under `dir`, or in memory) on the first leaf.
    pub(crate) fn write(
        &mut self,
        dir: Option<&Path>,
        root: BlockId,
        size: u64,
        offset: u64,
        id: BlockId,
        data: &[u8],
    ) -> io::Result<()> {
        let partial = match self.0.entry(root) {
            std::collections::hash_map::Entry::Occupied(e) => {
                if e.get().size != size {
                    return Err(invalid("file size differs from its first leaf's"));
                }
                e.into_mut()
            }
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Partial::create(dir, size)?),
        };
        partial.write(offset, id, data)
    }
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| invalid("offset does not fit in memory"))
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlockId {
        BlockId::from_bytes([n; 32])
    }

    #[test]
    fn leaves_land_at_their_offsets_and_a_temporary_goes_with_its_partial() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let mut p = Partials::default();
        p.write(Some(dir.path()), id(1), 10, 6, id(3), b"6789")
            .unwrap();
        p.write(Some(dir.path()), id(1), 10, 0, id(2), b"012345")
            .unwrap();
        p.write(Some(dir.path()), id(1), 10, 6, id(3), b"6789")
            .unwrap();
        let part = &p.0[&id(1)];
        assert_eq!(part.leaf_at(0), Some((id(2), 6)));
        assert_eq!(part.leaf_at(6), Some((id(3), 4)));
        assert_eq!(part.leaf_at(3), None);
        assert_eq!(part.read_at(4, 4).unwrap(), b"4567");
        let err = p
            .write(Some(dir.path()), id(1), 10, 8, id(4), b"xyz")
            .unwrap_err();
        assert_eq!(err.to_string(), "leaf ends past the file's size");
        let err = p
            .write(Some(dir.path()), id(1), 11, 0, id(2), b"0")
            .unwrap_err();
        assert_eq!(err.to_string(), "file size differs from its first leaf's");
        let path = p.0[&id(1)].path().unwrap().to_path_buf();
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789");
        drop(p);
        assert!(!path.exists(), "a dropped partial removes its temporary");
    }

    #[test]
    fn a_finished_partial_is_sized_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let mut p = Partials::default();
        p.write(Some(dir.path()), id(1), 4, 0, id(2), b"ab")
            .unwrap();
        let part = p.0.remove(&id(1)).unwrap();
        let Finished::Temp(path) = part.finish(true).unwrap() else {
            panic!("disk partial finished in memory")
        };
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::read(&path).unwrap(), b"ab\0\0");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let mut m = Partials::default();
        m.write(None, id(1), 3, 1, id(2), b"bc").unwrap();
        let Finished::Memory(b) = m.0.remove(&id(1)).unwrap().finish(false).unwrap() else {
            panic!("memory partial finished on disk")
        };
        assert_eq!(&b[..], b"\0bc");
    }
}
