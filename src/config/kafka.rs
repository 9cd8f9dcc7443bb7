//! The librdkafka settings a configuration describes: the Kafka sinks' producers and the
//! cluster's clients (`run` creates them, [`Config::preflight`](super::Config::preflight) has
//! librdkafka check them first), and how librdkafka's refusal of one is told.

use std::collections::BTreeMap;

use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

use super::ClusterConfig;
use mxc::Secret;

/// The producer's settings: ours, then the sink's properties (which may override them).
pub(crate) fn producer_config(
    brokers: &str,
    compression: &str,
    properties: &BTreeMap<String, Secret>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", compression)
        .set("linger.ms", "5");
    for (k, v) in properties {
        config.set(k, v.expose());
    }
    config
}

/// librdkafka settings shared by the cluster's clients.
pub(crate) fn kafka_config(config: &ClusterConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    c.set("client.id", config.instance_name());
    for (key, value) in &config.properties {
        c.set(key, value.expose());
    }
    c
}

/// What librdkafka refused, without the refused value: it may be a password.
pub(crate) fn refusal(error: &KafkaError) -> String {
    match error {
        KafkaError::ClientConfig(_, _, key, _) => {
            format!("librdkafka refused the property {key:?} (its value is not shown)")
        }
        other => format!("librdkafka refused these settings: {other}"),
    }
}
