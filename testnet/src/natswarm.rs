//! A private swarm across NAT routers, for `tests/nat.rs` and the NAT throughput bench:
//! an anchor on the "internet" side of a [`NatNet`] and one laptop behind each of its
//! routers, real daemons each in its own namespace, driven through the `rdht` CLI.
//!
//! Owns: starting that topology ([`NatSwarm`]), waiting for a swarm state or a relay
//! reservation, fetching by root, reading a namespace's byte counters. Does not own:
//! the namespaces and routers themselves (`netns.rs`) or any assertion about
//! behaviour (each test and bench states its own). Waits poll with deadlines.
//!
//! Needs root, `ip` and `iptables`; [`require_nat`] says so and panics where they are
//! missing. Every helper panics, with the daemon's log where there is one, when what it
//! waits for does not happen: a harness failure is the caller's failure.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::netns::{NatKind, NatNet, nat_unavailable};
use crate::{Launch, Node, bin};

/// The swarm key of every [`NatSwarm`].
pub const KEY: &str = "/key/swarm/psk/1.0.0/\n/base16/\n\
    6e61742d746573742d6b65792d6e61742d746573742d6b65792d6e61742d7465\n";
/// How long a wait for a swarm state may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Panics, saying why, where network namespaces or iptables are missing.
pub fn require_nat() {
    if let Some(why) = nat_unavailable() {
        panic!(
            "NAT tests and benches need network namespaces and iptables (CI runs them as root): {why}"
        );
    }
}

/// `rdht-node` run inside namespace `ns`.
pub fn in_ns(ns: &str) -> Launch {
    Launch {
        argv: vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            ns.into(),
            bin("rdht-node").into(),
        ],
        env: None,
    }
}

/// Polls `rdht --json status` on `node` until `ok` holds for its first swarm; returns
/// that swarm's entry and how long it took.
pub fn wait_swarm(
    node: &Node,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, Duration) {
    let start = Instant::now();
    loop {
        let status = node.json(&["status"]);
        let swarm = &status["swarms"][0];
        if ok(swarm) {
            return (swarm.clone(), start.elapsed());
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: still {swarm} after {DEADLINE:?}\n--- log ---\n{}",
            std::fs::read_to_string(node.log()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private-swarm daemon in `ns`, listening on `listen`, bootstrapping from `boot`,
/// with `extra` arguments.
pub fn private_node(dir: &Path, name: &str, ns: &str, listen: &str, extra: &[&str]) -> Node {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).expect("data dir");
    let key = dir.join("swarm.key");
    let boot = dir.join("bootstrap.txt");
    let mut args = vec![
        "--swarm-key",
        key.to_str().expect("UTF-8 temp path"),
        "--bootstrap",
        boot.to_str().expect("UTF-8 temp path"),
        "--listen",
        listen,
    ];
    args.extend_from_slice(extra);
    Node::start_with(in_ns(ns), &data, &args)
}

/// An anchor (public host 1) and one laptop behind each NAT router of `nats`, in one
/// private swarm. Fields drop in order: daemons first, then their files, then the
/// namespaces.
pub struct NatSwarm {
    /// The anchor: public host 1, `--anchor`.
    pub anchor: Node,
    /// The anchor's bootstrap line.
    pub line: String,
    /// Laptop `k` (1-based) sits behind router `k`: `laptops[k - 1]`.
    pub laptops: Vec<Node>,
    /// Data directories, the swarm key and the bootstrap file.
    pub tmp: tempfile::TempDir,
    /// The namespaces.
    pub net: NatNet,
}

impl NatSwarm {
    /// Routers that drop unsolicited packets (as home routers do), each laptop holding
    /// a relay reservation on the anchor.
    pub fn new(nats: &[NatKind]) -> NatSwarm {
        let t = NatSwarm::start(nats, true);
        for (k, l) in t.laptops.iter().enumerate() {
            let took = wait_relayed(l);
            eprintln!("laptop {} reserved a relayed address after {took:?}", k + 1);
        }
        t
    }

    /// The daemons started; `silent` routers drop unsolicited packets rather than
    /// refuse them.
    pub fn start(nats: &[NatKind], silent: bool) -> NatSwarm {
        require_nat();
        let mut net = NatNet::new(1, nats);
        net.silent = silent;
        net.create().expect("create the NAT namespaces");
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        std::fs::write(dir.join("swarm.key"), KEY).expect("write swarm.key");
        std::fs::write(dir.join("bootstrap.txt"), "").expect("write bootstrap.txt");
        let anchor = private_node(
            dir,
            "anchor",
            &net.public_ns(1),
            &format!("/ip4/{}/tcp/0", net.public_addr(1)),
            &["--anchor"],
        );
        let line = anchor.stdout(&["swarm", "bootstrap-line"]);
        std::fs::write(dir.join("bootstrap.txt"), &line).expect("write bootstrap.txt");
        let laptops: Vec<Node> = (1..=nats.len())
            .map(|k| {
                private_node(
                    dir,
                    &format!("laptop{k}"),
                    &net.lan_ns(k),
                    "/ip4/0.0.0.0/tcp/0",
                    &[],
                )
            })
            .collect();
        NatSwarm {
            anchor,
            line,
            laptops,
            tmp,
            net,
        }
    }

    /// `rdht get ROOT` on `node` into a fresh directory under the temp dir.
    pub fn get(&self, node: &Node, root: &str, dest: &str) -> (Output, Duration) {
        let dest = self.tmp.path().join(dest);
        let start = Instant::now();
        let out = Command::new(bin("rdht"))
            .arg("--data-dir")
            .arg(&node.dir)
            .args([
                "--json",
                "get",
                root,
                dest.to_str().expect("UTF-8 temp path"),
            ])
            .output()
            .expect("run rdht");
        (out, start.elapsed())
    }
}

/// Polls until node's first swarm lists a relayed (`/p2p-circuit`) confirmed address.
pub fn wait_relayed(node: &Node) -> Duration {
    let (_, took) = wait_swarm(node, "a relay reservation", |s| {
        s["confirmed"].as_array().is_some_and(|c| {
            c.iter()
                .any(|a| a.as_str().is_some_and(|a| a.contains("/p2p-circuit")))
        })
    });
    took
}

/// IP bytes the hosts of namespace `ns` received and sent themselves
/// (`/proc/net/netstat`, `IpExt: InOctets OutOctets`): what a relay there carried, in
/// both directions, plus its own traffic. Interface counters would also count frames
/// the bridge floods to every port before it has learnt where a MAC address is, such
/// as other hosts' direct connections.
pub fn ns_bytes(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/netstat"])
        .output()
        .expect("run ip netns exec");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("IpExt:"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "IpExt names and values: {text}");
    let field = |name: &str| -> u64 {
        let i = rows[0]
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("no {name} in IpExt"));
        rows[1][i].parse().expect("an IpExt counter")
    };
    field("InOctets") + field("OutOctets")
}

/// The node's libp2p peer id.
pub fn peer_id(node: &Node) -> String {
    node.json(&["id"])["peer_id"]
        .as_str()
        .expect("rdht id names a peer id")
        .to_string()
}

/// The node's block bytes received and sent (`rdht status`).
pub fn block_bytes(node: &Node) -> (u64, u64) {
    let s = node.json(&["status"]);
    (
        s["bytes_in"].as_u64().expect("status has bytes_in"),
        s["bytes_out"].as_u64().expect("status has bytes_out"),
    )
}
