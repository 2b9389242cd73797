#!/usr/bin/env bash
# Benchmark of cargo dht-build on a ~80-package crates.io workload (issue 6).
#
#   cli/bench/workload.sh            # from the repo root; needs only Rust and crates.io
#
# In one run, on the same machine and workload (tokio full, serde+derive, serde_json,
# clap+derive, regex, anyhow, tracing, tracing-subscriber, rand, chrono, itertools):
#   cold      plain `cargo build`, empty target dir
#   miss      `cargo dht-build` through daemon M (its own swarm with a peer N, set up
#             like A and B), empty target dir: every unit misses
#   cold      again
#   miss      again, through daemon A
#   warm      a copy at another path, another CARGO_HOME, empty target dir, through
#             daemon B, which fetches every unit from A over loopback
#   local     the same again through B, now holding everything (local hits)
# and prints times and ratios against cold. Cold and miss are each measured twice,
# alternating, and the faster of each pair is used, so neither side gets more chances
# than the other. Targets: miss <= 1.05x cold, warm <= 0.10x cold, per-unit hit
# overhead <= 5 ms. If sccache is installed, its warm time is measured too: at the same
# paths after rm -rf target, and at the warm build's other path and CARGO_HOME (with
# SCCACHE_BASEDIRS naming both). Downloads happen before any timing.
# Also printed: each daemon's peak RSS during the warm build, the disk bytes of B's
# store plus the warm target dir (a hard-linked file counted once), and floors for a
# hit's placing of outputs: `cp --reflink=auto`, `cp -al` (hard links) and `cp` of the
# same target tree, in the same run.
# RDHT_BENCH_KEEP=1 keeps the work directory (daemon logs, projects) for inspection.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

