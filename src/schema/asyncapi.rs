//! The AsyncAPI 3.0 document of a configuration: what its Kafka sinks publish (a channel per
//! topic, the message key and headers) and what its webhook sinks POST (Standard Webhooks
//! headers, the signature scheme, the retry schedule), with the event schemas as payloads.
//! File and stdout sinks are for people and are not described.

use serde_json::{json, Map, Value};

use super::{
    cloudevents_source, envelope, event_payload, webhook_body, Catalog, EventContract,
    SCHEMA_VERSION,
};
use crate::config::{Config, KafkaKey, SinkConfig, WebhookConfig};

/// A key of the document's maps (`^[a-zA-Z0-9.\-_]+$`).
fn key(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn reference(path: &str) -> Value {
    json!({ "$ref": path })
}

/// The AsyncAPI document of `config`, whose event types `catalog` describes
/// ([`Catalog::for_config`] of the same configuration).
pub fn asyncapi(config: &Config, catalog: &Catalog) -> Value {
    let mut doc = Document {
        schemas: schemas(catalog),
        ..Document::default()
    };
    for (sink, sink_config) in &config.sinks {
        let routes = routes_to(config, sink);
        if routes.is_empty() {
            continue;
        }
        match sink_config {
            SinkConfig::Kafka {
                brokers,
                topic,
                key: message_key,
                cloudevents,
                ..
            } => {
                let topics = kafka_topics(topic, &routes, catalog);
                doc.add_kafka(sink, brokers, topics, |e| {
                    kafka_message(e, *message_key, *cloudevents)
                });
            }
            SinkConfig::Webhook(webhook) => doc.add_webhook(sink, webhook, &routes, catalog),
            SinkConfig::File { .. } | SinkConfig::Stdout { .. } => {}
        }
    }
    doc.into_value()
}

/// A route to a sink: its name, event type and resource.
type RouteTo<'a> = (String, String, &'a str);

/// The routes to `sink`, in the configuration's order.
fn routes_to<'a>(config: &'a Config, sink: &str) -> Vec<RouteTo<'a>> {
    config
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.sink == sink)
        .map(|(i, r)| {
            let resource = r.resource().map_or("", |r| r.name);
            (r.display_name(i), r.event_type(), resource)
        })
        .collect()
}

/// The schemas of the components: the envelope, and per event type its data, its Kafka
/// payload and its webhook body.
fn schemas(catalog: &Catalog) -> Map<String, Value> {
    let mut schemas = Map::new();
    schemas.insert("envelope".into(), envelope());
    for event in &catalog.events {
        let t = &event.event_type;
        schemas.insert(format!("{t}.data"), event.data().clone());
        schemas.insert(
            t.clone(),
            event_payload(
                t,
                "#/components/schemas/envelope",
                &format!("#/components/schemas/{t}.data"),
            ),
        );
        schemas.insert(
            format!("{t}.webhook"),
            webhook_body(t, &format!("#/components/schemas/{t}.data")),
        );
    }
    schemas
}

/// The topics a Kafka sink's routes reach (its template resolved), each with the event types
/// published to it, in the routes' order.
fn kafka_topics<'c>(
    template: &str,
    routes: &[RouteTo<'_>],
    catalog: &'c Catalog,
) -> Vec<(String, Vec<&'c EventContract>)> {
    let mut topics: Vec<(String, Vec<&EventContract>)> = Vec::new();
    for (route, event_type, resource) in routes {
        let Some(event) = catalog.get(event_type) else {
            continue;
        };
        let address = template
            .replace("{resource}", resource)
            .replace("{type}", event_type)
            .replace("{route}", route);
        match topics.iter_mut().find(|(a, _)| *a == address) {
            Some((_, events)) if !events.iter().any(|e| e.event_type == *event_type) => {
                events.push(event)
            }
            Some(_) => {}
            None => topics.push((address, vec![event])),
        }
    }
    topics
}

