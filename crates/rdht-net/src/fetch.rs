//! The multi-provider artifact fetch: the manifest DAG first, then every file DAG,
//! spread over providers, each block verified on arrival.
//!
//! Owns: work units (one `DagVerifier` per DAG), per-provider workers, dropping and
//! banning providers, resuming a unit on another provider, hedging (an idle worker
//! takes back the units of a provider silent for `hedge_after`). Does not own: finding
//! providers (`node.rs`), wire layouts (`wire.rs`), what verification means (rdht-core).
//! Read first: [`fetch_artifact`]. Spec: `specs/swarm.md` §3.4–§3.6 and §8.
//!
//! Invariant: a block reaches the sink only after `DagVerifier::push` accepted it, so
//! corrupt bytes never leave this module.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use rdht_core::manifest::MAX_MANIFEST_LEN;
use rdht_core::{BlockId, DagVerifier, Encoded, Limits, Manifest};
use tokio::sync::Notify;
use tracing::{Instrument, debug, info, warn};

use crate::config::FetchConfig;
use crate::error::{DropReason, FetchError};
use crate::source::{BlockSink, BlockSource};
use crate::wire::{self, Frame};

/// What a finished fetch did.
#[derive(Debug, Clone, Default)]
pub struct FetchReport {
    /// The swarm the artifact came from.
    pub swarm: String,
    /// Distinct file DAGs in the manifest.
    pub files: usize,
    /// Blocks received from peers, verified and handed to the sink.
    pub blocks_fetched: u64,
    /// Bytes of those blocks.
    pub bytes_fetched: u64,
    /// Bytes received for them: LZ4 frames count their compressed length.
    pub wire_bytes: u64,
    /// Blocks found in the local source and not fetched.
    pub blocks_local: u64,
    /// Verified blocks received from each provider.
    pub by_peer: HashMap<PeerId, u64>,
    /// Providers dropped during the fetch, and why.
    pub dropped: Vec<(PeerId, DropReason)>,
    /// Providers banned for sending corrupt data (also listed in `dropped`).
    pub banned: Vec<PeerId>,
}

/// What one provider delivered: blocks, their bytes, and the bytes on the wire.
#[derive(Debug, Default, Clone, Copy)]
struct Got {
    blocks: u64,
    bytes: u64,
    wire: u64,
}

/// What a fetch needs from the node.
pub(crate) struct FetchCtx<'a> {
    pub(crate) swarm: &'a str,
    pub(crate) control: libp2p_stream::Control,
    pub(crate) source: &'a dyn BlockSource,
    pub(crate) cfg: &'a FetchConfig,
    pub(crate) ban: &'a (dyn Fn(PeerId) + Sync),
    /// Called for every block a peer sent (it is alive).
    pub(crate) heard: &'a (dyn Fn(PeerId) + Sync),
}

/// One DAG being verified, and, for the manifest, its blocks.
struct Unit {
    verifier: DagVerifier,
    size: u64,
    collected: Option<HashMap<BlockId, Bytes>>,
    /// Where the next leaf's data starts in the file.
    offset: u64,
}

impl Unit {
    fn new(root: BlockId, size: Option<u64>, limits: Limits, collect: bool) -> Unit {
        Unit {
            verifier: DagVerifier::new(root, size, limits),
            size: size.unwrap_or(0),
            collected: collect.then(HashMap::new),
            offset: 0,
        }
    }

    /// Verifies the next block; a file's leaf comes back with its offset in the file.
    fn accept(
        &mut self,
        encoded: Encoded,
    ) -> Result<(rdht_core::Block, Option<u64>), rdht_core::DagError> {
        let block = self.verifier.push_encoded(encoded)?;
        if let Some(c) = &mut self.collected {
            c.insert(block.id(), block.bytes().clone());
            return Ok((block, None));
        }
        let at = (block.kind() == rdht_core::BlockKind::Leaf).then(|| {
            let at = self.offset;
            self.offset += block.payload().len() as u64;
            at
        });
        Ok((block, at))
    }

    /// Hands a block `accept` returned to `sink`: a file's leaf with its place.
    fn deliver(
        &self,
        sink: &dyn BlockSink,
        block: rdht_core::Block,
        at: Option<u64>,
    ) -> std::io::Result<()> {
        match at {
            Some(offset) => sink.put_leaf(self.verifier.root(), self.size, offset, block),
            None => sink.put_block(block),
        }
    }

