//! Artifacts: ingest files into blocks and a manifest, register complete DAGs, export
//! them back to disk (specs/store.md §4).
//!
//! Owns: [`Store::ingest`] (streaming, bounded memory), [`Session::register`] and
//! [`Store::add_artifact`] (which verify that the whole DAG is present first),
//! [`Store::export`] (verify every block, write each file to a temp file and rename it),
//! and artifact listing. Does not own: the DAG and manifest formats (`rdht-core`), GC
//! (`gc.rs`) or fetching missing blocks (the network layer).
//!
//! Read first: [`IngestFile`], [`ArtifactInfo`], `Store::register`.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rdht_core::block::{MAX_LEAF_DATA, block_id};
use rdht_core::dag::height_for;
use rdht_core::manifest::MAX_MANIFEST_LEN;
use rdht_core::{
    Block, BlockId, BlockKind, BlockRef, DagBuilder, DagError, DagVerifier, FileEntry, Labels,
    Limits, Manifest,
};

use crate::backend::Batch;
use crate::error::StoreError;
use crate::files::{Files, Mode, Placed, place};
use crate::keys::{self, ArtifactMeta, FileRef, IDS_PER_CHUNK, LeafLoc, RefEntry};
use crate::partial::{Finished, Partial, Partials};
use crate::store::{Session, State, Store};
use crate::verified::Stamp;

/// Bytes read from a file per call while ingesting.
const READ_CHUNK: usize = 256 << 10;
/// Block bytes gathered before one atomic write while ingesting.
const WRITE_BATCH: usize = 1 << 20;

/// One file to ingest: where it goes in the artifact and where to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestFile {
    /// Relative `/`-separated path in the artifact (see `rdht_core::manifest`).
    pub path: String,
    /// The file to read.
    pub source: PathBuf,
    /// Whether it is exported with the executable bit.
    pub executable: bool,
}

impl IngestFile {
    /// `source` ingested as `path`, executable if any execute bit is set on it.
    pub fn from_disk(
        path: impl Into<String>,
        source: impl Into<PathBuf>,
    ) -> Result<Self, StoreError> {
        let source = source.into();
        let meta = fs::metadata(&source).map_err(|e| StoreError::File {
            op: "reading metadata of",
            path: source.clone(),
            source: e,
        })?;
        Ok(IngestFile {
            path: path.into(),
            executable: meta.permissions().mode() & 0o111 != 0,
            source,
        })
    }
}

/// What the store holds about one complete artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// The artifact root (root of the manifest's DAG).
    pub root: BlockId,
    /// Never evicted while set.
    pub pinned: bool,
    /// Sum of file sizes.
    pub file_bytes: u64,
    /// Sum of the lengths of its distinct blocks.
    pub stored_bytes: u64,
    /// Distinct blocks (manifest and files).
    pub blocks: u32,
    /// Files in the manifest.
    pub files: u32,
    /// Store clock at its last use (registration or export); GC evicts the lowest.
    pub last_used: u64,
}

impl ArtifactInfo {
    fn new(root: BlockId, m: ArtifactMeta, last_used: u64) -> Self {
        ArtifactInfo {
            root,
            pinned: m.pinned,
            file_bytes: m.file_bytes,
            stored_bytes: m.stored_bytes,
            blocks: m.blocks,
            files: m.files,
            last_used,
        }
    }
}

/// Buffers blocks of an ingest and writes them in batches through a session.
struct Writer<'a> {
    session: &'a Session,
    buf: Vec<Block>,
    buf_bytes: usize,
    ids: Vec<BlockId>,
}

impl Writer<'_> {
    fn push(&mut self, block: Block) -> Result<(), StoreError> {
        self.ids.push(block.id());
        self.buf_bytes += block.bytes().len();
        self.buf.push(block);
        if self.buf_bytes >= WRITE_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.session.put_many(&self.buf)?;
        self.buf.clear();
        self.buf_bytes = 0;
        Ok(())
    }
}

