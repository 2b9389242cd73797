#!/usr/bin/env bash
# The measurement behind the decision bound (lookup_timeout_ms, specs/swarm.md §6.4):
# how long a unit's record phase (DHT lookup, dial, record request, until the trust
# policy accepts a root) takes when the provider is reachable, over a bridge between
# network namespaces (no added latency: this machine's kernel has no netem).
#
#   sudo cli/bench/decision_bound.sh        # from the repo root; needs root (namespaces)
#
# Three daemons in network namespaces (rdht-testnet up 3 --netns). Node 1 builds a
# 22-unit crates.io project (serde+derive, serde_json, anyhow, libc) and shares it;
# nodes 3 and 2, both trusting node 1 and both with empty stores, build a copy one
# after the other: every unit a hit. The daemons' debug logs give each hit's record
# phase (`records_ms`); this prints them sorted, with the median and the maximum. RDHT_BENCH_KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bins -q
work=$(mktemp -d /tmp/rdht-bound.XXXXXX)
mkdir -p "$work/bin"
for b in rdht-node rdht cargo-dht-build rdht-testnet; do cp "target/release/$b" "$work/bin/"; done
bin=$work/bin
export RDHT_BIN_DIR=$bin RDHT_TESTNET_DIR=$work/net RUST_LOG=info,rdht_node::daemon=debug
cleanup() {
    "$bin/rdht-testnet" down >/dev/null 2>&1 || true
    if [ -n "${RDHT_BENCH_KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM
"$bin/rdht-testnet" up 3 --netns >/dev/null
key1=$("$bin/rdht" --data-dir "$work/net/n1" --json id | sed 's/.*"builder_key":"\([0-9a-f]*\)".*/\1/')
for i in 2 3; do "$bin/rdht" --data-dir "$work/net/n$i" trust add "$key1" >/dev/null; done

. cli/bench/gone_project.sh
make_project "$work/p1" bound
(cd "$work/p1" && CARGO_HOME="$work/home" cargo generate-lockfile -q && CARGO_HOME="$work/home" cargo fetch -q)
for p in p2 p3; do mkdir -p "$work/$p" && cp -r "$work/p1/." "$work/$p/"; done
build() { # NODE PROJECT
    (cd "$work/$2" && CARGO_HOME="$work/home" RDHT_DATA_DIR="$work/net/n$1" "$bin/cargo-dht-build" dht-build -q 2>&1 | grep '^rdht: [0-9]')
}
echo "node 1 builds: $(build 1 p1)"
"$bin/rdht" --data-dir "$work/net/n1" sync >/dev/null
echo "node 3 builds: $(build 3 p3)"
echo "node 2 builds: $(build 2 p2)"
for i in 3 2; do
    ms=$(grep 'resolved from the swarm' "$work/net/n$i.log" | sed -n 's/.*records_ms=\([0-9]*\).*/\1/p' | sort -n)
    n=$(echo "$ms" | wc -l)
    med=$(echo "$ms" | sed -n "$(( (n + 1) / 2 ))p")
    echo "node $i record phase of $n hits (ms): median $med, max $(echo "$ms" | tail -1); all: $(echo $ms)"
done
