//! The local store (sled): seen record ids with a retention, per-XMID cursors, one outbox per
//! sink with its dead letters and the retry state of its failing entries, and the state of
//! webhook endpoints (disabled or not).
//!
//! `admit` is the heart of the guarantees: in one transaction, every record not seen before is
//! marked seen *and* enqueued for each sink its routes select, and the cursors move. A record
//! is never marked seen without its outbox entries, and a cursor never moves past records that
//! were not admitted.

mod bodies;
mod controls;
mod handover;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Transactional, Tree};
use tokio::sync::Notify;

use crate::config::{Durability, StoreConfig};
use crate::route::Event;
use bodies::BodyRef;

const SEEN: &str = "seen";
const SEEN_BY_TIME: &str = "seen_by_time";
const CURSORS: &str = "cursors";
const OUTBOX_PREFIX: &str = "outbox/";
const DEAD_PREFIX: &str = "dead/";
const ATTEMPTS_PREFIX: &str = "attempts/";
const ENDPOINTS: &str = "endpoints";
/// Checkpoints of long jobs (backfills), keyed by the job.
const CHECKPOINTS: &str = "checkpoints";
const CONTROLS: &str = "controls";

/// Flushes waited for, process-wide: one at a time. With 10,000 pollers of one XMID each,
/// every poll ends in a flush; each would otherwise hold a blocking thread while it waits for
/// the store's gate. One at a time keeps them waiting here instead, and a flush that waited
/// finds its writes durable already and returns at once (a group commit).
static FLUSHES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("store {path}: {operation} failed: {source}")]
    Io {
        path: PathBuf,
        operation: &'static str,
        source: sled::Error,
    },
    #[error("store {path}: unreadable {what} entry {key}: {detail}")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        key: String,
        detail: String,
    },
    #[error("store {path}: {operation} failed: {source}")]
    Disk {
        path: PathBuf,
        operation: &'static str,
        source: std::io::Error,
    },
    #[error("store {path}: flush failed: {detail}")]
    Flush { path: PathBuf, detail: String },
    #[error("no sink named {0:?} in the store")]
    UnknownSink(String),
    #[error("store {path}: the disk is nearly full ({free_mib} MiB free, store.min_free_mib is {min_free_mib})")]
    DiskFull {
        path: PathBuf,
        free_mib: u64,
        min_free_mib: u64,
    },
}

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

/// A record to admit: its id and the events its routes made of it.
#[derive(Debug, Clone)]
pub struct Admission {
    pub record_id: String,
    pub xmid: String,
    pub events: Vec<Event>,
}

/// What one `admit` did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AdmitOutcome {
    /// Records seen for the first time (and enqueued).
    pub new: usize,
    /// Records already admitted before.
    pub duplicate: usize,
    /// Outbox entries written, per sink and event type.
    pub enqueued: BTreeMap<(String, String), usize>,
}

/// An outbox entry: its position in the sink's queue and the event.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub event: Event,
}

/// An event a sink refused for good, with why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub event: Event,
    pub reason: String,
    pub failed_at: DateTime<Utc>,
    #[serde(default)]
    pub attempts: u32,
    /// The HTTP status of the last attempt, for sinks that speak HTTP.
    #[serde(default)]
    pub last_status: Option<u16>,
}

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

/// A webhook endpoint switched off (by a `410 Gone`, or after failing too long). Its events
/// wait in the outbox until it is enabled again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisabledEndpoint {
    pub disabled_at: DateTime<Utc>,
    pub reason: String,
    /// The URL it had (as displayed: no query, no credentials); a new URL in the
    /// configuration enables the endpoint again.
    pub url: String,
}

/// The open store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: sled::Db,
    /// Event bodies, outside sled (see `bodies`); shared by reconfigured views.
    disk: Arc<Disk>,
    durability: Durability,
    min_free_mib: u64,
    seen: Tree,
    seen_by_time: Tree,
    cursors: Tree,
    endpoints: Tree,
    checkpoints: Tree,
    /// Operators' pauses and endpoints' failing periods (see `controls`).
    controls: Tree,
    outboxes: BTreeMap<String, Sink>,
}

/// sled and the body segments, flushed together: bodies first, so that no pointer reaches
/// the disk before its body.
struct Disk {
    db: sled::Db,
    bodies: bodies::Bodies,
    /// Multi-key writes (transactions, batches) hold it shared, a flush exclusively. sled can
    /// deadlock when a flush runs while a transaction waits for its global write lock (the
    /// flush holds it shared and waits for its log, which waits behind the transaction).
    gate: std::sync::RwLock<()>,
    /// sled's first failed write, once it happened: sled keeps that error and refuses every
    /// later write until the store is opened again (seen with a full disk: space freed, writes
    /// still refused). The service stops on it, for its supervisor to start it again.
    failed: std::sync::OnceLock<String>,
}

