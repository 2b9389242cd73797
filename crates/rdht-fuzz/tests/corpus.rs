//! The committed corpus on stable: every file of `fuzz/corpus/<target>/` goes through
//! its target's function, the same one `cargo fuzz run <target>` calls, so the corpus
//! (seeds, what the fuzzer kept, and every crash it found) is checked by `cargo test`
//! on machines without nightly.
//!
//! Does not fuzz: it runs only the committed inputs. Regression tests for the crashes
//! themselves live in the crates that were fixed.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rdht_fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Names of the entries of `dir` that `keep` accepts, sorted.
fn names(dir: &Path, keep: impl Fn(&Path) -> bool) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| keep(p))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_target_has_a_cargo_fuzz_binary_and_a_corpus() {
    let targets: BTreeSet<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(targets.len(), TARGETS.len(), "target names repeat");
    let bins = names(&fuzz_dir().join("fuzz_targets"), |p| p.is_file());
    let rs: BTreeSet<String> = targets.iter().map(|t| format!("{t}.rs")).collect();
    assert_eq!(bins, rs);
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for t in &targets {
        assert!(
            manifest.contains(&format!("name = \"{t}\"\npath = \"fuzz_targets/{t}.rs\"")),
            "fuzz/Cargo.toml has no [[bin]] {t}"
        );
    }
    assert_eq!(names(&fuzz_dir().join("corpus"), |p| p.is_dir()), targets);
}

#[test]
fn every_corpus_file_passes_its_target() {
    let mut failed = Vec::new();
    let mut total = 0u64;
    for (target, run) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        let files = names(&dir, |p| p.is_file());
        assert!(!files.is_empty(), "{target} has an empty corpus");
        for name in files {
            let path = dir.join(&name);
            let data = std::fs::read(&path).unwrap();
            total += data.len() as u64;
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(format!("{target}/{name}"));
            }
        }
    }
    assert_eq!(failed, Vec::<String>::new());
    // The corpus stays small enough to review and to commit.
    assert!(total < 1 << 20, "the committed corpus is {total} bytes");
}
