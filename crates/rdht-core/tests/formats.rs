//! Manifest and build-record properties: canonical round trips (directly and through a
//! DAG), tamper and wrong-key rejection, and decoders that return errors — never panic —
//! on arbitrary bytes (specs/blocks.md §6, specs/records.md).
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;
use rdht_core::manifest::FromDagError;
use rdht_core::{
    Block, BlockId, BuildKey, BuildRecord, DecodeError, FileEntry, Labels, Manifest, ManifestError,
    RecordError, SigningKey,
};

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9_.+-]{0,24}"
}

fn labels() -> impl Strategy<Value = Labels> {
    (
        label(),
        label(),
        label(),
        label(),
        prop::collection::vec(label(), 0..4),
    )
        .prop_map(
            |(crate_name, crate_version, target, rustc, crate_types)| Labels {
                crate_name,
                crate_version,
                target,
                rustc,
                crate_types,
            },
        )
}

fn files() -> impl Strategy<Value = Vec<FileEntry>> {
    prop::collection::btree_map(
        "[a-z]{1,6}(/[a-z0-9.]{1,6}){0,2}\\.(rlib|rmeta|d|so)",
        (any::<bool>(), any::<u64>(), any::<[u8; 32]>()),
        0..20,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(path, (executable, size, root))| FileEntry {
                path,
                executable,
                size,
                root: BlockId::from_bytes(root),
            })
            .collect()
    })
}

fn store(blocks: Vec<Block>) -> HashMap<BlockId, Bytes> {
    blocks
        .into_iter()
        .map(|b| (b.id(), b.into_bytes()))
        .collect()
}

proptest! {
    #[test]
    fn manifests_round_trip(labels in labels(), files in files()) {
        // Random paths may collide as file and directory; those must be refused.
        let Ok(m) = Manifest::new(labels, files) else { return Ok(()) };
        let enc = m.encode();
        prop_assert_eq!(&Manifest::decode(&enc).unwrap(), &m);
        let (root, blocks) = m.to_dag();
        prop_assert_eq!(root.size, enc.len() as u64);
        let mut s = store(blocks);
        prop_assert_eq!(Manifest::from_dag(root.id, &mut s).unwrap(), m);
    }

    #[test]
    fn manifest_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Manifest::decode(&bytes);
    }

    #[test]
    fn record_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        // Random bytes cannot carry a valid signature.
        prop_assert!(BuildRecord::decode(&bytes).is_err());
    }

    #[test]
    fn block_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..17_000)) {
        let _ = Block::from_bytes(bytes.into());
    }

    #[test]
    fn records_round_trip_and_any_flipped_byte_fails(
        labels in labels(),
        key in any::<[u8; 32]>(),
        seed in any::<[u8; 32]>(),
        size in any::<u64>(),
        time in any::<u64>(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let signer = SigningKey::from_bytes(&seed);
        let r = BuildRecord::sign(
            BuildKey::from_bytes(key), BlockId::from(blake3::hash(&key)), size, time, labels, &signer,
        ).unwrap();
        let mut enc = r.encode();
        prop_assert_eq!(&BuildRecord::decode(&enc).unwrap(), &r);
        let i = at.index(enc.len());
        enc[i] ^= 1 << bit;
        prop_assert!(BuildRecord::decode(&enc).is_err(), "flip at byte {} accepted", i);
    }
}

#[test]
fn a_record_under_another_builders_name_is_rejected() {
    let honest = SigningKey::from_bytes(&[1; 32]);
    let forger = SigningKey::from_bytes(&[2; 32]);
    let r = BuildRecord::sign(
        BuildKey::from_bytes([3; 32]),
        BlockId::from(blake3::hash(b"r")),
        1,
        2,
        Labels::default(),
        &forger,
    )
    .unwrap();
    // Splice the honest builder's public key over the forger's in the encoding.
    let enc = r.encode();
    let forger_pk = forger.verifying_key().to_bytes();
    let at = enc
        .windows(32)
        .position(|w| w == forger_pk)
        .expect("builder key in encoding");
    let mut spliced = enc.clone();
    spliced[at..at + 32].copy_from_slice(&honest.verifying_key().to_bytes());
    assert!(matches!(
        BuildRecord::decode(&spliced),
        Err(RecordError::BadSignature { .. })
    ));
}

#[test]
fn manifest_errors_name_the_problem() {
    let e = FileEntry {
        path: "../../etc/passwd".into(),
        executable: false,
        size: 0,
        root: BlockId::from(blake3::hash(b"")),
    };
    assert_eq!(
        Manifest::new(Labels::default(), vec![e])
            .unwrap_err()
            .to_string(),
        "invalid path \"../../etc/passwd\": has a '..' component"
    );
    assert!(matches!(
        Manifest::decode(&[1, 0]),
        Err(ManifestError::Decode(DecodeError::Incomplete {
            what: "manifest"
        }))
    ));
    let huge = vec![0u8; rdht_core::manifest::MAX_MANIFEST_LEN + 1];
    assert!(matches!(
        Manifest::decode(&huge),
        Err(ManifestError::Decode(DecodeError::TooLarge { .. }))
    ));
    let mut empty = HashMap::new();
    let missing = BlockId::from(blake3::hash(b"nothing"));
    assert!(matches!(
        Manifest::from_dag(missing, &mut empty),
        Err(FromDagError::Assemble(_))
    ));
}
