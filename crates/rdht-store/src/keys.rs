//! Key and value layouts of the single ordered map (specs/store.md §2).
//!
//! Owns: the one-byte key prefixes and the fixed-width little-endian value encodings,
//! and their decoding with clear errors. Does not own: when entries are written (that
//! is `store.rs`) or the block and record formats (that is `rdht-core`).
//!
//! | prefix | key                         | value                                   |
//! |--------|-----------------------------|-----------------------------------------|
//! | `b`    | block id                    | block bytes                             |
//! | `r`    | block id                    | [`RefEntry`]: count u32, len u32        |
//! | `l`    | block id                    | [`LooseEntry`]: boot u64, session u64, len u32 |
//! | `a`    | artifact root               | [`ArtifactMeta`]                        |
//! | `s`    | artifact root, chunk u32 BE | up to [`IDS_PER_CHUNK`] block ids       |
//! | `u`    | artifact root               | last use, u64 (store clock)             |
//! | `k`    | build key, builder, root    | record encoding                         |
//! | `m`    | name                        | store metadata                          |
//! | `n`    | kind u8, id                 | a mark: one byte of the caller's flags  |
//! | `f`    | file root                   | [`FileRef`]: count u32, size u64        |
//! | `g`    | artifact root, chunk u32 BE | up to [`IDS_PER_CHUNK`] file roots      |
//! | `c`    | leaf id, file root          | [`LeafLoc`]: offset u64, len u32        |

use rdht_core::{BlockId, BuildKey, BuilderKey};

/// Prefix of block bytes.
pub const BLOCK: u8 = b'b';
/// Prefix of reference counts.
pub const REF: u8 = b'r';
/// Prefix of loose marks (blocks held by no artifact yet).
pub const LOOSE: u8 = b'l';
/// Prefix of artifact metadata.
pub const ARTIFACT: u8 = b'a';
/// Prefix of artifact block lists.
pub const BLOCK_LIST: u8 = b's';
/// Prefix of artifact last-use times.
pub const USED: u8 = b'u';
/// Prefix of build records.
pub const RECORD: u8 = b'k';
/// Prefix of marks (`crate::marks`).
pub const MARK: u8 = b'n';
/// Prefix of kept files' reference counts.
pub const FILE: u8 = b'f';
/// Prefix of artifact file lists.
pub const FILE_LIST: u8 = b'g';
/// Prefix of leaf locators (a leaf's place in a kept file).
pub const LEAF: u8 = b'c';
/// Key of the format version (u32 LE).
pub const META_FORMAT: &[u8] = b"mformat";
/// Key of the open counter (u64 LE).
pub const META_BOOT: &[u8] = b"mboot";
/// The store format this build writes and reads (3: complete files kept whole,
/// specs/store.md §2.3).
pub const FORMAT_VERSION: u32 = 3;
/// Older formats this build opens and marks as [`FORMAT_VERSION`]: their index is
/// valid format 3 (artifacts whose files are all in packs), specs/store.md §2.4.
pub const FORMAT_UPGRADABLE: [u32; 2] = [1, 2];
/// Block ids in one block-list chunk (32 KiB of ids).
pub const IDS_PER_CHUNK: usize = 1024;

/// Key of file-list chunk `n` of artifact `root`.
pub fn file_list_key(root: &BlockId, n: u32) -> Vec<u8> {
    let mut k = id_key(FILE_LIST, root.as_bytes());
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Key of the locator of leaf `leaf` in the file of `file`.
pub fn leaf_key(leaf: &BlockId, file: &BlockId) -> Vec<u8> {
    let mut k = id_key(LEAF, leaf.as_bytes());
    k.extend_from_slice(file.as_bytes());
    k
}

/// How many artifacts hold a kept file, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRef {
    /// Artifacts whose file list names it (at least 1).
    pub count: u32,
    /// The file's size in bytes.
    pub size: u64,
}

