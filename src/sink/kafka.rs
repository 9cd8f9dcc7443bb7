//! The Kafka sink: an idempotent producer (acks=all). An outbox entry counts as delivered only
//! on its delivery report; a full local queue is backpressure, never a drop; permanent refusals
//! (message too large, topic not authorized) become dead letters; a fatal producer error
//! recreates the producer. With `cloudevents` each message is also a CloudEvent in binary
//! content mode: `ce_*` headers beside ours, the value untouched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use super::{Outcome, Sink, SinkError};
use crate::config::kafka::{producer_config, refusal};
use crate::config::KafkaKey;
use crate::event::Event;
use crate::schema::{cloudevents_source, schema_id, SCHEMA_VERSION};
use crate::telemetry::traces;
use mxc::Secret;

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
    ) -> Result<KafkaSink, SinkError> {
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

fn create(config: &ClientConfig, name: &str) -> Result<FutureProducer, SinkError> {
    config.create().map_err(|e| match e {
        KafkaError::ClientConfig(..) => SinkError::KafkaProperty {
            sink: name.to_string(),
            refusal: refusal(&e),
        },
        error => SinkError::KafkaProducer {
            sink: name.to_string(),
            error,
        },
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

/// The span of one event's send (OpenTelemetry's messaging conventions), under its record's
/// span; none when traces are off or the record's trace is not sampled.
fn send_span(event: &Event, topic: &str, key: &str) -> tracing::Span {
    traces::continuing(event.traceparent.as_deref(), || {
        tracing::info_span!(target: traces::TARGET, parent: None, "send",
            otel.name = %format_args!("send {topic}"),
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.operation.name = "send",
            messaging.destination.name = topic,
            messaging.message.id = event.id.as_str(),
            messaging.kafka.message.key = key,
            messaging.destination.partition.id = tracing::field::Empty,
            messaging.kafka.offset = tracing::field::Empty,
            mxc_relay.sink = event.sink.as_str(),
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
        )
    })
}

/// Ends a send's span: where the broker put the message, or why it did not take it (a dead
/// letter is an event on the span).
fn sent_span(span: &tracing::Span, sent: Result<&Delivery, &Outcome>) {
    if span.is_disabled() {
        return;
    }
    match sent {
        Ok(delivered) => {
            span.record(
                "messaging.destination.partition.id",
                delivered.partition.to_string(),
            );
            span.record("messaging.kafka.offset", delivered.offset);
        }
        Err(outcome) => outcome.end_span(span),
    }
}

/// Whether a refusal is for good (the message itself is the problem): a dead letter; anything
/// else is retried.
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

/// Whether `error` left the idempotent producer unusable: it is then recreated (its
/// unconfirmed messages are still in the outbox).
fn is_fatal(error: &KafkaError) -> bool {
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal)
}

/// The message key, which picks the partition: with [`KafkaKey::Xmid`] every event of a
/// merchant (on one topic) goes to the same partition, where Kafka keeps their order.
fn message_key(key: KafkaKey, event: &Event) -> &str {
    match key {
        KafkaKey::Xmid => event.xmid.as_str(),
        KafkaKey::RecordId => event.record_id.as_str(),
    }
}

/// The XMIDs whose later events a batch does not send: one of theirs could not be enqueued and
/// is to be retried, and a later one sent now would overtake it. A dead-lettered event holds
/// nothing back (it is never sent again).
#[derive(Default)]
struct Held<'a>(HashSet<&'a str>);

impl<'a> Held<'a> {
    /// What becomes of `event` instead of being sent, if an earlier one of its XMID was held.
    fn check(&self, event: &Event) -> Option<Outcome> {
        self.0
            .contains(event.xmid.as_str())
            .then(|| Outcome::Retry("an earlier event of this XMID is retried first".into()))
    }

    /// `event` could not be enqueued and became `outcome`.
    fn refused(&mut self, event: &'a Event, outcome: &Outcome) {
        if matches!(outcome, Outcome::Retry(_)) {
            self.0.insert(event.xmid.as_str());
        }
    }
}

/// How long a reachability probe waits for the brokers' metadata.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Sink for KafkaSink {
    fn probe(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let producer = self.producer().ok_or(SinkError::ProducerUnavailable)?;
            // librdkafka's metadata call blocks: off the async threads.
            tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(None, PROBE_TIMEOUT)
                    .map(|_| ())
                    .map_err(SinkError::NoMetadata)
            })
            .await
            .map_err(SinkError::ProbeTask)?
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
            let mut held = Held::default();
            for event in events {
                if let Some(outcome) = held.check(event) {
                    pending.push(Err(outcome));
                    continue;
                }
                let topic = self.topic_for(event);
                let key = message_key(self.key, event);
                let span = send_span(event, &topic, key);
                let record = FutureRecord::to(&topic)
                    .key(key)
                    .payload(event.body().as_bytes().as_ref())
                    .headers(self.headers(event));
                match enqueue(&producer, record).await {
                    Ok(delivery) => pending.push(Ok((delivery, span))),
                    Err(error) => {
                        let outcome = classify(&error);
                        sent_span(&span, Err(&outcome));
                        held.refused(event, &outcome);
                        pending.push(Err(outcome));
                    }
                }
            }
            let (outcomes, fatal) = confirmed(pending).await;
            if fatal || producer.client().fatal_error().is_some() {
                self.recreate();
            }
            outcomes
        })
    }
}

