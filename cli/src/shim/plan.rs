//! Build plans on the `cargo dht-build` side (specs/build-key.md §8): the plan key of
//! this run, asking the daemon to prefetch its plan at the start, and publishing this
//! run's plan at the end.
//!
//! Owns: gathering the plan inputs (workspace files, rustc version, build-wide
//! environment) and the two daemon exchanges. Does not own: the key derivation and the
//! plan format (`rdht_core::plan`), or prefetching itself (the daemon).
//!
//! Invariant: every failure here is silent or one warning; plans never affect a
//! build's outcome.

use std::path::{Path, PathBuf};
use std::process::Command;

use rdht_api::proto::{PutFile, Scope};
use rdht_api::{Client, Request, Response};
use rdht_core::plan::{self, PLAN_VERSION, PlanInputs};
use rdht_core::{BuildKey, Labels};

/// Crate name in a plan's record labels.
pub const PLAN_LABEL: &str = "rdht-plan";
/// The plan artifact's one file.
const PLAN_FILE: &str = "plan";

/// Build-wide variables that change every unit (specs/build-key.md §8).
fn build_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "RUSTFLAGS"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "CARGO_BUILD_RUSTFLAGS"
                    | "CARGO_BUILD_TARGET"
            ) || k.starts_with("CARGO_PROFILE_")
        })
        .collect();
    env.sort();
    env
}

/// The workspace root: the nearest directory holding `Cargo.lock`, from the
/// `--manifest-path` given or the current directory.
fn workspace_root(cargo_args: &[String], cwd: &Path) -> Option<PathBuf> {
    let mut manifest = None;
    for (i, a) in cargo_args.iter().enumerate() {
        if let Some(p) = a.strip_prefix("--manifest-path=") {
            manifest = Some(PathBuf::from(p));
        } else if a == "--manifest-path" {
            manifest = cargo_args.get(i + 1).map(PathBuf::from);
        }
    }
    let start = match manifest {
        Some(m) => cwd.join(m).parent()?.to_path_buf(),
        None => cwd.to_path_buf(),
    };
    start
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
}

/// This run's plan key, if the workspace has a lock file and rustc answers.
pub fn plan_key(cargo_args: &[String]) -> Option<BuildKey> {
    let cwd = std::env::current_dir().ok()?;
    let root = workspace_root(cargo_args, &cwd)?;
    let lockfile = std::fs::read_to_string(root.join("Cargo.lock")).ok()?;
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .arg("-vV")
        .current_dir(&root)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        PlanInputs {
            version: PLAN_VERSION,
            rustc_version: String::from_utf8_lossy(&out.stdout).into_owned(),
            cargo_args: cargo_args.to_vec(),
            lockfile,
            manifest,
            env: build_env(),
        }
        .derive(),
    )
}

/// Asks the daemon to prefetch plan `key` in the background. Plans are private, and so
/// are the lookups of their keys.
pub async fn prefetch(client: &mut Client, key: BuildKey) -> Result<(), String> {
    match client
        .call(Request::Prefetch {
            key,
            scope: Scope::Private,
        })
        .await
    {
        Ok(Response::Prefetching) => Ok(()),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Stores `keys` as plan `key` (pinned) and publishes its record to private swarms.
pub async fn publish(
    client: &mut Client,
    key: BuildKey,
    keys: &[BuildKey],
    scratch: &Path,
) -> Result<(), String> {
    let file = scratch.join(PLAN_FILE);
    std::fs::write(&file, plan::encode(keys))
        .map_err(|e| format!("writing {}: {e}", file.display()))?;
    let source = file
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", file.display()))?
        .to_string();
    let labels = Labels {
        crate_name: PLAN_LABEL.into(),
        ..Labels::default()
    };
    let root = match client
        .call(Request::Put {
            files: vec![PutFile {
                source,
                path: PLAN_FILE.into(),
            }],
            labels: labels.clone(),
            pin: true,
        })
        .await
        .map_err(|e| e.to_string())?
    {
        Response::Put { root, .. } => root,
        other => return Err(format!("unexpected answer {other:?}")),
    };
    match client
        .call(Request::Publish {
            key,
            root,
            labels,
            scope: Scope::Private,
            build_ms: 0,
            needs: Default::default(),
        })
        .await
        .map_err(|e| e.to_string())?
    {
        Response::Published { .. } => Ok(()),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_workspace_root_is_the_nearest_lock_file() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        let member = ws.join("crates/a");
        std::fs::create_dir_all(member.join("src")).unwrap();
        std::fs::write(ws.join("Cargo.lock"), "version = 4\n").unwrap();
        assert_eq!(workspace_root(&[], &member.join("src")), Some(ws.clone()));
        let args = vec![
            "--manifest-path".to_string(),
            "ws/crates/a/Cargo.toml".into(),
        ];
        assert_eq!(workspace_root(&args, d.path()), Some(ws.clone()));
        let args = vec!["--manifest-path=ws/Cargo.toml".to_string()];
        assert_eq!(workspace_root(&args, d.path()), Some(ws));
        let lone = d.path().join("lone");
        std::fs::create_dir_all(&lone).unwrap();
        // No lock file up to the temp dir's ancestors (none has one in a sane setup).
        assert!(workspace_root(&[], &lone).is_none_or(|r| !r.starts_with(d.path())));
    }
}
