//! Store throughput against plain files (specs/store.md §8).
//!
//! Owns: one run that ingests ~1 GiB of artifact-like files (1 KiB to 50 MiB, random
//! contents) into a sled store and exports them again, then does the same with plain
//! file copies, and prints MB/s, the ratios and space amplification. Does not own any
//! assertion: it measures. `RDHT_STORE_BENCH_BYTES` sets the total (e.g. `200000000`
//! for a quick run).
//!
//! Fairness: both sides read the same source files from the page cache. Ingest makes
//! each artifact durable (one sled flush); the plain side fsyncs each file it writes.
//! Neither side fsyncs on export.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdht_core::Labels;
use rdht_store::{Config, IngestFile, Store};

const FILES_PER_ARTIFACT: usize = 8;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Log-uniform sizes from 1 KiB to 50 MiB until `total` bytes.
fn make_files(dir: &Path, total: u64, rng: &mut Rng) -> Vec<(PathBuf, u64)> {
    let (lo, hi) = ((1u64 << 10) as f64, (50u64 << 20) as f64);
    let mut files = Vec::new();
    let mut sum = 0;
    let mut buf = Vec::new();
    while sum < total {
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        let size = ((lo.ln() + u * (hi.ln() - lo.ln())).exp() as u64).min(total - sum + 1024);
        buf.resize(size as usize, 0);
        rng.fill(&mut buf);
        let path = dir.join(format!("f{:05}.rlib", files.len()));
        fs::write(&path, &buf).expect("write source file");
        files.push((path, size));
        sum += size;
    }
    files
}

fn copy(from: &Path, to: &Path, sync: bool, buf: &mut [u8]) {
    let mut r = fs::File::open(from).expect("open");
    let mut w = fs::File::create(to).expect("create");
    loop {
        let n = r.read(buf).expect("read");
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).expect("write");
    }
    if sync {
        w.sync_all().expect("sync");
    }
}

/// `wchar` from /proc/self/io: bytes this process handed to write(2) so far.
fn written() -> u64 {
    fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("wchar: ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Copies every file into `dir` (fsync each), then copies them out again; returns
/// both durations and removes what it wrote.
fn plain_run(files: &[(PathBuf, u64)], dir: &Path, buf: &mut [u8]) -> (Duration, Duration) {
    let out = dir.join("out");
    fs::create_dir_all(&out).expect("mkdir");
    let t = Instant::now();
    for (p, _) in files {
        copy(p, &dir.join(p.file_name().expect("name")), true, buf);
    }
    let write = t.elapsed();
    let t = Instant::now();
    for (p, _) in files {
        let name = p.file_name().expect("name");
        copy(&dir.join(name), &out.join(name), false, buf);
    }
    let read = t.elapsed();
    fs::remove_dir_all(dir).expect("rm");
    (write, read)
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn main() {
    let total: u64 = std::env::var("RDHT_STORE_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let files = make_files(&src, total, &mut rng);
    let bytes: u64 = files.iter().map(|f| f.1).sum();
    println!(
        "rdht-store bench: {} files, {:.1} MiB, {} per artifact",
        files.len(),
        bytes as f64 / (1 << 20) as f64,
        FILES_PER_ARTIFACT
    );

    // Plain files: copy in (fsync each), copy out. Run before and after the store
    // phase; the machine is shared, so both runs are printed and their mean is used.
    let mut buf = vec![0u8; 256 << 10];
    let (w1, r1) = plain_run(&files, &tmp.path().join("plain1"), &mut buf);

    // Store.
    let mut config = Config::default();
    if let Some(seg) = std::env::var("RDHT_STORE_BENCH_SEGMENT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.sled.segment_size = seg;
    }
    config.sled.low_space = std::env::var("RDHT_STORE_BENCH_LOW_SPACE").is_ok();
    println!(
        "sled segment size {}, low space mode {}",
        config.sled.segment_size, config.sled.low_space
    );
    let store = Store::open(tmp.path().join("db"), config).expect("open store");
    let w0 = written();
    let t = Instant::now();
    let mut roots = Vec::new();
    for group in files.chunks(FILES_PER_ARTIFACT) {
        let ingest: Vec<_> = group
            .iter()
            .map(|(p, _)| {
                let name = p.file_name().expect("name").to_string_lossy().into_owned();
                IngestFile::from_disk(name, p).expect("stat")
            })
            .collect();
        roots.push(
            store
                .ingest(Labels::default(), ingest, false)
                .expect("ingest")
                .root,
        );
    }
    let ingest = t.elapsed();
    let ingest_written = written() - w0;
    let stats = store.stats().expect("stats");
    let out = tmp.path().join("out");
    let t = Instant::now();
    for (i, root) in roots.iter().enumerate() {
        store
            .export(root, &out.join(i.to_string()))
            .expect("export");
    }
    let export = t.elapsed();
    let after = store.stats().expect("stats");

    let (w2, r2) = plain_run(&files, &tmp.path().join("plain2"), &mut buf);
    println!(
        "plain runs: write {:.1} / {:.1} MB/s, read {:.1} / {:.1} MB/s",
        mbps(bytes, w1),
        mbps(bytes, w2),
        mbps(bytes, r1),
        mbps(bytes, r2)
    );
    let (plain_write, plain_read) = ((w1 + w2) / 2, (r1 + r2) / 2);
    let (pw, pr) = (mbps(bytes, plain_write), mbps(bytes, plain_read));
    let (si, se) = (mbps(bytes, ingest), mbps(bytes, export));
    println!("plain write (copy + fsync): {pw:8.1} MB/s  (mean {plain_write:.2?})");
    println!("plain read  (copy out):     {pr:8.1} MB/s  (mean {plain_read:.2?})");
    println!(
        "store ingest:               {si:8.1} MB/s  ({ingest:.2?})  ratio {:.2}",
        si / pw
    );
    println!(
        "store export:               {se:8.1} MB/s  ({export:.2?})  ratio {:.2}",
        se / pr
    );
    println!(
        "space: file bytes {bytes}, logical {}, on disk {} after ingest, {} after export",
        stats.logical_bytes, stats.disk_bytes, after.disk_bytes
    );
    println!(
        "space amplification (on-disk / logical): {:.3}; (on-disk / file bytes): {:.3}",
        stats.disk_bytes as f64 / stats.logical_bytes as f64,
        stats.disk_bytes as f64 / bytes as f64
    );
    println!(
        "write amplification of ingest (bytes written by the process / file bytes): {:.2}",
        ingest_written as f64 / bytes as f64
    );
    println!(
        "reads {} hits {} misses {} blocks {}",
        after.reads, after.hits, after.misses, after.blocks
    );
}
