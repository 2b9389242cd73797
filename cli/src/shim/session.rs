//! One `cargo dht-build` run: every wrapper invocation appends one JSON line describing
//! its unit to the session log; the parent reads them back into the summary.
//!
//! Owns: the log line format and the summary (text and JSON). Does not own: deciding
//! outcomes (`unit.rs`).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::show::counted;

/// Environment variable naming the session log.
pub const SESSION_LOG_ENV: &str = "RDHT_SESSION_LOG";

/// What happened to one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Served from the cache.
    Hit,
    /// Built locally (and published when it succeeded).
    Miss,
    /// Built locally; cannot be cached.
    Uncacheable,
}

/// One unit's line in the session log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitLog {
    /// Crate name.
    pub crate_name: String,
    /// Outcome.
    pub kind: Kind,
    /// Why (miss or uncacheable), empty for hits.
    pub reason: String,
    /// Bytes fetched from peers for this unit (0 for local hits).
    pub bytes_fetched: u64,
    /// The original compile time of a hit, or this compile's time.
    pub compile_ms: u64,
    /// Wall time this invocation took.
    pub wall_ms: u64,
    /// Of `wall_ms`, the time spent computing the build key.
    #[serde(default)]
    pub key_ms: u64,
    /// The unit's build key (hex), when it has one.
    #[serde(default)]
    pub key: String,
    /// The outcome of checking this unit against other builders (`--verify` or
    /// sampling): `match`, `mismatch`, `no record`, `not reproducible`, `error`.
    #[serde(default)]
    pub verify: Option<String>,
    /// For a miss, the kind of its reason: `no record`, `untrusted` (records exist, but
    /// not from builders this node trusts), `lookup failed`, `fetch failed`, `sample
    /// mismatch`, `daemon unreachable`, `verify` or `error`.
    #[serde(default)]
    pub cause: String,
    /// Why this unit's outputs, built locally, could not be handed to the daemon to share
    /// (failures of the daemon's own job are reported by its drain instead).
    #[serde(default)]
    pub not_shared: Option<String>,
    /// Providers of this unit's key the daemon could not reach (peer ids).
    #[serde(default)]
    pub unreachable: Vec<String>,
    /// A build-script run, not a rustc unit: counted apart ([`Summary::runs`]).
    #[serde(default)]
    pub run: bool,
    /// More keys this unit looked up, for the plan (a run's declaration key).
    #[serde(default)]
    pub extra_keys: Vec<String>,
}

impl UnitLog {
    /// An empty line for `crate_name` with outcome `kind`.
    pub fn new(crate_name: &str, kind: Kind) -> UnitLog {
        UnitLog {
            crate_name: crate_name.to_string(),
            kind,
            reason: String::new(),
            bytes_fetched: 0,
            compile_ms: 0,
            wall_ms: 0,
            key_ms: 0,
            key: String::new(),
            verify: None,
            cause: String::new(),
            not_shared: None,
            unreachable: Vec::new(),
            run: false,
            extra_keys: Vec::new(),
        }
    }
}

/// The totals of a session's build-script runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Runs {
    /// Runs seen.
    pub runs: u64,
    /// Served from the cache.
    pub hits: u64,
    /// Run here and shared.
    pub misses: u64,
    /// Run here and never cached (cargo reruns them every time), by reason.
    pub never_cached: BTreeMap<String, u64>,
}

/// The reason a unit counts under when the shim itself could not hand its outputs over.
pub const NOT_HANDED_OVER: &str = "not handed to the daemon";

/// Appends `line` to the session log named by the environment, if any. Failures are
/// ignored: the log only feeds the summary.
pub fn append(line: &UnitLog) {
    let Some(path) = std::env::var_os(SESSION_LOG_ENV) else {
        return;
    };
    let Ok(mut text) = serde_json::to_string(line) else {
        return;
    };
    text.push('\n');
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
        // One write per line: O_APPEND keeps concurrent lines whole.
        let _ = f.write_all(text.as_bytes());
    }
}

/// The totals of a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Units seen.
    pub units: u64,
    /// Cache hits.
    pub hits: u64,
    /// Misses (built locally, published).
    pub misses: u64,
    /// Uncacheable units.
    pub uncacheable: u64,
    /// Uncacheable units by reason.
    pub uncacheable_reasons: BTreeMap<String, u64>,
    /// Miss reasons.
    pub miss_reasons: BTreeMap<String, u64>,
    /// Misses by kind of reason ([`UnitLog::cause`]).
    pub miss_causes: BTreeMap<String, u64>,
    /// Crate names of the misses, sorted.
    pub missed: Vec<String>,
    /// Bytes fetched from peers.
    pub bytes_fetched: u64,
    /// Estimated time saved: hits' original compile times minus the time the hits took.
    pub saved_ms: u64,
    /// Verification outcomes (`--verify`, sampled hits) by kind.
    pub verify: BTreeMap<String, u64>,
    /// Wall time of all hits together (the wrapper's whole run per hit).
    pub hit_wall_ms: u64,
    /// What misses cost beyond their compile: wall time minus compile time, summed.
    pub miss_overhead_ms: u64,
    /// Time spent computing build keys, all units together.
    pub key_ms: u64,
    /// Time `cargo dht-build` waited at the end for the daemon to finish sharing the
    /// run's misses and to store its plan.
    pub share_wait_ms: u64,
    /// Units built locally whose outputs could not be shared.
    pub not_shared: u64,
    /// Of those, how many for each reason (specs/local-api.md §3.1).
    pub not_shared_reasons: BTreeMap<String, u64>,
    /// Distinct providers the daemon could not reach during the run (peer ids, sorted).
    pub unreachable_providers: Vec<String>,
    /// Build-script runs, counted apart from rustc units.
    pub runs: Runs,
}

