//! The Kafka sink: an idempotent producer (acks=all). An outbox entry counts as delivered only
//! on its delivery report; a full local queue is backpressure, never a drop; permanent refusals
//! (message too large, topic not authorized) become dead letters; a fatal producer error
//! recreates the producer. With `cloudevents` each message is also a CloudEvent in binary
//! content mode: `ce_*` headers beside ours, the value untouched.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use super::{Outcome, Sink};
use crate::config::kafka::{producer_config, refusal};
use crate::config::KafkaKey;
use crate::route::Event;
use crate::schema::{cloudevents_source, schema_id, SCHEMA_VERSION};
use crate::secret::Secret;

pub struct KafkaSink {
    name: String,
    config: ClientConfig,
    producer: RwLock<Arc<FutureProducer>>,
    topic: String,
    key: KafkaKey,
    /// With CloudEvents headers: each event type's schema id (`ce_dataschema`).
    cloudevents: Option<HashMap<String, String>>,
}

impl KafkaSink {
    /// Builds the producer. Fails, naming the sink, on a property librdkafka refuses.
    /// `cloudevents`: each event type's schema id, to add the CloudEvents headers.
    pub fn new(
        name: &str,
        brokers: &str,
        topic: &str,
        key: KafkaKey,
        compression: &str,
        properties: &BTreeMap<String, Secret>,
        cloudevents: Option<HashMap<String, String>>,
    ) -> Result<KafkaSink, String> {
        let config = producer_config(brokers, compression, properties);
        let producer = create(&config, name)?;
        Ok(KafkaSink {
            name: name.to_string(),
            config,
            producer: RwLock::new(Arc::new(producer)),
            topic: topic.to_string(),
            key,
            cloudevents,
        })
    }

    fn producer(&self) -> Option<Arc<FutureProducer>> {
        self.producer.read().ok().map(|p| p.clone())
    }

    fn topic_for(&self, event: &Event) -> String {
        self.topic
            .replace("{resource}", &event.resource)
            .replace("{type}", &event.event_type)
            .replace("{route}", &event.route)
    }

    /// After a fatal error an idempotent producer is unusable: replace it. Its unconfirmed
    /// messages are still in the outbox and are sent again by the new one.
    fn recreate(&self) {
        match create(&self.config, &self.name) {
            Ok(fresh) => {
                let old = match self.producer.write() {
                    Ok(mut p) => Some(std::mem::replace(&mut *p, Arc::new(fresh))),
                    Err(_) => None,
                };
                // Dropping a producer flushes and joins its threads: not on an async worker.
                tokio::task::spawn_blocking(move || drop(old));
                tracing::warn!(sink = %self.name, "kafka producer recreated after a fatal error");
            }
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e, "cannot recreate the kafka producer")
            }
        }
    }
}

fn create(config: &ClientConfig, name: &str) -> Result<FutureProducer, String> {
    config.create().map_err(|e| match e {
        KafkaError::ClientConfig(..) => format!("sinks.{name}.properties: {}", refusal(&e)),
        other => format!("sinks.{name}: cannot create the Kafka producer: {other}"),
    })
}

/// The CloudEvents attributes of `event` as headers (binary content mode, Kafka protocol
/// binding); `content-type` is already among ours.
fn cloudevents_headers(
    headers: OwnedHeaders,
    event: &Event,
    schemas: &HashMap<String, String>,
) -> OwnedHeaders {
    let source = cloudevents_source(&event.xmid);
    let fallback;
    let dataschema = match schemas.get(&event.event_type) {
        Some(id) => id.as_str(),
        // An event admitted under an earlier configuration, of a type no route makes now.
        None => {
            fallback = schema_id(&event.event_type);
            fallback.as_str()
        }
    };
    let mut headers = headers
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header {
            key: "ce_id",
            value: Some(event.id.as_str()),
        })
        .insert(Header {
            key: "ce_type",
            value: Some(event.event_type.as_str()),
        })
        .insert(Header {
            key: "ce_source",
            value: Some(source.as_str()),
        })
        .insert(Header {
            key: "ce_subject",
            value: Some(event.record_id.as_str()),
        })
        .insert(Header {
            key: "ce_dataschema",
            value: Some(dataschema),
        });
    if let Some(time) = &event.occurred_at {
        headers = headers.insert(Header {
            key: "ce_time",
            value: Some(time.as_str()),
        });
    }
    headers
}

