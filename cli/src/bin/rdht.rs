//! `rdht`: the admin CLI. Parses arguments, sends requests to the local daemon through
//! `rdht-api`, prints answers (text, or JSON with `--json`), and chooses the exit code.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error (clap), 3 no daemon running.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rdht_api::{Client, ClientError, Progress, Request, Response};
use rdht_cli::{files, show, swarm_key};
use rdht_core::{BlockId, BuildKey, BuilderKey, Labels};

/// Administer the local rdht daemon: identity, store, trust and swarms.
#[derive(Debug, Parser)]
#[command(name = "rdht", version, propagate_version = true)]
struct Cli {
    /// The daemon's data directory [default: the platform data dir, e.g. ~/.local/share/rdht].
    #[arg(long, env = "RDHT_DATA_DIR", global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Print data as JSON on stdout, for scripts.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show this node's peer id, builder key and listen addresses.
    Id,
    /// Show peers, store size, hits and misses, bytes in and out, and the jobs still
    /// sharing built outputs (queued or running).
    Status,
    /// List connected peers.
    Peers,
    /// Store files as one artifact and print its root. A directory contributes the files
    /// below it (relative to it); a file contributes itself under its name.
    Put {
        /// Files and directories to store.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Do not pin the artifact (GC may evict it).
        #[arg(long)]
        no_pin: bool,
    },
    /// Fetch an artifact (from the local store or the swarm), verify it, and write its
    /// files under DEST.
    Get {
        /// The artifact root (64 hex digits).
        root: BlockId,
        /// Directory to write into (created if missing).
        dest: PathBuf,
    },
    /// Run garbage collection now.
    Gc,
    /// Wait until every build output submitted to the daemon (by cargo-dht-build used
    /// as RUSTC_WRAPPER) is stored and published; fails if any could not be.
    Sync,
    /// List every known record for a build key, with the trust decision for each.
    Records {
        /// The build key (64 hex digits).
        key: BuildKey,
    },
    /// Manage the builders whose records are trusted.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Private swarm helpers.
    #[command(subcommand)]
    Swarm(SwarmCommand),
}

#[derive(Debug, Subcommand)]
enum TrustCommand {
    /// Trust a builder's records (its builder key, as `rdht id` shows it).
    Add {
        /// The builder key (64 hex digits).
        key: BuilderKey,
    },
    /// Stop trusting a builder.
    Remove {
        /// The builder key (64 hex digits).
        key: BuilderKey,
    },
    /// List trusted builders.
    List,
    /// Blocklist a builder caught lying: its records are ignored from now on.
    Block {
        /// The builder key (64 hex digits).
        key: BuilderKey,
        /// Why (kept with the entry).
        #[arg(long, default_value = "blocklisted by the operator")]
        reason: String,
    },
    /// Remove a builder from the blocklist.
    Unblock {
        /// The builder key (64 hex digits).
        key: BuilderKey,
    },
    /// List blocklisted builders and why.
    Blocked,
}

#[derive(Debug, Subcommand)]
enum SwarmCommand {
    /// Write a new random pre-shared key for a private swarm (IPFS swarm.key format).
    /// Give the same file to every node of the swarm (--swarm-key).
    Keygen {
        /// Where to write it; an existing file is never overwritten.
        #[arg(long, default_value = "swarm.key", value_name = "PATH")]
        out: PathBuf,
    },
    /// Print this node's address line for other nodes' bootstrap files.
    BootstrapLine {
        /// Print every listen address, not just the first reachable one.
        #[arg(long)]
        all: bool,
    },
}

/// Errors whose exit code is not 1.
#[derive(Debug, thiserror::Error)]
#[error(
    "no rdht daemon is running for data directory {dir}; start it with: rdht-node --data-dir {dir}"
)]
struct NotRunning {
    dir: String,
}

fn data_dir(cli: &Cli) -> Result<PathBuf> {
    match &cli.data_dir {
        Some(d) => Ok(d.clone()),
        None => rdht_api::default_data_dir()
            .context("no data directory: pass --data-dir or set RDHT_DATA_DIR"),
    }
}