fn file_err<'a>(op: &'static str, path: &'a Path) -> impl Fn(io::Error) -> StoreError + 'a {
    move |source| StoreError::File {
        op,
        path: path.to_path_buf(),
        source,
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Takes each leaf's id, offset in its file and data, in file order.
type LeafSink<'a> = dyn FnMut(&BlockId, u64, &[u8]) -> Result<(), StoreError> + 'a;

/// How [`Store::walk`] treats leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaves {
    /// Read and verify each one, and hand its data to the sink.
    Read,
    /// Check only that it is stored with the length its verified parent lists
    /// (`DagVerifier::skip_leaf`); the sink gets nothing.
    CheckLength,
}

impl Store {
    /// Ingests `files` (streaming each from disk with bounded memory) into blocks and a
    /// manifest with `labels`, registers the artifact and returns it. `pin` marks it as
    /// built by this node: GC never evicts it.
    ///
    /// Atomic: until it returns `Ok`, no artifact is visible; blocks written by a failed
    /// or interrupted ingest are reclaimed by GC or at the next open.
    ///
    /// The store's copy of each file is a reflink or a copy, never a hard link: the
    /// caller's files stay independent of the store (see [`Store::ingest_outputs`]).
    pub fn ingest(
        &self,
        labels: Labels,
        files: Vec<IngestFile>,
        pin: bool,
    ) -> Result<ArtifactInfo, StoreError> {
        let r = self.ingest_as(labels, files, pin, Mode::OwnInode);
        self.inner.noted(r)
    }

    /// [`Store::ingest`] of a build's outputs, which the compiler replaces rather than
    /// rewrites in place: each file may be hard-linked into the store (with
    /// [`crate::Config::link_ingest`], where it shares a filesystem and has no
    /// reflinks), so it is hashed once and its bytes are stored once.
    pub fn ingest_outputs(
        &self,
        labels: Labels,
        files: Vec<IngestFile>,
        pin: bool,
    ) -> Result<ArtifactInfo, StoreError> {
        let mode = if self.inner.config.link_ingest {
            Mode::Link
        } else {
            Mode::OwnInode
        };
        let r = self.ingest_as(labels, files, pin, mode);
        self.inner.noted(r)
    }

    fn ingest_as(
        &self,
        labels: Labels,
        files: Vec<IngestFile>,
        pin: bool,
        mode: Mode,
    ) -> Result<ArtifactInfo, StoreError> {
        // Check paths before reading a byte.
        let placeholder = files
            .iter()
            .map(|f| FileEntry {
                path: f.path.clone(),
                executable: f.executable,
                size: 0,
                root: BlockId::from_bytes([0; 32]),
            })
            .collect();
        Manifest::new(labels.clone(), placeholder)
            .map_err(|e| StoreError::IngestManifest(Box::new(e)))?;

        let session = self.session();
        let mut w = Writer {
            session: &session,
            buf: Vec::new(),
            buf_bytes: 0,
            ids: Vec::new(),
        };
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut entries = Vec::with_capacity(files.len());
        let mut kept: Vec<Kept> = Vec::with_capacity(files.len());
        // Temporaries not yet installed are removed whatever happens.
        let mut temps = Temps(Vec::new());
        for f in files {
            let path = f.source.as_path();
            let meta = fs::metadata(path).map_err(file_err("reading metadata of", path))?;
            if !meta.is_file() {
                return Err(StoreError::NotAFile {
                    path: path.to_path_buf(),
                });
            }
            // The store's own copy is hashed, so what is registered is what it holds.
            let (mut file, tmp, memory) = match self.inner.files.dir() {
                Some(dir) => {
                    self.inner.room_for(meta.len(), dir)?;
                    let tmp = Files::temp(dir);
                    place(path, &tmp, mode).map_err(file_err("copying into the store", path))?;
                    temps.0.push(tmp.clone());
                    let file = File::open(&tmp).map_err(file_err("opening", &tmp))?;
                    (Some(file), Some(tmp), None)
                }
                None => (
                    None,
                    None,
                    Some(fs::read(path).map_err(file_err("reading", path))?),
                ),
            };
            let mut builder = DagBuilder::new();
            let mut leaves = Vec::new();
            let mut offset = 0u64;
            let mut emit = |b: BlockRef<'_>| {
                if b.kind == BlockKind::Leaf {
                    let len = b.payload.len() as u32;
                    leaves.push((b.id, LeafLoc { offset, len }));
                    offset += u64::from(len);
                    Ok(())
                } else {
                    w.push(b.to_block())
                }
            };
            match (&mut file, &memory) {
                (Some(file), _) => loop {
                    let n = match file.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(file_err("reading", path)(e)),
                    };
                    builder.update(&chunk[..n], &mut emit)?;
                },
                (None, Some(bytes)) => builder.update(bytes, &mut emit)?,
                (None, None) => {}
            }
            let link = builder.finish(&mut emit)?;
            if link.size != meta.len() {
                return Err(StoreError::FileChanged {
                    path: path.to_path_buf(),
                    expected: meta.len(),
                    read: link.size,
                });
            }
            let content = match (tmp, memory) {
                (Some(tmp), _) => {
                    Files::prepare(&tmp, f.executable)
                        .map_err(file_err("syncing the store's copy of", path))?;
                    Content::Temp(tmp)
                }
                (None, Some(bytes)) => Content::Memory(bytes.into()),
                (None, None) => Content::Held,
            };
            kept.push(Kept {
                root: link.id,
                size: link.size,
                leaves: Some(leaves),
                content,
            });
            entries.push(FileEntry {
                path: f.path,
                executable: f.executable,
                size: link.size,
                root: link.id,
            });
        }
        let manifest =
            Manifest::new(labels, entries).map_err(|e| StoreError::IngestManifest(Box::new(e)))?;
        let (root, blocks) = manifest.to_dag();
        for b in blocks {
            w.push(b)?;
        }
        w.flush()?;
        let ids = std::mem::take(&mut w.ids);
        let info = self.register(&session, root.id, pin, ids, kept, &manifest);
        drop(temps);
        info
    }

    /// Ingests every regular file under `dir` (recursively, symlinks not followed),
    /// each under its path relative to `dir`.
    pub fn ingest_dir(
        &self,
        labels: Labels,
        dir: &Path,
        pin: bool,
    ) -> Result<ArtifactInfo, StoreError> {
        let mut files = Vec::new();
        let mut stack = vec![(dir.to_path_buf(), String::new())];
        while let Some((d, prefix)) = stack.pop() {
            for entry in fs::read_dir(&d).map_err(file_err("listing", &d))? {
                let entry = entry.map_err(file_err("listing", &d))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let rel = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                let path = entry.path();
                let ty = entry
                    .file_type()
                    .map_err(file_err("reading type of", &path))?;
                if ty.is_dir() {
                    stack.push((path, rel));
                } else if ty.is_file() {
                    files.push(IngestFile::from_disk(rel, path)?);
                }
            }
        }
        self.ingest(labels, files, pin)
    }

    /// Registers artifact `root` whose blocks were put (e.g. fetched from peers) with
    /// plain [`crate::BlockStore::put`]. Reads and verifies the whole DAG (manifest and
    /// every file) first. Prefer [`Session::register`], whose blocks GC cannot reclaim
    /// before registration.
    pub fn add_artifact(&self, root: BlockId, pin: bool) -> Result<ArtifactInfo, StoreError> {
        let session = self.session();
        session.register(root, pin)
    }

    /// Reads and verifies every block of artifact `root`: its manifest, then every
    /// file (leaves from the kept files). Returns the manifest and the distinct block
    /// ids, leaves included.
    pub fn verify_artifact(&self, root: &BlockId) -> Result<(Manifest, Vec<BlockId>), StoreError> {
        self.artifact_blocks(root, Leaves::Read, None)
    }

    /// Checks that artifact `root` is complete without reading file data: the manifest
    /// and every interior block are read and verified; every leaf must be stored with
    /// the length its verified parent lists. Sound because a block is verified before
    /// it is stored ([`Block`] values only exist verified); corruption after that is
    /// caught when the block is read. Returns the manifest and the distinct ids of the
    /// blocks kept in packs (the manifest's and interior blocks; not file leaves).
    ///
    /// A leaf that `written` (files a fetch wrote in place) holds at its offset, with
    /// its id, counts as stored.
    fn check_complete(
        &self,
        root: &BlockId,
        written: &Partials,
    ) -> Result<(Manifest, Vec<BlockId>), StoreError> {
        self.artifact_blocks(root, Leaves::CheckLength, Some(written))
    }

    fn artifact_blocks(
        &self,
        root: &BlockId,
        leaves: Leaves,
        written: Option<&Partials>,
    ) -> Result<(Manifest, Vec<BlockId>), StoreError> {
        let mut ids = Vec::new();
        let manifest = self.read_manifest(root, Some(&mut ids))?;
        for f in manifest.files() {
            self.walk(
                root,
                f.root,
                Some(f.size),
                Limits::default(),
                Some(&mut ids),
                leaves,
                written.and_then(|w| w.0.get(&f.root)),
                &mut |_, _, _| Ok(()),
            )?;
        }
        ids.sort_unstable();
        ids.dedup();
        Ok((manifest, ids))
    }

    /// The manifest of artifact `root`, read from its verified blocks.
    pub fn manifest(&self, root: &BlockId) -> Result<Manifest, StoreError> {
        self.read_manifest(root, None)
    }

    /// Writes every file of artifact `root` under `dir` (created if needed), verifying
    /// every byte against the DAG. Each file gets its own inode (a reflink where the
    /// filesystem allows, else a kernel copy), is verified, and is renamed into place,
    /// so a file's final name only ever holds complete, verified content, with its
    /// executable bit. Files written before an error stay in place.
    pub fn export(&self, root: &BlockId, dir: &Path) -> Result<Manifest, StoreError> {
        self.export_with(root, dir, &|_| Mode::OwnInode)
            .map(|(m, _)| m)
    }

    /// [`Store::export`], choosing per file (by its path in the artifact) whether it
    /// may be a hard link to the store's copy ([`Mode::Link`]: only for files that
    /// nothing rewrites in place) or must get its own inode. Returns how each file was
    /// placed, in manifest order. A hard-linked file's modification time is set to now,
    /// as a copy's would be.
    pub fn export_with(
        &self,
        root: &BlockId,
        dir: &Path,
        mode: &dyn Fn(&str) -> Mode,
    ) -> Result<(Manifest, Vec<Placed>), StoreError> {
        let manifest = self.read_manifest(root, None)?;
        fs::create_dir_all(dir).map_err(file_err("creating directory", dir))?;
        let mut placed = Vec::with_capacity(manifest.files().len());
        for f in manifest.files() {
            let dest = f.path.split('/').fold(dir.to_path_buf(), |p, c| p.join(c));
            placed.push(self.export_file(root, f, &dest, mode(&f.path))?);
        }
        // The last use only orders eviction: a store that cannot write it (a full
        // disk) still exported verified files.
        if let Err(e) = self.touch(root) {
            tracing::warn!(%root, error = %e, "could not record the artifact's use");
        }
        Ok((manifest, placed))
    }

    fn export_file(
        &self,
        root: &BlockId,
        f: &FileEntry,
        dest: &Path,
        mode: Mode,
    ) -> Result<Placed, StoreError> {
        let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
            return Err(StoreError::Destination {
                path: dest.to_path_buf(),
                reason: "path has no parent directory",
            });
        };
        fs::create_dir_all(parent).map_err(file_err("creating directory", parent))?;
        if fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) {
            return Err(StoreError::Destination {
                path: dest.to_path_buf(),
                reason: "a directory is in the way",
            });
        }
        let tmp = parent.join(format!(
            ".{}.rdht-tmp-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = self.write_temp(root, f, &tmp, mode).and_then(|how| {
            fs::rename(&tmp, dest).map_err(|source| StoreError::File {
                op: "renaming temporary file to",
                path: dest.to_path_buf(),
                source,
            })?;
            Ok(how)
        });
        if result.is_err() {
            // Best effort: the temp file has a name no artifact path can have.
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Writes file `f` of artifact `root` at `tmp`: placed from its kept file and then
    /// verified there, or (an artifact stored before files were kept, format 2)
    /// written from its verified blocks.
    fn write_temp(
        &self,
        root: &BlockId,
        f: &FileEntry,
        tmp: &Path,
        mode: Mode,
    ) -> Result<Placed, StoreError> {
        let kept = self.inner.file_ref(&f.root)?.is_some();
        let how = match (&self.inner.files, kept) {
            (Files::Disk { dir }, true) => {
                let src = Files::path(dir, &f.root);
                match place(&src, tmp, mode) {
                    Ok(how) => Some(how),
                    // Dropped as modified (or lost): a miss until it is fetched or built.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(StoreError::Dag {
                            root: *root,
                            source: Box::new(DagError::Missing { block: f.root }),
                        });
                    }
                    Err(e) => return Err(file_err("copying from the store to", tmp)(e)),
                }
            }
            (Files::Memory(_), true) => {
                let Some(bytes) = self.inner.files.memory_bytes(&f.root) else {
                    return Err(StoreError::Dag {
                        root: *root,
                        source: Box::new(DagError::Missing { block: f.root }),
                    });
                };
                fs::write(tmp, &bytes).map_err(file_err("writing", tmp))?;
                Some(Placed::Copy)
            }
            _ => None,
        };
        let Some(how) = how else {
            self.write_from_blocks(root, f, tmp)?;
            return Ok(Placed::Copy);
        };
        // A link or reflink of a kept file that still has the identity it had when it
        // last hashed to its DAG is not hashed again (verified.rs); a copy always is.
        let src = match (&self.inner.files, how) {
            (Files::Disk { dir }, Placed::HardLink | Placed::Reflink) => {
                Some(Files::path(dir, &f.root))
            }
            _ => None,
        };
        let stamp = || {
            src.as_ref()
                .and_then(|p| fs::metadata(p).ok())
                .map(|m| Stamp::of(&m))
        };
        let before = stamp();
        if !before.is_some_and(|s| self.inner.verified.holds(&f.root, &s)) {
            let file = File::open(tmp).map_err(file_err("opening", tmp))?;
            if let Err(e) = self.verify_file(root, f, &file) {
                self.inner.verified.forget(&f.root);
                if let StoreError::Dag { source, .. } = &e
                    && matches!(
                        **source,
                        DagError::HashMismatch { .. } | DagError::SizeMismatch { .. }
                    )
                {
                    self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
                    self.inner.drop_file(&f.root, source)?;
                }
                return Err(e);
            }
            if let Some(s) = before.filter(|s| stamp().as_ref() == Some(s)) {
                self.inner.verified.checked(f.root, s);
            }
        }
        let file = OpenOptions::new()
            .write(true)
            .open(tmp)
            .map_err(file_err("opening", tmp))?;
        if how == Placed::HardLink {
            // The store's inode: its mode is already right; its time becomes now, as a
            // new file's would be, so cargo sees outputs in the order they were made.
            file.set_modified(std::time::SystemTime::now())
                .map_err(file_err("setting the time of", tmp))?;
            // Verified just above (or known), and this time is the store's own.
            if let Some(s) = stamp() {
                self.inner.verified.touched(f.root, s);
            }
        } else {
            let mode = if f.executable { 0o755 } else { 0o644 };
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(file_err("setting permissions of", tmp))?;
            if self.inner.config.sync_exports {
                file.sync_all().map_err(file_err("syncing", tmp))?;
            }
        }
        Ok(how)
    }

    /// Checks the bytes of `file` against the DAG of `f`: interior blocks are read
    /// (verified) from the store, each leaf's data from the file is hashed against the
    /// id its parent lists, and the file must end where the DAG does.
    fn verify_file(&self, root: &BlockId, f: &FileEntry, file: &File) -> Result<(), StoreError> {
        let dag = |e: DagError| StoreError::Dag {
            root: *root,
            source: Box::new(e),
        };
        let len = file
            .metadata()
            .map_err(file_err("reading metadata of", Path::new(&f.path)))?
            .len();
        if len != f.size {
            return Err(dag(DagError::SizeMismatch {
                block: f.root,
                expected: f.size,
                actual: len,
            }));
        }
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut data = vec![0u8; MAX_LEAF_DATA];
        let mut v = DagVerifier::new(f.root, Some(f.size), Limits::default());
        let read = |r: &mut BufReader<&File>, buf: &mut [u8]| {
            r.read_exact(buf)
                .map_err(file_err("reading", Path::new(&f.path)))
        };
        while let Some(id) = v.next_expected() {
            if let Some((leaf, size)) = v.next_leaf() {
                let buf = &mut data[..size as usize];
                read(&mut r, buf)?;
                let actual = block_id(BlockKind::Leaf, buf);
                if actual != leaf {
                    return Err(dag(DagError::HashMismatch {
                        block: leaf,
                        actual,
                    }));
                }
                v.skip_leaf(size + 1).map_err(dag)?;
                continue;
            }
            if id == f.root && height_for(f.size) == 0 {
                // A one-leaf file: the root is the leaf, and the file its data.
                let mut bytes = vec![rdht_core::block::LEAF_TAG];
                bytes.resize(1 + f.size as usize, 0);
                read(&mut r, &mut bytes[1..])?;
                v.push(bytes.into()).map_err(dag)?;
                continue;
            }
            let Some(raw) = self.inner.read_raw(&id)? else {
                return Err(dag(DagError::Missing { block: id }));
            };
            if let Err(e) = v.push_encoded(raw.encoded) {
                if matches!(
                    e,
                    DagError::HashMismatch { .. } | DagError::Malformed { .. }
                ) {
                    self.inner.remove_corrupt(&id, &raw.origin, &e)?;
                }
                return Err(dag(e));
            }
        }
        Ok(())
    }

    fn write_from_blocks(
        &self,
        root: &BlockId,
        f: &FileEntry,
        tmp: &Path,
    ) -> Result<(), StoreError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(file_err("creating", tmp))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        self.walk_file(root, f, None, &mut |_, _, d| {
            w.write_all(d).map_err(file_err("writing", tmp))
        })?;
        let file = w
            .into_inner()
            .map_err(|e| file_err("writing", tmp)(e.into_error()))?;
        let mode = if f.executable { 0o755 } else { 0o644 };
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(file_err("setting permissions of", tmp))?;
        if self.inner.config.sync_exports {
            file.sync_all().map_err(file_err("syncing", tmp))?;
        }
        Ok(())
    }

    fn read_manifest(
        &self,
        root: &BlockId,
        ids: Option<&mut Vec<BlockId>>,
    ) -> Result<Manifest, StoreError> {
        let limits = Limits {
            max_size: MAX_MANIFEST_LEN as u64,
            ..Limits::default()
        };
        let mut bytes = Vec::new();
        self.walk(
            root,
            *root,
            None,
            limits,
            ids,
            Leaves::Read,
            None,
            &mut |_, _, d| {
                bytes.extend_from_slice(d);
                Ok(())
            },
        )?;
        Manifest::decode(&bytes).map_err(|source| StoreError::Manifest {
            root: *root,
            source: Box::new(source),
        })
    }

    /// Verifies the DAG under `dag_root` (part of artifact `root`) block by block in
    /// pre-order, handing leaf data to `sink`. A block that fails its hash is removed as
    /// corrupt. Returns the bytes under the root.
    ///
    /// A leaf that `written` holds at its offset with its id is skipped (checked by
    /// length only, never handed to `sink`): a fetch wrote it in place, verified.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        root: &BlockId,
        dag_root: BlockId,
        expected: Option<u64>,
        limits: Limits,
        mut ids: Option<&mut Vec<BlockId>>,
        leaves: Leaves,
        written: Option<&Partial>,
        sink: &mut LeafSink<'_>,
    ) -> Result<u64, StoreError> {
        // Registration lists the blocks kept in packs: leaves of file DAGs are kept in
        // their files (the manifest is walked with `Leaves::Read`).
        let leaf_ids = leaves == Leaves::Read;
        let inner = &self.inner;
        let dag = |e: DagError| StoreError::Dag {
            root: *root,
            source: Box::new(e),
        };
        let mut v = DagVerifier::new(dag_root, expected, limits);
        // Where the next leaf's data starts in the file.
        let mut offset = 0u64;
        while let Some(id) = v.next_expected() {
            // A file of one leaf: its root is that leaf, which only reading tells.
            let root_in_place = written
                .filter(|_| v.blocks_verified() == 0)
                .and_then(|w| Some((w, w.leaf_at(0).filter(|&(w, _)| w == id)?.1)));
            if let Some((w, len)) = root_in_place {
                let path = w.path().map(Path::to_path_buf).unwrap_or_default();
                let data = w.read_at(0, len).map_err(file_err("reading", &path))?;
                let mut bytes = Vec::with_capacity(data.len() + 1);
                bytes.push(rdht_core::block::LEAF_TAG);
                bytes.extend_from_slice(&data);
                if v.push(bytes.into()).map_err(dag)?.kind() == BlockKind::Leaf {
                    if let Some(ids) = ids.as_deref_mut().filter(|_| leaf_ids) {
                        ids.push(id);
                    }
                    offset += u64::from(len);
                }
                continue;
            }
            if let Some((_, size)) = v.next_leaf() {
                let in_place = written
                    .and_then(|w| w.leaf_at(offset))
                    .filter(|&(w, _)| w == id);
                let stored = match (in_place, leaves) {
                    (Some((_, len)), _) => Some(Some(len + 1)),
                    (None, Leaves::CheckLength) => Some(inner.stored_len(&id)?),
                    (None, Leaves::Read) => None,
                };
                if let Some(stored) = stored {
                    match stored {
                        None => return Err(dag(DagError::Missing { block: id })),
                        Some(len) => v.skip_leaf(u64::from(len)).map_err(dag)?,
                    }
                    if let Some(ids) = ids.as_deref_mut().filter(|_| leaf_ids) {
                        ids.push(id);
                    }
                    offset += size;
                    continue;
                }
            }
            let Some(raw) = inner.read_raw(&id)? else {
                return Err(dag(DagError::Missing { block: id }));
            };
            match v.push_encoded(raw.encoded) {
                Ok(block) => {
                    inner.counters.hits.fetch_add(1, Ordering::Relaxed);
                    let leaf = block.kind() == BlockKind::Leaf;
                    if let Some(ids) = ids.as_deref_mut().filter(|_| leaf_ids || !leaf) {
                        ids.push(id);
                    }
                    if leaf {
                        sink(&id, offset, block.payload())?;
                        offset += block.payload().len() as u64;
                    }
                }
                Err(e) => {
                    if matches!(
                        e,
                        DagError::HashMismatch { .. } | DagError::Malformed { .. }
                    ) {
                        inner.counters.misses.fetch_add(1, Ordering::Relaxed);
                        inner.remove_corrupt(&id, &raw.origin, &e)?;
                    }
                    return Err(dag(e));
                }
            }
        }
        Ok(v.size().unwrap_or(0))
    }

    /// [`Store::walk`] over file `f` of artifact `root`, reading its leaves (those
    /// `written` holds in place are skipped).
    fn walk_file(
        &self,
        root: &BlockId,
        f: &FileEntry,
        written: Option<&Partial>,
        sink: &mut LeafSink<'_>,
    ) -> Result<u64, StoreError> {
        let limits = Limits::default();
        self.walk(
            root,
            f.root,
            Some(f.size),
            limits,
            None,
            Leaves::Read,
            written,
            sink,
        )
    }

    /// The complete artifact `root`, if registered.
    pub fn artifact(&self, root: &BlockId) -> Result<Option<ArtifactInfo>, StoreError> {
        let inner = &self.inner;
        let key = keys::id_key(keys::ARTIFACT, root.as_bytes());
        let Some(v) = inner.backend.get(&key).map_err(inner.err("read"))? else {
            return Ok(None);
        };
        let meta = ArtifactMeta::decode(&v)
            .ok_or_else(|| inner.corrupt_index(&key, "artifact entry does not decode"))?;
        Ok(Some(ArtifactInfo::new(*root, meta, self.last_used(root)?)))
    }

    fn last_used(&self, root: &BlockId) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let key = keys::id_key(keys::USED, root.as_bytes());
        match inner.backend.get(&key).map_err(inner.err("read"))? {
            None => Ok(0),
            Some(v) => keys::decode_u64(&v)
                .ok_or_else(|| inner.corrupt_index(&key, "last-use entry is not 8 bytes")),
        }
    }

    /// Every complete artifact, by root.
    pub fn artifacts(&self) -> Result<Vec<ArtifactInfo>, StoreError> {
        let inner = &self.inner;
        let mut metas = Vec::new();
        let mut bad = None;
        inner
            .backend
            .scan_prefix(&[keys::ARTIFACT], &mut |k, v| {
                match (keys::id_after_prefix(k), ArtifactMeta::decode(v)) {
                    (Some(root), Some(m)) => metas.push((root, m)),
                    _ => bad = Some(k.to_vec()),
                }
                std::ops::ControlFlow::Continue(())
            })
            .map_err(inner.err("read"))?;
        if let Some(k) = bad {
            return Err(inner.corrupt_index(&k, "artifact entry does not decode"));
        }
        metas
            .into_iter()
            .map(|(root, m)| Ok(ArtifactInfo::new(root, m, self.last_used(&root)?)))
            .collect()
    }

    /// Roots of every complete artifact (what a node announces).
    pub fn artifact_roots(&self) -> Result<Vec<BlockId>, StoreError> {
        Ok(self.artifacts()?.into_iter().map(|a| a.root).collect())
    }

    /// Marks artifact `root` as just used (LRU). No-op if it is not registered.
    pub fn touch(&self, root: &BlockId) -> Result<(), StoreError> {
        let inner = &self.inner;
        let mut st = inner.lock();
        let akey = keys::id_key(keys::ARTIFACT, root.as_bytes());
        if !inner.backend.contains(&akey).map_err(inner.err("read"))? {
            return Ok(());
        }
        let mut batch = Batch::new();
        batch.put(
            keys::id_key(keys::USED, root.as_bytes()),
            st.clock.to_le_bytes().to_vec(),
        );
        st.clock += 1;
        inner.apply(batch)
    }

    /// Makes artifact `root` complete and visible. `ids` are its blocks held in packs
    /// (manifest and interior blocks; any order, repeats allowed), all put through
    /// `session`, which the caller keeps alive until this returns so that GC cannot
    /// reclaim them before the registration batch; `kept` its files, each installed in
    /// `files/` (with its leaves' locators when this registration installed or hashed
    /// it).
    pub(crate) fn register(
        &self,
        session: &Session,
        root: BlockId,
        pin: bool,
        mut ids: Vec<BlockId>,
        mut kept: Vec<Kept>,
        manifest: &Manifest,
    ) -> Result<ArtifactInfo, StoreError> {
        ids.sort_unstable();
        ids.dedup();
        kept.sort_unstable_by_key(|k| k.root);
        kept.dedup_by_key(|k| k.root);
        let blocks = u32::try_from(ids.len()).map_err(|_| StoreError::TooManyBlocks {
            root,
            max: u64::from(u32::MAX),
        })?;
        let inner = &self.inner;
        // Every block must be durable before an entry refers to it. The flush runs
        // outside the store lock, so other writers (fetches, exports) go on meanwhile;
        // the session's blocks were all put before this point. Kept files were synced
        // when they were installed.
        inner.flush()?;
        // Pack bytes of leaves now kept in files, freed once the batch is durable.
        let mut dead = Vec::new();
        let info = {
            let mut st = inner.lock();
            // What to put back if the batch fails (a full disk): the counters, and the
            // files installed for it, which no entry names then.
            let before = (st.blocks, st.logical, st.files, st.dead_bytes);
            let installed: Vec<BlockId>;
            let akey = keys::id_key(keys::ARTIFACT, root.as_bytes());
            let ukey = keys::id_key(keys::USED, root.as_bytes());
            let mut batch = Batch::new();
            let existing = inner.backend.get(&akey).map_err(inner.err("read"))?;
            let mut newly_pinned = pin;
            let (meta, new) = if let Some(v) = existing {
                let mut meta = ArtifactMeta::decode(&v)
                    .ok_or_else(|| inner.corrupt_index(&akey, "artifact entry does not decode"))?;
                newly_pinned = pin && !meta.pinned;
                if newly_pinned {
                    meta.pinned = true;
                    batch.put(akey, meta.encode());
                }
                // Its blocks all have reference entries; marks on them are redundant.
                for id in &ids {
                    if inner.loose_entry(id)?.is_some() {
                        batch.remove(keys::id_key(keys::LOOSE, id.as_bytes()));
                    }
                }
                // A file installed again (after it was dropped as modified) is read
                // from the file from now on.
                installed = self.install_kept(&root, &kept)?;
                let mut filed = HashSet::new();
                for k in &kept {
                    if inner.file_ref(&k.root)?.is_some() {
                        self.locate_leaves(session, &mut st, &mut batch, k, &mut filed, &mut dead)?;
                    }
                }
                (meta, false)
            } else {
                for id in &ids {
                    let bkey = keys::id_key(keys::BLOCK, id.as_bytes());
                    if !inner.backend.contains(&bkey).map_err(inner.err("read"))? {
                        return Err(StoreError::Dag {
                            root,
                            source: Box::new(DagError::Missing { block: *id }),
                        });
                    }
                }
                // GC removes files under this lock: present now, present at the batch.
                installed = self.install_kept(&root, &kept)?;
                let mut stored = 0u64;
                for id in &ids {
                    let rkey = keys::id_key(keys::REF, id.as_bytes());
                    let loose = inner.loose_entry(id)?;
                    let entry = match (inner.ref_entry(id)?, loose) {
                        (Some(r), _) => RefEntry {
                            count: r.count.checked_add(1).ok_or_else(|| {
                                inner.corrupt_index(&rkey, "reference count overflows")
                            })?,
                            len: r.len,
                        },
                        (None, Some(l)) => RefEntry {
                            count: 1,
                            len: l.len,
                        },
                        // Invariant I1 says a stored block has a mark or a count; repair
                        // by reading its length rather than failing.
                        (None, None) => {
                            let len = inner.stored_len(id)?.unwrap_or(0);
                            st.blocks += 1;
                            st.logical += u64::from(len);
                            RefEntry { count: 1, len }
                        }
                    };
                    stored += u64::from(entry.len);
                    batch.put(rkey, entry.encode());
                    if loose.is_some() {
                        batch.remove(keys::id_key(keys::LOOSE, id.as_bytes()));
                    }
                }
                let mut filed = HashSet::new();
                for k in &kept {
                    let fkey = keys::id_key(keys::FILE, k.root.as_bytes());
                    let entry = match inner.file_ref(&k.root)? {
                        Some(r) => FileRef {
                            count: r.count.checked_add(1).ok_or_else(|| {
                                inner.corrupt_index(&fkey, "file reference count overflows")
                            })?,
                            size: r.size,
                        },
                        None => {
                            st.files += 1;
                            st.logical += k.size;
                            FileRef {
                                count: 1,
                                size: k.size,
                            }
                        }
                    };
                    stored += k.size;
                    batch.put(fkey, entry.encode());
                    self.locate_leaves(session, &mut st, &mut batch, k, &mut filed, &mut dead)?;
                }
                let meta = ArtifactMeta {
                    pinned: pin,
                    file_bytes: manifest.total_size(),
                    stored_bytes: stored,
                    blocks,
                    files: manifest.files().len() as u32,
                };
                for (n, chunk) in ids.chunks(IDS_PER_CHUNK).enumerate() {
                    batch.put(keys::list_key(&root, n as u32), concat_ids(chunk));
                }
                let roots: Vec<BlockId> = kept.iter().map(|k| k.root).collect();
                for (n, chunk) in roots.chunks(IDS_PER_CHUNK).enumerate() {
                    batch.put(keys::file_list_key(&root, n as u32), concat_ids(chunk));
                }
                batch.put(akey, meta.encode());
                (meta, true)
            };
            let used = st.clock;
            batch.put(ukey, used.to_le_bytes().to_vec());
            if let Err(e) = inner.apply(batch) {
                (st.blocks, st.logical, st.files, st.dead_bytes) = before;
                for r in installed {
                    if inner.file_ref(&r)?.is_none() {
                        let _ = inner.files.remove(&r);
                    }
                }
                return Err(e);
            }
            st.clock += 1;
            if new {
                st.artifacts += 1;
            }
            if newly_pinned {
                st.pinned += meta.stored_bytes;
            }
            ArtifactInfo::new(root, meta, used)
        };
        // The artifact is durable before registration returns (outside the lock too).
        inner.flush()?;
        if let Some(packs) = &inner.packs {
            packs.punch(&dead);
        }
        self.gc_if_over_cap();
        Ok(info)
    }

    /// Installs every kept file the store does not have (under the store lock, which
    /// GC holds while it deletes files), so each is present when the batch names it.
    /// Returns the roots it installed. On an error it removes those again that no
    /// entry names (a new file, not one installed again), so a full disk leaves none.
    fn install_kept(&self, root: &BlockId, kept: &[Kept]) -> Result<Vec<BlockId>, StoreError> {
        let inner = &self.inner;
        let mut installed = Vec::new();
        for k in kept {
            if inner.files.contains(&k.root) {
                continue;
            }
            let done = match (&k.content, &inner.files) {
                (Content::Temp(tmp), Files::Disk { dir }) => Files::commit(dir, tmp, &k.root)
                    .map_err(file_err("installing into the store", tmp)),
                (Content::Memory(b), _) => {
                    inner.files.insert_memory(k.root, b.clone());
                    Ok(())
                }
                _ => Err(StoreError::Dag {
                    root: *root,
                    source: Box::new(DagError::Missing { block: k.root }),
                }),
            };
            if let Err(e) = done {
                for r in installed {
                    if inner.file_ref(&r)?.is_none() {
                        let _ = inner.files.remove(&r);
                    }
                }
                return Err(e);
            }
            installed.push(k.root);
        }
        Ok(installed)
    }

    /// Adds the locators of kept file `k`'s leaves (when it was hashed or assembled
    /// here) to `batch`, and takes those leaves out of the packs.
    fn locate_leaves(
        &self,
        session: &Session,
        st: &mut State,
        batch: &mut Batch,
        k: &Kept,
        filed: &mut HashSet<(BlockId, BlockId)>,
        dead: &mut Vec<crate::packs::Loc>,
    ) -> Result<(), StoreError> {
        for (leaf, loc) in k.leaves.iter().flatten() {
            if !filed.insert((*leaf, k.root)) {
                continue;
            }
            batch.put(keys::leaf_key(leaf, &k.root), loc.encode());
            self.unload_leaf(session, st, batch, leaf, dead)?;
        }
        Ok(())
    }

    /// A leaf now kept in a file leaves the packs: its loose entry and bytes are
    /// removed when only `session` wanted it and no artifact holds it as a block
    /// (manifest leaves and artifacts stored before format 3 do).
    fn unload_leaf(
        &self,
        session: &Session,
        st: &mut State,
        batch: &mut Batch,
        leaf: &BlockId,
        dead: &mut Vec<crate::packs::Loc>,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let Some(l) = inner.loose_entry(leaf)? else {
            return Ok(());
        };
        let mine = st
            .sessions
            .get(&session.id)
            .is_some_and(|s| s.contains(leaf));
        let others = st.protected.get(leaf).copied().unwrap_or(0) > u32::from(mine);
        if others || inner.ref_entry(leaf)?.is_some() {
            return Ok(());
        }
        let bkey = keys::id_key(keys::BLOCK, leaf.as_bytes());
        if let Some(loc) = inner
            .backend
            .get(&bkey)
            .map_err(inner.err("read"))?
            .and_then(|v| crate::packs::Loc::decode(&v))
        {
            dead.push(loc);
        }
        batch.remove(keys::id_key(keys::LOOSE, leaf.as_bytes()));
        batch.remove(bkey);
        st.blocks -= 1;
        st.logical -= u64::from(l.len);
        st.dead_bytes += u64::from(l.len);
        Ok(())
    }

    /// Installs the files of a fetched artifact that the store does not keep yet: a
    /// file the fetch wrote in place (`written`) is completed with any leaf it took
    /// from the store instead of the network, and readied; any other is assembled from
    /// its verified blocks into a temporary. Returns every distinct file, with the
    /// leaves of those installed.
    fn install_files(
        &self,
        root: &BlockId,
        manifest: &Manifest,
        temps: &mut Temps,
        mut written: Partials,
    ) -> Result<Vec<Kept>, StoreError> {
        let mut kept: Vec<Kept> = Vec::new();
        let mut seen = HashSet::new();
        for f in manifest.files() {
            if !seen.insert(f.root) {
                continue;
            }
            if self.inner.file_ref(&f.root)?.is_some() && self.inner.files.contains(&f.root) {
                kept.push(Kept {
                    root: f.root,
                    size: f.size,
                    leaves: None,
                    content: Content::Held,
                });
                continue;
            }
            if let Some(partial) = written.0.remove(&f.root) {
                kept.push(self.complete_partial(root, f, partial, temps)?);
                continue;
            }
            let mut leaves = Vec::new();
            let mut offset = 0u64;
            let mut track = |id: &BlockId, _: u64, d: &[u8]| {
                leaves.push((
                    *id,
                    LeafLoc {
                        offset,
                        len: d.len() as u32,
                    },
                ));
                offset += d.len() as u64;
            };
            let content = match self.inner.files.dir() {
                Some(dir) => {
                    self.inner.room_for(f.size, dir)?;
                    let tmp = Files::temp(dir);
                    temps.0.push(tmp.clone());
                    let file = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&tmp)
                        .map_err(file_err("creating", &tmp))?;
                    let mut w = BufWriter::with_capacity(1 << 20, file);
                    self.walk_file(root, f, None, &mut |id, at, d| {
                        track(id, at, d);
                        w.write_all(d).map_err(file_err("writing", &tmp))
                    })?;
                    w.into_inner()
                        .map_err(|e| file_err("writing", &tmp)(e.into_error()))?;
                    Files::prepare(&tmp, f.executable).map_err(file_err("syncing", &tmp))?;
                    Content::Temp(tmp)
                }
                None => {
                    let mut bytes = Vec::with_capacity(f.size as usize);
                    self.walk_file(root, f, None, &mut |id, at, d| {
                        track(id, at, d);
                        bytes.extend_from_slice(d);
                        Ok(())
                    })?;
                    Content::Memory(bytes.into())
                }
            };
            kept.push(Kept {
                root: f.root,
                size: f.size,
                leaves: Some(leaves),
                content,
            });
        }
        Ok(kept)
    }

    /// Completes file `f` that a fetch wrote in place: the leaves it does not hold at
    /// their offsets (a fetch takes the leaves the store already has from the store)
    /// are read, verified and written in; then it is synced and readied to install.
    fn complete_partial(
        &self,
        root: &BlockId,
        f: &FileEntry,
        mut partial: Partial,
        temps: &mut Temps,
    ) -> Result<Kept, StoreError> {
        let path = partial.path().map(Path::to_path_buf).unwrap_or_default();
        let mut holes = Vec::new();
        self.walk_file(root, f, Some(&partial), &mut |id, at, d| {
            holes.push((*id, at, d.to_vec()));
            Ok(())
        })?;
        for (id, at, d) in holes {
            partial
                .write(at, id, &d)
                .map_err(file_err("writing a leaf into", &path))?;
        }
        let leaves = partial.locators();
        let content = match partial
            .finish(f.executable)
            .map_err(file_err("syncing", &path))?
        {
            Finished::Temp(tmp) => {
                temps.0.push(tmp.clone());
                Content::Temp(tmp)
            }
            Finished::Memory(b) => Content::Memory(b),
        };
        Ok(Kept {
            root: f.root,
            size: f.size,
            leaves: Some(leaves),
            content,
        })
    }
}

