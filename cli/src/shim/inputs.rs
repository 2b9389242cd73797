//! Deciding whether a rustc invocation is a cacheable cargo unit, and collecting the
//! inputs of its build key (specs/build-key.md).
//!
//! Owns: the cacheability rules, root discovery, argument normalisation, source and
//! `OUT_DIR` hashing, the environment subset and native libraries, and the cached
//! `rustc -vV`. Does not own: the key hash (`rdht_core::buildkey`) or running anything.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rdht_api::proto::Scope;
use rdht_core::buildkey::{KEY_VERSION, KeyInputs, SourceInputs};
use rdht_core::{BlockId, BuildKey, Labels};

use super::args::{Arg, Invocation};
use super::filehash::{file_root, hash_tree, hash_tree_cached, hash_tree_normalized};
use super::roots::{Roots, target_dir};
use super::stamp::stamp_file;

/// crates.io's registry directory names under `$CARGO_HOME/registry/src`.
const CRATES_IO: &[&str] = &["index.crates.io-", "github.com-1ecc6299db9ec823"];

/// The environment variables cargo sets for a rustc unit (cargo's
/// `Compilation::fill_env` and `fill_rustc_tool_env`, and `OUT_DIR`,
/// `CARGO_PRIMARY_PACKAGE`, `CARGO_TARGET_TMPDIR` from its compiler), plus those rustc
/// itself reads that change its output. They are the environment part of the key
/// (specs/build-key.md §4.7). `CARGO` (cargo's own path, machine-local) is left out: a
/// crate that reads it with `env!` is checked on every hit through dep-info's
/// `# env-dep` lines, like any other variable it reads. The user's cargo configuration
/// (`CARGO_NET_*`, `CARGO_REGISTRIES_*`, `CARGO_INCREMENTAL`, …) never reaches rustc's
/// output but through flags, which the key holds.
const KEY_ENV: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_PKG_VERSION",
    "CARGO_PKG_VERSION_MAJOR",
    "CARGO_PKG_VERSION_MINOR",
    "CARGO_PKG_VERSION_PATCH",
    "CARGO_PKG_VERSION_PRE",
    "CARGO_PKG_NAME",
    "CARGO_PKG_DESCRIPTION",
    "CARGO_PKG_HOMEPAGE",
    "CARGO_PKG_REPOSITORY",
    "CARGO_PKG_LICENSE",
    "CARGO_PKG_LICENSE_FILE",
    "CARGO_PKG_AUTHORS",
    "CARGO_PKG_RUST_VERSION",
    "CARGO_PKG_README",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
    "RUSTC_BOOTSTRAP",
    "RUSTC_FORCE_RUSTC_VERSION",
];

/// Prefix of the variables cargo sets for integration tests and benches: the path of
/// each binary of the package.
const KEY_ENV_PREFIX: &str = "CARGO_BIN_EXE_";

/// Whether environment variable `name` is part of the key.
fn in_key(name: &str) -> bool {
    KEY_ENV.contains(&name) || name.starts_with(KEY_ENV_PREFIX)
}

/// Whether `name` is one of the key's variables that cargo itself sets for the units
/// that get it (all but those rustc reads, which a user sets). Inherited by `cargo
/// dht-build` from its caller (say, a `cargo test` that runs it), such a variable would
/// reach every unit cargo does not set it for (`CARGO_BIN_EXE_*` outside integration
/// tests), and change their keys: `cargo dht-build` removes them before it runs cargo.
pub fn set_by_cargo(name: &str) -> bool {
    in_key(name) && !name.starts_with("RUSTC_")
}

/// What to do with an invocation.
#[derive(Debug)]
pub enum Plan {
    /// Not a cargo compile unit (a version probe, a `--print` query, a build script's
    /// own probe compile): run rustc unchanged, count nothing.
    Passthrough,
    /// A unit that cannot be cached, with the reason.
    Uncacheable(String),
    /// A cacheable unit.
    Cacheable(Box<Unit>),
}

