//! Hosts with their own addresses: 5 daemons, each in its own network namespace on a
//! private bridge. An artifact put on node 1 is fetched by node 2; node 1 is then cut
//! off, and node 5 still fetches it, from node 2, byte for byte. Skips (with the
//! reason printed) where network namespaces are unavailable; CI runs as root and runs
//! it.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdht_testnet::{Testnet, content, netns};

/// Relative path → content hash for every file under `root`.
fn snapshot(root: &Path) -> BTreeMap<String, blake3::Hash> {
    rdht_testnet::snapshot(root)
        .into_iter()
        .map(|(path, (hash, _))| (path, hash))
        .collect()
}

/// `rdht --json get ROOT DEST` on node `i`; returns the snapshot of DEST and how long
/// the fetch took.
fn get(
    net: &Testnet,
    i: usize,
    root: &str,
    dest: &Path,
) -> (BTreeMap<String, blake3::Hash>, Duration) {
    let start = Instant::now();
    let got = net
        .json(i, &["get", root, dest.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("node {i} get: {e}"));
    let took = start.elapsed();
    assert_eq!(got["files"], 4, "{got}");
    (snapshot(dest), took)
}

fn store_blocks(net: &Testnet, i: usize) -> u64 {
    let st = net.json(i, &["status"]).unwrap();
    st["store"]["blocks"]
        .as_u64()
        .unwrap_or_else(|| panic!("store.blocks in {st}"))
}

#[test]
fn partitioned_origin_node_five_still_fetches_from_node_two() {
    if let Some(why) = netns::unavailable() {
        eprintln!("skipping the network-namespace test: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut net = Testnet::up(&tmp.path().join("net"), 5, true).unwrap();
    // Each node listens on its own address, not loopback.
    for s in net.nodes() {
        let want = format!("/ip4/10.213.0.{}/tcp/", s.index);
        assert!(s.bootstrap_line.starts_with(&want), "{s:?}");
        assert!(s.netns.is_some());
    }

    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("deps")).unwrap();
    for (rel, len) in [
        ("libbig.rlib", 3 << 20),
        ("deps/a.o", 200 << 10),
        ("deps/b.o", (64 << 10) + 3),
        ("empty", 0),
    ] {
        std::fs::write(tree.join(rel), content(rel, len)).unwrap();
    }
    let want = snapshot(&tree);
    let root = net.json(1, &["put", tree.to_str().unwrap()]).unwrap()["root"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(root.len(), 64, "{root}");

    let (got2, _) = get(&net, 2, &root, &tmp.path().join("out2"));
    assert_eq!(got2, want, "node 2: byte-identical");
    // Only nodes 1 and 2 hold it: with node 1 cut off, node 2 is the only source.
    assert_eq!((store_blocks(&net, 3), store_blocks(&net, 4)), (0, 0));
    net.partition(1).unwrap();
    let (got5, took) = get(&net, 5, &root, &tmp.path().join("out5"));
    assert_eq!(got5, want, "node 5: byte-identical");
    eprintln!("node 5 fetched with node 1 partitioned in {took:?}");

    // Healed, node 1 answers again; killed and restarted, it keeps its identity.
    net.heal(1).unwrap();
    let id = net.json(1, &["id"]).unwrap()["peer_id"].clone();
    net.kill(1).unwrap();
    net.restart(1).unwrap();
    assert_eq!(net.json(1, &["id"]).unwrap()["peer_id"], id);
    net.down().unwrap();
}
