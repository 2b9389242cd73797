//! Manifests: the artifact of one build unit (specs/blocks.md §6).
//!
//! A [`Manifest`] lists files (relative path, executable bit, size, DAG root) and the
//! unit's [`Labels`]. Its canonical postcard encoding is itself stored as a DAG; that
//! DAG's root is the *artifact root*. Files are sorted by path; paths are validated so
//! that exporting a manifest can never write outside its target directory.
//!
//! Owns: the manifest format and path rules. Does not own: reading or writing files.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::block::Link;
use crate::codec::{self, DecodeError};
use crate::dag::{AssembleError, BlockSource, DagBuilder, Limits, assemble_to_vec};
use crate::id::BlockId;

/// The manifest format version this crate writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// Longest encoded manifest: 16 MiB.
pub const MAX_MANIFEST_LEN: usize = 16 << 20;
/// Most files in one manifest.
pub const MAX_FILES: usize = 100_000;
/// Longest path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest label value, in bytes.
pub const MAX_LABEL_LEN: usize = 256;
/// Most crate types in [`Labels::crate_types`].
pub const MAX_CRATE_TYPES: usize = 8;

/// What a build unit is: shown to users and signed into records. Not used to locate
/// anything (the build key does that).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Labels {
    /// Crate name, e.g. `serde`.
    pub crate_name: String,
    /// Crate version, e.g. `1.0.219`.
    pub crate_version: String,
    /// Target triple, e.g. `x86_64-unknown-linux-gnu`.
    pub target: String,
    /// `rustc --version` of the compiler, e.g. `rustc 1.95.0 (59807616e 2026-04-14)`.
    pub rustc: String,
    /// Crate types, e.g. `["lib"]` or `["proc-macro"]`.
    pub crate_types: Vec<String>,
}

impl Labels {
    /// Checks lengths and characters.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let fields = [
            ("crate_name", &self.crate_name),
            ("crate_version", &self.crate_version),
            ("target", &self.target),
            ("rustc", &self.rustc),
        ];
        let types = self.crate_types.iter().map(|t| ("crate_types", t));
        for (field, value) in fields.into_iter().chain(types) {
            if value.len() > MAX_LABEL_LEN {
                return Err(ManifestError::Label {
                    field,
                    reason: format!("{} bytes, more than {MAX_LABEL_LEN}", value.len()),
                });
            }
            if value.chars().any(char::is_control) {
                return Err(ManifestError::Label {
                    field,
                    reason: format!("{value:?} contains a control character"),
                });
            }
        }
        if self.crate_types.len() > MAX_CRATE_TYPES {
            return Err(ManifestError::Label {
                field: "crate_types",
                reason: format!(
                    "{} entries, more than {MAX_CRATE_TYPES}",
                    self.crate_types.len()
                ),
            });
        }
        Ok(())
    }
}

/// One file of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path with `/` separators (see [`validate_path`]).
    pub path: String,
    /// Whether the file is written with the executable bit.
    pub executable: bool,
    /// Bytes in the file.
    pub size: u64,
    /// Root of the file's DAG.
    pub root: BlockId,
}

/// The files and labels of one build unit, in canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    version: u32,
    labels: Labels,
    files: Vec<FileEntry>,
}

