//! `cargo dht-build`: `cargo build` with the rdht cache, and the `RUSTC_WRAPPER` that
//! does the work for each rustc call.
//!
//! - As a cargo subcommand (`cargo dht-build [CARGO BUILD ARGS]`): runs `cargo build`
//!   with this program as `RUSTC_WRAPPER`, then prints one `rdht:` summary line on
//!   stderr (and JSON on stdout with `--json`). Exits with cargo's exit code. While
//!   cargo starts it asks the daemon to prefetch this build's plan; at the end it waits
//!   for the daemon to share the run's misses and publishes the run's plan
//!   (specs/build-key.md §8).
//! - As a wrapper (`cargo-dht-build /path/to/rustc ARGS`, what cargo runs when
//!   `RUSTC_WRAPPER` points here): see `rdht_cli::shim::unit`. Exits 0 on a hit,
//!   with rustc's exit code when rustc ran, as rustc itself (exec) when the unit is
//!   not for the cache, and 1 when rustc cannot be run.
//! - As a build script's launcher (`cargo-dht-build --rdht-build-script SCRIPT ARGS`,
//!   what the launcher the shim puts at a build script's path runs): see
//!   `rdht_cli::shim::script`. Exits with the script's code (0 on a hit), or as the
//!   script itself (exec) when the run is not for the cache.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use rdht_cli::shim::script::launcher::RUN_ARG;
use rdht_cli::shim::script::run::RunEnded;
use rdht_cli::shim::session::{self, SESSION_LOG_ENV};
use rdht_cli::shim::unit::{self, DAEMON_DOWN_ENV, Ended, VERIFY_ENV};
use rdht_cli::shim::{cflags, inputs, plan, script};

const HELP: &str = "\
cargo dht-build: build with the rdht peer-to-peer cache of Rust build artifacts

Usage: cargo dht-build [--json] [--verify] [CARGO BUILD OPTIONS]

Runs `cargo build` with every option given (--release, -p, --features, --target,
--workspace, ...) and this program as RUSTC_WRAPPER. Each crate is looked up by a
build key that does not depend on paths; hits are fetched from the local rdht-node
daemon or its swarm and verified, misses are compiled and shared. A cache problem
never fails the build: it falls back to rustc with one warning line.

Options:
  --json        also print the summary as JSON on stdout
  --verify      build every unit locally (in a scratch target dir unless --target-dir
                is given) and compare it with what other builders published: prints
                match / MISMATCH / no record per unit, publishes this node's records for
                matches, blocklists builders whose root differs from a reproducible local
                build, and exits non-zero on any mismatch
  -h, --help    print this help

Environment:
  RDHT_DATA_DIR  the daemon's data directory (default: ~/.local/share/rdht)
  RDHT_DISABLE=1 compile everything locally, without the cache

The same program works as RUSTC_WRAPPER for plain `cargo build`, `cargo test`, or
in .cargo/config.toml:  [build] rustc-wrapper = \"cargo-dht-build\"
";

fn is_rustc(arg: &str) -> bool {
    let name = Path::new(arg)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    name.starts_with("rustc") || name.ends_with("-driver")
}

fn subcommand(args: Vec<String>) -> ExitCode {
    let mut json = false;
    let mut verify = false;
    let mut cargo_args = Vec::new();
    for a in args {
        match a.as_str() {
            "--json" => json = true,
            "--verify" => verify = true,
            "-h" | "--help" => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            _ => cargo_args.push(a),
        }
    }
    let me = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rdht: error: cannot find this program's path: {e}");
            return ExitCode::FAILURE;
        }
    };
    let session_dir = match tempfile::Builder::new().prefix("rdht-session-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("rdht: error: cannot create a session directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log = session_dir.path().join("units.jsonl");
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .args(&cargo_args)
        .env("RUSTC_WRAPPER", &me)
        .env(SESSION_LOG_ENV, &log);
    // Cargo sets these itself for the units that get them; inherited, they would reach
    // the others too, and change their keys.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(inputs::set_by_cargo) {
            cmd.env_remove(&name);
        }
    }
    // C objects name placeholders, not this machine's paths (specs/build-key.md §9).
    let env = |k: &str| std::env::var(k).ok();
    let cwd = std::env::current_dir().unwrap_or_default();
    // Runs of registry packages' build scripts normalise this build's workspace too.
    if let Some(ws) = cflags::workspace(&cargo_args, &cwd) {
        cmd.env(script::inputs::BUILD_WORKSPACE_ENV, ws);
    }
    if cflags::compiler_supports_prefix_map(&env) {
        let roots = cflags::build_roots(&cargo_args, &cwd, &env);
        let vars: Vec<(String, String)> = std::env::vars().collect();
        cmd.envs(cflags::prefix_map_env(&roots, &vars));
    }
    if verify {
        cmd.env(VERIFY_ENV, "1");
        if !cargo_args
            .iter()
            .any(|a| a == "--target-dir" || a.starts_with("--target-dir="))
        {
            // Every unit must be compiled: a fresh target dir leaves nothing up to date.
            cmd.env("CARGO_TARGET_DIR", session_dir.path().join("target"));
        }
    }
    let daemon_up = unit::data_dir().is_some_and(|d| {
        std::os::unix::net::UnixStream::connect(rdht_api::socket_path(&d)).is_ok()
    });
    if !daemon_up && std::env::var("RDHT_DISABLE").as_deref() != Ok("1") {
        let dir = unit::data_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        eprintln!(
            "rdht: warning: no rdht daemon is running for {dir}; building without the cache (start it with: rdht-node --data-dir {dir})"
        );
        cmd.env(DAEMON_DOWN_ENV, "1");
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rdht: error: cannot run cargo: {e}");
            return ExitCode::FAILURE;
        }
    };
    // While cargo starts: the daemon fetches every unit a previous run of this build
    // used, before cargo asks for them one by one. A first build has no Cargo.lock
    // until cargo has resolved the dependencies, so wait for it (briefly).
    if daemon_up && !verify {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let key = loop {
            if let Some(k) = plan::plan_key(&cargo_args) {
                break Some(k);
            }
            if !matches!(child.try_wait(), Ok(None)) || std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        if let Some(key) = key {
            let _ = with_daemon(|mut c| async move { plan::prefetch(&mut c, key).await });
        }
    }
    let status = match child.wait() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rdht: error: waiting for cargo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let waited = std::time::Instant::now();
    let daemon_failures = if daemon_up {
        wait_for_sharing(&log)
    } else {
        Default::default()
    };
    // The plan key again: Cargo.lock is final now.
    let plan = (daemon_up && !verify && status.success())
        .then(|| plan::plan_key(&cargo_args))
        .flatten();
    if let Some(key) = plan {
        let keys = session::plan_keys(&log);
        let scratch = session_dir.path().to_path_buf();
        if !keys.is_empty()
            && let Err(e) =
                with_daemon(
                    |mut c| async move { plan::publish(&mut c, key, &keys, &scratch).await },
                )
        {
            eprintln!("rdht: warning: publishing this build's plan: {e}");
        }
    }
    let mut summary = session::summarize(&log);
    summary.add_not_shared(&daemon_failures);
    summary.share_wait_ms = waited.elapsed().as_millis() as u64;
    // The summary line comes last: scripts read it there.
    if let Some(line) = summary.verify_line() {
        eprintln!("{line}");
    }
    eprintln!("{}", summary.line());
    if json {
        match serde_json::to_string(&summary) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("rdht: error: {e}"),
        }
    }
    // Cargo's own exit code, as plain cargo build would give; a verified mismatch fails
    // an otherwise successful run.
    let mut code = status.code().unwrap_or(101);
    if code == 0 && verify && summary.mismatches() > 0 {
        eprintln!(
            "rdht: verify found {} unit(s) whose published artifact differs from a reproducible local build",
            summary.mismatches()
        );
        code = 1;
    }
    rustc_exit(code)
}

