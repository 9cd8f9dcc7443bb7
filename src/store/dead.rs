//! Dead letters, one tree per sink: events a sink refused for good, kept until replayed back
//! into the outbox.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::codec::{decode_event, encode_event};
use super::outbox::Entry;
use super::{decode_u64, Store, StoreError};
use crate::route::Event;

/// An event a sink refused for good, with why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub event: Event,
    pub reason: String,
    pub failed_at: DateTime<Utc>,
    #[serde(default)]
    pub attempts: u32,
    /// The HTTP status of the last attempt, for sinks that speak HTTP.
    #[serde(default)]
    pub last_status: Option<u16>,
}

impl Store {
    /// Moves an entry from the outbox to the dead letters (dropping its retry state),
    /// atomically.
    pub fn bury(
        &self,
        sink: &str,
        entry: &Entry,
        reason: &str,
        attempts: u32,
        last_status: Option<u16>,
    ) -> Result<(), StoreError> {
        let s = self.sink(sink)?;
        let letter = DeadLetter {
            event: entry.event.clone(),
            reason: reason.to_string(),
            failed_at: Utc::now(),
            attempts,
            last_status,
        };
        let bytes = serde_json::to_vec(&letter)
            .map_err(|e| self.corrupt("dead letter", &entry.event.id, &e.to_string()))?;
        let disk = &self.inner.disk;
        disk.write(|| {
            (&s.outbox, &s.dead, &s.attempts).transaction(|(outbox, dead, retry)| {
                let old = outbox.remove(&entry.seq.to_be_bytes())?;
                retry.remove(&entry.seq.to_be_bytes())?;
                dead.insert(&entry.seq.to_be_bytes(), bytes.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(old)
            })
        })
        .map_err(|e| self.transaction_error(e, "dead-letter", &entry.event.id))
        .and_then(|old| {
            // The dead letter holds its own copy of the body.
            let at = old.and_then(|v| decode_event(v).ok()?.1);
            self.release(at)
        })
    }

    /// A sink's dead letters, oldest first.
    pub fn dead_letters(&self, sink: &str) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        let mut out = Vec::new();
        for item in self.sink(sink)?.dead.iter() {
            let (k, v) = item.map_err(self.io("read dead letters"))?;
            let seq = decode_u64(&k)
                .ok_or_else(|| self.corrupt("dead letter", sink, "key is not 8 bytes"))?;
            let letter = serde_json::from_slice(&v).map_err(|e| {
                self.corrupt("dead letter", &format!("{sink}/{seq}"), &e.to_string())
            })?;
            out.push((seq, letter));
        }
        Ok(out)
    }

    pub fn dead_len(&self, sink: &str) -> Result<usize, StoreError> {
        Ok(self.sink(sink)?.dead.len())
    }

    /// Moves a sink's dead letters that failed at or after `since` (all of them with `None`)
    /// back to the end of its outbox, with fresh retry state. Returns how many.
    pub fn replay_dead(
        &self,
        sink: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<usize, StoreError> {
        self.replay_dead_where(sink, |l| since.is_none_or(|t| l.failed_at >= t))
    }

    /// Moves the sink's dead letters that `select` picks back to the end of its outbox, with
    /// fresh retry state and the same event (its id, so its `webhook-id`). Returns how many.
    pub fn replay_dead_where(
        &self,
        sink: &str,
        select: impl Fn(&DeadLetter) -> bool,
    ) -> Result<usize, StoreError> {
        let s = self.sink(sink)?;
        let letters: Vec<(u64, DeadLetter)> = self
            .dead_letters(sink)?
            .into_iter()
            .filter(|(_, l)| select(l))
            .collect();
        for chunk in letters.chunks(1000) {
            let encoded: Vec<(u64, Vec<u8>)> = chunk
                .iter()
                .map(|(seq, l)| (*seq, encode_event(&l.event, None)))
                .collect();
            let disk = &self.inner.disk;
            disk.write(|| {
                (&s.outbox, &s.dead).transaction(|(outbox, dead)| {
                    for (old_seq, bytes) in &encoded {
                        let seq = outbox.generate_id()?;
                        outbox.insert(&seq.to_be_bytes(), bytes.as_slice())?;
                        dead.remove(&old_seq.to_be_bytes())?;
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
            })
            .map_err(|e| self.transaction_error(e, "replay dead letters", sink))?;
        }
        self.inner
            .disk
            .flush()
            .map_err(|detail| StoreError::Flush {
                path: self.inner.path.clone(),
                detail,
            })?;
        s.notify.notify_one();
        Ok(letters.len())
    }
}
