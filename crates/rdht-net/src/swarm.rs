//! One libp2p swarm: transport (public: QUIC or TCP with noise and yamux; private: TCP,
//! pnet, noise, yamux; both under libp2p's DNS resolution), behaviour (Kademlia, in
//! server mode only while a non-relayed address is confirmed; identify feeding Kademlia;
//! AutoNAT v2 client and server; UPnP; ping; streams; block list; the back-off guard of
//! `health.rs`), start-up (listen, bootstrap) and the task that owns the `Swarm` and
//! answers commands.
//!
//! Owns: [`SwarmHandle`], the command loop, reachability (which addresses are confirmed,
//! and so the Kademlia mode), serving inbound block and record streams. Does not own:
//! fetching (see `fetch.rs`), deciding which swarm to ask (`node.rs`).
//! Spec: `specs/swarm.md` §2 (transport), §2.3 (reachability), §3–§4 (serving), §6
//! (announce, provider TTL, back-off), §8 (bans).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::Either;
use futures::io::BufWriter;
use futures::{AsyncWriteExt, StreamExt};
use libp2p::core::transport::{Boxed, MemoryTransport, OrTransport};
use libp2p::core::{muxing::StreamMuxerBox, upgrade};
use libp2p::identity::Keypair;
use libp2p::kad;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig, RecordStore};
use libp2p::multiaddr::Protocol;
use libp2p::pnet::PnetConfig;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Stream, Swarm, Transport, allow_block_list, autonat, connection_limits,
    dcutr, dns, identify, noise, ping, quic, relay, tcp, upnp, yamux,
};
use rdht_core::block::INTERIOR_TAG;
use rdht_core::{Block, Encoded};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{AnnouncePolicy, SwarmConfig, TransportKind};
use crate::error::NetError;
use crate::health::{Guard, Health};
use crate::source::BlockSource;
use crate::wire::{self, Frame, ProviderKey};

/// How often the AutoNAT v2 client tests new candidate addresses (libp2p's default is
/// 5 s). A tick with no untested candidate sends nothing, so a short period costs
/// nothing and lets a fresh swarm confirm its nodes, and turn their DHT to server mode,
/// about a second after they connect.
const AUTONAT_PROBE: Duration = Duration::from_secs(1);
/// How long a bootstrap dial over QUIC goes alone before the peer's other addresses
/// (TCP) are dialled too: go-libp2p's ranking delay for TCP after QUIC.
const QUIC_HEAD_START: Duration = Duration::from_millis(250);
/// How long a node whose reachability is still unknown waits before it reserves
/// itself on relays.
const UNKNOWN_GRACE: Duration = Duration::from_secs(10);
/// Relays a node behind NAT keeps a reservation on.
const RELAYS: usize = 2;
/// Buffer of the block stream writer.
const WRITE_BUFFER: usize = 256 * 1024;
/// How long a requester may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Inbound block and record streams one peer may have served at once (of the swarm's
/// `max_inbound_streams`): one peer cannot take every slot (specs/swarm.md §2.5).
const MAX_INBOUND_STREAMS_PER_PEER: usize = 128;

/// The behaviours of one swarm.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    limits: connection_limits::Behaviour,
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Refuses dials to peers in back-off; learns from dial failures and connections.
    guard: Guard,
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
    /// Asks AutoNAT servers among our peers to dial our candidate addresses back.
    autonat_client: autonat::v2::client::Behaviour,
    /// Dials back the addresses other peers ask about.
    autonat_server: autonat::v2::server::Behaviour,
    /// Maps listen ports on an IGD gateway; off when listening on loopback only.
    upnp: Toggle<upnp::tokio::Behaviour>,
    /// Reservations on relays and circuits through them (relay v2 client).
    relay_client: relay::client::Behaviour,
    /// Relays circuits for other peers (relay v2 server): only with `relay` set.
    relay_server: Toggle<relay::Behaviour>,
    /// Turns relayed connections into direct ones (hole punching).
    dcutr: dcutr::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// Whether this node can be dialled from outside its network, as far as it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// No address tested yet.
    Unknown,
    /// At least one non-relayed address is confirmed (by AutoNAT, UPnP, the operator,
    /// or because it is loopback).
    Public,
    /// Addresses were tested and none could be dialled back: behind NAT or a firewall.
    Private,
}

impl std::fmt::Display for Reachability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reachability::Unknown => "unknown",
            Reachability::Public => "public",
            Reachability::Private => "private",
        })
    }
}

/// One swarm's view of its own reachability.
#[derive(Debug, Clone)]
pub struct SwarmReach {
    /// The swarm.
    pub swarm: String,
    /// What the node knows.
    pub reachability: Reachability,
    /// Whether Kademlia runs in server mode (answers other peers' queries).
    pub kad_server: bool,
    /// The confirmed addresses, sorted.
    pub confirmed: Vec<Multiaddr>,
}

/// One open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The peer.
    pub peer: PeerId,
    /// Its address on this connection.
    pub addr: Multiaddr,
    /// Whether the connection runs through a relay (`/p2p-circuit`).
    pub relayed: bool,
}

/// Whether `addr` goes through a relay.
pub(crate) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The peer's address on a connection, as listed and as [`is_relayed`] reads it. On a
/// circuit a relay brought us (we listen through the relay), libp2p gives the remote
/// address as `/p2p/<peer>` alone; the circuit is in our local (relayed listen) address,
/// so the peer is listed as reached through that relay: `<local>/p2p/<peer>`.
fn connection_addr(endpoint: &libp2p::core::ConnectedPoint, peer: PeerId) -> Multiaddr {
    match endpoint {
        libp2p::core::ConnectedPoint::Listener { local_addr, .. } if is_relayed(local_addr) => {
            local_addr.clone().with(Protocol::P2p(peer))
        }
        other => other.get_remote_address().clone(),
    }
}

/// Whether `addr` is loopback or in-process (memory). A swarm that listens on such
/// addresses only is reachable by every peer that can learn of it (on this host, in
/// this process), so they count as confirmed; a node that also listens elsewhere
/// (`0.0.0.0` expands to loopback too) must have its other addresses confirmed.
fn self_evident(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        Protocol::Memory(_) => true,
        _ => false,
    })
}

/// Whether `addr` is an IPv6 address.
fn is_ip6(addr: &Multiaddr) -> bool {
    matches!(addr.iter().next(), Some(Protocol::Ip6(_)))
}

