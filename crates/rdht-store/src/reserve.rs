//! Space kept for the index on a filling disk (specs/store.md §7.1).
//!
//! sled 0.34 stops writing, and then sometimes reading, after its first I/O error
//! until its database is opened again, which itself needs room. So the store keeps the
//! last [`FLOOR`] bytes of its filesystem for the index: a pack append or a file copied
//! into the store that would leave less is refused as a full disk before it starts. And
//! it holds a [`RESERVE`]-byte file, `<store>/reserve`, allocated while there is room,
//! which it deletes when an index write finds less than the floor free (the disk was
//! filled by something else), so the index's small writes still have room.
//!
//! Owns: that file and both checks. Does not own: what is written (the callers), or the
//! reopening of a database whose write failed anyway (`backend.rs`).

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Free bytes a bulk write must leave on the filesystem.
pub const FLOOR: u64 = 1 << 20;
/// Size of the reserve file the store deletes when the index needs room.
pub const RESERVE: u64 = 4 << 20;

/// The reserve of an on-disk store.
#[derive(Debug)]
pub(crate) struct Reserve {
    file: PathBuf,
    /// Whether the reserve file is allocated.
    held: Mutex<bool>,
}

fn free(path: &Path) -> io::Result<u64> {
    crate::backend::free_space(path)
}

impl Reserve {
    /// The reserve at `file`, allocated now if the filesystem has room for it.
    pub(crate) fn open(file: PathBuf) -> Reserve {
        let held = file.is_file();
        let r = Reserve {
            file,
            held: Mutex::new(held),
        };
        r.refill();
        r
    }

    fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    /// Whether the filesystem has room again: for the reserve and twice the floor (with
    /// the reserve file itself counted as free). A write that succeeds only ends the
    /// store's write failure then; small writes that fit while big ones fail do not.
    pub(crate) fn roomy(&self) -> bool {
        let held = *self.held.lock().unwrap_or_else(|e| e.into_inner());
        let extra = if held { RESERVE } else { 0 };
        free(self.dir()).is_ok_and(|f| f + extra >= RESERVE + 2 * FLOOR)
    }

    /// Allocates the reserve file again when it is gone and the filesystem has room
    /// for it and twice the floor besides.
    fn refill(&self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if *held || !free(self.dir()).is_ok_and(|f| f >= RESERVE + 2 * FLOOR) {
            return;
        }
        let made = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.file)
            .and_then(|f| {
                rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, RESERVE)
                    .map_err(io::Error::from)
            });
        match made {
            Ok(()) => *held = true,
            Err(e) => {
                tracing::debug!(path = %self.file.display(), error = %e, "allocating the store's reserve");
                let _ = std::fs::remove_file(&self.file);
            }
        }
    }

    /// Before an index write: a filesystem with less than the floor free gets the
    /// reserve back. Returns the full disk as an error when it gave the reserve up,
    /// for the store's write failure (the write itself goes on).
    pub(crate) fn before_index_write(&self) -> Option<io::Error> {
        if free(self.dir()).is_ok_and(|f| f >= FLOOR) {
            return None;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if !*held {
            return None;
        }
        tracing::warn!(path = %self.file.display(),
            "the store's filesystem is full: releasing its reserve for the index");
        let _ = std::fs::remove_file(&self.file);
        *held = false;
        Some(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "No space left on device: less than {} MiB free; the store gave up its {} MiB reserve to keep its index writable",
                FLOOR >> 20,
                RESERVE >> 20
            ),
        ))
    }

    /// Before a bulk write of `len` bytes: refused, as a full disk, when it would leave
    /// less than the floor free.
    pub(crate) fn room_for(&self, len: u64) -> io::Result<()> {
        let free = free(self.dir())?;
        if free.saturating_sub(len) < FLOOR {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "No space left on device: {len} bytes would leave less than the {} MiB kept for the store's index ({free} bytes free)",
                    FLOOR >> 20
                ),
            ));
        }
        self.refill();
        Ok(())
    }
}
