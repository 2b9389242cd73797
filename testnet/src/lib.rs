//! rdht-testnet: a harness that runs real `rdht-node` daemons as separate processes
//! and drives them with the real `rdht` CLI; the end-to-end tests of the other crates
//! and the `rdht-testnet` binary use it.
//!
//! Two layers, read in this order:
//! - [`Node`] and [`Swarm`]: one daemon each, owned by a test and killed when dropped,
//!   on loopback in temp dirs, in a private swarm with a generated key and a shared
//!   bootstrap file.
//! - [`Testnet`] (`net.rs`): N daemons whose state (PIDs, data dirs, namespaces) is
//!   recorded in a state directory, so the `rdht-testnet` binary can start them, return,
//!   and later stop, kill, restart, partition or heal them. With `netns`, each daemon
//!   runs in its own network namespace behind a private bridge ([`netns`]).
//! - [`natswarm::NatSwarm`]: an anchor and laptops behind NAT routers ([`netns::NatNet`]),
//!   for the NAT tests and bench.
//!
//! Beside them, [`chroot::Root`] is another machine's C runtime on this one: a Debian
//! root made with debootstrap, where a daemon ([`Launch`], [`Node::start_with`]) or a
//! build ([`dht_build_with`]) runs with the host's toolchain bound in.
//!
//! Owns: finding the built binaries, starting, stopping and killing daemons, private
//! swarms, namespaces, Debian roots, and the tests' shared helpers (deterministic file contents, tree
//! snapshots, project copies, a `cargo dht-build --json` run and a plain cargo run with
//! the wrapper). Does not own: any daemon behaviour. Waits poll with deadlines;
//! loopback ports are chosen by the OS.
//!
//! Binaries are looked up in `$RDHT_BIN_DIR`, else beside the running executable, else
//! one level up (a test runs from `target/<profile>/deps/`, and `cargo test
//! --workspace` builds the binaries into `target/<profile>/`).
//!
//! ```no_run
//! let dir = tempfile::tempdir()?;
//! let net = rdht_testnet::Testnet::up(dir.path(), 3, false)?;
//! let id = net.json(1, &["id"])?;
//! println!("node 1 is {}", id["peer_id"]);
//! net.down()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub mod chroot;
pub mod natswarm;
mod net;
pub mod netns;

pub use net::{NodeState, STATE_FILE, State, Testnet};

/// How long any single wait may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How often waits poll.
pub const POLL: Duration = Duration::from_millis(20);

/// What can go wrong managing a testnet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or program could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or program.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stderr.
        stderr: String,
    },
    /// A daemon misbehaved (exited at start-up, printed something unexpected).
    #[error("node {index}: {message}")]
    Daemon {
        /// The node.
        index: usize,
        /// What happened, with the end of its log where useful.
        message: String,
    },
    /// A wait passed [`DEADLINE`].
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The state directory holds no testnet.
    #[error("no testnet in {} (start one with `rdht-testnet up N`)", .0.display())]
    NoTestnet(PathBuf),
    /// The state file could not be read or written.
    #[error("state file {}: {message}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// There is no node with that index.
    #[error("no node {index}: nodes are numbered 1 to {count}")]
    NoSuchNode {
        /// The index asked for.
        index: usize,
        /// How many nodes there are.
        count: usize,
    },
    /// The binaries were not found.
    #[error(
        "rdht-node and rdht not found in {searched} (build them: `cargo build --bins`, or set RDHT_BIN_DIR)"
    )]
    NoBinaries {
        /// The directories looked in.
        searched: String,
    },
    /// The request does not make sense in this state.
    #[error("{0}")]
    Usage(String),
    /// A Debian root ([`chroot::Root`]) cannot be made or used.
    #[error("root {}: {message}", dir.display())]
    Root {
        /// The root directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Whether this process runs as root (real uid 0), as network namespaces, mounts and
/// chroots need.
pub(crate) fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string));
    uid.as_deref() == Some("0")
}

