//! Targets over `rdht-core`'s formats: blocks and their LZ4 form, manifests, build
//! records, plan files, the canonical postcard codec and the DAG verifier.
//!
//! Each function takes any bytes, runs the decoder, and on success checks the round trip
//! and what the decoder promises (specs/blocks.md, specs/records.md). Does not own the
//! formats or their errors. Read [`dag`] first: it is the one state machine here.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::LazyLock;

use bytes::Bytes;
use rdht_core::block::{LINK_LEN, block_id};
use rdht_core::buildkey::KeyInputs;
use rdht_core::fuzzing::{decode, encode};
use rdht_core::manifest::FileEntry;
use rdht_core::plan::{self, PlanInputs};
use rdht_core::record::{MAX_RECORD_LEN, RecordBody, signing_message};
use rdht_core::{
    Block, BlockId, BlockKind, BuildKey, BuildRecord, DagBuilder, DagError, DagVerifier,
    DecodeError, Encoded, Labels, Limits, Manifest, Needs, RecordError, SigningKey,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A block's bytes, and the same bytes as LZ4 data after a 2-byte big-endian raw length.
pub fn block(data: &[u8]) {
    if let Ok(b) = Block::from_bytes(Bytes::copy_from_slice(data)) {
        assert_eq!(b.bytes().as_ref(), data);
        assert_eq!(b.id(), block_id(b.kind(), b.payload()));
        let links: Vec<_> = b.links().collect();
        let rebuilt = match b.kind() {
            BlockKind::Leaf => {
                assert!(links.is_empty());
                Block::leaf(b.payload())
            }
            BlockKind::Interior => {
                assert_eq!(links.len() * LINK_LEN, b.payload().len());
                Block::interior(&links)
            }
        };
        assert_eq!(rebuilt.as_ref(), Ok(&b));
        assert_eq!(Block::verified(b.id(), b.bytes().clone()).as_ref(), Ok(&b));
        // The LZ4 round trip: compressed, then decoded as a received block is.
        let packed = b.clone().compressed();
        if let Some(lz4) = packed.lz4() {
            assert_eq!(b.kind(), BlockKind::Leaf);
            assert!(lz4.len() < data.len());
        }
        let back = Block::from_encoded(b.id(), packed.encoded()).expect("own encoding decodes");
        assert_eq!(back, b);
        assert_eq!(back.lz4(), packed.lz4());
    }
    if let [hi, lo, rest @ ..] = data {
        let encoded = Encoded::Lz4 {
            data: Bytes::copy_from_slice(rest),
            raw_len: u16::from_be_bytes([*hi, *lo]).into(),
        };
        if let Ok(raw) = encoded.decode() {
            assert_eq!(raw.len(), usize::from(u16::from_be_bytes([*hi, *lo])));
            let b = Block::from_bytes(raw).expect("decoded LZ4 data is a valid block");
            assert_eq!(b.kind(), BlockKind::Leaf);
            let kept = Block::from_encoded(b.id(), encoded.clone()).expect("it verifies");
            assert_eq!(kept, b);
            assert_eq!(kept.encoded(), encoded);
        }
    }
}

/// A manifest's canonical encoding.
pub fn manifest(data: &[u8]) {
    let Ok(m) = Manifest::decode(data) else {
        return;
    };
    assert_eq!(m.encode(), data);
    assert_eq!(
        Manifest::new(m.labels().clone(), m.files().to_vec()).as_ref(),
        Ok(&m)
    );
    let _ = m.total_size();
    let (root, blocks) = m.to_dag();
    let mut store: HashMap<BlockId, Bytes> = blocks
        .into_iter()
        .map(|b| (b.id(), b.into_bytes()))
        .collect();
    let back = Manifest::from_dag(root.id, &mut store).expect("own DAG reads back");
    assert_eq!(back, m);
}

/// The key records are looked up under, unless the input's own key is used.
const LOOKED_UP: BuildKey = BuildKey::from_bytes([0x5a; 32]);

/// The builder that signs bodies decoded from the input.
static SIGNER: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_bytes(&[7; 32]));

/// A build record as received (`BuildRecord::decode_for`); the same bytes as a body,
/// signed here, so that the paths after the signature check are reached too.
pub fn record(data: &[u8]) {
    let _ = BuildRecord::decode_for(data, LOOKED_UP);
    if let Ok(r) = BuildRecord::decode(data) {
        assert_eq!(r.encode(), data);
        assert_eq!(BuildRecord::decode_for(data, r.key()).as_ref(), Ok(&r));
        let mut other = *r.key().as_bytes();
        other[0] ^= 1;
        let other = BuildKey::from_bytes(other);
        assert_eq!(
            BuildRecord::decode_for(data, other),
            Err(RecordError::WrongKey {
                expected: other,
                actual: r.key(),
                builder: r.builder(),
            })
        );
        // What it accepted is signed by whom it claims: checked again with ed25519.
        let vk = ed25519_dalek::VerifyingKey::from_bytes(r.builder().as_bytes())
            .expect("an accepted builder key is a valid point");
        vk.verify_strict(
            &signing_message(r.body()),
            &ed25519_dalek::Signature::from_bytes(r.signature()),
        )
        .expect("an accepted signature verifies");
        assert_eq!(r.needs().is_none(), r.body().version == 1);
    }
    let Ok(body) = decode::<RecordBody>("record body", data, MAX_RECORD_LEN) else {
        return;
    };
    let Ok(r) = BuildRecord::sign_body(body.clone(), &SIGNER) else {
        return;
    };
    let enc = r.encode();
    let expected = if enc.len() > MAX_RECORD_LEN {
        Err(RecordError::Decode(DecodeError::TooLarge {
            what: "build record",
            len: enc.len(),
            max: MAX_RECORD_LEN,
        }))
    } else if body.version != 1 && body.version != 2 {
        Err(RecordError::UnsupportedVersion {
            version: body.version,
        })
    } else {
        Ok(r)
    };
    assert_eq!(BuildRecord::decode_for(&enc, body.key), expected);
}

