//! Build records: a builder's signed claim that build key K produced artifact root R
//! (specs/records.md).
//!
//! The signature is ed25519 over `RECORD_DOMAIN || postcard(body)`; the body includes
//! the format version and the builder's public key, so no field can change without
//! breaking it. A [`BuildRecord`] value only comes from [`BuildRecord::sign`] or from
//! [`BuildRecord::decode`], which verifies the signature: holding one means it verified.
//!
//! Owns: the record format, signing and signature checks. Does not own: whether a
//! verified record is *trusted* (the trust policy) or where records are stored.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::id::{BlockId, BuildKey, BuilderKey};
use crate::manifest::{Labels, ManifestError};

/// The record format version this crate writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Prefix of every signed message, so a record signature can never be taken for a
/// signature over anything else.
pub const RECORD_DOMAIN: &[u8] = b"rdht/build-record/v1\0";
/// Longest encoded record.
pub const MAX_RECORD_LEN: usize = 4096;

/// The signed fields of a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecordBody {
    /// Format version, [`RECORD_VERSION`].
    pub version: u8,
    /// The build unit's key.
    pub key: BuildKey,
    /// The artifact root the builder got.
    pub root: BlockId,
    /// Sum of the artifact's file sizes.
    pub size: u64,
    /// When it was built, seconds since the Unix epoch.
    pub time: u64,
    /// How long the build took, in milliseconds (informational: estimates the time a
    /// hit saves; 0 when unknown).
    pub build_ms: u64,
    /// What the unit is.
    pub labels: Labels,
    /// Who built it and signs this.
    pub builder: BuilderKey,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    body: RecordBody,
    signature: Vec<u8>,
}

/// A build record whose signature has been verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BuildRecord {
    body: RecordBody,
    signature: [u8; 64],
}

/// A record that is malformed or whose signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not a record.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A record version this build does not read.
    #[error(
        "build record format version {version} is not supported (this build reads {RECORD_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// The signature field is not 64 bytes.
    #[error("build record signature is {len} bytes, not 64")]
    SignatureLength {
        /// Its length.
        len: usize,
    },
    /// The builder field is not a valid ed25519 public key.
    #[error("builder key {builder} is not a valid ed25519 public key")]
    BadBuilderKey {
        /// The key.
        builder: BuilderKey,
    },
    /// The signature does not verify for this body and builder.
    #[error("signature by builder {builder} over the record for key {key} does not verify")]
    BadSignature {
        /// The claimed builder.
        builder: BuilderKey,
        /// The record's build key.
        key: BuildKey,
    },
    /// A label breaks the format's rules.
    #[error(transparent)]
    Labels(#[from] ManifestError),
    /// A valid record for another build key than the one looked up (a replay).
    #[error("record by builder {builder} is for build key {actual}, not {expected}")]
    WrongKey {
        /// The key looked up.
        expected: BuildKey,
        /// The key the record is for.
        actual: BuildKey,
        /// Its builder.
        builder: BuilderKey,
    },
}

/// The exact bytes a builder signs for `body`.
pub fn signing_message(body: &RecordBody) -> Vec<u8> {
    let mut msg = RECORD_DOMAIN.to_vec();
    msg.extend_from_slice(&codec::encode(body));
    msg
}

impl BuildRecord {
    /// Signs a record that `signer` built `key` into artifact `root` of `size` bytes at
    /// `time` (Unix seconds), build time unknown.
    pub fn sign(
        key: BuildKey,
        root: BlockId,
        size: u64,
        time: u64,
        labels: Labels,
        signer: &SigningKey,
    ) -> Result<BuildRecord, RecordError> {
        Self::sign_timed(key, root, size, time, 0, labels, signer)
    }

    /// [`BuildRecord::sign`] with the build's duration in milliseconds.
    pub fn sign_timed(
        key: BuildKey,
        root: BlockId,
        size: u64,
        time: u64,
        build_ms: u64,
        labels: Labels,
        signer: &SigningKey,
    ) -> Result<BuildRecord, RecordError> {
        labels.validate()?;
        let body = RecordBody {
            version: RECORD_VERSION,
            key,
            root,
            size,
            time,
            build_ms,
            labels,
            builder: BuilderKey::from_bytes(signer.verifying_key().to_bytes()),
        };
        let signature = signer.sign(&signing_message(&body)).to_bytes();
        Ok(BuildRecord { body, signature })
    }

