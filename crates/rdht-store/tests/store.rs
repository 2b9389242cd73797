//! Behaviour tests of the store, each run on both backends (memory and sled).
//!
//! Owns: blocks, artifacts, sessions, GC, pins, records, stats and error cases through
//! the public API, plus a model-based proptest against a `HashMap`. Does not own: crash
//! tests (`tests/crash.rs`) and on-disk byte flips (`tests/corruption.rs`).

#![allow(clippy::unwrap_used)] // Tests may unwrap (house style).

use rdht_testkit::{data, text};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use proptest::prelude::*;
use rdht_core::{
    Block, BlockError, BlockId, BuildKey, BuildRecord, DagBuilder, DagError, Labels, SigningKey,
};
use rdht_store::{
    Backend, Batch, BlockStore, Config, IngestFile, MemoryBackend, SledBackend, SledOptions, Store,
    StoreError, backend::Visitor,
};
use tempfile::TempDir;

/// A store plus its raw backend (to corrupt bytes behind its back) and a scratch dir.
struct Fx {
    store: Store,
    raw: Arc<dyn Backend>,
    dir: TempDir,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    Sled,
}

fn fixture(kind: Kind, config: Config) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let raw: Arc<dyn Backend> = match kind {
        Kind::Memory => Arc::new(MemoryBackend::new()),
        Kind::Sled => {
            Arc::new(SledBackend::open(&dir.path().join("db"), &SledOptions::default()).unwrap())
        }
    };
    let store = match kind {
        Kind::Memory => Store::with_backend(Box::new(Shared(raw.clone())), config).unwrap(),
        Kind::Sled => Store::with_backend_and_packs(
            Box::new(Shared(raw.clone())),
            &dir.path().join("packs"),
            config,
        )
        .unwrap(),
    };
    Fx { store, raw, dir }
}

/// Lets the test and the store share one backend.
struct Shared(Arc<dyn Backend>);

impl Backend for Shared {
    fn get(&self, key: &[u8]) -> io::Result<Option<Bytes>> {
        self.0.get(key)
    }
    fn contains(&self, key: &[u8]) -> io::Result<bool> {
        self.0.contains(key)
    }
    fn scan_prefix(&self, prefix: &[u8], f: &mut Visitor<'_>) -> io::Result<()> {
        self.0.scan_prefix(prefix, f)
    }
    fn apply(&self, batch: Batch) -> io::Result<()> {
        self.0.apply(batch)
    }
    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }
    fn size_on_disk(&self) -> io::Result<u64> {
        self.0.size_on_disk()
    }
    fn path(&self) -> Option<&Path> {
        self.0.path()
    }
}

/// Fails every write after the first `ok` ones with an error of kind `kind`.
struct DiskFull {
    inner: MemoryBackend,
    ok: AtomicUsize,
    kind: io::ErrorKind,
}

impl Backend for DiskFull {
    fn get(&self, key: &[u8]) -> io::Result<Option<Bytes>> {
        self.inner.get(key)
    }
    fn contains(&self, key: &[u8]) -> io::Result<bool> {
        self.inner.contains(key)
    }
    fn scan_prefix(&self, prefix: &[u8], f: &mut Visitor<'_>) -> io::Result<()> {
        self.inner.scan_prefix(prefix, f)
    }
    fn apply(&self, batch: Batch) -> io::Result<()> {
        if self.ok.load(Ordering::SeqCst) == 0 {
            return Err(io::Error::from(self.kind));
        }
        self.ok.fetch_sub(1, Ordering::SeqCst);
        self.inner.apply(batch)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn size_on_disk(&self) -> io::Result<u64> {
        self.inner.size_on_disk()
    }
    fn path(&self) -> Option<&Path> {
        Some(Path::new("/fake/store"))
    }
}

/// Writes `files` (path, seed, len, executable) under `dir/name` and returns them
/// as ingest entries.
fn write_files(dir: &Path, name: &str, files: &[(&str, u64, usize, bool)]) -> Vec<IngestFile> {
    let base = dir.join(name);
    files
        .iter()
        .map(|&(path, seed, len, exec)| {
            let p = base.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data(seed, len)).unwrap();
            let mode = if exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            IngestFile::from_disk(path, &p).unwrap()
        })
        .collect()
}

fn labels(name: &str) -> Labels {
    Labels {
        crate_name: name.into(),
        crate_version: "1.0.0".into(),
        ..Labels::default()
    }
}

fn ingest(fx: &Fx, name: &str, files: &[(&str, u64, usize, bool)], pin: bool) -> BlockId {
    let files = write_files(fx.dir.path(), name, files);
    fx.store.ingest(labels(name), files, pin).unwrap().root
}

/// Exports `root` and checks every file against `files`.
fn check_export(fx: &Fx, root: &BlockId, files: &[(&str, u64, usize, bool)]) {
    let out = tempfile::tempdir().unwrap();
    let m = fx.store.export(root, out.path()).unwrap();
    assert_eq!(m.files().len(), files.len());
    for &(path, seed, len, exec) in files {
        let p = out.path().join(path);
        assert_eq!(std::fs::read(&p).unwrap(), data(seed, len), "{path}");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, if exec { 0o755 } else { 0o644 }, "{path}");
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[test] fn $name() { super::$name(super::Kind::Memory) } )*
        }
        mod sled {
            $( #[test] fn $name() { super::$name(super::Kind::Sled) } )*
        }
    };
}

on_both_backends!(
    blocks_put_get_has_delete,
    put_refuses_bytes_that_do_not_hash_to_the_id,
    corrupt_block_is_removed_and_never_returned,
    ingest_export_round_trip,
    failed_ingest_leaves_no_artifact,
    shared_blocks_are_stored_once_and_survive_their_holders,
    gc_evicts_unpinned_lru_first_and_never_pinned,
    registration_over_cap_runs_gc,
    records_are_deduplicated_per_builder,
    fetch_session_registers_only_complete_dags,
    registration_checks_leaf_lengths_and_reads_catch_damaged_leaves,
    plain_puts_then_add_artifact,
    regression_session_blocks_held_by_an_evicted_artifact_survive_gc,
    ingest_dir_takes_regular_files_recursively,
    a_fetch_written_in_place_is_installed_by_rename_not_through_packs,
    an_incomplete_fetch_in_place_is_never_registered_and_leaves_nothing,
);

fn blocks_put_get_has_delete(kind: Kind) {
    let fx = fixture(kind, Config::default());
    let s = &fx.store;
    let b = Block::leaf(b"hello").unwrap();
    assert!(!s.has(&b.id()).unwrap());
    assert_eq!(s.get(&b.id()).unwrap(), None);
    assert!(s.put(&b).unwrap());
    assert!(!s.put(&b).unwrap(), "second put is not new");
    assert!(s.has(&b.id()).unwrap());
    assert_eq!(s.get(&b.id()).unwrap(), Some(b.clone()));
    let st = s.stats().unwrap();
    assert_eq!((st.blocks, st.logical_bytes), (1, 6));
    assert_eq!((st.reads, st.hits, st.misses), (2, 1, 1));
    assert!(s.delete(&b.id()).unwrap());
    assert!(!s.delete(&b.id()).unwrap());
    assert_eq!(s.get(&b.id()).unwrap(), None);
    let st = s.stats().unwrap();
    assert_eq!((st.blocks, st.logical_bytes), (0, 0));
}

fn put_refuses_bytes_that_do_not_hash_to_the_id(kind: Kind) {
    let fx = fixture(kind, Config::default());
    let b = Block::leaf(b"hello").unwrap();
    let wrong = Block::leaf(b"something else").unwrap().id();
    match fx.store.put_bytes(wrong, b.bytes().clone()) {
        Err(StoreError::InvalidBlock {
            id,
            source: BlockError::HashMismatch { expected, actual },
        }) => {
            assert_eq!((id, expected, actual), (wrong, wrong, b.id()));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        fx.store.put_bytes(wrong, Bytes::from_static(&[9, 9])),
        Err(StoreError::InvalidBlock {
            source: BlockError::UnknownTag { tag: 9 },
            ..
        })
    ));
    assert!(!fx.store.has(&wrong).unwrap());
    assert_eq!(fx.store.stats().unwrap().blocks, 0);
    assert!(fx.store.put_bytes(b.id(), b.bytes().clone()).unwrap());
}

/// What the store holds for artifacts `roots` (specs/store.md §2.3): the distinct
/// blocks kept in packs (manifest and interior blocks; these tests' manifests are one
/// block) and the logical bytes (their lengths plus each distinct kept file's size).
fn held(store: &Store, roots: &[BlockId]) -> (HashSet<BlockId>, u64) {
    let mut ids = HashSet::new();
    let mut files = HashMap::new();
    for root in roots {
        let (manifest, all) = store.verify_artifact(root).unwrap();
        ids.insert(*root);
        for id in all {
            if store.get(&id).unwrap().unwrap().kind() == rdht_core::BlockKind::Interior {
                ids.insert(id);
            }
        }
        for f in manifest.files() {
            files.insert(f.root, f.size);
        }
    }
    let blocks: u64 = ids
        .iter()
        .map(|id| store.get(id).unwrap().unwrap().bytes().len() as u64)
        .sum();
    let logical = blocks + files.values().sum::<u64>();
    (ids, logical)
}

