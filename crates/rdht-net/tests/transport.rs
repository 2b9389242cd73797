//! Transports and reachability of rdht-net (issue 18), in-process on loopback: the
//! public swarm over QUIC and over IPv6 TCP, a private swarm refusing QUIC, the
//! Kademlia mode following confirmed addresses, and connections listed direct.
//!
//! Does not cover: NAT (testnet/tests/nat.rs runs daemons behind NAT routers).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use libp2p::Multiaddr;
use rdht_net::{MemoryBlocks, NetError, ProviderKey, Reachability, SwarmConfig, SwarmKey};

const T: Duration = Duration::from_secs(30);

fn listening_on(name: &str, addrs: &[&str]) -> SwarmConfig {
    let mut c = swarm(name, vec![]);
    c.listen = addrs.iter().map(|a| a.parse().unwrap()).collect();
    c
}

fn has(addr: &Multiaddr, proto: &str) -> bool {
    addr.to_string().contains(proto)
}

/// The provider listens on QUIC (IPv4) and TCP (IPv6); one fetcher joins through each
/// address and fetches the artifact over that transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_public_swarm_fetches_over_quic_and_over_ipv6_tcp() {
    init_tracing();
    let art = Artifact::new(7, &[300_000, 40_000]);
    let provider = node(
        vec![listening_on(
            "public",
            &["/ip4/127.0.0.1/udp/0/quic-v1", "/ip6/::1/tcp/0"],
        )],
        art.store(),
    )
    .await;
    let addrs = provider.listen_addrs().await.unwrap().remove(0).1;
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert_eq!(
        provider
            .provide(ProviderKey::Artifact(art.root))
            .await
            .unwrap(),
        ["public"]
    );
    for (proto, listen) in [
        ("/quic-v1", "/ip4/127.0.0.1/udp/0/quic-v1"),
        ("/ip6/::1/tcp/", "/ip6/::1/tcp/0"),
    ] {
        let via = addrs.iter().find(|a| has(a, proto)).unwrap().clone();
        let boot = rdht_net::BootstrapPeer {
            peer: provider.peer_id(),
            addr: via,
        };
        let mut cfg = listening_on("public", &[listen]);
        cfg.bootstrap = vec![boot];
        let sink = Arc::new(MemoryBlocks::new());
        let fetcher = node(vec![cfg], sink.clone()).await;
        let lookup = eventually(T, "the provider to be found", || async {
            let l = fetcher
                .find_providers(ProviderKey::Artifact(art.root))
                .await
                .unwrap()?;
            l.providers.contains(&provider.peer_id()).then_some(l)
        })
        .await;
        assert_eq!(lookup.providers, [provider.peer_id()]);
        let report = fetcher.fetch_artifact(art.root, &*sink).await.unwrap();
        assert_eq!(report.blocks_fetched as usize, art.blocks.len());
        art.assert_exactly_in(&sink);
        // Every connection to the provider used this transport, directly.
        let conns = fetcher.connections().await.unwrap().remove(0).1;
        let to_provider: Vec<_> = conns
            .iter()
            .filter(|c| c.peer == provider.peer_id())
            .collect();
        assert!(!to_provider.is_empty(), "{conns:?}");
        for c in to_provider {
            assert!(has(&c.addr, proto), "{proto}: {c:?}");
            assert!(!c.relayed, "{c:?}");
        }
        fetcher.shutdown().await;
    }
    provider.shutdown().await;
}

/// pnet cannot wrap QUIC: a private swarm with a QUIC listen address does not start,
/// and the error names the address and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_swarm_refuses_a_quic_listen_address() {
    let mut cfg = listening_on("private", &["/ip4/127.0.0.1/udp/0/quic-v1"]);
    cfg.key = Some(SwarmKey::from_bytes([9; 32]));
    let started =
        rdht_net::NodeHandle::start(rdht_net::NodeConfig::new(vec![cfg]), art_store()).await;
    match started {
        Err(NetError::Listen { addr, reason, .. }) => {
            assert_eq!(addr.to_string(), "/ip4/127.0.0.1/udp/0/quic-v1");
            assert!(reason.contains("pnet"), "{reason}");
            assert!(reason.contains("rust-libp2p#3275"), "{reason}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a private swarm started on QUIC"),
    }
}

fn art_store() -> Arc<MemoryBlocks> {
    Arc::new(MemoryBlocks::new())
}

/// A node listening on loopback only is reachable by every peer that can know of it:
/// confirmed, DHT server. A node that also listens on a routable address (0.0.0.0)
/// stays a DHT client until something confirms one of its addresses (AutoNAT v2 needs a
/// peer; it has none), and its reachability is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dht_serves_only_from_a_confirmed_address() {
    let local = node(vec![swarm("public", vec![])], art_store()).await;
    let reach = local.reach().await.unwrap().remove(0);
    assert_eq!(reach.reachability, Reachability::Public);
    assert!(reach.kad_server);
    assert_eq!(reach.confirmed.len(), 1, "{:?}", reach.confirmed);
    assert!(has(&reach.confirmed[0], "/ip4/127.0.0.1/tcp/"));

    let mut wide = listening_on("public", &["/ip4/0.0.0.0/tcp/0"]);
    // No gateway search from a test: it would send multicast beyond loopback.
    wide.upnp = false;
    let wide = node(vec![wide], art_store()).await;
    let reach = wide.reach().await.unwrap().remove(0);
    assert_eq!(reach.reachability, Reachability::Unknown);
    assert!(!reach.kad_server);
    assert!(reach.confirmed.is_empty(), "{:?}", reach.confirmed);
    // An anchor serves the DHT whatever it knows of its addresses.
    let mut anchor = listening_on("public", &["/ip4/0.0.0.0/tcp/0"]);
    anchor.upnp = false;
    anchor.anchor = true;
    let anchor = node(vec![anchor], art_store()).await;
    assert!(anchor.reach().await.unwrap()[0].kad_server);
    for n in [local, wide, anchor] {
        n.shutdown().await;
    }
}
