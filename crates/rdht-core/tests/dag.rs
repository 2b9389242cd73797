//! DAG properties: the streaming builder matches an independent batch model, emits
//! post-order, round-trips through the verifying assembler, and every tampered, missing
//! or mis-sized block is rejected by name (specs/blocks.md §3–§5).
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use rdht_testkit::pattern;
use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;
use proptest::prelude::*;
use rdht_core::block::{LINK_LEN, MAX_LINKS};
use rdht_core::{
    AssembleError, Block, BlockId, BlockKind, BlockRef, DagBuilder, DagError, Limits, Link,
    MAX_LEAF_DATA, assemble,
};

/// The canonical tree built level by level, hashing raw bytes directly: an independent
/// model of specs/blocks.md §2–§3.
fn model_root(data: &[u8]) -> BlockId {
    let leaf_ctx = "rdht 2026-11-24 block id: leaf v1";
    let interior_ctx = "rdht 2026-11-24 block id: interior v1";
    let mut level: Vec<([u8; 32], u64)> = if data.is_empty() {
        vec![(blake3::derive_key(leaf_ctx, &[]), 0)]
    } else {
        data.chunks(MAX_LEAF_DATA)
            .map(|c| (blake3::derive_key(leaf_ctx, c), c.len() as u64))
            .collect()
    };
    while level.len() > 1 {
        level = level
            .chunks(MAX_LINKS)
            .map(|group| {
                let mut b = Vec::new();
                for (id, size) in group {
                    b.extend_from_slice(id);
                    b.extend_from_slice(&size.to_le_bytes());
                }
                (
                    blake3::derive_key(interior_ctx, &b),
                    group.iter().map(|g| g.1).sum(),
                )
            })
            .collect();
    }
    BlockId::from_bytes(level[0].0)
}

/// Builds `data` fed in pieces of the given lengths (cycled); returns root and blocks
/// in emission order.
fn build_chunked(data: &[u8], pieces: &[usize]) -> (Link, Vec<Block>) {
    let mut blocks = Vec::new();
    let mut emit = |b: BlockRef<'_>| -> Result<(), Infallible> {
        blocks.push(b.to_block());
        Ok(())
    };
    let mut builder = DagBuilder::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = pieces[i % pieces.len()].clamp(1, rest.len());
        let Ok(()) = builder.update(&rest[..n], &mut emit);
        rest = &rest[n..];
        i += 1;
    }
    let Ok(root) = builder.finish(&mut emit);
    (root, blocks)
}

type Store = HashMap<BlockId, Bytes>;

fn store_of(blocks: &[Block]) -> Store {
    blocks.iter().map(|b| (b.id(), b.bytes().clone())).collect()
}

fn assemble_all(root: BlockId, size: Option<u64>, store: &mut Store) -> Result<Vec<u8>, DagError> {
    let mut out = Vec::new();
    let r = assemble(root, size, Limits::default(), store, |d| {
        out.extend_from_slice(d);
        Ok::<(), Infallible>(())
    });
    match r {
        Ok(n) => {
            assert_eq!(n, out.len() as u64);
            Ok(out)
        }
        Err(AssembleError::Dag(e)) => Err(e),
        Err(other) => panic!("unexpected {other:?}"),
    }
}

fn check_round_trip(data: &[u8], pieces: &[usize]) {
    let (root, blocks) = build_chunked(data, pieces);
    assert_eq!(root.size, data.len() as u64);
    assert_eq!(root.id, model_root(data), "root differs from the model");
    assert_eq!(
        blocks.last().map(Block::id),
        Some(root.id),
        "root is emitted last"
    );
    // Post-order: every child is emitted before its parent.
    // (Identical leaves repeat in patterned data; the first emission counts.)
    let mut position: HashMap<BlockId, usize> = HashMap::new();
    for (i, b) in blocks.iter().enumerate() {
        position.entry(b.id()).or_insert(i);
    }
    for (i, b) in blocks.iter().enumerate() {
        assert!(b.bytes().len() <= rdht_core::MAX_BLOCK_LEN);
        for l in b.links() {
            assert!(position[&l.id] < i, "child {} emitted after parent", l.id);
        }
    }
    let leaves = blocks
        .iter()
        .filter(|b| b.kind() == BlockKind::Leaf)
        .count();
    assert_eq!(leaves, data.len().div_ceil(MAX_LEAF_DATA).max(1));
    let mut store = store_of(&blocks);
    assert_eq!(
        assemble_all(root.id, Some(root.size), &mut store).unwrap(),
        data
    );
    assert_eq!(assemble_all(root.id, None, &mut store).unwrap(), data);
}

