//! The record ids admitted, with a retention: `seen` (id -> when, unix ms big-endian) and its
//! index by time `seen_by_time` (when ++ id), which `prune_seen` walks to forget the oldest.

use chrono::{DateTime, Utc};
use sled::transaction::{TransactionalTree, UnabortableTransactionError};

use super::{Store, StoreError};

impl Store {
    /// Record ids remembered (counts them: O(n)).
    pub fn seen_len(&self) -> usize {
        self.inner.seen.len()
    }

    /// Whether a record id was admitted (and not yet pruned).
    pub fn is_seen(&self, record_id: &str) -> Result<bool, StoreError> {
        self.inner
            .seen
            .contains_key(record_id)
            .map_err(self.io("read seen"))
    }

    /// Forgets ids admitted before `before`. Returns how many.
    pub fn prune_seen(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let end = before.timestamp_millis().to_be_bytes();
        let mut pruned = 0;
        for item in self.inner.seen_by_time.range(..end.as_slice()) {
            let (key, _) = item.map_err(self.io("read seen_by_time"))?;
            // `seen` first: a crash in between leaves an index entry, removed next time.
            self.inner
                .seen
                .remove(&key[8..])
                .map_err(self.io("prune seen"))?;
            self.inner
                .seen_by_time
                .remove(&key)
                .map_err(self.io("prune seen"))?;
            pruned += 1;
        }
        Ok(pruned)
    }
}

/// Marks `id` seen at `ms` (unix milliseconds), inside a transaction over `seen` and
/// `seen_by_time`, unless it is seen already. Returns whether it was new. The two trees are
/// written together: `prune_seen` finds what to forget through the index alone.
pub(super) fn mark_seen(
    seen: &TransactionalTree,
    by_time: &TransactionalTree,
    id: &str,
    ms: i64,
) -> Result<bool, UnabortableTransactionError> {
    if seen.get(id.as_bytes())?.is_some() {
        return Ok(false);
    }
    seen.insert(id.as_bytes(), &ms.to_be_bytes())?;
    by_time.insert(time_key(ms, id), &[])?;
    Ok(true)
}

/// The `seen_by_time` key of an id admitted at `ms`: the time first (big-endian, so keys sort by
/// it), then the id.
fn time_key(ms: i64, id: &str) -> Vec<u8> {
    let mut key = ms.to_be_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use crate::store::testing::{admissions, open};

    #[tokio::test]
    async fn an_id_is_admitted_once_and_refused_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &["out"]);

        let first = store
            .admit(&admissions(&["a", "b"], "out"), &[])
            .await
            .unwrap();
        assert_eq!((first.new, first.duplicate), (2, 0));
        assert_eq!(
            first.enqueued.into_iter().collect::<Vec<_>>(),
            [(("out".to_string(), "authorization.created".to_string()), 2)]
        );

        let again = store
            .admit(&admissions(&["b", "c"], "out"), &[])
            .await
            .unwrap();
        assert_eq!(
            (again.new, again.duplicate),
            (1, 1),
            "b was admitted before"
        );
        assert_eq!(again.enqueued.values().sum::<usize>(), 1, "only c enqueued");

        let twice = store
            .admit(&admissions(&["d", "d"], "out"), &[])
            .await
            .unwrap();
        assert_eq!(
            (twice.new, twice.duplicate),
            (1, 1),
            "twice in one batch: once"
        );

        assert_eq!(
            store.outbox_len("out").unwrap(),
            4,
            "a, b, c, d: one entry each"
        );
        assert_eq!(store.seen_len(), 4);
        for id in ["a", "b", "c", "d"] {
            assert!(store.is_seen(id).unwrap(), "{id} is seen");
        }
        assert!(!store.is_seen("e").unwrap());
    }

    #[tokio::test]
    async fn prune_seen_forgets_ids_older_than_the_retention_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &["out"]);
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let hours = |h| t0 + Duration::hours(h);
        for (ids, at) in [
            (&["old1", "old2"][..], hours(0)),
            (&["edge"][..], hours(1)),
            (&["new1", "new2", "new3"][..], hours(2)),
        ] {
            let outcome = store
                .admit_at(&admissions(ids, "out"), &[], at)
                .await
                .unwrap();
            assert_eq!(outcome.new, ids.len());
        }
        assert_eq!(store.seen_len(), 6);
        let seen = |ids: &[&str]| {
            ids.iter()
                .map(|id| store.is_seen(id).unwrap())
                .collect::<Vec<_>>()
        };

        // A retention that ends at hour 1: the two ids of hour 0 go, the rest stay (an id
        // admitted exactly at the cut is not older than it).
        assert_eq!(store.prune_seen(hours(1)).unwrap(), 2);
        assert_eq!(store.seen_len(), 4);
        assert_eq!(
            store.inner.seen_by_time.len(),
            4,
            "the index goes with them"
        );
        assert_eq!(seen(&["old1", "old2"]), [false, false]);
        assert_eq!(seen(&["edge", "new1", "new2", "new3"]), [true; 4]);

        // Nothing more is older than that.
        assert_eq!(store.prune_seen(hours(1)).unwrap(), 0);
        assert_eq!(store.seen_len(), 4);

        // Forgotten means admitted again as new; those still remembered stay duplicates.
        let back = store
            .admit_at(&admissions(&["old1", "new1"], "out"), &[], hours(3))
            .await
            .unwrap();
        assert_eq!((back.new, back.duplicate), (1, 1));

        // A minute past hour 2: edge and the ids of hour 2 go, old1 (admitted at hour 3) stays.
        assert_eq!(
            store.prune_seen(hours(2) + Duration::minutes(1)).unwrap(),
            4
        );
        assert_eq!(seen(&["edge", "new1", "new2", "new3"]), [false; 4]);
        assert!(store.is_seen("old1").unwrap());
        assert_eq!((store.seen_len(), store.inner.seen_by_time.len()), (1, 1));
    }

    #[tokio::test]
    async fn prune_seen_removes_an_index_entry_left_without_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &["out"]);
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        store
            .admit_at(&admissions(&["a", "b"], "out"), &[], t0)
            .await
            .unwrap();
        // What a crash between the two removals of a prune leaves.
        store.inner.seen.remove("a").unwrap();
        assert_eq!(store.prune_seen(t0 + Duration::seconds(1)).unwrap(), 2);
        assert_eq!((store.seen_len(), store.inner.seen_by_time.len()), (0, 0));
    }
}
