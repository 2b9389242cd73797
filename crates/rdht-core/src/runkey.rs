//! Keys of build-script runs (specs/build-key.md §10): what one run of a build script
//! is named by, in two steps, and the declaration that links them.
//!
//! A run's outputs depend on inputs the script itself declares (`rerun-if-changed`,
//! `rerun-if-env-changed`), known only after a run. So a run has two keys:
//! - the *declaration key* ([`RunBase::derive`]): the script's build key, the
//!   environment cargo gives the run and the C toolchain's identity. It names a
//!   [`Declaration`], the inputs the last run declared;
//! - the *run key* ([`RunInputs::derive`]): the declaration key, plus the current value
//!   of every declared input. It names the run's outputs.
//!
//! Owns: those structures, their encodings and hashes, and the declaration's bounded
//! decoder. Does not own: collecting the values (the cargo shim) or running anything.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::id::{BlockId, BuildKey};

/// Version of the run-key derivation; part of the hashed inputs.
pub const RUN_KEY_VERSION: u32 = 1;
/// BLAKE3 derive-key context of declaration keys.
pub const DECLARATION_CONTEXT: &str = "rdht 2026-12-01 build-script declaration key v1";
/// BLAKE3 derive-key context of run keys.
pub const RUN_CONTEXT: &str = "rdht 2026-12-01 build-script run key v1";
/// Largest encoded [`Declaration`] a decoder accepts.
pub const MAX_DECLARATION_LEN: usize = 1 << 20;
/// Most inputs (variables plus paths) one declaration may name.
pub const MAX_DECLARED: usize = 10_000;

/// What names a build-script run before its declared inputs are known.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunBase {
    /// [`RUN_KEY_VERSION`].
    pub version: u32,
    /// The build key of the compile unit that built the script.
    pub script: BuildKey,
    /// The variables cargo sets for the run that can change its outputs, normalised,
    /// sorted by name.
    pub env: Vec<(String, String)>,
    /// The C toolchain the script may use, by tool (`cc`, `c++`, `ar`, `cmake`): its
    /// version line and content root, or `absent`. Sorted by tool.
    pub toolchain: Vec<(String, String)>,
}

impl RunBase {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// The declaration key: BLAKE3 derive-key([`DECLARATION_CONTEXT`], encoding).
    pub fn derive(&self) -> BuildKey {
        hash(DECLARATION_CONTEXT, &self.encode())
    }
}

/// The inputs one run declared, in the form stored under its declaration key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Declaration {
    /// [`RUN_KEY_VERSION`].
    pub version: u32,
    /// `rerun-if-env-changed` variables, sorted, unique.
    pub env: Vec<String>,
    /// `rerun-if-changed` paths, normalised (relative ones are relative to the
    /// package's directory), sorted, unique.
    pub paths: Vec<String>,
    /// The run printed no `rerun-if` line: cargo reruns it when any file of its
    /// package changes, and every such file is already in the script's build key.
    pub package: bool,
}

impl Declaration {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a canonical encoding of at most [`MAX_DECLARATION_LEN`] bytes, naming
    /// at most [`MAX_DECLARED`] inputs, sorted and unique, of a known version.
    pub fn decode(bytes: &[u8]) -> Result<Declaration, DecodeError> {
        let d: Declaration = codec::decode("declaration", bytes, MAX_DECLARATION_LEN)?;
        let invalid = |reason: String| DecodeError::Invalid {
            what: "declaration",
            reason,
        };
        if d.version != RUN_KEY_VERSION {
            return Err(invalid(format!("unsupported version {}", d.version)));
        }
        if d.env.len() + d.paths.len() > MAX_DECLARED {
            return Err(invalid(format!(
                "{} inputs, more than {MAX_DECLARED}",
                d.env.len() + d.paths.len()
            )));
        }
        for (what, list) in [("env", &d.env), ("paths", &d.paths)] {
            if list.windows(2).any(|w| w[0] >= w[1]) {
                return Err(invalid(format!("{what} is not sorted and unique")));
            }
        }
        Ok(d)
    }
}

/// What a declared path held when the run key was computed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathValue {
    /// Nothing is there.
    Missing,
    /// A file, by content root.
    File(BlockId),
    /// A directory: every file under it by `/`-separated relative path and root,
    /// sorted by path.
    Dir(Vec<(String, BlockId)>),
}

/// What names one build-script run's outputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunInputs {
    /// [`RUN_KEY_VERSION`].
    pub version: u32,
    /// The run's declaration key ([`RunBase::derive`]).
    pub base: BuildKey,
    /// The declaration the values are for.
    pub declaration: Declaration,
    /// The value of each declared variable, normalised (`None`: unset), in the
    /// declaration's order.
    pub env: Vec<(String, Option<String>)>,
    /// The value of each declared path, in the declaration's order.
    pub paths: Vec<(String, PathValue)>,
}

