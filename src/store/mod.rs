//! The local store (sled): seen record ids with a retention, per-XMID cursors, one outbox per
//! sink with its dead letters and the retry state of its failing entries, and the state of
//! webhook endpoints (disabled or not).
//!
//! `admit` is the heart of the guarantees: in one transaction, every record not seen before is
//! marked seen *and* enqueued for each sink its routes select, and the cursors move. A record
//! is never marked seen without its outbox entries, and a cursor never moves past records that
//! were not admitted.

mod handover;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Transactional, Tree};
use tokio::sync::Notify;

use crate::config::{Durability, StoreConfig};
use crate::route::Event;

const SEEN: &str = "seen";
const SEEN_BY_TIME: &str = "seen_by_time";
const CURSORS: &str = "cursors";
const OUTBOX_PREFIX: &str = "outbox/";
const DEAD_PREFIX: &str = "dead/";
const ATTEMPTS_PREFIX: &str = "attempts/";
const ENDPOINTS: &str = "endpoints";
/// Checkpoints of long jobs (backfills), keyed by the job.
const CHECKPOINTS: &str = "checkpoints";

/// Flushes in flight, process-wide: one. sled runs `flush_async` on its small global thread
/// pool, whose threads also write the log buffers those flushes wait for; with every pool
/// thread waiting in a flush (or, behind a transaction, for the lock a flush holds) nothing
/// writes them and the process hangs — seen with 10,000 pollers of one XMID each. One at a
/// time leaves the pool free; a flush that waited finds its writes durable already and
/// returns at once (a group commit).
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
    durability: Durability,
    min_free_mib: u64,
    seen: Tree,
    seen_by_time: Tree,
    cursors: Tree,
    endpoints: Tree,
    checkpoints: Tree,
    outboxes: BTreeMap<String, Sink>,
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
        Store::on(db, path, config, sinks)
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
            self.inner.path.clone(),
            &config.store,
            &sinks,
        )
    }

    fn on(
        db: sled::Db,
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
            outboxes,
            durability: config.durability,
            min_free_mib: config.min_free_mib,
            db,
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
        let now = Utc::now().timestamp_millis();
        let sink_names: Vec<&String> = self.inner.outboxes.keys().collect();
        let mut trees: Vec<Tree> = vec![
            self.inner.seen.clone(),
            self.inner.seen_by_time.clone(),
            self.inner.cursors.clone(),
        ];
        trees.extend(self.inner.outboxes.values().map(|s| s.outbox.clone()));
        // Encode outside the transaction: its closure may run more than once.
        let mut encoded: Vec<(&Admission, Vec<EncodedEvent>)> =
            Vec::with_capacity(admissions.len());
        for admission in admissions {
            let mut events = Vec::with_capacity(admission.events.len());
            for event in &admission.events {
                let index = sink_names
                    .iter()
                    .position(|s| **s == event.sink)
                    .ok_or_else(|| StoreError::UnknownSink(event.sink.clone()))?;
                let bytes = encode_event(event);
                events.push((index, bytes));
            }
            encoded.push((admission, events));
        }
        let result = trees[..].transaction(|t| {
            let (seen, by_time, cursor_tree) = (&t[0], &t[1], &t[2]);
            let mut outcome = AdmitOutcome::default();
            for (admission, events) in &encoded {
                if seen.get(admission.record_id.as_bytes())?.is_some() {
                    outcome.duplicate += 1;
                    continue;
                }
                seen.insert(admission.record_id.as_bytes(), &now.to_be_bytes())?;
                by_time.insert(time_key(now, &admission.record_id), &[])?;
                for ((index, bytes), event) in events.iter().zip(&admission.events) {
                    let seq = t[3 + index].generate_id()?;
                    t[3 + index].insert(&seq.to_be_bytes(), bytes.as_slice())?;
                    let key = (sink_names[*index].clone(), event.event_type.clone());
                    *outcome.enqueued.entry(key).or_default() += 1;
                }
                outcome.new += 1;
            }
            for (xmid, cursor) in cursors {
                cursor_tree.insert(xmid.as_bytes(), &encode_cursor(cursor))?;
            }
            Ok::<_, ConflictableTransactionError<()>>(outcome)
        });
        let outcome = match result {
            Ok(outcome) => outcome,
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

    /// Writes everything to disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        // Never closed: `acquire` cannot fail.
        let _one = FLUSHES.acquire().await;
        self.inner
            .db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(self.io("flush"))
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
            let event = decode_event(&v)
                .map_err(|e| self.corrupt("outbox", &format!("{sink}/{seq}"), &e))?;
            out.push(Entry { seq, event });
        }
        Ok(out)
    }

    /// Removes delivered entries (and their retry state).
    pub fn remove(&self, sink: &str, seqs: &[u64]) -> Result<(), StoreError> {
        let s = self.sink(sink)?;
        let mut batch = sled::Batch::default();
        for seq in seqs {
            batch.remove(&seq.to_be_bytes());
        }
        s.outbox
            .apply_batch(batch)
            .map_err(self.io("remove delivered"))?;
        // A crash between the two leaves retry state without an entry: ignored when read.
        if !s.attempts.is_empty() {
            let mut batch = sled::Batch::default();
            for seq in seqs {
                batch.remove(&seq.to_be_bytes());
            }
            s.attempts
                .apply_batch(batch)
                .map_err(self.io("remove retry state"))?;
        }
        Ok(())
    }

    /// One outbox entry, if it is still there.
    pub fn entry(&self, sink: &str, seq: u64) -> Result<Option<Entry>, StoreError> {
        let raw = self
            .sink(sink)?
            .outbox
            .get(seq.to_be_bytes())
            .map_err(self.io("read outbox"))?;
        raw.map(|v| {
            decode_event(&v)
                .map(|event| Entry { seq, event })
                .map_err(|e| self.corrupt("outbox", &format!("{sink}/{seq}"), &e))
        })
        .transpose()
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
        let s = self.sink(sink)?;
        let letters: Vec<(u64, DeadLetter)> = self
            .dead_letters(sink)?
            .into_iter()
            .filter(|(_, l)| since.is_none_or(|t| l.failed_at >= t))
            .collect();
        for chunk in letters.chunks(1000) {
            let encoded: Vec<(u64, Vec<u8>)> = chunk
                .iter()
                .map(|(seq, l)| (*seq, encode_event(&l.event)))
                .collect();
            (&s.outbox, &s.dead)
                .transaction(|(outbox, dead)| {
                    for (old_seq, bytes) in &encoded {
                        let seq = outbox.generate_id()?;
                        outbox.insert(&seq.to_be_bytes(), bytes.as_slice())?;
                        dead.remove(&old_seq.to_be_bytes())?;
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(|e| self.transaction_error(e, "replay dead letters", sink))?;
        }
        self.inner.db.flush().map_err(self.io("flush"))?;
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
        (&s.outbox, &s.dead, &s.attempts)
            .transaction(|(outbox, dead, retry)| {
                outbox.remove(&entry.seq.to_be_bytes())?;
                retry.remove(&entry.seq.to_be_bytes())?;
                dead.insert(&entry.seq.to_be_bytes(), bytes.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| self.transaction_error(e, "dead-letter", &entry.event.id))
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
fn encode_event(event: &Event) -> Vec<u8> {
    #[derive(Serialize)]
    struct Head<'a> {
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
    // Serializing borrowed strings cannot fail.
    let mut out = serde_json::to_vec(&head).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(event.body.as_bytes());
    out
}

fn decode_event(bytes: &[u8]) -> Result<Event, String> {
    #[derive(Deserialize)]
    struct Head {
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
    let body = String::from_utf8(bytes[split + 1..].to_vec()).map_err(|e| e.to_string())?;
    Ok(Event {
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
    })
}

fn authorizations() -> String {
    crate::mxc::AUTHORIZATIONS.name.to_string()
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
        assert_eq!(decode_event(&encode_event(&event)), Ok(event));
        assert!(decode_event(b"no newline").is_err());
    }
}
