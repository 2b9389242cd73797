//! One rustc invocation under the wrapper: passthrough, hit or miss
//! (ARCHITECTURE.md "Data flow").
//!
//! - Hit: resolve the key through the daemon, export the artifact next to the output
//!   directory, check the environment the unit read (`# env-dep` lines), move outputs
//!   into place with local paths in dep-info, replay rustc's messages with local paths.
//! - Miss: run rustc with path remapping, passing its output through as it comes; once
//!   it has exited, give a check unit's outputs cargo's time (`stamp.rs`), then
//!   submit the outputs: the daemon stores them and publishes a signed record in the
//!   background (it checks the files did not change meanwhile), so cargo is not kept
//!   waiting. Outputs too large to describe inline are stored synchronously instead.
//! - Sampled hit (the daemon's `verify_sample_rate`): before using a hit, compile it
//!   again in a scratch directory and compare; a difference blocklists the builders
//!   that claimed it and the unit is built locally.
//! - Verify (`RDHT_VERIFY=1`, `cargo dht-build --verify`): build locally, compare with
//!   every record for the key, blocklist builders whose root differs from a
//!   reproducible local build, publish our own record for matches.
//!
//! Invariant: any cache failure becomes a local build and at most one warning line; the
//! exit code is rustc's. Owns: the two paths. Does not own: the key (`inputs.rs`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdht_api::proto::{
    ExportedFile, FileSource, MAX_INLINE_BYTES, PutFile, Resolution, Submission, SubmitFile,
};
use rdht_api::{Client, ClientError, Request, Response};
use rdht_core::{BlockId, BuildRecord, BuilderKey};

use super::filehash::{hash_file, remember};
use super::inputs::{Env, Plan, Unit, plan};
use super::session::{self, Kind, UnitLog};

/// How long resolving (which may fetch over the swarm) may take before building locally.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long storing and publishing a miss may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);
/// Set by `cargo dht-build` when it found no daemon: skip the cache quietly.
pub const DAEMON_DOWN_ENV: &str = "RDHT_DAEMON_DOWN";
/// Set by `cargo dht-build --verify`: build every unit and check other builders.
pub const VERIFY_ENV: &str = "RDHT_VERIFY";

/// The daemon's data directory for this process.
pub fn data_dir() -> Option<PathBuf> {
    std::env::var_os("RDHT_DATA_DIR")
        .map(PathBuf::from)
        .or_else(rdht_api::default_data_dir)
}

fn warn(crate_name: &str, msg: &str) {
    eprintln!("rdht: warning: {crate_name}: {msg}; building locally");
}

/// Whether this is the first time in this `cargo dht-build` run that a warning of
/// `class` is due (always true outside a session): a daemon that went away is reported
/// once, not once per remaining unit.
fn first_in_session(class: &str) -> bool {
    match std::env::var_os(session::SESSION_LOG_ENV) {
        Some(log) => {
            let marker = PathBuf::from(format!("{}.warned-{class}", log.to_string_lossy()));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(marker)
                .is_ok()
        }
        None => true,
    }
}

/// How a failed cache step is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    /// An ordinary miss (no trusted record): counted, not warned about.
    Miss,
    /// The daemon is unreachable: warned about once per session.
    Unreachable,
    /// Anything else that went wrong: warned about.
    Fault,
}

/// A failed cache step: why, and whether to try publishing after the local build.
struct CacheFailure {
    reason: String,
    /// The kind of reason, counted in the summary (`untrusted`, `no record`, …).
    cause: &'static str,
    publish: bool,
    sample_mismatch: bool,
    severity: Severity,
    /// Providers the daemon could not reach (peer ids), for the summary.
    unreachable: Vec<String>,
}

impl From<ClientError> for CacheFailure {
    fn from(e: ClientError) -> Self {
        let unreachable = matches!(
            e,
            ClientError::NotRunning { .. } | ClientError::Connect { .. }
        );
        CacheFailure {
            reason: e.to_string(),
            cause: if unreachable {
                "daemon unreachable"
            } else {
                "error"
            },
            publish: !unreachable,
            sample_mismatch: false,
            severity: if unreachable {
                Severity::Unreachable
            } else {
                Severity::Fault
            },
            unreachable: Vec::new(),
        }
    }
}

fn fail(reason: impl Into<String>) -> CacheFailure {
    CacheFailure {
        reason: reason.into(),
        cause: "error",
        publish: true,
        sample_mismatch: false,
        severity: Severity::Fault,
        unreachable: Vec::new(),
    }
}