/// The directory holding `rdht-node` and `rdht`: `$RDHT_BIN_DIR`, else the running
/// executable's directory, else its parent.
pub fn bin_dir() -> Result<PathBuf, Error> {
    let mut candidates = Vec::new();
    if let Some(d) = std::env::var_os("RDHT_BIN_DIR") {
        candidates.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).take(2).map(Path::to_path_buf));
    }
    candidates
        .iter()
        .find(|d| d.join("rdht-node").is_file() && d.join("rdht").is_file())
        .cloned()
        .ok_or_else(|| Error::NoBinaries {
            searched: candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The path of workspace binary `name`, built by `cargo test --workspace`.
///
/// # Panics
/// When the binary is missing, with the command that builds it.
pub fn bin(name: &str) -> PathBuf {
    let dir = match bin_dir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build --bins`) so it is built",
        p.display()
    );
    p
}

/// How a program is started: the command line that runs it (the program itself, or a
/// wrapper such as [`chroot::Root::launch`] followed by it) and the environment it gets.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The command line before the program's own arguments.
    pub argv: Vec<OsString>,
    /// When set, the whole environment: nothing else is inherited.
    pub env: Option<Vec<(OsString, OsString)>>,
}

impl Launch {
    /// The program at `path`, run directly with the caller's environment.
    pub fn direct(path: &Path) -> Launch {
        Launch {
            argv: vec![path.into()],
            env: None,
        }
    }

    /// A command for this launch; add the program's arguments, more environment and a
    /// working directory to it as usual.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        if let Some(env) = &self.env {
            cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        }
        cmd
    }
}

/// A running daemon, killed when dropped.
#[derive(Debug)]
pub struct Node {
    /// Its data directory.
    pub dir: PathBuf,
    launch: Launch,
    args: Vec<String>,
    child: Option<Child>,
}

impl Node {
    /// Starts `rdht-node --data-dir DIR ARGS` and waits until its API answers.
    pub fn start(dir: &Path, args: &[&str]) -> Node {
        Node::start_with(Launch::direct(&bin("rdht-node")), dir, args)
    }

    /// [`Node::start`] with the daemon program started by `launch` (another build of
    /// it, or one run inside a [`chroot::Root`]). `dir` must be the same path for the
    /// daemon as for this process, since the API socket is reached there.
    pub fn start_with(launch: Launch, dir: &Path, args: &[&str]) -> Node {
        let mut n = Node {
            dir: dir.to_path_buf(),
            launch,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        n.spawn();
        n
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A field of the daemon's `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
    ///
    /// # Panics
    /// When the daemon is not running or the field is missing.
    pub fn status_kib(&self, field: &str) -> u64 {
        let pid = self.pid().expect("daemon is running");
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    }

    /// How many descriptors the daemon has open.
    ///
    /// # Panics
    /// When the daemon is not running.
    pub fn open_fds(&self) -> usize {
        let pid = self.pid().expect("daemon is running");
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("proc fd")
            .count()
    }

    /// The daemon's log file (stderr, `RUST_LOG=info`).
    pub fn log(&self) -> PathBuf {
        self.dir.with_extension("log")
    }

    /// The first build plan prefetch that has ended, as `rdht status --json` lists it
    /// (`{"plan", "state": "done" | "failed", ...}`), polling until one has.
    ///
    /// # Panics
    /// When none has ended before [`DEADLINE`] (the last status is in the message).
    pub fn wait_for_prefetch(&self) -> serde_json::Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let status = self.json(&["status"]);
            let ended = status["prefetches"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["state"] != "running"));
            if let Some(p) = ended {
                return p.clone();
            }
            assert!(Instant::now() < deadline, "no prefetch ended: {status}");
            std::thread::sleep(POLL);
        }
    }

    /// Starts the daemon again (after [`Node::stop`] or [`Node::kill`]).
    ///
    /// # Panics
    /// When it exits or its API does not answer before the deadline.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("log file");
        let child = self
            .launch
            .command()
            .arg("--data-dir")
            .arg(&self.dir)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn rdht-node");
        self.child = Some(child);
        let socket = self.dir.join("api.sock");
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "rdht-node exited with {status}:\n{}",
                    std::fs::read_to_string(self.log()).unwrap_or_default()
                );
            }
            assert!(start.elapsed() < DEADLINE, "daemon did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("-TERM")
    }

    /// Sends SIGKILL and waits for the exit.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal("-KILL")
    }

    fn signal(&mut self, sig: &str) -> ExitStatus {
        let mut child = self.child.take().expect("daemon is running");
        let ok = Command::new("kill")
            .arg(sig)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success());
        let start = Instant::now();
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return s;
            }
            assert!(start.elapsed() < DEADLINE, "daemon did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `rdht --data-dir DIR ARGS`; panics (with the daemon log) if it fails.
    pub fn rdht(&self, args: &[&str]) -> Output {
        let out = Command::new(bin("rdht"))
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("run rdht");
        assert!(
            out.status.success(),
            "rdht {args:?} failed: {}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
        out
    }

    /// Stdout of [`Node::rdht`].
    pub fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.rdht(args).stdout).into_owned()
    }

    /// `rdht --json ARGS`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.stdout(&a)).expect("rdht printed JSON")
    }

    /// This node's builder key (hex).
    pub fn builder_key(&self) -> String {
        self.json(&["id"])["builder_key"]
            .as_str()
            .expect("builder_key")
            .to_string()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A private swarm: a temp dir with a generated `swarm.key` and a bootstrap file that
/// every started node is added to. Nodes may also join a public swarm of the same
/// test ([`Swarm::node_with`]), bootstrapped from a file of its own.
#[derive(Debug)]
pub struct Swarm {
    /// The temp dir holding everything.
    pub tmp: tempfile::TempDir,
    /// The swarm key file.
    pub key: PathBuf,
    /// The bootstrap file.
    pub boot: PathBuf,
    /// The public swarm's bootstrap file.
    pub public_boot: PathBuf,
}

/// Which swarms a node of [`Swarm::node_with`] joins, and what else its config says.
#[derive(Debug, Clone, Default)]
pub struct NodeOpts<'a> {
    /// Join the private swarm.
    pub private: bool,
    /// Join the test's public swarm (`public = true`, on loopback).
    pub public: bool,
    /// More `config.toml` lines, e.g. `required_signatures = 2`.
    pub config: &'a str,
    /// How the daemon is started, when not as this build's `rdht-node` on this machine.
    pub launch: Option<Launch>,
}

