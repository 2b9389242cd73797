//! The trust policy over signed records (specs/trust.md): which builders' claims this
//! node accepts, and the local blocklist of builders caught lying.
//!
//! A root is accepted for a build key when at least `required` (≥ 1) distinct trusted,
//! non-blocklisted builders claim it: this node, `trusted_keys` in `config.toml`, or
//! `rdht trust add`. Records by any other builder never count, however many agree,
//! because keys cost nothing; they are only listed, with the reason. Trusted keys added
//! at run time live in
//! `DATA_DIR/trusted-keys`, blocklisted ones in `DATA_DIR/blocked-keys` (hex key, then
//! the reason, one per line; `#` comments).
//!
//! Owns: the sets, their files, the per-record decisions and the choice of root. Does
//! not own: signature checks (a `BuildRecord` value is already verified) or catching
//! liars (`--verify` and sampling in the shim report them here).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use rdht_core::{BlockId, BuildKey, BuildRecord, BuilderKey};

/// File name of the added trusted keys inside the data directory.
pub const TRUST_FILE: &str = "trusted-keys";
/// File name of the blocklist inside the data directory.
pub const BLOCK_FILE: &str = "blocked-keys";
/// The default and smallest number of trusted builders that must claim a root.
pub const MIN_REQUIRED: usize = 1;

/// The policy could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A key in a file or the config is not 64 hex digits.
    #[error("{source_name} line {line}: {reason}")]
    BadKey {
        /// The file (or `config.toml trusted_keys`).
        source_name: String,
        /// 1-based line or list position.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Removing a key the config file or the node's identity trusts.
    #[error("{key} is trusted by {by}; it cannot be removed here")]
    Fixed {
        /// The key.
        key: BuilderKey,
        /// Where its trust comes from.
        by: &'static str,
    },
    /// `required_signatures` below [`MIN_REQUIRED`].
    #[error(
        "required_signatures = {0}: at least {MIN_REQUIRED} trusted builder must claim a root before it is used"
    )]
    Required(usize),
    /// Reading or writing a policy file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The decision on one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The record.
    pub record: BuildRecord,
    /// Whether it supports the accepted root.
    pub accepted: bool,
    /// Why, for people (`rdht records`).
    pub reason: String,
}

/// The outcome of evaluating every record known for one build key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The accepted root, if any passes the policy.
    pub root: Option<BlockId>,
    /// The records that support it.
    pub supporting: Vec<BuildRecord>,
    /// One decision per distinct record, in input order.
    pub decisions: Vec<Decision>,
    /// Non-blocklisted builders disagree on the root.
    pub conflict: bool,
    /// Records for the key exist, but no root is claimed by enough trusted builders:
    /// the unit is not used because nobody this node trusts (enough) built it.
    pub untrusted: bool,
}

/// Trusted and blocklisted builders, and how many trusted builders must agree.
#[derive(Debug, Clone)]
pub struct Policy {
    dir: PathBuf,
    own: BuilderKey,
    configured: BTreeSet<BuilderKey>,
    added: BTreeSet<BuilderKey>,
    blocked: BTreeMap<BuilderKey, String>,
    required: usize,
}

