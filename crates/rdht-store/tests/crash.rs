//! Crash safety: ingests in a child process killed with SIGKILL at random points
//! (specs/store.md §5).
//!
//! Owns: one `harness = false` test binary. Run without arguments it is the parent: it
//! re-executes itself with `child <db> <seed>`, waits for the child to report that it
//! opened the store, lets it ingest for a random time, SIGKILLs it, then reopens the
//! store and checks that every block it returns verifies, every listed artifact exports
//! completely with the right bytes, every artifact the child reported complete is
//! present (and still pinned, if pinned), and the counters match the artifacts.
//! Does not own: byte-flip corruption (`tests/corruption.rs`).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdht_core::{BlockId, Labels};
use std::ops::ControlFlow;
use std::sync::Arc;

use rdht_store::{Backend, BlockStore, Config, IngestFile, SledBackend, SledOptions, Store};

const ROUNDS: u64 = 40;
const CAP: u64 = 6 << 20;

/// Small packs, so that rotation and compaction happen (and get killed) too.
fn config(max_bytes: Option<u64>) -> Config {
    Config {
        max_bytes,
        pack_size: 1 << 20,
        ..Config::default()
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// File contents derived from a seed, so the parent can recompute them.
fn contents(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The child: ingests artifacts forever. After each ingest returns it appends
/// `root pinned seed:len,seed:len,…` to `done.log` and fsyncs it.
fn child(db: &Path, seed: u64) {
    let store = Store::open(db, config(Some(CAP))).expect("child opens the store");
    println!("ready");
    std::io::stdout().flush().expect("stdout");
    let src = db.with_extension(format!("src-{seed}"));
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(db.with_extension("done.log"))
        .expect("open log");
    let mut rng = Rng(seed | 1);
    for n in 0.. {
        let dir = src.join(n.to_string());
        fs::create_dir_all(&dir).expect("mkdir");
        let mut files = Vec::new();
        let mut spec = Vec::new();
        for i in 0..1 + rng.below(4) {
            // Shared contents (small seeds) make artifacts share blocks.
            let fseed = if rng.below(3) == 0 {
                rng.below(4)
            } else {
                rng.next()
            };
            let len = match rng.below(4) {
                0 => rng.below(2_000) as usize,
                1 => rng.below(40_000) as usize,
                _ => rng.below(600_000) as usize,
            };
            let p = dir.join(format!("f{i}"));
            fs::write(&p, contents(fseed, len)).expect("write");
            files.push(IngestFile::from_disk(format!("d/f{i}"), &p).expect("stat"));
            spec.push(format!("{fseed}:{len}"));
        }
        let pin = rng.below(4) == 0;
        let info = store
            .ingest(Labels::default(), files, pin)
            .expect("child ingest");
        // One write(2): a SIGKILL cannot cut the line in half.
        let line = format!("{} {} {}\n", info.root, pin, spec.join(","));
        log.write_all(line.as_bytes()).expect("log");
        log.sync_all().expect("sync log");
        fs::remove_dir_all(&dir).expect("rm");
        if rng.below(8) == 0 {
            store.gc().expect("child gc");
        }
    }
}

struct Done {
    pinned: bool,
    files: Vec<(u64, usize)>,
}

fn read_log(path: &Path) -> BTreeMap<BlockId, Done> {
    let mut out = BTreeMap::new();
    let Ok(text) = fs::read_to_string(path) else {
        return out;
    };
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (Some(root), Some(pin), Some(spec)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(root) = root.parse::<BlockId>() else {
            continue;
        };
        let files: Option<Vec<_>> = spec
            .split(',')
            .map(|f| {
                let (s, l) = f.split_once(':')?;
                Some((s.parse().ok()?, l.parse().ok()?))
            })
            .collect();
        let Some(files) = files else { continue };
        let entry = out.entry(root).or_insert(Done {
            pinned: false,
            files,
        });
        entry.pinned |= pin == "true";
    }
    out
}

/// Checks the store after a kill; returns how many packs its GC compacted away.
fn check(db: &Path, done: &BTreeMap<BlockId, Done>) -> u64 {
    let raw = Arc::new(
        SledBackend::open(&db.join("index"), &SledOptions::default())
            .expect("reopen after SIGKILL"),
    );
    let store =
        Store::with_backend_and_packs(Box::new(raw.clone()), &db.join("packs"), config(None))
            .expect("recover");
    let artifacts = store.artifacts().expect("list");
    let listed: HashSet<BlockId> = artifacts.iter().map(|a| a.root).collect();
    let mut all_ids = HashSet::new();
    let mut all_files = HashSet::new();
    for a in &artifacts {
        // Every listed artifact verifies and exports completely.
        let (manifest, ids) = store
            .verify_artifact(&a.root)
            .unwrap_or_else(|e| panic!("listed artifact {} is incomplete: {e}", a.root));
        // Packs keep its manifest (one block here) and interior blocks; the leaves
        // of its files are byte ranges of the kept files.
        let mut kept = HashSet::from([a.root]);
        for id in &ids {
            let b = store
                .get(id)
                .expect("get")
                .expect("block of a listed artifact");
            assert_eq!(b.id(), *id);
            if b.kind() == rdht_core::BlockKind::Interior {
                kept.insert(*id);
            }
        }
        assert_eq!(kept.len(), a.blocks as usize);
        all_ids.extend(kept);
        all_files.extend(manifest.files().iter().map(|f| f.root.as_bytes().to_vec()));
        let out = tempfile::tempdir().expect("tempdir");
        store
            .export(&a.root, out.path())
            .expect("export listed artifact");
        assert_eq!(manifest.total_size(), a.file_bytes);
        if let Some(d) = done.get(&a.root) {
            for (i, &(seed, len)) in d.files.iter().enumerate() {
                let got = fs::read(out.path().join(format!("d/f{i}"))).expect("read");
                assert_eq!(got, contents(seed, len), "artifact {} file {i}", a.root);
            }
        }
    }
    // Every completed pinned artifact survived; pins too.
    for (root, d) in done {
        if d.pinned {
            assert!(
                listed.contains(root),
                "completed pinned artifact {root} lost"
            );
            let info = artifacts.iter().find(|a| a.root == *root).expect("listed");
            assert!(info.pinned, "pin of {root} lost");
        }
    }
    // Loose blocks of the killed run were reclaimed: the index is exactly the blocks
    // of the listed artifacts.
    let stats = store.stats().expect("stats");
    assert_eq!(stats.blocks, all_ids.len() as u64);
    assert_eq!(stats.artifacts, artifacts.len() as u64);
    assert_eq!(stats.corruptions, 0);
    // At rest, the raw map holds exactly those blocks, one reference entry each, and
    // no loose mark (invariants I1–I3 of specs/store.md).
    let count = |prefix: u8| {
        let mut keys = HashSet::new();
        raw.scan_prefix(&[prefix], &mut |k, _| {
            keys.insert(k[1..].to_vec());
            ControlFlow::Continue(())
        })
        .expect("scan");
        keys
    };
    let want: HashSet<Vec<u8>> = all_ids.iter().map(|id| id.as_bytes().to_vec()).collect();
    for (prefix, what) in [(b'b', "stored blocks"), (b'r', "reference entries")] {
        let got = count(prefix);
        assert!(
            got == want,
            "{what}: {} held, artifacts hold {}, {} not held by any artifact",
            got.len(),
            want.len(),
            got.difference(&want).count()
        );
    }
    assert_eq!(count(b'l').len(), 0, "no loose mark survives recovery");
    assert_eq!(count(b'f'), all_files, "file entries");
    assert_eq!(stats.files, all_files.len() as u64);
    // On disk, exactly those files: recovery removed any a killed registration left.
    let mut on_disk = HashSet::new();
    for fan in fs::read_dir(db.join("files")).expect("files dir") {
        let fan = fan.expect("entry").path();
        if fan.file_name().is_some_and(|n| n == "tmp") {
            assert_eq!(
                fs::read_dir(&fan).expect("tmp").count(),
                0,
                "no temporary left"
            );
            continue;
        }
        for f in fs::read_dir(&fan).expect("fan") {
            let name = f.expect("entry").file_name().into_string().expect("utf-8");
            on_disk.insert(name.parse::<BlockId>().expect("a root").as_bytes().to_vec());
        }
    }
    assert_eq!(on_disk, all_files, "kept files on disk");
    let report = store.gc_to(u64::MAX).expect("gc");
    assert_eq!(report.blocks_removed, 0);
    // Compaction (run by that GC) moved blocks; everything still verifies.
    for a in &artifacts {
        store
            .verify_artifact(&a.root)
            .expect("verifies after compaction");
    }
    report.packs_removed
}

fn parent() {
    let exe = std::env::current_exe().expect("current exe");
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("db");
    let started = Instant::now();
    let mut rng = Rng(std::env::var("RDHT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234));
    println!("crash test: seed {}", rng.0);
    let mut kills_after_complete = 0;
    let mut packs_removed = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .arg("child")
            .arg(&db)
            .arg((rng.next() | 1).to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read child");
        assert_eq!(line.trim(), "ready", "child failed to open the store");
        // The kill point: a random time into the child's ingest loop.
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        child.kill().expect("SIGKILL child");
        let status = child.wait().expect("wait child");
        assert!(status.code().is_none(), "child ended by itself: {status:?}");
        let done = read_log(&db.with_extension("done.log"));
        kills_after_complete += usize::from(!done.is_empty());
        packs_removed += check(&db, &done);
        println!(
            "round {round}: ok ({} completed ingests so far, {:.1?})",
            done.len(),
            started.elapsed()
        );
    }
    assert!(kills_after_complete > 0, "no ingest ever completed");
    assert!(packs_removed > 0, "compaction never ran");
    println!("crash test: {packs_removed} packs compacted away after kills");
    println!(
        "crash test: {ROUNDS} rounds passed in {:.1?}",
        started.elapsed()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let db = Path::new(&args[2]);
        let seed = args[3].parse().expect("seed");
        child(db, seed);
    } else {
        parent();
    }
}
