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

/// The record format version this crate writes (it also reads [`RECORD_VERSION_1`]).
pub const RECORD_VERSION: u8 = 2;
/// The first format: no `needs` (what the artifact needs of the C runtime is unknown).
pub const RECORD_VERSION_1: u8 = 1;
/// Prefix of every signed message of a version-2 record, so a record signature can
/// never be taken for a signature over anything else.
pub const RECORD_DOMAIN: &[u8] = b"rdht/build-record/v2\0";
/// The prefix of a version-1 record's signed message.
pub const RECORD_DOMAIN_1: &[u8] = b"rdht/build-record/v1\0";
/// Most runtime libraries a record's `needs` may name.
pub const MAX_NEEDS_LIBS: usize = 16;
/// Most versions it may name per library.
pub const MAX_NEEDS_VERSIONS: usize = 128;
/// Longest library or version name in `needs`.
pub const MAX_NEED_NAME: usize = 64;

/// What an artifact's loaded outputs need of the machine's C runtime libraries: each
/// library (`libc.so.6`) with the symbol versions needed from it (`GLIBC_2.34`),
/// the union over the artifact's ELF files that are loaded or run where they are
/// built (specs/records.md §2.1). Empty when there are none.
pub type Needs = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;
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
    /// What its loaded outputs need of the C runtime (version 2; empty, and unknown,
    /// in version 1).
    pub needs: Needs,
}

/// The body of a version-1 record: a version-2 body without `needs`.
#[derive(Serialize, Deserialize)]
struct BodyV1 {
    version: u8,
    key: BuildKey,
    root: BlockId,
    size: u64,
    time: u64,
    build_ms: u64,
    labels: Labels,
    builder: BuilderKey,
}

impl BodyV1 {
    fn of(b: &RecordBody) -> BodyV1 {
        BodyV1 {
            version: b.version,
            key: b.key,
            root: b.root,
            size: b.size,
            time: b.time,
            build_ms: b.build_ms,
            labels: b.labels.clone(),
            builder: b.builder,
        }
    }

