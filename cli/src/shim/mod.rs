//! The cargo shim behind `cargo dht-build` and `RUSTC_WRAPPER` (specs/build-key.md).
//!
//! [`unit`] runs one rustc invocation: a hit (`hit`), a miss (`miss`) or a verifying
//! build (`verify`), talking to the daemon through `cache`; [`layout`] names an
//! artifact's files. [`args`] reads rustc command lines, [`roots`] handles machine-local paths,
//! [`filehash`] content roots with sidecars, [`inputs`] decides cacheability and
//! collects key inputs, [`session`] writes and
//! summarises one build's outcomes, [`plan`] prefetches and publishes build plans,
//! [`stamp`] gives a check unit's outputs the modification time cargo will;
//! [`cflags`] keeps machine-local paths out of what build scripts compile. Whether a
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
pub mod session;
pub mod stamp;
pub mod unit;
mod verify;
