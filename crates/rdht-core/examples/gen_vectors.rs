//! Writes the annotated test vectors in `specs/vectors/` from this crate's encoders.
//!
//! Run `cargo run -p rdht-core --example gen_vectors` only when a format change is
//! intended (and the format version bumped): the committed vectors pin the formats, and
//! `tests/vectors.rs` fails when the code drifts from them. Every annotated field is
//! laid out here by hand and checked against the library's own encoding, so the
//! annotations cannot lie.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used)] // A developer tool: any failure should stop it loudly.

use rdht_testkit::pattern;
use std::fmt::Write as _;

use rdht_core::block::{INTERIOR_CONTEXT, LEAF_CONTEXT};
use rdht_core::record::{RECORD_DOMAIN, RECORD_DOMAIN_1, signing_message};
use rdht_core::{
    Block, BlockKind, BuildKey, BuildRecord, BuilderKey, DagBuilder, FileEntry, Labels, Manifest,
    Needs, RecordBody, SigningKey,
};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Annotated bytes: one `hex  # note` line per field.
#[derive(Default)]
struct Annotated {
    bytes: Vec<u8>,
    text: String,
}

impl Annotated {
    fn raw(&mut self, b: &[u8], note: &str) {
        self.bytes.extend_from_slice(b);
        let h = if b.is_empty() { "".to_string() } else { hex(b) };
        writeln!(self.text, "{h:<20} # {note}").unwrap();
    }
    fn varint(&mut self, v: u64, note: &str) {
        self.raw(&varint(v), &format!("{note} = {v} (varint)"));
    }
    fn string(&mut self, s: &str, note: &str) {
        self.varint(s.len() as u64, &format!("{note}: length"));
        self.raw(s.as_bytes(), &format!("{note} = {s:?} (UTF-8)"));
    }
    fn labels(&mut self, l: &Labels) {
        self.string(&l.crate_name, "labels.crate_name");
        self.string(&l.crate_version, "labels.crate_version");
        self.string(&l.target, "labels.target");
        self.string(&l.rustc, "labels.rustc");
        self.varint(l.crate_types.len() as u64, "labels.crate_types: count");
        for (i, t) in l.crate_types.iter().enumerate() {
            self.string(t, &format!("labels.crate_types[{i}]"));
        }
    }
    fn block(b: &Block) -> Annotated {
        let mut a = Annotated::default();
        match b.kind() {
            BlockKind::Leaf => {
                a.raw(&[0], "tag: leaf");
                a.raw(
                    b.payload(),
                    &format!("file data, {} bytes", b.payload().len()),
                );
            }
            BlockKind::Interior => {
                a.raw(&[1], "tag: interior");
                for (i, l) in b.links().enumerate() {
                    a.raw(l.id.as_bytes(), &format!("link {i}: child id"));
                    a.raw(
                        &l.size.to_le_bytes(),
                        &format!("link {i}: size = {} (u64 LE)", l.size),
                    );
                }
            }
        }
        assert_eq!(&a.bytes[..], &b.bytes()[..], "block annotation drifted");
        a
    }
}

fn labels() -> Labels {
    Labels {
        crate_name: "serde".into(),
        crate_version: "1.0.219".into(),
        target: "x86_64-unknown-linux-gnu".into(),
        rustc: "rustc 1.95.0".into(),
        crate_types: vec!["lib".into()],
    }
}

fn blocks_toml() -> String {
    let mut out = String::from(
        "# Block and DAG vectors (specs/blocks.md). Checked by crates/rdht-core/tests/vectors.rs.\n\
         # A file of `size` bytes has byte i = i mod 251. `blocks` counts blocks as the\n\
         # builder emits them (repeated identical leaves count each time). Annotated hex:\n\
         # whitespace and everything after '#' on a line are not part of the bytes.\n\n",
    );
    writeln!(out, "leaf_context = {LEAF_CONTEXT:?}").unwrap();
    writeln!(out, "interior_context = {INTERIOR_CONTEXT:?}\n").unwrap();
    for (name, size, annotate) in [
        ("empty file: one empty leaf", 0usize, true),
        ("one byte", 1, true),
        ("one byte short of a full leaf", 16383, false),
        ("exactly one full leaf", 16384, false),
        (
            "one byte over a leaf: interior root over two leaves",
            16385,
            true,
        ),
        (
            "409 full leaves: one full interior root",
            16384 * 409,
            false,
        ),
        ("one byte over 409 leaves: height 2", 16384 * 409 + 1, false),
    ] {
        let data = pattern(size);
        let (root, blocks) = DagBuilder::build(&data);
        let height = rdht_core::dag::height_for(size as u64);
        writeln!(
            out,
            "[[file]]\nname = {name:?}\nsize = {size}\nheight = {height}"
        )
        .unwrap();
        writeln!(out, "blocks = {}\nroot = \"{}\"", blocks.len(), root.id).unwrap();
        if annotate {
            let a = Annotated::block(blocks.last().unwrap());
            writeln!(out, "root_block = '''\n{}'''", a.text).unwrap();
        }
        out.push('\n');
    }
    out
}

fn manifest() -> Manifest {
    let rlib = DagBuilder::build(&pattern(20_000)).0;
    let bin = DagBuilder::build(b"#!/bin/sh\necho hi\n").0;
    Manifest::new(
        labels(),
        vec![
            FileEntry {
                path: "lib/libserde-90ea9c81a65cb426.rlib".into(),
                executable: false,
                size: rlib.size,
                root: rlib.id,
            },
            FileEntry {
                path: "bin/hi".into(),
                executable: true,
                size: bin.size,
                root: bin.id,
            },
        ],
    )
    .unwrap()
}

