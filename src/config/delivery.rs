//! `[delivery]`: how outbox entries are handed to sinks, with defaults and validation.

use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::validate::{self, fmt};
use super::ConfigError;

/// `[delivery]`: how outbox entries are handed to sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DeliveryConfig {
    /// Most events handed to a sink at once.
    /// Default: `100`.
    pub batch_size: usize,
    /// First retry delay after a failed delivery; doubles up to `retry_max`, with jitter.
    /// Default: `"1s"`.
    #[serde(with = "duration")]
    pub retry_min: Duration,
    /// Longest retry delay.
    /// Default: `"5m"`.
    #[serde(with = "duration")]
    pub retry_max: Duration,
    /// On SIGTERM/SIGINT, how long in-flight deliveries may take to finish.
    /// Default: `"10s"`.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            batch_size: 100,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl DeliveryConfig {
    /// `[delivery]`'s errors.
    pub(super) fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut error = validate::reporter(errors);
        if !(1..=10_000).contains(&self.batch_size) {
            error(
                "delivery.batch_size",
                format!("must be 1 to 10000, got {}", self.batch_size),
            );
        }
        if self.retry_min < Duration::from_millis(10) {
            error(
                "delivery.retry_min",
                format!("must be at least 10ms, got {}", fmt(self.retry_min)),
            );
        }
        if self.retry_max < self.retry_min {
            error(
                "delivery.retry_max",
                format!(
                    "must be at least delivery.retry_min ({}), got {}",
                    fmt(self.retry_min),
                    fmt(self.retry_max)
                ),
            );
        }
    }
}
