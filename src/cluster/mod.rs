//! Several instances sharing the merchants through Kafka, the engine the users already run: no
//! coordinator and no election of our own. Each XMID belongs to one shard (a partition of the
//! control topic, by hash); the consumer group on that topic assigns the shards to the
//! instances (`membership`); each instance polls the XMIDs of its shards (`Sharding`), and the
//! merchants' state follows them through the state topic (`state`).

mod membership;
mod state;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use membership::{Change, Membership};
pub use state::{
    read_status, Handover, InstanceStatus, Layout, MerchantState, ShardLag, StateMessage, MAX_IDS,
};

use crate::config::kafka::kafka_config;
use crate::config::{ClusterConfig, RosterConfig};
use crate::poll::{Fleet, Ownership, Pollers, Reassign, RosterWatch};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster: {0}")]
    Kafka(String),
    #[error("cluster: {0}")]
    Store(String),
}

impl ClusterError {
    /// A Kafka client failure, naming the brokers it was for.
    fn client(config: &ClusterConfig, error: impl std::fmt::Display) -> ClusterError {
        ClusterError::Kafka(format!("Kafka at {}: {error}", config.brokers))
    }
}

/// The shard of an XMID: the first four bytes of its SHA-256, modulo the number of shards.
/// Stable across instances, versions and platforms.
pub fn shard_of(xmid: &str, shards: u32) -> u32 {
    let digest = Sha256::digest(xmid.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % shards.max(1)
}

/// Creates the control topic (`shards` partitions) and the state topic (compacted) unless
/// they exist; returns the control topic's partition count (the shards, as they really are).
pub async fn ensure_topics(config: &ClusterConfig) -> Result<u32, ClusterError> {
    let admin: AdminClient<DefaultClientContext> = kafka_config(config)
        .create()
        .map_err(|e| ClusterError::client(config, e))?;
    let control = NewTopic::new(
        &config.control_topic,
        config.shards as i32,
        TopicReplication::Fixed(1),
    );
    // One partition per shard after the instances' statuses (see `state::Layout`).
    let state_partitions = config.shards as i32 + 1;
    let state = NewTopic::new(
        &config.state_topic,
        state_partitions,
        TopicReplication::Fixed(1),
    )
    .set("cleanup.policy", "compact");
    let results = admin
        .create_topics(&[control, state], &AdminOptions::new())
        .await
        .map_err(|e| ClusterError::Kafka(format!("brokers {}: {e}", config.brokers)))?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => {
                return Err(ClusterError::Kafka(format!(
                    "cannot create topic {topic}: {e}"
                )))
            }
        }
    }
    let c = config.clone();
    let partitions = tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = kafka_config(&c)
            .create()
            .map_err(|e| ClusterError::client(&c, e))?;
        state::partitions(&consumer, &c.control_topic)
    })
    .await
    .map_err(|e| ClusterError::client(config, e))??;
    Ok(partitions as u32)
}

/// What polling needs to start over for a new set of shards.
pub struct Polling {
    pub pollers: Pollers,
    /// Every XMID listed by hand (each instance polls those of its shards).
    pub listed: Vec<String>,
    /// Discovery from the roster, if configured.
    pub roster: Option<RosterConfig>,
    pub start: DateTime<Utc>,
    pub fleet: Fleet,
}

/// Keeps this instance polling exactly the XMIDs of the shards it owns, as the group changes
/// them, and publishes their delivered state. Each shard's listed XMIDs have their own poller
/// tasks, so a change touches only the shards that move; the roster's merchants (if any) are
/// watched by one roster task, started again on each change.
pub struct Sharding {
    pub changes: UnboundedReceiver<Change>,
    pub handover: Handover,
    /// The control topic's partitions.
    pub shards: u32,
    pub state_interval: Duration,
    /// How long a revoked shard's deliveries may take before it is handed over anyway.
    pub handover_within: Duration,
}

/// Tasks with their stop switch.
struct Tasks {
    stop: CancellationToken,
    set: JoinSet<()>,
}

impl Tasks {
    fn new(parent: &CancellationToken) -> Tasks {
        Tasks {
            stop: parent.child_token(),
            set: JoinSet::new(),
        }
    }

    /// Stops them (a poll in progress is dropped: its admitted pages stay, its cursor does not
    /// move, and its state is not published).
    async fn halt(mut self) {
        self.stop.cancel();
        self.set.abort_all();
        while self.set.join_next().await.is_some() {}
    }
}

