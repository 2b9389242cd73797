//! Hosts with their own addresses: one Linux network namespace per node, joined by a
//! bridge that lives in a namespace of its own, through veth pairs ([`Netns`]); and an
//! "internet" with public hosts and LANs behind NAT routers ([`NatNet`]: iptables
//! MASQUERADE). Driven with `ip` (iproute2) and `iptables`; needs root.
//!
//! Owns: naming, creating and deleting the namespaces, links, addresses, routes and NAT
//! rules, and cutting or restoring one node's link. Does not own: the processes inside
//! them (`net.rs`, or the test that starts them).
//!
//! Invariant: every interface, address, route and NAT rule is created inside
//! namespaces this module created (`<prefix>-hub`, `<prefix>-n<I>`; `rdnat-…-*`), and
//! a resolver file only under `/etc/netns/<one of them>/`; the caller's own namespace,
//! and so the machine's real interfaces, are never touched. The subnets
//! (10.213.0.0/24; 10.214.0.0/24 and 10.215.K.0/24) exist only inside those
//! namespaces, so they cannot clash with the host's networks, and two testnets
//! (distinct prefixes) do not see each other.

use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::net::run;

/// The first three octets of every node address: node I is `10.213.0.I/24`.
const SUBNET: &str = "10.213.0";
/// The most nodes one bridge carries (addresses .1 to .250).
pub const MAX_NODES: usize = 250;

/// The namespaces of one testnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Netns {
    /// Unique per testnet: `rdht-<8 hex digits>`.
    pub prefix: String,
    /// How many node namespaces.
    pub nodes: usize,
}

impl Netns {
    /// Names for a new testnet of `nodes` nodes (nothing is created yet).
    pub fn new(nodes: usize) -> Netns {
        Netns {
            prefix: format!("rdht-{:08x}", unique()),
            nodes,
        }
    }

    /// The namespace holding the bridge.
    pub fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// Node `index`'s namespace.
    pub fn node_ns(&self, index: usize) -> String {
        format!("{}-n{index}", self.prefix)
    }

    /// Node `index`'s address.
    pub fn addr(&self, index: usize) -> String {
        format!("{SUBNET}.{index}")
    }

    /// The hub-side end of node `index`'s veth pair.
    fn hub_link(index: usize) -> String {
        format!("v{index}")
    }

    /// Creates the hub with bridge `br0`, and for each node a namespace with `lo` up
    /// and `eth0` (address `10.213.0.I/24`) paired with `vI` on the bridge.
    pub fn create(&self) -> Result<(), Error> {
        if self.nodes > MAX_NODES {
            return Err(Error::Usage(format!(
                "at most {MAX_NODES} nodes in netns mode"
            )));
        }
        let hub = self.hub();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 1..=self.nodes {
            let ns = self.node_ns(i);
            let v = Self::hub_link(i);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &hub, "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &v, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &v, "up"])?;
            let cidr = format!("{}/24", self.addr(i));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Brings node `index`'s bridge port up or down.
    pub fn set_link(&self, index: usize, up: bool) -> Result<(), Error> {
        let v = Self::hub_link(index);
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.hub(), "link", "set", &v, state]).map(|_| ())
    }

