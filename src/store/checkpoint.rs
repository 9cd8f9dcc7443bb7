//! Checkpoints of long jobs (backfills), keyed by the job: JSON, written durably.

use redb::ReadableTable;

use super::{Store, StoreError, CHECKPOINTS};

impl Store {
    /// A job's checkpoint (JSON), if it has one.
    pub fn checkpoint(&self, job: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let raw = self.inner.engine.read("read checkpoint", |txn| {
            Ok(txn
                .open_table(CHECKPOINTS)?
                .get(job)?
                .map(|v| v.value().to_vec()))
        })?;
        raw.map(|v| {
            serde_json::from_slice(&v).map_err(|e| self.corrupt("checkpoint", job, &e.to_string()))
        })
        .transpose()
    }

    /// Records (`Some`) or clears (`None`) a job's checkpoint, durably.
    pub async fn set_checkpoint(
        &self,
        job: &str,
        value: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        let text = value.map(|v| v.to_string());
        self.inner.engine.write("write checkpoint", |txn| {
            let mut table = txn.open_table(CHECKPOINTS)?;
            match &text {
                Some(t) => table.insert(job, t.as_bytes())?,
                None => table.remove(job)?,
            };
            Ok(())
        })?;
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::open;

    #[tokio::test]
    async fn a_checkpoint_is_kept_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let value = serde_json::json!({"xmid": "X1", "done_until": "2026-01-01T00:00:00Z"});
        {
            let store = open(dir.path(), &[]);
            assert_eq!(store.checkpoint("backfill/X1").unwrap(), None);
            store
                .set_checkpoint("backfill/X1", Some(&value))
                .await
                .unwrap();
        }
        let store = open(dir.path(), &[]);
        assert_eq!(store.checkpoint("backfill/X1").unwrap(), Some(value));
        store.set_checkpoint("backfill/X1", None).await.unwrap();
        assert_eq!(store.checkpoint("backfill/X1").unwrap(), None);
    }
}
