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
            s.anchor = config.anchor;
            s.relay = config.relay;
            swarms.push(s);
        }
        (None, Some(b)) => {
            return Err(DaemonError::Config(format!(
                "a bootstrap list ({}) is given without a swarm key: a private swarm needs both (--swarm-key)",
                b.display()
            )));
        }
        (None, None) => {
            if config.listen_given {
                // --listen sets the private swarm's addresses; given without one it
                // would be silently ignored.
                return Err(DaemonError::Config(no_swarm_for_listen(config)));
            }
        }
    }
    if config.public {
        let mut s = SwarmConfig::new(PUBLIC_SWARM);
        s.listen = parse_addrs(&config.public_listen)?;
        if let Some(b) = &config.public_bootstrap {
            s.bootstrap = rdht_net::read_bootstrap_file(b)?;
        }
        s.bootstrap.retain(|b| b.peer != me);
        s.anchor = config.anchor;
        s.relay = config.relay;
        // Only what the caller explicitly scopes as public goes here.
        s.announce = AnnouncePolicy::Explicit;
        swarms.push(s);
    }
    Ok(swarms)
}

/// The error for `--listen` with no private swarm to listen for.
fn no_swarm_for_listen(config: &Config) -> String {
    let public = if config.public {
        format!(
            "; the public swarm listens on `public_listen` in {}",
            config.config_file.display()
        )
    } else {
        format!(
            ", or join the public swarm with `public = true` in {} (its addresses are \
             `public_listen`)",
            config.config_file.display()
        )
    };
    format!(
        "--listen {} is given but no private swarm is configured, so nothing would listen \
         there: join one with --swarm-key FILE (and --bootstrap FILE){public}",
        config.listen.join(",")
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 18): `--listen` with no swarm to listen for was ignored in
    /// silence; it is an error naming the settings that would use it.
    #[test]
    fn listen_without_a_swarm_is_an_error_naming_the_missing_setting() {
        let dir = tempfile::tempdir().unwrap();
        let over = crate::config::Overrides {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            ..Default::default()
        };
        let (config, _) = crate::config::load(dir.path(), None, over.clone()).unwrap();
        let me = PeerId::random();
        let err = swarm_configs(&config, me).unwrap_err().to_string();
        let file = dir.path().join("config.toml");
        assert!(
            err.ends_with(&format!(
                "--listen /ip4/127.0.0.1/tcp/0 is given but no private swarm is configured, so \
                 nothing would listen there: join one with --swarm-key FILE (and --bootstrap \
                 FILE), or join the public swarm with `public = true` in {} (its addresses are \
                 `public_listen`)",
                file.display()
            )),
            "{err}"
        );
        // Without the flag, the file's default `listen` is no error: a local cache.
        let (config, _) =
            crate::config::load(dir.path(), None, crate::config::Overrides::default()).unwrap();
        assert!(swarm_configs(&config, me).unwrap().is_empty());
        // With the public swarm only, the flag is still unused, and the error says where
        // the public swarm's addresses go.
        std::fs::write(
            &file,
            "public = true\npublic_listen = [\"/ip4/127.0.0.1/tcp/0\"]\n",
        )
        .unwrap();
        let (config, _) = crate::config::load(dir.path(), None, over).unwrap();
        let err = swarm_configs(&config, me).unwrap_err().to_string();
        assert!(
            err.ends_with(&format!(
                "(and --bootstrap FILE); the public swarm listens on `public_listen` in {}",
                file.display()
            )),
            "{err}"
        );
    }

    /// The daemon's `anchor` and `relay` settings reach every swarm it joins; on an
    /// anchor, relaying can be turned off alone.
    #[test]
    fn anchor_and_relay_settings_reach_every_swarm() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("swarm.key");
        std::fs::write(&key, SwarmKey::from_bytes([1; 32]).to_file_text()).unwrap();
        let me = PeerId::random();
        for (extra, want) in [
            ("anchor = true\n", (true, true)),
            ("anchor = true\nrelay = false\n", (true, false)),
            ("relay = true\n", (false, true)),
        ] {
            std::fs::write(
                dir.path().join("config.toml"),
                format!(
                    "swarm_key = {key:?}\npublic = true\n\
                     public_listen = [\"/ip4/127.0.0.1/tcp/0\"]\n{extra}"
                ),
            )
            .unwrap();
            let (config, _) =
                crate::config::load(dir.path(), None, crate::config::Overrides::default()).unwrap();
            let got: Vec<(String, bool, bool)> = swarm_configs(&config, me)
                .unwrap()
                .into_iter()
                .map(|s| (s.name, s.anchor, s.relay))
                .collect();
            assert_eq!(
                got,
                [
                    (PRIVATE_SWARM.to_string(), want.0, want.1),
                    (PUBLIC_SWARM.to_string(), want.0, want.1)
                ],
                "{extra:?}"
            );
        }
    }
}
