//! Checkpoints of long jobs (backfills), keyed by the job: JSON, written durably.

use super::{Store, StoreError, CHECKPOINTS};

impl Store {
    /// A job's checkpoint (JSON), if it has one.
    pub fn checkpoint(&self, job: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let raw = self.value(CHECKPOINTS, job, "read checkpoint")?;
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
        let bytes = text.as_ref().map(|t| t.as_bytes());
        self.put(CHECKPOINTS, job, bytes, "write checkpoint")?;
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
