//! rdht-api: the local API between the daemon and its clients (the `rdht` CLI and the
//! cargo shim), specified in `specs/local-api.md`.
//!
//! Layers, bottom up: [`frame`] (length-prefixed byte frames with a size limit),
//! [`proto`] (the versioned request, progress and response messages), then [`Client`]
//! for callers and [`ServerConn`] for the daemon's side of one connection.
//!
//! Owns: the wire format and both ends of a connection. Does not own: what the daemon
//! does with a request, or how the CLI prints a response (but for [`error_chain`], the
//! one line every rdht binary prints an error as).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use rdht_api::{Client, Incoming, Request, Response, ServerConn};
//! let (a, b) = tokio::net::UnixStream::pair().unwrap();
//! tokio::spawn(async move {
//!     let mut conn = ServerConn::new(b);
//!     while let Ok(Some(Incoming { id, request: Request::Gc })) = conn.next().await {
//!         conn.reply(id, Ok(Response::Gc { evicted_artifacts: 0, freed_bytes: 0 })).await.unwrap();
//!     }
//! });
//! let mut client = Client::from_stream(a);
//! let reply = client.call(Request::Gc).await.unwrap();
//! assert_eq!(reply, Response::Gc { evicted_artifacts: 0, freed_bytes: 0 });
//! # });
//! ```

pub mod client;
pub mod frame;
pub mod proto;
pub mod server;

pub use client::{Client, ClientError};
pub use frame::{FrameError, MAX_FRAME_LEN};
pub use proto::{API_VERSION, ApiError, ErrorKind, Progress, Request, Response};
pub use server::{Incoming, ServerConn};

use std::path::{Path, PathBuf};

/// File name of the API socket inside the daemon's data directory.
pub const SOCKET_NAME: &str = "api.sock";

/// The API socket of the daemon whose data directory is `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// The data directory used when neither `--data-dir` nor `RDHT_DATA_DIR` is given: the
/// platform's data directory for rdht (`~/.local/share/rdht` on Linux). `None` when the
/// platform has no home directory.
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "rdht").map(|p| p.data_dir().to_path_buf())
}

/// An error and its causes on one line, as rdht's binaries print them: `a: b: c`, each
/// cause once. Errors whose message already ends with their source's (`"{path}:
/// {source}"`) would otherwise print it twice.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
