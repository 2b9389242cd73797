//! A build-script run served from the cache (specs/build-key.md §10.4): resolve the
//! declaration key, read the declaration, resolve the run key from the current values
//! of what it names, and put the run's `OUT_DIR` in place and replay its output.
//!
//! Invariant: `OUT_DIR` is only touched once both artifacts are exported and checked,
//! so any earlier failure leaves it as cargo left it. Owns: those steps. Does not own:
//! running the script (`capture.rs`).

use std::fs;
use std::io::Write;
use std::path::Path;

use rdht_api::proto::Scope;
use rdht_core::BuildKey;
use rdht_core::runkey::Declaration;

use super::inputs::RunContext;
use crate::shim::cache::{CacheFailure, connect, fail};
use crate::shim::hit::resolve_export;
use crate::shim::inputs::Env;
use crate::shim::layout::{DECLARED, RUN_NORMALIZED, RUN_OUT_DIR, STDERR, STDOUT, scratch};

/// A run served from the cache.
pub struct Restored {
    /// The run key.
    pub run_key: BuildKey,
    /// Bytes fetched from peers.
    pub bytes_fetched: u64,
    /// The builder's run time.
    pub build_ms: u64,
}

/// Tries to serve the run from the cache; on success `OUT_DIR` holds the run's files
/// and its output has been replayed.
pub async fn try_restore(
    ctx: &RunContext,
    env: &Env,
    scope: Scope,
) -> Result<Restored, CacheFailure> {
    let mut client = connect().await?;
    let what = format!("the build-script run of {}", ctx.package.0);
    let parent = ctx
        .out_dir
        .parent()
        .ok_or_else(|| fail("OUT_DIR has no parent"))?;
    let tmp = scratch(parent, "run");
    let result = async {
        let (declared, entries) = resolve_export(
            &mut client,
            ctx.declaration_key,
            scope,
            &tmp.join("declared"),
            &what,
        )
        .await?;
        let decl = declaration(declared.root, &tmp.join("declared"), &entries)?;
        let inputs = ctx
            .run_inputs(&decl, env)
            .map_err(|e| fail(format!("reading a declared input: {e}")))?;
        let run_key = inputs.derive();
        let dest = tmp.join("run");
        let (run, entries) = resolve_export(&mut client, run_key, scope, &dest, &what).await?;
        let mut files = Vec::new();
        for (path, _) in &entries {
            match path.strip_prefix(RUN_OUT_DIR) {
                Some(rel) => files.push(rel.to_string()),
                None if [STDOUT, STDERR, RUN_NORMALIZED].contains(&path.as_str()) => {}
                None => {
                    return Err(fail(format!(
                        "artifact {} holds unexpected file {path}",
                        run.root
                    )));
                }
            }
        }
        let normalized = fs::read_to_string(dest.join(RUN_NORMALIZED)).unwrap_or_default();
        place(ctx, &dest, &files, normalized.lines().collect())?;
        replay(ctx, &dest);
        Ok(Restored {
            run_key,
            bytes_fetched: declared.bytes_fetched + run.bytes_fetched,
            build_ms: run.build_ms,
        })
    }
    .await;
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// Decodes declaration artifact `root`, exported into `dest` as `entries`.
fn declaration(
    root: rdht_core::BlockId,
    dest: &Path,
    entries: &[(String, rdht_core::BlockId)],
) -> Result<Declaration, CacheFailure> {
    if entries.len() != 1 || entries[0].0 != DECLARED {
        return Err(fail(format!("artifact {root} is not a declaration")));
    }
    let bytes = fs::read(dest.join(DECLARED))
        .map_err(|e| fail(format!("reading the exported declaration: {e}")))?;
    Declaration::decode(&bytes).map_err(|e| fail(format!("artifact {root}: {e}")))
}

/// Makes `OUT_DIR` hold exactly the run's files: what an earlier run left is removed
/// (a first run starts from an empty `OUT_DIR`), files stored normalised get local
/// paths. Files may be hard links to the store's copies; nothing here writes into one,
/// and a run of the real script first gives each its own copy
/// (`capture::own_copies`).
fn place(
    ctx: &RunContext,
    dest: &Path,
    files: &[String],
    normalized: Vec<&str>,
) -> Result<(), CacheFailure> {
    let out = &ctx.out_dir;
    let io = |what: &Path, e: std::io::Error| fail(format!("{}: {e}", what.display()));
    if out.exists() {
        fs::remove_dir_all(out).map_err(|e| io(out, e))?;
    }
    fs::create_dir_all(out).map_err(|e| io(out, e))?;
    for rel in files {
        let from = dest.join(RUN_OUT_DIR).join(rel);
        let to = out.join(rel);
        if let Some(d) = to.parent() {
            fs::create_dir_all(d).map_err(|e| io(d, e))?;
        }
        if normalized.binary_search(&rel.as_str()).is_ok() {
            // A new file: the exported one may be a link to the store's copy.
            let text = fs::read_to_string(&from).map_err(|e| io(&from, e))?;
            fs::write(&to, ctx.roots.localize(&text)).map_err(|e| io(&to, e))?;
        } else {
            fs::rename(&from, &to).map_err(|e| io(&to, e))?;
        }
    }
    Ok(())
}

/// Replays what the script printed, with local paths; cargo reads its instructions
/// from this stdout.
fn replay(ctx: &RunContext, dest: &Path) {
    let bytes = |rel: &str| {
        ctx.roots
            .localize_bytes(&fs::read(dest.join(rel)).unwrap_or_default())
    };
    let _ = std::io::stdout().lock().write_all(&bytes(STDOUT));
    let _ = std::io::stderr().lock().write_all(&bytes(STDERR));
}
