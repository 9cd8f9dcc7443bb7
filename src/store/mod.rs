//! The local store (redb): seen record ids with a retention, per-XMID cursors, one outbox per
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
//! | `mod.rs` | [`Store`], opening (and reopening for a reloaded configuration), disk space, [`StoreError`], the tables |
//! | `engine.rs` | the redb file: transactions, durability (group commits, the flusher), opening it again after a failed write, sequence numbers |
//! | `seen.rs` | the seen ids and their index by time: marking an id seen (for `admit` and `adopt`), lookups, counting, [`Store::prune_seen`] (the retention) |
//! | `cursor.rs` | per-XMID [`Cursor`]s and their encoding |
//! | `outbox.rs` | the outboxes: in, [`Store::admit`] (the transaction above; [`Admission`], [`AdmitOutcome`]); out, peek, read one [`Entry`] (its value is [`Event::to_outbox`](crate::event::Event::to_outbox): a JSON header line, then the body), remove delivered entries, notifiers, orphaned outboxes |
//! | `dead.rs` | [`DeadLetter`]s: bury, list, replay |
//! | `retry.rs` | the [`AttemptState`] of failing entries |
//! | `endpoints.rs` | webhook endpoints switched off ([`DisabledEndpoint`]) |
//! | `controls.rs` | operators' pauses and endpoints' failing periods |
//! | `checkpoint.rs` | checkpoints of long jobs (backfills) |
//! | `handover.rs` | what a cluster needs: watermark, waiting entries per XMID, adopting another instance's state |
//! | `testing.rs` | what the unit tests beside each file share |

mod checkpoint;
mod controls;
mod cursor;
mod dead;
mod endpoints;
mod engine;
mod handover;
mod outbox;
mod retry;
mod seen;
#[cfg(test)]
pub(crate) mod testing;

use mxc::{SharedClock, SystemClock};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableTable, TableDefinition};
use tokio::sync::Notify;

use crate::config::{Durability, StoreConfig};
use engine::Engine;

pub use cursor::Cursor;
pub use dead::DeadLetter;
pub use endpoints::DisabledEndpoint;
pub use outbox::{Admission, AdmitOutcome, Entry};
pub use retry::AttemptState;

/// Record id -> when it was admitted (unix ms).
const SEEN: TableDefinition<&str, i64> = TableDefinition::new("seen");
/// When (unix ms, big-endian) ++ record id: the seen ids in the order they expire.
const SEEN_BY_TIME: TableDefinition<&[u8], ()> = TableDefinition::new("seen_by_time");
/// Cursor key -> [`Cursor`] (16 bytes).
const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("cursors");
/// Sink -> [`DisabledEndpoint`] (JSON).
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");
/// Checkpoints of long jobs (backfills), keyed by the job (JSON).
const CHECKPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("checkpoints");
/// Operators' pauses and endpoints' failing periods (see `controls`).
const CONTROLS: TableDefinition<&str, &[u8]> = TableDefinition::new("controls");
/// A sink's outbox, dead letters or retry state: sequence number -> value.
type Queue<'a> = TableDefinition<'a, u64, &'static [u8]>;
/// A table of values by name (`CURSORS`, `ENDPOINTS`, `CHECKPOINTS`, `CONTROLS`).
type Keyed = TableDefinition<'static, &'static str, &'static [u8]>;

const OUTBOX_PREFIX: &str = "outbox/";
const DEAD_PREFIX: &str = "dead/";
const ATTEMPTS_PREFIX: &str = "attempts/";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("store {path}: {operation} failed: {source}")]
    Io {
        path: PathBuf,
        operation: &'static str,
        source: redb::Error,
    },
    /// Closed after a failed write, and not open again yet (see `engine`).
    #[error("store {path}: {operation} failed: the store is closed after a failed write ({why}) until it can be opened again")]
    Closed {
        path: PathBuf,
        operation: &'static str,
        why: String,
    },
    #[error("store {path}: unreadable {what} entry {key}: {detail}")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        key: String,
        detail: String,
    },
    /// The blocking task that wrote or synced failed (panicked or was cancelled).
    #[error("store {path}: {operation} failed: {source}")]
    Task {
        path: PathBuf,
        operation: &'static str,
        source: tokio::task::JoinError,
    },
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
    /// The database; shared by reconfigured views.
    engine: Arc<Engine>,
    durability: Durability,
    min_free_mib: u64,
    outboxes: BTreeMap<String, Sink>,
    /// When ids are marked seen (their retention counts from it).
    clock: SharedClock,
}

/// A sink's tables (by name) and its notifier.
struct Sink {
    outbox: String,
    dead: String,
    /// Retry state of entries that failed at least once (sinks that retry per entry).
    attempts: String,
    /// Woken when entries are enqueued, so the delivery worker need not poll.
    notify: Arc<Notify>,
}

