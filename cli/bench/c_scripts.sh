#!/usr/bin/env bash
# Benchmark of cargo dht-build on a workload dominated by build scripts that compile C
# (issue 16): zstd, libz-sys (static), libsqlite3-sys (bundled) and ring.
#
#   cli/bench/c_scripts.sh           # from the repo root; needs Rust, a C compiler, crates.io
#
# In one run, on the same machine and workload:
#   cold   plain `cargo build`, empty target dir
#   miss   `cargo dht-build` through daemon A, empty target dir: every unit and every
#          build-script run misses, is built here and shared
#   warm   a copy at another path, another CARGO_HOME, empty target dir, through daemon
#          B (which trusts A), fetching every unit and every run from A over loopback
# and prints times and ratios against cold, the floor (copying target/debug alone), and
# whether every unit and run of the warm build hit. Target: warm <= 0.15x cold, with
# every unit and every run a hit. Downloads happen before any timing.
# RDHT_BENCH_KEEP=1 keeps the work directory (daemon logs, projects) for inspection.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

cargo build --release --bins -q
work=$(mktemp -d /tmp/rdht-cbench.XXXXXX)
mkdir -p "$work/bin"
cp "$repo/target/release/rdht-node" "$repo/target/release/rdht" "$repo/target/release/cargo-dht-build" "$work/bin/"
bin=$work/bin
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${RDHT_BENCH_KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

"$bin/rdht" swarm keygen --out "$work/swarm.key" 2>/dev/null
: >"$work/boot.txt"
start_node() {
    mkdir -p "$work/$1"
    "$bin/rdht-node" --data-dir "$work/$1" --swarm-key "$work/swarm.key" \
        --bootstrap "$work/boot.txt" --listen /ip4/127.0.0.1/tcp/0 2>"$work/$1.log" &
    pids+=($!)
    for _ in $(seq 300); do [ -S "$work/$1/api.sock" ] && break; sleep 0.1; done
    "$bin/rdht" --data-dir "$work/$1" swarm bootstrap-line >>"$work/boot.txt"
}
start_node a
start_node b
key_a=$("$bin/rdht" --data-dir "$work/a" --json id | sed 's/.*"builder_key":"\([0-9a-f]*\)".*/\1/')
"$bin/rdht" --data-dir "$work/b" trust add "$key_a" >/dev/null

mkdir -p "$work/p0/src"
cat >"$work/p0/Cargo.toml" <<'TOML'
[package]
name = "cwork"
version = "0.1.0"
edition = "2021"

[dependencies]
zstd = { version = "0.13", default-features = false }
libz-sys = { version = "1", default-features = false, features = ["static"] }
libsqlite3-sys = { version = "0.30", features = ["bundled"] }
ring = "0.17"
TOML
cat >"$work/p0/src/main.rs" <<'RS'
fn main() {
    let packed = zstd::encode_all(&b"rdht rdht rdht rdht"[..], 3).unwrap();
    let z = unsafe { std::ffi::CStr::from_ptr(libz_sys::zlibVersion()) };
    let s = unsafe { std::ffi::CStr::from_ptr(libsqlite3_sys::sqlite3_libversion()) };
    let d = ring::digest::digest(&ring::digest::SHA256, b"rdht");
    println!("{} {:?} {:?} {:?}", packed.len(), z, s, d.as_ref()[0]);
}
RS
(cd "$work/p0" && CARGO_HOME="$work/home-a" cargo generate-lockfile -q && CARGO_HOME="$work/home-a" cargo fetch -q)
for p in p1 p2; do mkdir -p "$work/$p" && cp -r "$work/p0/." "$work/$p/"; done
(cd "$work/p2" && CARGO_HOME="$work/home-b" cargo fetch -q)

now() { date +%s.%N; }
timed() {
    local t0 t1
    t0=$(now)
    "$@"
    t1=$(now)
    awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.3f\n", a - b }' >"$work/elapsed"
}

echo "cold: cargo build ..." >&2
(cd "$work/p0" && CARGO_HOME="$work/home-a" timed cargo build -q 2>/dev/null)
t_cold=$(cat "$work/elapsed")
echo "miss: cargo dht-build through A ..." >&2
(cd "$work/p1" && CARGO_HOME="$work/home-a" RDHT_DATA_DIR="$work/a" timed "$bin/cargo-dht-build" dht-build --json -q 2>"$work/miss.txt" >"$work/miss.json")
t_miss=$(cat "$work/elapsed")
echo "warm: cargo dht-build at another path through B ..." >&2
(cd "$work/p2" && CARGO_HOME="$work/home-b" RDHT_DATA_DIR="$work/b" timed "$bin/cargo-dht-build" dht-build --json -q 2>"$work/warm.txt" >"$work/warm.json")
t_warm=$(cat "$work/elapsed")
same=no
cmp -s "$work/p1/target/debug/cwork" "$work/p2/target/debug/cwork" && same=yes
sync
timed cp -a "$work/p2/target/debug" "$work/copy-floor"
t_copy=$(cat "$work/elapsed")
copy_mb=$(du -sm "$work/copy-floor" | cut -f1)

echo "miss:  $(grep '^rdht: [0-9]' "$work/miss.txt")"
echo "warm:  $(grep '^rdht: [0-9]' "$work/warm.txt")"
# The summary's fields come in a fixed order: units, hits, ..., runs {runs, hits, ...}.
units=$(sed -n 's/^{"units":\([0-9]*\),"hits":\([0-9]*\).*/\1/p' "$work/warm.json")
hits=$(sed -n 's/^{"units":\([0-9]*\),"hits":\([0-9]*\).*/\2/p' "$work/warm.json")
runs=$(sed -n 's/.*"runs":{"runs":\([0-9]*\),"hits":\([0-9]*\).*/\1/p' "$work/warm.json")
run_hits=$(sed -n 's/.*"runs":{"runs":\([0-9]*\),"hits":\([0-9]*\).*/\2/p' "$work/warm.json")
awk -v c="$t_cold" -v m="$t_miss" -v w="$t_warm" -v cp="$t_copy" -v mb="$copy_mb" -v u="$units" -v h="$hits" -v r="$runs" -v rh="$run_hits" -v same="$same" 'BEGIN {
    printf "%-38s %8s %8s\n", "build", "seconds", "x cold"
    printf "%-38s %8.2f %8.3f\n", "cold cargo build", c, 1
    printf "%-38s %8.2f %8.3f\n", "cargo dht-build, all misses", m, m / c
    printf "%-38s %8.2f %8.3f  (target <= 0.15)\n", "cargo dht-build, warm from swarm", w, w / c
    printf "%-38s %8.2f %8.3f  (floor: copying the %d MB target/debug)\n", "cp -a target/debug", cp, cp / c, mb
    printf "warm: %d of %d units hit, %d of %d build-script runs hit; binaries identical: %s\n", h, u, rh, r, same
}'
