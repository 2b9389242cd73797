//! Helpers the `cli` end-to-end tests share (each test binary compiles this module and
//! uses part of it).
#![allow(dead_code, clippy::unwrap_used)] // Each test binary uses some of these.

use std::path::Path;

use rdht_api::proto::Scope;
use rdht_api::{Client, Request, Response};
use rdht_core::{BuildKey, Labels};

/// Runs the project's `target/debug/proj` and returns its stdout (it must succeed).
pub fn run_bin(project: &Path) -> String {
    let out = std::process::Command::new(project.join("target/debug/proj"))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Has the daemon of `data_dir` sign and announce a record claiming that `key` built
/// into `root` (an artifact it holds): a validly signed claim, true or not.
pub fn publish_claim(data_dir: &Path, key: BuildKey, root: &str, scope: Scope) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = Client::connect(&rdht_api::socket_path(data_dir))
            .await
            .unwrap();
        let r = c
            .call(Request::Publish {
                key,
                root: root.parse().unwrap(),
                labels: Labels::default(),
                scope,
                build_ms: 0,
                needs: Default::default(),
            })
            .await
            .unwrap();
        assert!(matches!(r, Response::Published { .. }), "{r:?}");
    });
}
