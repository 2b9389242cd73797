//! Build records: the signed claims "key K built into root R" this node holds
//! (specs/store.md §5).
//!
//! Owns: storing records by (build key, builder, root), deduplicated, and reading them
//! back through `BuildRecord::decode_for`, which re-verifies every signature. Does not own:
//! the record format or trust policy (which builders to believe).

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use rdht_core::{BuildKey, BuildRecord};

use crate::backend::Batch;
use crate::error::{StoreError, hex_key};
use crate::keys;
use crate::store::Store;

impl Store {
    /// Stores a (signature-verified) record. Per build key, builder and root one
    /// record is kept: the one with the latest `time`. Returns true if the stored set
    /// changed.
    pub fn put_record(&self, record: &BuildRecord) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let _st = inner.lock();
        let key = keys::record_key(&record.key(), &record.builder(), &record.root());
        let encoded = record.encode();
        if let Some(old) = inner.backend.get(&key).map_err(inner.err("read"))? {
            if old[..] == encoded[..] {
                return Ok(false);
            }
            if let Ok(old) = BuildRecord::decode(&old)
                && old.body().time >= record.body().time
            {
                return Ok(false);
            }
        }
        let mut batch = Batch::new();
        batch.put(key, encoded);
        inner.apply(batch)?;
        Ok(true)
    }

    /// Every stored record for build `key` (any builder), each re-verified. A stored
    /// record that no longer decodes or verifies is logged, removed and skipped.
    pub fn records(&self, key: &BuildKey) -> Result<Vec<BuildRecord>, StoreError> {
        let inner = &self.inner;
        let mut prefix = vec![keys::RECORD];
        prefix.extend_from_slice(key.as_bytes());
        let mut out = Vec::new();
        let mut bad = Vec::new();
        inner
            .backend
            .scan_prefix(&prefix, &mut |k, v| {
                match BuildRecord::decode_for(v, *key) {
                    Ok(r) if keys::record_key(&r.key(), &r.builder(), &r.root()) == k => {
                        out.push(r)
                    }
                    Ok(_) => bad.push((k.to_vec(), "record is stored under another key".into())),
                    Err(e) => bad.push((k.to_vec(), e.to_string())),
                }
                ControlFlow::Continue(())
            })
            .map_err(inner.err("read"))?;
        if !bad.is_empty() {
            let _st = inner.lock();
            let mut batch = Batch::new();
            for (k, why) in bad {
                tracing::error!(key = %hex_key(&k), error = %why, "corrupt build record in store; removing it");
                inner.counters.corruptions.fetch_add(1, Ordering::Relaxed);
                batch.remove(k);
            }
            inner.apply(batch)?;
        }
        Ok(out)
    }

    /// Every build key with at least one stored record (what a node announces).
    pub fn build_keys(&self) -> Result<Vec<BuildKey>, StoreError> {
        let inner = &self.inner;
        let mut out: Vec<BuildKey> = Vec::new();
        inner
            .backend
            .scan_prefix(&[keys::RECORD], &mut |k, _| {
                if let Some(Ok(bytes)) = k.get(1..33).map(<[u8; 32]>::try_from) {
                    let key = BuildKey::from_bytes(bytes);
                    if out.last() != Some(&key) {
                        out.push(key);
                    }
                }
                ControlFlow::Continue(())
            })
            .map_err(inner.err("read"))?;
        Ok(out)
    }
}
