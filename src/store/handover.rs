//! What a cluster needs of the store: a watermark of admissions, which merchants still have
//! events waiting for delivery, and adopting the state another instance published.

use std::collections::HashMap;

use redb::ReadableTable;

use super::cursor::{decode_cursor, encode_cursor};
use super::seen::mark_seen;
use super::{Cursor, Store, StoreError, CURSORS, SEEN, SEEN_BY_TIME};

impl Store {
    /// A number above every outbox entry admitted so far (and below every later one).
    pub fn watermark(&self) -> Result<u64, StoreError> {
        self.inner.engine.watermark()
    }

    /// For each XMID with events still waiting in an outbox, the oldest such entry's number;
    /// `None` if the outboxes hold more than `limit` entries (too many to look through).
    pub fn waiting_by_xmid(
        &self,
        limit: usize,
    ) -> Result<Option<HashMap<String, u64>>, StoreError> {
        let engine = &self.inner.engine;
        let found = engine.read("read outbox", |txn| {
            let mut oldest: HashMap<String, u64> = HashMap::new();
            let mut seen = 0;
            for (name, sink) in &self.inner.outboxes {
                for item in txn.open_table(sink.outbox())?.iter()? {
                    seen += 1;
                    if seen > limit {
                        return Ok(None);
                    }
                    let (key, value) = item?;
                    let seq = key.value();
                    if engine.removed(&sink.outbox, seq) {
                        continue;
                    }
                    let Some(xmid) = xmid_of(value.value()) else {
                        return Ok(Some(Err(name.clone())));
                    };
                    let slot = oldest.entry(xmid).or_insert(seq);
                    *slot = (*slot).min(seq);
                }
            }
            Ok(Some(Ok(oldest)))
        })?;
        found
            .map(|r| {
                r.map_err(|sink| self.corrupt("outbox entry", &sink, "no readable header line"))
            })
            .transpose()
    }

    /// Takes over what another instance published for a cursor key: the cursor, if it is ahead
    /// of this store's, and the record ids it had admitted (seen-set keys), so the look-back
    /// window it re-reads is not sent again. Returns whether the cursor moved.
    pub fn adopt(&self, key: &str, cursor: Cursor, seen: &[String]) -> Result<bool, StoreError> {
        Ok(self.adopt_all(&[(key, cursor, seen)])? == 1)
    }

    /// [`Store::adopt`] for many, in one transaction; returns how many cursors moved.
    pub fn adopt_all(&self, states: &[(&str, Cursor, &[String])]) -> Result<usize, StoreError> {
        let now = self.clock().now().timestamp_millis();
        self.inner.engine.write("adopt state", |txn| {
            let mut seen_table = txn.open_table(SEEN)?;
            let mut by_time = txn.open_table(SEEN_BY_TIME)?;
            let mut cursors = txn.open_table(CURSORS)?;
            let mut moved = 0;
            for (key, cursor, seen) in states {
                for id in seen.iter() {
                    mark_seen(&mut seen_table, &mut by_time, id, now)?;
                }
                let local = cursors.get(*key)?.and_then(|v| decode_cursor(v.value()));
                // A cursor only set up here (never polled: position at its floor) yields to the
                // published one, even an older one: that is where delivery really stands.
                let never_polled = local.is_some_and(|l| l.position == l.floor);
                if never_polled || local.is_none_or(|l| l.position < cursor.position) {
                    let floor = match local {
                        Some(l) if !never_polled => l.floor.min(cursor.floor),
                        _ => cursor.floor,
                    };
                    let merged = Cursor {
                        position: cursor.position,
                        floor,
                    };
                    cursors.insert(*key, encode_cursor(&merged).as_slice())?;
                    moved += 1;
                }
            }
            Ok(moved)
        })
    }
}

/// The XMID of an outbox entry, from its header line alone (the body can be kilobytes).
fn xmid_of(entry: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        xmid: String,
    }
    let end = entry.iter().position(|b| *b == b'\n')?;
    serde_json::from_slice::<Head>(&entry[..end])
        .ok()
        .map(|h| h.xmid)
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::config::StoreConfig;
    use crate::event::Event;
    use crate::store::Admission;

    fn event(xmid: &str, id: &str) -> Event {
        let head = crate::event::Head {
            id: format!("evt_{id}"),
            event_type: "authorization.created".into(),
            route: "all".into(),
            resource: "authorizations".into(),
            sink: "out".into(),
            xmid: xmid.into(),
            record_id: id.into(),
            occurred_at: None,
            fetched_at_ms: 0,
            traceparent: None,
        };
        Event::new(head, "{}")
    }

    #[tokio::test]
    async fn adopting_moves_cursors_forward_only_and_remembers_ids() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            path: dir.path().join("store"),
            ..Default::default()
        };
        let store = Store::open(&config, &["out".to_string()]).unwrap();
        let now = store.clock().now();
        let at = |minutes| Cursor {
            position: now - Duration::minutes(minutes),
            floor: now - Duration::minutes(60),
        };
        assert!(store.adopt("X1", at(5), &["r1".into()]).unwrap());
        assert!(
            !store.adopt("X1", at(10), &["r2".into()]).unwrap(),
            "never back"
        );
        assert_eq!(
            store
                .cursor("X1")
                .unwrap()
                .unwrap()
                .position
                .timestamp_millis(),
            at(5).position.timestamp_millis()
        );
        assert!(store.is_seen("r1").unwrap() && store.is_seen("r2").unwrap());

        // Waiting entries, per merchant, against a watermark.
        let before = store.watermark().unwrap();
        let admit = |xmid: &str, id: &str| Admission {
            record_id: id.into(),
            xmid: xmid.into(),
            events: vec![event(xmid, id)],
        };
        store
            .admit(
                &[admit("X1", "a"), admit("X2", "b"), admit("X1", "r1")],
                &[],
            )
            .await
            .unwrap();
        let after = store.watermark().unwrap();
        let waiting = store.waiting_by_xmid(100).unwrap().unwrap();
        assert_eq!(waiting.len(), 2, "r1 was adopted as seen: not enqueued");
        assert!(waiting.values().all(|seq| *seq > before && *seq < after));
        assert_eq!(
            store.waiting_by_xmid(1).unwrap(),
            None,
            "too many to look through"
        );
    }
}