cargo build --release --bins -q
work=$(mktemp -d /tmp/rdht-bench.XXXXXX)
# A private copy: a later build of the repo must not swap binaries under the daemons.
mkdir -p "$work/bin"
cp "$repo/target/release/rdht-node" "$repo/target/release/rdht" "$repo/target/release/cargo-dht-build" "$work/bin/"
bin=$work/bin
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -n "${SCCACHE_SERVER_UDS:-}" ]; then sccache --stop-server >/dev/null 2>&1 || true; fi
    wait 2>/dev/null || true
    if [ -n "${RDHT_BENCH_KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

"$bin/rdht" swarm keygen --out "$work/swarm.key" 2>/dev/null
"$bin/rdht" swarm keygen --out "$work/swarm-m.key" 2>/dev/null
: >"$work/boot.txt"
: >"$work/boot-m.txt"
# start_node NAME SWARM: a daemon in swarm SWARM ("" for A and B, "-m" for M and N).
# RDHT_BENCH_SAMPLE_RATE sets every daemon's verify_sample_rate (default: the daemon's
# own default), to measure what sampled rebuilding costs the warm build.
start_node() {
    mkdir -p "$work/$1"
    if [ -n "${RDHT_BENCH_SAMPLE_RATE:-}" ]; then
        echo "verify_sample_rate = $RDHT_BENCH_SAMPLE_RATE" >"$work/$1/config.toml"
    fi
    "$bin/rdht-node" --data-dir "$work/$1" --swarm-key "$work/swarm$2.key" \
        --bootstrap "$work/boot$2.txt" --listen /ip4/127.0.0.1/tcp/0 2>"$work/$1.log" &
    pids+=($!)
    for _ in $(seq 300); do [ -S "$work/$1/api.sock" ] && break; sleep 0.1; done
    "$bin/rdht" --data-dir "$work/$1" swarm bootstrap-line >>"$work/boot$2.txt"
}
start_node a ""
start_node b ""
start_node m -m
start_node n -m
mn=("${pids[@]:2}")
key_a=$("$bin/rdht" --data-dir "$work/a" --json id | sed 's/.*"builder_key":"\([0-9a-f]*\)".*/\1/')
"$bin/rdht" --data-dir "$work/b" trust add "$key_a" >/dev/null

make_project() {
    mkdir -p "$1/src"
    cat >"$1/Cargo.toml" <<'TOML'
[package]
name = "workload"
version = "0.1.0"
edition = "2021"

[dependencies]
tokio = { version = "1", features = ["full"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
clap = { version = "4", features = ["derive"] }
regex = "1"
anyhow = "1"
tracing = "0.1"
tracing-subscriber = "0.3"
rand = "0.8"
chrono = "0.4"
itertools = "0.13"
TOML
    cat >"$1/src/main.rs" <<'RS'
use clap::Parser;
use itertools::Itertools;
use serde::Serialize;

#[derive(Parser)]
struct Args {
    #[arg(default_value = "a1b2c3")]
    text: String,
}

#[derive(Serialize)]
struct Out {
    digits: String,
    when: String,
    roll: u8,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt::init();
    let args = Args::parse();
    let re = regex::Regex::new(r"\d")?;
    let digits = re.find_iter(&args.text).map(|m| m.as_str()).join(",");
    let out = Out { digits, when: chrono::Utc::now().to_rfc3339(), roll: rand::random() };
    tracing::info!("done");
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
RS
}

make_project "$work/p0"
(cd "$work/p0" && CARGO_HOME="$work/home-a" cargo generate-lockfile -q && CARGO_HOME="$work/home-a" cargo fetch -q)
for p in p1 p2; do mkdir -p "$work/$p" && cp -r "$work/p0/." "$work/$p/"; done
(cd "$work/p2" && CARGO_HOME="$work/home-b" cargo fetch -q)

now() { date +%s.%N; }
# Runs a command; its wall time (seconds) goes to $work/elapsed and the CPU time (user +
# system) of the command and everything it ran to $work/cpu (the caller runs it in a
# subshell, so `times` counts only this command's process tree); its output goes where
# the caller redirects it.
timed() {
    local t0 t1
    t0=$(now)
    "$@"
    t1=$(now)
    awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.3f\n", a - b }' >"$work/elapsed"
    # Not in a pipe: a piped `times` would run in a fork that has no children.
    times >"$work/times"
    awk 'NR == 2 {
        split($1, u, /[ms]/); split($2, s, /[ms]/)
        printf "%.2f\n", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$work/times" >"$work/cpu"
}
tck=$(getconf CLK_TCK)
# CPU seconds (user + system) daemon process $1 has used so far.
cpu_of() { awk -v t="$tck" '{ printf "%.2f\n", ($14 + $15) / t }' "/proc/$1/stat"; }
# CPU seconds daemon $1 used since it had used $2.
cpu_since() { awk -v a="$(cpu_of "$1")" -v b="$2" 'BEGIN { printf "%.2f\n", a - b }'; }
pid_a=${pids[0]}
pid_b=${pids[1]}
pid_m=${pids[2]}

cold() {
    echo "cold: cargo build ..." >&2
    rm -rf "$work/p0/target"
    (cd "$work/p0" && CARGO_HOME="$work/home-a" timed cargo build -q 2>/dev/null)
}
# miss DAEMON OUT: every unit misses.
miss() {
    echo "miss: cargo dht-build through $1 ..." >&2
    rm -rf "$work/p1/target"
    (cd "$work/p1" && CARGO_HOME="$work/home-a" RDHT_DATA_DIR="$work/$1" timed "$bin/cargo-dht-build" dht-build --json -q 2>"$work/$2.txt" >"$work/$2.json")
}
cold
t_cold1=$(cat "$work/elapsed")
c_cold1=$(cat "$work/cpu")
d0=$(cpu_of "$pid_m")
miss m miss1
t_miss1=$(cat "$work/elapsed")
c_miss1=$(cat "$work/cpu")
d_miss1=$(cpu_since "$pid_m" "$d0")
cold
t_cold2=$(cat "$work/elapsed")
c_cold2=$(cat "$work/cpu")
d0=$(cpu_of "$pid_a")
miss a miss
t_miss2=$(cat "$work/elapsed")
c_miss2=$(cat "$work/cpu")
d_miss2=$(cpu_since "$pid_a" "$d0")
kill "${mn[@]}"
faster() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }
# pick T1 T2 V1 V2: V1 if T1 is the faster time, else V2.
pick() { awk -v a="$1" -v b="$2" -v x="$3" -v y="$4" 'BEGIN { print (a < b ? x : y) }'; }
t_cold=$(faster "$t_cold1" "$t_cold2")
t_miss=$(faster "$t_miss1" "$t_miss2")
c_cold=$(pick "$t_cold1" "$t_cold2" "$c_cold1" "$c_cold2")
c_miss=$(pick "$t_miss1" "$t_miss2" "$c_miss1" "$c_miss2")
d_miss=$(pick "$t_miss1" "$t_miss2" "$d_miss1" "$d_miss2")
echo "warm: cargo dht-build at another path through B ..." >&2
# Peak RSS (VmHWM, kB) of daemon $1 since it was reset by reset_peak.
peak_of() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
reset_peak() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }
reset_peak "$pid_a"
reset_peak "$pid_b"
a0=$(cpu_of "$pid_a")
b0=$(cpu_of "$pid_b")
(cd "$work/p2" && CARGO_HOME="$work/home-b" RDHT_DATA_DIR="$work/b" timed "$bin/cargo-dht-build" dht-build --json -q 2>"$work/warm.txt" >"$work/warm.json")
t_warm=$(cat "$work/elapsed")
c_warm=$(cat "$work/cpu")
a_warm=$(cpu_since "$pid_a" "$a0")
b_warm=$(cpu_since "$pid_b" "$b0")
rss_a=$(peak_of "$pid_a")
rss_b=$(peak_of "$pid_b")
# Disk bytes: du counts a file hard-linked into both trees once.
disk_store=$(du -sb "$work/b/store" | cut -f1)
disk_target=$(du -sb "$work/p2/target" | cut -f1)
disk_both=$(du -sbc "$work/b/store" "$work/p2/target" | tail -1 | cut -f1)
same=no
cmp -s "$work/p1/target/debug/workload" "$work/p2/target/debug/workload" && same=yes
rm -rf "$work/p2/target"
echo "local: again through B (local hits) ..." >&2
b0=$(cpu_of "$pid_b")
(cd "$work/p2" && CARGO_HOME="$work/home-b" RDHT_DATA_DIR="$work/b" timed "$bin/cargo-dht-build" dht-build --json -q 2>"$work/local.txt" >"$work/local.json")
t_local=$(cat "$work/elapsed")
c_local=$(cat "$work/cpu")
b_local=$(cpu_since "$pid_b" "$b0")
units=$(sed 's/.*"units":\([0-9]*\).*/\1/' "$work/local.json")
(cd "$work/p2" && CARGO_HOME="$work/home-b" timed cargo build -q)
t_noop=$(cat "$work/elapsed")
# A floor for hits: copying the outputs alone, with the page cache as warm as for hits.
sync
timed cp -a "$work/p2/target/debug" "$work/copy-floor"
t_copy=$(cat "$work/elapsed")
copy_mb=$(du -sm "$work/copy-floor" | cut -f1)
rm -rf "$work/copy-floor"
# Floors for placing outputs without copying: a reflink copy (a plain copy where the
# filesystem has no reflinks) and hard links of the same tree.
timed cp -a --reflink=auto "$work/p2/target/debug" "$work/copy-floor"
t_reflink=$(cat "$work/elapsed")
rm -rf "$work/copy-floor"
timed cp -al "$work/p2/target/debug" "$work/copy-floor"
t_link=$(cat "$work/elapsed")
rm -rf "$work/copy-floor"

t_sccache=""
t_sccache_other=""
sccache_other_hits=""
if command -v sccache >/dev/null; then
    # A server and cache of the bench's own, so that neither a running sccache server nor
    # an earlier run's cache takes part, and nothing is left behind.
    # SCCACHE_BASEDIRS (sccache >= 0.15) names both checkouts and both CARGO_HOMEs, the
    # best it can be told for hits at another path.
    export SCCACHE_DIR="$work/sccache" SCCACHE_SERVER_UDS="$work/sccache.sock"
    export SCCACHE_BASEDIRS="$work/p0:$work/p2:$work/home-a:$work/home-b"
    (cd "$work/p0" && rm -rf target && RUSTC_WRAPPER=sccache CARGO_HOME="$work/home-a" cargo build -q 2>/dev/null)
    rm -rf "$work/p0/target"
    (cd "$work/p0" && RUSTC_WRAPPER=sccache CARGO_HOME="$work/home-a" timed cargo build -q 2>/dev/null)
    t_sccache=$(cat "$work/elapsed")
    # The same at another path with another CARGO_HOME, as the warm rdht build above.
    sccache --zero-stats >/dev/null 2>&1 || true
    rm -rf "$work/p2/target"
    (cd "$work/p2" && RUSTC_WRAPPER=sccache CARGO_HOME="$work/home-b" timed cargo build -q 2>/dev/null)
    t_sccache_other=$(cat "$work/elapsed")
    sccache_other_hits=$(sccache --show-stats 2>/dev/null | awk '/^Cache hits / { print $3; exit }')
    sccache --stop-server >/dev/null 2>&1 || true
fi

echo "miss:  $(grep '^rdht: [0-9]' "$work/miss.txt")"
echo "warm:  $(grep '^rdht: [0-9]' "$work/warm.txt")"
grep -o '"miss_reasons":{[^}]*}' "$work/warm.json" | sed 's/^/warm /' || true
{ grep '^rdht: warning' "$work/warm.txt" || true; } | sort | uniq -c | sed 's/^/warm /'
echo "local: $(grep '^rdht: [0-9]' "$work/local.txt")"
field() { sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" "$work/$1.json"; }
for run in miss warm local; do
    echo "$run: key computation $(field $run key_ms) ms, hits' wall time $(field $run hit_wall_ms) ms, misses' time beyond rustc $(field $run miss_overhead_ms) ms (sums over units), waiting at the end for sharing $(field $run share_wait_ms) ms"
done
hit_wall=$(field local hit_wall_ms)
awk -v c="$t_cold" -v c1="$t_cold1" -v c2="$t_cold2" -v m="$t_miss" -v m1="$t_miss1" -v m2="$t_miss2" -v hw="$hit_wall" -v w="$t_warm" -v l="$t_local" -v n="$t_noop" -v u="$units" -v s="$t_sccache" -v so="$t_sccache_other" -v sh="$sccache_other_hits" -v same="$same" -v cp="$t_copy" -v mb="$copy_mb" -v rl="$t_reflink" -v ln="$t_link" -v ra="$rss_a" -v rb="$rss_b" -v ds="$disk_store" -v dt="$disk_target" -v db="$disk_both" 'BEGIN {
    printf "%-34s %8s %8s\n", "build", "seconds", "x cold"
    printf "%-34s %8.2f %8.3f  (faster of %.2f and %.2f)\n", "cold cargo build", c, 1, c1, c2
    printf "%-34s %8.2f %8.3f  (target <= 1.05; faster of %.2f and %.2f)\n", "cargo dht-build, all misses", m, m / c, m1, m2
    printf "%-34s %8.2f %8.3f  (target <= 0.10)\n", "cargo dht-build, warm from swarm", w, w / c
    printf "%-34s %8.2f %8.3f\n", "cargo dht-build, local hits", l, l / c
    if (s != "") {
        printf "%-34s %8.2f %8.3f\n", "sccache warm (same paths)", s, s / c
        printf "%-34s %8.2f %8.3f  (%s cache hits)\n", "sccache warm (another path)", so, so / c, sh
    }
    else print "sccache: not installed, not measured"
    printf "units %d; per-unit hit overhead %.1f ms (local hits minus no-op build, per unit; target <= 5)\n", u, (l - n) * 1000 / u
    printf "  of which inside the wrapper, per local hit: %.1f ms (process start to exit, writing the outputs included)\n", hw / u
    printf "copying the %d MB target/debug alone takes %.2f s (%.1f ms per unit)\n", mb, cp, cp * 1000 / u
    printf "  floors of the same tree: cp --reflink=auto %.2f s (%.1f ms per unit), cp -al (hard links) %.2f s (%.1f ms per unit)\n", rl, rl * 1000 / u, ln, ln * 1000 / u
    printf "peak RSS during the warm build: daemon B (fetching) %.1f MB, daemon A (serving) %.1f MB\n", rb / 1024, ra / 1024
    printf "disk after the warm build: store B %.1f MB + target %.1f MB = %.1f MB; counted once, %.1f MB\n", ds / 1e6, dt / 1e6, (ds + dt) / 1e6, db / 1e6
    printf "final binaries identical: %s\n", same
}'
# Where the CPU went: a build cannot take less wall time than its CPU seconds over the
# machine's cores.
cores=$(nproc)
awk -v n="$cores" -v cc="$c_cold" -v cm="$c_miss" -v dm="$d_miss" -v cw="$c_warm" -v aw="$a_warm" -v bw="$b_warm" -v cl="$c_local" -v bl="$b_local" 'BEGIN {
    printf "%-34s %8s %16s %8s %10s\n", "CPU seconds (user + system)", "cargo", "daemons", "total", "total/" n
    printf "%-34s %8.2f %16s %8.2f %10.2f\n", "cold cargo build", cc, "-", cc, cc / n
    printf "%-34s %8.2f %16s %8.2f %10.2f\n", "cargo dht-build, all misses", cm, sprintf("%.2f", dm), cm + dm, (cm + dm) / n
    printf "%-34s %8.2f %16s %8.2f %10.2f\n", "cargo dht-build, warm from swarm", cw, sprintf("B %.2f, A %.2f", bw, aw), cw + aw + bw, (cw + aw + bw) / n
    printf "%-34s %8.2f %16s %8.2f %10.2f\n", "cargo dht-build, local hits", cl, sprintf("B %.2f", bl), cl + bl, (cl + bl) / n
    print "(cargo: cargo, rustc, the wrappers and build scripts; daemons: the daemon serving the build and, for warm, A serving B)"
}'