impl Sharding {
    pub async fn run(mut self, polling: Polling, stop: CancellationToken) {
        let mut owned: BTreeMap<u32, Tasks> = BTreeMap::new();
        // Nothing owned yet: nothing of the key's budget spent.
        polling.pollers.budget.share(0, self.shards as usize);
        // The roster is read from the start, so merchants assigned are polled at once.
        let roster = self.watch_roster(&polling, &stop);
        let mut tick = tokio::time::interval(self.state_interval);
        loop {
            tokio::select! {
                // Changes first: a revocation holds the whole group.
                biased;
                _ = stop.cancelled() => break,
                change = self.changes.recv() => match change {
                    None => break,
                    Some(Change::Revoke { shards, done }) => {
                        let gone: HashSet<String> = polling.fleet.xmids().iter()
                            .filter(|x| shards.contains(&shard_of(x, self.shards)))
                            .cloned()
                            .collect();
                        for shard in &shards {
                            if let Some(tasks) = owned.remove(shard) {
                                tasks.halt().await;
                            }
                        }
                        self.reassign(&roster, &owned, &polling).await;
                        // Before the group may give them to another: the fleet's shares never
                        // add up to more than the key's budget.
                        polling.pollers.budget.share(owned.len(), self.shards as usize);
                        self.handover.finish(&gone, self.handover_within).await;
                        polling.pollers.metrics.cluster_shard_changes
                            .with_label_values(&["revoked"])
                            .inc_by(shards.len() as u64);
                        tracing::info!(shards = ?shards, merchants = gone.len(), "shards revoked and handed over");
                        let _ = done.send(());
                        self.status(&owned, &polling, false).await;
                    }
                    Some(Change::Assign { shards }) => {
                        // Resume from what the last owners published.
                        // Until then, nothing of these shards is polled: starting from a local or
                        // fresh cursor could skip what the last owner never delivered.
                        let reading = std::time::Instant::now();
                        while !self.handover.catch_up(&shards, Duration::from_secs(60)).await {
                            if stop.is_cancelled() {
                                break;
                            }
                            tracing::warn!(shards = ?shards, "the state topic could not be read to its end; trying again before polling these shards");
                        }
                        let caught_up_ms = reading.elapsed().as_millis() as u64;
                        let owning = owned.keys().chain(&shards).collect::<HashSet<_>>().len();
                        polling.pollers.budget.share(owning, self.shards as usize);
                        for shard in shards.iter().copied() {
                            if let Entry::Vacant(slot) = owned.entry(shard) {
                                slot.insert(self.poll_shard(&polling, shard, &stop).await);
                            }
                        }
                        self.reassign(&roster, &owned, &polling).await;
                        polling.pollers.metrics.cluster_shard_changes
                            .with_label_values(&["assigned"])
                            .inc_by(shards.len() as u64);
                        tracing::info!(assigned = ?shards, owned = owned.len(), merchants = polling.fleet.xmids().len(), caught_up_ms,
                            requests_per_second = polling.pollers.budget.requests_per_second(), "shards assigned");
                        self.status(&owned, &polling, false).await;
                    }
                },
                _ = tick.tick() => {
                    if let Err(error) = self.handover.publish_delivered().await {
                        tracing::warn!(%error, "cannot publish merchant states");
                    }
                    self.status(&owned, &polling, false).await;
                }
            }
        }
        // Stopping: hand everything over before leaving the group.
        let all: HashSet<String> = polling.fleet.xmids().iter().cloned().collect();
        for tasks in std::mem::take(&mut owned)
            .into_values()
            .chain(roster.map(|(tasks, _)| tasks))
        {
            tasks.halt().await;
        }
        self.handover.finish(&all, self.handover_within).await;
        self.status(&owned, &polling, true).await;
    }

    async fn status(&self, owned: &BTreeMap<u32, Tasks>, polling: &Polling, stopped: bool) {
        polling
            .pollers
            .metrics
            .cluster_shards
            .set(owned.len() as i64);
        let lag = self.lag(polling).await;
        self.handover
            .publish_status(
                owned.keys().copied().collect(),
                polling.fleet.xmids().len(),
                stopped,
                lag,
            )
            .await;
    }

