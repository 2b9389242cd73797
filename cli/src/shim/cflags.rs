//! C and C++ flags that keep machine-local paths out of what build scripts compile
//! (specs/build-key.md §9): `cargo dht-build` adds `-ffile-prefix-map=LOCAL=PLACEHOLDER`
//! for each machine-local root (cargo home, workspace, target dir) to the flags cc-rs
//! and cmake read, so C objects name the placeholders, as rustc's outputs do. A `-sys`
//! crate's static library then has the same bytes at any path, and so do the keys of
//! the units that link it and the binaries.
//!
//! Owns: finding the roots of a `cargo build` from its arguments, the flags, and which
//! variables carry them. Does not own: the roots' placeholders (`roots`) or running
//! cargo (the binary).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::roots::Roots;

/// The variables cc-rs reads C flags from (it takes the most specific one set), and
/// their C++ forms. Ours are added to `CFLAGS`/`CXXFLAGS` and to every more specific one
/// the caller set.
const GENERIC: [&str; 2] = ["CFLAGS", "CXXFLAGS"];

/// The machine-local roots of `cargo build ARGS` run in `cwd` with environment `env`:
/// the cargo home, the workspace (the nearest directory with `Cargo.lock`, else with
/// `Cargo.toml`, from `--manifest-path` or `cwd`) and the target dir (`--target-dir`,
/// `CARGO_TARGET_DIR`, else the workspace's `target`). A root not found is left out:
/// its paths then stay in the objects, which only costs hits.
pub fn build_roots(args: &[String], cwd: &Path, env: &dyn Fn(&str) -> Option<String>) -> Roots {
    let workspace = workspace(args, cwd);
    let target = flag(args, "--target-dir")
        .or_else(|| env("CARGO_TARGET_DIR"))
        .map(|t| cwd.join(t))
        .or_else(|| workspace.as_ref().map(|w| w.join("target")));
    let home = env("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_default();
    Roots::new(&home, workspace.as_deref(), target.as_deref())
}

/// The value of cargo option `name` in `args` (`--name V` or `--name=V`).
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&format!("{name}="))
            .map(str::to_string)
            .or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
    })
}

/// The workspace of `cargo build ARGS` run in `cwd`: the nearest directory with
/// `Cargo.lock`, else with `Cargo.toml`, from `--manifest-path` or `cwd`.
pub fn workspace(args: &[String], cwd: &Path) -> Option<PathBuf> {
    let start = match flag(args, "--manifest-path") {
        Some(m) => cwd.join(m).parent().map(Path::to_path_buf),
        None => Some(cwd.to_path_buf()),
    };
    let nearest = |file: &str| {
        start
            .as_deref()?
            .ancestors()
            .find(|d| d.join(file).is_file())
            .map(Path::to_path_buf)
    };
    nearest("Cargo.lock").or_else(|| nearest("Cargo.toml"))
}

/// Whether the C compiler cargo's build scripts will use (`CC`, else `cc`) accepts
/// `-ffile-prefix-map` (GCC 8, clang 10 and later): an older one would fail the build.
pub fn compiler_supports_prefix_map(env: &dyn Fn(&str) -> Option<String>) -> bool {
    let cc = env("CC").unwrap_or_else(|| "cc".into());
    let mut parts = cc.split_whitespace();
    let Some(program) = parts.next() else {
        return false;
    };
    Command::new(program)
        .args(parts)
        .args([
            "-ffile-prefix-map=/a=/b",
            "-x",
            "c",
            "-E",
            "-o",
            "/dev/null",
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The variables to set for cargo: each C-flags variable with the prefix maps of
/// `roots` appended (most specific root last: compilers apply the last map that
/// matches), keeping what the caller had. `vars` is the caller's environment.
pub fn prefix_map_env(roots: &Roots, vars: &[(String, String)]) -> Vec<(String, String)> {
    let maps: Vec<String> = roots
        .remap_args()
        .iter()
        .filter_map(|a| a.strip_prefix("--remap-path-prefix="))
        .map(|m| format!("-ffile-prefix-map={m}"))
        .collect();
    if maps.is_empty() {
        return Vec::new();
    }
    let is_cflags = |k: &str| {
        GENERIC.iter().any(|g| {
            k == *g
                || k.strip_prefix(g).is_some_and(|rest| rest.starts_with('_'))
                || k == format!("TARGET_{g}")
                || k == format!("HOST_{g}")
        })
    };
    let mut out: Vec<(String, String)> = GENERIC
        .iter()
        .filter(|g| !vars.iter().any(|(k, _)| k == *g))
        .map(|g| (g.to_string(), String::new()))
        .collect();
    out.extend(vars.iter().filter(|(k, _)| is_cflags(k)).cloned());
    for (_, v) in &mut out {
        for m in &maps {
            if !v.is_empty() {
                v.push(' ');
            }
            v.push_str(m);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_maps_go_to_every_cflags_variable_the_caller_set_and_the_generic_ones() {
        let roots = Roots::new(
            Path::new("/home/a/.cargo"),
            Some(Path::new("/home/a/proj")),
            Some(Path::new("/home/a/proj/target")),
        );
        let vars = [
            (
                "CFLAGS_x86_64_unknown_linux_gnu".to_string(),
                "-O1".to_string(),
            ),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let maps = "-ffile-prefix-map=/home/a/proj=/rdht/workspace \
                    -ffile-prefix-map=/home/a/.cargo=/rdht/cargo-home \
                    -ffile-prefix-map=/home/a/proj/target=/rdht/target";
        assert_eq!(
            prefix_map_env(&roots, &vars),
            vec![
                ("CFLAGS".to_string(), maps.to_string()),
                (
                    "CFLAGS_x86_64_unknown_linux_gnu".to_string(),
                    format!("-O1 {maps}")
                ),
                ("CXXFLAGS".to_string(), maps.to_string()),
            ]
        );
    }

    #[test]
    fn roots_of_a_build_come_from_its_arguments_and_environment() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        std::fs::create_dir_all(ws.join("member/src")).unwrap();
        std::fs::write(ws.join("Cargo.lock"), "").unwrap();
        std::fs::write(ws.join("member/Cargo.toml"), "").unwrap();
        let env = |k: &str| (k == "HOME").then(|| "/home/u".to_string());
        let r = build_roots(&[], &ws.join("member/src"), &env);
        let ws_s = ws.display().to_string();
        let mut got = r.remap_args();
        got.sort();
        let mut want = vec![
            format!("--remap-path-prefix={ws_s}=/rdht/workspace"),
            "--remap-path-prefix=/home/u/.cargo=/rdht/cargo-home".to_string(),
            format!("--remap-path-prefix={ws_s}/target=/rdht/target"),
        ];
        want.sort();
        assert_eq!(got, want);
        let args = vec!["--target-dir".to_string(), "/elsewhere/t".to_string()];
        let r = build_roots(&args, &ws, &env);
        assert!(
            r.remap_args()
                .contains(&"--remap-path-prefix=/elsewhere/t=/rdht/target".into()),
            "{:?}",
            r.remap_args()
        );
    }

    #[test]
    fn this_machines_compiler_takes_prefix_maps() {
        assert!(compiler_supports_prefix_map(&|_| None));
        assert!(!compiler_supports_prefix_map(&|k| {
            (k == "CC").then(|| "/nonexistent/cc".to_string())
        }));
    }
}