impl RunInputs {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// The run key: BLAKE3 derive-key([`RUN_CONTEXT`], encoding).
    pub fn derive(&self) -> BuildKey {
        hash(RUN_CONTEXT, &self.encode())
    }
}

fn hash(context: &str, bytes: &[u8]) -> BuildKey {
    let mut h = blake3::Hasher::new_derive_key(context);
    h.update(bytes);
    BuildKey::from_bytes(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn base() -> RunBase {
        RunBase {
            version: RUN_KEY_VERSION,
            script: BuildKey::from_bytes([3; 32]),
            env: vec![
                ("CARGO_PKG_NAME".into(), "zstd-sys".into()),
                ("TARGET".into(), "x86_64-unknown-linux-gnu".into()),
            ],
            toolchain: vec![("cc".into(), "absent".into())],
        }
    }

    fn declaration() -> Declaration {
        Declaration {
            version: RUN_KEY_VERSION,
            env: vec!["CC".into(), "CFLAGS".into()],
            paths: vec!["build.rs".into(), "zstd/lib".into()],
            package: false,
        }
    }

    fn inputs() -> RunInputs {
        RunInputs {
            version: RUN_KEY_VERSION,
            base: base().derive(),
            declaration: declaration(),
            env: vec![("CC".into(), None), ("CFLAGS".into(), Some("-O2".into()))],
            paths: vec![
                (
                    "build.rs".into(),
                    PathValue::File(BlockId::from_bytes([1; 32])),
                ),
                (
                    "zstd/lib".into(),
                    PathValue::Dir(vec![("zstd.h".into(), BlockId::from_bytes([2; 32]))]),
                ),
            ],
        }
    }

    /// The vectors of specs/build-key.md §10.
    #[test]
    fn vectors() {
        assert_eq!(
            base().derive().to_string(),
            "7e7ea10520fb453805728e63eb3fe3c33356dd9472523857e4946a2925abaa07"
        );
        assert_eq!(
            inputs().derive().to_string(),
            "0d589bcc5494ff809a60efdd45b07062c05cb253b8f4922cb6818de7cabe7054"
        );
    }

    #[test]
    fn every_field_changes_the_keys() {
        let k = base().derive();
        let mut variants = Vec::new();
        let mut v = base();
        v.script = BuildKey::from_bytes([4; 32]);
        variants.push(v);
        let mut v = base();
        v.env[0].1.push('x');
        variants.push(v);
        let mut v = base();
        v.toolchain[0].1 = "gcc 12;00".into();
        variants.push(v);
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(v.derive(), k, "base variant {i}");
        }
        let r = inputs().derive();
        let mut variants = Vec::new();
        let mut v = inputs();
        v.base = BuildKey::from_bytes([9; 32]);
        variants.push(v);
        let mut v = inputs();
        v.declaration.package = true;
        variants.push(v);
        let mut v = inputs();
        v.env[0].1 = Some("clang".into());
        variants.push(v);
        let mut v = inputs();
        v.paths[0].1 = PathValue::Missing;
        variants.push(v);
        let mut v = inputs();
        v.paths[1].1 = PathValue::Dir(Vec::new());
        variants.push(v);
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(v.derive(), r, "run variant {i}");
        }
        // The two kinds of key never coincide for the same bytes.
        assert_ne!(hash(DECLARATION_CONTEXT, b"x"), hash(RUN_CONTEXT, b"x"));
    }

    #[test]
    fn declarations_round_trip_and_bad_ones_are_refused_by_name() {
        let d = declaration();
        assert_eq!(Declaration::decode(&d.encode()), Ok(d.clone()));
        let mut unsorted = d.clone();
        unsorted.paths.reverse();
        let err = Declaration::decode(&unsorted.encode()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "declaration is invalid: paths is not sorted and unique"
        );
        let mut future = d.clone();
        future.version = 2;
        assert_eq!(
            Declaration::decode(&future.encode())
                .unwrap_err()
                .to_string(),
            "declaration is invalid: unsupported version 2"
        );
        let mut many = Declaration {
            version: RUN_KEY_VERSION,
            ..Declaration::default()
        };
        many.env = (0..=MAX_DECLARED).map(|i| format!("V{i:06}")).collect();
        assert_eq!(
            Declaration::decode(&many.encode()).unwrap_err().to_string(),
            "declaration is invalid: 10001 inputs, more than 10000"
        );
        assert!(matches!(
            Declaration::decode(&vec![0; MAX_DECLARATION_LEN + 1]),
            Err(DecodeError::TooLarge { .. })
        ));
        let bytes = d.encode();
        assert!(Declaration::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
