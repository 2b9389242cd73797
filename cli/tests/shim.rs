//! `cargo dht-build` and the plain `RUSTC_WRAPPER` end to end, with real processes and
//! real crates.io crates: two daemons in a private swarm, a project with a proc-macro
//! (serde derive), build scripts and a path dependency, built in different directories
//! with different CARGO_HOMEs; `cargo check` (metadata-only units) across two paths; a
//! check, a build and a `test --no-run` at once against one daemon.
//! Needs crates.io (the registry is reachable on this project's machines).
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::run_bin;
use rdht_cli::shim::session::{Summary, summarize};
use rdht_testnet::{DEADLINE, Node, Swarm, bin, copy_project, wrapped_cargo};

const MAIN_RS: &str = r#"use serde::Serialize;

#[derive(Serialize)]
struct Point {
    x: i32,
    y: i32,
}

fn main() {
    let p = Point { x: 1, y: 2 };
    let fields = std::mem::size_of_val(&p);
    println!("{} {}", mylib::greeting(), fields);
}
"#;

/// Writes project P (binary `proj` + path dependency `mylib`, which is also built as a
/// cdylib and a staticlib) under `dir`.
fn write_project(dir: &Path, greeting: &str) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("mylib/src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"proj\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nserde = { version = \"=1.0.219\", features = [\"derive\"] }\n\
         mylib = { path = \"mylib\" }\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/main.rs"), MAIN_RS).unwrap();
    std::fs::write(
        dir.join("mylib/Cargo.toml"),
        "[package]\nname = \"mylib\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [lib]\ncrate-type = [\"rlib\", \"cdylib\", \"staticlib\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("mylib/src/lib.rs"),
        format!("pub fn greeting() -> &'static str {{\n    \"{greeting}\"\n}}\n"),
    )
    .unwrap();
}

