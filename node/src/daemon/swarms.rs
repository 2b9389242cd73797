//! The swarms of the daemon: their configuration from `config.toml` (private swarm from
//! the key and bootstrap file, the public one), start-up, and the reach of a scope.
//!
//! Owns: `SwarmConfig`s and their start. Does not own: the libp2p behaviour
//! (`rdht-net`) or where keys are announced (`announce`).

use super::*;

pub(super) fn parse_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>, DaemonError> {
    addrs
        .iter()
        .map(|a| {
            a.parse::<Multiaddr>().map_err(|e| DaemonError::Listen {
                addr: a.clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// The swarms `config` asks for, private first. Our own entry is dropped from bootstrap
/// lists (a shared file lists every node, this one included).
pub(super) fn swarm_configs(config: &Config, me: PeerId) -> Result<Vec<SwarmConfig>, DaemonError> {
    let mut swarms = Vec::new();
    match (&config.swarm_key, &config.bootstrap) {
        (Some(key), bootstrap) => {
            let mut s = SwarmConfig::new(PRIVATE_SWARM);
            s.key = Some(SwarmKey::from_file(key)?);
            s.listen = parse_addrs(&config.listen)?;
            if let Some(b) = bootstrap {
                s.bootstrap = rdht_net::read_bootstrap_file(b)?;
            }
            s.bootstrap.retain(|b| b.peer != me);
            s.announce = AnnouncePolicy::Automatic;
            swarms.push(s);
        }
        (None, Some(b)) => {
            return Err(DaemonError::Config(format!(
                "a bootstrap list ({}) is given without a swarm key: a private swarm needs both (--swarm-key)",
                b.display()
            )));
        }
        (None, None) => {}
    }
    if config.public {
        let mut s = SwarmConfig::new(PUBLIC_SWARM);
        s.listen = parse_addrs(&config.public_listen)?;
        if let Some(b) = &config.public_bootstrap {
            s.bootstrap = rdht_net::read_bootstrap_file(b)?;
        }
        s.bootstrap.retain(|b| b.peer != me);
        // Only what the caller explicitly scopes as public goes here.
        s.announce = AnnouncePolicy::Explicit;
        swarms.push(s);
    }
    Ok(swarms)
}

/// The fetch settings: a record request unanswered within the decision bound
/// (`lookup_timeout`) puts its peer in back-off (specs/swarm.md §6.4).
pub(super) fn fetch_config(config: &Config) -> rdht_net::FetchConfig {
    rdht_net::FetchConfig {
        reply_bound: config.lookup_timeout,
        backoff: rdht_net::BackoffConfig {
            initial: config.unreachable_backoff,
            ..rdht_net::BackoffConfig::default()
        },
        ..rdht_net::FetchConfig::default()
    }
}

pub(super) async fn start_net(
    config: &Config,
    keypair: Keypair,
    swarms: Vec<SwarmConfig>,
    store: &Store,
    bytes_out: Arc<AtomicU64>,
) -> Result<NodeHandle, DaemonError> {
    let source = Arc::new(ServeStore {
        store: store.clone(),
        bytes_out,
    });
    let fetch = fetch_config(config);
    let config = NodeConfig {
        keypair: keypair.clone(),
        swarms: swarms.clone(),
        fetch: fetch.clone(),
    };
    match NodeHandle::start(config, source.clone()).await {
        Ok(n) => Ok(n),
        Err(NetError::NoReachableBootstrap {
            swarm,
            tried,
            last_error,
        }) => {
            warn!(%swarm, tried, %last_error, "no bootstrap peer is reachable; starting as the first node of the swarm (peers can bootstrap from this one)");
            let swarms = swarms
                .into_iter()
                .map(|mut s| {
                    s.bootstrap.clear();
                    s
                })
                .collect();
            let config = NodeConfig {
                keypair,
                swarms,
                fetch,
            };
            Ok(NodeHandle::start(config, source).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The swarms a key of `scope` may be looked up in: private keys only where they are
/// announced automatically (the private swarms), never in the public one.
pub(super) fn reach(scope: Scope) -> Reach {
    match scope {
        Scope::Private => Reach::Automatic,
        Scope::Everywhere => Reach::All,
    }
}
