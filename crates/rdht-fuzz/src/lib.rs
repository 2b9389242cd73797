//! rdht-fuzz: one function per decoder or state machine that takes outside input, each
//! a fuzz target. `cargo fuzz` runs them under libFuzzer from `fuzz/` (one line per
//! target in `fuzz/fuzz_targets/`, nightly or `RUSTC_BOOTSTRAP=1`); `tests/corpus.rs`
//! feeds every file of the committed corpus (`fuzz/corpus/<target>/`) to the same
//! functions in an ordinary `cargo test` on stable.
//!
//! A target returns normally for any input it is given. It panics, which is what the
//! fuzzer and the corpus test report, when the code under test panics or breaks a
//! property the target checks: a round trip (`decode(encode(x)) == x`, and a canonical
//! decoder's `encode(decode(b)) == b`), or, where a verifier accepts, that what it
//! accepted hashes to what it claimed.
//!
//! - [`core`]: blocks and their LZ4 form, manifests, build records, plan files, the
//!   canonical postcard codec, the DAG verifier (`rdht-core`).
//! - [`api`]: local-API frames and messages, both ends of a connection (`rdht-api`).
//! - [`net`]: the `/rdht/blocks/1` and `/rdht/records/1` layouts, `swarm.key` and
//!   bootstrap files (`rdht-net`).
//! - [`node`]: `config.toml` (`rdht-node`).
//! - [`shim`]: the cargo shim's rustc command lines, rustc's JSON messages and
//!   dep-info, and build scripts' `rerun-if` instructions (`rdht-cli`).
//!
//! Does not own: the formats (their crates do) or what a finding means (each crash is
//! fixed in its crate, with a regression test there). The list of targets is
//! [`TARGETS`]; `fuzz/README.md` has the commands.
//!
//! ```
//! // Every target takes any bytes; a valid leaf block and a truncated one alike.
//! rdht_fuzz::core::block(b"\x00hello");
//! rdht_fuzz::core::block(b"\x01short");
//! assert_eq!(rdht_fuzz::TARGETS.len(), 16);
//! ```

pub mod api;
pub mod core;
pub mod net;
pub mod node;
pub mod shim;

/// A target's function: takes any bytes, panics only on a finding.
pub type Target = fn(&[u8]);

/// Every target by name, the name of its `fuzz/fuzz_targets/<name>.rs` binary and of its
/// corpus directory `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("block", core::block),
    ("manifest", core::manifest),
    ("record", core::record),
    ("plan", core::plan),
    ("codec", core::codec),
    ("dag", core::dag),
    ("api", api::api),
    ("wire_blocks", net::wire_blocks),
    ("wire_records", net::wire_records),
    ("swarm_files", net::swarm_files),
    ("config", node::config),
    ("shim_args", shim::args),
    ("shim_json", shim::rustc_json),
    ("shim_depinfo", shim::dep_info),
    ("declaration", core::declaration),
    ("script_output", shim::script_output),
];

/// Runs a future that never waits to completion: every target reads from a slice and
/// writes to a `Vec`, which are always ready, so one poll finishes it.
pub(crate) fn now<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        // Invariant: the futures polled here only do I/O on in-memory buffers.
        std::task::Poll::Pending => panic!("an in-memory read or write waited"),
    }
}