    /// Checks the version, labels, builder key and signature (strict ed25519: no
    /// malleable signatures, no small-order keys).
    pub fn verify(&self) -> Result<(), RecordError> {
        let body = &self.body;
        if body.version != RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion {
                version: body.version,
            });
        }
        body.labels.validate()?;
        let vk = VerifyingKey::from_bytes(body.builder.as_bytes()).map_err(|_| {
            RecordError::BadBuilderKey {
                builder: body.builder,
            }
        })?;
        vk.verify_strict(
            &signing_message(body),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| RecordError::BadSignature {
            builder: body.builder,
            key: body.key,
        })
    }

    /// Decodes a canonical encoding of at most [`MAX_RECORD_LEN`] bytes and verifies it.
    pub fn decode(bytes: &[u8]) -> Result<BuildRecord, RecordError> {
        let wire: Wire = codec::decode("build record", bytes, MAX_RECORD_LEN)?;
        let signature: [u8; 64] =
            wire.signature
                .as_slice()
                .try_into()
                .map_err(|_| RecordError::SignatureLength {
                    len: wire.signature.len(),
                })?;
        let record = BuildRecord {
            body: wire.body,
            signature,
        };
        record.verify()?;
        Ok(record)
    }

    /// [`BuildRecord::decode`], then checks that the record is for `key`: a valid record
    /// replayed for another key is rejected.
    pub fn decode_for(bytes: &[u8], key: BuildKey) -> Result<BuildRecord, RecordError> {
        let record = BuildRecord::decode(bytes)?;
        if record.key() != key {
            return Err(RecordError::WrongKey {
                expected: key,
                actual: record.key(),
                builder: record.builder(),
            });
        }
        Ok(record)
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(&Wire {
            body: self.body.clone(),
            signature: self.signature.to_vec(),
        })
    }

    /// The signed fields.
    pub fn body(&self) -> &RecordBody {
        &self.body
    }

    /// The build key.
    pub fn key(&self) -> BuildKey {
        self.body.key
    }

    /// The artifact root.
    pub fn root(&self) -> BlockId {
        self.body.root
    }

    /// The builder.
    pub fn builder(&self) -> BuilderKey {
        self.body.builder
    }

    /// The 64-byte signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn record() -> BuildRecord {
        let labels = Labels {
            crate_name: "serde".into(),
            crate_version: "1.0.219".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            rustc: "rustc 1.95.0".into(),
            crate_types: vec!["lib".into()],
        };
        BuildRecord::sign(
            BuildKey::from_bytes([1; 32]),
            BlockId::from(blake3::hash(b"root")),
            1234,
            1_700_000_000,
            labels,
            &signer(9),
        )
        .unwrap()
    }

    #[test]
    fn any_field_change_breaks_the_signature() {
        let r = record();
        r.verify().unwrap();
        type Tamper = Box<dyn Fn(&mut RecordBody)>;
        let tampers: Vec<Tamper> = vec![
            Box::new(|b| b.key = BuildKey::from_bytes([2; 32])),
            Box::new(|b| b.root = BlockId::from(blake3::hash(b"other"))),
            Box::new(|b| b.size += 1),
            Box::new(|b| b.time += 1),
            Box::new(|b| b.build_ms += 1),
            Box::new(|b| b.labels.crate_name.push('x')),
            Box::new(|b| b.labels.crate_version = "1.0.220".into()),
            Box::new(|b| b.labels.target.clear()),
            Box::new(|b| b.labels.rustc.push('!')),
            Box::new(|b| b.labels.crate_types.push("rlib".into())),
        ];
        for (i, tamper) in tampers.iter().enumerate() {
            let mut t = r.clone();
            tamper(&mut t.body);
            assert!(
                matches!(t.verify(), Err(RecordError::BadSignature { .. })),
                "tamper {i} not caught"
            );
        }
        let mut v = r.clone();
        v.body.version = 2;
        assert_eq!(
            v.verify(),
            Err(RecordError::UnsupportedVersion { version: 2 })
        );
    }

    #[test]
    fn another_builders_key_does_not_verify() {
        let r = record();
        let mut t = r.clone();
        t.body.builder = BuilderKey::from_bytes(signer(10).verifying_key().to_bytes());
        assert_eq!(
            t.verify(),
            Err(RecordError::BadSignature {
                builder: t.body.builder,
                key: r.key()
            })
        );
        let mut s = r.clone();
        s.signature[0] ^= 1;
        assert!(matches!(s.verify(), Err(RecordError::BadSignature { .. })));
    }

    #[test]
    fn round_trip_and_bad_signature_length() {
        let r = record();
        assert_eq!(BuildRecord::decode(&r.encode()).unwrap(), r);
        assert_eq!(BuildRecord::decode_for(&r.encode(), r.key()).unwrap(), r);
        let other = BuildKey::from_bytes([8; 32]);
        assert_eq!(
            BuildRecord::decode_for(&r.encode(), other),
            Err(RecordError::WrongKey {
                expected: other,
                actual: r.key(),
                builder: r.builder()
            })
        );
        let short = codec::encode(&Wire {
            body: r.body.clone(),
            signature: vec![0; 63],
        });
        assert_eq!(
            BuildRecord::decode(&short),
            Err(RecordError::SignatureLength { len: 63 })
        );
    }
}
