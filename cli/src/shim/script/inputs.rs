//! The inputs of a build-script run's two keys (specs/build-key.md §10.2): the
//! environment cargo gives the run, normalised; the C toolchain's identity; and the
//! current values of the inputs a declaration names.
//!
//! Owns: which variables count and why, the toolchain probe and its cache, and reading
//! declared inputs. Does not own: the hashes (`rdht_core::runkey`).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rdht_core::BuildKey;
use rdht_core::runkey::{Declaration, PathValue, RUN_KEY_VERSION, RunBase, RunInputs};

use super::launcher::Meta;
use super::output::Declared;
use crate::shim::filehash::{hash_file, hash_tree};
use crate::shim::inputs::{Env, find_program, read_stamped, write_stamped};
use crate::shim::roots::{Roots, target_dir};

/// Variables cargo sets for a build script that count in its run's key, by name.
/// Left out, each for a reason:
/// - `NUM_JOBS`, `CARGO_MAKEFLAGS`, `MAKEFLAGS`, `MFLAGS`: parallelism only;
/// - `CARGO`, `RUSTC`, `RUSTDOC`: the tools' paths, machine-local; the compiler is the
///   one the script's own key names (its `rustc -vV`), and cargo and rustdoc come with
///   it;
/// - `RUSTC_WRAPPER`, `RUSTC_WORKSPACE_WRAPPER`: this shim's path (or a lint driver's),
///   which only route the script's rustc probes;
/// - `RDHT_*`: this cache's own settings;
/// - everything cargo does not set (the user's environment): a script that reads a
///   variable declares it with `rerun-if-env-changed` (cc-rs does, for `CC`, `CFLAGS`
///   and the rest), and those count in step two, as they do for cargo.
const RUN_ENV: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "OPT_LEVEL",
    "DEBUG",
    "PROFILE",
    "RUSTC_LINKER",
    "CARGO_ENCODED_RUSTFLAGS",
];
/// Prefixes of the variables cargo sets per feature, cfg, package field and `links`
/// dependency; all count.
const RUN_ENV_PREFIXES: &[&str] = &["CARGO_FEATURE_", "CARGO_CFG_", "CARGO_PKG_", "DEP_"];

/// The C toolchain a script may use: the variable that names each tool, and the
/// program used when it is unset.
const TOOLS: &[(&str, &str)] = &[("CC", "cc"), ("CXX", "c++"), ("AR", "ar"), ("", "cmake")];

/// Set by `cargo dht-build`: the workspace of the build, for runs of registry
/// packages' scripts, whose compile did not know it.
pub const BUILD_WORKSPACE_ENV: &str = "RDHT_BUILD_WORKSPACE";

/// One run's fixed facts: where it writes, its roots, and its declaration key.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// `OUT_DIR`.
    pub out_dir: PathBuf,
    /// The package directory (`CARGO_MANIFEST_DIR`), which relative paths are from.
    pub manifest_dir: PathBuf,
    /// Local roots, with placeholders.
    pub roots: Roots,
    /// Step one's inputs.
    pub base: RunBase,
    /// `base.derive()`.
    pub declaration_key: BuildKey,
    /// The package's name and version (for labels and messages).
    pub package: (String, String),
    /// The target triple.
    pub target: String,
}