/// A cacheable unit and everything the hit and miss paths need.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The parsed invocation.
    pub inv: Invocation,
    /// Local roots.
    pub roots: Roots,
    /// Where rustc writes outputs.
    pub out_dir: PathBuf,
    /// The key inputs (kept for `--explain`-style debugging and tests).
    pub inputs: KeyInputs,
    /// The build key.
    pub key: BuildKey,
    /// Labels for the record.
    pub labels: Labels,
    /// A crates.io package: may be published to every swarm.
    pub public: bool,
    /// For a cargo check unit, the file whose modification time cargo gives its outputs
    /// after the compile ([`super::stamp`]).
    pub check_stamp: Option<PathBuf>,
    /// Files in `OUT_DIR` that name a machine-local root, as their normalised paths
    /// (`/rdht/target/debug/build/x-…/out/x.pc`): keyed as normalised, so a unit whose
    /// dep-info lists one is path-dependent, never shared nor used from the cache.
    pub out_dir_named: Vec<String>,
}

impl Unit {
    /// The unit as a person names it: `build script of PACKAGE` for a build script,
    /// else the crate's name.
    pub fn describe(&self) -> String {
        let pkg = self.inputs.env.iter().find(|(k, _)| k == "CARGO_PKG_NAME");
        match pkg {
            Some((_, p)) if self.labels.crate_name.starts_with("build_script_") => {
                format!("build script of {p}")
            }
            _ => self.labels.crate_name.clone(),
        }
    }

    /// The first generated file naming a machine-local root ([`Unit::out_dir_named`])
    /// that the normalised dep-info `text` lists as read: the unit's outputs then
    /// depend on this machine's paths.
    pub fn reads_local_named<'a>(&'a self, text: &str) -> Option<&'a str> {
        let read: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(str::split_whitespace)
            .map(|t| t.trim_end_matches(':'))
            .collect();
        self.out_dir_named
            .iter()
            .map(String::as_str)
            .find(|p| read.contains(p))
    }

    /// Whether the unit is a proc macro (its dependents count it by its key).
    pub fn is_proc_macro(&self) -> bool {
        self.labels.crate_types.iter().any(|t| t == "proc-macro")
    }

    /// This machine's host triple, when its outputs are loaded or run here (proc macros,
    /// build scripts, host binaries, cdylibs): `None` for a `--target` this machine only
    /// cross-compiles.
    pub fn loaded_here(&self) -> Option<String> {
        let host = host_of(&self.inputs.rustc_version)?;
        match &self.inv.target {
            Some(t) if *t != host => None,
            _ => Some(host),
        }
    }

    /// Where the unit's key may be looked up and its record announced: crates.io
    /// packages everywhere, anything else only in private swarms.
    pub fn scope(&self) -> Scope {
        if self.public {
            Scope::Everywhere
        } else {
            Scope::Private
        }
    }
}

/// The process environment, as a sorted map (tests pass their own).
pub type Env = BTreeMap<String, String>;

fn cargo_home(env: &Env) -> Option<PathBuf> {
    env.get("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| Path::new(h).join(".cargo")))
}

/// The program cargo named, found as cargo finds it: a bare name (`rustc`, as a cargo
/// without rustup or with `RUSTC=rustc` passes it) is looked up on `PATH`.
pub fn find_program(program: &Path, env: &Env) -> std::io::Result<PathBuf> {
    if program.components().count() != 1 || program.is_absolute() {
        return Ok(program.to_path_buf());
    }
    let path = env.get("PATH").map(String::as_str).unwrap_or_default();
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} not found on PATH ({path})", program.display()),
            )
        })
}

/// `rustc -vV`, cached in `cache_dir` per rustc binary (path, size and mtime).
pub fn rustc_version(rustc: &Path, cache_dir: Option<&Path>) -> std::io::Result<String> {
    rustc_output(rustc, &["-vV"], cache_dir)
}

