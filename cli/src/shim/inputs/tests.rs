//! Key derivation without network or cargo (`super`): a fake registry package and a
//! real rustc (for `-vV` and `native`). Owns the fixtures; tests only.
use super::*;

struct Fixture {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    pkg: PathBuf,
    out: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("cargo-home");
    let pkg = home.join("registry/src/index.crates.io-1949cf8c6b5b557f/demo-1.0.0");
    fs::create_dir_all(pkg.join("src")).unwrap();
    fs::write(pkg.join("Cargo.toml"), "[package]\nname = \"demo\"\n").unwrap();
    fs::write(pkg.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    fs::write(pkg.join(".cargo-ok"), "{\"v\":1}").unwrap();
    let out = tmp.path().join("target/debug/deps");
    fs::create_dir_all(&out).unwrap();
    Fixture {
        _tmp: tmp,
        home,
        pkg,
        out,
    }
}

fn args(fx: &Fixture, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--crate-name",
        "demo",
        "--edition=2021",
        "src/lib.rs",
        "--error-format=json",
        "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
        "--crate-type",
        "lib",
        "--emit=dep-info,metadata,link",
        "--out-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(fx.out.to_string_lossy().into_owned());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn env(fx: &Fixture, extra: &[(&str, &str)]) -> Env {
    let mut e = Env::new();
    e.insert("CARGO_HOME".into(), fx.home.to_string_lossy().into_owned());
    e.insert(
        "CARGO_MANIFEST_DIR".into(),
        fx.pkg.to_string_lossy().into_owned(),
    );
    e.insert("CARGO_PKG_NAME".into(), "demo".into());
    e.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
    e.insert("HOME".into(), fx.home.to_string_lossy().into_owned());
    for (k, v) in extra {
        e.insert(k.to_string(), v.to_string());
    }
    e
}

fn unit(fx: &Fixture, extra_args: &[&str], extra_env: &[(&str, &str)]) -> Unit {
    match plan(
        Path::new("rustc"),
        &args(fx, extra_args),
        &env(fx, extra_env),
        &fx.pkg,
    )
    .unwrap()
    {
        Plan::Cacheable(u) => *u,
        other => panic!("{other:?}"),
    }
}

/// Regression (issue 23): a bare `rustc`, as a cargo without rustup passes it, is
/// found on PATH; a name found nowhere is an error naming it and PATH.
#[test]
fn a_bare_rustc_is_found_on_path_and_a_missing_one_is_named() {
    let fx = fixture();
    let u = unit(&fx, &[], &[]);
    assert!(u.inputs.rustc_version.starts_with("rustc "), "{u:?}");
    assert!(u.public);
    let mut e = env(&fx, &[]);
    e.insert("PATH".into(), "/nonexistent".into());
    let err = plan(Path::new("rustc"), &args(&fx, &[]), &e, &fx.pkg).unwrap_err();
    assert_eq!(err.to_string(), "rustc not found on PATH (/nonexistent)");
}

/// Regression (issue 23): cargo's own settings are not in the key; what cargo sets
/// for the unit is.
#[test]
fn cargo_configuration_variables_stay_out_of_the_key() {
    let fx = fixture();
    let base = unit(&fx, &[], &[]);
    let ci = unit(
        &fx,
        &[],
        &[
            ("CARGO_NET_RETRY", "10"),
            ("CARGO_INCREMENTAL", "0"),
            ("CARGO_REGISTRIES_CRATES_IO_PROTOCOL", "sparse"),
            ("CARGO_REGISTRIES_MY_TOKEN", "secret"),
            ("CARGO", "/home/someone/.rustup/toolchains/x/bin/cargo"),
        ],
    );
    assert_eq!(base.key, ci.key);
    assert_eq!(
        base.inputs.env,
        vec![
            (
                "CARGO_MANIFEST_DIR".to_string(),
                "/rdht/cargo-home/registry/src/index.crates.io-1949cf8c6b5b557f/demo-1.0.0"
                    .to_string()
            ),
            ("CARGO_PKG_NAME".to_string(), "demo".to_string())
        ]
    );
    let renamed = unit(&fx, &[], &[("CARGO_PKG_NAME", "demo2")]);
    assert_ne!(base.key, renamed.key);
    let bootstrap = unit(&fx, &[], &[("RUSTC_BOOTSTRAP", "1")]);
    assert_ne!(base.key, bootstrap.key);
}

/// Regression (issue 15): an edited unpacked registry source has another key; the
/// same edit undone gives the honest key back. Hidden files do not count.
#[test]
fn registry_sources_count_by_content() {
    let fx = fixture();
    let honest = unit(&fx, &[], &[]);
    let SourceInputs::Registry { files, .. } = &honest.inputs.source else {
        panic!("{:?}", honest.inputs.source)
    };
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["Cargo.toml", "src/lib.rs"]);
    fs::write(fx.pkg.join("src/lib.rs"), "pub fn f() { dbg!(1); }\n").unwrap();
    let edited = unit(&fx, &[], &[]);
    assert_ne!(edited.key, honest.key);
    fs::write(fx.pkg.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    assert_eq!(unit(&fx, &[], &[]).key, honest.key);
    fs::write(fx.pkg.join(".cargo-ok"), "ok").unwrap();
    assert_eq!(unit(&fx, &[], &[]).key, honest.key);
}

/// Regression (issue 23): `-C target-cpu=native` is keyed by the CPU and features it
/// resolves to here, not by the word `native`.
#[test]
fn target_cpu_native_is_keyed_by_what_it_resolves_to() {
    let fx = fixture();
    let native = unit(&fx, &["-C", "target-cpu=native"], &[]);
    let out = Command::new("rustc")
        .args(["-C", "target-cpu=native", "--print", "target-cpus"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let cpu = text
        .lines()
        .find_map(|l| l.split_once("(currently ")?.1.split_once(')'))
        .unwrap()
        .0;
    let arg = native
        .inputs
        .args
        .iter()
        .find(|a| a.contains("target-cpu"))
        .unwrap();
    assert!(
        arg.starts_with(&format!("-C=target-cpu=native={cpu};")),
        "{arg}"
    );
    let features = arg.split_once(';').unwrap().1;
    assert!(!features.is_empty(), "the features it enables: {arg}");
    assert_ne!(native.key, unit(&fx, &[], &[]).key);
}

/// The same unit under another CARGO_HOME and target dir has the same key: nothing
/// machine-local is in it.
#[test]
fn the_same_unit_elsewhere_has_the_same_key() {
    let (a, b) = (fixture(), fixture());
    assert_ne!(a.home, b.home);
    assert_eq!(unit(&a, &[], &[]).key, unit(&b, &[], &[]).key);
    // Remapping is what keeps the paths out of the outputs; its argument is not in
    // the key, and both runs get one for their own roots.
    let u = unit(&a, &[], &[]);
    assert!(
        u.inputs
            .args
            .iter()
            .all(|x| !x.contains(a.home.to_str().unwrap())),
        "{:?}",
        u.inputs.args
    );
}

/// An `--extern` counts by its file's content, not by where it is.
#[test]
fn an_extern_counts_by_content_not_path() {
    let (a, b) = (fixture(), fixture());
    let lib = |fx: &Fixture, bytes: &[u8]| {
        let p = fx.out.join("libdep-0123456789abcdef.rlib");
        fs::write(&p, bytes).unwrap();
        format!("dep={}", p.display())
    };
    let (ea, eb) = (lib(&a, b"dep v1"), lib(&b, b"dep v1"));
    let ka = unit(&a, &["--extern", &ea], &[]).key;
    assert_eq!(ka, unit(&b, &["--extern", &eb], &[]).key);
    let changed = lib(&b, b"dep v2");
    assert_ne!(ka, unit(&b, &["--extern", &changed], &[]).key);
    assert_ne!(ka, unit(&a, &[], &[]).key);
}

/// What cannot be cached is said, with the reason; what is not a unit passes.
#[test]
fn cacheability_rules() {
    let fx = fixture();
    let reason = |extra_args: &[&str], extra_env: &[(&str, &str)]| match plan(
        Path::new("rustc"),
        &args(&fx, extra_args),
        &env(&fx, extra_env),
        &fx.pkg,
    )
    .unwrap()
    {
        Plan::Uncacheable(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(reason(&[], &[("RDHT_DISABLE", "1")]), "RDHT_DISABLE=1");
    assert_eq!(
        reason(&["-o", "/tmp/x"], &[]),
        "explicit output path (-o or --emit=kind=path)"
    );
    let mut no_manifest = env(&fx, &[]);
    no_manifest.remove("CARGO_MANIFEST_DIR");
    match plan(Path::new("rustc"), &args(&fx, &[]), &no_manifest, &fx.pkg).unwrap() {
        Plan::Uncacheable(r) => {
            assert_eq!(r, "CARGO_MANIFEST_DIR is not set (not run by cargo)")
        }
        other => panic!("{other:?}"),
    }
    let probe: Vec<String> = ["-", "--crate-name", "___", "--print=file-names"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(matches!(
        plan(Path::new("rustc"), &probe, &env(&fx, &[]), &fx.pkg).unwrap(),
        Plan::Passthrough
    ));
}

/// Regression (issue 23): a `cargo dht-build` run from inside `cargo test`
/// inherited `CARGO_BIN_EXE_*` and got 0 hits; it drops what cargo sets itself.
#[test]
fn variables_cargo_sets_itself_are_told_apart_from_the_users() {
    for name in [
        "CARGO_BIN_EXE_rdht",
        "OUT_DIR",
        "CARGO_PKG_NAME",
        "CARGO_TARGET_TMPDIR",
    ] {
        assert!(set_by_cargo(name), "{name}");
    }
    for name in ["RUSTC_BOOTSTRAP", "CARGO_HOME", "CARGO_NET_RETRY", "PATH"] {
        assert!(!set_by_cargo(name), "{name}");
    }
}

/// A generated text file naming the build's own `OUT_DIR` (libz-sys's `zlib.pc`)
/// does not split the key across paths; a compile that read it is told apart.
#[test]
fn generated_files_naming_local_paths_count_as_normalised() {
    let (a, b) = (fixture(), fixture());
    let with_out_dir = |fx: &Fixture, pc: &str| {
        let out = fx.out.parent().unwrap().join("build/demo-1/out");
        fs::create_dir_all(&out).unwrap();
        let pc = pc.replace("OUT", out.to_str().unwrap());
        fs::write(out.join("zlib.pc"), pc).unwrap();
        fs::write(out.join("libz.a"), b"!<arch>\n").unwrap();
        out.to_str().unwrap().to_string()
    };
    let (oa, ob) = (
        with_out_dir(&a, "prefix=OUT\n"),
        with_out_dir(&b, "prefix=OUT\n"),
    );
    let ua = unit(&a, &[], &[("OUT_DIR", &oa)]);
    let ub = unit(&b, &[], &[("OUT_DIR", &ob)]);
    assert_eq!(ua.key, ub.key);
    let named = "/rdht/target/debug/build/demo-1/out/zlib.pc";
    assert_eq!(ua.out_dir_named, vec![named.to_string()]);
    let dep_info = format!("/rdht/target/debug/deps/demo.d: src/lib.rs {named}\n\n{named}:\n");
    assert_eq!(ua.reads_local_named(&dep_info), Some(named));
    assert_eq!(ua.reads_local_named("x.d: src/lib.rs\n"), None);
    // Other contents still count.
    let oc = with_out_dir(&b, "prefix=OUT\nother\n");
    assert_ne!(unit(&b, &[], &[("OUT_DIR", &oc)]).key, ua.key);
}

/// A package outside the registry (a path or git crate) counts by its whole tree and
/// is private-scoped; one inside it counts by its registry name and files and may be
/// published everywhere.
#[test]
fn path_crates_count_by_their_tree_and_stay_private() {
    let fx = fixture();
    let local = fx.home.parent().unwrap().join("work/mycrate");
    fs::create_dir_all(local.join("src")).unwrap();
    fs::write(local.join("Cargo.toml"), "[package]\nname = \"demo\"\n").unwrap();
    fs::write(local.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    let at = |dir: &Path| {
        let mut e = env(&fx, &[]);
        e.insert(
            "CARGO_MANIFEST_DIR".into(),
            dir.to_string_lossy().into_owned(),
        );
        match plan(Path::new("rustc"), &args(&fx, &[]), &e, dir).unwrap() {
            Plan::Cacheable(u) => *u,
            other => panic!("{other:?}"),
        }
    };
    let (registry, path) = (at(&fx.pkg), at(&local));
    assert!(matches!(
        registry.inputs.source,
        SourceInputs::Registry { .. }
    ));
    assert!(registry.public);
    let SourceInputs::Tree { files } = &path.inputs.source else {
        panic!("{:?}", path.inputs.source)
    };
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["Cargo.toml", "src/lib.rs"]);
    assert!(!path.public);
    assert_ne!(registry.key, path.key);
}

/// Regression (issue 16): a plain `cargo build` run from inside `cargo test` inherits
/// `CARGO_BIN_EXE_*`, which cargo sets only for integration tests: it must not change
/// a library's key, so that a `cargo dht-build` elsewhere (which drops it) hits.
#[test]
fn variables_cargo_sets_only_for_some_units_count_only_there() {
    let fx = fixture();
    let plain = unit(&fx, &[], &[]).key;
    let leaked = [
        ("CARGO_BIN_EXE_tool", "/elsewhere/target/debug/tool"),
        ("OUT_DIR", "/elsewhere/out"),
    ];
    assert_eq!(unit(&fx, &[], &leaked).key, plain);
    let test = unit(&fx, &["--test"], &[]).key;
    assert_ne!(unit(&fx, &["--test"], &leaked[..1]).key, test);
}
