//! The spans of MXC's HTTP requests (OpenTelemetry's HTTP client conventions), for a trace
//! exporter to pick up by their target; nothing at all without one.

use reqwest::Method;

use crate::error::MxcError;

/// The target of the client's spans, for export only (see the relay's `telemetry::traces`).
const TRACE_TARGET: &str = "mxc::trace";

/// An HTTP client span (OpenTelemetry's HTTP conventions) for one request to `url`; its
/// `url.full` without credentials (should the base URL carry any) and without a query.
pub(crate) fn request_span(method: &Method, url: &str) -> tracing::Span {
    let span = tracing::info_span!(target: TRACE_TARGET, "mxc request",
        otel.name = %method,
        otel.kind = "client",
        http.request.method = %method,
        url.full = tracing::field::Empty,
        server.address = tracing::field::Empty,
        server.port = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        if let Ok(mut parsed) = url::Url::parse(url) {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            span.record("url.full", parsed.as_str());
            if let Some(host) = parsed.host_str() {
                span.record("server.address", host);
            }
            if let Some(port) = parsed.port_or_known_default() {
                span.record("server.port", port);
            }
        }
    }
    span
}

/// Ends a request's span with the status answered, or the failure.
pub(crate) fn ended_span(span: &tracing::Span, answered: Result<u16, &MxcError>) {
    match answered {
        Ok(status) => {
            span.record("http.response.status_code", status);
            if status >= 400 {
                span.record("error.type", status);
                span.record("otel.status_code", "ERROR");
            }
        }
        Err(error) => {
            span.record("error.type", error.kind());
            span.record("otel.status_code", "ERROR");
        }
    }
}
