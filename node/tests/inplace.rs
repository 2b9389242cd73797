//! A fetch written in place (issue 17 part 4) against real daemons: a daemon killed
//! while it writes a fetched file at its offsets keeps nothing of it after a restart —
//! the partial file is removed, nothing lists or exports it — and the next fetch starts
//! again and completes byte-identical.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdht_testnet::{Swarm, bin, content, snapshot};

const DEADLINE: Duration = Duration::from_secs(120);

/// Sends `sig` (e.g. `-STOP`) to process `pid`.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

/// The temporaries under a store's `files/tmp`, with their lengths.
fn temporaries(data: &Path) -> Vec<u64> {
    match std::fs::read_dir(data.join("store/files/tmp")) {
        Ok(rd) => rd.map(|e| e.unwrap().metadata().unwrap().len()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_daemon_killed_during_a_fetch_in_place_keeps_nothing_of_it_and_fetches_again() {
    let swarm = Swarm::new();
    let tree = swarm.tmp.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let big = 128 << 20;
    std::fs::write(tree.join("libbig.rlib"), content("big", big)).unwrap();
    std::fs::write(tree.join("small.rmeta"), content("small", 5000)).unwrap();
    let n1 = swarm.node("n1");
    let mut n2 = swarm.node("n2");
    let root = n1
        .stdout(&["put", tree.to_str().unwrap()])
        .trim()
        .to_string();

    let out = swarm.tmp.path().join("out");
    let mut get = Command::new(bin("rdht"))
        .arg("--data-dir")
        .arg(&n2.dir)
        .args(["get", &root, out.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Mid-fetch: n2 has written part of the big file in place.
    let start = Instant::now();
    while !temporaries(&n2.dir).iter().any(|&len| len >= 4 << 20) {
        assert!(
            get.try_wait().unwrap().is_none(),
            "the get ended before the fetch was seen writing in place"
        );
        assert!(start.elapsed() < DEADLINE, "no fetch in place seen");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The provider freezes, so the fetch cannot finish; then n2 dies.
    let provider = n1.pid().unwrap();
    signal(provider, "-STOP");
    n2.kill();
    signal(provider, "-CONT");
    assert!(
        !get.wait().unwrap().success(),
        "the get failed with its daemon"
    );
    let left = temporaries(&n2.dir);
    assert_eq!(left.len(), 1, "the killed daemon left its partial file");
    assert!(left[0] < big as u64 + 1, "{left:?}");

    n2.spawn();
    assert_eq!(temporaries(&n2.dir), Vec::<u64>::new(), "removed at open");
    // Nothing of the fetch is stored: the blocks it put were never registered.
    let st = n2.json(&["status"]);
    assert_eq!(
        (&st["store"]["blocks"], &st["store"]["logical_bytes"]),
        (&serde_json::json!(0), &serde_json::json!(0)),
        "{st}"
    );
    assert!(!out.join("libbig.rlib").exists());

    let again = swarm.tmp.path().join("again");
    n2.rdht(&["get", &root, again.to_str().unwrap()]);
    assert_eq!(snapshot(&again), snapshot(&tree));
    let st = n2.json(&["status"]);
    let logical = st["store"]["logical_bytes"].as_u64().unwrap();
    assert!(logical > big as u64 + 5000, "{st}");
    assert_eq!(temporaries(&n2.dir), Vec::<u64>::new());
}
