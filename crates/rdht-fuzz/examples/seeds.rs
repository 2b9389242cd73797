//! Writes the hand-made seeds of every fuzz target: one or a few valid inputs each, from
//! which the fuzzer starts (`fuzz/corpus/<target>/seed-*`). Usage:
//! `cargo run -p rdht-fuzz --example seeds -- fuzz/corpus`.
//!
//! Does not write what the fuzzer found; `fuzz/README.md` says how those were added.

use std::path::Path;

use futures::executor::block_on;
use rdht_api::proto::{ClientFrame, Reply, Scope, ServerFrame, encode};
use rdht_api::{API_VERSION, Progress, Request, Response};
use rdht_core::block::{LEAF_TAG, Link};
use rdht_core::buildkey::{KeyInputs, SourceInputs};
use rdht_core::fuzzing;
use rdht_core::manifest::FileEntry;
use rdht_core::plan::{self, PlanInputs};
use rdht_core::record::RecordBody;
use rdht_core::{Block, BlockId, BuildKey, BuildRecord, Labels, Manifest, Needs, SigningKey};
use rdht_net::SwarmKey;
use rdht_net::wire;

fn labels() -> Labels {
    Labels {
        crate_name: "serde".into(),
        crate_version: "1.0.219".into(),
        target: "x86_64-unknown-linux-gnu".into(),
        rustc: "rustc 1.95.0".into(),
        crate_types: vec!["lib".into()],
    }
}

fn needs() -> Needs {
    Needs::from([(
        "libc.so.6".to_string(),
        ["GLIBC_2.2.5".to_string(), "GLIBC_2.34".to_string()].into(),
    )])
}

