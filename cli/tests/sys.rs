//! `-sys` crates whose build scripts compile C, and build-script runs as cache units
//! (issue 16).
//!
//! - With the C flags `cargo dht-build` adds (`-ffile-prefix-map` for each
//!   machine-local root), the static libraries `zstd-sys` and `libz-sys` build have
//!   the same bytes at any path; and with build-script runs cached, a copy of the
//!   project at another path, with another CARGO_HOME, through another daemon, hits
//!   every rustc unit and every run, compiles no C, and links a byte-identical binary.
//! - A path crate's own build script: a run misses exactly when a file it names in
//!   `rerun-if-changed` or a variable it names in `rerun-if-env-changed` changed.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rdht_testnet::{Swarm, copy_project, dht_build_env};

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn write_project(dir: &Path) {
    write(
        dir,
        "Cargo.toml",
        "[package]\nname = \"sysproj\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nzstd = { version = \"=0.13.3\", default-features = false }\n\
         libz-sys = { version = \"=1.1.22\", default-features = false, features = [\"static\"] }\n\n\
         [profile.dev]\nincremental = false\n",
    );
    write(
        dir,
        "src/main.rs",
        "fn main() {\n    let packed = zstd::encode_all(&b\"rdht rdht rdht rdht\"[..], 3).unwrap();\n    \
         let v = unsafe { std::ffi::CStr::from_ptr(libz_sys::zlibVersion()) };\n    \
         println!(\"{} {}\", packed.len(), v.to_str().unwrap());\n}\n",
    );
}

fn totals(s: &serde_json::Value) -> (u64, u64, u64) {
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    (n("units"), n("hits"), n("misses"))
}

/// Build-script runs: (runs, hits, misses, never cached).
fn runs(s: &serde_json::Value) -> (u64, u64, u64, u64) {
    let r = &s["runs"];
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("runs.{k} in {s}"));
    let never = r["never_cached"]
        .as_object()
        .unwrap_or_else(|| panic!("runs.never_cached in {s}"))
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    (n("runs"), n("hits"), n("misses"), never)
}

/// A directory holding `cc`, a wrapper of the system's C compiler that appends one
/// line to `$RDHT_TEST_CC_LOG` for every compile (`-c`) it runs. Its bytes are the same
/// for every build, so it is the same toolchain to the run keys.
fn counting_cc(dir: &Path) -> String {
    let real = ["/usr/bin/cc", "/usr/bin/gcc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("a C compiler in /usr/bin");
    let cc = dir.join("cc");
    write(
        dir,
        "cc",
        &format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -c ] && echo \"$*\" >> \"$RDHT_TEST_CC_LOG\" && break; done\nexec {real} \"$@\"\n"
        ),
    );
    std::fs::set_permissions(&cc, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}

fn compiles(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().count())
}

#[test]
fn c_built_by_build_scripts_is_built_once_and_hits_at_any_path() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let a = swarm.node("a");
    let b = swarm.node("b");
    b.rdht(&["trust", "add", &a.builder_key()]);
    let path = counting_cc(&root.join("tools"));
    let (log_a, log_b) = (root.join("cc-a.log"), root.join("cc-b.log"));
    let pa = root.join("a/sysproj");
    write_project(&pa);
    let (log_a_s, log_b_s) = (log_a.display().to_string(), log_b.display().to_string());
    let env_a = [
        ("PATH", path.as_str()),
        ("RDHT_TEST_CC_LOG", log_a_s.as_str()),
    ];
    let env_b = [
        ("PATH", path.as_str()),
        ("RDHT_TEST_CC_LOG", log_b_s.as_str()),
    ];
    let (_, sa) = dht_build_env(&pa, &root.join("home-a"), &a.dir, &env_a);
    a.rdht(&["sync"]);
    let units = totals(&sa).0;
    assert_eq!(totals(&sa), (units, 0, units), "{sa}");
    let n = runs(&sa).0;
    // zstd-sys, zstd-safe, libz-sys and libc have build scripts.
    assert_eq!(runs(&sa), (4, 0, 4, 0), "{sa}");
    assert!(compiles(&log_a) > 0, "A compiled the C code");

    let pb = root.join("elsewhere/b/sysproj");
    copy_project(&pa, &pb);
    let (_, sb) = dht_build_env(&pb, &root.join("home-b"), &b.dir, &env_b);
    assert_eq!(totals(&sb), (units, units, 0), "{sb}");
    assert_eq!(runs(&sb), (n, n, 0, 0), "{sb}");
    assert_eq!(compiles(&log_b), 0, "B ran no C compile");
    let bin = |p: &Path| std::fs::read(p.join("target/debug/sysproj")).unwrap();
    assert!(bin(&pa) == bin(&pb), "the binaries are byte-identical");
    let out = std::process::Command::new(pb.join("target/debug/sysproj"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "20 1.3.1\n");
    // Everything is fresh for cargo: no unit compiles and no script runs again.
    let (_, again) = dht_build_env(&pb, &root.join("home-b"), &b.dir, &env_b);
    assert_eq!(
        (totals(&again), runs(&again)),
        ((0, 0, 0), (0, 0, 0, 0)),
        "{again}"
    );
}

