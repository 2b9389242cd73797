//! A testnet: N `rdht-node` daemons as real processes in one private swarm, with its
//! state (data dirs, PIDs, namespaces) in a state directory so that another process —
//! the `rdht-testnet` binary run again — can stop, kill, restart, partition and heal
//! them.
//!
//! Owns: the state directory layout (`state.json`, `swarm.key`, `bootstrap.txt`,
//! `n<I>/` data dirs, `n<I>.log`), starting daemons detached from the caller's terminal,
//! waiting for their API socket with a deadline, stopping them (SIGTERM, then SIGKILL
//! after the deadline). Does not own: namespaces and links (`netns.rs`), any daemon
//! behaviour. Read first: [`Testnet`], [`State`].
//!
//! Nodes are numbered from 1. A [`Testnet`] made by [`Testnet::up`] tears everything
//! down when dropped unless [`Testnet::detach`] was called; one made by
//! [`Testnet::load`] never does.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::netns::Netns;
use crate::{DEADLINE, Error, bin_dir};

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// One daemon as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// 1-based index.
    pub index: usize,
    /// The daemon's data directory (`rdht --data-dir`).
    pub data_dir: PathBuf,
    /// Its stderr (`RUST_LOG=info`), appended to across restarts.
    pub log: PathBuf,
    /// The running process, if any.
    pub pid: Option<u32>,
    /// Its network namespace, in netns mode.
    pub netns: Option<String>,
    /// The address it listens on (libp2p multiaddr, without `/p2p/`), fixed after the
    /// first start so that restarts keep the bootstrap line valid.
    pub listen: String,
    /// Its bootstrap line (multiaddr ending in `/p2p/<peer id>`).
    pub bootstrap_line: String,
}

/// Everything needed to manage a testnet from another process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The state directory.
    pub dir: PathBuf,
    /// Where `rdht-node` and `rdht` were found.
    pub bin_dir: PathBuf,
    /// The private swarm's key file.
    pub swarm_key: PathBuf,
    /// The shared bootstrap file.
    pub bootstrap: PathBuf,
    /// The namespaces, in netns mode.
    pub netns: Option<Netns>,
    /// The daemons, index 1 first.
    pub nodes: Vec<NodeState>,
}

/// A running (or partly stopped) testnet.
#[derive(Debug)]
pub struct Testnet {
    state: State,
    children: HashMap<usize, Child>,
    owned: bool,
}