/// Runs the wrapper for `rustc args`; returns the process exit code.
pub fn run(rustc: PathBuf, args: Vec<String>) -> i32 {
    let start = Instant::now();
    let env: Env = std::env::vars().collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let crate_name = args
        .iter()
        .position(|a| a == "--crate-name")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "unit".into());
    let planned = plan(&rustc, &args, &env, &cwd);
    let key_ms = start.elapsed().as_millis() as u64;
    let planned = match planned {
        Ok(p) => p,
        Err(e) => {
            warn(&crate_name, &format!("cannot compute the build key: {e}"));
            Plan::Uncacheable(format!("key error: {}", e.kind()))
        }
    };
    let unit = match planned {
        Plan::Passthrough => return exec(&rustc, &args),
        Plan::Uncacheable(reason) => {
            session::append(&UnitLog {
                crate_name,
                kind: Kind::Uncacheable,
                reason,
                bytes_fetched: 0,
                compile_ms: 0,
                wall_ms: 0,
                key_ms,
                key: String::new(),
                verify: None,
                cause: String::new(),
                not_shared: None,
                unreachable: Vec::new(),
            });
            return exec(&rustc, &args);
        }
        Plan::Cacheable(u) => u,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            warn(&crate_name, &format!("cannot start the async runtime: {e}"));
            return exec(&rustc, &args);
        }
    };
    let daemon_down = env.get(DAEMON_DOWN_ENV).is_some_and(|v| v == "1");
    let mut log = UnitLog {
        crate_name: crate_name.clone(),
        kind: Kind::Miss,
        reason: "daemon not running".into(),
        bytes_fetched: 0,
        compile_ms: 0,
        wall_ms: 0,
        key_ms,
        key: unit.key.to_string(),
        verify: None,
        cause: "daemon unreachable".into(),
        not_shared: None,
        unreachable: Vec::new(),
    };
    if env.get(VERIFY_ENV).is_some_and(|v| v == "1") && !daemon_down {
        return verify(&runtime, &rustc, &args, &unit, log, start);
    }
    let mut publish = !daemon_down;
    if !daemon_down {
        match runtime.block_on(try_hit(&rustc, &args, &unit)) {
            Ok(hit) => {
                log.kind = Kind::Hit;
                log.reason.clear();
                log.cause.clear();
                log.bytes_fetched = hit.bytes_fetched;
                log.compile_ms = hit.compile_ms;
                log.verify = hit.sample.map(str::to_string);
                log.wall_ms = start.elapsed().as_millis() as u64;
                session::append(&log);
                return 0;
            }
            Err(f) => {
                let shown = match f.severity {
                    Severity::Miss => false,
                    Severity::Unreachable => first_in_session("unreachable"),
                    Severity::Fault => true,
                };
                if shown {
                    warn(&crate_name, &f.reason);
                }
                publish = f.publish;
                log.verify = f.sample_mismatch.then(|| "sample mismatch".to_string());
                log.cause = if f.sample_mismatch {
                    "sample mismatch".into()
                } else {
                    f.cause.into()
                };
                log.reason = f.reason;
                log.unreachable = f.unreachable;
            }
        }
    }
    let compile_start = Instant::now();
    let (code, captured) = match run_rustc(&rustc, &args, &unit) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rdht: error: running {}: {e}", rustc.display());
            return 1;
        }
    };
    log.compile_ms = compile_start.elapsed().as_millis() as u64;
    if code == 0 && publish {
        let shared = runtime.block_on(async {
            match submit(&unit, &captured, log.compile_ms).await? {
                Submitted::Queued => Ok(()),
                Submitted::TooLarge => {
                    let root = store(&unit, &captured).await?;
                    publish_record(&unit, root, log.compile_ms).await
                }
            }
        });
        if let Err(e) = shared {
            eprintln!(
                "rdht: warning: {crate_name}: built locally but not shared: {}",
                e.reason
            );
            log.not_shared = Some(session::NOT_HANDED_OVER.to_string());
        }
    }
    log.wall_ms = start.elapsed().as_millis() as u64;
    session::append(&log);
    code
}

