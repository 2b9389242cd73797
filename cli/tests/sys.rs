//! `-sys` crates whose build scripts compile C (issue 16, part 2): with the C flags
//! `cargo dht-build` adds (`-ffile-prefix-map` for each machine-local root), the static
//! libraries `zstd-sys` and `libz-sys` build have the same bytes at any path, so a copy
//! of the project at another path, with another CARGO_HOME, through another daemon,
//! hits every rustc unit, and its binary is byte-identical.
//!
//! `libz-sys` writes `zlib.pc` into `OUT_DIR` naming that directory: generated text
//! files count in keys as normalised (nothing reads zlib.pc). Build-script runs
//! themselves are not cached yet: B still runs them (and compiles the C); what this
//! test pins is that their outputs no longer split the keys.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;

use rdht_testnet::{Swarm, copy_project, dht_build};

fn write_project(dir: &Path) {
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "Cargo.toml",
        "[package]\nname = \"sysproj\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [dependencies]\nzstd = { version = \"=0.13.3\", default-features = false }\n\
         libz-sys = { version = \"=1.1.22\", default-features = false, features = [\"static\"] }\n\n\
         [profile.dev]\nincremental = false\n",
    );
    write(
        "src/main.rs",
        "fn main() {\n    let packed = zstd::encode_all(&b\"rdht rdht rdht rdht\"[..], 3).unwrap();\n    \
         let v = unsafe { std::ffi::CStr::from_ptr(libz_sys::zlibVersion()) };\n    \
         println!(\"{} {}\", packed.len(), v.to_str().unwrap());\n}\n",
    );
}

fn totals(s: &serde_json::Value) -> (u64, u64, u64) {
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    (n("units"), n("hits"), n("misses"))
}

#[test]
fn c_built_by_build_scripts_is_the_same_at_any_path() {
    let swarm = Swarm::new();
    let root = swarm.tmp.path();
    let a = swarm.node("a");
    let b = swarm.node("b");
    b.rdht(&["trust", "add", &a.builder_key()]);
    let pa = root.join("a/sysproj");
    write_project(&pa);
    let (_, sa) = dht_build(&pa, &root.join("home-a"), &a.dir);
    a.rdht(&["sync"]);
    let units = totals(&sa).0;
    assert_eq!(totals(&sa), (units, 0, units), "{sa}");
    let pb = root.join("elsewhere/b/sysproj");
    copy_project(&pa, &pb);
    let (_, sb) = dht_build(&pb, &root.join("home-b"), &b.dir);
    assert_eq!(totals(&sb), (units, units, 0), "{sb}");
    let bin = |p: &Path| std::fs::read(p.join("target/debug/sysproj")).unwrap();
    assert!(bin(&pa) == bin(&pb), "the binaries are byte-identical");
    let out = std::process::Command::new(pb.join("target/debug/sysproj"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "20 1.3.1\n");
}
