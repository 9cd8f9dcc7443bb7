//! Sinks: where events go. One small trait; one file per kind; each sink's outbox is drained
//! by its own task, which removes an entry only after the sink confirmed it.
//!
//! What order each keeps:
//! - Kafka, file and stdout run a [`run_worker`]: it hands the outbox to the sink in outbox
//!   order, a batch at a time (Kafka enqueues a batch in that order, and an XMID whose enqueue
//!   failed sends none of its later events in that batch). An entry to be retried holds back
//!   every later entry of its XMID: they stay in the outbox even if delivered, and go again
//!   after it under the same ids, so per XMID the last copy of each event is in outbox order
//!   (an earlier copy may precede the retried one). A dead-lettered entry holds nothing back.
//!   On Kafka the key picks the partition: with `key = "xmid"` (the default) a merchant's
//!   events on one topic share a partition, in that order; with `key = "record_id"` they spread
//!   over partitions, and consumers see no order across those.
//! - Webhooks run a [`WebhookSink`] dispatcher, which keeps no order between entries: attempts
//!   start in outbox order (retries that are due first), up to `max_in_flight` at once, and a
//!   failed entry is retried on its own schedule while later ones, of any XMID, go ahead of
//!   it. Only with `max_in_flight = 1` and no failure do they arrive in outbox order.

mod file;
pub(crate) mod kafka;
mod stdout;
mod webhook;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use file::FileSink;
pub use kafka::KafkaSink;

pub use crate::schema::{cloudevents_source, SCHEMA_VERSION};
pub use stdout::StdoutSink;
pub use webhook::{
    body as webhook_body, Attempt, Endpoint, EndpointError, RetryPolicy, Verdict, WebhookSink,
};
pub use worker::{run_worker, WorkerConfig};

use crate::config::SinkConfig;
use crate::event::Event;

/// A delay cut to whole milliseconds, for log lines.
fn round(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_millis() as u64)
}

/// What became of one event handed to a sink.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The sink confirmed it: remove it from the outbox.
    Delivered,
    /// Not now (unreachable, throttled …): keep it and try again later.
    Retry(String),
    /// Never (too large, refused for good): move it to the dead letters with this reason.
    Dead(String),
}

impl Outcome {
    /// Ends a delivery attempt's span with this outcome: an error for a retry, and a
    /// `dead_letter` event beside it for a dead letter.
    pub(crate) fn end_span(&self, span: &tracing::Span) {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let (kind, reason) = match self {
            Outcome::Delivered => return,
            Outcome::Retry(reason) => ("retry", reason),
            Outcome::Dead(reason) => {
                span.add_event(
                    "dead_letter",
                    vec![opentelemetry::KeyValue::new(
                        "mxc_relay.reason",
                        reason.clone(),
                    )],
                );
                ("dead_letter", reason)
            }
        };
        span.record("error.type", kind);
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_message", reason.as_str());
    }
}

/// Why a sink cannot be built, or cannot be reached now. The texts name the sink where the
/// caller does not, and never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// librdkafka refused a property of a Kafka sink; the text names the property, never its
    /// value (see [`kafka::refusal`]).
    #[error("sinks.{sink}.properties: {refusal}")]
    KafkaProperty { sink: String, refusal: String },
    /// librdkafka could not create the Kafka producer for another reason.
    #[error("sinks.{sink}: cannot create the Kafka producer: {error}")]
    KafkaProducer {
        sink: String,
        error: rdkafka::error::KafkaError,
    },
    /// A webhook sink's settings cannot make an endpoint (its URL, a secret, a header …).
    #[error("sinks.{sink}.{error}")]
    Webhook {
        sink: String,
        error: webhook::EndpointError,
    },
    /// [`build`] was asked for a webhook sink: those run as a [`WebhookSink`].
    #[error("sinks.{0}: a webhook sink runs its own dispatcher (WebhookSink)")]
    WebhookNotBuilt(String),
    /// Probe: the Kafka producer is being replaced (after a fatal error), or its lock poisoned.
    #[error("kafka producer unavailable")]
    ProducerUnavailable,
    /// Probe: no broker answered with the cluster's metadata in time.
    #[error("no broker metadata within 5 s: {0}")]
    NoMetadata(rdkafka::error::KafkaError),
    /// Probe: the blocking task that asked for the metadata failed (panicked or was
    /// cancelled).
    #[error("{0}")]
    ProbeTask(tokio::task::JoinError),
}

/// A destination of events.
pub trait Sink: Send + Sync {
    /// Delivers `events` (in order) and says what became of each, in the same order.
    fn deliver<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Vec<Outcome>>;

    /// Whether the destination answers now (for `/readyz`), or why not. Sinks that have
    /// nothing to probe are always reachable.
    fn probe(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Builds the sink a configuration describes (all kinds but webhooks, which retry per entry
/// and run as a [`WebhookSink`]); the error names the sink. `schema_ids` are the event types'
/// schema ids, for a Kafka sink with CloudEvents headers.
pub fn build(
    name: &str,
    config: &SinkConfig,
    schema_ids: &HashMap<String, String>,
) -> Result<Arc<dyn Sink>, SinkError> {
    Ok(match config {
        SinkConfig::Stdout { format } => Arc::new(StdoutSink::new(*format)),
        SinkConfig::File { path } => Arc::new(FileSink::new(path.clone())),
        SinkConfig::Kafka {
            brokers,
            topic,
            key,
            compression,
            properties,
            cloudevents,
        } => Arc::new(KafkaSink::new(
            name,
            brokers,
            topic,
            *key,
            compression,
            properties,
            cloudevents.then(|| schema_ids.clone()),
        )?),
        SinkConfig::Webhook(_) => return Err(SinkError::WebhookNotBuilt(name.to_string())),
    })
}