fn block_key(id: &BlockId) -> Vec<u8> {
    let mut k = vec![b'b'];
    k.extend_from_slice(id.as_bytes());
    k
}

/// Flips byte `at` of block `id` where it is stored: in its pack file (sled store) or
/// in the backend value (memory store).
fn corrupt_stored(fx: &Fx, id: &BlockId, at: usize) {
    let value = fx.raw.get(&block_key(id)).unwrap().unwrap();
    match rdht_store::packs::Loc::decode(&value) {
        Some(loc) => {
            let path = fx.dir.path().join(format!("packs/{:08}.pack", loc.pack));
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[loc.offset as usize + at] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
        }
        None => {
            let mut bad = value.to_vec();
            bad[at] ^= 0x40;
            let mut batch = Batch::new();
            batch.put(block_key(id), bad);
            fx.raw.apply(batch).unwrap();
        }
    }
}

fn corrupt_block_is_removed_and_never_returned(kind: Kind) {
    let fx = fixture(kind, Config::default());
    let b = Block::leaf(&data(1, 1000)).unwrap();
    fx.store.put(&b).unwrap();
    corrupt_stored(&fx, &b.id(), 500);
    assert_eq!(fx.store.get(&b.id()).unwrap(), None);
    assert!(!fx.store.has(&b.id()).unwrap(), "corrupt block is removed");
    let st = fx.store.stats().unwrap();
    assert_eq!((st.corruptions, st.misses, st.hits), (1, 1, 0));
    assert_eq!((st.blocks, st.logical_bytes), (0, 0));
    // It can be put again.
    assert!(fx.store.put(&b).unwrap());
    assert_eq!(fx.store.get(&b.id()).unwrap(), Some(b));
}

const FILES: &[(&str, u64, usize, bool)] = &[
    ("empty", 1, 0, false),
    ("one", 2, 1, false),
    ("deps/libfoo-1234.rlib", 3, 16_384, false),
    ("deps/libfoo-1234.rmeta", 4, 16_385, false),
    ("build/foo-abcd/build-script-build", 5, 700_000, true),
    ("foo.d", 6, 123, false),
];

fn ingest_export_round_trip(kind: Kind) {
    let fx = fixture(kind, Config::default());
    let root = ingest(&fx, "a", FILES, true);
    check_export(&fx, &root, FILES);
    let info = fx.store.artifact(&root).unwrap().unwrap();
    let total: usize = FILES.iter().map(|f| f.2).sum();
    assert_eq!(info.file_bytes, total as u64);
    assert_eq!(info.files, 6);
    assert!(info.pinned);
    let (manifest, ids) = fx.store.verify_artifact(&root).unwrap();
    assert_eq!(manifest.labels().crate_name, "a");
    // 700,000 bytes: 43 leaves + 1 interior; 16,385: 2 leaves + 1 interior; the
    // others one leaf each (the empty file is one empty leaf); one manifest block.
    assert_eq!(ids.len(), 44 + 3 + 1 + 1 + 1 + 1 + 1);
    // Packs keep the two interior blocks and the manifest; the files are kept whole.
    assert_eq!(info.blocks, 3);
    let (kept, logical) = held(&fx.store, &[root]);
    assert_eq!(kept.len(), 3);
    let st = fx.store.stats().unwrap();
    assert_eq!((st.blocks, st.files), (3, 6));
    assert_eq!(st.logical_bytes, info.stored_bytes);
    assert_eq!(st.logical_bytes, logical);
    assert_eq!(st.pinned_bytes, info.stored_bytes);
    assert_eq!(st.artifacts, 1);
    assert_eq!(fx.store.artifact_roots().unwrap(), vec![root]);
    // Ingesting the same files again gives the same root and stores nothing new.
    let again = ingest(&fx, "a", FILES, false);
    assert_eq!(again, root);
    let st2 = fx.store.stats().unwrap();
    assert_eq!(
        (st2.blocks, st2.logical_bytes, st2.artifacts),
        (st.blocks, st.logical_bytes, 1)
    );
    // Exporting over existing files replaces them.
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("one"), b"stale").unwrap();
    fx.store.export(&root, out.path()).unwrap();
    assert_eq!(std::fs::read(out.path().join("one")).unwrap(), data(2, 1));
    // A directory where a file goes is a clear error.
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(out.path().join("foo.d")).unwrap();
    assert!(matches!(
        fx.store.export(&root, out.path()),
        Err(StoreError::Destination { path, .. }) if path == out.path().join("foo.d")
    ));
}

fn ingest_dir_takes_regular_files_recursively(kind: Kind) {
    let fx = fixture(kind, Config::default());
    write_files(fx.dir.path(), "tree", FILES);
    let tree = fx.dir.path().join("tree");
    // Symlinks are not followed or stored.
    std::os::unix::fs::symlink(tree.join("one"), tree.join("link")).unwrap();
    let info = fx.store.ingest_dir(labels("tree"), &tree, true).unwrap();
    let manifest = fx.store.manifest(&info.root).unwrap();
    let paths: Vec<&str> = manifest.files().iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "build/foo-abcd/build-script-build",
            "deps/libfoo-1234.rlib",
            "deps/libfoo-1234.rmeta",
            "empty",
            "foo.d",
            "one"
        ]
    );
    check_export(&fx, &info.root, FILES);
    // The same files listed one by one give the same artifact.
    assert_eq!(ingest(&fx, "tree", FILES, false), info.root);
}

fn failed_ingest_leaves_no_artifact(kind: Kind) {
    let fx = fixture(kind, Config::default());
    // A missing file after a good one: blocks of the first are written, then it fails.
    let mut files = write_files(fx.dir.path(), "x", &[("good", 7, 3_000_000, false)]);
    let missing = fx.dir.path().join("nope");
    files.push(IngestFile {
        path: "nope".into(),
        source: missing.clone(),
        executable: false,
    });
    match fx.store.ingest(labels("x"), files, true) {
        Err(e @ StoreError::File { .. }) => {
            assert!(e.to_string().contains("nope"), "{e}");
            assert_eq!(e.io_kind(), Some(io::ErrorKind::NotFound));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.store.artifacts().unwrap(), vec![]);
    assert_eq!(fx.store.stats().unwrap().artifacts, 0);
    // "good" was hashed from the store's own copy, a temporary that is gone; its one
    // interior block was still buffered. Nothing is left to reclaim.
    let st = fx.store.stats().unwrap();
    assert_eq!((st.blocks, st.logical_bytes, st.files), (0, 0, 0));
    assert_eq!(fx.store.gc().unwrap().blocks_removed, 0);
    if matches!(kind, Kind::Sled) {
        let tmp = fx.dir.path().join("files/tmp");
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "temporaries removed"
        );
    }
    // A bad path is refused before anything is read or written.
    let files = write_files(fx.dir.path(), "y", &[("ok", 8, 10, false)]);
    let bad = IngestFile {
        path: "../escape".into(),
        ..files[0].clone()
    };
    assert!(matches!(
        fx.store.ingest(labels("y"), vec![bad], false),
        Err(StoreError::IngestManifest(_))
    ));
    assert_eq!(fx.store.stats().unwrap().blocks, 0);
    // A directory is not a file.
    let dir = IngestFile {
        path: "d".into(),
        source: fx.dir.path().to_path_buf(),
        executable: false,
    };
    assert!(matches!(
        fx.store.ingest(labels("y"), vec![dir], false),
        Err(StoreError::NotAFile { .. })
    ));
}

fn shared_blocks_are_stored_once_and_survive_their_holders(kind: Kind) {
    let fx = fixture(kind, Config::default());
    let shared = ("shared.rlib", 42, 200_000, false);
    let a_files = [shared, ("a.rmeta", 1, 30_000, false)];
    let b_files = [shared, ("b.rmeta", 2, 30_000, false)];
    let a = ingest(&fx, "a", &a_files, false);
    let b = ingest(&fx, "b", &b_files, false);
    let (_, a_ids) = fx.store.verify_artifact(&a).unwrap();
    let (_, b_ids) = fx.store.verify_artifact(&b).unwrap();
    let mut union = a_ids.clone();
    union.extend(&b_ids);
    union.sort_unstable();
    union.dedup();
    assert!(union.len() < a_ids.len() + b_ids.len());
    let (both, logical) = held(&fx.store, &[a, b]);
    let st = fx.store.stats().unwrap();
    assert_eq!((st.blocks, st.logical_bytes), (both.len() as u64, logical));
    // The shared file is kept once: three files, not four.
    assert_eq!(st.files, 3);
    // Deleting a held block is refused.
    assert!(matches!(
        fx.store.delete(&a),
        Err(StoreError::BlockInUse { .. })
    ));
    assert!(fx.store.remove_artifact(&a).unwrap());
    assert!(!fx.store.remove_artifact(&a).unwrap());
    let (only_b, logical) = held(&fx.store, &[b]);
    let st = fx.store.stats().unwrap();
    assert_eq!(
        (st.blocks, st.logical_bytes),
        (only_b.len() as u64, logical)
    );
    assert_eq!(st.files, 2);
    let union: Vec<BlockId> = both.into_iter().collect();
    check_export(&fx, &b, &b_files);
    assert!(matches!(
        fx.store.export(&a, fx.dir.path()),
        Err(StoreError::Dag { .. })
    ));
    fx.store.remove_artifact(&b).unwrap();
    let st = fx.store.stats().unwrap();
    assert_eq!(
        (st.blocks, st.logical_bytes, st.artifacts, st.files),
        (0, 0, 0, 0)
    );
    assert!(!fx.store.has(&union[0]).unwrap());
    assert!(!fx.store.has(&a_ids[0]).unwrap());
}