impl Sink {
    fn outbox(&self) -> Queue<'_> {
        TableDefinition::new(&self.outbox)
    }
    fn dead(&self) -> Queue<'_> {
        TableDefinition::new(&self.dead)
    }
    fn attempts(&self) -> Queue<'_> {
        TableDefinition::new(&self.attempts)
    }
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
        let cache = config.cache_mib.saturating_mul(1024 * 1024);
        let engine = Engine::open(&config.path, usize::try_from(cache).unwrap_or(usize::MAX))?;
        Store::open_engine(engine, config, sinks, clock)
    }

    /// A store on an open engine, with its flusher.
    fn open_engine(
        engine: Engine,
        config: &StoreConfig,
        sinks: &[String],
        clock: SharedClock,
    ) -> Result<Store, StoreError> {
        let engine = Arc::new(engine);
        // `batch` syncs each admission itself; the flusher bounds how long anything else
        // (deliveries' removals, retry state) stays undurable.
        let every = match config.durability {
            Durability::Batch => std::time::Duration::from_secs(1),
            Durability::Interval => config.flush_interval,
        };
        engine::spawn_flusher(&engine, every);
        Store::on(engine, config, sinks, clock)
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
            self.inner.engine.clone(),
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
        engine: Arc<Engine>,
        config: &StoreConfig,
        sinks: &[String],
        clock: SharedClock,
    ) -> Result<Store, StoreError> {
        let outboxes: BTreeMap<String, Sink> = sinks
            .iter()
            .map(|sink| {
                let table = Sink {
                    outbox: format!("{OUTBOX_PREFIX}{sink}"),
                    dead: format!("{DEAD_PREFIX}{sink}"),
                    attempts: format!("{ATTEMPTS_PREFIX}{sink}"),
                    notify: Arc::new(Notify::new()),
                };
                (sink.clone(), table)
            })
            .collect();
        // Every table there from the start: a read of one never finds it missing.
        engine.write("create tables", |txn| {
            txn.open_table(SEEN)?;
            txn.open_table(SEEN_BY_TIME)?;
            txn.open_table(CURSORS)?;
            txn.open_table(ENDPOINTS)?;
            txn.open_table(CHECKPOINTS)?;
            txn.open_table(CONTROLS)?;
            for sink in outboxes.values() {
                txn.open_table(sink.outbox())?;
                txn.open_table(sink.dead())?;
                txn.open_table(sink.attempts())?;
            }
            Ok(())
        })?;
        engine.sync()?;
        let inner = Inner {
            path: config.path.clone(),
            engine,
            durability: config.durability,
            min_free_mib: config.min_free_mib,
            outboxes,
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

    /// The bytes the store's database file takes on disk (the blocks allocated to it: what `du`
    /// would say).
    pub fn disk_bytes(&self) -> std::io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata(self.inner.engine.file())?.blocks() * 512)
    }

    /// `Err(DiskFull)` when the free space is below `store.min_free_mib`: admitting more would
    /// only fill the disk further. A file system that cannot be asked passes.
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

    fn sink(&self, name: &str) -> Result<&Sink, StoreError> {
        self.inner
            .outboxes
            .get(name)
            .ok_or_else(|| StoreError::UnknownSink(name.to_string()))
    }

    /// Makes every write so far durable (off the async threads: an fsync takes milliseconds).
    /// Concurrent callers share one fsync.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.synced(None).await
    }

    /// The value under `key` in a keyed table.
    fn value(
        &self,
        table: Keyed,
        key: &str,
        operation: &'static str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.engine.read(operation, |txn| {
            Ok(txn.open_table(table)?.get(key)?.map(|v| v.value().to_vec()))
        })
    }

    /// Sets (`Some`) or clears `key` in a keyed table (not yet durable: the caller syncs).
    fn put(
        &self,
        table: Keyed,
        key: &str,
        value: Option<&[u8]>,
        operation: &'static str,
    ) -> Result<(), StoreError> {
        self.inner.engine.write(operation, |txn| {
            let mut table = txn.open_table(table)?;
            match value {
                Some(v) => table.insert(key, v)?,
                None => table.remove(key)?,
            };
            Ok(())
        })
    }

    /// Under `durability = "batch"`, makes commit `at` durable before returning; under
    /// `"interval"`, the flusher will.
    async fn synced_if_batch(&self, at: u64) -> Result<(), StoreError> {
        match self.inner.durability {
            Durability::Batch => self.synced(Some(at)).await,
            Durability::Interval => Ok(()),
        }
    }

    /// Makes commits up to `upto` (all, if `None`) durable: an fsync, off the async threads,
    /// shared with whoever syncs at the same time.
    async fn synced(&self, upto: Option<u64>) -> Result<(), StoreError> {
        let engine = self.inner.engine.clone();
        tokio::task::spawn_blocking(move || match upto {
            Some(at) => engine.sync_upto(at),
            None => engine.sync(),
        })
        .await
        .map_err(|source| StoreError::Task {
            path: self.inner.path.clone(),
            operation: "sync",
            source,
        })?
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

#[cfg(test)]
mod reopen_tests {
    use super::*;
    use crate::store::testing::{self, admissions, open_config};

    fn config(dir: &Path) -> StoreConfig {
        StoreConfig {
            path: dir.join("store"),
            ..StoreConfig::default()
        }
    }

    #[tokio::test]
    async fn entries_with_their_bodies_survive_a_reopen_and_are_gone_once_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let sinks = ["archive".to_string()];
        let batch = admissions(&["r0", "r1", "r2", "r3", "r4"], "archive");
        {
            let store = open_config(&config, &sinks);
            assert_eq!(store.admit(&batch, &[]).await.unwrap().new, 5);
            let again = store.admit(&batch, &[]).await.unwrap();
            assert_eq!((again.new, again.duplicate), (0, 5));
        }
        let store = open_config(&config, &sinks);
        let entries = store.peek("archive", 10).unwrap();
        let bodies: Vec<String> = entries.iter().map(|e| e.event.body().to_string()).collect();
        let sent: Vec<String> = batch
            .iter()
            .map(|a| a.events[0].body().to_string())
            .collect();
        assert_eq!(bodies, sent);
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        store.remove("archive", &seqs).await.unwrap();
        store.flush().await.unwrap();
        drop(store);
        let store = open_config(&config, &sinks);
        assert!(store.peek("archive", 10).unwrap().is_empty());
        assert_eq!(store.seen_len(), 5, "delivered, still remembered");
        // Numbers keep rising across a reopen, even with every outbox empty.
        store
            .admit(&admissions(&["r5"], "archive"), &[])
            .await
            .unwrap();
        assert!(store.peek("archive", 1).unwrap()[0].seq > seqs[4]);
    }

    /// The outbox survives power cuts: with `durability = "batch"`, whatever `admit` and
    /// `remove` returned from is on disk, cut the power after any of them.
    #[tokio::test]
    async fn power_cuts_between_commit_and_delivery_lose_nothing_and_bring_nothing_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        assert_eq!(config.durability, Durability::Batch);
        let disk = testing::PowerCutDisk::default();
        let mut admitted = std::collections::BTreeSet::new();
        let mut delivered = std::collections::BTreeSet::new();
        for round in 0..12 {
            let (store, machine) = disk.boot(&config, &["out"]);
            // After the cut: every record admitted is remembered, and what waits is exactly
            // what was admitted and not delivered.
            let waiting: std::collections::BTreeSet<String> = store
                .peek("out", 10_000)
                .unwrap()
                .into_iter()
                .map(|e| e.event.head.record_id)
                .collect();
            let expected: std::collections::BTreeSet<String> =
                admitted.difference(&delivered).cloned().collect();
            assert_eq!(waiting, expected, "round {round}: the outbox after the cut");
            assert_eq!(store.seen_len(), admitted.len(), "round {round}");
            let again: Vec<&str> = admitted.iter().take(5).map(String::as_str).collect();
            let outcome = store.admit(&admissions(&again, "out"), &[]).await.unwrap();
            assert_eq!(outcome.new, 0, "round {round}: still seen after the cut");

            let ids: Vec<String> = (0..40).map(|i| format!("r{round}-{i}")).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            store.admit(&admissions(&ids, "out"), &[]).await.unwrap();
            admitted.extend(ids.iter().map(|s| s.to_string()));
            // Every other round, the cut comes between the commit and any delivery.
            if round % 2 == 1 {
                let entries = store.peek("out", 25).unwrap();
                let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
                store.remove("out", &seqs).await.unwrap();
                delivered.extend(entries.into_iter().map(|e| e.event.head.record_id));
            }
            machine.cut();
            drop(store);
        }
        assert!(delivered.len() >= 100 && admitted.len() == 480);
    }

    #[test]
    fn a_store_in_use_by_another_process_is_refused_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let _held = Store::open(&config, &[]).unwrap();
        let error = Store::open(&config, &[]).err().unwrap().to_string();
        assert!(
            error.contains("in use by another mxc-relay process"),
            "{error}"
        );
    }

    #[test]
    fn a_store_written_by_sled_is_refused_with_what_to_do_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::create_dir_all(&config.path).unwrap();
        // What sled 0.34 leaves in a store directory.
        std::fs::write(config.path.join("conf"), b"segment_size: 524288").unwrap();
        std::fs::write(config.path.join("db"), [0u8; 64]).unwrap();
        let error = Store::open(&config, &[]).err().unwrap().to_string();
        assert!(
            error.contains("written by an earlier mxc-relay (sled")
                && error.contains("(docs/operating/upgrading.md)"),
            "{error}"
        );
        assert!(
            !config.path.join(engine::FILE).exists(),
            "no new empty store beside it"
        );
    }

    #[test]
    fn a_store_of_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        drop(Store::open(&config, &[]).unwrap());
        {
            let db = redb::Database::create(config.path.join(engine::FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(engine::META)
                .unwrap()
                .insert("format", b"mxc-relay store 9".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let error = Store::open(&config, &[]).err().unwrap().to_string();
        assert!(error.contains("\"mxc-relay store 9\""), "{error}");
    }
}
