//! Checks this crate against the annotated vectors in `specs/vectors/`, so the specs and
//! the code cannot drift apart. Vectors are produced once by `examples/gen_vectors.rs`
//! and then only read here.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use rdht_testkit::{pattern, unhex};
use std::collections::HashMap;
use std::path::Path;

use rdht_core::block::{INTERIOR_CONTEXT, LEAF_CONTEXT};
use rdht_core::record::signing_message;
use rdht_core::{Block, BlockId, BuildRecord, DagBuilder, Encoded, Manifest, SigningKey};

fn load(name: &str) -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../specs/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    text.parse().unwrap()
}

fn str_of<'a>(t: &'a toml::Table, k: &str) -> &'a str {
    t[k].as_str()
        .unwrap_or_else(|| panic!("{k} is not a string"))
}

#[test]
fn block_and_dag_vectors() {
    let v = load("blocks.toml");
    assert_eq!(str_of(&v, "leaf_context"), LEAF_CONTEXT);
    assert_eq!(str_of(&v, "interior_context"), INTERIOR_CONTEXT);
    let files = v["file"].as_array().unwrap();
    assert_eq!(files.len(), 7);
    for f in files {
        let f = f.as_table().unwrap();
        let name = str_of(f, "name");
        let size = f["size"].as_integer().unwrap() as usize;
        let (root, blocks) = DagBuilder::build(&pattern(size));
        assert_eq!(root.id.to_string(), str_of(f, "root"), "{name}: root");
        assert_eq!(root.size, size as u64);
        assert_eq!(
            blocks.len() as i64,
            f["blocks"].as_integer().unwrap(),
            "{name}: blocks"
        );
        assert_eq!(
            rdht_core::dag::height_for(size as u64) as i64,
            f["height"].as_integer().unwrap(),
            "{name}: height"
        );
        if let Some(annotated) = f.get("root_block") {
            let bytes = unhex(annotated.as_str().unwrap());
            assert_eq!(
                &blocks.last().unwrap().bytes()[..],
                &bytes[..],
                "{name}: root block"
            );
        }
    }
}

#[test]
fn lz4_vectors() {
    let v = load("blocks.toml");
    let cases = v["lz4"].as_array().unwrap();
    assert_eq!(cases.len(), 1);
    for c in cases {
        let c = c.as_table().unwrap();
        let name = str_of(c, "name");
        let raw_len = c["raw_len"].as_integer().unwrap() as u32;
        let data = bytes::Bytes::from(unhex(str_of(c, "data")));
        let id: BlockId = str_of(c, "id").parse().unwrap();
        let mut raw = vec![0u8];
        for _ in 0..40 {
            raw.extend_from_slice(b"rdht ");
        }
        let enc = Encoded::Lz4 {
            data: data.clone(),
            raw_len,
        };
        assert_eq!(&enc.decode().unwrap()[..], &raw[..], "{name}");
        let block = Block::from_encoded(id, enc).unwrap();
        assert_eq!(block.lz4(), Some(&data), "{name}");
        for wrong in [raw_len - 1, raw_len + 1] {
            let enc = Encoded::Lz4 {
                data: data.clone(),
                raw_len: wrong,
            };
            assert!(enc.decode().is_err(), "{name}: raw_len {wrong}");
        }
    }
}

#[test]
fn manifest_vector() {
    let v = load("manifest.toml");
    let t = v["manifest"].as_table().unwrap();
    let enc = unhex(str_of(t, "encoding"));
    let m = Manifest::decode(&enc).unwrap();
    assert_eq!(m.encode(), enc);
    let (root, _) = m.to_dag();
    assert_eq!(root.id.to_string(), str_of(t, "artifact_root"));
    let contents: HashMap<&str, Vec<u8>> = [
        ("bin/hi", b"#!/bin/sh\necho hi\n".to_vec()),
        ("lib/libserde-90ea9c81a65cb426.rlib", pattern(20_000)),
    ]
    .into();
    assert_eq!(m.files().len(), 2);
    for f in m.files() {
        let (file_root, _) = DagBuilder::build(&contents[f.path.as_str()]);
        assert_eq!(
            (f.root, f.size),
            (file_root.id, file_root.size),
            "{}",
            f.path
        );
        assert_eq!(f.executable, f.path == "bin/hi");
    }
    assert_eq!(m.labels().crate_name, "serde");
}

/// Decodes, checks the signing message and re-signs one record vector.
fn check_record(t: &toml::value::Table) -> BuildRecord {
    let seed: [u8; 32] = unhex(str_of(t, "signing_seed")).try_into().unwrap();
    let signer = SigningKey::from_bytes(&seed);
    let enc = unhex(str_of(t, "encoding"));
    let r = BuildRecord::decode(&enc).unwrap();
    assert_eq!(r.builder().as_bytes(), &signer.verifying_key().to_bytes());
    assert_eq!(
        signing_message(r.body()),
        unhex(str_of(t, "signing_message"))
    );
    assert_eq!(r.body().build_ms, 1_234);
    assert_eq!(r.encode(), enc, "re-encodes in its own version's layout");
    let again = BuildRecord::sign_body(r.body().clone(), &signer).unwrap();
    assert_eq!(again.encode(), enc, "ed25519 signing is deterministic");
    let manifest = load("manifest.toml");
    let artifact: BlockId = str_of(manifest["manifest"].as_table().unwrap(), "artifact_root")
        .parse()
        .unwrap();
    assert_eq!(r.root(), artifact);
    r
}

#[test]
fn record_vector() {
    let v = load("records.toml");
    let v1 = check_record(v["record"].as_table().unwrap());
    assert_eq!((v1.body().version, v1.needs()), (1, None));
    let v2 = check_record(v["record_v2"].as_table().unwrap());
    assert_eq!(v2.body().version, 2);
    let needs: Vec<(&str, Vec<&str>)> = v2
        .needs()
        .unwrap()
        .iter()
        .map(|(l, vs)| (l.as_str(), vs.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        needs,
        vec![
            ("libc.so.6", vec!["GLIBC_2.2.5", "GLIBC_2.34"]),
            ("libgcc_s.so.1", vec!["GCC_3.0"])
        ]
    );
    // Each version's bytes are signed under its own domain: a v2 body relabelled v1
    // (or the reverse) does not verify.
    let mut enc = unhex(str_of(v["record_v2"].as_table().unwrap(), "encoding"));
    enc[0] = 1;
    assert!(BuildRecord::decode(&enc).is_err());
}