fn gc_evicts_unpinned_lru_first_and_never_pinned(kind: Kind) {
    let fx = fixture(kind, Config::default());
    let p = ingest(&fx, "p", &[("p", 1, 100_000, false)], true);
    let a = ingest(&fx, "a", &[("a", 2, 100_000, false)], false);
    let b = ingest(&fx, "b", &[("b", 3, 100_000, false)], false);
    let c = ingest(&fx, "c", &[("c", 4, 100_000, false)], false);
    // Use `a` again: now `b` is the least recently used.
    fx.store.export(&a, &fx.dir.path().join("out-a")).unwrap();
    let size = |r| fx.store.artifact(r).unwrap().unwrap().stored_bytes;
    let (sp, sa, sb, sc) = (size(&p), size(&a), size(&b), size(&c));
    let total = fx.store.stats().unwrap().logical_bytes;
    assert_eq!(total, sp + sa + sb + sc);
    let report = fx.store.gc_to(total - sb).unwrap();
    assert_eq!(report.evicted, vec![b]);
    assert_eq!(report.logical_bytes, total - sb);
    assert_eq!(report.bytes_freed, sb);
    let report = fx.store.gc_to(0).unwrap();
    assert_eq!(report.evicted, vec![c, a]);
    assert_eq!(fx.store.artifact_roots().unwrap(), vec![p]);
    let st = fx.store.stats().unwrap();
    assert_eq!(st.logical_bytes, sp);
    assert_eq!(st.pinned_bytes, sp);
    assert_eq!(st.evictions, 3);
    check_export(&fx, &p, &[("p", 1, 100_000, false)]);
    // Unpinned, it goes too.
    fx.store.unpin(&p).unwrap();
    assert_eq!(fx.store.stats().unwrap().pinned_bytes, 0);
    assert_eq!(fx.store.gc_to(0).unwrap().evicted, vec![p]);
    assert_eq!(fx.store.stats().unwrap().blocks, 0);
    assert!(matches!(
        fx.store.pin(&p),
        Err(StoreError::UnknownArtifact { root }) if root == p
    ));
}

fn registration_over_cap_runs_gc(kind: Kind) {
    let fx = fixture(
        kind,
        Config {
            max_bytes: Some(250_000),
            ..Config::default()
        },
    );
    let a = ingest(&fx, "a", &[("a", 1, 100_000, false)], false);
    let b = ingest(&fx, "b", &[("b", 2, 100_000, false)], false);
    assert_eq!(fx.store.artifact_roots().unwrap().len(), 2);
    let c = ingest(&fx, "c", &[("c", 3, 100_000, false)], true);
    let mut roots = fx.store.artifact_roots().unwrap();
    roots.sort();
    let mut want = vec![b, c];
    want.sort();
    assert_eq!(roots, want, "a was least recently used");
    assert!(fx.store.artifact(&a).unwrap().is_none());
    assert!(
        fx.store.stats().unwrap().logical_bytes <= 225_000,
        "down to the low-water mark"
    );
    assert_eq!(fx.store.stats().unwrap().evictions, 1);
}

fn record(signer: u8, key: u8, root: &BlockId, time: u64) -> BuildRecord {
    let sk = SigningKey::from_bytes(&[signer; 32]);
    BuildRecord::sign(
        BuildKey::from_bytes([key; 32]),
        *root,
        10,
        time,
        labels("r"),
        &sk,
    )
    .unwrap()
}

fn records_are_deduplicated_per_builder(kind: Kind) {
    let fx = fixture(kind, Config::default());
    let root = Block::leaf(b"root").unwrap().id();
    let r1 = record(1, 7, &root, 100);
    let r2 = record(2, 7, &root, 100);
    let other = record(1, 8, &root, 100);
    assert!(fx.store.put_record(&r1).unwrap());
    assert!(!fx.store.put_record(&r1).unwrap());
    assert!(fx.store.put_record(&r2).unwrap());
    assert!(fx.store.put_record(&other).unwrap());
    let key = BuildKey::from_bytes([7; 32]);
    let mut got = fx.store.records(&key).unwrap();
    got.sort_by_key(|r| r.builder());
    let mut want = vec![r1.clone(), r2.clone()];
    want.sort_by_key(|r| r.builder());
    assert_eq!(got, want);
    // A newer record from the same builder replaces; an older one does not.
    let newer = record(1, 7, &root, 200);
    assert!(fx.store.put_record(&newer).unwrap());
    assert!(!fx.store.put_record(&r1).unwrap());
    let got = fx.store.records(&key).unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.contains(&newer));
    assert_eq!(
        fx.store.build_keys().unwrap(),
        vec![key, BuildKey::from_bytes([8; 32])]
    );
    // A stored record whose signature no longer verifies is dropped, never returned.
    let mut k = vec![b'k'];
    k.extend_from_slice(key.as_bytes());
    k.extend_from_slice(r2.builder().as_bytes());
    k.extend_from_slice(root.as_bytes());
    let mut bad = r2.encode();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let mut batch = Batch::new();
    batch.put(k, bad);
    fx.raw.apply(batch).unwrap();
    assert_eq!(fx.store.records(&key).unwrap(), vec![newer]);
    assert_eq!(fx.store.stats().unwrap().corruptions, 1);
}

/// All blocks of `root` in `from`, in pre-order (as a peer would stream them).
fn blocks_of(from: &Store, root: &BlockId) -> Vec<Block> {
    let (_, ids) = from.verify_artifact(root).unwrap();
    ids.iter()
        .map(|id| from.get(id).unwrap().unwrap())
        .collect()
}

