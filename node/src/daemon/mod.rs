//! The daemon's lifecycle: prepare the data directory, take the lock, open the store,
//! start the swarms, serve the local API until asked to stop, then stop cleanly
//! (specs/local-api.md). Each job has a module of its own:
//! - `api`: serving connections and dispatching each request;
//! - `resolve`: resolving a key (store, then swarms, under the trust policy) and
//!   `Records`;
//! - `prefetch`: build plans fetched ahead of their units;
//! - `artifacts`: `Put`, `Export` and `Publish`;
//! - `jobs`: the `Submit` job queue, a worker task and its handle;
//! - `fetch`: fetching an artifact into the store, registering and announcing it;
//! - `announce`: where each held key is announced, and re-announcing after a restart;
//! - `swarms`: swarm configuration and start-up.
//!
//! Owns: [`run`], the state every connection shares (`Shared`) and the error type.
//! Does not own: storage layout (rdht-store), protocols (rdht-net, rdht-api) or formats
//! (rdht-core). Store calls block, so they run on tokio's blocking pool.
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rdht_api::proto::{
    BlockedBuilder, DiskStatus, ExportedFile, JobsStatus, MAX_PREFETCHES_SHOWN, MissCause,
    NodeStatus, PeerInfo, PrefetchState, PrefetchStatus, RecordView, Resolution, Scope,
    StoreStatus, SwarmStatus, UnreachableStatus, WriteFailureStatus,
};
use rdht_api::{ApiError, ErrorKind, Incoming, Progress, Request, Response, ServerConn};
use rdht_core::{BlockId, BuildKey, BuildRecord, Labels, Needs, RecordBody, plan};
use rdht_net::{
    AnnouncePolicy, DropReason, FetchError, Keypair, Multiaddr, NetError, NodeConfig, NodeHandle,
    PeerId, ProviderKey, Reach, SwarmConfig, SwarmKey,
};
use rdht_store::{IngestFile, Store, StoreError};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::glue::{FetchSink, ServeStore};
use crate::identity::{Identity, IdentityError};
use crate::lock::{DataDirLock, LockError};
use crate::submit::{self, Job, Tally};
use crate::trust::{Policy, TrustError};

mod announce;
mod api;
mod artifacts;
mod fetch;
mod jobs;
mod prefetch;
mod resolve;
mod swarms;

use api::serve;
use resolve::Gate;
use swarms::{reach, start_net, swarm_configs};

/// Name of the private swarm.
pub(crate) const PRIVATE_SWARM: &str = "private";
/// Name of the public swarm.
pub(crate) const PUBLIC_SWARM: &str = "public";
/// Directory of the store inside the data directory.
pub(crate) const STORE_DIR: &str = "store";
/// How long in-flight requests may run on after a stop is requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Units of a build plan resolved at once while prefetching.
const PREFETCH_CONCURRENCY: usize = 4;
/// Prefetched units remembered for attribution; past this the memory is cleared.
const MAX_PREFETCHED_KEPT: usize = 100_000;
/// The one file of a build plan artifact (specs/build-key.md §8).
pub(crate) const PLAN_FILE: &str = "plan";
/// How long an announcement may hold up a put or publish.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Past the record lookup deadline, how long a retry pause may still run.
const NET_RETRY_SLACK: Duration = Duration::from_secs(1);
/// Attempts at a fetch whose providers all dropped because their connection failed: a
/// closed connection is replaced by a fresh dial on the next attempt, and blocks already
/// received are kept (the fetch resumes).
const NET_ATTEMPTS: usize = 3;

