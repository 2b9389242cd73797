//! The cargo shim behind `cargo dht-build` and `RUSTC_WRAPPER` (specs/build-key.md).
//!
//! [`unit`] runs one rustc invocation: a hit (`hit`), a miss (`miss`) or a verifying
//! build (`verify`), talking to the daemon through `cache`; [`layout`] names an
//! artifact's files. [`args`] reads rustc command lines, [`roots`] handles machine-local paths,
//! [`filehash`] content roots with sidecars, [`inputs`] decides cacheability and
//! collects key inputs, [`session`] writes and
//! summarises one build's outcomes, [`plan`] prefetches and publishes build plans,
//! [`stamp`] gives a check unit's outputs the modification time cargo will;
//! [`cflags`] keeps machine-local paths out of what build scripts compile; [`script`]
//! makes build-script runs units of the cache. Whether a
//! hit's loadable outputs can run on this machine's C runtime is `rdht-fit`'s.
//!
//! Owns: everything between cargo and rustc. Does not own: the daemon (reached only
//! through `rdht-api`) or formats (`rdht-core`).

pub mod args;
mod cache;
pub mod cflags;
pub mod filehash;
mod hit;
pub mod inputs;
pub mod layout;
mod miss;
pub mod plan;
pub mod roots;
pub mod script;
pub mod session;
pub mod stamp;
pub mod unit;
mod verify;

/// The shim's private parsers, for the fuzz targets of `crates/rdht-fuzz` only; not
/// part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::PathBuf;

    /// `miss::artifacts`: the output files named by rustc's artifact notifications.
    pub fn artifacts(stderr: &[u8]) -> Vec<PathBuf> {
        super::miss::artifacts(stderr)
    }

    /// `miss::forward`: copies rustc's output to `to` line by line with local paths,
    /// returning what was read.
    pub fn forward(
        from: impl std::io::Read,
        to: impl std::io::Write,
        roots: &super::roots::Roots,
    ) -> Vec<u8> {
        super::miss::forward(from, to, roots)
    }

    /// `hit::env_deps`: the variables named by dep-info's `# env-dep` lines.
    pub fn env_deps(dep_info: &str) -> Vec<(&str, Option<&str>)> {
        super::hit::env_deps(dep_info).collect()
    }

    /// `script::output::parse`: the `rerun-if` instructions of a build script's stdout.
    pub fn build_script_output(stdout: &[u8]) -> super::script::output::Declared {
        super::script::output::parse(stdout)
    }
}
