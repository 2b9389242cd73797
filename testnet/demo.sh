#!/usr/bin/env bash
# rdht demo: two checkouts of one project, the second built from the first's artifacts.
#
# 1. Builds rdht in release (`cargo build --release --bins`).
# 2. Starts 3 rdht-node daemons on 127.0.0.1 in a temp dir, as a private swarm: a
#    generated swarm key and a bootstrap file listing each node.
# 3. Node 3 trusts node 1's builder key.
# 4. Builds testnet/sample (serde + derive, serde_json, anyhow, a path dependency with a
#    build script) with `cargo dht-build` through node 1, with its own CARGO_HOME: cold.
# 5. Builds a copy in another directory, with another CARGO_HOME and an empty target
#    dir, through node 3: every unit comes from the swarm.
# 6. Prints the figures, checks that both binaries are byte-identical, and ends with
#    `demo: ok units=N hits=N speedup=X.Y identical=yes`.
#
# Everything it starts or creates is removed on exit, failure or Ctrl-C. Needs a Rust
# toolchain and network access to crates.io. Set RDHT_DEMO_KEEP=1 to keep the temp dir.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SAMPLE=$ROOT/testnet/sample
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rdht-demo.XXXXXX")
PIDS=()

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
fail() {
    printf 'demo: FAILED: %s\n' "$*" >&2
    exit 1
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    # Wait (bounded) for a clean exit, then make sure.
    local deadline=$((SECONDS + 20))
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${RDHT_DEMO_KEEP:-} == 1 ]]; then
        echo "demo: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------------------