/// Reads the session log (missing: an empty session).
pub fn summarize(path: &Path) -> Summary {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut s = Summary::default();
    for line in text.lines() {
        let Ok(u) = serde_json::from_str::<UnitLog>(line) else {
            continue;
        };
        s.bytes_fetched += u.bytes_fetched;
        s.unreachable_providers.extend(u.unreachable);
        s.key_ms += u.key_ms;
        if let Some(r) = &u.not_shared {
            s.add_not_shared(&BTreeMap::from([(r.clone(), 1)]));
        }
        if u.run {
            s.runs.runs += 1;
            match u.kind {
                Kind::Hit => {
                    s.runs.hits += 1;
                    s.saved_ms += u.compile_ms.saturating_sub(u.wall_ms);
                }
                Kind::Miss => s.runs.misses += 1,
                Kind::Uncacheable => *s.runs.never_cached.entry(u.reason).or_default() += 1,
            }
            continue;
        }
        s.units += 1;
        if let Some(v) = &u.verify {
            *s.verify.entry(v.clone()).or_default() += 1;
        }
        match u.kind {
            Kind::Hit => {
                s.hits += 1;
                s.saved_ms += u.compile_ms.saturating_sub(u.wall_ms);
                s.hit_wall_ms += u.wall_ms;
            }
            Kind::Miss => {
                s.misses += 1;
                *s.miss_reasons.entry(u.reason).or_default() += 1;
                if !u.cause.is_empty() {
                    *s.miss_causes.entry(u.cause).or_default() += 1;
                }
                s.missed.push(u.crate_name);
                s.miss_overhead_ms += u.wall_ms.saturating_sub(u.compile_ms);
            }
            Kind::Uncacheable => {
                s.uncacheable += 1;
                *s.uncacheable_reasons.entry(u.reason).or_default() += 1;
            }
        }
    }
    s.missed.sort();
    s.unreachable_providers.sort();
    s.unreachable_providers.dedup();
    s
}

/// The build keys of the session's hits and misses (its plan, specs/build-key.md §8).
pub fn plan_keys(path: &Path) -> Vec<rdht_core::BuildKey> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<UnitLog>(l).ok())
        .filter(|u| matches!(u.kind, Kind::Hit | Kind::Miss))
        .flat_map(|u| std::iter::once(u.key).chain(u.extra_keys))
        .filter_map(|k| k.parse().ok())
        .collect()
}

impl Summary {
    /// Counts units whose outputs could not be shared, by reason.
    pub fn add_not_shared(&mut self, by_reason: &BTreeMap<String, u64>) {
        for (r, n) in by_reason {
            self.not_shared += n;
            *self.not_shared_reasons.entry(r.clone()).or_default() += n;
        }
    }

    /// Units whose verification found a builder's root differing from a reproducible
    /// local build.
    pub fn mismatches(&self) -> u64 {
        self.verify.get("mismatch").copied().unwrap_or(0)
            + self.verify.get("sample mismatch").copied().unwrap_or(0)
    }

    /// The verification line, when anything was verified.
    pub fn verify_line(&self) -> Option<String> {
        if self.verify.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .verify
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        Some(format!("rdht: verify: {}", parts.join(", ")))
    }

