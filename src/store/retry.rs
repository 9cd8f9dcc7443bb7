//! The retry state of failing outbox entries, one table per sink, beside the outbox.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// Where a failing outbox entry stands: kept beside the entry so that a restart resumes its
/// retry schedule instead of starting it over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptState {
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (unix milliseconds).
    pub next_at_ms: i64,
    pub last_status: Option<u16>,
    /// What went wrong last, for `state` and the dead letter.
    pub last_error: String,
}

impl Store {
    /// Records a failed attempt of an entry.
    pub fn record_attempt(
        &self,
        sink: &str,
        seq: u64,
        state: &AttemptState,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state)
            .map_err(|e| self.corrupt("retry state", &seq.to_string(), &e.to_string()))?;
        let s = self.sink(sink)?;
        self.inner.engine.write("write retry state", |txn| {
            txn.open_table(s.attempts())?
                .insert(seq, bytes.as_slice())?;
            Ok(())
        })
    }

    /// The retry state of every failing entry still in the outbox; stale states are removed.
    pub fn attempt_states(&self, sink: &str) -> Result<Vec<(u64, AttemptState)>, StoreError> {
        let s = self.sink(sink)?;
        let engine = &self.inner.engine;
        let (live, stale) = engine.read("read retry state", |txn| {
            let outbox = txn.open_table(s.outbox())?;
            let (mut live, mut stale) = (Vec::new(), Vec::new());
            for item in txn.open_table(s.attempts())?.iter()? {
                let (k, v) = item?;
                let seq = k.value();
                if outbox.get(seq)?.is_none() || engine.removed(&s.outbox, seq) {
                    stale.push(seq);
                } else {
                    live.push((seq, v.value().to_vec()));
                }
            }
            Ok((live, stale))
        })?;
        if !stale.is_empty() {
            engine.write("remove retry state", |txn| {
                let mut attempts = txn.open_table(s.attempts())?;
                for seq in &stale {
                    attempts.remove(seq)?;
                }
                Ok(())
            })?;
        }
        live.into_iter()
            .map(|(seq, v)| {
                let state = serde_json::from_slice(&v).map_err(|e| {
                    self.corrupt("retry state", &format!("{sink}/{seq}"), &e.to_string())
                })?;
                Ok((seq, state))
            })
            .collect()
    }

    /// Entries with retry state (stale ones included until `attempt_states` drops them).
    #[cfg(test)]
    fn attempts_len(&self, sink: &str) -> u64 {
        let s = self.sink(sink).unwrap();
        self.inner
            .engine
            .read("test", |txn| {
                Ok(redb::ReadableTableMetadata::len(
                    &txn.open_table(s.attempts())?,
                )?)
            })
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{admissions, open};

    fn failed(attempts: u32) -> AttemptState {
        AttemptState {
            attempts,
            next_at_ms: 1_764_000_000_000 + i64::from(attempts),
            last_status: Some(503),
            last_error: "503 Service Unavailable".into(),
        }
    }

    #[tokio::test]
    async fn retry_state_lives_as_long_as_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &["hook"]);
        store
            .admit(&admissions(&["r0", "r1"], "hook"), &[])
            .await
            .unwrap();
        let seqs: Vec<u64> = store
            .peek("hook", 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        store.record_attempt("hook", seqs[0], &failed(1)).unwrap();
        store.record_attempt("hook", seqs[0], &failed(2)).unwrap();
        store.record_attempt("hook", seqs[1], &failed(1)).unwrap();
        assert_eq!(
            store.attempt_states("hook").unwrap(),
            [(seqs[0], failed(2)), (seqs[1], failed(1))]
        );

        store.remove("hook", &seqs[..1]).await.unwrap();
        assert_eq!(
            store.attempt_states("hook").unwrap(),
            [(seqs[1], failed(1))]
        );

        // A state whose entry is gone (a crash between the two removals) is dropped when read.
        store
            .record_attempt("hook", seqs[0] + 1000, &failed(1))
            .unwrap();
        assert_eq!(store.attempt_states("hook").unwrap().len(), 1);
        assert_eq!(store.attempts_len("hook"), 1);
    }
}