impl Disk {
    /// Bodies, then sled, on disk; then the segments whose last entries this flush removed
    /// for good are deleted. Blocking.
    fn flush(&self) -> Result<(), String> {
        let doomed = self.bodies.doomed().map_err(|e| e.to_string())?;
        self.bodies
            .sync()
            .map_err(|e| format!("sync event bodies: {e}"))?;
        {
            let _flushing = self.gate.write().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = self.db.flush() {
                let detail = e.to_string();
                let _ = self.failed.set(detail.clone());
                return Err(detail);
            }
        }
        self.bodies
            .delete(doomed)
            .map_err(|e| format!("delete delivered body segments: {e}"))
    }

    /// Runs a multi-key write; never alongside a flush (see `gate`).
    fn write<T>(&self, write: impl FnOnce() -> T) -> T {
        let _writing = self.gate.read().unwrap_or_else(|e| e.into_inner());
        write()
    }
}

/// Flushes every `every` until the store is closed (the last `Store` dropped): beside sled's
/// own flusher, for the body segments — a segment no entry points into is deleted only after
/// the flush that makes those entries' removal durable.
fn spawn_flusher(disk: &Arc<Disk>, every: std::time::Duration, path: &Path) {
    let disk = Arc::downgrade(disk);
    let path = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("store flusher".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(disk) = disk.upgrade() else {
                return;
            };
            if let Err(e) = disk.flush() {
                tracing::error!(store = %path.display(), error = %e, "periodic store flush failed");
                if disk.failed.get().is_some() {
                    // sled refuses every write from now on: no point logging it twice a second.
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the store flusher: writes reach the disk at each batch only");
    }
}

struct Sink {
    outbox: Tree,
    dead: Tree,
    /// Retry state of entries that failed at least once (sinks that retry per entry).
    attempts: Tree,
    /// Woken when entries are enqueued, so the delivery worker need not poll.
    notify: Arc<Notify>,
}

impl Store {
    /// Opens (or creates) the store with one outbox per sink in `sinks`. Outboxes of sinks no
    /// longer configured are kept as they are, and reported by [`Store::orphan_outboxes`].
    pub fn open(config: &StoreConfig, sinks: &[String]) -> Result<Store, StoreError> {
        let path = config.path.clone();
        if let Err(e) = std::fs::create_dir_all(&path) {
            return Err(StoreError::Open {
                path,
                detail: format!("cannot create the directory: {e}"),
            });
        }
        let flush_ms = match config.durability {
            Durability::Batch => 500,
            Durability::Interval => config.flush_interval.as_millis().max(1) as u64,
        };
        // sled's flusher stays on: it is also the only thread that cleans sled's log segments
        // (without it the log keeps every write: the soak's store grew by ~6 MiB a minute).
        // Bodies are synced before the transaction that points at them, so whatever it writes
        // never points at a body that is not on disk.
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(Some(flush_ms))
            .cache_capacity(config.cache_mib.saturating_mul(1024 * 1024))
            .open()
            .map_err(|e| StoreError::Open {
                detail: match &e {
                    sled::Error::Io(io) if is_locked(io) => {
                        format!(
                            "in use by another mxc-relay process (sled holds a lock on it): {io}"
                        )
                    }
                    other => other.to_string(),
                },
                path: path.clone(),
            })?;
        let live = count_bodies(&db).map_err(|source| StoreError::Io {
            path: path.clone(),
            operation: "count event bodies",
            source,
        })?;
        let bodies =
            bodies::Bodies::open(&path.join("bodies"), live).map_err(|e| StoreError::Open {
                path: path.clone(),
                detail: format!("event bodies ({}): {e}", path.join("bodies").display()),
            })?;
        let disk = Arc::new(Disk {
            db: db.clone(),
            bodies,
            gate: std::sync::RwLock::new(()),
            failed: std::sync::OnceLock::new(),
        });
        spawn_flusher(&disk, std::time::Duration::from_millis(flush_ms), &path);
        Store::on(db, disk, path, config, sinks)
    }

    /// Opens the store at `config.path` once more and closes it, after a clean stop: sled
    /// writes a snapshot of its page table whenever it opens a database, and at the next start
    /// replays its log from the last snapshot — from the previous start, without this; about
    /// 1.5 s per 500 MiB of log (a million seen ids), before the first poll. Waits up to
    /// `within` for the stopped pipeline's last handles to go (sled locks the store). Returns
    /// how long the snapshot took.
    pub fn snapshot_closed(
        config: &StoreConfig,
        within: std::time::Duration,
    ) -> Result<std::time::Duration, StoreError> {
        let started = std::time::Instant::now();
        loop {
            let opened = sled::Config::new()
                .path(&config.path)
                .cache_capacity(config.cache_mib.saturating_mul(1024 * 1024))
                .open();
            match opened {
                Ok(db) => {
                    drop(db);
                    return Ok(started.elapsed());
                }
                Err(sled::Error::Io(io)) if is_locked(&io) && started.elapsed() < within => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(StoreError::Open {
                        path: config.path.clone(),
                        detail: format!("cannot open it again to write a snapshot: {e}"),
                    })
                }
            }
        }
    }

    /// The same open database with the outboxes of `config`'s sinks and its settings: a
    /// reloaded configuration's view of the store. The path cannot change without a restart.
    pub fn reconfigure(&self, config: &crate::config::Config) -> Result<Store, StoreError> {
        if config.store.path != self.inner.path {
            return Err(StoreError::Open {
                path: config.store.path.clone(),
                detail: format!(
                    "store.path cannot change while running (it is {}): restart to move the store",
                    self.inner.path.display()
                ),
            });
        }
        let sinks: Vec<String> = config.sinks.keys().cloned().collect();
        Store::on(
            self.inner.db.clone(),
            self.inner.disk.clone(),
            self.inner.path.clone(),
            &config.store,
            &sinks,
        )
    }

    fn on(
        db: sled::Db,
        disk: Arc<Disk>,
        path: PathBuf,
        config: &StoreConfig,
        sinks: &[String],
    ) -> Result<Store, StoreError> {
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Io {
                path: path.clone(),
                operation: "open tree",
                source,
            })
        };
        let mut outboxes = BTreeMap::new();
        for sink in sinks {
            outboxes.insert(
                sink.clone(),
                Sink {
                    outbox: tree(&format!("{OUTBOX_PREFIX}{sink}"))?,
                    dead: tree(&format!("{DEAD_PREFIX}{sink}"))?,
                    attempts: tree(&format!("{ATTEMPTS_PREFIX}{sink}"))?,
                    notify: Arc::new(Notify::new()),
                },
            );
        }
        let inner = Inner {
            seen: tree(SEEN)?,
            seen_by_time: tree(SEEN_BY_TIME)?,
            cursors: tree(CURSORS)?,
            endpoints: tree(ENDPOINTS)?,
            checkpoints: tree(CHECKPOINTS)?,
            controls: tree(CONTROLS)?,
            outboxes,
            durability: config.durability,
            min_free_mib: config.min_free_mib,
            db,
            disk,
            path,
        };
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// Opens the store a configuration describes, with one outbox per configured sink.
    pub fn open_for(config: &crate::config::Config) -> Result<Store, StoreError> {
        let sinks: Vec<String> = config.sinks.keys().cloned().collect();
        Store::open(&config.store, &sinks)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Free space on the store's file system, in bytes (what an unprivileged process may use).
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        fs2::available_space(&self.inner.path)
    }

    /// sled's failed write, if one happened: the store cannot write again until it is opened
    /// again (see `Disk::failed`).
    pub fn failure(&self) -> Option<String> {
        self.inner.disk.failed.get().cloned()
    }

    /// The bytes the store takes on disk: the blocks allocated to every file under its
    /// directory (sled's log and snapshots, the body segments). What `du` would say.
    pub fn disk_bytes(&self) -> std::io::Result<u64> {
        disk_usage(&self.inner.path)
    }

    /// `Err(DiskFull)` when the free space is below `store.min_free_mib`: admitting more would
    /// risk a write that fails half-way. A file system that cannot be asked passes.
    pub fn check_space(&self) -> Result<(), StoreError> {
        let Ok(free) = self.free_bytes() else {
            return Ok(());
        };
        let free_mib = free / (1024 * 1024);
        if free_mib < self.inner.min_free_mib {
            return Err(StoreError::DiskFull {
                path: self.inner.path.clone(),
                free_mib,
                min_free_mib: self.inner.min_free_mib,
            });
        }
        Ok(())
    }

    fn io(&self, operation: &'static str) -> impl Fn(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: self.inner.path.clone(),
            operation,
            source,
        }
    }

    fn sink(&self, name: &str) -> Result<&Sink, StoreError> {
        self.inner
            .outboxes
            .get(name)
            .ok_or_else(|| StoreError::UnknownSink(name.to_string()))
    }

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

    /// Admits records and moves cursors in one transaction (see the module doc), then makes it
    /// durable as configured.
    pub async fn admit(
        &self,
        admissions: &[Admission],
        cursors: &[(String, Cursor)],
    ) -> Result<AdmitOutcome, StoreError> {
        if admissions.is_empty() && cursors.is_empty() {
            return Ok(AdmitOutcome::default());
        }
        let now = Utc::now().timestamp_millis();
        let sink_names: Vec<&String> = self.inner.outboxes.keys().collect();
        let mut trees: Vec<Tree> = vec![
            self.inner.seen.clone(),
            self.inner.seen_by_time.clone(),
            self.inner.cursors.clone(),
        ];
        trees.extend(self.inner.outboxes.values().map(|s| s.outbox.clone()));
        // Bodies first, into their segment (synced before the transaction),
        // so the entries can point at them; encoded outside the transaction, whose closure
        // may run more than once.
        if let Some(e) = admissions
            .iter()
            .flat_map(|a| &a.events)
            .find(|e| !self.inner.outboxes.contains_key(&e.sink))
        {
            return Err(StoreError::UnknownSink(e.sink.clone()));
        }
        let bodies: Vec<&[u8]> = admissions
            .iter()
            .flat_map(|a| a.events.iter().map(|e| e.body.as_bytes().as_ref()))
            .collect();
        let disk = &self.inner.disk;
        let body_error = || self.disk_error("write event bodies");
        let mut refs = disk
            .bodies
            .append(&bodies)
            .map_err(body_error())?
            .into_iter();
        let all_refs: Vec<BodyRef> = refs.clone().collect();
        // Under either durability: sled's flusher may write the pointers at any moment.
        if !bodies.is_empty() {
            if let Err(e) = self.sync_bodies().await {
                let _ = disk.bodies.release(all_refs);
                return Err(body_error()(e));
            }
        }
        let mut encoded: Vec<(&Admission, Vec<EncodedEvent>)> =
            Vec::with_capacity(admissions.len());
        for admission in admissions {
            let mut events = Vec::with_capacity(admission.events.len());
            for event in &admission.events {
                let index = sink_names
                    .iter()
                    .position(|s| **s == event.sink)
                    .ok_or_else(|| StoreError::UnknownSink(event.sink.clone()))?;
                events.push((index, encode_event(event, refs.next())));
            }
            encoded.push((admission, events));
        }
        let result = disk.write(|| {
            trees[..].transaction(|t| {
                let (seen, by_time, cursor_tree) = (&t[0], &t[1], &t[2]);
                let mut new = 0;
                // Their bodies were written for nothing.
                let mut duplicates = Vec::new();
                // Counted by reference here, named once outside (the closure may run again).
                let mut enqueued: BTreeMap<(usize, &str), usize> = BTreeMap::new();
                for (i, (admission, events)) in encoded.iter().enumerate() {
                    if seen.get(admission.record_id.as_bytes())?.is_some() {
                        duplicates.push(i);
                        continue;
                    }
                    seen.insert(admission.record_id.as_bytes(), &now.to_be_bytes())?;
                    by_time.insert(time_key(now, &admission.record_id), &[])?;
                    for ((index, bytes), event) in events.iter().zip(&admission.events) {
                        let seq = t[3 + index].generate_id()?;
                        t[3 + index].insert(&seq.to_be_bytes(), bytes.as_slice())?;
                        *enqueued
                            .entry((*index, event.event_type.as_str()))
                            .or_default() += 1;
                    }
                    new += 1;
                }
                for (xmid, cursor) in cursors {
                    cursor_tree.insert(xmid.as_bytes(), &encode_cursor(cursor))?;
                }
                Ok::<_, ConflictableTransactionError<()>>((new, duplicates, enqueued))
            })
        });
        if result.is_err() {
            let _ = disk.bodies.release(all_refs.iter().copied());
        }
        let outcome = match result {
            Ok((new, duplicates, enqueued)) => {
                let mut first = 0;
                let unused = encoded.iter().enumerate().flat_map(|(i, (a, _))| {
                    let refs = &all_refs[first..first + a.events.len()];
                    first += a.events.len();
                    if duplicates.binary_search(&i).is_ok() {
                        refs
                    } else {
                        &[]
                    }
                });
                self.release(unused.copied())?;
                AdmitOutcome {
                    new,
                    duplicate: duplicates.len(),
                    enqueued: enqueued
                        .into_iter()
                        .map(|((index, event_type), n)| {
                            ((sink_names[index].clone(), event_type.to_string()), n)
                        })
                        .collect(),
                }
            }
            Err(TransactionError::Storage(source)) => {
                return Err(StoreError::Io {
                    path: self.inner.path.clone(),
                    operation: "admit",
                    source,
                })
            }
            Err(TransactionError::Abort(())) => {
                // Nothing in the transaction aborts; were it to, say so rather than admit nothing.
                return Err(self.corrupt("admission", "(transaction)", "aborted"));
            }
        };
        if self.inner.durability == Durability::Batch {
            self.flush().await?;
        }
        for (sink, _) in outcome.enqueued.keys() {
            if let Some(s) = self.inner.outboxes.get(sink) {
                s.notify.notify_one();
            }
        }
        Ok(outcome)
    }

    /// Writes everything to disk (off the async threads: an fsync takes milliseconds).
    pub async fn flush(&self) -> Result<(), StoreError> {
        // Never closed: `acquire` cannot fail.
        let _one = FLUSHES.acquire().await;
        let disk = self.inner.disk.clone();
        tokio::task::spawn_blocking(move || disk.flush())
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map_err(|detail| StoreError::Flush {
                path: self.inner.path.clone(),
                detail,
            })
    }

    /// The first `limit` entries of a sink's outbox, oldest first.
    pub fn peek(&self, sink: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.peek_from(sink, 0, limit)
    }

    /// Up to `limit` entries of a sink's outbox from position `from` on, oldest first.
    pub fn peek_from(&self, sink: &str, from: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let tree = &self.sink(sink)?.outbox;
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in tree.range(from.to_be_bytes()..).take(limit) {
            let (k, v) = item.map_err(self.io("read outbox"))?;
            let seq =
                decode_u64(&k).ok_or_else(|| self.corrupt("outbox", sink, "key is not 8 bytes"))?;
            out.push(self.entry_of(sink, seq, v)?);
        }
        Ok(out)
    }

    /// Removes delivered entries (and their retry state).
    pub fn remove(&self, sink: &str, seqs: &[u64]) -> Result<(), StoreError> {
        let s = self.sink(sink)?;
        let mut batch = sled::Batch::default();
        let mut bodies = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let key = seq.to_be_bytes();
            if let Some(value) = s.outbox.get(key).map_err(self.io("read outbox"))? {
                if let Ok((_, Some(at))) = decode_event(value) {
                    bodies.push(at);
                }
            }
            batch.remove(&key);
        }
        let disk = &self.inner.disk;
        disk.write(|| s.outbox.apply_batch(batch))
            .map_err(self.io("remove delivered"))?;
        self.release(bodies)?;
        // A crash between the two leaves retry state without an entry: ignored when read.
        if !s.attempts.is_empty() {
            let mut batch = sled::Batch::default();
            for seq in seqs {
                batch.remove(&seq.to_be_bytes());
            }
            disk.write(|| s.attempts.apply_batch(batch))
                .map_err(self.io("remove retry state"))?;
        }
        Ok(())
    }

    /// Syncs the body segments off the async threads (an fsync takes milliseconds).
    async fn sync_bodies(&self) -> std::io::Result<()> {
        let disk = self.inner.disk.clone();
        tokio::task::spawn_blocking(move || disk.bodies.sync())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// Lets go of the bodies of entries that are gone.
    fn release(&self, bodies: impl IntoIterator<Item = BodyRef>) -> Result<(), StoreError> {
        self.inner
            .disk
            .bodies
            .release(bodies)
            .map_err(self.disk_error("delete a body segment"))
    }

    fn disk_error(&self, operation: &'static str) -> impl Fn(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Disk {
            path: self.inner.path.join("bodies"),
            operation,
            source,
        }
    }

    /// One outbox entry, if it is still there.
    pub fn entry(&self, sink: &str, seq: u64) -> Result<Option<Entry>, StoreError> {
        let raw = self
            .sink(sink)?
            .outbox
            .get(seq.to_be_bytes())
            .map_err(self.io("read outbox"))?;
        raw.map(|v| self.entry_of(sink, seq, v)).transpose()
    }

    /// An outbox entry from its stored value, its body read from its segment if it has one.
    fn entry_of(&self, sink: &str, seq: u64, value: sled::IVec) -> Result<Entry, StoreError> {
        let corrupt = |e: String| self.corrupt("outbox", &format!("{sink}/{seq}"), &e);
        let (mut event, at) = decode_event(value).map_err(corrupt)?;
        if let Some(at) = at {
            let bytes = self.inner.disk.bodies.read(&at).map_err(corrupt)?;
            event.body = ByteString::try_from(bytes).map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(Entry { seq, event })
    }

    /// Records a failed attempt of an entry.
    pub fn record_attempt(
        &self,
        sink: &str,
        seq: u64,
        state: &AttemptState,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state)
            .map_err(|e| self.corrupt("retry state", &seq.to_string(), &e.to_string()))?;
        self.sink(sink)?
            .attempts
            .insert(seq.to_be_bytes(), bytes)
            .map_err(self.io("write retry state"))?;
        Ok(())
    }

    /// The retry state of every failing entry still in the outbox; stale states are removed.
    pub fn attempt_states(&self, sink: &str) -> Result<Vec<(u64, AttemptState)>, StoreError> {
        let s = self.sink(sink)?;
        let mut out = Vec::new();
        for item in s.attempts.iter() {
            let (k, v) = item.map_err(self.io("read retry state"))?;
            let seq = decode_u64(&k)
                .ok_or_else(|| self.corrupt("retry state", sink, "key is not 8 bytes"))?;
            if !s.outbox.contains_key(&k).map_err(self.io("read outbox"))? {
                s.attempts
                    .remove(&k)
                    .map_err(self.io("remove retry state"))?;
                continue;
            }
            let state = serde_json::from_slice(&v).map_err(|e| {
                self.corrupt("retry state", &format!("{sink}/{seq}"), &e.to_string())
            })?;
            out.push((seq, state));
        }
        Ok(out)
    }

    /// A job's checkpoint (JSON), if it has one.
    pub fn checkpoint(&self, job: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let raw = self
            .inner
            .checkpoints
            .get(job)
            .map_err(self.io("read checkpoint"))?;
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
        let tree = &self.inner.checkpoints;
        match value {
            Some(v) => tree.insert(job, v.to_string().as_bytes()).map(|_| ()),
            None => tree.remove(job).map(|_| ()),
        }
        .map_err(self.io("write checkpoint"))?;
        self.flush().await
    }

    /// Whether (and why) a webhook endpoint is disabled.
    pub fn disabled_endpoint(&self, sink: &str) -> Result<Option<DisabledEndpoint>, StoreError> {
        let raw = self
            .inner
            .endpoints
            .get(sink)
            .map_err(self.io("read endpoint state"))?;
        raw.map(|v| {
            serde_json::from_slice(&v)
                .map_err(|e| self.corrupt("endpoint state", sink, &e.to_string()))
        })
        .transpose()
    }

    /// Disables a webhook endpoint (`Some`) or enables it again (`None`).
    pub fn set_disabled_endpoint(
        &self,
        sink: &str,
        state: Option<&DisabledEndpoint>,
    ) -> Result<(), StoreError> {
        let tree = &self.inner.endpoints;
        match state {
            Some(state) => {
                let bytes = serde_json::to_vec(state)
                    .map_err(|e| self.corrupt("endpoint state", sink, &e.to_string()))?;
                tree.insert(sink, bytes)
                    .map_err(self.io("write endpoint state"))?;
            }
            None => {
                tree.remove(sink).map_err(self.io("write endpoint state"))?;
            }
        }
        tree.flush().map_err(self.io("flush endpoint state"))?;
        Ok(())
    }

    /// Moves a sink's dead letters that failed at or after `since` (all of them with `None`)
    /// back to the end of its outbox, with fresh retry state. Returns how many.
    pub fn replay_dead(
        &self,
        sink: &str,
        since: Option<DateTime<Utc>>,
    ) -> Result<usize, StoreError> {
        self.replay_dead_where(sink, |l| since.is_none_or(|t| l.failed_at >= t))
    }

    /// Moves the sink's dead letters that `select` picks back to the end of its outbox, with
    /// fresh retry state and the same event (its id, so its `webhook-id`). Returns how many.
    pub fn replay_dead_where(
        &self,
        sink: &str,
        select: impl Fn(&DeadLetter) -> bool,
    ) -> Result<usize, StoreError> {
        let s = self.sink(sink)?;
        let letters: Vec<(u64, DeadLetter)> = self
            .dead_letters(sink)?
            .into_iter()
            .filter(|(_, l)| select(l))
            .collect();
        for chunk in letters.chunks(1000) {
            let encoded: Vec<(u64, Vec<u8>)> = chunk
                .iter()
                .map(|(seq, l)| (*seq, encode_event(&l.event, None)))
                .collect();
            let disk = &self.inner.disk;
            disk.write(|| {
                (&s.outbox, &s.dead).transaction(|(outbox, dead)| {
                    for (old_seq, bytes) in &encoded {
                        let seq = outbox.generate_id()?;
                        outbox.insert(&seq.to_be_bytes(), bytes.as_slice())?;
                        dead.remove(&old_seq.to_be_bytes())?;
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
            })
            .map_err(|e| self.transaction_error(e, "replay dead letters", sink))?;
        }
        self.inner
            .disk
            .flush()
            .map_err(|detail| StoreError::Flush {
                path: self.inner.path.clone(),
                detail,
            })?;
        s.notify.notify_one();
        Ok(letters.len())
    }

    fn transaction_error(
        &self,
        e: TransactionError<()>,
        operation: &'static str,
        key: &str,
    ) -> StoreError {
        match e {
            TransactionError::Storage(source) => StoreError::Io {
                path: self.inner.path.clone(),
                operation,
                source,
            },
            TransactionError::Abort(()) => self.corrupt("transaction", key, "aborted"),
        }
    }

    /// Moves an entry from the outbox to the dead letters (dropping its retry state),
    /// atomically.
    pub fn bury(
        &self,
        sink: &str,
        entry: &Entry,
        reason: &str,
        attempts: u32,
        last_status: Option<u16>,
    ) -> Result<(), StoreError> {
        let s = self.sink(sink)?;
        let letter = DeadLetter {
            event: entry.event.clone(),
            reason: reason.to_string(),
            failed_at: Utc::now(),
            attempts,
            last_status,
        };
        let bytes = serde_json::to_vec(&letter)
            .map_err(|e| self.corrupt("dead letter", &entry.event.id, &e.to_string()))?;
        let disk = &self.inner.disk;
        disk.write(|| {
            (&s.outbox, &s.dead, &s.attempts).transaction(|(outbox, dead, retry)| {
                let old = outbox.remove(&entry.seq.to_be_bytes())?;
                retry.remove(&entry.seq.to_be_bytes())?;
                dead.insert(&entry.seq.to_be_bytes(), bytes.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(old)
            })
        })
        .map_err(|e| self.transaction_error(e, "dead-letter", &entry.event.id))
        .and_then(|old| {
            // The dead letter holds its own copy of the body.
            let at = old.and_then(|v| decode_event(v).ok()?.1);
            self.release(at)
        })
    }

    /// A sink's dead letters, oldest first.
    pub fn dead_letters(&self, sink: &str) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        let mut out = Vec::new();
        for item in self.sink(sink)?.dead.iter() {
            let (k, v) = item.map_err(self.io("read dead letters"))?;
            let seq = decode_u64(&k)
                .ok_or_else(|| self.corrupt("dead letter", sink, "key is not 8 bytes"))?;
            let letter = serde_json::from_slice(&v).map_err(|e| {
                self.corrupt("dead letter", &format!("{sink}/{seq}"), &e.to_string())
            })?;
            out.push((seq, letter));
        }
        Ok(out)
    }

    /// Woken whenever entries are enqueued for `sink`.
    pub fn notifier(&self, sink: &str) -> Result<Arc<Notify>, StoreError> {
        Ok(self.sink(sink)?.notify.clone())
    }

    pub fn sinks(&self) -> impl Iterator<Item = &String> {
        self.inner.outboxes.keys()
    }

    /// Entries waiting in a sink's outbox (counts them: O(n)).
    pub fn outbox_len(&self, sink: &str) -> Result<usize, StoreError> {
        Ok(self.sink(sink)?.outbox.len())
    }

    pub fn dead_len(&self, sink: &str) -> Result<usize, StoreError> {
        Ok(self.sink(sink)?.dead.len())
    }

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

    /// Outboxes in the database whose sink is not configured any more, with their sizes.
    pub fn orphan_outboxes(&self) -> Vec<(String, usize)> {
        self.inner
            .db
            .tree_names()
            .into_iter()
            .filter_map(|name| {
                let name = String::from_utf8_lossy(&name).to_string();
                let sink = name.strip_prefix(OUTBOX_PREFIX)?.to_string();
                if self.inner.outboxes.contains_key(&sink) {
                    return None;
                }
                let len = self.inner.db.open_tree(&name).map(|t| t.len()).unwrap_or(0);
                Some((sink, len))
            })
            .collect()
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

    fn corrupt(&self, what: &'static str, key: &str, detail: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.inner.path.clone(),
            what,
            key: key.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// An outbox value: the event's fields as one JSON line, then its body as it is. Keeping the
/// body out of the JSON spares escaping and unescaping kilobytes of JSON per event.
fn encode_event(event: &Event, body_at: Option<BodyRef>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Head<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        body_at: Option<[u64; 3]>,
        id: &'a str,
        event_type: &'a str,
        route: &'a str,
        resource: &'a str,
        sink: &'a str,
        xmid: &'a str,
        record_id: &'a str,
        occurred_at: Option<&'a str>,
        fetched_at_ms: i64,
    }
    let head = Head {
        body_at: body_at.map(|r| [r.segment, r.offset, u64::from(r.len)]),
        id: &event.id,
        event_type: &event.event_type,
        route: &event.route,
        resource: &event.resource,
        sink: &event.sink,
        xmid: &event.xmid,
        record_id: &event.record_id,
        occurred_at: event.occurred_at.as_deref(),
        fetched_at_ms: event.fetched_at_ms,
    };
    let inline = if body_at.is_some() {
        0
    } else {
        event.body.len()
    };
    // One allocation at the final size.
    let mut out = Vec::with_capacity(inline + 256);
    // Serializing borrowed strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &head);
    out.push(b'\n');
    if body_at.is_none() {
        out.extend_from_slice(event.body.as_bytes());
    }
    out
}

/// An outbox entry's event, with its body still to be read when it is in a segment.
fn decode_event(value: sled::IVec) -> Result<(Event, Option<BodyRef>), String> {
    let bytes = Bytes::from_owner(value);
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        body_at: Option<[u64; 3]>,
        id: String,
        event_type: String,
        route: String,
        // Entries written before there were other resources are authorizations.
        #[serde(default = "authorizations")]
        resource: String,
        sink: String,
        xmid: String,
        record_id: String,
        occurred_at: Option<String>,
        // Entries written before it existed have none.
        #[serde(default)]
        fetched_at_ms: i64,
    }
    let split = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("no header line")?;
    let head: Head = serde_json::from_slice(&bytes[..split]).map_err(|e| e.to_string())?;
    let (body, at) = match head.body_at {
        // Read by the caller, from its segment.
        Some([segment, offset, len]) => {
            let len = u32::try_from(len).map_err(|_| "a body length over 4 GiB".to_string())?;
            (
                ByteString::new(),
                Some(BodyRef {
                    segment,
                    offset,
                    len,
                }),
            )
        }
        // Entries written before bodies had segments (and replayed dead letters): the body
        // stays in sled's buffer (shared, not copied).
        None => (
            ByteString::try_from(bytes.slice(split + 1..)).map_err(|e| e.to_string())?,
            None,
        ),
    };
    let event = Event {
        id: head.id,
        event_type: head.event_type,
        route: head.route,
        resource: head.resource,
        sink: head.sink,
        xmid: head.xmid,
        record_id: head.record_id,
        occurred_at: head.occurred_at,
        fetched_at_ms: head.fetched_at_ms,
        body,
    };
    Ok((event, at))
}

/// Entries pointing into each body segment, over every outbox in the database (those of
/// sinks no longer configured too).
fn count_bodies(db: &sled::Db) -> sled::Result<HashMap<u64, usize>> {
    let mut live = HashMap::new();
    for name in db.tree_names() {
        if !name.starts_with(OUTBOX_PREFIX.as_bytes()) {
            continue;
        }
        for item in db.open_tree(&name)?.iter() {
            let (_, value) = item?;
            if let Ok((_, Some(r))) = decode_event(value) {
                *live.entry(r.segment).or_default() += 1;
            }
        }
    }
    Ok(live)
}

fn authorizations() -> String {
    mxc::AUTHORIZATIONS.name.to_string()
}

/// An event ready for the transaction: the index of its sink's outbox and its bytes.
type EncodedEvent = (usize, Vec<u8>);

fn time_key(ms: i64, id: &str) -> Vec<u8> {
    let mut key = ms.to_be_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

fn encode_cursor(cursor: &Cursor) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&cursor.position.timestamp_millis().to_be_bytes());
    out[8..].copy_from_slice(&cursor.floor.timestamp_millis().to_be_bytes());
    out
}

fn decode_cursor(bytes: &[u8]) -> Option<Cursor> {
    if bytes.len() != 16 {
        return None;
    }
    let ms = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap_or_default());
    Some(Cursor {
        position: Utc.timestamp_millis_opt(ms(&bytes[..8])).single()?,
        floor: Utc.timestamp_millis_opt(ms(&bytes[8..])).single()?,
    })
}

/// The blocks allocated under `dir`, recursively, in bytes. A file that goes while it is read
/// (a body segment deleted) counts as nothing.
fn disk_usage(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        total += if metadata.is_dir() {
            disk_usage(&entry.path())?
        } else {
            metadata.blocks() * 512
        };
    }
    Ok(total)
}

