//! The database under the store: one redb file, `store.redb`, in `store.path`.
//!
//! - **Transactions.** [`Engine::read`] and [`Engine::write`] run a closure in one redb
//!   transaction. Every write commits without an fsync; [`Engine::sync`] makes all of them
//!   durable at once with one empty durable commit (a group commit: concurrent callers share
//!   it). `durability = "batch"` syncs after each admission and each removal of delivered
//!   entries; a flusher thread syncs whatever is left every interval, so nothing stays
//!   undurable for longer than that. Unsynced commits live in this process's memory: a crash
//!   loses them as a power cut does.
//! - **A failed write.** redb refuses every later operation once a write failed (a full disk,
//!   say). The engine then closes the file and opens it again on the next call, at most once a
//!   second, until it succeeds: the process never has to restart for it. What the reopened file
//!   holds is its last durable commit; removals of delivered entries committed after it are
//!   applied again (see [`Removals`]), so nothing delivered comes back.
//! - **Sequence numbers** for outbox entries, increasing across every outbox, persisted in the
//!   `meta` table by the transaction that uses them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};

use super::StoreError;

/// The database file, in `store.path`.
pub(super) const FILE: &str = "store.redb";
/// What a store written by this version says it is (in `meta`, under `format`). redb's majors
/// change its file format; a store that says anything else is refused, not read.
pub(super) const FORMAT: &str = "mxc-relay store 1 (redb 5)";

pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format";
const NEXT_SEQ_KEY: &str = "next_seq";

/// How long a closed database waits between two attempts to open it again.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// Opens the database: the file, in production; a test's backend that can lose power.
pub(super) type Opener = Box<dyn Fn() -> Result<Database, String> + Send + Sync>;

pub(super) struct Engine {
    dir: PathBuf,
    file: PathBuf,
    open: Opener,
    /// `None` while closed after a failed write (see the module doc).
    db: RwLock<Option<Database>>,
    /// Why it was closed, and when it was last tried again.
    broken: Mutex<Option<(String, Instant)>>,
    /// Commits made so far; `durable` is how many of them were on disk at the last sync (held
    /// by the sync that moves it; `durable_mark` is the same, for a reopen to read).
    committed: AtomicU64,
    durable: Mutex<u64>,
    durable_mark: AtomicU64,
    /// Commits a reopen lost (those after its last durable one): `(after, upto]`. A sync for
    /// one of them fails instead of calling it durable.
    lost: Mutex<Vec<(u64, u64)>>,
    next_seq: AtomicU64,
    removals: Removals,
    /// Admissions under way (see [`Engine::admitting`]).
    admitting: Arc<AtomicUsize>,
}

/// An admission under way: counted from before its blocking write is spawned until the write
/// is over, so that one whose caller was aborted (a poller stopped mid-cycle) still counts
/// until it has committed or failed.
pub(super) struct Admitting(Arc<AtomicUsize>);

impl Drop for Admitting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Removals of delivered entries not known to be durable, per outbox table: applied again after
/// a reopen (the reopened file holds only its last durable commit), and, for those whose write
/// failed, hidden from readers until they are written.
#[derive(Default)]
struct Removals {
    /// Committed without an fsync since the last sync, with the commit count they were made at.
    committed: Mutex<Vec<(u64, String, Vec<u64>)>>,
    /// Their write failed: still in the file, delivered all the same.
    failed: Mutex<BTreeMap<String, std::collections::BTreeSet<u64>>>,
}

impl Engine {
    /// Opens (or creates) the database in `dir`.
    pub(super) fn open(dir: &Path, cache_bytes: usize) -> Result<Engine, StoreError> {
        let file = dir.join(FILE);
        let opener: Opener = Box::new(move || open_file(&file, cache_bytes));
        Engine::open_with(dir, opener)
    }