    /// Deletes every namespace of this testnet that exists (their veths go with them).
    pub fn delete(&self) -> Result<(), Error> {
        let list = run(Command::new("ip").args(["netns", "list"]))?;
        let list = String::from_utf8_lossy(&list.stdout).into_owned();
        let exists = |name: &str| {
            list.lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        };
        let mut first = None;
        let names = (1..=self.nodes)
            .map(|i| self.node_ns(i))
            .chain([self.hub()]);
        for name in names {
            if exists(&name)
                && let Err(e) = ip(&["netns", "del", &name])
            {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// How a NAT router maps its LAN's connections to its public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Linux MASQUERADE: a LAN host's source port is kept where it is free, the same for
    /// every destination (endpoint-independent mapping): hole punching works.
    Cone,
    /// MASQUERADE `--random-fully`: a fresh random port per destination (address- and
    /// port-dependent mapping, a "symmetric" NAT): hole punching fails.
    Symmetric,
}

/// An "internet" (a bridge, `10.214.0.0/24`) with public hosts on it, and LANs each
/// behind its own NAT router: router `K`'s public address is `10.214.0.(100+K)`, its LAN
/// `10.215.K.0/24`, and the one host on that LAN is `10.215.K.2`, its default route via
/// the router (`10.215.K.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatNet {
    /// Unique per topology: `rdnat-<8 hex digits>`.
    pub prefix: String,
    /// Public hosts on the internet bridge.
    pub public: usize,
    /// The NAT of each LAN, in order (LAN K is `nats[K-1]`).
    pub nats: Vec<NatKind>,
    /// Routers drop unsolicited packets from the internet silently, as home routers
    /// do, instead of answering with a TCP reset (Linux's own answer, which kills a
    /// simultaneous open). Default: false.
    pub silent: bool,
}

impl NatNet {
    /// Names for a new topology (nothing is created yet).
    pub fn new(public: usize, nats: &[NatKind]) -> NatNet {
        NatNet {
            prefix: format!("rdnat-{:08x}", unique()),
            public,
            nats: nats.to_vec(),
            silent: false,
        }
    }

    /// The namespace of the internet bridge.
    pub fn internet(&self) -> String {
        format!("{}-inet", self.prefix)
    }

    /// Public host `i`'s namespace (1-based).
    pub fn public_ns(&self, i: usize) -> String {
        format!("{}-p{i}", self.prefix)
    }

    /// Public host `i`'s address.
    pub fn public_addr(&self, i: usize) -> String {
        format!("10.214.0.{i}")
    }

    /// Router `k`'s namespace (1-based).
    pub fn router_ns(&self, k: usize) -> String {
        format!("{}-r{k}", self.prefix)
    }

    /// Router `k`'s public address.
    pub fn router_addr(&self, k: usize) -> String {
        format!("10.214.0.{}", 100 + k)
    }

    /// The namespace of the host behind router `k`.
    pub fn lan_ns(&self, k: usize) -> String {
        format!("{}-h{k}", self.prefix)
    }

    /// The address of the host behind router `k`.
    pub fn lan_addr(&self, k: usize) -> String {
        format!("10.215.{k}.2")
    }

    fn all_ns(&self) -> Vec<String> {
        let mut v = vec![self.internet()];
        v.extend((1..=self.public).map(|i| self.public_ns(i)));
        for k in 1..=self.nats.len() {
            v.push(self.router_ns(k));
            v.push(self.lan_ns(k));
        }
        v
    }

    /// Creates the topology. On failure, what was made is deleted again.
    pub fn create(&self) -> Result<(), Error> {
        if self.public > 99 || self.nats.len() > 99 {
            return Err(Error::Usage("at most 99 public hosts and 99 LANs".into()));
        }
        let made = self.create_inner();
        if made.is_err() {
            let _ = self.delete();
        }
        made
    }

    fn create_inner(&self) -> Result<(), Error> {
        let inet = self.internet();
        for ns in self.all_ns() {
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", &inet, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &inet, "link", "set", "br0", "up"])?;
        // One veth from the bridge to `ns`'s `dev`, with `cidr` on it.
        let attach = |ns: &str, port: &str, cidr: &str| -> Result<(), Error> {
            ip(&[
                "-n", &inet, "link", "add", port, "type", "veth", "peer", "name", "wan0", "netns",
                ns,
            ])?;
            ip(&["-n", &inet, "link", "set", port, "master", "br0"])?;
            ip(&["-n", &inet, "link", "set", port, "up"])?;
            ip(&["-n", ns, "addr", "add", cidr, "dev", "wan0"])?;
            ip(&["-n", ns, "link", "set", "wan0", "up"])?;
            Ok(())
        };
        for i in 1..=self.public {
            attach(
                &self.public_ns(i),
                &format!("p{i}"),
                &format!("{}/24", self.public_addr(i)),
            )?;
        }
        for (k0, nat) in self.nats.iter().enumerate() {
            let k = k0 + 1;
            let (router, host) = (self.router_ns(k), self.lan_ns(k));
            attach(
                &router,
                &format!("r{k}"),
                &format!("{}/24", self.router_addr(k)),
            )?;
            ip(&[
                "-n", &router, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
                "netns", &host,
            ])?;
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("10.215.{k}.1/24"),
                "dev",
                "lan0",
            ])?;
            ip(&["-n", &router, "link", "set", "lan0", "up"])?;
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                &format!("{}/24", self.lan_addr(k)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &host, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &host,
                "route",
                "add",
                "default",
                "via",
                &format!("10.215.{k}.1"),
            ])?;
            in_ns(&router, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
            let mut rule = vec![
                "iptables",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                "wan0",
                "-j",
                "MASQUERADE",
            ];
            if *nat == NatKind::Symmetric {
                rule.push("--random-fully");
            }
            in_ns(&router, &rule)?;
            if self.silent {
                in_ns(
                    &router,
                    &[
                        "iptables",
                        "-A",
                        "INPUT",
                        "-i",
                        "wan0",
                        "-m",
                        "conntrack",
                        "!",
                        "--ctstate",
                        "ESTABLISHED,RELATED",
                        "-j",
                        "DROP",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Drops every UDP packet public host `i` sends or receives: for "UDP is blocked"
    /// tests.
    pub fn block_udp_public(&self, i: usize) -> Result<(), Error> {
        let ns = self.public_ns(i);
        in_ns(&ns, &["iptables", "-A", "INPUT", "-p", "udp", "-j", "DROP"])?;
        in_ns(
            &ns,
            &["iptables", "-A", "OUTPUT", "-p", "udp", "-j", "DROP"],
        )?;
        Ok(())
    }

    /// Makes programs run in public host `i`'s namespace (through `ip netns exec`,
    /// which mounts `/etc/netns/<ns>/resolv.conf` over `/etc/resolv.conf` for them) ask
    /// the DNS server at `server`. The file goes with [`NatNet::delete`].
    pub fn set_resolver(&self, i: usize, server: &str) -> Result<(), Error> {
        let dir = std::path::Path::new("/etc/netns").join(self.public_ns(i));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let file = dir.join("resolv.conf");
        std::fs::write(&file, format!("nameserver {server}\n")).map_err(|e| Error::io(&file, e))
    }

    /// Deletes every namespace of this topology that exists, and the resolver files
    /// of [`NatNet::set_resolver`].
    pub fn delete(&self) -> Result<(), Error> {
        for ns in self.all_ns() {
            let dir = std::path::Path::new("/etc/netns").join(&ns);
            if dir.exists() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        let list = run(Command::new("ip").args(["netns", "list"]))?;
        let list = String::from_utf8_lossy(&list.stdout).into_owned();
        let mut first = None;
        for name in self.all_ns() {
            let exists = list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name.as_str()));
            if exists && let Err(e) = ip(&["netns", "del", &name]) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for NatNet {
    fn drop(&mut self) {
        let _ = self.delete();
    }
}

/// Runs `argv` inside namespace `ns`.
fn in_ns(ns: &str, argv: &[&str]) -> Result<std::process::Output, Error> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(argv))
}

/// Why NAT topologies cannot be made here, or `None` when they can: network namespaces
/// (see [`unavailable`]) and `iptables`.
pub fn nat_unavailable() -> Option<String> {
    if let Some(why) = unavailable() {
        return Some(why);
    }
    if Command::new("iptables").arg("-V").output().is_err() {
        return Some("`iptables` is not installed (testnet/test.sh installs it)".into());
    }
    None
}

/// Why network namespaces cannot be used here, or `None` when they can: needs root,
/// `ip`, and permission to create a namespace (tried with a throw-away one).
pub fn unavailable() -> Option<String> {
    if !crate::running_as_root() {
        return Some("network namespaces need root (this process is not uid 0)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    let probe = format!("rdht-probe-{:08x}", unique());
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(format!("`ip netns add` fails here: {e}"));
    }
    let _ = ip(&["netns", "del", &probe]);
    None
}

fn ip(args: &[&str]) -> Result<std::process::Output, Error> {
    run(Command::new("ip").args(args))
}

/// A value unlikely to repeat between testnets: PID, time and a counter mixed.
fn unique() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    let mut x = std::process::id()
        .wrapping_mul(0x9e37_79b9)
        .wrapping_add(nanos)
        .wrapping_add(
            COUNTER
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x85eb_ca6b),
        );
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^ (x >> 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_limits_and_differ_between_testnets() {
        let a = Netns::new(MAX_NODES);
        let b = Netns::new(3);
        assert_ne!(a.prefix, b.prefix);
        assert_eq!(a.prefix.len(), "rdht-".len() + 8);
        assert_eq!(a.node_ns(250), format!("{}-n250", a.prefix));
        assert_eq!(a.addr(250), "10.213.0.250");
        // Interface names must be under 16 bytes (IFNAMSIZ).
        assert!(Netns::hub_link(MAX_NODES).len() < 16);
        assert!(
            Netns::new(MAX_NODES + 1)
                .create()
                .is_err_and(|e| matches!(e, Error::Usage(_)))
        );
    }
}
