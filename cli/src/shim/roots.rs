//! Machine-local roots and their placeholders (specs/build-key.md §3).
//!
//! Three directories differ between machines and users: the cargo home (registry
//! sources), the workspace, and the target directory. Keys, stored dep-info and replayed
//! messages name them by fixed placeholders; rustc is told to write the placeholders
//! everywhere (`--remap-path-prefix`, all scopes: with diagnostics left out, crate
//! metadata keeps unremapped paths), which makes outputs bit-identical across machines.
//! The shim turns placeholders back into local paths in everything it shows.
//!
//! Owns: finding the roots for one invocation and replacing them both ways. Does not
//! own: which strings are replaced (callers decide).

use std::path::{Path, PathBuf};

/// Placeholder of the cargo home.
pub const CARGO_HOME: &str = "/rdht/cargo-home";
/// Placeholder of the workspace root.
pub const WORKSPACE: &str = "/rdht/workspace";
/// Placeholder of the target directory.
pub const TARGET: &str = "/rdht/target";

/// The local roots of one invocation, most specific first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    entries: Vec<(String, &'static str)>,
}

/// Whether a byte can continue a path component name (any non-ASCII byte cannot: the
/// same rule as for characters, since a multi-byte character is never ASCII).
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+' | b'~')
}

/// Replaces `from` by `to` in `s` wherever `from` is a whole path prefix: the next byte
/// is not part of a path component name. Works on any bytes: rustc and proc macros may
/// print text that is not UTF-8, which passes through untouched but for the roots.
fn replace_root(s: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() {
        return s.to_vec();
    }
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.windows(from.len()).position(|w| w == from) {
        let after = &rest[i + from.len()..];
        let whole = after.first().is_none_or(|b| !is_path_byte(*b));
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(if whole { to } else { from });
        rest = after;
    }
    out.extend_from_slice(rest);
    out
}

/// Bytes back to text: replacing UTF-8 roots in UTF-8 text keeps it UTF-8 (a match of
/// a UTF-8 string always starts and ends on character boundaries).
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The target directory of an output directory: the parent of the profile directory
/// (`<target>/debug/deps`, `<target>/debug/build/<unit>`), above a target-triple
/// directory when `target` names one.
pub fn target_dir(out_dir: &Path, target: Option<&str>) -> Option<PathBuf> {
    let mut profile = out_dir.parent()?;
    if out_dir.file_name()? != "deps" {
        // <profile>/build/<unit>
        if profile.file_name()? != "build" {
            return None;
        }
        profile = profile.parent()?;
    }
    let mut dir = profile.parent()?;
    if let Some(t) = target
        && dir.file_name().and_then(|n| n.to_str()) == Some(t)
    {
        dir = dir.parent()?;
    }
    Some(dir.to_path_buf())
}

impl Roots {
    /// Roots from the cargo home, the workspace (when known) and the target directory.
    pub fn new(cargo_home: &Path, workspace: Option<&Path>, target: Option<&Path>) -> Roots {
        let mut entries = Vec::new();
        let mut add = |p: Option<&Path>, ph| {
            if let Some(p) = p.and_then(Path::to_str) {
                let p = p.trim_end_matches('/');
                if !p.is_empty() {
                    entries.push((p.to_string(), ph));
                }
            }
        };
        add(Some(cargo_home), CARGO_HOME);
        add(workspace, WORKSPACE);
        add(target, TARGET);
        // Longest first: a target inside the workspace is replaced as the target.
        entries.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        Roots { entries }
    }

