//! Bounded, canonical postcard decoding shared by every structured format in this crate.
//!
//! Owns: [`DecodeError`] and the rule that a decoder checks the input length before
//! parsing, rejects trailing bytes and rejects any encoding that does not re-encode to
//! the same bytes (so every value has exactly one encoding, which signatures and hashes
//! rely on). Does not own: the fixed block layout ([`crate::block`]), which is not
//! postcard.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Structured input could not be decoded. Every decoder in rdht returns this (or wraps
/// it) instead of panicking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is longer than the format allows; it was not parsed.
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// What was being decoded.
        what: &'static str,
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input ended before the value did: it may be a prefix of a valid encoding.
    #[error("{what} is incomplete: input ended early")]
    Incomplete {
        /// What was being decoded.
        what: &'static str,
    },
    /// The input can never be a valid encoding.
    #[error("{what} is invalid: {reason}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A valid value was followed by extra bytes.
    #[error("{what} has {extra} trailing bytes")]
    TrailingBytes {
        /// What was being decoded.
        what: &'static str,
        /// Number of bytes after the value.
        extra: usize,
    },
    /// The value decodes but is not in its one canonical encoding.
    #[error("{what} is not canonically encoded")]
    NonCanonical {
        /// What was being decoded.
        what: &'static str,
    },
}

/// Encodes `value` with postcard.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Invariant: postcard only fails to serialize into a growable Vec for serde features
    // these plain structs do not use (unknown-length sequences, i128 off, etc.).
    postcard::to_stdvec(value).expect("postcard serializes rdht's plain structs into a Vec")
}

/// Decodes one canonical postcard value of at most `max` bytes that fills `bytes` exactly.
pub(crate) fn decode<T: Serialize + DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    let (value, rest): (T, &[u8]) = postcard::take_from_bytes(bytes).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Incomplete { what },
        other => DecodeError::Invalid {
            what,
            reason: other.to_string(),
        },
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            what,
            extra: rest.len(),
        });
    }
    if encode(&value) != bytes {
        return Err(DecodeError::NonCanonical { what });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinguishes_incomplete_invalid_trailing_noncanonical() {
        let enc = encode(&(7u32, String::from("hi")));
        assert_eq!(
            decode::<(u32, String)>("t", &enc, 64).unwrap(),
            (7, "hi".into())
        );
        assert_eq!(
            decode::<(u32, String)>("t", &enc[..enc.len() - 1], 64),
            Err(DecodeError::Incomplete { what: "t" })
        );
        let mut long = enc.clone();
        long.push(0);
        assert_eq!(
            decode::<(u32, String)>("t", &long, 64),
            Err(DecodeError::TrailingBytes {
                what: "t",
                extra: 1
            })
        );
        assert_eq!(
            decode::<(u32, String)>("t", &enc, 2),
            Err(DecodeError::TooLarge {
                what: "t",
                len: enc.len(),
                max: 2
            })
        );
        // 7 as a two-byte varint (0x87 0x00) decodes to 7 but is not canonical.
        let padded = [0x87, 0x00, 0x02, b'h', b'i'];
        assert_eq!(
            decode::<(u32, String)>("t", &padded, 64),
            Err(DecodeError::NonCanonical { what: "t" })
        );
        let bad_utf8 = [0x07, 0x01, 0xff];
        assert!(matches!(
            decode::<(u32, String)>("t", &bad_utf8, 64),
            Err(DecodeError::Invalid { what: "t", .. })
        ));
    }
}
