//! Trust end to end (issue 15), with real daemons, real `cargo` and real crates.io
//! crates: an edited unpacked registry source never reaches anyone under the honest key,
//! records by builders nobody trusts never count however many agree, `required_signatures`
//! needs that many trusted builders, the removed `trust_threshold` is refused by name,
//! private keys are never looked up in the public swarm, and a sampled rebuild catches a
//! trusted builder that serves the wrong artifact.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{publish_claim, run_bin};
use rdht_api::proto::Scope;
use rdht_core::BuildKey;
use rdht_testnet::{Node, NodeOpts, SMALL_MYLIB, Swarm, bin, dht_build, write_small_project};

/// What the honest binary prints.
const HONEST: &str = "7 42 Some(1)\n";
/// What it prints when built against the patched itoa.
const PATCHED: &str = "7 PWNED Some(1)\n";

/// Project P (the harness's small project), built without incremental compilation so
/// that every unit is reproducible.
fn write_project(dir: &Path) {
    write_small_project(dir, SMALL_MYLIB, "\n[profile.dev]\nincremental = false\n");
}

/// A copy of P at `to`, with `from`'s Cargo.lock when it has one.
fn copy_of(from: &Path, to: &Path) -> PathBuf {
    write_project(to);
    if from.join("Cargo.lock").exists() {
        std::fs::copy(from.join("Cargo.lock"), to.join("Cargo.lock")).unwrap();
    }
    to.to_path_buf()
}

/// Downloads P's packages into `home` and edits itoa's unpacked source there, as a
/// teammate debugging it, or an attacker, would.
fn patch_itoa(project: &Path, home: &Path) {
    let out = Command::new("cargo")
        .arg("fetch")
        .current_dir(project)
        .env("CARGO_HOME", home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let src = home.join("registry/src");
    let index = std::fs::read_dir(&src)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let lib = index.join("itoa-1.0.11/src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    let sig = "pub fn format<I: Integer>(&mut self, i: I) -> &str {";
    assert!(text.contains(sig), "{}", lib.display());
    let patched = text.replacen(
        sig,
        &format!("{sig}\n        if true {{ return \"PWNED\"; }}"),
        1,
    );
    std::fs::write(&lib, patched).unwrap();
}

fn totals(s: &serde_json::Value) -> (u64, u64, u64) {
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    (n("units"), n("hits"), n("misses"))
}

/// `cargo dht-build` of `project` through `node` with `home`; then waits until the
/// daemon has shared the run (so later builds elsewhere can find it).
fn build(project: &Path, home: &Path, node: &Node) -> serde_json::Value {
    let (_, s) = dht_build(project, home, &node.dir);
    node.rdht(&["sync"]);
    s
}

fn public() -> NodeOpts<'static> {
    NodeOpts {
        public: true,
        ..NodeOpts::default()
    }
}

fn private(config: &str) -> NodeOpts<'_> {
    NodeOpts {
        private: true,
        config,
        ..NodeOpts::default()
    }
}

/// Regression (issue 15): two fresh identities that patched their registry source, and
/// a third node with default settings on the public swarm. The third builds the honest
/// binary, every unit locally, and the summary says why.
#[test]
fn strangers_with_a_patched_registry_source_never_poison_a_default_node() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let x = swarm.node_with("x", public());
    let y = swarm.node_with("y", public());
    let z = swarm.node_with("z", public());
    let px = root.join("x/p");
    write_project(&px);
    patch_itoa(&px, &root.join("home-x"));
    let sx = build(&px, &root.join("home-x"), &x);
    assert_eq!(totals(&sx), (4, 0, 4), "{sx}");
    assert_eq!(run_bin(&px), PATCHED, "the patch is in X's binary");
    let py = copy_of(&px, &root.join("y/p"));
    patch_itoa(&py, &root.join("home-y"));
    build(&py, &root.join("home-y"), &y);
    assert_eq!(run_bin(&py), PATCHED);

    let pz = copy_of(&px, &root.join("z/p"));
    let sz = build(&pz, &root.join("home-z"), &z);
    assert_eq!(totals(&sz), (4, 0, 4), "{sz}");
    // memchr: X and Y published the honest artifact under the honest key, but nobody
    // trusts them. itoa: their patched source has another key. The path crate and the
    // binary are private and never looked up in the public swarm.
    assert_eq!(
        sz["miss_causes"],
        serde_json::json!({"no record": 3, "untrusted": 1}),
        "{sz}"
    );
    assert_eq!(run_bin(&pz), HONEST);
}

