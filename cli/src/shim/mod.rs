//! The cargo shim behind `cargo dht-build` and `RUSTC_WRAPPER` (specs/build-key.md).
//!
//! [`args`] reads rustc command lines, [`roots`] handles machine-local paths,
//! [`filehash`] content roots with sidecars, [`inputs`] decides cacheability and
//! collects key inputs, [`unit`] runs the hit and miss paths, [`session`] writes and
//! summarises one build's outcomes, [`plan`] prefetches and publishes build plans,
//! [`stamp`] gives a check unit's outputs the modification time cargo will, [`fit`]
//! checks that a hit's loadable outputs can run on this machine's C runtime.
//!
//! Owns: everything between cargo and rustc. Does not own: the daemon (reached only
//! through `rdht-api`) or formats (`rdht-core`).

pub mod args;
pub mod filehash;
pub mod fit;
pub mod inputs;
pub mod plan;
pub mod roots;
pub mod session;
pub mod stamp;
pub mod unit;