/// `--verify`: build locally, compare with every record for the key, act on the result.
fn verify(
    runtime: &tokio::runtime::Runtime,
    rustc: &Path,
    args: &[String],
    unit: &Unit,
    mut log: UnitLog,
    start: Instant,
) -> i32 {
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
        Err(e) => {
            eprintln!("rdht: error: running {}: {e}", rustc.display());
            return 1;
        }
    };
    log.compile_ms = compile_start.elapsed().as_millis() as u64;
    log.reason = "verify".into();
    log.cause = "verify".into();
    if code != 0 {
        log.wall_ms = start.elapsed().as_millis() as u64;
        session::append(&log);
        return code;
    }
    let outcome = runtime.block_on(async {
        let local = store(unit, &captured).await?;
        let liars: Vec<(BlockId, &Vec<BuilderKey>)> =
            claimed.iter().filter(|(r, _)| **r != local).map(|(r, b)| (*r, b)).collect();
        let (outcome, line) = if claimed.is_empty() {
            ("no record", "no record".to_string())
        } else if liars.is_empty() {
            let n: usize = claimed.values().map(Vec::len).sum();
            ("match", format!("match ({n} builder record(s) agree with the local build)"))
        } else if unit.inv.incremental {
            // Incremental builds name codegen units differently on every fresh run.
            ("not reproducible", "not reproducible (incremental build); no builder blamed".to_string())
        } else if !reproducible(rustc, args, unit, &captured)? {
            ("not reproducible", "not reproducible: two local builds differ; no builder blamed".to_string())
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
            ("mismatch", format!("MISMATCH: local build gives {local}; blocklisted {}", blamed.join(", ")))
        };
        eprintln!("rdht: verify {}: {line}", log.crate_name);
        if outcome != "not reproducible" {
            publish_record(unit, local, log.compile_ms).await?;
        }
        Ok::<_, CacheFailure>(outcome)
    });
    log.verify = Some(match outcome {
        Ok(o) => o.to_string(),
        Err(f) => {
            eprintln!("rdht: verify {name}: error: {}", f.reason);
            "error".to_string()
        }
    });
    log.wall_ms = start.elapsed().as_millis() as u64;
    session::append(&log);
    code
}

