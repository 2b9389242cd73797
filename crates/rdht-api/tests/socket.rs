//! The local API over a real Unix socket: round trips with progress, many clients at
//! once, and bad frames (garbage, oversized, wrong version) that get an error answer
//! while the server keeps serving (specs/local-api.md §5).
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;

use rdht_api::frame::{read_frame, write_frame};
use rdht_api::proto::{ClientFrame, Reply, ServerFrame, decode, encode};
use rdht_api::{
    API_VERSION, ApiError, Client, ClientError, ErrorKind, Incoming, MAX_FRAME_LEN, Progress,
    Request, Response, ServerConn,
};
use rdht_core::BuilderKey;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

/// A server that answers `TrustList` with one key per request seen on the connection,
/// `Gc` with two progress frames then an answer, and anything else with NotFound.
fn serve(path: &Path) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut conn = ServerConn::new(stream);
                let mut seen = 0u8;
                while let Ok(Some(Incoming { id, request })) = conn.next().await {
                    seen += 1;
                    let answer = match request {
                        Request::TrustList => {
                            Ok(Response::Trust(vec![BuilderKey::from_bytes([seen; 32])]))
                        }
                        Request::Gc => {
                            for done in [10, 20] {
                                let p = Progress::Bytes {
                                    done,
                                    total: Some(20),
                                };
                                conn.progress(id, p).await.unwrap();
                            }
                            Ok(Response::Gc {
                                evicted_artifacts: 1,
                                freed_bytes: 20,
                            })
                        }
                        other => Err(ApiError::new(ErrorKind::NotFound, format!("no {other:?}"))),
                    };
                    conn.reply(id, answer).await.unwrap();
                }
            });
        }
    })
}

async fn read_reply(s: &mut UnixStream) -> Option<ServerFrame> {
    read_frame(s, MAX_FRAME_LEN)
        .await
        .unwrap()
        .map(|p| decode(&p).unwrap())
}

fn trust_list_frame(id: u64) -> Vec<u8> {
    encode(&ClientFrame {
        version: API_VERSION,
        id,
        request: Request::TrustList,
    })
}

#[tokio::test]
async fn round_trip_with_progress_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = rdht_api::socket_path(dir.path());
    let _server = serve(&path);
    let mut client = Client::connect(&path).await.unwrap();
    let mut progress = Vec::new();
    let r = client
        .call_with_progress(Request::Gc, |p| progress.push(p.clone()))
        .await
        .unwrap();
    assert_eq!(
        r,
        Response::Gc {
            evicted_artifacts: 1,
            freed_bytes: 20
        }
    );
    assert_eq!(
        progress,
        vec![
            Progress::Bytes {
                done: 10,
                total: Some(20)
            },
            Progress::Bytes {
                done: 20,
                total: Some(20)
            }
        ]
    );
    let err = client.call(Request::Shutdown).await.unwrap_err();
    match err {
        ClientError::Api(e) => {
            assert_eq!(e.kind, ErrorKind::NotFound);
            assert_eq!(e.message, "no Shutdown");
        }
        other => panic!("{other:?}"),
    }
    // The connection still works after an error answer.
    assert_eq!(
        client.call(Request::TrustList).await.unwrap(),
        Response::Trust(vec![BuilderKey::from_bytes([3; 32])])
    );
}

#[tokio::test]
async fn many_clients_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = rdht_api::socket_path(dir.path());
    let _server = serve(&path);
    let tasks: Vec<_> = (0..48)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move {
                let mut c = Client::connect(&path).await.unwrap();
                let mut answers = Vec::new();
                for _ in 0..5 {
                    answers.push(c.call(Request::TrustList).await.unwrap());
                }
                answers
            })
        })
        .collect();
    for t in tasks {
        let answers = t.await.unwrap();
        let expected: Vec<_> = (1..=5)
            .map(|i| Response::Trust(vec![BuilderKey::from_bytes([i; 32])]))
            .collect();
        assert_eq!(answers, expected);
    }
}

#[tokio::test]
async fn garbage_and_wrong_version_get_an_error_then_service_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = rdht_api::socket_path(dir.path());
    let _server = serve(&path);
    let mut s = UnixStream::connect(&path).await.unwrap();

    // The current version followed by garbage.
    write_frame(&mut s, &[API_VERSION as u8, 0x07, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let f = read_reply(&mut s).await.unwrap();
    assert!(
        matches!(&f.reply, Reply::Failed(e) if e.kind == ErrorKind::BadFrame),
        "{f:?}"
    );
    assert_eq!(f.id, 0);

    // Another version.
    let mut v9 = trust_list_frame(5);
    v9[0] = 9;
    write_frame(&mut s, &v9).await.unwrap();
    let f = read_reply(&mut s).await.unwrap();
    match f.reply {
        Reply::Failed(e) => {
            assert_eq!(e.kind, ErrorKind::UnsupportedVersion);
            assert_eq!(
                e.message,
                format!("request speaks API version 9; this daemon speaks {API_VERSION}")
            );
        }
        other => panic!("{other:?}"),
    }

    // Same connection, a valid request.
    write_frame(&mut s, &trust_list_frame(6)).await.unwrap();
    let f = read_reply(&mut s).await.unwrap();
    assert_eq!(f.id, 6);
    assert_eq!(
        f.reply,
        Reply::Done(Response::Trust(vec![BuilderKey::from_bytes([1; 32])]))
    );
}

#[tokio::test]
async fn oversized_frame_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = rdht_api::socket_path(dir.path());
    let _server = serve(&path);
    let mut bad = UnixStream::connect(&path).await.unwrap();
    // Only the length prefix: with unread bytes pending, closing the socket would reset
    // it and could discard the error frame before the client reads it.
    bad.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let f = read_reply(&mut bad).await.unwrap();
    match f.reply {
        Reply::Failed(e) => {
            assert_eq!(e.kind, ErrorKind::TooLarge);
            assert_eq!(
                e.message,
                "frame of 4294967295 bytes announced, more than the limit of 1048576; closing the connection"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(read_reply(&mut bad).await.is_none(), "connection closed");
    let mut good = Client::connect(&path).await.unwrap();
    assert_eq!(
        good.call(Request::TrustList).await.unwrap(),
        Response::Trust(vec![BuilderKey::from_bytes([1; 32])])
    );
}

#[tokio::test]
async fn no_daemon_is_reported_as_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = rdht_api::socket_path(dir.path());
    match Client::connect(&path).await {
        Err(ClientError::NotRunning { path: p, .. }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
    // A stale socket file with no listener behind it.
    drop(UnixListener::bind(&path).unwrap());
    assert!(matches!(
        Client::connect(&path).await,
        Err(ClientError::NotRunning { .. })
    ));
}
