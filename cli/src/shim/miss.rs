//! The miss path: run rustc with path remapping, passing its output through as bytes as
//! it comes (cargo starts dependents on the metadata notification) while keeping a
//! copy, then hand the outputs to the daemon to store and publish in the background.
//! Outputs too large to describe inline are stored synchronously instead.
//!
//! Owns: running rustc, the captured messages, and describing outputs to the daemon.
//! Does not own: checking them again before publishing (the daemon does, by identity).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rdht_api::proto::{FileSource, MAX_INLINE_BYTES, PutFile, Submission, SubmitFile};
use rdht_api::{Request, Response};
use rdht_core::{BlockId, Needs};

use super::cache::{CacheFailure, call, connect, fail, unexpected};
use super::filehash::{hash_file, remember_origin};
use super::inputs::Unit;
use super::layout::{OUT, STDERR, STDOUT, scratch};
use super::session;
use super::unit::PUBLISH_TIMEOUT;

/// What rustc printed, as bytes: rustc, and proc macros running inside it, may print
/// text that is not UTF-8, which must pass through untouched.
#[derive(Debug, Default)]
pub(super) struct Captured {
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
}

/// Copies `from` to `to` line by line as it comes, with placeholders turned into local
/// paths, keeping a copy of what was read. Bytes that are not UTF-8 pass unchanged; a
/// write error on `to` stops the forwarding, never the reading (rustc must not block
/// on a full pipe).
pub(super) fn forward(
    from: impl std::io::Read,
    mut to: impl Write,
    roots: &super::roots::Roots,
) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut r = BufReader::new(from);
    let mut line = Vec::new();
    let mut open = true;
    while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
        if open {
            open = to.write_all(&roots.localize_bytes(&line)).is_ok() && to.flush().is_ok();
        }
        kept.extend_from_slice(&line);
        line.clear();
    }
    kept
}

