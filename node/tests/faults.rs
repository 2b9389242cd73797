//! Hard faults (issue 19, part 2). At start: a data directory on a read-only file system
//! is refused with one clear error that names the path, whether the directory still has
//! to be made or already exists. While running: a data directory on a small tmpfs fills
//! up during an ingest (a miss being shared), a fetch (from a peer) and an export (a
//! hit); every `cargo dht-build` succeeds with the outputs of a local build, the daemon
//! keeps answering and `rdht status` names the error and the path, and once space is
//! freed every pinned artifact is intact (`rdht get` of each) and new misses are shared
//! again. Needs root (it mounts tmpfs file systems), as the other root-only tests, run
//! through `testnet/test.sh`.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rdht_testnet::{DEADLINE, Node, POLL, SMALL_MYLIB, Swarm, dht_build, write_small_project};

/// A small tmpfs at `at`, unmounted when dropped.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(at: &'a Path, options: &str) -> Tmpfs<'a> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(ok.success(), "mount needs root");
        Tmpfs(at)
    }

    fn remount(&self, options: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.0)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

fn start(data: &Path) -> (i32, String) {
    let out = Command::new(rdht_testnet::bin("rdht-node"))
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_read_only_data_dir_is_refused_at_start_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    // Not there yet, on a read-only file system.
    let ro = tmp.path().join("ro");
    let _fs = Tmpfs::mount(&ro, "ro,size=1m");
    let (code, err) = start(&ro.join("data"));
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "rdht-node: creating {}: Read-only file system (os error 30)",
            ro.join("data").display()
        )
    );
    // There already, and then the file system became read-only.
    let was = tmp.path().join("was");
    let fs = Tmpfs::mount(&was, "size=1m");
    std::fs::create_dir(was.join("data")).unwrap();
    fs.remount("ro");
    let (code, err) = start(&was.join("data"));
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert!(
        lines[0].starts_with(&format!("rdht-node: {}", was.join("data").display()))
            && lines[0].ends_with("Read-only file system (os error 30)")
            && lines[0].matches("Read-only file system").count() == 1,
        "{err}"
    );
}

/// What the project's `target/debug/proj` prints (it must succeed).
fn run_bin(project: &Path) -> String {
    let out = Command::new(project.join("target/debug/proj"))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Bytes free on the file system holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// Fills the file system of `dir` with a new file there until at most `leave` bytes are
/// free (0: until a write fails for space); returns the file, to be removed to free it.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("ballast-{n}"));
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5au8; 64 << 10];
    loop {
        let free = free_bytes(dir);
        if free <= leave {
            break;
        }
        let want = usize::try_from(free - leave).unwrap().min(chunk.len());
        match f.write(&chunk[..want]) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    f.sync_all().ok();
    path
}

/// The crates.io `.rlib` files a build left in `target/debug/deps`, by name, with their
/// hashes (the path crate's rlib differed between the two project directories here).
fn rlibs(project: &Path) -> BTreeMap<String, blake3::Hash> {
    rdht_testnet::snapshot(&project.join("target/debug/deps"))
        .into_iter()
        .filter(|(name, _)| {
            name.ends_with(".rlib") && !name.contains('/') && !name.starts_with("libmylib")
        })
        .map(|(name, (hash, _))| (name, hash))
        .collect()
}

/// What a plain `cargo build` (no wrapper) of `project` prints when run.
fn local_output(project: &Path, cargo_home: &Path) -> String {
    rdht_testnet::plain_build(project, cargo_home);
    run_bin(project)
}

/// The store's write failure as `rdht status --json` shows it (`null` when none).
fn write_failure(node: &Node) -> serde_json::Value {
    node.json(&["status"])["disk"]["write_failure"].clone()
}

/// Polls `rdht status` until it reports a write failure, and checks that it names a full
/// disk and a path inside the store, in JSON and in text.
fn assert_reports_disk_full(node: &Node, phase: &str) {
    let deadline = Instant::now() + DEADLINE;
    let f = loop {
        let f = write_failure(node);
        if !f.is_null() {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "{phase}: no write failure reported: {}\n--- log ---\n{}",
            node.json(&["status"]),
            std::fs::read_to_string(node.log()).unwrap_or_default()
        );
        std::thread::sleep(POLL);
    };
    assert_eq!(f["error"], "ENOSPC", "{f}");
    let store = node.dir.join("store");
    let path = f["path"].as_str().unwrap();
    assert!(path.starts_with(store.to_str().unwrap()), "{f}");
    assert!(f["failures"].as_u64().unwrap() >= 1, "{f}");
    let text = node.stdout(&["status"]);
    assert!(
        text.contains(&format!("store writes failing: ENOSPC at {path}")),
        "{text}"
    );
}

/// Every pinned artifact of `node`'s store, read from the store while it is stopped.
fn pinned_roots(node: &mut Node) -> Vec<String> {
    node.stop();
    let store =
        rdht_store::Store::open(node.dir.join("store"), rdht_store::Config::default()).unwrap();
    let roots: Vec<String> = store
        .artifacts()
        .unwrap()
        .into_iter()
        .filter(|a| a.pinned)
        .map(|a| a.root.to_string())
        .collect();
    store.close().unwrap();
    node.spawn();
    roots
}

