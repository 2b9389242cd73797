//! What a build script's stdout declares about its inputs: the `rerun-if-changed` and
//! `rerun-if-env-changed` instructions, in both of cargo's syntaxes (`cargo:KEY=VALUE`
//! and, since cargo 1.77, `cargo::KEY=VALUE`).
//!
//! Owns: reading those lines. Does not own: what the inputs are worth (`inputs.rs`) or
//! the other instructions, which cargo itself reads from the replayed output.

/// The inputs a run declared, in the order printed (duplicates kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// `rerun-if-changed` paths, as printed (an empty one included).
    pub changed: Vec<String>,
    /// `rerun-if-env-changed` variable names.
    pub env_changed: Vec<String>,
}

impl Declared {
    /// Whether the run printed any `rerun-if` line. Without one, cargo reruns the
    /// script whenever any file of its package changes.
    pub fn any(&self) -> bool {
        !self.changed.is_empty() || !self.env_changed.is_empty()
    }
}

/// Largest stdout read for instructions; cargo itself reads the whole output, but a
/// run printing more than this is not shared (`capture.rs`).
pub const MAX_STDOUT: usize = 16 << 20;

/// The `rerun-if` instructions in `stdout`. Lines that are not UTF-8, or not
/// instructions, are skipped, as cargo skips them.
pub fn parse(stdout: &[u8]) -> Declared {
    let mut d = Declared::default();
    let stdout = &stdout[..stdout.len().min(MAX_STDOUT)];
    for line in stdout.split(|b| *b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some(rest) = line
            .strip_prefix("cargo::")
            .or_else(|| line.strip_prefix("cargo:"))
        else {
            continue;
        };
        let Some((key, value)) = rest.split_once('=') else {
            continue;
        };
        // Cargo trims the value's surrounding whitespace.
        let value = value.trim();
        match key.trim() {
            "rerun-if-changed" => d.changed.push(value.to_string()),
            "rerun-if-env-changed" => d.env_changed.push(value.to_string()),
            _ => {}
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_syntaxes_are_read_and_other_lines_skipped() {
        let out = b"cargo:rustc-link-lib=static=zstd\n\
            cargo:rerun-if-changed=build.rs\n\
            cargo::rerun-if-env-changed=CC\r\n\
            warning: not an instruction\n\
            cargo:rerun-if-changed=\n\
            cargo:rerun-if-changed= zstd/lib \n\
            cargo:rerun-if-env-changed\n\
            \xff\xfecargo:rerun-if-changed=binary\n\
            cargo:rerun-if-changed=build.rs";
        assert_eq!(
            parse(out),
            Declared {
                changed: vec![
                    "build.rs".into(),
                    String::new(),
                    "zstd/lib".into(),
                    "build.rs".into()
                ],
                env_changed: vec!["CC".into()],
            }
        );
        assert!(parse(out).any());
        assert!(!parse(b"cargo:rustc-cfg=has_x\n").any());
    }
}
