//! `[store]`: local state and its durability, with defaults and validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::validate::{self, fmt};
use super::{ConfigError, PollersConfig};

/// `[store]`: local state (seen ids, cursors, outbox, dead letters).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// Directory of the store (its database file, `store.redb`); created if missing.
    /// Default: `"data"`.
    pub path: PathBuf,
    /// `batch`: every admitted page, and every removal of delivered events, is on disk (fsync)
    /// before the call returns; concurrent ones share one fsync. A crash or a power cut loses
    /// nothing but the retry state of failing entries written in the last second (their retry
    /// schedule starts over). `interval`: written at once, made durable every
    /// `flush_interval` (less disk work). A crash or power cut loses up to that much work: the
    /// cursors roll back with the pages they cover, so those records are fetched and admitted
    /// again (nothing is lost), and events delivered in that time are delivered again, with the
    /// same ids.
    /// Default: `"batch"`.
    pub durability: Durability,
    /// How often writes are made durable under `durability = "interval"`.
    /// Default: `"100ms"`.
    #[serde(with = "duration")]
    pub flush_interval: Duration,
    /// How long a record id is remembered after admission; must exceed `pollers.look_back`.
    /// Default: `"3d"`.
    #[serde(with = "duration")]
    pub seen_retention: Duration,
    /// Polling pauses (the cursors stay where they are) while the store's file system has
    /// less free space than this, in MiB, and resumes by itself when space returns; delivery
    /// goes on meanwhile. Without the guard (0), a write that meets a full disk closes the
    /// store, which opens itself again once space returns (polling and delivery pause until
    /// then; nothing admitted is lost or repeated).
    /// Default: `64`.
    pub min_free_mib: u64,
    /// Memory for the store's page cache, in MiB (redb's own default is 1 GiB). Beyond it,
    /// pages are read from disk again.
    /// Default: `64`.
    pub cache_mib: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("data"),
            durability: Durability::Batch,
            flush_interval: Duration::from_millis(100),
            seen_retention: Duration::from_secs(3 * 86_400),
            min_free_mib: 64,
            cache_mib: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Batch,
    Interval,
}

impl StoreConfig {
    /// `[store]`'s errors (`pollers`: the retention must outlast what a poll re-reads).
    pub(super) fn validate(&self, pollers: &PollersConfig, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        if self.path.as_os_str().is_empty() {
            error("store.path", "must name a directory".into());
        }
        if self.cache_mib < 8 {
            error(
                "store.cache_mib",
                format!("must be at least 8, got {}", self.cache_mib),
            );
        }

        let re_read = pollers.look_back.saturating_add(pollers.interval);
        if self.seen_retention <= re_read {
            error(
                "store.seen_retention",
                format!(
                    "must be longer than pollers.look_back + pollers.interval ({}), got {}",
                    fmt(re_read),
                    fmt(self.seen_retention)
                ),
            );
        }
        if self.flush_interval < Duration::from_millis(1) {
            error(
                "store.flush_interval",
                format!("must be at least 1ms, got {}", fmt(self.flush_interval)),
            );
        }
    }
}