/// A path crate `gen` whose build script declares `data.txt` and `RDHT_TEST_FLAVOUR`
/// and writes both into `OUT_DIR/gen.rs`, and a binary printing them.
fn write_gen_project(dir: &Path) {
    write(
        dir,
        "Cargo.toml",
        "[package]\nname = \"genproj\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\ngen = { path = \"gen\" }\n",
    );
    write(
        dir,
        "src/main.rs",
        "fn main() {\n    println!(\"{} {}\", gen::DATA, gen::FLAVOUR);\n}\n",
    );
    write(
        dir,
        "gen/Cargo.toml",
        "[package]\nname = \"gen\"\nversion = \"0.1.0\"\nedition = \"2021\"\nbuild = \"build.rs\"\n",
    );
    write(
        dir,
        "gen/build.rs",
        "fn main() {\n    println!(\"cargo:rerun-if-changed=data.txt\");\n    \
         println!(\"cargo:rerun-if-env-changed=RDHT_TEST_FLAVOUR\");\n    \
         let data = std::fs::read_to_string(\"data.txt\").unwrap();\n    \
         let flavour = std::env::var(\"RDHT_TEST_FLAVOUR\").unwrap_or_default();\n    \
         let out = std::path::PathBuf::from(std::env::var(\"OUT_DIR\").unwrap());\n    \
         std::fs::write(out.join(\"gen.rs\"), format!(\"pub const DATA: &str = {:?};\\npub const FLAVOUR: &str = {:?};\\n\", data.trim(), flavour)).unwrap();\n}\n",
    );
    write(dir, "gen/data.txt", "one\n");
    write(
        dir,
        "gen/src/lib.rs",
        "include!(concat!(env!(\"OUT_DIR\"), \"/gen.rs\"));\n",
    );
}

#[test]
fn a_run_misses_exactly_when_what_it_declared_changed() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let a = swarm.node("a");
    let home = root.join("home");
    let run = |p: &Path, env: &[(&str, &str)]| {
        let (_, s) = dht_build_env(p, &home, &a.dir, env);
        a.rdht(&["sync"]);
        let out = std::process::Command::new(p.join("target/debug/genproj"))
            .output()
            .unwrap();
        (runs(&s), String::from_utf8(out.stdout).unwrap())
    };
    let p1 = root.join("p1");
    write_gen_project(&p1);
    assert_eq!(run(&p1, &[]), ((1, 0, 1, 0), "one \n".into()));
    // Another path, nothing changed: the run hits.
    let p2 = root.join("p2");
    copy_project(&p1, &p2);
    assert_eq!(run(&p2, &[]), ((1, 1, 0, 0), "one \n".into()));
    // The declared file changed: cargo reruns the script, and the run misses.
    write(&p2, "gen/data.txt", "two\n");
    assert_eq!(run(&p2, &[]), ((1, 0, 1, 0), "two \n".into()));
    // The declared variable changed: the same.
    let flavour = [("RDHT_TEST_FLAVOUR", "salty")];
    assert_eq!(run(&p2, &flavour), ((1, 0, 1, 0), "two salty\n".into()));
    // Back to the first values at yet another path: the first run hits again.
    let p3 = root.join("p3");
    copy_project(&p1, &p3);
    assert_eq!(run(&p3, &[]), ((1, 1, 0, 0), "one \n".into()));
    // A fresh copy with an undeclared file changed: the package's files are in the
    // script's own key (cargo reruns such a script for any file when it declares
    // nothing), so its compile misses, and its run with it.
    let p4 = root.join("p4");
    copy_project(&p1, &p4);
    write(&p4, "gen/notes.txt", "x\n");
    assert_eq!(run(&p4, &[]), ((1, 0, 1, 0), "one \n".into()));
}

