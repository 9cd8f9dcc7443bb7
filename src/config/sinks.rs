//! `[sinks.NAME]`: the kinds of destination of events, with defaults and validation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::validate;
use super::{ConfigError, WebhookConfig};
use mxc::Secret;

/// `[sinks.NAME]`: one destination of events, named by the routes that send to it; its
/// `kind` decides its other keys.
// Externally tagged for serde: loading turns `kind = "K"` into `[sinks.NAME.K]`, which keeps
// key paths and unknown keys in sight (an internally tagged enum would hide them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkConfig {
    /// Events on standard output.
    Stdout {
        /// `json`: one envelope per line. `compact`: one short human line per event.
        /// Default: `"json"`.
        #[serde(default)]
        format: StdoutFormat,
    },
    /// Events appended to a file as JSON lines, synced to disk before they count as delivered.
    File {
        /// The file the events are appended to; created if missing.
        path: PathBuf,
    },
    /// Events as Kafka messages from an idempotent producer (acks=all). Each message carries
    /// the envelope as its value and the headers `mxc-record-id`, `mxc-xmid`,
    /// `mxc-event-type`, `content-type` and `mxc-schema-version` (and, with `cloudevents`,
    /// the CloudEvents `ce_*` ones).
    Kafka {
        /// Bootstrap brokers, `host:port[,host:port…]`.
        brokers: String,
        /// The topic, or a template: `{resource}` is the resource (`mxc.{resource}` →
        /// `mxc.authorizations`, `mxc.disputes` …), `{type}` the event type, `{route}` the
        /// route name (`mxc.{type}` → `mxc.authorization.declined`).
        /// Default: `"mxc.{resource}"`.
        #[serde(default = "default_topic")]
        topic: String,
        /// The message key: `xmid` (per-merchant order on one partition) or `record_id`.
        /// Default: `"xmid"`.
        #[serde(default)]
        key: KafkaKey,
        /// `lz4`, `snappy`, `gzip` or `none`.
        /// Default: `"lz4"`.
        #[serde(default = "default_compression")]
        compression: String,
        /// Any librdkafka property (`security.protocol`, `sasl.mechanism`,
        /// `sasl.username`, `sasl.password`, `message.max.bytes` …), applied last. Values are
        /// treated as secrets: never printed.
        /// Default: `{}`.
        #[serde(default)]
        properties: BTreeMap<String, Secret>,
        /// Also mark each message as a CloudEvent in binary content mode (`ce_specversion`,
        /// `ce_id`, `ce_type`, `ce_source`, `ce_time`, `ce_subject`, `ce_dataschema`
        /// headers); the value stays the same bytes.
        /// Default: `false`.
        #[serde(default)]
        cloudevents: bool,
    },
    /// Events POSTed to an HTTP endpoint, signed per Standard Webhooks, each retried on its
    /// own schedule, so that a failing event never holds back the others.
    Webhook(Box<WebhookConfig>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaKey {
    #[default]
    Xmid,
    RecordId,
}

fn default_topic() -> String {
    "mxc.{resource}".to_string()
}

fn default_compression() -> String {
    "lz4".to_string()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StdoutFormat {
    #[default]
    Json,
    Compact,
}

impl SinkConfig {
    /// `[sinks.NAME]`'s errors; a webhook's own go to `sink_errors` (reported last).
    pub(super) fn validate(
        &self,
        name: &str,
        errors: &mut Vec<ConfigError>,
        sink_errors: &mut Vec<ConfigError>,
    ) {
        let mut error = validate::reporter(errors);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            error(
                &format!("sinks.{name}"),
                "a sink name is letters, digits, '-' or '_'".into(),
            );
        }
        match self {
            SinkConfig::File { path } if path.as_os_str().is_empty() => {
                error(&format!("sinks.{name}.path"), "must name a file".into());
            }
            SinkConfig::Kafka {
                brokers,
                topic,
                compression,
                ..
            } => {
                if brokers.split(',').any(|b| {
                    b.trim()
                        .rsplit_once(':')
                        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
                }) {
                    error(
                        &format!("sinks.{name}.brokers"),
                        format!("must be host:port[,host:port…], got {brokers:?}"),
                    );
                }
                let bare = topic
                    .replace("{resource}", "s")
                    .replace("{type}", "t")
                    .replace("{route}", "r");
                if bare.is_empty()
                    || bare.len() > 249
                    || !bare
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                {
                    error(
                        &format!("sinks.{name}.topic"),
                        format!("a topic is letters, digits, '.', '_' or '-' (placeholders {{resource}}, {{type}} and {{route}} allowed), got {topic:?}"),
                    );
                }
                if !["lz4", "snappy", "gzip", "none"].contains(&compression.as_str()) {
                    error(
                        &format!("sinks.{name}.compression"),
                        format!("must be lz4, snappy, gzip or none, got {compression:?}"),
                    );
                }
            }
            SinkConfig::Webhook(webhook) => {
                webhook.validate(&|key| format!("sinks.{name}.{key}"), sink_errors);
            }
            _ => {}
        }
    }
}