impl FileRef {
    /// 12 bytes: count u32, size u64.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.count.to_le_bytes().to_vec();
        v.extend_from_slice(&self.size.to_le_bytes());
        v
    }

    /// Inverse of [`FileRef::encode`].
    pub fn decode(v: &[u8]) -> Option<FileRef> {
        (v.len() == 12).then_some(())?;
        Some(FileRef {
            count: u32_at(v, 0)?,
            size: u64_at(v, 4)?,
        })
    }
}

/// Where a leaf's data is in a kept file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafLoc {
    /// Byte offset in the file.
    pub offset: u64,
    /// Data bytes (the leaf's length without its tag).
    pub len: u32,
}

impl LeafLoc {
    /// 12 bytes: offset u64, len u32.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.offset.to_le_bytes().to_vec();
        v.extend_from_slice(&self.len.to_le_bytes());
        v
    }

    /// Inverse of [`LeafLoc::encode`].
    pub fn decode(v: &[u8]) -> Option<LeafLoc> {
        (v.len() == 12).then_some(())?;
        Some(LeafLoc {
            offset: u64_at(v, 0)?,
            len: u32_at(v, 8)?,
        })
    }
}

/// `prefix || id`.
pub fn id_key(prefix: u8, id: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(prefix);
    k.extend_from_slice(id);
    k
}

/// Key of block-list chunk `n` of artifact `root`.
pub fn list_key(root: &BlockId, n: u32) -> Vec<u8> {
    let mut k = id_key(BLOCK_LIST, root.as_bytes());
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Key of the record by `builder` for `key` naming `root`.
pub fn record_key(key: &BuildKey, builder: &BuilderKey, root: &BlockId) -> Vec<u8> {
    let mut k = Vec::with_capacity(97);
    k.push(RECORD);
    k.extend_from_slice(key.as_bytes());
    k.extend_from_slice(builder.as_bytes());
    k.extend_from_slice(root.as_bytes());
    k
}

/// The 32-byte id after a one-byte prefix, if `key` is exactly that.
pub fn id_after_prefix(key: &[u8]) -> Option<BlockId> {
    let bytes: [u8; 32] = key.get(1..33)?.try_into().ok()?;
    (key.len() == 33).then(|| BlockId::from_bytes(bytes))
}

fn u32_at(v: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(v.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(v: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(v.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes a u64 LE value of exactly 8 bytes.
pub fn decode_u64(v: &[u8]) -> Option<u64> {
    (v.len() == 8).then(|| u64_at(v, 0)).flatten()
}

/// How many artifacts hold a block, and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefEntry {
    /// Artifacts whose block list names the block (at least 1).
    pub count: u32,
    /// The block's encoded length.
    pub len: u32,
}

impl RefEntry {
    /// 8 bytes: count, len.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.count.to_le_bytes().to_vec();
        v.extend_from_slice(&self.len.to_le_bytes());
        v
    }

    /// Inverse of [`RefEntry::encode`].
    pub fn decode(v: &[u8]) -> Option<RefEntry> {
        if v.len() != 8 {
            return None;
        }
        Some(RefEntry {
            count: u32_at(v, 0)?,
            len: u32_at(v, 4)?,
        })
    }
}

/// A block stored outside any artifact: by an ingest or fetch session, or by a plain
/// put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LooseEntry {
    /// The store open (boot) that wrote it (diagnostics; protection is in memory).
    pub boot: u64,
    /// The session that wrote it; 0 for a plain put.
    pub session: u64,
    /// The block's encoded length.
    pub len: u32,
}

impl LooseEntry {
    /// 20 bytes: boot, session, len.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.boot.to_le_bytes().to_vec();
        v.extend_from_slice(&self.session.to_le_bytes());
        v.extend_from_slice(&self.len.to_le_bytes());
        v
    }

    /// Inverse of [`LooseEntry::encode`].
    pub fn decode(v: &[u8]) -> Option<LooseEntry> {
        if v.len() != 20 {
            return None;
        }
        Some(LooseEntry {
            boot: u64_at(v, 0)?,
            session: u64_at(v, 8)?,
            len: u32_at(v, 16)?,
        })
    }
}

/// What the store knows about one complete artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactMeta {
    /// Never evicted while set.
    pub pinned: bool,
    /// Sum of the manifest's file sizes.
    pub file_bytes: u64,
    /// Sum of the lengths of the distinct blocks of its DAGs (manifest included).
    pub stored_bytes: u64,
    /// Number of distinct blocks.
    pub blocks: u32,
    /// Number of files in the manifest.
    pub files: u32,
}

