//! OpenTelemetry traces, off unless `[telemetry.traces]` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) names
//! a collector. One trace per poll: the poll is the root, each MXC request and each new record
//! (a messaging "create" span) are its children, and each delivery of the record, however much
//! later and on whichever process, is a child of the record's span, whose W3C `traceparent` is
//! stored with the outbox entry and sent with the event.
//!
//! The spans are `tracing` spans of the targets [`TARGET`] and `mxc::trace`, turned into
//! OpenTelemetry spans by `tracing-opentelemetry` and into nothing at all (not even a log
//! line) when traces are off. Finished spans wait in a bounded queue for the exporter: when the
//! collector is slow or down they are dropped and counted, never waited for.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;
use tokio::sync::{mpsc, oneshot};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TracesConfig;

/// The target of the relay's spans for export (kept out of the log lines).
pub const TARGET: &str = "mxc_relay::trace";
/// The MXC client's (the `mxc` crate's) spans.
const MXC_TARGET: &str = "mxc::trace";

/// The most spans in one export request.
const BATCH: usize = 512;
/// How long a span waits for its batch to fill.
const LINGER: Duration = Duration::from_secs(1);

/// Why traces cannot start (the configuration was validated: this is the exporter's refusal).
#[derive(Debug, thiserror::Error)]
#[error("telemetry.traces: cannot create the OTLP exporter: {0}")]
pub struct TracesError(String);

/// What the exporter counts (the caller's metrics).
#[derive(Clone)]
pub struct SpanCounters {
    pub exported: IntCounter,
    /// Dropped because the queue was full (the exporter behind).
    pub dropped_queue_full: IntCounter,
    /// Dropped because the collector refused them or did not answer in time.
    pub dropped_export_failed: IntCounter,
}

/// The running exporter; [`Traces::shutdown`] sends what is queued.
pub struct Traces {
    provider: SdkTracerProvider,
    flush: mpsc::Sender<oneshot::Sender<()>>,
}

impl Traces {
    /// Starts the exporter (on the current tokio runtime) and returns the layer that makes the
    /// spans, for the subscriber.
    pub fn start<S>(
        config: &TracesConfig,
        counters: SpanCounters,
    ) -> Result<(impl tracing_subscriber::Layer<S>, Traces), TracesError>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        use tracing_subscriber::Layer;

        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| TracesError(e.to_string()))?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OtlpHttp(http))
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.traces_url())
            .with_timeout(config.timeout)
            .build()
            .map_err(|e| TracesError(e.to_string()))?;
        let mut attributes: Vec<KeyValue> = config
            .resource
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        attributes.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attributes(attributes)
            .build();
        exporter.set_resource(&resource);
        let (queue, spans) = mpsc::channel(config.queue_size.max(1));
        let (flush, flushes) = mpsc::channel(1);
        tokio::spawn(export_loop(
            exporter,
            spans,
            flushes,
            counters.clone(),
            config.traces_url(),
        ));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BoundedQueue { queue, counters })
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("mxc-relay");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // Nothing here reads OpenTelemetry's own current context: no cost on every enter.
            .with_context_activation(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(TARGET, tracing::Level::TRACE)
                    .with_target(MXC_TARGET, tracing::Level::TRACE),
            );
        Ok((layer, Traces { provider, flush }))
    }

    /// Sends the spans still queued (waiting at most `within`), then stops.
    pub async fn shutdown(self, within: Duration) {
        let (done, flushed) = oneshot::channel();
        if self.flush.send(done).await.is_ok() {
            let _ = tokio::time::timeout(within, flushed).await;
        }
        let _ = self.provider.shutdown();
    }
}

/// Finished spans into the export queue, or dropped (and counted) when it is full.
#[derive(Debug)]
struct BoundedQueue {
    queue: mpsc::Sender<SpanData>,
    counters: SpanCounters,
}

impl std::fmt::Debug for SpanCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanCounters")
    }
}

impl SpanProcessor for BoundedQueue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(span) {
            self.counters.dropped_queue_full.inc();
        }
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

