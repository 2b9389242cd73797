//! Debian roots for tests that need another machine's C runtime: a root made with
//! debootstrap from Debian's packages and kept between runs, and programs run inside it
//! with chosen host directories bind-mounted at their own paths.
//!
//! Read [`Root`] first: [`Root::debootstrap`] makes a root or reuses a complete one,
//! [`Root::bind`] and [`Root::toolchain`] choose what of the host it sees, and
//! [`Root::launch`] / [`Root::command`] run a program inside it.
//!
//! Every program runs in a mount namespace of its own (`unshare --mount`, private
//! propagation): its `/proc`, `/dev` and bind mounts are made there and go away with its
//! last process, so none is ever left on the host, even when a test panics or is killed.
//! A bind keeps its host path inside the root, so data dirs, API sockets, projects,
//! swarm files and target dirs have the same names on both sides. A chroot shares the
//! host's network namespace: daemons inside and outside reach each other on loopback.
//!
//! A made root is kept in [`cache_dir`] under a name derived from its debootstrap
//! command line. A stamp holding that line, written last, marks it complete; a root
//! without it is removed and made again (debootstrap runs in its own mount namespace
//! too, so a killed run leaves no mounts in it). Programs inside write only to bound
//! directories; the root itself gets nothing but empty mount-point directories.
//!
//! Does not own: what runs inside (the tests), or installing debootstrap
//! (`testnet/test.sh` does, as root).

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::net::run;
use crate::{Error, Launch};

/// Debian's mirror roots are made from.
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// The PATH of the commands that make and enter a root, and of programs inside it
/// (after the toolchain's `bin`).
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The programs making and entering a root needs, besides being root.
const TOOLS: &[&str] = &["debootstrap", "unshare", "chroot", "mount"];

/// Where made roots are kept: `$RDHT_TEST_CACHE`, else `/var/cache/rdht-tests`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("RDHT_TEST_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/rdht-tests"), PathBuf::from)
}

/// Why roots cannot be made or entered here, or `None` when they can.
pub fn unavailable() -> Option<String> {
    if !crate::running_as_root() {
        return Some(
            "debootstrap, mount and chroot need root (this process is not uid 0); \
             run the tests as root with testnet/test.sh"
                .into(),
        );
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| !std::env::split_paths(SYSTEM_PATH).any(|d| d.join(t).is_file()))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "{} not found in {SYSTEM_PATH} (testnet/test.sh installs debootstrap: \
             apt-get install debootstrap)",
            missing.join(", ")
        ));
    }
    None
}

/// This machine's `CARGO_HOME`: `$CARGO_HOME`, else `$HOME/.cargo`.
pub fn host_cargo_home() -> PathBuf {
    home_var("CARGO_HOME", ".cargo")
}

/// This machine's `RUSTUP_HOME`: `$RUSTUP_HOME`, else `$HOME/.rustup`.
pub fn host_rustup_home() -> PathBuf {
    home_var("RUSTUP_HOME", ".rustup")
}

fn home_var(var: &str, under_home: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(under_home)
        },
        PathBuf::from,
    )
}

/// Makes `home` a `CARGO_HOME` whose registry index and downloaded packages are this
/// machine's (symlinks to [`host_cargo_home`]'s; inside a root with
/// [`Root::toolchain`] they name its read-only bind). Packages are unpacked into `home`
/// itself. With `CARGO_NET_OFFLINE=true`, a build in it needs no network once this
/// machine has fetched its packages.
pub fn offline_home(home: &Path) -> Result<(), Error> {
    let registry = home.join("registry");
    std::fs::create_dir_all(&registry).map_err(|e| Error::io(&registry, e))?;
    for part in ["index", "cache"] {
        let link = registry.join(part);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(host_cargo_home().join("registry").join(part), &link)
                .map_err(|e| Error::io(&link, e))?;
        }
    }
    Ok(())
}

