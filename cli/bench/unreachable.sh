#!/usr/bin/env bash
# Benchmark: a provider that has gone away costs nothing (issue 22).
#
#   cli/bench/unreachable.sh        # from the repo root; needs only Rust and crates.io
#
# Daemons on loopback in one private swarm: D (always on, holds provider records), the
# providers A and B, which build a 22-unit crates.io project (serde+derive, serde_json,
# anyhow, libc) and share it, and fresh builders C1..C8 (empty stores) that trust A and
# B. A provider is made unreachable with SIGSTOP: its port still accepts TCP
# connections, and connections made before stay up, but it never answers (a suspended
# laptop), the harder case than a killed one, whose dials are refused. In one run:
#   cold       plain `cargo build`, empty target dir
#   gone       `cargo dht-build` of a copy through C1 with A and B stopped: every unit
#              misses (its providers are unreachable)
#   cold, gone again (C2), alternating; the faster of each pair is used (C2 also
#              finds C1's records of the first run, which it does not trust: its
#              misses count as untrusted, still with both providers unreachable)
#   warm2      a copy through C3 with A and B reachable: every unit a hit
#   warm1      a copy through C4 with A stopped, B reachable: every unit a hit
#   warm2, warm1 twice more (C5..C8), alternating; the fastest of each is used (a warm
#              build takes about a second, so the machine's noise is a large part)
# and prints gone / cold (target <= 1.10) and warm1 / warm2 (target <= 1.10).
# RDHT_BENCH_KEEP=1 keeps the work directory (daemon logs, projects) for inspection.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bins -q
work=$(mktemp -d /tmp/rdht-unreach.XXXXXX)
mkdir -p "$work/bin"
cp target/release/rdht-node target/release/rdht target/release/cargo-dht-build "$work/bin/"
bin=$work/bin
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${RDHT_BENCH_KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

"$bin/rdht" swarm keygen --out "$work/swarm.key" 2>/dev/null
: >"$work/boot.txt"
declare -A pid
start_node() {
    "$bin/rdht-node" --data-dir "$work/$1" --swarm-key "$work/swarm.key" \
        --bootstrap "$work/boot.txt" --listen /ip4/127.0.0.1/tcp/0 2>"$work/$1.log" &
    pids+=($!)
    pid[$1]=$!
    for _ in $(seq 300); do [ -S "$work/$1/api.sock" ] && break; sleep 0.1; done
    "$bin/rdht" --data-dir "$work/$1" swarm bootstrap-line >>"$work/boot.txt"
}
key_of() { "$bin/rdht" --data-dir "$work/$1" --json id | sed 's/.*"builder_key":"\([0-9a-f]*\)".*/\1/'; }
for n in d a b c1 c2 c3 c4 c5 c6 c7 c8; do start_node "$n"; done
for c in c1 c2 c3 c4 c5 c6 c7 c8; do
    for p in a b; do "$bin/rdht" --data-dir "$work/$c" trust add "$(key_of "$p")" >/dev/null; done
done

. cli/bench/gone_project.sh
make_project "$work/p0" gone
(cd "$work/p0" && CARGO_HOME="$work/home" cargo generate-lockfile -q && CARGO_HOME="$work/home" cargo fetch -q)
for p in pa pb p1; do mkdir -p "$work/$p" && cp -r "$work/p0/." "$work/$p/"; done

now() { date +%s.%N; }
elapsed() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.3f\n", a - b }'; }
# dht NODE PROJECT OUT: cargo dht-build of PROJECT (empty target) through NODE; prints
# the wall time; the summary line goes to OUT.txt.
dht() {
    rm -rf "$work/$2/target"
    local t0; t0=$(now)
    (cd "$work/$2" && CARGO_HOME="$work/home" RDHT_DATA_DIR="$work/$1" "$bin/cargo-dht-build" dht-build -q 2>"$work/$3.txt" >/dev/null)
    elapsed "$t0"
}
cold() {
    rm -rf "$work/p0/target"
    local t0; t0=$(now)
    (cd "$work/p0" && CARGO_HOME="$work/home" cargo build -q 2>/dev/null)
    elapsed "$t0"
}
echo "providers A and B build and share ..." >&2
dht a pa share-a >/dev/null
"$bin/rdht" --data-dir "$work/a" sync >/dev/null
dht b pb share-b >/dev/null
"$bin/rdht" --data-dir "$work/b" sync >/dev/null
stop() { for n in "$@"; do kill -STOP "${pid[$n]}"; done; }
cont() { for n in "$@"; do kill -CONT "${pid[$n]}"; done; }

echo "cold, gone (A and B stopped), twice ..." >&2
t_cold1=$(cold)
stop a b; t_gone1=$(dht c1 p1 gone1); cont a b
t_cold2=$(cold)
stop a b; t_gone2=$(dht c2 p1 gone2); cont a b
echo "warm with both providers, warm with A stopped, twice ..." >&2
t_warm2a=$(dht c3 p1 warm2a)
stop a; t_warm1a=$(dht c4 p1 warm1a); cont a
t_warm2b=$(dht c5 p1 warm2b)
stop a; t_warm1b=$(dht c6 p1 warm1b); cont a
t_warm2c=$(dht c7 p1 warm2c)
stop a; t_warm1c=$(dht c8 p1 warm1c); cont a

for r in gone1 gone2 warm2a warm1a warm2b warm1b warm2c warm1c; do
    printf '%-7s %s\n' "$r:" "$(grep '^rdht: [0-9]' "$work/$r.txt")"
done
for c in c1 c4; do
    echo "$c status: $("$bin/rdht" --data-dir "$work/$c" status | grep '^reach:')"
done
awk -v c1="$t_cold1" -v c2="$t_cold2" -v g1="$t_gone1" -v g2="$t_gone2" \
    -v w2a="$t_warm2a" -v w2b="$t_warm2b" -v w2c="$t_warm2c" \
    -v w1a="$t_warm1a" -v w1b="$t_warm1b" -v w1c="$t_warm1c" 'BEGIN {
    c = c1 < c2 ? c1 : c2; g = g1 < g2 ? g1 : g2
    w2 = w2a < w2b ? w2a : w2b; w2 = w2 < w2c ? w2 : w2c
    w1 = w1a < w1b ? w1a : w1b; w1 = w1 < w1c ? w1 : w1c
    printf "%-46s %8s %8s\n", "build", "seconds", "ratio"
    printf "%-46s %8.2f %8s  (faster of %.2f and %.2f)\n", "cold cargo build", c, "", c1, c2
    printf "%-46s %8.2f %8.3f  (x cold, target <= 1.10; faster of %.2f and %.2f)\n", "all misses, every provider unreachable", g, g / c, g1, g2
    printf "%-46s %8.2f %8s  (fastest of %.2f, %.2f, %.2f)\n", "warm, both providers reachable", w2, "", w2a, w2b, w2c
    printf "%-46s %8.2f %8.3f  (x warm, target <= 1.10; fastest of %.2f, %.2f, %.2f)\n", "warm, one of two providers unreachable", w1, w1 / w2, w1a, w1b, w1c
}'
