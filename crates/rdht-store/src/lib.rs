//! rdht-store: the node's embedded store of blocks, artifacts and build records.
//!
//! One API type, [`Store`], over a [`Backend`] holding its index: [`SledBackend`] on
//! disk (the default, [`Store::open`]), with block bytes in append-only [`packs`]; or
//! [`MemoryBackend`] ([`Store::memory`]) with block bytes inline. Layouts are in
//! `specs/store.md` §2, [`keys`] and [`packs`].
//!
//! - Blocks ([`BlockStore`]): put refuses bytes that do not hash to their id; every
//!   read verifies; a corrupt block is removed, counted and reported as a miss.
//! - Artifacts: [`Store::ingest`] streams files into blocks and a manifest;
//!   [`Store::export`] verifies and writes them back atomically per file;
//!   [`Session::register`] / [`Store::add_artifact`] make fetched DAGs visible once
//!   complete.
//! - Build records: [`Store::put_record`], [`Store::records`], [`Store::build_keys`].
//! - Marks ([`Store::add_mark`], [`Store::marks`]): a byte of flags per id, opaque to
//!   the store.
//! - Pins and GC: [`Store::pin`], [`Store::gc`]; an optional size cap
//!   ([`Config::max_bytes`]) evicts unpinned artifacts least recently used first.
//! - [`Stats`].
//!
//! Owns: storage, its invariants and crash safety. Does not own: formats (that is
//! `rdht-core`) or anything about the network.
//!
//! ```
//! use rdht_store::{BlockStore, Config, IngestFile, Store};
//! use rdht_core::Labels;
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("libfoo.rlib"), vec![7u8; 40_000]).unwrap();
//! let store = Store::open(dir.path().join("db"), Config::default()).unwrap();
//! let file = IngestFile::from_disk("libfoo.rlib", dir.path().join("libfoo.rlib")).unwrap();
//! let art = store.ingest(Labels::default(), vec![file], true).unwrap();
//! assert_eq!(art.file_bytes, 40_000);
//! assert!(store.has(&art.root).unwrap());
//! store.export(&art.root, &dir.path().join("out")).unwrap();
//! assert_eq!(std::fs::read(dir.path().join("out/libfoo.rlib")).unwrap(), vec![7u8; 40_000]);
//! ```

pub mod artifact;
pub mod backend;
pub mod condition;
pub mod error;
pub(crate) mod files;
pub mod gc;
pub mod keys;
pub mod marks;
pub mod packs;
pub(crate) mod partial;
pub mod records;
pub(crate) mod reserve;
pub mod store;
pub(crate) mod verified;

pub use artifact::{ArtifactInfo, IngestFile};
pub use backend::{Backend, Batch, MemoryBackend, Op, SledBackend, SledOptions};
pub use condition::WriteFailure;
pub use error::StoreError;
pub use files::{Mode, Placed};
pub use gc::GcReport;
pub use store::{BlockStore, Config, Session, Stats, Store};