/// `cargo dht-build --json` in `project` against `node`, with `cargo_home`.
fn dht_build(project: &Path, cargo_home: &Path, node: &Node) -> (Output, serde_json::Value) {
    rdht_testnet::dht_build(project, cargo_home, &node.dir)
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

fn count(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn a_second_checkout_is_served_from_the_swarm_and_changes_miss_exactly() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let a = swarm.node("a");
    let mut b = swarm.node("b");
    b.rdht(&["trust", "add", &a.builder_key()]);

    // Builder A, cold: every unit misses and is published.
    let p1 = root.join("alice/work/p");
    write_project(&p1, "hello");
    let (_, s1) = dht_build(&p1, &root.join("home-a"), &a);
    let units = count(&s1, "units");
    assert!(units >= 10, "{s1}");
    assert_eq!(
        (
            count(&s1, "hits"),
            count(&s1, "misses"),
            count(&s1, "uncacheable")
        ),
        (0, units, 0),
        "{s1}"
    );
    assert_eq!(count(&s1, "not_shared"), 0, "{s1}");

    // Another path, another CARGO_HOME, empty target, daemon B: everything from A.
    let p2 = root.join("bob/src/p-copy");
    copy_project(&p1, &p2);
    let (out2, s2) = dht_build(&p2, &root.join("home-b"), &b);
    assert_eq!(
        (
            count(&s2, "units"),
            count(&s2, "hits"),
            count(&s2, "misses")
        ),
        (units, units, 0),
        "{s2}"
    );
    assert!(count(&s2, "bytes_fetched") > 100_000, "{s2}");
    // A published the plan of its run; B derived the same plan key at another path
    // with another CARGO_HOME and prefetched every unit of it, and both keys of each
    // build-script run (every run hit too).
    let runs = count(&s2["runs"], "runs");
    assert_eq!(
        (runs, count(&s2["runs"], "hits")),
        (count(&s1["runs"], "misses"), runs),
        "{s2}"
    );
    let prefetched = b.wait_for_prefetch();
    assert_eq!(
        (&prefetched["state"], prefetched["keys"].as_u64()),
        (&serde_json::json!("done"), Some(units + 2 * runs)),
        "{prefetched}"
    );
    let line = String::from_utf8_lossy(&out2.stderr)
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert!(
        line.starts_with(&format!(
            "rdht: {units} units, {units} hits, 0 misses, 0 uncacheable, {runs} build-script runs ({runs} hits, 0 misses, 0 never cached), "
        )),
        "{line}"
    );
    for out in ["proj", "libmylib.so", "libmylib.a", "libmylib.rlib"] {
        assert_eq!(
            sha256(&p2.join("target/debug").join(out)),
            sha256(&p1.join("target/debug").join(out)),
            "{out}"
        );
    }
    assert_eq!(run_bin(&p2), "hello 8\n");
    // A following plain cargo build is a no-op.
    let again = Command::new("cargo")
        .arg("build")
        .current_dir(&p2)
        .env("CARGO_HOME", root.join("home-b"))
        .env_remove("RUSTC_WRAPPER")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && !text.contains("Compiling"),
        "{text}"
    );

    // Editing the path dependency: exactly it and its dependent miss.
    let p3 = root.join("carol/p");
    copy_project(&p1, &p3);
    std::fs::write(
        p3.join("mylib/src/lib.rs"),
        "pub fn greeting() -> &'static str {\n    \"edited\"\n}\n",
    )
    .unwrap();
    let (_, s3) = dht_build(&p3, &root.join("home-b"), &b);
    assert_eq!(count(&s3, "misses"), 2, "{s3}");
    assert_eq!(s3["missed"], serde_json::json!(["mylib", "proj"]), "{s3}");
    assert_eq!(count(&s3, "hits"), units - 2, "{s3}");
    assert_eq!(run_bin(&p3), "edited 8\n");

    // Daemon B killed in the middle of a build: the build still succeeds. A new profile
    // setting changes every key, so the build compiles (and publishes) unit by unit.
    let p4 = root.join("dave/p");
    copy_project(&p1, &p4);
    let mut manifest = std::fs::read_to_string(p4.join("Cargo.toml")).unwrap();
    manifest.push_str("\n[profile.dev]\nopt-level = 1\n");
    std::fs::write(p4.join("Cargo.toml"), manifest).unwrap();
    let log = root.join("p4-units.jsonl");
    let build = Command::new("cargo")
        .args(["build", "-j1"])
        .current_dir(&p4)
        .env("CARGO_HOME", root.join("home-b"))
        .env("RUSTC_WRAPPER", bin("cargo-dht-build"))
        .env("RDHT_DATA_DIR", &b.dir)
        .env("RDHT_SESSION_LOG", &log)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(start.elapsed() < DEADLINE, "no unit finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    b.kill();
    let out4 = build.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out4.stderr);
    assert!(out4.status.success(), "{text}");
    assert!(text.contains("rdht: warning:"), "{text}");
    assert_eq!(run_bin(&p4), "hello 8\n");
    let built = summarize(&log);
    assert_eq!(built.units, units, "every unit was still built");
    // And every build-script run still ran.
    assert_eq!(built.runs.runs, runs, "every run still ran");

    // A daemon that trusts nobody ignores A's records: everything is built locally.
    let c = swarm.node("c");
    let p5 = root.join("eve/p");
    copy_project(&p1, &p5);
    let (_, s5) = dht_build(&p5, &root.join("home-b"), &c);
    assert_eq!(
        (count(&s5, "hits"), count(&s5, "misses")),
        (0, units),
        "{s5}"
    );
    let reasons = s5["miss_reasons"].as_object().unwrap();
    assert!(
        reasons
            .keys()
            .any(|r| r.contains("none from a trusted builder")),
        "{s5}"
    );
}

/// Writes a one-package project `name` depending on `deps` (Cargo.toml lines) with the
/// files `files` (relative path, contents).
fn write_package(dir: &Path, name: &str, deps: &[&str], files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dependencies]\n{}\n",
            deps.join("\n")
        ),
    )
    .unwrap();
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

const CHECK_MAIN: &str = r#"fn main() {
    let mut b = itoa::Buffer::new();
    println!("{} {:?}", b.format(42), memchr::memchr(b'z', b"lazy"));
}
"#;

/// Cargo's own lines in `stderr` (not rdht's), trimmed.
fn cargo_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with("rdht:"))
        .collect()
}

/// Asserts that `cargo ARGS` with the wrapper finds everything fresh: cargo prints
/// `Finished` and nothing else (but the `Executable` list of `test --no-run`), and the
/// wrapper is never run.
fn assert_no_op(args: &[&str], project: &Path, cargo_home: &Path, node: &Node) {
    let log = project.with_extension("no-op.jsonl");
    let out = wrapped_cargo(args, project, cargo_home, &node.dir, &log);
    let lines = cargo_lines(&out.stderr);
    assert!(
        lines.first().is_some_and(|l| l.starts_with("Finished "))
            && lines[1..].iter().all(|l| l.starts_with("Executable ")),
        "cargo {args:?} was not a no-op: {lines:?}"
    );
    assert_eq!(summarize(&log).units, 0);
}

/// A `cargo dht-build --json` summary's (units, hits, misses, not shared).
fn shared_counts(v: &serde_json::Value) -> (u64, u64, u64, u64) {
    (
        count(v, "units"),
        count(v, "hits"),
        count(v, "misses"),
        count(v, "not_shared"),
    )
}

