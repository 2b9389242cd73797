//! Load on one daemon (issue 19, part 3): eight `cargo dht-build`s of different real
//! projects at once against one daemon, half of them warm from a peer. Every build
//! succeeds, every program prints what a plain local build's prints, and the daemon's
//! peak memory and descriptors are measured from `/proc`.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use rdht_testnet::{Swarm, bin, copy_project};

/// Eight small projects: each a binary using two crates.io crates (with build
/// scripts among them), printing values computed with both.
const PROJECTS: [(&str, &str, &str); 8] = [
    (
        "itoa = \"=1.0.11\"\nmemchr = \"=2.7.4\"",
        "let mut b = itoa::Buffer::new();",
        "println!(\"{} {:?}\", b.format(42), memchr::memchr(b'x', b\"axb\"));",
    ),
    (
        "hex = \"=0.4.3\"\nfnv = \"=1.0.7\"",
        "use std::hash::Hasher; let mut h = fnv::FnvHasher::default(); h.write(b\"rdht\");",
        "println!(\"{} {}\", hex::encode(b\"rdht\"), h.finish());",
    ),
    (
        "bitflags = \"=2.9.1\"\neither = \"=1.15.0\"",
        "bitflags::bitflags! { struct F: u8 { const A = 1; const B = 2; } }",
        "let e: either::Either<u8, u8> = either::Either::Left(3); println!(\"{} {}\", (F::A | F::B).bits(), e.left().unwrap());",
    ),
    (
        "libc = \"=0.2.191\"\nscopeguard = \"=1.2.0\"",
        "let pid_ok = unsafe { libc::getpid() } > 0;",
        "let g = scopeguard::guard(5, |_| {}); println!(\"{} {}\", pid_ok, *g);",
    ),
    (
        "byteorder = \"=1.5.0\"\ncfg-if = \"=1.0.0\"",
        "use byteorder::ByteOrder; let mut buf = [0u8; 4]; byteorder::BigEndian::write_u32(&mut buf, 258);",
        "cfg_if::cfg_if! { if #[cfg(unix)] { println!(\"{:?} unix\", buf); } else { println!(\"{:?}\", buf); } }",
    ),
    (
        "smallvec = \"=1.15.1\"\ndtoa = \"=1.0.10\"",
        "let mut v: smallvec::SmallVec<[u8; 4]> = smallvec::SmallVec::new(); v.push(9);",
        "let mut d = dtoa::Buffer::new(); println!(\"{:?} {}\", v, d.format(1.5f64));",
    ),
    (
        "crc32fast = \"=1.4.2\"\nequivalent = \"=1.0.2\"",
        "let c = crc32fast::hash(b\"rdht\");",
        "println!(\"{} {}\", c, equivalent::Equivalent::<u8>::equivalent(&1u8, &1u8));",
    ),
    (
        "arrayvec = \"=0.7.6\"\nautocfg = \"=1.4.0\"",
        "let mut a: arrayvec::ArrayVec<u8, 3> = arrayvec::ArrayVec::new(); a.push(1);",
        "let _new = autocfg::AutoCfg::new; println!(\"{:?}\", a);",
    ),
];

fn write_project(dir: &Path, i: usize) {
    let (deps, setup, print) = PROJECTS[i];
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"load{i}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{deps}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("src/main.rs"),
        format!("fn main() {{\n    {setup}\n    {print}\n}}\n"),
    )
    .unwrap();
}

fn program_output(dir: &Path, i: usize) -> String {
    let out = Command::new(dir.join(format!("target/debug/load{i}")))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn eight_builds_at_once_half_warm_all_succeed_with_local_outputs() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let a = swarm.node("a");
    let b = swarm.node("b");
    b.rdht(&["trust", "add", &a.builder_key()]);
    let home = root.join("home");
    // What plain local builds print, and the first four built through A.
    let mut expected = Vec::new();
    for i in 0..8 {
        let local = root.join(format!("local/p{i}"));
        write_project(&local, i);
        rdht_testnet::plain_build(&local, &home);
        expected.push(program_output(&local, i));
        if i < 4 {
            let pa = root.join(format!("a/p{i}"));
            copy_project(&local, &pa);
            rdht_testnet::dht_build(&pa, &root.join("home-a"), &a.dir);
        }
    }
    a.rdht(&["sync"]);
    let rss_before = b.status_kib("VmRSS");
    let start = Instant::now();
    let builds: Vec<_> = (0..8)
        .map(|i| {
            let p = root.join(format!("b/p{i}"));
            copy_project(&root.join(format!("local/p{i}")), &p);
            let child = Command::new(bin("cargo-dht-build"))
                .args(["dht-build", "--json"])
                .current_dir(&p)
                .env("CARGO_HOME", root.join("home-b"))
                .env("RDHT_DATA_DIR", &b.dir)
                .env_remove("RUSTC_WRAPPER")
                .env_remove("CARGO_TARGET_DIR")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (p, child)
        })
        .collect();
    let mut peak_fds = 0;
    let mut running: Vec<_> = builds.into_iter().enumerate().collect();
    let mut summaries = vec![serde_json::Value::Null; 8];
    while !running.is_empty() {
        peak_fds = peak_fds.max(b.open_fds());
        let mut still = Vec::new();
        for (i, (p, mut child)) in running {
            if child.try_wait().unwrap().is_some() {
                let out = child.wait_with_output().unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "build {i} failed:\n{stderr}");
                summaries[i] = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(program_output(&p, i), expected[i], "program {i}");
            } else {
                still.push((i, (p, child)));
            }
        }
        running = still;
        std::thread::sleep(rdht_testnet::POLL);
    }
    let hwm = b.status_kib("VmHWM");
    eprintln!(
        "8 builds at once through one daemon: {:?}; daemon RSS {rss_before} KiB before, peak {hwm} KiB; peak descriptors {peak_fds}",
        start.elapsed()
    );
    for (i, s) in summaries.iter().enumerate() {
        let n = |k: &str| s[k].as_u64().unwrap();
        if i < 4 {
            assert_eq!(
                (n("hits"), n("misses")),
                (n("units"), 0),
                "warm build {i}: {s}"
            );
        } else {
            assert_eq!(
                (n("hits"), n("misses")),
                (0, n("units")),
                "cold build {i}: {s}"
            );
        }
    }
    assert!(hwm < 256 << 10, "the daemon's peak RSS is {hwm} KiB");
}
