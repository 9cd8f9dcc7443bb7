//! A verifying webhook receiver, as a user would run one: each POST's Standard Webhooks
//! signature is checked (204 when it holds, 401 with the reason when it does not), then its
//! body (400 unless a JSON object: `body`). It is `mxc-relay webhook listen`, the demo's
//! receiver, and the one the tests and the benchmark deliver to — there its answer can be
//! changed while it runs. `GET /metrics` counts its answers and connections (`metrics`); it
//! serves under the limits of [`http_kit`].

mod body;
mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mxc::Clock;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::signature::{self, SignatureError, WebhookSecret};
use http_kit::Limits;

pub use body::BodyError;
use metrics::Counts;
pub use metrics::{Outcome, ReceiverStats};

/// Keep-alive connections idle this long are closed; longer than the webhook sink's own pool
/// keeps them (60 s), so it never sends on a connection the receiver is closing.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// The limits of `webhook listen` unless told otherwise.
pub const DEFAULT_LIMITS: Limits = Limits {
    header_read_timeout: Limits::DEFAULT_HEADER_READ_TIMEOUT,
    idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
    max_connections: Limits::DEFAULT_MAX_CONNECTIONS,
};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Bytes,
    /// The index of the secret that verified it, or why none did.
    pub verified: Result<usize, SignatureError>,
    /// Why a signed body was refused; `None` when it is a JSON object (or unsigned).
    pub body_error: Option<BodyError>,
    /// When it arrived, on tokio's clock (paused in tests).
    pub received_at: Instant,
    /// The status answered.
    pub status: u16,
    /// The `Authorization` header it came with (a secret: not in `Debug`).
    pub authorization: Option<mxc::Secret>,
    /// The W3C `traceparent` header it came with: the span of the record it carries.
    pub traceparent: Option<String>,
}

impl Delivery {
    pub fn outcome(&self) -> Outcome {
        match (&self.verified, &self.body_error) {
            (Err(_), _) => Outcome::BadSignature,
            (Ok(_), Some(_)) => Outcome::BadBody,
            (Ok(_), None) => Outcome::Verified,
        }
    }
}

/// How the receiver answers verified deliveries; changeable while it runs.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub status: u16,
    pub retry_after: Option<String>,
    /// Wait this long before answering.
    pub delay: Duration,
    pub body: String,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            status: 204,
            retry_after: None,
            delay: Duration::ZERO,
            body: String::new(),
        }
    }
}

/// Called for each delivery (the CLI and the demo print it).
pub type OnDelivery = Box<dyn Fn(&Delivery) + Send + Sync>;

pub struct ReceiverConfig {
    pub secrets: Vec<WebhookSecret>,
    /// Refuse timestamps further than this from now.
    pub tolerance: Duration,
    /// Keep every delivery (with its body) for [`Receiver::deliveries`]; a benchmark only counts.
    pub keep: bool,
    pub on_delivery: Option<OnDelivery>,
}

struct State {
    config: ReceiverConfig,
    behaviour: Mutex<Behaviour>,
    deliveries: Mutex<Vec<Delivery>>,
    count: std::sync::atomic::AtomicU64,
    counts: Counts,
    arrived: Notify,
    /// Set once serving: its connection counts.
    server: Mutex<Option<Arc<http_kit::Server>>>,
}

/// A running receiver.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    limits: Limits,
    stop: CancellationToken,
    server: Arc<http_kit::Server>,
}

impl Receiver {
    /// Listens on `addr` (port 0 picks a free one) with the [`DEFAULT_LIMITS`].
    pub async fn start(addr: SocketAddr, config: ReceiverConfig) -> std::io::Result<Receiver> {
        Receiver::start_with_limits(addr, config, DEFAULT_LIMITS).await
    }

    /// Listens on `addr` under `limits`.
    pub async fn start_with_limits(
        addr: SocketAddr,
        config: ReceiverConfig,
        limits: Limits,
    ) -> std::io::Result<Receiver> {
        let state = Arc::new(State {
            config,
            behaviour: Mutex::new(Behaviour::default()),
            deliveries: Mutex::new(Vec::new()),
            count: Default::default(),
            counts: Counts::default(),
            arrived: Notify::new(),
            server: Mutex::new(None),
        });
        Receiver::serve(addr, state, limits).await
    }

