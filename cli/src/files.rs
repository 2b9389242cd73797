//! Collecting the files of `rdht put PATH...`.
//!
//! A file contributes itself under its file name; a directory contributes every file
//! below it, at its path relative to that directory. Symbolic links and special files
//! are refused (an artifact holds regular files only). Paths must be UTF-8, because
//! artifact paths are (specs/blocks.md §6).
//!
//! Owns: the walk and its errors. Does not own: reading file contents (the daemon does).

use std::fs;
use std::path::{Path, PathBuf};

use rdht_api::proto::PutFile;

/// A path given to `put` cannot be turned into artifact files.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Reading a path or a directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A symlink, socket, device or FIFO.
    #[error("{}: not a regular file or directory (symlinks and special files are not stored)", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
    },
    /// A name that is not UTF-8.
    #[error("{}: file names must be UTF-8", path.display())]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// Nothing to store.
    #[error("no files found under the given paths")]
    Empty,
}

fn utf8(path: &Path) -> Result<String, FilesError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| FilesError::NotUtf8 {
            path: path.to_path_buf(),
        })
}

/// The files to put for `paths`, with absolute sources, sorted by artifact path.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PutFile>, FilesError> {
    let mut out = Vec::new();
    for given in paths {
        let io = |source| FilesError::Io {
            path: given.clone(),
            source,
        };
        let abs = std::path::absolute(given).map_err(io)?;
        let meta = fs::symlink_metadata(&abs).map_err(io)?;
        if meta.is_dir() {
            walk(&abs, Path::new(""), &mut out)?;
        } else if meta.is_file() {
            let name = abs.file_name().map(Path::new).unwrap_or(Path::new(""));
            out.push(PutFile {
                source: utf8(&abs)?,
                path: utf8(name)?,
            });
        } else {
            return Err(FilesError::NotRegular {
                path: given.clone(),
            });
        }
    }
    if out.is_empty() {
        return Err(FilesError::Empty);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(dir: &Path, rel: &Path, out: &mut Vec<PutFile>) -> Result<(), FilesError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FilesError::Io { path, source }
    };
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = rel.join(e.file_name());
        let ty = e.file_type().map_err(io(&path))?;
        if ty.is_dir() {
            walk(&path, &rel, out)?;
        } else if ty.is_file() {
            out.push(PutFile {
                source: utf8(&path)?,
                path: utf8(&rel)?,
            });
        } else {
            return Err(FilesError::NotRegular { path });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("tree");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/c.rlib"), b"c").unwrap();
        fs::write(root.join("top"), b"t").unwrap();
        fs::write(d.path().join("single"), b"s").unwrap();
        let got = collect(&[root.clone(), d.path().join("single")]).unwrap();
        let paths: Vec<_> = got.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/b/c.rlib", "single", "top"]);
        assert_eq!(got[0].source, root.join("a/b/c.rlib").to_str().unwrap());
        std::os::unix::fs::symlink(root.join("top"), root.join("link")).unwrap();
        let err = collect(std::slice::from_ref(&root)).unwrap_err();
        assert!(err.to_string().ends_with(
            "not a regular file or directory (symlinks and special files are not stored)"
        ));
        let empty = d.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert!(matches!(collect(&[empty]), Err(FilesError::Empty)));
        let err = collect(&[d.path().join("missing")]).unwrap_err();
        assert!(
            err.to_string().contains("No such file or directory"),
            "{err}"
        );
    }
}
