//! `rdht-node`: starts the daemon in the foreground. Parses flags (which override
//! `RDHT_*` environment variables, which override the config file), sets up logging
//! (`RUST_LOG`), and stops cleanly on SIGINT or SIGTERM. Exit codes: 0 after a clean
//! stop, 1 on failure, 2 on a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rdht_node::config::{self, Overrides};

/// The rdht daemon: a local cache of Rust build artifacts that shares them with a swarm
/// of peers. With no swarm configured it is a local cache only.
#[derive(Debug, Parser)]
#[command(name = "rdht-node", version)]
struct Args {
    /// Data directory: store, identity, config, API socket [default: the platform data
    /// dir, e.g. ~/.local/share/rdht].
    #[arg(long, env = "RDHT_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Config file [default: DIR/config.toml, written with comments on first run].
    #[arg(long, env = "RDHT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to accept peers on (libp2p multiaddr); repeatable.
    #[arg(
        long,
        env = "RDHT_LISTEN",
        value_delimiter = ',',
        value_name = "MULTIADDR"
    )]
    listen: Vec<String>,
    /// Bootstrap list of the private swarm: one multiaddr ending in /p2p/<peer id> per
    /// line, `#` comments.
    #[arg(long, env = "RDHT_BOOTSTRAP", value_name = "FILE")]
    bootstrap: Option<PathBuf>,
    /// Pre-shared key of the private swarm (IPFS swarm.key format; `rdht swarm keygen`).
    #[arg(long, env = "RDHT_SWARM_KEY", value_name = "FILE")]
    swarm_key: Option<PathBuf>,
    /// Run as an anchor: an always-on helper of its swarms (a server with a public
    /// address): DHT server from the start, AutoNAT server and relay (for hole
    /// punching) for the other nodes.
    #[arg(long, env = "RDHT_ANCHOR")]
    anchor: bool,
    /// Store size cap in bytes, counted uncompressed (0: no cap; the store is usually
    /// about half that on disk).
    #[arg(long, env = "RDHT_STORE_MAX_BYTES", value_name = "N")]
    store_max_bytes: Option<u64>,
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = config::data_dir(args.data_dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let overrides = Overrides {
        listen: args.listen,
        bootstrap: args.bootstrap,
        swarm_key: args.swarm_key,
        store_max_bytes: args.store_max_bytes,
        anchor: args.anchor,
    };
    let (config, created) = config::load(&dir, args.config, overrides)?;
    if created {
        tracing::info!(path = %config.config_file.display(), "wrote a default config file");
    }
    rdht_node::daemon::run(config, stop_signal()).await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal; log files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (the log's disk is full) is dropped: by
        // default tracing-subscriber reports it with `eprintln!`, which panics when
        // stderr fails too, and that panic killed whichever task logged (issue 19).
        .log_internal_errors(false)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rdht-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rdht-node: {}", rdht_api::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