impl RunContext {
    /// The context of the run cargo started with `env`, for the compile `meta`
    /// describes.
    pub fn new(meta: &Meta, env: &Env) -> Result<RunContext, String> {
        let var = |k: &str| {
            env.get(k)
                .cloned()
                .ok_or_else(|| format!("{k} is not set (not run by cargo)"))
        };
        let out_dir = PathBuf::from(var("OUT_DIR")?);
        let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
        let script: BuildKey = meta
            .script_key
            .parse()
            .map_err(|e| format!("build key in the launcher's metadata: {e}"))?;
        let workspace = meta
            .workspace
            .clone()
            .or_else(|| env.get(BUILD_WORKSPACE_ENV).cloned());
        let target_root = meta
            .target
            .clone()
            .map(PathBuf::from)
            .or_else(|| target_dir(out_dir.parent()?, env.get("TARGET").map(String::as_str)));
        let roots = Roots::new(
            Path::new(&meta.cargo_home),
            workspace.as_deref().map(Path::new),
            target_root.as_deref(),
        );
        let mut run_env: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| {
                RUN_ENV.contains(&k.as_str()) || RUN_ENV_PREFIXES.iter().any(|p| k.starts_with(p))
            })
            .map(|(k, v)| (k.clone(), roots.normalize(v)))
            .collect();
        run_env.sort();
        let cache = target_root.map(|t| t.join(".rdht").join("tools"));
        let toolchain = toolchain(env, cache.as_deref());
        let base = RunBase {
            version: RUN_KEY_VERSION,
            script,
            env: run_env,
            toolchain,
        };
        Ok(RunContext {
            declaration_key: base.derive(),
            base,
            out_dir,
            manifest_dir,
            roots,
            package: (
                env.get("CARGO_PKG_NAME").cloned().unwrap_or_default(),
                env.get("CARGO_PKG_VERSION").cloned().unwrap_or_default(),
            ),
            target: env.get("TARGET").cloned().unwrap_or_default(),
        })
    }

    /// The declaration of a run that printed `declared`: variables sorted and unique,
    /// paths normalised, sorted and unique.
    pub fn declaration(&self, declared: &Declared) -> Declaration {
        let mut env = declared.env_changed.clone();
        env.sort();
        env.dedup();
        let mut paths: Vec<String> = declared
            .changed
            .iter()
            .map(|p| self.roots.normalize(p))
            .collect();
        paths.sort();
        paths.dedup();
        Declaration {
            version: RUN_KEY_VERSION,
            env,
            paths,
            package: !declared.any(),
        }
    }

    /// Where declared path `p` (normalised) is on this machine.
    pub fn local_path(&self, p: &str) -> PathBuf {
        self.manifest_dir.join(self.roots.localize(p))
    }

    /// Step two's inputs: the current value of everything `declaration` names.
    pub fn run_inputs(&self, declaration: &Declaration, env: &Env) -> std::io::Result<RunInputs> {
        let env_values = declaration
            .env
            .iter()
            .map(|k| (k.clone(), env.get(k).map(|v| self.roots.normalize(v))))
            .collect();
        let mut paths = Vec::with_capacity(declaration.paths.len());
        for p in &declaration.paths {
            let at = self.local_path(p);
            let value = match fs::metadata(&at) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => PathValue::Missing,
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", at.display()),
                    ));
                }
                Ok(m) if m.is_dir() => PathValue::Dir(hash_tree(&at, &|_| false)?),
                Ok(_) => PathValue::File(hash_file(&at)?),
            };
            paths.push((p.clone(), value));
        }
        Ok(RunInputs {
            version: RUN_KEY_VERSION,
            base: self.declaration_key,
            declaration: declaration.clone(),
            env: env_values,
            paths,
        })
    }
}

/// The identity of each tool of [`TOOLS`]: `VERSION-LINE;ROOT` of the program the
/// variable names (its first word) or of the default one on `PATH`, else `absent`.
/// Cached in `cache` per program file (path, size, mtime, inode), so no tool runs per
/// build-script run.
pub fn toolchain(env: &Env, cache: Option<&Path>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = TOOLS
        .iter()
        .map(|(var, default)| {
            let named = env
                .get(*var)
                .and_then(|v| v.split_whitespace().next().map(str::to_string))
                .unwrap_or_else(|| default.to_string());
            let id = find_program(Path::new(&named), env)
                .and_then(fs::canonicalize)
                .map(|p| identity(&p, cache))
                .unwrap_or_else(|_| "absent".to_string());
            (default.to_string(), id)
        })
        .collect();
    out.sort();
    out
}

