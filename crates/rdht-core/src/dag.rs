//! Merkle DAGs: how a byte string of any length becomes blocks, and how blocks are
//! verified back into bytes (specs/blocks.md §3–§5).
//!
//! Shape: a file of `size` bytes has height `h`, the least with `capacity(h) >= size`,
//! where `capacity(h) = 16384 * 409^h`. A node of height `h > 0` over `s` bytes has
//! `ceil(s / capacity(h-1))` children, all full but the last. Height 0 is a leaf. The
//! shape is a function of the size, so a file has exactly one root.
//!
//! - [`DagBuilder`] takes bytes incrementally with memory bounded by the tree height
//!   (one 16 KiB leaf buffer and up to 409 links per level) and emits blocks in
//!   post-order: a block is emitted once its children are, because its id hashes theirs.
//! - [`DagVerifier`] takes blocks in pre-order (parent before children, children left to
//!   right), the order senders stream in, and checks each on arrival: hash, kind, size
//!   against the parent, canonical shape, limits. A rejected block leaves the verifier
//!   unchanged, so the same block can be asked of another peer.
//! - [`assemble`] drives a verifier from a [`BlockSource`] and hands leaf data to a sink.
//!
//! Does not own: block layout ([`crate::block`]), storage or transfer.

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;

use crate::block::{Block, BlockError, BlockKind, BlockRef, Link, MAX_LEAF_DATA, MAX_LINKS};
use crate::block::{INTERIOR_TAG, block_id};
use crate::id::BlockId;
use crate::packed::Encoded;

/// Default [`Limits::max_size`]: 1 TiB.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 40;
/// Default [`Limits::max_depth`]: 4 interior levels (over 450 TiB).
pub const DEFAULT_MAX_DEPTH: u32 = 4;

/// Bounds a verifier enforces before it trusts a root's claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most file bytes a DAG may hold.
    pub max_size: u64,
    /// Most interior levels above the leaves.
    pub max_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_size: DEFAULT_MAX_SIZE,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// File bytes a subtree of `height` holds when full; `None` past `u64::MAX`.
pub fn capacity(height: u32) -> Option<u64> {
    let mut c = MAX_LEAF_DATA as u64;
    for _ in 0..height {
        c = c.checked_mul(MAX_LINKS as u64)?;
    }
    Some(c)
}

/// The height of the canonical tree over `size` bytes (0: a single leaf).
pub fn height_for(size: u64) -> u32 {
    let mut h = 0;
    while capacity(h).is_some_and(|c| c < size) {
        h += 1;
    }
    h
}

/// Sizes of the children of a node of `height > 0` over `size > 0` bytes.
fn child_sizes(size: u64, height: u32) -> impl Iterator<Item = u64> {
    let cap = capacity(height - 1).unwrap_or(u64::MAX);
    let n = size.div_ceil(cap);
    (0..n).map(move |i| if i + 1 < n { cap } else { size - i * cap })
}

/// The tree levels of a [`DagBuilder`]: links waiting for their parent.
#[derive(Debug, Default)]
struct Levels {
    levels: Vec<Vec<Link>>,
    scratch: Vec<u8>,
}

impl Levels {
    fn add_leaf<E>(
        &mut self,
        data: &[u8],
        emit: &mut impl FnMut(BlockRef<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let id = block_id(BlockKind::Leaf, data);
        emit(BlockRef {
            id,
            kind: BlockKind::Leaf,
            payload: data,
        })?;
        self.push(
            0,
            Link {
                id,
                size: data.len() as u64,
            },
            emit,
        )
    }

    fn push<E>(
        &mut self,
        mut level: usize,
        mut link: Link,
        emit: &mut impl FnMut(BlockRef<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::with_capacity(MAX_LINKS));
            }
            self.levels[level].push(link);
            if self.levels[level].len() < MAX_LINKS {
                return Ok(());
            }
            link = self.flush(level, emit)?;
            level += 1;
        }
    }

    /// Emits the interior block over `level`'s links, empties the level, returns its link.
    fn flush<E>(
        &mut self,
        level: usize,
        emit: &mut impl FnMut(BlockRef<'_>) -> Result<(), E>,
    ) -> Result<Link, E> {
        self.scratch.clear();
        self.scratch.push(INTERIOR_TAG);
        let mut size = 0u64;
        for l in self.levels[level].drain(..) {
            l.encode_into(&mut self.scratch);
            size += l.size;
        }
        let id = block_id(BlockKind::Interior, &self.scratch[1..]);
        emit(BlockRef {
            id,
            kind: BlockKind::Interior,
            payload: &self.scratch[1..],
        })?;
        Ok(Link { id, size })
    }
}

