//! The record ids admitted, with a retention: `seen` (id -> when, unix ms big-endian) and its
//! index by time `seen_by_time` (when ++ id), which `prune_seen` walks to forget the oldest.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};

impl Store {
    /// Record ids remembered (counts them: O(n)).
    pub fn seen_len(&self) -> usize {
        self.inner.seen.len()
    }

    /// Whether a record id was admitted (and not yet pruned).
    pub fn is_seen(&self, record_id: &str) -> Result<bool, StoreError> {
        self.inner
            .seen
            .contains_key(record_id)
            .map_err(self.io("read seen"))
    }

    /// Forgets ids admitted before `before`. Returns how many.
    pub fn prune_seen(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let end = before.timestamp_millis().to_be_bytes();
        let mut pruned = 0;
        for item in self.inner.seen_by_time.range(..end.as_slice()) {
            let (key, _) = item.map_err(self.io("read seen_by_time"))?;
            // `seen` first: a crash in between leaves an index entry, removed next time.
            self.inner
                .seen
                .remove(&key[8..])
                .map_err(self.io("prune seen"))?;
            self.inner
                .seen_by_time
                .remove(&key)
                .map_err(self.io("prune seen"))?;
            pruned += 1;
        }
        Ok(pruned)
    }
}

/// The `seen_by_time` key of an id admitted at `ms`: the time first (big-endian, so keys sort by
/// it), then the id.
pub(super) fn time_key(ms: i64, id: &str) -> Vec<u8> {
    let mut key = ms.to_be_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}