    /// Advances over blocks the local source already holds. Returns how many.
    fn advance_local(
        &mut self,
        source: &dyn BlockSource,
        root: BlockId,
    ) -> Result<u64, FetchError> {
        let mut n = 0;
        while let Some(id) = self.verifier.next_expected() {
            let encoded = source.get_block(&id).map_err(|source| FetchError::Source {
                root,
                block: id,
                source,
            })?;
            let Some(encoded) = encoded else { break };
            if let Err(e) = self.accept(encoded) {
                warn!(block = %id, "local block fails verification; fetching it: {e}");
                break;
            }
            n += 1;
        }
        Ok(n)
    }
}

/// The providers of one fetch and what happened to them.
struct Pool {
    peers: Vec<PeerId>,
    dropped: HashSet<PeerId>,
    tried: HashSet<PeerId>,
}

struct Work {
    queue: VecDeque<Unit>,
    in_flight: usize,
    done: Vec<Unit>,
    /// Verified blocks and bytes received from each provider, counted per batch so that
    /// a worker dropped while still opening a stream loses none of its earlier counts.
    received: HashMap<PeerId, Got>,
    /// Workers holding a batch, and when each last received a frame (or sent its
    /// request). A worker removed while its batch runs has been hedged: silent for
    /// `hedge_after` while another was idle, it gives its batch back.
    progress: HashMap<PeerId, Instant>,
}

