//! The daemon's side of one API connection (specs/local-api.md §5).
//!
//! Owns: turning frames into requests, answering undecodable frames with an error frame,
//! and ending the connection when framing is lost. Does not own: accepting connections
//! or executing requests (the daemon).

use tokio::io::{AsyncRead, AsyncWrite};

use crate::frame::{FrameError, MAX_FRAME_LEN, read_frame, write_frame};
use crate::proto::{
    API_VERSION, ApiError, ClientFrame, ErrorKind, Progress, Reply, Request, Response, ServerFrame,
    decode, encode, peek_version,
};

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The client's id for it; answers carry it back.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// One client connection, server side.
#[derive(Debug)]
pub struct ServerConn<S> {
    stream: S,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerConn<S> {
    /// Wraps an accepted stream.
    pub fn new(stream: S) -> Self {
        ServerConn { stream }
    }

    async fn send(&mut self, id: u64, reply: Reply) -> Result<(), FrameError> {
        let frame = ServerFrame {
            version: API_VERSION,
            id,
            reply,
        };
        write_frame(&mut self.stream, &encode(&frame)).await
    }

    /// The next request. Frames that cannot be decoded, or that speak another version,
    /// are answered with a `Failed` frame and skipped. A frame over the size limit, an
    /// empty frame or a frame cut short loses the framing: it is answered (best effort)
    /// and returned as an error, after which the caller must drop the connection.
    /// `Ok(None)`: the client closed the connection.
    pub async fn next(&mut self) -> Result<Option<Incoming>, FrameError> {
        loop {
            let payload = match read_frame(&mut self.stream, MAX_FRAME_LEN).await {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(None),
                Err(e) => {
                    if !matches!(e, FrameError::Io(_)) {
                        let kind = match e {
                            FrameError::TooLarge { .. } => ErrorKind::TooLarge,
                            _ => ErrorKind::BadFrame,
                        };
                        let err = ApiError::new(kind, format!("{e}; closing the connection"));
                        let _ = self.send(0, Reply::Failed(err)).await;
                    }
                    return Err(e);
                }
            };
            match peek_version(&payload) {
                Some(API_VERSION) => {}
                other => {
                    let err = ApiError::new(
                        ErrorKind::UnsupportedVersion,
                        format!(
                            "request speaks API version {}; this daemon speaks {API_VERSION}",
                            other.map_or_else(|| "(none)".to_string(), |v| v.to_string())
                        ),
                    );
                    self.send(0, Reply::Failed(err)).await?;
                    continue;
                }
            }
            match decode::<ClientFrame>(&payload) {
                Ok(f) => {
                    return Ok(Some(Incoming {
                        id: f.id,
                        request: f.request,
                    }));
                }
                Err(why) => {
                    let err =
                        ApiError::new(ErrorKind::BadFrame, format!("bad request frame: {why}"));
                    self.send(0, Reply::Failed(err)).await?;
                }
            }
        }
    }

    /// Sends a progress frame for request `id`.
    pub async fn progress(&mut self, id: u64, progress: Progress) -> Result<(), FrameError> {
        self.send(id, Reply::Progress(progress)).await
    }

    /// Sends the final answer for request `id`.
    pub async fn reply(
        &mut self,
        id: u64,
        result: Result<Response, ApiError>,
    ) -> Result<(), FrameError> {
        let reply = match result {
            Ok(r) => Reply::Done(r),
            Err(e) => Reply::Failed(e),
        };
        self.send(id, reply).await
    }
}
