//! The client side: connect to a daemon's socket, send requests, collect answers
//! (specs/local-api.md §4). Used by the `rdht` CLI and the cargo shim.
//!
//! Owns: request ids, matching answers, turning failures into [`ClientError`]. Does not
//! own: what to tell the user when the daemon is down (the binaries decide).

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

use crate::frame::{FrameError, MAX_FRAME_LEN, read_frame, write_frame};
use crate::proto::{
    API_VERSION, ApiError, ClientFrame, Progress, Reply, Request, Response, ServerFrame, decode,
    encode,
};

/// A request could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket: the daemon is not running.
    #[error("no rdht daemon is listening on {}", path.display())]
    NotRunning {
        /// The socket path.
        path: PathBuf,
        /// The connect error.
        source: std::io::Error,
    },
    /// Connecting failed for another reason (permissions, for example).
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The connect error.
        source: std::io::Error,
    },
    /// Sending or receiving a frame failed.
    #[error("local API connection failed: {0}")]
    Frame(#[from] FrameError),
    /// The daemon closed the connection before answering.
    #[error("the daemon closed the connection before answering")]
    Closed,
    /// The daemon sent something this client does not understand.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    /// The daemon answered with an error.
    #[error("{0}")]
    Api(#[from] ApiError),
}

/// A connection to a daemon.
#[derive(Debug)]
pub struct Client<S = UnixStream> {
    stream: S,
    next_id: u64,
}

impl Client<UnixStream> {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        match UnixStream::connect(path).await {
            Ok(s) => Ok(Client::from_stream(s)),
            Err(source) => Err(match source.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning {
                        path: path.to_path_buf(),
                        source,
                    }
                }
                _ => ClientError::Connect {
                    path: path.to_path_buf(),
                    source,
                },
            }),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Wraps a connected stream.
    pub fn from_stream(stream: S) -> Self {
        Client { stream, next_id: 1 }
    }

    /// Sends `request` and waits for its answer, ignoring progress.
    pub async fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        self.call_with_progress(request, |_| {}).await
    }

    /// Sends `request`, hands every progress frame to `on_progress`, returns the answer.
    pub async fn call_with_progress(
        &mut self,
        request: Request,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = ClientFrame {
            version: API_VERSION,
            id,
            request,
        };
        write_frame(&mut self.stream, &encode(&frame)).await?;
        loop {
            let payload = read_frame(&mut self.stream, MAX_FRAME_LEN)
                .await?
                .ok_or(ClientError::Closed)?;
            let f: ServerFrame = decode(&payload).map_err(ClientError::Protocol)?;
            if f.version != API_VERSION {
                return Err(ClientError::Protocol(format!(
                    "daemon speaks API version {}, this client {API_VERSION}",
                    f.version
                )));
            }
            match f.reply {
                // Errors about undecodable frames carry id 0.
                Reply::Failed(e) if f.id == id || f.id == 0 => return Err(e.into()),
                _ if f.id != id => {
                    return Err(ClientError::Protocol(format!(
                        "answer for request {} while waiting for {id}",
                        f.id
                    )));
                }
                Reply::Progress(p) => on_progress(&p),
                Reply::Done(r) => return Ok(r),
                Reply::Failed(e) => return Err(e.into()),
            }
        }
    }
}
