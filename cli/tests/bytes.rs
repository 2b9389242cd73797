//! Regression (issue 21): a proc macro that writes bytes that are not UTF-8 to stderr
//! made `cargo dht-build` fail a build that plain cargo passes. The bytes pass through
//! untouched, on a miss and on a hit's replay, and the build succeeds both times.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;

use rdht_testnet::{Swarm, dht_build};

/// The line plain cargo shows for what the proc macro writes (`caf\xe9 \xff`): cargo
/// reads rustc's stderr lossily, so this is what a build through the shim must show too.
const NOISE: &str = "caf\u{fffd} \u{fffd}\n";

fn write_project(dir: &Path) {
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "Cargo.toml",
        "[package]\nname = \"proj\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nnoisy = { path = \"noisy\" }\n",
    );
    write(
        "src/main.rs",
        "fn main() {\n    println!(\"{}\", noisy::seven!());\n}\n",
    );
    write(
        "noisy/Cargo.toml",
        "[package]\nname = \"noisy\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [lib]\nproc-macro = true\n",
    );
    write(
        "noisy/src/lib.rs",
        "use std::io::Write;\n\n\
         #[proc_macro]\n\
         pub fn seven(_: proc_macro::TokenStream) -> proc_macro::TokenStream {\n    \
         let _ = std::io::stderr().write_all(b\"caf\\xe9 \\xff\\n\");\n    \
         \"7\".parse().unwrap()\n}\n",
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn non_utf8_bytes_from_a_proc_macro_pass_through_on_a_miss_and_a_hit() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let node = swarm.node("n");
    // Plain cargo: the build passes and shows the line.
    let p0 = root.join("plain/p");
    write_project(&p0);
    let plain = std::process::Command::new("cargo")
        .arg("build")
        .current_dir(&p0)
        .env("CARGO_HOME", root.join("home"))
        .env_remove("RUSTC_WRAPPER")
        .output()
        .unwrap();
    assert!(plain.status.success());
    assert!(contains(&plain.stderr, NOISE.as_bytes()), "{plain:?}");
    let p1 = root.join("one/p");
    write_project(&p1);
    let (out1, s1) = dht_build(&p1, &root.join("home"), &node.dir);
    assert_eq!(
        (&s1["units"], &s1["misses"]),
        (&2.into(), &2.into()),
        "{s1}"
    );
    assert!(
        contains(&out1.stderr, NOISE.as_bytes()),
        "{}",
        String::from_utf8_lossy(&out1.stderr)
    );
    node.rdht(&["sync"]);

    let p2 = root.join("two/p");
    write_project(&p2);
    std::fs::copy(p1.join("Cargo.lock"), p2.join("Cargo.lock")).unwrap();
    let (out2, s2) = dht_build(&p2, &root.join("home"), &node.dir);
    assert_eq!((&s2["units"], &s2["hits"]), (&2.into(), &2.into()), "{s2}");
    assert!(
        contains(&out2.stderr, NOISE.as_bytes()),
        "the hit replays the bytes: {}",
        String::from_utf8_lossy(&out2.stderr)
    );
    let run = std::process::Command::new(p2.join("target/debug/proj"))
        .output()
        .unwrap();
    assert_eq!(run.stdout, b"7\n");
}
