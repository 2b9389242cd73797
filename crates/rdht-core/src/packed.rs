//! Block encodings for storage and transfer (specs/blocks.md §8): a block's bytes as
//! they are, or LZ4-compressed (block format, no frame) with the raw length beside them.
//!
//! Owns: the [`Encoded`] form, when compression is worth keeping ([`compress`]) and
//! bounded decoding. Does not own: block validation or ids (a block's id is always the
//! hash of its raw bytes, [`crate::block`]), nor where encoded bytes are kept.
//!
//! Invariant: decoding never allocates more than [`MAX_BLOCK_LEN`] bytes and never
//! panics, whatever the input; it yields leaves only (interior blocks are never
//! encoded); a decoded block is still unverified.

use bytes::Bytes;

use crate::block::{BlockError, LEAF_TAG, MAX_BLOCK_LEN};

/// A block's bytes as stored or sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// The block's bytes, tag included.
    Raw(Bytes),
    /// LZ4 block-format data that decodes to exactly `raw_len` bytes.
    Lz4 {
        /// The compressed bytes.
        data: Bytes,
        /// Length of the block once decoded.
        raw_len: u32,
    },
}

impl Encoded {
    /// Bytes this form occupies (compressed length for LZ4).
    pub fn stored_len(&self) -> usize {
        match self {
            Encoded::Raw(b) => b.len(),
            Encoded::Lz4 { data, .. } => data.len(),
        }
    }

    /// The block's bytes (not yet verified). LZ4 data must decode to exactly `raw_len`
    /// bytes, and `raw_len` must be 1..=[`MAX_BLOCK_LEN`].
    pub fn decode(&self) -> Result<Bytes, BlockError> {
        match self {
            Encoded::Raw(b) => Ok(b.clone()),
            Encoded::Lz4 { data, raw_len } => decompress(data, *raw_len as usize).map(Bytes::from),
        }
    }
}

/// LZ4 data is kept only when it saves at least 1/`MIN_SAVING` of the block.
pub const MIN_SAVING: usize = 8;

/// The LZ4 form of `raw` (a block's bytes), or `None` when it is not a leaf or
/// compression would save less than 1/[`MIN_SAVING`] of it. Interior blocks are never
/// encoded: they are mostly hashes, and a sender walks their links without decoding.
pub fn compress(raw: &[u8]) -> Option<Bytes> {
    if raw.len() < 2 * MIN_SAVING || raw[0] != LEAF_TAG {
        return None;
    }
    SCRATCH.with_borrow_mut(|out| {
        let n = lz4_flex::block::compress_into(raw, out).ok()?;
        (n > 0 && n <= raw.len() - raw.len() / MIN_SAVING)
            .then(|| Bytes::copy_from_slice(&out[..n]))
    })
}

thread_local! {
    /// Compression output for the largest block: reused, so a put costs no 16 KiB
    /// allocation per block, and the kept copy holds only the compressed bytes.
    static SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0; lz4_flex::block::get_maximum_output_size(MAX_BLOCK_LEN)]);
}

fn decompress(data: &[u8], raw_len: usize) -> Result<Vec<u8>, BlockError> {
    if raw_len == 0 {
        return Err(BlockError::Empty);
    }
    if raw_len > MAX_BLOCK_LEN {
        return Err(BlockError::TooLong {
            len: raw_len,
            max: MAX_BLOCK_LEN,
        });
    }
    let bad = |reason: String| BlockError::Lz4 { raw_len, reason };
    if data.is_empty() || data.len() > MAX_BLOCK_LEN {
        return Err(bad(format!("{} bytes of LZ4 data", data.len())));
    }
    // A fresh zeroed buffer: a malformed match can only ever copy zeros.
    let mut out = vec![0u8; raw_len];
    let n = lz4_flex::block::decompress_into(data, &mut out).map_err(|e| bad(e.to_string()))?;
    if n != raw_len {
        return Err(bad(format!("it decodes to {n} bytes")));
    }
    if out[0] != LEAF_TAG {
        return Err(bad("it decodes to an interior block".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Block;
    use proptest::prelude::*;

    #[test]
    fn compressible_blocks_round_trip_and_random_ones_stay_raw() {
        let leaf = Block::leaf(&[7u8; 16384]).unwrap();
        let data = compress(leaf.bytes()).expect("a run of sevens compresses");
        assert!(data.len() < 200, "{}", data.len());
        let enc = Encoded::Lz4 {
            data,
            raw_len: leaf.bytes().len() as u32,
        };
        assert_eq!(&enc.decode().unwrap(), leaf.bytes());
        // Incompressible: xorshift noise.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..16384)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(compress(&Block::leaf(&noise).unwrap().bytes()[..]), None);
        assert_eq!(compress(&[0u8; 15]), None);
    }

    #[test]
    fn lz4_data_must_decode_to_exactly_the_stated_length() {
        let mut raw = vec![1u8; 4000];
        raw[0] = LEAF_TAG;
        let data = compress(&raw).unwrap();
        for wrong in [3999u32, 4001] {
            let err = Encoded::Lz4 {
                data: data.clone(),
                raw_len: wrong,
            }
            .decode()
            .unwrap_err();
            assert!(matches!(err, BlockError::Lz4 { .. }), "{wrong}: {err}");
        }
        let too_long = Encoded::Lz4 {
            data,
            raw_len: MAX_BLOCK_LEN as u32 + 1,
        };
        assert_eq!(
            too_long.decode().unwrap_err(),
            BlockError::TooLong {
                len: MAX_BLOCK_LEN + 1,
                max: MAX_BLOCK_LEN
            }
        );
        let empty = Encoded::Lz4 {
            data: Bytes::new(),
            raw_len: 10,
        };
        assert!(matches!(empty.decode(), Err(BlockError::Lz4 { .. })));
        // Interior blocks are never encoded, and LZ4 data decoding to one is refused.
        let mut interior = vec![crate::block::INTERIOR_TAG];
        interior.extend_from_slice(&[0u8; 4000]);
        assert_eq!(compress(&interior), None);
        let data = lz4_flex::block::compress(&interior).into();
        let err = Encoded::Lz4 {
            data,
            raw_len: 4001,
        }
        .decode()
        .unwrap_err();
        assert!(err.to_string().contains("interior"), "{err}");
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            raw_len in 0u32..20_000,
        ) {
            let enc = Encoded::Lz4 { data: data.into(), raw_len };
            if let Ok(b) = enc.decode() {
                prop_assert_eq!(b.len(), raw_len as usize);
            }
        }
    }
}