/// A manifest, path or label that breaks the format's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// A path that is absolute, escapes, or is otherwise not allowed.
    #[error("invalid path {path:?}: {reason}")]
    Path {
        /// The path (cut to 200 characters).
        path: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// Two files with the same path.
    #[error("duplicate path {path:?}")]
    Duplicate {
        /// The path.
        path: String,
    },
    /// A path that is a file and also the parent directory of another file.
    #[error("path {path:?} is a file and also a directory of {other:?}")]
    Conflict {
        /// The file.
        path: String,
        /// The file under it.
        other: String,
    },
    /// File sizes whose sum does not fit in 64 bits: no store or transfer could hold
    /// the artifact, and its total size would overflow.
    #[error("file sizes add up to more than 2^64 - 1 bytes at {path:?}")]
    SizeOverflow {
        /// The file whose size makes the sum overflow.
        path: String,
    },
    /// More than [`MAX_FILES`] files.
    #[error("{count} files, more than the limit of {MAX_FILES}")]
    TooManyFiles {
        /// How many.
        count: usize,
    },
    /// A label value that is too long or has control characters.
    #[error("invalid label {field}: {reason}")]
    Label {
        /// The label's name.
        field: &'static str,
        /// The rule it breaks.
        reason: String,
    },
    /// A manifest version this build does not read.
    #[error(
        "manifest format version {version} is not supported (this build reads {MANIFEST_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// Files not sorted by path in a decoded manifest.
    #[error("manifest files are not sorted by path at {path:?}")]
    Unsorted {
        /// The first path out of order.
        path: String,
    },
    /// The bytes are not a manifest.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

fn cut(path: &str) -> String {
    path.chars().take(200).collect()
}

/// Checks that `path` is a safe relative path: non-empty, at most [`MAX_PATH_LEN`]
/// bytes, `/`-separated components that are neither empty, `.` nor `..`, and no NUL
/// or backslash anywhere.
pub fn validate_path(path: &str) -> Result<(), ManifestError> {
    let err = |reason| {
        Err(ManifestError::Path {
            path: cut(path),
            reason,
        })
    };
    if path.is_empty() {
        return err("empty");
    }
    if path.len() > MAX_PATH_LEN {
        return err("longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return err("absolute");
    }
    if path.contains('\0') {
        return err("contains NUL");
    }
    if path.contains('\\') {
        return err("contains a backslash");
    }
    for component in path.split('/') {
        match component {
            "" => return err("has an empty component"),
            "." => return err("has a '.' component"),
            ".." => return err("has a '..' component"),
            _ => {}
        }
    }
    Ok(())
}

impl Manifest {
    /// A manifest over `files` (any order; they are sorted) with `labels`. Rejects bad
    /// paths, duplicates, file/directory conflicts and bad labels.
    pub fn new(labels: Labels, mut files: Vec<FileEntry>) -> Result<Manifest, ManifestError> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let m = Manifest {
            version: MANIFEST_VERSION,
            labels,
            files,
        };
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        self.labels.validate()?;
        if self.files.len() > MAX_FILES {
            return Err(ManifestError::TooManyFiles {
                count: self.files.len(),
            });
        }
        let mut seen = HashSet::with_capacity(self.files.len());
        let mut total = 0u64;
        for (i, f) in self.files.iter().enumerate() {
            validate_path(&f.path)?;
            total = total
                .checked_add(f.size)
                .ok_or_else(|| ManifestError::SizeOverflow { path: cut(&f.path) })?;
            if i > 0 {
                let prev = &self.files[i - 1].path;
                if prev == &f.path {
                    return Err(ManifestError::Duplicate { path: cut(&f.path) });
                }
                if prev > &f.path {
                    return Err(ManifestError::Unsorted { path: cut(&f.path) });
                }
            }
            seen.insert(f.path.as_str());
        }
        for f in &self.files {
            let mut dir = f.path.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                if seen.contains(parent) {
                    return Err(ManifestError::Conflict {
                        path: cut(parent),
                        other: cut(&f.path),
                    });
                }
                dir = parent;
            }
        }
        Ok(())
    }

    /// The format version (always [`MANIFEST_VERSION`] for a value of this type).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The unit's labels.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Files, sorted by path.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Sum of file sizes.
    pub fn total_size(&self) -> u64 {
        // Invariant: `validate` (which every constructor runs) refused a manifest whose
        // sizes overflow; saturating keeps this a number even if that ever changed.
        self.files
            .iter()
            .fold(0u64, |sum, f| sum.saturating_add(f.size))
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes and validates a canonical encoding of at most [`MAX_MANIFEST_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(DecodeError::TooLarge {
                what: "manifest",
                len: bytes.len(),
                max: MAX_MANIFEST_LEN,
            }
            .into());
        }
        // The version is the first field; read it alone so a newer format gets a clear
        // error instead of a parse failure.
        if let Ok((version, _)) = postcard::take_from_bytes::<u32>(bytes)
            && version != MANIFEST_VERSION
        {
            return Err(ManifestError::UnsupportedVersion { version });
        }
        let m: Manifest = codec::decode("manifest", bytes, MAX_MANIFEST_LEN)?;
        m.validate()?;
        Ok(m)
    }

    /// The manifest's DAG: its root (the artifact root) and blocks in post-order.
    pub fn to_dag(&self) -> (Link, Vec<Block>) {
        DagBuilder::build(&self.encode())
    }

    /// Reads, verifies and decodes the manifest under artifact root `root`.
    pub fn from_dag<S, E>(root: BlockId, source: &mut S) -> Result<Manifest, FromDagError<E>>
    where
        S: BlockSource<Error = E> + ?Sized,
    {
        let limits = Limits {
            max_size: MAX_MANIFEST_LEN as u64,
            ..Limits::default()
        };
        let bytes = assemble_to_vec(root, limits, source)?;
        Ok(Manifest::decode(&bytes)?)
    }
}

/// Reading a manifest from its DAG failed.
#[derive(Debug, thiserror::Error)]
pub enum FromDagError<E> {
    /// Its blocks could not be read or verified.
    #[error("reading manifest: {0}")]
    Assemble(#[from] AssembleError<E>),
    /// Its bytes are not a valid manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            executable: false,
            size: 0,
            root: BlockId::from(blake3::hash(&[0])),
        }
    }

    #[test]
    fn path_rules() {
        for ok in [
            "a",
            "a/b",
            "lib/libfoo-1234.rlib",
            "a..b",
            ".hidden",
            "dir/.d",
        ] {
            validate_path(ok).unwrap();
        }
        let cases = [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("../x", "has a '..' component"),
            ("a/../../x", "has a '..' component"),
            ("a/./b", "has a '.' component"),
            ("a//b", "has an empty component"),
            ("a/", "has an empty component"),
            ("a\\b", "contains a backslash"),
            ("a\0b", "contains NUL"),
        ];
        for (bad, why) in cases {
            match validate_path(bad) {
                Err(ManifestError::Path { reason, .. }) => assert_eq!(reason, why, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(validate_path(&"a".repeat(4097)).is_err());
    }

    #[test]
    fn duplicates_and_conflicts_are_rejected() {
        let labels = Labels::default();
        assert_eq!(
            Manifest::new(labels.clone(), vec![entry("b"), entry("a"), entry("b")]),
            Err(ManifestError::Duplicate { path: "b".into() })
        );
        assert_eq!(
            Manifest::new(
                labels.clone(),
                vec![entry("a"), entry("a-x"), entry("a/b/c")]
            ),
            Err(ManifestError::Conflict {
                path: "a".into(),
                other: "a/b/c".into()
            })
        );
        let m = Manifest::new(labels, vec![entry("z"), entry("a/b"), entry("a/c")]).unwrap();
        let paths: Vec<_> = m.files().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/b", "a/c", "z"]);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    /// Fuzzing (issue 19, `manifest` target) found that a manifest whose file sizes add
    /// up past `u64::MAX` decoded, and `total_size` then overflowed (a panic in debug
    /// builds, a wrapped size in release).
    #[test]
    fn file_sizes_overflowing_u64_are_rejected_not_summed() {
        let mut a = entry("a");
        a.size = u64::MAX;
        let mut b = entry("b");
        b.size = 1;
        let over = Manifest {
            version: 1,
            labels: Labels::default(),
            files: vec![a.clone(), b.clone()],
        };
        assert_eq!(
            Manifest::decode(&over.encode()),
            Err(ManifestError::SizeOverflow { path: "b".into() })
        );
        assert_eq!(
            Manifest::new(Labels::default(), vec![b, a.clone()]),
            Err(ManifestError::SizeOverflow { path: "b".into() })
        );
        let max = Manifest::new(Labels::default(), vec![a]).unwrap();
        assert_eq!(max.total_size(), u64::MAX);
        assert_eq!(Manifest::decode(&max.encode()).unwrap(), max);
    }

    #[test]
    fn unsorted_and_future_versions_are_rejected() {
        let m = Manifest {
            version: 1,
            labels: Labels::default(),
            files: vec![entry("b"), entry("a")],
        };
        assert_eq!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::Unsorted { path: "a".into() })
        );
        let m2 = Manifest { version: 2, ..m };
        assert_eq!(
            Manifest::decode(&m2.encode()),
            Err(ManifestError::UnsupportedVersion { version: 2 })
        );
    }
}