    /// The one summary line (starts with `rdht:`).
    pub fn line(&self) -> String {
        let mut line = format!(
            "rdht: {} units, {} hits, {} misses",
            self.units, self.hits, self.misses
        );
        if !self.miss_causes.is_empty() {
            line.push_str(&format!(" ({})", counted(&self.miss_causes)));
        }
        line.push_str(&format!(", {} uncacheable", self.uncacheable));
        if !self.uncacheable_reasons.is_empty() {
            line.push_str(&format!(" ({})", counted(&self.uncacheable_reasons)));
        }
        if self.runs.runs > 0 {
            let r = &self.runs;
            let never: u64 = r.never_cached.values().sum();
            line.push_str(&format!(
                ", {} build-script runs ({} hits, {} misses, {never} never cached",
                r.runs, r.hits, r.misses
            ));
            if !r.never_cached.is_empty() {
                line.push_str(&format!(": {}", counted(&r.never_cached)));
            }
            line.push(')');
        }
        line.push_str(&format!(
            ", {} fetched, ~{:.1} s saved, {} not shared",
            indicatif::HumanBytes(self.bytes_fetched),
            self.saved_ms as f64 / 1000.0,
            self.not_shared
        ));
        if !self.not_shared_reasons.is_empty() {
            line.push_str(&format!(" ({})", counted(&self.not_shared_reasons)));
        }
        match self.unreachable_providers.len() {
            0 => {}
            1 => line.push_str(", 1 provider unreachable"),
            n => line.push_str(&format!(", {n} providers unreachable")),
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let mut text = String::new();
        for (kind, reason, fetched, compile, wall) in [
            (Kind::Hit, "", 2048, 1500, 20),
            (Kind::Hit, "", 0, 600, 10),
            (Kind::Miss, "no record", 0, 900, 950),
            (
                Kind::Miss,
                "2 record(s) found, none from a trusted builder",
                0,
                10,
                10,
            ),
            (Kind::Miss, "no record", 0, 100, 150),
            (Kind::Uncacheable, "source read from stdin", 0, 5, 6),
        ] {
            let u = UnitLog {
                crate_name: "c".into(),
                kind,
                reason: reason.into(),
                bytes_fetched: fetched,
                compile_ms: compile,
                wall_ms: wall,
                key_ms: 1,
                key: if kind == Kind::Uncacheable {
                    String::new()
                } else {
                    "07".repeat(32)
                },
                verify: None,
                cause: match reason {
                    "no record" => "no record".into(),
                    r if r.contains("trusted") => "untrusted".into(),
                    _ => String::new(),
                },
                not_shared: (compile == 100).then(|| NOT_HANDED_OVER.to_string()),
                unreachable: match (kind, compile) {
                    (Kind::Miss, 900) => vec!["12D3KooWa".into(), "12D3KooWb".into()],
                    (Kind::Miss, 10) => vec!["12D3KooWb".into()],
                    _ => Vec::new(),
                },
                run: false,
                extra_keys: Vec::new(),
            };
            text.push_str(&serde_json::to_string(&u).unwrap());
            text.push('\n');
        }
        text.push_str("garbage\n");
        std::fs::write(&log, text).unwrap();
        let mut s = summarize(&log);
        // Hits and misses with a key; the uncacheable unit and the garbage line are not.
        assert_eq!(
            plan_keys(&log),
            vec![rdht_core::BuildKey::from_bytes([7; 32]); 5]
        );
        assert_eq!((s.hit_wall_ms, s.miss_overhead_ms, s.key_ms), (30, 100, 6));
        assert_eq!(
            s.line(),
            "rdht: 6 units, 2 hits, 3 misses (2 no record, 1 untrusted), 1 uncacheable (1 source read from stdin), 2.00 KiB fetched, ~2.1 s saved, 1 not shared (1 not handed to the daemon), 2 providers unreachable"
        );
        // Each distinct provider once, however many units missed it.
        assert_eq!(s.unreachable_providers, ["12D3KooWa", "12D3KooWb"]);
        // The daemon's drain adds its own failures, counted per reason.
        s.add_not_shared(&BTreeMap::from([
            ("changed after the compile".to_string(), 2),
            ("store error".to_string(), 1),
        ]));
        assert_eq!(s.not_shared, 4);
        assert!(
            s.line().ends_with(
                ", 4 not shared (2 changed after the compile, 1 not handed to the daemon, 1 store error), 2 providers unreachable"
            ),
            "{}",
            s.line()
        );
    }

    #[test]
    fn build_script_runs_are_counted_apart_and_their_keys_planned() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let mut text = String::new();
        let mut unit = UnitLog::new("zstd_sys", Kind::Hit);
        unit.key = "01".repeat(32);
        let mut lines = vec![unit];
        for (kind, reason) in [
            (Kind::Hit, ""),
            (Kind::Miss, "no provider has a record for this key"),
            (Kind::Uncacheable, "prints an empty rerun-if-changed"),
        ] {
            let mut run = UnitLog::new("build script of zstd-sys", kind);
            run.run = true;
            run.reason = reason.into();
            if kind != Kind::Uncacheable {
                run.key = "02".repeat(32);
                run.extra_keys = vec!["03".repeat(32)];
            }
            lines.push(run);
        }
        for l in &lines {
            text.push_str(&serde_json::to_string(l).unwrap());
            text.push('\n');
        }
        std::fs::write(&log, text).unwrap();
        let s = summarize(&log);
        assert_eq!((s.units, s.hits, s.misses), (1, 1, 0));
        assert_eq!(
            s.line(),
            "rdht: 1 units, 1 hits, 0 misses, 0 uncacheable, 3 build-script runs (1 hits, 1 misses, 1 never cached: 1 prints an empty rerun-if-changed), 0 B fetched, ~0.0 s saved, 0 not shared"
        );
        let key = |b: u8| rdht_core::BuildKey::from_bytes([b; 32]);
        assert_eq!(
            plan_keys(&log),
            vec![key(1), key(2), key(3), key(2), key(3)]
        );
    }
}
