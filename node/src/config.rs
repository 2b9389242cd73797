//! Daemon configuration: the data directory, the TOML config file, and how flags,
//! environment and file combine (flags override `RDHT_*` variables, which override the
//! file, which overrides the defaults).
//!
//! Owns: locating and parsing configuration and writing the commented default file on
//! first run. Does not own: acting on it (see `daemon`).

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default config file name inside the data directory.
pub const CONFIG_FILE: &str = "config.toml";
/// Default store cap: 20 GiB.
pub const DEFAULT_STORE_MAX_BYTES: u64 = 20 << 30;
/// Default peer listen address, used when a swarm is configured.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/4517";

/// The commented file written on first run.
pub const DEFAULT_CONFIG: &str = r#"# rdht-node configuration.
# Precedence: command-line flags, then RDHT_* environment variables, then this file.

# Addresses the private swarm accepts peers on (libp2p multiaddrs, TCP only: the
# swarm key cannot protect QUIC). Used only when a private swarm is configured below;
# with none, the node listens on nothing here, and giving --listen is an error.
# Flag: --listen (repeatable). Env: RDHT_LISTEN (comma-separated).
listen = ["/ip4/0.0.0.0/tcp/4517"]

# A private swarm: its pre-shared key (IPFS swarm.key format, made with
# `rdht swarm keygen`) and a bootstrap list (one multiaddr ending in /p2p/<peer id>
# per line, `#` comments; get each node's line with `rdht swarm bootstrap-line`).
# Flags: --swarm-key, --bootstrap. Env: RDHT_SWARM_KEY, RDHT_BOOTSTRAP.
# swarm_key = "/etc/rdht/swarm.key"
# bootstrap = "/etc/rdht/bootstrap.txt"

# An anchor is an always-on helper of its swarms, for a server with a public address:
# its DHT always runs in server mode (other nodes' run in server mode only once their
# address is confirmed reachable), it dials other nodes' addresses back for them
# (AutoNAT), and it relays for nodes behind NAT so they can hole-punch (relay v2; no
# blocks go through it). Flag: --anchor. Env: RDHT_ANCHOR.
# anchor = false

# Relay for this node's swarms (relay v2 server): nodes behind NAT keep a reservation
# here, and a peer that wants to reach one dials it through this node, which lets the
# two hole-punch a direct connection. Blocks never go through a relay; each circuit is
# cut after 2 minutes or 128 KiB, and at most 128 reservations and 16 circuits are
# held at once. A relay is offered once this node's address is confirmed reachable
# (from the start on an anchor). Default: on for an anchor, off otherwise.
# relay = false

# The store's size cap in bytes, counted as the artifacts' uncompressed size. Above
# it, garbage collection evicts the least recently used artifacts this node did not
# build itself. Blocks are kept LZ4-compressed where that saves space, so the store
# usually takes well under this on disk (about half, for debug builds). 0: no cap.
# Flag: --store-max-bytes. Env: RDHT_STORE_MAX_BYTES.
store_max_bytes = 21474836480

# The public swarm: open to anyone, no key. Only crates.io crates are announced and
# looked up there. It carries the records of builders you chose to trust (a community
# CI key, your team's CI) from any peer that holds them; it is not a source of trust
# itself: records by builders you do not trust are never used, however many agree.
# It listens on QUIC and TCP, IPv4 and IPv6 (an IPv6 address the host cannot bind is
# skipped with a warning).
# public = false
# public_listen = ["/ip4/0.0.0.0/udp/4518/quic-v1", "/ip4/0.0.0.0/tcp/4518",
#                  "/ip6/::/udp/4518/quic-v1", "/ip6/::/tcp/4518"]
# public_bootstrap = "/etc/rdht/public-bootstrap.txt"

# Trust (specs/trust.md). Trusted builders are this node, the keys listed here (hex
# public keys, as `rdht id` prints them) and those added with `rdht trust add`. An
# artifact is used only when at least `required_signatures` distinct trusted builders
# claim it (1 or more). Records by anyone else never count, however many agree,
# because keys cost nothing. Set it to 2 or more so that one compromised trusted
# builder is not enough.
# trusted_keys = []
# required_signatures = 1

# Share of cache hits built by other machines that are also rebuilt locally and
# compared before use (0.01 = 1%; 0.0 turns it off). A mismatch is logged, counted
# and blocklists the builders that claimed the artifact; a unit that does not build
# reproducibly is never blamed.
# verify_sample_rate = 0.01