fn parse_keys(path: &Path) -> Result<Vec<(BuilderKey, String)>, TrustError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TrustError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let key = key.parse::<BuilderKey>().map_err(|e| TrustError::BadKey {
            source_name: path.display().to_string(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        out.push((key, rest.trim().to_string()));
    }
    Ok(out)
}

impl Policy {
    /// Loads the policy of a node whose own key is `own`; `required` trusted builders
    /// must claim a root (`required_signatures`).
    pub fn load(
        data_dir: &Path,
        own: BuilderKey,
        configured: &[String],
        required: usize,
    ) -> Result<Policy, TrustError> {
        if required < MIN_REQUIRED {
            return Err(TrustError::Required(required));
        }
        let mut cfg = BTreeSet::new();
        for (i, k) in configured.iter().enumerate() {
            cfg.insert(k.parse::<BuilderKey>().map_err(|e| TrustError::BadKey {
                source_name: "config.toml trusted_keys".into(),
                line: i + 1,
                reason: e.to_string(),
            })?);
        }
        let added = parse_keys(&data_dir.join(TRUST_FILE))?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let blocked = parse_keys(&data_dir.join(BLOCK_FILE))?
            .into_iter()
            .collect();
        Ok(Policy {
            dir: data_dir.to_path_buf(),
            own,
            configured: cfg,
            added,
            blocked,
            required,
        })
    }

    fn save(&self, name: &str, header: &str, lines: Vec<String>) -> Result<(), TrustError> {
        let path = self.dir.join(name);
        let mut text = format!("# {header}\n");
        for l in lines {
            text.push_str(&l);
            text.push('\n');
        }
        let tmp = path.with_extension("tmp");
        let io = |source| TrustError::Io {
            path: path.clone(),
            source,
        };
        fs::write(&tmp, text).map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)
    }

    fn save_added(&self) -> Result<(), TrustError> {
        let lines = self.added.iter().map(ToString::to_string).collect();
        self.save(TRUST_FILE, "Builders trusted with `rdht trust add`.", lines)
    }

    fn save_blocked(&self) -> Result<(), TrustError> {
        let lines = self
            .blocked
            .iter()
            .map(|(k, r)| format!("{k} {}", r.replace('\n', " ")))
            .collect();
        self.save(
            BLOCK_FILE,
            "Builders caught lying; their records are ignored.",
            lines,
        )
    }

    /// Trusts `key` (persisted).
    pub fn add(&mut self, key: BuilderKey) -> Result<(), TrustError> {
        if self.added.insert(key) {
            self.save_added()?;
        }
        Ok(())
    }

    /// Stops trusting `key` (persisted). Keys trusted by the config or the node's own
    /// identity cannot be removed here.
    pub fn remove(&mut self, key: BuilderKey) -> Result<(), TrustError> {
        if key == self.own {
            return Err(TrustError::Fixed {
                key,
                by: "this node's identity",
            });
        }
        if self.configured.contains(&key) {
            return Err(TrustError::Fixed {
                key,
                by: "config.toml",
            });
        }
        if self.added.remove(&key) {
            self.save_added()?;
        }
        Ok(())
    }

    /// Blocklists `key` with `reason` (persisted). Its records are ignored from now on.
    pub fn block(&mut self, key: BuilderKey, reason: &str) -> Result<(), TrustError> {
        self.blocked.insert(key, reason.to_string());
        self.save_blocked()
    }

    /// Removes `key` from the blocklist (persisted).
    pub fn unblock(&mut self, key: BuilderKey) -> Result<(), TrustError> {
        if self.blocked.remove(&key).is_some() {
            self.save_blocked()?;
        }
        Ok(())
    }

    /// Every trusted key, the node's own first.
    pub fn trusted(&self) -> Vec<BuilderKey> {
        let mut v = vec![self.own];
        let rest: BTreeSet<_> = self.configured.union(&self.added).copied().collect();
        v.extend(rest.into_iter().filter(|k| *k != self.own));
        v
    }

    /// Blocklisted keys and why.
    pub fn blocked(&self) -> &BTreeMap<BuilderKey, String> {
        &self.blocked
    }

    /// How many distinct trusted builders must claim a root.
    pub fn required(&self) -> usize {
        self.required
    }

    fn trusted_why(&self, b: &BuilderKey) -> Option<&'static str> {
        if *b == self.own {
            Some("built by this node")
        } else if self.configured.contains(b) {
            Some("trusted by config.toml")
        } else if self.added.contains(b) {
            Some("trusted with `rdht trust add`")
        } else {
            None
        }
    }

    /// Decides on every record known for build `key` and picks the root to use.
    pub fn evaluate(&self, key: BuildKey, records: &[BuildRecord]) -> Evaluation {
        let mut distinct: Vec<&BuildRecord> = Vec::new();
        for r in records {
            if !distinct.contains(&r) {
                distinct.push(r);
            }
        }
        let usable = |r: &BuildRecord| r.key() == key && !self.blocked.contains_key(&r.builder());
        // Per root claimed by a usable record: its distinct trusted claimants, and the
        // latest time among them.
        let mut roots: BTreeMap<BlockId, (BTreeSet<BuilderKey>, u64)> = BTreeMap::new();
        for r in distinct.iter().filter(|r| usable(r)) {
            let e = roots.entry(r.root()).or_default();
            if self.trusted_why(&r.builder()).is_some() {
                e.0.insert(r.builder());
                e.1 = e.1.max(r.body().time);
            }
        }
        let chosen = roots
            .iter()
            .filter(|(_, (trusted, _))| trusted.len() >= self.required)
            .max_by_key(|(_, (trusted, time))| (trusted.len(), *time))
            .map(|(root, _)| *root);
        let conflict = roots.len() > 1;
        let mut decisions = Vec::new();
        let mut supporting = Vec::new();
        for r in &distinct {
            let (accepted, reason) = if r.key() != key {
                (
                    false,
                    format!("record is for another build key ({})", r.key()),
                )
            } else if let Some(why) = self.blocked.get(&r.builder()) {
                (false, format!("builder is blocklisted: {why}"))
            } else if let Some(why) = self.trusted_why(&r.builder()) {
                let n = roots[&r.root()].0.len();
                let basis = if self.required > 1 {
                    format!(
                        "{why}; {n} of {} required trusted builders claim this root",
                        self.required
                    )
                } else {
                    why.to_string()
                };
                match chosen {
                    Some(c) if c == r.root() => (true, basis),
                    Some(c) => (false, format!("disagrees with the accepted root {c}")),
                    None => (false, format!("not enough trust: {basis}")),
                }
            } else {
                (
                    false,
                    "builder is not trusted (unknown builders never count, however many agree)"
                        .to_string(),
                )
            };
            if accepted {
                supporting.push((*r).clone());
            }
            decisions.push(Decision {
                record: (*r).clone(),
                accepted,
                reason,
            });
        }
        Evaluation {
            root: chosen,
            supporting,
            untrusted: chosen.is_none() && distinct.iter().any(|r| r.key() == key),
            decisions,
            conflict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdht_core::{Labels, SigningKey};

    fn signer(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn key_of(s: &SigningKey) -> BuilderKey {
        BuilderKey::from_bytes(s.verifying_key().to_bytes())
    }

    fn record(by: &SigningKey, key: BuildKey, root: u8) -> BuildRecord {
        let root = BlockId::from_bytes([root; 32]);
        BuildRecord::sign(key, root, 1, 100, Labels::default(), by).unwrap()
    }

    fn policy(dir: &Path, own: u8, configured: &[BuilderKey]) -> Policy {
        policy_k(dir, own, configured, 1)
    }

    fn policy_k(dir: &Path, own: u8, configured: &[BuilderKey], required: usize) -> Policy {
        let cfg: Vec<String> = configured.iter().map(ToString::to_string).collect();
        Policy::load(dir, key_of(&signer(own)), &cfg, required).unwrap()
    }

    #[test]
    fn add_remove_block_persist() {
        let dir = tempfile::tempdir().unwrap();
        let (own, cfg, other) = (key_of(&signer(1)), key_of(&signer(2)), key_of(&signer(3)));
        let mut p = policy(dir.path(), 1, &[cfg]);
        assert_eq!(p.trusted(), vec![own, cfg]);
        p.add(other).unwrap();
        p.block(cfg, "claimed a wrong root").unwrap();
        let p2 = policy(dir.path(), 1, &[cfg]);
        assert_eq!(p2.trusted(), vec![own, cfg, other]);
        assert_eq!(
            p2.blocked().get(&cfg).map(String::as_str),
            Some("claimed a wrong root")
        );
        assert_eq!(
            p.remove(cfg).unwrap_err().to_string(),
            format!("{cfg} is trusted by config.toml; it cannot be removed here")
        );
        assert!(p.remove(own).is_err());
        p.remove(other).unwrap();
        p.unblock(cfg).unwrap();
        let p3 = policy(dir.path(), 1, &[]);
        assert_eq!(p3.trusted(), vec![own]);
        assert!(p3.blocked().is_empty());
        fs::write(dir.path().join(TRUST_FILE), "# c\n\nnot-a-key\n").unwrap();
        let err = Policy::load(dir.path(), own, &[], 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trusted-keys line 3: invalid builder key"),
            "{err}"
        );
        let err = Policy::load(dir.path(), own, &[], 0).unwrap_err();
        assert!(matches!(err, TrustError::Required(0)));
        assert_eq!(
            err.to_string(),
            "required_signatures = 0: at least 1 trusted builder must claim a root before it is used"
        );
    }

    /// Regression (issue 15): unknown keys cost nothing, so no number of them agreeing
    /// makes a root usable.
    #[test]
    fn unknown_builders_never_suffice_however_many_agree() {
        let dir = tempfile::tempdir().unwrap();
        let p = policy(dir.path(), 1, &[]);
        let k = BuildKey::from_bytes([7; 32]);
        let recs: Vec<_> = (10..30).map(|n| record(&signer(n), k, 9)).collect();
        let e = p.evaluate(k, &recs);
        assert_eq!(e.root, None);
        assert!(e.untrusted);
        assert_eq!(e.decisions.len(), 20);
        for d in &e.decisions {
            assert!(!d.accepted);
            assert_eq!(
                d.reason,
                "builder is not trusted (unknown builders never count, however many agree)"
            );
        }
        // No record at all is not "untrusted".
        assert!(!p.evaluate(k, &[]).untrusted);
    }

    #[test]
    fn required_signatures_counts_distinct_trusted_builders_only() {
        let dir = tempfile::tempdir().unwrap();
        let (ci1, ci2, stranger) = (signer(2), signer(3), signer(4));
        let p = policy_k(dir.path(), 1, &[key_of(&ci1), key_of(&ci2)], 2);
        let k = BuildKey::from_bytes([7; 32]);
        let nine = BlockId::from_bytes([9; 32]);
        // One trusted claimant (twice) and a stranger agreeing: not enough.
        let one = [
            record(&ci1, k, 9),
            record(&ci1, k, 9),
            record(&stranger, k, 9),
        ];
        let e = p.evaluate(k, &one);
        assert_eq!(e.root, None);
        assert!(e.untrusted);
        assert_eq!(
            e.decisions[0].reason,
            "not enough trust: trusted by config.toml; 1 of 2 required trusted builders claim this root"
        );
        // Two trusted builders agree: used, and both support it.
        let two = [
            record(&ci1, k, 9),
            record(&ci2, k, 9),
            record(&stranger, k, 13),
        ];
        let e = p.evaluate(k, &two);
        assert_eq!(e.root, Some(nine));
        assert_eq!(e.supporting.len(), 2);
        assert!(e.conflict);
        assert_eq!(
            e.decisions[1].reason,
            "trusted by config.toml; 2 of 2 required trusted builders claim this root"
        );
        // Two trusted builders that disagree: neither root passes.
        let split = [record(&ci1, k, 9), record(&ci2, k, 13)];
        assert_eq!(p.evaluate(k, &split).root, None);
    }

    #[test]
    fn trusted_keys_win_and_blocklisted_or_replayed_records_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let ci = signer(2);
        let mut p = policy(dir.path(), 1, &[key_of(&ci)]);
        let k = BuildKey::from_bytes([7; 32]);
        let other_key = BuildKey::from_bytes([8; 32]);
        // Two strangers agree on 13, the trusted CI key says 9: 9 wins.
        let recs = [
            record(&signer(5), k, 13),
            record(&signer(6), k, 13),
            record(&ci, k, 9),
        ];
        let e = p.evaluate(k, &recs);
        assert_eq!(e.root, Some(BlockId::from_bytes([9; 32])));
        assert_eq!(e.decisions[2].reason, "trusted by config.toml");
        // A trusted builder's valid record for another key, replayed for this one.
        let e = p.evaluate(k, &[record(&ci, other_key, 9)]);
        assert_eq!(e.root, None);
        assert_eq!(
            e.decisions[0].reason,
            format!("record is for another build key ({other_key})")
        );
        // The CI key caught lying: blocklisted, its records no longer count, and the
        // strangers' agreement is still worth nothing.
        p.block(key_of(&ci), "mismatch").unwrap();
        let e = p.evaluate(k, &recs);
        assert_eq!(e.root, None);
        assert!(e.untrusted);
        assert_eq!(e.decisions[2].reason, "builder is blocklisted: mismatch");
        // This node's own record is trusted.
        let e = p.evaluate(k, &[record(&signer(1), k, 13)]);
        assert_eq!(e.root, Some(BlockId::from_bytes([13; 32])));
        assert_eq!(e.decisions[0].reason, "built by this node");
    }
}