/// Runs rustc with path remapping, passing each line on as it comes (cargo starts
/// dependents on the metadata notification), with placeholders turned back into local
/// paths, while keeping a copy as rustc wrote it.
pub(super) fn run_rustc(
    rustc: &Path,
    args: &[String],
    unit: &Unit,
) -> std::io::Result<(i32, Captured)> {
    let mut child = Command::new(rustc)
        .args(args)
        .args(unit.roots.remap_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take();
    let roots = unit.roots.clone();
    let out_thread = std::thread::spawn(move || {
        stdout
            .map(|s| forward(s, std::io::stdout(), &roots))
            .unwrap_or_default()
    });
    let mut captured = Captured::default();
    if let Some(s) = child.stderr.take() {
        captured.stderr = forward(s, std::io::stderr(), &unit.roots);
    }
    let status = child.wait()?;
    captured.stdout = out_thread.join().unwrap_or_default();
    if status.success() {
        // The outputs are final once rustc has exited, but for cargo's check-mode mtime;
        // apply it now, so that what is described to the daemon is what cargo leaves.
        settle(unit, &artifacts(&captured.stderr));
    }
    Ok((status.code().unwrap_or(101), captured))
}

/// Gives a check unit's outputs the modification time cargo will give them once this
/// process has exited ([`super::stamp`]); a failure is one warning and only costs sharing.
pub(super) fn settle(unit: &Unit, outputs: &[PathBuf]) {
    if let Some(stamp) = &unit.check_stamp
        && let Err(e) = super::stamp::apply(stamp, outputs)
    {
        eprintln!(
            "rdht: warning: {}: cannot set the outputs' time as cargo does: {e}",
            unit.labels.crate_name
        );
    }
}

/// Output files named by rustc's artifact notifications.
pub(super) fn artifacts(stderr: &[u8]) -> Vec<PathBuf> {
    stderr
        .split(|b| *b == b'\n')
        // Only UTF-8 lines can be rustc's JSON messages.
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|l| l.starts_with("{\"$message_type\":\"artifact\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("artifact")?.as_str().map(PathBuf::from))
        .collect()
}

/// How a submission went.
pub(super) enum Submitted {
    /// The daemon queued it.
    Queued,
    /// The messages are too large to carry inline; store synchronously instead.
    TooLarge,
}

/// Hands the unit's outputs to the daemon, which stores and publishes them after this
/// process has returned to cargo.
pub(super) async fn submit(
    unit: &Unit,
    captured: &Captured,
    build_ms: u64,
) -> Result<Submitted, CacheFailure> {
    let outputs = artifacts(&captured.stderr);
    if outputs.is_empty() {
        return Err(fail("rustc reported no output files"));
    }
    let mut files = Vec::with_capacity(outputs.len() + 2);
    let mut inline = 0usize;
    for o in &outputs {
        let name = output_name(unit, o)?;
        let source = if name.ends_with(".d") {
            let text = std::fs::read_to_string(o)
                .map_err(|e| fail(format!("reading {}: {e}", o.display())))?;
            let bytes = unit.roots.normalize(&text).into_bytes();
            inline += bytes.len();
            FileSource::Inline(bytes)
        } else {
            FileSource::from_disk(o).map_err(|e| fail(format!("reading {}: {e}", o.display())))?
        };
        files.push(SubmitFile {
            path: format!("{OUT}{name}"),
            source,
        });
    }
    for (name, text) in [
        (STDERR, unit.roots.normalize_bytes(&captured.stderr)),
        (STDOUT, unit.roots.normalize_bytes(&captured.stdout)),
    ] {
        inline += text.len();
        files.push(SubmitFile {
            path: name.to_string(),
            source: FileSource::Inline(text),
        });
    }
    if inline > MAX_INLINE_BYTES {
        return Ok(Submitted::TooLarge);
    }
    let submit = Request::Submit(Submission {
        key: unit.key,
        files,
        labels: unit.labels.clone(),
        scope: unit.scope(),
        build_ms,
        session: std::env::var(session::SESSION_LOG_ENV).unwrap_or_default(),
        needs: needs(unit, &outputs),
    });
    let mut client = connect().await?;
    match call(&mut client, submit, PUBLISH_TIMEOUT, "submitting").await? {
        Response::Submitted { .. } => Ok(Submitted::Queued),
        other => Err(unexpected(&other)),
    }
}

/// What the unit's outputs that are loaded or run here need of the C runtime, for its
/// record (specs/records.md §2.1): nothing for a unit of a `--target` this machine only
/// cross-compiles, and nothing for outputs that are not dynamic ELF files.
pub(super) fn needs(unit: &Unit, outputs: &[PathBuf]) -> Needs {
    let mut needs = Needs::new();
    if unit.loaded_here().is_some() {
        for o in outputs {
            if let Some(more) = rdht_fit::file_requirements(o) {
                rdht_fit::add(&mut needs, more);
            }
        }
    }
    needs
}

/// After a successful compile of a proc macro: records its build key beside each
/// output, so that its dependents count it by key, not by bytes (specs/build-key.md §4).
/// A failure only costs that: the dependents then count its bytes.
pub(super) fn remember_origins(unit: &Unit, outputs: &[PathBuf]) {
    if !unit.is_proc_macro() {
        return;
    }
    for o in outputs
        .iter()
        .filter(|o| o.extension().is_none_or(|e| e != "d"))
    {
        if let Ok(root) = hash_file(o) {
            let _ = remember_origin(o, root, unit.key);
        }
    }
}

/// The first generated file naming a machine-local root that the compile read, from
/// its dep-info ([`Unit::reads_local_named`]).
pub(super) fn reads_local_named(unit: &Unit, captured: &Captured) -> Option<String> {
    if unit.out_dir_named.is_empty() {
        return None;
    }
    artifacts(&captured.stderr)
        .iter()
        .filter(|o| o.extension().is_some_and(|e| e == "d"))
        .filter_map(|o| std::fs::read_to_string(o).ok())
        .find_map(|t| {
            unit.reads_local_named(&unit.roots.normalize(&t))
                .map(str::to_string)
        })
}

/// The file name of output `o`, which must be directly in the unit's output directory.
pub(super) fn output_name<'a>(unit: &Unit, o: &'a Path) -> Result<&'a str, CacheFailure> {
    let (Some(parent), Some(name)) = (o.parent(), o.file_name().and_then(|n| n.to_str())) else {
        return Err(fail(format!("odd output path {}", o.display())));
    };
    if parent != unit.out_dir {
        return Err(fail(format!("output {} is outside --out-dir", o.display())));
    }
    Ok(name)
}

