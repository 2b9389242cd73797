//! `rdht-testnet`: start a swarm of real `rdht-node` daemons on this machine, leave it
//! running, and stop, kill, restart, partition or heal its nodes from later commands.
//!
//! Owns: argument parsing, output (data to stdout, `--json` for scripts), exit codes.
//! Does not own: any of the work, which is [`rdht_testnet::Testnet`]'s.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rdht_testnet::{State, Testnet};

/// Run a private swarm of rdht-node daemons on this machine for trying rdht out and for
/// fault tests. `up` starts the daemons and returns while they keep running; the other
/// commands act on the testnet recorded in the state directory.
///
/// Example: `rdht-testnet up 3`, then `rdht --data-dir <a printed dir> status`,
/// `rdht-testnet kill 2`, `rdht-testnet restart 2`, `rdht-testnet down`.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// State directory: data dirs, logs (`n<I>.log`), swarm key, bootstrap file and
    /// state.json of the running testnet.
    #[arg(
        long,
        env = "RDHT_TESTNET_DIR",
        default_value = "/tmp/rdht-testnet",
        global = true
    )]
    dir: PathBuf,
    /// Print data as JSON on stdout, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start N daemons in a new private swarm (generated key, shared bootstrap file) and
    /// print their data directories, one per line. They keep running after this
    /// command returns; stop them with `down`.
    Up {
        /// How many daemons.
        n: usize,
        /// Run each daemon in its own network namespace (10.213.0.I on a private
        /// bridge) instead of on 127.0.0.1. Needs root and `ip` (iproute2); makes
        /// `partition` and `heal` available.
        #[arg(long)]
        netns: bool,
    },
    /// Stop every daemon (SIGTERM) and delete the namespaces. Data dirs and logs stay.
    Down,
    /// List the nodes: index, running or not, PID, listen address, data directory.
    Status,
    /// Kill node I with SIGKILL (no clean shutdown), for fault tests.
    Kill {
        /// Node index, from 1.
        i: usize,
    },
    /// Start node I again (after `kill`) with the same data dir, address and identity.
    Restart {
        /// Node index, from 1.
        i: usize,
    },
    /// Cut node I's network link: packets to and from it are dropped (netns only).
    Partition {
        /// Node index, from 1.
        i: usize,
    },
    /// Restore node I's link after `partition` (netns only).
    Heal {
        /// Node index, from 1.
        i: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rdht-testnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = &cli.dir;
    match cli.command {
        Cmd::Up { n, netns } => {
            if netns && let Some(why) = rdht_testnet::netns::unavailable() {
                anyhow::bail!("--netns is not available: {why}");
            }
            let net = Testnet::up(dir, n, netns)
                .with_context(|| format!("starting {n} nodes in {}", dir.display()))?;
            let state = net.detach();
            print_state(&state, cli.json, false, |_| true)?;
        }
        Cmd::Down => {
            let net = Testnet::load(dir)?;
            let n = net.nodes().len();
            net.down().context("stopping the testnet")?;
            if !cli.json {
                eprintln!(
                    "rdht-testnet: stopped {n} nodes; logs and data stay in {}",
                    dir.display()
                );
            }
        }
        Cmd::Status => {
            let net = Testnet::load(dir)?;
            let running: Vec<bool> = net
                .nodes()
                .iter()
                .map(|s| net.is_running(s.index))
                .collect();
            print_state(net.state(), cli.json, true, |i| running[i - 1])?;
        }
        Cmd::Kill { i } => Testnet::load(dir)?
            .kill(i)
            .with_context(|| format!("killing node {i}"))?,
        Cmd::Restart { i } => Testnet::load(dir)?
            .restart(i)
            .with_context(|| format!("restarting node {i}"))?,
        Cmd::Partition { i } => Testnet::load(dir)?
            .partition(i)
            .with_context(|| format!("partitioning node {i}"))?,
        Cmd::Heal { i } => Testnet::load(dir)?
            .heal(i)
            .with_context(|| format!("healing node {i}"))?,
    }
    Ok(())
}

/// `--json`: the state with a `running` field per node. Otherwise, with `table`, one
/// line per node (index, state, PID, address, data dir); without, only the data dirs.
fn print_state(
    state: &State,
    json: bool,
    table: bool,
    running: impl Fn(usize) -> bool,
) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(state)?;
        if let Some(nodes) = v["nodes"].as_array_mut() {
            for (k, node) in nodes.iter_mut().enumerate() {
                node["running"] = serde_json::Value::Bool(running(k + 1));
            }
        }
        println!("{v}");
        return Ok(());
    }
    for s in &state.nodes {
        if table {
            let pid = s.pid.map_or("-".to_string(), |p| p.to_string());
            let up = if running(s.index) {
                "running"
            } else {
                "stopped"
            };
            let ns = s.netns.as_deref().unwrap_or("-");
            println!(
                "{} {up} pid={pid} netns={ns} {} {}",
                s.index,
                s.bootstrap_line,
                s.data_dir.display()
            );
        } else {
            println!("{}", s.data_dir.display());
        }
    }
    Ok(())
}