fn body(version: u8, needs: Needs) -> RecordBody {
    RecordBody {
        version,
        key: BuildKey::from_bytes([0x5a; 32]),
        root: BlockId::from_bytes([2; 32]),
        size: 1234,
        time: 1_700_000_000,
        build_ms: 850,
        labels: labels(),
        builder: rdht_core::BuilderKey::from_bytes([0; 32]),
        needs,
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A dag step: op, u16 big-endian length, bytes.
fn step(op: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![op];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let dir = Path::new(&dir);
    let mut seeds: Vec<(&str, &str, Vec<u8>)> = Vec::new();
    let signer = SigningKey::from_bytes(&[9; 32]);
    let leaf = Block::leaf(b"hello, world").expect("a small leaf");
    let link = |id: BlockId, size| Link { id, size };

    // Blocks and their LZ4 form.
    seeds.push(("block", "leaf", leaf.bytes().to_vec()));
    let interior =
        Block::interior(&[link(leaf.id(), 16384), link(leaf.id(), 12)]).expect("2 links");
    seeds.push(("block", "interior", interior.bytes().to_vec()));
    let mut run = vec![b'a'; 1000];
    run[0] = LEAF_TAG;
    let lz4 = Block::from_bytes(run.clone().into())
        .expect("a leaf")
        .compressed();
    let mut packed = (run.len() as u16).to_be_bytes().to_vec();
    packed.extend_from_slice(lz4.lz4().expect("a run compresses"));
    seeds.push(("block", "lz4", packed));

    // Manifests, records, plans.
    let files = vec![
        FileEntry {
            path: "out/libserde.rlib".into(),
            executable: false,
            size: 12,
            root: leaf.id(),
        },
        FileEntry {
            path: "stderr".into(),
            executable: true,
            size: 0,
            root: BlockId::from_bytes([3; 32]),
        },
    ];
    seeds.push((
        "manifest",
        "two-files",
        Manifest::new(labels(), files).expect("valid").encode(),
    ));
    seeds.push((
        "manifest",
        "empty",
        Manifest::new(Labels::default(), vec![])
            .expect("valid")
            .encode(),
    ));
    let v2 = BuildRecord::sign_body(body(2, needs()), &signer).expect("signs");
    let v1 = BuildRecord::sign_body(body(1, Needs::new()), &signer).expect("signs");
    seeds.push(("record", "v2", v2.encode()));
    seeds.push(("record", "v1", v1.encode()));
    seeds.push(("record", "body", fuzzing::encode(&body(2, needs()))));
    let keys = [
        BuildKey::from_bytes([1; 32]),
        BuildKey::from_bytes([0xfe; 32]),
    ];
    seeds.push(("plan", "two-keys", plan::encode(&keys).into_bytes()));

    // The codec: a selector byte, then a value of that type.
    let with = |which: u8, enc: Vec<u8>| [vec![which], enc].concat();
    seeds.push(("codec", "labels", with(0, fuzzing::encode(&labels()))));
    seeds.push(("codec", "body", with(2, fuzzing::encode(&body(2, needs())))));
    seeds.push(("codec", "needs", with(3, fuzzing::encode(&needs()))));
    let key_inputs = KeyInputs {
        version: 3,
        rustc_version: "rustc 1.95.0\n".into(),
        target: "x86_64-unknown-linux-gnu".into(),
        args: vec!["--edition=2021".into()],
        source: SourceInputs::Tree {
            files: vec![("src/lib.rs".into(), leaf.id())],
        },
        out_dir: Some(vec![]),
        env: vec![("CARGO_PKG_NAME".into(), "p".into())],
        native_libs: vec![],
    };
    seeds.push(("codec", "key-inputs", with(4, fuzzing::encode(&key_inputs))));
    let plan_inputs = PlanInputs {
        version: 1,
        rustc_version: "rustc 1.95.0\n".into(),
        cargo_args: vec!["--release".into()],
        lockfile: "version = 4\n".into(),
        manifest: "[workspace]\n".into(),
        env: vec![],
    };
    seeds.push((
        "codec",
        "plan-inputs",
        with(5, fuzzing::encode(&plan_inputs)),
    ));
    let tuple = (300u16, -5i64, "hi".to_string(), vec![1u8, 2], Some(true));
    seeds.push(("codec", "tuple", with(6, fuzzing::encode(&tuple))));

    // The verifier: an interior root over a full leaf and a short one (ids fixed up),
    // then the same leaf alone, compressed.
    let mut two = vec![1u8];
    let mut root = vec![rdht_core::block::INTERIOR_TAG];
    link(BlockId::from_bytes([0; 32]), 16384).encode_into(&mut root);
    link(BlockId::from_bytes([0; 32]), 12).encode_into(&mut root);
    two.extend(step(0, &root));
    two.extend([4, 0x40, 0, b'x']);
    two.extend(step(0, leaf.bytes()));
    seeds.push(("dag", "two-leaves", two));
    let mut one = vec![0u8];
    one.extend(step(1, &run));
    one.extend(step(0, leaf.bytes()));
    seeds.push(("dag", "one-leaf", one));

    // Local API: a daemon reading requests, a client reading answers.
    let request = |id, request| {
        frame(&encode(&ClientFrame {
            version: API_VERSION,
            id,
            request,
        }))
    };
    let mut requests = request(
        1,
        Request::Resolve {
            key: keys[0],
            scope: Scope::Private,
        },
    );
    requests.extend(request(
        2,
        Request::Drain {
            session: Some("s".into()),
        },
    ));
    requests.extend(request(
        3,
        Request::TrustBlock {
            builder: v2.builder(),
            reason: "r".into(),
        },
    ));
    seeds.push(("api", "requests", requests));
    let reply = |id, reply| {
        frame(&encode(&ServerFrame {
            version: API_VERSION,
            id,
            reply,
        }))
    };
    let mut answers = reply(
        1,
        Reply::Progress(Progress::Bytes {
            done: 5,
            total: Some(9),
        }),
    );
    answers.extend(reply(
        1,
        Reply::Done(Response::Gc {
            evicted_artifacts: 1,
            freed_bytes: 2,
        }),
    ));
    seeds.push(("api", "answers", answers));
    let status = reply(1, Reply::Done(Response::Status(Box::default())));
    seeds.push(("api", "status", status));

    // The two stream protocols.
    seeds.push((
        "wire_blocks",
        "request",
        wire::encode_block_request(&[leaf.id(), interior.id()]),
    ));
    let mut frames = Vec::new();
    block_on(async {
        wire::write_frame(&mut frames, &wire::Frame::Block(leaf.encoded())).await?;
        wire::write_frame(&mut frames, &wire::Frame::Block(lz4.encoded())).await?;
        wire::write_frame(&mut frames, &wire::Frame::End).await
    })?;
    seeds.push(("wire_blocks", "frames", frames));
    seeds.push((
        "wire_records",
        "request",
        wire::encode_records_request(&keys[0]),
    ));
    seeds.push((
        "wire_records",
        "response",
        wire::encode_records_response(&[v2.encode(), v1.encode()]),
    ));

    // Files.
    seeds.push((
        "swarm_files",
        "swarm-key",
        SwarmKey::from_bytes([0xa5; 32]).to_file_text().into_bytes(),
    ));
    let peer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    let bootstrap = format!(
        "# rdht bootstrap\n/ip4/10.1.2.3/tcp/4517/p2p/{peer}  # build server\n\n/dns4/ci.example/tcp/4517/p2p/{peer}\n/ip6/::1/udp/4/quic-v1/p2p/{peer}\n"
    );
    seeds.push(("swarm_files", "bootstrap", bootstrap.into_bytes()));
    seeds.push((
        "config",
        "default",
        rdht_node::config::DEFAULT_CONFIG.as_bytes().to_vec(),
    ));
    let config = "listen = [\"/ip4/0.0.0.0/tcp/4517\"]\nswarm_key = \"/etc/rdht/swarm.key\"\npublic = true\n\
                  trusted_keys = [\"ab\"]\nrequired_signatures = 2\nverify_sample_rate = 0.5\n\
                  lookup_timeout_ms = 250\nunreachable_backoff_ms = 1000\nstore_max_bytes = 0\n";
    seeds.push(("config", "set", config.as_bytes().to_vec()));

    // The shim.
    let args = "--crate-name\nserde\n--edition=2021\n/h/.cargo/registry/src/i/serde-1.0.0/src/lib.rs\n\
                --error-format=json\n--json=diagnostic-rendered-ansi,artifacts,future-incompat\n\
                --crate-type\nlib\n--emit=dep-info,metadata,link\n-C\nembed-bitcode=no\n-Copt-level=0\n\
                --out-dir\n/p/target/debug/deps\n-L\ndependency=/p/target/debug/deps\n\
                --extern\nserde_derive=/p/target/debug/deps/libserde_derive-1.so\n--cap-lints\nallow\n\
                -o\nout\n@/tmp/args\n--print=cfg\n-C\nincremental=/t";
    seeds.push(("shim_args", "lib-unit", args.as_bytes().to_vec()));
    let stderr = "{\"$message_type\":\"artifact\",\"artifact\":\"/rdht/target/debug/deps/libp-1.rmeta\",\"emit\":\"metadata\"}\n\
                  {\"$message_type\":\"diagnostic\",\"message\":\"unused\",\"rendered\":\"warning: /rdht/workspace/src/lib.rs\"}\n\
                  {\"$message_type\":\"artifact\",\"artifact\":\"/rdht/target/debug/deps/libp-1.rlib\",\"emit\":\"link\"}\n";
    seeds.push(("shim_json", "stderr", stderr.as_bytes().to_vec()));
    let dep_info = "/home/u/ws/target/debug/deps/p-1.d: /home/u/ws/src/lib.rs /home/u/.cargo/registry/src/x/lib.rs\n\n\
                    /home/u/ws/src/lib.rs:\n\n# env-dep:CARGO_PKG_NAME=p\n# env-dep:OUT_DIR=/home/u/ws/target/debug/build/p-2/out\n# env-dep:UNSET\n";
    seeds.push(("shim_depinfo", "dep-info", dep_info.as_bytes().to_vec()));

    let declaration = rdht_core::runkey::Declaration {
        version: rdht_core::runkey::RUN_KEY_VERSION,
        env: vec!["CC".into(), "CFLAGS".into()],
        paths: vec!["/rdht/workspace/c/x.h".into(), "build.rs".into()],
        package: false,
    };
    seeds.push(("declaration", "two-each", declaration.encode()));
    let script = "cargo:rustc-link-lib=static=zstd\ncargo:rerun-if-changed=build.rs\n\
                  cargo::rerun-if-env-changed=CC\r\ncargo:rerun-if-changed=\ncargo:warning=x\n";
    seeds.push(("script_output", "cc-rs", script.as_bytes().to_vec()));

    for (target, name, bytes) in seeds {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}