fn manifest_toml() -> String {
    let m = manifest();
    let mut a = Annotated::default();
    a.varint(1, "version");
    a.labels(m.labels());
    a.varint(m.files().len() as u64, "files: count");
    for (i, f) in m.files().iter().enumerate() {
        a.string(&f.path, &format!("files[{i}].path"));
        a.raw(
            &[f.executable as u8],
            &format!("files[{i}].executable = {}", f.executable),
        );
        a.varint(f.size, &format!("files[{i}].size"));
        a.raw(f.root.as_bytes(), &format!("files[{i}].root"));
    }
    assert_eq!(a.bytes, m.encode(), "manifest annotation drifted");
    let (root, _) = m.to_dag();
    let mut out = String::from(
        "# Manifest vector (specs/blocks.md §6). Checked by crates/rdht-core/tests/vectors.rs.\n\
         # Files: bin/hi holds \"#!/bin/sh\\necho hi\\n\" (executable); the rlib holds 20000\n\
         # bytes with byte i = i mod 251. Entries are sorted by path.\n\n[manifest]\n",
    );
    writeln!(out, "artifact_root = \"{}\"", root.id).unwrap();
    writeln!(out, "encoding = '''\n{}'''", a.text).unwrap();
    out
}

/// One record vector: `version` 1 (no needs) or 2 (with `needs`).
fn record_vector(version: u8, needs: &Needs) -> String {
    let seed = [7u8; 32];
    let signer = SigningKey::from_bytes(&seed);
    let key = BuildKey::from_bytes(*blake3::hash(b"example build key").as_bytes());
    let (artifact, _) = manifest().to_dag();
    let r = BuildRecord::sign_body(
        RecordBody {
            version,
            key,
            root: artifact.id,
            size: 20_018,
            time: 1_764_000_000,
            build_ms: 1_234,
            labels: labels(),
            builder: BuilderKey::from_bytes([0; 32]),
            needs: needs.clone(),
        },
        &signer,
    )
    .unwrap();
    let b = r.body();
    let mut body = Annotated::default();
    body.raw(&[b.version], &format!("version = {version}"));
    body.raw(b.key.as_bytes(), "key: build key");
    body.raw(
        b.root.as_bytes(),
        "root: artifact root (the manifest vector's)",
    );
    body.varint(b.size, "size");
    body.varint(b.time, "time (Unix seconds)");
    body.varint(b.build_ms, "build_ms");
    body.labels(&b.labels);
    body.raw(b.builder.as_bytes(), "builder: ed25519 public key");
    if version >= 2 {
        body.varint(b.needs.len() as u64, "needs: count of libraries");
        for (i, (lib, versions)) in b.needs.iter().enumerate() {
            body.string(lib, &format!("needs[{i}].library"));
            body.varint(
                versions.len() as u64,
                &format!("needs[{i}]: count of versions"),
            );
            for (j, v) in versions.iter().enumerate() {
                body.string(v, &format!("needs[{i}].versions[{j}]"));
            }
        }
    }
    let (domain, shown) = if version >= 2 {
        (RECORD_DOMAIN, "domain: \"rdht/build-record/v2\\0\"")
    } else {
        (RECORD_DOMAIN_1, "domain: \"rdht/build-record/v1\\0\"")
    };
    let mut msg = Annotated::default();
    msg.raw(domain, shown);
    msg.bytes.extend_from_slice(&body.bytes);
    msg.text.push_str(&body.text);
    assert_eq!(
        msg.bytes,
        signing_message(b),
        "signing message annotation drifted"
    );
    let mut enc = Annotated::default();
    enc.bytes.extend_from_slice(&body.bytes);
    enc.text.push_str(&body.text);
    enc.varint(64, "signature: length");
    enc.raw(&r.signature()[..32], "signature: R");
    enc.raw(&r.signature()[32..], "signature: S");
    assert_eq!(enc.bytes, r.encode(), "record annotation drifted");
    let mut out = String::new();
    writeln!(out, "signing_seed = \"{}\"", hex(&seed)).unwrap();
    writeln!(out, "signing_message = '''\n{}'''", msg.text).unwrap();
    writeln!(out, "encoding = '''\n{}'''", enc.text).unwrap();
    out
}

fn records_toml() -> String {
    let mut needs = Needs::new();
    needs.insert(
        "libc.so.6".into(),
        ["GLIBC_2.2.5", "GLIBC_2.34"].map(String::from).into(),
    );
    needs.insert("libgcc_s.so.1".into(), ["GCC_3.0"].map(String::from).into());
    format!(
        "# Build record vectors (specs/records.md). Checked by crates/rdht-core/tests/vectors.rs.\n\
         # ed25519 signatures are deterministic: the same seed and message give the same bytes.\n\
         # [record] is format version 1 (still read); [record_v2] is what this build writes.\n\n\
         [record]\n{}\n[record_v2]\n{}",
        record_vector(1, &Needs::new()),
        record_vector(2, &needs)
    )
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs/vectors");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in [
        ("blocks.toml", blocks_toml()),
        ("manifest.toml", manifest_toml()),
        ("records.toml", records_toml()),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
        println!("wrote specs/vectors/{name}");
    }
}
