//! The record ids admitted, with a retention: `seen` (id -> when, unix ms) and its index by
//! time `seen_by_time` (when, big-endian, ++ id), which `prune_seen` walks to forget the oldest.

use chrono::{DateTime, Utc};
use redb::{ReadableTable, ReadableTableMetadata, Table};

use super::{Store, StoreError, SEEN, SEEN_BY_TIME};

/// Ids forgotten per transaction by `prune_seen`: a retention of days can expire millions at
/// once, and one transaction of them all would hold the writer for seconds.
const PRUNE_CHUNK: usize = 10_000;

impl Store {
    /// Record ids remembered (0 if the store cannot be read).
    pub fn seen_len(&self) -> usize {
        self.inner
            .engine
            .read("count seen", |txn| Ok(txn.open_table(SEEN)?.len()?))
            .map_or(0, |n| n as usize)
    }

    /// Whether a record id was admitted (and not yet pruned).
    pub fn is_seen(&self, record_id: &str) -> Result<bool, StoreError> {
        self.inner.engine.read("read seen", |txn| {
            Ok(txn.open_table(SEEN)?.get(record_id)?.is_some())
        })
    }

    /// Forgets ids admitted before `before`. Returns how many.
    pub fn prune_seen(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let end = before.timestamp_millis().to_be_bytes();
        let mut pruned = 0;
        loop {
            let n = self.inner.engine.write("prune seen", |txn| {
                let mut seen = txn.open_table(SEEN)?;
                let mut by_time = txn.open_table(SEEN_BY_TIME)?;
                let mut keys = Vec::new();
                for item in by_time.range(..end.as_slice())?.take(PRUNE_CHUNK) {
                    keys.push(item?.0.value().to_vec());
                }
                for key in &keys {
                    if let Ok(id) = std::str::from_utf8(&key[8..]) {
                        seen.remove(id)?;
                    }
                    by_time.remove(key.as_slice())?;
                }
                Ok(keys.len())
            })?;
            pruned += n;
            if n < PRUNE_CHUNK {
                return Ok(pruned);
            }
        }
    }
}

/// Marks `id` seen at `ms` (unix milliseconds), inside a write transaction, unless it is seen
/// already. Returns whether it was new. The two tables are written together: `prune_seen` finds
/// what to forget through the index alone.
pub(super) fn mark_seen(
    seen: &mut Table<&str, i64>,
    by_time: &mut Table<&[u8], ()>,
    id: &str,
    ms: i64,
) -> Result<bool, redb::Error> {
    // Insert first: most ids are new, and this walks the tree once where a lookup before every
    // insert would walk it twice.
    let previous = seen.insert(id, ms)?.map(|old| old.value());
    if let Some(first) = previous {
        // Seen already: keep when it was first admitted (the retention counts from it).
        seen.insert(id, first)?;
        return Ok(false);
    }
    by_time.insert(time_key(ms, id).as_slice(), ())?;
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
    use redb::ReadableTableMetadata;

    use crate::store::testing::{admissions, open};
    use crate::store::{Store, SEEN, SEEN_BY_TIME};

    fn by_time_len(store: &Store) -> u64 {
        store
            .inner
            .engine
            .read("test", |txn| Ok(txn.open_table(SEEN_BY_TIME)?.len()?))
            .unwrap()
    }

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
        assert_eq!(by_time_len(&store), 4, "the index goes with them");
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
        assert_eq!((store.seen_len(), by_time_len(&store)), (1, 1));
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
        store
            .inner
            .engine
            .write("test", |txn| {
                txn.open_table(SEEN)?.remove("a")?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.prune_seen(t0 + Duration::seconds(1)).unwrap(), 2);
        assert_eq!((store.seen_len(), by_time_len(&store)), (0, 0));
    }
}