impl Default for Swarm {
    fn default() -> Self {
        Self::new()
    }
}

impl Swarm {
    /// A new swarm with no nodes.
    pub fn new() -> Swarm {
        let tmp = tempfile::tempdir().expect("temp dir");
        let key = tmp.path().join("swarm.key");
        let boot = tmp.path().join("bootstrap.txt");
        let out = Command::new(bin("rdht"))
            .args(["swarm", "keygen", "--out"])
            .arg(&key)
            .output()
            .expect("run rdht swarm keygen");
        assert!(out.status.success());
        std::fs::write(&boot, "# test swarm\n").expect("bootstrap file");
        let public_boot = tmp.path().join("public-bootstrap.txt");
        std::fs::write(&public_boot, "# test public swarm\n").expect("bootstrap file");
        Swarm {
            tmp,
            key,
            boot,
            public_boot,
        }
    }

    /// Starts node `name` on 127.0.0.1 with a free port and adds it to the bootstrap file.
    pub fn node(&self, name: &str) -> Node {
        self.node_with(
            name,
            NodeOpts {
                private: true,
                ..NodeOpts::default()
            },
        )
    }

    /// Starts node `name` in the swarms `opts` names, on 127.0.0.1 with free ports,
    /// with `opts.config` in its `config.toml`, and adds it to their bootstrap files.
    ///
    /// # Panics
    /// When the node does not start or its addresses cannot be read.
    pub fn node_with(&self, name: &str, opts: NodeOpts<'_>) -> Node {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("data dir");
        let mut config = format!("{}\n", opts.config);
        // Tests count hits exactly; on a loaded machine (CI runs several builds at once)
        // a record answer can take longer than the 300 ms decision bound, and the unit
        // is then, rightly, built locally. The bound has its own tests (`Testnet`,
        // tests/unreachable.rs) and benchmark; here it is out of the way unless a test
        // sets it.
        if !opts.config.contains("lookup_timeout_ms") {
            config.push_str("lookup_timeout_ms = 10000\n");
        }
        if opts.public {
            config.push_str(&format!(
                "public = true\npublic_listen = [\"/ip4/127.0.0.1/tcp/0\"]\npublic_bootstrap = {:?}\n",
                self.public_boot.to_str().expect("utf-8 temp path")
            ));
        }
        std::fs::write(dir.join("config.toml"), config).expect("config file");
        let private_args = [
            "--swarm-key",
            self.key.to_str().expect("utf-8 temp path"),
            "--bootstrap",
            self.boot.to_str().expect("utf-8 temp path"),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ];
        let args: &[&str] = if opts.private { &private_args } else { &[] };
        let launch = opts
            .launch
            .unwrap_or_else(|| Launch::direct(&bin("rdht-node")));
        let n = Node::start_with(launch, &dir, args);
        // One loopback address per swarm, the private swarm's first.
        let addrs = n.json(&["swarm", "bootstrap-line", "--all"]);
        let addrs: Vec<&str> = addrs
            .as_array()
            .expect("address list")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        let wanted = [(opts.private, &self.boot), (opts.public, &self.public_boot)];
        let files = wanted.iter().filter(|(on, _)| *on).map(|(_, f)| f);
        assert_eq!(addrs.len(), files.clone().count(), "{addrs:?}");
        for (addr, file) in addrs.iter().zip(files) {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(file)
                .expect("bootstrap file");
            f.write_all(format!("{addr}\n").as_bytes())
                .expect("write bootstrap file");
        }
        n
    }
}

