#!/usr/bin/env bash
# The project's tests, as CI runs them. Some need root and programs from Debian's
# packages: the network-namespace tests (iproute2's `ip`; for testnet/tests/nat.rs
# `iptables` for its NAT routers and dnsmasq-base, a DNS server without the system
# service, for its /dnsaddr test) and the Debian 11 test
# (debootstrap, which makes a bullseye root from Debian's mirror). As root, this
# installs whichever of those packages is missing, then runs
# `cargo test --workspace` with any arguments given (e.g. `-- --nocapture`).
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
if [ "${#missing[@]}" -gt 0 ]; then
    echo "test.sh: installing ${missing[*]}" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
exec cargo test --workspace "$@"
