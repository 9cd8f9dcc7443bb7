//! A small OpenTelemetry collector: OTLP/HTTP (protobuf) on 127.0.0.1, decoding each
//! `ExportTraceServiceRequest` with `opentelemetry-proto` and keeping its spans. It can be told,
//! while a test runs, to refuse (503) or to black-hole (accept and never answer).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

/// How the collector answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Accept,
    Refuse,
    BlackHole,
}

/// One span as received, its ids in hex and its attributes as text.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's span kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    pub attributes: HashMap<String, String>,
    pub events: Vec<(String, HashMap<String, String>)>,
    /// Its resource's attributes.
    pub resource: HashMap<String, String>,
    /// 2 is an error.
    pub status_code: i32,
}

impl Span {
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or("")
    }

    /// Every text the span holds, to search for secrets.
    pub fn texts(&self) -> Vec<&str> {
        let mut out = vec![self.name.as_str()];
        out.extend(self.attributes.values().map(String::as_str));
        for (name, attributes) in &self.events {
            out.push(name);
            out.extend(attributes.values().map(String::as_str));
        }
        out.extend(self.resource.values().map(String::as_str));
        out
    }
}

struct Shared {
    mode: Mutex<Mode>,
    spans: Mutex<Vec<Span>>,
    requests: std::sync::atomic::AtomicU64,
}

/// A running collector (stops when dropped).
pub struct Collector {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _server: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub async fn start() -> Collector {
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Accept),
            spans: Mutex::new(Vec::new()),
            requests: Default::default(),
        });
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Collector {
            addr,
            shared,
            _server: server,
        }
    }

    /// Its base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn spans(&self) -> Vec<Span> {
        self.shared.spans.lock().unwrap().clone()
    }

    /// Export requests received, answered or not.
    pub fn requests(&self) -> u64 {
        self.shared
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn receive(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    shared
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mode = *shared.mode.lock().unwrap();
    match mode {
        Mode::Refuse => return StatusCode::SERVICE_UNAVAILABLE,
        Mode::BlackHole => std::future::pending::<()>().await,
        Mode::Accept => {}
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut spans = shared.spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| texts(&r.attributes))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(Span {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    attributes: texts(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), texts(&e.attributes)))
                        .collect(),
                    resource: resource.clone(),
                    status_code: span.status.map_or(0, |s| s.code),
                });
            }
        }
    }
    StatusCode::OK
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn texts(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}
