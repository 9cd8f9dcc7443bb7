//! The outboxes, one per sink: entries waiting for delivery, oldest first, removed once their
//! sink confirmed them.

use std::sync::Arc;

use bytestring::ByteString;
use tokio::sync::Notify;

use super::codec::decode_event;
use super::{decode_u64, Store, StoreError, OUTBOX_PREFIX};
use crate::route::Event;

/// An outbox entry: its position in the sink's queue and the event.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub event: Event,
}

impl Store {
    /// The first `limit` entries of a sink's outbox, oldest first.
    pub fn peek(&self, sink: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.peek_from(sink, 0, limit)
    }

    /// Up to `limit` entries of a sink's outbox from position `from` on, oldest first.
    pub fn peek_from(&self, sink: &str, from: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let tree = &self.sink(sink)?.outbox;
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in tree.range(from.to_be_bytes()..).take(limit) {
            let (k, v) = item.map_err(self.io("read outbox"))?;
            let seq =
                decode_u64(&k).ok_or_else(|| self.corrupt("outbox", sink, "key is not 8 bytes"))?;
            out.push(self.entry_of(sink, seq, v)?);
        }
        Ok(out)
    }

    /// Removes delivered entries (and their retry state).
    pub fn remove(&self, sink: &str, seqs: &[u64]) -> Result<(), StoreError> {
        let s = self.sink(sink)?;
        let mut batch = sled::Batch::default();
        let mut bodies = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let key = seq.to_be_bytes();
            if let Some(value) = s.outbox.get(key).map_err(self.io("read outbox"))? {
                if let Ok((_, Some(at))) = decode_event(value) {
                    bodies.push(at);
                }
            }
            batch.remove(&key);
        }
        let disk = &self.inner.disk;
        disk.write(|| s.outbox.apply_batch(batch))
            .map_err(self.io("remove delivered"))?;
        self.release(bodies)?;
        // A crash between the two leaves retry state without an entry: ignored when read.
        if !s.attempts.is_empty() {
            let mut batch = sled::Batch::default();
            for seq in seqs {
                batch.remove(&seq.to_be_bytes());
            }
            disk.write(|| s.attempts.apply_batch(batch))
                .map_err(self.io("remove retry state"))?;
        }
        Ok(())
    }

    /// One outbox entry, if it is still there.
    pub fn entry(&self, sink: &str, seq: u64) -> Result<Option<Entry>, StoreError> {
        let raw = self
            .sink(sink)?
            .outbox
            .get(seq.to_be_bytes())
            .map_err(self.io("read outbox"))?;
        raw.map(|v| self.entry_of(sink, seq, v)).transpose()
    }

    /// An outbox entry from its stored value, its body read from its segment if it has one.
    fn entry_of(&self, sink: &str, seq: u64, value: sled::IVec) -> Result<Entry, StoreError> {
        let corrupt = |e: String| self.corrupt("outbox", &format!("{sink}/{seq}"), &e);
        let (mut event, at) = decode_event(value).map_err(corrupt)?;
        if let Some(at) = at {
            let bytes = self.inner.disk.bodies.read(&at).map_err(corrupt)?;
            event.body = ByteString::try_from(bytes).map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(Entry { seq, event })
    }

    /// Woken whenever entries are enqueued for `sink`.
    pub fn notifier(&self, sink: &str) -> Result<Arc<Notify>, StoreError> {
        Ok(self.sink(sink)?.notify.clone())
    }

    pub fn sinks(&self) -> impl Iterator<Item = &String> {
        self.inner.outboxes.keys()
    }

    /// Entries waiting in a sink's outbox (counts them: O(n)).
    pub fn outbox_len(&self, sink: &str) -> Result<usize, StoreError> {
        Ok(self.sink(sink)?.outbox.len())
    }

    /// Outboxes in the database whose sink is not configured any more, with their sizes.
    pub fn orphan_outboxes(&self) -> Vec<(String, usize)> {
        self.inner
            .db
            .tree_names()
            .into_iter()
            .filter_map(|name| {
                let name = String::from_utf8_lossy(&name).to_string();
                let sink = name.strip_prefix(OUTBOX_PREFIX)?.to_string();
                if self.inner.outboxes.contains_key(&sink) {
                    return None;
                }
                let len = self.inner.db.open_tree(&name).map(|t| t.len()).unwrap_or(0);
                Some((sink, len))
            })
            .collect()
    }
}
