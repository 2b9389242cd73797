//! `cargo dht-build` end to end, with real processes and real crates.io crates: two
//! daemons in a private swarm, a project with a proc-macro (serde derive), build scripts
//! and a path dependency, built in different directories with different CARGO_HOMEs.
//! Needs crates.io (the registry is reachable on this project's machines).
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdht_testnet::{DEADLINE, Node, Swarm, bin};

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

fn copy_project(from: &Path, to: &Path) {
    for rel in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "mylib/Cargo.toml",
        "mylib/src/lib.rs",
    ] {
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(from.join(rel), dst).unwrap();
    }
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

fn run_bin(project: &Path) -> String {
    let out = Command::new(project.join("target/debug/proj"))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
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
    // with another CARGO_HOME and prefetched every unit of it.
    let prefetched = b.wait_for_log("prefetched a build plan");
    assert!(
        prefetched.contains(&format!(" keys={units} ")),
        "{prefetched}"
    );
    let line = String::from_utf8_lossy(&out2.stderr)
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert!(
        line.starts_with(&format!(
            "rdht: {units} units, {units} hits, 0 misses, 0 uncacheable, "
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
    let lines = std::fs::read_to_string(&log).unwrap().lines().count() as u64;
    assert_eq!(lines, units, "every unit was still built");

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