/// The stdout of `rustc ARGS`, cached in `cache_dir` per rustc binary (path, size and
/// mtime) and arguments, so that no extra rustc process runs per unit.
fn rustc_output(rustc: &Path, args: &[&str], cache_dir: Option<&Path>) -> std::io::Result<String> {
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", rustc.display()));
    let meta = fs::metadata(rustc).map_err(named)?;
    let stamp = format!(
        "{} {} {}.{} {}",
        rustc.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        args.join(" ")
    );
    let cache = cache_dir.map(|d| {
        let h = blake3::hash(stamp.as_bytes()).to_hex();
        d.join(format!("rustc-out-{}", &h[..16]))
    });
    if let Some(c) = &cache
        && let Ok(text) = fs::read_to_string(c)
        && let Some((first, rest)) = text.split_once('\n')
        && first == stamp
    {
        return Ok(rest.to_string());
    }
    let out = Command::new(rustc).args(args).output().map_err(named)?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{} {} exited with {}",
            rustc.display(),
            args.join(" "),
            out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Some(c) = &cache {
        if let Some(d) = c.parent() {
            let _ = fs::create_dir_all(d);
        }
        let tmp = c.with_extension(format!("tmp{}", std::process::id()));
        if fs::write(&tmp, format!("{stamp}\n{text}")).is_ok() {
            let _ = fs::rename(&tmp, c);
        }
    }
    Ok(text)
}

/// Where the roots of unpacked registry packages are cached: the user's cache directory
/// (`$XDG_CACHE_HOME`, else `$HOME/.cache`, then `rdht/registry-src`), so that every
/// target dir of the same `CARGO_HOME` shares them; else `TARGET/.rdht/registry-src`.
/// Entries are named by the package directory and checked by stamps, so a shared cache
/// is never believed for another directory or a changed file.
fn registry_cache(env: &Env, target_root: Option<&Path>) -> Option<PathBuf> {
    let user = env
        .get("XDG_CACHE_HOME")
        .filter(|d| Path::new(d).is_absolute())
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| Path::new(h).join(".cache")));
    user.map(|d| d.join("rdht"))
        .or_else(|| target_root.map(|t| t.join(".rdht")))
        .map(|d| d.join("registry-src"))
}

/// What `-C target-cpu=native` means on this machine: `CPU;FEATURES`, the CPU rustc
/// detects and every target feature it then enables, sorted (specs/build-key.md §4.4).
fn native_cpu(
    rustc: &Path,
    target: Option<&str>,
    cache_dir: Option<&Path>,
) -> std::io::Result<String> {
    let mut base = vec!["-C", "target-cpu=native"];
    if let Some(t) = target {
        base.extend(["--target", t]);
    }
    let cpus = rustc_output(
        rustc,
        &[&base[..], &["--print", "target-cpus"]].concat(),
        cache_dir,
    )?;
    let cpu = cpus
        .lines()
        .find_map(|l| {
            l.split_once("(currently ")?
                .1
                .split_once(')')
                .map(|(c, _)| c)
        })
        .unwrap_or("unknown");
    let cfg = rustc_output(rustc, &[&base[..], &["--print", "cfg"]].concat(), cache_dir)?;
    let mut features: Vec<&str> = cfg
        .lines()
        .filter_map(|l| l.strip_prefix("target_feature=\"")?.strip_suffix('"'))
        .collect();
    features.sort_unstable();
    Ok(format!("{cpu};{}", features.join(",")))
}

fn host_of(vv: &str) -> Option<String> {
    vv.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
}

