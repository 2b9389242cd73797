//! Transfer benchmark: fetch one artifact (default 1 GiB; `RDHT_BENCH_MIB` sets the size)
//! between two in-process nodes over loopback, then copy the same bytes over a plain
//! tokio TCP socket, and print both rates and their ratio.
//!
//! Measures the whole block path: pnet-less TCP, noise, yamux, framing, BLAKE3
//! verification of every block and delivery to a sink. The fetch runs in a task of the
//! runtime, as in the daemon (on the main thread it was a third busy thread on a 2-core
//! machine: 632 and 863 MB/s against 1067 and 1099 spawned, same build). Each line also
//! gives the CPU time the process used, so a run on a busy machine can be recognised.
//! Does not measure lookups or disk I/O (both sides use memory).
//! Run: `cargo bench -p rdht-net --bench transfer`.

#![allow(clippy::unwrap_used)]

use rdht_testkit::cpu_time;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdht_core::{Block, BlockRef, DagBuilder, FileEntry, Labels, Manifest};
use rdht_net::{
    BlockSink, BootstrapPeer, FetchConfig, MemoryBlocks, NodeConfig, NodeHandle, SwarmConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts verified blocks and drops them.
#[derive(Default)]
struct CountingSink {
    blocks: AtomicU64,
    bytes: AtomicU64,
}

impl BlockSink for CountingSink {
    fn put_block(&self, block: Block) -> std::io::Result<()> {
        self.blocks.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(block.bytes().len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn build(size: u64, store: &MemoryBlocks) -> (rdht_core::BlockId, u64) {
    let mut emit = |b: BlockRef<'_>| -> Result<(), std::convert::Infallible> {
        store.insert_blocks([b.to_block()]);
        Ok(())
    };
    let mut builder = DagBuilder::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for w in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        let Ok(()) = builder.update(&chunk[..n], &mut emit);
        left -= n as u64;
    }
    let Ok(file) = builder.finish(&mut emit);
    let manifest = Manifest::new(
        Labels::default(),
        vec![FileEntry {
            path: "big.bin".into(),
            executable: false,
            size,
            root: file.id,
        }],
    )
    .unwrap();
    let (root, blocks) = manifest.to_dag();
    store.insert_blocks(blocks);
    let wire_bytes: u64 = store
        .ids()
        .iter()
        .map(|id| store.get(id).unwrap().stored_len() as u64)
        .sum();
    (root.id, wire_bytes)
}

async fn raw_tcp(store: &MemoryBlocks) -> (u64, Duration) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let blocks: Vec<bytes::Bytes> = store
        .ids()
        .iter()
        .map(|id| match store.get(id).unwrap() {
            rdht_core::Encoded::Raw(b) => b,
            rdht_core::Encoded::Lz4 { data, .. } => data,
        })
        .collect();
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        sock.set_nodelay(true).unwrap();
        let mut w = tokio::io::BufWriter::with_capacity(256 * 1024, sock);
        for b in &blocks {
            w.write_all(b).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = sock.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    sender.await.unwrap();
    (total, start.elapsed())
}

fn cpu_line(before: Option<Duration>, after: Option<Duration>, wall: Duration) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!(
            "cpu {:.2} s = {:.2} cores busy",
            (a - b).as_secs_f64(),
            (a - b).as_secs_f64() / wall.as_secs_f64()
        ),
        _ => "cpu unknown".into(),
    }
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

#[tokio::main]
async fn main() {
    let mib: u64 = std::env::var("RDHT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let size = mib << 20;
    let store = Arc::new(MemoryBlocks::new());
    let t = Instant::now();
    let (root, wire_bytes) = build(size, &store);
    println!(
        "artifact: {mib} MiB file, {} blocks, {wire_bytes} block bytes (built in {:.1} s)",
        store.len(),
        t.elapsed().as_secs_f64()
    );

    let provider = NodeHandle::start(
        NodeConfig::new(vec![SwarmConfig::loopback("bench")]),
        store.clone(),
    )
    .await
    .unwrap();
    let addrs = provider.listen_addrs().await.unwrap();
    let mut swarm = SwarmConfig::loopback("bench");
    swarm.bootstrap = vec![BootstrapPeer {
        peer: provider.peer_id(),
        addr: addrs[0].1[0].clone(),
    }];
    let mut cfg = NodeConfig::new(vec![swarm]);
    cfg.fetch = FetchConfig::default();
    let fetcher = NodeHandle::start(cfg, Arc::new(MemoryBlocks::new()))
        .await
        .unwrap();
    let sink = Arc::new(CountingSink::default());
    let (cpu0, t) = (cpu_time(), Instant::now());
    // Fetch in a task of the runtime, as the daemon does (not on the main thread).
    let report = {
        let (fetcher, sink, provider) = (fetcher.clone(), sink.clone(), provider.peer_id());
        tokio::spawn(async move {
            fetcher
                .fetch_artifact_from("bench", root, &[provider], &*sink)
                .await
        })
        .await
        .unwrap()
        .unwrap()
    };
    let p2p = t.elapsed();
    let p2p_cpu = cpu_line(cpu0, cpu_time(), p2p);
    assert_eq!(report.bytes_fetched, wire_bytes);
    assert_eq!(sink.bytes.load(Ordering::Relaxed), wire_bytes);
    assert_eq!(sink.blocks.load(Ordering::Relaxed), store.len() as u64);
    fetcher.shutdown().await;
    provider.shutdown().await;

    let cpu0 = cpu_time();
    let (raw_bytes, raw) = raw_tcp(&store).await;
    let raw_cpu = cpu_line(cpu0, cpu_time(), raw);
    assert_eq!(raw_bytes, wire_bytes);
    let (a, b) = (mbps(wire_bytes, p2p), mbps(raw_bytes, raw));
    println!(
        "rdht fetch (noise+yamux, verified): {a:8.1} MB/s  ({:.2} s, {} blocks, {p2p_cpu})",
        p2p.as_secs_f64(),
        report.blocks_fetched
    );
    println!(
        "plain tokio TCP copy:               {b:8.1} MB/s  ({:.2} s, {raw_cpu})",
        raw.as_secs_f64()
    );
    println!("ratio rdht / raw TCP: {:.3}", a / b);
}
