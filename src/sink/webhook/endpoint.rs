//! One endpoint's HTTP side: builds the Standard Webhooks request for an event, sends it once,
//! and says what the answer means for delivery.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Request};
use serde_json::Value;

use crate::config::{ValueError, WebhookConfig};
use crate::event::Event;
use crate::signature::{signature_header, WebhookSecret};
use crate::telemetry::traces;
use mxc::{Clock, Secret, SystemClock};

/// Most bytes of a response body read (for the excerpt); the rest is not downloaded.
const BODY_READ_LIMIT: usize = 4096;
/// Bytes of a response body kept in logs and dead letters.
const EXCERPT_BYTES: usize = 200;

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
/// Headers of a request besides the configured ones: ours, and the `User-Agent` and `Accept`
/// the client adds.
const OWN_HEADERS: usize = 7;

/// What one attempt means for delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: done.
    Delivered,
    /// Try this event again later; `throttle` pauses the whole endpoint too (429, 502, 503,
    /// 504, timeouts).
    Retry { throttle: bool },
    /// 410 Gone: the receiver asks for no more deliveries.
    Gone,
}

/// The W3C trace context header: the record's span, for the receiver to continue.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

impl Attempt {
    /// Ends an attempt's span with the receiver's answer.
    pub fn end_span(&self, span: &tracing::Span) {
        if span.is_disabled() {
            return;
        }
        if let Some(status) = self.status {
            span.record("http.response.status_code", status);
        }
        if self.verdict != Verdict::Delivered {
            match self.status {
                Some(status) => span.record("error.type", status),
                None => span.record("error.type", "transport"),
            };
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_message", self.detail.as_str());
        }
    }
}

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub verdict: Verdict,
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    /// One line for logs and dead letters: the status and a body excerpt, or the transport
    /// error. Never holds a secret.
    pub detail: String,
}

/// Why a webhook's settings cannot make an [`Endpoint`]; the texts name the setting (under the
/// sink's key) and never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// `url` does not parse.
    #[error("url: {0}")]
    Url(url::ParseError),
    /// One of `secrets` is not a webhook secret.
    #[error(transparent)]
    Secret(ValueError),
    /// A key of `headers` is not an HTTP header name.
    #[error("headers.{0}: not a header name")]
    NotAHeaderName(String),
    /// A value of `headers` is not an HTTP header value (the value is not shown).
    #[error("headers.{0}: not a header value")]
    NotAHeaderValue(String),
    /// The HTTP client could not be built (its TLS backend, typically).
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

pub struct Endpoint {
    url: reqwest::Url,
    /// The URL for messages: no query (it may hold a token), no credentials.
    shown_url: String,
    client: reqwest::Client,
    secrets: Vec<WebhookSecret>,
    headers: HeaderMap,
    /// Values scrubbed from response excerpts, should a receiver echo them.
    scrub: Vec<Secret>,
    timeout: Duration,
}

