//! The `rdht` binary without a daemon: exit codes and messages a user sees first.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::process::Command;

fn rdht() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rdht"))
}

#[test]
fn stopped_daemon_gives_one_line_with_the_command_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = rdht()
        .arg("--data-dir")
        .arg(dir.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "rdht: no rdht daemon is running for data directory {d}; start it with: rdht-node --data-dir {d}\n",
            d = dir.path().display()
        )
    );
}

#[test]
fn swarm_keygen_writes_a_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("swarm.key");
    let out = rdht()
        .args(["swarm", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"));
    assert_eq!(text.len(), "/key/swarm/psk/1.0.0/\n/base16/\n".len() + 65);
    let again = rdht()
        .args(["swarm", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(again.stderr).unwrap(),
        format!(
            "rdht: {} already exists; remove it first or choose another path with --out\n",
            key.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        text,
        "not overwritten"
    );
}

#[test]
fn malformed_ids_are_usage_errors() {
    let out = rdht().args(["get", "abc", "/tmp/x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("invalid block id \"abc\": expected 64 hex digits, got 3 characters"),
        "{err}"
    );
}
