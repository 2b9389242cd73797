//! A provider that has gone away costs nothing (issue 22), with real daemons in network
//! namespaces and real `cargo dht-build` runs of a crates.io project (itoa, memchr and
//! a path crate): a partitioned provider costs a build one bound, the summary names it,
//! the next build does not dial it within its back-off, and once healed it is used
//! again; with two providers of which one is cut off, every unit hits from the other
//! and no resolve waits for the cut-off one until the bound.
//!
//! Needs root and `ip` (CI runs as root): where network namespaces are unavailable the
//! tests fail, saying why, rather than skip.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdht_testnet::{Testnet, dht_build, netns};

/// Back-off of node 3 in these tests: far longer than two builds of the project, short
/// enough that the heal test waits for its end.
const BACKOFF_MS: u64 = 45_000;

fn require_netns() {
    if let Some(why) = netns::unavailable() {
        panic!("these tests need network namespaces (CI runs them as root): {why}");
    }
}

/// The tests' small project at `dir`, with `opt-level = opt` so that each level has
/// its own build keys for every unit.
fn write_project(dir: &Path, opt: u8) -> PathBuf {
    let profile = format!("\n[profile.dev]\nincremental = false\nopt-level = {opt}\n");
    rdht_testnet::write_small_project(dir, rdht_testnet::SMALL_MYLIB, &profile);
    dir.to_path_buf()
}

/// A testnet of 3 nodes in namespaces; node 3 has the test's back-off.
fn testnet(dir: &Path) -> Testnet {
    let mut net = Testnet::up(dir, 3, true).unwrap();
    net.stop(3).unwrap();
    std::fs::write(
        net.data_dir(3).unwrap().join("config.toml"),
        format!("unreachable_backoff_ms = {BACKOFF_MS}\n"),
    )
    .unwrap();
    net.restart(3).unwrap();
    net
}

fn builder_key(net: &Testnet, i: usize) -> String {
    net.json(i, &["id"]).unwrap()["builder_key"]
        .as_str()
        .unwrap()
        .to_string()
}

