//! Fixed-size identifiers: [`BlockId`] (BLAKE3-256 of a block's bytes), [`BuildKey`]
//! (the 32-byte key of one build unit) and [`BuilderKey`] (an ed25519 public key).
//!
//! Owns: their byte form, lowercase-hex text form and parsing. Does not own: how a
//! build key is derived (specs/build-key.md, the cargo shim) or how a block is laid out
//! ([`crate::block`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A 32-byte identifier could not be parsed from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {reason}")]
pub struct ParseIdError {
    /// Which kind of identifier was expected.
    pub what: &'static str,
    /// The text that failed to parse (cut to 80 characters).
    pub input: String,
    /// Why it failed.
    pub reason: String,
}

macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = 32;

            /// Wraps 32 raw bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lowercase hex, 64 characters.
            pub fn to_hex(&self) -> String {
                blake3::Hash::from_bytes(self.0).to_hex().to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            /// Parses exactly 64 hex digits (either case).
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if s.len() != 64 {
                    return Err(ParseIdError {
                        what: $what,
                        input: s.chars().take(80).collect(),
                        reason: format!("expected 64 hex digits, got {} characters", s.chars().count()),
                    });
                }
                blake3::Hash::from_hex(s)
                    .map(|h| Self(*h.as_bytes()))
                    .map_err(|e| ParseIdError {
                        what: $what,
                        input: s.chars().take(80).collect(),
                        reason: e.to_string(),
                    })
            }
        }
    };
}

id32!(
    /// The identifier of a block: BLAKE3-256 of its payload, keyed by its kind
    /// (specs/blocks.md §2; computed by [`crate::block::block_id`]).
    BlockId,
    "block id"
);

id32!(
    /// The key of one build unit: everything that determines its output, hashed.
    /// Derivation is specified in specs/build-key.md; here it is only 32 bytes.
    BuildKey,
    "build key"
);

id32!(
    /// A builder's identity: the 32-byte ed25519 public key that signs its records.
    BuilderKey,
    "builder key"
);

impl From<blake3::Hash> for BlockId {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let id = BlockId::from(blake3::hash(b"abc"));
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<BlockId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<BlockId>().unwrap(), id);
        let err = "abc".parse::<BuildKey>().unwrap_err();
        assert_eq!(err.what, "build key");
        assert!(
            err.to_string().starts_with("invalid build key \"abc\""),
            "{err}"
        );
        assert!("zz".repeat(32).parse::<BuilderKey>().is_err());
    }
}