    /// [`Engine::open`] with what opens the database.
    pub(super) fn open_with(dir: &Path, open: Opener) -> Result<Engine, StoreError> {
        let open_error = |detail: String| StoreError::Open {
            path: dir.to_path_buf(),
            detail,
        };
        if let Some(found) = previous_engine(dir) {
            return Err(open_error(format!(
                "it holds a store written by an earlier mxc-relay (sled: {found}), which this version cannot read. \
                 Let the earlier version deliver what its outboxes hold (`mxc-relay run` until `state` shows them empty), \
                 then move the directory aside and start again with an empty store.path (docs/operating/upgrading.md)"
            )));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| open_error(format!("cannot create the directory: {e}")))?;
        let db = open().map_err(open_error)?;
        let next_seq = check_format(&db).map_err(open_error)?;
        Ok(Engine {
            dir: dir.to_path_buf(),
            file: dir.join(FILE),
            open,
            db: RwLock::new(Some(db)),
            broken: Mutex::new(None),
            committed: AtomicU64::new(0),
            durable: Mutex::new(0),
            durable_mark: AtomicU64::new(0),
            lost: Mutex::new(Vec::new()),
            next_seq: AtomicU64::new(next_seq),
            removals: Removals::default(),
            admitting: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Counts an admission as under way until the guard is dropped.
    pub(super) fn admitting(&self) -> Admitting {
        self.admitting.fetch_add(1, Ordering::AcqRel);
        Admitting(self.admitting.clone())
    }

    /// How many admissions are under way.
    pub(super) fn admissions_under_way(&self) -> usize {
        self.admitting.load(Ordering::Acquire)
    }

    /// The database file.
    pub(super) fn file(&self) -> &Path {
        &self.file
    }

    /// Runs `read` in a read transaction (a consistent snapshot).
    pub(super) fn read<T>(
        &self,
        operation: &'static str,
        read: impl FnOnce(&ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let db = self.database(operation)?;
        let result = match db.as_ref() {
            Some(db) => db
                .begin_read()
                .map_err(redb::Error::from)
                .and_then(|t| read(&t)),
            None => Err(redb::Error::DatabaseClosed),
        };
        drop(db);
        result.map_err(|e| self.failed(operation, e))
    }

    /// Runs `write` in a write transaction and commits it (not yet durable: see [`Engine::sync`]).
    pub(super) fn write<T>(
        &self,
        operation: &'static str,
        write: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        self.write_counted(operation, write).map(|(value, _)| value)
    }

    /// [`Engine::write`], also returning the commit's number (for [`Engine::sync_upto`]).
    pub(super) fn write_counted<T>(
        &self,
        operation: &'static str,
        write: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<(T, u64), StoreError> {
        let db = self.database(operation)?;
        let result = match db.as_ref() {
            Some(db) => (|| {
                let mut txn = db.begin_write()?;
                txn.set_durability(Durability::None)?;
                let value = write(&txn)?;
                txn.commit()?;
                Ok(value)
            })(),
            None => Err(redb::Error::DatabaseClosed),
        };
        // Counted under the read lock, so that a reopen cannot fall between commit and count.
        let counted = result.map(|v| (v, self.committed.fetch_add(1, Ordering::AcqRel) + 1));
        drop(db);
        counted.map_err(|e| self.failed(operation, e))
    }

    /// Makes every commit so far durable (one fsync'd commit for all the callers waiting).
    /// Blocking: call it off the async threads.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        self.sync_upto(self.committed.load(Ordering::Acquire))
    }

    /// Makes commits up to number `target` durable (see [`Engine::sync`]); fails if a reopen
    /// lost one of them.
    pub(super) fn sync_upto(&self, target: u64) -> Result<(), StoreError> {
        let lost = |target: u64| {
            lock(&self.lost)
                .iter()
                .any(|(after, upto)| *after < target && target <= *upto)
        };
        let mut durable = lock(&self.durable);
        if lost(target) {
            return Err(self.closed(
                "sync",
                "lost when the store was opened again after a failed write",
            ));
        }
        if *durable >= target {
            return Ok(());
        }
        let db = self.database("sync")?;
        let result = match db.as_ref() {
            Some(db) => {
                // Whatever was committed before this transaction began is durable with it.
                let upto = self.committed.load(Ordering::Acquire);
                (|| {
                    // Without redb's quick repair: it doubled the fsyncs and half again the CPU
                    // of a durable batch, and a full repair after a crash opens a store of a
                    // million seen ids in under half a second (the coldstart benchmark).
                    let txn = db.begin_write()?;
                    txn.commit()?;
                    Ok::<_, redb::Error>(upto)
                })()
            }
            None => Err(redb::Error::DatabaseClosed),
        };
        drop(db);
        let upto = result.map_err(|e| self.failed("sync", e))?;
        if lost(target) {
            // Lost to a reopen while this sync waited for the database.
            return Err(self.closed(
                "sync",
                "lost when the store was opened again after a failed write",
            ));
        }
        *durable = upto;
        self.durable_mark.store(upto, Ordering::Release);
        lock(&self.removals.committed).retain(|(at, _, _)| *at > upto);
        Ok(())
    }

    /// Whether commits are waiting for a sync.
    pub(super) fn dirty(&self) -> bool {
        *lock(&self.durable) < self.committed.load(Ordering::Acquire)
    }

    /// Removes delivered entries from an outbox table (see [`Removals`]); returns the commit's
    /// number. A removal that fails is kept and written with the next one, or after a reopen.
    pub(super) fn remove(
        &self,
        table: &str,
        seqs: &[u64],
        also: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<u64, StoreError> {
        let mut all: Vec<u64> = seqs.to_vec();
        if let Some(failed) = lock(&self.removals.failed).remove(table) {
            all.extend(failed);
        }
        let outcome = self.write_counted("remove delivered", |txn| {
            let mut outbox = txn.open_table(TableDefinition::<u64, &[u8]>::new(table))?;
            for seq in &all {
                outbox.remove(seq)?;
            }
            drop(outbox);
            also(txn)
        });
        match outcome {
            Ok(((), at)) => {
                lock(&self.removals.committed).push((at, table.to_string(), all));
                Ok(at)
            }
            Err(e) => {
                lock(&self.removals.failed)
                    .entry(table.to_string())
                    .or_default()
                    .extend(all);
                Err(e)
            }
        }
    }

    /// Whether an entry was delivered but its removal is not written yet.
    pub(super) fn removed(&self, table: &str, seq: u64) -> bool {
        lock(&self.removals.failed)
            .get(table)
            .is_some_and(|s| s.contains(&seq))
    }

    /// How many entries of `table` are delivered but not removed yet.
    pub(super) fn removed_len(&self, table: &str) -> usize {
        lock(&self.removals.failed)
            .get(table)
            .map_or(0, |s| s.len())
    }

    /// A sequence number for an outbox entry, above every one before. Only inside a write
    /// transaction, which must then [`Engine::save_seq`] before it commits.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::AcqRel)
    }

    /// Records in `meta` the sequence numbers handed out, so that a reopened store goes on
    /// above them.
    pub(super) fn save_seq(&self, txn: &WriteTransaction) -> Result<(), redb::Error> {
        let next = self.next_seq.load(Ordering::Acquire);
        txn.open_table(META)?
            .insert(NEXT_SEQ_KEY, next.to_be_bytes().as_slice())?;
        Ok(())
    }

    /// A number above every sequence number handed out so far, and below every later one.
    pub(super) fn watermark(&self) -> Result<u64, StoreError> {
        // Inside a write transaction: none is half-way through handing numbers out.
        self.write("watermark", |txn| {
            let mark = self.next_seq();
            self.save_seq(txn)?;
            Ok(mark)
        })
    }

    /// The open database, opened again first if a failed write closed it.
    fn database(
        &self,
        operation: &'static str,
    ) -> Result<RwLockReadGuard<'_, Option<Database>>, StoreError> {
        {
            let db = self.db.read().unwrap_or_else(|e| e.into_inner());
            if db.is_some() {
                return Ok(db);
            }
        }
        self.reopen(operation)?;
        Ok(self.db.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Opens the closed database again, at most once per [`REOPEN_EVERY`], and writes again the
    /// removals it no longer holds.
    fn reopen(&self, operation: &'static str) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        if db.is_some() {
            return Ok(());
        }
        let mut broken = lock(&self.broken);
        let why = broken
            .as_ref()
            .map(|(why, _)| why.clone())
            .unwrap_or_default();
        if let Some((_, tried)) = broken.as_ref() {
            if tried.elapsed() < REOPEN_EVERY {
                return Err(self.closed(operation, &why));
            }
        }
        *broken = Some((why.clone(), Instant::now()));
        let opened = (self.open)().and_then(|reopened| {
            self.rewrite_removals(&reopened)
                .map_err(|e| format!("write the removals again: {e}"))?;
            Ok(reopened)
        });
        match opened {
            Ok(reopened) => {
                // What was committed after the last sync is not in the file.
                let after = self.durable_mark.load(Ordering::Acquire);
                let upto = self.committed.load(Ordering::Acquire);
                if upto > after {
                    lock(&self.lost).push((after, upto));
                }
                *db = Some(reopened);
                *broken = None;
                tracing::warn!(store = %self.dir.display(), after = %why,
                    "store open again after a failed write: admissions resume from the cursors, nothing admitted before it was lost");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(store = %self.dir.display(), error = %e, "the store cannot be opened again yet; trying again in a second");
                Err(self.closed(operation, &format!("{why}; opening it again: {e}")))
            }
        }
    }

    /// One durable transaction with every removal the reopened file may not hold.
    fn rewrite_removals(&self, db: &Database) -> Result<(), redb::Error> {
        let mut committed = lock(&self.removals.committed);
        let mut failed = lock(&self.removals.failed);
        let txn = db.begin_write()?;
        let failed_ones = failed.iter().map(|(t, s)| (t, s.iter().copied().collect()));
        let all: Vec<(&String, Vec<u64>)> = committed
            .iter()
            .map(|(_, t, s)| (t, s.clone()))
            .chain(failed_ones)
            .collect();
        for (table, seqs) in all {
            let mut outbox = txn.open_table(TableDefinition::<u64, &[u8]>::new(table))?;
            for seq in seqs {
                outbox.remove(seq)?;
            }
        }
        txn.commit()?;
        committed.clear();
        failed.clear();
        Ok(())
    }

    /// The error of an operation that failed; if redb will refuse everything after it, the
    /// database is closed, to be opened again by the next call.
    fn failed(&self, operation: &'static str, error: redb::Error) -> StoreError {
        if matches!(
            error,
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
        ) {
            let mut broken = lock(&self.broken);
            if broken.is_none() {
                tracing::error!(store = %self.dir.display(), %operation, %error,
                    "a store write failed: the store closes and opens again once it can (polling pauses; deliveries go on after it)");
                // Tried at once by the next call.
                let long_ago = Instant::now()
                    .checked_sub(REOPEN_EVERY)
                    .unwrap_or_else(Instant::now);
                *broken = Some((error.to_string(), long_ago));
            }
            drop(broken);
            let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
            *db = None;
        }
        StoreError::Io {
            path: self.dir.clone(),
            operation,
            source: error,
        }
    }

    fn closed(&self, operation: &'static str, why: &str) -> StoreError {
        StoreError::Closed {
            path: self.dir.clone(),
            operation,
            why: why.to_string(),
        }
    }
}

/// Opens the database file, saying why not in words an operator can act on.
fn open_file(file: &Path, cache_bytes: usize) -> Result<Database, String> {
    Database::builder()
        .set_cache_size(cache_bytes)
        .create(file)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => format!(
                "in use by another mxc-relay process ({} is locked)",
                file.display()
            ),
            redb::DatabaseError::UpgradeRequired(version) => format!(
                "{} is in redb's file format {version}, which this version of mxc-relay cannot read (docs/operating/upgrading.md)",
                file.display()
            ),
            other => format!("{}: {other}", file.display()),
        })
}

/// Checks (or, in a new store, writes) what the store says it is; returns its next sequence
/// number.
fn check_format(db: &Database) -> Result<u64, String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    let next_seq = {
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let format = meta
            .get(FORMAT_KEY)
            .map_err(|e| e.to_string())?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned());
        match format {
            Some(f) if f == FORMAT => {}
            Some(other) => {
                return Err(format!(
                    "it holds a store in the format {other:?}, which this version (it reads {FORMAT:?}) cannot read (docs/operating/upgrading.md)"
                ))
            }
            None if meta.len().map_err(|e| e.to_string())? == 0 => {
                meta.insert(FORMAT_KEY, FORMAT.as_bytes())
                    .map_err(|e| e.to_string())?;
            }
            None => return Err("its meta table has no format: not a store mxc-relay wrote".into()),
        }
        let next = meta
            .get(NEXT_SEQ_KEY)
            .map_err(|e| e.to_string())?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map_or(1, u64::from_be_bytes);
        next
    };
    txn.commit().map_err(|e| e.to_string())?;
    Ok(next_seq)
}

/// A file that only sled (the engine before redb) writes in a store directory, if one is there.
fn previous_engine(dir: &Path) -> Option<String> {
    ["conf", "db", "blobs", "bodies"]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.exists())
        .map(|p| p.display().to_string())
}

/// Syncs every `every` whatever was committed since the last sync, until the engine is dropped.
pub(super) fn spawn_flusher(engine: &Arc<Engine>, every: Duration) {
    let engine = Arc::downgrade(engine);
    let spawned = std::thread::Builder::new()
        .name("store flusher".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(engine) = engine.upgrade() else {
                return;
            };
            if engine.dirty() {
                if let Err(e) = engine.sync() {
                    tracing::error!(error = %e, "periodic store sync failed");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the store flusher: writes reach the disk only when a batch is admitted");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