/// Roots claimed for the unit's key by each builder's records.
async fn records_for(unit: &Unit) -> Result<BTreeMap<BlockId, Vec<BuilderKey>>, CacheFailure> {
    let mut client = connect().await?;
    let views = match tokio::time::timeout(
        RESOLVE_TIMEOUT,
        client.call(Request::Records { key: unit.key }),
    )
    .await
    .map_err(|_| fail("listing records timed out"))??
    {
        Response::Records(v) => v,
        other => return Err(fail(format!("unexpected answer {other:?}"))),
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

async fn block(builder: BuilderKey, reason: String) -> Result<(), CacheFailure> {
    let mut client = connect().await?;
    client.call(Request::TrustBlock { builder, reason }).await?;
    Ok(())
}

/// The unit's arguments with the output directory, and the incremental directory if
/// any, moved under `dir` (a fresh incremental directory, as on a first build).
fn args_into(args: &[String], dir: &Path) -> Vec<String> {
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
fn rebuild_roots(
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
fn reproducible(
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

/// Replaces this process with rustc.
fn exec(rustc: &Path, args: &[String]) -> i32 {
    let err = Command::new(rustc).args(args).exec();
    eprintln!("rdht: error: cannot run {}: {err}", rustc.display());
    1
}

/// What rustc printed, line by line.
#[derive(Debug, Default)]
struct Captured {
    stdout: String,
    stderr: String,
}

/// Runs rustc with path remapping, passing each line on as it comes (cargo starts
/// dependents on the metadata notification), with placeholders turned back into local
/// paths, while keeping a copy as rustc wrote it.
fn run_rustc(rustc: &Path, args: &[String], unit: &Unit) -> std::io::Result<(i32, Captured)> {
    let mut child = Command::new(rustc)
        .args(args)
        .args(unit.roots.remap_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take();
    let roots = unit.roots.clone();
    let out_thread = std::thread::spawn(move || {
        let mut kept = String::new();
        if let Some(s) = stdout {
            let mut r = BufReader::new(s);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(roots.localize(&line).as_bytes());
                let _ = o.flush();
                kept.push_str(&line);
                line.clear();
            }
        }
        kept
    });
    let mut captured = Captured::default();
    if let Some(s) = child.stderr.take() {
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while r.read_line(&mut line)? > 0 {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(unit.roots.localize(&line).as_bytes());
            let _ = e.flush();
            captured.stderr.push_str(&line);
            line.clear();
        }
    }
    let status = child.wait()?;
    captured.stdout = out_thread.join().unwrap_or_default();
    if status.success() {
        // The outputs are final once rustc has exited, but for cargo's check-mode mtime;
        // apply it now, so that what is described to the daemon is what cargo leaves.
        settle(unit, &artifacts(&captured.stderr));
    }
    Ok((status.code().unwrap_or(101), captured))
}

/// Gives a check unit's outputs the modification time cargo will give them once this
/// process has exited ([`super::stamp`]); a failure is one warning and only costs sharing.
fn settle(unit: &Unit, outputs: &[PathBuf]) {
    if let Some(stamp) = &unit.check_stamp
        && let Err(e) = super::stamp::apply(stamp, outputs)
    {
        eprintln!(
            "rdht: warning: {}: cannot set the outputs' time as cargo does: {e}",
            unit.labels.crate_name
        );
    }
}

async fn connect() -> Result<Client, CacheFailure> {
    let dir = data_dir().ok_or_else(|| fail("no data directory (set RDHT_DATA_DIR)"))?;
    Ok(Client::connect(&rdht_api::socket_path(&dir)).await?)
}

struct Hit {
    bytes_fetched: u64,
    compile_ms: u64,
    /// The sampled check's outcome (`sample match`, `sample not reproducible`), when
    /// one ran.
    sample: Option<&'static str>,
}

/// A unique scratch directory next to the outputs (same file system, for renames).
fn scratch(out_dir: &Path, what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    out_dir.join(format!(".rdht-{what}-{}-{nanos}", std::process::id()))
}

async fn try_hit(rustc: &Path, args: &[String], unit: &Unit) -> Result<Hit, CacheFailure> {
    let mut client = connect().await?;
    let resolved = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        client.call(Request::Resolve {
            key: unit.key,
            scope: unit.scope(),
        }),
    )
    .await
    .map_err(|_| fail("resolving timed out"))??;
    let (root, resolve_fetched, build_ms, sampled, builders) = match resolved {
        Response::Resolved(Resolution::Hit {
            root,
            bytes_fetched,
            records,
            verify,
            ..
        }) => {
            let builders: Vec<BuilderKey> = records
                .iter()
                .filter_map(|r| BuildRecord::decode(r).ok())
                .map(|r| r.builder())
                .collect();
            // The builders' own figure for how long this unit took (for "time saved").
            let build_ms = records
                .iter()
                .filter_map(|r| BuildRecord::decode(r).ok())
                .map(|r| r.body().build_ms)
                .max()
                .unwrap_or(0);
            (root, bytes_fetched, build_ms, verify, builders)
        }
        Response::Resolved(Resolution::Miss {
            reason,
            cause,
            unreachable,
        }) => {
            let mut f = fail(reason);
            f.severity = Severity::Miss;
            f.cause = cause.label();
            f.unreachable = unreachable;
            return Err(f);
        }
        other => return Err(fail(format!("unexpected answer {other:?}"))),
    };
    let tmp = scratch(&unit.out_dir, "hit");
    // Incremental units are not bit-reproducible, so a rebuild proves nothing.
    let check = (sampled && !unit.inv.incremental).then_some((rustc, args, builders.as_slice()));
    let result = materialize(unit, &mut client, root, &tmp, check).await;
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|mut hit| {
        hit.bytes_fetched += resolve_fetched;
        hit.compile_ms = build_ms;
        hit
    })
}

/// A sampled hit's check: the rustc command and the builders that claimed the artifact.
type Check<'a> = Option<(&'a Path, &'a [String], &'a [BuilderKey])>;

async fn materialize(
    unit: &Unit,
    client: &mut Client,
    root: BlockId,
    tmp: &Path,
    check: Check<'_>,
) -> Result<Hit, CacheFailure> {
    let dest = tmp
        .to_str()
        .ok_or_else(|| fail("output directory is not UTF-8"))?
        .to_string();
    let mut fetched = 0u64;
    let exported = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        client.call_with_progress(Request::Export { root, dest }, |p| {
            if let rdht_api::Progress::Bytes { done, .. } = p {
                fetched = *done;
            }
        }),
    )
    .await
    .map_err(|_| fail("exporting timed out"))??;
    let Response::Exported { entries, .. } = exported else {
        return Err(fail("unexpected answer to export"));
    };
    let read = |rel: &str| std::fs::read_to_string(tmp.join(rel)).unwrap_or_default();
    let mut outputs: Vec<&ExportedFile> = Vec::new();
    for e in &entries {
        match e.path.strip_prefix("out/") {
            Some(name) if !name.contains('/') => outputs.push(e),
            _ if matches!(e.path.as_str(), "rdht/stderr" | "rdht/stdout") => {}
            _ => {
                return Err(fail(format!(
                    "artifact {root} holds unexpected file {}",
                    e.path
                )));
            }
        }
    }
    // The environment the compile read must be the same here.
    for e in outputs.iter().filter(|e| e.path.ends_with(".d")) {
        for line in read(&e.path).lines() {
            let Some(dep) = line.strip_prefix("# env-dep:") else {
                continue;
            };
            let (name, want) = match dep.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (dep, None),
            };
            let have = std::env::var(name).ok().map(|v| unit.roots.normalize(&v));
            if have != want {
                return Err(fail(format!(
                    "environment variable {name} differs from the cached build"
                )));
            }
        }
    }
    let mut sample = None;
    if let Some((rustc, args, builders)) = check {
        let cached: BTreeMap<String, BlockId> = outputs
            .iter()
            .filter(|e| !e.path.ends_with(".d"))
            .map(|e| (e.path["out/".len()..].to_string(), e.root))
            .collect();
        let local = rebuild_roots(rustc, args, unit)?;
        sample = Some("sample match");
        // Only a reproducible unit can show a builder lied: a second local build must
        // give the same outputs as the first before anyone is blamed.
        if local != cached && rebuild_roots(rustc, args, unit)? != local {
            eprintln!(
                "rdht: warning: {}: sampled check: two local builds differ (not reproducible); no builder blamed, the cached artifact is used",
                unit.labels.crate_name
            );
            sample = Some("sample not reproducible");
        } else if local != cached {
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
            return Err(f);
        }
    }
    let mut placed = Vec::with_capacity(outputs.len());
    for e in &outputs {
        let name = &e.path["out/".len()..];
        let from = tmp.join(&e.path);
        let to = unit.out_dir.join(name);
        if name.ends_with(".d") {
            let text = unit.roots.localize(&read(&e.path));
            std::fs::write(&from, text)
                .map_err(|err| fail(format!("writing {}: {err}", from.display())))?;
        }
        std::fs::rename(&from, &to)
            .map_err(|err| fail(format!("moving {} into place: {err}", to.display())))?;
        placed.push((to, e.root));
    }
    // As after a compile: cargo's check-mode time first, so the sidecars stay valid.
    let paths: Vec<PathBuf> = placed.iter().map(|(p, _)| p.clone()).collect();
    settle(unit, &paths);
    for (to, root) in &placed {
        if to.extension().is_none_or(|x| x != "d") {
            let _ = remember(to, *root);
        }
    }
    let stdout = unit.roots.localize(&read("rdht/stdout"));
    let stderr = unit.roots.localize(&read("rdht/stderr"));
    let _ = std::io::stdout().lock().write_all(stdout.as_bytes());
    let _ = std::io::stderr().lock().write_all(stderr.as_bytes());
    Ok(Hit {
        bytes_fetched: fetched,
        compile_ms: 0,
        sample,
    })
}

