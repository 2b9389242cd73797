//! Deciding whether a rustc invocation is a cacheable cargo unit, and collecting the
//! inputs of its build key (specs/build-key.md).
//!
//! Owns: the cacheability rules, root discovery, argument normalisation, source and
//! `OUT_DIR` hashing, the environment subset and native libraries, and the cached
//! `rustc -vV`. Does not own: the key hash (`rdht_core::buildkey`) or running anything.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rdht_api::proto::Scope;
use rdht_core::buildkey::{KEY_VERSION, KeyInputs, SourceInputs};
use rdht_core::{BlockId, BuildKey, Labels};

use super::args::{Arg, Invocation};
use super::filehash::{file_root, hash_tree, hash_tree_cached};
use super::roots::{Roots, target_dir};
use super::stamp::stamp_file;

/// crates.io's registry directory names under `$CARGO_HOME/registry/src`.
const CRATES_IO: &[&str] = &["index.crates.io-", "github.com-1ecc6299db9ec823"];

/// Environment variables cargo sets that are machine-local or irrelevant to outputs.
const ENV_EXCLUDED: &[&str] = &[
    "CARGO_HOME",
    "CARGO_MAKEFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_JOBS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_TERM_COLOR",
    "CARGO_TERM_PROGRESS_WHEN",
];

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
}

impl Unit {
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

/// `rustc -vV`, cached in `cache_dir` per rustc binary (path, size and mtime).
pub fn rustc_version(rustc: &Path, cache_dir: Option<&Path>) -> std::io::Result<String> {
    let meta = fs::metadata(rustc)?;
    let stamp = format!(
        "{} {} {}.{}",
        rustc.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let cache = cache_dir.map(|d| {
        let h = blake3::hash(rustc.as_os_str().as_encoded_bytes()).to_hex();
        d.join(format!("rustc-vv-{}", &h[..16]))
    });
    if let Some(c) = &cache
        && let Ok(text) = fs::read_to_string(c)
        && let Some((first, rest)) = text.split_once('\n')
        && first == stamp
    {
        return Ok(rest.to_string());
    }
    let out = Command::new(rustc).arg("-vV").output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{} -vV exited with {}",
            rustc.display(),
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

    let vv = rustc_version(
        rustc,
        target_root.as_ref().map(|t| t.join(".rdht")).as_deref(),
    )?;
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
                    // Unpacked packages do not change: their roots are cached per
                    // target dir and re-read only when a file's stamp changes.
                    let files = match &target_root {
                        Some(t) => {
                            let id = blake3::hash(manifest_dir.as_os_str().as_encoded_bytes());
                            let cache = t
                                .join(".rdht")
                                .join("registry-src")
                                .join(&id.to_hex()[..32]);
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

    let out_dir_files = match env.get("OUT_DIR") {
        Some(d) if Path::new(d).is_dir() => Some(hash_tree(Path::new(d), &|_| false)?),
        _ => None,
    };

    let mut env_inputs: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| {
            (k.starts_with("CARGO_") && !ENV_EXCLUDED.contains(&k.as_str()))
                || k.as_str() == "OUT_DIR"
                || k.as_str() == "RUSTC_BOOTSTRAP"
        })
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
                    key_args.push(format!("--extern={name}={}", file_root(Path::new(path))?));
                }
                None => key_args.push(format!("--extern={v}")),
            },
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
    })))
}
