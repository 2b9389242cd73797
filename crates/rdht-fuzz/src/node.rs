//! The `config.toml` target: the daemon's configuration file as `rdht-node` loads it.
//!
//! Does not own: flags or environment (their overrides are empty here); the file is
//! written to a temporary directory, since loading reads it from disk.

use std::path::PathBuf;
use std::sync::LazyLock;

use rdht_node::config::{Overrides, load};

/// A directory for this process's config file, removed when the process ends normally.
static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    // Invariant: a target cannot run without a temporary directory to put the file in.
    tempfile::tempdir().expect("a temporary directory")
});

/// `config.toml` text, loaded with no overrides. An accepted file's values are within
/// the bounds `load` promises.
pub fn config(data: &[u8]) {
    let path: PathBuf = DIR
        .path()
        .join(format!("config-{:?}.toml", std::thread::current().id()));
    std::fs::write(&path, data).expect("writing the config file");
    if let Ok((config, created)) = load(DIR.path(), Some(path.clone()), Overrides::default()) {
        assert!(!created);
        assert_eq!(config.config_file, path);
        assert!((0.0..=1.0).contains(&config.verify_sample_rate));
        assert!(!config.lookup_timeout.is_zero());
        assert!(!config.unreachable_backoff.is_zero());
    }
}