/// Streams bytes into a canonical DAG. Memory is bounded: one leaf buffer plus at most
/// 409 links per level. Blocks are emitted to the caller's sink in post-order.
///
/// ```
/// use rdht_core::dag::DagBuilder;
/// let mut blocks = Vec::new();
/// let mut emit = |b: rdht_core::BlockRef<'_>| -> Result<(), std::convert::Infallible> {
///     blocks.push(b.to_block());
///     Ok(())
/// };
/// let mut builder = DagBuilder::new();
/// builder.update(b"hello ", &mut emit).unwrap();
/// builder.update(b"world", &mut emit).unwrap();
/// let root = builder.finish(&mut emit).unwrap();
/// assert_eq!(root.size, 11);
/// assert_eq!(blocks.len(), 1);
/// assert_eq!(blocks[0].id(), root.id);
/// ```
#[derive(Debug)]
pub struct DagBuilder {
    leaf: Vec<u8>,
    levels: Levels,
    total: u64,
}

impl Default for DagBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DagBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        DagBuilder {
            leaf: Vec::with_capacity(MAX_LEAF_DATA),
            levels: Levels::default(),
            total: 0,
        }
    }

    /// Bytes taken so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// True before any byte was taken.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Takes the next bytes of the file. Full leaves are hashed in place, without
    /// copying, when `data` is long enough.
    pub fn update<E>(
        &mut self,
        mut data: &[u8],
        emit: &mut impl FnMut(BlockRef<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.total += data.len() as u64;
        if !self.leaf.is_empty() {
            let take = (MAX_LEAF_DATA - self.leaf.len()).min(data.len());
            self.leaf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.leaf.len() == MAX_LEAF_DATA {
                self.levels.add_leaf(&self.leaf, emit)?;
                self.leaf.clear();
            }
        }
        while data.len() >= MAX_LEAF_DATA {
            let (leaf, rest) = data.split_at(MAX_LEAF_DATA);
            self.levels.add_leaf(leaf, emit)?;
            data = rest;
        }
        self.leaf.extend_from_slice(data);
        Ok(())
    }

    /// Emits the remaining blocks and returns the root's link (id and file size).
    pub fn finish<E>(
        mut self,
        emit: &mut impl FnMut(BlockRef<'_>) -> Result<(), E>,
    ) -> Result<Link, E> {
        if !self.leaf.is_empty() || self.total == 0 {
            self.levels.add_leaf(&self.leaf, emit)?;
        }
        let mut level = 0;
        loop {
            // Invariant: add_leaf ran at least once and every flush pushes its link one
            // level up, so some level holds a link.
            let top = self
                .levels
                .levels
                .iter()
                .rposition(|l| !l.is_empty())
                .expect("a finished DAG has at least one link");
            if level == top && self.levels.levels[level].len() == 1 {
                return Ok(self.levels.levels[level][0]);
            }
            if !self.levels.levels[level].is_empty() {
                let link = self.levels.flush(level, emit)?;
                self.levels.push(level + 1, link, emit)?;
            }
            level += 1;
        }
    }

    /// Builds the whole DAG of `data` in memory: its root and its blocks in post-order.
    pub fn build(data: &[u8]) -> (Link, Vec<Block>) {
        let mut blocks = Vec::new();
        let mut emit = |b: BlockRef<'_>| -> Result<(), Infallible> {
            blocks.push(b.to_block());
            Ok(())
        };
        let mut builder = DagBuilder::new();
        let Ok(()) = builder.update(data, &mut emit);
        let Ok(root) = builder.finish(&mut emit);
        (root, blocks)
    }
}

