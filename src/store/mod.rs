//! The local store (sled): seen record ids with a retention, per-XMID cursors, one outbox per
//! sink with its dead letters and the retry state of its failing entries, and the state of
//! webhook endpoints (disabled or not).
//!
//! `admit` is the heart of the guarantees: in one transaction, every record not seen before is
//! marked seen *and* enqueued for each sink its routes select, and the cursors move. A record
//! is never marked seen without its outbox entries, and a cursor never moves past records that
//! were not admitted.
//!
//! One concern per file, each an `impl Store` block beside the types it owns:
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`Store`], opening (and reopening for a snapshot or a reloaded configuration), durability (flushes, the gate, the flusher thread), disk space, [`StoreError`], the names of the trees |
//! | `admit.rs` | [`Store::admit`]: the transaction above; [`Admission`], [`AdmitOutcome`] |
//! | `seen.rs` | the seen ids and their index by time: marking an id seen (for `admit` and `adopt`), lookups, counting, [`Store::prune_seen`] (the retention) |
//! | `cursor.rs` | per-XMID [`Cursor`]s and their encoding |
//! | `outbox.rs` | the outboxes: peek, read one [`Entry`], remove delivered entries, notifiers, orphaned outboxes |
//! | `codec.rs` | the layout of an outbox entry in sled (a JSON header line, then the body or where it is) |
//! | `bodies.rs` | event bodies in segment files outside sled |
//! | `dead.rs` | [`DeadLetter`]s: bury, list, replay |
//! | `retry.rs` | the [`AttemptState`] of failing entries |
//! | `endpoints.rs` | webhook endpoints switched off ([`DisabledEndpoint`]) |
//! | `controls.rs` | operators' pauses and endpoints' failing periods |
//! | `checkpoint.rs` | checkpoints of long jobs (backfills) |
//! | `handover.rs` | what a cluster needs: watermark, waiting entries per XMID, adopting another instance's state |
//! | `testing.rs` | what the unit tests beside each file share |

mod admit;
mod bodies;
mod checkpoint;
mod codec;
mod controls;
mod cursor;
mod dead;
mod endpoints;
mod handover;
mod outbox;
mod retry;
mod seen;
#[cfg(test)]
pub(crate) mod testing;

use mxc::{SharedClock, SystemClock};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sled::transaction::TransactionError;
use sled::Tree;
use tokio::sync::Notify;

use crate::config::{Durability, StoreConfig};
use bodies::BodyRef;
use codec::decode_event;

pub use admit::{Admission, AdmitOutcome};
pub use cursor::Cursor;
pub use dead::DeadLetter;
pub use endpoints::DisabledEndpoint;
pub use outbox::Entry;
pub use retry::AttemptState;

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
    Flush { path: PathBuf, detail: FlushError },
    #[error("no sink named {0:?} in the store")]
    UnknownSink(String),
    #[error("store {path}: the disk is nearly full ({free_mib} MiB free, store.min_free_mib is {min_free_mib})")]
    DiskFull {
        path: PathBuf,
        free_mib: u64,
        min_free_mib: u64,
    },
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
    /// When ids are marked seen (their retention counts from it).
    clock: SharedClock,
}

/// Why a flush failed (the detail of [`StoreError::Flush`]).
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// The body segments' state is poisoned: a writer panicked.
    #[error("{0}")]
    Bodies(std::io::Error),
    /// The body segments could not be put on disk.
    #[error("sync event bodies: {0}")]
    SyncBodies(std::io::Error),
    /// sled could not flush; it refuses every write from now on (see `Disk::failed`).
    #[error("{0}")]
    Sled(sled::Error),
    /// The segments of delivered bodies could not be deleted.
    #[error("delete delivered body segments: {0}")]
    DeleteSegments(std::io::Error),
    /// The blocking task that flushed failed (panicked or was cancelled).
    #[error("{0}")]
    Task(tokio::task::JoinError),
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
    fn flush(&self) -> Result<(), FlushError> {
        let doomed = self.bodies.doomed().map_err(FlushError::Bodies)?;
        self.bodies.sync().map_err(FlushError::SyncBodies)?;
        {
            let _flushing = self.gate.write().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = self.db.flush() {
                let _ = self.failed.set(e.to_string());
                return Err(FlushError::Sled(e));
            }
        }
        self.bodies
            .delete(doomed)
            .map_err(FlushError::DeleteSegments)
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
        Store::open_with_clock(config, sinks, SystemClock::shared())
    }

    /// [`Store::open`] with the clock that stamps new ids as seen (a test's paused one).
    pub fn open_with_clock(
        config: &StoreConfig,
        sinks: &[String],
        clock: SharedClock,
    ) -> Result<Store, StoreError> {
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
        Store::on(db, disk, path, config, sinks, clock)
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
            self.inner.clock.clone(),
        )
    }

    /// The clock that stamps new ids as seen.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    fn on(
        db: sled::Db,
        disk: Arc<Disk>,
        path: PathBuf,
        config: &StoreConfig,
        sinks: &[String],
        clock: SharedClock,
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
            clock,
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

    /// Writes everything to disk (off the async threads: an fsync takes milliseconds).
    pub async fn flush(&self) -> Result<(), StoreError> {
        // Never closed: `acquire` cannot fail.
        let _one = FLUSHES.acquire().await;
        let disk = self.inner.disk.clone();
        tokio::task::spawn_blocking(move || disk.flush())
            .await
            .unwrap_or_else(|e| Err(FlushError::Task(e)))
            .map_err(|detail| StoreError::Flush {
                path: self.inner.path.clone(),
                detail,
            })
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

    fn corrupt(&self, what: &'static str, key: &str, detail: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.inner.path.clone(),
            what,
            key: key.to_string(),
            detail: detail.to_string(),
        }
    }
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
mod reopen_tests {
    use super::*;
    use crate::route::Event;

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
            let store = super::testing::open_config(&config, &sinks);
            assert_eq!(store.admit(&admissions, &[]).await.unwrap().new, 5);
            let again = store.admit(&admissions, &[]).await.unwrap();
            assert_eq!((again.new, again.duplicate), (0, 5));
        }
        let store = super::testing::open_config(&config, &sinks);
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
