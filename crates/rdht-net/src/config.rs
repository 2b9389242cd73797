//! Node and swarm configuration, and the two configuration file formats: the IPFS
//! `swarm.key` (pnet pre-shared key) and the bootstrap list.
//!
//! Owns: [`NodeConfig`], [`SwarmConfig`], [`FetchConfig`], [`SwarmKey`],
//! [`parse_bootstrap`]. Does not own: where the files live (the daemon decides) or
//! running anything. Spec: `specs/swarm.md` §5 (files) and §6 (announce policy).

use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::PreSharedKey;
use libp2p::{Multiaddr, PeerId};

use crate::error::ConfigError;
use crate::health::BackoffConfig;

/// The first line of a swarm key file.
pub const SWARM_KEY_HEADER: &str = "/key/swarm/psk/1.0.0/";
/// The encoding line of a swarm key file; the only encoding supported.
pub const SWARM_KEY_ENCODING: &str = "/base16/";
/// Largest swarm key or bootstrap file read, in bytes.
pub const MAX_CONFIG_FILE_LEN: u64 = 1 << 20;

/// A private swarm's 32-byte pre-shared key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SwarmKey([u8; 32]);

impl std::fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret; the fingerprint identifies the swarm.
        write!(f, "SwarmKey({})", self.fingerprint())
    }
}

impl SwarmKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> SwarmKey {
        SwarmKey(bytes)
    }

    /// The public fingerprint of the key (safe to log).
    pub fn fingerprint(&self) -> String {
        PreSharedKey::new(self.0).fingerprint().to_string()
    }

    /// The key in `swarm.key` file format (three lines, trailing newline).
    pub fn to_file_text(&self) -> String {
        let mut s = format!("{SWARM_KEY_HEADER}\n{SWARM_KEY_ENCODING}\n");
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s.push('\n');
        s
    }

    /// Parses `swarm.key` text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<SwarmKey, ConfigError> {
        let bad = |line: usize, reason: String| ConfigError::SwarmKeyMalformed {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let header = lines.first().copied().unwrap_or("");
        if header != SWARM_KEY_HEADER {
            return Err(bad(
                1,
                format!("expected {SWARM_KEY_HEADER:?}, found {header:?}"),
            ));
        }
        let encoding = lines.get(1).copied().unwrap_or("");
        if encoding != SWARM_KEY_ENCODING {
            return Err(bad(
                2,
                format!(
                    "expected {SWARM_KEY_ENCODING:?} (the only supported encoding), found {encoding:?}"
                ),
            ));
        }
        let hex = lines.get(2).copied().unwrap_or("");
        if hex.len() != 64 {
            return Err(bad(
                3,
                format!("expected 64 hex characters, found {}", hex.len()),
            ));
        }
        let mut key = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => key[i] = (hi * 16 + lo) as u8,
                _ => {
                    return Err(bad(
                        3,
                        format!("non-hex character near position {}", i * 2 + 1),
                    ));
                }
            }
        }
        if let Some((n, extra)) = lines
            .iter()
            .enumerate()
            .skip(3)
            .find(|(_, l)| !l.is_empty())
        {
            return Err(bad(n + 1, format!("unexpected extra line {extra:?}")));
        }
        Ok(SwarmKey(key))
    }

    /// Reads and parses a `swarm.key` file.
    pub fn from_file(path: &Path) -> Result<SwarmKey, ConfigError> {
        let text = read_small(path).map_err(|source| ConfigError::SwarmKeyUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
        SwarmKey::parse(&text, path)
    }

    pub(crate) fn psk(&self) -> PreSharedKey {
        PreSharedKey::new(self.0)
    }
}

fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_FILE_LEN).read_to_string(&mut text)?;
    Ok(text)
}

/// One bootstrap peer: its id and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapPeer {
    /// The peer's id (the `/p2p/...` suffix).
    pub peer: PeerId,
    /// The address without the `/p2p/...` suffix.
    pub addr: Multiaddr,
}

impl BootstrapPeer {
    /// Splits a multiaddr ending in `/p2p/<peer id>`.
    pub fn from_multiaddr(mut addr: Multiaddr) -> Result<BootstrapPeer, String> {
        match addr.pop() {
            Some(Protocol::P2p(peer)) if !addr.is_empty() => Ok(BootstrapPeer { peer, addr }),
            Some(Protocol::P2p(_)) => Err("the address has only a /p2p/ part".into()),
            _ => Err("the address does not end in /p2p/<peer id>".into()),
        }
    }

