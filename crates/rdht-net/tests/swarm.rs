//! Multi-node tests of rdht-net: in-process nodes on 127.0.0.1:0.
//!
//! Covers DHT discovery and fetch across a 10-node swarm, failover when a provider dies
//! mid-fetch, banning a corrupting provider, private swarms (pnet), announce isolation
//! between swarms, and the records protocol. Does not cover: throughput (see benches).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rdht_net::{MemoryBlocks, ProviderKey};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_node_swarm_finds_and_fetches_through_the_dht() {
    init_tracing();
    let art = Artifact::new(1, &[100_000, 16 * 1024 * 409 + 1, 0, 5_000]);
    let publisher = node(vec![swarm("public", vec![])], art.store()).await;
    let mut nodes = vec![publisher.clone()];
    let mut stores = vec![];
    for i in 1..10 {
        // Node 2 joins through node 1; every later node joins through its predecessor,
        // so node 10 never learns node 1's address from the test.
        let via = addr(&nodes[i - 1], "public").await;
        let store = Arc::new(MemoryBlocks::new());
        nodes.push(node(vec![swarm("public", vec![via])], store.clone()).await);
        stores.push(store);
    }
    let last = nodes[9].clone();
    let sink = stores[8].clone();

    assert_eq!(
        publisher
            .provide(ProviderKey::Artifact(art.root))
            .await
            .unwrap(),
        ["public"]
    );
    let lookup = eventually(T, "node 10 to find the provider", || async {
        let l = last
            .find_providers(ProviderKey::Artifact(art.root))
            .await
            .unwrap()?;
        l.providers.contains(&publisher.peer_id()).then_some(l)
    })
    .await;
    assert_eq!(lookup.swarm, "public");
    assert_eq!(lookup.providers, [publisher.peer_id()]);

    let report = last.fetch_artifact(art.root, &*sink).await.unwrap();
    assert_eq!(report.blocks_fetched as usize, art.blocks.len());
    assert_eq!(report.files, 4);
    assert_eq!(report.blocks_local, 0);
    assert_eq!(
        report.by_peer.get(&publisher.peer_id()).copied(),
        Some(art.blocks.len() as u64)
    );
    assert!(report.dropped.is_empty());
    art.assert_exactly_in(&sink);

    // A second fetch finds everything locally and asks nobody for blocks.
    let again = last.fetch_artifact(art.root, &*sink).await.unwrap();
    assert_eq!(again.blocks_fetched, 0);
    assert_eq!(again.blocks_local as usize, art.blocks.len());

    for n in &nodes {
        n.shutdown().await;
    }
}
