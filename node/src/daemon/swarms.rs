//! The swarms of the daemon: their configuration from `config.toml` (private swarm from
//! the key and bootstrap file, the public one), start-up, and announcements, each key
//! only where its scope allows.
//!
//! Owns: `SwarmConfig`s, the announce rule and re-announcing after a restart. Does not
//! own: the libp2p behaviour (`rdht-net`).

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

/// Announces `keys`; failures only cost findability, so they are logged, not returned.
pub(super) async fn announce(
    net: NodeHandle,
    keys: Vec<ProviderKey>,
    also_in: Option<&'static str>,
) {
    for key in keys {
        let work = async {
            net.provide(key).await?;
            if let Some(swarm) = also_in {
                net.provide_in(swarm, key).await?;
            }
            Ok::<(), NetError>(())
        };
        match tokio::time::timeout(ANNOUNCE_TIMEOUT, work).await {
            Ok(Ok(())) => debug!(%key, "announced"),
            Ok(Err(e)) => warn!(%key, "announcing failed: {e}"),
            Err(_) => warn!(%key, "announcing timed out after {ANNOUNCE_TIMEOUT:?}"),
        }
    }
}

impl Shared {
    /// Announces everything the store holds, after a (re)start.
    pub(super) async fn reannounce(&self) {
        let Some(net) = &self.net else { return };
        let held = blocking(&self.store, |s| Ok((s.artifact_roots()?, s.build_keys()?))).await;
        let (roots, keys) = match held {
            Ok(v) => v,
            Err(e) => {
                warn!("listing what to re-announce: {e}");
                return;
            }
        };
        let all = roots
            .into_iter()
            .map(ProviderKey::Artifact)
            .chain(keys.into_iter().map(ProviderKey::Build));
        match net.reannounce(all).await {
            Ok(n) => info!(keys = n, "re-announced the store's contents"),
            Err(e) => warn!("re-announcing: {e}"),
        }
    }

    /// Announces `keys` in the automatic swarms, plus `also_in` when given, in the
    /// background: the local provider entry exists as soon as the swarm task takes the
    /// command, and a build must not wait for DHT round trips.
    pub(super) fn announce(&self, keys: Vec<ProviderKey>, also_in: Option<&'static str>) {
        if let Some(net) = &self.net {
            tokio::spawn(announce(net.clone(), keys, also_in));
        }
    }
}