/// Whether `addr` uses QUIC.
fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Quic))
}

/// The outcome of one provider lookup.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The swarm asked.
    pub swarm: String,
    /// Providers found (not us, not banned, not in back-off), in discovery order.
    pub providers: Vec<PeerId>,
    /// Providers found that are in back-off (remembered as unreachable): not dialled.
    pub unreachable: Vec<PeerId>,
    /// Wall time of the lookup.
    pub duration: Duration,
    /// Kademlia requests sent (a proxy for hops: iterative lookups send about α per hop).
    pub requests: u32,
    /// Requests that were answered.
    pub successes: u32,
}

/// Why an announcement failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProvideFailure {
    /// The local provider store is full.
    StoreFull,
    /// The DHT query timed out before the record was sent to the closest peers.
    TimedOut,
}

pub(crate) enum Command {
    Provide {
        key: ProviderKey,
        /// Sent once the key is in the local provider store (or refused).
        started: oneshot::Sender<()>,
        reply: oneshot::Sender<Result<(), ProvideFailure>>,
    },
    FindProviders {
        key: ProviderKey,
        limit: usize,
        /// Each reachable provider as soon as it is found.
        found: Option<mpsc::UnboundedSender<PeerId>>,
        reply: oneshot::Sender<Lookup>,
    },
    Bootstrap {
        reply: oneshot::Sender<()>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Connections {
        reply: oneshot::Sender<Vec<Connection>>,
    },
    Reach {
        reply: oneshot::Sender<SwarmReach>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Ban {
        peer: PeerId,
        until: Instant,
    },
    /// The peer went into back-off: close what is left of its connections and drop it
    /// from the routing table (it is added again when it connects).
    Unreachable {
        peer: PeerId,
    },
    Shutdown,
}

/// A running swarm: the command channel to its task and its stream control.
pub(crate) struct SwarmHandle {
    pub(crate) name: String,
    pub(crate) announce: AnnouncePolicy,
    pub(crate) control: libp2p_stream::Control,
    /// Provider lookups started in this swarm (`NodeHandle::lookups`).
    pub(crate) lookups: std::sync::atomic::AtomicU64,
    cmd: mpsc::Sender<Command>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SwarmHandle {
    pub(crate) async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Sends the command made by `make` and returns the receiver of its reply without
    /// waiting for it.
    pub(crate) async fn request_later<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<oneshot::Receiver<T>, NetError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        Ok(rx)
    }

    pub(crate) fn ban(&self, peer: PeerId, until: Instant) {
        // A full or closed channel means the task is busy or gone; the fetch has already
        // dropped the peer, and the node-level ban list still filters it.
        let _ = self.cmd.try_send(Command::Ban { peer, until });
    }

    pub(crate) fn unreachable(&self, peer: PeerId) {
        // As for bans: a full or closed channel leaves the node-level memory in charge.
        let _ = self.cmd.try_send(Command::Unreachable { peer });
    }

    pub(crate) async fn shutdown(&self) {
        let _ = self.cmd.send(Command::Shutdown).await;
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

fn build_transport(
    cfg: &SwarmConfig,
    keypair: &Keypair,
    relayed: relay::client::Transport,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, NetError> {
    let psk = cfg.key.map(|k| k.psk());
    let noise = noise::Config::new(keypair).map_err(|e| NetError::Transport {
        swarm: cfg.name.clone(),
        reason: e.to_string(),
    })?;
    // Circuits through a relay run noise and yamux end to end; the hops to the relay
    // are the relay's own connections (pnet-protected in a private swarm).
    let relayed = relayed
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise.clone())
        .multiplex(yamux::Config::default())
        .timeout(Duration::from_secs(20));
    let direct = match cfg.transport {
        TransportKind::Tcp => {
            let base = || {
                let tcp = secure(
                    tcp::tokio::Transport::new(tcp::Config::new().nodelay(true)),
                    psk,
                    noise.clone(),
                );
                // pnet cannot wrap QUIC (rust-libp2p#3275): private swarms are TCP only.
                match psk {
                    Some(_) => tcp,
                    None => {
                        let quic = quic::tokio::Transport::new(quic::Config::new(keypair))
                            .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)));
                        OrTransport::new(quic, tcp)
                            .map(|either, _| either.into_inner())
                            .boxed()
                    }
                }
            };
            match dns::tokio::Transport::system(base()) {
                Ok(dns) => dns.boxed(),
                Err(e) => {
                    // No resolver configuration: addresses still work, names do not.
                    warn!(swarm = %cfg.name, "no DNS resolver (/etc/resolv.conf): {e}; /dns and /dnsaddr addresses will not resolve");
                    base()
                }
            }
        }
        TransportKind::Memory => secure(MemoryTransport::default(), psk, noise),
    };
    Ok(OrTransport::new(relayed, direct)
        .map(|either, _| match either {
            Either::Left((peer, muxer)) => (peer, StreamMuxerBox::new(muxer)),
            Either::Right(out) => out,
        })
        .boxed())
}

/// The layers above the byte transport, the same for TCP and memory: optional pnet,
/// noise, yamux.
fn secure<T>(
    base: T,
    psk: Option<libp2p::pnet::PreSharedKey>,
    noise: noise::Config,
) -> Boxed<(PeerId, StreamMuxerBox)>
where
    T: Transport + Send + Unpin + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Send + Unpin + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    base.and_then(move |socket, _| async move {
        match psk {
            Some(psk) => PnetConfig::new(psk)
                .handshake(socket)
                .await
                .map(Either::Left)
                .map_err(std::io::Error::other),
            None => Ok(Either::Right(socket)),
        }
    })
    .upgrade(upgrade::Version::V1Lazy)
    .authenticate(noise)
    .multiplex(yamux::Config::default())
    .timeout(Duration::from_secs(20))
    .boxed()
}

