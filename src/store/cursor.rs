//! Per-XMID cursors: where each merchant's polling stands (one per cursor key, 16 bytes: the
//! position and the floor, unix milliseconds, big-endian).

use chrono::{DateTime, TimeZone, Utc};

use super::{Store, StoreError};

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
        let raw = self
            .inner
            .cursors
            .get(xmid)
            .map_err(self.io("read cursor"))?;
        raw.map(|v| decode_cursor(&v).ok_or_else(|| self.corrupt("cursor", xmid, "not 16 bytes")))
            .transpose()
    }

    /// Every XMID's cursor.
    pub fn cursors(&self) -> Result<Vec<(String, Cursor)>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.cursors.iter() {
            let (k, v) = item.map_err(self.io("read cursors"))?;
            let xmid = String::from_utf8_lossy(&k).to_string();
            let cursor =
                decode_cursor(&v).ok_or_else(|| self.corrupt("cursor", &xmid, "not 16 bytes"))?;
            out.push((xmid, cursor));
        }
        Ok(out)
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
