//! Frames: a 4-byte big-endian length, then that many bytes (specs/local-api.md §2).
//!
//! Owns: reading and writing one frame with the size limit checked *before* any
//! allocation. Does not own: what the bytes mean ([`crate::proto`]).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame payload either side accepts: 1 MiB. Requests carry paths and ids, not
/// file contents, so this is far above any valid message.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// A frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the limit; the stream can't be resynchronised.
    #[error("frame of {len} bytes announced, more than the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A zero-length frame, which no message encodes to.
    #[error("empty frame")]
    Empty,
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame. `Ok(None)` means the peer closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(Some(buf))
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
) -> Result<(), FrameError> {
    if payload.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: payload.len() as u64,
            max: MAX_FRAME_LEN,
        });
    }
    // Invariant: MAX_FRAME_LEN < u32::MAX, checked above.
    let len = payload.len() as u32;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_and_truncation() {
        let mut ok = Vec::new();
        write_frame(&mut ok, b"hello").await.unwrap();
        assert_eq!(ok, b"\0\0\0\x05hello");
        assert_eq!(
            read_frame(&mut &ok[..], 16).await.unwrap(),
            Some(b"hello".to_vec())
        );
        assert!(matches!(
            read_frame(&mut &ok[..], 4).await,
            Err(FrameError::TooLarge { len: 5, max: 4 })
        ));
        assert!(matches!(
            read_frame(&mut &ok[..7], 16).await,
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            read_frame(&mut &ok[..2], 16).await,
            Err(FrameError::Truncated)
        ));
        assert!(read_frame(&mut &b""[..], 16).await.unwrap().is_none());
        assert!(matches!(
            read_frame(&mut &[0u8; 4][..], 16).await,
            Err(FrameError::Empty)
        ));
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut &huge[..], MAX_FRAME_LEN).await,
            Err(FrameError::TooLarge {
                len: 4_294_967_295,
                ..
            })
        ));
    }
}
