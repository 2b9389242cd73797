//! Pack files: append-only files holding block bytes for the on-disk store
//! (specs/store.md §2.2).
//!
//! Owns: appending blocks to the current pack (`packs/NNNNNNNN.pack`), positioned reads,
//! fsync of written packs, rotation, deleting packs, and the 17- or 21-byte [`Loc`] the
//! index stores instead of the bytes. Does not own: which blocks are live (the index in the
//! backend) or when a pack is compacted (`gc.rs`).
//!
//! Why: sled 0.34 keeps up to 16 values per leaf node and rewrites whole nodes, so 16 KiB
//! values cost 4–5× in writes and ~1.7× in space. Packs are written once; sled keeps only
//! small index entries.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use bytes::Bytes;
use rdht_core::Encoded;

/// Tag of a [`Loc`] of a block stored as it is.
pub const LOC_TAG: u8 = 0x01;
/// Tag of a [`Loc`] of a block stored LZ4-compressed.
pub const LOC_TAG_LZ4: u8 = 0x02;
/// Encoded length of a [`Loc`] of a raw block.
pub const LOC_LEN: usize = 17;
/// Encoded length of a [`Loc`] of an LZ4 block.
pub const LOC_LEN_LZ4: usize = 21;
/// Default size at which a pack is closed and a new one started.
pub const PACK_SIZE: u64 = 256 << 20;

/// Where a block's bytes are: pack number, offset, length, and for an LZ4-compressed
/// block its decoded length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// Pack number.
    pub pack: u32,
    /// Byte offset in the pack.
    pub offset: u64,
    /// Bytes in the pack.
    pub len: u32,
    /// `Some(decoded length)` when the pack holds the block LZ4-compressed.
    pub raw_len: Option<u32>,
}

impl Loc {
    /// 17 bytes: tag 0x01, pack u32, offset u64, len u32 (little-endian); for an LZ4
    /// block 21 bytes: tag 0x02, the same fields, then the decoded length u32.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(LOC_LEN_LZ4);
        v.push(if self.raw_len.is_some() {
            LOC_TAG_LZ4
        } else {
            LOC_TAG
        });
        v.extend_from_slice(&self.pack.to_le_bytes());
        v.extend_from_slice(&self.offset.to_le_bytes());
        v.extend_from_slice(&self.len.to_le_bytes());
        if let Some(raw) = self.raw_len {
            v.extend_from_slice(&raw.to_le_bytes());
        }
        v
    }

    /// Inverse of [`Loc::encode`].
    pub fn decode(v: &[u8]) -> Option<Loc> {
        let raw_len = match (v.first()?, v.len()) {
            (&LOC_TAG, LOC_LEN) => None,
            (&LOC_TAG_LZ4, LOC_LEN_LZ4) => Some(u32::from_le_bytes(v[17..21].try_into().ok()?)),
            _ => return None,
        };
        Some(Loc {
            pack: u32::from_le_bytes(v[1..5].try_into().ok()?),
            offset: u64::from_le_bytes(v[5..13].try_into().ok()?),
            len: u32::from_le_bytes(v[13..17].try_into().ok()?),
            raw_len,
        })
    }

    /// The length of the block itself (decoded length for LZ4).
    pub fn block_len(&self) -> u32 {
        self.raw_len.unwrap_or(self.len)
    }

    /// `bytes` read from this location, as the encoding they are in.
    pub fn encoded(&self, bytes: Bytes) -> Encoded {
        match self.raw_len {
            None => Encoded::Raw(bytes),
            Some(raw_len) => Encoded::Lz4 {
                data: bytes,
                raw_len,
            },
        }
    }
}

struct Writer {
    pack: u32,
    file: Option<File>,
    len: u64,
    /// Packs written since the last sync.
    dirty: BTreeSet<u32>,
    /// A pack file was created since the last sync (the directory needs one too).
    created: bool,
}

/// The pack directory of one store.
pub struct Packs {
    dir: PathBuf,
    pack_size: u64,
    writer: Mutex<Writer>,
    /// Held for a whole [`Packs::sync`]: a sync returns only after every sync that
    /// started before it finished, so "everything appended before the call is durable"
    /// holds even when another sync took the dirty set first. Appends do not wait for it.
    syncing: Mutex<()>,
    readers: RwLock<HashMap<u32, Arc<File>>>,
}

impl std::fmt::Debug for Packs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packs").field("dir", &self.dir).finish()
    }
}

/// Number of a pack file name `NNNNNNNN.pack`.
fn pack_number(name: &str) -> Option<u32> {
    let n = name.strip_suffix(".pack")?;
    (n.len() == 8).then(|| n.parse().ok()).flatten()
}

