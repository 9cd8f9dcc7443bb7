//! `[telemetry]`: the HTTP endpoints for Prometheus and orchestrators, and `[telemetry.traces]`
//! (OpenTelemetry), with their defaults, the `OTEL_*` variables and the checks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::validate;
use super::ConfigError;

/// `[telemetry]`: the HTTP endpoints for Prometheus and for orchestrators.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `""` serves nothing.
    /// `0.0.0.0:9464` in a container.
    /// Default: `"127.0.0.1:9464"`.
    pub listen: String,
    /// Export the poll lag of every XMID as its own series. Switch it off for fleets of many
    /// thousands: the fleet-wide max and percentiles remain.
    /// Default: `true`.
    pub per_xmid_metrics: bool,
    /// `[telemetry.traces]`: OpenTelemetry traces, off unless an endpoint is given.
    pub traces: TracesConfig,
}

/// `[telemetry.traces]`: one trace per poll, a span per record under it, and each delivery of
/// that record (minutes later, after a restart) under the record's span; sent over OTLP/HTTP
/// (protobuf) to a collector. The standard variables win over the file: `OTEL_SDK_DISABLED`,
/// `OTEL_TRACES_EXPORTER=none`, `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` is appended),
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as it is), `OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP_TIMEOUT` (ms) and
/// `OTEL_BSP_MAX_QUEUE_SIZE`;
/// `OTEL_EXPORTER_OTLP_HEADERS` adds headers (a collector's token: never logged).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TracesConfig {
    /// The collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`: `/v1/traces` is appended
    /// unless the path already ends so). `OTEL_EXPORTER_OTLP_ENDPOINT` wins.
    /// Default: `""` (no traces, at no cost).
    pub endpoint: String,
    /// The share of polls traced (each with its records and their deliveries), 0.0 to 1.0.
    /// A poll's decision holds for all of its records: a trace is whole or absent.
    /// Default: `1.0`.
    pub sampling_ratio: f64,
    /// `service.name` (`OTEL_SERVICE_NAME` wins).
    /// Default: `"mxc-relay"`.
    pub service_name: String,
    /// More resource attributes (`deployment.environment.name = "prod"` …); those of
    /// `OTEL_RESOURCE_ATTRIBUTES` win.
    /// Default: `{}`.
    pub resource: BTreeMap<String, String>,
    /// Finished spans waiting for export; beyond it spans are dropped (and counted in
    /// `mxc_relay_trace_spans_total{outcome="dropped_queue_full"}`), never waited for.
    /// Default: `4096`.
    pub queue_size: usize,
    /// The longest an export may take before its spans are dropped.
    /// Default: `"10s"`.
    #[serde(with = "super::duration")]
    pub timeout: Duration,
    /// `endpoint` came from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the URL as it is.
    #[serde(skip)]
    pub endpoint_is_traces_url: bool,
}

impl Default for TracesConfig {
    fn default() -> Self {
        TracesConfig {
            endpoint: String::new(),
            sampling_ratio: 1.0,
            service_name: "mxc-relay".to_string(),
            resource: BTreeMap::new(),
            queue_size: 4096,
            timeout: Duration::from_secs(10),
            endpoint_is_traces_url: false,
        }
    }
}

impl TracesConfig {
    /// Whether traces are exported.
    pub fn enabled(&self) -> bool {
        !self.endpoint.trim().is_empty()
    }

    /// The URL spans are posted to.
    pub fn traces_url(&self) -> String {
        if self.endpoint_is_traces_url {
            return self.endpoint.trim().to_string();
        }
        let base = self.endpoint.trim().trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        }
    }

    /// The `OTEL_*` variables found by `env`, over the file's values (empty ones are ignored).
    pub(super) fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(endpoint) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            self.endpoint = endpoint;
            self.endpoint_is_traces_url = true;
        } else if let Some(endpoint) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            self.endpoint = endpoint;
            self.endpoint_is_traces_url = false;
        }
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        if disabled {
            self.endpoint.clear();
        }
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            self.service_name = name;
        }
        if let Some(list) = var("OTEL_RESOURCE_ATTRIBUTES") {
            for pair in list.split(',') {
                if let Some((key, value)) = pair.split_once('=') {
                    let value = percent_encoding::percent_decode_str(value.trim())
                        .decode_utf8_lossy()
                        .into_owned();
                    if key.trim() == "service.name" && var("OTEL_SERVICE_NAME").is_none() {
                        self.service_name = value;
                    } else if !key.trim().is_empty() {
                        self.resource.insert(key.trim().to_string(), value);
                    }
                }
            }
        }
        if let Some(ratio) = var("OTEL_TRACES_SAMPLER_ARG") {
            // An unreadable ratio is reported by validation, under the variable's name.
            self.sampling_ratio = ratio.parse().unwrap_or(f64::NAN);
        }
        if let Some(ms) =
            var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").or_else(|| var("OTEL_EXPORTER_OTLP_TIMEOUT"))
        {
            // Milliseconds, as the specification has it; unreadable is reported as zero.
            self.timeout = Duration::from_millis(ms.parse().unwrap_or(0));
        }
        if let Some(size) = var("OTEL_BSP_MAX_QUEUE_SIZE") {
            self.queue_size = size.parse().unwrap_or(0);
        }
    }

    fn validate(&self, error: &mut impl FnMut(&str, String)) {
        if !self.enabled() {
            return;
        }
        match url::Url::parse(&self.traces_url()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                if !url.username().is_empty() || url.password().is_some() {
                    error(
                        "telemetry.traces.endpoint",
                        "holds credentials: give a collector's token in OTEL_EXPORTER_OTLP_HEADERS instead".into(),
                    );
                }
            }
            _ => error(
                "telemetry.traces.endpoint",
                format!(
                    "an http(s) URL such as http://127.0.0.1:4318 (or OTEL_EXPORTER_OTLP_ENDPOINT), got {}",
                    mxc::display_url(&self.endpoint)
                ),
            ),
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            error(
                "telemetry.traces.sampling_ratio",
                format!(
                    "a ratio from 0.0 to 1.0 (or OTEL_TRACES_SAMPLER_ARG), got {}",
                    self.sampling_ratio
                ),
            );
        }
        if self.queue_size == 0 || self.queue_size > 1_000_000 {
            error(
                "telemetry.traces.queue_size",
                format!(
                    "from 1 to 1000000 spans (or OTEL_BSP_MAX_QUEUE_SIZE), got {}",
                    self.queue_size
                ),
            );
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(600) {
            error(
                "telemetry.traces.timeout",
                format!(
                    "from 1ms to 10m (or OTEL_EXPORTER_OTLP_TIMEOUT in ms), got {}",
                    validate::fmt(self.timeout)
                ),
            );
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            listen: "127.0.0.1:9464".to_string(),
            per_xmid_metrics: true,
            traces: TracesConfig::default(),
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
        self.traces.validate(&mut error);
    }
}
