//! A verifying webhook receiver, as a user would run one: each POST's Standard Webhooks
//! signature is checked (204 when it holds, 401 with the reason when it does not). It is
//! `mxc-relay webhook listen`, the demo's receiver, and the one the tests and the benchmark
//! deliver to — there its answer can be changed while it runs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::signature::{self, SignatureError, WebhookSecret};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Bytes,
    /// The index of the secret that verified it, or why none did.
    pub verified: Result<usize, SignatureError>,
    /// When it arrived, on tokio's clock (paused in tests).
    pub received_at: Instant,
    /// The status answered.
    pub status: u16,
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
    arrived: Notify,
}

/// A running receiver.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Listens on `addr` (port 0 picks a free one).
    pub async fn start(addr: SocketAddr, config: ReceiverConfig) -> std::io::Result<Receiver> {
        let state = Arc::new(State {
            config,
            behaviour: Mutex::new(Behaviour::default()),
            deliveries: Mutex::new(Vec::new()),
            count: Default::default(),
            arrived: Notify::new(),
        });
        Receiver::serve(addr, state).await
    }

    async fn serve(addr: SocketAddr, state: Arc<State>) -> std::io::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let s = state.clone();
        let app = axum::Router::new().fallback(axum::routing::post(
            move |headers: HeaderMap, body: Bytes| receive(s.clone(), headers, body),
        ));
        let done = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { done.cancelled().await })
                .await;
        });
        Ok(Receiver {
            addr,
            state,
            stop,
            task,
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
        let _ = (&mut self.task).await;
    }

    /// Listens again on the same address, keeping what it received.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        let again = Receiver::serve(self.addr, self.state.clone()).await?;
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
        chrono::Utc::now().timestamp(),
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
    let behaviour = lock(&state.behaviour).clone();
    let (status, response) = match &verified {
        Err(e) => (
            StatusCode::UNAUTHORIZED,
            (StatusCode::UNAUTHORIZED, e.to_string()).into_response(),
        ),
        Ok(_) => {
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
        received_at,
        status: status.as_u16(),
    };
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

/// A poisoned lock only means another request panicked mid-update; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
