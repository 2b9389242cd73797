//! A full disk under the on-disk store (issue 19, part 2; specs/store.md §7.1): the
//! store lives on a small tmpfs that this test mounts (it needs root, as the other
//! root-only tests run through `testnet/test.sh`), and ingests and fetch-like sessions
//! fill it. Each write that fails for space is an error that says so, and nothing
//! stored before is lost; once space is freed, writes succeed again in the same open
//! store (sled's index, which keeps its first I/O error, is opened again), every
//! artifact verifies, and a reopen finds the same artifacts and counters.
//!
//! Does not own: full disks seen from the daemon and builds (`node/tests/faults.rs`).

#![allow(clippy::unwrap_used)] // Tests may unwrap (house style).

use std::path::Path;
use std::process::Command;

use rdht_core::{BlockId, DagBuilder, FileEntry, Labels, Manifest};
use rdht_store::{Config, IngestFile, Stats, Store};
use rdht_testkit::data;

/// A tmpfs at `at`, unmounted when dropped.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(at: &'a Path, size: &str) -> Tmpfs<'a> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(ok.success(), "mount needs root");
        Tmpfs(at)
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// The counters a reopen rebuilds from the index (specs/store.md §3).
fn kept(s: &Stats) -> (u64, u64, u64, u64, u64) {
    (
        s.blocks,
        s.logical_bytes,
        s.files,
        s.artifacts,
        s.pinned_bytes,
    )
}

/// Checks that every one of `arts` is listed, pinned, verifies, and exports its bytes.
fn assert_intact(store: &Store, arts: &[(BlockId, Vec<u8>)], out: &Path) {
    for (i, (root, bytes)) in arts.iter().enumerate() {
        let info = store.artifact(root).unwrap().expect("listed");
        assert!(info.pinned);
        store.verify_artifact(root).unwrap();
        let dir = out.join(i.to_string());
        store.export(root, &dir).unwrap();
        assert!(
            std::fs::read(dir.join("out.bin")).unwrap() == *bytes,
            "artifact {i}"
        );
    }
}