/// Output files named by rustc's artifact notifications.
fn artifacts(stderr: &str) -> Vec<PathBuf> {
    stderr
        .lines()
        .filter(|l| l.starts_with("{\"$message_type\":\"artifact\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("artifact")?.as_str().map(PathBuf::from))
        .collect()
}

/// How a submission went.
enum Submitted {
    /// The daemon queued it.
    Queued,
    /// The messages are too large to carry inline; store synchronously instead.
    TooLarge,
}

/// Hands the unit's outputs to the daemon, which stores and publishes them after this
/// process has returned to cargo.
async fn submit(
    unit: &Unit,
    captured: &Captured,
    build_ms: u64,
) -> Result<Submitted, CacheFailure> {
    let outputs = artifacts(&captured.stderr);
    if outputs.is_empty() {
        return Err(fail("rustc reported no output files"));
    }
    let mut files = Vec::with_capacity(outputs.len() + 2);
    let mut inline = 0usize;
    for o in &outputs {
        let name = output_name(unit, o)?;
        let source = if name.ends_with(".d") {
            let text = std::fs::read_to_string(o)
                .map_err(|e| fail(format!("reading {}: {e}", o.display())))?;
            let bytes = unit.roots.normalize(&text).into_bytes();
            inline += bytes.len();
            FileSource::Inline(bytes)
        } else {
            FileSource::from_disk(o).map_err(|e| fail(format!("reading {}: {e}", o.display())))?
        };
        files.push(SubmitFile {
            path: format!("out/{name}"),
            source,
        });
    }
    for (name, text) in [
        ("stderr", unit.roots.normalize(&captured.stderr)),
        ("stdout", unit.roots.normalize(&captured.stdout)),
    ] {
        inline += text.len();
        files.push(SubmitFile {
            path: format!("rdht/{name}"),
            source: FileSource::Inline(text.into_bytes()),
        });
    }
    if inline > MAX_INLINE_BYTES {
        return Ok(Submitted::TooLarge);
    }
    let submit = Request::Submit(Submission {
        key: unit.key,
        files,
        labels: unit.labels.clone(),
        scope: unit.scope(),
        build_ms,
        session: std::env::var(session::SESSION_LOG_ENV).unwrap_or_default(),
    });
    let mut client = connect().await?;
    match tokio::time::timeout(PUBLISH_TIMEOUT, client.call(submit))
        .await
        .map_err(|_| fail("submitting timed out"))??
    {
        Response::Submitted { .. } => Ok(Submitted::Queued),
        other => Err(fail(format!("unexpected answer {other:?}"))),
    }
}

/// The file name of output `o`, which must be directly in the unit's output directory.
fn output_name<'a>(unit: &Unit, o: &'a Path) -> Result<&'a str, CacheFailure> {
    let (Some(parent), Some(name)) = (o.parent(), o.file_name().and_then(|n| n.to_str())) else {
        return Err(fail(format!("odd output path {}", o.display())));
    };
    if parent != unit.out_dir {
        return Err(fail(format!("output {} is outside --out-dir", o.display())));
    }
    Ok(name)
}

