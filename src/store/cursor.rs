//! Per-XMID cursors: where each merchant's polling stands (one per cursor key, 16 bytes: the
//! position and the floor, unix milliseconds, big-endian).

use chrono::{DateTime, TimeZone, Utc};

use redb::ReadableTable;

use super::{Store, StoreError, CURSORS};

/// Where an XMID's polling stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The end of the last completed window: everything before it (less the look-back) is
    /// admitted.
    pub position: DateTime<Utc>,
    /// Nothing before this instant is ever fetched (the configured start when the XMID was
    /// first polled).
    pub floor: DateTime<Utc>,
}

impl Store {
    pub fn cursor(&self, xmid: &str) -> Result<Option<Cursor>, StoreError> {
        let raw = self.value(CURSORS, xmid, "read cursor")?;
        raw.map(|v| decode_cursor(&v).ok_or_else(|| self.corrupt("cursor", xmid, "not 16 bytes")))
            .transpose()
    }

    /// The cursors of `keys`, in their order, read in one transaction.
    pub fn cursors_of(&self, keys: &[String]) -> Result<Vec<Option<Cursor>>, StoreError> {
        let raw = self.inner.engine.read("read cursors", |txn| {
            let table = txn.open_table(CURSORS)?;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(table.get(key.as_str())?.map(|v| v.value().to_vec()));
            }
            Ok(out)
        })?;
        raw.into_iter()
            .zip(keys)
            .map(|(v, key)| {
                v.map(|v| {
                    decode_cursor(&v).ok_or_else(|| self.corrupt("cursor", key, "not 16 bytes"))
                })
                .transpose()
            })
            .collect()
    }

    /// Every XMID's cursor.
    pub fn cursors(&self) -> Result<Vec<(String, Cursor)>, StoreError> {
        let raw = self.inner.engine.read("read cursors", |txn| {
            let mut out = Vec::new();
            for item in txn.open_table(CURSORS)?.iter()? {
                let (k, v) = item?;
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        })?;
        raw.into_iter()
            .map(|(xmid, v)| {
                let cursor = decode_cursor(&v)
                    .ok_or_else(|| self.corrupt("cursor", &xmid, "not 16 bytes"))?;
                Ok((xmid, cursor))
            })
            .collect()
    }
}

pub(super) fn encode_cursor(cursor: &Cursor) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&cursor.position.timestamp_millis().to_be_bytes());
    out[8..].copy_from_slice(&cursor.floor.timestamp_millis().to_be_bytes());
    out
}

pub(super) fn decode_cursor(bytes: &[u8]) -> Option<Cursor> {
    if bytes.len() != 16 {
        return None;
    }
    let ms = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or_default());
    Some(Cursor {
        position: Utc.timestamp_millis_opt(ms(&bytes[..8])).single()?,
        floor: Utc.timestamp_millis_opt(ms(&bytes[8..])).single()?,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::*;
    use crate::store::testing::{admissions, open};

    #[tokio::test]
    async fn cursors_round_trip_move_with_admissions_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let at = |minutes, floor| Cursor {
            position: t0 + Duration::minutes(minutes) + Duration::milliseconds(123),
            floor: t0 - Duration::days(floor),
        };
        {
            let store = open(dir.path(), &["out"]);
            assert_eq!(store.cursor("X1").unwrap(), None);
            store
                .admit(&[], &[("X1".into(), at(5, 1)), ("X2".into(), at(7, 2))])
                .await
                .unwrap();
            assert_eq!(store.cursor("X1").unwrap(), Some(at(5, 1)));
            assert_eq!(store.cursor("X2").unwrap(), Some(at(7, 2)));
            // With the records of the window, in the same transaction.
            store
                .admit(&admissions(&["r1"], "out"), &[("X1".into(), at(10, 1))])
                .await
                .unwrap();
            assert_eq!(store.cursor("X1").unwrap(), Some(at(10, 1)));
        }
        let store = open(dir.path(), &["out"]);
        assert_eq!(
            store.cursors().unwrap(),
            [("X1".to_string(), at(10, 1)), ("X2".to_string(), at(7, 2))]
        );
        assert_eq!(store.cursor("X3").unwrap(), None);
    }

    #[test]
    fn a_cursor_is_16_bytes_and_anything_else_is_refused() {
        let t = Utc.timestamp_millis_opt(1_764_000_000_123).unwrap();
        let cursor = Cursor {
            position: t,
            floor: t - Duration::days(30),
        };
        assert_eq!(decode_cursor(&encode_cursor(&cursor)), Some(cursor));
        assert_eq!(decode_cursor(&encode_cursor(&cursor)[..15]), None);
    }

    #[test]
    fn an_unreadable_cursor_is_an_error_not_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &["out"]);
        store
            .inner
            .engine
            .write("test", |txn| {
                txn.open_table(CURSORS)?.insert("X1", b"short".as_slice())?;
                Ok(())
            })
            .unwrap();
        assert!(matches!(
            store.cursor("X1"),
            Err(StoreError::Corrupt { what: "cursor", .. })
        ));
        assert!(store.cursors().is_err());
    }
}