fn build_behaviour(
    cfg: &SwarmConfig,
    keypair: &Keypair,
    health: Arc<Health>,
    relay_client: relay::client::Behaviour,
) -> Behaviour {
    let peer = keypair.public().to_peer_id();
    let store = MemoryStore::with_config(
        peer,
        MemoryStoreConfig {
            max_records: 1024,
            max_value_bytes: 65 * 1024,
            max_providers_per_key: kad::K_VALUE.get(),
            // Bounds the distinct keys in the provider map: ours and other peers'.
            max_provided_keys: cfg.max_provider_keys,
        },
    );
    let mut kcfg = kad::Config::new(wire::KAD_PROTOCOL);
    kcfg.set_query_timeout(cfg.query_timeout);
    kcfg.set_periodic_bootstrap_interval(cfg.refresh_interval);
    // Short enough that a peer gone for the night is forgotten by morning (§6.2).
    kcfg.set_provider_record_ttl(Some(cfg.provider_ttl));
    kcfg.set_provider_publication_interval(Some(cfg.provider_republish));
    let mut kad = kad::Behaviour::with_config(peer, store, kcfg);
    // Client until an address is confirmed (`Task::update_mode`): an unreachable
    // server would poison other peers' routing tables.
    kad.set_mode(Some(kad::Mode::Client));
    // UPnP searches for a gateway on the local network as soon as it starts; a node
    // listening on loopback only has nothing to map.
    let upnp = cfg.upnp && cfg.listen.iter().any(|a| !self_evident(a));
    let l = cfg.limits;
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established_per_peer(Some(l.per_peer))
        .with_max_established(Some(l.total))
        .with_max_established_incoming(Some(l.inbound))
        .with_max_pending_incoming(Some(l.pending_inbound))
        .with_max_pending_outgoing(Some(l.pending_outbound));
    Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        blocked: allow_block_list::Behaviour::default(),
        guard: Guard::new(health),
        kad,
        identify: identify::Behaviour::new(identify::Config::new(
            wire::IDENTIFY_VERSION.to_string(),
            keypair.public(),
        )),
        autonat_client: autonat::v2::client::Behaviour::new(
            rand_autonat::make_rng::<rand_autonat::rngs::StdRng>(),
            autonat::v2::client::Config::default().with_probe_interval(AUTONAT_PROBE),
        ),
        autonat_server: autonat::v2::server::Behaviour::default(),
        upnp: upnp.then(upnp::tokio::Behaviour::default).into(),
        relay_client,
        relay_server: cfg
            .relay
            .then(|| {
                let mut r = relay::Behaviour::new(peer, relay::Config::default());
                // A relay offers itself once an external address is confirmed; an
                // anchor is public by its operator's word (nothing tests the address
                // of a node that others dial and that dials nobody).
                if cfg.anchor {
                    r.set_status(Some(relay::Status::Enable));
                }
                r
            })
            .into(),
        dcutr: dcutr::Behaviour::new(peer),
        ping: ping::Behaviour::default(),
        stream: libp2p_stream::Behaviour::new(),
    }
}

struct Find {
    reply: oneshot::Sender<Lookup>,
    limit: usize,
    providers: Vec<PeerId>,
    unreachable: Vec<PeerId>,
    found: Option<mpsc::UnboundedSender<PeerId>>,
    started: Instant,
    /// When the first provider was found; [`LOOKUP_GRACE`] later the query ends.
    first_found: Option<Instant>,
}

/// How long a provider lookup goes on once it has found a provider: a silent or frozen
/// DHT peer then delays the answer by at most this (plus one tick), not by the
/// Kademlia request timeout.
const LOOKUP_GRACE: Duration = Duration::from_millis(500);
/// Period of the swarm task's housekeeping (ban expiry, lookup grace).
const TICK: Duration = Duration::from_millis(250);

struct Task {
    name: String,
    swarm: Swarm<Behaviour>,
    local: PeerId,
    provides: HashMap<kad::QueryId, oneshot::Sender<Result<(), ProvideFailure>>>,
    bootstraps: HashMap<kad::QueryId, oneshot::Sender<()>>,
    finds: HashMap<kad::QueryId, Find>,
    bans: HashMap<PeerId, Instant>,
    health: Arc<Health>,
    /// No external address was configured: listen addresses go into our own provider
    /// answers, and where they are loopback only (`local_only`) they are external ones.
    advertise_listen: bool,
    /// Always a Kademlia server (an anchor node).
    anchor: bool,
    /// Every configured listen address is loopback or memory (see [`self_evident`]).
    local_only: bool,
    /// Non-relayed and relayed addresses confirmed reachable, by AutoNAT v2, UPnP, the
    /// operator (`external`), or because they are loopback or memory addresses.
    confirmed: HashSet<Multiaddr>,
    /// AutoNAT v2 tests of our addresses that failed.
    autonat_failures: u64,
    kad_mode: kad::Mode,
    /// Open connections and the peer's address on each.
    conns: HashMap<ConnectionId, (PeerId, Multiaddr)>,
    /// Peers whose every open connection runs through a relay; their block streams
    /// are refused (`accept_loop`).
    relayed_only: RelayedOnly,
    /// Our addresses changed since our own provider records were last rewritten.
    addrs_changed: bool,
    /// When the swarm started.
    started: Instant,
    /// Connected peers that offer relay v2 (hop), by the address we reached them at.
    relays_seen: HashMap<PeerId, Multiaddr>,
    /// The relays we hold (or asked for) a reservation on, and its listener.
    reservations: HashMap<PeerId, libp2p::core::transport::ListenerId>,
    boot_peers: HashSet<PeerId>,
    boot_ok: bool,
    boot_failed: usize,
    boot_error: String,
}

