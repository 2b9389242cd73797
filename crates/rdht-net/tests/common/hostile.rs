//! A hostile peer for the tests and the bench of issue 19, part 4: a real libp2p peer
//! on the same stack as a private swarm's nodes (TCP, pnet with the swarm's key, noise,
//! yamux), written here independently of rdht-net's own swarm, that opens streams as
//! fast as it can on every protocol a node serves (`/rdht/blocks/1`,
//! `/rdht/records/1`, `/rdht/kad/1.0.0`) and writes random bytes on each.
//!
//! Does not own: any assertion (the test and the bench make theirs).

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::core::{muxing::StreamMuxerBox, transport::Boxed, upgrade};
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Transport, noise, tcp, yamux};

/// The protocols the hostile peer sends garbage on.
pub const PROTOCOLS: [&str; 3] = ["/rdht/blocks/1", "/rdht/records/1", "/rdht/kad/1.0.0"];

/// Streams each target gets at once, per protocol.
pub const PER_PROTOCOL: usize = 16;

/// A running hostile peer; stops when dropped.
pub struct Hostile {
    /// Its peer id.
    pub peer: PeerId,
    /// Streams it opened and wrote garbage on.
    pub streams: Arc<AtomicU64>,
    /// Stream opens that failed (refused, not connected, banned).
    pub refused: Arc<AtomicU64>,
    /// Connections it dialled.
    pub dials: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn transport(key: &libp2p::identity::Keypair, psk: [u8; 32]) -> Boxed<(PeerId, StreamMuxerBox)> {
    let psk = PreSharedKey::new(psk);
    tcp::tokio::Transport::new(tcp::Config::new().nodelay(true))
        .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(key).unwrap())
        .multiplex(yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .boxed()
}

/// xorshift64: cheap bytes nobody chose.
fn garbage(state: &mut u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        v.extend_from_slice(&state.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Starts a hostile peer of the private swarm with key `psk` against `targets`: for
/// each target and protocol, [`PER_PROTOCOL`] loops open a stream, write 1 to 4 KiB
/// of random bytes, close it and open the next, without pause. A refused open is
/// retried after a millisecond; a connection that ends is dialled again at once.
pub fn start(psk: [u8; 32], targets: &[(PeerId, Multiaddr)]) -> Hostile {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| transport(key, psk))
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let peer = *swarm.local_peer_id();
    let control = swarm.behaviour().new_control();
    let stop = Arc::new(AtomicBool::new(false));
    let streams = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let dials = Arc::new(AtomicU64::new(0));
    let addrs: HashMap<PeerId, Multiaddr> = targets.iter().cloned().collect();
    let dialled = dials.clone();
    let mut tasks = vec![tokio::spawn(async move {
        let dial = |swarm: &mut libp2p::Swarm<libp2p_stream::Behaviour>, p: PeerId| {
            if let Some(a) = addrs.get(&p) {
                let opts = DialOpts::peer_id(p)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .addresses(vec![a.clone()])
                    .build();
                if swarm.dial(opts).is_ok() {
                    dialled.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        for p in addrs.keys().copied().collect::<Vec<_>>() {
            dial(&mut swarm, p);
        }
        // Whenever a connection to a target ends or fails, dial it again at once.
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionClosed {
                    peer_id,
                    num_established: 0,
                    ..
                }
                | SwarmEvent::OutgoingConnectionError {
                    peer_id: Some(peer_id),
                    ..
                } => dial(&mut swarm, peer_id),
                _ => {}
            }
        }
    })];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for (target, _) in targets {
        for proto in PROTOCOLS {
            for _ in 0..PER_PROTOCOL {
                seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
                let (mut control, stop, streams, refused) = (
                    control.clone(),
                    stop.clone(),
                    streams.clone(),
                    refused.clone(),
                );
                let (target, mut state) = (*target, seed | 1);
                let proto = StreamProtocol::new(proto);
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match control.open_stream(target, proto.clone()).await {
                            Ok(mut s) => {
                                let len = 1024 + (state % 3072) as usize;
                                let bytes = garbage(&mut state, len);
                                let _ = s.write_all(&bytes).await;
                                let _ = s.close().await;
                                streams.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                // Not connected (the driver is dialling): try again
                                // soon, without spinning a core on it.
                                refused.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                    }
                }));
            }
        }
    }
    Hostile {
        peer,
        streams,
        refused,
        dials,
        stop,
        tasks,
    }
}