/// A block was rejected while verifying a DAG. Every variant names the block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    /// The bytes received for `block` hash to something else.
    #[error("block {block} failed verification: its bytes hash to {actual}")]
    HashMismatch {
        /// The block asked for.
        block: BlockId,
        /// What the bytes hash to.
        actual: BlockId,
    },
    /// The bytes are not a valid block at all.
    #[error("block {block} is malformed: {source}")]
    Malformed {
        /// The block asked for.
        block: BlockId,
        /// What is wrong with its layout.
        source: BlockError,
    },
    /// A leaf where the shape needs an interior block, or back.
    #[error("block {block} is a {actual:?} block where the tree needs a {expected:?} block")]
    WrongKind {
        /// The block.
        block: BlockId,
        /// The kind its position requires.
        expected: BlockKind,
        /// The kind it is.
        actual: BlockKind,
    },
    /// The block holds another number of bytes than its parent (or the caller) said.
    #[error("block {block} holds {actual} bytes but its parent says {expected}")]
    SizeMismatch {
        /// The block.
        block: BlockId,
        /// The size its parent (or the caller, for the root) gave.
        expected: u64,
        /// The size it has.
        actual: u64,
    },
    /// An interior block whose child list is not the canonical one for its size.
    #[error("block {block} is not a canonical tree node: {reason}")]
    BadShape {
        /// The interior block.
        block: BlockId,
        /// What is off.
        reason: String,
    },
    /// The root claims more bytes than the limit allows.
    #[error("block {block} is the root of {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// The root.
        block: BlockId,
        /// The size it claims (u64::MAX when its children's sizes overflow).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The root's tree is deeper than the limit allows.
    #[error(
        "block {block} is the root of a tree {depth} levels deep, more than the limit of {max}"
    )]
    TooDeep {
        /// The root.
        block: BlockId,
        /// Its interior levels.
        depth: u32,
        /// The limit.
        max: u32,
    },
    /// A block the DAG needs is not available.
    #[error("block {block} is missing")]
    Missing {
        /// The block.
        block: BlockId,
    },
    /// A block was offered after the DAG was complete.
    #[error("the DAG is already complete; no further block is expected")]
    Complete,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    id: BlockId,
    size: u64,
    height: u32,
}

/// Checks blocks arriving in pre-order against a root. See the module docs.
#[derive(Debug, Clone)]
pub struct DagVerifier {
    root: BlockId,
    expected_size: Option<u64>,
    limits: Limits,
    started: bool,
    /// Blocks still expected; the next one is last.
    stack: Vec<Pending>,
    size: u64,
    blocks: u64,
}

impl DagVerifier {
    /// A verifier for the DAG under `root`. `expected_size`, when known (a manifest
    /// entry), must equal the root's size.
    pub fn new(root: BlockId, expected_size: Option<u64>, limits: Limits) -> Self {
        DagVerifier {
            root,
            expected_size,
            limits,
            started: false,
            stack: Vec::new(),
            size: 0,
            blocks: 0,
        }
    }

    /// The root this verifier checks against.
    pub fn root(&self) -> BlockId {
        self.root
    }

    /// The id of the next block expected, or `None` when the DAG is complete.
    pub fn next_expected(&self) -> Option<BlockId> {
        if !self.started {
            Some(self.root)
        } else {
            self.stack.last().map(|p| p.id)
        }
    }