    /// The full multiaddr, `/p2p/<peer id>` included.
    pub fn to_multiaddr(&self) -> Multiaddr {
        self.addr.clone().with(Protocol::P2p(self.peer))
    }
}

/// Parses a bootstrap list: one multiaddr ending in `/p2p/<peer id>` per line; `#`
/// starts a comment; blank lines are skipped. `path` only names the source in errors.
pub fn parse_bootstrap(text: &str, path: &Path) -> Result<Vec<BootstrapPeer>, ConfigError> {
    let mut peers = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| ConfigError::BootstrapMalformed {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let addr: Multiaddr = line
            .parse()
            .map_err(|e| bad(format!("{line:?} is not a multiaddr: {e}")))?;
        peers.push(BootstrapPeer::from_multiaddr(addr).map_err(|e| bad(format!("{line:?}: {e}")))?);
    }
    Ok(peers)
}

/// Reads and parses a bootstrap list file (see [`parse_bootstrap`]).
pub fn read_bootstrap_file(path: &Path) -> Result<Vec<BootstrapPeer>, ConfigError> {
    let text = read_small(path).map_err(|source| ConfigError::BootstrapUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    parse_bootstrap(&text, path)
}

/// Which announcements a swarm receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnouncePolicy {
    /// [`crate::NodeHandle::provide`] announces here.
    Automatic,
    /// Only [`crate::NodeHandle::provide_in`] naming this swarm announces here.
    Explicit,
}

/// The byte transport under a swarm's pnet, noise and yamux layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportKind {
    /// TCP: what every real node uses.
    #[default]
    Tcp,
    /// libp2p's in-process memory transport (`/memory/<port>` addresses): for tests and
    /// benchmarks that run hundreds of nodes in one process without using a file
    /// descriptor per connection. The layers above it (pnet, noise, yamux) are the same.
    Memory,
}

