//! What the store's unit tests (and the sinks') share: a store in a temporary directory, and
//! events to admit.

use std::path::Path;

use super::{Admission, Store};
use crate::config::StoreConfig;
use crate::route::Event;

/// A store under `dir` with one outbox per sink in `sinks`.
pub(crate) fn open(dir: &Path, sinks: &[&str]) -> Store {
    let config = StoreConfig {
        path: dir.join("store"),
        ..StoreConfig::default()
    };
    let sinks: Vec<String> = sinks.iter().map(|s| s.to_string()).collect();
    open_config(&config, &sinks)
}

/// `Store::open`, waiting while a store just dropped still holds sled's lock: its flusher
/// thread lets go of the database at its next tick (as `Store::snapshot_closed` waits too).
pub(super) fn open_config(config: &StoreConfig, sinks: &[String]) -> Store {
    let started = std::time::Instant::now();
    loop {
        match Store::open(config, sinks) {
            Ok(store) => return store,
            Err(super::StoreError::Open { detail, .. })
                if detail.contains("in use") && started.elapsed().as_secs() < 10 =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("cannot open the store: {e}"),
        }
    }
}

/// The event of record `record_id` for `sink`, with a body of its own.
pub(crate) fn event(sink: &str, xmid: &str, record_id: &str) -> Event {
    Event {
        id: format!("evt_{sink}_{record_id}"),
        event_type: "authorization.created".into(),
        route: "all".into(),
        resource: "authorizations".into(),
        sink: sink.into(),
        xmid: xmid.into(),
        record_id: record_id.into(),
        occurred_at: None,
        fetched_at_ms: 1_764_000_000_000,
        body: format!("{{\"data\":{{\"id\":\"{record_id}\"}}}}").into(),
    }
}

/// Record `record_id` of merchant `X1`, with one event for each sink in `sinks`.
pub(super) fn admission(record_id: &str, sinks: &[&str]) -> Admission {
    Admission {
        record_id: record_id.into(),
        xmid: "X1".into(),
        events: sinks.iter().map(|s| event(s, "X1", record_id)).collect(),
    }
}

/// Records `ids`, one event each for `sink`.
pub(super) fn admissions(ids: &[&str], sink: &str) -> Vec<Admission> {
    ids.iter().map(|id| admission(id, &[sink])).collect()
}
