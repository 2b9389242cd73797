//! Marks: one byte of flags per 32-byte id, kept for the store's user and opaque to the
//! store (specs/store.md §4.7). The daemon keeps in them where it announced a key.
//!
//! Owns: storing, OR-merging, listing and clearing marks. Does not own: what the bits
//! mean, or whether the id is still held (a caller drops the marks of what it no
//! longer holds; GC does not touch them).

use std::ops::ControlFlow;

use crate::backend::Batch;
use crate::error::StoreError;
use crate::keys;
use crate::store::Store;

fn mark_key(kind: u8, id: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(34);
    k.push(keys::MARK);
    k.push(kind);
    k.extend_from_slice(id);
    k
}

impl Store {
    /// Sets `bits` in the mark of (`kind`, `id`), keeping the bits already set.
    /// Returns the mark as it is now.
    pub fn add_mark(&self, kind: u8, id: &[u8; 32], bits: u8) -> Result<u8, StoreError> {
        let inner = &self.inner;
        let _st = inner.lock();
        let key = mark_key(kind, id);
        let old = inner
            .backend
            .get(&key)
            .map_err(inner.err("read"))?
            .and_then(|v| v.first().copied())
            .unwrap_or(0);
        let new = old | bits;
        if new != old {
            let mut batch = Batch::new();
            batch.put(key, vec![new]);
            inner.apply(batch)?;
        }
        Ok(new)
    }

    /// Every mark of `kind`, in id order. A value that is not one byte is skipped.
    pub fn marks(&self, kind: u8) -> Result<Vec<([u8; 32], u8)>, StoreError> {
        let inner = &self.inner;
        let mut out = Vec::new();
        inner
            .backend
            .scan_prefix(&[keys::MARK, kind], &mut |k, v| {
                if let (Some(Ok(id)), [bits]) = (k.get(2..34).map(<[u8; 32]>::try_from), v) {
                    out.push((id, *bits));
                }
                ControlFlow::Continue(())
            })
            .map_err(inner.err("read"))?;
        Ok(out)
    }

    /// Removes the marks of (`kind`, id) for every id in `ids`.
    pub fn remove_marks(&self, kind: u8, ids: &[[u8; 32]]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let _st = inner.lock();
        let mut batch = Batch::new();
        for id in ids {
            batch.remove(mark_key(kind, id));
        }
        inner.apply(batch)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    #[test]
    fn marks_merge_list_by_kind_and_clear() {
        let s = Store::memory(Default::default()).unwrap();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(s.add_mark(1, &b, 0b01).unwrap(), 0b01);
        assert_eq!(s.add_mark(1, &a, 0b10).unwrap(), 0b10);
        assert_eq!(s.add_mark(1, &a, 0b01).unwrap(), 0b11);
        assert_eq!(s.add_mark(2, &a, 0b100).unwrap(), 0b100);
        assert_eq!(s.marks(1).unwrap(), vec![(a, 0b11), (b, 0b01)]);
        assert_eq!(s.marks(2).unwrap(), vec![(a, 0b100)]);
        s.remove_marks(1, &[a]).unwrap();
        assert_eq!(s.marks(1).unwrap(), vec![(b, 0b01)]);
        assert_eq!(s.marks(2).unwrap(), vec![(a, 0b100)]);
    }
}
