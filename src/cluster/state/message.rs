//! What the state topic carries and where: each merchant's delivered state, each instance's
//! status, and the partition every message goes to.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A message of the state topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StateMessage {
    /// One merchant's delivered state for one resource.
    Merchant(MerchantState),
    /// An instance: its shards and merchants, now.
    Instance(InstanceStatus),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MerchantState {
    /// The instance that polled it.
    pub instance: String,
    /// That instance's process (a fresh id per start): what a reader skips as its own.
    #[serde(default)]
    pub run: String,
    pub xmid: String,
    /// The store's cursor key (`XMID`, `disputes/XMID` …).
    pub key: String,
    pub position: DateTime<Utc>,
    pub floor: DateTime<Utc>,
    /// Seen-set keys of the records admitted in its last window.
    pub seen: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub instance: String,
    pub shards: Vec<u32>,
    pub merchants: usize,
    pub at: DateTime<Utc>,
    /// Set by an instance leaving the group.
    pub stopped: bool,
    /// Its shards' merchants and their poll lag (absent from older versions).
    #[serde(default)]
    pub lag: Vec<ShardLag>,
    /// Shards the group took from it that it still polls until their next owner claims them
    /// (lists them in `shards`); the next owner starts once they leave this list.
    #[serde(default)]
    pub releasing: Vec<u32>,
    /// Stopping: it claims nothing (several stopping at once do not wait for each other).
    #[serde(default)]
    pub leaving: bool,
}

/// One shard's merchants as its owner sees them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardLag {
    pub shard: u32,
    pub merchants: usize,
    /// The longest since a merchant's cursor moved, in seconds.
    pub max_lag_s: f64,
}

impl StateMessage {
    /// The message's key: `merchant/CURSOR_KEY` or `instance/NAME`.
    pub fn key(&self) -> String {
        match self {
            StateMessage::Merchant(m) => format!("merchant/{}", m.key),
            StateMessage::Instance(i) => format!("instance/{}", i.instance),
        }
    }
}

/// Where the state topic's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One partition per shard (1 + shard) after the instances' (0): a shard's merchants are
    /// read alone, and `cluster status` reads partition 0 only.
    ByShard { shards: u32 },
    /// A topic made otherwise (by an older version): partitions by key, every one read.
    Mixed { partitions: i32 },
}

impl Layout {
    /// The layout of a state topic of `partitions` beside a control topic of `shards`.
    pub fn of(partitions: i32, shards: u32) -> Layout {
        if i64::from(partitions) == i64::from(shards) + 1 {
            Layout::ByShard { shards }
        } else {
            Layout::Mixed { partitions }
        }
    }

    /// The partition a message goes to (`None`: by its key).
    pub(super) fn partition_of(&self, message: &StateMessage) -> Option<i32> {
        let Layout::ByShard { shards } = *self else {
            return None;
        };
        Some(match message {
            StateMessage::Instance(_) => 0,
            StateMessage::Merchant(m) => 1 + crate::cluster::shard_of(&m.xmid, shards) as i32,
        })
    }

    /// The partitions holding these shards' merchants.
    pub(super) fn partitions_of(&self, shards: &[u32]) -> Vec<i32> {
        match *self {
            Layout::ByShard { .. } => shards.iter().map(|s| 1 + *s as i32).collect(),
            Layout::Mixed { partitions } => (0..partitions).collect(),
        }
    }

    /// The partitions holding the instances' statuses.
    pub(super) fn status_partitions(&self) -> Vec<i32> {
        match *self {
            Layout::ByShard { .. } => vec![0],
            Layout::Mixed { partitions } => (0..partitions).collect(),
        }
    }
}