impl Testnet {
    /// Starts `n` daemons in a new private swarm with state in `dir` (created; must
    /// not hold a running testnet). With `netns`, each daemon runs in its own network
    /// namespace (see [`crate::netns`]); otherwise all listen on 127.0.0.1 with ports
    /// chosen by the OS. Returns once every daemon's API answers. On error everything
    /// started so far is torn down.
    pub fn up(dir: &Path, n: usize, netns: bool) -> Result<Testnet, Error> {
        if n == 0 {
            return Err(Error::Usage("a testnet needs at least one node".into()));
        }
        if let Ok(old) = Testnet::load(dir) {
            if old.nodes().iter().any(|s| old.is_running(s.index)) {
                return Err(Error::Usage(format!(
                    "a testnet is already running in {} (run `rdht-testnet down` first)",
                    dir.display()
                )));
            }
            // A dead one (its processes killed, say by a reboot): remove what is left of
            // it, namespaces included.
            old.down()?;
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let dir = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let bins = bin_dir()?;
        let swarm_key = dir.join("swarm.key");
        let bootstrap = dir.join("bootstrap.txt");
        let _ = std::fs::remove_file(&swarm_key);
        run(Command::new(bins.join("rdht"))
            .args(["swarm", "keygen", "--out"])
            .arg(&swarm_key))?;
        write(&bootstrap, b"# rdht-testnet swarm: one line per node\n")?;
        let mut net = Testnet {
            state: State {
                dir: dir.clone(),
                bin_dir: bins,
                swarm_key,
                bootstrap,
                netns: None,
                nodes: Vec::new(),
            },
            children: HashMap::new(),
            owned: true,
        };
        if netns {
            let ns = Netns::new(n);
            // Recorded before creation so a failure half-way is still cleaned up.
            net.state.netns = Some(ns.clone());
            net.save()?;
            ns.create()?;
        }
        for index in 1..=n {
            let data_dir = dir.join(format!("n{index}"));
            if data_dir.exists() {
                std::fs::remove_dir_all(&data_dir).map_err(|e| Error::io(&data_dir, e))?;
            }
            let log = dir.join(format!("n{index}.log"));
            let _ = std::fs::remove_file(&log);
            let (ns_name, listen) = match &net.state.netns {
                Some(ns) => (
                    Some(ns.node_ns(index)),
                    format!("/ip4/{}/tcp/0", ns.addr(index)),
                ),
                None => (None, "/ip4/127.0.0.1/tcp/0".to_string()),
            };
            net.state.nodes.push(NodeState {
                index,
                data_dir,
                log,
                pid: None,
                netns: ns_name,
                listen,
                bootstrap_line: String::new(),
            });
            net.spawn(index)?;
            let line =
                String::from_utf8_lossy(&net.rdht(index, &["swarm", "bootstrap-line"])?.stdout)
                    .trim()
                    .to_string();
            let listen = line
                .split("/p2p/")
                .next()
                .filter(|a| !a.is_empty() && line.contains("/p2p/"))
                .ok_or_else(|| Error::Daemon {
                    index,
                    message: format!("unexpected bootstrap line {line:?}"),
                })?
                .to_string();
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&net.state.bootstrap)
                .map_err(|e| Error::io(&net.state.bootstrap, e))?;
            writeln!(f, "{line}").map_err(|e| Error::io(&net.state.bootstrap, e))?;
            let node = net.node_mut(index)?;
            node.listen = listen;
            node.bootstrap_line = line;
            net.save()?;
        }
        net.wait_for_dht_servers()?;
        Ok(net)
    }

    /// Waits until every node but the first serves the DHT: on their own addresses (in
    /// namespaces) a node's DHT is a client until a peer has dialled it back (AutoNAT,
    /// specs/swarm.md §2.3), about a second after it joined. (The first node is only
    /// ever dialled, never dials, so nothing tests its address: in namespaces it runs as
    /// the anchor, which serves from the start.)
    fn wait_for_dht_servers(&self) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for node in self.state.nodes.iter().skip(1) {
            loop {
                let status = self.json(node.index, &["status"])?;
                if status["swarms"][0]["kad_server"] == true {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(Error::Daemon {
                        index: node.index,
                        message: format!("its DHT never turned to server mode: {status}"),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The testnet recorded in `dir`, for commands run by another process. Dropping it
    /// stops nothing.
    pub fn load(dir: &Path) -> Result<Testnet, Error> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NoTestnet(dir.to_path_buf())
            } else {
                Error::io(&path, e)
            }
        })?;
        let state = serde_json::from_str(&text).map_err(|e| Error::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Testnet {
            state,
            children: HashMap::new(),
            owned: false,
        })
    }

    /// Leaves the daemons running when this value is dropped (for `rdht-testnet up`).
    pub fn detach(mut self) -> State {
        self.owned = false;
        // Dropping a `Child` neither kills nor waits; whoever adopts the daemons reaps
        // them.
        self.children.clear();
        self.state.clone()
    }

    /// The recorded state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The nodes, index 1 first.
    pub fn nodes(&self) -> &[NodeState] {
        &self.state.nodes
    }

    /// Node `index`.
    pub fn node(&self, index: usize) -> Result<&NodeState, Error> {
        self.state
            .nodes
            .iter()
            .find(|s| s.index == index)
            .ok_or(Error::NoSuchNode {
                index,
                count: self.state.nodes.len(),
            })
    }

    fn node_mut(&mut self, index: usize) -> Result<&mut NodeState, Error> {
        let count = self.state.nodes.len();
        self.state
            .nodes
            .iter_mut()
            .find(|s| s.index == index)
            .ok_or(Error::NoSuchNode { index, count })
    }

    /// Node `index`'s data directory.
    pub fn data_dir(&self, index: usize) -> Result<PathBuf, Error> {
        Ok(self.node(index)?.data_dir.clone())
    }

    /// `rdht --data-dir <node index's dir>`, ready for more arguments.
    pub fn cli(&self, index: usize) -> Result<Command, Error> {
        let mut c = Command::new(self.state.bin_dir.join("rdht"));
        c.arg("--data-dir").arg(&self.node(index)?.data_dir);
        Ok(c)
    }

    /// Runs `rdht ARGS` against node `index`; a non-zero exit is an error carrying its
    /// stderr.
    pub fn rdht(&self, index: usize, args: &[&str]) -> Result<Output, Error> {
        run(self.cli(index)?.args(args))
    }

    /// `rdht --json ARGS` against node `index`, parsed.
    pub fn json(&self, index: usize, args: &[&str]) -> Result<serde_json::Value, Error> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.rdht(index, &a)?;
        serde_json::from_slice(&out.stdout).map_err(|e| Error::Daemon {
            index,
            message: format!("rdht {a:?} printed no JSON: {e}"),
        })
    }

