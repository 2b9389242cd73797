//! Byte flips in the sled store's files on disk (specs/store.md §7).
//!
//! Owns: copying a closed store, flipping bytes in its files (at random offsets, and
//! inside one block's stored bytes), reopening it and checking that corruption is
//! either refused at open with an error naming the path, or detected on read: no block,
//! record or exported file ever comes back with bytes other than the originals.
//! Does not own: corruption injected through the backend API (`tests/store.rs`).

#![allow(clippy::unwrap_used)] // Tests may unwrap (house style).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use rdht_core::{BlockId, BuildKey, BuildRecord, DagBuilder, Labels, SigningKey};
use rdht_store::{BlockStore, Config, IngestFile, Store, StoreError};

fn contents(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const FILES: &[(&str, u64, usize)] = &[
    ("a.rlib", 1, 300_000),
    ("b.rmeta", 2, 40_000),
    ("c", 3, 5_000),
];

struct Original {
    root: BlockId,
    blocks: HashMap<BlockId, Vec<u8>>,
    record: BuildRecord,
}

fn build(db: &Path, scratch: &Path) -> Original {
    let store = Store::open(db, Config::default()).unwrap();
    let files = FILES
        .iter()
        .map(|&(name, seed, len)| {
            let p = scratch.join(name);
            fs::write(&p, contents(seed, len)).unwrap();
            IngestFile::from_disk(name, &p).unwrap()
        })
        .collect();
    let root = store.ingest(Labels::default(), files, true).unwrap().root;
    let (_, ids) = store.verify_artifact(&root).unwrap();
    let mut blocks: HashMap<BlockId, Vec<u8>> = ids
        .iter()
        .map(|id| (*id, store.get(id).unwrap().unwrap().bytes().to_vec()))
        .collect();
    // The files' leaves, kept as byte ranges of the store's files.
    for &(_, seed, len) in FILES {
        for b in DagBuilder::build(&contents(seed, len)).1 {
            assert_eq!(store.get(&b.id()).unwrap().unwrap().bytes(), b.bytes());
            blocks.insert(b.id(), b.bytes().to_vec());
        }
    }
    let record = BuildRecord::sign(
        BuildKey::from_bytes([5; 32]),
        root,
        345_000,
        1,
        Labels::default(),
        &SigningKey::from_bytes(&[6; 32]),
    )
    .unwrap();
    store.put_record(&record).unwrap();
    // Closed, so that sled's threads no longer write the files copied and edited next.
    store.close().unwrap();
    Original {
        root,
        blocks,
        record,
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for f in files_under(from) {
        let dest = to.join(f.strip_prefix(from).unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&f, &dest).unwrap();
    }
}

/// What happened to one corrupted copy.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// sled refused to open it, with a clear error.
    Refused,
    /// It opened, and everything returned was original; some data was reported missing.
    Detected,
    /// It opened and everything was intact (the flip hit unused bytes).
    Intact,
}

/// Opens a corrupted copy and checks that nothing but original bytes comes back.
fn check_copy(db: &Path, orig: &Original) -> Outcome {
    check_copy_keep(db, orig).0
}

/// [`check_copy`], also returning the open store.
fn check_copy_keep(db: &Path, orig: &Original) -> (Outcome, Option<Store>) {
    let store = match Store::open(db, Config::default()) {
        Ok(s) => s,
        Err(e) => {
            match &e {
                StoreError::Backend { op, path, .. } => {
                    assert_eq!(*op, "open");
                    assert!(path.starts_with(db), "{path:?}");
                }
                StoreError::CorruptIndex { .. } | StoreError::Format { .. } => {}
                other => panic!("unclear open error: {other:?}"),
            }
            assert!(!e.to_string().is_empty());
            return (Outcome::Refused, None);
        }
    };
    let mut lost = 0;
    for (id, bytes) in &orig.blocks {
        match store.get(id) {
            Ok(Some(b)) => assert_eq!(&b.bytes()[..], &bytes[..], "block {id} changed"),
            Ok(None) | Err(_) => lost += 1,
        }
    }
    let out = tempfile::tempdir().unwrap();
    match store.export(&orig.root, out.path()) {
        Ok(_) => {
            for &(name, seed, len) in FILES {
                assert_eq!(
                    fs::read(out.path().join(name)).unwrap(),
                    contents(seed, len)
                );
            }
        }
        Err(_) => {
            lost += 1;
            // Files written before the error are complete; none is wrong.
            for &(name, seed, len) in FILES {
                if let Ok(got) = fs::read(out.path().join(name)) {
                    assert_eq!(got, contents(seed, len), "{name}");
                }
            }
        }
    }
    match store.records(&orig.record.key()) {
        Ok(records) => {
            for r in &records {
                assert_eq!(r, &orig.record);
            }
            lost += usize::from(records.is_empty());
        }
        Err(_) => lost += 1,
    }
    let outcome = if lost > 0 {
        Outcome::Detected
    } else {
        Outcome::Intact
    };
    (outcome, Some(store))
}

#[test]
fn random_byte_flips_are_refused_or_detected_never_returned() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    let orig = build(&clean, tmp.path());
    let files = files_under(&clean);
    let total: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(total > 345_000, "store files hold the data: {total}");
    // The check itself passes an untouched copy as intact.
    let untouched = tmp.path().join("untouched");
    copy_dir(&clean, &untouched);
    assert_eq!(check_copy(&untouched, &orig), Outcome::Intact);
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut outcomes = HashMap::new();
    for trial in 0..24 {
        let db = tmp.path().join(format!("copy{trial}"));
        copy_dir(&clean, &db);
        // Flip 1 to 16 bytes at random offsets across all files, weighted by size.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for _ in 0..1 + x % 16 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut at = x % total;
            for f in files_under(&db) {
                let len = f.metadata().unwrap().len();
                if at < len {
                    let mut bytes = fs::read(&f).unwrap();
                    bytes[at as usize] ^= 1 << (x % 8);
                    fs::write(&f, bytes).unwrap();
                    break;
                }
                at -= len;
            }
        }
        let outcome = check_copy(&db, &orig);
        *outcomes.entry(format!("{outcome:?}")).or_insert(0) += 1;
    }
    // Whatever the mix, every case passed check_copy; say what happened.
    println!("byte flip outcomes: {outcomes:?}");
    assert_eq!(outcomes.values().sum::<i32>(), 24);
}