/// Starts one swarm: listens, dials the bootstrap peers, waits for one to answer, then
/// runs the swarm task.
pub(crate) async fn start(
    cfg: &SwarmConfig,
    keypair: &Keypair,
    source: Arc<dyn BlockSource>,
    health: Arc<Health>,
    offenders: mpsc::Sender<PeerId>,
) -> Result<SwarmHandle, NetError> {
    let span = info_span!("swarm", swarm = %cfg.name);
    let (relayed, relay_client) = relay::client::new(keypair.public().to_peer_id());
    let transport = build_transport(cfg, keypair, relayed)?;
    let behaviour = build_behaviour(cfg, keypair, health.clone(), relay_client);
    let local = keypair.public().to_peer_id();
    let swarm = Swarm::new(
        transport,
        behaviour,
        local,
        libp2p::swarm::Config::with_tokio_executor().with_idle_connection_timeout(cfg.idle_timeout),
    );
    let mut task = Task {
        name: cfg.name.clone(),
        swarm,
        local,
        provides: HashMap::new(),
        bootstraps: HashMap::new(),
        finds: HashMap::new(),
        bans: HashMap::new(),
        health,
        advertise_listen: cfg.external.is_empty(),
        anchor: cfg.anchor,
        local_only: !cfg.listen.is_empty() && cfg.listen.iter().all(self_evident),
        confirmed: cfg.external.iter().cloned().collect(),
        autonat_failures: 0,
        kad_mode: kad::Mode::Client,
        conns: HashMap::new(),
        relayed_only: RelayedOnly::default(),
        addrs_changed: false,
        started: Instant::now(),
        relays_seen: HashMap::new(),
        reservations: HashMap::new(),
        boot_peers: cfg.bootstrap.iter().map(|b| b.peer).collect(),
        boot_ok: false,
        boot_failed: 0,
        boot_error: String::new(),
    };
    let mut control = task.swarm.behaviour().stream.new_control();
    let blocks_in = control
        .accept(wire::BLOCKS_PROTOCOL)
        .map_err(|e| NetError::Transport {
            swarm: cfg.name.clone(),
            reason: e.to_string(),
        })?;
    let records_in = control
        .accept(wire::RECORDS_PROTOCOL)
        .map_err(|e| NetError::Transport {
            swarm: cfg.name.clone(),
            reason: e.to_string(),
        })?;

    // Provider records carry our external addresses; without them a peer can only
    // answer with our address if we happen to be in its routing table.
    for addr in &cfg.external {
        task.swarm.add_external_address(addr.clone());
    }
    task.update_mode();
    // Listen, and wait until every listener has an address.
    let mut listeners = HashMap::new();
    for addr in &cfg.listen {
        if cfg.key.is_some() && is_quic(addr) {
            return Err(NetError::Listen {
                swarm: cfg.name.clone(),
                addr: addr.clone(),
                reason: "a private swarm runs on TCP only: its pre-shared key (pnet) cannot \
                         protect QUIC (rust-libp2p#3275); use a /tcp/ address"
                    .into(),
            });
        }
        let id = match task.swarm.listen_on(addr.clone()) {
            Ok(id) => id,
            Err(e) => {
                // TransportError's Display is empty for I/O errors; keep the cause.
                let reason = match &e {
                    libp2p::TransportError::Other(io) => io.to_string(),
                    other => other.to_string(),
                };
                // A host without IPv6 cannot bind `::`; its IPv4 addresses still serve.
                if is_ip6(addr) && cfg.listen.iter().any(|a| !is_ip6(a)) {
                    warn!(parent: &span, %addr, "not listening on an IPv6 address: {reason}");
                    continue;
                }
                return Err(NetError::Listen {
                    swarm: cfg.name.clone(),
                    addr: addr.clone(),
                    reason,
                });
            }
        };
        listeners.insert(id, addr.clone());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !listeners.is_empty() {
        let ev = tokio::time::timeout_at(deadline, task.swarm.select_next_some()).await;
        match ev {
            Err(_) => {
                let (_, addr) = listeners.into_iter().next().unzip();
                return Err(NetError::Listen {
                    swarm: cfg.name.clone(),
                    addr: addr.unwrap_or_else(Multiaddr::empty),
                    reason: "no address came up within 10 s".into(),
                });
            }
            Ok(SwarmEvent::NewListenAddr {
                listener_id,
                address,
            }) => {
                listeners.remove(&listener_id);
                task.on_event(SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                });
            }
            Ok(SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            }) if listeners.contains_key(&listener_id) => {
                return Err(NetError::Listen {
                    swarm: cfg.name.clone(),
                    addr: listeners
                        .remove(&listener_id)
                        .unwrap_or_else(Multiaddr::empty),
                    reason: format!("{reason:?}"),
                });
            }
            Ok(ev) => task.on_event(ev),
        }
    }

    // Bootstrap: dial every peer once per stage with its addresses, QUIC first and the
    // others [`QUIC_HEAD_START`] later unless it connected meanwhile (as go-libp2p
    // ranks its dials; libp2p tries one dial's addresses concurrently, and TCP would
    // win the race); succeed on the first connection.
    let mut boot: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
    for b in &cfg.bootstrap {
        task.swarm
            .behaviour_mut()
            .kad
            .add_address(&b.peer, b.addr.clone());
        match boot.iter_mut().find(|(p, _)| *p == b.peer) {
            Some((_, addrs)) => addrs.push(b.addr.clone()),
            None => boot.push((b.peer, vec![b.addr.clone()])),
        }
    }
    let mut later: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
    let mut dials = 0;
    for (peer, addrs) in boot {
        let (quic, other): (Vec<Multiaddr>, Vec<Multiaddr>) = addrs.into_iter().partition(is_quic);
        dials += 1;
        if quic.is_empty() {
            task.dial_boot(peer, other);
        } else {
            task.dial_boot(peer, quic);
            if !other.is_empty() {
                dials += 1;
                later.push((peer, other));
            }
        }
    }
    if !cfg.bootstrap.is_empty() {
        let deadline = tokio::time::Instant::now() + cfg.bootstrap_timeout;
        let stage = tokio::time::Instant::now() + QUIC_HEAD_START;
        while !task.boot_ok && task.boot_failed < dials {
            if !later.is_empty() && tokio::time::Instant::now() >= stage {
                for (peer, addrs) in std::mem::take(&mut later) {
                    if task.swarm.is_connected(&peer) {
                        dials -= 1;
                    } else {
                        task.dial_boot(peer, addrs);
                    }
                }
            }
            let until = if later.is_empty() {
                deadline
            } else {
                stage.min(deadline)
            };
            match tokio::time::timeout_at(until, task.swarm.select_next_some()).await {
                Ok(ev) => task.on_event(ev),
                Err(_) if until < deadline => {}
                Err(_) => {
                    task.boot_error = format!("timed out after {:?}", cfg.bootstrap_timeout);
                    break;
                }
            }
        }
        if !task.boot_ok {
            return Err(NetError::NoReachableBootstrap {
                swarm: cfg.name.clone(),
                tried: cfg.bootstrap.len(),
                last_error: task.boot_error.clone(),
            });
        }
        if let Err(e) = task.swarm.behaviour_mut().kad.bootstrap() {
            debug!(parent: &span, "kademlia bootstrap: {e}");
        }
    }
    info!(parent: &span, peer = %local, addrs = ?task.swarm.listeners().collect::<Vec<_>>(), "swarm started");

    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let limits = Inbound {
        total: Arc::new(Semaphore::new(cfg.max_inbound_streams)),
        per_peer: Arc::default(),
        offenders,
    };
    let name = cfg.name.clone();
    let handle = tokio::spawn(
        async move {
            let mut servers = JoinSet::new();
            let relayed_only = Some(task.relayed_only.clone());
            servers.spawn(accept_loop(
                blocks_in,
                source.clone(),
                limits.clone(),
                relayed_only,
            ));
            servers.spawn(accept_loop(records_in, source, limits, None));
            task.run(cmd_rx).await;
            servers.shutdown().await;
            info!("swarm stopped");
        }
        .instrument(span),
    );
    Ok(SwarmHandle {
        name,
        announce: cfg.announce,
        control,
        lookups: std::sync::atomic::AtomicU64::new(0),
        cmd: cmd_tx,
        task: tokio::sync::Mutex::new(Some(handle)),
    })
}

