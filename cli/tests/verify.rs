//! Trust end to end: `cargo dht-build --verify` against a swarm where a builder signed a
//! wrong root for a unit (a validly signed lie). The mismatch is reported, the builder
//! blocklisted, the run exits non-zero; the honest registry unit matches (the same unit
//! built in two directories with two CARGO_HOMEs has the same root), and incremental
//! workspace units are reported as not reproducible rather than blamed on anyone.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Command;

use rdht_api::proto::Scope;
use rdht_api::{Client, Request, Response};
use rdht_core::{BuildKey, Labels};
use rdht_testnet::{Swarm, bin, wrapped_cargo};

fn write_project(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("mylib/src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"proj\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nmylib = { path = \"mylib\" }\nitoa = \"=1.0.11\"\nmemchr = \"=2.7.4\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/main.rs"),
        "fn main() {\n    let mut b = itoa::Buffer::new();\n    let at = memchr::memchr(b'4', b\"x42\");\n    println!(\"{} {} {:?}\", mylib::f(), b.format(42), at);\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("mylib/Cargo.toml"),
        "[package]\nname = \"mylib\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("mylib/src/lib.rs"),
        "pub fn f() -> u32 {\n    7\n}\n",
    )
    .unwrap();
}

#[test]
fn verify_catches_a_validly_signed_wrong_root_and_blocklists_its_builder() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let a = swarm.node("a");
    let b = swarm.node("b");

    // A builds the project; the session log gives each unit's key.
    let p1 = root.join("one/p");
    write_project(&p1);
    let log = root.join("a-units.jsonl");
    wrapped_cargo(&["build"], &p1, &root.join("home-a"), &a.dir, &log);
    // The daemon stores and publishes in the background; wait for it.
    assert_eq!(a.stdout(&["sync"]), "4 published, 0 failed\n");
    let units: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(units.len(), 4, "itoa, memchr, mylib, proj: {units:?}");
    let itoa_key: BuildKey = units.iter().find(|u| u["crate_name"] == "itoa").unwrap()["key"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // A also signs a record claiming a bogus artifact for itoa's key.
    let bogus = root.join("bogus");
    std::fs::create_dir_all(&bogus).unwrap();
    std::fs::write(bogus.join("libitoa.rlib"), b"not what rustc makes").unwrap();
    let bogus_root = a
        .stdout(&["put", bogus.to_str().unwrap()])
        .trim()
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = Client::connect(&rdht_api::socket_path(&a.dir))
            .await
            .unwrap();
        let r = c
            .call(Request::Publish {
                key: itoa_key,
                root: bogus_root.parse().unwrap(),
                labels: Labels::default(),
                scope: Scope::Private,
                build_ms: 0,
            })
            .await
            .unwrap();
        assert!(matches!(r, Response::Published { .. }));
    });
    let a_key = a.builder_key();

    // B verifies a copy elsewhere, with another CARGO_HOME.
    let p2 = root.join("two/p-copy");
    write_project(&p2);
    std::fs::copy(p1.join("Cargo.lock"), p2.join("Cargo.lock")).unwrap();
    let out = Command::new(bin("cargo-dht-build"))
        .args(["dht-build", "--verify", "--json"])
        .current_dir(&p2)
        .env("CARGO_HOME", root.join("home-b"))
        .env("RDHT_DATA_DIR", &b.dir)
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let stderr = format!(
        "{}\n--- daemon a ---\n{}\n--- daemon b ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(a.log()).unwrap_or_default(),
        std::fs::read_to_string(b.log()).unwrap_or_default()
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["verify"],
        // proj links mylib, whose incremental output differs between the two builds, so
        // proj's key differs too: no record.
        serde_json::json!({"match": 1, "mismatch": 1, "no record": 1, "not reproducible": 1}),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "rdht: verify memchr: match (1 builder record(s) agree with the local build)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("rdht: verify itoa: MISMATCH: local build gives")
            && stderr.contains(&format!("blocklisted {a_key}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "rdht: verify mylib: not reproducible (incremental build); no builder blamed"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("rdht: verify: 1 match, 1 mismatch, 1 no record, 1 not reproducible"),
        "{stderr}"
    );
    let blocked = b.json(&["trust", "blocked"]);
    assert_eq!(blocked[0]["builder"], a_key.as_str(), "{blocked}");
    assert!(
        blocked[0]["reason"].as_str().unwrap().starts_with(&format!(
            "claimed root {bogus_root} for build key {itoa_key}"
        )),
        "{blocked}"
    );
    // B published its own record: its root is A's honest one. With A blocklisted, B's
    // own record is the one its policy accepts; A's two records are refused.
    let records = b.json(&["records", &itoa_key.to_string()]);
    let list = records.as_array().unwrap();
    assert_eq!(list.len(), 3, "{records}");
    let accepted: Vec<_> = list.iter().filter(|r| r["trusted"] == true).collect();
    assert_eq!(accepted.len(), 1, "{records}");
    assert_eq!(accepted[0]["reason"], "built by this node", "{records}");
    let honest = list
        .iter()
        .filter(|r| r["builder"] == a_key.as_str() && r["root"] != bogus_root.as_str())
        .count();
    assert_eq!(honest, 1, "{records}");
    assert!(
        list.iter().all(|r| r["builder"] != a_key.as_str()
            || r["reason"]
                .as_str()
                .unwrap()
                .starts_with("builder is blocklisted")),
        "{records}"
    );
    let b_root = &accepted[0]["root"];
    assert!(
        list.iter()
            .any(|r| r["builder"] == a_key.as_str() && &r["root"] == b_root),
        "B agrees with A's honest record: {records}"
    );
}