impl KafkaSink {
    /// A message's headers, from its event's head: record id, XMID, event type, content type
    /// and schema version; the CloudEvents attributes when on; and the record's span, for the
    /// consumer to continue (W3C trace context; with CloudEvents, its distributed tracing
    /// extension too).
    fn headers(&self, event: &Event) -> OwnedHeaders {
        let capacity = if self.cloudevents.is_some() { 12 } else { 5 };
        let mut headers = OwnedHeaders::new_with_capacity(capacity);
        for (key, value) in [
            ("mxc-record-id", event.record_id.as_str()),
            ("mxc-xmid", event.xmid.as_str()),
            ("mxc-event-type", event.event_type.as_str()),
            ("content-type", "application/json"),
            ("mxc-schema-version", SCHEMA_VERSION),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        if let Some(schemas) = &self.cloudevents {
            headers = cloudevents_headers(headers, event, schemas);
        }
        if let Some(traceparent) = &event.traceparent {
            headers = headers.insert(Header {
                key: "traceparent",
                value: Some(traceparent.as_str()),
            });
            if self.cloudevents.is_some() {
                headers = headers.insert(Header {
                    key: "ce_traceparent",
                    value: Some(traceparent.as_str()),
                });
            }
        }
        headers
    }
}

/// A message enqueued in librdkafka: what confirms it, and its `send` span.
type Pending = Result<(rdkafka::producer::DeliveryFuture, tracing::Span), Outcome>;

/// Enqueues `record`; while librdkafka's local queue is full it waits for room, never drops.
async fn enqueue(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, str, [u8]>,
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// Each message's outcome once the broker confirmed (or refused) it, in order; and whether an
/// error was fatal to the producer.
async fn confirmed(pending: Vec<Pending>) -> (Vec<Outcome>, bool) {
    let mut outcomes = Vec::with_capacity(pending.len());
    let mut fatal = false;
    for p in pending {
        let outcome = match p {
            Err(outcome) => outcome,
            Ok((delivery, span)) => {
                let outcome = match delivery.await {
                    Ok(Ok(delivered)) => {
                        sent_span(&span, Ok(&delivered));
                        Outcome::Delivered
                    }
                    Ok(Err((error, _))) => {
                        fatal |= is_fatal(&error);
                        classify(&error)
                    }
                    Err(_) => Outcome::Retry("kafka producer dropped the message".into()),
                };
                if outcome != Outcome::Delivered {
                    sent_span(&span, Err(&outcome));
                }
                outcome
            }
        };
        outcomes.push(outcome);
    }
    (outcomes, fatal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(xmid: &str, record_id: &str) -> Event {
        crate::store::testing::event("kafka", xmid, record_id)
    }

    fn produced(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::MessageProduction(code)
    }

    #[test]
    fn refusals_of_the_message_itself_are_dead_letters_with_the_reason() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidMessageSize,
            RDKafkaErrorCode::MessageBatchTooLarge,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::InvalidTopic,
        ] {
            let error = produced(code);
            assert_eq!(
                classify(&error),
                Outcome::Dead(format!("kafka refused the message: {error}")),
                "{code:?}"
            );
            assert!(!is_fatal(&error), "{code:?}");
        }
        // A delivery report carries the same codes.
        let report = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(matches!(classify(&report), Outcome::Dead(_)));
    }

    #[test]
    fn anything_else_is_retried_and_only_a_fatal_error_recreates_the_producer() {
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::Fatal,
        ] {
            let error = produced(code);
            assert_eq!(
                classify(&error),
                Outcome::Retry(format!("kafka: {error}")),
                "{code:?}"
            );
            assert_eq!(
                is_fatal(&error),
                code == RDKafkaErrorCode::Fatal,
                "{code:?}"
            );
        }
        // An error without a librdkafka code (the producer was dropped, say) is retried too.
        assert!(matches!(classify(&KafkaError::Canceled), Outcome::Retry(_)));
        assert!(!is_fatal(&KafkaError::Canceled));
    }