/// A child's exit code as ours; one that does not fit a byte (or a signal, given as
/// 101 by the caller) is 101, rustc's own code for an internal failure.
fn rustc_exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(101))
}

/// How long to wait for cargo to write Cargo.lock before giving up on prefetching.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long to wait at the end for the daemon to finish storing and publishing.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Runs `f` with a client of this process's daemon on a fresh single-threaded runtime.
fn with_daemon<T, F, Fut>(f: F) -> Result<T, String>
where
    F: FnOnce(rdht_api::Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let dir = unit::data_dir().ok_or("no data directory (set RDHT_DATA_DIR)")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = rdht_api::Client::connect(&rdht_api::socket_path(&dir))
            .await
            .map_err(|e| e.to_string())?;
        f(client).await
    })
}

/// Waits until the daemon has stored and published every miss of this run (it does so
/// in the background while the build goes on), so that the next build, here or on a
/// peer, finds them; returns the jobs that failed, by reason. Failures are warnings: the
/// build itself succeeded.
fn wait_for_sharing(log: &Path) -> BTreeMap<String, u64> {
    let session = log.to_string_lossy().into_owned();
    let drained = with_daemon(|mut client| async move {
        tokio::time::timeout(
            DRAIN_TIMEOUT,
            client.call(rdht_api::Request::Drain {
                session: Some(session),
            }),
        )
        .await
        .map_err(|_| format!("still not done after {DRAIN_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())
    });
    match drained {
        Ok(rdht_api::Response::Drained(report)) => {
            for f in &report.failed {
                eprintln!(
                    "rdht: warning: built locally but not shared: {}: {}",
                    f.crate_name, f.detail
                );
            }
            return report.failed_by_reason;
        }
        Ok(other) => eprintln!("rdht: warning: unexpected answer from the daemon: {other:?}"),
        Err(e) => eprintln!("rdht: warning: waiting for the daemon to share this build: {e}"),
    }
    BTreeMap::new()
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("dht-build") => {
            args.remove(0);
            subcommand(args)
        }
        Some(RUN_ARG) if args.len() >= 2 => {
            let script = PathBuf::from(&args[1]);
            match script::run::run(&script, &args[2..]) {
                RunEnded::Exit(code) => rustc_exit(code),
                RunEnded::Exec => {
                    // Returns only if the script could not be started.
                    let err = Command::new(&script).args(&args[2..]).exec();
                    eprintln!("rdht: error: cannot run {}: {err}", script.display());
                    ExitCode::FAILURE
                }
                RunEnded::CannotRun(e) => {
                    eprintln!("rdht: error: running {}: {e}", script.display());
                    ExitCode::FAILURE
                }
            }
        }
        Some(first) if is_rustc(first) => {
            let rustc = PathBuf::from(args.remove(0));
            match unit::run(&rustc, &args) {
                Ended::Hit => ExitCode::SUCCESS,
                Ended::Built(code) => rustc_exit(code),
                Ended::Passthrough => {
                    // Returns only if rustc could not be started.
                    let err = Command::new(&rustc).args(&args).exec();
                    eprintln!("rdht: error: cannot run {}: {err}", rustc.display());
                    ExitCode::FAILURE
                }
                Ended::CannotRun(e) => {
                    eprintln!("rdht: error: running {}: {e}", rustc.display());
                    ExitCode::FAILURE
                }
            }
        }
        _ => subcommand(args),
    }
}