#[test]
fn boundary_sizes_round_trip() {
    for size in [0, 1, 16383, 16384, 16385, 2 * 16384, 3 * 16384 + 7] {
        check_round_trip(&pattern(size), &[size.max(1)]);
        check_round_trip(&pattern(size), &[1000, 16384, 3, 40000]);
    }
}

#[test]
fn multi_level_trees_round_trip() {
    let one_level = MAX_LEAF_DATA * MAX_LINKS;
    for size in [one_level, one_level + 1, 2 * one_level + 5] {
        let data = pattern(size);
        check_round_trip(&data, &[65536]);
        let (root, blocks) = DagBuilder::build(&data);
        let interior = blocks
            .iter()
            .filter(|b| b.kind() == BlockKind::Interior)
            .count();
        let expected_interior = match size {
            s if s == one_level => 1,
            s if s == one_level + 1 => 3, // two at height 1 (409 + 1 leaves), one root
            _ => 4,                       // three at height 1, one root
        };
        assert_eq!(interior, expected_interior, "size {size}");
        assert_eq!(root.size, size as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_size_any_chunking_round_trips(
        size in prop_oneof![Just(0usize), Just(1), Just(16383), Just(16384), Just(16385), 0usize..200_000],
        pieces in prop::collection::vec(1usize..50_000, 1..6),
    ) {
        check_round_trip(&pattern(size), &pieces);
    }

    #[test]
    fn any_flipped_byte_in_any_block_is_caught_by_name(
        size in 1usize..120_000,
        which in any::<prop::sample::Index>(),
        offset in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (root, blocks) = DagBuilder::build(&pattern(size));
        let victim = &blocks[which.index(blocks.len())];
        let mut bad = victim.bytes().to_vec();
        let at = offset.index(bad.len());
        bad[at] ^= 1 << bit;
        let mut store = store_of(&blocks);
        store.insert(victim.id(), bad.into());
        match assemble_all(root.id, None, &mut store) {
            Err(DagError::HashMismatch { block, .. }) | Err(DagError::Malformed { block, .. }) => {
                prop_assert_eq!(block, victim.id());
            }
            other => prop_assert!(false, "flip not caught: {:?}", other.map(|v| v.len())),
        }
    }

    #[test]
    fn verifier_rejects_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..20_000)) {
        let (root, _) = DagBuilder::build(b"something else");
        let mut v = rdht_core::DagVerifier::new(root.id, None, Limits::default());
        prop_assert!(v.push(bytes.into()).is_err());
        prop_assert_eq!(v.next_expected(), Some(root.id));
    }
}

#[test]
fn missing_block_is_named() {
    let (root, blocks) = DagBuilder::build(&pattern(50_000));
    let mut store = store_of(&blocks);
    let gone = blocks[1].id();
    store.remove(&gone);
    assert_eq!(
        assemble_all(root.id, None, &mut store),
        Err(DagError::Missing { block: gone })
    );
}

fn leaf(data: &[u8]) -> Block {
    Block::leaf(data).unwrap()
}

fn interior(links: &[(BlockId, u64)]) -> Block {
    let links: Vec<Link> = links.iter().map(|&(id, size)| Link { id, size }).collect();
    Block::interior(&links).unwrap()
}