/// Stores the unit's outputs and messages (pinned); returns the artifact root.
pub(super) async fn store(unit: &Unit, captured: &Captured) -> Result<BlockId, CacheFailure> {
    let outputs = artifacts(&captured.stderr);
    if outputs.is_empty() {
        return Err(fail("rustc reported no output files"));
    }
    let stage = scratch(&unit.out_dir, "stage");
    let result = async {
        let mkdir = |p: &Path| {
            std::fs::create_dir_all(p).map_err(|e| fail(format!("creating {}: {e}", p.display())))
        };
        // The directories of the layout's files: `out/` and that of `rdht/std*`.
        mkdir(&stage.join(OUT))?;
        if let Some(messages) = stage.join(STDOUT).parent() {
            mkdir(messages)?;
        }
        let utf8 = |p: &Path| {
            p.to_str()
                .map(str::to_string)
                .ok_or_else(|| fail("path is not UTF-8"))
        };
        let mut files = Vec::new();
        for o in &outputs {
            let name = output_name(unit, o)?;
            let source = if name.ends_with(".d") {
                let text = std::fs::read_to_string(o)
                    .map_err(|e| fail(format!("reading {}: {e}", o.display())))?;
                let staged = stage.join(format!("{OUT}{name}"));
                std::fs::write(&staged, unit.roots.normalize(&text))
                    .map_err(|e| fail(format!("writing {}: {e}", staged.display())))?;
                staged
            } else {
                o.clone()
            };
            files.push(PutFile {
                source: utf8(&source)?,
                path: format!("{OUT}{name}"),
            });
        }
        // Only what rustc produced: two honest builders of the same unit must store the
        // same artifact, so nothing machine- or run-specific goes in.
        for (name, text) in [
            (STDERR, unit.roots.normalize_bytes(&captured.stderr)),
            (STDOUT, unit.roots.normalize_bytes(&captured.stdout)),
        ] {
            let p = stage.join(name);
            std::fs::write(&p, text).map_err(|e| fail(format!("writing {}: {e}", p.display())))?;
            files.push(PutFile {
                source: utf8(&p)?,
                path: name.to_string(),
            });
        }
        let mut client = connect().await?;
        let put = Request::Put {
            files,
            labels: unit.labels.clone(),
            pin: true,
        };
        let root = match call(&mut client, put, PUBLISH_TIMEOUT, "storing").await? {
            Response::Put { root, .. } => root,
            other => return Err(unexpected(&other)),
        };
        Ok(root)
    }
    .await;
    let _ = std::fs::remove_dir_all(&stage);
    result
}

/// Asks the daemon to sign and announce "this unit's key built into `root`", whose
/// outputs need `needs` of the C runtime.
pub(super) async fn publish_record(
    unit: &Unit,
    root: BlockId,
    build_ms: u64,
    needs: Needs,
) -> Result<(), CacheFailure> {
    let publish = Request::Publish {
        key: unit.key,
        root,
        labels: unit.labels.clone(),
        scope: unit.scope(),
        build_ms,
        needs,
    };
    let mut client = connect().await?;
    match call(&mut client, publish, PUBLISH_TIMEOUT, "publishing").await? {
        Response::Published { .. } => Ok(()),
        other => Err(unexpected(&other)),
    }
}