    async fn serve(
        addr: SocketAddr,
        state: Arc<State>,
        limits: Limits,
    ) -> std::io::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let (s, m) = (state.clone(), state.clone());
        let post = axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            receive(s.clone(), headers, body)
        });
        // Deliveries may come to any path, `/metrics` included.
        let app = axum::Router::new()
            .route(
                "/metrics",
                post.clone().get(move || async move { m.stats().render() }),
            )
            .fallback(post);
        let server = Arc::new(http_kit::serve(listener, app, limits, stop.clone()));
        *lock(&state.server) = Some(server.clone());
        Ok(Receiver {
            addr,
            state,
            limits,
            stop,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/mxc", self.addr)
    }

    /// Changes how verified deliveries are answered from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.state.behaviour) = behaviour;
    }

    /// Every delivery so far (when keeping them).
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.state.deliveries).clone()
    }

    /// Requests by outcome, and connections, so far.
    pub fn stats(&self) -> ReceiverStats {
        self.state.stats()
    }

    /// Requests received so far.
    pub fn count(&self) -> u64 {
        self.state.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` requests arrived in all, or `within` passed; returns the count.
    pub async fn wait_for(&self, n: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let arrived = self.state.arrived.notified();
            tokio::pin!(arrived);
            // Registered before the count is read, so no arrival slips between the two.
            arrived.as_mut().enable();
            let count = self.count();
            if count >= n {
                return count;
            }
            tokio::select! {
                _ = arrived => {}
                _ = tokio::time::sleep_until(deadline) => return self.count(),
            }
        }
    }

    /// Stops listening: connections are refused until [`Receiver::restart`].
    pub async fn stop(&mut self) {
        self.stop.cancel();
        self.server.stopped().await;
    }

    /// Listens again on the same address, keeping what it received.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        let again = Receiver::serve(self.addr, self.state.clone(), self.limits).await?;
        // The old server has stopped; dropping it cancels nothing that still runs.
        drop(std::mem::replace(self, again));
        Ok(())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn receive(state: Arc<State>, headers: HeaderMap, body: Bytes) -> Response {
    let received_at = Instant::now();
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(mxc::Secret::new);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let check = Some((
        mxc::SystemClock.now().timestamp(),
        state.config.tolerance.as_secs() as i64,
    ));
    let verified = signature::verify(
        &state.config.secrets,
        &id,
        &timestamp,
        &signature,
        &body,
        check,
    );
    // Only a signed body is worth parsing.
    let body_error = match verified {
        Ok(_) => body::check(&body).err(),
        Err(_) => None,
    };
    let behaviour = lock(&state.behaviour).clone();
    let (status, response) = match (&verified, &body_error) {
        (Err(e), _) => (
            StatusCode::UNAUTHORIZED,
            (StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
        ),
        (Ok(_), Some(e)) => (
            StatusCode::BAD_REQUEST,
            (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        ),
        (Ok(_), None) => {
            if !behaviour.delay.is_zero() {
                tokio::time::sleep(behaviour.delay).await;
            }
            let status =
                StatusCode::from_u16(behaviour.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, behaviour.body.clone()).into_response();
            if let Some(value) = behaviour
                .retry_after
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
            (status, response)
        }
    };
    let delivery = Delivery {
        id,
        timestamp,
        signature,
        body,
        verified,
        body_error,
        received_at,
        status: status.as_u16(),
        authorization,
        traceparent,
    };
    state.counts.add(delivery.outcome());
    if let Some(on_delivery) = &state.config.on_delivery {
        on_delivery(&delivery);
    }
    if state.config.keep {
        lock(&state.deliveries).push(delivery);
    }
    state
        .count
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    state.arrived.notify_waiters();
    response
}

impl State {
    fn stats(&self) -> ReceiverStats {
        let connections = lock(&self.server)
            .as_ref()
            .map(|s| s.stats())
            .unwrap_or_default();
        ReceiverStats {
            verified: self.counts.get(Outcome::Verified),
            bad_signature: self.counts.get(Outcome::BadSignature),
            bad_body: self.counts.get(Outcome::BadBody),
            connections,
        }
    }
}

/// A poisoned lock only means another request panicked mid-update; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
