//! Dead letters, one table per sink: events a sink refused for good, kept until replayed back
//! into the outbox.

use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::outbox::Entry;
use super::{Store, StoreError};
use crate::event::Event;

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
    pub async fn bury(
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
            failed_at: self.clock().now(),
            attempts,
            last_status,
        };
        let bytes = serde_json::to_vec(&letter)
            .map_err(|e| self.corrupt("dead letter", &entry.event.id, &e.to_string()))?;
        let ((), at) = self.inner.engine.write_counted("dead-letter", |txn| {
            let seq = entry.seq;
            txn.open_table(s.outbox())?.remove(seq)?;
            txn.open_table(s.attempts())?.remove(seq)?;
            txn.open_table(s.dead())?.insert(seq, bytes.as_slice())?;
            Ok(())
        })?;
        self.synced_if_batch(at).await
    }

    /// A sink's dead letters, oldest first.
    pub fn dead_letters(&self, sink: &str) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        let s = self.sink(sink)?;
        let raw = self.inner.engine.read("read dead letters", |txn| {
            let mut out = Vec::new();
            for item in txn.open_table(s.dead())?.iter()? {
                let (k, v) = item?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(out)
        })?;
        raw.into_iter()
            .map(|(seq, v)| {
                let letter = serde_json::from_slice(&v).map_err(|e| {
                    self.corrupt("dead letter", &format!("{sink}/{seq}"), &e.to_string())
                })?;
                Ok((seq, letter))
            })
            .collect()
    }

    pub fn dead_len(&self, sink: &str) -> Result<usize, StoreError> {
        let s = self.sink(sink)?;
        let len = self.inner.engine.read("count dead letters", |txn| {
            Ok(redb::ReadableTableMetadata::len(
                &txn.open_table(s.dead())?,
            )?)
        })?;
        Ok(len as usize)
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
                .map(|(seq, l)| (*seq, l.event.to_outbox()))
                .collect();
            let engine = &self.inner.engine;
            engine.write("replay dead letters", |txn| {
                let mut outbox = txn.open_table(s.outbox())?;
                let mut dead = txn.open_table(s.dead())?;
                for (old_seq, bytes) in &encoded {
                    outbox.insert(engine.next_seq(), bytes.as_slice())?;
                    dead.remove(old_seq)?;
                }
                drop((outbox, dead));
                engine.save_seq(txn)
            })?;
        }
        self.inner.engine.sync()?;
        s.notify.notify_one();
        Ok(letters.len())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use crate::store::testing::{admissions, event, open};
    use crate::store::AttemptState;

    #[tokio::test]
    async fn a_buried_entry_moves_to_the_dead_letters_and_replays_as_the_same_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &["hook"]);
        store
            .admit(&admissions(&["r0", "r1", "r2"], "hook"), &[])
            .await
            .unwrap();
        let entries = store.peek("hook", 10).unwrap();
        let state = AttemptState {
            attempts: 3,
            next_at_ms: 0,
            last_status: Some(410),
            last_error: "gone".into(),
        };
        store
            .record_attempt("hook", entries[1].seq, &state)
            .unwrap();

        store
            .bury("hook", &entries[1], "410 Gone", 3, Some(410))
            .await
            .unwrap();
        assert_eq!(store.outbox_len("hook").unwrap(), 2);
        assert_eq!(store.dead_len("hook").unwrap(), 1);
        assert!(
            store.attempt_states("hook").unwrap().is_empty(),
            "its retry state goes with it"
        );
        let letters = store.dead_letters("hook").unwrap();
        let (seq, letter) = &letters[0];
        assert_eq!(*seq, entries[1].seq);
        assert_eq!(letter.event, event("hook", "X1", "r1"), "body included");
        assert_eq!(
            (letter.reason.as_str(), letter.attempts, letter.last_status),
            ("410 Gone", 3, Some(410))
        );

        // Failed before the cut-off: not replayed.
        let later = store.clock().now() + Duration::hours(1);
        assert_eq!(store.replay_dead("hook", Some(later)).unwrap(), 0);
        assert_eq!(store.dead_len("hook").unwrap(), 1);

        assert_eq!(store.replay_dead("hook", None).unwrap(), 1);
        assert_eq!(store.dead_len("hook").unwrap(), 0);
        let after = store.peek("hook", 10).unwrap();
        let ids: Vec<&str> = after.iter().map(|e| e.event.record_id.as_str()).collect();
        assert_eq!(ids, ["r0", "r2", "r1"], "back at the end of the outbox");
        assert!(after[2].seq > entries[2].seq);
        assert_eq!(
            after[2].event,
            event("hook", "X1", "r1"),
            "same id, same body"
        );
    }

    #[tokio::test]
    async fn replay_takes_only_the_letters_selected() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &["hook"]);
        store
            .admit(&admissions(&["r0", "r1", "r2"], "hook"), &[])
            .await
            .unwrap();
        for entry in store.peek("hook", 10).unwrap() {
            store
                .bury("hook", &entry, "500", 5, Some(500))
                .await
                .unwrap();
        }
        assert_eq!(
            (
                store.outbox_len("hook").unwrap(),
                store.dead_len("hook").unwrap()
            ),
            (0, 3)
        );
        let replayed = store
            .replay_dead_where("hook", |l| l.event.record_id == "r1")
            .unwrap();
        assert_eq!(replayed, 1);
        let back = store.peek("hook", 10).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].event.record_id, "r1");
        let left: Vec<String> = store
            .dead_letters("hook")
            .unwrap()
            .into_iter()
            .map(|(_, l)| l.event.head.record_id)
            .collect();
        assert_eq!(left, ["r0", "r2"]);
    }
}
