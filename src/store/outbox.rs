//! The outboxes, one per sink: entries waiting for delivery, oldest first, removed once their
//! sink confirmed them.

use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadableTable, ReadableTableMetadata, TableHandle};
use tokio::sync::Notify;

use super::{Queue, Store, StoreError, OUTBOX_PREFIX};
use crate::event::Event;

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
        let s = self.sink(sink)?;
        let engine = &self.inner.engine;
        let raw = engine.read("read outbox", |txn| {
            let mut out = Vec::with_capacity(limit.min(1024));
            for item in txn.open_table(s.outbox())?.range(from..)? {
                if out.len() == limit {
                    break;
                }
                let (k, v) = item?;
                let seq = k.value();
                // Delivered, its removal not written yet.
                if engine.removed(&s.outbox, seq) {
                    continue;
                }
                out.push((seq, Bytes::copy_from_slice(v.value())));
            }
            Ok(out)
        })?;
        raw.into_iter()
            .map(|(seq, value)| self.entry_of(sink, seq, value))
            .collect()
    }

    /// Removes delivered entries (and their retry state); under `durability = "batch"` durably
    /// (a crash would deliver them again). If it fails, the entries are still delivered: they
    /// are not read again, and their removal is written with the next one.
    pub async fn remove(&self, sink: &str, seqs: &[u64]) -> Result<(), StoreError> {
        let s = self.sink(sink)?;
        let at = self.inner.engine.remove(&s.outbox, seqs, |txn| {
            let mut attempts = txn.open_table(s.attempts())?;
            if !attempts.is_empty()? {
                for seq in seqs {
                    attempts.remove(seq)?;
                }
            }
            Ok(())
        })?;
        self.synced_if_batch(at).await
    }

    /// One outbox entry, if it is still there.
    pub fn entry(&self, sink: &str, seq: u64) -> Result<Option<Entry>, StoreError> {
        let s = self.sink(sink)?;
        if self.inner.engine.removed(&s.outbox, seq) {
            return Ok(None);
        }
        let raw = self.inner.engine.read("read outbox", |txn| {
            Ok(txn
                .open_table(s.outbox())?
                .get(seq)?
                .map(|v| Bytes::copy_from_slice(v.value())))
        })?;
        raw.map(|v| self.entry_of(sink, seq, v)).transpose()
    }

    /// An outbox entry from its stored value.
    fn entry_of(&self, sink: &str, seq: u64, value: Bytes) -> Result<Entry, StoreError> {
        let event = Event::from_outbox(value)
            .map_err(|e| self.corrupt("outbox", &format!("{sink}/{seq}"), &e.to_string()))?;
        Ok(Entry { seq, event })
    }

    /// Woken whenever entries are enqueued for `sink`.
    pub fn notifier(&self, sink: &str) -> Result<Arc<Notify>, StoreError> {
        Ok(self.sink(sink)?.notify.clone())
    }

    pub fn sinks(&self) -> impl Iterator<Item = &String> {
        self.inner.outboxes.keys()
    }

    /// Entries waiting in a sink's outbox.
    pub fn outbox_len(&self, sink: &str) -> Result<usize, StoreError> {
        let s = self.sink(sink)?;
        let len = self.inner.engine.read("count outbox", |txn| {
            Ok(txn.open_table(s.outbox())?.len()?)
        })?;
        Ok((len as usize).saturating_sub(self.inner.engine.removed_len(&s.outbox)))
    }

    /// Outboxes in the database whose sink is not configured any more, with their sizes.
    pub fn orphan_outboxes(&self) -> Vec<(String, usize)> {
        let found = self.inner.engine.read("list outboxes", |txn| {
            let mut out = Vec::new();
            for handle in txn.list_tables()? {
                let name = handle.name().to_string();
                let Some(sink) = name.strip_prefix(OUTBOX_PREFIX) else {
                    continue;
                };
                if self.inner.outboxes.contains_key(sink) {
                    continue;
                }
                let len = txn.open_table(Queue::new(&name))?.len()?;
                out.push((sink.to_string(), len as usize));
            }
            Ok(out)
        });
        found.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list the store's outboxes");
            Vec::new()
        })
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
        store.remove("a", &acked).await.unwrap();
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
        store.remove("a", &acked).await.unwrap();
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
