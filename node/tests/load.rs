//! Load on one daemon (issue 19, part 3): a flood of local-API connections, and
//! clients that send half a frame and stall, with the daemon's memory and descriptors
//! measured from `/proc`.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::time::{Duration, Instant};

use rdht_api::proto::{Resolution, Scope};
use rdht_api::{Client, Request, Response};
use rdht_core::BuildKey;
use rdht_testnet::Swarm;
use tokio::io::AsyncWriteExt;

/// Well-behaved clients sending `Resolve` at once.
const CLIENTS: usize = 1000;
/// Clients that send half a frame and then nothing.
const STALLED: usize = 50;
/// Every well-behaved client is answered within this, counted from its connect, on a
/// loaded 2-core machine.
const ANSWER_BOUND: Duration = Duration::from_secs(30);
/// The daemon's resident memory may grow by at most this during the flood.
const MEMORY_BOUND_KIB: u64 = 128 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_and_fifty_stalled_ones_are_all_served_in_bounded_memory() {
    // Our own descriptors: 1,050 sockets at once.
    rlimit::increase_nofile_limit(4096).unwrap();
    let swarm = Swarm::new();
    let node = swarm.node("a");
    let socket = rdht_api::socket_path(&node.dir);
    let rss_before = node.status_kib("VmRSS");
    let fds_before = node.open_fds();

    // Half a frame each: a length prefix promising 64 KiB, and 100 bytes of it.
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
        s.write_all(&(64u32 << 10).to_be_bytes()).await.unwrap();
        s.write_all(&[7u8; 100]).await.unwrap();
        stalled.push(s);
    }

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let socket = socket.clone();
        tasks.spawn(async move {
            let t0 = Instant::now();
            let mut c = Client::connect(&socket).await.unwrap();
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let answer = c
                .call(Request::Resolve {
                    key: BuildKey::from_bytes(key),
                    scope: Scope::Private,
                })
                .await
                .unwrap();
            assert!(
                matches!(answer, Response::Resolved(Resolution::Miss { .. })),
                "{answer:?}"
            );
            t0.elapsed()
        });
    }
    // The daemon's peak while the flood is served.
    let mut peak_fds = 0;
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    while answered < CLIENTS {
        tokio::select! {
            done = tasks.join_next() => {
                slowest = slowest.max(done.unwrap().unwrap());
                answered += 1;
            }
            _ = tokio::time::sleep(Duration::from_millis(5)) => {
                peak_fds = peak_fds.max(node.open_fds());
            }
        }
    }
    let total = start.elapsed();
    let hwm = node.status_kib("VmHWM");
    eprintln!(
        "{CLIENTS} clients with {STALLED} stalled: all answered in {total:?}, slowest {slowest:?}; \
         daemon RSS {rss_before} KiB before, peak {hwm} KiB; descriptors {fds_before} before, peak {peak_fds}"
    );
    assert!(slowest < ANSWER_BOUND, "slowest answer took {slowest:?}");
    assert!(
        hwm < rss_before + MEMORY_BOUND_KIB,
        "peak RSS {hwm} KiB from {rss_before} KiB"
    );
    // The stalled clients still hold their connections, and the daemon still answers,
    // having resolved every request.
    assert_eq!(node.json(&["status"])["resolve_misses"], CLIENTS as u64);
    drop(stalled);
    // Their connections are closed: the descriptors come back.
    let deadline = Instant::now() + rdht_testnet::DEADLINE;
    while node.open_fds() > fds_before + 5 {
        assert!(
            Instant::now() < deadline,
            "descriptors leak: {}",
            node.open_fds()
        );
        tokio::time::sleep(rdht_testnet::POLL).await;
    }
}
