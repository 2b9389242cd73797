//! DAG build throughput against raw BLAKE3 over the same buffer, measured in one run.
//!
//! `cargo bench -p rdht-core` builds the canonical DAG of a 256 MiB buffer (fed in 1 MiB
//! pieces, as a file reader would, with a sink that discards blocks) and hashes the same
//! buffer with `blake3::hash`; it prints both throughputs and their ratio. Target: the
//! DAG build reaches at least 0.8 of raw BLAKE3. `RDHT_BENCH_MIB` changes the size.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use rdht_core::{BlockRef, DagBuilder};

fn buffer(len: usize) -> Vec<u8> {
    // xorshift64*: incompressible, deterministic.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

fn dag_build(data: &[u8]) -> rdht_core::Link {
    let mut blocks = 0u64;
    let mut emit = |b: BlockRef<'_>| -> Result<(), Infallible> {
        blocks += black_box(b.payload.len() as u64 + 1);
        Ok(())
    };
    let mut builder = DagBuilder::new();
    for piece in data.chunks(1 << 20) {
        let Ok(()) = builder.update(piece, &mut emit);
    }
    let Ok(root) = builder.finish(&mut emit);
    root
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let mib: usize = std::env::var("RDHT_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let data = buffer(mib << 20);
    let mb = data.len() as f64 / 1e6;
    // Warm up both paths once, then take the best of 5 interleaved-by-kind runs.
    black_box(dag_build(&data));
    black_box(blake3::hash(&data));
    let dag = best_of(5, || {
        black_box(dag_build(black_box(&data)));
    });
    let raw = best_of(5, || {
        black_box(blake3::hash(black_box(&data)));
    });
    let dag_mbs = mb / dag.as_secs_f64();
    let raw_mbs = mb / raw.as_secs_f64();
    let ratio = dag_mbs / raw_mbs;
    println!("rdht-core dag bench: {mib} MiB buffer, best of 5");
    println!("  blake3::hash (baseline)  {raw_mbs:9.1} MB/s  ({raw:?})");
    println!("  DagBuilder               {dag_mbs:9.1} MB/s  ({dag:?})");
    println!(
        "  ratio dag/raw            {ratio:9.3}  (target >= 0.800: {})",
        if ratio >= 0.8 { "met" } else { "NOT met" }
    );
}
