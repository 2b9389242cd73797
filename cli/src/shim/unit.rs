//! One rustc invocation under the wrapper: passthrough, hit or miss
//! (ARCHITECTURE.md "Data flow").
//!
//! - Hit: resolve the key through the daemon, export the artifact next to the output
//!   directory, check the environment the unit read (`# env-dep` lines), move outputs
//!   into place with local paths in dep-info, replay rustc's messages with local paths.
//! - Miss: run rustc with path remapping, passing its output through as it comes, then
//!   store the outputs and publish a signed record.
//!
//! Invariant: any cache failure becomes a local build and at most one warning line; the
//! exit code is rustc's. Owns: the two paths. Does not own: the key (`inputs.rs`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdht_api::proto::{ExportedFile, PutFile, Resolution, Scope};
use rdht_api::{Client, ClientError, Request, Response};
use rdht_core::BlockId;

use super::filehash::remember;
use super::inputs::{Env, Plan, Unit, plan};
use super::session::{self, Kind, UnitLog};

/// How long resolving (which may fetch over the swarm) may take before building locally.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long storing and publishing a miss may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);
/// Set by `cargo dht-build` when it found no daemon: skip the cache quietly.
pub const DAEMON_DOWN_ENV: &str = "RDHT_DAEMON_DOWN";

/// The daemon's data directory for this process.
pub fn data_dir() -> Option<PathBuf> {
    std::env::var_os("RDHT_DATA_DIR")
        .map(PathBuf::from)
        .or_else(rdht_api::default_data_dir)
}

fn warn(crate_name: &str, msg: &str) {
    eprintln!("rdht: warning: {crate_name}: {msg}; building locally");
}

/// A failed cache step: why, and whether to try publishing after the local build.
struct CacheFailure {
    reason: String,
    publish: bool,
}

impl From<ClientError> for CacheFailure {
    fn from(e: ClientError) -> Self {
        let publish = !matches!(
            e,
            ClientError::NotRunning { .. } | ClientError::Connect { .. }
        );
        CacheFailure {
            reason: e.to_string(),
            publish,
        }
    }
}

fn fail(reason: impl Into<String>) -> CacheFailure {
    CacheFailure {
        reason: reason.into(),
        publish: true,
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
    let planned = match plan(&rustc, &args, &env, &cwd) {
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
    let mut publish = !daemon_down;
    let mut reason = "daemon not running".to_string();
    if !daemon_down {
        match runtime.block_on(try_hit(&unit)) {
            Ok(hit) => {
                session::append(&UnitLog {
                    crate_name,
                    kind: Kind::Hit,
                    reason: String::new(),
                    bytes_fetched: hit.bytes_fetched,
                    compile_ms: hit.compile_ms,
                    wall_ms: start.elapsed().as_millis() as u64,
                });
                return 0;
            }
            Err(f) => {
                if !f.reason.starts_with("no ") && !f.reason.contains("trusted") {
                    warn(&crate_name, &f.reason);
                }
                publish = f.publish;
                reason = f.reason;
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
    let compile_ms = compile_start.elapsed().as_millis() as u64;
    if code == 0
        && publish
        && let Err(e) = runtime.block_on(store_and_publish(&unit, &captured, compile_ms))
    {
        eprintln!(
            "rdht: warning: {crate_name}: built locally but not shared: {}",
            e.reason
        );
    }
    session::append(&UnitLog {
        crate_name,
        kind: Kind::Miss,
        reason,
        bytes_fetched: 0,
        compile_ms,
        wall_ms: start.elapsed().as_millis() as u64,
    });
    code
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
/// dependents on the metadata notification) while keeping a copy.
fn run_rustc(rustc: &Path, args: &[String], unit: &Unit) -> std::io::Result<(i32, Captured)> {
    let mut child = Command::new(rustc)
        .args(args)
        .args(unit.roots.remap_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take();
    let out_thread = std::thread::spawn(move || {
        let mut kept = String::new();
        if let Some(s) = stdout {
            let mut r = BufReader::new(s);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(line.as_bytes());
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
            let _ = e.write_all(line.as_bytes());
            let _ = e.flush();
            captured.stderr.push_str(&line);
            line.clear();
        }
    }
    let status = child.wait()?;
    captured.stdout = out_thread.join().unwrap_or_default();
    Ok((status.code().unwrap_or(101), captured))
}

async fn connect() -> Result<Client, CacheFailure> {
    let dir = data_dir().ok_or_else(|| fail("no data directory (set RDHT_DATA_DIR)"))?;
    Ok(Client::connect(&rdht_api::socket_path(&dir)).await?)
}

struct Hit {
    bytes_fetched: u64,
    compile_ms: u64,
}

/// A unique scratch directory next to the outputs (same file system, for renames).
fn scratch(out_dir: &Path, what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    out_dir.join(format!(".rdht-{what}-{}-{nanos}", std::process::id()))
}

async fn try_hit(unit: &Unit) -> Result<Hit, CacheFailure> {
    let mut client = connect().await?;
    let resolved = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        client.call(Request::Resolve { key: unit.key }),
    )
    .await
    .map_err(|_| fail("resolving timed out"))??;
    let (root, resolve_fetched, build_ms) = match resolved {
        Response::Resolved(Resolution::Hit {
            root,
            bytes_fetched,
            records,
            ..
        }) => {
            // The builders' own figure for how long this unit took (for "time saved").
            let build_ms = records
                .iter()
                .filter_map(|r| rdht_core::BuildRecord::decode(r).ok())
                .map(|r| r.body().build_ms)
                .max()
                .unwrap_or(0);
            (root, bytes_fetched, build_ms)
        }
        Response::Resolved(Resolution::Miss { reason }) => return Err(fail(reason)),
        other => return Err(fail(format!("unexpected answer {other:?}"))),
    };
    let tmp = scratch(&unit.out_dir, "hit");
    let result = materialize(unit, &mut client, root, &tmp).await;
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|mut hit| {
        hit.bytes_fetched += resolve_fetched;
        hit.compile_ms = build_ms;
        hit
    })
}

async fn materialize(
    unit: &Unit,
    client: &mut Client,
    root: BlockId,
    tmp: &Path,
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
        if !name.ends_with(".d") {
            let _ = remember(&to, e.root);
        }
    }
    let stdout = unit.roots.localize(&read("rdht/stdout"));
    let stderr = unit.roots.localize(&read("rdht/stderr"));
    let _ = std::io::stdout().lock().write_all(stdout.as_bytes());
    let _ = std::io::stderr().lock().write_all(stderr.as_bytes());
    Ok(Hit {
        bytes_fetched: fetched,
        compile_ms: 0,
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

async fn store_and_publish(
    unit: &Unit,
    captured: &Captured,
    compile_ms: u64,
) -> Result<(), CacheFailure> {
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
            let (Some(parent), Some(name)) = (o.parent(), o.file_name().and_then(|n| n.to_str()))
            else {
                return Err(fail(format!("odd output path {}", o.display())));
            };
            if parent != unit.out_dir {
                return Err(fail(format!("output {} is outside --out-dir", o.display())));
            }
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
        let scope = if unit.public {
            Scope::Everywhere
        } else {
            Scope::Private
        };
        let publish = Request::Publish {
            key: unit.key,
            root,
            labels: unit.labels.clone(),
            scope,
            build_ms: compile_ms,
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, client.call(publish))
            .await
            .map_err(|_| fail("publishing timed out"))??;
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&stage);
    result
}