    fn upgraded(self) -> RecordBody {
        RecordBody {
            version: self.version,
            key: self.key,
            root: self.root,
            size: self.size,
            time: self.time,
            build_ms: self.build_ms,
            labels: self.labels,
            builder: self.builder,
            needs: Needs::new(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    body: RecordBody,
    signature: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct WireV1 {
    body: BodyV1,
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
        "build record format version {version} is not supported (this build reads {RECORD_VERSION_1} and {RECORD_VERSION})"
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
    /// `needs` is out of bounds.
    #[error("build record needs {what}")]
    Needs {
        /// What is out of bounds.
        what: String,
    },
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

/// The exact bytes a builder signs for `body` (each version under its own domain).
pub fn signing_message(body: &RecordBody) -> Vec<u8> {
    let (mut msg, encoded) = if body.version == RECORD_VERSION_1 {
        (RECORD_DOMAIN_1.to_vec(), codec::encode(&BodyV1::of(body)))
    } else {
        (RECORD_DOMAIN.to_vec(), codec::encode(body))
    };
    msg.extend_from_slice(&encoded);
    msg
}

/// Checks the bounds of `needs`.
fn check_needs(needs: &Needs) -> Result<(), RecordError> {
    let bad = |what: String| Err(RecordError::Needs { what });
    if needs.len() > MAX_NEEDS_LIBS {
        return bad(format!(
            "{} libraries (at most {MAX_NEEDS_LIBS})",
            needs.len()
        ));
    }
    for (lib, versions) in needs {
        if lib.is_empty() || lib.len() > MAX_NEED_NAME {
            return bad(format!("a library name of {} bytes", lib.len()));
        }
        if versions.len() > MAX_NEEDS_VERSIONS {
            return bad(format!(
                "{} versions of {lib} (at most {MAX_NEEDS_VERSIONS})",
                versions.len()
            ));
        }
        if let Some(v) = versions
            .iter()
            .find(|v| v.is_empty() || v.len() > MAX_NEED_NAME)
        {
            return bad(format!("a version name of {} bytes for {lib}", v.len()));
        }
    }
    Ok(())
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
        Self::sign_body(
            RecordBody {
                version: RECORD_VERSION,
                key,
                root,
                size,
                time,
                build_ms,
                labels,
                builder: BuilderKey::from_bytes(signer.verifying_key().to_bytes()),
                needs: Needs::new(),
            },
            signer,
        )
    }

    /// Signs `body` as it is, its `builder` set to the signer's key. A version other
    /// than [`RECORD_VERSION`] is only for tests and vectors of older formats.
    pub fn sign_body(
        mut body: RecordBody,
        signer: &SigningKey,
    ) -> Result<BuildRecord, RecordError> {
        body.labels.validate()?;
        check_needs(&body.needs)?;
        if body.version == RECORD_VERSION_1 && !body.needs.is_empty() {
            return Err(RecordError::Needs {
                what: "a version-2 record (version 1 has no needs)".into(),
            });
        }
        body.builder = BuilderKey::from_bytes(signer.verifying_key().to_bytes());
        let signature = signer.sign(&signing_message(&body)).to_bytes();
        Ok(BuildRecord { body, signature })
    }

    /// Checks the version, labels, builder key and signature (strict ed25519: no
    /// malleable signatures, no small-order keys).
    pub fn verify(&self) -> Result<(), RecordError> {
        let body = &self.body;
        if body.version != RECORD_VERSION && body.version != RECORD_VERSION_1 {
            return Err(RecordError::UnsupportedVersion {
                version: body.version,
            });
        }
        body.labels.validate()?;
        check_needs(&body.needs)?;
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
        // The version is the body's first byte, and the body the record's first field.
        let wire: Wire = match bytes.first() {
            Some(&RECORD_VERSION_1) => {
                let w: WireV1 = codec::decode("build record", bytes, MAX_RECORD_LEN)?;
                Wire {
                    body: w.body.upgraded(),
                    signature: w.signature,
                }
            }
            Some(&RECORD_VERSION) | None => codec::decode("build record", bytes, MAX_RECORD_LEN)?,
            Some(&version) if bytes.len() <= MAX_RECORD_LEN => {
                return Err(RecordError::UnsupportedVersion { version });
            }
            Some(_) => codec::decode("build record", bytes, MAX_RECORD_LEN)?,
        };
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

    /// The canonical encoding (in the record's own version's layout).
    pub fn encode(&self) -> Vec<u8> {
        if self.body.version == RECORD_VERSION_1 {
            return codec::encode(&WireV1 {
                body: BodyV1::of(&self.body),
                signature: self.signature.to_vec(),
            });
        }
        codec::encode(&Wire {
            body: self.body.clone(),
            signature: self.signature.to_vec(),
        })
    }

    /// What the artifact's loaded outputs need of the C runtime; `None` for a
    /// version-1 record, which does not say.
    pub fn needs(&self) -> Option<&Needs> {
        (self.body.version != RECORD_VERSION_1).then_some(&self.body.needs)
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
        v.body.version = 3;
        assert_eq!(
            v.verify(),
            Err(RecordError::UnsupportedVersion { version: 3 })
        );
        let mut n = r.clone();
        n.body
            .needs
            .insert("libc.so.6".into(), ["GLIBC_2.34".into()].into());
        assert!(
            matches!(n.verify(), Err(RecordError::BadSignature { .. })),
            "needs are signed"
        );
    }

    #[test]
    fn needs_out_of_bounds_are_refused_with_what_was_wrong() {
        let body = record().body().clone();
        let sign = |needs: Needs| {
            let mut b = body.clone();
            b.needs = needs;
            BuildRecord::sign_body(b, &signer(1)).map(|_| ())
        };
        let many: Needs = (0..17)
            .map(|i| (format!("lib{i}.so"), Default::default()))
            .collect();
        assert_eq!(
            sign(many).unwrap_err().to_string(),
            "build record needs 17 libraries (at most 16)"
        );
        let long: Needs = [("libc.so.6".to_string(), ["G".repeat(65)].into())].into();
        assert_eq!(
            sign(long).unwrap_err().to_string(),
            "build record needs a version name of 65 bytes for libc.so.6"
        );
        let mut v1 = body.clone();
        v1.version = RECORD_VERSION_1;
        v1.needs.insert("libc.so.6".into(), Default::default());
        assert!(BuildRecord::sign_body(v1, &signer(1)).is_err());
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
