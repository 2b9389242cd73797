//! One build-script run under the launcher, top to bottom (specs/build-key.md §10): the
//! two-step lookup (`restore.rs`), else the real script (`capture.rs`) and sharing its
//! run, and the run's line in the session log.
//!
//! Invariant: a cache problem never fails the run: every failure path runs the real
//! script, and the exit code is the script's. Owns: the order of the steps and the log
//! line. Does not own: the keys (`inputs.rs`) or what each path does.

use std::path::Path;
use std::time::Instant;

use rdht_api::proto::Scope;

use super::capture::{self, ShareError};
use super::inputs::RunContext;
use super::launcher;
use super::output;
use super::restore;
use crate::shim::inputs::Env;
use crate::shim::session::{self, Kind, UnitLog};
use crate::shim::unit::{DAEMON_DOWN_ENV, VERIFY_ENV};

/// How a run ended; the binary's `main` turns it into the process's exit.
#[derive(Debug)]
pub enum RunEnded {
    /// Served from the cache, or run here: exit with this code.
    Exit(i32),
    /// Not for the cache: the process is to become the script.
    Exec,
    /// The script could not be run.
    CannotRun(std::io::Error),
}

fn warn(what: &str, msg: &str) {
    eprintln!("rdht: warning: {what}: {msg}; running it here");
}

/// Runs build script `real` (the binary behind a launcher) for cargo.
pub fn run(real: &Path, args: &[String]) -> RunEnded {
    let start = Instant::now();
    let env: Env = std::env::vars().collect();
    let is = |k: &str| env.get(k).is_some_and(|v| v == "1");
    if is("RDHT_DISABLE") || is(VERIFY_ENV) {
        return RunEnded::Exec;
    }
    let package = env.get("CARGO_PKG_NAME").cloned().unwrap_or_default();
    let what = format!("build script of {package}");
    let mut log = UnitLog::new(&what, Kind::Miss);
    log.run = true;
    if is(DAEMON_DOWN_ENV) {
        log.reason = "daemon not running".into();
        log.cause = "daemon unreachable".into();
        session::append(&log);
        return RunEnded::Exec;
    }
    let prepared = launcher::read_meta(real)
        .and_then(|meta| RunContext::new(&meta, &env).map(|ctx| (meta, ctx)));
    let (meta, ctx) = match prepared {
        Ok(p) => p,
        Err(e) => {
            warn(&what, &format!("cannot compute the run's key: {e}"));
            log.kind = Kind::Uncacheable;
            log.reason = "key error".into();
            session::append(&log);
            return RunEnded::Exec;
        }
    };
    log.key_ms = start.elapsed().as_millis() as u64;
    log.extra_keys = vec![ctx.declaration_key.to_string()];
    let scope = if meta.public {
        Scope::Everywhere
    } else {
        Scope::Private
    };
    let runtime = match crate::shim::cache::runtime() {
        Ok(r) => r,
        Err(e) => {
            warn(&what, &format!("cannot start the async runtime: {e}"));
            return RunEnded::Exec;
        }
    };
    let publish = match runtime.block_on(restore::try_restore(&ctx, &env, scope)) {
        Ok(hit) => {
            log.kind = Kind::Hit;
            log.key = hit.run_key.to_string();
            log.bytes_fetched = hit.bytes_fetched;
            log.compile_ms = hit.build_ms;
            log.wall_ms = start.elapsed().as_millis() as u64;
            session::append(&log);
            return RunEnded::Exit(0);
        }
        Err(f) => {
            if f.shown() {
                warn(&what, &f.reason);
            }
            log.reason = f.reason;
            log.cause = f.cause;
            log.unreachable = f.unreachable;
            f.publish
        }
    };
    let run_start = Instant::now();
    let (code, captured) = match capture::run_script(real, args) {
        Ok(r) => r,
        Err(e) => return RunEnded::CannotRun(e),
    };
    log.compile_ms = run_start.elapsed().as_millis() as u64;
    if code == 0 {
        let declared = output::parse(&captured.stdout);
        if let Some(reason) = capture::never_cached(&ctx, &declared) {
            log.kind = Kind::Uncacheable;
            log.reason = reason;
            log.cause.clear();
        } else if publish {
            let declaration = ctx.declaration(&declared);
            match ctx.run_inputs(&declaration, &env) {
                Ok(inputs) => {
                    let run_key = inputs.derive();
                    log.key = run_key.to_string();
                    let shared = runtime.block_on(capture::share(
                        &ctx,
                        &declaration,
                        run_key,
                        &captured,
                        scope,
                        &meta.rustc,
                        log.compile_ms,
                    ));
                    match shared {
                        Ok(_) => {}
                        Err(ShareError::Local(reason)) => {
                            eprintln!("rdht: warning: {what}: run here, not shared: {reason}");
                            log.not_shared = Some("names local paths".into());
                        }
                        Err(ShareError::Cache(f)) => {
                            eprintln!(
                                "rdht: warning: {what}: run here but not shared: {}",
                                f.reason
                            );
                            log.not_shared = Some(session::NOT_HANDED_OVER.to_string());
                        }
                    }
                }
                Err(e) => {
                    eprintln!("rdht: warning: {what}: run here, not shared: {e}");
                    log.not_shared = Some("declared input unreadable".into());
                }
            }
        }
    }
    log.wall_ms = start.elapsed().as_millis() as u64;
    session::append(&log);
    RunEnded::Exit(code)
}