/// A Debian root on this machine, and the host directories its programs see.
///
/// While a `Root` exists it holds a shared lock on its cache entry, so no other run
/// removes the root under it.
#[derive(Debug)]
pub struct Root {
    /// The root directory, as the host names it.
    pub dir: PathBuf,
    /// A directory kept with the root (not inside it), for state that belongs to it,
    /// such as a target dir built inside it; bound into the root only when asked.
    pub state: PathBuf,
    /// How long making the root took, or `None` when a complete one was reused.
    pub made_in: Option<Duration>,
    binds: Vec<(PathBuf, bool)>,
    toolchain: bool,
    _lock: File,
}

impl Root {
    /// The root `debootstrap OPTIONS SUITE` makes from [`MIRROR`]: a complete one from
    /// [`cache_dir`] when there is one, else made now (and kept).
    ///
    /// # Errors
    /// When the cache cannot be used or debootstrap fails (its stderr is in the error).
    pub fn debootstrap(suite: &str, options: &[&str]) -> Result<Root, Error> {
        let line = format!("debootstrap {} {suite} ROOT {MIRROR}\n", options.join(" "));
        let name = format!("{suite}-{}", &blake3::hash(line.as_bytes()).to_hex()[..12]);
        let cache = cache_dir().join(name);
        std::fs::create_dir_all(&cache).map_err(|e| Error::io(&cache, e))?;
        let lock_path = cache.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        let dir = cache.join("root");
        let stamp = cache.join("complete");
        let made_in = if std::fs::read_to_string(&stamp).ok().as_deref() == Some(line.as_str()) {
            None
        } else {
            let start = Instant::now();
            if dir.symlink_metadata().is_ok() {
                remove_incomplete(&dir)?;
            }
            run(Command::new("unshare")
                .args(["--mount", "--propagation", "private", "--", "debootstrap"])
                .args(options)
                .arg(suite)
                .arg(&dir)
                .arg(MIRROR)
                .env("PATH", SYSTEM_PATH))?;
            std::fs::write(&stamp, &line).map_err(|e| Error::io(&stamp, e))?;
            Some(start.elapsed())
        };
        // Complete roots are never removed, so the shared lock taken now guards this one.
        lock.unlock().map_err(|e| Error::io(&lock_path, e))?;
        lock.lock_shared().map_err(|e| Error::io(&lock_path, e))?;
        let state = cache.join("state");
        std::fs::create_dir_all(&state).map_err(|e| Error::io(&state, e))?;
        Ok(Root {
            dir,
            state,
            made_in,
            binds: Vec::new(),
            toolchain: false,
            _lock: lock,
        })
    }

    /// Binds the host directory `path` at the same path inside the root for every
    /// program launched from now on, writable or read-only.
    pub fn bind(&mut self, path: &Path, writable: bool) -> &mut Root {
        self.binds.push((path.to_path_buf(), writable));
        self
    }

    /// Binds this machine's Rust toolchain read-only: rustup's home, cargo's `bin`
    /// (first on PATH inside) and cargo's registry (for [`offline_home`]); programs
    /// inside get `RUSTUP_HOME` and the caller's other `RUSTUP_*` settings.
    pub fn toolchain(&mut self) -> &mut Root {
        let cargo = host_cargo_home();
        self.bind(&host_rustup_home(), false)
            .bind(&cargo.join("bin"), false)
            .bind(&cargo.join("registry"), false);
        self.toolchain = true;
        self
    }

