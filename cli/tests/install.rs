//! `cargo install` through the wrapper (issue 16, part 3): cargo builds a `--git` (or
//! registry) install in a temporary target dir and removes it as soon as it exits,
//! before the daemon's job worker reads the outputs. Every unit must still be shared,
//! the final binary included, and a second install on another machine (another
//! CARGO_HOME, another daemon that trusts the first) must be all hits, with an
//! identical binary. The project depends on `libc`, whose build script's run is shared
//! and hit like any unit (part 1).
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Command;

use rdht_testnet::{SMALL_MYLIB, Swarm, wrapped_cargo, write_small_project};

/// The small project as a git repository with one commit; returns its `file://` URL.
fn git_repo(dir: &Path) -> String {
    write_small_project(dir, SMALL_MYLIB, "libc = \"=0.2.191\"\n");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "proj"]);
    format!("file://{}", dir.display())
}

/// The unit kinds of a session log, sorted: `["hit", "hit", ...]`.
fn kinds(log: &Path) -> Vec<String> {
    let mut k: Vec<String> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
        .collect();
    k.sort();
    k
}

#[test]
fn a_cargo_install_shares_every_unit_and_a_second_install_is_all_hits() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let url = git_repo(&root.join("repo"));
    let a = swarm.node("a");
    let b = swarm.node("b");
    b.rdht(&["trust", "add", &a.builder_key()]);
    let install = |node: &rdht_testnet::Node, who: &str| {
        let (home, into, log) = (
            root.join(format!("home-{who}")),
            root.join(format!("bin-{who}")),
            root.join(format!("{who}.jsonl")),
        );
        let args = [
            "install",
            "--git",
            &url,
            "proj",
            "--root",
            into.to_str().unwrap(),
        ];
        wrapped_cargo(&args, root, &home, &node.dir, &log);
        (std::fs::read(into.join("bin/proj")).unwrap(), log)
    };
    let (bin_a, log_a) = install(&a, "a");
    // cargo removed its temporary target dir on exit; the jobs still had the files.
    // Six rustc units (libc's build script among them) and libc's run, whose
    // declaration and outputs are two records.
    let sync = a.json(&["sync"]);
    assert_eq!(
        (&sync["published"], &sync["failed"]),
        (&serde_json::json!(8), &serde_json::json!(0)),
        "{sync}"
    );
    assert_eq!(kinds(&log_a), vec!["\"miss\""; 7]);
    let (bin_b, log_b) = install(&b, "b");
    assert_eq!(kinds(&log_b), vec!["\"hit\""; 7]);
    assert!(bin_a == bin_b, "both installs give the same binary");
    let out = Command::new(root.join("bin-b/bin/proj")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "7 42 Some(1)\n");
}
