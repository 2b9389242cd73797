//! rdht-core: the formats every other rdht crate stands on. No I/O, no async.
//!
//! - [`BlockId`], [`BuildKey`], [`BuilderKey`]: 32-byte identifiers ([`id`]).
//! - [`Block`]: a domain-separated leaf or interior block of at most 16 KiB ([`block`]),
//!   stored and sent raw or LZ4-compressed ([`packed`]).
//! - [`dag`]: files as canonical Merkle DAGs — a streaming [`DagBuilder`], a
//!   pre-order [`DagVerifier`] and [`assemble`].
//! - [`Manifest`]: the files of one build unit; its DAG root is the artifact root
//!   ([`manifest`]).
//! - [`buildkey::KeyInputs`]: what a build key hashes (specs/build-key.md).
//! - [`BuildRecord`]: a builder's signed claim "key K built into root R" ([`record`]).
//! - [`plan`]: build plans, the keys of one build run, fetched ahead by another machine.
//! - [`runkey`]: the two-step keys of build-script runs.
//!
//! Normative formats: `specs/blocks.md` and `specs/records.md`; the test vectors in
//! `specs/vectors/` are checked by this crate's tests.
//!
//! ```
//! use rdht_core::{DagBuilder, Limits, assemble_to_vec};
//! use std::collections::HashMap;
//!
//! let data = vec![7u8; 40_000];
//! let (root, blocks) = DagBuilder::build(&data);
//! let mut store: HashMap<_, _> = blocks.into_iter().map(|b| (b.id(), b.into_bytes())).collect();
//! let back = assemble_to_vec(root.id, Limits::default(), &mut store).unwrap();
//! assert_eq!(back, data);
//! ```

pub mod block;
pub mod buildkey;
pub mod codec;
pub mod dag;
pub mod id;
pub mod manifest;
pub mod packed;
pub mod plan;
pub mod record;
pub mod runkey;

/// The crate-private canonical postcard codec, for the fuzz targets of `crates/rdht-fuzz`
/// only. Not part of the API: formats decode through their own types
/// ([`Manifest::decode`], [`BuildRecord::decode`], ...).
#[doc(hidden)]
pub mod fuzzing {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// `codec::encode`: the postcard encoding of `value`.
    pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        crate::codec::encode(value)
    }

    /// `codec::decode`: one canonical value of at most `max` bytes filling `bytes`.
    pub fn decode<T: Serialize + DeserializeOwned>(
        what: &'static str,
        bytes: &[u8],
        max: usize,
    ) -> Result<T, crate::DecodeError> {
        crate::codec::decode(what, bytes, max)
    }
}

pub use block::{Block, BlockError, BlockKind, BlockRef, Link, MAX_BLOCK_LEN, MAX_LEAF_DATA};
pub use codec::DecodeError;
pub use dag::{
    AssembleError, BlockSource, DagBuilder, DagError, DagVerifier, Limits, assemble,
    assemble_to_vec,
};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use id::{BlockId, BuildKey, BuilderKey, ParseIdError};
pub use manifest::{FileEntry, Labels, Manifest, ManifestError};
pub use packed::Encoded;
pub use record::{BuildRecord, Needs, RecordBody, RecordError};