fn fetch_session_registers_only_complete_dags(kind: Kind) {
    let src = fixture(Kind::Memory, Config::default());
    let root = ingest(&src, "a", FILES, false);
    let blocks = blocks_of(&src.store, &root);
    let fx = fixture(kind, Config::default());
    let session = fx.store.session();
    for b in &blocks[1..] {
        session.put_bytes(b.id(), b.bytes().clone()).unwrap();
    }
    // GC while the fetch is in flight keeps its blocks.
    assert_eq!(fx.store.gc_to(0).unwrap().blocks_removed, 0);
    let missing = blocks[0].id();
    match session.register(root, false) {
        Err(StoreError::Dag { root: r, source }) => {
            assert_eq!(r, root);
            assert_eq!(*source, DagError::Missing { block: missing });
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.store.artifacts().unwrap(), vec![]);
    // The session is gone: GC reclaims what it fetched.
    let report = fx.store.gc_to(u64::MAX).unwrap();
    assert_eq!(report.blocks_removed, blocks.len() as u64 - 1);
    // A complete fetch registers.
    let session = fx.store.session();
    assert_eq!(session.put_many(&blocks).unwrap(), blocks.len() as u64);
    let info = session.register(root, true).unwrap();
    // The files were assembled into the store's files; their leaves left the packs.
    let (kept, logical) = held(&fx.store, &[root]);
    assert_eq!(info.blocks as usize, kept.len());
    let st = fx.store.stats().unwrap();
    assert_eq!((st.blocks, st.logical_bytes, st.files), (3, logical, 6));
    assert_eq!(fx.store.gc_to(0).unwrap().blocks_removed, 0, "pinned");
    check_export(&fx, &root, FILES);
}

/// Registration reads the manifest and interior blocks but not leaf data: a leaf
/// stored with the wrong length fails it; a leaf damaged in place after it was stored
/// is caught by the first read (export) instead.
fn registration_checks_leaf_lengths_and_reads_catch_damaged_leaves(kind: Kind) {
    let src = fixture(Kind::Memory, Config::default());
    let files = [("big", 9, 100_000, false)];
    let root = ingest(&src, "a", &files, false);
    let blocks = blocks_of(&src.store, &root);
    let file_root = src.store.manifest(&root).unwrap().files()[0].root;
    let leaf_id = src
        .store
        .get(&file_root)
        .unwrap()
        .unwrap()
        .links()
        .nth(2)
        .unwrap()
        .id;
    let fx = fixture(kind, Config::default());
    let session = fx.store.session();
    session.put_many(&blocks).unwrap();
    // The index claims one byte less than the parent lists.
    let good = fx.raw.get(&block_key(&leaf_id)).unwrap().unwrap();
    let short = match rdht_store::packs::Loc::decode(&good) {
        Some(loc) => rdht_store::packs::Loc {
            len: loc.len - 1,
            ..loc
        }
        .encode(),
        None => good[..good.len() - 1].to_vec(),
    };
    let mut batch = Batch::new();
    batch.put(block_key(&leaf_id), short);
    fx.raw.apply(batch).unwrap();
    match session.register(root, false) {
        Err(StoreError::Dag { root: r, source }) => {
            assert_eq!(r, root);
            assert_eq!(
                *source,
                DagError::SizeMismatch {
                    block: leaf_id,
                    expected: 16_384,
                    actual: 16_383
                }
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.store.artifacts().unwrap(), vec![]);
    // Right length, damaged bytes: the check of the DAG does not read leaves, but
    // assembling the file reads (and verifies) each one, so the damaged one fails it,
    // is removed, and nothing is registered.
    let mut batch = Batch::new();
    batch.put(block_key(&leaf_id), good.to_vec());
    fx.raw.apply(batch).unwrap();
    corrupt_stored(&fx, &leaf_id, 77);
    let session = fx.store.session();
    session.put_many(&blocks).unwrap();
    match session.register(root, false) {
        Err(StoreError::Dag { source, .. }) => {
            assert!(matches!(*source, DagError::HashMismatch { block, .. } if block == leaf_id));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.store.artifacts().unwrap(), vec![]);
    assert_eq!(fx.store.stats().unwrap().corruptions, 1);
    assert!(!fx.store.has(&leaf_id).unwrap());
    // The block fetched again: the artifact registers and exports.
    let session = fx.store.session();
    session.put_many(&blocks).unwrap();
    session.register(root, false).unwrap();
    check_export(&fx, &root, &files);
}

fn plain_puts_then_add_artifact(kind: Kind) {
    let src = fixture(Kind::Memory, Config::default());
    let root = ingest(&src, "a", FILES, false);
    let blocks = blocks_of(&src.store, &root);
    let fx = fixture(kind, Config::default());
    for b in &blocks {
        fx.store.put(b).unwrap();
    }
    let info = fx.store.add_artifact(root, false).unwrap();
    assert_eq!(
        fx.store.artifact(&root).unwrap().unwrap().stored_bytes,
        info.stored_bytes
    );
    let (kept, logical) = held(&fx.store, &[root]);
    let st = fx.store.stats().unwrap();
    assert_eq!((st.blocks, st.logical_bytes), (kept.len() as u64, logical));
    // Loose marks are gone: GC without a cap removes nothing.
    assert_eq!(fx.store.gc().unwrap().blocks_removed, 0);
    check_export(&fx, &root, FILES);
}

/// A session put blocks that an artifact already held (so nothing was written); GC
/// then evicted that artifact. The blocks must survive for the session to register.
fn regression_session_blocks_held_by_an_evicted_artifact_survive_gc(kind: Kind) {
    let fx = fixture(kind, Config::default());
    let root = ingest(&fx, "a", FILES, false);
    let blocks = blocks_of(&fx.store, &root);
    let session = fx.store.session();
    // The packs already hold the manifest and interior blocks; the leaves are kept in
    // files only, so they are written again.
    let (kept, _) = held(&fx.store, &[root]);
    let leaves = (blocks.len() - kept.len()) as u64;
    assert_eq!(session.put_many(&blocks).unwrap(), leaves);
    let before = fx.store.stats().unwrap();
    let report = fx.store.gc_to(0).unwrap();
    assert_eq!(report.evicted, vec![root]);
    assert_eq!(report.blocks_removed, 0, "the session protects them");
    let st = fx.store.stats().unwrap();
    assert_eq!((st.blocks, st.files), (before.blocks, 0));
    session.register(root, false).unwrap();
    check_export(&fx, &root, FILES);
    assert_eq!(
        fx.store.gc().unwrap().blocks_removed,
        0,
        "no stray loose mark"
    );
    // The leaves went into the store's files again.
    assert_eq!(fx.store.stats().unwrap().blocks, before.blocks - leaves);
    // Without a session, evicting it frees everything.
    assert_eq!(
        fx.store.gc_to(0).unwrap().blocks_removed,
        before.blocks - leaves
    );
    assert_eq!(fx.store.stats().unwrap().files, 0);
}

/// Every regular file under `dir`.
fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The path of the store's kept file of `file` (sled fixture).
fn kept_path(fx: &Fx, file: &BlockId) -> std::path::PathBuf {
    let hex = file.to_string();
    fx.dir.path().join("files").join(&hex[..2]).join(hex)
}

/// Issue 17: a flipped byte in a stored file is detected and the file dropped; it is
/// never exported or served; a fetch (blocks put again) or a local build (the same
/// files ingested again) replaces it.
#[test]
fn flipped_byte_of_a_kept_file_is_never_exported_or_served_and_is_replaced() {
    let fx = fixture(Kind::Sled, Config::default());
    let files = [("big", 9, 100_000, false)];
    let root = ingest(&fx, "a", &files, false);
    let blocks = blocks_of(&fx.store, &root);
    let file_root = fx.store.manifest(&root).unwrap().files()[0].root;
    let interior = fx.store.get(&file_root).unwrap().unwrap();
    let leaf_id = interior.links().nth(3).unwrap().id;
    let flip = |at: u64| {
        let path = kept_path(&fx, &file_root);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at as usize] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    };
    // Leaf 3 covers bytes 49,152..65,536.
    flip(3 * 16_384 + 1);
    // Served by id (what a peer asks for): refused, the file dropped and counted.
    assert_eq!(fx.store.get(&leaf_id).unwrap(), None);
    assert!(!kept_path(&fx, &file_root).exists(), "dropped");
    assert_eq!(fx.store.stats().unwrap().corruptions, 1);
    let out = fx.dir.path().join("out");
    match fx.store.export(&root, &out) {
        Err(StoreError::Dag { root: r, source }) => {
            assert_eq!(r, root);
            assert_eq!(*source, DagError::Missing { block: file_root });
        }
        other => panic!("{other:?}"),
    }
    assert!(!out.join("big").exists(), "nothing under the final name");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "temp file removed"
    );
    // A fetch puts the blocks again: registering them again installs the file.
    let session = fx.store.session();
    session.put_many(&blocks).unwrap();
    session.register(root, false).unwrap();
    check_export(&fx, &root, &files);
    assert_eq!(fx.store.get(&leaf_id).unwrap().unwrap().id(), leaf_id);

    // Flipped again, now caught by an export: it fails, names the leaf, and leaves
    // nothing behind.
    flip(3 * 16_384 + 2);
    let out = fx.dir.path().join("out2");
    match fx.store.export(&root, &out) {
        Err(StoreError::Dag { source, .. }) => {
            assert!(matches!(*source, DagError::HashMismatch { block, .. } if block == leaf_id));
        }
        other => panic!("{other:?}"),
    }
    assert!(!out.join("big").exists());
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "temp file removed"
    );
    assert_eq!(fx.store.stats().unwrap().corruptions, 2);
    assert!(!fx.store.has(&leaf_id).unwrap());
    // A local build of the same files replaces it.
    assert_eq!(ingest(&fx, "a", &files, false), root);
    check_export(&fx, &root, &files);
}

/// Issue 17: GC while a target directory holds hard links to the store's files: the
/// target's files stay intact and byte-identical; `export` never hard-links.
#[test]
fn gc_never_breaks_a_linked_file_in_a_target_dir() {
    use rdht_store::{Mode, Placed};
    let fx = fixture(Kind::Sled, Config::default());
    let files = [("lib.rlib", 3, 300_000, false), ("lib.d", 4, 200, false)];
    let root = ingest(&fx, "a", &files, false);
    let target = fx.dir.path().join("target");
    let (_, placed) = fx
        .store
        .export_with(&root, &target, &|p| {
            if p.ends_with(".d") {
                Mode::OwnInode
            } else {
                Mode::Link
            }
        })
        .unwrap();
    // Manifest order: lib.d, lib.rlib. The temp dir and the store share a filesystem.
    assert_ne!(placed[0], Placed::HardLink, "dep-info gets its own inode");
    assert!(
        matches!(placed[1], Placed::HardLink | Placed::Reflink),
        "{placed:?}"
    );
    let (_, placed) = fx
        .store
        .export_with(&root, &fx.dir.path().join("plain"), &|_| Mode::OwnInode)
        .unwrap();
    assert!(!placed.contains(&Placed::HardLink));
    fx.store.remove_artifact(&root).unwrap();
    fx.store.gc_to(0).unwrap();
    assert_eq!(fx.store.stats().unwrap().files, 0);
    let left: Vec<_> = walkdir(&fx.dir.path().join("files"));
    assert_eq!(
        left,
        Vec::<std::path::PathBuf>::new(),
        "no kept file is left"
    );
    for &(path, seed, len, _) in &files {
        assert_eq!(
            std::fs::read(target.join(path)).unwrap(),
            data(seed, len),
            "{path}"
        );
    }
}

/// Issue 17: a build's outputs are linked into the store and hashed once; `ingest`
/// never shares an inode with the caller's file. An output rewritten in place after
/// a link changes the store's copy: it is detected and never exported.
#[test]
fn outputs_are_linked_into_the_store_and_a_rewrite_in_place_is_caught() {
    use std::os::unix::fs::MetadataExt;
    let fx = fixture(Kind::Sled, Config::default());
    let files = [("lib.rlib", 5, 200_000, false)];
    let inputs = write_files(fx.dir.path(), "plain", &files);
    fx.store.ingest(labels("p"), inputs.clone(), false).unwrap();
    assert_eq!(std::fs::metadata(&inputs[0].source).unwrap().nlink(), 1);
    let outputs = write_files(fx.dir.path(), "out", &[("lib.rlib", 6, 200_000, false)]);
    let root = fx
        .store
        .ingest_outputs(labels("o"), outputs.clone(), false)
        .unwrap()
        .root;
    let src = &outputs[0].source;
    let kept = kept_path(&fx, &fx.store.manifest(&root).unwrap().files()[0].root);
    let (a, b) = (
        std::fs::metadata(src).unwrap(),
        std::fs::metadata(&kept).unwrap(),
    );
    // A hard link here (ext4 has no reflinks); a reflink elsewhere.
    assert!(
        a.ino() == b.ino() && a.nlink() == 2 || a.ino() != b.ino(),
        "{a:?} {b:?}"
    );
    if a.ino() == b.ino() {
        let mut bytes = std::fs::read(src).unwrap();
        bytes[1000] ^= 1;
        std::fs::write(src, &bytes).unwrap();
        let out = fx.dir.path().join("x");
        assert!(matches!(
            fx.store.export(&root, &out),
            Err(StoreError::Dag { .. })
        ));
        assert!(!out.join("lib.rlib").exists());
        assert_eq!(fx.store.stats().unwrap().corruptions, 1);
    }
}

/// Issue 17 part 5: a kept file hard-linked out is not hashed again while it keeps the
/// identity it had when it was checked (the second export reads only the manifest, not
/// the file's interior block); written in place through a link, it is hashed, caught
/// and never exported again.
#[test]
fn a_linked_export_of_an_unchanged_kept_file_is_not_hashed_again_and_a_write_is_caught() {
    use rdht_store::{Mode, Placed};
    let fx = fixture(Kind::Sled, Config::default());
    let files = [("lib.rlib", 8, 700_000, false)];
    let root = ingest(&fx, "a", &files, false);
    let reads = || fx.store.stats().unwrap().reads;
    let export = |to: &str| {
        let r0 = reads();
        let out = fx
            .store
            .export_with(&root, &fx.dir.path().join(to), &|_| Mode::Link)
            .map(|(_, placed)| placed);
        (out, reads() - r0)
    };
    let (placed, n1) = export("x1");
    if placed.unwrap() != [Placed::HardLink] {
        return; // A reflink or a copy (another filesystem): hashed every time.
    }
    // The manifest's block, then the file's interior block (its leaves are hashed
    // from the file).
    assert_eq!(n1, 2);
    let (placed, n2) = export("x2");
    assert_eq!(placed.unwrap(), [Placed::HardLink]);
    assert_eq!(n2, 1, "only the manifest is read");
    let linked = fx.dir.path().join("x2/lib.rlib");
    assert_eq!(std::fs::read(&linked).unwrap(), data(8, 700_000));
    // A write in place through the link (same size, new bytes at offset 5000).
    use std::os::unix::fs::FileExt;
    std::fs::File::options()
        .write(true)
        .open(&linked)
        .unwrap()
        .write_all_at(b"changed", 5000)
        .unwrap();
    let (res, n3) = export("x3");
    assert!(matches!(res, Err(StoreError::Dag { .. })), "{res:?}");
    assert_eq!(n3, 2, "hashed again");
    assert!(!fx.dir.path().join("x3/lib.rlib").exists());
    assert_eq!(fx.store.stats().unwrap().corruptions, 1);
}

/// Issue 17: a fetch's leaves, kept in packs until registration, leave the disk once
/// their file is kept whole: their pack bytes are punched out, so the fetched bytes
/// are on disk once, not twice.
#[test]
fn registered_fetch_frees_its_leaves_pack_bytes() {
    use std::os::unix::fs::MetadataExt;
    let fx = fixture(Kind::Sled, Config::default());
    let src = fixture(Kind::Memory, Config::default());
    let files = [("big", 11, 3_000_000, false)];
    let root = ingest(&src, "a", &files, false);
    let blocks = blocks_of(&src.store, &root);
    let session = fx.store.session();
    session.put_many(&blocks).unwrap();
    let packs = || {
        std::fs::read_dir(fx.dir.path().join("packs"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap())
            .fold((0, 0), |(len, disk), m| {
                (len + m.len(), disk + m.blocks() * 512)
            })
    };
    let (len, disk) = packs();
    assert!(len >= 3_000_000 && disk >= 3_000_000, "{len} {disk}");
    session.register(root, false).unwrap();
    let (len_after, disk_after) = packs();
    assert_eq!(len_after, len, "packs keep their length");
    assert!(
        disk_after < 100_000,
        "{disk_after} bytes of packs left on disk"
    );
    check_export(&fx, &root, &files);
}

/// Issue 17: a target on another filesystem (`/dev/shm`, a tmpfs) gets copies
/// (`copy_file_range`, or reads and writes where the kernel refuses it across
/// filesystems), byte-identical, each with its own inode and mode.
#[test]
fn export_across_filesystems_copies_and_verifies() {
    use rdht_store::{Mode, Placed};
    use std::os::unix::fs::MetadataExt;
    let fx = fixture(Kind::Sled, Config::default());
    let root = ingest(&fx, "a", FILES, false);
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (a tmpfs) is needed");
    assert_ne!(
        std::fs::metadata(shm.path()).unwrap().dev(),
        std::fs::metadata(fx.dir.path()).unwrap().dev(),
        "/dev/shm is another filesystem"
    );
    let (_, placed) = fx
        .store
        .export_with(&root, shm.path(), &|_| Mode::Link)
        .unwrap();
    assert!(placed.iter().all(|p| *p != Placed::HardLink), "{placed:?}");
    for &(path, seed, len, exec) in FILES {
        let p = shm.path().join(path);
        assert_eq!(std::fs::read(&p).unwrap(), data(seed, len), "{path}");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, if exec { 0o755 } else { 0o644 }, "{path}");
    }
    fx.store.remove_artifact(&root).unwrap();
    for &(path, seed, len, _) in FILES {
        assert_eq!(
            std::fs::read(shm.path().join(path)).unwrap(),
            data(seed, len)
        );
    }
}

#[test]
fn disk_full_is_reported_with_path_and_leaves_no_artifact() {
    let backend = DiskFull {
        inner: MemoryBackend::new(),
        ok: AtomicUsize::new(3),
        kind: io::ErrorKind::StorageFull,
    };
    let store = Store::with_backend(Box::new(backend), Config::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(dir.path(), "a", &[("big", 1, 3_000_000, false)]);
    let err = store.ingest(labels("a"), files, true).unwrap_err();
    assert!(err.is_disk_full(), "{err:?}");
    assert!(err.to_string().contains("/fake/store"), "{err}");
    assert_eq!(store.artifacts().unwrap(), vec![]);
}

#[test]
fn permission_denied_and_export_errors_name_path_and_cause() {
    // The backend refuses the very first write (the format marker at open).
    let backend = DiskFull {
        inner: MemoryBackend::new(),
        ok: AtomicUsize::new(0),
        kind: io::ErrorKind::PermissionDenied,
    };
    let err = Store::with_backend(Box::new(backend), Config::default()).unwrap_err();
    assert!(err.is_permission_denied(), "{err:?}");
    assert!(
        matches!(&err, StoreError::Backend { op: "write", path, .. } if path == Path::new("/fake/store"))
    );
    // An export under a regular file fails with that path and the OS cause.
    let fx = fixture(Kind::Memory, Config::default());
    let root = ingest(&fx, "a", &[("f", 1, 10, false)], false);
    let file = fx.dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = fx.store.export(&root, &file.join("out")).unwrap_err();
    match &err {
        StoreError::File { op, path, source } => {
            assert_eq!(*op, "creating directory");
            assert_eq!(path, &file.join("out"));
            assert_eq!(source.kind(), io::ErrorKind::NotADirectory);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("plain-file/out"), "{err}");
}

#[test]
fn concurrent_ingests_and_gc_keep_the_invariants() {
    for kind in [Kind::Memory, Kind::Sled] {
        let fx = Arc::new(fixture(kind, Config::default()));
        let mut pinned = Vec::new();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..3u8)
                .map(|t| {
                    let fx = fx.clone();
                    scope.spawn(move || {
                        let mut mine = Vec::new();
                        for n in 0..6u8 {
                            // Shared contents across threads, plus one file of its own.
                            let files = [
                                ("shared", u64::from(n % 3), 50_000, false),
                                (
                                    "own",
                                    1000 + u64::from(t) * 10 + u64::from(n),
                                    30_000,
                                    false,
                                ),
                            ];
                            let name = format!("t{t}n{n}");
                            let pin = n % 2 == 0;
                            let root = ingest(&fx, &name, &files, pin);
                            if pin {
                                mine.push((root, files));
                            }
                        }
                        mine
                    })
                })
                .collect();
            let gc = {
                let fx = fx.clone();
                scope.spawn(move || {
                    for _ in 0..20 {
                        fx.store.gc_to(0).unwrap();
                        std::thread::yield_now();
                    }
                })
            };
            for w in workers {
                pinned.extend(w.join().unwrap());
            }
            gc.join().unwrap();
        });
        // Every pinned artifact survived whole; every listed one verifies. A GC that
        // raced an ingest may leave that ingest's duplicate loose blocks behind; one GC
        // with no writer running reclaims them, after which the counters are exactly
        // the listed artifacts' blocks.
        for (root, files) in &pinned {
            check_export(&fx, root, files);
        }
        let (ids, logical) = held(&fx.store, &fx.store.artifact_roots().unwrap());
        fx.store.gc_to(u64::MAX).unwrap();
        let st = fx.store.stats().unwrap();
        assert_eq!(st.blocks, ids.len() as u64, "{kind:?}");
        assert_eq!(st.logical_bytes, logical, "{kind:?}");
        assert_eq!(fx.store.gc().unwrap().blocks_removed, 0, "{kind:?}");
        assert_eq!(st.corruptions, 0);
    }
}

