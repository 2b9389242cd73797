//! Blocks: the unit of storage and transfer (specs/blocks.md §2).
//!
//! A block is `tag || payload`. A leaf (`0x00`) carries up to 16,384 bytes of file data;
//! an interior block (`0x01`) carries 1 to 409 [`Link`]s of 40 bytes each. A block's
//! [`BlockId`] is BLAKE3-256 of its payload in derive-key mode, with one context string
//! per kind ([`LEAF_CONTEXT`], [`INTERIOR_CONTEXT`]): the two kinds hash with unrelated
//! functions, so a leaf can never pass for an interior block or back (the domain
//! separation RFC 6962 gets from its 0x00/0x01 prefixes). Hashing the payload alone, not
//! the tag, keeps 16 KiB leaves aligned to BLAKE3's 1 KiB chunks: a prefixed byte halved
//! hashing speed on this machine (specs/blocks.md §2).
//!
//! Owns: the byte layout, its validation and hashing. Does not own: tree shape (which
//! child sizes a parent may list) — that is [`crate::dag`].

use bytes::Bytes;

use crate::id::BlockId;
use crate::packed::Encoded;

/// Most file bytes one leaf holds: 16 KiB.
pub const MAX_LEAF_DATA: usize = 16 * 1024;
/// Encoded length of one [`Link`]: 32-byte id, then the subtree's byte size as u64 LE.
pub const LINK_LEN: usize = 40;
/// Most links one interior block holds, so that it fits in 16 KiB with its tag.
pub const MAX_LINKS: usize = (MAX_LEAF_DATA - 1) / LINK_LEN;
/// Longest valid block: a full leaf plus its tag.
pub const MAX_BLOCK_LEN: usize = 1 + MAX_LEAF_DATA;
/// First byte of a leaf block.
pub const LEAF_TAG: u8 = 0x00;
/// First byte of an interior block.
pub const INTERIOR_TAG: u8 = 0x01;
/// BLAKE3 derive-key context for leaf ids.
pub const LEAF_CONTEXT: &str = "rdht 2026-11-24 block id: leaf v1";
/// BLAKE3 derive-key context for interior ids.
pub const INTERIOR_CONTEXT: &str = "rdht 2026-11-24 block id: interior v1";

/// Which of the two block kinds a block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// File data.
    Leaf,
    /// A list of children.
    Interior,
}

impl BlockKind {
    /// The tag byte that starts blocks of this kind.
    pub const fn tag(self) -> u8 {
        match self {
            BlockKind::Leaf => LEAF_TAG,
            BlockKind::Interior => INTERIOR_TAG,
        }
    }
}

/// A reference from a parent to a child: the child's id and the number of file bytes
/// under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Link {
    /// The child block.
    pub id: BlockId,
    /// File bytes in the child's subtree.
    pub size: u64,
}

impl Link {
    /// Appends the 40-byte encoding.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
    }

    fn decode(chunk: &[u8]) -> Link {
        let mut id = [0u8; 32];
        id.copy_from_slice(&chunk[..32]);
        let mut size = [0u8; 8];
        size.copy_from_slice(&chunk[32..LINK_LEN]);
        Link {
            id: BlockId::from_bytes(id),
            size: u64::from_le_bytes(size),
        }
    }
}

/// Bytes that are not a valid block, or not the block that was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Zero bytes: not even a tag.
    #[error("block is empty")]
    Empty,
    /// The first byte is neither 0x00 nor 0x01.
    #[error("block starts with unknown tag 0x{tag:02x}")]
    UnknownTag {
        /// The tag found.
        tag: u8,
    },
    /// Longer than [`MAX_BLOCK_LEN`], or a leaf with more than [`MAX_LEAF_DATA`] bytes.
    #[error("block is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// Encoded length.
        len: usize,
        /// The limit for its kind.
        max: usize,
    },
    /// An interior payload that is empty, not a whole number of links, or too many.
    #[error(
        "interior block payload of {len} bytes is not 1 to {MAX_LINKS} links of {LINK_LEN} bytes"
    )]
    BadInterior {
        /// Payload length.
        len: usize,
    },
    /// LZ4 data that does not decode to the stated length (specs/blocks.md §8).
    #[error("LZ4 data does not decode to a block of {raw_len} bytes: {reason}")]
    Lz4 {
        /// The length the block was said to have.
        raw_len: usize,
        /// What went wrong.
        reason: String,
    },
    /// The bytes hash to another id than the one they were fetched as.
    #[error("block {expected} has wrong content: it hashes to {actual}")]
    HashMismatch {
        /// The id asked for.
        expected: BlockId,
        /// What the bytes hash to.
        actual: BlockId,
    },
}

/// A block whose layout has been validated and whose id is known to be the hash of its
/// bytes. Cheap to clone.
///
/// Invariant: `lz4`, when present, is LZ4 data that decodes to exactly `bytes` (it was
/// decoded to get them, or compressed from them). Equality ignores it.
#[derive(Clone)]
pub struct Block {
    id: BlockId,
    bytes: Bytes,
    lz4: Option<Bytes>,
}