    /// Ids of every block known to be expected: the next one first, then the rest in
    /// order. Blocks under interior blocks not yet received are not listed.
    pub fn pending(&self) -> impl Iterator<Item = BlockId> + '_ {
        let root = (!self.started).then_some(self.root);
        root.into_iter()
            .chain(self.stack.iter().rev().map(|p| p.id))
    }

    /// True once every block has been verified.
    pub fn is_complete(&self) -> bool {
        self.started && self.stack.is_empty()
    }

    /// File bytes under the root; known once the root was verified.
    pub fn size(&self) -> Option<u64> {
        self.started.then_some(self.size)
    }

    /// Blocks verified so far.
    pub fn blocks_verified(&self) -> u64 {
        self.blocks
    }

    /// The next expected block, when its parent showed it to be a leaf: its id and data
    /// size. `None` for the root (its kind is unknown until it is read) and interior
    /// blocks.
    pub fn next_leaf(&self) -> Option<(BlockId, u64)> {
        if !self.started {
            return None;
        }
        self.stack
            .last()
            .filter(|p| p.height == 0)
            .map(|p| (p.id, p.size))
    }

    /// Accepts the next expected leaf without reading it, for a holder that verified
    /// the leaf when it stored it. `stored_len` is the length of the block as stored
    /// (tag included); it must be one more than the size the parent lists. On error
    /// nothing changes.
    pub fn skip_leaf(&mut self, stored_len: u64) -> Result<(), DagError> {
        let Some((id, size)) = self.next_leaf() else {
            let block = self.next_expected().ok_or(DagError::Complete)?;
            return Err(DagError::BadShape {
                block,
                reason: "only a leaf whose parent was verified can be skipped".into(),
            });
        };
        if stored_len != size + 1 {
            return Err(DagError::SizeMismatch {
                block: id,
                expected: size,
                actual: stored_len.saturating_sub(1),
            });
        }
        self.stack.pop();
        self.blocks += 1;
        Ok(())
    }

    /// [`DagVerifier::push`] for a block received or read in `encoded` form: decodes it
    /// (bounded), verifies it, and keeps LZ4 data with the returned block.
    pub fn push_encoded(&mut self, encoded: Encoded) -> Result<Block, DagError> {
        let bytes = match encoded.decode() {
            Ok(b) => b,
            Err(source) => {
                let block = self.next_expected().ok_or(DagError::Complete)?;
                return Err(DagError::Malformed { block, source });
            }
        };
        Ok(self.push(bytes)?.with_encoding(encoded))
    }

    /// Verifies `bytes` as the next expected block. On success the block is returned
    /// (leaf data is its payload, in file order); on error nothing changes.
    pub fn push(&mut self, bytes: Bytes) -> Result<Block, DagError> {
        let id = self.next_expected().ok_or(DagError::Complete)?;
        let block = Block::verified(id, bytes).map_err(|e| match e {
            BlockError::HashMismatch { actual, .. } => DagError::HashMismatch { block: id, actual },
            source => DagError::Malformed { block: id, source },
        })?;
        let children = if self.started {
            // Invariant: next_expected() returned Some from the stack.
            let p = *self
                .stack
                .last()
                .expect("a started verifier with a next block");
            self.check(&block, p.size, p.height)?
        } else {
            let (size, children) = self.check_root(&block)?;
            self.size = size;
            children
        };
        if self.started {
            self.stack.pop();
        }
        self.started = true;
        self.stack.extend(children.into_iter().rev());
        self.blocks += 1;
        Ok(block)
    }

    fn check_root(&self, block: &Block) -> Result<(u64, Vec<Pending>), DagError> {
        let id = block.id();
        let (size, height) = match block.kind() {
            BlockKind::Leaf => (block.payload().len() as u64, 0),
            BlockKind::Interior => {
                let size = block
                    .links()
                    .try_fold(0u64, |acc, l| acc.checked_add(l.size))
                    .unwrap_or(u64::MAX);
                (size, height_for(size))
            }
        };
        if size > self.limits.max_size {
            return Err(DagError::TooLarge {
                block: id,
                size,
                max: self.limits.max_size,
            });
        }
        if let Some(expected) = self.expected_size
            && expected != size
        {
            return Err(DagError::SizeMismatch {
                block: id,
                expected,
                actual: size,
            });
        }
        if height > self.limits.max_depth {
            return Err(DagError::TooDeep {
                block: id,
                depth: height,
                max: self.limits.max_depth,
            });
        }
        if block.kind() == BlockKind::Interior && height == 0 {
            return Err(DagError::BadShape {
                block: id,
                reason: format!("an interior root over {size} bytes, which fit in one leaf"),
            });
        }
        Ok((size, self.check(block, size, height)?))
    }

    /// Checks `block` at a position of `height` over `size` bytes; returns its children.
    fn check(&self, block: &Block, size: u64, height: u32) -> Result<Vec<Pending>, DagError> {
        let id = block.id();
        let expected_kind = if height == 0 {
            BlockKind::Leaf
        } else {
            BlockKind::Interior
        };
        if block.kind() != expected_kind {
            return Err(DagError::WrongKind {
                block: id,
                expected: expected_kind,
                actual: block.kind(),
            });
        }
        if height == 0 {
            let actual = block.payload().len() as u64;
            if actual != size {
                return Err(DagError::SizeMismatch {
                    block: id,
                    expected: size,
                    actual,
                });
            }
            return Ok(Vec::new());
        }
        let expected = child_sizes(size, height);
        if block.links().len() as u64 != size.div_ceil(capacity(height - 1).unwrap_or(u64::MAX)) {
            return Err(DagError::BadShape {
                block: id,
                reason: format!(
                    "it lists {} children; a node of height {height} over {size} bytes has {}",
                    block.links().len(),
                    expected.count()
                ),
            });
        }
        let mut children = Vec::with_capacity(block.links().len());
        for (i, (link, want)) in block.links().zip(expected).enumerate() {
            if link.size != want {
                return Err(DagError::BadShape {
                    block: id,
                    reason: format!(
                        "child {i} ({}) is listed with {} bytes; the canonical tree has {want}",
                        link.id, link.size
                    ),
                });
            }
            children.push(Pending {
                id: link.id,
                size: link.size,
                height: height - 1,
            });
        }
        Ok(children)
    }
}

