//! Logging setup (logs go to stderr: stdout carries data), traces (see [`traces`]) and the
//! metric definitions. The HTTP endpoints that serve them with health and readiness are
//! `crate::health`'s.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TracesConfig};

/// Installs the global subscriber, logging only. `RUST_LOG`, when set, overrides `level`.
pub fn init_logging(level: &str, format: LogFormat) {
    // Without traces there is nothing to fail.
    let _ = init(level, format, None);
}

/// Installs the global subscriber: the log lines and, when `traces` are on, their export
/// (counted in `metrics`). Call it on the runtime that is to run the exporter.
pub fn init(
    level: &str,
    format: LogFormat,
    traces: Option<(&TracesConfig, &Metrics)>,
) -> Result<Option<traces::Traces>, traces::TracesError> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
        // The spans made for export are not the log's.
        .add_directive(
            format!("{}=off", traces::TARGET)
                .parse()
                .unwrap_or_else(|_| unreachable!("a constant directive")),
        )
        .add_directive(
            "mxc::trace=off"
                .parse()
                .unwrap_or_else(|_| unreachable!("a constant directive")),
        );
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .map_event_format(traces::WithTraceIds)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .with_filter(filter)
            .boxed(),
    };
    let (export, running) = match traces.filter(|(config, _)| config.enabled()) {
        Some((config, metrics)) => {
            let (layer, running) = traces::Traces::start(config, metrics.span_counters())?;
            (Some(layer), Some(running))
        }
        None => (None, None),
    };
    // A subscriber may already be installed (tests); that one keeps working.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(export)
        .try_init();
    Ok(running)
}

pub mod events;
mod metrics;
pub mod traces;

pub use metrics::Metrics;
