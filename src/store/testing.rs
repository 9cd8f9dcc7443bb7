//! What the store's unit tests (and the sinks') share: a store in a temporary directory, and
//! events to admit.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redb::BackendError;

use super::{Admission, Store};
use crate::config::StoreConfig;
use crate::event::{Event, Head};

/// A store under `dir` with one outbox per sink in `sinks`.
pub(crate) fn open(dir: &Path, sinks: &[&str]) -> Store {
    let config = StoreConfig {
        path: dir.join("store"),
        ..StoreConfig::default()
    };
    let sinks: Vec<String> = sinks.iter().map(|s| s.to_string()).collect();
    open_config(&config, &sinks)
}

/// `Store::open`, waiting while a store just dropped is still open: its flusher thread may hold
/// the database for the sync it is doing.
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
    let head = Head {
        id: format!("evt_{sink}_{record_id}"),
        event_type: "authorization.created".into(),
        route: "all".into(),
        resource: "authorizations".into(),
        sink: sink.into(),
        xmid: xmid.into(),
        record_id: record_id.into(),
        occurred_at: None,
        fetched_at_ms: 1_764_000_000_000,
        traceparent: None,
    };
    Event::new(head, &format!("{{\"id\":\"{record_id}\"}}"))
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

/// A disk that can lose power: what the store's database wrote reaches it only when synced
/// (fsync), as on a real disk whose cache is lost in a power cut. Each [`PowerCutDisk::boot`]
/// starts a "machine" on what the disk holds; [`Machine::cut`] ends it, unsynced writes lost.
#[derive(Default)]
pub(super) struct PowerCutDisk {
    synced: Arc<Mutex<Vec<u8>>>,
}

pub(super) struct Machine {
    powered: Arc<AtomicBool>,
}

impl Machine {
    /// The power cut: from now on nothing this machine writes reaches the disk.
    pub(super) fn cut(&self) {
        self.powered.store(false, Ordering::SeqCst);
    }
}

impl PowerCutDisk {
    /// A store opened on what the disk holds.
    pub(super) fn boot(&self, config: &StoreConfig, sinks: &[&str]) -> (Store, Machine) {
        let powered = Arc::new(AtomicBool::new(true));
        let (synced, on) = (self.synced.clone(), powered.clone());
        let open: super::engine::Opener = Box::new(move || {
            let backend = Volatile {
                cache: RwLock::new(synced.lock().unwrap().clone()),
                synced: synced.clone(),
                powered: on.clone(),
            };
            redb::Builder::new()
                .create_with_backend(backend)
                .map_err(|e| e.to_string())
        });
        let engine = super::engine::Engine::open_with(&config.path, open).unwrap();
        let sinks: Vec<String> = sinks.iter().map(|s| s.to_string()).collect();
        let store = Store::open_engine(engine, config, &sinks, mxc::SystemClock::shared()).unwrap();
        (store, Machine { powered })
    }
}

/// The machine's view of the disk: its page cache (every write) over what was synced.
#[derive(Debug)]
struct Volatile {
    cache: RwLock<Vec<u8>>,
    synced: Arc<Mutex<Vec<u8>>>,
    powered: Arc<AtomicBool>,
}

impl Volatile {
    fn powered(&self) -> Result<(), BackendError> {
        if self.powered.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(BackendError::Io(std::io::Error::other("the power is off")))
        }
    }
}

impl redb::StorageBackend for Volatile {
    fn len(&self) -> Result<u64, BackendError> {
        Ok(self.cache.read().unwrap().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendError> {
        let cache = self.cache.read().unwrap();
        let start = offset as usize;
        let end = start + out.len();
        if end > cache.len() {
            return Err(BackendError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        out.copy_from_slice(&cache[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), BackendError> {
        self.powered()?;
        self.cache.write().unwrap().resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendError> {
        self.powered()?;
        *self.synced.lock().unwrap() = self.cache.read().unwrap().clone();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        self.powered()?;
        let mut cache = self.cache.write().unwrap();
        let start = offset as usize;
        if cache.len() < start + data.len() {
            cache.resize(start + data.len(), 0);
        }
        cache[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}
