//! Membership of the consumer group on the control topic, on a thread of its own: the group
//! decides which shards (partitions) this instance owns. A revocation blocks the group's
//! rebalance until this instance has stopped polling those shards and handed their state over,
//! so no two instances poll a merchant at once in steady state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::TopicPartitionList;
use tokio::sync::mpsc::UnboundedSender;

use super::{kafka_config, ClusterError};
use crate::config::ClusterConfig;

/// A change of this instance's shards.
#[derive(Debug)]
pub enum Change {
    /// Stop polling these shards and hand them over; then say so on `done`.
    Revoke {
        shards: Vec<u32>,
        done: mpsc::Sender<()>,
    },
    /// Start polling these shards too.
    Assign { shards: Vec<u32> },
}

struct Context {
    changes: UnboundedSender<Change>,
    /// The longest a revocation may hold the rebalance.
    revoke_within: Duration,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let shards = shards(list);
            if shards.is_empty() {
                return;
            }
            tracing::info!(shards = ?shards, "the group revokes shards");
            let (done, finished) = mpsc::channel();
            if self.changes.send(Change::Revoke { shards, done }).is_ok() {
                // Blocks the group until the shards are handed over (or the owner is gone).
                let _ = finished.recv_timeout(self.revoke_within);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let shards = shards(list);
                if !shards.is_empty() {
                    let _ = self.changes.send(Change::Assign { shards });
                }
            }
            Rebalance::Error(error) => tracing::warn!(%error, "cluster rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

fn shards(list: &TopicPartitionList) -> Vec<u32> {
    list.elements()
        .iter()
        .map(|e| e.partition().max(0) as u32)
        .collect()
}

/// Makes the member leave the group without waiting for it (see [`Membership::leaver`]).
#[derive(Clone)]
pub struct Leaver(Arc<AtomicBool>);

impl Leaver {
    pub fn leave(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// This instance's membership; leaving the group when dropped (or stopped).
pub struct Membership {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Membership {
    /// Joins the group on the control topic; changes of shards arrive on `changes`.
    pub fn join(
        config: &ClusterConfig,
        changes: UnboundedSender<Change>,
        revoke_within: Duration,
    ) -> Result<Membership, ClusterError> {
        let session = config.session_timeout.as_millis().max(6000);
        let consumer: BaseConsumer<Context> = kafka_config(config)
            .set("group.id", &config.group)
            .set("client.id", config.instance_name())
            .set("session.timeout.ms", session.to_string())
            // Heartbeats are also how a member learns of a rebalance: often enough that a
            // handover takes a second or two, not several.
            .set(
                "heartbeat.interval.ms",
                (session / 10).clamp(300, 1000).to_string(),
            )
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .create_with_context(Context {
                changes,
                revoke_within,
            })
            .map_err(|e| ClusterError::Kafka(format!("group {}: {e}", config.group)))?;
        consumer
            .subscribe(&[&config.control_topic])
            .map_err(|e| ClusterError::Kafka(format!("topic {}: {e}", config.control_topic)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cluster-member".into())
            .spawn(move || {
                // Nothing is written to the control topic: polling serves the group protocol
                // (heartbeats, rebalances and their callbacks).
                while !flag.load(Ordering::Relaxed) {
                    if let Some(Err(error)) = consumer.poll(Duration::from_millis(100)) {
                        tracing::warn!(%error, "cluster membership");
                    }
                }
                // Leaving: the group rebalances at once instead of after the session timeout.
                consumer.unsubscribe();
                for _ in 0..20 {
                    let _ = consumer.poll(Duration::from_millis(50));
                }
            })
            .map_err(|e| ClusterError::Kafka(format!("cannot start the member thread: {e}")))?;
        Ok(Membership {
            stop,
            thread: Some(thread),
        })
    }

    /// A handle that starts leaving the group: a stopping instance leaves first and polls its
    /// shards until the others claim them.
    pub fn leaver(&self) -> Leaver {
        Leaver(self.stop.clone())
    }

    /// Leaves the group (blocking until the member thread ends).
    pub fn leave(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.leave();
    }
}
