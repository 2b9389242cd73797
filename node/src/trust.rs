//! Which builders' records this node accepts: its own key, the keys in `config.toml`
//! (`trusted_keys`), and keys added with `rdht trust add` (kept in
//! `DATA_DIR/trusted-keys`, one hex key per line, `#` comments).
//!
//! Owns: the trusted set, its file and the per-record decision. Does not own: signature
//! checks (a `BuildRecord` value is already verified) or agreement between several
//! builders (the threshold policy of specs/trust.md, a later issue).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use rdht_core::{BuildRecord, BuilderKey};

/// File name of the added keys inside the data directory.
pub const TRUST_FILE: &str = "trusted-keys";

/// The trusted set could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A key in a file or the config is not 64 hex digits.
    #[error("{source_name} line {line}: {reason}")]
    BadKey {
        /// The file (or `config.toml trusted_keys`).
        source_name: String,
        /// 1-based line or list position.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Removing a key the config file or the node's identity trusts.
    #[error("{key} is trusted by {by}; it cannot be removed here")]
    Fixed {
        /// The key.
        key: BuilderKey,
        /// Where its trust comes from.
        by: &'static str,
    },
    /// Reading or writing the trust file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The trusted builders.
#[derive(Debug, Clone)]
pub struct TrustSet {
    path: PathBuf,
    own: BuilderKey,
    configured: BTreeSet<BuilderKey>,
    added: BTreeSet<BuilderKey>,
}

impl TrustSet {
    /// Loads the set for a node whose own key is `own`.
    pub fn load(
        data_dir: &Path,
        own: BuilderKey,
        configured: &[String],
    ) -> Result<TrustSet, TrustError> {
        let path = data_dir.join(TRUST_FILE);
        let mut cfg = BTreeSet::new();
        for (i, k) in configured.iter().enumerate() {
            cfg.insert(k.parse::<BuilderKey>().map_err(|e| TrustError::BadKey {
                source_name: "config.toml trusted_keys".into(),
                line: i + 1,
                reason: e.to_string(),
            })?);
        }
        let mut added = BTreeSet::new();
        match fs::read_to_string(&path) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if line.is_empty() {
                        continue;
                    }
                    added.insert(line.parse::<BuilderKey>().map_err(|e| TrustError::BadKey {
                        source_name: path.display().to_string(),
                        line: i + 1,
                        reason: e.to_string(),
                    })?);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(TrustError::Io { path, source }),
        }
        Ok(TrustSet {
            path,
            own,
            configured: cfg,
            added,
        })
    }

    fn save(&self) -> Result<(), TrustError> {
        let mut text = String::from(
            "# Builders trusted with `rdht trust add`; one hex public key per line.\n",
        );
        for k in &self.added {
            text.push_str(&format!("{k}\n"));
        }
        let tmp = self.path.with_extension("tmp");
        let io = |source| TrustError::Io {
            path: self.path.clone(),
            source,
        };
        fs::write(&tmp, text).map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)
    }

    /// Trusts `key` (persisted).
    pub fn add(&mut self, key: BuilderKey) -> Result<(), TrustError> {
        if self.added.insert(key) {
            self.save()?;
        }
        Ok(())
    }

    /// Stops trusting `key` (persisted). Keys trusted by the config or the node's own
    /// identity cannot be removed here.
    pub fn remove(&mut self, key: BuilderKey) -> Result<(), TrustError> {
        if key == self.own {
            return Err(TrustError::Fixed {
                key,
                by: "this node's identity",
            });
        }
        if self.configured.contains(&key) {
            return Err(TrustError::Fixed {
                key,
                by: "config.toml",
            });
        }
        if self.added.remove(&key) {
            self.save()?;
        }
        Ok(())
    }

    /// Every trusted key, the node's own first.
    pub fn list(&self) -> Vec<BuilderKey> {
        let mut v = vec![self.own];
        let rest: BTreeSet<_> = self.configured.union(&self.added).copied().collect();
        v.extend(rest.into_iter().filter(|k| *k != self.own));
        v
    }

    /// Whether `record` is accepted, and why.
    pub fn decide(&self, record: &BuildRecord) -> (bool, String) {
        let b = record.builder();
        if b == self.own {
            (true, "built by this node".into())
        } else if self.configured.contains(&b) {
            (true, "builder is trusted by config.toml".into())
        } else if self.added.contains(&b) {
            (true, "builder was trusted with `rdht trust add`".into())
        } else {
            (false, "builder is not trusted".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_remove_persist_and_fixed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let own = BuilderKey::from_bytes([1; 32]);
        let cfg = BuilderKey::from_bytes([2; 32]);
        let other = BuilderKey::from_bytes([3; 32]);
        let mut t = TrustSet::load(dir.path(), own, &[cfg.to_string()]).unwrap();
        assert_eq!(t.list(), vec![own, cfg]);
        t.add(other).unwrap();
        let t2 = TrustSet::load(dir.path(), own, &[cfg.to_string()]).unwrap();
        assert_eq!(t2.list(), vec![own, cfg, other]);
        assert_eq!(
            t.remove(cfg).unwrap_err().to_string(),
            format!("{cfg} is trusted by config.toml; it cannot be removed here")
        );
        assert!(t.remove(own).is_err());
        t.remove(other).unwrap();
        let t3 = TrustSet::load(dir.path(), own, &[]).unwrap();
        assert_eq!(t3.list(), vec![own]);
        fs::write(dir.path().join(TRUST_FILE), "# c\n\nnot-a-key\n").unwrap();
        let err = TrustSet::load(dir.path(), own, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trusted-keys line 3: invalid builder key"),
            "{err}"
        );
    }
}