    /// Whether node `index`'s daemon process is alive.
    pub fn is_running(&self, index: usize) -> bool {
        let Ok(node) = self.node(index) else {
            return false;
        };
        node.pid.is_some_and(|pid| pid_alive(pid, &node.data_dir))
    }

    /// Starts node `index` (stopped or killed) again with the same data dir, address
    /// and namespace, and waits until its API answers.
    pub fn restart(&mut self, index: usize) -> Result<(), Error> {
        if self.is_running(index) {
            return Err(Error::Usage(format!("node {index} is running")));
        }
        self.spawn(index)
    }

    /// Sends SIGKILL to node `index` and waits until it is gone.
    pub fn kill(&mut self, index: usize) -> Result<(), Error> {
        self.signal_and_wait(index, "KILL")
    }

    /// Sends SIGTERM to node `index` and waits until it exits (SIGKILL after the
    /// deadline).
    pub fn stop(&mut self, index: usize) -> Result<(), Error> {
        if self.signal_and_wait(index, "TERM").is_err() {
            self.signal_and_wait(index, "KILL")?;
        }
        Ok(())
    }

    /// Cuts node `index`'s link to the bridge (netns mode only): its packets and its
    /// peers' packets to it are dropped silently, as on a real network partition.
    pub fn partition(&self, index: usize) -> Result<(), Error> {
        self.node(index)?;
        self.netns()?.set_link(index, false)
    }

    /// Restores node `index`'s link (netns mode only).
    pub fn heal(&self, index: usize) -> Result<(), Error> {
        self.node(index)?;
        self.netns()?.set_link(index, true)
    }

    fn netns(&self) -> Result<&Netns, Error> {
        self.state.netns.as_ref().ok_or_else(|| {
            Error::Usage("this testnet runs on loopback; partitions need `up --netns`".into())
        })
    }

    /// Stops every daemon, deletes the namespaces and the state file. Data dirs and
    /// logs stay in the state directory for inspection. Returns the first error after
    /// trying everything.
    pub fn down(mut self) -> Result<(), Error> {
        self.owned = false;
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), Error> {
        let mut first = None;
        let indices: Vec<usize> = self.state.nodes.iter().map(|s| s.index).collect();
        for i in indices {
            if self.is_running(i)
                && let Err(e) = self.stop(i)
            {
                first.get_or_insert(e);
            }
        }
        if let Some(ns) = &self.state.netns
            && let Err(e) = ns.delete()
        {
            first.get_or_insert(e);
        }
        let state_file = self.state.dir.join(STATE_FILE);
        if let Err(e) = std::fs::remove_file(&state_file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            first.get_or_insert(Error::io(&state_file, e));
        }
        first.map_or(Ok(()), Err)
    }

