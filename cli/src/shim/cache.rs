//! Talking to the daemon from the shim, and what a failed cache step is: the
//! [`CacheFailure`] every path returns, its [`Severity`], and one helper per call shape.
//!
//! Owns: connecting, timeouts, and turning client errors and unexpected answers into
//! failures. Does not own: what a failure leads to (always a local build, `unit.rs`).

use std::time::Duration;

use rdht_api::{Client, ClientError, Request, Response};

use super::unit::data_dir;

/// How a failed cache step is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Severity {
    /// An ordinary miss (no trusted record): counted, not warned about.
    Miss,
    /// The daemon is unreachable: warned about once per session.
    Unreachable,
    /// Anything else that went wrong: warned about.
    Fault,
}

/// A failed cache step: why, and whether to try publishing after the local build.
pub(super) struct CacheFailure {
    pub(super) reason: String,
    /// The kind of reason, counted in the summary (`untrusted`, `no record`, …).
    pub(super) cause: String,
    pub(super) publish: bool,
    pub(super) sample_mismatch: bool,
    pub(super) severity: Severity,
    /// Providers the daemon could not reach (peer ids), for the summary.
    pub(super) unreachable: Vec<String>,
}

impl From<ClientError> for CacheFailure {
    fn from(e: ClientError) -> Self {
        let unreachable = matches!(
            e,
            ClientError::NotRunning { .. } | ClientError::Connect { .. }
        );
        CacheFailure {
            reason: e.to_string(),
            cause: if unreachable {
                "daemon unreachable".into()
            } else {
                "error".into()
            },
            publish: !unreachable,
            sample_mismatch: false,
            severity: if unreachable {
                Severity::Unreachable
            } else {
                Severity::Fault
            },
            unreachable: Vec::new(),
        }
    }
}

impl CacheFailure {
    /// Whether to warn about it: never for a miss, once per session for an unreachable
    /// daemon, always for anything else.
    pub(super) fn shown(&self) -> bool {
        match self.severity {
            Severity::Miss => false,
            Severity::Unreachable => super::unit::first_in_session("unreachable"),
            Severity::Fault => true,
        }
    }
}

pub(super) fn fail(reason: impl Into<String>) -> CacheFailure {
    CacheFailure {
        reason: reason.into(),
        cause: "error".into(),
        publish: true,
        sample_mismatch: false,
        severity: Severity::Fault,
        unreachable: Vec::new(),
    }
}

/// The single-threaded runtime one wrapper process talks to the daemon on.
pub(super) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

pub(super) async fn connect() -> Result<Client, CacheFailure> {
    let dir = data_dir().ok_or_else(|| fail("no data directory (set RDHT_DATA_DIR)"))?;
    Ok(Client::connect(&rdht_api::socket_path(&dir)).await?)
}

/// Sends `request` and waits at most `limit` for the answer; `what` names the call in
/// the failure ("resolving", "exporting", …).
pub(super) async fn call(
    client: &mut Client,
    request: Request,
    limit: Duration,
    what: &str,
) -> Result<Response, CacheFailure> {
    Ok(tokio::time::timeout(limit, client.call(request))
        .await
        .map_err(|_| fail(format!("{what} timed out")))??)
}

/// A failure for an answer that does not match the request.
pub(super) fn unexpected(answer: &Response) -> CacheFailure {
    fail(format!("unexpected answer {answer:?}"))
}