/// The outcome counts of a wrapper run's session log: (units, hits, misses, uncacheable).
fn counts(s: &Summary) -> (u64, u64, u64, u64) {
    (s.units, s.hits, s.misses, s.uncacheable)
}

#[test]
fn a_cargo_check_is_shared_whole_and_a_copy_elsewhere_checks_from_the_swarm() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let a = swarm.node("a");
    let b = swarm.node("b");
    b.rdht(&["trust", "add", &a.builder_key()]);

    // A: `cargo check` through the wrapper; every unit is metadata-only and misses.
    let p1 = root.join("alice/work/chk");
    write_package(
        &p1,
        "chk",
        &["itoa = \"=1.0.19\"", "memchr = \"=2.8.3\""],
        &[("src/main.rs", CHECK_MAIN)],
    );
    let home_a = root.join("home-a");
    wrapped_cargo(&["check"], &p1, &home_a, &a.dir, &root.join("a.jsonl"));
    let s1 = summarize(&root.join("a.jsonl"));
    assert_eq!(counts(&s1), (3, 0, 3, 0), "{s1:?}");
    assert_eq!(s1.missed, ["chk", "itoa", "memchr"]);
    // Every unit's outputs are shared: none is refused as changed.
    assert_eq!(a.stdout(&["sync"]), "3 published, 0 failed\n");

    // B: a copy at another path with another CARGO_HOME; every unit is a hit from A.
    let p2 = root.join("bob/src/chk-copy");
    copy_project(&p1, &p2);
    let home_b = root.join("home-b");
    let out = wrapped_cargo(&["check"], &p2, &home_b, &b.dir, &root.join("b.jsonl"));
    let s2 = summarize(&root.join("b.jsonl"));
    assert_eq!(counts(&s2), (3, 3, 0, 0), "{s2:?}");
    assert!(s2.bytes_fetched > 0, "{s2:?}");
    let lines = cargo_lines(&out.stderr);
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("Checking ")).count(),
        3,
        "{lines:?}"
    );
    // What rustc wrote for this emit set, file for file: the same names, the same
    // metadata, dep-info with B's own paths.
    let deps = |p: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(p.join("target/debug/deps"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    let names = deps(&p1);
    assert_eq!(deps(&p2), names);
    assert_eq!(names.iter().filter(|n| n.ends_with(".rmeta")).count(), 3);
    assert_eq!(names.iter().filter(|n| n.ends_with(".d")).count(), 3);
    for n in &names {
        let (f1, f2) = (
            p1.join("target/debug/deps").join(n),
            p2.join("target/debug/deps").join(n),
        );
        if n.ends_with(".d") {
            let d2 = std::fs::read_to_string(&f2).unwrap();
            assert!(!d2.contains(p1.to_str().unwrap()), "{d2}");
            assert!(!d2.contains(home_a.to_str().unwrap()), "{d2}");
        } else {
            assert_eq!(sha256(&f2), sha256(&f1), "{n}");
        }
    }
    // And cargo finds the check up to date.
    assert_no_op(&["check"], &p2, &home_b, &b);
}

/// At once against `node`, each in its own `target`: `cargo check` of `projects[0]` and
/// `cargo test --no-run` of `projects[2]` through the wrapper (session logs `logs`), and
/// `cargo dht-build` of `projects[1]`, whose summary is returned.
fn three_builds_at_once(
    projects: &[std::path::PathBuf; 3],
    home: &Path,
    node: &Node,
    logs: &[std::path::PathBuf; 2],
) -> serde_json::Value {
    std::thread::scope(|s| {
        let check = s.spawn(|| wrapped_cargo(&["check"], &projects[0], home, &node.dir, &logs[0]));
        let build = s.spawn(|| dht_build(&projects[1], home, node).1);
        let test = s.spawn(|| {
            wrapped_cargo(
                &["test", "--no-run"],
                &projects[2],
                home,
                &node.dir,
                &logs[1],
            )
        });
        check.join().unwrap();
        test.join().unwrap();
        build.join().unwrap()
    })
}

#[test]
fn a_check_a_build_and_a_test_build_at_once_share_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let node = Node::start(&root.join("n"), &[]);
    let projects = [root.join("chk"), root.join("bld"), root.join("tst")];
    write_package(
        &projects[0],
        "chk",
        &["itoa = \"=1.0.19\"", "memchr = \"=2.8.3\""],
        &[("src/main.rs", CHECK_MAIN)],
    );
    write_package(
        &projects[1],
        "bld",
        &["itoa = \"=1.0.19\"", "cfg-if = \"=1.0.5\""],
        &[(
            "src/main.rs",
            "fn main() {\n    cfg_if::cfg_if! { if #[cfg(unix)] { let n = 7; } else { let n = 8; } }\n    println!(\"{}\", itoa::Buffer::new().format(n));\n}\n",
        )],
    );
    write_package(
        &projects[2],
        "tst",
        &["memchr = \"=2.8.3\"", "bitflags = \"=2.13.2\""],
        &[
            (
                "src/lib.rs",
                "bitflags::bitflags! { pub struct F: u8 { const A = 1; } }\n\
                 pub fn find(h: &[u8]) -> Option<usize> { memchr::memchr(b'x', h) }\n\
                 #[cfg(test)]\nmod tests {\n    #[test]\n    fn finds() { assert_eq!(super::find(b\"ax\"), Some(1)); }\n}\n",
            ),
            (
                "tests/it.rs",
                "#[test]\nfn flags() { assert!(tst::F::A.contains(tst::F::A)); }\n",
            ),
        ],
    );
    let home = root.join("home");
    let logs = [root.join("chk.jsonl"), root.join("tst.jsonl")];
    let built = three_builds_at_once(&projects, &home, &node, &logs);
    let (check, test) = (summarize(&logs[0]), summarize(&logs[1]));
    assert_eq!(counts(&check), (3, 0, 3, 0), "{check:?}");
    // tst: memchr, bitflags, the lib, its unit tests, the integration test.
    assert_eq!(counts(&test), (5, 0, 5, 0), "{test:?}");
    // bld: itoa, cfg-if, the binary.
    assert_eq!(shared_counts(&built), (3, 0, 3, 0), "{built}");
    // The wrapper runs' jobs (the dht-build drained its own): all published.
    assert_eq!(node.stdout(&["sync"]), "8 published, 0 failed\n");
    let jobs = node.json(&["status"])["jobs"].clone();
    assert_eq!(
        jobs,
        serde_json::json!({"pending": 0, "published": 11, "failed": 0})
    );

    // The same three again in fresh target dirs: every unit is a hit.
    for p in &projects {
        std::fs::remove_dir_all(p.join("target")).unwrap();
    }
    let logs = [root.join("chk-2.jsonl"), root.join("tst-2.jsonl")];
    let built = three_builds_at_once(&projects, &home, &node, &logs);
    assert_eq!(counts(&summarize(&logs[0])), (3, 3, 0, 0));
    assert_eq!(counts(&summarize(&logs[1])), (5, 5, 0, 0));
    assert_eq!(shared_counts(&built), (3, 3, 0, 0), "{built}");
    assert_no_op(&["check"], &projects[0], &home, &node);
    assert_no_op(&["test", "--no-run"], &projects[2], &home, &node);
}