struct Shared {
    work: Mutex<Work>,
    /// Work went back to the queue or was completed.
    notify: Notify,
    /// A worker was hedged (removed from `progress`).
    hedge: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Work> {
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum BatchError {
    Drop(DropReason),
    Fatal(FetchError),
}

struct WorkerEnd {
    peer: PeerId,
    result: Result<(), BatchError>,
}

/// Fetches artifact `root` from `providers`, delivering verified blocks to `sink`.
pub(crate) async fn fetch_artifact(
    ctx: &FetchCtx<'_>,
    root: BlockId,
    providers: Vec<PeerId>,
    sink: &dyn BlockSink,
) -> Result<FetchReport, FetchError> {
    let span = tracing::info_span!("fetch", %root, swarm = ctx.swarm);
    async move {
        let mut peers = Vec::new();
        for p in providers {
            if !peers.contains(&p) {
                peers.push(p);
            }
        }
        if peers.is_empty() {
            return Err(FetchError::NoProviders { root });
        }
        let mut pool = Pool {
            peers,
            dropped: HashSet::new(),
            tried: HashSet::new(),
        };
        let mut report = FetchReport {
            swarm: ctx.swarm.to_string(),
            ..FetchReport::default()
        };

        let limits = Limits {
            max_size: MAX_MANIFEST_LEN as u64,
            ..Limits::default()
        };
        let mut manifest_unit = Unit::new(root, None, limits, true);
        report.blocks_local += manifest_unit.advance_local(ctx.source, root)?;
        let mut units = vec![manifest_unit];
        if !units[0].verifier.is_complete() {
            units = run(ctx, root, units, &mut pool, sink, &mut report).await?;
        }
        let mut blocks = units.pop().and_then(|u| u.collected).unwrap_or_default();
        let manifest =
            Manifest::from_dag(root, &mut blocks).map_err(|e| FetchError::BadManifest {
                root,
                reason: e.to_string(),
            })?;

        let mut seen = HashSet::new();
        let mut units = Vec::new();
        for f in manifest.files() {
            if !seen.insert(f.root) {
                continue;
            }
            let mut u = Unit::new(f.root, Some(f.size), Limits::default(), false);
            report.blocks_local += u.advance_local(ctx.source, root)?;
            if !u.verifier.is_complete() {
                units.push(u);
            }
        }
        report.files = seen.len();
        if !units.is_empty() {
            run(ctx, root, units, &mut pool, sink, &mut report).await?;
        }
        info!(
            blocks = report.blocks_fetched,
            bytes = report.bytes_fetched,
            local = report.blocks_local,
            dropped = report.dropped.len(),
            "artifact fetched"
        );
        Ok(report)
    }
    .instrument(span)
    .await
}

/// Runs units to completion over the pool's providers; returns the completed units.
async fn run(
    ctx: &FetchCtx<'_>,
    root: BlockId,
    units: Vec<Unit>,
    pool: &mut Pool,
    sink: &dyn BlockSink,
    report: &mut FetchReport,
) -> Result<Vec<Unit>, FetchError> {
    let shared = Shared {
        work: Mutex::new(Work {
            queue: units.into(),
            in_flight: 0,
            done: Vec::new(),
            received: HashMap::new(),
            progress: HashMap::new(),
        }),
        notify: Notify::new(),
        hedge: Notify::new(),
    };
    let mut workers = FuturesUnordered::new();
    let mut candidates = pool
        .peers
        .iter()
        .copied()
        .filter(|p| !pool.dropped.contains(p))
        .collect::<Vec<_>>()
        .into_iter();
    let mut last = DropReason::Disconnected("no provider was usable".into());
    loop {
        // Keep up to max_providers workers while work remains and providers are left.
        let remaining = {
            let w = shared.lock();
            !w.queue.is_empty() || w.in_flight > 0
        };
        while remaining && workers.len() < ctx.cfg.max_providers.max(1) {
            let Some(peer) = candidates.next() else { break };
            pool.tried.insert(peer);
            workers.push(worker(peer, ctx, &shared, sink));
        }
        let Some(end) = workers.next().await else {
            break;
        };
        let end: WorkerEnd = end;
        match end.result {
            // A worker ends well only when every unit is done; workers still opening a
            // stream to a slow or unreachable provider hold nothing and are dropped.
            Ok(()) => break,
            Err(BatchError::Fatal(e)) => return Err(e),
            Err(BatchError::Drop(reason)) => {
                if matches!(reason, DropReason::Corrupt(_)) {
                    (ctx.ban)(end.peer);
                    report.banned.push(end.peer);
                }
                info!(peer = %end.peer, "provider dropped: {reason}");
                pool.dropped.insert(end.peer);
                report.dropped.push((end.peer, reason.clone()));
                last = reason;
            }
        }
    }
    drop(workers);
    let work = shared.work.into_inner().unwrap_or_else(|e| e.into_inner());
    for (peer, got) in work.received {
        report.blocks_fetched += got.blocks;
        report.bytes_fetched += got.bytes;
        report.wire_bytes += got.wire;
        if got.blocks > 0 {
            *report.by_peer.entry(peer).or_default() += got.blocks;
        }
    }
    if !work.queue.is_empty() {
        return Err(FetchError::AllProvidersFailed {
            root,
            tried: pool.tried.len(),
            last,
        });
    }
    Ok(work.done)
}

/// Takes batches from the queue and fetches them from `peer` until the work is done or
/// the peer fails. A stream to the peer is opened before a batch is taken, so a provider
/// that cannot be reached (cut off, dial timing out) never holds work the others could do.
async fn worker(
    peer: PeerId,
    ctx: &FetchCtx<'_>,
    shared: &Shared,
    sink: &dyn BlockSink,
) -> WorkerEnd {
    let mut end = WorkerEnd {
        peer,
        result: Ok(()),
    };
    // Whether the last failure was a lost connection already given a second chance.
    let mut reconnected = false;
    loop {
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (queued, silent_since) = {
            let w = shared.lock();
            if w.queue.is_empty() && w.in_flight == 0 {
                return end;
            }
            (!w.queue.is_empty(), w.progress.values().min().copied())
        };
        if !queued {
            // Idle: wait for work to come back, or take it back from a provider that has
            // been silent for `hedge_after` (frozen mid-stream, say).
            match silent_since {
                Some(t) => {
                    let at = tokio::time::Instant::from_std(t + ctx.cfg.hedge_after);
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => hedge_silent(shared, ctx.cfg.hedge_after),
                    }
                }
                None => notified.await,
            }
            continue;
        }
        let s = match open(peer, ctx).await {
            Ok(s) => s,
            Err(e) if !reconnected && lost_connection(&e) => {
                // The connection the stream was asked of closed under it (an idle
                // timeout firing as the request arrived); the next attempt dials anew.
                debug!(%peer, "connection closed while opening a stream; once more");
                reconnected = true;
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
            Err(e) => {
                end.result = Err(e);
                return end;
            }
        };
        let batch = {
            let mut w = shared.lock();
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            let mut wants = 0usize;
            while let Some(u) = w.queue.front() {
                let n = u.verifier.pending().count();
                if !batch.is_empty()
                    && (bytes >= ctx.cfg.batch_bytes || wants + n > wire::MAX_WANTS)
                {
                    break;
                }
                bytes += u.size.max(1);
                wants += n;
                batch.extend(w.queue.pop_front());
            }
            w.in_flight += batch.len();
            batch
        };
        if batch.is_empty() {
            // Another worker took the work while this stream opened. A server gives up on
            // a stream whose request is late, so it is not kept for later.
            drop(s);
            continue;
        }
        let mut batch = batch;
        let span = tracing::debug_span!("batch", %peer, units = batch.len());
        let mut got = Got::default();
        shared.lock().progress.insert(peer, Instant::now());
        let watch = Watch { peer, shared };
        let res = fetch_batch(s, ctx, &mut batch, sink, &mut got, &watch)
            .instrument(span)
            .await;
        {
            let mut w = shared.lock();
            w.progress.remove(&peer);
            let counts = w.received.entry(peer).or_default();
            counts.blocks += got.blocks;
            counts.bytes += got.bytes;
            counts.wire += got.wire;
            w.in_flight -= batch.len();
            for u in batch.into_iter().rev() {
                if u.verifier.is_complete() {
                    w.done.push(u);
                } else {
                    w.queue.push_front(u);
                }
            }
        }
        shared.notify.notify_waiters();
        match res {
            Ok(()) => reconnected = false,
            // Nothing arrived before the connection went away: the same race, on the
            // provider's side. The batch is back in the queue; ask again once.
            Err(e) if !reconnected && got.blocks == 0 && lost_connection(&e) => {
                debug!(%peer, "connection closed before the first block; once more");
                reconnected = true;
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
            Err(e) => {
                end.result = Err(e);
                return end;
            }
        }
    }
}

/// Tells every worker that has been silent for `after` to give its batch back.
fn hedge_silent(shared: &Shared, after: std::time::Duration) {
    let now = Instant::now();
    let mut w = shared.lock();
    let before = w.progress.len();
    w.progress.retain(|p, t| {
        let silent = now.duration_since(*t) >= after;
        if silent {
            info!(peer = %p, ?after, "provider silent while another is idle; resuming its DAGs elsewhere");
        }
        !silent
    });
    if w.progress.len() < before {
        drop(w);
        shared.hedge.notify_waiters();
    }
}

/// A batch's link to the shared state: records progress, learns of being hedged.
struct Watch<'a> {
    peer: PeerId,
    shared: &'a Shared,
}

impl Watch<'_> {
    fn frame_arrived(&self) {
        if let Some(t) = self.shared.lock().progress.get_mut(&self.peer) {
            *t = Instant::now();
        }
    }

    fn hedged(&self) -> bool {
        !self.shared.lock().progress.contains_key(&self.peer)
    }
}

/// Whether a batch failed because its connection closed (not a stall, corruption or a
/// refusal by the provider).
fn lost_connection(e: &BatchError) -> bool {
    matches!(e, BatchError::Drop(DropReason::Disconnected(m)) if m != OPEN_TIMED_OUT)
}

/// How long to wait before asking a provider again after its connection closed under a
/// request: until the swarm has processed the closure, a new stream request would go to
/// the same dead connection (libp2p-stream picks among the connections it knows).
pub(crate) const RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The reason given when a stream could not be opened within the connect timeout.
pub(crate) const OPEN_TIMED_OUT: &str = "opening a stream timed out";

/// Opens a block stream to `peer` (dialing it if needed) within the connect timeout.
async fn open(peer: PeerId, ctx: &FetchCtx<'_>) -> Result<libp2p::Stream, BatchError> {
    let mut control = ctx.control.clone();
    tokio::time::timeout(
        ctx.cfg.connect_timeout,
        control.open_stream(peer, wire::BLOCKS_PROTOCOL),
    )
    .await
    .map_err(|_| BatchError::Drop(DropReason::Disconnected(OPEN_TIMED_OUT.into())))?
    .map_err(|e| BatchError::Drop(DropReason::Disconnected(e.to_string())))
}

fn io_drop(e: std::io::Error) -> BatchError {
    BatchError::Drop(DropReason::Disconnected(e.to_string()))
}

/// One request on `stream`: the pending subtrees of every unit in `batch`, streamed in
/// order.
async fn fetch_batch(
    mut stream: libp2p::Stream,
    ctx: &FetchCtx<'_>,
    batch: &mut [Unit],
    sink: &dyn BlockSink,
    got: &mut Got,
    watch: &Watch<'_>,
) -> Result<(), BatchError> {
    let wants: Vec<BlockId> = batch.iter().flat_map(|u| u.verifier.pending()).collect();
    debug!(wants = wants.len(), "requesting blocks");
    let request = wire::encode_block_request(&wants);
    // Closing only ends our side of the stream; the response is read from the same one
    // (no split, so no lock between the two halves on every read).
    let send = tokio::time::timeout(ctx.cfg.stall_timeout, async {
        stream.write_all(&request).await?;
        stream.flush().await?;
        stream.close().await
    });
    unless_hedged(send, watch)
        .await?
        .map_err(|_| BatchError::Drop(DropReason::Stalled))?
        .map_err(io_drop)?;

    let mut r = stream;
    let stall = ctx.cfg.stall_timeout;
    for unit in batch.iter_mut() {
        while !unit.verifier.is_complete() {
            let frame = read(&mut r, stall, watch).await?;
            match frame {
                Frame::Block(encoded) => {
                    (ctx.heard)(watch.peer);
                    let wire = encoded.stored_len() as u64;
                    let (block, at) = unit
                        .accept(encoded)
                        .map_err(|e| BatchError::Drop(DropReason::Corrupt(e.to_string())))?;
                    let id = block.id();
                    let len = block.bytes().len() as u64;
                    unit.deliver(sink, block, at).map_err(|source| {
                        BatchError::Fatal(FetchError::Sink {
                            root: unit.verifier.root(),
                            block: id,
                            source,
                        })
                    })?;
                    got.blocks += 1;
                    got.bytes += len;
                    got.wire += wire;
                }
                Frame::Missing(id) => return Err(BatchError::Drop(DropReason::Missing(id))),
                Frame::End => {
                    return Err(BatchError::Drop(DropReason::Corrupt(
                        "the stream ended before the requested DAGs were complete".into(),
                    )));
                }
            }
        }
    }
    match read(&mut r, stall, watch).await? {
        Frame::End => Ok(()),
        _ => Err(BatchError::Drop(DropReason::Corrupt(
            "frames after the last requested block".into(),
        ))),
    }
}

/// Runs `fut` unless or until the batch is hedged (then it is dropped: stalled).
async fn unless_hedged<T>(
    fut: impl std::future::Future<Output = T>,
    watch: &Watch<'_>,
) -> Result<T, BatchError> {
    tokio::pin!(fut);
    loop {
        let hedged = watch.shared.hedge.notified();
        tokio::pin!(hedged);
        hedged.as_mut().enable();
        if watch.hedged() {
            return Err(BatchError::Drop(DropReason::Stalled));
        }
        tokio::select! {
            biased;
            res = &mut fut => return Ok(res),
            _ = hedged => {}
        }
    }
}

/// The next frame, within the stall timeout; a hedged batch ends as stalled (the
/// partial frame is dropped with the stream; the verifiers never saw it).
async fn read<R: futures::AsyncRead + Unpin>(
    r: &mut R,
    stall: std::time::Duration,
    watch: &Watch<'_>,
) -> Result<Frame, BatchError> {
    let res = unless_hedged(tokio::time::timeout(stall, wire::read_frame(r)), watch).await?;
    match res {
        Err(_) => Err(BatchError::Drop(DropReason::Stalled)),
        Ok(Err(e)) if e.is_violation() => Err(BatchError::Drop(DropReason::Corrupt(e.to_string()))),
        Ok(Err(e)) => Err(BatchError::Drop(DropReason::Disconnected(e.to_string()))),
        Ok(Ok(f)) => {
            watch.frame_arrived();
            Ok(f)
        }
    }
}