const META_VERSION: u8 = 1;
const META_LEN: usize = 26;

impl ArtifactMeta {
    /// 26 bytes: version u8 (1), flags u8 (bit 0: pinned), file_bytes u64,
    /// stored_bytes u64, blocks u32, files u32.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(META_LEN);
        v.push(META_VERSION);
        v.push(u8::from(self.pinned));
        v.extend_from_slice(&self.file_bytes.to_le_bytes());
        v.extend_from_slice(&self.stored_bytes.to_le_bytes());
        v.extend_from_slice(&self.blocks.to_le_bytes());
        v.extend_from_slice(&self.files.to_le_bytes());
        v
    }

    /// Inverse of [`ArtifactMeta::encode`].
    pub fn decode(v: &[u8]) -> Option<ArtifactMeta> {
        if v.len() != META_LEN || v[0] != META_VERSION || v[1] > 1 {
            return None;
        }
        Some(ArtifactMeta {
            pinned: v[1] == 1,
            file_bytes: u64_at(v, 2)?,
            stored_bytes: u64_at(v, 10)?,
            blocks: u32_at(v, 18)?,
            files: u32_at(v, 22)?,
        })
    }

    /// Number of block-list chunks.
    pub fn chunks(&self) -> u32 {
        (self.blocks as usize).div_ceil(IDS_PER_CHUNK) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_layouts_round_trip_and_are_pinned() {
        let r = RefEntry {
            count: 3,
            len: 16385,
        };
        assert_eq!(r.encode(), [3, 0, 0, 0, 0x01, 0x40, 0, 0]);
        assert_eq!(RefEntry::decode(&r.encode()), Some(r));
        assert_eq!(RefEntry::decode(&[0; 7]), None);
        let l = LooseEntry {
            boot: 2,
            session: 5,
            len: 7,
        };
        assert_eq!(
            l.encode(),
            [2, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0]
        );
        assert_eq!(LooseEntry::decode(&l.encode()), Some(l));
        let m = ArtifactMeta {
            pinned: true,
            file_bytes: 0x0102,
            stored_bytes: 0x0304,
            blocks: 2,
            files: 1,
        };
        let e = m.encode();
        assert_eq!(
            e,
            [
                1, 1, 2, 1, 0, 0, 0, 0, 0, 0, 4, 3, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0
            ]
        );
        assert_eq!(ArtifactMeta::decode(&e), Some(m));
        let mut bad = e.clone();
        bad[1] = 2;
        assert_eq!(ArtifactMeta::decode(&bad), None);
        assert_eq!(ArtifactMeta { blocks: 1025, ..m }.chunks(), 2);
        let root = BlockId::from_bytes([9; 32]);
        let k = list_key(&root, 1);
        assert_eq!(k.len(), 37);
        assert_eq!(&k[33..], &[0, 0, 0, 1]);
        assert_eq!(id_after_prefix(&id_key(BLOCK, root.as_bytes())), Some(root));
        assert_eq!(id_after_prefix(&k), None);
        let f = FileRef {
            count: 2,
            size: 0x0102,
        };
        assert_eq!(f.encode(), [2, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(FileRef::decode(&f.encode()), Some(f));
        let l = LeafLoc {
            offset: 0x4000,
            len: 300,
        };
        assert_eq!(l.encode(), [0, 0x40, 0, 0, 0, 0, 0, 0, 0x2c, 1, 0, 0]);
        assert_eq!(LeafLoc::decode(&l.encode()), Some(l));
        assert_eq!(LeafLoc::decode(&[0; 11]), None);
        let lk = leaf_key(&root, &BlockId::from_bytes([1; 32]));
        assert_eq!((lk.len(), lk[0], lk[33]), (65, b'c', 1));
    }
}
