//! The state topic read outside the tailer: its partitions, their ends, and (for
//! `cluster status`) the instances' latest statuses.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{Layout, StateMessage};
use crate::cluster::{kafka_config, ClusterError};
use crate::config::ClusterConfig;

/// How many partitions `topic` has; an error if none (it does not exist).
pub(in crate::cluster) fn partitions(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<i32, ClusterError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| ClusterError::Kafka(format!("topic {topic}: {e}")))?;
    let n = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0);
    if n == 0 {
        return Err(ClusterError::Kafka(format!(
            "topic {topic} has no partitions"
        )));
    }
    Ok(n)
}

/// The end (the offset the next message will get) of each of `partitions`.
pub(super) fn high_watermarks(
    config: &ClusterConfig,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, i64)>, ClusterError> {
    let consumer: BaseConsumer = kafka_config(config)
        .create()
        .map_err(|e| ClusterError::client(config, e))?;
    partitions
        .iter()
        .map(|&p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(_, high)| (p, high))
                .map_err(|e| ClusterError::Kafka(format!("topic {topic}[{p}]: {e}")))
        })
        .collect()
}

/// The latest message per key of the state topic's instance statuses (its partition 0), or of
/// the whole topic if it is not laid out by shard: for `cluster status`. Blocking.
pub fn read_status(config: &ClusterConfig) -> Result<Vec<StateMessage>, ClusterError> {
    let topic = &config.state_topic;
    let layout = {
        let consumer: BaseConsumer = kafka_config(config)
            .create()
            .map_err(|e| ClusterError::client(config, e))?;
        let shards = partitions(&consumer, &config.control_topic)?;
        Layout::of(partitions(&consumer, topic)?, shards as u32)
    };
    let ends = high_watermarks(config, topic, &layout.status_partitions())?;
    let consumer: BaseConsumer = kafka_config(config)
        .set(
            "group.id",
            format!("mxc-relay-status-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| ClusterError::client(config, e))?;
    let mut list = TopicPartitionList::new();
    for (p, _) in &ends {
        list.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(|e| ClusterError::client(config, e))?;
    }
    consumer
        .assign(&list)
        .map_err(|e| ClusterError::client(config, e))?;
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut latest: HashMap<String, StateMessage> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends
        .iter()
        .any(|(p, end)| next.get(p).copied().unwrap_or(0) < *end)
    {
        if Instant::now() > deadline {
            return Err(ClusterError::Kafka(format!(
                "reading {topic} took over 60 s"
            )));
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                if let Some(Ok(state)) = m.payload().map(serde_json::from_slice::<StateMessage>) {
                    latest.insert(state.key(), state);
                }
            }
            Some(Err(e)) => return Err(ClusterError::Kafka(format!("{topic}: {e}"))),
            None => {}
        }
    }
    Ok(latest.into_values().collect())
}
