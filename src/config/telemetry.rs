//! `[telemetry]`: the HTTP endpoints for Prometheus and orchestrators, with its default and checks.

use serde::Deserialize;

use super::validate;
use super::ConfigError;

/// `[telemetry]`: the HTTP endpoints for Prometheus and for orchestrators.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `""` serves nothing.
    /// `0.0.0.0:9464` in a container.
    pub listen: String,
    /// Export the poll lag of every XMID as its own series. Switch it off for fleets of many
    /// thousands: the fleet-wide max and percentiles remain.
    pub per_xmid_metrics: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            listen: "127.0.0.1:9464".to_string(),
            per_xmid_metrics: true,
        }
    }
}

impl TelemetryConfig {
    /// The listen address, if any (validation has checked it).
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.trim().parse().ok()
    }
}

impl TelemetryConfig {
    /// `[telemetry]`'s errors.
    pub(super) fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        let listen = self.listen.trim();
        if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
            error(
                "telemetry.listen",
                format!("an IP:PORT such as 127.0.0.1:9464 (or \"\" for none), got {listen:?}"),
            );
        }
    }
}
