//! The in-memory backend: for tests and for nodes that need no durability.

use std::collections::BTreeMap;

use crate::backend::{KvBackend, KvOp, Plain, Record, refuse_overwrites, refuse_unexpected};
use crate::error::StoreError;

/// An ordered map in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryBackend {
    /// The number of records held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl KvBackend for MemoryBackend {
    fn scan(&self, prefix: &[u8], start: &[u8], limit: usize) -> Result<Vec<Record>, StoreError> {
        Ok(self
            .map
            .range(start.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.get(key).cloned())
    }

    fn apply(&mut self, ops: Vec<KvOp>) -> Result<(), StoreError> {
        let ops: Vec<Plain> = ops.into_iter().map(KvOp::plain).collect();
        refuse_overwrites(&ops, |key| Ok(self.map.contains_key(key)))?;
        refuse_unexpected(&ops, |key| Ok(self.map.get(key).cloned()))?;
        for op in ops {
            match op {
                Plain::Put { key, value, .. } => {
                    self.map.insert(key, value);
                }
                Plain::Expect { .. } => {}
                Plain::Delete(key) => {
                    self.map.remove(&key);
                }
                Plain::DeleteRange { from, to } => {
                    let doomed: Vec<Vec<u8>> =
                        self.map.range(from..to).map(|(k, _)| k.clone()).collect();
                    for key in doomed {
                        self.map.remove(&key);
                    }
                }
                Plain::DeletePrefix(prefix) => {
                    let doomed: Vec<Vec<u8>> = self
                        .map
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&prefix))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in doomed {
                        self.map.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