/// The document's maps, filled sink by sink.
#[derive(Default)]
struct Document {
    servers: Map<String, Value>,
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    messages: Map<String, Value>,
    schemas: Map<String, Value>,
}

impl Document {
    /// A Kafka sink: its server, and a channel and a publish operation per topic.
    fn add_kafka(
        &mut self,
        sink: &str,
        brokers: &str,
        topics: Vec<(String, Vec<&EventContract>)>,
        make: impl Fn(&EventContract) -> Value,
    ) {
        let server = key(&format!("kafka-{sink}"));
        let first = brokers.split(',').next().unwrap_or_default().trim();
        self.servers.insert(
            server.clone(),
            json!({
                "host": first,
                "protocol": "kafka",
                "description": format!("The Kafka sink {sink:?}: brokers {brokers}; an idempotent producer (acks=all). Each event is one message, at least once: deduplicate on the mxc-record-id header (or the envelope's id)."),
            }),
        );
        for (address, events) in topics {
            let channel = key(&format!("{sink}.{address}"));
            let (channel_messages, message_refs) =
                channel_messages(&mut self.messages, sink, &channel, &events, &make);
            self.channels.insert(
                channel.clone(),
                json!({
                    "address": address,
                    "title": format!("Kafka topic {address}"),
                    "servers": [reference(&format!("#/servers/{server}"))],
                    "messages": channel_messages,
                    "bindings": { "kafka": { "topic": address, "bindingVersion": "0.5.0" } },
                }),
            );
            self.operations.insert(
                key(&format!("publish.{channel}")),
                json!({
                    "action": "send",
                    "channel": reference(&format!("#/channels/{channel}")),
                    "summary": format!("mxc-relay publishes each new record its routes select to {address}."),
                    "messages": message_refs,
                }),
            );
        }
    }