#[test]
fn sled_reopen_keeps_artifacts_records_pins_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let src = dir.path().join("src");
    let files = write_files(&src, "a", FILES);
    let rec = record(3, 3, &Block::leaf(b"x").unwrap().id(), 1);
    let (root, before) = {
        let store = Store::open(&db, Config::default()).unwrap();
        let root = store.ingest(labels("a"), files, true).unwrap().root;
        store.put_record(&rec).unwrap();
        // A loose block from this run is reclaimed by the next open.
        store.put(&Block::leaf(b"loose").unwrap()).unwrap();
        let mut st = store.stats().unwrap();
        st.blocks -= 1;
        st.logical_bytes -= 6;
        store.close().unwrap();
        (root, st)
    };
    let store = Store::open(&db, Config::default()).unwrap();
    let after = store.stats().unwrap();
    assert_eq!(
        (
            after.blocks,
            after.logical_bytes,
            after.pinned_bytes,
            after.artifacts
        ),
        (
            before.blocks,
            before.logical_bytes,
            before.pinned_bytes,
            before.artifacts
        )
    );
    assert!(!store.has(&Block::leaf(b"loose").unwrap().id()).unwrap());
    assert!(store.artifact(&root).unwrap().unwrap().pinned);
    assert_eq!(store.records(&rec.key()).unwrap(), vec![rec]);
    let out = tempfile::tempdir().unwrap();
    store.export(&root, out.path()).unwrap();
    for &(path, seed, len, _) in FILES {
        assert_eq!(
            std::fs::read(out.path().join(path)).unwrap(),
            data(seed, len)
        );
    }
}

