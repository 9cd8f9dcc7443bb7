//! The configuration: typed sections whose doc comments are the reference, loaded from TOML
//! with secrets from the environment, and validated up front with every error reported at once.
//!
//! Each key's doc comment ends with its default: a TOML value (``Default: `"30s"`.``, which
//! the tests check against the code) or words (`Default: none.`). The reference,
//! `docs/configuration-reference.md`, is generated from these doc comments, and
//! `config/mxc-relay.toml` is the annotated example: the `config_reference` tests (in
//! `tests/it`) fail when either disagrees with the code. After changing a doc comment,
//! regenerate the reference with
//! `MXC_RELAY_BLESS=1 cargo nextest run --test it -E 'test(/^config_reference::/)'`.

mod admin;
mod cluster;
mod delivery;
mod error;
pub(crate) mod kafka;
mod load;
mod log;
mod mxc;
mod pollers;
mod preflight;
mod routes;
mod section;
mod sinks;
mod store;
mod telemetry;
mod validate;
mod webhook;

use std::collections::BTreeMap;
use std::time::Duration;

use ::mxc::Secret;

pub use admin::{AdminConfig, ADMIN_TOKEN_ENV, MIN_TOKEN_LEN};
pub use cluster::ClusterConfig;
pub use delivery::DeliveryConfig;
pub use error::ValueError;
pub use load::{ConfigError, ConfigErrors, ENV_OVERRIDES};
pub use log::{LogConfig, LogFormat};
pub use mxc::MxcConfig;
pub use pollers::{CursorMode, GroupSize, PollersConfig, RosterConfig, ROSTER};
pub use routes::{RedactConfig, RouteConfig};
pub use sinks::{KafkaKey, SinkConfig, StdoutFormat};
pub use store::{Durability, StoreConfig};
pub use telemetry::{TelemetryConfig, TracesConfig};
pub use webhook::{default_schedule, WebhookConfig, WebhookUrl};

/// The whole configuration, a TOML file of the sections below. Durations are written like
/// `30s`, `10m`, `1h30m` or `250ms`. Secrets are best given in the environment: `MXC_API_KEY`,
/// `MXC_USERNAME` and `MXC_PASSWORD` (and `MXC_BASE_URL`) set the `[mxc]` keys,
/// `MXC_ADMIN_TOKEN` the admin API's token. `mxc-relay check-config FILE` checks a file and
/// lists every error at once; `config/mxc-relay.toml` is an annotated example.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub mxc: MxcConfig,
    pub pollers: PollersConfig,
    pub store: StoreConfig,
    pub delivery: DeliveryConfig,
    /// `[sinks.NAME]`: where events go, by name.
    pub sinks: BTreeMap<String, SinkConfig>,
    /// `[[routes]]`: which records go to which sink.
    pub routes: Vec<RouteConfig>,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    /// `[cluster]`: several instances sharing the merchants.
    pub cluster: ClusterConfig,
    /// `[admin]`: the API that operates the running service.
    pub admin: AdminConfig,
}

impl Config {
    /// Defaults, pointed at a simulator at `base_url` with its default credentials, polling
    /// `xmids`; no sinks or routes yet. For the demo, tests and benchmarks.
    pub fn for_simulator(base_url: String, xmids: Vec<String>) -> Config {
        let mut config = Config::default();
        config.mxc.base_url = base_url;
        config.mxc.api_key = Secret::new(mxc_sim::DEFAULT_API_KEY);
        config.mxc.username = mxc_sim::DEFAULT_USERNAME.to_string();
        config.mxc.password = Secret::new(mxc_sim::DEFAULT_PASSWORD);
        config.pollers.xmids = xmids;
        // Any free port: several of these may run side by side.
        config.telemetry.listen = "127.0.0.1:0".into();
        config.admin.listen = "127.0.0.1:0".into();
        config
    }
}

/// Durations written as text: `30s`, `10m`, `1h30m`, `250ms`.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub fn parse(text: &str) -> Result<Duration, super::ValueError> {
        humantime::parse_duration(text.trim()).map_err(|error| super::ValueError::Duration {
            text: text.to_string(),
            error,
        })
    }
}

/// Parses a duration the way the configuration does (`30s`, `10m`, `1h30m`, `250ms`).
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    duration::parse(text)
}