impl Task {
    /// Dials bootstrap peer `peer` at `addrs`, even while another dial to it runs.
    fn dial_boot(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::Disconnected)
            .addresses(addrs)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            self.boot_failed += 1;
            self.boot_error = e.to_string();
        }
    }

    async fn run(&mut self, mut cmds: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(cmd) => self.on_command(cmd),
                },
                ev = self.swarm.select_next_some() => self.on_event(ev),
                _ = tick.tick() => {
                    self.expire_bans();
                    self.end_lookups_past_grace();
                    self.refresh_own_records();
                    self.reserve_relays();
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Provide {
                key,
                started,
                reply,
            } => {
                match self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .start_providing(key.kad_key())
                {
                    Ok(qid) => {
                        self.provides.insert(qid, reply);
                        self.write_own_record(key.kad_key());
                    }
                    Err(e) => {
                        warn!(%key, "cannot provide: {e}");
                        let _ = reply.send(Err(ProvideFailure::StoreFull));
                    }
                }
                let _ = started.send(());
            }
            Command::FindProviders {
                key,
                limit,
                found,
                reply,
            } => {
                let qid = self.swarm.behaviour_mut().kad.get_providers(key.kad_key());
                self.finds.insert(
                    qid,
                    Find {
                        reply,
                        limit: limit.max(1),
                        providers: Vec::new(),
                        unreachable: Vec::new(),
                        found,
                        started: Instant::now(),
                        first_found: None,
                    },
                );
            }
            Command::Bootstrap { reply } => match self.swarm.behaviour_mut().kad.bootstrap() {
                Ok(qid) => {
                    self.bootstraps.insert(qid, reply);
                }
                Err(e) => {
                    debug!("cannot refresh the routing table: {e}");
                    let _ = reply.send(());
                }
            },
            Command::Peers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Connections { reply } => {
                let mut conns: Vec<Connection> = self
                    .conns
                    .values()
                    .map(|(peer, addr)| Connection {
                        peer: *peer,
                        addr: addr.clone(),
                        relayed: is_relayed(addr),
                    })
                    .collect();
                conns.sort_by_key(|c| (c.peer, c.relayed));
                let _ = reply.send(conns);
            }
            Command::Reach { reply } => {
                let _ = reply.send(self.reach());
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Ban { peer, until } => {
                info!(%peer, "banning peer");
                self.bans.insert(peer, until);
                let b = self.swarm.behaviour_mut();
                b.blocked.block_peer(peer);
                b.kad.remove_peer(&peer);
            }
            Command::Unreachable { peer } => {
                debug!(%peer, "closing the connections of an unreachable peer");
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Shutdown => {}
        }
    }

    fn expire_bans(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self
            .bans
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in expired {
            self.bans.remove(&p);
            self.swarm.behaviour_mut().blocked.unblock_peer(p);
            info!(peer = %p, "ban expired");
        }
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } if is_relayed(&address) => {
                // A reservation was accepted: peers reach us through the relay there.
                info!(%address, "reachable through a relay");
                self.confirmed.insert(address.clone());
                self.swarm.add_external_address(address);
                self.addrs_changed = true;
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some((relay, _)) = self.reservations.iter().find(|(_, l)| **l == listener_id)
                {
                    debug!(%relay, "relay reservation ended: {reason:?}");
                }
                self.reservations.retain(|_, l| *l != listener_id);
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                debug!(%address, "listening");
                let concrete = !address.iter().any(|p| {
                    matches!(p, Protocol::Ip4(ip) if ip.is_unspecified())
                        || matches!(p, Protocol::Ip6(ip) if ip.is_unspecified())
                });
                if self.local_only && self_evident(&address) {
                    self.confirmed.insert(address.clone());
                    self.update_mode();
                }
                // Listen addresses are external ones only where they are evident (see
                // `local_only`); elsewhere a confirmed external address would hide
                // its own test from AutoNAT (libp2p drops candidates already
                // confirmed), so they only go into our own answers (`own_addresses`).
                // An anchor's listen addresses are public by its operator's word
                // (loopback aside); a relay needs external addresses to hand out.
                let anchor_public = self.anchor && !self_evident(&address);
                if self.advertise_listen && concrete && (self.local_only || anchor_public) {
                    if anchor_public {
                        self.confirmed.insert(address.clone());
                    }
                    self.swarm.add_external_address(address);
                }
                self.addrs_changed = true;
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                if is_relayed(&address) {
                    self.swarm.remove_external_address(&address);
                }
                self.confirmed.remove(&address);
                self.update_mode();
                self.addrs_changed = true;
            }
            SwarmEvent::ExternalAddrConfirmed { .. } => self.addrs_changed = true,
            SwarmEvent::ExternalAddrExpired { address } => {
                self.confirmed.remove(&address);
                self.update_mode();
                self.addrs_changed = true;
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                peer_id,
                ..
            } => {
                self.conns.remove(&connection_id);
                let direct_left = self
                    .conns
                    .values()
                    .any(|(p, a)| *p == peer_id && !is_relayed(a));
                if !direct_left {
                    self.relays_seen.remove(&peer_id);
                }
                self.relayed_only.update(peer_id, &self.conns);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = connection_addr(&endpoint, peer_id);
                debug!(peer = %peer_id, %addr, "connected");
                let direct_exists = self
                    .conns
                    .values()
                    .any(|(p, a)| *p == peer_id && !is_relayed(a));
                if is_relayed(&addr) && direct_exists {
                    // A circuit opened while a direct connection exists would only
                    // split streams between the two: close it.
                    debug!(peer = %peer_id, "relayed connection while a direct one is up; closing it");
                    self.swarm.close_connection(connection_id);
                }
                if !is_relayed(&addr) {
                    // Blocks never stream over a relayed circuit (relay v2 cuts it at
                    // 128 KiB or 2 min): once a direct connection exists, close the
                    // relayed ones, so every stream to the peer goes direct.
                    let relayed: Vec<ConnectionId> = self
                        .conns
                        .iter()
                        .filter(|(_, (p, a))| *p == peer_id && is_relayed(a))
                        .map(|(id, _)| *id)
                        .collect();
                    for id in relayed {
                        debug!(peer = %peer_id, "direct connection up; closing the relayed one");
                        self.swarm.close_connection(id);
                    }
                }
                self.conns.insert(connection_id, (peer_id, addr));
                self.relayed_only.update(peer_id, &self.conns);
                if self.boot_peers.contains(&peer_id) {
                    self.boot_ok = true;
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                debug!(%peer, "dial failed: {error}");
                if self.boot_peers.contains(&peer) {
                    self.boot_failed += 1;
                    self.boot_error = error.to_string();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
                    let direct = self
                        .conns
                        .values()
                        .find(|(p, a)| *p == peer_id && !is_relayed(a))
                        .map(|(_, a)| a.clone());
                    if let Some(addr) = direct {
                        self.relays_seen.insert(peer_id, addr);
                    }
                }
                // Identify does not feed Kademlia by itself.
                if info.protocols.contains(&wire::KAD_PROTOCOL) {
                    for addr in info.listen_addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.on_kad(ev),
            SwarmEvent::Behaviour(BehaviourEvent::AutonatClient(ev)) => match ev.result {
                Ok(()) => {
                    info!(addr = %ev.tested_addr, server = %ev.server, "address confirmed reachable (AutoNAT)");
                    self.confirmed.insert(ev.tested_addr);
                    self.update_mode();
                }
                Err(e) => {
                    debug!(addr = %ev.tested_addr, server = %ev.server, "address not reachable (AutoNAT): {e}");
                    self.autonat_failures += 1;
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(ev)) => match ev.result {
                Ok(_) => info!(peer = %ev.remote_peer_id, "hole punched: direct connection"),
                Err(e) => {
                    // The relayed connection cannot carry blocks and DCUtR does not try
                    // again on it: close it, so the next need dials and punches anew.
                    info!(peer = %ev.remote_peer_id, "hole punching failed: {e}");
                    let relayed: Vec<ConnectionId> = self
                        .conns
                        .iter()
                        .filter(|(_, (p, a))| *p == ev.remote_peer_id && is_relayed(a))
                        .map(|(id, _)| *id)
                        .collect();
                    for id in relayed {
                        self.swarm.close_connection(id);
                    }
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(
                relay::client::Event::ReservationReqAccepted {
                    relay_peer_id,
                    renewal: false,
                    ..
                },
            )) => info!(relay = %relay_peer_id, "relay reservation accepted"),
            SwarmEvent::Behaviour(BehaviourEvent::Upnp(ev)) => match ev {
                upnp::Event::NewExternalAddr { external_addr, .. } => {
                    info!(addr = %external_addr, "port mapped on the gateway (UPnP)");
                    self.confirmed.insert(external_addr);
                    self.update_mode();
                }
                upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                    info!(addr = %external_addr, "gateway port mapping expired (UPnP)");
                    self.confirmed.remove(&external_addr);
                    self.update_mode();
                }
                upnp::Event::GatewayNotFound => debug!("no UPnP gateway found"),
                upnp::Event::NonRoutableGateway => {
                    debug!("the UPnP gateway is not on the public network")
                }
            },
            _ => {}
        }
    }

    /// Behind NAT (tested, nothing confirmed but relayed addresses), keeps
    /// reservations on [`RELAYS`] relays among the connected peers that offer relay v2
    /// (rust-libp2p chooses none by itself): each is listened on through its
    /// `/p2p-circuit` address.
    fn reserve_relays(&mut self) {
        // Behind a router that drops what it did not ask for, AutoNAT's dial-backs
        // time out and are retried rather than reported failed: a node still not
        // known reachable after [`UNKNOWN_GRACE`] reserves as if private.
        let behind_nat = match self.reach().reachability {
            Reachability::Private => true,
            Reachability::Unknown => !self.anchor && self.started.elapsed() >= UNKNOWN_GRACE,
            Reachability::Public => false,
        };
        if !behind_nat || self.reservations.len() >= RELAYS {
            return;
        }
        let mut candidates: Vec<(PeerId, Multiaddr)> = self
            .relays_seen
            .iter()
            .filter(|(p, _)| !self.reservations.contains_key(p))
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        candidates.sort();
        for (relay, addr) in candidates {
            if self.reservations.len() >= RELAYS {
                break;
            }
            let circuit = addr
                .with_p2p(relay)
                .unwrap_or_else(|a| a)
                .with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    info!(%relay, "asking for a relay reservation");
                    self.reservations.insert(relay, id);
                }
                Err(e) => debug!(%circuit, "cannot listen through relay: {e}"),
            }
        }
    }

    /// Kademlia serves other peers only while an address that is not relayed is
    /// confirmed (or on an anchor): an unreachable server poisons routing tables.
    fn update_mode(&mut self) {
        let server = self.anchor || self.confirmed.iter().any(|a| !is_relayed(a));
        let mode = if server {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        };
        if mode != self.kad_mode {
            info!(swarm = %self.name, ?mode, "kademlia mode");
            self.kad_mode = mode;
            self.swarm.behaviour_mut().kad.set_mode(Some(mode));
        }
    }

    fn reach(&self) -> SwarmReach {
        let mut confirmed: Vec<Multiaddr> = self.confirmed.iter().cloned().collect();
        confirmed.sort();
        let reachability = if confirmed.iter().any(|a| !is_relayed(a)) {
            Reachability::Public
        } else if self.autonat_failures > 0 {
            Reachability::Private
        } else {
            Reachability::Unknown
        };
        SwarmReach {
            swarm: self.name.clone(),
            reachability,
            kad_server: self.kad_mode == kad::Mode::Server,
            confirmed,
        }
    }

    /// The addresses our own provider records carry when we answer a lookup: the
    /// external ones, then (with no external address configured) the concrete listen
    /// addresses, which peers on the same network can dial; each once. (Kademlia's own
    /// answer for a local record with no addresses lists the listen addresses and then
    /// the external ones, which often include them: each address twice.)
    fn own_addresses(&self) -> Vec<Multiaddr> {
        let mut seen = HashSet::new();
        let listen = self
            .swarm
            .listeners()
            .filter(|_| self.advertise_listen)
            .filter(|a| {
                !a.iter().any(|p| {
                    matches!(p, Protocol::Ip4(ip) if ip.is_unspecified())
                        || matches!(p, Protocol::Ip6(ip) if ip.is_unspecified())
                })
            });
        self.swarm
            .external_addresses()
            .chain(listen)
            .filter(|a| seen.insert((*a).clone()))
            .cloned()
            .collect()
    }

    fn write_own_record(&mut self, key: kad::RecordKey) {
        let addrs = self.own_addresses();
        let local = self.local;
        let store = self.swarm.behaviour_mut().kad.store_mut();
        if let Err(e) = store.add_provider(kad::ProviderRecord::new(key, local, addrs)) {
            debug!("rewriting our provider record: {e}");
        }
    }

    /// After our addresses changed, rewrites our own provider records so that peers
    /// asking this node get the current addresses (an in-memory pass over what we
    /// provide; addresses change rarely).
    fn refresh_own_records(&mut self) {
        if !std::mem::take(&mut self.addrs_changed) {
            return;
        }
        let keys: Vec<kad::RecordKey> = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .provided()
            .map(|r| r.key.clone())
            .collect();
        for k in keys {
            self.write_own_record(k);
        }
    }

    fn on_kad(&mut self, ev: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id,
            result,
            stats,
            step,
        } = ev
        else {
            return;
        };
        match result {
            kad::QueryResult::StartProviding(res) => {
                if let Some(reply) = self.provides.remove(&id) {
                    // On a timeout the record stays in the local store and Kademlia
                    // republishes it later; the caller may also retry.
                    let _ = reply.send(res.map(|_| ()).map_err(|e| {
                        debug!(swarm = %self.name, "announcement failed: {e}");
                        ProvideFailure::TimedOut
                    }));
                }
            }
            kad::QueryResult::Bootstrap(_) => {
                if step.last
                    && let Some(reply) = self.bootstraps.remove(&id)
                {
                    let _ = reply.send(());
                }
            }
            kad::QueryResult::GetProviders(res) => {
                if let Ok(kad::GetProvidersOk::FoundProviders { key, providers }) = res {
                    self.found_providers(id, &key, providers);
                }
                if step.last
                    && let Some(find) = self.finds.remove(&id)
                {
                    let _ = find.reply.send(Lookup {
                        swarm: self.name.clone(),
                        providers: find.providers,
                        unreachable: find.unreachable,
                        duration: find.started.elapsed(),
                        requests: stats.num_requests(),
                        successes: stats.num_successes(),
                    });
                }
            }
            _ => {}
        }
    }

    /// Ends every provider lookup that found a provider more than [`LOOKUP_GRACE`] ago;
    /// its answer follows as the query's last step.
    fn end_lookups_past_grace(&mut self) {
        let now = Instant::now();
        let due: Vec<kad::QueryId> = self
            .finds
            .iter()
            .filter(|(_, f)| f.first_found.is_some_and(|t| now - t >= LOOKUP_GRACE))
            .map(|(id, _)| *id)
            .collect();
        let kad = &mut self.swarm.behaviour_mut().kad;
        for id in due {
            if let Some(mut q) = kad.query_mut(&id) {
                q.finish();
            }
        }
    }

    fn found_providers(&mut self, id: kad::QueryId, key: &kad::RecordKey, found: HashSet<PeerId>) {
        let Some(find) = self.finds.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        let mut new = Vec::new();
        let mut forgotten = Vec::new();
        for p in found {
            let banned = self.bans.get(&p).is_some_and(|u| *u > now);
            if p == self.local
                || banned
                || find.providers.contains(&p)
                || find.unreachable.contains(&p)
            {
                continue;
            }
            if self.health.forgotten(&p, now) {
                // Unreachable for longer than the threshold: out of the local view.
                forgotten.push(p);
            } else if self.health.skip(&p, now) {
                find.unreachable.push(p);
            } else {
                find.providers.push(p);
                if let Some(tx) = &find.found {
                    let _ = tx.send(p);
                }
                new.push(p);
            }
        }
        if find.first_found.is_none() && !find.providers.is_empty() {
            find.first_found = Some(now);
        }
        let enough = find.providers.len() >= find.limit;
        let kad = &mut self.swarm.behaviour_mut().kad;
        for p in &forgotten {
            debug!(peer = %p, "dropping a long-unreachable provider's record");
            kad.store_mut().remove_provider(key, p);
        }
        let stored: Vec<kad::ProviderRecord> = kad.store_mut().providers(key);
        if enough && let Some(mut q) = kad.query_mut(&id) {
            q.finish();
        }
        // Dial now: the query still knows the providers' addresses.
        for p in new {
            let addrs: Vec<Multiaddr> = stored
                .iter()
                .filter(|r| r.provider == p)
                .flat_map(|r| r.addresses.iter().cloned())
                .collect();
            let opts = DialOpts::peer_id(p)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(peer = %p, "dialing provider: {e}");
            }
        }
    }
}

