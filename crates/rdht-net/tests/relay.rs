//! Which nodes offer relay v2 (issue 18, part 3): the relay server runs exactly when
//! `SwarmConfig::relay` is set, whether or not the node is an anchor, as a plain libp2p
//! peer sees it through identify (the protocols a node lists are the ones it serves).
//!
//! Does not cover: reservations and circuits behind NAT (testnet/tests/nat.rs), nor the
//! daemon's `relay` setting (node/src/config.rs), which sets this field.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, identify, noise, relay, tcp, yamux};
use rdht_net::MemoryBlocks;

const T: Duration = Duration::from_secs(30);

/// The protocols `addr` lists to a plain libp2p peer (TCP, noise, yamux, identify), once
/// `done` holds for them or `T` has passed: identify's first answer, then its pushes.
async fn protocols_of(addr: Multiaddr, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut probe = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            identify::Behaviour::new(identify::Config::new("/probe/1".into(), key.public()))
        })
        .unwrap()
        .build();
    probe.dial(addr).unwrap();
    let deadline = Instant::now() + T;
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match tokio::time::timeout(left, probe.select_next_some()).await {
            Ok(e) => e,
            Err(_) => return last.expect("identify never answered"),
        };
        if let SwarmEvent::Behaviour(
            identify::Event::Received { info, .. } | identify::Event::Pushed { info, .. },
        ) = event
        {
            let list: Vec<String> = info.protocols.iter().map(|p| p.to_string()).collect();
            if done(&list) {
                return list;
            }
            last = Some(list);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_server_runs_exactly_when_relay_is_set() {
    init_tracing();
    let hop = relay::HOP_PROTOCOL_NAME.to_string();
    for (anchor, relay, offers) in [
        (false, false, false),
        (true, false, false),
        (false, true, true),
        (true, true, true),
    ] {
        let mut cfg = swarm("public", vec![]);
        cfg.anchor = anchor;
        cfg.relay = relay;
        let n = node(vec![cfg], std::sync::Arc::new(MemoryBlocks::new())).await;
        let addr = n.listen_addrs().await.unwrap().remove(0).1.remove(0);
        // A relay on loopback is confirmed at once; wait for the hop protocol where
        // it is expected, and take identify's first answer where it is not.
        let list = protocols_of(addr, |l| !offers || l.contains(&hop)).await;
        assert_eq!(
            list.contains(&hop),
            offers,
            "anchor {anchor}, relay {relay}: {list:?}"
        );
        // The list is the node's own (it serves ping on every connection).
        assert!(list.iter().any(|p| p == "/ipfs/ping/1.0.0"), "{list:?}");
        n.shutdown().await;
    }
}
