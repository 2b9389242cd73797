//! The launcher that puts the shim between cargo and a build script
//! (specs/build-key.md §10.1). Cargo runs build scripts itself, not through
//! `RUSTC_WRAPPER`; so once the shim has written a build script's binary (hit or miss),
//! it moves the binary aside, as `.rdht-build-script` in the same directory, and puts at
//! cargo's path a small `sh` script that runs `cargo-dht-build --rdht-build-script` on
//! it. What the run's key needs from the compile (the script's build key, roots, scope)
//! goes beside it in `.rdht-build-script.json`.
//!
//! Invariant: the launcher keeps the binary's modification time, so cargo's freshness
//! checks see what they would have seen; and when the shim is gone it runs the script
//! directly, so a removed or moved shim never fails a build. Owns: writing and reading
//! those files. Does not own: what the run does (`run.rs`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::shim::args::Arg;
use crate::shim::inputs::Unit;
use crate::shim::roots::{CARGO_HOME, TARGET, WORKSPACE};

/// The build script's real binary, beside the launcher.
pub const REAL: &str = ".rdht-build-script";
/// What the run needs to know of the compile, beside the launcher.
pub const META: &str = ".rdht-build-script.json";
/// The shim's first argument when a launcher runs it.
pub const RUN_ARG: &str = "--rdht-build-script";
/// Largest metadata file read.
const MAX_META: u64 = 64 << 10;

/// What the run of a build script needs to know of the compile unit that built it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The format of this file (1).
    pub version: u32,
    /// The build script's build key (hex).
    pub script_key: String,
    /// A crates.io package: its runs may be published to every swarm.
    pub public: bool,
    /// The compile's cargo home.
    pub cargo_home: String,
    /// The compile's workspace root, when it knew one.
    pub workspace: Option<String>,
    /// The compile's target directory, when it knew one.
    pub target: Option<String>,
    /// The `rustc --version` label of the compile.
    pub rustc: String,
}

/// The file rustc wrote for build-script unit `unit`: `--out-dir/CRATE EXTRA`.
fn binary(unit: &Unit) -> Option<PathBuf> {
    let name = unit.inv.crate_name.as_deref()?;
    let extra = unit.inv.args.iter().find_map(|a| match a {
        Arg::Flag(f, Some(v)) if f == "-C" || f == "--codegen" => v.strip_prefix("extra-filename="),
        _ => None,
    });
    Some(unit.out_dir.join(format!("{name}{}", extra.unwrap_or(""))))
}

/// `s` quoted for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The launcher's text, running `shim` on the real binary beside it.
pub fn launcher_text(shim: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         # Written by cargo-dht-build: runs this build script through the rdht cache\n\
         # (specs/build-key.md, build-script runs). The script itself is {REAL} beside it.\n\
         d=\"${{0%/*}}\"\n\
         s={}\n\
         if [ -x \"$s\" ]; then exec \"$s\" {RUN_ARG} \"$d/{REAL}\" \"$@\"; fi\n\
         exec \"$d/{REAL}\" \"$@\"\n",
        sh_quote(&shim.to_string_lossy())
    )
}

/// Puts the launcher in place of build-script unit `unit`'s binary, once rustc (or a
/// hit) has written it. On failure the binary is left where it was, so cargo runs the
/// script directly.
pub fn install(unit: &Unit, shim: &Path) -> Result<(), String> {
    let bin = binary(unit).ok_or("no crate name")?;
    let dir = &unit.out_dir;
    let real = dir.join(REAL);
    let meta_path = dir.join(META);
    let roots = &unit.roots;
    let meta = Meta {
        version: 1,
        script_key: unit.key.to_string(),
        public: unit.public,
        cargo_home: roots.local(CARGO_HOME).unwrap_or_default().to_string(),
        workspace: roots.local(WORKSPACE).map(str::to_string),
        target: roots.local(TARGET).map(str::to_string),
        rustc: unit.labels.rustc.clone(),
    };
    let named = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let modified = fs::metadata(&bin)
        .and_then(|m| m.modified())
        .map_err(|e| named(&bin, e))?;
    let json = serde_json::to_vec(&meta).map_err(|e| e.to_string())?;
    fs::write(&meta_path, json).map_err(|e| named(&meta_path, e))?;
    let tmp = dir.join(format!(".rdht-launcher-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(launcher_text(shim).as_bytes())?;
        f.set_permissions(fs::Permissions::from_mode(0o755))?;
        f.set_modified(modified)?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(named(&tmp, e));
    }
    fs::rename(&bin, &real).map_err(|e| named(&bin, e))?;
    if let Err(e) = fs::rename(&tmp, &bin) {
        let _ = fs::rename(&real, &bin);
        let _ = fs::remove_file(&tmp);
        return Err(named(&bin, e));
    }
    Ok(())
}

/// Reads the metadata beside the real binary `real`.
pub fn read_meta(real: &Path) -> Result<Meta, String> {
    let path = real.with_file_name(META);
    let named = |e: String| format!("{}: {e}", path.display());
    let len = fs::metadata(&path).map_err(|e| named(e.to_string()))?.len();
    if len > MAX_META {
        return Err(named(format!("{len} bytes, more than {MAX_META}")));
    }
    let bytes = fs::read(&path).map_err(|e| named(e.to_string()))?;
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| named(e.to_string()))?;
    if meta.version != 1 {
        return Err(named(format!("unsupported version {}", meta.version)));
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launcher_runs_the_shim_and_without_it_the_script() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join(REAL);
        fs::write(&script, "#!/bin/sh\necho script \"$@\"\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let shim = d.path().join("it's the shim");
        fs::write(&shim, "#!/bin/sh\necho shim \"$@\"\n").unwrap();
        fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
        let launcher = d.path().join("build-script-build");
        fs::write(&launcher, launcher_text(&shim)).unwrap();
        fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755)).unwrap();
        let run = || {
            let out = std::process::Command::new(&launcher)
                .arg("x y")
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(run(), format!("shim {RUN_ARG} {} x y\n", script.display()));
        fs::remove_file(&shim).unwrap();
        assert_eq!(run(), "script x y\n");
    }
}
