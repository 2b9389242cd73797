//! The C runtime end to end (issue 23): a Debian 11 root (bullseye, glibc 2.31), made
//! with debootstrap from Debian's packages, with this machine's Rust toolchain bound
//! into it and rdht built inside it, builds the sample project (`testnet/sample`) from
//! the artifacts this machine built. Daemon A runs here, daemon B inside the root, in
//! one private swarm on loopback; B trusts A's builder key. B's build succeeds and its
//! binary runs inside the root. Every unit whose output would run there linked against
//! this machine's newer glibc (the build scripts, the proc macro, the binary) is a miss
//! counted by its `needs GLIBC_…` reason; every other unit hits, serde included: it
//! names the rebuilt proc macro with `--extern`, which counts by its build key.
//!
//! Owns: that scenario, with exact counts. Does not own: making roots and running
//! programs in them (`rdht_testnet::chroot`), or the fit check itself
//! (`rdht-fit`, unit-tested there).
//!
//! Needs root and debootstrap (`testnet/test.sh` installs it and runs the tests as
//! root): without them the test fails, saying what is missing, rather than skip. The
//! root and the target dir of rdht built inside it are kept in `/var/cache/rdht-tests/`
//! between runs; a machine without them makes both (measured on 2 cores: 43 s and
//! 133 s; the whole test then takes 200 s, and 36 s with both kept).
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdht_testnet::chroot::{self, Root};
use rdht_testnet::{NodeOpts, Swarm, bin, copy_project, dht_build_with};
use serde_json::Value;

/// The root: Debian 11 with what rustc needs to link (gcc, libc6-dev).
const SUITE: &str = "bullseye";
const DEBOOTSTRAP: &[&str] = &["--variant=minbase", "--include=gcc,libc6-dev"];

/// Every build here reads packages from this machine's registry, never the network.
const OFFLINE: (&str, &str) = ("CARGO_NET_OFFLINE", "true");

/// The sample's units: 14 crates, 8 of them with build scripts (each compiled as a
/// unit of its own).
const UNITS: u64 = 22;

/// The newest glibc version this machine's (Debian 12's) linked outputs need, and the
/// newest the root's glibc 2.31 defines (2.31 added no symbol version of its own).
const NEEDS: &str = "GLIBC_2.34";
const HAS: &str = "GLIBC_2.30";

/// What the sample binary prints.
const GREETING: &str =
    "hello from a build script {\"crates\":[\"serde\",\"anyhow\",\"greeter\"],\"cached\":true}\n";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `cmd`, which must succeed.
