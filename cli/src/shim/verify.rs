//! Checking builders by rebuilding: `--verify` (build every unit, compare with every
//! record for its key, blocklist builders whose root differs from a reproducible local
//! build) and the rebuild a sampled hit uses (specs/trust.md §4–§5).
//!
//! Owns: the rebuild into a scratch directory, the reproducibility check and the
//! verdicts. Does not own: the trust policy (the daemon) or the sampled hit's decision
//! (`hit.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rdht_api::{Request, Response};
use rdht_core::{BlockId, BuildRecord, BuilderKey};

use super::cache::{CacheFailure, call, connect, fail, unexpected};
use super::filehash::hash_file;
use super::inputs::Unit;
use super::layout::scratch;
use super::miss::{Captured, artifacts, needs, publish_record, run_rustc, store};
use super::session::{self, UnitLog};
use super::unit::{Ended, RESOLVE_TIMEOUT, warn};

/// What `--verify` found for one unit (its label goes in the session log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// No builder has published a record for the key.
    NoRecord,
    /// Every claimed root is the local build's.
    Match,
    /// The unit does not build the same twice: nobody is blamed.
    NotReproducible,
    /// A builder claimed another root than a reproducible local build gives.
    Mismatch,
}

impl Verdict {
    /// The label counted in the summary.
    pub(super) fn label(self) -> &'static str {
        match self {
            Verdict::NoRecord => "no record",
            Verdict::Match => "match",
            Verdict::NotReproducible => "not reproducible",
            Verdict::Mismatch => "mismatch",
        }
    }
}

/// `--verify`: build locally, compare with every record for the key, act on the result.
pub(super) fn verify(
    runtime: &tokio::runtime::Runtime,
    rustc: &Path,
    args: &[String],
    unit: &Unit,
    mut log: UnitLog,
    start: Instant,
) -> Ended {
    let name = log.crate_name.clone();
    let claimed = match runtime.block_on(records_for(unit)) {
        Ok(c) => c,
        Err(f) => {
            warn(&name, &format!("cannot list records: {}", f.reason));
            BTreeMap::new()
        }
    };
    let compile_start = Instant::now();
    let (code, captured) = match run_rustc(rustc, args, unit) {
        Ok(r) => r,
        Err(e) => return Ended::CannotRun(e),
    };
    log.compile_ms = compile_start.elapsed().as_millis() as u64;
    log.reason = "verify".into();
    log.cause = "verify".into();
    if code != 0 {
        log.wall_ms = start.elapsed().as_millis() as u64;
        session::append(&log);
        return Ended::Built(code);
    }
    super::miss::remember_origins(unit, &artifacts(&captured.stderr));
    let outcome = runtime.block_on(async {
        let local = store(unit, &captured).await?;
        let liars: Vec<(BlockId, &Vec<BuilderKey>)> =
            claimed.iter().filter(|(r, _)| **r != local).map(|(r, b)| (*r, b)).collect();
        let (outcome, line) = if claimed.is_empty() {
            (Verdict::NoRecord, "no record".to_string())
        } else if liars.is_empty() {
            let n: usize = claimed.values().map(Vec::len).sum();
            (Verdict::Match, format!("match ({n} builder record(s) agree with the local build)"))
        } else if unit.inv.incremental {
            // Incremental builds name codegen units differently on every fresh run.
            (Verdict::NotReproducible, "not reproducible (incremental build); no builder blamed".to_string())
        } else if !reproducible(rustc, args, unit, &captured)? {
            (Verdict::NotReproducible, "not reproducible: two local builds differ; no builder blamed".to_string())
        } else {
            let mut blamed = Vec::new();
            for (root, builders) in &liars {
                for b in *builders {
                    let reason = format!(
                        "claimed root {root} for build key {}; a reproducible local build gives {local}",
                        unit.key
                    );
                    block(*b, reason).await?;
                    blamed.push(b.to_string());
                }
            }
            (Verdict::Mismatch, format!("MISMATCH: local build gives {local}; blocklisted {}", blamed.join(", ")))
        };
        eprintln!("rdht: verify {}: {line}", log.crate_name);
        if outcome != Verdict::NotReproducible {
            let needs = needs(unit, &artifacts(&captured.stderr));
            publish_record(unit, local, log.compile_ms, needs).await?;
        }
        Ok::<_, CacheFailure>(outcome)
    });
    log.verify = Some(match outcome {
        Ok(o) => o.label().to_string(),
        Err(f) => {
            eprintln!("rdht: verify {name}: error: {}", f.reason);
            "error".to_string()
        }
    });
    log.wall_ms = start.elapsed().as_millis() as u64;
    session::append(&log);
    Ended::Built(code)
}

