//! Sinks: where events go. One small trait; one file per kind; one delivery worker per sink
//! drains its outbox in order and removes an entry only after the sink confirmed it.

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
pub use webhook::{body as webhook_body, Attempt, Endpoint, RetryPolicy, Verdict, WebhookSink};
pub use worker::{run_worker, WorkerConfig};

use crate::config::SinkConfig;
use crate::route::Event;

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

/// A destination of events.
pub trait Sink: Send + Sync {
    /// Delivers `events` (in order) and says what became of each, in the same order.
    fn deliver<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Vec<Outcome>>;

    /// Whether the destination answers now (for `/readyz`), or why not. Sinks that have
    /// nothing to probe are always reachable.
    fn probe(&self) -> BoxFuture<'_, Result<(), String>> {
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
) -> Result<Arc<dyn Sink>, String> {
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
        SinkConfig::Webhook(_) => {
            return Err(format!(
                "sinks.{name}: a webhook sink runs its own dispatcher (WebhookSink)"
            ))
        }
    })
}