    /// Each owned shard's merchants and their longest poll lag, from the local cursors (so
    /// `cluster status` reads the instances' statuses, not every merchant's state).
    async fn lag(&self, polling: &Polling) -> Vec<ShardLag> {
        let xmids = polling.fleet.xmids();
        let keys: Vec<(u32, String)> = xmids
            .iter()
            .flat_map(|x| {
                let shard = shard_of(x, self.shards);
                polling.pollers.cursor_keys(x).map(move |k| (shard, k))
            })
            .collect();
        let per_xmid = polling.pollers.config.resources.len().max(1);
        let store = polling.pollers.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            let cursors = store.cursors_of(&keys.iter().map(|(_, k)| k.clone()).collect::<Vec<_>>())?;
            let now = Utc::now();
            let mut lag: BTreeMap<u32, ShardLag> = BTreeMap::new();
            for (chunk, cursors) in keys.chunks(per_xmid).zip(cursors.chunks(per_xmid)) {
                let Some((shard, _)) = chunk.first() else { continue };
                let entry = lag.entry(*shard).or_insert(ShardLag {
                    shard: *shard,
                    merchants: 0,
                    max_lag_s: 0.0,
                });
                entry.merchants += 1;
                for cursor in cursors.iter().flatten() {
                    let seconds = (now - cursor.position).num_milliseconds().max(0) as f64 / 1000.0;
                    entry.max_lag_s = entry.max_lag_s.max(seconds);
                }
            }
            Ok::<_, crate::store::StoreError>(lag.into_values().collect())
        })
        .await;
        match read {
            Ok(Ok(lag)) => lag,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot read the cursors for this instance's status");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    /// The listed XMIDs of the owned shards.
    fn listed(&self, polling: &Polling, owned: impl Fn(u32) -> bool) -> Vec<String> {
        polling
            .listed
            .iter()
            .filter(|x| owned(shard_of(x, self.shards)))
            .cloned()
            .collect()
    }

    /// Starts polling one shard's listed XMIDs at once, longest waiting first (a shard taken
    /// over has waited enough).
    async fn poll_shard(&self, polling: &Polling, shard: u32, stop: &CancellationToken) -> Tasks {
        let mut tasks = Tasks::new(stop);
        let xmids = self.listed(polling, |s| s == shard);
        if let Err(error) = polling.pollers.init_cursors(&xmids, polling.start).await {
            tracing::error!(%error, shard, "cannot record the shard's new cursors; its merchants start where their cursors are");
        }
        if let Err(error) = polling
            .pollers
            .spawn_takeover(&xmids, &mut tasks.set, &tasks.stop)
        {
            tracing::error!(%error, shard, "cannot order the shard's merchants by their wait; they start spread over an interval");
            polling.pollers.spawn(&xmids, &mut tasks.set, &tasks.stop);
        }
        let mut fleet: Vec<String> = polling.fleet.xmids().iter().cloned().collect();
        fleet.extend(xmids);
        polling.fleet.set(fleet);
        tasks
    }

    /// The roster task, if the roster is used: started once, owning nothing until the group
    /// assigns shards, and told of every change (it keeps its last read of the roster, so a
    /// rebalance moves only the merchants of the shards that move).
    fn watch_roster(
        &self,
        polling: &Polling,
        stop: &CancellationToken,
    ) -> Option<(Tasks, UnboundedSender<Reassign>)> {
        let config = polling.roster.as_ref()?;
        let (changes, reassigned) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Tasks::new(stop);
        let watch = RosterWatch {
            pollers: polling.pollers.clone(),
            config: config.clone(),
            listed: polling.listed.clone(),
            start: polling.start,
            fleet: polling.fleet.clone(),
            owns: Some(Arc::new(|_: &str| false)),
            reassigned: Some(reassigned),
        };
        tasks.set.spawn(watch.run(tasks.stop.clone()));
        Some((tasks, changes))
    }

    /// Tells the roster task which merchants are owned now, and waits until those no longer
    /// owned have stopped; without a roster, the fleet is the owned shards' listed XMIDs.
    async fn reassign(
        &self,
        roster: &Option<(Tasks, UnboundedSender<Reassign>)>,
        owned: &BTreeMap<u32, Tasks>,
        polling: &Polling,
    ) {
        let shards = self.shards;
        let owned: BTreeSet<u32> = owned.keys().copied().collect();
        let Some((_, changes)) = roster else {
            polling.fleet.set(self.listed(polling, |s| owned.contains(&s)));
            return;
        };
        let owns: Ownership = Arc::new(move |x: &str| owned.contains(&shard_of(x, shards)));
        let (done, stopped) = tokio::sync::oneshot::channel();
        if changes.send(Reassign { owns, done }).is_ok() {
            // An error: the task is gone (stopping), and polls nothing.
            let _ = stopped.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("887000000001", 32), shard_of("887000000001", 32));
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[shard_of(&format!("8{i:011}"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (850..1150).contains(c)), "{counts:?}");
    }
}
