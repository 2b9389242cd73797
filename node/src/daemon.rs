//! The daemon's lifecycle and request handling: prepare the data directory, take the
//! lock, open the store, start the swarms, serve the local API until asked to stop, then
//! stop cleanly (specs/local-api.md).
//!
//! Owns: wiring store, swarms, trust and the API together, and what each request does.
//! Does not own: storage layout (rdht-store), protocols (rdht-net, rdht-api) or formats
//! (rdht-core). Store calls block, so they run on tokio's blocking pool.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rdht_api::proto::{
    BlockedBuilder, ExportedFile, JobsStatus, MissCause, NodeStatus, PeerInfo, RecordView,
    Resolution, Scope, StoreStatus, SwarmStatus, UnreachableStatus,
};
use rdht_api::{ApiError, ErrorKind, Incoming, Progress, Request, Response, ServerConn};
use rdht_core::{BlockId, BuildKey, BuildRecord, Labels, plan};
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

/// Name of the private swarm.
pub const PRIVATE_SWARM: &str = "private";
/// Name of the public swarm.
pub const PUBLIC_SWARM: &str = "public";
/// Directory of the store inside the data directory.
pub const STORE_DIR: &str = "store";
/// How long in-flight requests may run on after a stop is requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Units of a build plan resolved at once while prefetching.
const PREFETCH_CONCURRENCY: usize = 4;
/// Prefetched units remembered for attribution; past this the memory is cleared.
const MAX_PREFETCHED_KEPT: usize = 100_000;
/// The one file of a build plan artifact (specs/build-key.md §8).
pub const PLAN_FILE: &str = "plan";
/// How long an announcement may hold up a put or publish.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Past the record lookup deadline, how long a retry pause may still run.
const NET_RETRY_SLACK: Duration = Duration::from_secs(1);
/// Attempts at a fetch whose providers all dropped because their connection failed: a
/// closed connection is replaced by a fresh dial on the next attempt, and blocks already
/// received are kept (the fetch resumes).
const NET_ATTEMPTS: usize = 3;

fn only_disconnects<'a>(mut reasons: impl Iterator<Item = &'a DropReason>) -> bool {
    reasons.all(|r| matches!(r, DropReason::Disconnected(_)))
}

