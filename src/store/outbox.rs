//! The outboxes, one per sink: what goes in and what comes out. In: [`Store::admit`], the one
//! transaction that marks records seen, enqueues their events for each sink and moves the
//! cursors (see the module doc of `store`). Out: entries waiting for delivery, oldest first,
//! removed once their sink confirmed them. An entry's value is
//! [`Event::to_outbox`](crate::event::Event::to_outbox).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use redb::{ReadableTable, ReadableTableMetadata, TableHandle};
use tokio::sync::Notify;

use super::cursor::{encode_cursor, Cursor};
use super::seen::mark_seen;
use super::{Queue, Store, StoreError, CURSORS, OUTBOX_PREFIX, SEEN, SEEN_BY_TIME};
use crate::config::Durability;
use crate::event::Event;

/// A record to admit: its id and the events its routes made of it.
#[derive(Debug, Clone)]
pub struct Admission {
    pub record_id: String,
    pub xmid: String,
    pub events: Vec<Event>,
}

/// What one `admit` did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AdmitOutcome {
    /// Records seen for the first time (and enqueued).
    pub new: usize,
    /// Records already admitted before.
    pub duplicate: usize,
    /// Outbox entries written, per sink and event type.
    pub enqueued: BTreeMap<(String, String), usize>,
}

/// A record ready for the transaction: its id, and its events as (index of the sink's outbox,
/// the entry's bytes).
type EncodedRecord = (String, Vec<(usize, Vec<u8>)>);

impl Store {
    /// Admits records and moves cursors in one transaction (see the module doc), then makes it
    /// durable as configured.
    pub async fn admit(
        &self,
        admissions: &[Admission],
        cursors: &[(String, Cursor)],
    ) -> Result<AdmitOutcome, StoreError> {
        self.admit_at(admissions, cursors, self.inner.clock.now())
            .await
    }

    /// Admissions under way, those whose caller was aborted included: a drain waits for
    /// them, since what they commit lands in the outboxes.
    pub fn admissions_under_way(&self) -> usize {
        self.inner.engine.admissions_under_way()
    }

    /// [`Store::admit`] with the instant the new ids are marked seen at (what
    /// [`Store::prune_seen`] compares with): the retention's tests pass it rather than wait.
    pub(super) async fn admit_at(
        &self,
        admissions: &[Admission],
        cursors: &[(String, Cursor)],
        now: DateTime<Utc>,
    ) -> Result<AdmitOutcome, StoreError> {
        if admissions.is_empty() && cursors.is_empty() {
            return Ok(AdmitOutcome::default());
        }
        let now = now.timestamp_millis();
        let sink_names: Vec<&String> = self.inner.outboxes.keys().collect();
        // Encoded here, owned by the blocking task that writes them.
        let mut records = Vec::with_capacity(admissions.len());
        for admission in admissions {
            let mut events = Vec::with_capacity(admission.events.len());
            for event in &admission.events {
                let index = sink_names
                    .iter()
                    .position(|s| **s == event.sink)
                    .ok_or_else(|| StoreError::UnknownSink(event.sink.clone()))?;
                events.push((index, event.to_outbox()));
            }
            records.push((admission.record_id.clone(), events));
        }
        let cursors: Vec<(String, [u8; 16])> = cursors
            .iter()
            .map(|(key, c)| (key.clone(), encode_cursor(c)))
            .collect();
        let store = self.clone();
        let durable = self.inner.durability == Durability::Batch;
        let under_way = self.inner.engine.admitting();
        let new = tokio::task::spawn_blocking(move || {
            let _under_way = under_way;
            let (new, at) = store.write_admission(&records, &cursors, now)?;
            if durable {
                store.inner.engine.sync_upto(at)?;
            }
            Ok::<_, StoreError>(new)
        })
        .await
        .map_err(|source| StoreError::Task {
            path: self.inner.path.clone(),
            operation: "admit",
            source,
        })??;
        let mut outcome = AdmitOutcome {
            new: new.len(),
            duplicate: admissions.len() - new.len(),
            enqueued: BTreeMap::new(),
        };
        for admission in new.iter().map(|i| &admissions[*i]) {
            for event in &admission.events {
                *outcome
                    .enqueued
                    .entry((event.sink.clone(), event.event_type.clone()))
                    .or_default() += 1;
            }
        }
        for (sink, _) in outcome.enqueued.keys() {
            if let Some(s) = self.inner.outboxes.get(sink) {
                s.notify.notify_one();
            }
        }
        Ok(outcome)
    }

    /// The transaction of `admit`. Returns the indices of the records seen for the first time,
    /// and the commit's number.
    fn write_admission(
        &self,
        records: &[EncodedRecord],
        cursors: &[(String, [u8; 16])],
        now: i64,
    ) -> Result<(Vec<usize>, u64), StoreError> {
        let engine = &self.inner.engine;
        engine.write_counted("admit", |txn| {
            let mut seen = txn.open_table(SEEN)?;
            let mut by_time = txn.open_table(SEEN_BY_TIME)?;
            let mut outboxes = Vec::with_capacity(self.inner.outboxes.len());
            for sink in self.inner.outboxes.values() {
                outboxes.push(txn.open_table(sink.outbox())?);
            }
            let mut new = Vec::with_capacity(records.len());
            for (i, (record_id, events)) in records.iter().enumerate() {
                if !mark_seen(&mut seen, &mut by_time, record_id, now)? {
                    continue;
                }
                for (index, bytes) in events {
                    outboxes[*index].insert(engine.next_seq(), bytes.as_slice())?;
                }
                new.push(i);
            }
            let mut cursor_table = txn.open_table(CURSORS)?;
            for (key, cursor) in cursors {
                cursor_table.insert(key.as_str(), cursor.as_slice())?;
            }
            engine.save_seq(txn)?;
            Ok(new)
        })
    }
}

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