    /// How to run `program` (a path inside the root, or a name on its PATH) inside the
    /// root, in the caller's working directory (which must exist inside too), with
    /// `HOME=/root`, PATH and, with [`Root::toolchain`], rustup's settings: nothing
    /// else of the caller's environment.
    pub fn launch(&self, program: &Path) -> Launch {
        let root = quote(self.dir.as_os_str());
        let mut script: Vec<u8> = b"set -e\n".to_vec();
        let mut line = |parts: &[&[u8]]| {
            script.extend(parts.join(&b' '));
            script.push(b'\n');
        };
        line(&[b"mount -t proc proc", &[&root[..], b"/proc"].concat()]);
        line(&[b"mount --rbind /dev", &[&root[..], b"/dev"].concat()]);
        let mut binds = self.binds.clone();
        // A parent is bound before what lies under it.
        binds.sort_by_key(|(p, _)| p.components().count());
        for (path, writable) in &binds {
            let rel = path.strip_prefix("/").unwrap_or(path);
            let inside = quote(self.dir.join(rel).as_os_str());
            let mount: &[u8] = if *writable {
                b"mount --bind"
            } else {
                b"mount --bind -o ro"
            };
            line(&[b"mkdir -p", &inside]);
            line(&[mount, &quote(path.as_os_str()), &inside]);
        }
        line(&[b"exec chroot", &root, b"/usr/bin/env -C \"$(pwd)\" \"$@\""]);
        let mut argv: Vec<OsString> = ["unshare", "--mount", "--propagation", "private", "--"]
            .iter()
            .map(OsString::from)
            .collect();
        argv.extend([
            "sh".into(),
            "-c".into(),
            OsString::from_vec(script),
            "sh".into(),
        ]);
        argv.push(program.into());
        Launch {
            argv,
            env: Some(self.env()),
        }
    }

    /// A command running `program` inside the root, as [`Root::launch`] describes.
    pub fn command(&self, program: &Path) -> Command {
        self.launch(program).command()
    }

    fn env(&self) -> Vec<(OsString, OsString)> {
        if self.toolchain {
            let mut env = toolchain_env();
            env.push(("HOME".into(), "/root".into()));
            env
        } else {
            vec![
                ("PATH".into(), SYSTEM_PATH.into()),
                ("HOME".into(), "/root".into()),
            ]
        }
    }
}

/// The environment that runs this machine's toolchain and nothing else of the caller's:
/// PATH (cargo's `bin` first), `RUSTUP_HOME` and the caller's other `RUSTUP_*`
/// settings. A program run inside a [`Root::toolchain`] root gets it (with
/// `HOME=/root`); a build here that is to be compared with one there should get it too,
/// since cargo passes what it inherits on to rustc, and a test process inherits
/// variables such as `CARGO_BIN_EXE_*` from `cargo test`.
pub fn toolchain_env() -> Vec<(OsString, OsString)> {
    let mut path = OsString::from(host_cargo_home().join("bin"));
    path.push(":");
    path.push(SYSTEM_PATH);
    let mut env = vec![
        ("PATH".into(), path),
        ("RUSTUP_HOME".into(), host_rustup_home().into()),
    ];
    env.extend(
        std::env::vars_os().filter(|(k, _)| {
            k.as_bytes().starts_with(b"RUSTUP_") && k.as_bytes() != b"RUSTUP_HOME"
        }),
    );
    env
}

/// Removes a root that was not completely made, after checking that nothing is mounted
/// under it (debootstrap's own mounts die with its namespace, so one would be someone
/// else's) and without leaving its file system.
fn remove_incomplete(dir: &Path) -> Result<(), Error> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io(Path::new("/proc/self/mountinfo"), e))?;
    if let Some(m) = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .find(|m| Path::new(m).starts_with(dir))
    {
        return Err(Error::Root {
            dir: dir.to_path_buf(),
            message: format!("incomplete, but {m} is mounted under it; unmount it first"),
        });
    }
    run(Command::new("rm")
        .args(["-rf", "--one-file-system", "--"])
        .arg(dir))?;
    Ok(())
}

/// `s` in single quotes for `sh`.
fn quote(s: &std::ffi::OsStr) -> Vec<u8> {
    let mut q = Vec::with_capacity(s.len() + 2);
    q.push(b'\'');
    for &b in s.as_bytes() {
        if b == b'\'' {
            q.extend_from_slice(b"'\\''");
        } else {
            q.push(b);
        }
    }
    q.push(b'\'');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_survives_single_quotes_and_spaces() {
        let script = [&b"printf %s "[..], &quote("it's a b".as_ref())].concat();
        let out = Command::new("sh")
            .arg("-c")
            .arg(OsString::from_vec(script))
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"it's a b");
    }
}