#[test]
fn a_full_disk_loses_nothing_stored_and_writes_resume_once_space_is_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = tmp.path().join("fs");
    let _fs = Tmpfs::mount(&fs, "16m");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Space to give back later.
    std::fs::write(fs.join("ballast"), vec![1u8; 6 << 20]).unwrap();
    let store = Store::open(fs.join("store"), Config::default()).unwrap();

    // Ingest 1 MiB artifacts (from another filesystem: a kernel copy) until the disk is
    // full; every failure is a full disk, and the ones before it stay.
    let mut arts = Vec::new();
    let mut failed = 0;
    for i in 0..40u64 {
        let bytes = data(i, 1 << 20);
        let p = src.join(format!("{i}.bin"));
        std::fs::write(&p, &bytes).unwrap();
        let file = IngestFile::from_disk("out.bin", &p).unwrap();
        match store.ingest_outputs(Labels::default(), vec![file], true) {
            Ok(a) => arts.push((a.root, bytes)),
            Err(e) => {
                assert!(e.is_disk_full(), "{e}");
                failed += 1;
                if failed == 3 {
                    break;
                }
            }
        }
    }
    assert_eq!(failed, 3);
    assert!(arts.len() >= 2, "{} artifacts fit", arts.len());
    let f = store.write_failure().expect("a write failure");
    assert_eq!(f.errno, "ENOSPC");
    assert!(f.path.starts_with(fs.join("store")), "{f:?}");
    assert!(f.failures >= 3);

    // A fetch-like session: blocks put in batches, then registration. With no space
    // the puts or the registration fail; nothing half-made is listed.
    let fetched = data(100, 3 << 19);
    let (link, mut blocks) = DagBuilder::build(&fetched);
    let manifest = Manifest::new(
        Labels::default(),
        vec![FileEntry {
            path: "out.bin".into(),
            executable: false,
            size: fetched.len() as u64,
            root: link.id,
        }],
    )
    .unwrap();
    let (mroot, mblocks) = manifest.to_dag();
    blocks.extend(mblocks);
    let session = store.session();
    let put = blocks
        .chunks(64)
        .try_for_each(|c| session.put_many(c).map(drop));
    let registered = put.and_then(|()| session.register(mroot.id, true));
    let e = registered.expect_err("no room for 1.5 MiB");
    assert!(e.is_disk_full(), "{e}");
    assert_eq!(store.artifact(&mroot.id).unwrap(), None);
    // Reads go on while the disk is full.
    assert_intact(&store, &arts, &tmp.path().join("out-full"));

    // Something else takes the last bytes: the store gives up its reserve for its
    // index, whose small writes go on.
    assert!(fs.join("store/reserve").is_file());
    let take_all = |name: &str| {
        let mut f = std::fs::File::create(fs.join(name)).unwrap();
        while std::io::Write::write_all(&mut f, &[7u8; 4096]).is_ok() {}
    };
    take_all("other");
    let mark = |i: u32| {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_le_bytes());
        store.add_mark(9, &id, 1).and_then(|_| store.flush())
    };
    for i in 0..200 {
        mark(i).unwrap();
    }
    assert!(!fs.join("store/reserve").exists());
    assert_intact(&store, &arts, &tmp.path().join("out-reserve"));
    // When something takes that too, the index's writes fail (sled then keeps its
    // error until its database is opened again) ...
    take_all("other-2");
    let failed = (200..50_000).find_map(|i| mark(i).err());
    let e = failed.expect("the index never met the full disk");
    assert!(e.is_disk_full(), "{e}");
    assert_eq!(store.write_failure().unwrap().errno, "ENOSPC");
    // ... and work again once space is freed, below.
    std::fs::remove_file(fs.join("other")).unwrap();
    std::fs::remove_file(fs.join("other-2")).unwrap();

    // An export to a full destination (another filesystem: a kernel copy) fails for
    // space and leaves no temporary there; the store is untouched.
    let dest = tmp.path().join("dest");
    let _dest = Tmpfs::mount(&dest, "512k");
    let e = store
        .export(&arts[0].0, &dest)
        .expect_err("no room for 1 MiB");
    assert!(e.is_disk_full(), "{e}");
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    assert_intact(&store, &arts, &tmp.path().join("out-dest"));

    // Space is freed: the same open store writes again.
    std::fs::remove_file(fs.join("ballast")).unwrap();
    let session = store.session();
    for c in blocks.chunks(64) {
        session.put_many(c).unwrap();
    }
    session.register(mroot.id, true).unwrap();
    let p = src.join("after.bin");
    let after = data(200, 1 << 20);
    std::fs::write(&p, &after).unwrap();
    let file = IngestFile::from_disk("out.bin", &p).unwrap();
    let a = store
        .ingest_outputs(Labels::default(), vec![file], true)
        .unwrap();
    assert_eq!(store.write_failure(), None);
    arts.push((a.root, after));
    arts.push((mroot.id, fetched));
    assert_intact(&store, &arts, &tmp.path().join("out-freed"));

    // A reopen finds exactly these artifacts, with the same counters (after a GC has
    // reclaimed the failed ingests' loose blocks, as the reopen does), and no leftover
    // temporary.
    store.gc().unwrap();
    let stats = store.stats().unwrap();
    assert_eq!(stats.artifacts, arts.len() as u64);
    store.close().unwrap();
    let store = Store::open(fs.join("store"), Config::default()).unwrap();
    assert_eq!(kept(&store.stats().unwrap()), kept(&stats));
    assert_eq!(store.artifacts().unwrap().len(), arts.len());
    assert_intact(&store, &arts, &tmp.path().join("out-reopened"));
    assert_eq!(
        std::fs::read_dir(fs.join("store/files/tmp"))
            .unwrap()
            .count(),
        0
    );
}
