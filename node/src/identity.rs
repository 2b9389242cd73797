//! The node's identity: one ed25519 key that signs its build records (its builder key)
//! and, in the swarm, is its libp2p identity.
//!
//! Owns: creating the key on first run and loading it, with the key file readable only
//! by its owner. Does not own: what is signed ([`rdht_core::record`]).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rdht_core::{BuilderKey, SigningKey};

/// File name of the identity key inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";
const HEADER: &str = "rdht-ed25519-secret-v1";

/// The identity key could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("identity key {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file does not hold a key in the expected format.
    #[error("identity key {} is not a valid rdht key file: {reason}", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Others can read the key file.
    #[error("identity key {} has mode {mode:o}; it must be readable by its owner only (chmod 600)", path.display())]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The node's signing key.
#[derive(Debug, Clone)]
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// Loads the key from `DIR/identity.key`, creating it (mode 0600) when absent.
    /// Returns the identity and whether it was created.
    pub fn load_or_create(data_dir: &Path) -> Result<(Identity, bool), IdentityError> {
        let path = data_dir.join(IDENTITY_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mode = fs::metadata(&path).map_err(io)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(IdentityError::Exposed { path, mode });
                }
                Ok((Identity::parse(&path, &text)?, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SigningKey::generate(&mut rand::rngs::OsRng);
                let text = format!("{HEADER}\n{}\n", hex(&key.to_bytes()));
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                f.write_all(text.as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok((Identity { key }, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Identity, IdentityError> {
        let bad = |reason: &str| IdentityError::Malformed {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad(&format!("the first line must be {HEADER:?}")));
        }
        let secret = lines
            .next()
            .ok_or_else(|| bad("the secret line is missing"))?;
        let bytes: [u8; 32] = unhex(secret.trim())
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("the secret must be 64 hex digits"))?;
        Ok(Identity {
            key: SigningKey::from_bytes(&bytes),
        })
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public key, as builders are named.
    pub fn builder_key(&self) -> BuilderKey {
        BuilderKey::from_bytes(self.key.verifying_key().to_bytes())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_0600_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(created);
        let path = dir.path().join(IDENTITY_FILE);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (b, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a.builder_key(), b.builder_key());
    }

    #[test]
    fn exposed_or_malformed_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load_or_create(dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "identity key {} has mode 644; it must be readable by its owner only (chmod 600)",
                path.display()
            )
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "rdht-ed25519-secret-v1\nzz\n").unwrap();
        let err = Identity::load_or_create(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("the secret must be 64 hex digits"),
            "{err}"
        );
    }
}