/// A plan file.
pub fn plan(data: &[u8]) {
    let Ok(keys) = plan::decode(data) else {
        return;
    };
    let mut canonical = keys.clone();
    canonical.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    canonical.dedup();
    let text = plan::encode(&keys);
    assert_eq!(plan::decode(text.as_bytes()).as_ref(), Ok(&canonical));
    // A sorted list without duplicates, newline-terminated, is the one encoding.
    if keys == canonical && data.ends_with(b"\n") {
        assert_eq!(text.as_bytes(), data);
    }
}

/// A build-script run's declaration (`runkey::Declaration::decode`): what decodes
/// encodes to the same bytes, and is sorted and unique.
pub fn declaration(data: &[u8]) {
    let Ok(d) = rdht_core::runkey::Declaration::decode(data) else {
        return;
    };
    assert_eq!(d.encode(), data);
    for list in [&d.env, &d.paths] {
        assert!(list.windows(2).all(|w| w[0] < w[1]));
    }
}

/// The canonical postcard decoder, over the first byte's choice of type.
pub fn codec(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 7 {
        0 => canonical::<Labels>(bytes),
        1 => canonical::<FileEntry>(bytes),
        2 => canonical::<RecordBody>(bytes),
        3 => canonical::<Needs>(bytes),
        4 => canonical::<KeyInputs>(bytes),
        5 => canonical::<PlanInputs>(bytes),
        _ => canonical::<(u16, i64, String, Vec<u8>, Option<bool>)>(bytes),
    }
}

/// Limit of the codec target: larger than any input libFuzzer makes.
const CODEC_MAX: usize = 1 << 20;

fn canonical<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
    const WHAT: &str = "fuzzed value";
    let Ok(v) = decode::<T>(WHAT, bytes, CODEC_MAX) else {
        return;
    };
    assert_eq!(encode(&v), bytes);
    assert_eq!(decode::<T>(WHAT, &encode(&v), CODEC_MAX).as_ref(), Ok(&v));
    // A proper prefix of a value is incomplete, never invalid; more is trailing bytes.
    for cut in [bytes.len().saturating_sub(1), bytes.len() / 2] {
        if cut < bytes.len() {
            assert_eq!(
                decode::<T>(WHAT, &bytes[..cut], CODEC_MAX),
                Err(DecodeError::Incomplete { what: WHAT })
            );
        }
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(
        decode::<T>(WHAT, &longer, CODEC_MAX),
        Err(DecodeError::TrailingBytes {
            what: WHAT,
            extra: 1
        })
    );
}

/// Reads the dag target's input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head.to_vec()
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.byte().unwrap_or(0)) << 8 | u16::from(self.byte().unwrap_or(0))
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| acc << 8 | u64::from(self.byte().unwrap_or(0)))
    }
}

/// One step offered to the verifier.
enum Step {
    /// `push` of these bytes.
    Raw(Vec<u8>),
    /// `push_encoded` of these bytes compressed (raw when they do not compress).
    Packed(Vec<u8>),
    /// `push_encoded` of arbitrary LZ4 data with this raw length.
    Lz4(Vec<u8>, u32),
    /// `skip_leaf` with this stored length.
    Skip(u64),
}

/// Most interior levels the fix-up follows (inputs are far smaller than a deeper tree).
const MAX_FIXUP_DEPTH: u32 = 8;

/// Rewrites the link ids of the raw blocks from `i` on, read as one subtree in
/// pre-order, to the ids of the blocks that follow; returns the subtree root's id and
/// the index after it. Link sizes are left as the input gave them.
fn fix_up(steps: &mut [Step], i: usize, depth: u32) -> (Option<BlockId>, usize) {
    let Some(Step::Raw(bytes) | Step::Packed(bytes)) = steps.get(i) else {
        return (None, i + 1);
    };
    let Ok(b) = Block::from_bytes(Bytes::copy_from_slice(bytes)) else {
        return (None, i + 1);
    };
    if b.kind() == BlockKind::Leaf || depth == MAX_FIXUP_DEPTH {
        return (Some(b.id()), i + 1);
    }
    let mut next = i + 1;
    let mut ids = Vec::new();
    for _ in 0..b.links().len() {
        if next >= steps.len() {
            break;
        }
        let (id, after) = fix_up(steps, next, depth + 1);
        ids.push(id);
        next = after;
    }
    let (Step::Raw(bytes) | Step::Packed(bytes)) = &mut steps[i] else {
        unreachable!("steps[i] was a block above");
    };
    for (k, id) in ids.into_iter().enumerate() {
        if let Some(id) = id {
            bytes[1 + k * LINK_LEN..1 + k * LINK_LEN + 32].copy_from_slice(id.as_bytes());
        }
    }
    let id = Block::from_bytes(Bytes::copy_from_slice(bytes))
        .map(|b| b.id())
        .ok();
    (id, next)
}

