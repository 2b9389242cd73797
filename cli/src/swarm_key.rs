//! Writing a private swarm's pre-shared key in the IPFS `swarm.key` format
//! (specs/swarm.md): the line `/key/swarm/psk/1.0.0/`, the line `/base16/`, then 64
//! lowercase hex digits (32 random bytes).
//!
//! Owns: generating and writing a new key file (mode 0600, never overwriting). Does not
//! own: reading it (the swarm layer parses it).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

/// A swarm key file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SwarmKeyError {
    /// The file exists; keys are never overwritten silently.
    #[error("{} already exists; remove it first or choose another path with --out", path.display())]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// Writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The file text for `key`.
pub fn format_key(key: &[u8; 32]) -> String {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n")
}

/// Writes a new random key to `path` (mode 0600). Fails if `path` exists.
pub fn generate(path: &Path) -> Result<(), SwarmKeyError> {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => SwarmKeyError::Exists {
                path: path.to_path_buf(),
            },
            _ => SwarmKeyError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
    f.write_all(format_key(&key).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|source| SwarmKeyError::Io {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn format_and_no_overwrite() {
        assert_eq!(
            format_key(&[0xab; 32]),
            format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", "ab".repeat(32))
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("swarm.key");
        generate(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[..2], ["/key/swarm/psk/1.0.0/", "/base16/"]);
        assert_eq!(lines[2].len(), 64);
        assert!(lines[2].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(generate(&p), Err(SwarmKeyError::Exists { .. })));
    }
}
