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
        let (mut event, at) = decode_event(value).map_err(|e| corrupt(e.to_string()))?;
        if let Some(at) = at {
            let bytes = self
                .inner
                .disk
                .bodies
                .read(&at)
                .map_err(|e| corrupt(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use crate::store::testing::{admission, admissions, event, open};
    use crate::store::StoreError;

    fn record_ids(entries: &[super::Entry]) -> Vec<String> {
        entries.iter().map(|e| e.event.record_id.clone()).collect()
    }

    #[tokio::test]
    async fn entries_leave_in_the_order_they_were_enqueued_and_go_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &["a", "b"]);
        let ids: Vec<String> = (0..10).map(|n| format!("r{n}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        store.admit(&admissions(&ids[..5], "a"), &[]).await.unwrap();
        store
            .admit(&[admission("only-b", &["b"])], &[])
            .await
            .unwrap();
        store.admit(&admissions(&ids[5..], "a"), &[]).await.unwrap();

        let entries = store.peek("a", 100).unwrap();
        assert_eq!(record_ids(&entries), ids);
        assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(
            entries[3].event,
            event("a", "X1", "r3"),
            "the event as enqueued"
        );
        assert_eq!(record_ids(&store.peek("a", 3).unwrap()), ["r0", "r1", "r2"]);
        assert_eq!(
            record_ids(&store.peek_from("a", entries[3].seq, 2).unwrap()),
            ["r3", "r4"]
        );
        assert_eq!(record_ids(&store.peek("b", 100).unwrap()), ["only-b"]);

        // Acknowledged: the first three, and one out of order.
        let acked = [
            entries[0].seq,
            entries[1].seq,
            entries[2].seq,
            entries[6].seq,
        ];
        store.remove("a", &acked).unwrap();
        assert_eq!(
            record_ids(&store.peek("a", 100).unwrap()),
            ["r3", "r4", "r5", "r7", "r8", "r9"]
        );
        assert_eq!(store.outbox_len("a").unwrap(), 6);
        assert!(store.entry("a", entries[0].seq).unwrap().is_none());
        let fifth = store.entry("a", entries[5].seq).unwrap().unwrap();
        assert_eq!(fifth.event, event("a", "X1", "r5"));
        assert_eq!(
            store.outbox_len("b").unwrap(),
            1,
            "another sink's outbox is its own"
        );

        // Once more changes nothing.
        store.remove("a", &acked).unwrap();
        assert_eq!(store.outbox_len("a").unwrap(), 6);
    }

    #[tokio::test]
    async fn an_event_for_an_unknown_sink_admits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &["a"]);
        let result = store.admit(&[admission("r1", &["a", "nope"])], &[]).await;
        assert!(matches!(result, Err(StoreError::UnknownSink(s)) if s == "nope"));
        assert!(!store.is_seen("r1").unwrap());
        assert_eq!(store.outbox_len("a").unwrap(), 0);
        assert!(matches!(
            store.peek("nope", 1),
            Err(StoreError::UnknownSink(_))
        ));
    }

    #[tokio::test]
    async fn admitting_wakes_the_sink_and_an_unconfigured_sink_keeps_its_outbox() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path(), &["a", "b"]);
            let woken = store.notifier("b").unwrap();
            store
                .admit(&admissions(&["r1", "r2"], "b"), &[])
                .await
                .unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(5), woken.notified())
                .await
                .expect("the sink's worker is woken");
            assert!(store.orphan_outboxes().is_empty());
        }
        let store = open(dir.path(), &["a"]);
        assert_eq!(store.sinks().collect::<Vec<_>>(), ["a"]);
        assert_eq!(store.orphan_outboxes(), [("b".to_string(), 2)]);
    }
}