/// Whether a refusal is for good (the message itself is the problem).
fn classify(error: &KafkaError) -> Outcome {
    let code = error.rdkafka_error_code();
    match code {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic,
        ) => Outcome::Dead(format!("kafka refused the message: {error}")),
        _ => Outcome::Retry(format!("kafka: {error}")),
    }
}

/// How long a reachability probe waits for the brokers' metadata.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Sink for KafkaSink {
    fn probe(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let producer = self.producer().ok_or("kafka producer unavailable")?;
            // librdkafka's metadata call blocks: off the async threads.
            tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(None, PROBE_TIMEOUT)
                    .map(|_| ())
                    .map_err(|e| format!("no broker metadata within 5 s: {e}"))
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }

    fn deliver<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let Some(producer) = self.producer() else {
                return vec![Outcome::Retry("kafka producer unavailable".into()); events.len()];
            };
            let mut pending = Vec::with_capacity(events.len());
            // An XMID whose event could not be enqueued sends none of its later ones in this
            // batch: they would overtake it.
            let mut held: std::collections::HashSet<&str> = std::collections::HashSet::new();
            for event in events {
                if held.contains(event.xmid.as_str()) {
                    pending.push(Err(Outcome::Retry(
                        "an earlier event of this XMID is retried first".into(),
                    )));
                    continue;
                }
                let topic = self.topic_for(event);
                let key = match self.key {
                    KafkaKey::Xmid => event.xmid.as_str(),
                    KafkaKey::RecordId => event.record_id.as_str(),
                };
                let mut headers = OwnedHeaders::new_with_capacity(if self.cloudevents.is_some() {
                    12
                } else {
                    5
                })
                .insert(Header {
                    key: "mxc-record-id",
                    value: Some(event.record_id.as_str()),
                })
                .insert(Header {
                    key: "mxc-xmid",
                    value: Some(event.xmid.as_str()),
                })
                .insert(Header {
                    key: "mxc-event-type",
                    value: Some(event.event_type.as_str()),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                })
                .insert(Header {
                    key: "mxc-schema-version",
                    value: Some(SCHEMA_VERSION),
                });
                if let Some(schemas) = &self.cloudevents {
                    headers = cloudevents_headers(headers, event, schemas);
                }
                let mut record = FutureRecord::to(&topic)
                    .key(key)
                    .payload(event.body.as_bytes().as_ref())
                    .headers(headers);
                loop {
                    match producer.send_result(record) {
                        Ok(delivery) => {
                            pending.push(Ok(delivery));
                            break;
                        }
                        // The local queue is full: wait for room, never drop.
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            record = back;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Err((error, _)) => {
                            let outcome = classify(&error);
                            if matches!(outcome, Outcome::Retry(_)) {
                                held.insert(event.xmid.as_str());
                            }
                            pending.push(Err(outcome));
                            break;
                        }
                    }
                }
            }
            let mut outcomes = Vec::with_capacity(events.len());
            let mut fatal = false;
            for p in pending {
                let outcome = match p {
                    Err(outcome) => outcome,
                    Ok(delivery) => match delivery.await {
                        Ok(Ok(_)) => Outcome::Delivered,
                        Ok(Err((error, _))) => {
                            fatal |= error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal);
                            classify(&error)
                        }
                        Err(_) => Outcome::Retry("kafka producer dropped the message".into()),
                    },
                };
                outcomes.push(outcome);
            }
            if fatal || producer.client().fatal_error().is_some() {
                self.recreate();
            }
            outcomes
        })
    }
}
