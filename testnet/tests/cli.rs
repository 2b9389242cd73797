//! The `rdht-testnet` binary as a user runs it: `up` returns with the daemons still
//! running, `status --json` reports them, `kill` and `restart` act on one node, `down`
//! stops them all. On loopback; state in a temp dir (`RDHT_TESTNET_DIR`).
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;
use std::process::{Command, Output};

fn testnet(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_rdht-testnet"))
        .args(args)
        .env("RDHT_TESTNET_DIR", dir)
        // The daemons sit beside this test's target dir, as after `cargo build --bins`.
        .env("RDHT_BIN_DIR", rdht_testnet::bin_dir().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rdht-testnet {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn status(dir: &Path) -> Vec<(bool, u64)> {
    let v: serde_json::Value =
        serde_json::from_slice(&testnet(dir, &["--json", "status"]).stdout).unwrap();
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["running"].as_bool().unwrap(),
                n["pid"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn alive(pid: u64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .rsplit_once(')')
            .unwrap()
            .1
            .trim_start()
            .starts_with('Z')
}

/// Runs `rdht-testnet down` when dropped, so a failing assertion does not leave the
/// detached daemons running (best effort: the test's own `down` is the one checked).
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_rdht-testnet"))
            .arg("down")
            .env("RDHT_TESTNET_DIR", self.0)
            .output();
    }
}

#[test]
fn up_returns_with_daemons_running_then_kill_restart_and_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tn");
    let _down = Down(&dir);
    let up = testnet(&dir, &["up", "3"]);
    let dirs: Vec<String> = String::from_utf8(up.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(dirs.len(), 3, "{dirs:?}");
    for (k, d) in dirs.iter().enumerate() {
        assert!(d.ends_with(&format!("n{}", k + 1)), "{d}");
        assert!(Path::new(d).join("api.sock").exists(), "{d}");
    }
    // A second `up` on a running testnet is refused.
    let again = Command::new(env!("CARGO_BIN_EXE_rdht-testnet"))
        .args(["up", "2"])
        .env("RDHT_TESTNET_DIR", &dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    let st = status(&dir);
    assert_eq!(st.iter().filter(|(r, _)| *r).count(), 3, "{st:?}");
    assert!(st.iter().all(|(_, pid)| alive(*pid)));

    // The swarm works across the detached daemons: put on 1, get on 3.
    let rdht = rdht_testnet::bin("rdht");
    let file = tmp.path().join("f.bin");
    std::fs::write(&file, vec![7u8; 100_000]).unwrap();
    let put = Command::new(&rdht)
        .args(["--data-dir", &dirs[0], "put"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(put.status.success());
    let root = String::from_utf8(put.stdout).unwrap().trim().to_string();
    let got = Command::new(&rdht)
        .args(["--data-dir", &dirs[2], "get", &root])
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        std::fs::read(tmp.path().join("out/f.bin")).unwrap(),
        vec![7u8; 100_000]
    );

    let killed = st[1].1;
    testnet(&dir, &["kill", "2"]);
    // The harness counts a node dead once its command line is gone; the kernel may
    // show the exiting process a moment longer before it turns into a zombie.
    let start = std::time::Instant::now();
    while alive(killed) {
        assert!(
            start.elapsed() < rdht_testnet::DEADLINE,
            "pid {killed} still alive"
        );
        std::thread::sleep(rdht_testnet::POLL);
    }
    let st = status(&dir);
    assert_eq!(
        st.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        [true, false, true]
    );
    testnet(&dir, &["restart", "2"]);
    let st = status(&dir);
    assert!(st[1].0 && alive(st[1].1) && st[1].1 != killed, "{st:?}");

    let pids: Vec<u64> = st.iter().map(|(_, p)| *p).collect();
    testnet(&dir, &["down"]);
    assert!(pids.iter().all(|p| !alive(*p)), "every daemon stopped");
    assert!(!dir.join(rdht_testnet::STATE_FILE).exists());
}
