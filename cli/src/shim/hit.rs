//! The hit path: resolve the key through the daemon, export the artifact into a
//! scratch directory next to the outputs, check it may be used here (the environment
//! the unit read, the C runtime its loadable outputs need, a sampled rebuild), move its
//! outputs into place with local paths and replay rustc's messages.
//!
//! Owns: those steps, in that order. Does not own: choosing the root (the daemon) or
//! building (`miss.rs`, `verify.rs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rdht_api::proto::{MissCause, Resolution};
use rdht_api::{Client, Request, Response};
use rdht_core::{BlockId, BuildRecord, BuilderKey};

use super::cache::{CacheFailure, Severity, connect, fail, unexpected};
use super::filehash::{remember, remember_origin};
use super::inputs::Unit;
use super::layout::{OUT, STDERR, STDOUT, scratch};
use super::miss::settle;
use super::unit::RESOLVE_TIMEOUT;
use super::verify::rebuild_roots;
use rdht_fit::Machine;

pub(super) struct Hit {
    pub(super) bytes_fetched: u64,
    pub(super) compile_ms: u64,
    /// The sampled check's outcome (`sample match`, `sample not reproducible`), when
    /// one ran.
    pub(super) sample: Option<&'static str>,
}

/// What a resolve that hit gives.
pub(super) struct Resolved {
    pub(super) root: BlockId,
    /// Bytes fetched from peers meanwhile.
    pub(super) bytes_fetched: u64,
    /// The builders' own figure for how long the unit took (for "time saved").
    pub(super) build_ms: u64,
    /// Whether the daemon sampled this hit for a rebuild check.
    pub(super) sampled: bool,
    /// The builders whose records were accepted.
    pub(super) builders: Vec<BuilderKey>,
}

/// Resolves `key` through the daemon and, on a hit, has it write the artifact into
/// `dest` (verified; outputs other than dep-info may be hard links to the store's
/// copies), in one round trip. Returns the resolution and the files written (path in
/// the artifact, content root). A miss is a [`CacheFailure`] of severity
/// [`Severity::Miss`] whose reason names `what` when the artifact does not fit here.
pub(super) async fn resolve_export(
    client: &mut Client,
    key: rdht_core::BuildKey,
    scope: rdht_api::proto::Scope,
    dest: &Path,
    what: &str,
) -> Result<(Resolved, Vec<(String, BlockId)>), CacheFailure> {
    let dest = dest
        .to_str()
        .ok_or_else(|| fail("output directory is not UTF-8"))?
        .to_string();
    let mut fetched = 0u64;
    let request = Request::ResolveExport { key, scope, dest };
    let answer = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        client.call_with_progress(request, |p| {
            if let rdht_api::Progress::Bytes { done, .. } = p {
                fetched = *done;
            }
        }),
    )
    .await
    .map_err(|_| fail("resolving timed out"))??;
    let Response::ResolvedExported {
        resolution,
        entries,
    } = answer
    else {
        return Err(unexpected(&answer));
    };
    match resolution {
        Resolution::Hit {
            root,
            bytes_fetched,
            records,
            verify,
            ..
        } => {
            if entries.is_empty() {
                return Err(fail(format!("artifact {root} could not be exported")));
            }
            let decoded: Vec<BuildRecord> = records
                .iter()
                .filter_map(|r| BuildRecord::decode(r).ok())
                .collect();
            let resolved = Resolved {
                root,
                bytes_fetched: bytes_fetched.max(fetched),
                build_ms: decoded.iter().map(|r| r.body().build_ms).max().unwrap_or(0),
                sampled: verify,
                builders: decoded.iter().map(|r| r.builder()).collect(),
            };
            Ok((
                resolved,
                entries.into_iter().map(|e| (e.path, e.root)).collect(),
            ))
        }
        Resolution::Miss {
            reason,
            cause,
            unreachable,
        } => {
            // A misfit the daemon saw in the records is counted as one found in the
            // files is: by what the artifact needs (its reason).
            let (counted, reason) = match cause {
                MissCause::DoesNotFit => (
                    reason.clone(),
                    format!("trusted artifact of {what} does not fit this machine: {reason}"),
                ),
                other => (other.label().into(), reason),
            };
            let mut f = fail(reason);
            f.cause = counted;
            f.severity = Severity::Miss;
            f.unreachable = unreachable;
            Err(f)
        }
    }
}