impl Packs {
    /// Opens `dir` (created if needed). New blocks go to a new pack numbered after every
    /// existing one, so a torn tail of an earlier pack is never appended to.
    pub fn open(dir: &Path, pack_size: u64) -> io::Result<Packs> {
        fs::create_dir_all(dir)?;
        let next = Self::list_in(dir)?.into_iter().max().map_or(0, |n| n + 1);
        Ok(Packs {
            dir: dir.to_path_buf(),
            pack_size,
            writer: Mutex::new(Writer {
                pack: next,
                file: None,
                len: 0,
                dirty: BTreeSet::new(),
                created: false,
            }),
            syncing: Mutex::new(()),
            readers: RwLock::new(HashMap::new()),
        })
    }

    fn list_in(dir: &Path) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir)? {
            if let Some(n) = pack_number(&e?.file_name().to_string_lossy()) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Numbers of the pack files on disk.
    pub fn list(&self) -> io::Result<Vec<u32>> {
        Self::list_in(&self.dir)
    }

    /// Path of pack `n`.
    pub fn path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{n:08}.pack"))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pack new blocks go to; never compacted or deleted while open.
    pub fn current(&self) -> u32 {
        self.writer().pack
    }

    /// Appends `blocks` (contiguously, one write) and returns their locations.
    pub fn append(&self, blocks: &[Encoded]) -> io::Result<Vec<Loc>> {
        let mut w = self.writer();
        if w.len >= self.pack_size {
            w.pack += 1;
            w.file = None;
            w.len = 0;
        }
        if w.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(w.pack))?;
            w.len = file.metadata()?.len();
            if w.len == 0 {
                w.created = true;
            }
            w.file = Some(file);
        }
        let mut buf = Vec::with_capacity(blocks.iter().map(Encoded::stored_len).sum());
        let mut locs = Vec::with_capacity(blocks.len());
        for b in blocks {
            let (bytes, raw_len) = match b {
                Encoded::Raw(bytes) => (bytes, None),
                Encoded::Lz4 { data, raw_len } => (data, Some(*raw_len)),
            };
            locs.push(Loc {
                pack: w.pack,
                offset: w.len + buf.len() as u64,
                len: bytes.len() as u32,
                raw_len,
            });
            buf.extend_from_slice(bytes);
        }
        let pack = w.pack;
        let len = w.len;
        // A write that failed part way (a full disk) appended some bytes: they are cut
        // off, so the next Locs, computed from `len`, point at their own bytes. If even
        // that fails, the pack is closed: the next append opens it again and reads its
        // real length.
        let written = match w.file.as_mut() {
            Some(f) => f.write_all(&buf).map_err(|e| (e, f.set_len(len).is_ok())),
            None => Err((io::Error::other("pack file not open"), true)),
        };
        if let Err((e, cut)) = written {
            if !cut {
                w.file = None;
            }
            return Err(e);
        }
        w.len += buf.len() as u64;
        w.dirty.insert(pack);
        Ok(locs)
    }

    /// Reads the bytes at `loc`. `Ok(None)` if the pack does not exist or is too short
    /// (a lost tail): a miss, not an error.
    pub fn read(&self, loc: &Loc) -> io::Result<Option<Bytes>> {
        let file = {
            let readers = self.readers.read().unwrap_or_else(PoisonError::into_inner);
            readers.get(&loc.pack).cloned()
        };
        let file = match file {
            Some(f) => f,
            None => match File::open(self.path(loc.pack)) {
                Ok(f) => {
                    let f = Arc::new(f);
                    self.readers
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(loc.pack, f.clone());
                    f
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        let mut buf = vec![0u8; loc.len as usize];
        match file.read_exact_at(&mut buf, loc.offset) {
            Ok(()) => Ok(Some(buf.into())),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes every pack written since the last sync durable.
    pub fn sync(&self) -> io::Result<()> {
        let _turn = self.syncing.lock().unwrap_or_else(PoisonError::into_inner);
        // Take the work under the writer lock, fsync without it: appends go on.
        let (dirty, created) = {
            let mut w = self.writer();
            (
                std::mem::take(&mut w.dirty),
                std::mem::replace(&mut w.created, false),
            )
        };
        let synced = dirty
            .iter()
            .try_for_each(|n| File::open(self.path(*n)).and_then(|f| f.sync_data()))
            .and_then(|()| {
                if created {
                    File::open(&self.dir).and_then(|d| d.sync_all())
                } else {
                    Ok(())
                }
            });
        if synced.is_err() {
            let mut w = self.writer();
            w.dirty.extend(dirty.iter().copied());
            w.created |= created;
        }
        synced
    }

    /// Frees the disk space of bytes no index entry points to any more (blocks of a
    /// fetch that now live in kept files): the whole 4 KiB pages inside each run of
    /// adjacent `dead` locations are punched out (`FALLOC_FL_PUNCH_HOLE`), so the pack
    /// keeps its length and every other block its bytes. Best effort: a filesystem
    /// without hole punching keeps the bytes until compaction.
    pub fn punch(&self, dead: &[Loc]) {
        const PAGE: u64 = 4096;
        let mut runs: Vec<(u32, u64, u64)> = dead
            .iter()
            .map(|l| (l.pack, l.offset, l.offset + u64::from(l.len)))
            .collect();
        runs.sort_unstable();
        let mut merged: Vec<(u32, u64, u64)> = Vec::new();
        for (pack, start, end) in runs {
            match merged.last_mut() {
                Some((p, _, e)) if *p == pack && *e == start => *e = end,
                _ => merged.push((pack, start, end)),
            }
        }
        for (pack, start, end) in merged {
            let (from, to) = (start.div_ceil(PAGE) * PAGE, end / PAGE * PAGE);
            if to <= from {
                continue;
            }
            let punched = OpenOptions::new()
                .write(true)
                .open(self.path(pack))
                .and_then(|f| {
                    rustix::fs::fallocate(
                        &f,
                        rustix::fs::FallocateFlags::PUNCH_HOLE
                            | rustix::fs::FallocateFlags::KEEP_SIZE,
                        from,
                        to - from,
                    )
                    .map_err(io::Error::from)
                });
            if let Err(e) = punched {
                tracing::debug!(pack, error = %e, "could not punch dead bytes out of a pack");
            }
        }
    }

    /// Deletes pack `n` (never the current one).
    pub fn remove(&self, n: u32) -> io::Result<()> {
        if n == self.current() {
            return Ok(());
        }
        self.readers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&n);
        match fs::remove_file(self.path(n)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Bytes of all pack files.
    pub fn size(&self) -> io::Result<u64> {
        let mut total = 0;
        for n in self.list()? {
            match fs::metadata(self.path(n)) {
                Ok(m) => total += m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loc_layout_and_append_read() {
        let loc = Loc {
            pack: 2,
            offset: 0x0102,
            len: 16385,
            raw_len: None,
        };
        assert_eq!(
            loc.encode(),
            [1, 2, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0x01, 0x40, 0, 0]
        );
        assert_eq!(Loc::decode(&loc.encode()), Some(loc));
        assert_eq!(Loc::decode(&[0; 17]), None);
        let lz4 = Loc {
            len: 300,
            raw_len: Some(16385),
            ..loc
        };
        assert_eq!(
            lz4.encode(),
            [
                2, 2, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0x2c, 0x01, 0, 0, 0x01, 0x40, 0, 0
            ]
        );
        assert_eq!(Loc::decode(&lz4.encode()), Some(lz4));
        assert_eq!(lz4.block_len(), 16385);
        assert_eq!(Loc::decode(&lz4.encode()[..17]), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let packs = Packs::open(dir.path(), 4).expect("open");
        let locs = packs
            .append(&[
                Encoded::Raw(Bytes::from_static(b"abc")),
                Encoded::Lz4 {
                    data: Bytes::from_static(b"de"),
                    raw_len: 9,
                },
            ])
            .expect("append");
        assert_eq!(
            locs[1],
            Loc {
                pack: 0,
                offset: 3,
                len: 2,
                raw_len: Some(9),
            }
        );
        assert_eq!(
            packs.read(&locs[1]).expect("read").as_deref(),
            Some(&b"de"[..])
        );
        packs.sync().expect("sync");
        let past = Loc {
            offset: 4,
            ..locs[1]
        };
        assert_eq!(packs.read(&past).expect("read"), None);
        drop(packs);
        let packs = Packs::open(dir.path(), 4).expect("reopen");
        assert_eq!(packs.current(), 1);
        assert_eq!(packs.list().expect("list"), vec![0]);
        // Rotation: a pack at or over the size limit is closed.
        let raw = |b: &'static [u8]| Encoded::Raw(Bytes::from_static(b));
        let a = packs.append(&[raw(b"12345")]).expect("append");
        let b = packs.append(&[raw(b"6")]).expect("append");
        assert_eq!((a[0].pack, b[0].pack, b[0].offset), (1, 2, 0));
        packs.remove(0).expect("remove");
        assert_eq!(packs.read(&locs[0]).expect("read"), None);
    }
}