/// One swarm the node joins: its own transport (with or without pnet), DHT and peers.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// A unique name, used in logs, errors and `provide_in`.
    pub name: String,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/4701` (`/ip4/127.0.0.1/tcp/0` in tests).
    pub listen: Vec<Multiaddr>,
    /// Addresses other peers should dial us at, put into our provider records. When
    /// empty, every concrete (not 0.0.0.0 / ::) listen address is used.
    pub external: Vec<Multiaddr>,
    /// Peers to join through. Empty for the first node of a swarm.
    pub bootstrap: Vec<BootstrapPeer>,
    /// The pre-shared key of a private swarm; `None` for a public one.
    pub key: Option<SwarmKey>,
    /// Which announcements this swarm gets.
    pub announce: AnnouncePolicy,
    /// How long to wait for the first bootstrap connection at start.
    pub bootstrap_timeout: Duration,
    /// Most distinct keys with provider records (ours and other peers') this node
    /// stores in this swarm. libp2p's default is 1024; rdht raises it so a node holding
    /// tens of thousands of artifacts can announce them all.
    pub max_provider_keys: usize,
    /// Time after which a DHT query gives up.
    pub query_timeout: Duration,
    /// How long an idle connection is kept open.
    pub idle_timeout: Duration,
    /// Most inbound block or record streams served at once.
    pub max_inbound_streams: usize,
    /// How often Kademlia refreshes the routing table by itself (a bootstrap: a lookup
    /// of our own id and of a random id per bucket); `None` turns the periodic refresh
    /// off (benchmarks of many nodes in one process do; each refresh opens hundreds of
    /// connections). Default: 5 minutes, libp2p's.
    pub refresh_interval: Option<Duration>,
    /// The transport under pnet, noise and yamux ([`TransportKind::Tcp`] unless a test
    /// or benchmark asks for memory; listen addresses must match it).
    pub transport: TransportKind,
    /// How long other peers keep our provider records (Kademlia's provider record
    /// TTL). Default: [`PROVIDER_TTL`].
    pub provider_ttl: Duration,
    /// How often we republish our provider records; well under `provider_ttl`.
    /// Default: [`PROVIDER_REPUBLISH`].
    pub provider_republish: Duration,
    /// An always-on helper of its swarm (specs/swarm.md §2.4): Kademlia server whatever
    /// AutoNAT says, AutoNAT server, and, with `relay`, a relay from the start.
    /// Default: false.
    pub anchor: bool,
    /// Ask an IGD gateway on the local network to forward our listen ports (UPnP).
    /// Used only when some listen address is not loopback. Default: true.
    pub upnp: bool,
    /// Relay circuits for other peers of this swarm (relay v2 server), once an external
    /// address is confirmed (at once on an anchor). Default: false (the daemon's
    /// `relay` setting defaults to its `anchor`).
    pub relay: bool,
    /// Bounds on connections (specs/swarm.md §2.5).
    pub limits: ConnLimits,
}

/// Connection limits of one swarm (libp2p's `connection_limits`): a node exposed to
/// the internet (an anchor) must not let one peer, or many, take all its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Established connections to or from one peer (a direct one per transport, a
    /// relayed one and the one that replaces it leave room). Default: 8.
    pub per_peer: u32,
    /// Established connections in all. Default: 1024.
    pub total: u32,
    /// Established inbound connections (leaves room for our own dials). Default: 768.
    pub inbound: u32,
    /// Inbound connections still in their handshake. Default: 128.
    pub pending_inbound: u32,
    /// Our own dials still in progress. Default: 256.
    pub pending_outbound: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            per_peer: 8,
            total: 1024,
            inbound: 768,
            pending_inbound: 128,
            pending_outbound: 256,
        }
    }
}

/// Default provider record TTL: 6 h, so the records of a laptop that left in the
/// evening are gone from the DHT by morning (specs/swarm.md §6.2).
pub const PROVIDER_TTL: Duration = Duration::from_secs(6 * 3600);
/// Default provider republication interval: 2 h, a third of [`PROVIDER_TTL`], so a
/// record survives two missed republications.
pub const PROVIDER_REPUBLISH: Duration = Duration::from_secs(2 * 3600);

impl SwarmConfig {
    /// A public swarm with automatic announcements, listening nowhere yet.
    pub fn new(name: impl Into<String>) -> SwarmConfig {
        SwarmConfig {
            name: name.into(),
            listen: Vec::new(),
            external: Vec::new(),
            bootstrap: Vec::new(),
            key: None,
            announce: AnnouncePolicy::Automatic,
            bootstrap_timeout: Duration::from_secs(20),
            max_provider_keys: 1 << 20,
            query_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            max_inbound_streams: 256,
            refresh_interval: Some(Duration::from_secs(5 * 60)),
            transport: TransportKind::Tcp,
            provider_ttl: PROVIDER_TTL,
            provider_republish: PROVIDER_REPUBLISH,
            anchor: false,
            upnp: true,
            relay: false,
            limits: ConnLimits::default(),
        }
    }

    /// Listens on `/ip4/127.0.0.1/tcp/0` (tests, benchmarks).
    pub fn loopback(name: impl Into<String>) -> SwarmConfig {
        let mut c = SwarmConfig::new(name);
        c.listen.push(
            Multiaddr::empty()
                .with(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST))
                .with(Protocol::Tcp(0)),
        );
        c
    }

    /// Listens on `/memory/0` (a fresh in-process port) over the memory transport:
    /// tests and benchmarks with many nodes in one process.
    pub fn in_memory(name: impl Into<String>) -> SwarmConfig {
        let mut c = SwarmConfig::new(name);
        c.transport = TransportKind::Memory;
        c.listen.push(Multiaddr::empty().with(Protocol::Memory(0)));
        c
    }
}

/// Knobs of the multi-provider fetch.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Most providers asked at once.
    pub max_providers: usize,
    /// A provider silent this long is dropped.
    pub stall_timeout: Duration,
    /// A provider whose request has been silent this long is dropped while another
    /// provider's worker is idle (nothing left in the queue), and its unfinished DAGs
    /// are resumed by that worker: a provider that freezes mid-stream holds its share
    /// for this long, not for `stall_timeout`. With a single provider only
    /// `stall_timeout` applies.
    pub hedge_after: Duration,
    /// How long opening a stream (dial included) may take.
    pub connect_timeout: Duration,
    /// How long a corrupting peer stays banned.
    pub ban_duration: Duration,
    /// Roughly how many file bytes one request asks for (at least one DAG per request).
    pub batch_bytes: u64,
    /// How long a record request (dial included) may go unanswered before the peer is
    /// remembered as unreachable and put in back-off (specs/swarm.md §6.4).
    pub reply_bound: Duration,
    /// The back-off of unreachable peers.
    pub backoff: BackoffConfig,
}

/// Default [`FetchConfig::reply_bound`]: the daemon's decision bound
/// (specs/swarm.md §6.4).
pub const REPLY_BOUND: Duration = Duration::from_millis(300);

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_providers: 4,
            stall_timeout: Duration::from_secs(15),
            hedge_after: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(15),
            ban_duration: Duration::from_secs(3600),
            batch_bytes: 64 << 20,
            reply_bound: REPLY_BOUND,
            backoff: BackoffConfig::default(),
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's identity, shared by all its swarms.
    pub keypair: Keypair,
    /// The swarms, in lookup order (private first, then public, typically).
    pub swarms: Vec<SwarmConfig>,
    /// Fetch behaviour.
    pub fetch: FetchConfig,
}

impl NodeConfig {
    /// A config with a fresh ed25519 identity.
    pub fn new(swarms: Vec<SwarmConfig>) -> NodeConfig {
        NodeConfig {
            keypair: Keypair::generate_ed25519(),
            swarms,
            fetch: FetchConfig::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let mut names: Vec<&str> = self.swarms.iter().map(|s| s.name.as_str()).collect();
        if names.is_empty() {
            return Err(ConfigError::InvalidSwarms {
                reason: "no swarm is configured".into(),
            });
        }
        if names.iter().any(|n| n.is_empty()) {
            return Err(ConfigError::InvalidSwarms {
                reason: "a swarm has an empty name".into(),
            });
        }
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::InvalidSwarms {
                reason: format!("two swarms are named {:?}", w[0]),
            });
        }
        Ok(())
    }
}

/// The placeholder path used in errors for text parsed from memory.
pub fn inline_path() -> PathBuf {
    PathBuf::from("<inline>")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "/key/swarm/psk/1.0.0/\n/base16/\n\
        000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

    #[test]
    fn swarm_key_round_trip_and_matches_libp2p() {
        let key = SwarmKey::parse(KEY, &inline_path()).unwrap();
        let mut want = [0u8; 32];
        for (i, b) in want.iter_mut().enumerate() {
            *b = i as u8;
        }
        assert_eq!(key, SwarmKey::from_bytes(want));
        assert_eq!(key.to_file_text(), KEY);
        let theirs: PreSharedKey = KEY.parse().unwrap();
        assert_eq!(theirs.fingerprint().to_string(), key.fingerprint());
        // CRLF line endings are accepted.
        let crlf = KEY.replace('\n', "\r\n");
        assert_eq!(SwarmKey::parse(&crlf, &inline_path()).unwrap(), key);
    }

    #[test]
    fn swarm_key_errors_name_the_line() {
        let cases = [
            ("", 1),
            ("/key/swarm/psk/2.0.0/\n/base16/\nab", 1),
            ("/key/swarm/psk/1.0.0/\n/base64/\nab", 2),
            ("/key/swarm/psk/1.0.0/\n/base16/\nabcd", 3),
            (
                "/key/swarm/psk/1.0.0/\n/base16/\n\
                 zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                3,
            ),
            (
                "/key/swarm/psk/1.0.0/\n/base16/\n\
                 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n\nextra",
                5,
            ),
        ];
        for (text, want) in cases {
            match SwarmKey::parse(text, &inline_path()) {
                Err(ConfigError::SwarmKeyMalformed { line, .. }) => {
                    assert_eq!(line, want, "{text:?}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let missing = SwarmKey::from_file(Path::new("/nonexistent/swarm.key"));
        assert!(matches!(
            missing,
            Err(ConfigError::SwarmKeyUnreadable { .. })
        ));
    }

    #[test]
    fn bootstrap_file_parses_and_reports_line_numbers() {
        let peer = PeerId::random();
        let text = format!(
            "# rdht bootstrap\n\n/ip4/127.0.0.1/tcp/4001/p2p/{peer}  # first\n   \n/dns4/a.example/tcp/1/p2p/{peer}\n"
        );
        let peers = parse_bootstrap(&text, &inline_path()).unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].peer, peer);
        assert_eq!(
            peers[0].addr,
            "/ip4/127.0.0.1/tcp/4001".parse::<Multiaddr>().unwrap()
        );
        assert_eq!(
            peers[0].to_multiaddr(),
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")
                .parse::<Multiaddr>()
                .unwrap()
        );

        let bad = format!("# ok\n/ip4/127.0.0.1/tcp/4001/p2p/{peer}\n/ip4/127.0.0.1/tcp/4001\n");
        match parse_bootstrap(&bad, &inline_path()) {
            Err(ConfigError::BootstrapMalformed {
                line: 3, reason, ..
            }) => {
                assert!(reason.contains("/p2p/"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        match parse_bootstrap("not an address\n", &inline_path()) {
            Err(ConfigError::BootstrapMalformed { line: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
        let missing = read_bootstrap_file(Path::new("/nonexistent/bootstrap.txt"));
        assert!(matches!(
            missing,
            Err(ConfigError::BootstrapUnreadable { .. })
        ));
    }
}