/// The DAG verifier fed a sequence of blocks. Input: a flags byte (bit 0: rewrite link
/// ids so that they name the blocks that follow; bit 1: an expected size follows as u64
/// big-endian; bit 2: small limits follow, max size u16 and max depth u8), then steps,
/// each an op byte and a u16 big-endian length: op 0 raw bytes, 1 bytes compressed, 2
/// arbitrary LZ4 data (a u16 raw length first), 3 `skip_leaf(length)`, 4 a leaf of
/// `length` copies of the next byte. The root is the first block's id.
///
/// Checks: a rejected block leaves the verifier as it was; an accepted block is the one
/// expected and hashes to its id; a complete DAG of pushed leaves is the canonical DAG
/// of the data it holds (the same root) and that data has the size the root claimed.
pub fn dag(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte().unwrap_or(0);
    let expected_size = (flags & 2 != 0).then(|| input.u64());
    let limits = if flags & 4 != 0 {
        Limits {
            max_size: input.u16().into(),
            max_depth: input.byte().unwrap_or(0).into(),
        }
    } else {
        Limits::default()
    };
    let mut steps = Vec::new();
    while let Some(op) = input.byte() {
        let len = usize::from(input.u16());
        steps.push(match op % 5 {
            0 => Step::Raw(input.take(len)),
            1 => Step::Packed(input.take(len)),
            2 => {
                let raw_len = u32::from(input.u16());
                Step::Lz4(input.take(len), raw_len)
            }
            3 => Step::Skip(len as u64),
            _ => {
                let fill = input.byte().unwrap_or(0);
                let mut leaf = vec![fill; len.min(rdht_core::MAX_LEAF_DATA) + 1];
                leaf[0] = rdht_core::block::LEAF_TAG;
                Step::Raw(leaf)
            }
        });
    }
    let root = if flags & 1 != 0 {
        fix_up(&mut steps, 0, 0).0
    } else {
        match steps.first() {
            Some(Step::Raw(b) | Step::Packed(b)) => Block::from_bytes(Bytes::copy_from_slice(b))
                .map(|b| b.id())
                .ok(),
            _ => None,
        }
    };
    let root = root.unwrap_or(BlockId::from_bytes([0; 32]));
    let mut v = DagVerifier::new(root, expected_size, limits);
    let mut file = Vec::new();
    let mut skipped = false;
    for step in steps {
        let before = format!("{v:?}");
        let expected = v.next_expected();
        let verified = v.blocks_verified();
        let result = match step {
            Step::Raw(bytes) => v.push(bytes.into()),
            Step::Packed(bytes) => {
                let encoded = match Block::from_bytes(bytes.clone().into()) {
                    Ok(b) => b.compressed().encoded(),
                    Err(_) => Encoded::Raw(bytes.into()),
                };
                v.push_encoded(encoded)
            }
            Step::Lz4(data, raw_len) => v.push_encoded(Encoded::Lz4 {
                data: data.into(),
                raw_len,
            }),
            Step::Skip(stored_len) => {
                let leaf = v.next_leaf();
                match v.skip_leaf(stored_len) {
                    Ok(()) => {
                        let (id, size) = leaf.expect("only a known leaf is skipped");
                        assert_eq!(Some(id), expected);
                        assert_eq!(stored_len, size + 1);
                        assert_eq!(v.blocks_verified(), verified + 1);
                        skipped = true;
                        continue;
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(b) => {
                // What it accepted is what it expected, and hashes to that id.
                assert_eq!(Some(b.id()), expected);
                assert_eq!(block_id(b.kind(), b.payload()), b.id());
                assert_eq!(v.blocks_verified(), verified + 1);
                if b.kind() == BlockKind::Leaf {
                    file.extend_from_slice(b.payload());
                }
            }
            Err(e) => {
                assert_eq!(format!("{v:?}"), before, "rejected ({e}) but changed");
                if expected.is_none() {
                    assert_eq!(e, DagError::Complete);
                }
            }
        }
    }
    if v.is_complete() {
        assert_eq!(v.next_expected(), None);
        let size = v.size().expect("a complete DAG has a size");
        if let Some(want) = expected_size {
            assert_eq!(size, want);
        }
        assert!(size <= limits.max_size);
        if !skipped {
            assert_eq!(file.len() as u64, size);
            assert_eq!(DagBuilder::build(&file).0.id, root);
        }
    }
}
