//! The process's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (it is doing its job: store readable, MXC token held, no poller
//! stuck, every sink reachable and no webhook endpoint disabled). `/readyz` answers 200 or 503
//! with one line per check. Above what they look at (the store, the MXC client, the pollers);
//! `telemetry` keeps the metric definitions and logging.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use tokio_util::sync::CancellationToken;

use crate::poll::Fleet;
use crate::store::{Store, StoreError};
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

/// Why a readiness check fails: the text `/readyz` prints after `FAILING, `.
#[derive(Debug, thiserror::Error)]
pub enum Unready {
    /// The store cannot be read.
    #[error("{0}")]
    Store(StoreError),
    /// The store refuses to admit more (its disk is nearly full): the pollers wait.
    #[error("{0}: polling paused")]
    StoreFull(StoreError),
    /// No MXC token is held, or the one held has expired.
    #[error("no valid MXC token (see the log for the Security API's answer)")]
    NoToken,
    /// The largest poll lag (seconds) exceeds `stuck_after` (seconds).
    #[error("a poller is stuck: largest lag {lag:.0}s exceeds {stuck_after}s")]
    PollerStuck { lag: f64, stuck_after: u64 },
    /// Webhook endpoints disabled, sinks unreachable (either list may be empty, not both).
    #[error("{}", sink_problems(.disabled, .unreachable))]
    Sinks {
        disabled: Vec<String>,
        unreachable: Vec<String>,
    },
    /// The roster has not been read since the start.
    #[error("not read yet (see the log for the MXC answer)")]
    RosterNotRead,
    /// The roster's last read is older than two refreshes (and a minute).
    #[error("last read {age:.0}s ago, beyond two refreshes (see the log)")]
    RosterStale { age: f64 },
}

fn sink_problems(disabled: &[String], unreachable: &[String]) -> String {
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
    problems.join("; ")
}

impl Health {
    /// Each check with its verdict: `Ok(detail)` or `Err(what is wrong)`.
    pub fn checks(&self) -> Vec<(&'static str, Result<String, Unready>)> {
        let xmids = self.fleet.xmids();
        let store = match xmids.first().map(|x| self.store.cursor(x)) {
            Some(Err(e)) => Err(Unready::Store(e)),
            _ => match self.store.check_space() {
                Err(e) => Err(Unready::StoreFull(e)),
                Ok(()) => Ok(format!("open at {}", self.store.path().display())),
            },
        };
        let token = match self.client.token_expires_in() {
            Some(left) if !left.is_zero() => Ok(format!(
                "held, expires in {}",
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            )),
            _ => Err(Unready::NoToken),
        };
        let lag = self.metrics.poll_lag_max.get();
        let pollers = if lag <= self.stuck_after.as_secs_f64() {
            Ok(format!("{} XMIDs, largest lag {lag:.1}s", xmids.len()))
        } else {
            Err(Unready::PollerStuck {
                lag,
                stuck_after: self.stuck_after.as_secs(),
            })
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
        let sinks = if disabled.is_empty() && unreachable.is_empty() {
            Ok(format!("{} sinks", self.store.sinks().count()))
        } else {
            Err(Unready::Sinks {
                disabled,
                unreachable,
            })
        };
        let mut checks = vec![
            ("store", store),
            ("token", token),
            ("pollers", pollers),
            ("sinks", sinks),
        ];
        // Still ready, but said: records later than the look-back are now left to the sweep.
        let flagged = |gauge: &prometheus::IntGaugeVec| -> Vec<&str> {
            mxc::RESOURCES
                .iter()
                .filter(|r| r.ingestion_field.is_some())
                .filter(|r| gauge.with_label_values(&[r.name]).get() > 0)
                .map(|r| r.name)
                .collect()
        };
        let ignored = flagged(&self.metrics.created_filter_ignored);
        let refused: Vec<&str> = flagged(&self.metrics.cursor_fallback)
            .into_iter()
            .filter(|r| !ignored.contains(r))
            .collect();
        if !refused.is_empty() {
            checks.push((
                "cursor",
                Ok(format!(
                    "MXC refused created queries: {} polled by transaction time with pollers.look_back (see the log)",
                    refused.join(", ")
                )),
            ));
        }
        if !ignored.is_empty() {
            checks.push((
                "created filter",
                Ok(format!(
                    "MXC ignores the range of created queries: {} (polled by transaction time unless pollers.cursor = \"created\"; see the log)",
                    ignored.join(", ")
                )),
            ));
        }
        if let Some(refresh) = self.roster_refresh {
            let last = self.metrics.roster_last_read.get();
            let age = self.store.clock().now().timestamp() as f64 - last;
            let limit = 2.0 * refresh.as_secs_f64() + 60.0;
            checks.push((
                "roster",
                if last <= 0.0 {
                    Err(Unready::RosterNotRead)
                } else if age > limit {
                    Err(Unready::RosterStale { age })
                } else {
                    Ok(format!("read {age:.0}s ago"))
                },
            ));
        }
        checks
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `stop`.
pub fn serve(listener: tokio::net::TcpListener, health: Health, stop: CancellationToken) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_checks_read_as_before() {
        let sinks = |disabled: &[&str], unreachable: &[&str]| {
            Unready::Sinks {
                disabled: disabled.iter().map(|s| s.to_string()).collect(),
                unreachable: unreachable.iter().map(|s| s.to_string()).collect(),
            }
            .to_string()
        };
        assert_eq!(
            sinks(&["a", "b"], &[]),
            "webhook endpoint disabled: a, b (mxc-relay webhook enable)"
        );
        assert_eq!(sinks(&[], &["k"]), "unreachable: k");
        assert_eq!(
            sinks(&["a"], &["k", "l"]),
            "webhook endpoint disabled: a (mxc-relay webhook enable); unreachable: k, l"
        );
        assert_eq!(
            Unready::PollerStuck {
                lag: 312.6,
                stuck_after: 300
            }
            .to_string(),
            "a poller is stuck: largest lag 313s exceeds 300s"
        );
        assert_eq!(
            Unready::RosterStale { age: 1234.4 }.to_string(),
            "last read 1234s ago, beyond two refreshes (see the log)"
        );
        let full = StoreError::DiskFull {
            path: "/var/lib/mxc-relay".into(),
            free_mib: 10,
            min_free_mib: 100,
        };
        assert_eq!(
            Unready::StoreFull(full).to_string(),
            "store /var/lib/mxc-relay: the disk is nearly full (10 MiB free, store.min_free_mib is 100): polling paused"
        );
    }
}
