//! The local-API target: frames and messages (specs/local-api.md), at both ends.
//!
//! The input is used four ways: as one client frame's payload, as one server frame's
//! payload, as the byte stream a daemon reads from a client ([`ServerConn`]), and as the
//! stream a client reads from a daemon ([`Client`]). Does not own: what the daemon does
//! with a request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rdht_api::frame::read_frame;
use rdht_api::proto::{ClientFrame, ServerFrame, decode, encode};
use rdht_api::{API_VERSION, Client, MAX_FRAME_LEN, Request, ServerConn};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::now;

/// A connection whose peer sent `input` and then closed; what is written is kept.
struct Peer<'a> {
    input: &'a [u8],
    output: &'a mut Vec<u8>,
}

impl AsyncRead for Peer<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

impl AsyncWrite for Peer<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Decodes `payload` as a `T`; a decoded message encodes and decodes back to itself.
fn message<T>(payload: &[u8]) -> Option<T>
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let v: T = decode(payload).ok()?;
    assert_eq!(decode::<T>(&encode(&v)).as_ref(), Ok(&v));
    Some(v)
}

/// Local-API frames and messages, as payloads and as streams at both ends.
pub fn api(data: &[u8]) {
    message::<ClientFrame>(data);
    message::<ServerFrame>(data);

    // The daemon's side: every request it returns round-trips, and every frame it
    // writes back (answers to bad frames) is one a client can decode.
    let mut written = Vec::new();
    let mut requests = Vec::new();
    {
        let mut conn = ServerConn::new(Peer {
            input: data,
            output: &mut written,
        });
        while let Ok(Some(incoming)) = now(conn.next()) {
            let frame = ClientFrame {
                version: API_VERSION,
                id: incoming.id,
                request: incoming.request,
            };
            let again = message::<ClientFrame>(&encode(&frame)).expect("a request re-decodes");
            requests.push(again);
        }
    }
    let mut rest = &written[..];
    while let Some(payload) = now(read_frame(&mut rest, MAX_FRAME_LEN)).expect("whole frames") {
        let f = message::<ServerFrame>(&payload).expect("the daemon's frames decode");
        assert_eq!(f.version, API_VERSION);
    }
    assert!(requests.len() <= data.len() / 4);

    // The client's side: one call reading whatever the daemon sent.
    let mut sent = Vec::new();
    let mut client = Client::from_stream(Peer {
        input: data,
        output: &mut sent,
    });
    let _ = now(client.call(Request::Gc));
}
