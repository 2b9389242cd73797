//! Cargo's last touch of a check unit's outputs, done by the shim first (issue 24).
//!
//! Once a `cargo check` unit's compile has succeeded, and so after the wrapper has
//! exited, cargo sets the modification time of the unit's outputs (its `.rmeta`) back to
//! the unit's invocation time: the modification time of
//! `<profile dir>/.fingerprint/<package><extra-filename>/invoked.timestamp`, which cargo
//! writes just before it runs the wrapper (cargo's `compiler/mod.rs`, a workaround for
//! rust-lang/rust#114669; observed with cargo 1.95). An output described to the daemon
//! before that shift no longer matches the description when the daemon's job reads it,
//! and the job refuses it as changed. So the shim makes the same shift itself as soon as rustc has
//! exited, and on a hit once the outputs are in place: cargo's own shift then changes
//! nothing, the description stays true, and sidecars written afterwards stay valid.
//!
//! Only metadata-only units (`--emit` with `metadata` and without `link`, which is what
//! cargo's check mode passes) are shifted, and only when the stamp file exists; anything
//! else is left exactly as rustc wrote it.
//!
//! Owns: recognising a check unit, finding its stamp file, applying the stamp. Does not
//! own: which files are outputs (`miss.rs`, `hit.rs`) or the identity check (the daemon,
//! specs/local-api.md §3.1).

use std::fs::{self, File, FileTimes};
use std::path::{Path, PathBuf};

use super::args::{Arg, Invocation};

/// The file cargo writes before running a unit and whose modification time it gives a
/// check unit's outputs after the compile.
const INVOKED: &str = "invoked.timestamp";

/// The stamp file of a cargo check unit, or `None` when this is not one (not
/// metadata-only, no `-C extra-filename`, no package name, or an output directory
/// outside cargo's `<profile>/deps` layout). `package` is `CARGO_PKG_NAME`.
pub fn stamp_file(inv: &Invocation, out_dir: &Path, package: Option<&str>) -> Option<PathBuf> {
    let metadata_only =
        inv.emit.iter().any(|e| e == "metadata") && !inv.emit.iter().any(|e| e == "link");
    if !metadata_only || out_dir.file_name()? != "deps" {
        return None;
    }
    let extra = inv.args.iter().find_map(|a| match a {
        Arg::Flag(f, Some(v)) if f == "-C" || f == "--codegen" => v.strip_prefix("extra-filename="),
        _ => None,
    })?;
    let dir = format!("{}{extra}", package?);
    // A package name or suffix that could leave the fingerprint directory is not cargo's.
    if dir.contains('/') || dir.starts_with('.') {
        return None;
    }
    let stamp = out_dir
        .parent()?
        .join(".fingerprint")
        .join(dir)
        .join(INVOKED);
    stamp.is_file().then_some(stamp)
}

/// Gives each of `outputs` (dep-info excepted: cargo does not touch it) the modification
/// and access time of `stamp`, as cargo will. Errors are returned for the caller to
/// report; a file left unshifted only costs its sharing.
pub fn apply(stamp: &Path, outputs: &[PathBuf]) -> std::io::Result<()> {
    let when = fs::metadata(stamp)
        .and_then(|m| m.modified())
        .map_err(|e| with_path(stamp, e))?;
    for o in outputs
        .iter()
        .filter(|o| o.extension().is_none_or(|e| e != "d"))
    {
        File::open(o)
            .and_then(|f| f.set_times(FileTimes::new().set_modified(when).set_accessed(when)))
            .map_err(|e| with_path(o, e))?;
    }
    Ok(())
}

fn with_path(p: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::shim::args::parse;

    fn inv(emit: &str) -> Invocation {
        let line = format!(
            "--crate-name memchr --error-format=json --json=artifacts --crate-type lib \
             --emit={emit} -C metadata=0c84 -C extra-filename=-0c845bcc82b03267 \
             --out-dir /p/target/debug/deps src/lib.rs"
        );
        parse(&line.split(' ').map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn only_a_cargo_check_unit_with_its_stamp_file_is_shifted() {
        let d = tempfile::tempdir().unwrap();
        let deps = d.path().join("debug/deps");
        let fp = d.path().join("debug/.fingerprint/memchr-0c845bcc82b03267");
        fs::create_dir_all(&deps).unwrap();
        fs::create_dir_all(&fp).unwrap();
        let check = inv("dep-info,metadata");
        // No stamp file yet: not found.
        assert_eq!(stamp_file(&check, &deps, Some("memchr")), None);
        fs::write(fp.join(INVOKED), "started").unwrap();
        let stamp = stamp_file(&check, &deps, Some("memchr")).unwrap();
        assert_eq!(stamp, fp.join(INVOKED));
        // A full build, another package, no package, or an odd layout: not a check unit.
        assert_eq!(
            stamp_file(&inv("dep-info,metadata,link"), &deps, Some("memchr")),
            None
        );
        assert_eq!(
            stamp_file(&inv("dep-info,link"), &deps, Some("memchr")),
            None
        );
        assert_eq!(stamp_file(&check, &deps, Some("itoa")), None);
        assert_eq!(stamp_file(&check, &deps, None), None);
        assert_eq!(stamp_file(&check, d.path(), Some("memchr")), None);
        assert_eq!(stamp_file(&check, &deps, Some("../x")), None);

        // Applying it gives the rmeta the stamp's time, and leaves dep-info alone.
        let rmeta = deps.join("libmemchr-0c845bcc82b03267.rmeta");
        let dep_info = deps.join("memchr-0c845bcc82b03267.d");
        fs::write(&rmeta, b"rmeta").unwrap();
        fs::write(&dep_info, b"d").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::open(fp.join(INVOKED))
            .unwrap()
            .set_times(FileTimes::new().set_modified(old))
            .unwrap();
        let d_before = fs::metadata(&dep_info).unwrap().modified().unwrap();
        apply(&stamp, &[rmeta.clone(), dep_info.clone()]).unwrap();
        assert_eq!(fs::metadata(&rmeta).unwrap().modified().unwrap(), old);
        assert_eq!(
            fs::metadata(&dep_info).unwrap().modified().unwrap(),
            d_before
        );
        let err = apply(&stamp, &[deps.join("gone.rmeta")]).unwrap_err();
        assert!(err.to_string().contains("gone.rmeta"), "{err}");
    }
}