/// What bounds the inbound streams of one swarm, shared by its two protocols.
#[derive(Clone)]
struct Inbound {
    /// Streams served at once, all peers (`SwarmConfig::max_inbound_streams`).
    total: Arc<Semaphore>,
    /// Streams served at once per peer ([`MAX_INBOUND_STREAMS_PER_PEER`]).
    per_peer: Arc<std::sync::Mutex<HashMap<PeerId, usize>>>,
    /// Peers that sent a malformed request, for the node to ban (specs/swarm.md §8).
    offenders: mpsc::Sender<PeerId>,
}

/// One peer's slot among [`Inbound::per_peer`], given back when dropped.
struct PeerSlot {
    peer: PeerId,
    per_peer: Arc<std::sync::Mutex<HashMap<PeerId, usize>>>,
}

impl PeerSlot {
    fn take(inbound: &Inbound, peer: PeerId) -> Option<PeerSlot> {
        let mut m = inbound
            .per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(peer).or_insert(0);
        if *n >= MAX_INBOUND_STREAMS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peer,
            per_peer: inbound.per_peer.clone(),
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self
            .per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.peer);
            }
        }
    }
}

/// The peers connected to this swarm only through relays, shared by the swarm task
/// (which keeps it) and the block server (which reads it).
#[derive(Clone, Default)]
struct RelayedOnly(Arc<std::sync::Mutex<HashSet<PeerId>>>);