impl Endpoint {
    /// The error names what is wrong, never a secret.
    pub fn new(config: &WebhookConfig) -> Result<Endpoint, EndpointError> {
        let url = reqwest::Url::parse(&config.url).map_err(EndpointError::Url)?;
        let secrets = config.signing_secrets().map_err(EndpointError::Secret)?;
        let mut headers = HeaderMap::new();
        let mut scrub: Vec<Secret> = config.secrets.clone();
        for (name, value) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| EndpointError::NotAHeaderName(name.clone()))?;
            let mut v = HeaderValue::from_str(value.expose())
                .map_err(|_| EndpointError::NotAHeaderValue(name.clone()))?;
            v.set_sensitive(true);
            headers.insert(header, v);
            scrub.push(value.clone());
        }
        // Credentials taken out of the URL (validation refused them beside an Authorization
        // header): sent as the header, never in the URL the client logs.
        if let Some(basic) = config.url.basic_auth() {
            let mut v = HeaderValue::from_str(basic.expose())
                .map_err(|_| EndpointError::NotAHeaderValue("Authorization (from url)".into()))?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
            scrub.extend(config.url.secrets().cloned());
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("mxc-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(EndpointError::Client)?;
        Ok(Endpoint {
            shown_url: shown_url(&url),
            url,
            client,
            secrets,
            headers,
            scrub,
            timeout: config.timeout,
        })
    }

    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// The span of attempt `number` to deliver `event` (OpenTelemetry's HTTP client
    /// conventions), under its record's span; none when traces are off or the record's trace is
    /// not sampled. Its URL is the shown one: no credentials, no query.
    pub fn attempt_span(&self, event: &Event, sink: &str, number: u32) -> tracing::Span {
        traces::continuing(event.traceparent.as_deref(), || {
            let span = tracing::info_span!(target: traces::TARGET, parent: None, "webhook",
                otel.name = "POST",
                otel.kind = "client",
                http.request.method = "POST",
                url.full = self.shown_url.as_str(),
                server.address = self.url.host_str().unwrap_or_default(),
                server.port = self.url.port_or_known_default().unwrap_or_default(),
                http.request.resend_count = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
                mxc_relay.sink = sink,
                mxc_relay.attempt = number,
                mxc_relay.event_id = event.id.as_str(),
                error.type = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                otel.status_message = tracing::field::Empty,
            );
            if number > 1 {
                span.record("http.request.resend_count", number - 1);
            }
            span
        })
    }

    /// POSTs `event`, signed now, and classifies the answer.
    pub async fn attempt(&self, event: &Event) -> Attempt {
        let body = body(event);
        let timestamp = SystemClock.now().timestamp();
        let signature = signature_header(&self.secrets, &event.id, timestamp, body.as_bytes());
        let sent = match self.request(
            &event.id,
            timestamp,
            signature,
            body,
            event.traceparent.as_deref(),
        ) {
            Some(request) => self.client.execute(request).await,
            None => {
                return Attempt {
                    verdict: Verdict::Retry { throttle: false },
                    status: None,
                    retry_after: None,
                    detail: "the event id is not a header value".into(),
                }
            }
        };
        let mut response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return Attempt {
                    verdict: Verdict::Retry { throttle: true },
                    status: None,
                    retry_after: None,
                    detail: format!(
                        "no response from {} within {}",
                        self.shown_url,
                        humantime::format_duration(self.timeout)
                    ),
                }
            }
            Err(e) => {
                return Attempt {
                    verdict: Verdict::Retry { throttle: false },
                    status: None,
                    retry_after: None,
                    detail: format!(
                        "cannot reach {}: {}",
                        self.shown_url,
                        self.scrubbed(&http_kit::client::error_chain(e))
                    ),
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = http_kit::client::retry_after(response.headers(), SystemClock.now());
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| shown_location(&self.url, l));
        let verdict = match status {
            200..=299 => Verdict::Delivered,
            410 => Verdict::Gone,
            429 | 502 | 503 | 504 => Verdict::Retry { throttle: true },
            _ => Verdict::Retry { throttle: false },
        };
        if verdict == Verdict::Delivered {
            // Drain a little so the connection goes back to the pool; ignore the content.
            let _ = response.chunk().await;
            return Attempt {
                verdict,
                status: Some(status),
                retry_after,
                detail: format!("HTTP {status}"),
            };
        }
        let mut read = Vec::new();
        while read.len() < BODY_READ_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => read.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let excerpt = self.excerpt(&read);
        let detail = match (status, location) {
            (300..=399, Some(to)) => {
                format!("HTTP {status}: a redirect to {to}, not followed (configure the final URL)")
            }
            (300..=399, None) => format!("HTTP {status}: a redirect, not followed"),
            _ => format!("HTTP {status}: {excerpt}"),
        };
        Attempt {
            verdict,
            status: Some(status),
            retry_after,
            detail,
        }
    }

    /// The request, its header map sized once (a builder grows it header by header). The
    /// configured headers come first, ours are appended, as `RequestBuilder::header` would.
    fn request(
        &self,
        id: &str,
        timestamp: i64,
        signature: String,
        body: String,
        traceparent: Option<&str>,
    ) -> Option<Request> {
        let mut request = Request::new(Method::POST, self.url.clone());
        let headers = request.headers_mut();
        headers.reserve(self.headers.len() + OWN_HEADERS);
        headers.extend(self.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        headers.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.append(WEBHOOK_ID, HeaderValue::from_str(id).ok()?);
        headers.append(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
        headers.append(WEBHOOK_SIGNATURE, HeaderValue::try_from(signature).ok()?);
        // Outside the signed content: verification is unchanged.
        if let Some(value) = traceparent.and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.append(TRACEPARENT, value);
        }
        *request.body_mut() = Some(body.into());
        Some(request)
    }

    fn scrubbed(&self, text: &str) -> String {
        self.scrub.iter().fold(text.to_string(), |t, s| s.scrub(&t))
    }

    fn excerpt(&self, body: &[u8]) -> String {
        let text = self.scrubbed(&String::from_utf8_lossy(body));
        http_kit::client::excerpt_within(text.as_bytes(), EXCERPT_BYTES)
    }
}

/// The request body, per the Standard Webhooks specification: `{type, timestamp, data}`, where
/// `timestamp` is when the authorization happened (null for a record without a transaction
/// time) and `data` the record as the route shaped it. The same bytes on every attempt.
pub fn body(event: &Event) -> String {
    let event_type = Value::from(event.event_type.as_str()).to_string();
    let timestamp = event
        .occurred_at
        .as_deref()
        .map_or(Value::Null, Value::from)
        .to_string();
    let data = event.data_json();
    // Sized once: `format!` would grow a 7 KB body by doubling, copying it each time.
    let parts = [
        r#"{"type":"#,
        &event_type,
        r#","timestamp":"#,
        &timestamp,
        r#","data":"#,
        data,
        "}",
    ];
    let mut body = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        body.push_str(part);
    }
    body
}

fn shown_url(url: &reqwest::Url) -> String {
    mxc::display_url(url.as_str())
}

fn shown_location(base: &reqwest::Url, location: &str) -> String {
    match base.join(location) {
        Ok(url) => shown_url(&url),
        Err(_) => "(an unreadable Location)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_type_timestamp_data() {
        let head = crate::event::Head {
            id: "evt_1".into(),
            event_type: "authorization.declined".into(),
            route: "declines".into(),
            resource: "authorizations".into(),
            sink: "alerts".into(),
            xmid: "X1".into(),
            record_id: "r-1".into(),
            occurred_at: Some("2026-01-02T08:04:05.000Z".into()),
            fetched_at_ms: 0,
            traceparent: None,
        };
        let event = Event::new(head, r#"{"id":"r-1","n":1}"#);
        let parsed: Value = serde_json::from_str(&body(&event)).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"type": "authorization.declined",
                "timestamp": "2026-01-02T08:04:05.000Z", "data": {"id": "r-1", "n": 1}})
        );
    }

    #[test]
    fn shown_urls_hide_credentials_and_queries() {
        let url = reqwest::Url::parse("https://u:p@hooks.example.com/in?token=abc").unwrap();
        assert_eq!(shown_url(&url), "https://hooks.example.com/in?…");
    }
}
