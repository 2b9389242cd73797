//! The node: every configured swarm, and the cloneable [`NodeHandle`] the daemon calls.
//!
//! Owns: start-up of all swarms, announce policy (which swarm gets which announcement),
//! lookup order (swarms in configured order), the node-wide ban list, record fetches,
//! and handing artifact fetches to `fetch.rs`. Does not own: the libp2p event loop
//! (`swarm.rs`) or storage (the caller's [`BlockSource`] / [`BlockSink`]).
//! Lookups reach every swarm, or, through [`NodeHandle::within`]`(Reach::Automatic)`,
//! only the swarms announced to automatically (the private ones): a key that must not
//! be revealed in a swarm is never looked up there.
//! Record requests run at once with the provider lookup that feeds them (each provider
//! is asked as soon as it is found); a request not answered within the reply bound puts
//! its peer in back-off (`health.rs`), and peers in back-off are neither dialled nor
//! waited for.
//! Spec: `specs/swarm.md` §4 (records), §6 (announce and lookup order, back-off), §8
//! (bans).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use libp2p::{Multiaddr, PeerId};
use rdht_core::{BlockId, BuildKey, BuildRecord};
use tracing::{debug, info, warn};

use crate::config::{AnnouncePolicy, FetchConfig, NodeConfig};
use crate::error::{DropReason, FetchError, NetError, PeerFailure};
use crate::fetch::{self, FetchCtx, FetchReport, OPEN_TIMED_OUT, RECONNECT_PAUSE};
use crate::health::{Health, UnreachablePeer};
use crate::source::{BlockSink, BlockSource};
use crate::swarm::{self, Command, Connection, Lookup, ProvideFailure, SwarmHandle, SwarmReach};
use crate::wire::{self, ProviderKey};

/// Most announcements in flight at once during [`NodeHandle::reannounce`].
const REANNOUNCE_CONCURRENCY: usize = 64;
/// How long hinted peers are asked alone before the DHT lookup starts alongside them:
/// about one round trip on a LAN, so a hint that answers at once saves the lookup, and
/// one that does not costs no more than this.
const HINT_HEAD_START: std::time::Duration = std::time::Duration::from_millis(50);

/// A verified record and the peer it came from.
#[derive(Debug, Clone)]
pub struct FetchedRecord {
    /// The swarm it was found in.
    pub swarm: String,
    /// The peer that served it.
    pub peer: PeerId,
    /// The record; its signature has been verified.
    pub record: BuildRecord,
}

/// The outcome of [`NodeHandle::fetch_records`] and [`NodeHandle::fetch_records_until`].
#[derive(Debug, Clone, Default)]
pub struct RecordsReport {
    /// Verified records, one per distinct encoding, in arrival order.
    pub records: Vec<FetchedRecord>,
    /// Providers that failed or sent bad records (the latter are banned).
    pub failures: Vec<PeerFailure>,
    /// Providers (found or hinted) not asked or not waited for because they are
    /// unreachable: in back-off, or silent past the reply bound or until the caller's
    /// deadline (then also listed in `failures`). Each once.
    pub unreachable: Vec<PeerId>,
    /// The caller's deadline passed, or a provider was dropped at the reply bound:
    /// the answer took as long as the bound allows.
    pub waited_out: bool,
}

impl RecordsReport {
    fn unreachable(&mut self, peer: PeerId) {
        if !self.unreachable.contains(&peer) {
            self.unreachable.push(peer);
        }
    }
}

/// Which swarms a [`NodeHandle`]'s lookups and fetches may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reach {
    /// Every swarm, in configured order.
    #[default]
    All,
    /// Only swarms whose policy is [`AnnouncePolicy::Automatic`] (private swarms): the
    /// others never see the key.
    Automatic,
}

struct Inner {
    peer_id: PeerId,
    swarms: Vec<SwarmHandle>,
    source: Arc<dyn BlockSource>,
    fetch: FetchConfig,
    bans: Mutex<HashMap<PeerId, Instant>>,
    health: Arc<Health>,
}