    fn save(&self) -> Result<(), Error> {
        let path = self.state.dir.join(STATE_FILE);
        let tmp = self.state.dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_vec_pretty(&self.state).map_err(|e| Error::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write(&tmp, &text)?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// Starts node `index`'s daemon and waits for its API socket.
    fn spawn(&mut self, index: usize) -> Result<(), Error> {
        let node = self.node(index)?.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| Error::io(&node.log, e))?;
        let daemon = self.state.bin_dir.join("rdht-node");
        let mut cmd = match &node.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&daemon);
                c
            }
            None => Command::new(&daemon),
        };
        cmd.arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--swarm-key")
            .arg(&self.state.swarm_key)
            .arg("--bootstrap")
            .arg(&self.state.bootstrap)
            .arg("--listen")
            .arg(&node.listen);
        // In namespaces the first node is the swarm's anchor (always on, serving the DHT
        // from its own address): nothing dials it back to confirm the address, and as a
        // DHT client its provider records would reach the others only once its
        // announcements did, after `rdht put` has answered.
        if node.netns.is_some() && index == 1 {
            cmd.arg("--anchor");
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or("info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: a Ctrl-C meant for the caller does not reach the
        // daemons of a detached testnet.
        .process_group(0);
        let child = cmd.spawn().map_err(|e| Error::io(&daemon, e))?;
        let pid = child.id();
        self.children.insert(index, child);
        self.node_mut(index)?.pid = Some(pid);
        self.save()?;
        let socket = node.data_dir.join("api.sock");
        let start = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            if !self.reap(index) {
                return Err(Error::Daemon {
                    index,
                    message: format!(
                        "rdht-node exited during start-up; log {}:\n{}",
                        node.log.display(),
                        tail(&node.log)
                    ),
                });
            }
            if start.elapsed() > DEADLINE {
                return Err(Error::Timeout(format!(
                    "node {index}'s API socket {}",
                    socket.display()
                )));
            }
            std::thread::sleep(crate::POLL);
        }
    }

    /// Whether node `index` is still alive, reaping it if it is our child.
    fn reap(&mut self, index: usize) -> bool {
        if let Some(c) = self.children.get_mut(&index) {
            if matches!(c.try_wait(), Ok(None)) {
                return true;
            }
            self.children.remove(&index);
            return false;
        }
        self.is_running(index)
    }

    fn signal_and_wait(&mut self, index: usize, sig: &str) -> Result<(), Error> {
        let node = self.node(index)?.clone();
        let Some(pid) = node.pid.filter(|_| self.reap(index)) else {
            return Err(Error::Usage(format!("node {index} is not running")));
        };
        run(Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string()))?;
        let start = Instant::now();
        while self.reap(index) {
            if start.elapsed() > DEADLINE {
                return Err(Error::Timeout(format!("node {index} (pid {pid}) to exit")));
            }
            std::thread::sleep(crate::POLL);
        }
        self.node_mut(index)?.pid = None;
        self.save()
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        if self.owned {
            let _ = self.teardown();
        }
    }
}

/// Whether `pid` is a live (not zombie) process whose command line mentions
/// `data_dir` — the second check guards against a reused PID.
fn pid_alive(pid: u32, data_dir: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X") | None) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let want = data_dir.as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == want)
}

/// Runs `cmd`; a non-zero exit is an error with its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, Error> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(Path::new(cmd.get_program()), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            command: format!("{cmd:?}"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_alive_needs_the_data_dir_on_the_command_line() {
        let me = std::process::id();
        let exe = std::env::args().next().unwrap_or_default();
        assert!(
            pid_alive(me, Path::new(&exe)),
            "argv[0] is on our command line"
        );
        assert!(
            !pid_alive(me, Path::new("/nonexistent/data-dir")),
            "a reused PID"
        );
        assert!(!pid_alive(u32::MAX, Path::new(&exe)), "no such process");
    }

    #[test]
    fn a_killed_child_is_not_running_before_it_is_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let start = Instant::now();
        // Until it has exec'd, its command line is ours.
        while !pid_alive(pid, Path::new("30")) {
            assert!(start.elapsed() < DEADLINE);
            std::thread::sleep(crate::POLL);
        }
        child.kill().unwrap();
        // A zombie until waited for: the /proc state says so.
        while pid_alive(pid, Path::new("30")) {
            assert!(start.elapsed() < DEADLINE);
            std::thread::sleep(crate::POLL);
        }
        child.wait().unwrap();
        assert!(Testnet::load(dir.path()).is_err_and(|e| matches!(e, Error::NoTestnet(_))));
    }
}