# How long a build waits for the swarm to say who has records for a unit, in
# milliseconds: the decision bound (specs/swarm.md §6.4). Asking stops as soon as the
# records received satisfy the trust policy; at this limit the unit goes on with
# whatever records arrived (built locally if none is trusted). A provider that has
# not answered within it is remembered as unreachable and not dialled or waited for
# again until its back-off ends, so it costs a build this once, not once per unit.
# Fetching an artifact once found is not limited by it (stalled peers are dropped).
# lookup_timeout_ms = 300

# How long an unreachable peer is left alone after its first failure, in
# milliseconds; it doubles with each failure in a row, up to 15 minutes. A
# connection from the peer ends it at once.
# unreachable_backoff_ms = 60000
"#;

/// Default share of other builders' hits rebuilt and compared (specs/trust.md §5).
pub const DEFAULT_VERIFY_SAMPLE_RATE: f64 = 0.01;

/// Default limit on one record lookup: the decision bound (specs/swarm.md §6.4).
pub const DEFAULT_LOOKUP_TIMEOUT_MS: u64 = 300;

/// Default first back-off of an unreachable peer.
pub const DEFAULT_UNREACHABLE_BACKOFF_MS: u64 = 60_000;

/// Default public-swarm listen addresses: QUIC and TCP, IPv4 and IPv6
/// (specs/swarm.md §2.1).
pub const DEFAULT_PUBLIC_LISTEN: [&str; 4] = [
    "/ip4/0.0.0.0/udp/4518/quic-v1",
    "/ip4/0.0.0.0/tcp/4518",
    "/ip6/::/udp/4518/quic-v1",
    "/ip6/::/tcp/4518",
];

/// Configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No data directory was given and the platform has no home directory.
    #[error("no data directory: pass --data-dir or set RDHT_DATA_DIR (no home directory found)")]
    NoDataDir,
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("config file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
}

/// What the config file may say. Unknown keys are errors, so typos are caught.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Peer listen addresses.
    pub listen: Option<Vec<String>>,
    /// Bootstrap list file of the private swarm.
    pub bootstrap: Option<PathBuf>,
    /// Pre-shared key file of the private swarm.
    pub swarm_key: Option<PathBuf>,
    /// Store size cap in bytes.
    pub store_max_bytes: Option<u64>,
    /// Run as an anchor node.
    pub anchor: Option<bool>,
    /// Relay for other peers (default: `anchor`).
    pub relay: Option<bool>,
    /// Join the public swarm.
    pub public: Option<bool>,
    /// Public-swarm listen addresses.
    pub public_listen: Option<Vec<String>>,
    /// Public-swarm bootstrap list file.
    pub public_bootstrap: Option<PathBuf>,
    /// Trusted builder keys (hex).
    pub trusted_keys: Option<Vec<String>>,
    /// Distinct trusted builders that must claim a root.
    pub required_signatures: Option<usize>,
    /// Removed (it counted unknown builders); present only to refuse it by name.
    pub trust_threshold: Option<toml::Value>,
    /// Share of hits rebuilt locally to check them.
    pub verify_sample_rate: Option<f64>,
    /// Limit on a record lookup, in milliseconds.
    pub lookup_timeout_ms: Option<u64>,
    /// First back-off of an unreachable peer, in milliseconds.
    pub unreachable_backoff_ms: Option<u64>,
}

/// Values from flags or environment (clap resolves flag over env).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen` / `RDHT_LISTEN`; empty when not given.
    pub listen: Vec<String>,
    /// `--bootstrap` / `RDHT_BOOTSTRAP`.
    pub bootstrap: Option<PathBuf>,
    /// `--swarm-key` / `RDHT_SWARM_KEY`.
    pub swarm_key: Option<PathBuf>,
    /// `--store-max-bytes` / `RDHT_STORE_MAX_BYTES`.
    pub store_max_bytes: Option<u64>,
    /// `--anchor` / `RDHT_ANCHOR` (false when not given: the file decides).
    pub anchor: bool,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The config file that was read.
    pub config_file: PathBuf,
    /// Peer listen addresses.
    pub listen: Vec<String>,
    /// Whether `listen` came from `--listen` / `RDHT_LISTEN` (an error when no swarm is
    /// configured: a flag given and then ignored would hide a mistake).
    pub listen_given: bool,
    /// Bootstrap list file of the private swarm.
    pub bootstrap: Option<PathBuf>,
    /// Pre-shared key file of the private swarm.
    pub swarm_key: Option<PathBuf>,
    /// Store size cap in bytes.
    pub store_max_bytes: u64,
    /// Run as an anchor node (specs/swarm.md §2.4).
    pub anchor: bool,
    /// Relay circuits for other peers of its swarms (specs/swarm.md §2.6); the file's
    /// `relay`, else `anchor`.
    pub relay: bool,
    /// Join the public swarm.
    pub public: bool,
    /// Public-swarm listen addresses.
    pub public_listen: Vec<String>,
    /// Public-swarm bootstrap list file.
    pub public_bootstrap: Option<PathBuf>,
    /// Trusted builder keys from the file (hex; checked when the daemon starts).
    pub trusted_keys: Vec<String>,
    /// Distinct trusted builders that must claim a root (≥ 1, checked at start).
    pub required_signatures: usize,
    /// Share of hits rebuilt locally to check them, 0.0 to 1.0.
    pub verify_sample_rate: f64,
    /// Limit on the record lookup of one resolve (at least 1 ms).
    pub lookup_timeout: std::time::Duration,
    /// First back-off of an unreachable peer (at least 1 ms).
    pub unreachable_backoff: std::time::Duration,
}

