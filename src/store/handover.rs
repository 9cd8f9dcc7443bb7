//! What a cluster needs of the store: a watermark of admissions, which merchants still have
//! events waiting for delivery, and adopting the state another instance published.

use std::collections::HashMap;

use chrono::Utc;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{decode_cursor, decode_event, encode_cursor, time_key, Cursor, Store, StoreError};

impl Store {
    /// A number above every outbox entry admitted so far (and below every later one).
    pub fn watermark(&self) -> Result<u64, StoreError> {
        self.inner.db.generate_id().map_err(self.io("generate id"))
    }

    /// For each XMID with events still waiting in an outbox, the oldest such entry's number;
    /// `None` if the outboxes hold more than `limit` entries (too many to look through).
    pub fn waiting_by_xmid(
        &self,
        limit: usize,
    ) -> Result<Option<HashMap<String, u64>>, StoreError> {
        let mut total = 0;
        for sink in self.inner.outboxes.values() {
            total += sink.outbox.len();
        }
        if total > limit {
            return Ok(None);
        }
        let mut oldest: HashMap<String, u64> = HashMap::new();
        for (name, sink) in &self.inner.outboxes {
            for item in sink.outbox.iter() {
                let (key, value) = item.map_err(self.io("read outbox"))?;
                let seq = u64::from_be_bytes(key.as_ref().try_into().unwrap_or_default());
                let event =
                    decode_event(&value).map_err(|e| self.corrupt("outbox entry", name, &e))?;
                let slot = oldest.entry(event.xmid).or_insert(seq);
                *slot = (*slot).min(seq);
            }
        }
        Ok(Some(oldest))
    }

    /// Takes over what another instance published for a cursor key: the cursor, if it is ahead
    /// of this store's, and the record ids it had admitted (seen-set keys), so the look-back
    /// window it re-reads is not sent again. Returns whether the cursor moved.
    pub fn adopt(&self, key: &str, cursor: Cursor, seen: &[String]) -> Result<bool, StoreError> {
        let now = Utc::now().timestamp_millis();
        let trees = [
            self.inner.seen.clone(),
            self.inner.seen_by_time.clone(),
            self.inner.cursors.clone(),
        ];
        let result = trees[..].transaction(|t| {
            let (seen_tree, by_time, cursors) = (&t[0], &t[1], &t[2]);
            for id in seen {
                if seen_tree.get(id.as_bytes())?.is_none() {
                    seen_tree.insert(id.as_bytes(), &now.to_be_bytes())?;
                    by_time.insert(time_key(now, id), &[])?;
                }
            }
            let local = cursors.get(key.as_bytes())?.and_then(|v| decode_cursor(&v));
            let ahead = local.is_none_or(|l| l.position < cursor.position);
            if ahead {
                let floor = local.map_or(cursor.floor, |l| l.floor.min(cursor.floor));
                let merged = Cursor {
                    position: cursor.position,
                    floor,
                };
                cursors.insert(key.as_bytes(), &encode_cursor(&merged))?;
            }
            Ok::<_, ConflictableTransactionError<()>>(ahead)
        });
        match result {
            Ok(moved) => Ok(moved),
            Err(TransactionError::Storage(source)) => Err(StoreError::Io {
                path: self.inner.path.clone(),
                operation: "adopt state",
                source,
            }),
            Err(TransactionError::Abort(())) => Err(self.corrupt("adoption", key, "aborted")),
        }
    }
}
