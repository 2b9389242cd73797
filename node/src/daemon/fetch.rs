//! Fetching an artifact from the swarms into the store: the one path that `Resolve`,
//! `Export` and prefetching share.
//!
//! Owns: [`Shared::fetch_and_register`] (fetch, register once complete and verified,
//! announce where it came from) and the retry of fetches whose connections failed.
//! Does not own: choosing the root (`resolve`) or where keys are announced in general
//! (`announce`).

use super::announce::Places;
use super::resolve::only_disconnects;
use super::*;

/// Peers in one swarm to fetch from before looking providers up in the DHT.
pub(super) type FetchHint<'a> = Option<(&'a str, &'a [PeerId])>;

/// Fetches artifact `root` into `sink`: first from `hint` (peers in a swarm that just
/// sent records naming it, which saves a DHT lookup), then through the DHT, retried
/// while every failure is a lost connection (a closed connection is replaced by a fresh
/// dial on the next attempt; blocks already received are kept, so the fetch resumes).
async fn fetch_artifact(
    net: &NodeHandle,
    root: BlockId,
    sink: &FetchSink<'_>,
    hint: FetchHint<'_>,
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

impl Shared {
    /// Fetches artifact `root` through `net` (from `hint` first) into the store,
    /// registers it once every block arrived verified, and announces it in the swarm
    /// it came from and only there. Received byte counts go to `progress`. The outer
    /// error is the store's; the inner one the fetch's.
    pub(super) async fn fetch_and_register(
        &self,
        net: &NodeHandle,
        root: BlockId,
        hint: FetchHint<'_>,
        progress: Option<tokio::sync::mpsc::UnboundedSender<u64>>,
    ) -> Result<Result<rdht_net::FetchReport, FetchError>, ApiError> {
        let session = self.store.session();
        let fetched = {
            let sink = FetchSink::new(&session, self.bytes_in.clone(), progress);
            fetch_artifact(net, root, &sink, hint).await
        };
        let report = match fetched {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        tokio::task::spawn_blocking(move || session.register(root, false))
            .await
            .map_err(|e| api_err(ErrorKind::Internal, format!("store task failed: {e}")))?
            .map_err(store_err)?;
        info!(%root, swarm = %report.swarm, blocks = report.blocks_fetched, bytes = report.bytes_fetched, wire_bytes = report.wire_bytes, "fetched artifact");
        self.announce_later(
            vec![ProviderKey::Artifact(root)],
            Places::origin(&report.swarm),
        );
        Ok(Ok(report))
    }
}