/// Compaction: loose blocks of a fetch in flight (kept in packs until registration)
/// move out of mostly-dead packs, and the fetch then registers from the moved copies.
#[test]
fn sled_gc_compacts_mostly_dead_packs() {
    let config = Config {
        pack_size: 256 << 10,
        ..Config::default()
    };
    let fx = fixture(Kind::Sled, config);
    let src = fixture(Kind::Memory, Config::default());
    // Smaller than half a pack: the first pack is mostly "drop", so it is emptied too.
    let keep = [("keep", 1, 100_000, false)];
    let k = ingest(&src, "k", &keep, false);
    let keep_blocks = blocks_of(&src.store, &k);
    let (_, drop_blocks) = DagBuilder::build(&data(2, 3_000_000));
    let session = fx.store.session();
    session.put_many(&keep_blocks).unwrap();
    for chunk in drop_blocks.chunks(64) {
        fx.store.session().put_many(chunk).unwrap();
    }
    let packs_dir = fx.dir.path().join("packs");
    let count = || std::fs::read_dir(&packs_dir).unwrap().count();
    // Blocks are appended in batches of about 1 MiB: "keep" fills the first pack, the
    // 3 MB of "drop" the next ones.
    let before_packs = count();
    assert!(before_packs >= 3, "{before_packs}");
    let before = fx.store.stats().unwrap();
    let report = fx.store.gc_to(u64::MAX).unwrap();
    assert_eq!(report.blocks_removed, drop_blocks.len() as u64);
    assert_eq!(
        report.packs_removed as usize,
        before_packs - 1,
        "{report:?}"
    );
    // The pack current at the GC is never compacted; the moved blocks may have filled
    // it and started the next one.
    assert!(count() <= 2, "{}", count());
    let after = fx.store.stats().unwrap();
    assert!(
        after.disk_bytes < before.disk_bytes / 2,
        "{} -> {}",
        before.disk_bytes,
        after.disk_bytes
    );
    assert_eq!(after.blocks, keep_blocks.len() as u64);
    for b in &keep_blocks {
        assert_eq!(fx.store.get(&b.id()).unwrap().as_ref(), Some(b));
    }
    session.register(k, false).unwrap();
    check_export(&fx, &k, &keep);
    assert_eq!(fx.store.stats().unwrap().corruptions, 0);
}

