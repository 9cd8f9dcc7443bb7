//! Admission: the one transaction that marks records seen, enqueues their events for each sink
//! and moves the cursors (see the module doc of `store`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Transactional, Tree};

use super::bodies::BodyRef;
use super::codec::encode_event;
use super::cursor::{encode_cursor, Cursor};
use super::seen::mark_seen;
use super::{Store, StoreError};
use crate::config::Durability;
use crate::route::Event;

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

/// An event ready for the transaction: the index of its sink's outbox and its bytes.
type EncodedEvent = (usize, Vec<u8>);

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
        let mut trees: Vec<Tree> = vec![
            self.inner.seen.clone(),
            self.inner.seen_by_time.clone(),
            self.inner.cursors.clone(),
        ];
        trees.extend(self.inner.outboxes.values().map(|s| s.outbox.clone()));
        // Bodies first, into their segment (synced before the transaction),
        // so the entries can point at them; encoded outside the transaction, whose closure
        // may run more than once.
        if let Some(e) = admissions
            .iter()
            .flat_map(|a| &a.events)
            .find(|e| !self.inner.outboxes.contains_key(&e.sink))
        {
            return Err(StoreError::UnknownSink(e.sink.clone()));
        }
        let bodies: Vec<&[u8]> = admissions
            .iter()
            .flat_map(|a| a.events.iter().map(|e| e.body.as_bytes().as_ref()))
            .collect();
        let disk = &self.inner.disk;
        let body_error = || self.disk_error("write event bodies");
        let mut refs = disk
            .bodies
            .append(&bodies)
            .map_err(body_error())?
            .into_iter();
        let all_refs: Vec<BodyRef> = refs.clone().collect();
        // Under either durability: sled's flusher may write the pointers at any moment.
        if !bodies.is_empty() {
            if let Err(e) = self.sync_bodies().await {
                let _ = disk.bodies.release(all_refs);
                return Err(body_error()(e));
            }
        }
        let mut encoded: Vec<(&Admission, Vec<EncodedEvent>)> =
            Vec::with_capacity(admissions.len());
        for admission in admissions {
            let mut events = Vec::with_capacity(admission.events.len());
            for event in &admission.events {
                let index = sink_names
                    .iter()
                    .position(|s| **s == event.sink)
                    .ok_or_else(|| StoreError::UnknownSink(event.sink.clone()))?;
                events.push((index, encode_event(event, refs.next())));
            }
            encoded.push((admission, events));
        }
        let result = disk.write(|| {
            trees[..].transaction(|t| {
                let (seen, by_time, cursor_tree) = (&t[0], &t[1], &t[2]);
                let mut new = 0;
                // Their bodies were written for nothing.
                let mut duplicates = Vec::new();
                // Counted by reference here, named once outside (the closure may run again).
                let mut enqueued: BTreeMap<(usize, &str), usize> = BTreeMap::new();
                for (i, (admission, events)) in encoded.iter().enumerate() {
                    if !mark_seen(seen, by_time, &admission.record_id, now)? {
                        duplicates.push(i);
                        continue;
                    }
                    for ((index, bytes), event) in events.iter().zip(&admission.events) {
                        let seq = t[3 + index].generate_id()?;
                        t[3 + index].insert(&seq.to_be_bytes(), bytes.as_slice())?;
                        *enqueued
                            .entry((*index, event.event_type.as_str()))
                            .or_default() += 1;
                    }
                    new += 1;
                }
                for (xmid, cursor) in cursors {
                    cursor_tree.insert(xmid.as_bytes(), &encode_cursor(cursor))?;
                }
                Ok::<_, ConflictableTransactionError<()>>((new, duplicates, enqueued))
            })
        });
        if result.is_err() {
            let _ = disk.bodies.release(all_refs.iter().copied());
        }
        let outcome = match result {
            Ok((new, duplicates, enqueued)) => {
                let mut first = 0;
                let unused = encoded.iter().enumerate().flat_map(|(i, (a, _))| {
                    let refs = &all_refs[first..first + a.events.len()];
                    first += a.events.len();
                    if duplicates.binary_search(&i).is_ok() {
                        refs
                    } else {
                        &[]
                    }
                });
                self.release(unused.copied())?;
                AdmitOutcome {
                    new,
                    duplicate: duplicates.len(),
                    enqueued: enqueued
                        .into_iter()
                        .map(|((index, event_type), n)| {
                            ((sink_names[index].clone(), event_type.to_string()), n)
                        })
                        .collect(),
                }
            }
            Err(TransactionError::Storage(source)) => {
                return Err(StoreError::Io {
                    path: self.inner.path.clone(),
                    operation: "admit",
                    source,
                })
            }
            Err(TransactionError::Abort(())) => {
                // Nothing in the transaction aborts; were it to, say so rather than admit nothing.
                return Err(self.corrupt("admission", "(transaction)", "aborted"));
            }
        };
        if self.inner.durability == Durability::Batch {
            self.flush().await?;
        }
        for (sink, _) in outcome.enqueued.keys() {
            if let Some(s) = self.inner.outboxes.get(sink) {
                s.notify.notify_one();
            }
        }
        Ok(outcome)
    }
}
