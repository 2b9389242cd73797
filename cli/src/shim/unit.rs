//! One rustc invocation under the wrapper: what runs, in order (ARCHITECTURE.md "Data
//! flow"). A passthrough or uncacheable invocation is rustc itself; a cacheable unit is
//! tried as a hit (`hit.rs`), else built as a miss (`miss.rs`); `--verify` builds and
//! compares (`verify.rs`). Each outcome is one line of the session log.
//!
//! Invariant: any cache failure becomes a local build and at most one warning line; the
//! exit code is rustc's. Owns: the order of the steps, the session-log line and the
//! warnings. Does not own: the key (`inputs.rs`), the daemon calls (`cache.rs`) or what
//! each path does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::inputs::{Env, Plan, plan};
use super::session::{self, Kind, UnitLog};
use super::{hit, miss, verify};

/// How long resolving (which may fetch over the swarm) may take before building locally.
pub(super) const RESOLVE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long storing and publishing a miss may take.
pub(super) const PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);
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

pub(super) fn warn(crate_name: &str, msg: &str) {
    eprintln!("rdht: warning: {crate_name}: {msg}; building locally");
}

/// Whether this is the first time in this `cargo dht-build` run that a warning of
/// `class` is due (always true outside a session): a daemon that went away is reported
/// once, not once per remaining unit.
pub(super) fn first_in_session(class: &str) -> bool {
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

/// How a wrapped unit ended; the binary's `main` turns it into the process's exit.
#[derive(Debug)]
pub enum Ended {
    /// Served from the cache: rustc's outputs and messages are in place.
    Hit,
    /// rustc ran here and exited with this code.
    Built(i32),
    /// Not for the cache (or the cache cannot be used at all): the process is to
    /// become rustc.
    Passthrough,
    /// rustc could not be run.
    CannotRun(std::io::Error),
}

/// Runs the wrapper for `rustc args`.
pub fn run(rustc: &Path, args: &[String]) -> Ended {
    let start = Instant::now();
    let env: Env = std::env::vars().collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let crate_name = args
        .iter()
        .position(|a| a == "--crate-name")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "unit".into());
    let planned = plan(rustc, args, &env, &cwd);
    let key_ms = start.elapsed().as_millis() as u64;
    let planned = match planned {
        Ok(p) => p,
        Err(e) => {
            warn(&crate_name, &format!("cannot compute the build key: {e}"));
            Plan::Uncacheable(format!("key error: {}", e.kind()))
        }
    };
    let unit = match planned {
        Plan::Passthrough => return Ended::Passthrough,
        Plan::Uncacheable(reason) => {
            let mut log = UnitLog::new(&crate_name, Kind::Uncacheable);
            log.reason = reason;
            log.key_ms = key_ms;
            session::append(&log);
            return Ended::Passthrough;
        }
        Plan::Cacheable(u) => u,
    };
    let runtime = match super::cache::runtime() {
        Ok(r) => r,
        Err(e) => {
            warn(&crate_name, &format!("cannot start the async runtime: {e}"));
            return Ended::Passthrough;
        }
    };
    let daemon_down = env.get(DAEMON_DOWN_ENV).is_some_and(|v| v == "1");
    let mut log = UnitLog::new(&crate_name, Kind::Miss);
    log.reason = "daemon not running".into();
    log.key_ms = key_ms;
    log.key = unit.key.to_string();
    log.cause = "daemon unreachable".into();
    if env.get(VERIFY_ENV).is_some_and(|v| v == "1") && !daemon_down {
        return verify::verify(&runtime, rustc, args, &unit, log, start);
    }
    let mut publish = !daemon_down;
    if !daemon_down {
        match runtime.block_on(hit::try_hit(rustc, args, &unit)) {
            Ok(hit) => {
                log.kind = Kind::Hit;
                log.reason.clear();
                log.cause.clear();
                log.bytes_fetched = hit.bytes_fetched;
                log.compile_ms = hit.compile_ms;
                log.verify = hit.sample.map(str::to_string);
                launch_runs(&unit);
                log.wall_ms = start.elapsed().as_millis() as u64;
                session::append(&log);
                return Ended::Hit;
            }
            Err(f) => {
                if f.shown() {
                    warn(&crate_name, &f.reason);
                }
                publish = f.publish;
                log.verify = f.sample_mismatch.then(|| "sample mismatch".to_string());
                log.cause = if f.sample_mismatch {
                    "sample mismatch".into()
                } else {
                    f.cause
                };
                log.reason = f.reason;
                log.unreachable = f.unreachable;
            }
        }
    }
    let compile_start = Instant::now();
    let (code, captured) = match miss::run_rustc(rustc, args, &unit) {
        Ok(r) => r,
        Err(e) => return Ended::CannotRun(e),
    };
    log.compile_ms = compile_start.elapsed().as_millis() as u64;
    if code == 0 {
        miss::remember_origins(&unit, &miss::artifacts(&captured.stderr));
    }
    // A unit that read a generated file naming this machine's paths is path-dependent:
    // built here, never shared.
    if code == 0
        && let Some(named) = miss::reads_local_named(&unit, &captured)
    {
        warn(
            &crate_name,
            &format!(
                "built locally, not shared: it read {named}, which names this machine's paths"
            ),
        );
        log.not_shared = Some("reads a generated file naming local paths".into());
        publish = false;
    }
    if code == 0 && publish {
        let shared = runtime.block_on(async {
            match miss::submit(&unit, &captured, log.compile_ms).await? {
                miss::Submitted::Queued => Ok(()),
                miss::Submitted::TooLarge => {
                    let root = miss::store(&unit, &captured).await?;
                    let needs = miss::needs(&unit, &miss::artifacts(&captured.stderr));
                    miss::publish_record(&unit, root, log.compile_ms, needs).await
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
    // After the submission: the daemon holds the binary open, and renaming it keeps
    // its identity.
    if code == 0 && !daemon_down {
        launch_runs(&unit);
    }
    log.wall_ms = start.elapsed().as_millis() as u64;
    session::append(&log);
    Ended::Built(code)
}

/// For a build script's compile: puts the launcher in place, so that cargo's run of
/// the script goes through the cache (`script::launcher`). A failure is one warning:
/// cargo then runs the script directly.
fn launch_runs(unit: &super::inputs::Unit) {
    if !unit.is_build_script() {
        return;
    }
    let installed = std::env::current_exe()
        .map_err(|e| format!("cannot find this program's path: {e}"))
        .and_then(|shim| super::script::launcher::install(unit, &shim));
    if let Err(e) = installed {
        eprintln!(
            "rdht: warning: {}: its run will not be cached: {e}",
            unit.describe()
        );
    }
}