fn output(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Builds `rdht-node`, `rdht` and `cargo-dht-build` inside the root, since this
/// machine's builds need its newer glibc; returns the directory holding them and how
/// long the build took. The target dir and CARGO_HOME are kept with the root, so a
/// later run rebuilds only what changed.
fn build_rdht_inside(root: &Root) -> (PathBuf, Duration) {
    let target = root.state.join("target");
    let home = root.state.join("cargo-home");
    chroot::offline_home(&home).unwrap();
    let start = Instant::now();
    output(
        root.command(Path::new("cargo"))
            .args([
                "build",
                "--locked",
                "-p",
                "rdht-node",
                "-p",
                "rdht-cli",
                "--bins",
            ])
            // Unoptimised dependencies (the workspace's dev profile has them at 2):
            // quicker to build, and fast enough for one small project's artifacts.
            .args(["--config", "profile.dev.package.\"*\".opt-level=0"])
            .current_dir(workspace())
            .env("CARGO_HOME", &home)
            .env("CARGO_TARGET_DIR", &target)
            .env("CARGO_INCREMENTAL", "0")
            .env(OFFLINE.0, OFFLINE.1),
    );
    (target.join("debug"), start.elapsed())
}

#[test]
fn a_debian_11_root_builds_the_sample_from_this_machines_artifacts_missing_only_misfits() {
    if let Some(why) = chroot::unavailable() {
        panic!("this test makes a Debian 11 root and cannot run here: {why}");
    }
    let start = Instant::now();
    let mut root = Root::debootstrap(SUITE, DEBOOTSTRAP).unwrap();
    let state = root.state.clone();
    root.toolchain()
        .bind(&workspace(), false)
        .bind(&state, true)
        .bind(&std::env::temp_dir(), true);
    let (bins, rdht_took) = build_rdht_inside(&root);

    let swarm = Swarm::new();
    let tmp = swarm.tmp.path();
    let a = swarm.node("a");
    // No sampled rebuilds, so B's counts are exact (the harness already widens the
    // decision bound for a loaded machine).
    let b = swarm.node_with(
        "b",
        NodeOpts {
            private: true,
            config: "verify_sample_rate = 0.0\n",
            launch: Some(root.launch(&bins.join("rdht-node"))),
            ..NodeOpts::default()
        },
    );
    b.rdht(&["trust", "add", &a.builder_key()]);

    // A builds the sample here, from the packages in this machine's registry, with the
    // same environment as B's rather than what `cargo test` set for this process
    // (cargo passes on to rustc what it inherits, `CARGO_BIN_EXE_*` included, and that
    // is in keys).
    let sample = workspace().join("testnet/sample");
    let pa = tmp.join("a/sample");
    copy_project(&sample, &pa);
    output(
        Command::new("cargo")
            .args(["fetch", "--locked"])
            .current_dir(&pa)
            .env("CARGO_HOME", chroot::host_cargo_home()),
    );
    let home_a = tmp.join("home-a");
    chroot::offline_home(&home_a).unwrap();
    let mut here = Command::new(bin("cargo-dht-build"));
    here.env_clear().envs(chroot::toolchain_env());
    here.envs(std::env::var_os("HOME").map(|h| ("HOME", h)));
    let a_start = Instant::now();
    let (_, sa) = dht_build_with(here, &pa, &home_a, &a.dir, &[OFFLINE]);
    a.rdht(&["sync"]);
    let a_took = a_start.elapsed();
    assert_eq!(totals(&sa), (UNITS, 0, UNITS, 0), "{sa}");
    // A's binary needs this machine's glibc: the root really has another C runtime.
    let host_bin = root
        .command(&pa.join("target/debug/rdht-sample"))
        .current_dir(&pa)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&host_bin.stderr);
    assert!(
        !host_bin.status.success() && stderr.contains(&format!("version `{NEEDS}' not found")),
        "{stderr}"
    );

    // B builds a copy inside the root, with its own CARGO_HOME and target dir.
    let pb = tmp.join("b/sample");
    copy_project(&sample, &pb);
    let home_b = tmp.join("home-b");
    chroot::offline_home(&home_b).unwrap();
    let b_start = Instant::now();
    let (_, sb) = dht_build_with(
        root.command(&bins.join("cargo-dht-build")),
        &pb,
        &home_b,
        &b.dir,
        &[OFFLINE],
    );
    let b_took = b_start.elapsed();
    let run = output(
        root.command(&pb.join("target/debug/rdht-sample"))
            .current_dir(&pb),
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), GREETING);

    // What runs at build time or is linked for the host needs this machine's glibc:
    // the eight build scripts, the proc macro and the binary. Each is a miss, built
    // in the root.
    let reason = format!("needs {NEEDS} from libc.so.6; this machine has {HAS}");
    let want: BTreeMap<String, String> = [
        "anyhow",
        "greeter",
        "proc-macro2",
        "quote",
        "serde",
        "serde_core",
        "serde_json",
        "zmij",
    ]
    .iter()
    .map(|p| format!("build script of {p}"))
    .chain(["serde_derive".into(), "rdht_sample".into()])
    .map(|u| (u, reason.clone()))
    .collect();
    assert_eq!(misfits(&sb, &pb.join("target")), want, "{sb}");
    // B's own build of serde_derive differs from A's bytes (it is linked against the
    // root's glibc), but serde counts it by its build key (`--extern serde_derive=key:…`),
    // which is the same: serde, and everything else, hits.
    assert_eq!(sb["miss_causes"], serde_json::json!({reason: 10}), "{sb}");
    let mut missed = vec!["build_script_build"; 8];
    missed.extend(["rdht_sample", "serde_derive"]);
    assert_eq!(sb["missed"], serde_json::json!(missed), "{sb}");
    assert_eq!(totals(&sb), (UNITS, UNITS - 10, 10, 0), "{sb}");
    assert_eq!(sb["unreachable_providers"], serde_json::json!([]), "{sb}");

    let made = root
        .made_in
        .map_or("reused".to_string(), |t| format!("made in {t:.1?}"));
    eprintln!(
        "debian11: root {made}; rdht built inside in {rdht_took:.1?}; A's build {a_took:.1?}; \
         B's build {b_took:.1?} ({} hits); {:.1?} in all",
        sb["hits"],
        start.elapsed()
    );
}

/// (units, hits, misses, uncacheable) of a build summary.
fn totals(s: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    (n("units"), n("hits"), n("misses"), n("uncacheable"))
}

/// The misses of summary `s` whose cached outputs did not fit, by unit, with their
/// reason: `build script of PKG` for a build-script binary (its directory under
/// `target/debug/build` names the package), else the output's file name without
/// cargo's hash.
fn misfits(s: &Value, target: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (reason, count) in s["miss_reasons"].as_object().unwrap() {
        // Seen in the records, before fetching: the reason names the unit.
        if let Some(misfit) = reason.strip_prefix("trusted artifact of ") {
            let (unit, why) = misfit
                .split_once(" does not fit this machine: ")
                .unwrap_or_else(|| panic!("{reason}"));
            assert_eq!(count, 1, "{reason}");
            out.insert(unit.to_string(), why.to_string());
            continue;
        }
        // Seen in the files, after fetching (a record that does not say): it names
        // the file.
        let Some(misfit) = reason.strip_prefix("cached ") else {
            continue;
        };
        let (file, why) = misfit
            .split_once(" does not fit this machine: ")
            .unwrap_or_else(|| panic!("{reason}"));
        assert_eq!(count, 1, "{reason}");
        let (stem, rest) = file.rsplit_once('-').unwrap();
        let (hash, ext) = rest.split_once('.').map_or((rest, ""), |(h, e)| (h, e));
        let unit = if stem == "build_script_build" {
            let dirs = std::fs::read_dir(target.join("debug/build")).unwrap();
            let dir = dirs
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .find(|d| d.ends_with(&format!("-{hash}")))
                .unwrap_or_else(|| panic!("no build dir for {file}"));
            format!("build script of {}", &dir[..dir.len() - hash.len() - 1])
        } else if ext.is_empty() {
            stem.to_string()
        } else {
            format!("{stem}.{ext}")
        };
        out.insert(unit, why.to_string());
    }
    out
}