/// Roots claimed for the unit's key by each builder's records.
pub(super) async fn records_for(
    unit: &Unit,
) -> Result<BTreeMap<BlockId, Vec<BuilderKey>>, CacheFailure> {
    let mut client = connect().await?;
    let request = Request::Records { key: unit.key };
    let views = match call(&mut client, request, RESOLVE_TIMEOUT, "listing records").await? {
        Response::Records(v) => v,
        other => return Err(unexpected(&other)),
    };
    let mut claimed: BTreeMap<BlockId, Vec<BuilderKey>> = BTreeMap::new();
    for v in views {
        if let Ok(r) = BuildRecord::decode_for(&v.record, unit.key) {
            let builders = claimed.entry(r.root()).or_default();
            if !builders.contains(&r.builder()) {
                builders.push(r.builder());
            }
        }
    }
    Ok(claimed)
}

pub(super) async fn block(builder: BuilderKey, reason: String) -> Result<(), CacheFailure> {
    let mut client = connect().await?;
    client.call(Request::TrustBlock { builder, reason }).await?;
    Ok(())
}

/// The unit's arguments with the output directory, and the incremental directory if
/// any, moved under `dir` (a fresh incremental directory, as on a first build).
pub(super) fn args_into(args: &[String], dir: &Path) -> Vec<String> {
    let incremental = format!("incremental={}", dir.join("incremental").display());
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--out-dir" {
            it.next();
            out.push(a.clone());
            out.push(dir.to_string_lossy().into_owned());
        } else if a.starts_with("--out-dir=") {
            out.push(format!("--out-dir={}", dir.display()));
        } else if (a == "-C" || a == "--codegen")
            && it
                .clone()
                .next()
                .is_some_and(|v| v.starts_with("incremental="))
        {
            it.next();
            out.push(a.clone());
            out.push(incremental.clone());
        } else if a.starts_with("-Cincremental=") {
            out.push(format!("-C{incremental}"));
        } else {
            out.push(a.clone());
        }
    }
    out
}

/// Compiles the unit again into a scratch directory, quietly; returns the content root
/// of each output by file name (dep-info excluded: it names the scratch directory).
pub(super) fn rebuild_roots(
    rustc: &Path,
    args: &[String],
    unit: &Unit,
) -> Result<BTreeMap<String, BlockId>, CacheFailure> {
    let dir = scratch(&unit.out_dir, "check");
    let result = (|| {
        std::fs::create_dir_all(&dir)
            .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
        let out = Command::new(rustc)
            .args(args_into(args, &dir))
            .args(unit.roots.remap_args())
            .output()
            .map_err(|e| fail(format!("running {}: {e}", rustc.display())))?;
        if !out.status.success() {
            return Err(fail("the check build failed"));
        }
        let mut roots = BTreeMap::new();
        for e in
            std::fs::read_dir(&dir).map_err(|e| fail(format!("reading {}: {e}", dir.display())))?
        {
            let p = e.map_err(|e| fail(e.to_string()))?.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            if p.is_file() && !name.ends_with(".d") {
                roots.insert(name, hash_file(&p).map_err(|e| fail(e.to_string()))?);
            }
        }
        Ok(roots)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Whether a second local build gives the same outputs as the one just made.
pub(super) fn reproducible(
    rustc: &Path,
    args: &[String],
    unit: &Unit,
    captured: &Captured,
) -> Result<bool, CacheFailure> {
    let mut first = BTreeMap::new();
    for o in artifacts(&captured.stderr) {
        let Some(name) = o.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if !name.ends_with(".d") {
            first.insert(name, hash_file(&o).map_err(|e| fail(e.to_string()))?);
        }
    }
    Ok(rebuild_roots(rustc, args, unit)? == first)
}
