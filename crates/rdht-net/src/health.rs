//! Node-wide memory of unreachable peers: a record request whose dial failed, or that
//! was not answered within its bound, puts the peer in back-off; while it lasts no swarm of the
//! node dials it (lookups, record requests and fetches skip it), so one unreachable
//! provider costs a build one bound, not one per unit. Any connection with the peer
//! (either direction) clears it; a peer unreachable for `forget_after` is dropped from
//! the local view (its provider records are removed when a lookup meets them).
//!
//! Owns: [`Health`] (the per-peer state, back-off, counters) and [`Guard`], the
//! `NetworkBehaviour` that enforces it on every outbound dial and learns from every
//! dial failure and connection. Does not own: deciding what to ask (`node.rs`) or the
//! swarm task (`swarm.rs`). Time is passed in (`now`), so the rules are tested without
//! a clock. Spec: `specs/swarm.md` §6.4.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};
use tracing::{debug, info};

/// Most peers whose dial count is remembered; past this the counts start over.
const MAX_DIAL_COUNTS: usize = 4096;
/// Most peers remembered as unreachable (a public swarm can name any number of peers
/// that do not answer); past this, peers whose back-off has ended are forgotten first,
/// and a new failure is not remembered if there is still no room.
const MAX_UNREACHABLE: usize = 65_536;

/// The back-off rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Back-off after a peer's first failure; it doubles with each failure after a
    /// back-off ran out, up to `max`.
    pub initial: Duration,
    /// The longest back-off.
    pub max: Duration,
    /// A peer unreachable (no connection) this long since its first failure is
    /// forgotten: dropped from the local view.
    pub forget_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(60 * 60),
        }
    }
}

/// One unreachable peer, as [`Health::unreachable`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreachablePeer {
    /// The peer.
    pub peer: PeerId,
    /// Failures in a row (dials that failed, requests unanswered within their bound).
    pub failures: u32,
    /// Since its first failure in a row.
    pub unreachable_for: Duration,
    /// How long until it may be dialled again (zero: the next need tries it).
    pub retry_in: Duration,
    /// Dropped from the local view (unreachable for `forget_after`).
    pub forgotten: bool,
    /// Outbound dials to it since the node started.
    pub dials: u64,
    /// Times it was skipped (not dialled, not asked) because of its back-off.
    pub skipped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
    until: Instant,
    skipped: u64,
}

#[derive(Debug, Default)]
struct State {
    peers: HashMap<PeerId, Entry>,
    dials: HashMap<PeerId, u64>,
    /// Open connections per peer, over all swarms.
    connections: HashMap<PeerId, u32>,
    /// When each connected peer last sent us a block or a record answer.
    heard: HashMap<PeerId, Instant>,
}

/// The node-wide reachability memory, shared by every swarm of a node.
#[derive(Debug, Default)]
pub struct Health {
    config: BackoffConfig,
    state: Mutex<State>,
    /// Outbound dials, all peers.
    dials: AtomicU64,
    /// Dials and requests skipped for a peer's back-off, all peers.
    skipped: AtomicU64,
    /// Failures recorded, all peers.
    failures: AtomicU64,
}

impl Health {
    /// An empty memory with these rules.
    pub fn new(config: BackoffConfig) -> Health {
        Health {
            config,
            ..Health::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failure to reach `peer`. Returns true when it starts a back-off (the
    /// caller then closes what is left of its connections). Failures while a back-off
    /// runs (concurrent attempts) do not lengthen it.
    pub fn failed(&self, peer: PeerId, now: Instant, why: &str) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut st = self.lock();
        let cfg = self.config;
        match st.peers.get_mut(&peer) {
            Some(e) if now < e.until => false,
            Some(e) => {
                e.failures = e.failures.saturating_add(1);
                let shift = (e.failures - 1).min(16);
                let backoff = cfg.initial.saturating_mul(1 << shift).min(cfg.max);
                e.until = now + backoff;
                info!(%peer, failures = e.failures, ?backoff, "peer still unreachable ({why}); backing off");
                true
            }
            None => {
                if st.peers.len() >= MAX_UNREACHABLE {
                    st.peers.retain(|_, e| now < e.until);
                    if st.peers.len() >= MAX_UNREACHABLE {
                        debug!(%peer, "too many unreachable peers remembered; not this one");
                        return false;
                    }
                }
                st.peers.insert(
                    peer,
                    Entry {
                        failures: 1,
                        since: now,
                        until: now + cfg.initial.min(cfg.max),
                        skipped: 0,
                    },
                );
                info!(%peer, backoff = ?cfg.initial, "peer unreachable ({why}); backing off");
                true
            }
        }
    }

    /// A connection with `peer` is up: it is reachable again. Returns whether it was
    /// remembered as unreachable.
    pub fn reached(&self, peer: &PeerId) -> bool {
        let was = self.lock().peers.remove(peer).is_some();
        if was {
            info!(%peer, "peer reachable again");
        }
        was
    }

    /// Whether any swarm of the node has a connection to `peer` now.
    pub fn connected(&self, peer: &PeerId) -> bool {
        self.lock().connections.get(peer).is_some_and(|n| *n > 0)
    }

    fn connection_opened(&self, peer: PeerId) {
        *self.lock().connections.entry(peer).or_default() += 1;
    }

    fn connection_closed(&self, peer: PeerId) {
        let mut st = self.lock();
        if let Some(n) = st.connections.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.connections.remove(&peer);
                st.heard.remove(&peer);
            }
        }
    }

