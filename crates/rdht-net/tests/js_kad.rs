//! Our provider keys in a DHT node rdht did not write (issue 18, part 6): js-libp2p's
//! `@libp2p/kad-dht` from npm, in server mode on rdht's Kademlia protocol, stores the
//! provider records node A sends it and answers node B's lookups with them.
//!
//! The js node is `testnet/js/dht-server.mjs`, with the packages of
//! `testnet/js/package-lock.json` (testnet/test.sh runs `npm ci` there). It needs Node.js
//! 20 or later; where node or the packages are missing the test fails, saying so, rather
//! than skip. Does not cover: our key layout byte by byte (`vectors.rs`).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use common::*;
use rdht_core::BuildKey;
use rdht_net::{BootstrapPeer, MemoryBlocks, Multiaddr, ProviderKey};

const T: Duration = Duration::from_secs(30);
/// The Kademlia protocol of `rdht_net`'s swarms (specs/swarm.md §2).
const KAD: &str = "/rdht/kad/2.0.0";

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testnet/js")
}

/// The js DHT server, killed when dropped (its stdin closing also stops it).
struct JsDht {
    child: Child,
    _stdin: ChildStdin,
    lines: Receiver<String>,
}

impl JsDht {
    /// Starts the server; returns it and its address, as a bootstrap entry.
    fn start() -> (JsDht, BootstrapPeer) {
        let dir = js_dir();
        assert!(
            dir.join("node_modules/@libp2p/kad-dht").is_dir(),
            "{}: no node_modules: run `npm ci` there (testnet/test.sh does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("dht-server.mjs")
            .arg(KAD)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `node` (Node.js 20 or later is needed): {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut js = JsDht {
            child,
            _stdin: stdin,
            lines,
        };
        let line = js.next_line("the js node to listen", |l| l.starts_with("listening "));
        let addr: Multiaddr = line["listening ".len()..].parse().unwrap();
        (js, BootstrapPeer::from_multiaddr(addr).unwrap())
    }

    /// The next line of its stdout that `want` accepts, within [`T`].
    fn next_line(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(line) => eprintln!("js: {line}"),
                Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the js node exited: {:?}", self.child.wait())
                }
            }
        }
    }
}

impl Drop for JsDht {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Node A announces a build key and an artifact root through the js node, which
/// reports storing each under its multihash, with A as the provider. A then stops, so
/// what B finds next can only come from the js node's store: B, whose only peer is the
/// js node, looks both keys up and finds A.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_js_libp2p_dht_server_stores_our_provider_records_and_answers_lookups() {
    init_tracing();
    let (mut js, boot) = JsDht::start();
    let art = Artifact::new(18, &[40_000]);
    let keys = [
        ProviderKey::Build(BuildKey::from_bytes([18; 32])),
        ProviderKey::Artifact(art.root),
    ];

    let a = node(vec![swarm("public", vec![boot.clone()])], art.store()).await;
    let a_id = a.peer_id();
    for key in keys {
        assert_eq!(a.provide(key).await.unwrap(), ["public"]);
        // kad-dht decoded the key as a CID and stored the record by its multihash.
        let want = format!("provider {} {a_id}", hex(&key.to_bytes()[2..]));
        let got = js.next_line("the js node to store the record", |l| {
            l.starts_with("provider ")
        });
        assert_eq!(got, want, "{key}");
    }
    a.shutdown().await;

    let b = node(
        vec![swarm("public", vec![boot.clone()])],
        Arc::new(MemoryBlocks::new()),
    )
    .await;
    let conns = b.connections().await.unwrap().remove(0).1;
    assert!(
        conns.iter().all(|c| c.peer == boot.peer),
        "B's only peer is the js node: {conns:?}"
    );
    for key in keys {
        let lookup = eventually(T, "the js node to name A", || async {
            b.find_providers(key).await.unwrap()
        })
        .await;
        assert_eq!(lookup.providers, [a_id], "{key}");
    }
    // Neither A's records nor our lookups were refused: the js node never stored a
    // provider record for anyone else.
    while let Ok(line) = js.lines.try_recv() {
        assert!(!line.starts_with("provider "), "unexpected: {line}");
    }
}