fn identity(program: &Path, cache: Option<&Path>) -> String {
    let Ok(meta) = fs::metadata(program) else {
        return "absent".into();
    };
    let stamp = format!(
        "{} {} {}.{} {}",
        program.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino()
    );
    let file = cache.map(|d| d.join(&blake3::hash(stamp.as_bytes()).to_hex()[..32]));
    if let Some(id) = file.as_deref().and_then(|f| read_stamped(f, &stamp)) {
        return id;
    }
    let version = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default();
    let Ok(root) = hash_file(program) else {
        return "absent".into();
    };
    let id = format!("{version};{root}");
    if let Some(f) = &file {
        write_stamped(f, &stamp, &id);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(home: &Path, target: &Path) -> Meta {
        Meta {
            version: 1,
            script_key: "07".repeat(32),
            public: true,
            cargo_home: home.display().to_string(),
            workspace: None,
            target: Some(target.display().to_string()),
            rustc: "rustc 1.95.0".into(),
        }
    }

    fn env_at(home: &Path, target: &Path, pkg: &Path) -> Env {
        let out = target.join("debug/build/z-0123/out");
        Env::from([
            ("OUT_DIR".into(), out.display().to_string()),
            ("CARGO_MANIFEST_DIR".into(), pkg.display().to_string()),
            ("CARGO_PKG_NAME".into(), "z".into()),
            ("CARGO_FEATURE_STATIC".into(), "1".into()),
            ("TARGET".into(), "x86_64-unknown-linux-gnu".into()),
            ("NUM_JOBS".into(), "2".into()),
            ("RUSTC".into(), home.join("bin/rustc").display().to_string()),
            (
                "DEP_Z_INCLUDE".into(),
                out.join("include").display().to_string(),
            ),
            (
                "CFLAGS".into(),
                format!("-ffile-prefix-map={}=/x", pkg.display()),
            ),
            ("PATH".into(), String::new()),
        ])
    }

    #[test]
    fn the_declaration_key_is_the_same_at_any_path_and_counts_only_cargos_variables() {
        let d = tempfile::tempdir().unwrap();
        let at = |n: &str| d.path().join(n);
        let a = RunContext::new(
            &meta(&at("a/home"), &at("a/t")),
            &env_at(&at("a/home"), &at("a/t"), &at("a/home/registry/src/i/z-1")),
        )
        .unwrap();
        let mut env_b = env_at(&at("b/home"), &at("b/t"), &at("b/home/registry/src/i/z-1"));
        env_b.insert("NUM_JOBS".into(), "64".into());
        let b = RunContext::new(&meta(&at("b/home"), &at("b/t")), &env_b).unwrap();
        assert_eq!(a.base, b.base);
        let names: Vec<&str> = a.base.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "CARGO_FEATURE_STATIC",
                "CARGO_MANIFEST_DIR",
                "CARGO_PKG_NAME",
                "DEP_Z_INCLUDE",
                "OUT_DIR",
                "TARGET"
            ]
        );
        assert_eq!(
            a.base.env[3].1,
            "/rdht/target/debug/build/z-0123/out/include"
        );
        // No tool on an empty PATH.
        assert!(a.base.toolchain.iter().all(|(_, id)| id == "absent"));
        env_b.insert("CARGO_FEATURE_ZDICT".into(), "1".into());
        let c = RunContext::new(&meta(&at("b/home"), &at("b/t")), &env_b).unwrap();
        assert_ne!(c.declaration_key, b.declaration_key);
    }

    #[test]
    fn declared_inputs_count_by_value() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        let pkg = d.path().join("ws/p");
        fs::create_dir_all(pkg.join("c")).unwrap();
        fs::write(pkg.join("c/x.c"), "int x;").unwrap();
        fs::write(pkg.join("build.rs"), "fn main(){}").unwrap();
        let mut env = env_at(&home, &d.path().join("t"), &pkg);
        let ctx = RunContext::new(&meta(&home, &d.path().join("t")), &env).unwrap();
        let declared = super::super::output::parse(
            b"cargo:rerun-if-changed=build.rs\ncargo:rerun-if-changed=c\n\
              cargo:rerun-if-changed=gone.h\ncargo:rerun-if-env-changed=ZSTD_LIB\n\
              cargo:rerun-if-changed=build.rs\n",
        );
        let decl = ctx.declaration(&declared);
        assert_eq!(decl.paths, ["build.rs", "c", "gone.h"]);
        assert_eq!(decl.env, ["ZSTD_LIB"]);
        assert!(!decl.package);
        let first = ctx.run_inputs(&decl, &env).unwrap();
        assert_eq!(first.paths[2].1, PathValue::Missing);
        assert!(matches!(&first.paths[1].1, PathValue::Dir(f) if f.len() == 1));
        let k = first.derive();
        assert_eq!(ctx.run_inputs(&decl, &env).unwrap().derive(), k);
        env.insert("ZSTD_LIB".into(), "1".into());
        let k2 = ctx.run_inputs(&decl, &env).unwrap().derive();
        assert_ne!(k2, k, "a declared variable");
        fs::write(pkg.join("c/x.c"), "int y;").unwrap();
        let k3 = ctx.run_inputs(&decl, &env).unwrap().derive();
        assert_ne!(k3, k2, "a file in a declared directory");
        fs::write(pkg.join("unrelated.txt"), "x").unwrap();
        assert_eq!(
            ctx.run_inputs(&decl, &env).unwrap().derive(),
            k3,
            "not declared"
        );
        assert!(ctx.declaration(&Default::default()).package);
    }
}