/// A handle on a running node. Cheap to clone; every method is safe to call from many
/// tasks at once.
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<Inner>,
    reach: Reach,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.inner.peer_id)
            .field(
                "swarms",
                &self
                    .inner
                    .swarms
                    .iter()
                    .map(|s| &s.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl NodeHandle {
    /// Starts every swarm of `config` (listen, bootstrap) and returns once all are up.
    /// `source` serves blocks and records to other peers.
    pub async fn start(
        config: NodeConfig,
        source: Arc<dyn BlockSource>,
    ) -> Result<NodeHandle, NetError> {
        config.validate()?;
        let health = Arc::new(Health::new(config.fetch.backoff));
        // Peers whose inbound requests broke the format, reported by every swarm.
        let (offenders, mut offended) = tokio::sync::mpsc::channel(64);
        let mut swarms: Vec<SwarmHandle> = Vec::new();
        for sc in &config.swarms {
            let started = swarm::start(
                sc,
                &config.keypair,
                source.clone(),
                health.clone(),
                offenders.clone(),
            );
            match started.await {
                Ok(h) => swarms.push(h),
                Err(e) => {
                    for s in &swarms {
                        s.shutdown().await;
                    }
                    return Err(e);
                }
            }
        }
        let peer_id = config.keypair.public().to_peer_id();
        info!(%peer_id, swarms = swarms.len(), "node started");
        let node = NodeHandle {
            inner: Arc::new(Inner {
                peer_id,
                swarms,
                source,
                fetch: config.fetch,
                bans: Mutex::new(HashMap::new()),
                health,
            }),
            reach: Reach::All,
        };
        // Bans them node-wide (specs/swarm.md §8); ends with the node or its swarms.
        let weak = Arc::downgrade(&node.inner);
        drop(offenders);
        tokio::spawn(async move {
            while let Some(peer) = offended.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                let node = NodeHandle {
                    inner,
                    reach: Reach::All,
                };
                if !node.is_banned(&peer) {
                    node.ban(peer);
                }
            }
        });
        Ok(node)
    }

    /// The same node, with lookups and fetches limited to the swarms `reach` allows.
    /// (Announcements follow each swarm's own policy and are not affected.)
    pub fn within(&self, reach: Reach) -> NodeHandle {
        NodeHandle {
            inner: self.inner.clone(),
            reach,
        }
    }

    /// The swarms this handle's lookups may ask, in configured order.
    fn reached(&self) -> impl Iterator<Item = &SwarmHandle> {
        let reach = self.reach;
        self.inner
            .swarms
            .iter()
            .filter(move |s| reach == Reach::All || s.announce == AnnouncePolicy::Automatic)
    }

    /// Provider lookups started so far, per swarm in configured order (whatever the
    /// handle's reach).
    pub fn lookups(&self) -> Vec<(String, u64)> {
        self.inner
            .swarms
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.lookups.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Peers remembered as unreachable now (in back-off, or tried again after it and
    /// not yet reached), sorted by peer id.
    pub fn unreachable_peers(&self) -> Vec<UnreachablePeer> {
        self.inner.health.unreachable(Instant::now())
    }

    /// Outbound dials to `peer` since the node started, over all swarms.
    pub fn dials_to(&self, peer: &PeerId) -> u64 {
        self.inner.health.dials_to(peer)
    }

    /// (outbound dials, dials and requests skipped for a back-off, reachability
    /// failures recorded) since the node started, over all peers and swarms.
    pub fn reachability_totals(&self) -> (u64, u64, u64) {
        self.inner.health.totals()
    }

    /// Remembers `peer` as unreachable; when that starts a back-off, every swarm closes
    /// what is left of its connections and drops it from its routing table.
    fn mark_unreachable(&self, peer: PeerId, why: &str) {
        if self.inner.health.failed(peer, Instant::now(), why) {
            for s in &self.inner.swarms {
                s.unreachable(peer);
            }
        }
    }

    /// Whether `peer` is in back-off, counting the skip.
    fn skip_unreachable(&self, peer: &PeerId) -> bool {
        self.inner.health.skip(peer, Instant::now())
    }

    /// Shuts the node down when `signal` completes (e.g. ctrl-c).
    pub fn shutdown_on(&self, signal: impl Future<Output = ()> + Send + 'static) {
        let node = self.clone();
        tokio::spawn(async move {
            signal.await;
            node.shutdown().await;
        });
    }

    /// Stops every swarm: connections close, serving stops. Later calls return
    /// [`NetError::Stopped`].
    pub async fn shutdown(&self) {
        for s in &self.inner.swarms {
            s.shutdown().await;
        }
        info!(peer_id = %self.inner.peer_id, "node stopped");
    }

    /// This node's peer id (the same in every swarm).
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// The configured swarm names, in lookup order.
    pub fn swarm_names(&self) -> Vec<String> {
        self.inner.swarms.iter().map(|s| s.name.clone()).collect()
    }

    fn swarm(&self, name: &str) -> Result<&SwarmHandle, NetError> {
        self.inner
            .swarms
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| NetError::UnknownSwarm { name: name.into() })
    }

    /// Announces `key` in every swarm whose policy is [`AnnouncePolicy::Automatic`];
    /// returns their names. Completes when each announcement's DHT query has ended;
    /// fails if one timed out (the key stays in the local provider store and Kademlia
    /// republishes it later; calling again retries now).
    pub async fn provide(&self, key: ProviderKey) -> Result<Vec<String>, NetError> {
        let mut names = Vec::new();
        for s in &self.inner.swarms {
            if s.announce == AnnouncePolicy::Automatic {
                self.provide_via(s, key).await?;
                names.push(s.name.clone());
            }
        }
        Ok(names)
    }

    /// Announces `key` in the named swarm only, whatever its policy.
    pub async fn provide_in(&self, swarm: &str, key: ProviderKey) -> Result<(), NetError> {
        let s = self.swarm(swarm)?;
        self.provide_via(s, key).await
    }

    async fn provide_via(&self, s: &SwarmHandle, key: ProviderKey) -> Result<(), NetError> {
        self.start_via(s, key).await?.done().await
    }

    /// Starts announcing `key` in `s`: returns once the key is in that swarm's local
    /// provider store, so peers that ask this node find it from then on; the DHT query
    /// that spreads the announcement runs on, and [`Announcement::done`] waits for it.
    async fn start_via(&self, s: &SwarmHandle, key: ProviderKey) -> Result<Announcement, NetError> {
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let reply = s
            .request_later(|reply| Command::Provide {
                key,
                started: started_tx,
                reply,
            })
            .await?;
        started.await.map_err(|_| NetError::Stopped)?;
        Ok(Announcement {
            swarm: s.name.clone(),
            key,
            reply,
        })
    }

    /// Starts announcing `key` in every automatic swarm, or in `swarm` only when given:
    /// returns once the key is in each one's local provider store (see
    /// [`Announcement`]).
    pub async fn start_providing(
        &self,
        key: ProviderKey,
        swarm: Option<&str>,
    ) -> Result<Vec<Announcement>, NetError> {
        let mut started = Vec::new();
        match swarm {
            Some(name) => started.push(self.start_via(self.swarm(name)?, key).await?),
            None => {
                for s in &self.inner.swarms {
                    if s.announce == AnnouncePolicy::Automatic {
                        started.push(self.start_via(s, key).await?);
                    }
                }
            }
        }
        Ok(started)
    }

    /// Re-announces everything the node holds (after a restart), with bounded
    /// concurrency: in `swarm` when given, else following each swarm's policy as
    /// [`NodeHandle::provide`] does. Returns how many keys were announced in at least
    /// one swarm (0 when no swarm's policy takes them).
    pub async fn reannounce(
        &self,
        swarm: Option<&str>,
        keys: impl IntoIterator<Item = ProviderKey>,
    ) -> Result<usize, NetError> {
        // Whether each key went to at least one swarm.
        let results: Vec<Result<bool, NetError>> = futures::stream::iter(keys)
            .map(|k| async move {
                match swarm {
                    Some(name) => self.provide_in(name, k).await.map(|()| true),
                    None => self.provide(k).await.map(|names| !names.is_empty()),
                }
            })
            .buffer_unordered(REANNOUNCE_CONCURRENCY)
            .collect()
            .await;
        let mut n = 0;
        for r in results {
            if r? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Looks `key` up in each swarm in order; returns the first lookup that found
    /// providers, or `None` when no swarm knows one.
    pub async fn find_providers(&self, key: ProviderKey) -> Result<Option<Lookup>, NetError> {
        for s in self.reached() {
            let lookup = self
                .lookup(s, key, self.inner.fetch.max_providers.max(1) * 2)
                .await?;
            if !lookup.providers.is_empty() {
                return Ok(Some(lookup));
            }
        }
        Ok(None)
    }

    /// Looks `key` up in the named swarm, stopping once `limit` providers are known.
    pub async fn find_providers_in(
        &self,
        swarm: &str,
        key: ProviderKey,
        limit: usize,
    ) -> Result<Lookup, NetError> {
        let s = self.reached_swarm(swarm)?;
        self.lookup(s, key, limit).await
    }

    /// The named swarm, if this handle may ask it.
    fn reached_swarm(&self, name: &str) -> Result<&SwarmHandle, NetError> {
        self.reached()
            .find(|s| s.name == name)
            .ok_or_else(|| NetError::UnknownSwarm { name: name.into() })
    }

    async fn lookup(
        &self,
        s: &SwarmHandle,
        key: ProviderKey,
        limit: usize,
    ) -> Result<Lookup, NetError> {
        self.lookup_feeding(s, key, limit, None).await
    }

    /// [`Self::lookup`] that also sends each reachable provider to `found` as soon as
    /// it is found.
    async fn lookup_feeding(
        &self,
        s: &SwarmHandle,
        key: ProviderKey,
        limit: usize,
        found: Option<tokio::sync::mpsc::UnboundedSender<PeerId>>,
    ) -> Result<Lookup, NetError> {
        let count = || s.lookups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        count();
        let tx = found.clone();
        let mut lookup = s
            .request(|reply| Command::FindProviders {
                key,
                limit,
                found: tx,
                reply,
            })
            .await?;
        if lookup.providers.is_empty() && lookup.requests > 0 && lookup.successes == 0 {
            // No peer answered at all: typically the only connections closed under the
            // query (idle timeouts); once the swarm has seen that, it dials anew.
            debug!(swarm = %s.name, %key, requests = lookup.requests, "no peer answered the lookup; once more");
            tokio::time::sleep(RECONNECT_PAUSE).await;
            count();
            lookup = s
                .request(|reply| Command::FindProviders {
                    key,
                    limit,
                    found,
                    reply,
                })
                .await?;
        }
        lookup.providers.retain(|p| !self.is_banned(p));
        debug!(swarm = %s.name, %key, providers = lookup.providers.len(), "lookup done");
        Ok(lookup)
    }

    /// Refreshes every swarm's routing table (a Kademlia bootstrap: a lookup of our own
    /// id and of a random id per bucket) and returns when all have finished. Kademlia
    /// also does this periodically; call it after joining many nodes at once, before
    /// announcing.
    pub async fn refresh(&self) -> Result<(), NetError> {
        for s in &self.inner.swarms {
            s.request(|reply| Command::Bootstrap { reply }).await?;
        }
        Ok(())
    }

    /// Peers currently connected, per swarm, in lookup order.
    pub async fn peers(&self) -> Result<Vec<(String, Vec<PeerId>)>, NetError> {
        let mut out = Vec::new();
        for s in &self.inner.swarms {
            out.push((
                s.name.clone(),
                s.request(|reply| Command::Peers { reply }).await?,
            ));
        }
        Ok(out)
    }

    /// Open connections, per swarm, in lookup order: each peer's address and whether
    /// the connection is relayed.
    pub async fn connections(&self) -> Result<Vec<(String, Vec<Connection>)>, NetError> {
        let mut out = Vec::new();
        for s in &self.inner.swarms {
            out.push((
                s.name.clone(),
                s.request(|reply| Command::Connections { reply }).await?,
            ));
        }
        Ok(out)
    }

    /// Each swarm's reachability and Kademlia mode, in lookup order.
    pub async fn reach(&self) -> Result<Vec<SwarmReach>, NetError> {
        let mut out = Vec::new();
        for s in &self.inner.swarms {
            out.push(s.request(|reply| Command::Reach { reply }).await?);
        }
        Ok(out)
    }

    /// Addresses listened on, per swarm, in lookup order.
    pub async fn listen_addrs(&self) -> Result<Vec<(String, Vec<Multiaddr>)>, NetError> {
        let mut out = Vec::new();
        for s in &self.inner.swarms {
            out.push((
                s.name.clone(),
                s.request(|reply| Command::ListenAddrs { reply }).await?,
            ));
        }
        Ok(out)
    }

    /// Peers banned now (for corrupt blocks or bad records).
    pub fn banned_peers(&self) -> Vec<PeerId> {
        let now = Instant::now();
        let mut bans = self.inner.bans.lock().unwrap_or_else(|e| e.into_inner());
        bans.retain(|_, until| *until > now);
        bans.keys().copied().collect()
    }

    fn is_banned(&self, peer: &PeerId) -> bool {
        let bans = self.inner.bans.lock().unwrap_or_else(|e| e.into_inner());
        bans.get(peer).is_some_and(|u| *u > Instant::now())
    }

    /// Bans `peer` in every swarm for the configured ban duration: it is disconnected,
    /// refused, dropped from routing tables and skipped by lookups.
    pub fn ban(&self, peer: PeerId) {
        let until = Instant::now() + self.inner.fetch.ban_duration;
        warn!(%peer, duration = ?self.inner.fetch.ban_duration, "banning peer");
        self.inner
            .bans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, until);
        for s in &self.inner.swarms {
            s.ban(peer, until);
        }
    }

    /// Asks the providers of `key` (swarms in order; the first swarm that yields a
    /// verified record wins) for their signed records, waiting for every provider's
    /// answer. Every returned record passed `BuildRecord::decode_for` (signature
    /// checked) and is for `key`; a peer that sends a bad one is banned and all its
    /// records are discarded.
    pub async fn fetch_records(&self, key: BuildKey) -> Result<RecordsReport, NetError> {
        self.fetch_records_until(key, None, &|_: &[FetchedRecord]| false)
            .await
    }

    /// [`Self::fetch_records`] that stops early: as soon as the records received so far
    /// satisfy `enough` (checked after each provider's answer; the other requests are
    /// dropped), or at `deadline`, when it returns what arrived and lists every provider
    /// still asked as [`DropReason::Unanswered`]. One slow or silent provider therefore
    /// delays a caller only until its policy is met or its deadline passes, and never
    /// costs the records the others sent.
    pub async fn fetch_records_until(
        &self,
        key: BuildKey,
        deadline: Option<tokio::time::Instant>,
        enough: &(dyn Fn(&[FetchedRecord]) -> bool + Send + Sync),
    ) -> Result<RecordsReport, NetError> {
        self.fetch_records_hinted(key, deadline, &[], enough).await
    }

    /// [`Self::fetch_records_until`] that first asks `hints`, peers (each with the swarm
    /// to ask it in) likely to hold records of `key`, such as the builder whose build
    /// plan listed it, and looks providers up in the DHT only if their records are not
    /// `enough`. A DHT lookup costs several round trips (hundreds of milliseconds in a
    /// large swarm); a hinted peer costs one. Hinted peers' records are verified like
    /// any others; banned peers, ourselves and swarms this node is not in are skipped.
    pub async fn fetch_records_hinted(
        &self,
        key: BuildKey,
        deadline: Option<tokio::time::Instant>,
        hints: &[(String, PeerId)],
        enough: &(dyn Fn(&[FetchedRecord]) -> bool + Send + Sync),
    ) -> Result<RecordsReport, NetError> {
        let mut report = RecordsReport::default();
        for s in self.reached() {
            let mut peers: Vec<PeerId> = hints
                .iter()
                .filter(|(n, p)| *n == s.name && *p != self.inner.peer_id && !self.is_banned(p))
                .map(|(_, p)| *p)
                .collect();
            peers.sort();
            peers.dedup();
            if self
                .ask_swarm(s, key, &peers, deadline, enough, &mut report)
                .await?
                .is_break()
            {
                return Ok(report);
            }
            if !report.records.is_empty() {
                break;
            }
        }
        Ok(report)
    }

    /// Asks swarm `s` for records of `key`: the `hinted` peers at once, and, unless
    /// their records are enough within [`HINT_HEAD_START`] (or at once when there are
    /// none), the providers of a DHT lookup running alongside, each as soon as it is
    /// found. Peers in back-off are skipped; a peer silent past the reply bound is put
    /// in back-off and no longer waited for. Breaks when the records satisfy `enough`
    /// or at `deadline` (listing the peers still asked as unanswered); continues once
    /// the lookup has ended and every peer asked has answered or failed.
    async fn ask_swarm(
        &self,
        s: &SwarmHandle,
        key: BuildKey,
        hinted: &[PeerId],
        deadline: Option<tokio::time::Instant>,
        enough: &(dyn Fn(&[FetchedRecord]) -> bool + Send + Sync),
        report: &mut RecordsReport,
    ) -> Result<std::ops::ControlFlow<()>, NetError> {
        /// A peer, its answer, and whether the answer took the whole reply bound.
        type Answer = (PeerId, Result<Vec<BuildRecord>, DropReason>, bool);
        let swarm_index = self
            .inner
            .swarms
            .iter()
            .position(|x| std::ptr::eq(x, s))
            .expect("s is one of this node's swarms");
        let mut seen: HashSet<PeerId> = HashSet::new();
        let mut waiting: Vec<PeerId> = Vec::new();
        let mut answers: futures::stream::FuturesUnordered<BoxFuture<'_, Answer>> =
            futures::stream::FuturesUnordered::new();
        let ask = |peer: PeerId,
                   seen: &mut HashSet<PeerId>,
                   waiting: &mut Vec<PeerId>,
                   report: &mut RecordsReport|
         -> Option<BoxFuture<'_, Answer>> {
            if peer == self.inner.peer_id || !seen.insert(peer) || self.is_banned(&peer) {
                return None;
            }
            if self.skip_unreachable(&peer) {
                report.unreachable(peer);
                return None;
            }
            waiting.push(peer);
            // The request runs in a task of its own: when the caller stops waiting (its
            // policy met, its deadline passed) it still runs to its reply bound, so a
            // silent peer is remembered whoever gave up first.
            let request = tokio::spawn(self.clone().ask_peer(swarm_index, peer, key));
            let asked = tokio::time::Instant::now();
            let bound = self.inner.fetch.reply_bound;
            Some(
                async move {
                    let answer = request.await.unwrap_or_else(|e| {
                        Err(DropReason::Disconnected(format!(
                            "request task failed: {e}"
                        )))
                    });
                    (peer, answer, asked.elapsed() >= bound)
                }
                .boxed(),
            )
        };
        for p in hinted {
            if let Some(f) = ask(*p, &mut seen, &mut waiting, report) {
                answers.push(f);
            }
        }
        let (tx, mut found) = tokio::sync::mpsc::unbounded_channel();
        let limit = self.inner.fetch.max_providers.max(1) * 2;
        let mut lookup = Some(
            self.lookup_feeding(s, ProviderKey::Build(key), limit, Some(tx))
                .boxed(),
        );
        // The lookup starts after the hints' head start, or once they have all answered.
        let head_start = tokio::time::sleep(if answers.is_empty() {
            std::time::Duration::ZERO
        } else {
            HINT_HEAD_START
        });
        tokio::pin!(head_start);
        let mut started = false;
        let mut lookup_done = false;
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(365 * 24 * 3600);
        let until = tokio::time::sleep_until(deadline.unwrap_or(far));
        tokio::pin!(until);
        loop {
            if !started && answers.is_empty() {
                started = true;
            }
            if started && lookup_done && answers.is_empty() {
                return Ok(std::ops::ControlFlow::Continue(()));
            }
            tokio::select! {
                () = &mut until => {
                    debug!(swarm = %s.name, %key, "records: the deadline passed");
                    report.waited_out = true;
                    for peer in waiting {
                        report.unreachable(peer);
                        report.failures.push(PeerFailure {
                            peer,
                            reason: DropReason::Unanswered,
                        });
                    }
                    return Ok(std::ops::ControlFlow::Break(()));
                }
                () = &mut head_start, if !started => started = true,
                // Invariant: `lookup` is `Some` until `lookup_done`, which guards this.
                res = async { lookup.as_mut().expect("polled only while running").await },
                    if started && !lookup_done =>
                {
                    lookup_done = true;
                    lookup = None;
                    let l = res?;
                    for p in l.unreachable {
                        report.unreachable(p);
                    }
                    // Providers sent before the lookup ended are in the channel still.
                    while let Ok(p) = found.try_recv() {
                        if let Some(f) = ask(p, &mut seen, &mut waiting, report) {
                            answers.push(f);
                        }
                    }
                    for p in l.providers {
                        if let Some(f) = ask(p, &mut seen, &mut waiting, report) {
                            answers.push(f);
                        }
                    }
                }
                Some(p) = found.recv(), if started && !lookup_done => {
                    if let Some(f) = ask(p, &mut seen, &mut waiting, report) {
                        answers.push(f);
                    }
                }
                Some((peer, answer, whole_bound)) = answers.next(), if !answers.is_empty() => {
                    waiting.retain(|p| *p != peer);
                    match answer {
                        Ok(records) => {
                            for record in records {
                                let enc = record.encode();
                                if !report.records.iter().any(|r| r.record.encode() == enc) {
                                    report.records.push(FetchedRecord {
                                        swarm: s.name.clone(),
                                        peer,
                                        record,
                                    });
                                }
                            }
                            if !report.records.is_empty() && enough(&report.records) {
                                return Ok(std::ops::ControlFlow::Break(()));
                            }
                        }
                        Err(reason) => {
                            if matches!(reason, DropReason::Corrupt(_)) {
                                self.ban(peer);
                            }
                            if reason == DropReason::Unreachable {
                                report.unreachable(peer);
                                // Silent until the bound (not a dial refused at once).
                                report.waited_out |= whole_bound;
                            }
                            report.failures.push(PeerFailure { peer, reason });
                        }
                    }
                }
            }
        }
    }

    /// Asks `peer` of swarm `swarm` for records of `key` within the reply bound. A peer
    /// silent until the bound, or whose dial failed while the node has no connection to
    /// it, is put in back-off and the answer is [`DropReason::Unreachable`]; so is the
    /// answer of a request that failed because its peer went into back-off meanwhile.
    async fn ask_peer(
        self,
        swarm: usize,
        peer: PeerId,
        key: BuildKey,
    ) -> Result<Vec<BuildRecord>, DropReason> {
        let s = &self.inner.swarms[swarm];
        let bound = self.inner.fetch.reply_bound;
        let asked = Instant::now();
        match tokio::time::timeout(bound, self.records_retrying(s, peer, key)).await {
            Err(_) if self.inner.health.heard_since(&peer, asked) => {
                // It sent us blocks or answers meanwhile: busy (or we are), not gone.
                debug!(%peer, "no record answer within {} ms from a peer that is sending; not backing off", bound.as_millis());
                Err(DropReason::Unanswered)
            }
            Err(_) => {
                self.mark_unreachable(
                    peer,
                    &format!("no record answer within {} ms", bound.as_millis()),
                );
                Err(DropReason::Unreachable)
            }
            Ok(Err(DropReason::Disconnected(_)))
                if self.inner.health.backed_off(&peer, Instant::now()) =>
            {
                Err(DropReason::Unreachable)
            }
            Ok(Err(DropReason::Disconnected(why))) if !self.inner.health.connected(&peer) => {
                // Its dial failed (refused, no route; asked once more already).
                self.mark_unreachable(peer, &format!("record request failed: {why}"));
                Err(DropReason::Unreachable)
            }
            Ok(answer) => answer,
        }
    }

    /// [`Self::records_from`], asked once more when the connection closed under the
    /// exchange (a stream opened on a connection whose idle timeout fired at the same
    /// moment, on either side). The exchange is idempotent.
    async fn records_retrying(
        &self,
        s: &SwarmHandle,
        peer: PeerId,
        key: BuildKey,
    ) -> Result<Vec<BuildRecord>, DropReason> {
        match self.records_from(s, peer, key).await {
            Err(DropReason::Disconnected(m)) if m != OPEN_TIMED_OUT => {
                debug!(%peer, "connection closed during a record request ({m}); once more");
                tokio::time::sleep(RECONNECT_PAUSE).await;
                self.records_from(s, peer, key).await
            }
            other => other,
        }
    }

    async fn records_from(
        &self,
        s: &SwarmHandle,
        peer: PeerId,
        key: BuildKey,
    ) -> Result<Vec<BuildRecord>, DropReason> {
        let cfg = &self.inner.fetch;
        let mut control = s.control.clone();
        let mut stream = tokio::time::timeout(
            cfg.connect_timeout,
            control.open_stream(peer, wire::RECORDS_PROTOCOL),
        )
        .await
        .map_err(|_| DropReason::Disconnected(OPEN_TIMED_OUT.into()))?
        .map_err(|e| DropReason::Disconnected(e.to_string()))?;
        let raw = tokio::time::timeout(cfg.stall_timeout, async {
            stream
                .write_all(&wire::encode_records_request(&key))
                .await?;
            stream.flush().await?;
            stream.close().await?;
            let raw = wire::read_records_response(&mut stream).await?;
            // Nothing may follow the response.
            let mut extra = [0u8; 1];
            match stream.read(&mut extra).await {
                Ok(0) | Err(_) => Ok(raw),
                Ok(_) => Err(wire::WireError::Limit {
                    what: "bytes after the record response",
                    value: 1,
                    max: 0,
                }),
            }
        })
        .await
        .map_err(|_| DropReason::Stalled)?
        .map_err(|e| {
            if e.is_violation() {
                DropReason::Corrupt(e.to_string())
            } else {
                DropReason::Disconnected(e.to_string())
            }
        })?;
        self.inner.health.heard(peer, Instant::now());
        let mut records = Vec::with_capacity(raw.len());
        for bytes in raw {
            // Signature, version and labels are checked, and the record must be for `key`
            // (a valid record replayed for another key is rejected).
            let record = BuildRecord::decode_for(&bytes, key)
                .map_err(|e| DropReason::Corrupt(e.to_string()))?;
            records.push(record);
        }
        Ok(records)
    }

    /// Fetches artifact `root`: looks its providers up in each swarm in order and
    /// fetches from the first swarm that has any, moving to the next swarm if all of
    /// them fail. Verified blocks go to `sink`; blocks the node's source already holds
    /// are skipped.
    pub async fn fetch_artifact(
        &self,
        root: BlockId,
        sink: &dyn BlockSink,
    ) -> Result<FetchReport, FetchError> {
        let mut last = None;
        for s in self.reached() {
            let lookup = self
                .lookup(
                    s,
                    ProviderKey::Artifact(root),
                    self.inner.fetch.max_providers.max(1) * 2,
                )
                .await?;
            if lookup.providers.is_empty() {
                continue;
            }
            match self.fetch_via(s, root, lookup.providers, sink).await {
                Err(e @ FetchError::AllProvidersFailed { .. }) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or(FetchError::NoProviders { root }))
    }

    /// Fetches artifact `root` from the given providers of the named swarm, without a
    /// lookup.
    pub async fn fetch_artifact_from(
        &self,
        swarm: &str,
        root: BlockId,
        providers: &[PeerId],
        sink: &dyn BlockSink,
    ) -> Result<FetchReport, FetchError> {
        let s = self.reached_swarm(swarm)?;
        self.fetch_via(s, root, providers.to_vec(), sink).await
    }

    async fn fetch_via(
        &self,
        s: &SwarmHandle,
        root: BlockId,
        providers: Vec<PeerId>,
        sink: &dyn BlockSink,
    ) -> Result<FetchReport, FetchError> {
        let ban = |peer: PeerId| self.ban(peer);
        let heard = |peer: PeerId| self.inner.health.heard(peer, Instant::now());
        let providers: Vec<PeerId> = providers
            .into_iter()
            .filter(|p| *p != self.inner.peer_id && !self.is_banned(p) && !self.skip_unreachable(p))
            .collect();
        let (first, unconnected, relayed) = by_path(s, providers).await;
        let ctx = FetchCtx {
            swarm: &s.name,
            control: s.control.clone(),
            source: &*self.inner.source,
            cfg: &self.inner.fetch,
            ban: &ban,
            heard: &heard,
        };
        // Providers connected directly, or not yet, first, without waiting for the
        // others: a relayed one can only serve once hole punching made it direct.
        let mut failed = None;
        if !first.is_empty() {
            match fetch::fetch_artifact(&ctx, root, first, sink).await {
                Err(e @ FetchError::AllProvidersFailed { .. }) => failed = Some(e),
                other => return other,
            }
        }
        // Then the relayed ones, and the unconnected ones that failed (a dial may have
        // reached them only through a relay, where providers refuse block streams),
        // each once its connection is direct.
        let waiting: Vec<PeerId> = match failed {
            Some(_) => unconnected.into_iter().chain(relayed).collect(),
            None => relayed,
        };
        let waiting: Vec<PeerId> = waiting.into_iter().filter(|p| !self.is_banned(p)).collect();
        if waiting.is_empty()
            && let Some(e) = failed
        {
            return Err(e);
        }
        let punched = wait_direct(s, waiting).await;
        match failed {
            Some(e) if punched.is_empty() => Err(e),
            _ => fetch::fetch_artifact(&ctx, root, punched, sink).await,
        }
    }
}

/// How long a provider connected only through a relay may take to be reached directly
/// (hole punching: about one round trip through the relay, then a simultaneous dial)
/// before the fetch goes on without it.
const DIRECT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `p` is connected and only directly: libp2p-stream opens a stream on a
/// random connection to the peer, so one still relayed (the swarm closes it once a
/// direct one is up, which takes a moment) could carry blocks.
fn direct_only(conns: &[swarm::Connection], p: &PeerId) -> bool {
    let mut mine = conns.iter().filter(|c| c.peer == *p).peekable();
    mine.peek().is_some() && mine.all(|c| !c.relayed)
}

/// The providers by how this node reaches them: those reached only directly or not yet
/// at all, in the given order (asked first); of those, the ones not connected yet; and
/// those (also) reached through a relay. Blocks never stream over a relayed circuit
/// (relay v2 cuts it at 128 KiB or 2 min; specs/swarm.md §2.6), so the last are asked
/// only once hole punching made them direct ([`wait_direct`]).
async fn by_path(
    s: &SwarmHandle,
    providers: Vec<PeerId>,
) -> (Vec<PeerId>, Vec<PeerId>, Vec<PeerId>) {
    let Ok(conns) = s.request(|reply| Command::Connections { reply }).await else {
        return (providers, Vec::new(), Vec::new());
    };
    let (mut first, mut none, mut relayed) = (Vec::new(), Vec::new(), Vec::new());
    for p in providers {
        if !conns.iter().any(|c| c.peer == p) {
            none.push(p);
            first.push(p);
        } else if direct_only(&conns, &p) {
            first.push(p);
        } else {
            relayed.push(p);
        }
    }
    (first, none, relayed)
}

/// The providers of `waiting` connected only directly within [`DIRECT_WAIT`]; the
/// others are left out (symmetric NAT: hole punching fails).
async fn wait_direct(s: &SwarmHandle, mut waiting: Vec<PeerId>) -> Vec<PeerId> {
    let mut direct = Vec::new();
    let deadline = tokio::time::Instant::now() + DIRECT_WAIT;
    while !waiting.is_empty() {
        let Ok(conns) = s.request(|reply| Command::Connections { reply }).await else {
            break;
        };
        let (now_direct, still): (Vec<PeerId>, Vec<PeerId>) =
            waiting.into_iter().partition(|p| direct_only(&conns, p));
        direct.extend(now_direct);
        waiting = still;
        if waiting.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for p in &waiting {
        info!(peer = %p, "provider not reached directly (hole punching failed): skipped");
    }
    direct
}

/// An announcement whose key is already in the local provider store, with its DHT
/// query still running.
#[derive(Debug)]
pub struct Announcement {
    swarm: String,
    key: ProviderKey,
    reply: tokio::sync::oneshot::Receiver<Result<(), ProvideFailure>>,
}

impl Announcement {
    /// Waits for the DHT query to end; fails if it timed out (the key stays in the local
    /// provider store and Kademlia republishes it later) or the store was full.
    pub async fn done(self) -> Result<(), NetError> {
        match self.reply.await.map_err(|_| NetError::Stopped)? {
            Ok(()) => {
                debug!(swarm = %self.swarm, key = %self.key, "announced");
                Ok(())
            }
            Err(ProvideFailure::StoreFull) => Err(NetError::ProviderStoreFull {
                swarm: self.swarm,
                key: self.key.to_string(),
            }),
            Err(ProvideFailure::TimedOut) => Err(NetError::AnnounceTimedOut {
                swarm: self.swarm,
                key: self.key.to_string(),
            }),
        }
    }
}