/// The daemon could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The data directory could not be created or secured.
    #[error("data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another daemon holds the data directory.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The identity key could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The trusted keys could not be loaded.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// A configured address is not a multiaddr.
    #[error("invalid listen address {addr:?}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A swarm key or bootstrap file could not be used.
    #[error(transparent)]
    NetConfig(#[from] rdht_net::ConfigError),
    /// The swarms could not be started.
    #[error("starting the swarm: {0}")]
    Net(#[from] NetError),
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The API socket could not be set up.
    #[error("API socket {}: {source}", path.display())]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// State shared by every connection.
struct Shared {
    config: Config,
    identity: Identity,
    peer_id: PeerId,
    store: Store,
    net: Option<NodeHandle>,
    trust: Mutex<Policy>,
    conflicts: AtomicU64,
    resolve_hits: AtomicU64,
    resolve_misses: AtomicU64,
    /// Resolves whose record phase lasted the whole bound.
    bound_waits: AtomicU64,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
    stop: Notify,
    /// The queue of submitted jobs.
    jobs: jobs::Jobs,
    /// Numbers the daemon's scratch directories.
    scratch_seq: AtomicU64,
    /// Build keys being resolved from the swarm; a second resolve of the same key waits
    /// for the first instead of fetching again, and takes its miss, when it missed,
    /// instead of asking again.
    inflight: Mutex<HashMap<BuildKey, Gate>>,
    /// This machine's C runtime, read once per library (which candidates can load).
    machine: Mutex<rdht_fit::Machine>,
    /// Announces what this node fetched, one key at a time.
    announcer: announce::Announcer,
    /// The latest plans prefetched, running ones included.
    prefetches: Mutex<prefetch::Prefetches>,
    /// Units a prefetch fetched and no client has resolved yet: where from and how many
    /// bytes, reported by the first `Resolve` so a build's summary counts them.
    prefetched: Mutex<HashMap<BuildKey, (String, u64)>>,
}

fn api_err(kind: ErrorKind, msg: impl std::fmt::Display) -> ApiError {
    ApiError::new(kind, msg.to_string())
}

fn store_err(e: StoreError) -> ApiError {
    let kind = match &e {
        StoreError::UnknownArtifact { .. } => ErrorKind::NotFound,
        StoreError::IngestManifest(_)
        | StoreError::NotAFile { .. }
        | StoreError::FileChanged { .. }
        | StoreError::Destination { .. } => ErrorKind::BadRequest,
        _ => ErrorKind::Internal,
    };
    api_err(kind, e)
}

fn fetch_err(e: FetchError) -> ApiError {
    let kind = match &e {
        FetchError::NoProviders { .. } => ErrorKind::NotFound,
        _ => ErrorKind::Unavailable,
    };
    api_err(kind, e)
}

/// Runs `f` with the store on the blocking pool.
async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| api_err(ErrorKind::Internal, format!("store task failed: {e}")))?
        .map_err(store_err)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn prepare_dir(dir: &Path) -> Result<(), DaemonError> {
    let err = |source| DaemonError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Runs the daemon until `shutdown` completes or a client sends `Shutdown`.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    let dir = config.data_dir.clone();
    prepare_dir(&dir)?;
    // Submitted files are held open until stored (`jobs`): as many as the system allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => debug!(limit = n, "open-file limit"),
        Err(e) => warn!("cannot raise the open-file limit: {e}"),
    }
    let _lock = DataDirLock::acquire(&dir)?;
    // Scratch files of jobs and prefetches a previous daemon left behind (we hold the
    // lock, so nobody else uses them).
    let _ = std::fs::remove_dir_all(dir.join("tmp"));
    let (identity, created) = Identity::load_or_create(&dir)?;
    if created {
        info!(builder = %identity.builder_key(), "created a new identity");
    }
    let mut secret = identity.signing_key().to_bytes();
    // Invariant: any 32 bytes are a valid ed25519 secret key.
    let keypair =
        Keypair::ed25519_from_bytes(&mut secret).expect("32 bytes are an ed25519 secret key");
    let peer_id = keypair.public().to_peer_id();
    let trust = Policy::load(
        &dir,
        identity.builder_key(),
        &config.trusted_keys,
        config.required_signatures,
    )?;
    let store_path = dir.join(STORE_DIR);
    let store_config = rdht_store::Config {
        max_bytes: (config.store_max_bytes > 0).then_some(config.store_max_bytes),
        ..Default::default()
    };
    let store = {
        let path = store_path.clone();
        tokio::task::spawn_blocking(move || Store::open(path, store_config))
            .await
            .map_err(|e| DaemonError::Config(format!("store open task failed: {e}")))??
    };
    let swarms = swarm_configs(&config, peer_id)?;
    let bytes_out = Arc::new(AtomicU64::new(0));
    let net = if swarms.is_empty() {
        None
    } else {
        Some(start_net(&config, keypair, swarms, &store, bytes_out.clone()).await?)
    };

    let socket = rdht_api::socket_path(&dir);
    // We hold the lock, so a socket file left here belongs to a dead daemon.
    if socket.exists() {
        std::fs::remove_file(&socket).map_err(|source| DaemonError::Socket {
            path: socket.clone(),
            source,
        })?;
    }
    let listener = UnixListener::bind(&socket).map_err(|source| DaemonError::Socket {
        path: socket.clone(),
        source,
    })?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(
        |source| DaemonError::Socket {
            path: socket.clone(),
            source,
        },
    )?;

    let (jobs, jobs_rx) = jobs::Jobs::new();
    let announcer = announce::Announcer::start(net.clone(), config.public);
    let shared = Arc::new(Shared {
        config,
        identity,
        peer_id,
        store,
        net,
        trust: Mutex::new(trust),
        conflicts: AtomicU64::new(0),
        resolve_hits: AtomicU64::new(0),
        resolve_misses: AtomicU64::new(0),
        bound_waits: AtomicU64::new(0),
        bytes_in: Arc::new(AtomicU64::new(0)),
        bytes_out,
        stop: Notify::new(),
        jobs,
        scratch_seq: AtomicU64::new(0),
        inflight: Mutex::new(HashMap::new()),
        prefetches: Mutex::default(),
        announcer,
        machine: Mutex::new(rdht_fit::Machine::this_process()),
        prefetched: Mutex::new(HashMap::new()),
    });
    jobs::Jobs::start(&shared, jobs_rx);
    let listen = shared.listen_addrs().await;
    let stats = shared.store.stats().ok();
    info!(
        peer_id = %shared.peer_id,
        builder = %shared.identity.builder_key(),
        listen = ?listen,
        store = %store_path.display(),
        store_bytes = stats.map(|s| s.logical_bytes).unwrap_or(0),
        store_artifacts = stats.map(|s| s.artifacts).unwrap_or(0),
        socket = %socket.display(),
        "rdht-node started"
    );
    if shared.net.is_some() {
        let s = shared.clone();
        tokio::spawn(async move { s.reannounce().await });
    }

    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => { info!("stop requested by signal"); break; }
            () = shared.stop.notified() => { info!("stop requested over the API"); break; }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { conns.spawn(serve(shared.clone(), stream)); }
                Err(e) => warn!("accepting an API connection failed: {e}"),
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            open = conns.len(),
            "requests still running after {DRAIN_TIMEOUT:?}; cancelling them"
        );
        conns.shutdown().await;
    }
    shared.jobs.close(DRAIN_TIMEOUT).await;
    if let Some(net) = &shared.net {
        net.shutdown().await;
    }
    let store = shared.store.clone();
    match tokio::task::spawn_blocking(move || store.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("flushing the store: {e}"),
        Err(e) => warn!("flushing the store: {e}"),
    }
    info!("rdht-node stopped");
    Ok(())
}

impl Shared {
    /// A fresh path under the data directory's `tmp` for the daemon's own files.
    pub(super) fn scratch_dir(&self, what: &str) -> PathBuf {
        let n = self.scratch_seq.fetch_add(1, Ordering::Relaxed);
        self.config
            .data_dir
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    fn trust(&self) -> MutexGuard<'_, Policy> {
        self.trust.lock().unwrap_or_else(|e| e.into_inner())
    }
}
