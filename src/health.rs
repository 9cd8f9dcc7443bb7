//! The process's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (it is doing its job: store readable, MXC token held, no poller
//! stuck, every sink reachable and no webhook endpoint disabled). `/readyz` answers 200 or 503
//! with one line per check. Above what they look at (the store, the MXC client, the pollers);
//! `telemetry` keeps the metric definitions and logging.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use tokio_util::sync::CancellationToken;

use crate::poll::Fleet;
use crate::store::Store;
use crate::telemetry::Metrics;
use mxc::Client;

/// Connections to `/metrics`, `/healthz` and `/readyz` at once.
pub const MAX_CONNECTIONS: usize = 64;

/// What `/readyz` looks at.
#[derive(Clone)]
pub struct Health {
    pub metrics: Metrics,
    pub store: Store,
    pub client: Client,
    /// The XMIDs polled (listed and discovered).
    pub fleet: Fleet,
    /// `pollers.roster.refresh` when the roster is used.
    pub roster_refresh: Option<Duration>,
    /// A poller whose lag exceeds this is stuck.
    pub stuck_after: Duration,
}

impl Health {
    /// Each check with its verdict: `Ok(detail)` or `Err(what is wrong)`.
    pub fn checks(&self) -> Vec<(&'static str, Result<String, String>)> {
        let xmids = self.fleet.xmids();
        let store = match xmids.first().map(|x| self.store.cursor(x)) {
            Some(Err(e)) => Err(e.to_string()),
            _ => match self.store.check_space() {
                Err(e) => Err(format!("{e}: polling paused")),
                Ok(()) => Ok(format!("open at {}", self.store.path().display())),
            },
        };
        let token = match self.client.token_expires_in() {
            Some(left) if !left.is_zero() => Ok(format!(
                "held, expires in {}",
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            )),
            _ => Err("no valid MXC token (see the log for the Security API's answer)".into()),
        };
        let lag = self.metrics.poll_lag_max.get();
        let pollers = if lag <= self.stuck_after.as_secs_f64() {
            Ok(format!("{} XMIDs, largest lag {lag:.1}s", xmids.len()))
        } else {
            Err(format!(
                "a poller is stuck: largest lag {lag:.0}s exceeds {}s",
                self.stuck_after.as_secs()
            ))
        };
        let flagged = |gauge: &prometheus::IntGaugeVec| -> Vec<String> {
            self.store
                .sinks()
                .filter(|s| gauge.with_label_values(&[s.as_str()]).get() > 0)
                .cloned()
                .collect()
        };
        let (disabled, unreachable) = (
            flagged(&self.metrics.webhook_disabled),
            flagged(&self.metrics.sink_unreachable),
        );
        let mut problems = Vec::new();
        if !disabled.is_empty() {
            problems.push(format!(
                "webhook endpoint disabled: {} (mxc-relay webhook enable)",
                disabled.join(", ")
            ));
        }
        if !unreachable.is_empty() {
            problems.push(format!("unreachable: {}", unreachable.join(", ")));
        }
        let sinks = if problems.is_empty() {
            Ok(format!("{} sinks", self.store.sinks().count()))
        } else {
            Err(problems.join("; "))
        };
        let mut checks = vec![
            ("store", store),
            ("token", token),
            ("pollers", pollers),
            ("sinks", sinks),
        ];
        // Still ready, but said: records later than the look-back are now left to the sweep.
        let fallen_back: Vec<&str> = mxc::RESOURCES
            .iter()
            .filter(|r| r.ingestion_field.is_some())
            .filter(|r| {
                self.metrics
                    .cursor_fallback
                    .with_label_values(&[r.name])
                    .get()
                    > 0
            })
            .map(|r| r.name)
            .collect();
        if !fallen_back.is_empty() {
            checks.push((
                "cursor",
                Ok(format!(
                    "MXC refused created queries: {} polled by transaction time with pollers.look_back (see the log)",
                    fallen_back.join(", ")
                )),
            ));
        }
        if let Some(refresh) = self.roster_refresh {
            let last = self.metrics.roster_last_read.get();
            let age = chrono::Utc::now().timestamp() as f64 - last;
            let limit = 2.0 * refresh.as_secs_f64() + 60.0;
            checks.push((
                "roster",
                if last <= 0.0 {
                    Err("not read yet (see the log for the MXC answer)".into())
                } else if age > limit {
                    Err(format!(
                        "last read {age:.0}s ago, beyond two refreshes (see the log)"
                    ))
                } else {
                    Ok(format!("read {age:.0}s ago"))
                },
            ));
        }
        checks
    }
}

/// Serves until `stop`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    // After a reload the previous server may hold the port a moment longer.
    let mut tries = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => break other?,
        }
    };
    let bound = listener.local_addr()?;
    let metrics = health.metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let health = health.clone();
                async move { readyz(&health).into_response() }
            }),
        );
    // Scrapers are few: a small cap keeps a flood of connections from taking the descriptors
    // the store, Kafka and MXC need.
    http_kit::serve(
        listener,
        app,
        http_kit::Limits::standard(MAX_CONNECTIONS),
        stop,
    );
    Ok(bound)
}

fn readyz(health: &Health) -> (StatusCode, String) {
    let checks = health.checks();
    let ready = checks.iter().all(|(_, r)| r.is_ok());
    let mut text = String::from(if ready { "ready\n" } else { "not ready\n" });
    for (name, result) in checks {
        match result {
            Ok(detail) => text.push_str(&format!("{name}: ok, {detail}\n")),
            Err(problem) => text.push_str(&format!("{name}: FAILING, {problem}\n")),
        }
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, text)
}