    #[test]
    fn a_retried_enqueue_holds_back_the_later_events_of_its_xmid_only() {
        let events = [
            event("X1", "r1"),
            event("X2", "r2"),
            event("X1", "r3"),
            event("X2", "r4"),
        ];
        let mut held = Held::default();
        assert_eq!(held.check(&events[0]), None);
        held.refused(&events[0], &Outcome::Retry("kafka: queue".into()));
        assert_eq!(held.check(&events[1]), None, "another XMID goes on");
        assert_eq!(
            held.check(&events[2]),
            Some(Outcome::Retry(
                "an earlier event of this XMID is retried first".into()
            ))
        );
        assert_eq!(held.check(&events[3]), None);
    }

    #[test]
    fn a_dead_lettered_enqueue_holds_nothing_back() {
        let events = [event("X1", "r1"), event("X1", "r2")];
        let mut held = Held::default();
        held.refused(
            &events[0],
            &Outcome::Dead("kafka refused the message".into()),
        );
        assert_eq!(held.check(&events[1]), None);
    }

    #[test]
    fn keyed_by_xmid_a_merchants_events_share_a_key_and_so_a_partition() {
        let (a, b, c) = (event("X1", "r1"), event("X1", "r2"), event("X2", "r3"));
        assert_eq!(message_key(KafkaKey::Xmid, &a), "X1");
        assert_eq!(
            message_key(KafkaKey::Xmid, &a),
            message_key(KafkaKey::Xmid, &b)
        );
        assert_ne!(
            message_key(KafkaKey::Xmid, &a),
            message_key(KafkaKey::Xmid, &c)
        );
        // Keyed by record id, a merchant's events spread over the partitions.
        assert_eq!(message_key(KafkaKey::RecordId, &a), "r1");
        assert_ne!(
            message_key(KafkaKey::RecordId, &a),
            message_key(KafkaKey::RecordId, &b)
        );
    }

    #[test]
    fn a_property_librdkafka_refuses_is_named_without_its_value() {
        let properties = BTreeMap::from([(
            "sasl.pasword".to_string(),
            Secret::new("hunter2-do-not-print"),
        )]);
        let error = match KafkaSink::new(
            "events",
            "127.0.0.1:1",
            "mxc.{resource}",
            KafkaKey::Xmid,
            "lz4",
            &properties,
            None,
        ) {
            Ok(_) => panic!("librdkafka accepted a property it does not know"),
            Err(e) => e,
        };
        assert!(
            matches!(&error, SinkError::KafkaProperty { sink, .. } if sink == "events"),
            "{error:?}"
        );
        let text = error.to_string();
        assert_eq!(
            text,
            "sinks.events.properties: librdkafka refused the property \"sasl.pasword\" (its value is not shown)"
        );
        assert!(!format!("{error:?}").contains("hunter2"));
    }
}
