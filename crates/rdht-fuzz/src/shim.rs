//! Targets over the cargo shim's parsers (`rdht-cli`): rustc command lines, rustc's
//! JSON messages, and dep-info (`# env-dep` lines, and the machine-local roots replaced
//! both ways in stored dep-info), and a build script's `rerun-if` instructions.
//!
//! Does not own: running rustc or talking to the daemon.

use std::path::Path;
use std::sync::LazyLock;

use rdht_cli::shim::args::{Arg, parse};
use rdht_cli::shim::fuzzing::{artifacts, build_script_output, env_deps, forward};
use rdht_cli::shim::roots::{self, Roots};

/// The roots of a unit on a fuzzing machine: a target directory inside the workspace,
/// so that one root is a prefix of another.
static ROOTS: LazyLock<Roots> = LazyLock::new(|| {
    Roots::new(
        Path::new("/home/u/.cargo"),
        Some(Path::new("/home/u/ws")),
        Some(Path::new("/home/u/ws/target")),
    )
});

/// Writes `args` back as a command line that means the same.
fn render(args: &[Arg]) -> Vec<String> {
    let mut out = Vec::new();
    for a in args {
        match a {
            Arg::Flag(f, Some(v)) if f.starts_with("--") => out.push(format!("{f}={v}")),
            Arg::Flag(f, Some(v)) => out.extend([f.clone(), v.clone()]),
            Arg::Flag(f, None) => out.push(f.clone()),
            Arg::Input(i) => out.push(i.clone()),
        }
    }
    out
}

/// A rustc command line, one argument per line. What is parsed, written back, parses
/// to the same invocation.
pub fn args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let args: Vec<String> = text.split('\n').map(str::to_string).collect();
    let inv = parse(&args);
    assert!(inv.args.len() <= args.len());
    assert_eq!(parse(&render(&inv.args)), inv);
}

/// rustc's stderr: the artifact notifications the miss path reads, and the forwarding
/// that passes every line on with local paths while keeping rustc's bytes.
pub fn rustc_json(data: &[u8]) {
    let found = artifacts(data);
    assert!(found.len() <= data.split(|b| *b == b'\n').count());
    for path in &found {
        let path = path
            .to_str()
            .expect("artifact paths come from JSON strings");
        let line =
            serde_json::json!({"$message_type": "artifact", "artifact": path, "emit": "link"});
        assert_eq!(artifacts(line.to_string().as_bytes()), [Path::new(path)]);
    }
    let mut shown = Vec::new();
    let kept = forward(data, &mut shown, &ROOTS);
    assert_eq!(kept, data);
    assert_eq!(shown, ROOTS.localize_bytes(data));
}

/// Dep-info text: its `# env-dep` lines, and the roots replaced when it is stored and
/// replaced back when a hit places it: text naming no placeholder comes back unchanged.
pub fn dep_info(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let deps = env_deps(&text);
    for (name, value) in &deps {
        let line = match value {
            Some(v) => format!("# env-dep:{name}={v}"),
            None => format!("# env-dep:{name}"),
        };
        assert_eq!(env_deps(&line), [(*name, *value)]);
    }
    // A placeholder already in the text cannot be told from a replaced root.
    let stored = ROOTS.normalize(&text);
    let placeholders = [roots::CARGO_HOME, roots::WORKSPACE, roots::TARGET];
    if !placeholders.iter().any(|p| text.contains(p)) {
        assert_eq!(ROOTS.localize(&stored), text);
    }
}

/// A build script's stdout: the `rerun-if` instructions it declares. Each value is
/// trimmed and one line of the input; written back as instructions, they parse the same.
pub fn script_output(data: &[u8]) {
    let d = build_script_output(data);
    let lines = data.split(|b| *b == b'\n').count();
    assert!(d.changed.len() + d.env_changed.len() <= lines);
    let mut again = String::new();
    for v in d.changed.iter().chain(&d.env_changed) {
        assert_eq!(v.trim(), v);
        assert!(!v.contains('\n'));
    }
    for v in &d.changed {
        again.push_str(&format!("cargo:rerun-if-changed={v}\n"));
    }
    for v in &d.env_changed {
        again.push_str(&format!("cargo::rerun-if-env-changed={v}\n"));
    }
    assert_eq!(build_script_output(again.as_bytes()), d);
}