#[test]
fn leaf_shorter_or_longer_than_its_parent_says_is_named() {
    let full = leaf(&[1; MAX_LEAF_DATA]);
    let liar = leaf(&[2; 6]);
    // The parent lists a canonical shape for 16384 + 5 bytes, but the last leaf has 6.
    let parent = interior(&[(full.id(), 16384), (liar.id(), 5)]);
    let mut store = store_of(&[full, liar.clone(), parent.clone()]);
    assert_eq!(
        assemble_all(parent.id(), None, &mut store),
        Err(DagError::SizeMismatch {
            block: liar.id(),
            expected: 5,
            actual: 6
        })
    );
    // The caller's expected size disagrees with the root.
    assert_eq!(
        assemble_all(parent.id(), Some(99), &mut store),
        Err(DagError::SizeMismatch {
            block: parent.id(),
            expected: 99,
            actual: 16389
        })
    );
}

#[test]
fn non_canonical_shapes_are_rejected() {
    let a = leaf(&[1; 100]);
    let b = leaf(&[2; 100]);
    // Two partial leaves: a canonical parent of 200 bytes would not exist (one leaf).
    let p = interior(&[(a.id(), 100), (b.id(), 100)]);
    let mut store = store_of(&[a.clone(), b, p.clone()]);
    assert!(matches!(
        assemble_all(p.id(), None, &mut store),
        Err(DagError::BadShape { block, .. }) if block == p.id()
    ));
    // A non-last child that is not full.
    let full = leaf(&[1; MAX_LEAF_DATA]);
    let p2 = interior(&[(a.id(), 100), (full.id(), 16384)]);
    store.extend(store_of(&[full.clone(), p2.clone()]));
    assert!(matches!(
        assemble_all(p2.id(), None, &mut store),
        Err(DagError::BadShape { block, .. }) if block == p2.id()
    ));
    // An interior block where a leaf belongs.
    let inner = interior(&[(a.id(), 100)]);
    let p3 = interior(&[(full.id(), 16384), (inner.id(), 100)]);
    store.extend(store_of(&[inner.clone(), p3.clone()]));
    assert_eq!(
        assemble_all(p3.id(), None, &mut store),
        Err(DagError::WrongKind {
            block: inner.id(),
            expected: BlockKind::Leaf,
            actual: BlockKind::Interior
        })
    );
    // A single interior root over data that fits a leaf.
    let p4 = interior(&[(a.id(), 100)]);
    store.extend(store_of(std::slice::from_ref(&p4)));
    assert!(matches!(
        assemble_all(p4.id(), None, &mut store),
        Err(DagError::BadShape { block, .. }) if block == p4.id()
    ));
}

#[test]
fn size_and_depth_limits() {
    let (root, blocks) = DagBuilder::build(&pattern(3 * MAX_LEAF_DATA));
    let mut store = store_of(&blocks);
    let mut sink = |_: &[u8]| Ok::<(), Infallible>(());
    let tight = Limits {
        max_size: 40_000,
        max_depth: 4,
    };
    assert!(matches!(
        assemble(root.id, None, tight, &mut store, &mut sink),
        Err(AssembleError::Dag(DagError::TooLarge { block, size: 49152, max: 40_000 })) if block == root.id
    ));
    let shallow = Limits {
        max_size: 1 << 40,
        max_depth: 0,
    };
    assert!(matches!(
        assemble(root.id, None, shallow, &mut store, &mut sink),
        Err(AssembleError::Dag(DagError::TooDeep { block, depth: 1, max: 0 })) if block == root.id
    ));
    // A forged root whose children's sizes overflow u64.
    let x = leaf(b"x");
    let forged = interior(&[(x.id(), u64::MAX / 2), (x.id(), u64::MAX / 2), (x.id(), 9)]);
    store.insert(forged.id(), forged.bytes().clone());
    assert!(matches!(
        assemble(forged.id(), None, Limits::default(), &mut store, &mut sink),
        Err(AssembleError::Dag(DagError::TooLarge {
            size: u64::MAX,
            ..
        }))
    ));
    assert_eq!(LINK_LEN, 40);
}
