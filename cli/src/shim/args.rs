//! Reading a rustc command line as cargo writes it (specs/build-key.md §2).
//!
//! Owns: splitting arguments into `(flag, value)` pairs (both `--flag value` and
//! `--flag=value`, and attached short flags such as `-Copt-level=0`), and pulling out
//! what the shim needs: crate name and types, emits, output directory, input, target,
//! externs, library search paths and libraries. Does not own: deciding what is
//! cacheable or what the key is (`inputs.rs`).

use std::path::PathBuf;

/// Flags that take a value.
const VALUED: &[&str] = &[
    "--crate-name",
    "--crate-type",
    "--edition",
    "--emit",
    "--out-dir",
    "-L",
    "--extern",
    "-l",
    "--cfg",
    "--check-cfg",
    "--cap-lints",
    "--target",
    "--error-format",
    "--json",
    "-o",
    "-C",
    "--codegen",
    "-W",
    "--warn",
    "-A",
    "--allow",
    "-D",
    "--deny",
    "-F",
    "--forbid",
    "--force-warn",
    "--print",
    "--explain",
    "--sysroot",
    "--remap-path-prefix",
    "--remap-path-scope",
    "--diagnostic-width",
    "--color",
    "-Z",
    "--env-set",
];

/// Short flags whose value may be attached (`-Copt-level=3`, `-Lnative=/x`).
const ATTACHED: &[&str] = &["-C", "-L", "-l", "-W", "-A", "-D", "-F", "-Z"];

/// One argument: a flag with its value, or a positional input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A flag and its value (`None` for boolean flags such as `--test`).
    Flag(String, Option<String>),
    /// A positional argument (the crate root source file, or `-` for stdin).
    Input(String),
}

/// A parsed rustc invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// Every argument, in order.
    pub args: Vec<Arg>,
    /// `--crate-name`.
    pub crate_name: Option<String>,
    /// `--crate-type`, each.
    pub crate_types: Vec<String>,
    /// `--emit` kinds (without `=path` parts).
    pub emit: Vec<String>,
    /// Some `--emit` names an explicit path, or `-o` is given.
    pub explicit_output: bool,
    /// `--out-dir`.
    pub out_dir: Option<PathBuf>,
    /// The positional input.
    pub input: Option<String>,
    /// `--target`.
    pub target: Option<String>,
    /// `-C incremental=...` is given.
    pub incremental: bool,
    /// `--json` asks for artifact notifications and errors are JSON: cargo's units.
    pub cargo_unit: bool,
    /// An `@file` argument (arguments read from a file).
    pub argfile: bool,
    /// `--print` is given (a query, not a compile).
    pub print: bool,
}

/// Splits `args` (without the rustc path) into an [`Invocation`].
pub fn parse(args: &[String]) -> Invocation {
    let mut inv = Invocation::default();
    let mut it = args.iter().peekable();
    let mut json_artifacts = false;
    let mut error_json = false;
    while let Some(a) = it.next() {
        let arg = if a.starts_with('@') {
            inv.argfile = true;
            Arg::Input(a.clone())
        } else if let Some((flag, value)) = a.split_once('=').filter(|(f, _)| f.starts_with("--")) {
            Arg::Flag(flag.to_string(), Some(value.to_string()))
        } else if VALUED.contains(&a.as_str()) {
            Arg::Flag(a.clone(), it.next().cloned())
        } else if let Some(short) = ATTACHED.iter().find(|s| a.starts_with(**s) && a.len() > 2) {
            Arg::Flag(short.to_string(), Some(a[2..].to_string()))
        } else if a.starts_with('-') && a != "-" {
            Arg::Flag(a.clone(), None)
        } else {
            Arg::Input(a.clone())
        };
        match &arg {
            Arg::Flag(f, Some(v)) => match f.as_str() {
                "--crate-name" => inv.crate_name = Some(v.clone()),
                "--crate-type" => inv.crate_types.extend(v.split(',').map(str::to_string)),
                "--emit" => {
                    for e in v.split(',') {
                        let (kind, path) = e.split_once('=').unwrap_or((e, ""));
                        if !path.is_empty() {
                            inv.explicit_output = true;
                        }
                        inv.emit.push(kind.to_string());
                    }
                }
                "--out-dir" => inv.out_dir = Some(PathBuf::from(v)),
                "--target" => inv.target = Some(v.clone()),
                "-o" => inv.explicit_output = true,
                "-C" | "--codegen" if v.starts_with("incremental=") => inv.incremental = true,
                "--json" => json_artifacts |= v.split(',').any(|p| p == "artifacts"),
                "--error-format" => error_json = v == "json",
                "--print" => inv.print = true,
                _ => {}
            },
            Arg::Input(i) if !i.starts_with('@') => inv.input = Some(i.clone()),
            _ => {}
        }
        inv.args.push(arg);
    }
    inv.cargo_unit = json_artifacts && error_json;
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn a_cargo_lib_unit() {
        let inv = parse(&strs(
            "--crate-name serde --edition=2021 /h/.cargo/registry/src/i/serde-1.0.0/src/lib.rs \
             --error-format=json --json=diagnostic-rendered-ansi,artifacts,future-incompat \
             --crate-type lib --emit=dep-info,metadata,link -C embed-bitcode=no -Copt-level=0 \
             --out-dir /p/target/debug/deps -L dependency=/p/target/debug/deps \
             --extern serde_derive=/p/target/debug/deps/libserde_derive-1.so --cap-lints allow",
        ));
        assert_eq!(inv.crate_name.as_deref(), Some("serde"));
        assert_eq!(inv.crate_types, ["lib"]);
        assert_eq!(inv.emit, ["dep-info", "metadata", "link"]);
        assert_eq!(inv.out_dir, Some(PathBuf::from("/p/target/debug/deps")));
        assert_eq!(
            inv.input.as_deref(),
            Some("/h/.cargo/registry/src/i/serde-1.0.0/src/lib.rs")
        );
        assert!(inv.cargo_unit && !inv.incremental && !inv.explicit_output && !inv.print);
        assert!(
            inv.args
                .contains(&Arg::Flag("-C".into(), Some("opt-level=0".into())))
        );
        assert!(inv.args.contains(&Arg::Flag(
            "-L".into(),
            Some("dependency=/p/target/debug/deps".into())
        )));
        assert!(inv.args.contains(&Arg::Flag(
            "--extern".into(),
            Some("serde_derive=/p/target/debug/deps/libserde_derive-1.so".into())
        )));
    }

    #[test]
    fn probes_and_queries_are_not_units() {
        assert!(!parse(&strs("-vV")).cargo_unit);
        let p = parse(&strs(
            "- --crate-name ___ --print=file-names --crate-type bin",
        ));
        assert!(p.print && !p.cargo_unit);
        assert_eq!(p.input.as_deref(), Some("-"));
        let probe = parse(&strs(
            "--cfg=x --crate-name=pm --emit=dep-info,metadata --out-dir /o src/p.rs",
        ));
        assert!(!probe.cargo_unit);
        let inc = parse(&strs("--crate-name a -C incremental=/t/inc -o /x a.rs"));
        assert!(inc.incremental && inc.explicit_output);
        assert!(parse(&strs("@/tmp/args")).argfile);
    }
}