    /// `peer` sent us a block or a record answer at `now`: it is alive, however busy.
    pub fn heard(&self, peer: PeerId, now: Instant) {
        let mut st = self.lock();
        // Kept for connected peers only, so the map is bounded by the connections.
        if st.connections.contains_key(&peer) {
            st.heard.insert(peer, now);
        }
    }

    /// Whether `peer` sent us something at or after `since`: a request it left
    /// unanswered until the bound then means a busy peer (or a busy us), not an
    /// unreachable one.
    pub fn heard_since(&self, peer: &PeerId, since: Instant) -> bool {
        self.lock().heard.get(peer).is_some_and(|t| *t >= since)
    }

    /// Whether `peer` is in back-off now (not to be dialled or waited for).
    pub fn backed_off(&self, peer: &PeerId, now: Instant) -> bool {
        self.lock().peers.get(peer).is_some_and(|e| now < e.until)
    }

    /// Whether `peer` has been unreachable for `forget_after`: dropped from the local
    /// view.
    pub fn forgotten(&self, peer: &PeerId, now: Instant) -> bool {
        let forget = self.config.forget_after;
        self.lock()
            .peers
            .get(peer)
            .is_some_and(|e| now.saturating_duration_since(e.since) >= forget)
    }

    /// [`Self::backed_off`], counting a skip when it is.
    pub fn skip(&self, peer: &PeerId, now: Instant) -> bool {
        let mut st = self.lock();
        match st.peers.get_mut(peer) {
            Some(e) if now < e.until => {
                e.skipped += 1;
                self.skipped.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Counts an outbound dial to `peer`.
    fn dialed(&self, peer: PeerId) {
        self.dials.fetch_add(1, Ordering::Relaxed);
        let mut st = self.lock();
        if st.dials.len() >= MAX_DIAL_COUNTS && !st.dials.contains_key(&peer) {
            st.dials.clear();
        }
        *st.dials.entry(peer).or_default() += 1;
    }

    /// Outbound dials to `peer` since the node started.
    pub fn dials_to(&self, peer: &PeerId) -> u64 {
        self.lock().dials.get(peer).copied().unwrap_or(0)
    }

    /// (dials, skips, failures) over all peers since the node started.
    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.dials.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// Every peer remembered as unreachable, sorted by peer id.
    pub fn unreachable(&self, now: Instant) -> Vec<UnreachablePeer> {
        let st = self.lock();
        let mut out: Vec<UnreachablePeer> = st
            .peers
            .iter()
            .map(|(p, e)| {
                let unreachable_for = now.saturating_duration_since(e.since);
                UnreachablePeer {
                    peer: *p,
                    failures: e.failures,
                    unreachable_for,
                    retry_in: e.until.saturating_duration_since(now),
                    forgotten: unreachable_for >= self.config.forget_after,
                    dials: st.dials.get(p).copied().unwrap_or(0),
                    skipped: e.skipped,
                }
            })
            .collect();
        out.sort_by_key(|u| u.peer);
        out
    }
}

/// The behaviour that applies a node's [`Health`] in one swarm: refuses outbound dials
/// to peers in back-off, counts the others, tracks open connections, and ends a
/// back-off when a connection is established. Inbound connections are never refused: a
/// peer that comes back and connects is reachable again. A failed dial alone does not
/// start a back-off here (it may have tried only a stale address, e.g. from a bootstrap
/// list, while the peer's records name its new one); the record requests that need the
/// peer decide (`node.rs`).
pub(crate) struct Guard {
    health: Arc<Health>,
}

impl Guard {
    pub(crate) fn new(health: Arc<Health>) -> Guard {
        Guard { health }
    }
}

impl NetworkBehaviour for Guard {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(peer) = peer {
            if self.health.skip(&peer, Instant::now()) {
                debug!(%peer, "not dialling a peer in back-off");
                return Err(ConnectionDenied::new(BackedOff(peer)));
            }
            self.health.dialed(peer);
        }
        Ok(vec![])
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(c) => {
                self.health.connection_opened(c.peer_id);
                self.health.reached(&c.peer_id);
            }
            FromSwarm::ConnectionClosed(c) => self.health.connection_closed(c.peer_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// Why [`Guard`] refused a dial.
#[derive(Debug, thiserror::Error)]
#[error("peer {0} is in back-off after failing to connect")]
struct BackedOff(PeerId);

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(35),
            forget_after: Duration::from_secs(100),
        }
    }

    #[test]
    fn back_off_doubles_up_to_the_cap_and_a_connection_clears_it() {
        let h = Health::new(cfg());
        let p = PeerId::random();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!h.backed_off(&p, t0));
        assert!(h.failed(p, t0, "test"));
        // Concurrent failures during the back-off do not lengthen it.
        assert!(!h.failed(p, at(5), "test"));
        assert!(h.backed_off(&p, at(9)));
        assert!(!h.backed_off(&p, at(10)));
        // Failing again after it ran out: 20 s, then 35 s (the cap), then 35 s.
        assert!(h.failed(p, at(10), "test"));
        assert!(h.backed_off(&p, at(29)) && !h.backed_off(&p, at(30)));
        assert!(h.failed(p, at(30), "test"));
        assert!(h.backed_off(&p, at(64)) && !h.backed_off(&p, at(65)));
        assert!(h.failed(p, at(65), "test"));
        let u = h.unreachable(at(70));
        assert_eq!(u.len(), 1);
        assert_eq!(
            (u[0].failures, u[0].unreachable_for, u[0].retry_in),
            (4, Duration::from_secs(70), Duration::from_secs(30))
        );
        assert!(!u[0].forgotten && !h.forgotten(&p, at(99)));
        assert!(h.forgotten(&p, at(100)));
        assert_eq!(h.totals().2, 5);
        assert!(h.reached(&p));
        assert!(!h.backed_off(&p, at(71)) && !h.forgotten(&p, at(200)));
        assert!(h.unreachable(at(71)).is_empty());
        assert!(!h.reached(&p));
    }

    #[test]
    fn skips_and_dials_are_counted_per_peer() {
        let h = Health::new(cfg());
        let (p, q) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        h.dialed(p);
        h.dialed(q);
        h.dialed(q);
        h.failed(p, t0, "test");
        assert!(h.skip(&p, t0));
        assert!(h.skip(&p, t0 + Duration::from_secs(1)));
        assert!(!h.skip(&q, t0));
        assert!(!h.skip(&p, t0 + Duration::from_secs(10)));
        assert_eq!((h.dials_to(&p), h.dials_to(&q)), (1, 2));
        assert_eq!(h.totals(), (3, 2, 1));
        let u = h.unreachable(t0);
        assert_eq!((u[0].peer, u[0].dials, u[0].skipped), (p, 1, 2));
    }

    #[test]
    fn a_peer_is_heard_only_while_connected_and_from_then_on() {
        let h = Health::new(cfg());
        let p = PeerId::random();
        let t0 = Instant::now();
        h.heard(p, t0);
        assert!(!h.heard_since(&p, t0), "not connected: not remembered");
        h.connection_opened(p);
        h.heard(p, t0 + Duration::from_millis(5));
        assert!(h.heard_since(&p, t0));
        assert!(!h.heard_since(&p, t0 + Duration::from_millis(6)));
        h.connection_closed(p);
        assert!(!h.heard_since(&p, t0), "forgotten with its last connection");
    }

    #[test]
    fn open_connections_are_counted_over_swarms() {
        let h = Health::new(cfg());
        let p = PeerId::random();
        assert!(!h.connected(&p));
        h.connection_opened(p);
        h.connection_opened(p);
        h.connection_closed(p);
        assert!(h.connected(&p));
        h.connection_closed(p);
        h.connection_closed(p);
        assert!(!h.connected(&p));
    }
}