/// Native library files named by `-l` and found in the `-L` directories.
fn native_libs(inv: &Invocation, roots: &Roots) -> std::io::Result<Vec<(String, BlockId)>> {
    let dirs: Vec<PathBuf> = inv
        .args
        .iter()
        .filter_map(|a| match a {
            Arg::Flag(f, Some(v)) if f == "-L" => {
                let (kind, path) = v.split_once('=').unwrap_or(("all", v));
                (kind != "dependency" && kind != "crate").then(|| PathBuf::from(path))
            }
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for a in &inv.args {
        let Arg::Flag(f, Some(v)) = a else { continue };
        if f != "-l" {
            continue;
        }
        let name = v.rsplit_once('=').map_or(v.as_str(), |(_, n)| n);
        let name = name.split_once(':').map_or(name, |(n, _)| n);
        for d in &dirs {
            for file in [
                format!("lib{name}.a"),
                format!("lib{name}.so"),
                format!("{name}.lib"),
            ] {
                let p = d.join(&file);
                if p.is_file() {
                    out.push((roots.normalize(&p.to_string_lossy()), file_root(&p)?));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What an `--extern` file contributes to the key: the build key of the proc macro it
/// is, when the shim recorded one that still matches the file (a proc macro's bytes
/// depend on the C runtime it was linked against, its behaviour only on its key);
/// else its content root.
fn extern_input(path: &Path) -> std::io::Result<String> {
    match super::filehash::origin_key(path) {
        Some(key) => Ok(format!("key:{key}")),
        None => Ok(file_root(path)?.to_string()),
    }
}

/// The plan for running `rustc args` in `cwd` with environment `env`.
pub fn plan(rustc: &Path, args: &[String], env: &Env, cwd: &Path) -> std::io::Result<Plan> {
    let inv = super::args::parse(args);
    if !inv.cargo_unit || inv.print || inv.crate_name.is_none() {
        return Ok(Plan::Passthrough);
    }
    let uncacheable = |r: &str| Ok(Plan::Uncacheable(r.to_string()));
    if env.get("RDHT_DISABLE").is_some_and(|v| v == "1") {
        return uncacheable("RDHT_DISABLE=1");
    }
    if inv.argfile {
        return uncacheable("arguments in an @file");
    }
    if inv.explicit_output {
        return uncacheable("explicit output path (-o or --emit=kind=path)");
    }
    let Some(out_dir) = inv.out_dir.clone() else {
        return uncacheable("no --out-dir");
    };
    match inv.input.as_deref() {
        None => return uncacheable("no input file"),
        Some("-") => return uncacheable("source read from stdin"),
        Some(_) => {}
    }
    let Some(manifest_dir) = env.get("CARGO_MANIFEST_DIR").map(PathBuf::from) else {
        return uncacheable("CARGO_MANIFEST_DIR is not set (not run by cargo)");
    };
    let Some(home) = cargo_home(env) else {
        return uncacheable("no CARGO_HOME and no HOME");
    };
    let target_root = target_dir(&out_dir, inv.target.as_deref());
    // Cargo runs workspace units from the workspace root and registry units from
    // their package directory.
    let workspace = env
        .get("RDHT_WORKSPACE_ROOT")
        .map(PathBuf::from)
        .or_else(|| (!cwd.starts_with(&home)).then(|| cwd.to_path_buf()));
    let roots = Roots::new(&home, workspace.as_deref(), target_root.as_deref());

    let rustc = find_program(rustc, env)?;
    let cache_dir = target_root.as_ref().map(|t| t.join(".rdht"));
    let vv = rustc_version(&rustc, cache_dir.as_deref())?;
    let target = inv
        .target
        .clone()
        .or_else(|| host_of(&vv))
        .unwrap_or_default();

    // Sources: every file of the package, whatever its origin.
    let skip = {
        let target_root = target_root.clone();
        let top = manifest_dir.clone();
        move |p: &Path| {
            target_root.as_deref() == Some(p)
                || (p.parent() == Some(top.as_path())
                    && p.file_name().is_some_and(|n| n == "target"))
                || p.join("Cargo.toml").is_file()
        }
    };
    let registry_src = home.join("registry").join("src");
    let (source, public) = match manifest_dir.strip_prefix(&registry_src) {
        Ok(rel) => {
            let mut c = rel.components();
            match (c.next(), c.next(), c.next()) {
                (Some(index), Some(package), None) => {
                    let index = index.as_os_str().to_string_lossy().into_owned();
                    let public = CRATES_IO.iter().any(|p| index.starts_with(p));
                    let package = package.as_os_str().to_string_lossy().into_owned();
                    // Unpacked packages do not change: their roots are cached per user
                    // (else per target dir) and re-read only when a file's stamp changes.
                    let files = match registry_cache(env, target_root.as_deref()) {
                        Some(dir) => {
                            let id = blake3::hash(manifest_dir.as_os_str().as_encoded_bytes());
                            let cache = dir.join(&id.to_hex()[..32]);
                            hash_tree_cached(&manifest_dir, &skip, &cache)?
                        }
                        None => hash_tree(&manifest_dir, &skip)?,
                    };
                    (
                        SourceInputs::Registry {
                            index,
                            package,
                            files,
                        },
                        public,
                    )
                }
                _ => return uncacheable("unrecognised registry source layout"),
            }
        }
        Err(_) => (
            SourceInputs::Tree {
                files: hash_tree(&manifest_dir, &skip)?,
            },
            false,
        ),
    };

    // A generated text file that names a local root counts as normalised, so that it
    // does not split the key across paths; a unit that reads one is path-dependent,
    // which dep-info tells after the compile (`out_dir_named`, hit.rs and unit.rs).
    let (out_dir_files, out_dir_named) = match env.get("OUT_DIR") {
        Some(d) if Path::new(d).is_dir() => {
            let (files, named) = hash_tree_normalized(Path::new(d), &|t| roots.normalize(t))?;
            let base = roots.normalize(d.trim_end_matches('/'));
            (
                Some(files),
                named.iter().map(|r| format!("{base}/{r}")).collect(),
            )
        }
        _ => (None, Vec::new()),
    };

    let mut env_inputs: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| in_key(k))
        .map(|(k, v)| (k.clone(), roots.normalize(v)))
        .collect();
    env_inputs.sort();

    let mut key_args = Vec::with_capacity(inv.args.len());
    for a in &inv.args {
        match a {
            Arg::Flag(f, _) if f == "--out-dir" => {}
            Arg::Flag(f, Some(v))
                if (f == "-C" || f == "--codegen") && v.starts_with("incremental=") => {}
            Arg::Flag(f, Some(v)) if f == "-L" => {
                let (kind, path) = v.split_once('=').unwrap_or(("all", v));
                if kind != "dependency" {
                    key_args.push(format!("-L={kind}={}", roots.normalize(path)));
                }
            }
            Arg::Flag(f, Some(v)) if f == "--extern" => match v.split_once('=') {
                Some((name, path)) => {
                    key_args.push(format!(
                        "--extern={name}={}",
                        extern_input(Path::new(path))?
                    ));
                }
                None => key_args.push(format!("--extern={v}")),
            },
            // `native` names another CPU on each machine: the key holds what it is here.
            Arg::Flag(f, Some(v))
                if (f == "-C" || f == "--codegen") && v == "target-cpu=native" =>
            {
                let here = native_cpu(&rustc, inv.target.as_deref(), cache_dir.as_deref())?;
                key_args.push(format!("-C=target-cpu=native={here}"));
            }
            Arg::Flag(f, Some(v)) => key_args.push(format!("{f}={}", roots.normalize(v))),
            Arg::Flag(f, None) => key_args.push(f.clone()),
            Arg::Input(i) => {
                let abs = cwd.join(i);
                key_args.push(format!("input={}", roots.normalize(&abs.to_string_lossy())));
            }
        }
    }

    let inputs = KeyInputs {
        version: KEY_VERSION,
        rustc_version: vv.clone(),
        target: target.clone(),
        args: key_args,
        source,
        out_dir: out_dir_files,
        env: env_inputs,
        native_libs: native_libs(&inv, &roots)?,
    };
    let key = inputs.derive();
    let labels = Labels {
        crate_name: inv.crate_name.clone().unwrap_or_default(),
        crate_version: env.get("CARGO_PKG_VERSION").cloned().unwrap_or_default(),
        target,
        rustc: vv
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect(),
        crate_types: inv.crate_types.iter().take(8).cloned().collect(),
    };
    let check_stamp = stamp_file(
        &inv,
        &out_dir,
        env.get("CARGO_PKG_NAME").map(String::as_str),
    );
    Ok(Plan::Cacheable(Box::new(Unit {
        check_stamp,
        inv,
        roots,
        out_dir,
        inputs,
        key,
        labels,
        public,
        out_dir_named,
    })))
}

#[cfg(test)]
mod tests {
    //! Key derivation without network or cargo: a fake registry package and a real
    //! rustc (for `-vV` and `native`).
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
}