/// A trusted teammate whose registry source is patched: the patched unit has another
/// key, so it is never used for the honest one; the untouched units still hit.
#[test]
fn a_trusted_teammates_patched_registry_source_has_another_key() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let a = swarm.node("a");
    let b = swarm.node("b");
    b.rdht(&["trust", "add", &a.builder_key()]);
    let pa = root.join("a/p");
    write_project(&pa);
    patch_itoa(&pa, &root.join("home-a"));
    build(&pa, &root.join("home-a"), &a);
    assert_eq!(run_bin(&pa), PATCHED);

    let pb = copy_of(&pa, &root.join("b/p"));
    let sb = build(&pb, &root.join("home-b"), &b);
    // memchr and mylib hit; itoa misses, and so does proj, which links it.
    assert_eq!(totals(&sb), (4, 2, 2), "{sb}");
    assert_eq!(sb["missed"], serde_json::json!(["itoa", "proj"]), "{sb}");
    assert_eq!(
        sb["miss_causes"],
        serde_json::json!({"no record": 2}),
        "{sb}"
    );
    assert_eq!(run_bin(&pb), HONEST);
}

/// With `required_signatures = 2`, one trusted claimant is not enough; two agreeing are.
#[test]
fn required_signatures_two_needs_two_trusted_builders_to_agree() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let a1 = swarm.node("a1");
    let a2 = swarm.node("a2");
    let config = format!(
        "required_signatures = 2\ntrusted_keys = [{:?}, {:?}]\n",
        a1.builder_key(),
        a2.builder_key()
    );
    let p1 = root.join("a1/p");
    write_project(&p1);
    build(&p1, &root.join("home-a1"), &a1);

    // One trusted builder claims every unit: nothing is used.
    let b1 = swarm.node_with("b1", private(&config));
    let st = b1.json(&["status"]);
    assert_eq!(
        st["policy"],
        serde_json::json!({"trusted_builders": 3, "required_signatures": 2, "verify_sample_rate": 0.01}),
        "{st}"
    );
    let (_, s1) = dht_build(
        &copy_of(&p1, &root.join("b1/p")),
        &root.join("home-b1"),
        &b1.dir,
    );
    assert_eq!(totals(&s1), (4, 0, 4), "{s1}");
    assert_eq!(
        s1["miss_causes"],
        serde_json::json!({"untrusted": 4}),
        "{s1}"
    );

    // A second trusted builder agrees: every unit is used.
    build(
        &copy_of(&p1, &root.join("a2/p")),
        &root.join("home-a2"),
        &a2,
    );
    let b2 = swarm.node_with("b2", private(&config));
    let p2 = copy_of(&p1, &root.join("b2/p"));
    let (_, s2) = dht_build(&p2, &root.join("home-b2"), &b2.dir);
    assert_eq!(totals(&s2), (4, 4, 0), "{s2}");
    assert_eq!(run_bin(&p2), HONEST);
}

/// Regression (issue 15): the old `trust_threshold` setting stops the daemon at start,
/// naming its replacement, instead of being ignored.
#[test]
fn a_config_with_trust_threshold_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), "trust_threshold = 2\n").unwrap();
    let out = Command::new(bin("rdht-node"))
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "config file {}: `trust_threshold` is no longer supported",
            dir.join("config.toml").display()
        )) && stderr.contains("use `required_signatures = N`"),
        "{stderr}"
    );
}