impl PartialEq for Block {
    fn eq(&self, other: &Block) -> bool {
        self.id == other.id && self.bytes == other.bytes
    }
}

impl Eq for Block {}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("id", &self.id)
            .field("kind", &self.kind())
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// The id of a block of `kind` whose bytes after the tag are `payload`.
pub fn block_id(kind: BlockKind, payload: &[u8]) -> BlockId {
    let context = match kind {
        BlockKind::Leaf => LEAF_CONTEXT,
        BlockKind::Interior => INTERIOR_CONTEXT,
    };
    let mut h = blake3::Hasher::new_derive_key(context);
    h.update(payload);
    h.finalize().into()
}

fn kind_of_tag(tag: u8) -> Option<BlockKind> {
    match tag {
        LEAF_TAG => Some(BlockKind::Leaf),
        INTERIOR_TAG => Some(BlockKind::Interior),
        _ => None,
    }
}

fn check_layout(bytes: &[u8]) -> Result<(), BlockError> {
    let (&tag, payload) = bytes.split_first().ok_or(BlockError::Empty)?;
    if bytes.len() > MAX_BLOCK_LEN {
        return Err(BlockError::TooLong {
            len: bytes.len(),
            max: MAX_BLOCK_LEN,
        });
    }
    match tag {
        LEAF_TAG => Ok(()),
        INTERIOR_TAG => {
            let n = payload.len() / LINK_LEN;
            if payload.len() % LINK_LEN != 0 || n == 0 || n > MAX_LINKS {
                return Err(BlockError::BadInterior { len: payload.len() });
            }
            Ok(())
        }
        tag => Err(BlockError::UnknownTag { tag }),
    }
}

impl Block {
    /// A leaf holding `data` (at most [`MAX_LEAF_DATA`] bytes).
    pub fn leaf(data: &[u8]) -> Result<Block, BlockError> {
        if data.len() > MAX_LEAF_DATA {
            return Err(BlockError::TooLong {
                len: data.len() + 1,
                max: MAX_BLOCK_LEN,
            });
        }
        let mut bytes = Vec::with_capacity(1 + data.len());
        bytes.push(LEAF_TAG);
        bytes.extend_from_slice(data);
        Ok(Block {
            id: block_id(BlockKind::Leaf, data),
            bytes: bytes.into(),
            lz4: None,
        })
    }

    /// An interior block listing `links` (1 to [`MAX_LINKS`]).
    pub fn interior(links: &[Link]) -> Result<Block, BlockError> {
        if links.is_empty() || links.len() > MAX_LINKS {
            return Err(BlockError::BadInterior {
                len: links.len() * LINK_LEN,
            });
        }
        let mut bytes = Vec::with_capacity(1 + links.len() * LINK_LEN);
        bytes.push(INTERIOR_TAG);
        for l in links {
            l.encode_into(&mut bytes);
        }
        Ok(Block {
            id: block_id(BlockKind::Interior, &bytes[1..]),
            bytes: bytes.into(),
            lz4: None,
        })
    }

    /// Validates `bytes` as a block and computes its id.
    pub fn from_bytes(bytes: Bytes) -> Result<Block, BlockError> {
        check_layout(&bytes)?;
        // Invariant: check_layout accepted a known tag.
        let kind = kind_of_tag(bytes[0]).expect("validated tag");
        Ok(Block {
            id: block_id(kind, &bytes[1..]),
            bytes,
            lz4: None,
        })
    }

    /// Validates `bytes` as the block `id`: the layout must be valid and the bytes must
    /// hash to `id`. This is the check every block from disk or network passes.
    pub fn verified(id: BlockId, bytes: Bytes) -> Result<Block, BlockError> {
        let block = Block::from_bytes(bytes)?;
        if block.id != id {
            return Err(BlockError::HashMismatch {
                expected: id,
                actual: block.id,
            });
        }
        Ok(block)
    }

    /// Decodes `encoded` and validates it as the block `id` ([`Block::verified`]). LZ4
    /// data is kept with the block, so it can be stored or sent again as it is.
    pub fn from_encoded(id: BlockId, encoded: Encoded) -> Result<Block, BlockError> {
        let block = Block::verified(id, encoded.decode()?)?;
        Ok(block.with_encoding(encoded))
    }

    /// Keeps `encoded`'s LZ4 data, which the caller decoded to this block's bytes.
    pub(crate) fn with_encoding(mut self, encoded: Encoded) -> Block {
        if let Encoded::Lz4 { data, .. } = encoded {
            self.lz4 = Some(data);
        }
        self
    }

    /// The block's LZ4 form, when it was decoded from one or [`Block::compressed`] made
    /// one.
    pub fn lz4(&self) -> Option<&Bytes> {
        self.lz4.as_ref()
    }