/// Whether sled could not open a store because another handle holds its lock.
fn is_locked(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock")
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_survives_the_outbox_encoding() {
        let event = Event {
            id: "evt_1".into(),
            event_type: "authorization.created".into(),
            route: "all".into(),
            resource: "authorizations".into(),
            sink: "archive".into(),
            xmid: "X\n1".into(),
            record_id: "r\"1".into(),
            occurred_at: None,
            fetched_at_ms: 1_764_000_000_000,
            body: "{\"data\":\"line\\nbreak\"}\n".into(),
        };
        assert_eq!(
            decode_event(encode_event(&event, None).into()),
            Ok((event.clone(), None))
        );
        let at = BodyRef {
            segment: 3,
            offset: 4096,
            len: 22,
        };
        let (head, body_at) = decode_event(encode_event(&event, Some(at)).into()).unwrap();
        assert_eq!(body_at, Some(at));
        assert_eq!(head.id, event.id);
        assert!(
            head.body.is_empty(),
            "the body is in its segment, not in the entry"
        );
        assert!(decode_event(sled::IVec::from(&b"no newline"[..])).is_err());
    }
}

#[cfg(test)]
mod reopen_tests {
    use super::*;

    fn event(n: usize) -> Event {
        Event {
            id: format!("evt_{n}"),
            event_type: "authorization.created".into(),
            route: "all".into(),
            resource: "authorizations".into(),
            sink: "archive".into(),
            xmid: "X1".into(),
            record_id: format!("r{n}"),
            occurred_at: None,
            fetched_at_ms: 0,
            body: format!("{{\"data\":{{\"id\":\"r{n}\"}}}}").into(),
        }
    }