#[test]
fn flipped_byte_inside_a_stored_block_is_never_returned() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    let orig = build(&clean, tmp.path());
    // Find a full leaf's payload in the store's files and flip a byte in the middle.
    let (id, leaf) = orig
        .blocks
        .iter()
        .find(|(_, b)| b.len() == 16_385)
        .map(|(id, b)| (*id, b.clone()))
        .unwrap();
    let needle = &leaf[8000..8064];
    // sled may hold several copies (log frags and consolidated nodes): flip them all.
    let mut hits = 0;
    for f in files_under(&clean) {
        let mut bytes = fs::read(&f).unwrap();
        let positions: Vec<usize> = bytes
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect();
        for pos in &positions {
            bytes[pos + 10] ^= 0x80;
        }
        if !positions.is_empty() {
            fs::write(&f, bytes).unwrap();
            hits += positions.len();
        }
    }
    assert!(hits > 0, "the leaf's bytes are stored verbatim somewhere");
    println!("flipped {hits} stored copies of block {id}");
    let (outcome, store) = check_copy_keep(&clean, &orig);
    assert_ne!(
        outcome,
        Outcome::Intact,
        "a flipped stored byte must be noticed"
    );
    if let Some(store) = store {
        assert!(matches!(store.get(&id), Ok(None) | Err(_)));
    }
}
