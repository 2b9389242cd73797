//! Hits across real machines (issue 23), end to end with a real daemon, real `cargo`
//! and crates.io crates: a CI job's cargo settings do not change any key, a variable a
//! crate reads with `env!` still does, a cargo that passes a bare `rustc` (no rustup,
//! or `RUSTC=rustc`) caches every unit, and `-C target-cpu=native` is keyed by what it
//! means on this machine.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod common;

use common::run_bin;
use rdht_testnet::{Swarm, dht_build_env, write_small_project};

/// `mylib` reads a variable at compile time: rustc records it in dep-info.
const MYLIB_ENV: &str = "pub fn f() -> &'static str {\n    env!(\"RDHT_TEST_GREETING\")\n}\n";

fn totals(s: &serde_json::Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    (n("units"), n("hits"), n("misses"), n("uncacheable"))
}

#[test]
fn cargo_settings_stay_out_of_keys_env_reads_count_and_a_bare_rustc_caches() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let node = swarm.node("n");
    let home = root.join("home");
    let build = |dir: &str, env: &[(&str, &str)]| {
        let p = root.join(dir);
        write_small_project(&p, MYLIB_ENV, "");
        let (_, s) = dht_build_env(&p, &home, &node.dir, env);
        node.rdht(&["sync"]);
        (p, s)
    };
    let hello = ("RDHT_TEST_GREETING", "hello");
    let (p1, s1) = build("one", &[hello]);
    assert_eq!(totals(&s1), (4, 0, 4, 0), "{s1}");
    assert_eq!(run_bin(&p1), "hello 42 Some(1)\n");

    // Regression: a CI job's settings of cargo itself got 0 hits.
    let ci = [
        hello,
        ("CARGO_NET_RETRY", "10"),
        ("CARGO_REGISTRIES_CRATES_IO_PROTOCOL", "sparse"),
        ("CARGO_TERM_VERBOSE", "false"),
        ("CARGO_HTTP_TIMEOUT", "60"),
    ];
    let (p2, s2) = build("two", &ci);
    assert_eq!(totals(&s2), (4, 4, 0, 0), "{s2}");
    assert_eq!(run_bin(&p2), "hello 42 Some(1)\n");
    // CARGO_INCREMENTAL=0 is in no key either, and the registry units hit; but cargo
    // itself gives the local crates (the only incremental ones) another `-C metadata`,
    // so their outputs have other names and bits: they are other units.
    let (_, s2b) = build("two-b", &[hello, ("CARGO_INCREMENTAL", "0")]);
    assert_eq!(totals(&s2b), (4, 2, 2, 0), "{s2b}");
    assert_eq!(s2b["missed"], serde_json::json!(["mylib", "proj"]), "{s2b}");

    // Regression: a cargo that passes a bare `rustc` made every unit uncacheable.
    let (p4, s4) = build("four", &[hello, ("RUSTC", "rustc")]);
    assert_eq!(totals(&s4), (4, 4, 0, 0), "{s4}");
    assert_eq!(run_bin(&p4), "hello 42 Some(1)\n");

    // What mylib read with env! changed: it misses, and so does proj, which links it.
    let (p3, s3) = build("three", &[("RDHT_TEST_GREETING", "bye")]);
    assert_eq!(totals(&s3), (4, 2, 2, 0), "{s3}");
    assert_eq!(s3["missed"], serde_json::json!(["mylib", "proj"]), "{s3}");
    assert_eq!(
        s3["miss_causes"],
        serde_json::json!({"environment differs": 1, "no record": 1}),
        "{s3}"
    );
    assert_eq!(run_bin(&p3), "bye 42 Some(1)\n");

    // `native` is keyed by this machine's CPU and features, so it is its own key: the
    // first build with it misses every unit, the second at another path hits them all.
    let native = [
        ("RDHT_TEST_GREETING", "bye"),
        ("RUSTFLAGS", "-C target-cpu=native"),
    ];
    let (_, s5) = build("five", &native);
    assert_eq!(totals(&s5), (4, 0, 4, 0), "{s5}");
    let (p6, s6) = build("six", &native);
    assert_eq!(totals(&s6), (4, 4, 0, 0), "{s6}");
    assert_eq!(run_bin(&p6), "bye 42 Some(1)\n");
}