    #[tokio::test]
    async fn entries_and_their_bodies_survive_a_reopen_and_their_segment_goes_once_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            path: dir.path().join("store"),
            ..StoreConfig::default()
        };
        let sinks = ["archive".to_string()];
        let admissions: Vec<Admission> = (0..5)
            .map(|n| Admission {
                record_id: format!("r{n}"),
                xmid: "X1".into(),
                events: vec![event(n)],
            })
            .collect();
        {
            let store = Store::open(&config, &sinks).unwrap();
            assert_eq!(store.admit(&admissions, &[]).await.unwrap().new, 5);
            let again = store.admit(&admissions, &[]).await.unwrap();
            assert_eq!((again.new, again.duplicate), (0, 5));
        }
        let store = Store::open(&config, &sinks).unwrap();
        let entries = store.peek("archive", 10).unwrap();
        let bodies: Vec<String> = entries.iter().map(|e| e.event.body.to_string()).collect();
        let sent: Vec<String> = (0..5).map(|n| event(n).body.to_string()).collect();
        assert_eq!(bodies, sent);
        let segments = || {
            std::fs::read_dir(config.path.join("bodies"))
                .unwrap()
                .count()
        };
        assert_eq!(segments(), 2, "the first run's segment and this run's");
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        store.remove("archive", &seqs).unwrap();
        assert!(store.peek("archive", 10).unwrap().is_empty());
        assert_eq!(segments(), 2, "kept until the removals are on disk");
        store.flush().await.unwrap();
        assert_eq!(segments(), 1, "delivered bodies take no disk once flushed");
    }
}