/// Batches the queue's spans (up to [`BATCH`], or what came within [`LINGER`]) and exports
/// them one request at a time; a failed request's spans are dropped and counted, and said in
/// the log once a minute at most.
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut spans: mpsc::Receiver<SpanData>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    counters: SpanCounters,
    url: String,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut last_warning: Option<tokio::time::Instant> = None;
    let mut failed_since_warning = 0u64;
    // `Traces` dropped without a shutdown (an error path): no flush will come; the spans
    // still go until their queue closes.
    let mut flushes_open = true;
    loop {
        let mut flush = None;
        let deadline = tokio::time::sleep(LINGER);
        tokio::pin!(deadline);
        while batch.len() < BATCH && flush.is_none() {
            tokio::select! {
                span = spans.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break,
                },
                done = flushes.recv(), if flushes_open => match done {
                    Some(done) => flush = Some(done),
                    None => flushes_open = false,
                },
                _ = &mut deadline => break,
            }
        }
        if flush.is_some() {
            // Everything queued before the flush goes.
            while let Ok(span) = spans.try_recv() {
                batch.push(span);
            }
        }
        while !batch.is_empty() {
            let chunk: Vec<SpanData> = batch.drain(..batch.len().min(BATCH)).collect();
            let n = chunk.len() as u64;
            match exporter.export(chunk).await {
                Ok(()) => counters.exported.inc_by(n),
                Err(error) => {
                    counters.dropped_export_failed.inc_by(n);
                    failed_since_warning += n;
                    let now = tokio::time::Instant::now();
                    if last_warning.is_none_or(|at| now - at >= Duration::from_secs(60)) {
                        tracing::warn!(collector = %mxc::display_url(&url), %error, dropped = failed_since_warning,
                            "cannot export traces; their spans are dropped (polling and delivery go on)");
                        last_warning = Some(now);
                        failed_since_warning = 0;
                    }
                }
            }
        }
        if let Some(done) = flush {
            let _ = done.send(());
            return;
        }
        if spans.is_closed() && spans.is_empty() {
            return;
        }
    }
}

/// The exporter's HTTP client: the process's reqwest, not a second one.
#[derive(Debug)]
struct OtlpHttp(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttp {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let (parts, body) = request.into_parts();
        let response = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        let mut out = opentelemetry_http::Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// The W3C `traceparent` of `span`, if traces are on.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| format_traceparent(&span_context))
}

/// `00-<trace id>-<span id>-<flags>`.
fn format_traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// The context a stored `traceparent` names, for a span that continues it.
pub fn parent_context(traceparent: &str) -> Option<Context> {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Whether a stored `traceparent` is of a sampled trace (its spans are recorded).
pub fn is_sampled(traceparent: &str) -> bool {
    traceparent.ends_with("-01")
}

/// A span for a delivery of an event whose record's span is `traceparent`: under it when the
/// trace is sampled, else none (a delivery of an unsampled trace records nothing).
pub fn continuing(
    traceparent: Option<&str>,
    make: impl FnOnce() -> tracing::Span,
) -> tracing::Span {
    let Some(parent) = traceparent
        .filter(|t| is_sampled(t))
        .and_then(parent_context)
    else {
        return tracing::Span::none();
    };
    let span = make();
    let _ = span.set_parent(parent);
    span
}

/// The current span's trace and span ids, for a log line (when traces are on).
pub fn current_ids() -> Option<(String, String)> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Adds `trace_id` and `span_id` to each JSON log line written inside a traced span.
pub struct WithTraceIds<F>(pub F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = current_ids() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        // The JSON object's closing brace: the ids go just inside it.
        if let Some(end) = line.rfind('}') {
            line.insert_str(
                end,
                &format!(r#","trace_id":"{trace_id}","span_id":"{span_id}""#),
            );
        }
        writer.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_reads_back_as_its_context() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parent_context(text).unwrap();
        assert_eq!(format_traceparent(cx.span().span_context()), text);
        assert!(is_sampled(text));
        assert!(!is_sampled(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
        assert!(parent_context("00-zz-00f067aa0ba902b7-01").is_none());
    }

    #[test]
    fn without_a_traces_layer_nothing_is_traced() {
        let span = tracing::info_span!(target: TARGET, "poll");
        assert_eq!(traceparent(&span), None);
        assert!(continuing(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            || { tracing::info_span!(target: TARGET, "send") }
        )
        .is_disabled());
    }
}