async fn connect(dir: &Path) -> Result<Client> {
    match Client::connect(&rdht_api::socket_path(dir)).await {
        Ok(c) => Ok(c),
        Err(ClientError::NotRunning { .. }) => Err(NotRunning {
            dir: dir.display().to_string(),
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}

fn progress_bar(what: &'static str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .ok()?
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what);
    Some(bar)
}

async fn call_with_bar(
    client: &mut Client,
    request: Request,
    what: &'static str,
) -> Result<Response> {
    let bar = progress_bar(what);
    let result = client
        .call_with_progress(request, |p| {
            if let (Some(bar), Progress::Bytes { done, total }) = (&bar, p) {
                if let Some(t) = total {
                    bar.set_length(*t);
                }
                bar.set_position(*done);
            }
        })
        .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(result?)
}

fn unexpected(r: Response) -> anyhow::Error {
    anyhow::anyhow!("the daemon answered with an unexpected response: {r:?}")
}

fn emit(json: bool, (text, value): (String, serde_json::Value)) {
    if json {
        println!("{value}");
    } else {
        print!("{text}");
    }
}

/// The address to give other nodes: not loopback or unspecified when possible.
fn reachable_first(addrs: &[String]) -> Vec<&String> {
    let local = |a: &&String| {
        a.starts_with("/ip4/127.") || a.starts_with("/ip6/::1/") || a.starts_with("/ip4/0.0.0.0/")
    };
    let mut v: Vec<&String> = addrs.iter().filter(|a| !local(a)).collect();
    v.extend(addrs.iter().filter(local));
    v
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Swarm(SwarmCommand::Keygen { out }) = &cli.command {
        swarm_key::generate(out)?;
        if cli.json {
            println!("{}", serde_json::json!({ "swarm_key": out }));
        } else {
            eprintln!("wrote a new swarm key to {} (mode 0600)", out.display());
        }
        return Ok(());
    }
    let dir = data_dir(&cli)?;
    let mut client = connect(&dir).await?;
    let json = cli.json;
    match cli.command {
        Command::Swarm(SwarmCommand::Keygen { .. }) => unreachable!("handled above"),
        Command::Id => match client.call(Request::Id).await? {
            Response::Id {
                peer_id,
                builder,
                listen_addrs,
            } => emit(json, show::id(&peer_id, &builder, &listen_addrs)),
            r => return Err(unexpected(r)),
        },
        Command::Swarm(SwarmCommand::BootstrapLine { all }) => {
            match client.call(Request::Id).await? {
                Response::Id { listen_addrs, .. } => {
                    let ordered = reachable_first(&listen_addrs);
                    if ordered.is_empty() {
                        bail!(
                            "this node listens on no address: configure a swarm (see rdht-node --help)"
                        );
                    }
                    let lines: Vec<&String> = if all { ordered } else { ordered[..1].to_vec() };
                    if json {
                        println!("{}", serde_json::json!(lines));
                    } else {
                        for l in lines {
                            println!("{l}");
                        }
                    }
                }
                r => return Err(unexpected(r)),
            }
        }
        Command::Status => {
            let status = match client.call(Request::Status).await? {
                Response::Status(s) => s,
                r => return Err(unexpected(r)),
            };
            let jobs = match client.call(Request::Jobs).await? {
                Response::Jobs(j) => j,
                r => return Err(unexpected(r)),
            };
            emit(json, show::status(&status, &jobs))
        }
        Command::Peers => match client.call(Request::Peers).await? {
            Response::Peers(p) => {
                if p.is_empty() && !json {
                    eprintln!("no peers connected");
                }
                emit(json, show::peers(&p))
            }
            r => return Err(unexpected(r)),
        },
        Command::Put { paths, no_pin } => {
            let files = files::collect(&paths)?;
            let request = Request::Put {
                files,
                labels: Labels::default(),
                pin: !no_pin,
            };
            match call_with_bar(&mut client, request, "put").await? {
                Response::Put { root, files, bytes } => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({ "root": root.to_string(), "files": files, "bytes": bytes })
                        );
                    } else {
                        println!("{root}");
                        eprintln!("stored {files} files, {}", indicatif::HumanBytes(bytes));
                    }
                }
                r => return Err(unexpected(r)),
            }
        }
        Command::Get { root, dest } => {
            std::fs::create_dir_all(&dest)
                .with_context(|| format!("creating {}", dest.display()))?;
            let dest_abs = std::path::absolute(&dest)
                .with_context(|| format!("resolving {}", dest.display()))?;
            let dest_str = dest_abs
                .to_str()
                .with_context(|| format!("{}: path must be UTF-8", dest.display()))?
                .to_string();
            let request = Request::Export {
                root,
                dest: dest_str,
            };
            match call_with_bar(&mut client, request, "get").await? {
                Response::Exported { files, bytes, .. } => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({ "root": root.to_string(), "dest": dest_abs, "files": files, "bytes": bytes })
                        );
                    } else {
                        eprintln!(
                            "wrote {files} files, {} to {}",
                            indicatif::HumanBytes(bytes),
                            dest_abs.display()
                        );
                    }
                }
                r => return Err(unexpected(r)),
            }
        }
        Command::Gc => match client.call(Request::Gc).await? {
            Response::Gc {
                evicted_artifacts,
                freed_bytes,
            } => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "evicted_artifacts": evicted_artifacts, "freed_bytes": freed_bytes })
                    );
                } else {
                    println!(
                        "evicted {evicted_artifacts} artifacts, freed {}",
                        indicatif::HumanBytes(freed_bytes)
                    );
                }
            }
            r => return Err(unexpected(r)),
        },
        Command::Sync => match client.call(Request::Drain { session: None }).await? {
            Response::Drained(report) => {
                let (text, lines, v) = show::sync(&report);
                if json {
                    println!("{v}");
                } else {
                    print!("{text}");
                }
                for l in &lines {
                    eprintln!("{l}");
                }
                let failed = report.failed_count();
                if failed > 0 {
                    anyhow::bail!("{failed} build output(s) could not be shared");
                }
            }
            r => return Err(unexpected(r)),
        },
        Command::Records { key } => match client.call(Request::Records { key }).await? {
            Response::Records(views) => {
                if views.is_empty() && !json {
                    eprintln!("no records for {key}");
                }
                emit(json, show::records(&views))
            }
            r => return Err(unexpected(r)),
        },
        Command::Trust(t) => {
            let request = match t {
                TrustCommand::Add { key } => Request::TrustAdd { builder: key },
                TrustCommand::Remove { key } => Request::TrustRemove { builder: key },
                TrustCommand::List => Request::TrustList,
                TrustCommand::Block { key, reason } => Request::TrustBlock {
                    builder: key,
                    reason,
                },
                TrustCommand::Unblock { key } => Request::TrustUnblock { builder: key },
                TrustCommand::Blocked => Request::BlockList,
            };
            match client.call(request).await? {
                Response::Blocked(list) => {
                    if json {
                        let v: Vec<_> = list
                            .iter()
                            .map(|b| serde_json::json!({ "builder": b.builder.to_string(), "reason": b.reason }))
                            .collect();
                        println!("{}", serde_json::Value::Array(v));
                    } else {
                        for b in list {
                            println!("{}  {}", b.builder, b.reason);
                        }
                    }
                }
                Response::Trust(keys) => {
                    if json {
                        let keys: Vec<String> = keys.iter().map(ToString::to_string).collect();
                        println!("{}", serde_json::json!(keys));
                    } else {
                        for k in keys {
                            println!("{k}");
                        }
                    }
                }
                r => return Err(unexpected(r)),
            }
        }
    }
    Ok(())
}

/// The error and its causes joined by ": ", leaving out a cause whose text its
/// parent's message already ends with (an error that prints its source, as most
/// `thiserror` enums here do), so a message never repeats (`rdht: X: X`).
fn error_chain(e: &anyhow::Error) -> String {
    rdht_api::error_chain(e.as_ref())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rdht: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rdht: {}", error_chain(&e));
            if e.downcast_ref::<NotRunning>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("socket error: {0}")]
        Io(#[from] std::io::Error),
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("{0}")]
        Api(#[from] Inner),
    }

    /// Regression (issue 18): causes that their parent already prints are not repeated.
    #[test]
    fn error_chain_never_repeats_a_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let e = anyhow::Error::new(Outer::Api(Inner::Io(io))).context("status");
        assert_eq!(
            format!("{e:#}"),
            "status: socket error: broken pipe: socket error: broken pipe: broken pipe"
        );
        assert_eq!(error_chain(&e), "status: socket error: broken pipe");
        let plain = anyhow::anyhow!("no such file").context("reading x");
        assert_eq!(error_chain(&plain), "reading x: no such file");
    }
}