fn n(summary: &serde_json::Value, key: &str) -> u64 {
    summary[key].as_u64().unwrap()
}

#[test]
fn a_full_data_dir_fails_no_build_and_loses_nothing_stored() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let b = swarm.node("b");
    // A's data directory on a file system of its own, with room for the test's few
    // artifacts; ballast files fill it.
    let fs = root.join("fs");
    let _fs = Tmpfs::mount(&fs, "size=64m");
    let a_dir = fs.join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::write(a_dir.join("config.toml"), "lookup_timeout_ms = 10000\n").unwrap();
    let mut a = Node::start(
        &a_dir,
        &[
            "--swarm-key",
            swarm.key.to_str().unwrap(),
            "--bootstrap",
            swarm.boot.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
    );
    let home = root.join("home");
    let project = |name: &str, mylib: &str| {
        let p = root.join(name);
        write_small_project(&p, mylib, "");
        p
    };
    let plain = project("plain", SMALL_MYLIB);
    let want = local_output(&plain, &home);
    assert_eq!(want, "7 42 Some(1)\n");

    // 1. Ingest: the file system is full, so every miss's share fails for space.
    let ballast = fill(&fs, 0);
    let p1 = project("p1", SMALL_MYLIB);
    let (_, s) = dht_build(&p1, &home, &a.dir);
    assert_eq!(run_bin(&p1), want);
    assert_eq!((n(&s, "hits"), n(&s, "misses")), (0, n(&s, "units")), "{s}");
    assert!(n(&s, "not_shared") >= 1, "{s}");
    assert_reports_disk_full(&a, "ingest");
    std::fs::remove_file(&ballast).unwrap();

    // Space is back: the same build elsewhere misses again (nothing was half stored),
    // its outputs are the same, and every one is shared.
    let p2 = project("p2", SMALL_MYLIB);
    let (_, s) = dht_build(&p2, &home, &a.dir);
    assert_eq!(run_bin(&p2), want);
    assert_eq!(
        (n(&s, "misses"), n(&s, "not_shared")),
        (n(&s, "units"), 0),
        "{s}"
    );
    assert_eq!(rlibs(&p2), rlibs(&p1));
    assert!(write_failure(&a).is_null());

    // 2. Fetch: B built Q, which A trusts; A's file system has too little room for
    // Q's artifacts, so their fetch fails and they are built here.
    a.rdht(&["trust", "add", &b.builder_key()]);
    let q_lib = "pub fn f() -> u32 {\n    8\n}\n";
    let qb = project("qb", q_lib);
    let (_, s) = dht_build(&qb, &root.join("home-b"), &b.dir);
    assert_eq!(n(&s, "not_shared"), 0, "{s}");
    let want_q = run_bin(&qb);
    assert_eq!(want_q, "8 42 Some(1)\n");
    let ballast = fill(&fs, 256 << 10);
    let q1 = project("q1", q_lib);
    let (_, s) = dht_build(&q1, &home, &a.dir);
    assert_eq!(run_bin(&q1), want_q);
    assert_eq!(rlibs(&q1), rlibs(&qb));
    assert!(n(&s, "misses") >= 1, "{s}");
    assert_reports_disk_full(&a, "fetch");
    std::fs::remove_file(&ballast).unwrap();
    // A write that succeeds ends the condition.
    let file = root.join("small.txt");
    std::fs::write(&file, "rdht\n").unwrap();
    a.rdht(&["put", file.to_str().unwrap()]);
    assert!(write_failure(&a).is_null(), "{}", write_failure(&a));

    // 3. Export: every unit is a hit from A's own store while its file system is full.
    let ballast = fill(&fs, 0);
    let p3 = project("p3", SMALL_MYLIB);
    let (_, s) = dht_build(&p3, &home, &a.dir);
    assert_eq!(run_bin(&p3), want);
    assert_eq!(n(&s, "hits"), n(&s, "units"), "{s}");
    assert_eq!(rlibs(&p3), rlibs(&p1));
    assert_reports_disk_full(&a, "export");
    std::fs::remove_file(&ballast).unwrap();

    // Space is freed: every pinned artifact is intact, and new misses are shared again.
    let pinned = pinned_roots(&mut a);
    assert!(pinned.len() >= 4, "{pinned:?}");
    for (i, r) in pinned.iter().enumerate() {
        let out = root.join(format!("get-{i}"));
        a.rdht(&["get", r, out.to_str().unwrap()]);
    }
    let r1 = project("r1", "pub fn f() -> u32 {\n    9\n}\n");
    let (_, s) = dht_build(&r1, &home, &a.dir);
    assert_eq!(run_bin(&r1), "9 42 Some(1)\n");
    assert!(n(&s, "misses") >= 2, "{s}");
    assert_eq!(n(&s, "not_shared"), 0, "{s}");
    a.rdht(&["sync"]);
    assert!(write_failure(&a).is_null(), "{}", write_failure(&a));
}
