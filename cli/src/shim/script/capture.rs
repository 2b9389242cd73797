//! A build-script run built here (specs/build-key.md §10.5): run the real script with
//! its output passed through as it comes while keeping a copy, then decide whether the
//! run may be cached and hand its declaration and its `OUT_DIR` to the daemon.
//!
//! Owns: running the script, the never-cached rules, and describing the two artifacts.
//! Does not own: checking the files again before publishing (the daemon does, by
//! identity, as for rustc's outputs).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rdht_api::proto::{FileSource, MAX_INLINE_BYTES, PutFile, Scope, Submission, SubmitFile};
use rdht_api::{Request, Response};
use rdht_core::runkey::Declaration;
use rdht_core::{BuildKey, Labels, Needs};

use super::inputs::RunContext;
use super::output::{Declared, MAX_STDOUT};
use crate::shim::cache::{CacheFailure, call, connect, fail, unexpected};
use crate::shim::layout::{DECLARED, RUN_NORMALIZED, RUN_OUT_DIR, STDERR, STDOUT, scratch};
use crate::shim::session;
use crate::shim::unit::PUBLISH_TIMEOUT;

/// What the script printed.
#[derive(Debug, Default)]
pub struct Captured {
    /// Its stdout, as bytes.
    pub stdout: Vec<u8>,
    /// Its stderr, as bytes.
    pub stderr: Vec<u8>,
}

/// Copies `from` to `to` as it comes, keeping a copy; a write error on `to` stops the
/// copying, never the reading (the script must not block on a full pipe).
fn tee(mut from: impl Read, mut to: impl Write) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut open = true;
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        if open {
            open = to.write_all(&buf[..n]).is_ok() && to.flush().is_ok();
        }
        kept.extend_from_slice(&buf[..n]);
    }
    kept
}

/// Gives every file of `out_dir` that has other links (to the store's copy: restored
/// or ingested by linking) a copy of its own, so the script can rewrite it in place
/// without touching the store. A failure is returned before the script runs.
pub fn own_copies(out_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(out_dir) else {
        return Ok(());
    };
    for e in entries {
        let e = e?;
        let path = e.path();
        let kind = e.file_type()?;
        if kind.is_dir() {
            own_copies(&path)?;
        } else if kind.is_file() && e.metadata()?.nlink() > 1 {
            let tmp = path.with_file_name(format!(
                ".rdht-own-{}-{}",
                std::process::id(),
                e.file_name().to_string_lossy()
            ));
            fs::copy(&path, &tmp)?;
            fs::rename(&tmp, &path)?;
        }
    }
    Ok(())
}

/// Runs the real script `real` with `args` in this process's environment and working
/// directory (cargo's), passing its output through unchanged.
pub fn run_script(real: &Path, args: &[String]) -> std::io::Result<(i32, Captured)> {
    if let Some(out) = std::env::var_os("OUT_DIR") {
        own_copies(Path::new(&out))?;
    }
    let mut child = Command::new(real)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take();
    let out_thread = std::thread::spawn(move || {
        stdout
            .map(|s| tee(s, std::io::stdout()))
            .unwrap_or_default()
    });
    let mut captured = Captured::default();
    if let Some(s) = child.stderr.take() {
        captured.stderr = tee(s, std::io::stderr());
    }
    let status = child.wait()?;
    captured.stdout = out_thread.join().unwrap_or_default();
    Ok((status.code().unwrap_or(101), captured))
}

/// Why a successful, cacheable run was not shared.
pub enum ShareError {
    /// Its outputs depend on this machine.
    Local(String),
    /// The daemon could not take it.
    Cache(CacheFailure),
}

/// Whether a run that printed `declared` may be cached at all: cargo reruns a run that
/// printed an empty `rerun-if-changed=`, or that names a path inside `OUT_DIR` (which
/// the run itself rewrites), every time, and so must the cache.
pub fn never_cached(ctx: &RunContext, declared: &Declared) -> Option<String> {
    if declared.changed.iter().any(String::is_empty) {
        return Some("prints an empty rerun-if-changed".into());
    }
    declared
        .changed
        .iter()
        .find(|p| ctx.manifest_dir.join(p).starts_with(&ctx.out_dir))
        .map(|p| format!("rerun-if-changed names {p}, inside OUT_DIR"))
}