/// The gen project with a build script that also writes 32 MiB of incompressible bytes
/// into `OUT_DIR`, so that restoring its run takes a while.
fn write_big_gen_project(dir: &Path) {
    write_gen_project(dir);
    write(
        dir,
        "gen/build.rs",
        "fn main() {\n    println!(\"cargo:rerun-if-changed=data.txt\");\n    \
         let data = std::fs::read_to_string(\"data.txt\").unwrap();\n    \
         let out = std::path::PathBuf::from(std::env::var(\"OUT_DIR\").unwrap());\n    \
         std::fs::write(out.join(\"gen.rs\"), format!(\"pub const DATA: &str = {:?};\\npub const FLAVOUR: &str = \\\"\\\";\\n\", data.trim())).unwrap();\n    \
         let mut x: u64 = 0x9e3779b97f4a7c15;\n    \
         let big: Vec<u8> = (0..32 << 20).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 }).collect();\n    \
         std::fs::write(out.join(\"big.bin\"), big).unwrap();\n}\n",
    );
}

/// Every file under `dir` by relative path, with its bytes' hash.
fn tree(dir: &Path) -> Vec<(String, blake3::Hash)> {
    rdht_testnet::snapshot(dir)
        .into_iter()
        .map(|(k, (h, _))| (k, h))
        .collect()
}

#[test]
fn a_daemon_killed_while_a_run_is_restored_costs_only_the_run() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let a = swarm.node("a");
    let mut b = swarm.node("b");
    b.rdht(&["trust", "add", &a.builder_key()]);
    let pa = root.join("a/p");
    write_big_gen_project(&pa);
    let (_, sa) = dht_build_env(&pa, &root.join("home-a"), &a.dir, &[]);
    a.rdht(&["sync"]);
    assert_eq!(runs(&sa), (1, 0, 1, 0), "{sa}");
    let pb = root.join("b/p");
    copy_project(&pa, &pb);
    let build = std::process::Command::new(rdht_testnet::bin("cargo-dht-build"))
        .args(["dht-build", "--json"])
        .current_dir(&pb)
        .env("CARGO_HOME", root.join("home-b"))
        .env("RDHT_DATA_DIR", &b.dir)
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The restore's scratch directory beside OUT_DIR exists from the declaration's
    // export until the run is in place: kill B as soon as it appears.
    let build_dir = pb.join("target/debug/build");
    let restoring = || {
        std::fs::read_dir(&build_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|unit| {
                std::fs::read_dir(unit.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".rdht-run-"))
            })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !restoring() {
        assert!(std::time::Instant::now() < deadline, "no restore began");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    b.kill();
    let out = build.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the build fails:\n{stderr}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Killed mid-restore, the run was built here.
    assert_eq!(runs(&s), (1, 0, 1, 0), "{s}");
    let run = |p: &Path| {
        std::process::Command::new(p.join("target/debug/genproj"))
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(run(&pb), run(&pa));
    assert_eq!(String::from_utf8(run(&pb)).unwrap(), "one \n");
    let out_dir = |p: &Path| {
        let build = p.join("target/debug/build");
        let unit = std::fs::read_dir(&build)
            .unwrap()
            .flatten()
            .map(|e| e.path().join("out"))
            .find(|o| o.join("gen.rs").is_file())
            .unwrap();
        tree(&unit)
    };
    assert_eq!(
        out_dir(&pb),
        out_dir(&pa),
        "OUT_DIR as a local run leaves it"
    );
}
