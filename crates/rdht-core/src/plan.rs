//! Build plans: the list of build keys one `cargo dht-build` run used, so that another
//! machine about to run the same build can fetch them all before cargo asks
//! (specs/build-key.md §7).
//!
//! Owns: the plan key's inputs and hash, and the plan file's text format with its
//! limits. Does not own: gathering the inputs (the cargo shim), storing, signing or
//! fetching plans (a plan is an ordinary artifact named by an ordinary build record).
//!
//! Invariant: a plan only decides what is fetched early. Every unit is still resolved
//! by its own build key under the trust policy, so a wrong or stale plan costs bytes,
//! never correctness.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::id::BuildKey;

/// Version of the plan key derivation; part of the hashed inputs.
pub const PLAN_VERSION: u32 = 1;
/// BLAKE3 derive-key context of plan keys.
pub const PLAN_CONTEXT: &str = "rdht 2026-11-24 build plan v1";
/// First line of a plan file.
pub const PLAN_HEADER: &str = "rdht-plan v1";
/// Most keys a plan may list.
pub const MAX_PLAN_KEYS: usize = 100_000;
/// Largest plan file: the header and [`MAX_PLAN_KEYS`] lines of 64 hex digits.
pub const MAX_PLAN_LEN: usize = PLAN_HEADER.len() + 1 + MAX_PLAN_KEYS * 65;

/// What identifies "the same build" on two machines, without machine-local paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInputs {
    /// [`PLAN_VERSION`].
    pub version: u32,
    /// The full output of `rustc -vV`.
    pub rustc_version: String,
    /// The arguments given to `cargo build`, as given.
    pub cargo_args: Vec<String>,
    /// The workspace's `Cargo.lock`.
    pub lockfile: String,
    /// The workspace root's `Cargo.toml` (profiles, features, members).
    pub manifest: String,
    /// Build-wide environment variables (`RUSTFLAGS` and the like), sorted by name.
    pub env: Vec<(String, String)>,
}

impl PlanInputs {
    /// The plan key: BLAKE3 derive-key([`PLAN_CONTEXT`], canonical encoding).
    pub fn derive(&self) -> BuildKey {
        let mut h = blake3::Hasher::new_derive_key(PLAN_CONTEXT);
        h.update(&codec::encode(self));
        BuildKey::from_bytes(*h.finalize().as_bytes())
    }
}

/// Why a plan file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Over [`MAX_PLAN_LEN`] bytes.
    #[error("plan is {len} bytes, over the limit of {MAX_PLAN_LEN}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The first line is not [`PLAN_HEADER`].
    #[error("plan does not start with {PLAN_HEADER:?}")]
    Header,
    /// A line is not 64 lowercase hex digits.
    #[error("plan line {line}: not a build key")]
    BadKey {
        /// 1-based line number.
        line: usize,
    },
}

/// Encodes `keys` as a plan file: sorted and without duplicates, so that every builder
/// of the same build writes the same bytes (and their records agree on one root).
pub fn encode(keys: &[BuildKey]) -> String {
    let mut keys = keys.to_vec();
    keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    keys.dedup();
    let mut s = String::with_capacity(PLAN_HEADER.len() + 1 + keys.len() * 65);
    s.push_str(PLAN_HEADER);
    s.push('\n');
    for k in keys.iter().take(MAX_PLAN_KEYS) {
        s.push_str(&k.to_hex());
        s.push('\n');
    }
    s
}

/// Decodes a plan file.
pub fn decode(bytes: &[u8]) -> Result<Vec<BuildKey>, PlanError> {
    if bytes.len() > MAX_PLAN_LEN {
        return Err(PlanError::TooLarge { len: bytes.len() });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| PlanError::Header)?;
    let mut lines = text.split_terminator('\n');
    if lines.next() != Some(PLAN_HEADER) {
        return Err(PlanError::Header);
    }
    lines
        .enumerate()
        .map(|(n, l)| {
            let ok = l.len() == 64 && l.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            ok.then(|| l.parse().ok())
                .flatten()
                .ok_or(PlanError::BadKey { line: n + 2 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn inputs() -> PlanInputs {
        PlanInputs {
            version: PLAN_VERSION,
            rustc_version: "rustc 1.95.0\nhost: x86_64-unknown-linux-gnu\n".into(),
            cargo_args: vec!["--release".into()],
            lockfile: "version = 4\n".into(),
            manifest: "[package]\nname = \"p\"\n".into(),
            env: vec![("RUSTFLAGS".into(), "-Cdebuginfo=0".into())],
        }
    }

    #[test]
    fn the_key_covers_every_input() {
        let base = inputs().derive();
        assert_eq!(
            base.to_hex(),
            "32d146bffdd87f9077de6210ad442bf8ab87fc2f5a53ea02c7d0a83a4fb79b57",
            "plan key derivation changed: update specs/build-key.md §7"
        );
        let variants: [fn(&mut PlanInputs); 6] = [
            |p| p.version += 1,
            |p| p.rustc_version.push('x'),
            |p| p.cargo_args.push("-p".into()),
            |p| p.lockfile.push('\n'),
            |p| p.manifest.push('\n'),
            |p| p.env.clear(),
        ];
        for change in variants {
            let mut p = inputs();
            change(&mut p);
            assert_ne!(p.derive(), base);
        }
    }

    #[test]
    fn plans_round_trip_and_bad_ones_are_refused() {
        let keys = vec![
            BuildKey::from_bytes([1; 32]),
            BuildKey::from_bytes([0xab; 32]),
        ];
        let text = encode(&[keys[1], keys[0], keys[1]]);
        assert_eq!(
            text,
            format!("rdht-plan v1\n{}\n{}\n", "01".repeat(32), "ab".repeat(32))
        );
        assert_eq!(decode(text.as_bytes()).unwrap(), keys);
        assert_eq!(decode(b"rdht-plan v1\n").unwrap(), vec![]);
        assert_eq!(decode(b"rdht-plan v2\n"), Err(PlanError::Header));
        assert_eq!(decode(b"\xff"), Err(PlanError::Header));
        let upper = format!("rdht-plan v1\n{}\n", "AB".repeat(32));
        assert_eq!(decode(upper.as_bytes()), Err(PlanError::BadKey { line: 2 }));
        let short = format!("rdht-plan v1\n{}\nabc\n", "01".repeat(32));
        assert_eq!(decode(short.as_bytes()), Err(PlanError::BadKey { line: 3 }));
        let big = vec![b'a'; MAX_PLAN_LEN + 1];
        assert_eq!(
            decode(&big),
            Err(PlanError::TooLarge {
                len: MAX_PLAN_LEN + 1
            })
        );
    }
}
