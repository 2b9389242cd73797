//! Checks the provider keys against the annotated vectors of
//! `specs/vectors/provider-keys.toml` (specs/swarm.md §6.1), which were computed with
//! other implementations (npm's `multiformats` and `@noble/hashes`), so spec, code and
//! the keys other libp2p nodes accept cannot drift apart.
//!
//! Does not cover: a live exchange with another implementation (`js_kad.rs`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;

use rdht_core::{BlockId, BuildKey};
use rdht_net::ProviderKey;
use rdht_testkit::unhex;

#[test]
fn provider_keys_match_the_vectors() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs/vectors/provider-keys.toml");
    let v: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let keys = v["key"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let mut kinds = Vec::new();
    for k in keys {
        let k = k.as_table().unwrap();
        let kind = k["kind"].as_str().unwrap();
        let tagged = unhex(k["tagged"].as_str().unwrap());
        let id: [u8; 32] = tagged[1..].try_into().unwrap();
        let key = match kind {
            "build" => ProviderKey::Build(BuildKey::from_bytes(id)),
            "artifact" => ProviderKey::Artifact(BlockId::from_bytes(id)),
            other => panic!("unknown kind {other}"),
        };
        assert_eq!(key.tagged()[..], tagged[..], "{kind}: tagged input");
        let bytes = key.to_bytes();
        assert_eq!(
            bytes[..],
            unhex(k["bytes"].as_str().unwrap())[..],
            "{kind}: key"
        );
        assert_eq!(
            multibase::encode(multibase::Base::Base32Lower, bytes),
            k["cid_text"].as_str().unwrap(),
            "{kind}: CID text"
        );
        kinds.push(kind);
    }
    assert_eq!(kinds, ["build", "artifact"]);
}