pub(super) async fn try_hit(
    rustc: &Path,
    args: &[String],
    unit: &Unit,
) -> Result<Hit, CacheFailure> {
    let mut client = connect().await?;
    let tmp = scratch(&unit.out_dir, "hit");
    let result = async {
        let (resolved, entries) =
            resolve_export(&mut client, unit.key, unit.scope(), &tmp, &unit.describe()).await?;
        let outputs = outputs(resolved.root, &tmp, entries)?;
        // Incremental units are not bit-reproducible, so a rebuild proves nothing.
        let check = (resolved.sampled && !unit.inv.incremental).then_some((
            rustc,
            args,
            resolved.builders.as_slice(),
        ));
        let mut hit = materialize(unit, &mut client, resolved.root, &tmp, &outputs, check).await?;
        hit.bytes_fetched = resolved.bytes_fetched;
        hit.compile_ms = resolved.build_ms;
        Ok(hit)
    }
    .await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// A sampled hit's check: the rustc command and the builders that claimed the artifact.
pub(super) type Check<'a> = Option<(&'a Path, &'a [String], &'a [BuilderKey])>;

/// One output file of an exported artifact: its name in `--out-dir`, where the export
/// put it, and its content root.
struct Output {
    name: String,
    at: PathBuf,
    root: BlockId,
}

impl Output {
    fn is_dep_info(&self) -> bool {
        self.name.ends_with(".d")
    }
}

/// Checks the exported `outputs` of `root` in `tmp` may be used here, puts them in place
/// and replays rustc's messages. Any step that fails leaves `--out-dir` as it was.
async fn materialize(
    unit: &Unit,
    client: &mut Client,
    root: BlockId,
    tmp: &Path,
    outputs: &[Output],
    check: Check<'_>,
) -> Result<Hit, CacheFailure> {
    check_env(unit, outputs)?;
    check_fit(unit, outputs)?;
    let sample = match check {
        Some((rustc, args, builders)) => {
            Some(check_sample(unit, client, root, outputs, rustc, args, builders).await?)
        }
        None => None,
    };
    place(unit, outputs)?;
    replay(unit, tmp);
    Ok(Hit {
        bytes_fetched: 0,
        compile_ms: 0,
        sample,
    })
}

/// The outputs of artifact `root` exported into `tmp` as `entries`. An artifact with
/// files outside the layout is refused.
fn outputs(
    root: BlockId,
    tmp: &Path,
    entries: Vec<(String, BlockId)>,
) -> Result<Vec<Output>, CacheFailure> {
    let mut outputs = Vec::new();
    for (path, file_root) in entries {
        match path.strip_prefix(OUT) {
            Some(name) if !name.contains('/') => outputs.push(Output {
                name: name.to_string(),
                at: tmp.join(&path),
                root: file_root,
            }),
            _ if path == STDOUT || path == STDERR => {}
            _ => {
                return Err(fail(format!(
                    "artifact {root} holds unexpected file {path}"
                )));
            }
        }
    }
    Ok(outputs)
}

/// The environment the compile read (dep-info's `# env-dep` lines) must be the same
/// here, and it must not have read a generated file that names a machine-local path
/// (its outputs would name the builder's).
fn check_env(unit: &Unit, outputs: &[Output]) -> Result<(), CacheFailure> {
    for o in outputs.iter().filter(|o| o.is_dep_info()) {
        let text = std::fs::read_to_string(&o.at).unwrap_or_default();
        // Stored dep-info is normalised, like the names it is compared with.
        if let Some(named) = unit.reads_local_named(&text) {
            let mut f = fail(format!(
                "the cached build read {named}, which names this machine's paths"
            ));
            f.severity = Severity::Miss;
            f.cause = "reads a generated file naming local paths".into();
            return Err(f);
        }
        for (name, want) in env_deps(&text) {
            let have = std::env::var(name).ok().map(|v| unit.roots.normalize(&v));
            if have.as_deref() != want {
                let mut f = fail(format!(
                    "environment variable {name} differs from the cached build"
                ));
                f.severity = Severity::Miss;
                f.cause = "environment differs".into();
                return Err(f);
            }
        }
    }
    Ok(())
}

/// The variables named by dep-info's `# env-dep:NAME=VALUE` lines (`# env-dep:NAME`:
/// read while unset), in order.
pub(super) fn env_deps(dep_info: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    dep_info.lines().filter_map(|line| {
        let dep = line.strip_prefix("# env-dep:")?;
        Some(match dep.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (dep, None),
        })
    })
}