fn peer_id(net: &Testnet, i: usize) -> String {
    net.json(i, &["id"]).unwrap()["peer_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `cargo dht-build` of `project` through node `i`: its summary and summary line.
fn build(net: &Testnet, i: usize, project: &Path, home: &Path) -> (serde_json::Value, String) {
    let (out, s) = dht_build(project, home, &net.data_dir(i).unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .rfind(|l| l.starts_with("rdht: ") && l.contains(" units, "))
        .unwrap_or_else(|| panic!("no summary line:\n{stderr}"))
        .to_string();
    (s, line)
}

/// Builds `project` on node `i` and waits until the daemon has shared it.
fn publish(net: &Testnet, i: usize, project: &Path, home: &Path) {
    let (s, _) = build(net, i, project, home);
    assert_eq!(s["units"], 4, "{s}");
    net.rdht(i, &["sync"]).unwrap();
}

fn reach(net: &Testnet, i: usize) -> serde_json::Value {
    net.json(i, &["status"]).unwrap()["reach"].clone()
}

/// Node `i`'s memory of peer `peer`, if it remembers it as unreachable.
fn unreachable_entry(net: &Testnet, i: usize, peer: &str) -> Option<serde_json::Value> {
    reach(net, i)["unreachable"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["peer_id"] == peer)
        .cloned()
}

fn counter(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[test]
fn a_partitioned_provider_costs_one_bound_is_named_not_redialled_and_used_again_once_healed() {
    require_netns();
    let tmp = tempfile::tempdir().unwrap();
    let net = testnet(&tmp.path().join("net"));
    let key1 = builder_key(&net, 1);
    net.rdht(3, &["trust", "add", &key1]).unwrap();
    let peer1 = peer_id(&net, 1);
    let (home1, home3) = (tmp.path().join("home1"), tmp.path().join("home3"));
    // Node 1 builds three variants, each with its own keys.
    for opt in [0, 1, 2] {
        let p = write_project(&tmp.path().join(format!("n1-{opt}")), opt);
        publish(&net, 1, &p, &home1);
    }

    net.partition(1).unwrap();
    // A copy at another path: every unit misses, because its only provider is cut off,
    // and the summary says so once.
    let (a, line) = build(&net, 3, &write_project(&tmp.path().join("n3-0"), 0), &home3);
    assert_eq!(
        (a["units"].as_u64(), a["hits"].as_u64()),
        (Some(4), Some(0)),
        "{a}"
    );
    assert_eq!(
        a["miss_causes"],
        serde_json::json!({"unreachable": 4}),
        "{a}"
    );
    assert_eq!(
        a["unreachable_providers"],
        serde_json::json!([peer1]),
        "{a}"
    );
    assert!(line.ends_with(", 1 provider unreachable"), "{line}");
    let after_a = reach(&net, 3);
    let marked = unreachable_entry(&net, 3, &peer1).unwrap_or_else(|| panic!("{after_a}"));
    let dials = counter(&marked, "dials");
    let skipped = counter(&marked, "skipped");
    // Only the resolves that started before node 1 was known unreachable waited for
    // it (the plan's and cargo's first units: 3 with cargo's 2 jobs on an idle
    // machine), never every one of the 5 (4 units and the plan).
    let waits_a = counter(&after_a, "bound_waits");
    assert!((1..=4).contains(&waits_a), "{after_a}");

    // The next build, right after: node 1 is neither dialled nor waited for.
    let (b, line) = build(&net, 3, &write_project(&tmp.path().join("n3-1"), 1), &home3);
    assert_eq!(
        (b["units"].as_u64(), b["hits"].as_u64()),
        (Some(4), Some(0)),
        "{b}"
    );
    assert_eq!(
        b["miss_causes"],
        serde_json::json!({"unreachable": 4}),
        "{b}"
    );
    assert!(line.ends_with(", 1 provider unreachable"), "{line}");
    let after_b = reach(&net, 3);
    let marked = unreachable_entry(&net, 3, &peer1).unwrap_or_else(|| panic!("{after_b}"));
    assert!(
        counter(&marked, "retry_in_ms") > 0,
        "still in the back-off: {marked}"
    );
    assert_eq!(counter(&marked, "dials"), dials, "{marked}");
    assert!(counter(&marked, "skipped") > skipped, "{marked}");
    assert_eq!(counter(&after_b, "bound_waits"), waits_a, "{after_b}");

    // Healed, and its back-off over: node 1 is asked again and every unit hits.
    net.heal(1).unwrap();
    let deadline = Instant::now() + Duration::from_millis(BACKOFF_MS) + rdht_testnet::DEADLINE;
    while unreachable_entry(&net, 3, &peer1).is_some_and(|u| counter(&u, "retry_in_ms") > 0) {
        assert!(Instant::now() < deadline, "node 1's back-off never ended");
        std::thread::sleep(rdht_testnet::POLL);
    }
    let (c, line) = build(&net, 3, &write_project(&tmp.path().join("n3-2"), 2), &home3);
    assert_eq!(
        (c["units"].as_u64(), c["hits"].as_u64()),
        (Some(4), Some(4)),
        "{c}\n{line}"
    );
    assert_eq!(c["unreachable_providers"], serde_json::json!([]), "{c}");
    assert!(
        unreachable_entry(&net, 3, &peer1).is_none(),
        "{}",
        reach(&net, 3)
    );
    net.down().unwrap();
}

#[test]
fn with_one_of_two_providers_cut_off_every_unit_hits_from_the_other_without_waiting() {
    require_netns();
    let tmp = tempfile::tempdir().unwrap();
    let net = testnet(&tmp.path().join("net"));
    for i in [1, 2] {
        let k = builder_key(&net, i);
        net.rdht(3, &["trust", "add", &k]).unwrap();
        let p = write_project(&tmp.path().join(format!("n{i}")), 0);
        publish(&net, i, &p, &tmp.path().join(format!("home{i}")));
    }
    net.partition(1).unwrap();
    let (s, line) = build(
        &net,
        3,
        &write_project(&tmp.path().join("n3"), 0),
        &tmp.path().join("home3"),
    );
    assert_eq!(
        (s["units"].as_u64(), s["hits"].as_u64()),
        (Some(4), Some(4)),
        "{s}\n{line}"
    );
    assert_eq!(s["misses"], 0, "{s}");
    // Node 2's records were enough each time: no resolve waited for node 1's answer
    // until the bound.
    let r = reach(&net, 3);
    assert_eq!(counter(&r, "bound_waits"), 0, "{r}");
    net.down().unwrap();
}
