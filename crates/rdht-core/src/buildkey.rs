//! Build keys: what a compile unit's key is a hash of (specs/build-key.md).
//!
//! [`KeyInputs`] holds every input that determines a unit's outputs, already stripped of
//! machine-local paths by the caller; [`KeyInputs::derive`] hashes its canonical
//! postcard encoding with BLAKE3 in derive-key mode. Two machines that compile the same
//! unit, in any directories, compute the same inputs and so the same key.
//!
//! Owns: the input structure, its encoding and the hash. Does not own: collecting the
//! inputs from a rustc command line, the environment and the file system (the cargo
//! shim does that).

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::id::{BlockId, BuildKey};

/// Version of the key derivation; part of the hashed inputs.
pub const KEY_VERSION: u32 = 3;
/// BLAKE3 derive-key context of build keys.
pub const KEY_CONTEXT: &str = "rdht 2026-12-01 build key v3";

/// Where a unit's sources come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SourceInputs {
    /// A registry package. Cargo checks a package's checksum only when it unpacks it,
    /// never the unpacked files afterwards, so its files count by content: an edited
    /// unpacked source has another key.
    Registry {
        /// The registry's directory name under `$CARGO_HOME/registry/src`, e.g.
        /// `index.crates.io-1949cf8c6b5b557f` (a hash of the index URL).
        index: String,
        /// `name-version` directory of the package.
        package: String,
        /// Every file of the package, by `/`-separated relative path and content
        /// root, sorted by path.
        files: Vec<(String, BlockId)>,
    },
    /// Any other package (path, git): every file of the package directory, by
    /// `/`-separated relative path and content root, sorted by path.
    Tree {
        /// The files.
        files: Vec<(String, BlockId)>,
    },
}

/// Everything that determines a compile unit's outputs, with machine-local roots
/// replaced by fixed placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyInputs {
    /// [`KEY_VERSION`].
    pub version: u32,
    /// The full output of `rustc -vV`.
    pub rustc_version: String,
    /// The target triple.
    pub target: String,
    /// The arguments, normalised: local roots replaced, output directories and
    /// incremental directories dropped, `--extern` paths replaced by content roots.
    pub args: Vec<String>,
    /// The sources.
    pub source: SourceInputs,
    /// The build script's `OUT_DIR`, when set: every file by relative path and root.
    pub out_dir: Option<Vec<(String, BlockId)>>,
    /// Environment variables that rustc may read (`CARGO_*` set by cargo and the
    /// like), normalised, sorted by name.
    pub env: Vec<(String, String)>,
    /// Native libraries linked with `-l`: name and content root of each file found.
    pub native_libs: Vec<(String, BlockId)>,
}

impl KeyInputs {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// The build key: BLAKE3 derive-key([`KEY_CONTEXT`], encoding).
    pub fn derive(&self) -> BuildKey {
        let mut h = blake3::Hasher::new_derive_key(KEY_CONTEXT);
        h.update(&self.encode());
        BuildKey::from_bytes(*h.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> KeyInputs {
        KeyInputs {
            version: KEY_VERSION,
            rustc_version: "rustc 1.95.0\nhost: x86_64-unknown-linux-gnu\n".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            args: vec!["--crate-name".into(), "serde".into()],
            source: SourceInputs::Registry {
                index: "index.crates.io-1949cf8c6b5b557f".into(),
                package: "serde-1.0.229".into(),
                files: vec![("src/lib.rs".into(), BlockId::from_bytes([1; 32]))],
            },
            out_dir: None,
            env: vec![("CARGO_PKG_NAME".into(), "serde".into())],
            native_libs: Vec::new(),
        }
    }

    #[test]
    fn every_field_changes_the_key() {
        let base = inputs();
        let k = base.derive();
        assert_eq!(k, inputs().derive(), "deterministic");
        let mut variants = Vec::new();
        let mut v = base.clone();
        v.rustc_version.push('x');
        variants.push(v);
        let mut v = base.clone();
        v.target = "aarch64-unknown-linux-gnu".into();
        variants.push(v);
        let mut v = base.clone();
        v.args.push("-Copt-level=3".into());
        variants.push(v);
        let mut v = base.clone();
        v.source = SourceInputs::Tree { files: vec![] };
        variants.push(v);
        // An edited file of a registry package.
        let mut v = base.clone();
        if let SourceInputs::Registry { files, .. } = &mut v.source {
            files[0].1 = BlockId::from_bytes([2; 32]);
        }
        variants.push(v);
        let mut v = base.clone();
        v.out_dir = Some(vec![]);
        variants.push(v);
        let mut v = base.clone();
        v.env[0].1 = "serde2".into();
        variants.push(v);
        let mut v = base.clone();
        v.native_libs
            .push(("z".into(), BlockId::from_bytes([0; 32])));
        variants.push(v);
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(v.derive(), k, "variant {i}");
        }
    }
}