    /// The form to store or send: LZ4 when the block has it, else raw.
    pub fn encoded(&self) -> Encoded {
        match &self.lz4 {
            Some(data) => Encoded::Lz4 {
                data: data.clone(),
                raw_len: self.bytes.len() as u32,
            },
            None => Encoded::Raw(self.bytes.clone()),
        }
    }

    /// This block with an LZ4 form, compressing when it has none and compression saves
    /// enough ([`crate::packed::compress`]).
    pub fn compressed(mut self) -> Block {
        if self.lz4.is_none() {
            self.lz4 = crate::packed::compress(&self.bytes);
        }
        self
    }

    /// The block's id.
    pub fn id(&self) -> BlockId {
        self.id
    }

    /// The full encoding, tag included.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Consumes the block, returning its encoding.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Leaf or interior.
    pub fn kind(&self) -> BlockKind {
        // Invariant: check_layout accepted the tag, so it is one of the two.
        kind_of_tag(self.bytes[0]).unwrap_or(BlockKind::Interior)
    }

    /// Everything after the tag: file data for a leaf, links for an interior block.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[1..]
    }

    /// The links of an interior block (none for a leaf).
    pub fn links(&self) -> impl ExactSizeIterator<Item = Link> + '_ {
        let payload = match self.kind() {
            BlockKind::Leaf => &[][..],
            BlockKind::Interior => self.payload(),
        };
        payload.chunks_exact(LINK_LEN).map(Link::decode)
    }
}

/// A block as the DAG builder emits it, borrowed: `kind`'s tag followed by `payload`
/// is the encoding, and `id` its hash. Borrowing lets the builder hash file data in
/// place; call [`BlockRef::to_block`] to own it.
#[derive(Debug, Clone, Copy)]
pub struct BlockRef<'a> {
    /// The block's id.
    pub id: BlockId,
    /// Leaf or interior.
    pub kind: BlockKind,
    /// The bytes after the tag.
    pub payload: &'a [u8],
}

impl BlockRef<'_> {
    /// Encoded length, tag included.
    pub fn len(&self) -> usize {
        1 + self.payload.len()
    }

    /// Never true: a block always has its tag.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The full encoding, tag included.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.push(self.kind.tag());
        v.extend_from_slice(self.payload);
        v
    }

    /// An owned [`Block`] (copies the bytes; the id is not recomputed).
    pub fn to_block(&self) -> Block {
        Block {
            id: self.id,
            bytes: self.to_vec().into(),
            lz4: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_limits() {
        assert_eq!(MAX_LINKS, 409);
        const { assert!(MAX_LINKS * LINK_LEN < MAX_LEAF_DATA) };
        assert_eq!(Block::from_bytes(Bytes::new()), Err(BlockError::Empty));
        assert_eq!(
            Block::from_bytes(Bytes::from_static(&[2])),
            Err(BlockError::UnknownTag { tag: 2 })
        );
        assert_eq!(
            Block::from_bytes(Bytes::from_static(&[1, 0, 0])),
            Err(BlockError::BadInterior { len: 2 })
        );
        assert_eq!(
            Block::from_bytes(Bytes::from_static(&[1])),
            Err(BlockError::BadInterior { len: 0 })
        );
        let big = vec![0u8; MAX_BLOCK_LEN + 1];
        assert!(matches!(
            Block::from_bytes(big.into()),
            Err(BlockError::TooLong {
                len: 16386,
                max: 16385
            })
        ));
        assert!(Block::leaf(&[7u8; MAX_LEAF_DATA]).is_ok());
        assert!(Block::leaf(&[7u8; MAX_LEAF_DATA + 1]).is_err());
    }

    #[test]
    fn leaf_and_interior_are_domain_separated() {
        // An interior block's payload, offered as leaf data, gets a different id.
        let link = Link {
            id: BlockId::from(blake3::hash(b"x")),
            size: 3,
        };
        let interior = Block::interior(&[link]).unwrap();
        let leaf = Block::leaf(interior.payload()).unwrap();
        assert_ne!(leaf.id(), interior.id());
        assert_eq!(leaf.payload(), interior.payload());
        assert_eq!(interior.links().collect::<Vec<_>>(), vec![link]);
        assert_eq!(leaf.links().len(), 0);
        assert_eq!(leaf.id(), block_id(BlockKind::Leaf, interior.payload()));
    }

    #[test]
    fn verified_names_both_ids() {
        let b = Block::leaf(b"hello").unwrap();
        let wrong = BlockId::from(blake3::hash(b"other"));
        assert_eq!(
            Block::verified(wrong, b.bytes().clone()),
            Err(BlockError::HashMismatch {
                expected: wrong,
                actual: b.id()
            })
        );
        assert_eq!(Block::verified(b.id(), b.bytes().clone()).unwrap(), b);
    }
}
