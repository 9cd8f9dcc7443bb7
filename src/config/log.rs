//! `[log]`: what the process logs, with defaults and validation.

use serde::Deserialize;

use super::validate;
use super::ConfigError;

/// `[log]`: what the process logs, on stderr.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `mxc_relay=debug,info` … `RUST_LOG` overrides it.
    /// Default: `"info"`.
    pub level: String,
    /// `pretty` (human-readable) or `json` (one object per line).
    /// Default: `"pretty"`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Pretty,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl LogConfig {
    /// `[log]`'s errors.
    pub(super) fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            error(
                "log.level",
                format!("not a tracing filter ({e}): {:?}", self.level),
            );
        }
    }
}
