//! Hosts with their own addresses: one Linux network namespace per node, joined by a
//! bridge that lives in a namespace of its own, through veth pairs. Driven with
//! `ip` (iproute2); needs root.
//!
//! Owns: naming, creating and deleting the namespaces, links and addresses, and
//! cutting or restoring one node's link. Does not own: the processes inside them
//! (`net.rs`).
//!
//! Invariant: every interface and address is created inside namespaces this module
//! created (`<prefix>-hub`, `<prefix>-n<I>`); the caller's own namespace, and so the
//! machine's real interfaces, are never touched. The subnet (10.213.0.0/24) exists
//! only on the private bridge, so it cannot clash with the host's networks, and two
//! testnets (distinct prefixes) do not see each other.

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
