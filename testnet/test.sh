#!/usr/bin/env bash
# The project's tests, as CI runs them. Some need root and programs from Debian's
# packages: the network-namespace tests (iproute2's `ip`; for testnet/tests/nat.rs
# `iptables` for its NAT routers and dnsmasq-base, a DNS server without the system
# service, for its /dnsaddr test) and the Debian 11 test
# (debootstrap, which makes a bullseye root from Debian's mirror). As root, this
# installs whichever of those packages is missing. crates/rdht-net/tests/js_kad.rs runs
# a js-libp2p DHT node: it needs Node.js 20 or later with npm (Debian's `nodejs` when
# node is missing; Debian 12's is 18, too old: use NodeSource's there) and the npm
# packages pinned by testnet/js/package-lock.json, which this installs with `npm ci`
# when the lock file changed. Then it runs `cargo test --workspace` with any arguments
# given (e.g. `-- --nocapture`).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: run this as root: the network-namespace and Debian 11 tests need it" >&2
    exit 1
fi
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
command -v node >/dev/null || missing+=(nodejs npm)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "test.sh: installing ${missing[*]}" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
    echo "test.sh: Node.js $(node --version) is too old for testnet/js (js-libp2p): 20 or later is needed" >&2
    exit 1
fi
command -v npm >/dev/null || { echo "test.sh: npm is missing (it comes with Node.js)" >&2; exit 1; }
js=testnet/js
if ! cmp -s "$js/package-lock.json" "$js/node_modules/.rdht-installed-lock"; then
    echo "test.sh: npm ci in $js" >&2
    npm ci --prefix "$js" --no-audit --no-fund --loglevel=error
    cp "$js/package-lock.json" "$js/node_modules/.rdht-installed-lock"
fi
exec cargo test --workspace "$@"