/// The data directory: the given one, or the platform's data directory for rdht.
pub fn data_dir(given: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    match given {
        Some(d) => Ok(d),
        None => rdht_api::default_data_dir().ok_or(ConfigError::NoDataDir),
    }
}

/// Reads the configuration. With no `config_file`, `DATA_DIR/config.toml` is used and
/// written with commented defaults when absent; an explicit file must exist. Returns the
/// config and whether the default file was created.
pub fn load(
    data_dir: &Path,
    config_file: Option<PathBuf>,
    overrides: Overrides,
) -> Result<(Config, bool), ConfigError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConfigError::Io { path, source }
    };
    let mut created = false;
    let path = match config_file {
        Some(p) => p,
        None => {
            let p = data_dir.join(CONFIG_FILE);
            if !p.exists() {
                fs::write(&p, DEFAULT_CONFIG).map_err(io(&p))?;
                created = true;
            }
            p
        }
    };
    let text = fs::read_to_string(&path).map_err(io(&path))?;
    let file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.clone(),
        message: e.to_string().trim_end().to_string(),
    })?;
    if file.trust_threshold.is_some() {
        return Err(ConfigError::Parse {
            path,
            message: "`trust_threshold` is no longer supported: it let builders nobody trusts \
                      make an artifact usable by agreeing. Remove it; use \
                      `required_signatures = N` (how many of your trusted builders must \
                      claim an artifact, default 1)"
                .into(),
        });
    }
    let anchor = overrides.anchor || file.anchor.unwrap_or(false);
    let config = Config {
        data_dir: data_dir.to_path_buf(),
        config_file: path,
        listen_given: !overrides.listen.is_empty(),
        listen: if overrides.listen.is_empty() {
            file.listen
                .unwrap_or_else(|| vec![DEFAULT_LISTEN.to_string()])
        } else {
            overrides.listen
        },
        bootstrap: overrides.bootstrap.or(file.bootstrap),
        swarm_key: overrides.swarm_key.or(file.swarm_key),
        store_max_bytes: overrides
            .store_max_bytes
            .or(file.store_max_bytes)
            .unwrap_or(DEFAULT_STORE_MAX_BYTES),
        anchor,
        relay: file.relay.unwrap_or(anchor),
        public: file.public.unwrap_or(false),
        public_listen: file
            .public_listen
            .unwrap_or_else(|| DEFAULT_PUBLIC_LISTEN.map(String::from).to_vec()),
        public_bootstrap: file.public_bootstrap,
        trusted_keys: file.trusted_keys.unwrap_or_default(),
        required_signatures: file
            .required_signatures
            .unwrap_or(crate::trust::MIN_REQUIRED),
        verify_sample_rate: file
            .verify_sample_rate
            .unwrap_or(DEFAULT_VERIFY_SAMPLE_RATE),
        lookup_timeout: std::time::Duration::from_millis(
            file.lookup_timeout_ms.unwrap_or(DEFAULT_LOOKUP_TIMEOUT_MS),
        ),
        unreachable_backoff: std::time::Duration::from_millis(
            file.unreachable_backoff_ms
                .unwrap_or(DEFAULT_UNREACHABLE_BACKOFF_MS),
        ),
    };
    if config.lookup_timeout.is_zero() {
        return Err(ConfigError::Parse {
            path: config.config_file.clone(),
            message: "lookup_timeout_ms = 0: a lookup needs at least 1 ms".into(),
        });
    }
    if config.unreachable_backoff.is_zero() {
        return Err(ConfigError::Parse {
            path: config.config_file.clone(),
            message: "unreachable_backoff_ms = 0: a back-off needs at least 1 ms".into(),
        });
    }
    if !(0.0..=1.0).contains(&config.verify_sample_rate) {
        return Err(ConfigError::Parse {
            path: config.config_file.clone(),
            message: format!(
                "verify_sample_rate = {} is not between 0.0 and 1.0",
                config.verify_sample_rate
            ),
        });
    }
    Ok((config, created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_is_written_parsed_and_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let (c, created) = load(dir.path(), None, Overrides::default()).unwrap();
        assert!(created);
        assert_eq!(c.listen, vec![DEFAULT_LISTEN.to_string()]);
        assert_eq!(c.store_max_bytes, DEFAULT_STORE_MAX_BYTES);
        assert_eq!(c.swarm_key, None);
        assert_eq!(c.lookup_timeout, std::time::Duration::from_millis(300));
        assert_eq!(c.unreachable_backoff, std::time::Duration::from_secs(60));
        let (_, created) = load(dir.path(), None, Overrides::default()).unwrap();
        assert!(!created);

        fs::write(
            dir.path().join(CONFIG_FILE),
            "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nstore_max_bytes = 5\nswarm_key = \"/k\"\nlookup_timeout_ms = 250\n",
        )
        .unwrap();
        let over = Overrides {
            store_max_bytes: Some(7),
            ..Overrides::default()
        };
        let (c, _) = load(dir.path(), None, over).unwrap();
        assert_eq!(c.listen, vec!["/ip4/127.0.0.1/tcp/0".to_string()]);
        assert_eq!(c.store_max_bytes, 7, "flag/env beats file");
        assert_eq!(c.swarm_key, Some(PathBuf::from("/k")), "file beats default");
        assert_eq!(c.lookup_timeout, std::time::Duration::from_millis(250));
        fs::write(dir.path().join(CONFIG_FILE), "lookup_timeout_ms = 0\n").unwrap();
        let err = load(dir.path(), None, Overrides::default()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("lookup_timeout_ms = 0: a lookup needs at least 1 ms"),
            "{err}"
        );
    }

    /// Regression (issue 15): the old agreement threshold is refused by name, never
    /// silently ignored.
    #[test]
    fn trust_threshold_is_refused_and_names_its_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = load(dir.path(), None, Overrides::default()).unwrap();
        assert_eq!(c.required_signatures, 1);
        assert_eq!(c.verify_sample_rate, DEFAULT_VERIFY_SAMPLE_RATE);
        let path = dir.path().join(CONFIG_FILE);
        fs::write(&path, "trust_threshold = 2\n").unwrap();
        let err = load(dir.path(), None, Overrides::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "config file {}: `trust_threshold` is no longer supported: it let builders \
                 nobody trusts make an artifact usable by agreeing. Remove it; use \
                 `required_signatures = N` (how many of your trusted builders must claim an \
                 artifact, default 1)",
                path.display()
            )
        );
        fs::write(&path, "required_signatures = 3\nverify_sample_rate = 0.5\n").unwrap();
        let (c, _) = load(dir.path(), None, Overrides::default()).unwrap();
        assert_eq!((c.required_signatures, c.verify_sample_rate), (3, 0.5));
    }

    /// The relay setting defaults to the anchor's, and the file may turn it either way
    /// (issue 18: "a setting, default on for anchor nodes").
    #[test]
    fn relay_defaults_to_anchor_and_the_file_decides_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        let anchor_flag = Overrides {
            anchor: true,
            ..Overrides::default()
        };
        let cases = [
            ("", false, (false, false)),
            ("", true, (true, true)),
            ("anchor = true\n", false, (true, true)),
            ("anchor = true\nrelay = false\n", false, (true, false)),
            ("relay = false\n", true, (true, false)),
            ("relay = true\n", false, (false, true)),
        ];
        for (file, flag, want) in cases {
            fs::write(&path, file).unwrap();
            let over = if flag {
                anchor_flag.clone()
            } else {
                Overrides::default()
            };
            let (c, _) = load(dir.path(), None, over).unwrap();
            assert_eq!((c.anchor, c.relay), want, "file {file:?}, --anchor {flag}");
        }
        // The default file documents the setting, commented out.
        assert!(DEFAULT_CONFIG.contains("\n# relay = false\n"));
        fs::write(&path, "relay = \"yes\"\n").unwrap();
        let err = load(dir.path(), None, Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("relay"), "{err}");
    }

    #[test]
    fn unknown_keys_and_missing_explicit_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        fs::write(&path, "lisen = []\n").unwrap();
        let err = load(dir.path(), Some(path.clone()), Overrides::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("config file {}: ", path.display())),
            "{msg}"
        );
        assert!(msg.contains("unknown field `lisen`"), "{msg}");
        let missing = dir.path().join("nope.toml");
        let err = load(dir.path(), Some(missing.clone()), Overrides::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: ", missing.display())),
            "{err}"
        );
    }
}