#[test]
fn sled_open_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file, Config::default()).unwrap_err();
    match &err {
        StoreError::Backend { op, path, .. } => {
            assert_eq!(
                (*op, path.as_path()),
                ("open", file.join("index").as_path())
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[derive(Debug, Clone)]
enum ModelOp {
    Put(u8),
    Get(u8),
    Delete(u8),
    Gc,
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        (0u8..16).prop_map(ModelOp::Put),
        (0u8..16).prop_map(ModelOp::Get),
        (0u8..16).prop_map(ModelOp::Delete),
        Just(ModelOp::Gc),
    ]
}

fn model_block(n: u8) -> Block {
    Block::leaf(&data(u64::from(n), usize::from(n) * 1000)).unwrap()
}

fn run_model(kind: Kind, ops: &[ModelOp]) {
    let fx = fixture(kind, Config::default());
    let mut model: HashMap<u8, Block> = HashMap::new();
    for op in ops {
        match op {
            ModelOp::Put(n) => {
                let new = fx.store.put(&model_block(*n)).unwrap();
                assert_eq!(new, model.insert(*n, model_block(*n)).is_none());
            }
            ModelOp::Get(n) => {
                let got = fx.store.get(&model_block(*n).id()).unwrap();
                assert_eq!(got.as_ref(), model.get(n));
                assert_eq!(
                    fx.store.has(&model_block(*n).id()).unwrap(),
                    model.contains_key(n)
                );
            }
            ModelOp::Delete(n) => {
                let deleted = fx.store.delete(&model_block(*n).id()).unwrap();
                assert_eq!(deleted, model.remove(n).is_some());
            }
            // Plain puts are loose: GC reclaims all of them.
            ModelOp::Gc => {
                let r = fx.store.gc().unwrap();
                assert_eq!(r.blocks_removed, model.len() as u64);
                model.clear();
            }
        }
        let st = fx.store.stats().unwrap();
        assert_eq!(st.blocks, model.len() as u64);
        let bytes: u64 = model.values().map(|b| b.bytes().len() as u64).sum();
        assert_eq!(st.logical_bytes, bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn blocks_match_a_hashmap_model_in_memory(ops in proptest::collection::vec(model_op(), 1..40)) {
        run_model(Kind::Memory, &ops);
    }

    #[test]
    fn blocks_match_a_hashmap_model_on_sled(ops in proptest::collection::vec(model_op(), 1..40)) {
        run_model(Kind::Sled, &ops);
    }
}

/// Artifact operations for the model test; artifacts are numbered 0..6.
#[derive(Debug, Clone)]
enum ArtOp {
    Ingest(u8, bool),
    Remove(u8),
    Pin(u8, bool),
    Export(u8),
    Gc(u8),
}

fn art_op() -> impl Strategy<Value = ArtOp> {
    prop_oneof![
        3 => (0u8..6, any::<bool>()).prop_map(|(i, p)| ArtOp::Ingest(i, p)),
        1 => (0u8..6).prop_map(ArtOp::Remove),
        1 => (0u8..6, any::<bool>()).prop_map(|(i, p)| ArtOp::Pin(i, p)),
        1 => (0u8..6).prop_map(ArtOp::Export),
        2 => (0u8..5).prop_map(ArtOp::Gc),
    ]
}

/// Files of model artifact `i`: one shared by the even or odd artifacts, one its own.
fn art_files(i: u8) -> [(&'static str, u64, usize, bool); 2] {
    [
        ("shared.rlib", u64::from(i % 2), 40_000, false),
        (
            "own.rmeta",
            100 + u64::from(i),
            20_000 + usize::from(i) * 1000,
            i == 3,
        ),
    ]
}

/// The store against a model: a map of artifacts with pins and an LRU order.
fn run_artifact_model(kind: Kind, ops: &[ArtOp]) {
    let fx = fixture(kind, Config::default());
    let mut model: HashMap<u8, bool> = HashMap::new(); // artifact -> pinned
    let mut lru: Vec<u8> = Vec::new(); // least recently used first
    let mut roots: HashMap<u8, BlockId> = HashMap::new();
    let touch = |lru: &mut Vec<u8>, i: u8| {
        lru.retain(|&x| x != i);
        lru.push(i);
    };
    for op in ops {
        match *op {
            ArtOp::Ingest(i, pin) => {
                let root = ingest(&fx, &format!("art{i}"), &art_files(i), pin);
                assert_eq!(
                    *roots.entry(i).or_insert(root),
                    root,
                    "same files, same root"
                );
                *model.entry(i).or_insert(false) |= pin;
                touch(&mut lru, i);
            }
            ArtOp::Remove(i) => {
                let Some(root) = roots.get(&i) else { continue };
                assert_eq!(
                    fx.store.remove_artifact(root).unwrap(),
                    model.remove(&i).is_some()
                );
                lru.retain(|&x| x != i);
            }
            ArtOp::Pin(i, pin) => {
                let Some(root) = roots.get(&i) else { continue };
                let r = if pin {
                    fx.store.pin(root)
                } else {
                    fx.store.unpin(root)
                };
                match model.get_mut(&i) {
                    Some(p) => {
                        r.unwrap();
                        *p = pin;
                    }
                    None => assert!(matches!(r, Err(StoreError::UnknownArtifact { .. }))),
                }
            }
            ArtOp::Export(i) => {
                let Some(root) = roots.get(&i) else { continue };
                if model.contains_key(&i) {
                    check_export(&fx, root, &art_files(i));
                    touch(&mut lru, i);
                } else {
                    let out = tempfile::tempdir().unwrap();
                    assert!(matches!(
                        fx.store.export(root, out.path()),
                        Err(StoreError::Dag { .. })
                    ));
                }
            }
            ArtOp::Gc(k) => {
                let logical = fx.store.stats().unwrap().logical_bytes;
                let target = logical * u64::from(k) / 4;
                let report = fx.store.gc_to(target).unwrap();
                let by_root: HashMap<BlockId, u8> = roots.iter().map(|(i, r)| (*r, *i)).collect();
                let evicted: Vec<u8> = report.evicted.iter().map(|r| by_root[r]).collect();
                // Evicted: the least recently used unpinned artifacts, in that order.
                let unpinned: Vec<u8> = lru.iter().copied().filter(|i| !model[i]).collect();
                assert_eq!(evicted, unpinned[..evicted.len()].to_vec(), "{lru:?}");
                for i in &evicted {
                    model.remove(i);
                    lru.retain(|x| x != i);
                }
                let after = fx.store.stats().unwrap().logical_bytes;
                assert_eq!(report.logical_bytes, after);
                assert!(after <= target || evicted.len() == unpinned.len());
                if !evicted.is_empty() {
                    // Every artifact has blocks of its own, so evicting one frees bytes.
                    assert!(report.bytes_freed > 0);
                }
            }
        }
        // The store holds exactly the model's artifacts, pins and blocks.
        let mut listed = fx.store.artifact_roots().unwrap();
        listed.sort();
        let mut want: Vec<BlockId> = model.keys().map(|i| roots[i]).collect();
        want.sort();
        assert_eq!(listed, want);
        let mut pinned_bytes = 0;
        for (i, pinned) in &model {
            let info = fx.store.artifact(&roots[i]).unwrap().unwrap();
            assert_eq!(info.pinned, *pinned);
            if *pinned {
                pinned_bytes += info.stored_bytes;
            }
        }
        let listed: Vec<BlockId> = model.keys().map(|i| roots[i]).collect();
        let (ids, logical) = held(&fx.store, &listed);
        let st = fx.store.stats().unwrap();
        assert_eq!((st.blocks, st.logical_bytes), (ids.len() as u64, logical));
        assert_eq!(st.pinned_bytes, pinned_bytes);
        assert_eq!(st.artifacts, model.len() as u64);
        assert_eq!(
            fx.store.gc().unwrap().blocks_removed,
            0,
            "no loose block left"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn artifacts_pins_and_lru_gc_match_a_model_in_memory(
        ops in proptest::collection::vec(art_op(), 1..25)
    ) {
        run_artifact_model(Kind::Memory, &ops);
    }

    #[test]
    fn artifacts_pins_and_lru_gc_match_a_model_on_sled(
        ops in proptest::collection::vec(art_op(), 1..25)
    ) {
        run_artifact_model(Kind::Sled, &ops);
    }
}

/// The location of block `id` in the packs.
fn loc_of(store_raw: &Arc<dyn Backend>, id: &BlockId) -> rdht_store::packs::Loc {
    let value = store_raw.get(&block_key(id)).unwrap().unwrap();
    rdht_store::packs::Loc::decode(&value).unwrap()
}

/// Compressible leaves are kept LZ4-compressed in the packs (specs/store.md §2.2: a
/// fetch's blocks until registration, and artifacts stored before format 3) and read
/// back exactly, and a damaged compressed block is handled like any corrupt block.
#[test]
fn sled_compressible_blocks_are_stored_lz4_and_read_back_exactly() {
    let config = Config {
        pack_size: 256 << 10,
        ..Config::default()
    };
    let fx = fixture(Kind::Sled, config);
    let content = text(9, 200_000);
    let (_, mut blocks) = DagBuilder::build(&content);
    blocks.extend(DagBuilder::build(&data(3, 40_000)).1);
    for b in &blocks {
        fx.store.put(b).unwrap();
    }
    let (mut lz4, mut raw) = (0, 0);
    for b in &blocks {
        let loc = loc_of(&fx.raw, &b.id());
        let block = fx.store.get(&b.id()).unwrap().unwrap();
        assert_eq!(block.bytes(), b.bytes());
        match loc.raw_len {
            Some(n) => {
                lz4 += 1;
                assert_eq!(n as usize, block.bytes().len());
                assert!(loc.len < n - n / 8, "{} of {n}", loc.len);
                assert_eq!(block.lz4().map(Bytes::len), Some(loc.len as usize));
            }
            None => {
                raw += 1;
                assert_eq!(loc.len as usize, block.bytes().len());
            }
        }
    }
    // 13 text leaves compress; the 3 noise leaves and the interior blocks of hashes
    // do not.
    assert_eq!(lz4, 13, "{lz4} lz4 and {raw} raw of {}", blocks.len());
    let st = fx.store.stats().unwrap();
    assert!(
        st.disk_bytes < st.logical_bytes / 2,
        "{} on disk for {} logical",
        st.disk_bytes,
        st.logical_bytes
    );
    let text_leaf = blocks
        .iter()
        .map(Block::id)
        .find(|id| loc_of(&fx.raw, id).raw_len.is_some())
        .unwrap();

    // A flipped byte in compressed data: the read fails its check, the block is
    // removed and counted, and putting it again repairs it.
    let good = fx.store.get(&text_leaf).unwrap().unwrap();
    corrupt_stored(&fx, &text_leaf, 5);
    assert_eq!(fx.store.get(&text_leaf).unwrap(), None);
    assert!(!fx.store.has(&text_leaf).unwrap());
    assert_eq!(fx.store.stats().unwrap().corruptions, 1);
    fx.store
        .put(&Block::verified(text_leaf, good.bytes().clone()).unwrap())
        .unwrap();
    assert_eq!(
        fx.store.get(&text_leaf).unwrap().unwrap().bytes(),
        good.bytes()
    );
}

/// Compaction moves LZ4 blocks as they are stored: still compressed, still exact.
#[test]
fn sled_gc_compaction_keeps_blocks_compressed() {
    let config = Config {
        pack_size: 256 << 10,
        ..Config::default()
    };
    let fx = fixture(Kind::Sled, config);
    let content = text(4, 150_000);
    let (_, keep) = DagBuilder::build(&content);
    let (_, drop_blocks) = DagBuilder::build(&data(2, 1_000_000));
    let session = fx.store.session();
    session.put_many(&keep).unwrap();
    fx.store.session().put_many(&drop_blocks).unwrap();
    fx.store
        .session()
        .put_many(&DagBuilder::build(&data(3, 300_000)).1)
        .unwrap();
    let locs = || {
        keep.iter()
            .map(|b| loc_of(&fx.raw, &b.id()))
            .collect::<Vec<_>>()
    };
    let before = locs();
    let report = fx.store.gc_to(u64::MAX).unwrap();
    assert!(report.packs_removed >= 1, "{report:?}");
    let after = locs();
    assert_ne!(before, after, "the blocks moved");
    let sizes = |l: &[rdht_store::packs::Loc]| -> Vec<(u32, Option<u32>)> {
        l.iter().map(|l| (l.len, l.raw_len)).collect()
    };
    assert_eq!(sizes(&before), sizes(&after));
    assert_eq!(after.iter().filter(|l| l.raw_len.is_some()).count(), 10);
    for b in &keep {
        assert_eq!(fx.store.get(&b.id()).unwrap().unwrap().bytes(), b.bytes());
    }
    drop(session);
}

/// Stores of formats 1 and 2 open and are marked format 3 (specs/store.md §2.4), so
/// an older build refuses them; their artifacts, whose files are in packs, still
/// export and are evicted as before. An unknown format is refused.
#[test]
fn format_1_and_2_stores_are_upgraded_and_unknown_formats_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("index");
    let raw = || SledBackend::open(&db, &SledOptions::default()).unwrap();
    let set_format = |v: u32| {
        let raw = raw();
        let mut batch = Batch::new();
        batch.put(b"mformat".to_vec(), v.to_le_bytes().to_vec());
        raw.apply(batch).unwrap();
        Box::new(raw).close().unwrap();
    };
    let format = || {
        let raw = raw();
        let v = raw.get(b"mformat").unwrap().unwrap();
        Box::new(raw).close().unwrap();
        u32::from_le_bytes(v[..].try_into().unwrap())
    };
    // A format 2 artifact: every block in packs with a reference count and a block
    // list, no kept file. Made by putting its blocks and writing its index entries.
    let content = text(1, 50_000);
    let file = DagBuilder::build(&content);
    let manifest = rdht_core::Manifest::new(
        labels("f"),
        vec![rdht_core::FileEntry {
            path: "f".into(),
            executable: false,
            size: content.len() as u64,
            root: file.0.id,
        }],
    )
    .unwrap();
    let (mroot, mblocks) = manifest.to_dag();
    let mut blocks = file.1.clone();
    blocks.extend(mblocks);
    let root = mroot.id;
    {
        let store = Store::open(dir.path(), Config::default()).unwrap();
        for b in &blocks {
            store.put(b).unwrap();
        }
        store.close().unwrap();
    }
    {
        let raw = raw();
        let mut batch = Batch::new();
        let mut ids: Vec<BlockId> = blocks.iter().map(Block::id).collect();
        ids.sort();
        let mut list = Vec::new();
        let mut stored = 0u64;
        for b in &blocks {
            let mut k = vec![b'r'];
            k.extend_from_slice(b.id().as_bytes());
            let len = b.bytes().len() as u32;
            stored += u64::from(len);
            batch.put(k, rdht_store::keys::RefEntry { count: 1, len }.encode());
        }
        for id in &ids {
            list.extend_from_slice(id.as_bytes());
        }
        batch.put(rdht_store::keys::list_key(&root, 0), list);
        let meta = rdht_store::keys::ArtifactMeta {
            pinned: false,
            file_bytes: content.len() as u64,
            stored_bytes: stored,
            blocks: ids.len() as u32,
            files: 1,
        };
        batch.put(
            rdht_store::keys::id_key(b'a', root.as_bytes()),
            meta.encode(),
        );
        batch.put(
            rdht_store::keys::id_key(b'u', root.as_bytes()),
            0u64.to_le_bytes().to_vec(),
        );
        batch.put(b"mformat".to_vec(), 2u32.to_le_bytes().to_vec());
        raw.apply(batch).unwrap();
        Box::new(raw).close().unwrap();
    }
    for v in [2, 1] {
        set_format(v);
        let store = Store::open(dir.path(), Config::default()).unwrap();
        let out = tempfile::tempdir().unwrap();
        store.export(&root, out.path()).unwrap();
        assert_eq!(std::fs::read(out.path().join("f")).unwrap(), content);
        let st = store.stats().unwrap();
        assert_eq!(
            (st.artifacts, st.blocks, st.files),
            (1, blocks.len() as u64, 0)
        );
        store.close().unwrap();
        assert_eq!(format(), 3);
    }
    set_format(4);
    let err = Store::open(dir.path(), Config::default()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Format {
                found: 4,
                expected: 3,
                ..
            }
        ),
        "{err}"
    );
    set_format(2);
    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert!(store.remove_artifact(&root).unwrap());
    let st = store.stats().unwrap();
    assert_eq!((st.artifacts, st.blocks, st.logical_bytes), (0, 0, 0));
}

/// Regression (issue 20): a closed sled store reopens at once, every time. sled's I/O
/// threads hold its file lock for a while after the database is dropped; `close` (and
/// a plain drop) return only once it is free.
#[test]
fn sled_store_reopens_at_once_after_close_or_drop() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let config = Config {
        pack_size: 256 << 10,
        ..Config::default()
    };
    let mut roots = Vec::new();
    for round in 0..12u64 {
        let store = Store::open(&db, config.clone()).unwrap();
        assert_eq!(store.artifacts().unwrap().len(), roots.len());
        let files = write_files(
            dir.path(),
            &format!("r{round}"),
            &[("f", round, 400_000, false)],
        );
        roots.push(store.ingest(labels("r"), files, false).unwrap().root);
        // A clone keeps the store open: close refuses and says so.
        let clone = store.clone();
        let err = store.close().unwrap_err();
        assert!(
            matches!(&err, StoreError::InUse { handles: 1, path } if path == &db.join("index")),
            "{err:?}"
        );
        if round % 2 == 0 {
            clone.close().unwrap();
        } else {
            drop(clone);
        }
    }
    let store = Store::open(&db, config).unwrap();
    for root in &roots {
        store.verify_artifact(root).unwrap();
    }
}

/// Puts DAG `dag` of `src` through `session` as a fetch does: the manifest's blocks and
/// every interior block as blocks; a file's (`size` given) leaves written in place at
/// their offsets, except those `skip` leaves out.
fn fetch_dag(
    src: &Store,
    session: &rdht_store::Session,
    dag: BlockId,
    size: Option<u64>,
    skip: &dyn Fn(&BlockId) -> bool,
) {
    let mut v = rdht_core::DagVerifier::new(dag, size, rdht_core::Limits::default());
    let mut offset = 0u64;
    while let Some(id) = v.next_expected() {
        let block = v.push(src.get(&id).unwrap().unwrap().into_bytes()).unwrap();
        match size {
            Some(size) if block.kind() == rdht_core::BlockKind::Leaf => {
                if !skip(&id) {
                    session.write_leaf(dag, size, offset, &block).unwrap();
                }
                offset += block.payload().len() as u64;
            }
            _ => {
                session.put(&block).unwrap();
            }
        }
    }
}

/// Bytes of the store's pack files and the number of temporaries in `files/tmp` (an
/// in-memory store has neither).
fn packs_and_temps(fx: &Fx) -> (u64, usize) {
    let count = |dir: &str| -> Vec<std::fs::Metadata> {
        match std::fs::read_dir(fx.dir.path().join(dir)) {
            Ok(rd) => rd.map(|e| e.unwrap().metadata().unwrap()).collect(),
            Err(_) => Vec::new(),
        }
    };
    let packs = count("packs").iter().map(|m| m.len()).sum();
    (packs, count("files/tmp").len())
}

/// Issue 17 part 4: a fetch writes each file's leaves at their offsets; registration
/// installs the file by renaming it, so no leaf passes through the packs, and a leaf
/// the fetch took from the store (here file b's first, which is held file a's) is
/// filled in from there.
fn a_fetch_written_in_place_is_installed_by_rename_not_through_packs(kind: Kind) {
    let fx = fixture(kind, Config::default());
    let src = fixture(Kind::Memory, Config::default());
    ingest(&fx, "held", &[("a", 11, 16_384, false)], true);
    let files = [("b", 11, 3_000_000, true), ("c", 12, 5, false)];
    let root = ingest(&src, "x", &files, false);
    let manifest = src.store.manifest(&root).unwrap();
    let session = fx.store.session();
    fetch_dag(&src.store, &session, root, None, &|_| false);
    let local = fx.store.clone();
    let mut skipped = 0;
    for f in manifest.files() {
        fetch_dag(&src.store, &session, f.root, Some(f.size), &|id| {
            local.has(id).unwrap()
        });
    }
    for f in manifest.files() {
        let mut v = rdht_core::DagVerifier::new(f.root, Some(f.size), Default::default());
        while let Some(id) = v.next_expected() {
            if v.next_leaf().is_some() && fx.store.has(&id).unwrap() {
                skipped += 1;
            }
            v.push(src.store.get(&id).unwrap().unwrap().into_bytes())
                .unwrap();
        }
    }
    assert_eq!(skipped, 1, "b's first leaf is a's");
    let (packs_before, temps) = packs_and_temps(&fx);
    if matches!(kind, Kind::Sled) {
        assert_eq!(temps, 2, "one temporary per fetched file");
        assert!(packs_before < 100_000, "{packs_before} bytes in packs");
    }
    session.register(root, false).unwrap();
    let (packs_after, temps) = packs_and_temps(&fx);
    assert_eq!((packs_after, temps), (packs_before, 0));
    check_export(&fx, &root, &files);
    let st = fx.store.stats().unwrap();
    assert_eq!((st.artifacts, st.files), (2, 3));
    // Leaves are served from the installed file, by id.
    let (_, ids) = fx.store.verify_artifact(&root).unwrap();
    assert_eq!(ids.len(), 184 + 1 + 1 + 1);
}

/// A fetch in place that misses a leaf is refused at registration; its temporaries
/// go with the session, and nothing is listed or kept.
fn an_incomplete_fetch_in_place_is_never_registered_and_leaves_nothing(kind: Kind) {
    let fx = fixture(kind, Config::default());
    let src = fixture(Kind::Memory, Config::default());
    let files = [("b", 21, 200_000, false)];
    let root = ingest(&src, "x", &files, false);
    let manifest = src.store.manifest(&root).unwrap();
    let f = &manifest.files()[0];
    let mut leaves = Vec::new();
    let mut v = rdht_core::DagVerifier::new(f.root, Some(f.size), Default::default());
    while let Some(id) = v.next_expected() {
        if v.next_leaf().is_some() {
            leaves.push(id);
        }
        v.push(src.store.get(&id).unwrap().unwrap().into_bytes())
            .unwrap();
    }
    assert_eq!(leaves.len(), 13);
    let gap = leaves[7];
    let session = fx.store.session();
    fetch_dag(&src.store, &session, root, None, &|_| false);
    fetch_dag(&src.store, &session, f.root, Some(f.size), &|id| *id == gap);
    let err = session.register(root, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("artifact {root} does not verify: block {gap} is missing")
    );
    assert_eq!(
        packs_and_temps(&fx).1,
        0,
        "the temporary went with the session"
    );
    assert!(fx.store.artifact(&root).unwrap().is_none());
    assert_eq!(fx.store.stats().unwrap().files, 0);
    // The same fetch again, complete, registers.
    let session = fx.store.session();
    fetch_dag(&src.store, &session, root, None, &|_| false);
    fetch_dag(&src.store, &session, f.root, Some(f.size), &|_| false);
    session.register(root, false).unwrap();
    check_export(&fx, &root, &files);
}