/// Builds `project` with a plain `cargo build -q` (no wrapper, its own target dir)
/// with `cargo_home` as `CARGO_HOME`: the local build a cached one is compared with.
///
/// # Panics
/// When cargo cannot be run or the build fails (with cargo's stderr).
pub fn plain_build(project: &Path, cargo_home: &Path) {
    let out = Command::new("cargo")
        .args(["build", "-q"])
        .current_dir(project)
        .env("CARGO_HOME", cargo_home)
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deterministic incompressible bytes: `len` bytes of BLAKE3's output stream for `seed`.
pub fn content(seed: &str, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

/// Relative path → (content hash, executable) for every file under `root`.
///
/// # Panics
/// When the tree cannot be read.
pub fn snapshot(root: &Path) -> BTreeMap<String, (blake3::Hash, bool)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (blake3::Hash, bool)>) {
        for e in std::fs::read_dir(dir).expect("readable tree") {
            let p = e.expect("directory entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .ok()
                    .and_then(Path::to_str)
                    .expect("UTF-8 path under the root")
                    .to_string();
                let meta = std::fs::metadata(&p).expect("file metadata");
                let exec = meta.permissions().mode() & 0o111 != 0;
                let bytes = std::fs::read(&p).expect("readable file");
                out.insert(rel, (blake3::hash(&bytes), exec));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `cargo dht-build --json` in `project` through the daemon of `data_dir`, with
/// `cargo_home`: its output and the parsed summary.
///
/// # Panics
/// When the build fails or prints no JSON summary (stderr is in the message).
pub fn dht_build(
    project: &Path,
    cargo_home: &Path,
    data_dir: &Path,
) -> (std::process::Output, serde_json::Value) {
    dht_build_env(project, cargo_home, data_dir, &[])
}

/// [`dht_build`] with more environment variables for cargo (`RUSTC`, `CARGO_*`, …).
///
/// # Panics
/// When the build fails or prints no JSON summary (stderr is in the message).
pub fn dht_build_env(
    project: &Path,
    cargo_home: &Path,
    data_dir: &Path,
    env: &[(&str, &str)],
) -> (std::process::Output, serde_json::Value) {
    dht_build_with(
        Command::new(bin("cargo-dht-build")),
        project,
        cargo_home,
        data_dir,
        env,
    )
}

/// [`dht_build_env`] with `cargo_dht_build` as the command that runs the wrapper (for
/// example [`chroot::Root::command`] of a build of it inside a root).
///
/// # Panics
/// When the build fails or prints no JSON summary (stderr is in the message).
pub fn dht_build_with(
    mut cargo_dht_build: Command,
    project: &Path,
    cargo_home: &Path,
    data_dir: &Path,
    env: &[(&str, &str)],
) -> (std::process::Output, serde_json::Value) {
    let out = cargo_dht_build
        .args(["dht-build", "--json"])
        .current_dir(project)
        .env("CARGO_HOME", cargo_home)
        .env("RDHT_DATA_DIR", data_dir)
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .envs(env.iter().copied())
        .output()
        .expect("cargo-dht-build runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build failed:\n{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON summary ({e}):\n{stderr}"));
    (out, summary)
}

/// The small test project: binary `proj` using itoa 1.0.11 and memchr 2.7.4 from
/// crates.io and the path crate `mylib`, whose `lib.rs` is `mylib` (a `pub fn f() ->
/// u32` the binary prints first). `manifest_extra` is appended to `proj`'s manifest.
/// Built, `proj` prints `7 42 Some(1)` with the default `mylib`.
///
/// # Panics
/// When the files cannot be written.
pub fn write_small_project(dir: &Path, mylib: &str, manifest_extra: &str) {
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("project directory");
        std::fs::write(p, text).expect("project file");
    };
    write(
        "Cargo.toml",
        &format!(
            "[package]\nname = \"proj\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nmylib = {{ path = \"mylib\" }}\nitoa = \"=1.0.11\"\nmemchr = \"=2.7.4\"\n{manifest_extra}"
        ),
    );
    write(
        "src/main.rs",
        "fn main() {\n    let mut b = itoa::Buffer::new();\n    let at = memchr::memchr(b'4', b\"x42\");\n    println!(\"{} {} {:?}\", mylib::f(), b.format(42), at);\n}\n",
    );
    write(
        "mylib/Cargo.toml",
        "[package]\nname = \"mylib\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write("mylib/src/lib.rs", mylib);
}

/// The default `mylib` of [`write_small_project`].
pub const SMALL_MYLIB: &str = "pub fn f() -> u32 {\n    7\n}\n";

/// `cargo ARGS` in `project` with `cargo-dht-build` as `RUSTC_WRAPPER` (plain wrapper
/// use, as for `cargo check` or `cargo test`), through the daemon of `data_dir`, with
/// `cargo_home`; every unit appends its outcome to `session_log`, which is also the
/// session its shares are submitted under.
///
/// # Panics
/// When cargo fails (stderr is in the message).
pub fn wrapped_cargo(
    args: &[&str],
    project: &Path,
    cargo_home: &Path,
    data_dir: &Path,
    session_log: &Path,
) -> std::process::Output {
    let out = Command::new("cargo")
        .args(args)
        .current_dir(project)
        .env("CARGO_HOME", cargo_home)
        .env("RUSTC_WRAPPER", bin("cargo-dht-build"))
        .env("RDHT_DATA_DIR", data_dir)
        .env("RDHT_SESSION_LOG", session_log)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Copies the project at `from` to `to`: every file but those under `target`.
///
/// # Panics
/// When a file cannot be read or written.
pub fn copy_project(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("readable project") {
        let p = e.expect("directory entry").path();
        let name = p.file_name().expect("entry name");
        let dst = to.join(name);
        if p.is_dir() {
            if name != "target" {
                copy_project(&p, &dst);
            }
        } else {
            std::fs::create_dir_all(to).expect("destination directory");
            std::fs::copy(&p, &dst).expect("copied file");
        }
    }
}
