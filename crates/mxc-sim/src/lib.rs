//! The MX Connect simulator: the same paths, parameters, envelope and field set as the real
//! API, with real JWTs, realistic generated records, fault injection and a control surface.
//! Used by the demo, the tests and the benchmarks, and by users for their own integration tests.

pub mod cli;
mod data;
mod faults;
mod jwt;
mod query;
mod server;
mod stats;

use std::net::SocketAddr;
use std::time::Duration;

use mxc::{SharedClock, SystemClock};

pub use data::SettlementConfig;
pub use data::{Created, Shape};
pub use faults::{FaultError, Faults};
pub use server::{GenerateError, RunningSim};
pub use stats::{GapsSnapshot, StatsSnapshot};

/// Default credentials of the simulator (documented in docs/simulator.md).
pub const DEFAULT_API_KEY: &str = "API_sim_key";
pub const DEFAULT_USERNAME: &str = "sim";
pub const DEFAULT_PASSWORD: &str = "sim-password";

/// How a simulator is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Active merchants (XMIDs) that receive new authorizations.
    pub merchants: usize,
    /// Closed merchants listed in the roster besides them (default: one per ten active).
    pub closed_merchants: Option<usize>,
    /// Authorizations per second over all merchants, in real time.
    pub rate: f64,
    /// History present at start, generated at `rate`.
    pub backlog: Duration,
    /// Same seed, same merchants, ids and amounts.
    pub seed: u64,
    pub api_key: String,
    pub username: String,
    pub password: String,
    /// Lifetime of issued JWTs (MXC: ten minutes).
    pub jwt_ttl: Duration,
    /// Share of declined authorizations.
    pub decline_rate: f64,
    /// Share of authorizations ingested (`created`) long after their transaction time; the
    /// others arrive within 2 s of it.
    pub late_fraction: f64,
    /// The longest such lateness: a late record's lateness is log-uniform between a minute
    /// (a tenth of this if shorter) and this (default 3 h).
    pub max_lateness: Duration,
    /// A record with `created` T is searchable from T + this; 5 % of records (always the
    /// same ones) are indexed later, uniformly up to 5 times this. Zero by default here
    /// (in-process tests see what they generate at once); `mxc-relay sim` defaults to 1 s.
    pub index_delay: Duration,
    /// Largest `from + size` the report endpoints accept (Elasticsearch's default: 10,000).
    pub max_result_window: usize,
    /// Disputes, settlement batches and ACH deposits that follow the authorizations.
    pub settlement: SettlementConfig,
    /// MXC's rate limit on the API key, in requests per second: API requests beyond it (a
    /// second's worth may come at once) get 429 with `Retry-After`. `None`: no limit.
    pub key_requests_per_second: Option<f64>,
    pub faults: Faults,
    /// The machine's clock, which the simulator's is reckoned from (a test may pause it).
    pub clock: SharedClock,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            merchants: 20,
            closed_merchants: None,
            rate: 5.0,
            backlog: Duration::ZERO,
            seed: 1,
            api_key: DEFAULT_API_KEY.to_string(),
            username: DEFAULT_USERNAME.to_string(),
            password: DEFAULT_PASSWORD.to_string(),
            jwt_ttl: Duration::from_secs(600),
            decline_rate: 0.07,
            late_fraction: 0.03,
            max_lateness: Duration::from_secs(3 * 3600),
            index_delay: Duration::ZERO,
            max_result_window: 10_000,
            settlement: SettlementConfig::default(),
            key_requests_per_second: None,
            faults: Faults::default(),
            clock: SystemClock::shared(),
        }
    }
}

/// Starts a simulator on `config.listen` and returns once it accepts connections.
pub async fn start(config: SimConfig) -> std::io::Result<RunningSim> {
    server::start(config).await
}