/// Fetches artifact `root` into `sink`: first from `hint` (peers in a swarm that just
/// sent records naming it, which saves a DHT lookup), then through the DHT, retried
/// while every failure is a lost connection (a closed connection is replaced by a fresh
/// dial on the next attempt; blocks already received are kept, so the fetch resumes).
async fn fetch_artifact(
    net: &NodeHandle,
    root: BlockId,
    sink: &FetchSink<'_>,
    hint: Option<(&str, &[PeerId])>,
) -> Result<rdht_net::FetchReport, FetchError> {
    let flushed = |r: Result<rdht_net::FetchReport, FetchError>| match sink.finish() {
        Ok(()) => r,
        Err(e) => {
            let (block, e) = *e;
            Err(FetchError::Sink {
                root,
                block,
                source: std::io::Error::other(e),
            })
        }
    };
    if let Some((swarm, peers)) = hint.filter(|(_, p)| !p.is_empty()) {
        match flushed(net.fetch_artifact_from(swarm, root, peers, sink).await) {
            Ok(r) => return Ok(r),
            Err(e @ FetchError::Sink { .. }) => return Err(e),
            Err(e) => {
                debug!(%root, "fetching from the record providers failed ({e}); looking up providers")
            }
        }
    }
    let mut attempt = 1;
    loop {
        match flushed(net.fetch_artifact(root, sink).await) {
            Err(FetchError::AllProvidersFailed { ref last, .. })
                if attempt < NET_ATTEMPTS && only_disconnects(std::iter::once(last)) =>
            {
                debug!(%root, attempt, "every provider's connection failed; fetching again");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A peer to ask for records first, and the swarm to ask it in.
type Hint = (String, PeerId);

/// One key's turn to resolve: the resolves waiting for it, and the miss the last one
/// answered, which those waiting take as their own (it is as fresh as an answer of
/// their own, and asking again would hold them past their bound).
type Gate = Arc<tokio::sync::Mutex<Option<Resolution>>>;

/// [`NodeHandle::fetch_records_hinted`] (`hints` first, then the DHT; stop once
/// `enough`, or at `deadline` with what arrived), retried while nothing came back and
/// every failure is a lost connection.
async fn fetch_records(
    net: &NodeHandle,
    key: BuildKey,
    deadline: tokio::time::Instant,
    hints: &[Hint],
    enough: &(dyn Fn(&[rdht_net::FetchedRecord]) -> bool + Send + Sync),
) -> Result<rdht_net::RecordsReport, NetError> {
    let mut attempt = 1;
    loop {
        let report = net
            .fetch_records_hinted(key, Some(deadline), hints, enough)
            .await?;
        let transient = report.records.is_empty()
            && !report.failures.is_empty()
            && only_disconnects(report.failures.iter().map(|f| &f.reason));
        if !transient || attempt >= NET_ATTEMPTS {
            return Ok(report);
        }
        debug!(%key, attempt, "every record provider's connection failed; asking again");
        attempt += 1;
    }
}

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
    /// Queue of submitted jobs; `None` once the daemon stops accepting them.
    jobs: Mutex<Option<tokio::sync::mpsc::Sender<Job>>>,
    tally: Tally,
    /// Numbers the scratch directories of jobs.
    job_seq: AtomicU64,
    /// Build keys being resolved from the swarm; a second resolve of the same key waits
    /// for the first instead of fetching again, and takes its miss, when it missed,
    /// instead of asking again.
    inflight: Mutex<HashMap<BuildKey, Gate>>,
    /// Plans being prefetched.
    prefetching: Mutex<HashSet<BuildKey>>,
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

fn parse_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>, DaemonError> {
    addrs
        .iter()
        .map(|a| {
            a.parse::<Multiaddr>().map_err(|e| DaemonError::Listen {
                addr: a.clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// The swarms `config` asks for, private first. Our own entry is dropped from bootstrap
/// lists (a shared file lists every node, this one included).
fn swarm_configs(config: &Config, me: PeerId) -> Result<Vec<SwarmConfig>, DaemonError> {
    let mut swarms = Vec::new();
    match (&config.swarm_key, &config.bootstrap) {
        (Some(key), bootstrap) => {
            let mut s = SwarmConfig::new(PRIVATE_SWARM);
            s.key = Some(SwarmKey::from_file(key)?);
            s.listen = parse_addrs(&config.listen)?;
            if let Some(b) = bootstrap {
                s.bootstrap = rdht_net::read_bootstrap_file(b)?;
            }
            s.bootstrap.retain(|b| b.peer != me);
            s.announce = AnnouncePolicy::Automatic;
            swarms.push(s);
        }
        (None, Some(b)) => {
            return Err(DaemonError::Config(format!(
                "a bootstrap list ({}) is given without a swarm key: a private swarm needs both (--swarm-key)",
                b.display()
            )));
        }
        (None, None) => {}
    }
    if config.public {
        let mut s = SwarmConfig::new(PUBLIC_SWARM);
        s.listen = parse_addrs(&config.public_listen)?;
        if let Some(b) = &config.public_bootstrap {
            s.bootstrap = rdht_net::read_bootstrap_file(b)?;
        }
        s.bootstrap.retain(|b| b.peer != me);
        // Only what the caller explicitly scopes as public goes here.
        s.announce = AnnouncePolicy::Explicit;
        swarms.push(s);
    }
    Ok(swarms)
}

/// The fetch settings: a record request unanswered within the decision bound
/// (`lookup_timeout`) puts its peer in back-off (specs/swarm.md §6.4).
fn fetch_config(config: &Config) -> rdht_net::FetchConfig {
    rdht_net::FetchConfig {
        reply_bound: config.lookup_timeout,
        backoff: rdht_net::BackoffConfig {
            initial: config.unreachable_backoff,
            ..rdht_net::BackoffConfig::default()
        },
        ..rdht_net::FetchConfig::default()
    }
}

async fn start_net(
    config: &Config,
    keypair: Keypair,
    swarms: Vec<SwarmConfig>,
    store: &Store,
    bytes_out: Arc<AtomicU64>,
) -> Result<NodeHandle, DaemonError> {
    let source = Arc::new(ServeStore {
        store: store.clone(),
        bytes_out,
    });
    let fetch = fetch_config(config);
    let config = NodeConfig {
        keypair: keypair.clone(),
        swarms: swarms.clone(),
        fetch: fetch.clone(),
    };
    match NodeHandle::start(config, source.clone()).await {
        Ok(n) => Ok(n),
        Err(NetError::NoReachableBootstrap {
            swarm,
            tried,
            last_error,
        }) => {
            warn!(%swarm, tried, %last_error, "no bootstrap peer is reachable; starting as the first node of the swarm (peers can bootstrap from this one)");
            let swarms = swarms
                .into_iter()
                .map(|mut s| {
                    s.bootstrap.clear();
                    s
                })
                .collect();
            let config = NodeConfig {
                keypair,
                swarms,
                fetch,
            };
            Ok(NodeHandle::start(config, source).await?)
        }
        Err(e) => Err(e.into()),
    }
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

    let (jobs_tx, jobs_rx) = tokio::sync::mpsc::channel(submit::QUEUE_LEN);
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
        jobs: Mutex::new(Some(jobs_tx)),
        tally: Tally::default(),
        job_seq: AtomicU64::new(0),
        inflight: Mutex::new(HashMap::new()),
        prefetching: Mutex::new(HashSet::new()),
        prefetched: Mutex::new(HashMap::new()),
    });
    let worker = tokio::spawn(run_jobs(shared.clone(), jobs_rx));
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
    // Queued jobs finish (their wrappers already returned to cargo), within the limit.
    shared.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    let worker_abort = worker.abort_handle();
    if tokio::time::timeout(DRAIN_TIMEOUT, worker).await.is_err() {
        warn!("submitted jobs still running after {DRAIN_TIMEOUT:?}; dropping them");
        worker_abort.abort();
    }
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

/// The swarms a key of `scope` may be looked up in: private keys only where they are
/// announced automatically (the private swarms), never in the public one.
fn reach(scope: Scope) -> Reach {
    match scope {
        Scope::Private => Reach::Automatic,
        Scope::Everywhere => Reach::All,
    }
}

/// Announces `keys`; failures only cost findability, so they are logged, not returned.
async fn announce(net: NodeHandle, keys: Vec<ProviderKey>, also_in: Option<&'static str>) {
    for key in keys {
        let work = async {
            net.provide(key).await?;
            if let Some(swarm) = also_in {
                net.provide_in(swarm, key).await?;
            }
            Ok::<(), NetError>(())
        };
        match tokio::time::timeout(ANNOUNCE_TIMEOUT, work).await {
            Ok(Ok(())) => debug!(%key, "announced"),
            Ok(Err(e)) => warn!(%key, "announcing failed: {e}"),
            Err(_) => warn!(%key, "announcing timed out after {ANNOUNCE_TIMEOUT:?}"),
        }
    }
}

/// Runs submitted jobs one at a time (they read, hash and write whole artifacts; one at a
/// time leaves the cores to the compiles that are still running).
async fn run_jobs(shared: Arc<Shared>, mut rx: tokio::sync::mpsc::Receiver<Job>) {
    while let Some(job) = rx.recv().await {
        let session = job.session.clone();
        let name = job.labels.crate_name.clone();
        let key = job.key;
        let outcome = shared.run_job(job).await;
        if let Err(e) = &outcome {
            warn!(%key, crate_name = %name, reason = e.reason(), "not shared: {e}");
        }
        shared.tally.finished(&session, &name, outcome);
    }
}

fn blocked_list(p: &Policy) -> Vec<BlockedBuilder> {
    p.blocked()
        .iter()
        .map(|(b, r)| BlockedBuilder {
            builder: *b,
            reason: r.clone(),
        })
        .collect()
}

async fn serve(shared: Arc<Shared>, stream: UnixStream) {
    let mut conn = ServerConn::new(stream);
    loop {
        let Incoming { id, request } = match conn.next().await {
            Ok(Some(i)) => i,
            Ok(None) => return,
            Err(e) => {
                debug!("dropping an API connection: {e}");
                return;
            }
        };
        debug!(id, ?request, "request");
        let answer = shared.handle(&mut conn, id, request).await;
        if let Err(e) = &answer {
            debug!(id, "request failed: {e}");
        }
        if let Err(e) = conn.reply(id, answer).await {
            debug!("API client went away: {e}");
            return;
        }
    }
}

impl Shared {
    fn trust(&self) -> MutexGuard<'_, Policy> {
        self.trust.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn listen_addrs(&self) -> Vec<String> {
        let Some(net) = &self.net else {
            return Vec::new();
        };
        match net.listen_addrs().await {
            Ok(per_swarm) => per_swarm
                .into_iter()
                .flat_map(|(_, addrs)| addrs)
                .map(|a| format!("{a}/p2p/{}", self.peer_id))
                .collect(),
            Err(e) => {
                warn!("listing listen addresses: {e}");
                Vec::new()
            }
        }
    }

    /// Announces everything the store holds, after a (re)start.
    async fn reannounce(&self) {
        let Some(net) = &self.net else { return };
        let held = blocking(&self.store, |s| Ok((s.artifact_roots()?, s.build_keys()?))).await;
        let (roots, keys) = match held {
            Ok(v) => v,
            Err(e) => {
                warn!("listing what to re-announce: {e}");
                return;
            }
        };
        let all = roots
            .into_iter()
            .map(ProviderKey::Artifact)
            .chain(keys.into_iter().map(ProviderKey::Build));
        match net.reannounce(all).await {
            Ok(n) => info!(keys = n, "re-announced the store's contents"),
            Err(e) => warn!("re-announcing: {e}"),
        }
    }

    /// Announces `keys` in the automatic swarms, plus `also_in` when given, in the
    /// background: the local provider entry exists as soon as the swarm task takes the
    /// command, and a build must not wait for DHT round trips.
    fn announce(&self, keys: Vec<ProviderKey>, also_in: Option<&'static str>) {
        if let Some(net) = &self.net {
            tokio::spawn(announce(net.clone(), keys, also_in));
        }
    }

    async fn handle(
        self: &Arc<Self>,
        conn: &mut ServerConn<UnixStream>,
        id: u64,
        request: Request,
    ) -> Result<Response, ApiError> {
        match request {
            Request::Id => Ok(Response::Id {
                peer_id: self.peer_id.to_string(),
                builder: self.identity.builder_key(),
                listen_addrs: self.listen_addrs().await,
            }),
            Request::Status => self.status().await,
            Request::Peers => self.peers().await,
            Request::Put { files, labels, pin } => self.put(conn, id, files, labels, pin).await,
            Request::Export { root, dest } => self.export(conn, id, root, dest).await,
            Request::Resolve { key, scope } => {
                let mut r = self.resolve(key, scope).await?;
                if let Resolution::Hit {
                    source,
                    bytes_fetched,
                    ..
                } = &mut r
                    && let Some((swarm, bytes)) = self.lock_prefetched().remove(&key)
                {
                    *source = swarm;
                    *bytes_fetched += bytes;
                }
                let counter = match r {
                    Resolution::Hit { .. } => &self.resolve_hits,
                    Resolution::Miss { .. } => &self.resolve_misses,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(Response::Resolved(r))
            }
            Request::Publish {
                key,
                root,
                labels,
                scope,
                build_ms,
            } => self.publish(key, root, labels, scope, build_ms).await,
            Request::Records { key } => self.records(key).await,
            Request::Gc => {
                let report = blocking(&self.store, |s| s.gc()).await?;
                Ok(Response::Gc {
                    evicted_artifacts: report.evicted.len() as u64,
                    freed_bytes: report.bytes_freed,
                })
            }
            Request::TrustAdd { builder } => {
                let mut t = self.trust();
                t.add(builder)
                    .map_err(|e| api_err(ErrorKind::Internal, e))?;
                Ok(Response::Trust(t.trusted()))
            }
            Request::TrustRemove { builder } => {
                let mut t = self.trust();
                t.remove(builder)
                    .map_err(|e| api_err(ErrorKind::BadRequest, e))?;
                Ok(Response::Trust(t.trusted()))
            }
            Request::TrustList => Ok(Response::Trust(self.trust().trusted())),
            Request::TrustBlock { builder, reason } => {
                let mut t = self.trust();
                t.block(builder, &reason)
                    .map_err(|e| api_err(ErrorKind::Internal, e))?;
                warn!(%builder, %reason, "builder blocklisted");
                Ok(Response::Blocked(blocked_list(&t)))
            }
            Request::TrustUnblock { builder } => {
                let mut t = self.trust();
                t.unblock(builder)
                    .map_err(|e| api_err(ErrorKind::Internal, e))?;
                Ok(Response::Blocked(blocked_list(&t)))
            }
            Request::BlockList => Ok(Response::Blocked(blocked_list(&self.trust()))),
            Request::Shutdown => {
                self.stop.notify_one();
                Ok(Response::ShuttingDown)
            }
            Request::Submit(job) => self.submit(job).await,
            Request::Prefetch { key, scope } => {
                self.prefetch(key, scope);
                Ok(Response::Prefetching)
            }
            Request::Drain { session } => Ok(Response::Drained(
                self.tally.drain(session.as_deref()).await,
            )),
            Request::Jobs => {
                let (pending, published, failed) = self.tally.status();
                Ok(Response::Jobs(JobsStatus {
                    pending,
                    published,
                    failed,
                }))
            }
        }
    }

    async fn status(&self) -> Result<Response, ApiError> {
        let s = blocking(&self.store, |s| s.stats()).await?;
        let swarms: Vec<SwarmStatus> = match &self.net {
            Some(net) => {
                let peers = net.peers().await.unwrap_or_default();
                net.lookups()
                    .into_iter()
                    .map(|(name, lookups)| SwarmStatus {
                        peers: peers
                            .iter()
                            .find(|(n, _)| *n == name)
                            .map_or(0, |(_, p)| p.len() as u32),
                        name,
                        lookups,
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let peers = swarms.iter().map(|s| s.peers).sum();
        let ((dials, dials_skipped, reach_failures), unreachable) = match &self.net {
            Some(net) => (
                net.reachability_totals(),
                net.unreachable_peers()
                    .into_iter()
                    .map(|u| UnreachableStatus {
                        peer_id: u.peer.to_string(),
                        failures: u.failures,
                        unreachable_ms: u.unreachable_for.as_millis() as u64,
                        retry_in_ms: u.retry_in.as_millis() as u64,
                        forgotten: u.forgotten,
                        dials: u.dials,
                        skipped: u.skipped,
                    })
                    .collect(),
            ),
            None => ((0, 0, 0), Vec::new()),
        };
        // One guard: a second lock in the same expression would deadlock.
        let (blocklisted, trusted_builders, required_signatures) = {
            let t = self.trust();
            (
                t.blocked().len() as u32,
                t.trusted().len() as u32,
                t.required() as u32,
            )
        };
        Ok(Response::Status(Box::new(NodeStatus {
            peer_id: self.peer_id.to_string(),
            listen_addrs: self.listen_addrs().await,
            peers,
            store: StoreStatus {
                blocks: s.blocks,
                logical_bytes: s.logical_bytes,
                disk_bytes: s.disk_bytes,
                pinned_bytes: s.pinned_bytes,
                max_bytes: self.config.store_max_bytes,
                reads: s.reads,
                hits: s.hits,
                misses: s.misses,
                evictions: s.evictions,
            },
            resolve_hits: self.resolve_hits.load(Ordering::Relaxed),
            resolve_misses: self.resolve_misses.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            blocklisted,
            trusted_builders,
            required_signatures,
            verify_sample_ppm: (self.config.verify_sample_rate * 1e6).round() as u32,
            swarms,
            dials,
            dials_skipped,
            reach_failures,
            unreachable,
            bound_waits: self.bound_waits.load(Ordering::Relaxed),
        })))
    }

    async fn peers(&self) -> Result<Response, ApiError> {
        let Some(net) = &self.net else {
            return Ok(Response::Peers(Vec::new()));
        };
        let per_swarm = net
            .peers()
            .await
            .map_err(|e| api_err(ErrorKind::Unavailable, e))?;
        Ok(Response::Peers(
            per_swarm
                .into_iter()
                .flat_map(|(swarm, peers)| {
                    peers.into_iter().map(move |p| PeerInfo {
                        peer_id: p.to_string(),
                        swarm: swarm.clone(),
                    })
                })
                .collect(),
        ))
    }

    /// Queues a submitted build output.
    async fn submit(&self, job: Job) -> Result<Response, ApiError> {
        submit::check_request(&job.files).map_err(|e| api_err(ErrorKind::BadRequest, e))?;
        let tx = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| api_err(ErrorKind::Unavailable, "the daemon is stopping"))?;
        let session = job.session.clone();
        let pending = self.tally.queued(&session);
        let name = job.labels.crate_name.clone();
        if tx.send(job).await.is_err() {
            self.tally
                .finished(&session, &name, Err(submit::JobError::Stopping));
            return Err(api_err(ErrorKind::Unavailable, "the daemon is stopping"));
        }
        Ok(Response::Submitted { pending })
    }

    /// A fresh path under the data directory's `tmp` for the daemon's own files.
    fn scratch_dir(&self, what: &str) -> PathBuf {
        let n = self.job_seq.fetch_add(1, Ordering::Relaxed);
        self.config
            .data_dir
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Stores a job's files (unpinned until the record is published), checks they did
    /// not change while being read, then publishes.
    async fn run_job(&self, job: Job) -> Result<(), submit::JobError> {
        let scratch = self.scratch_dir("job");
        let files = job.files;
        let labels = job.labels.clone();
        let dir = scratch.clone();
        let stored = blocking(&self.store, move |s| {
            let prepared = match submit::prepare(&files, &dir) {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            let info = s.ingest(labels, prepared.files.clone(), false)?;
            Ok(prepared.recheck().map(|()| info.root))
        })
        .await;
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        let root = stored.map_err(|e| submit::JobError::Store(e.message))??;
        self.publish(job.key, root, job.labels, job.scope, job.build_ms)
            .await
            .map_err(|e| submit::JobError::Publish(e.message))?;
        Ok(())
    }

    async fn put(
        &self,
        conn: &mut ServerConn<UnixStream>,
        id: u64,
        files: Vec<rdht_api::proto::PutFile>,
        labels: Labels,
        pin: bool,
    ) -> Result<Response, ApiError> {
        for f in &files {
            if !Path::new(&f.source).is_absolute() {
                return Err(api_err(
                    ErrorKind::BadRequest,
                    format!("source path {:?} is not absolute", f.source),
                ));
            }
        }
        let n = files.len();
        let _ = conn
            .progress(id, Progress::Step(format!("storing {n} files")))
            .await;
        let info = blocking(&self.store, move |s| {
            let files = files
                .into_iter()
                .map(|f| IngestFile::from_disk(f.path, f.source))
                .collect::<Result<Vec<_>, _>>()?;
            s.ingest(labels, files, pin)
        })
        .await?;
        self.announce(vec![ProviderKey::Artifact(info.root)], None);
        Ok(Response::Put {
            root: info.root,
            files: info.files,
            bytes: info.file_bytes,
        })
    }

    /// Fetches artifact `root` from the swarms into the store, forwarding byte progress.
    async fn fetch(
        &self,
        conn: &mut ServerConn<UnixStream>,
        id: u64,
        root: BlockId,
    ) -> Result<String, ApiError> {
        let Some(net) = &self.net else {
            return Err(api_err(
                ErrorKind::NotFound,
                format!("artifact {root} is not in the local store and no swarm is configured"),
            ));
        };
        let session = self.store.session();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let report = {
            let sink = FetchSink::new(&session, self.bytes_in.clone(), Some(tx));
            let fetch = fetch_artifact(net, root, &sink, None);
            tokio::pin!(fetch);
            loop {
                tokio::select! {
                    r = &mut fetch => break r,
                    Some(done) = rx.recv() => {
                        let _ = conn.progress(id, Progress::Bytes { done, total: None }).await;
                    }
                }
            }
        }
        .map_err(fetch_err)?;
        let swarm = report.swarm.clone();
        tokio::task::spawn_blocking(move || session.register(root, false))
            .await
            .map_err(|e| api_err(ErrorKind::Internal, format!("store task failed: {e}")))?
            .map_err(store_err)?;
        info!(%root, %swarm, blocks = report.blocks_fetched, bytes = report.bytes_fetched, wire_bytes = report.wire_bytes, "fetched artifact");
        // We hold it now: serve it in the swarm it came from, and only there.
        if let Err(e) = net.provide_in(&swarm, ProviderKey::Artifact(root)).await {
            warn!(%root, "announcing a fetched artifact: {e}");
        }
        Ok(swarm)
    }

    async fn export(
        &self,
        conn: &mut ServerConn<UnixStream>,
        id: u64,
        root: BlockId,
        dest: String,
    ) -> Result<Response, ApiError> {
        if !Path::new(&dest).is_absolute() {
            return Err(api_err(
                ErrorKind::BadRequest,
                format!("destination {dest:?} is not absolute"),
            ));
        }
        let held = blocking(&self.store, move |s| s.artifact(&root)).await?;
        if held.is_none() {
            self.fetch(conn, id, root).await?;
        }
        let manifest = blocking(&self.store, move |s| s.export(&root, Path::new(&dest))).await?;
        Ok(Response::Exported {
            files: manifest.files().len() as u32,
            bytes: manifest.total_size(),
            entries: manifest
                .files()
                .iter()
                .map(|f| ExportedFile {
                    path: f.path.clone(),
                    size: f.size,
                    root: f.root,
                    executable: f.executable,
                })
                .collect(),
        })
    }

    /// The root the policy accepts for `key` among `records`, with its supporting
    /// records. Disagreement is logged and counted.
    fn choose(
        &self,
        key: BuildKey,
        records: &[BuildRecord],
    ) -> Option<(BlockId, Vec<BuildRecord>)> {
        let e = self.trust().evaluate(key, records);
        if e.conflict {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
            let roots: std::collections::BTreeSet<String> = e
                .decisions
                .iter()
                .map(|d| d.record.root().to_string())
                .collect();
            warn!(%key, ?roots, accepted = ?e.root, "builders disagree on this build key");
        }
        e.root.map(|r| (r, e.supporting))
    }

    /// Whether this hit, supported by `records`, is one of the sampled ones to rebuild
    /// and compare. What this node built itself is never sampled.
    fn sample(&self, records: &[BuildRecord]) -> bool {
        let rate = self.config.verify_sample_rate;
        let own = self.identity.builder_key();
        rate > 0.0 && !records.iter().any(|r| r.builder() == own) && rand::random::<f64>() < rate
    }

    /// Why records known for `key` gave no usable root: untrusted when there are any.
    fn miss_cause(&self, key: BuildKey, records: &[BuildRecord]) -> MissCause {
        if self.trust().evaluate(key, records).untrusted {
            MissCause::Untrusted
        } else {
            MissCause::NoRecord
        }
    }

    /// The miss reason for records that exist but name no usable root.
    fn untrusted_reason(&self, found: usize) -> String {
        match self.trust().required() {
            1 => format!("{found} record(s) found, none from a trusted builder"),
            n => format!(
                "{found} record(s) found, but no artifact is claimed by {n} of the trusted builders"
            ),
        }
    }

    /// Starts prefetching plan `key` in the background, unless it is already running.
    /// The plan's keys are looked up within the plan's `scope`.
    fn prefetch(self: &Arc<Self>, key: BuildKey, scope: Scope) {
        if self.net.is_none() || !self.lock_prefetching().insert(key) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match me.run_prefetch(key, scope).await {
                Ok((n, fetched, bytes)) => info!(
                    plan = %key,
                    keys = n,
                    fetched,
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "prefetched a build plan"
                ),
                Err(e) => info!(plan = %key, "no build plan prefetched: {e}"),
            }
            me.lock_prefetching().remove(&key);
        });
    }

    fn lock_prefetched(&self) -> MutexGuard<'_, HashMap<BuildKey, (String, u64)>> {
        self.prefetched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_prefetching(&self) -> MutexGuard<'_, HashSet<BuildKey>> {
        self.prefetching.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves plan `key`, reads the plan, and resolves its keys in order, a few at a
    /// time, asking the peers whose records named the plan first (the builder of a plan
    /// usually holds its units), so a key costs no DHT lookup when they have it. Returns
    /// (keys, artifacts fetched, bytes fetched).
    async fn run_prefetch(
        &self,
        key: BuildKey,
        scope: Scope,
    ) -> Result<(usize, usize, u64), String> {
        let (root, hints) = match self
            .resolve_hinted(key, scope, &[])
            .await
            .map_err(|e| e.message)?
        {
            (Resolution::Hit { root, .. }, hints) => (root, hints),
            (Resolution::Miss { reason, .. }, _) => return Err(reason),
        };
        let dir = self.scratch_dir("plan");
        let d = dir.clone();
        let text = blocking(&self.store, move |s| {
            let manifest = s.export(&root, &d)?;
            match manifest.files() {
                [f] if f.path == PLAN_FILE && f.size <= plan::MAX_PLAN_LEN as u64 => {
                    Ok(std::fs::read(d.join(PLAN_FILE)).ok())
                }
                _ => Ok(None),
            }
        })
        .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        let text = text
            .map_err(|e| e.message)?
            .ok_or_else(|| format!("artifact {root} is not a build plan"))?;
        let keys = plan::decode(&text).map_err(|e| e.to_string())?;
        let fetched = AtomicU64::new(0);
        let bytes = AtomicU64::new(0);
        futures::stream::iter(keys.iter().copied())
            .for_each_concurrent(PREFETCH_CONCURRENCY, |k| {
                let (fetched, bytes, hints) = (&fetched, &bytes, &hints);
                async move {
                    if let Ok((
                        Resolution::Hit {
                            bytes_fetched,
                            source,
                            ..
                        },
                        _,
                    )) = self.resolve_hinted(k, scope, hints).await
                        && bytes_fetched > 0
                    {
                        fetched.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(bytes_fetched, Ordering::Relaxed);
                        let mut p = self.lock_prefetched();
                        if p.len() >= MAX_PREFETCHED_KEPT {
                            p.clear();
                        }
                        p.insert(k, (source, bytes_fetched));
                    }
                }
            })
            .await;
        Ok((
            keys.len(),
            fetched.into_inner() as usize,
            bytes.into_inner(),
        ))
    }

    /// A hit from the local store (a trusted root whose artifact is held), or else the
    /// local records to go on with.
    async fn resolve_local(
        &self,
        key: BuildKey,
    ) -> Result<Result<Resolution, Vec<BuildRecord>>, ApiError> {
        // One trip to the blocking pool: the records, and which of their roots are held.
        let (local, held) = blocking(&self.store, move |s| {
            let records = s.records(&key)?;
            let mut held = HashSet::new();
            for r in &records {
                if !held.contains(&r.root()) && s.artifact(&r.root())?.is_some() {
                    held.insert(r.root());
                }
            }
            Ok((records, held))
        })
        .await?;
        if let Some((root, records)) = self.choose(key, &local)
            && held.contains(&root)
        {
            return Ok(Ok(Resolution::Hit {
                root,
                records: records.iter().map(BuildRecord::encode).collect(),
                source: "local".into(),
                bytes_fetched: 0,
                verify: self.sample(&records),
            }));
        }
        Ok(Err(local))
    }

    /// Resolves `key`: the local store, then the swarms `scope` allows. One resolve
    /// per key runs at a time; a concurrent one waits, then usually finds the artifact
    /// locally.
    async fn resolve(&self, key: BuildKey, scope: Scope) -> Result<Resolution, ApiError> {
        Ok(self.resolve_hinted(key, scope, &[]).await?.0)
    }

    /// [`Self::resolve`] that asks `hints` for records before looking providers up in
    /// the DHT. Also returns the peers (with their swarm) whose records named the root
    /// chosen from the swarm, which a plan's resolve passes on as hints for its keys.
    async fn resolve_hinted(
        &self,
        key: BuildKey,
        scope: Scope,
        hints: &[Hint],
    ) -> Result<(Resolution, Vec<Hint>), ApiError> {
        // The bound runs from the request, so time spent waiting for another resolve
        // of the key counts against it.
        let deadline = tokio::time::Instant::now() + self.config.lookup_timeout;
        let gate = self.lock_inflight().entry(key).or_default().clone();
        let result = {
            let mut turn = gate.lock().await;
            match turn.clone() {
                // The resolve we waited for missed just now: so do we.
                Some(miss) => Ok((miss, Vec::new())),
                None => {
                    let r = match self.resolve_local(key).await {
                        Ok(Ok(hit)) => Ok((hit, Vec::new())),
                        Ok(Err(local)) => {
                            self.resolve_remote(key, scope, local, hints, deadline)
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    if let Ok((m @ Resolution::Miss { .. }, _)) = &r {
                        *turn = Some(m.clone());
                    }
                    r
                }
            }
        };
        let mut inflight = self.lock_inflight();
        // The map's reference and ours: nobody else waits for this key.
        if Arc::strong_count(&gate) == 2 {
            inflight.remove(&key);
        }
        result
    }

    fn lock_inflight(&self) -> MutexGuard<'_, HashMap<BuildKey, Gate>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the swarms for records of `key` (none of the `local` ones gave a hit) and
    /// fetches the accepted root.
    async fn resolve_remote(
        &self,
        key: BuildKey,
        scope: Scope,
        local: Vec<BuildRecord>,
        hints: &[Hint],
        deadline: tokio::time::Instant,
    ) -> Result<(Resolution, Vec<Hint>), ApiError> {
        let mut unreachable: Vec<String> = Vec::new();
        let miss = |reason: String, cause: MissCause, unreachable: &[String]| {
            Ok((
                Resolution::Miss {
                    reason,
                    cause,
                    unreachable: unreachable.to_vec(),
                },
                Vec::new(),
            ))
        };
        let Some(net) = &self.net else {
            return miss(
                "no trusted record in the local store and no swarm is configured".into(),
                self.miss_cause(key, &local),
                &unreachable,
            );
        };
        // A private key is never asked for where it must not be revealed.
        let net = &net.within(reach(scope));
        let started = std::time::Instant::now();
        let limit = self.config.lookup_timeout;
        // Stop asking once the policy accepts a root among the local and received
        // records; at the deadline, go on with whatever arrived.
        let enough = |received: &[rdht_net::FetchedRecord]| {
            let mut all = local.clone();
            all.extend(received.iter().map(|f| f.record.clone()));
            self.trust().evaluate(key, &all).root.is_some()
        };
        // The deadline bounds the lookup and the answers; this guard only catches a
        // retry pause running past it.
        let guard = tokio::time::Instant::now().max(deadline) + NET_RETRY_SLACK;
        let report =
            match tokio::time::timeout_at(guard, fetch_records(net, key, deadline, hints, &enough))
                .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    return miss(
                        format!("record lookup failed: {e}"),
                        MissCause::LookupFailed,
                        &unreachable,
                    );
                }
                Err(_) => {
                    return miss(
                        format!("record lookup took longer than {} ms", limit.as_millis()),
                        MissCause::LookupFailed,
                        &unreachable,
                    );
                }
            };
        let records_ms = started.elapsed().as_millis();
        if report.waited_out {
            self.bound_waits.fetch_add(1, Ordering::Relaxed);
        }
        unreachable = report.unreachable.iter().map(PeerId::to_string).collect();
        let fetched: Vec<BuildRecord> = report.records.iter().map(|f| f.record.clone()).collect();
        if fetched.is_empty() {
            let answered_not = report
                .failures
                .iter()
                .filter(|f| !matches!(f.reason, DropReason::Unreachable | DropReason::Unanswered))
                .count();
            if !unreachable.is_empty() && answered_not == 0 {
                return miss(
                    format!(
                        "{} provider(s) unreachable ({})",
                        unreachable.len(),
                        unreachable.join(", ")
                    ),
                    MissCause::Unreachable,
                    &unreachable,
                );
            }
            return match report.failures.first() {
                Some(f) => miss(
                    format!(
                        "{} provider(s) failed to answer (first: {}: {})",
                        report.failures.len(),
                        f.peer,
                        f.reason
                    ),
                    MissCause::LookupFailed,
                    &unreachable,
                ),
                None if !local.is_empty() => miss(
                    self.untrusted_reason(local.len()),
                    self.miss_cause(key, &local),
                    &unreachable,
                ),
                None => miss(
                    "no provider has a record for this key".into(),
                    MissCause::NoRecord,
                    &unreachable,
                ),
            };
        }
        let keep = fetched.clone();
        blocking(&self.store, move |s| {
            for r in &keep {
                s.put_record(r)?;
            }
            Ok(())
        })
        .await?;
        let mut all = local;
        for r in &fetched {
            if !all.contains(r) {
                all.push(r.clone());
            }
        }
        let Some((root, records)) = self.choose(key, &all) else {
            return miss(
                self.untrusted_reason(all.len()),
                MissCause::Untrusted,
                &unreachable,
            );
        };
        let holders: Vec<Hint> = report
            .records
            .iter()
            .filter(|f| f.record.root() == root)
            .map(|f| (f.swarm.clone(), f.peer))
            .collect();
        let (swarm, bytes_fetched) = match blocking(&self.store, move |s| s.artifact(&root)).await?
        {
            Some(_) => ("local".to_string(), 0),
            None => {
                let session = self.store.session();
                let sink = FetchSink::new(&session, self.bytes_in.clone(), None);
                let hint = report
                    .records
                    .iter()
                    .find(|f| f.record.root() == root)
                    .map(|f| f.swarm.clone());
                let peers: Vec<PeerId> = report
                    .records
                    .iter()
                    .filter(|f| f.record.root() == root && Some(&f.swarm) == hint.as_ref())
                    .map(|f| f.peer)
                    .collect();
                let report = match fetch_artifact(
                    net,
                    root,
                    &sink,
                    hint.as_deref().map(|s| (s, peers.as_slice())),
                )
                .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        return miss(
                            format!("fetching artifact {root} failed: {e}"),
                            MissCause::FetchFailed,
                            &unreachable,
                        );
                    }
                };
                tokio::task::spawn_blocking(move || session.register(root, false))
                    .await
                    .map_err(|e| api_err(ErrorKind::Internal, format!("store task failed: {e}")))?
                    .map_err(store_err)?;
                (report.swarm, report.bytes_fetched)
            }
        };
        debug!(%key, %root, records_ms, total_ms = started.elapsed().as_millis(), bytes_fetched, "resolved from the swarm");
        let hit = Resolution::Hit {
            root,
            records: records.iter().map(BuildRecord::encode).collect(),
            source: swarm,
            bytes_fetched,
            verify: self.sample(&records),
        };
        Ok((hit, holders))
    }

    async fn publish(
        &self,
        key: BuildKey,
        root: BlockId,
        labels: Labels,
        scope: Scope,
        build_ms: u64,
    ) -> Result<Response, ApiError> {
        let info = blocking(&self.store, move |s| s.artifact(&root))
            .await?
            .ok_or_else(|| {
                api_err(
                    ErrorKind::NotFound,
                    format!("artifact {root} is not in the store; put it first"),
                )
            })?;
        let record = BuildRecord::sign_timed(
            key,
            root,
            info.file_bytes,
            now(),
            build_ms,
            labels,
            self.identity.signing_key(),
        )
        .map_err(|e| api_err(ErrorKind::BadRequest, e))?;
        let stored = record.clone();
        blocking(&self.store, move |s| {
            s.put_record(&stored)?;
            s.pin(&root)
        })
        .await?;
        let public = match scope {
            Scope::Everywhere if self.config.public => Some(PUBLIC_SWARM),
            _ => None,
        };
        self.announce(
            vec![ProviderKey::Build(key), ProviderKey::Artifact(root)],
            public,
        );
        Ok(Response::Published {
            record: record.encode(),
        })
    }

    async fn records(&self, key: BuildKey) -> Result<Response, ApiError> {
        let mut all = blocking(&self.store, move |s| s.records(&key)).await?;
        if let Some(net) = &self.net {
            // Every record is wanted here (nothing is enough), within the lookup limit.
            let deadline = tokio::time::Instant::now() + self.config.lookup_timeout;
            match fetch_records(
                net,
                key,
                deadline,
                &[],
                &|_: &[rdht_net::FetchedRecord]| false,
            )
            .await
            {
                Ok(report) => {
                    for f in report.records {
                        if !all.contains(&f.record) {
                            all.push(f.record);
                        }
                    }
                }
                Err(e) => warn!(%key, "asking the swarm for records: {e}"),
            }
        }
        let e = self.trust().evaluate(key, &all);
        Ok(Response::Records(
            e.decisions
                .into_iter()
                .map(|d| RecordView {
                    record: d.record.encode(),
                    trusted: d.accepted,
                    reason: d.reason,
                })
                .collect(),
        ))
    }
}
