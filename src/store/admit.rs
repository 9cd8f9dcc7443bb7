//! Admission: the one transaction that marks records seen, enqueues their events for each sink
//! and moves the cursors (see the module doc of `store`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::cursor::{encode_cursor, Cursor};
use super::seen::mark_seen;
use super::{Store, StoreError, CURSORS, SEEN, SEEN_BY_TIME};
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
