//! `[cluster]`: several instances sharing the merchants, with defaults and validation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::validate::{self, fmt};
use super::ConfigError;
use mxc::Secret;

/// `[cluster]`: several instances share the merchants through a Kafka consumer group. The XMIDs
/// are hashed onto the partitions of a control topic (the shards); each instance polls the
/// XMIDs of the partitions the group assigns it, and the merchants' state (cursors, recent ids)
/// moves with them through a compacted state topic. Off (one instance polls every merchant)
/// while `brokers` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`; empty: no cluster.
    /// Default: `""` (no cluster).
    pub brokers: String,
    /// The consumer group every instance joins.
    /// Default: `"mxc-relay"`.
    pub group: String,
    /// The control topic, whose partitions are the shards (created with `shards` partitions if
    /// missing; nothing is written to it).
    /// Default: `"mxc-relay.shards"`.
    pub control_topic: String,
    /// Shards (the control topic's partitions) when the topic is created: the most instances
    /// that can share the work.
    /// Default: `32`.
    pub shards: u32,
    /// The compacted topic holding each merchant's delivered state (cursor and the ids of its
    /// look-back window, keyed by XMID) and each instance's status; created if missing, with
    /// `shards` + 1 partitions (the statuses in the first, each shard's merchants in their own).
    /// Default: `"mxc-relay.state"`.
    pub state_topic: String,
    /// This instance's name in `mxc-relay cluster status`. Env: `MXC_CLUSTER_INSTANCE`.
    /// Default: host name and pid.
    pub instance: String,
    /// An instance silent this long loses its shards to the others (the group's session
    /// timeout): the longest gap a crash leaves. A shard the group moves is polled by its last
    /// owner for up to twice this while its next owner has not claimed it.
    /// Default: `"10s"`.
    #[serde(with = "duration")]
    pub session_timeout: Duration,
    /// How often the delivered state of each merchant is published: after a crash, the next
    /// owner repeats (under the same ids) at most what was delivered in this much time.
    /// Default: `"5s"`.
    #[serde(with = "duration")]
    pub state_interval: Duration,
    /// librdkafka properties for the cluster's own clients (`security.protocol`, SASL …),
    /// applied last; values never printed.
    /// Default: `{}`.
    pub properties: BTreeMap<String, Secret>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            brokers: String::new(),
            group: "mxc-relay".into(),
            control_topic: "mxc-relay.shards".into(),
            shards: 32,
            state_topic: "mxc-relay.state".into(),
            instance: String::new(),
            session_timeout: Duration::from_secs(10),
            state_interval: Duration::from_secs(5),
            properties: BTreeMap::new(),
        }
    }
}

impl ClusterConfig {
    /// Whether this instance shares the merchants with others.
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    /// The instance's name: its own, or host name and pid.
    pub fn instance_name(&self) -> String {
        if !self.instance.trim().is_empty() {
            return self.instance.trim().to_string();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "mxc-relay".into());
        format!("{host}-{}", std::process::id())
    }
}

impl ClusterConfig {
    /// `[cluster]`'s errors (none unless it is enabled).
    pub(super) fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        let cluster = self;
        if cluster.enabled() {
            if !(1..=1000).contains(&cluster.shards) {
                error(
                    "cluster.shards",
                    format!("must be 1 to 1000, got {}", cluster.shards),
                );
            }
            for (key, topic) in [
                ("cluster.control_topic", &cluster.control_topic),
                ("cluster.state_topic", &cluster.state_topic),
            ] {
                if topic.is_empty()
                    || !topic
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                {
                    error(
                        key,
                        format!("a topic is letters, digits, '.', '_' or '-', got {topic:?}"),
                    );
                }
            }
            if cluster.control_topic == cluster.state_topic {
                error(
                    "cluster.state_topic",
                    "must differ from cluster.control_topic".into(),
                );
            }
            if cluster.group.trim().is_empty() {
                error("cluster.group", "must not be empty".into());
            }
            if !(Duration::from_secs(6)..=Duration::from_secs(300))
                .contains(&cluster.session_timeout)
            {
                error(
                    "cluster.session_timeout",
                    format!(
                        "must be 6s to 5m (the brokers' usual bounds), got {}",
                        fmt(cluster.session_timeout)
                    ),
                );
            }
            if !(Duration::from_millis(500)..=Duration::from_secs(600))
                .contains(&cluster.state_interval)
            {
                error(
                    "cluster.state_interval",
                    format!("must be 500ms to 10m, got {}", fmt(cluster.state_interval)),
                );
            }
        }
    }
}