/// Per-swarm lookup counters, by name.
fn lookups(node: &Node) -> (u64, u64) {
    let st = node.json(&["status"]);
    let of = |name: &str| {
        st["swarms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no swarm {name}: {st}"))["lookups"]
            .as_u64()
            .unwrap()
    };
    (of("private"), of("public"))
}

/// Regression (issue 15): a node in a private swarm and the public one looks up only
/// its crates.io units in the public swarm, never a path crate's unit or the plan.
#[test]
fn private_keys_are_never_looked_up_in_the_public_swarm() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let both = NodeOpts {
        private: true,
        public: true,
        ..NodeOpts::default()
    };
    // A peer in both swarms, so that lookups have someone to ask and are answered.
    let _q = swarm.node_with("q", both.clone());
    let p = swarm.node_with("p", both);
    assert_eq!(lookups(&p), (0, 0));
    let project = root.join("p/proj");
    write_project(&project);
    let s = build(&project, &root.join("home-p"), &p);
    assert_eq!(totals(&s), (4, 0, 4), "{s}");
    let (private, public) = lookups(&p);
    // itoa and memchr are asked for in the public swarm once each; mylib, proj and the
    // build plan only in the private one (each unit there too).
    assert_eq!(public, 2, "private {private}, public {public}");
    assert!(private >= 5, "private {private}, public {public}");
}

/// With the sample rate at 1.0, a trusted builder that serves another artifact for an
/// honest key is caught before the artifact is used: blocklisted, and the build's
/// output is the honest one.
#[test]
fn a_sampled_rebuild_catches_a_trusted_builder_serving_the_wrong_artifact() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    // A builds honestly; its session log names each unit's key.
    let a = swarm.node("a");
    let pa = root.join("a/p");
    write_project(&pa);
    let log = root.join("a-units.jsonl");
    let out = Command::new("cargo")
        .arg("build")
        .current_dir(&pa)
        .env("CARGO_HOME", root.join("home-a"))
        .env("RUSTC_WRAPPER", bin("cargo-dht-build"))
        .env("RDHT_DATA_DIR", &a.dir)
        .env("RDHT_SESSION_LOG", &log)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(out.status.success());
    let itoa_key: BuildKey = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|u| u["crate_name"] == "itoa")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // M, which B trusts, signs a record of another artifact for itoa's key.
    let m = swarm.node("m");
    let bogus = root.join("bogus/out");
    std::fs::create_dir_all(&bogus).unwrap();
    std::fs::write(bogus.join("libitoa-0000000000000000.rlib"), b"not rustc's").unwrap();
    let bogus_root = m
        .stdout(&["put", bogus.parent().unwrap().to_str().unwrap()])
        .trim()
        .to_string();
    publish_claim(&m.dir, itoa_key, &bogus_root, Scope::Everywhere);
    let config = format!(
        "verify_sample_rate = 1.0\ntrusted_keys = [{:?}]\n",
        m.builder_key()
    );
    let b = swarm.node_with("b", private(&config));
    let pb = copy_of(&pa, &root.join("b/p"));
    let (out, s) = dht_build(&pb, &root.join("home-b"), &b.dir);
    assert_eq!(totals(&s), (4, 0, 4), "{s}");
    assert_eq!(
        s["verify"],
        serde_json::json!({"sample mismatch": 1}),
        "{s}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "rdht: warning: itoa: the cached artifact differs from a local build; blocklisted 1 builder(s)"
        ),
        "{stderr}"
    );
    assert_eq!(run_bin(&pb), HONEST);
    let blocked = b.json(&["trust", "blocked"]);
    assert_eq!(blocked[0]["builder"], m.builder_key().as_str(), "{blocked}");
    assert_eq!(
        blocked[0]["reason"],
        format!(
            "sampled check: artifact {bogus_root} for build key {itoa_key} differs from a local build"
        ),
        "{blocked}"
    );
}
