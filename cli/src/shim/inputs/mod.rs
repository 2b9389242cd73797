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

/// Whether key variable `name` (with `value`) can have been set by cargo for this unit.
/// Cargo sets some only for some units; one that reaches another unit was inherited
/// from whatever ran cargo (a `cargo test` gives its test processes
/// `CARGO_BIN_EXE_*`, and a plain `cargo build` run from one passes them on), and
/// would split keys between machines that ran cargo from different places.
/// `CARGO_BIN_EXE_*` and `CARGO_TARGET_TMPDIR` are set only for integration tests and
/// benches (compiled with `--test`), `CARGO_BIN_NAME` only for binaries, and `OUT_DIR`
/// only under this build's own target dir.
fn set_for(name: &str, value: &str, inv: &Invocation, target_root: Option<&Path>) -> bool {
    let test = inv
        .args
        .iter()
        .any(|a| matches!(a, Arg::Flag(f, None) if f == "--test"));
    if name.starts_with(KEY_ENV_PREFIX) || name == "CARGO_TARGET_TMPDIR" {
        return test;
    }
    match name {
        "CARGO_BIN_NAME" => inv.crate_types.iter().any(|t| t == "bin"),
        "OUT_DIR" => target_root.is_some_and(|t| Path::new(value).starts_with(t)),
        _ => true,
    }
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

    /// Whether the unit is a build script's compile: cargo names its crate
    /// `build_script_*`, compiles it as a `bin`, and sets no `CARGO_BIN_NAME` for it.
    pub fn is_build_script(&self) -> bool {
        self.labels.crate_name.starts_with("build_script_")
            && self.labels.crate_types == ["bin"]
            && !self.inputs.env.iter().any(|(k, _)| k == "CARGO_BIN_NAME")
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
    if let Some(text) = cache.as_deref().and_then(|c| read_stamped(c, &stamp)) {
        return Ok(text);
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
        write_stamped(c, &stamp, &text);
    }
    Ok(text)
}

/// The text cached in `path` under `stamp` (its first line), if that is the stamp.
pub(crate) fn read_stamped(path: &Path, stamp: &str) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let (first, rest) = text.split_once('\n')?;
    (first == stamp).then(|| rest.to_string())
}

/// Caches `text` in `path` under `stamp`, atomically; a failure only costs the cache.
pub(crate) fn write_stamped(path: &Path, stamp: &str, text: &str) {
    if let Some(d) = path.parent() {
        let _ = fs::create_dir_all(d);
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if fs::write(&tmp, format!("{stamp}\n{text}")).is_ok() {
        let _ = fs::rename(&tmp, path);
    }
}

/// Where the roots of unpacked registry packages are cached: the user's cache directory
/// (`$XDG_CACHE_HOME`, else `$HOME/.cache`, then `rdht/registry-src`), so that every
/// target dir of the same `CARGO_HOME` shares them; else `TARGET/.rdht/registry-src`.
/// Entries are named by the package directory and checked by stamps, so a shared cache
/// is never believed for another directory or a changed file.
fn registry_cache(env: &Env, target_root: Option<&Path>) -> Option<PathBuf> {
    user_cache(env, target_root, "registry-src")
}

/// The shim's cache directory `name`: under the user's cache directory
/// (`$XDG_CACHE_HOME`, else `$HOME/.cache`, then `rdht/`), else `TARGET/.rdht/`.
pub(in crate::shim) fn user_cache(
    env: &Env,
    target_root: Option<&Path>,
    name: &str,
) -> Option<PathBuf> {
    let user = env
        .get("XDG_CACHE_HOME")
        .filter(|d| Path::new(d).is_absolute())
        .map(PathBuf::from)
        .or_else(|| env.get("HOME").map(|h| Path::new(h).join(".cache")));
    user.map(|d| d.join("rdht"))
        .or_else(|| target_root.map(|t| t.join(".rdht")))
        .map(|d| d.join(name))
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
        .filter(|(k, v)| in_key(k) && set_for(k, v, &inv, target_root.as_deref()))
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
mod tests;
