//! Garbage benchmark (issue 19, part 4): the speed of an honest fetch between two
//! in-process nodes of a private swarm (TCP, pnet, noise, yamux over loopback), first
//! alone, then while a hostile peer (`tests/common/hostile.rs`) opens streams as fast
//! as it can on every protocol at both nodes and writes random bytes on each; prints
//! both rates, their ratio (the target: at least 0.5), how soon each node banned the
//! hostile peer and how many streams and refused opens it had.
//!
//! The fetch counts verified blocks and keeps none, so the same fetcher fetches the
//! whole artifact again; each line gives the process's CPU time, so a run on a busy
//! machine can be recognised. Run: `cargo bench -p rdht-net --bench garbage`
//! (`RDHT_BENCH_MIB` sets the artifact's size, default 256).

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/hostile.rs"]
mod hostile;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdht_core::{Block, BlockRef, DagBuilder, FileEntry, Labels, Manifest};
use rdht_net::{
    BlockSink, BootstrapPeer, FetchConfig, MemoryBlocks, NodeConfig, NodeHandle, SwarmConfig,
    SwarmKey,
};
use rdht_testkit::cpu_time;

const KEY: [u8; 32] = [19; 32];

/// Counts verified blocks and drops them.
#[derive(Default)]
struct CountingSink {
    bytes: AtomicU64,
}

impl BlockSink for CountingSink {
    fn put_block(&self, block: Block) -> std::io::Result<()> {
        self.bytes
            .fetch_add(block.bytes().len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn build(size: u64, store: &MemoryBlocks) -> rdht_core::BlockId {
    let mut emit = |b: BlockRef<'_>| -> Result<(), std::convert::Infallible> {
        store.insert_blocks([b.to_block()]);
        Ok(())
    };
    let mut builder = DagBuilder::new();
    let mut left = size;
    let mut n = 0u64;
    while left > 0 {
        let chunk = rdht_testkit::data(n, 1 << 20);
        let take = left.min(chunk.len() as u64) as usize;
        let Ok(()) = builder.update(&chunk[..take], &mut emit);
        left -= take as u64;
        n += 1;
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
    root.id
}

fn private(name: &str) -> SwarmConfig {
    let mut s = SwarmConfig::loopback(name);
    s.key = Some(SwarmKey::from_bytes(KEY));
    s
}

/// Fetches `root` from `provider` in a task of the runtime (as the daemon does): MB/s
/// of block bytes and the CPU line.
async fn fetch(
    fetcher: &NodeHandle,
    provider: rdht_net::PeerId,
    root: rdht_core::BlockId,
) -> (f64, Duration, String) {
    let sink = Arc::new(CountingSink::default());
    let (cpu0, t) = (cpu_time(), Instant::now());
    let report = {
        let (fetcher, sink) = (fetcher.clone(), sink.clone());
        tokio::spawn(async move {
            fetcher
                .fetch_artifact_from("bench", root, &[provider], &*sink)
                .await
        })
        .await
        .unwrap()
        .unwrap()
    };
    let wall = t.elapsed();
    assert!(report.banned.is_empty(), "{report:?}");
    let bytes = sink.bytes.load(Ordering::Relaxed);
    let cpu = match (cpu0, cpu_time()) {
        (Some(b), Some(a)) => format!(
            "cpu {:.2} s = {:.2} cores busy",
            (a - b).as_secs_f64(),
            (a - b).as_secs_f64() / wall.as_secs_f64()
        ),
        _ => "cpu unknown".into(),
    };
    (bytes as f64 / wall.as_secs_f64() / 1e6, wall, cpu)
}

#[tokio::main]
async fn main() {
    let mib: u64 = std::env::var("RDHT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let store = Arc::new(MemoryBlocks::new());
    let root = build(mib << 20, &store);
    println!("artifact: {mib} MiB file, {} blocks", store.len());

    let provider = NodeHandle::start(NodeConfig::new(vec![private("bench")]), store)
        .await
        .unwrap();
    let paddr = provider.listen_addrs().await.unwrap()[0].1[0].clone();
    let mut swarm = private("bench");
    swarm.bootstrap = vec![BootstrapPeer {
        peer: provider.peer_id(),
        addr: paddr.clone(),
    }];
    let mut cfg = NodeConfig::new(vec![swarm]);
    cfg.fetch = FetchConfig::default();
    let fetcher = NodeHandle::start(cfg, Arc::new(MemoryBlocks::new()))
        .await
        .unwrap();
    let faddr = fetcher.listen_addrs().await.unwrap()[0].1[0].clone();

    let (alone, wall, cpu) = fetch(&fetcher, provider.peer_id(), root).await;
    println!(
        "honest fetch alone:              {alone:8.1} MB/s  ({:.2} s, {cpu})",
        wall.as_secs_f64()
    );

    let start = Instant::now();
    let h = hostile::start(
        KEY,
        &[(provider.peer_id(), paddr), (fetcher.peer_id(), faddr)],
    );
    // The ban times, watched beside the fetch.
    let watch = {
        let (provider, fetcher, peer) = (provider.clone(), fetcher.clone(), h.peer);
        tokio::spawn(async move {
            let mut at = [None, None];
            while at.iter().any(Option::is_none) && start.elapsed() < Duration::from_secs(60) {
                for (i, n) in [&provider, &fetcher].into_iter().enumerate() {
                    if at[i].is_none() && n.banned_peers().contains(&peer) {
                        at[i] = Some(start.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            at
        })
    };
    let (attacked, wall, cpu) = fetch(&fetcher, provider.peer_id(), root).await;
    let (streams, refused) = (
        h.streams.load(Ordering::Relaxed),
        h.refused.load(Ordering::Relaxed),
    );
    drop(h);
    let [p_ban, f_ban] = watch.await.unwrap();
    println!(
        "honest fetch with garbage peer:  {attacked:8.1} MB/s  ({:.2} s, {cpu})",
        wall.as_secs_f64()
    );
    let ms = |d: Option<Duration>| {
        d.map_or("never".to_string(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        })
    };
    println!(
        "garbage peer: {streams} streams written, {refused} opens refused; banned by the provider after {}, by the fetcher after {}",
        ms(p_ban),
        ms(f_ban)
    );
    println!("ratio with / without garbage peer: {:.3}", attacked / alone);
    fetcher.shutdown().await;
    provider.shutdown().await;
}