    /// A webhook sink: its endpoint as server, one channel, and the delivering operation.
    fn add_webhook(
        &mut self,
        sink: &str,
        webhook: &WebhookConfig,
        routes: &[RouteTo<'_>],
        catalog: &Catalog,
    ) {
        let server = key(&format!("webhook-{sink}"));
        let (host, path, protocol) = match url::Url::parse(&webhook.url) {
            Ok(u) => (
                match u.port() {
                    Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
                    None => u.host_str().unwrap_or_default().to_string(),
                },
                u.path().to_string(),
                u.scheme().to_string(),
            ),
            Err(_) => (String::new(), String::new(), "https".into()),
        };
        self.servers.insert(
            server.clone(),
            json!({
                "host": host,
                "protocol": protocol,
                "description": format!("The webhook sink {sink:?}: the receiving endpoint."),
            }),
        );
        let channel = key(&format!("webhook.{sink}"));
        let mut events: Vec<&EventContract> = Vec::new();
        for (_, event_type, _) in routes {
            match catalog.get(event_type) {
                Some(e) if !events.iter().any(|o| o.event_type == e.event_type) => events.push(e),
                _ => {}
            }
        }
        let (channel_messages, message_refs) =
            channel_messages(&mut self.messages, sink, &channel, &events, webhook_message);
        self.channels.insert(
            channel.clone(),
            json!({
                "address": path,
                "title": format!("Webhook endpoint of sink {sink}"),
                "servers": [reference(&format!("#/servers/{server}"))],
                "messages": channel_messages,
            }),
        );
        self.operations.insert(
            key(&format!("deliver.{channel}")),
            webhook_operation(&channel, message_refs, webhook),
        );
    }

    fn into_value(self) -> Value {
        json!({
            "asyncapi": "3.0.0",
            "info": {
                "title": "mxc-relay events",
                "version": SCHEMA_VERSION,
                "description": "What mxc-relay produces with this configuration: each new MX Connect record (authorizations, disputes, settlement batches, ACH deposits) that a route selects becomes one event, published to Kafka and/or POSTed to webhook receivers, at least once. The Kafka value is the envelope {id, type, xmid, occurred_at, data}; a webhook body is {type, timestamp, data}; data is the record as MXC sent it (unknown fields included) less the route's redactions. The same record and route always carry the same event id: deduplicate on it. Each event type's JSON Schema (draft 2020-12) is printed by `mxc-relay schema --type TYPE`.",
            },
            "defaultContentType": "application/json",
            "servers": self.servers,
            "channels": self.channels,
            "operations": self.operations,
            "components": { "schemas": self.schemas, "messages": self.messages },
        })
    }
}

/// A channel's messages, one per event type: each made once per sink (by `make`) among the
/// components, and referenced from the channel; with the operation's references to them.
fn channel_messages(
    components: &mut Map<String, Value>,
    sink: &str,
    channel: &str,
    events: &[&EventContract],
    make: impl Fn(&EventContract) -> Value,
) -> (Map<String, Value>, Vec<Value>) {
    let mut messages = Map::new();
    for event in events {
        let id = key(&format!("{sink}.{}", event.event_type));
        components.entry(id.clone()).or_insert_with(|| make(event));
        messages.insert(
            key(&event.event_type),
            reference(&format!("#/components/messages/{id}")),
        );
    }
    let refs = messages
        .keys()
        .map(|m| reference(&format!("#/channels/{channel}/messages/{m}")))
        .collect();
    (messages, refs)
}

fn kafka_message(event: &EventContract, message_key: KafkaKey, cloudevents: bool) -> Value {
    let t = &event.event_type;
    let mut headers = Map::new();
    let mut required = vec![
        "mxc-record-id",
        "mxc-xmid",
        "mxc-event-type",
        "content-type",
        "mxc-schema-version",
    ];
    headers.insert("mxc-record-id".into(), json!({ "type": "string", "description": "The record's id (data.id): the same on every redelivery; deduplicate on it." }));
    headers.insert(
        "mxc-xmid".into(),
        json!({ "type": "string", "description": "The merchant account (XMID): the envelope's xmid." }),
    );
    headers.insert(
        "mxc-event-type".into(),
        json!({ "const": t, "description": "The event type: the envelope's type." }),
    );
    headers.insert(
        "content-type".into(),
        json!({ "const": "application/json" }),
    );
    headers.insert(
        "mxc-schema-version".into(),
        json!({ "const": SCHEMA_VERSION, "description": "The version of the envelope." }),
    );
    if cloudevents {
        cloudevents_headers(event, &mut headers, &mut required);
    }
    headers.insert("traceparent".into(), traceparent_schema());
    let key_schema = match message_key {
        KafkaKey::Xmid => {
            json!({ "type": "string", "description": "The XMID: a merchant's events share a partition, in order." })
        }
        KafkaKey::RecordId => json!({ "type": "string", "description": "The record's id." }),
    };
    json!({
        "name": t,
        "title": t,
        "summary": event.description(),
        "contentType": "application/json",
        "headers": { "type": "object", "required": required, "properties": headers },
        "payload": reference(&format!("#/components/schemas/{t}")),
        "bindings": { "kafka": { "key": key_schema, "bindingVersion": "0.5.0" } },
    })
}

/// The CloudEvents Kafka binding's headers (`ce_…`), with `cloudevents = true`.
fn cloudevents_headers(
    event: &EventContract,
    headers: &mut Map<String, Value>,
    required: &mut Vec<&'static str>,
) {
    let t = &event.event_type;
    let example = cloudevents_source("887000000001");
    for (name, schema) in [
        ("ce_specversion", json!({ "const": "1.0" })),
        (
            "ce_id",
            json!({ "type": "string", "pattern": "^evt_[0-9a-f]{32}$", "description": "The event id (the envelope's id)." }),
        ),
        (
            "ce_type",
            json!({ "const": t, "description": "The event type (the envelope's type)." }),
        ),
        (
            "ce_source",
            json!({ "type": "string", "pattern": "^/mxc/merchants/", "description": format!("The merchant account as a URI reference: /mxc/merchants/ and the XMID, percent-encoded (e.g. {example}).") }),
        ),
        (
            "ce_subject",
            json!({ "type": "string", "description": "The record's id (data.id)." }),
        ),
        (
            "ce_dataschema",
            json!({ "const": event.id, "description": "The $id of this event type's JSON Schema." }),
        ),
    ] {
        headers.insert(name.into(), schema);
        required.push(name);
    }
    headers.insert("ce_time".into(), json!({ "type": "string", "format": "date-time", "description": "The record's own time in UTC (the envelope's occurred_at); absent for a record without one." }));
    headers.insert("ce_traceparent".into(), json!({ "type": "string", "pattern": TRACEPARENT_PATTERN, "description": "With traces on: the traceparent header's value (CloudEvents' distributed tracing extension)." }));
}

/// A W3C `traceparent` value (version 00).
const TRACEPARENT_PATTERN: &str = "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$";

/// The `traceparent` header, present only with traces on.
fn traceparent_schema() -> Value {
    json!({ "type": "string", "pattern": TRACEPARENT_PATTERN, "description": "With traces on ([telemetry.traces]) and the record's poll sampled: the W3C trace context of the record's span, for the consumer to continue the trace (one trace per poll; the record's span under it). Not signed, not part of the body." })
}

fn webhook_message(event: &EventContract) -> Value {
    let t = &event.event_type;
    json!({
        "name": t,
        "title": t,
        "summary": event.description(),
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "required": ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type"],
            "properties": {
                "webhook-id": { "type": "string", "pattern": "^evt_[0-9a-f]{32}$", "description": "The event id: the same on every attempt, redelivery and replay; deduplicate on it." },
                "webhook-timestamp": { "type": "string", "pattern": "^[0-9]+$", "description": "Unix seconds of this attempt; reject stale ones (Standard Webhooks: 5 minutes)." },
                "webhook-signature": { "type": "string", "pattern": "^v1,[A-Za-z0-9+/]+={0,2}( v1,[A-Za-z0-9+/]+={0,2})*$", "description": "v1, and the base64 HMAC-SHA256 of \"{webhook-id}.{webhook-timestamp}.{body}\" under the secret (whsec_ and base64 key bytes); one per configured secret, space-separated." },
                "content-type": { "const": "application/json" },
                "traceparent": traceparent_schema(),
            },
        },
        "payload": reference(&format!("#/components/schemas/{t}.webhook")),
        "bindings": { "http": { "bindingVersion": "0.3.0" } },
    })
}

