//! A pipeline's configuration against the simulator, stated setting by setting: a test or bench
//! names only what it changes from `Config::for_simulator` (the simulator's credentials, the
//! XMIDs, any free port for the servers) and the rest stays the relay's defaults. The settings
//! several of them change have a method each; one that a single test changes is set through
//! [`with`](PipelineConfigBuilder::with).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mxc::Secret;
use mxc_relay::config::{Config, KafkaKey, RouteConfig, SinkConfig};

/// Builds a [`Config`] for a pipeline polling the simulator at a base URL.
#[must_use]
pub struct PipelineConfigBuilder {
    config: Config,
}

impl PipelineConfigBuilder {
    /// `xmids` polled at `sim_url` with the simulator's credentials; every other setting the
    /// relay's default, the servers on any free port.
    pub fn new(sim_url: impl Into<String>, xmids: &[String]) -> Self {
        Self {
            config: Config::for_simulator(sim_url.into(), xmids.to_vec()),
        }
    }

    /// `pollers.interval`.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.config.pollers.interval = interval;
        self
    }

    /// `pollers.look_back`.
    pub fn look_back(mut self, look_back: Duration) -> Self {
        self.config.pollers.look_back = look_back;
        self
    }

    /// `pollers.start`: where the cursors begin.
    pub fn start(mut self, start: DateTime<Utc>) -> Self {
        self.config.pollers.start = mxc::instant(start);
        self
    }

    /// The request budget: `pollers.requests_per_second` and `pollers.burst`.
    pub fn budget(mut self, requests_per_second: f64, burst: u32) -> Self {
        self.config.pollers.requests_per_second = requests_per_second;
        self.config.pollers.burst = burst;
        self
    }

    /// `store.path`.
    pub fn store(mut self, path: PathBuf) -> Self {
        self.config.store.path = path;
        self
    }

    /// `delivery.retry_min`.
    pub fn retry_min(mut self, retry_min: Duration) -> Self {
        self.config.delivery.retry_min = retry_min;
        self
    }

    /// `delivery.shutdown_timeout`.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.delivery.shutdown_timeout = timeout;
        self
    }

    /// A sink `name` (no route to it yet: see [`route`](Self::route)).
    pub fn sink(mut self, name: &str, sink: SinkConfig) -> Self {
        self.config.sinks.insert(name.into(), sink);
        self
    }

    /// A route, after those already there.
    pub fn route(mut self, route: RouteConfig) -> Self {
        self.config.routes.push(route);
        self
    }

    /// A file sink `archive` at `path`, and a route `all` sending it every record.
    pub fn archive(self, path: PathBuf) -> Self {
        self.sink("archive", SinkConfig::File { path })
            .route(RouteConfig::every_record("all", "archive"))
    }

    /// A Kafka sink `kafka` (keyed by XMID, lz4, no CloudEvents headers, `properties` applied
    /// last) on `brokers`' `topic`, and a route `all` sending it every record.
    pub fn kafka(self, brokers: &str, topic: &str, properties: BTreeMap<String, Secret>) -> Self {
        self.sink(
            "kafka",
            SinkConfig::Kafka {
                brokers: brokers.into(),
                topic: topic.into(),
                key: KafkaKey::Xmid,
                compression: "lz4".into(),
                properties,
                cloudevents: false,
            },
        )
        .route(RouteConfig::every_record("all", "kafka"))
    }

    /// Any other setting, set on the configuration as it stands.
    pub fn with(mut self, set: impl FnOnce(&mut Config)) -> Self {
        set(&mut self.config);
        self
    }

    /// The configuration, unchecked: some are completed after (their sinks added), and the
    /// benches poll faster than validation allows.
    pub fn build(self) -> Config {
        self.config
    }

    /// The configuration, which must pass the relay's validation.
    ///
    /// # Panics
    /// When it does not, with the errors.
    pub fn build_valid(self) -> Config {
        assert_eq!(self.config.validate(), vec![]);
        self.config
    }
}