say "building rdht (release)"
cd "$ROOT"
cargo build --release --bins
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET == /* ]] || TARGET=$ROOT/$TARGET
BIN=$TARGET/release
for b in rdht rdht-node cargo-dht-build; do
    [[ -x $BIN/$b ]] || fail "$BIN/$b was not built"
done
rdht() { "$BIN/rdht" "$@"; }

# ---------------------------------------------------------------------------------------
say "starting 3 daemons in a private swarm under $WORK"
rdht swarm keygen --out "$WORK/swarm.key" >/dev/null
echo "# demo swarm: one line per node (rdht swarm bootstrap-line)" >"$WORK/bootstrap.txt"

start_node() {
    local i=$1 dir=$WORK/node$1
    "$BIN/rdht-node" --data-dir "$dir" --swarm-key "$WORK/swarm.key" \
        --bootstrap "$WORK/bootstrap.txt" --listen /ip4/127.0.0.1/tcp/0 \
        </dev/null >/dev/null 2>"$WORK/node$i.log" &
    local pid=$!
    PIDS+=("$pid")
    local deadline=$((SECONDS + 60))
    until rdht --data-dir "$dir" id >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$WORK/node$i.log" >&2
            fail "node $i exited during start-up"
        fi
        ((SECONDS < deadline)) || fail "node $i did not answer within 60 s"
        sleep 0.1
    done
    rdht --data-dir "$dir" swarm bootstrap-line >>"$WORK/bootstrap.txt"
    echo "    node $i: pid $pid, $(tail -n 1 "$WORK/bootstrap.txt")" >&2
}
for i in 1 2 3; do start_node "$i"; done

json_field() { grep -o "\"$1\":[^,}]*" | head -n 1 | cut -d: -f2- | tr -d '"'; }

KEY1=$(rdht --data-dir "$WORK/node1" --json id | json_field builder_key)
[[ $KEY1 =~ ^[0-9a-f]{64}$ ]] || fail "could not read node 1's builder key"
say "node 3 trusts node 1's builder key ${KEY1:0:16}…"
rdht --data-dir "$WORK/node3" trust add "$KEY1" >/dev/null

# ---------------------------------------------------------------------------------------
# build NAME NODE: copies the sample to $WORK/NAME/sample, fetches its crates into
# $WORK/NAME/cargo-home (not timed), then times `cargo dht-build` through node NODE.
# Sets SUMMARY (the JSON totals) and ELAPSED_MS.
build() {
    local name=$1 node=$2
    local dir=$WORK/$name/sample home=$WORK/$name/cargo-home
    mkdir -p "$dir"
    (cd "$SAMPLE" && tar cf - --exclude=./target .) | (cd "$dir" && tar xf -)
    local -a env=(env -u RUSTC_WRAPPER -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR
        -u CARGO_BUILD_RUSTC_WRAPPER CARGO_HOME="$home" PATH="$BIN:$PATH"
        RDHT_DATA_DIR="$WORK/node$node")
    (cd "$dir" && "${env[@]}" cargo fetch --locked -q) ||
        fail "cargo fetch for $name (is crates.io reachable?)"
    local t0 t1
    t0=$(now_ms)
    if ! SUMMARY=$(cd "$dir" && "${env[@]}" cargo dht-build --json --locked 2>"$WORK/$name.log"); then
        tail -n 30 "$WORK/$name.log" >&2
        fail "cargo dht-build for $name"
    fi
    t1=$(now_ms)
    ELAPSED_MS=$((t1 - t0))
    echo "$SUMMARY" >"$WORK/$name.json"
    echo "    $(grep '^rdht:' "$WORK/$name.log" | tail -n 1)" >&2
}

say "cold build through node 1 ($WORK/alice, its own CARGO_HOME)"
build alice 1
COLD=$SUMMARY COLD_MS=$ELAPSED_MS

say "warm build of a copy through node 3 ($WORK/bob, another CARGO_HOME, empty target)"
build bob 3
WARM=$SUMMARY WARM_MS=$ELAPSED_MS

# ---------------------------------------------------------------------------------------
A=$WORK/alice/sample/target/debug/rdht-sample
B=$WORK/bob/sample/target/debug/rdht-sample
[[ -x $A && -x $B ]] || fail "a build produced no binary"
OUT_A=$("$A") || fail "the cold binary does not run"
OUT_B=$("$B") || fail "the warm binary does not run"
[[ $OUT_A == "$OUT_B" ]] || fail "the binaries print different output"
SHA_A=$(sha256sum "$A" | cut -d' ' -f1)
SHA_B=$(sha256sum "$B" | cut -d' ' -f1)
IDENTICAL=no
[[ $SHA_A == "$SHA_B" ]] && IDENTICAL=yes

f() { json_field "$1" <<<"$2"; }
human() { awk -v b="$1" 'BEGIN { split("B KiB MiB GiB", u); i = 1;
    while (b >= 1024 && i < 4) { b /= 1024; i++ }
    printf (i == 1 ? "%d %s" : "%.1f %s"), b, u[i] }'; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f s", ms / 1000 }'; }
SPEEDUP=$(awk -v c="$COLD_MS" -v w="$WARM_MS" 'BEGIN { printf "%.1f", c / (w > 0 ? w : 1) }')

UNITS=$(f units "$WARM") HITS=$(f hits "$WARM") MISSES=$(f misses "$WARM")
echo
printf '%-16s %16s %16s\n' "" "cold (node 1)" "warm (node 3)"
printf '%-16s %16s %16s\n' units "$(f units "$COLD")" "$UNITS"
printf '%-16s %16s %16s\n' hits "$(f hits "$COLD")" "$HITS"
printf '%-16s %16s %16s\n' misses "$(f misses "$COLD")" "$MISSES"
printf '%-16s %16s %16s\n' uncacheable "$(f uncacheable "$COLD")" "$(f uncacheable "$WARM")"
printf '%-16s %16s %16s\n' "build time" "$(secs "$COLD_MS")" "$(secs "$WARM_MS")"
printf '%-16s %16s %16s\n' "bytes fetched" "$(human "$(f bytes_fetched "$COLD")")" \
    "$(human "$(f bytes_fetched "$WARM")")"
printf '%-16s %16s %16s\n' speedup "" "${SPEEDUP}x"
echo
echo "binaries identical: $IDENTICAL (sha256 ${SHA_A:0:16}… / ${SHA_B:0:16}…)"
echo "program output: $OUT_B"

[[ $IDENTICAL == yes ]] || fail "the two binaries differ"
((HITS > 0)) || fail "the warm build hit nothing: $(grep -o '"miss_reasons":{[^}]*}' <<<"$WARM")"
if ((MISSES != 0)); then
    # A miss is never an error in rdht: the unit was compiled locally instead.
    echo "note: $MISSES unit(s) missed and were compiled locally:" \
        "$(grep -o '"miss_reasons":{[^}]*}' <<<"$WARM")" >&2
fi
echo "demo: ok units=$UNITS hits=$HITS speedup=$SPEEDUP identical=$IDENTICAL"