fn webhook_operation(channel: &str, messages: Vec<Value>, webhook: &WebhookConfig) -> Value {
    let schedule: Vec<String> = webhook
        .schedule
        .iter()
        .map(|d| humantime::format_duration(*d).to_string())
        .collect();
    json!({
        "action": "send",
        "channel": reference(&format!("#/channels/{channel}")),
        "summary": "mxc-relay POSTs each event its routes select, signed per Standard Webhooks.",
        "description": format!(
            "Signature: webhook-signature holds v1,<base64 HMAC-SHA256 of \"{{id}}.{{timestamp}}.{{body}}\">, one per secret. Any 2xx is success. Each event is retried on its own schedule — the delays before its attempts: {} (each ±{:.0} %) — then becomes a dead letter; deliveries are at least once and not ordered. 429, 502, 503, 504 or a timeout pause the endpoint (Retry-After honoured up to {}); 410 Gone disables it; redirects are not followed.",
            schedule.join(", "),
            webhook.jitter * 100.0,
            humantime::format_duration(webhook.retry_after_max),
        ),
        "messages": messages,
        "bindings": { "http": { "method": "POST", "bindingVersion": "0.3.0" } },
        "x-retry-schedule": schedule,
        "x-retry-jitter": webhook.jitter,
        "x-signature": "Standard Webhooks v1 (HMAC-SHA256)",
    })
}