/// Stores the unit's outputs and messages (pinned); returns the artifact root.
async fn store(unit: &Unit, captured: &Captured) -> Result<BlockId, CacheFailure> {
    let outputs = artifacts(&captured.stderr);
    if outputs.is_empty() {
        return Err(fail("rustc reported no output files"));
    }
    let stage = scratch(&unit.out_dir, "stage");
    let result = async {
        let mkdir = |p: &Path| {
            std::fs::create_dir_all(p).map_err(|e| fail(format!("creating {}: {e}", p.display())))
        };
        mkdir(&stage.join("out"))?;
        mkdir(&stage.join("rdht"))?;
        let utf8 = |p: &Path| {
            p.to_str()
                .map(str::to_string)
                .ok_or_else(|| fail("path is not UTF-8"))
        };
        let mut files = Vec::new();
        for o in &outputs {
            let name = output_name(unit, o)?;
            let source = if name.ends_with(".d") {
                let text = std::fs::read_to_string(o)
                    .map_err(|e| fail(format!("reading {}: {e}", o.display())))?;
                let staged = stage.join("out").join(name);
                std::fs::write(&staged, unit.roots.normalize(&text))
                    .map_err(|e| fail(format!("writing {}: {e}", staged.display())))?;
                staged
            } else {
                o.clone()
            };
            files.push(PutFile {
                source: utf8(&source)?,
                path: format!("out/{name}"),
            });
        }
        // Only what rustc produced: two honest builders of the same unit must store the
        // same artifact, so nothing machine- or run-specific goes in.
        for (name, text) in [
            ("stderr", unit.roots.normalize(&captured.stderr)),
            ("stdout", unit.roots.normalize(&captured.stdout)),
        ] {
            let p = stage.join("rdht").join(name);
            std::fs::write(&p, text).map_err(|e| fail(format!("writing {}: {e}", p.display())))?;
            files.push(PutFile {
                source: utf8(&p)?,
                path: format!("rdht/{name}"),
            });
        }
        let mut client = connect().await?;
        let put = Request::Put {
            files,
            labels: unit.labels.clone(),
            pin: true,
        };
        let root = match tokio::time::timeout(PUBLISH_TIMEOUT, client.call(put))
            .await
            .map_err(|_| fail("storing timed out"))??
        {
            Response::Put { root, .. } => root,
            other => return Err(fail(format!("unexpected answer {other:?}"))),
        };
        Ok(root)
    }
    .await;
    let _ = std::fs::remove_dir_all(&stage);
    result
}

/// Asks the daemon to sign and announce "this unit's key built into `root`".
async fn publish_record(unit: &Unit, root: BlockId, build_ms: u64) -> Result<(), CacheFailure> {
    let publish = Request::Publish {
        key: unit.key,
        root,
        labels: unit.labels.clone(),
        scope: unit.scope(),
        build_ms,
    };
    let mut client = connect().await?;
    tokio::time::timeout(PUBLISH_TIMEOUT, client.call(publish))
        .await
        .map_err(|_| fail("publishing timed out"))??;
    Ok(())
}
