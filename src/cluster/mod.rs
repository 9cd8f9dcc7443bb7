//! Several instances sharing the merchants through Kafka, the engine the users already run: no
//! coordinator and no election of our own. Each XMID belongs to one shard (a partition of the
//! control topic, by hash); the consumer group on that topic assigns the shards to the
//! instances (`membership`); each instance polls the XMIDs of its shards (`Sharding`), and the
//! merchants' state follows them through the state topic (`state`).

mod membership;
mod sharding;
mod state;

use chrono::{DateTime, Utc};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use sha2::{Digest, Sha256};

pub use membership::{Change, Leaver, Membership};
pub use sharding::Sharding;
pub use state::{
    read_status, Handover, InstanceStatus, Layout, MerchantState, ShardLag, StateMessage, MAX_IDS,
};

use crate::config::kafka::kafka_config;
use crate::config::{ClusterConfig, RosterConfig};
use crate::poll::{Fleet, Pollers};

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
