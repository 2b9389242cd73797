//! Garbage from a peer at volume (issue 19, part 4): a real libp2p peer of the private
//! swarm (`common/hostile.rs`) opens streams as fast as it can on every protocol the
//! nodes serve and writes random bytes on each, at a provider and at the node fetching
//! from it. Both ban it, the ban holds while it keeps redialling, and the honest fetch
//! completes with every block verified. Its speed is the bench's (`benches/garbage.rs`),
//! never asserted here.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use rdht_net::{MemoryBlocks, NodeHandle, PeerId, ProviderKey, SwarmKey};

const T: Duration = Duration::from_secs(60);
const KEY: [u8; 32] = [19; 32];

fn private(boot: Vec<rdht_net::BootstrapPeer>) -> rdht_net::SwarmConfig {
    let mut s = swarm("private", boot);
    s.key = Some(SwarmKey::from_bytes(KEY));
    s
}

async fn connected(node: &NodeHandle, peer: PeerId) -> bool {
    node.peers().await.unwrap()[0].1.contains(&peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_sending_garbage_on_every_protocol_is_banned_while_an_honest_fetch_completes() {
    init_tracing();
    let art = Artifact::new(19, &[12 << 20, 3 << 20, 40_000]);
    let provider = node(vec![private(vec![])], art.store()).await;
    let boot = addr(&provider, "private").await;
    let fetcher = node(
        vec![private(vec![boot.clone()])],
        Arc::new(MemoryBlocks::new()),
    )
    .await;
    let at_fetcher = addr(&fetcher, "private").await;
    provider
        .provide(ProviderKey::Artifact(art.root))
        .await
        .unwrap();

    let hostile = hostile::start(
        KEY,
        &[
            (provider.peer_id(), boot.addr.clone()),
            (fetcher.peer_id(), at_fetcher.addr.clone()),
        ],
    );
    let sink = MemoryBlocks::new();
    let report = fetcher
        .fetch_artifact_from("private", art.root, &[provider.peer_id()], &sink)
        .await
        .unwrap();
    art.assert_exactly_in(&sink);
    assert!(report.banned.is_empty(), "{report:?}");

    // Both nodes ban it (the first malformed request does) and keep it out.
    for n in [&provider, &fetcher] {
        eventually(T, "the hostile peer to be banned", || async {
            n.banned_peers().contains(&hostile.peer).then_some(())
        })
        .await;
    }
    assert!(!provider.banned_peers().contains(&fetcher.peer_id()));
    assert!(hostile.streams.load(Ordering::Relaxed) > 0);
    // It keeps dialling: every connection is refused now, and no stream gets through.
    let dials = hostile.dials.load(Ordering::Relaxed);
    eventually(T, "the hostile peer to keep dialling", || async {
        (hostile.dials.load(Ordering::Relaxed) > dials + 20).then_some(())
    })
    .await;
    let streams = hostile.streams.load(Ordering::Relaxed);
    let dials = hostile.dials.load(Ordering::Relaxed);
    eventually(T, "many more refused connections", || async {
        (hostile.dials.load(Ordering::Relaxed) > dials + 100).then_some(())
    })
    .await;
    assert_eq!(
        hostile.streams.load(Ordering::Relaxed),
        streams,
        "a banned peer opened streams"
    );
    assert!(!connected(&provider, hostile.peer).await);
    assert!(!connected(&fetcher, hostile.peer).await);

    // The two honest nodes still work together: a second fetch of new content.
    let more = Artifact::new(20, &[2 << 20]);
    let provider2 = node(vec![private(vec![boot.clone()])], more.store()).await;
    provider2
        .provide(ProviderKey::Artifact(more.root))
        .await
        .unwrap();
    let sink = MemoryBlocks::new();
    fetcher
        .fetch_artifact_from("private", more.root, &[provider2.peer_id()], &sink)
        .await
        .unwrap();
    more.assert_exactly_in(&sink);
    drop(hostile);
    for n in [provider2, fetcher, provider] {
        n.shutdown().await;
    }
}