impl RelayedOnly {
    /// Records whether `peer` has connections in `conns`, all relayed.
    fn update(&self, peer: PeerId, conns: &HashMap<ConnectionId, (PeerId, Multiaddr)>) {
        let mut mine = conns.values().filter(|(p, _)| *p == peer).peekable();
        let only = mine.peek().is_some() && mine.all(|(_, a)| is_relayed(a));
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if only {
            set.insert(peer);
        } else {
            set.remove(&peer);
        }
    }

    fn contains(&self, peer: &PeerId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(peer)
    }
}

/// Serves the inbound streams of one protocol, each in its own task, within the
/// limits of `inbound`: blocks when `relayed_only` is given (a block stream from a
/// peer reached only through a relay is refused, since relay v2 cuts a circuit at
/// 128 KiB; the peer asks again once hole punching made the connection direct,
/// specs/swarm.md §2.6), else records. A request that breaks the format (§3.1, §4)
/// reports its peer as an offender; the node bans it, which closes its connections.
/// Work per bad stream is bounded: a request is at most 262,149 bytes, read within
/// `REQUEST_TIMEOUT`, and a malformed one ends at its first bad field.
async fn accept_loop(
    mut incoming: libp2p_stream::IncomingStreams,
    source: Arc<dyn BlockSource>,
    inbound: Inbound,
    relayed_only: Option<RelayedOnly>,
) {
    let blocks = relayed_only.is_some();
    let mut tasks = JoinSet::new();
    while let Some((peer, stream)) = incoming.next().await {
        while tasks.try_join_next().is_some() {}
        if relayed_only.as_ref().is_some_and(|r| r.contains(&peer)) {
            debug!(%peer, "refusing a block stream: the peer is reached only through a relay");
            continue;
        }
        let Some(slot) = PeerSlot::take(&inbound, peer) else {
            debug!(%peer, "too many inbound streams from one peer; refusing one");
            continue;
        };
        let Ok(permit) = inbound.total.clone().try_acquire_owned() else {
            debug!(%peer, "too many inbound streams; refusing one");
            continue;
        };
        let source = source.clone();
        let offenders = inbound.offenders.clone();
        let span = tracing::debug_span!("serve", %peer, blocks);
        tasks.spawn(
            async move {
                let res = if blocks {
                    serve_blocks(stream, &*source).await
                } else {
                    serve_records(stream, &*source).await
                };
                match res {
                    Err(e) if e.is_violation() => {
                        info!(%peer, "malformed request: {e}");
                        // Full: bans of earlier offenders are pending; this peer's
                        // next bad stream reports it again.
                        let _ = offenders.try_send(peer);
                    }
                    Err(e) => debug!("serving stream ended: {e}"),
                    Ok(()) => {}
                }
                drop((permit, slot));
            }
            .instrument(span),
        );
    }
}