/// Where [`assemble`] gets blocks from.
pub trait BlockSource {
    /// What a failed read returns.
    type Error;
    /// The bytes of block `id`, or `None` when it is not held. They need not be
    /// verified: the assembler verifies them.
    fn get_block(&mut self, id: &BlockId) -> Result<Option<Bytes>, Self::Error>;
}

impl BlockSource for HashMap<BlockId, Bytes> {
    type Error = Infallible;
    fn get_block(&mut self, id: &BlockId) -> Result<Option<Bytes>, Infallible> {
        Ok(self.get(id).cloned())
    }
}

/// Assembling a DAG failed.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError<E> {
    /// A block failed verification or was missing.
    #[error(transparent)]
    Dag(#[from] DagError),
    /// The block source failed to read a block.
    #[error("reading block {block}: {source}")]
    Source {
        /// The block being read.
        block: BlockId,
        /// The source's error.
        source: E,
    },
    /// The sink refused data.
    #[error("writing assembled data: {0}")]
    Sink(E),
}

/// Rebuilds the bytes under `root` from `source`, verifying every block before its data
/// reaches `sink`. Returns the number of bytes written.
pub fn assemble<S, E>(
    root: BlockId,
    expected_size: Option<u64>,
    limits: Limits,
    source: &mut S,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, AssembleError<E>>
where
    S: BlockSource<Error = E> + ?Sized,
{
    let mut verifier = DagVerifier::new(root, expected_size, limits);
    while let Some(id) = verifier.next_expected() {
        let bytes = source
            .get_block(&id)
            .map_err(|source| AssembleError::Source { block: id, source })?
            .ok_or(DagError::Missing { block: id })?;
        let block = verifier.push(bytes)?;
        if block.kind() == BlockKind::Leaf {
            sink(block.payload()).map_err(AssembleError::Sink)?;
        }
    }
    Ok(verifier.size().unwrap_or(0))
}

/// [`assemble`] into a `Vec`, for small DAGs such as manifests.
pub fn assemble_to_vec<S, E>(
    root: BlockId,
    limits: Limits,
    source: &mut S,
) -> Result<Vec<u8>, AssembleError<E>>
where
    S: BlockSource<Error = E> + ?Sized,
{
    let mut out = Vec::new();
    assemble(root, None, limits, source, |d| {
        out.extend_from_slice(d);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_and_heights() {
        assert_eq!(capacity(0), Some(16384));
        assert_eq!(capacity(1), Some(16384 * 409));
        assert_eq!(height_for(0), 0);
        assert_eq!(height_for(16384), 0);
        assert_eq!(height_for(16385), 1);
        assert_eq!(height_for(16384 * 409), 1);
        assert_eq!(height_for(16384 * 409 + 1), 2);
        assert_eq!(height_for(DEFAULT_MAX_SIZE), 3);
        assert!(height_for(u64::MAX) <= 6);
        assert_eq!(
            child_sizes(16384 * 409 + 1, 2).collect::<Vec<_>>(),
            vec![16384 * 409, 1]
        );
    }

    #[test]
    fn rejected_block_leaves_verifier_unchanged() {
        let data = vec![9u8; 3 * 16384];
        let (root, blocks) = DagBuilder::build(&data);
        let by_id: HashMap<_, _> = blocks.iter().map(|b| (b.id(), b.bytes().clone())).collect();
        let mut v = DagVerifier::new(root.id, Some(root.size), Limits::default());
        v.push(by_id[&root.id].clone()).unwrap();
        let next = v.next_expected().unwrap();
        let mut bad = by_id[&next].to_vec();
        bad[100] ^= 1;
        assert!(
            matches!(v.push(bad.into()), Err(DagError::HashMismatch { block, .. }) if block == next)
        );
        assert_eq!(v.next_expected(), Some(next));
        while let Some(id) = v.next_expected() {
            v.push(by_id[&id].clone()).unwrap();
        }
        assert!(v.is_complete());
        assert_eq!(v.size(), Some(data.len() as u64));
        assert_eq!(v.push(Bytes::new()), Err(DagError::Complete));
    }

    #[test]
    fn leaves_are_skipped_by_stored_length_only_under_a_verified_parent() {
        // Two full leaves and one of 5 bytes under one interior root.
        let data = vec![7u8; 2 * 16384 + 5];
        let (root, blocks) = DagBuilder::build(&data);
        let by_id: HashMap<_, _> = blocks.iter().map(|b| (b.id(), b.bytes().clone())).collect();
        let mut v = DagVerifier::new(root.id, Some(root.size), Limits::default());
        assert_eq!(v.next_leaf(), None, "the root's kind is not known yet");
        assert!(
            matches!(v.skip_leaf(16385), Err(DagError::BadShape { block, .. }) if block == root.id)
        );
        v.push(by_id[&root.id].clone()).unwrap();
        let (first, size) = v.next_leaf().unwrap();
        assert_eq!(size, 16384);
        // A stored length that disagrees with the parent is refused; nothing changes.
        assert_eq!(
            v.skip_leaf(16384),
            Err(DagError::SizeMismatch {
                block: first,
                expected: 16384,
                actual: 16383
            })
        );
        assert_eq!(v.next_leaf(), Some((first, 16384)));
        v.skip_leaf(16385).unwrap();
        v.skip_leaf(16385).unwrap();
        let (last, size) = v.next_leaf().unwrap();
        assert_eq!((size, by_id[&last].len()), (5, 6));
        v.skip_leaf(6).unwrap();
        assert!(v.is_complete());
        assert_eq!(
            (v.blocks_verified(), v.size()),
            (4, Some(data.len() as u64))
        );
        assert_eq!(v.skip_leaf(6), Err(DagError::Complete));
    }
}