fn concat_ids(ids: &[BlockId]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        v.extend_from_slice(id.as_bytes());
    }
    v
}

/// One file of an artifact being registered.
pub(crate) struct Kept {
    root: BlockId,
    size: u64,
    /// Its leaves' locators, when this registration hashed or assembled it; `None`
    /// when the store already kept it.
    leaves: Option<Vec<(BlockId, LeafLoc)>>,
    /// Its content, installed under the store lock unless the store has it by then.
    content: Content,
}

/// The content of a [`Kept`] file, to install at registration.
pub(crate) enum Content {
    /// The store keeps it already.
    Held,
    /// A synced temporary in `files/tmp`.
    Temp(PathBuf),
    /// The bytes (in-memory store).
    Memory(bytes::Bytes),
}

/// Temporary files removed when dropped (those still present).
struct Temps(Vec<PathBuf>);

impl Drop for Temps {
    fn drop(&mut self) {
        for t in &self.0 {
            // Best effort: a leftover is removed at the next open (files/tmp).
            let _ = fs::remove_file(t);
        }
    }
}

impl Session {
    /// Registers artifact `root` once its whole DAG is in the store: the manifest and
    /// every interior block are read and verified, every leaf must be stored with the
    /// length its parent lists, else nothing is registered. Then each file the store
    /// does not keep yet is assembled from its verified blocks into `files/`, and its
    /// leaves leave the packs. Blocks put through this session stay protected until
    /// then.
    ///
    /// Files written in place through [`Session::write_leaf`] count: each leaf must be
    /// at its offset with its id; they are installed by renaming, not assembled.
    pub fn register(self, root: BlockId, pin: bool) -> Result<ArtifactInfo, StoreError> {
        let store = self.store.clone();
        let written = std::mem::take(
            &mut *self
                .partials
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let (manifest, ids) = store.check_complete(&root, &written)?;
        let mut temps = Temps(Vec::new());
        let r = store
            .install_files(&root, &manifest, &mut temps, written)
            .and_then(|kept| store.register(&self, root, pin, ids, kept, &manifest));
        store.inner.noted(r)
    }
}