/// A tmpfs target dir: the store and the outputs are on different file systems, so a
/// hit cannot link its outputs and copies them (`copy_file_range`), verified the same.
#[test]
fn a_hit_into_a_target_on_another_file_system_is_byte_identical_and_fresh() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let a = swarm.node("a");
    let b = swarm.node("b");
    b.rdht(&["trust", "add", &a.builder_key()]);
    let p1 = root.join("alice/p");
    write_project(&p1, "hello");
    let (_, s1) = dht_build(&p1, &root.join("home-a"), &a);
    let units = count(&s1, "units");
    let shm = tempfile::Builder::new()
        .prefix("rdht-tmpfs-target-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let target = shm.path().join("target");
    let fs_of = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().dev()
    };
    assert_ne!(
        fs_of(shm.path()),
        fs_of(&b.dir),
        "the target is on another file system"
    );
    let p2 = root.join("bob/p");
    copy_project(&p1, &p2);
    let target_s = target.to_str().unwrap();
    let env = [("CARGO_TARGET_DIR", target_s)];
    let (_, s2) = rdht_testnet::dht_build_env(&p2, &root.join("home-b"), &b.dir, &env);
    assert_eq!(
        (
            count(&s2, "units"),
            count(&s2, "hits"),
            count(&s2, "misses")
        ),
        (units, units, 0),
        "{s2}"
    );
    for out in ["proj", "libmylib.so", "libmylib.a", "libmylib.rlib"] {
        assert_eq!(
            sha256(&target.join("debug").join(out)),
            sha256(&p1.join("target/debug").join(out)),
            "{out}"
        );
    }
    let again = Command::new("cargo")
        .arg("build")
        .current_dir(&p2)
        .env("CARGO_HOME", root.join("home-b"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTC_WRAPPER")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && !text.contains("Compiling"),
        "{text}"
    );
}