    /// The local directory standing for `placeholder` ([`CARGO_HOME`], [`WORKSPACE`],
    /// [`TARGET`]), when known.
    pub fn local(&self, placeholder: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(_, ph)| *ph == placeholder)
            .map(|(local, _)| local.as_str())
    }

    /// Whether `bytes` name any local root as a whole path prefix.
    pub fn named_in(&self, bytes: &[u8]) -> bool {
        self.entries.iter().any(|(local, _)| {
            let local = local.as_bytes();
            let mut at = 0;
            while let Some(i) = memchr::memmem::find(&bytes[at..], local) {
                let end = at + i + local.len();
                if bytes.get(end).is_none_or(|b| !is_path_byte(*b)) {
                    return true;
                }
                at = at + i + 1;
            }
            false
        })
    }

    /// `s` with local roots replaced by placeholders.
    pub fn normalize(&self, s: &str) -> String {
        text(self.normalize_bytes(s.as_bytes()))
    }

    /// `s` with placeholders replaced by local roots.
    pub fn localize(&self, s: &str) -> String {
        text(self.localize_bytes(s.as_bytes()))
    }

    /// [`Roots::normalize`] of any bytes (other bytes are kept as they are).
    pub fn normalize_bytes(&self, s: &[u8]) -> Vec<u8> {
        let mut out = s.to_vec();
        for (local, ph) in &self.entries {
            out = replace_root(&out, local.as_bytes(), ph.as_bytes());
        }
        out
    }

    /// [`Roots::localize`] of any bytes (other bytes are kept as they are).
    pub fn localize_bytes(&self, s: &[u8]) -> Vec<u8> {
        let mut out = s.to_vec();
        for (local, ph) in &self.entries {
            out = replace_root(&out, ph.as_bytes(), local.as_bytes());
        }
        out
    }

    /// The rustc arguments that write placeholders into outputs. rustc applies the last
    /// matching prefix, so the most specific root comes last.
    pub fn remap_args(&self) -> Vec<String> {
        self.entries
            .iter()
            .rev()
            .map(|(local, ph)| format!("--remap-path-prefix={local}={ph}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_pass_through_with_their_roots_replaced() {
        let r = Roots::new(Path::new("/h/.cargo"), Some(Path::new("/h/p")), None);
        let raw = b"caf\xe9 /h/p/src/main.rs \xff\n";
        let n = r.normalize_bytes(raw);
        assert_eq!(n, b"caf\xe9 /rdht/workspace/src/main.rs \xff\n");
        assert_eq!(r.localize_bytes(&n), raw);
    }

    #[test]
    fn round_trip_and_whole_prefixes_only() {
        let r = Roots::new(
            Path::new("/home/a/.cargo"),
            Some(Path::new("/home/a/proj")),
            Some(Path::new("/home/a/proj/target")),
        );
        let s = "/home/a/proj/target/debug/deps/x.d: src/main.rs /home/a/proj/src/lib.rs \
                 /home/a/.cargo/registry/src/i/s-1/src/lib.rs /home/a/project2/x";
        let n = r.normalize(s);
        assert_eq!(
            n,
            "/rdht/target/debug/deps/x.d: src/main.rs /rdht/workspace/src/lib.rs \
             /rdht/cargo-home/registry/src/i/s-1/src/lib.rs /home/a/project2/x"
        );
        assert_eq!(r.localize(&n), s);
        assert_eq!(
            r.remap_args(),
            [
                "--remap-path-prefix=/home/a/proj=/rdht/workspace",
                "--remap-path-prefix=/home/a/.cargo=/rdht/cargo-home",
                "--remap-path-prefix=/home/a/proj/target=/rdht/target",
            ]
        );
    }

    #[test]
    fn target_dirs() {
        let t = |o: &str, tr| target_dir(Path::new(o), tr).map(|p| p.display().to_string());
        assert_eq!(
            t("/p/target/debug/deps", None).as_deref(),
            Some("/p/target")
        );
        assert_eq!(
            t("/p/target/release/build/quote-0a1b", None).as_deref(),
            Some("/p/target")
        );
        assert_eq!(
            t(
                "/p/target/x86_64-unknown-linux-gnu/debug/deps",
                Some("x86_64-unknown-linux-gnu")
            )
            .as_deref(),
            Some("/p/target")
        );
        assert_eq!(t("/p/out/probe", None), None);
    }
}