/// Streams every requested subtree in pre-order; see `specs/swarm.md` §3.
async fn serve_blocks(mut stream: Stream, source: &dyn BlockSource) -> Result<(), wire::WireError> {
    let request = tokio::time::timeout(REQUEST_TIMEOUT, wire::read_block_request(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    debug!(
        wants = request.wants.len(),
        lz4 = request.lz4,
        "block request"
    );
    // yamux sends at most 16 KiB per frame and noise encrypts and writes every frame
    // separately; buffering makes that one full frame per block instead of three
    // (5-byte header, 16,384 bytes, 1 byte).
    let mut w = BufWriter::with_capacity(WRITE_BUFFER, stream);
    let mut stack = Vec::new();
    for want in request.wants {
        stack.push(want);
        while let Some(id) = stack.pop() {
            let encoded = match source.get_block(&id) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    return finish(&mut w, Frame::Missing(id)).await;
                }
                Err(e) => {
                    warn!(block = %id, "reading block to serve: {e}");
                    return finish(&mut w, Frame::Missing(id)).await;
                }
            };
            // LZ4 data is always a leaf (specs/blocks.md §8): only raw blocks can have
            // links. A peer that asked for raw frames gets LZ4 data decoded.
            let encoded = match encoded {
                Encoded::Lz4 { .. } if !request.lz4 => match encoded.decode() {
                    Ok(bytes) => Encoded::Raw(bytes),
                    Err(e) => {
                        warn!(block = %id, "stored block is invalid: {e}");
                        return finish(&mut w, Frame::Missing(id)).await;
                    }
                },
                other => other,
            };
            if let Encoded::Raw(bytes) = &encoded
                && bytes.first() == Some(&INTERIOR_TAG)
            {
                match Block::from_bytes(bytes.clone()) {
                    Ok(b) => {
                        let first = stack.len();
                        stack.extend(b.links().map(|l| l.id));
                        stack[first..].reverse();
                    }
                    Err(e) => {
                        warn!(block = %id, "stored block is invalid: {e}");
                        return finish(&mut w, Frame::Missing(id)).await;
                    }
                }
            }
            let len = encoded.stored_len() as u64;
            wire::write_frame(&mut w, &Frame::Block(encoded)).await?;
            source.served(len);
        }
    }
    finish(&mut w, Frame::End).await
}

async fn finish<W: futures::AsyncWrite + Unpin>(
    w: &mut W,
    last: Frame,
) -> Result<(), wire::WireError> {
    wire::write_frame(w, &last).await?;
    w.flush().await?;
    w.close().await?;
    Ok(())
}

async fn serve_records(
    mut stream: Stream,
    source: &dyn BlockSource,
) -> Result<(), wire::WireError> {
    let key = tokio::time::timeout(REQUEST_TIMEOUT, wire::read_records_request(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    let records: Vec<Vec<u8>> = match source.build_records(&key) {
        Ok(rs) => rs.iter().map(|r| r.encode()).collect(),
        Err(e) => {
            warn!(%key, "reading records to serve: {e}");
            Vec::new()
        }
    };
    debug!(%key, n = records.len(), "record request");
    stream
        .write_all(&wire::encode_records_response(&records))
        .await?;
    stream.flush().await?;
    stream.close().await?;
    Ok(())
}