/// One file of the run's `OUT_DIR`.
struct OutFile {
    rel: String,
    path: PathBuf,
    /// Its text with placeholders, when it named a local root.
    normalized: Option<String>,
}

/// Largest `OUT_DIR` text file stored normalised; a larger one that names a local root
/// makes the run machine-local, like a binary file that does.
const MAX_TEXT: u64 = 1 << 20;

/// Every file of `OUT_DIR` (hidden ones too), sorted by relative path. A symbolic link,
/// a name that is not UTF-8, or a binary file that names a local root makes the run
/// machine-local.
fn out_files(ctx: &RunContext) -> Result<Vec<OutFile>, ShareError> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), String> {
        let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = e.path();
            let kind = e
                .file_type()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let rel = path.strip_prefix(base).unwrap_or(&path);
            let rel_s = rel
                .to_str()
                .ok_or_else(|| {
                    format!(
                        "OUT_DIR file {} has a name that is not UTF-8",
                        rel.display()
                    )
                })?
                .to_string();
            if kind.is_symlink() {
                return Err(format!("OUT_DIR holds a symbolic link, {rel_s}"));
            } else if kind.is_dir() {
                walk(&path, base, out)?;
            } else if kind.is_file() {
                out.push((rel_s, path));
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    walk(&ctx.out_dir, &ctx.out_dir, &mut found).map_err(ShareError::Local)?;
    found.sort();
    let mut files = Vec::with_capacity(found.len());
    for (rel, path) in found {
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(u64::MAX);
        let bytes =
            fs::read(&path).map_err(|e| ShareError::Local(format!("{}: {e}", path.display())))?;
        // Text: UTF-8 without NUL bytes (object files may be valid UTF-8 otherwise).
        let text = std::str::from_utf8(&bytes)
            .ok()
            .filter(|_| !bytes.contains(&0));
        let normalized = match text {
            Some(text) if len <= MAX_TEXT && ctx.roots.named_in(&bytes) => {
                Some(ctx.roots.normalize(text))
            }
            _ if ctx.roots.named_in(&bytes) => {
                return Err(ShareError::Local(format!(
                    "OUT_DIR file {rel} names this machine's paths"
                )));
            }
            _ => None,
        };
        files.push(OutFile {
            rel,
            path,
            normalized,
        });
    }
    Ok(files)
}

/// Hands a successful run to the daemon: the declaration under the declaration key and
/// the run (its `OUT_DIR`, stdout and stderr, normalised) under the run key.
pub async fn share(
    ctx: &RunContext,
    declaration: &Declaration,
    run_key: BuildKey,
    captured: &Captured,
    scope: Scope,
    rustc: &str,
    build_ms: u64,
) -> Result<(), ShareError> {
    if captured.stdout.len() > MAX_STDOUT {
        return Err(ShareError::Local(format!(
            "it printed {} bytes, more than {MAX_STDOUT}",
            captured.stdout.len()
        )));
    }
    let files = out_files(ctx)?;
    let labels = |kind: &str| Labels {
        crate_name: ctx.package.0.chars().take(200).collect(),
        crate_version: ctx.package.1.chars().take(200).collect(),
        target: ctx.target.clone(),
        rustc: rustc.to_string(),
        crate_types: vec![kind.to_string()],
    };
    let mut run_files = Vec::with_capacity(files.len() + 3);
    let mut inline = 0usize;
    let mut normalized_list = String::new();
    for f in &files {
        let source = match &f.normalized {
            Some(text) => {
                normalized_list.push_str(&f.rel);
                normalized_list.push('\n');
                inline += text.len();
                FileSource::Inline(text.clone().into_bytes())
            }
            None => FileSource::from_disk(&f.path)
                .map_err(|e| ShareError::Cache(fail(format!("{}: {e}", f.path.display()))))?,
        };
        run_files.push(SubmitFile {
            path: format!("{RUN_OUT_DIR}{}", f.rel),
            source,
        });
    }
    let mut messages = vec![
        (STDERR, ctx.roots.normalize_bytes(&captured.stderr)),
        (STDOUT, ctx.roots.normalize_bytes(&captured.stdout)),
    ];
    if !normalized_list.is_empty() {
        messages.push((RUN_NORMALIZED, normalized_list.into_bytes()));
    }
    for (name, bytes) in messages {
        inline += bytes.len();
        run_files.push(SubmitFile {
            path: name.to_string(),
            source: FileSource::Inline(bytes),
        });
    }
    run_files.sort_by(|a, b| a.path.cmp(&b.path));
    let declared = vec![SubmitFile {
        path: DECLARED.to_string(),
        source: FileSource::Inline(declaration.encode()),
    }];
    let session = std::env::var(session::SESSION_LOG_ENV).unwrap_or_default();
    let submission = |key, files, kind: &str| Submission {
        key,
        files,
        labels: labels(kind),
        scope,
        build_ms,
        session: session.clone(),
        needs: Needs::new(),
    };
    let mut client = connect().await.map_err(ShareError::Cache)?;
    let mut submit = async |s: Submission| -> Result<(), CacheFailure> {
        match call(
            &mut client,
            Request::Submit(s),
            PUBLISH_TIMEOUT,
            "submitting",
        )
        .await?
        {
            Response::Submitted { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    };
    submit(submission(
        ctx.declaration_key,
        declared,
        "build-script-inputs",
    ))
    .await
    .map_err(ShareError::Cache)?;
    if inline <= MAX_INLINE_BYTES {
        submit(submission(run_key, run_files, "build-script-run"))
            .await
            .map_err(ShareError::Cache)?;
    } else {
        store_and_publish(
            ctx,
            run_key,
            run_files,
            labels("build-script-run"),
            scope,
            build_ms,
        )
        .await
        .map_err(ShareError::Cache)?;
    }
    Ok(())
}

/// For a run whose normalised files are too large to carry inline: stages them, stores
/// the artifact synchronously and publishes its record.
async fn store_and_publish(
    ctx: &RunContext,
    key: BuildKey,
    files: Vec<SubmitFile>,
    labels: Labels,
    scope: Scope,
    build_ms: u64,
) -> Result<(), CacheFailure> {
    let parent = ctx
        .out_dir
        .parent()
        .ok_or_else(|| fail("OUT_DIR has no parent"))?;
    let stage = scratch(parent, "stage");
    let result = async {
        let mut put = Vec::with_capacity(files.len());
        for (i, f) in files.into_iter().enumerate() {
            let source = match f.source {
                FileSource::Disk { path, .. } => path,
                FileSource::Inline(bytes) => {
                    fs::create_dir_all(&stage)
                        .map_err(|e| fail(format!("{}: {e}", stage.display())))?;
                    let p = stage.join(i.to_string());
                    fs::write(&p, bytes).map_err(|e| fail(format!("{}: {e}", p.display())))?;
                    p.to_str()
                        .ok_or_else(|| fail("path is not UTF-8"))?
                        .to_string()
                }
            };
            put.push(PutFile {
                source,
                path: f.path,
            });
        }
        let mut client = connect().await?;
        let request = Request::Put {
            files: put,
            labels: labels.clone(),
            pin: true,
        };
        let root = match call(&mut client, request, PUBLISH_TIMEOUT, "storing").await? {
            Response::Put { root, .. } => root,
            other => return Err(unexpected(&other)),
        };
        let publish = Request::Publish {
            key,
            root,
            labels,
            scope,
            build_ms,
            needs: Needs::new(),
        };
        match call(&mut client, publish, PUBLISH_TIMEOUT, "publishing").await? {
            Response::Published { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
    .await;
    let _ = fs::remove_dir_all(&stage);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::script::launcher::Meta;
    use crate::shim::script::output::parse;

    fn context(root: &Path) -> RunContext {
        let meta = Meta {
            version: 1,
            script_key: "07".repeat(32),
            public: false,
            cargo_home: root.join("home").display().to_string(),
            workspace: Some(root.join("ws").display().to_string()),
            target: Some(root.join("ws/target").display().to_string()),
            rustc: "rustc 1.95.0".into(),
        };
        let out = root.join("ws/target/debug/build/p-01/out");
        fs::create_dir_all(&out).unwrap();
        let env = crate::shim::inputs::Env::from([
            ("OUT_DIR".into(), out.display().to_string()),
            (
                "CARGO_MANIFEST_DIR".into(),
                root.join("ws/p").display().to_string(),
            ),
        ]);
        RunContext::new(&meta, &env).unwrap()
    }

    #[test]
    fn linked_files_get_their_own_copy_before_a_run() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir_all(out.join("sub")).unwrap();
        let store = d.path().join("store-copy");
        fs::write(&store, "stored").unwrap();
        fs::hard_link(&store, out.join("sub/gen.rs")).unwrap();
        fs::write(out.join("own.txt"), "own").unwrap();
        own_copies(&out).unwrap();
        assert_eq!(fs::metadata(&store).unwrap().nlink(), 1);
        assert_eq!(
            fs::read_to_string(out.join("sub/gen.rs")).unwrap(),
            "stored"
        );
        fs::write(out.join("sub/gen.rs"), "rewritten").unwrap();
        assert_eq!(fs::read_to_string(&store).unwrap(), "stored");
        let names: Vec<_> = fs::read_dir(out.join("sub"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["gen.rs"]);
    }

    #[test]
    fn runs_cargo_reruns_every_time_are_never_cached() {
        let d = tempfile::tempdir().unwrap();
        let ctx = context(d.path());
        assert_eq!(
            never_cached(&ctx, &parse(b"cargo:rerun-if-changed=\n")),
            Some("prints an empty rerun-if-changed".into())
        );
        let inside = format!("cargo:rerun-if-changed={}/gen.h\n", ctx.out_dir.display());
        assert_eq!(
            never_cached(&ctx, &parse(inside.as_bytes())),
            Some(format!(
                "rerun-if-changed names {}/gen.h, inside OUT_DIR",
                ctx.out_dir.display()
            ))
        );
        assert_eq!(
            never_cached(&ctx, &parse(b"cargo:rerun-if-changed=build.rs\n")),
            None
        );
        assert_eq!(never_cached(&ctx, &parse(b"")), None);
    }

    #[test]
    fn out_dir_text_naming_roots_is_normalised_and_anything_else_local_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let ctx = context(d.path());
        let out = ctx.out_dir.clone();
        fs::create_dir_all(out.join("lib")).unwrap();
        fs::write(out.join("lib/libz.a"), b"!<arch>\n\x00\x01").unwrap();
        fs::write(out.join("zlib.pc"), format!("prefix={}\n", out.display())).unwrap();
        fs::write(out.join(".hidden"), "h").unwrap();
        let files = out_files(&ctx).map_err(|_| ()).unwrap();
        let got: Vec<(&str, Option<&str>)> = files
            .iter()
            .map(|f| (f.rel.as_str(), f.normalized.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (".hidden", None),
                ("lib/libz.a", None),
                (
                    "zlib.pc",
                    Some("prefix=/rdht/target/debug/build/p-01/out\n")
                ),
            ]
        );
        let mut binary = b"\x7fELF\x00".to_vec();
        binary.extend_from_slice(d.path().join("ws/p/src/x.c").to_string_lossy().as_bytes());
        fs::write(out.join("x.o"), binary).unwrap();
        match out_files(&ctx) {
            Err(ShareError::Local(r)) => {
                assert_eq!(r, "OUT_DIR file x.o names this machine's paths")
            }
            _ => panic!("a binary file naming a root is machine-local"),
        }
        fs::remove_file(out.join("x.o")).unwrap();
        std::os::unix::fs::symlink("zlib.pc", out.join("link.pc")).unwrap();
        match out_files(&ctx) {
            Err(ShareError::Local(r)) => assert_eq!(r, "OUT_DIR holds a symbolic link, link.pc"),
            _ => panic!("a symlink is machine-local"),
        }
    }
}