/// Outputs this machine loads or runs must fit its C runtime (specs/build-key.md §6.2);
/// one that does not makes the hit a miss, built here, counted under its reason.
fn check_fit(unit: &Unit, outputs: &[Output]) -> Result<(), CacheFailure> {
    let Some(host) = unit.loaded_here() else {
        return Ok(());
    };
    let mut machine = Machine::here(&host);
    // Verdicts that an output fits are kept by its content root, with the identity of
    // the runtime libraries they were reached against: reading and parsing a proc
    // macro or build script each hit cost more than the rest of the hit.
    let env: super::inputs::Env = std::env::vars().collect();
    let cache = super::inputs::user_cache(&env, None, "fit");
    let identity = machine.identity();
    for o in outputs.iter().filter(|o| !o.is_dep_info()) {
        let entry = cache.as_ref().map(|d| d.join(o.root.to_string()));
        if entry
            .as_ref()
            .is_some_and(|e| std::fs::read_to_string(e).is_ok_and(|s| s == identity))
        {
            continue;
        }
        if let Err(misfit) = machine.file_fits(&o.at) {
            let mut f = fail(format!(
                "cached {} does not fit this machine: {misfit}",
                o.name
            ));
            f.severity = Severity::Miss;
            f.cause = misfit.to_string();
            return Err(f);
        }
        if let Some(e) = entry {
            remember_fit(&e, &identity);
        }
    }
    Ok(())
}

/// Keeps a verdict that an output fits (best effort: a lost one is checked again).
fn remember_fit(entry: &Path, identity: &str) {
    if let Some(dir) = entry.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, identity).is_ok() {
        let _ = std::fs::rename(&tmp, entry);
    }
}

/// A sampled hit: compiles the unit again and compares. A difference that a second
/// local build confirms blocklists `builders` and makes the hit a miss; two local
/// builds that differ blame nobody (the unit is not reproducible).
async fn check_sample(
    unit: &Unit,
    client: &mut Client,
    root: BlockId,
    outputs: &[Output],
    rustc: &Path,
    args: &[String],
    builders: &[BuilderKey],
) -> Result<&'static str, CacheFailure> {
    let cached: BTreeMap<String, BlockId> = outputs
        .iter()
        .filter(|o| !o.is_dep_info())
        .map(|o| (o.name.clone(), o.root))
        .collect();
    let local = rebuild_roots(rustc, args, unit)?;
    if local == cached {
        return Ok("sample match");
    }
    if rebuild_roots(rustc, args, unit)? != local {
        eprintln!(
            "rdht: warning: {}: sampled check: two local builds differ (not reproducible); no builder blamed, the cached artifact is used",
            unit.labels.crate_name
        );
        return Ok("sample not reproducible");
    }
    for b in builders {
        let reason = format!(
            "sampled check: artifact {root} for build key {} differs from a local build",
            unit.key
        );
        client
            .call(Request::TrustBlock {
                builder: *b,
                reason,
            })
            .await?;
    }
    eprintln!(
        "rdht: warning: {}: the cached artifact differs from a local build; blocklisted {} builder(s)",
        unit.labels.crate_name,
        builders.len()
    );
    let mut f = fail("sampled check: cached artifact differs from a local build");
    f.sample_mismatch = true;
    Err(f)
}

/// Moves the outputs into `--out-dir` (dep-info with local paths), gives them cargo's
/// check-mode time, and records their content roots in sidecars.
fn place(unit: &Unit, outputs: &[Output]) -> Result<(), CacheFailure> {
    let mut placed = Vec::with_capacity(outputs.len());
    for o in outputs {
        let to = unit.out_dir.join(&o.name);
        if o.is_dep_info() {
            let text = unit
                .roots
                .localize(&std::fs::read_to_string(&o.at).unwrap_or_default());
            std::fs::write(&o.at, text)
                .map_err(|err| fail(format!("writing {}: {err}", o.at.display())))?;
        }
        std::fs::rename(&o.at, &to)
            .map_err(|err| fail(format!("moving {} into place: {err}", to.display())))?;
        placed.push(to);
    }
    // As after a compile: cargo's check-mode time first, so the sidecars stay valid.
    settle(unit, &placed);
    let proc_macro = unit.is_proc_macro();
    for (to, o) in placed.iter().zip(outputs) {
        if !o.is_dep_info() {
            let _ = if proc_macro {
                remember_origin(to, o.root, unit.key)
            } else {
                remember(to, o.root)
            };
        }
    }
    Ok(())
}

/// Replays what rustc printed, with local paths, as bytes: it need not be UTF-8.
fn replay(unit: &Unit, tmp: &Path) {
    let bytes = |rel: &str| {
        unit.roots
            .localize_bytes(&std::fs::read(tmp.join(rel)).unwrap_or_default())
    };
    let _ = std::io::stdout().lock().write_all(&bytes(STDOUT));
    let _ = std::io::stderr().lock().write_all(&bytes(STDERR));
}
