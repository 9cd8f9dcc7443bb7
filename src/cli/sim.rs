//! `mxc-relay sim`: the MX Connect simulator as a server.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use mxc_relay::config::LogFormat;
use mxc_relay::sim::{self, Faults, SettlementConfig, SimConfig};

#[derive(Args)]
pub struct SimArgs {
    /// Address to listen on; port 0 picks a free one. The first line on stdout is
    /// `listening on http://IP:PORT`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Active merchants (XMIDs) receiving authorizations.
    #[arg(long, default_value_t = 20)]
    merchants: usize,
    /// Closed merchants listed in the roster besides them [default: one per ten active].
    #[arg(long)]
    closed_merchants: Option<usize>,
    /// Authorizations per second over all merchants, in real time.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// History already there at start (generated at --rate), e.g. 1h.
    #[arg(long, default_value = "0s", value_parser = duration)]
    backlog: Duration,
    /// Seed of the generated data: same seed, same merchants, ids and amounts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// API key the Security API accepts.
    #[arg(long, default_value = sim::DEFAULT_API_KEY)]
    api_key: String,
    /// Username the Basic header must carry when present.
    #[arg(long, default_value = sim::DEFAULT_USERNAME)]
    username: String,
    /// Password the Basic header must carry when present.
    #[arg(long, default_value = sim::DEFAULT_PASSWORD)]
    password: String,
    /// Lifetime of issued JWTs.
    #[arg(long, default_value = "10m", value_parser = duration)]
    jwt_ttl: Duration,
    /// Share of declined authorizations (0 to 1).
    #[arg(long, default_value_t = 0.07)]
    decline_rate: f64,
    /// Share of authorizations that appear minutes after their transaction time (0 to 1).
    #[arg(long, default_value_t = 0.03)]
    late_fraction: f64,
    /// Share of approved authorizations disputed later (0 to 1).
    #[arg(long, default_value_t = 0.005)]
    dispute_rate: f64,
    /// A dispute arrives between a tenth of this and this long after its authorization.
    #[arg(long, default_value = "5m", value_parser = duration)]
    dispute_delay: Duration,
    /// A terminal's business day (compressed): every merchant closes one settlement batch
    /// per period, summing its approved authorizations.
    #[arg(long, default_value = "10m", value_parser = duration)]
    batch_every: Duration,
    /// A settled batch is deposited (ACH) this long after it closes.
    #[arg(long, default_value = "2m", value_parser = duration)]
    deposit_delay: Duration,
    /// Largest `from + size` the report endpoints accept.
    #[arg(long, default_value_t = 10_000)]
    max_result_window: usize,
    /// Fault: share of API requests answered 429 (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    /// Fault: the Retry-After of those 429s, in seconds.
    #[arg(long, default_value_t = 1)]
    retry_after: u64,
    /// Fault: share of API requests answered with --error-status (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Fault: status of simulated server errors.
    #[arg(long, default_value_t = 503)]
    error_status: u16,
    /// Fault: delay before each API answer, e.g. 200ms.
    #[arg(long, default_value = "0s", value_parser = duration)]
    latency: Duration,
    /// Fault: share of answers whose body is cut in half (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    truncate_rate: f64,
    /// Fault: share of answers replaced by an HTML error page (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
    /// Fault: refuse JWTs older than this, before their exp (a JWT that expires early).
    #[arg(long, value_parser = duration)]
    jwt_max_age: Option<Duration>,
}

pub fn duration(text: &str) -> Result<Duration, String> {
    mxc_relay::config::parse_duration(text)
}

pub async fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    mxc_relay::telemetry::init_logging("info", LogFormat::Pretty);
    let faults = Faults {
        throttle_rate: args.throttle_rate,
        retry_after_secs: args.retry_after,
        error_rate: args.error_rate,
        error_status: Some(args.error_status),
        latency_ms: args.latency.as_millis() as u64,
        truncate_rate: args.truncate_rate,
        malformed_rate: args.malformed_rate,
        jwt_max_age_secs: args.jwt_max_age.map(|d| d.as_secs()),
        fail_xmids: Vec::new(),
    };
    faults
        .validate()
        .map_err(|m| anyhow::anyhow!("fault options: {m}"))?;
    for (name, value) in [
        ("--decline-rate", args.decline_rate),
        ("--late-fraction", args.late_fraction),
        ("--dispute-rate", args.dispute_rate),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&value),
            "{name} must be between 0 and 1, got {value}"
        );
    }
    anyhow::ensure!(
        args.rate >= 0.0 && args.rate.is_finite(),
        "--rate must be 0 or more, got {}",
        args.rate
    );
    anyhow::ensure!(
        args.batch_every >= Duration::from_secs(1),
        "--batch-every must be at least 1s, got {}",
        humantime::format_duration(args.batch_every)
    );
    let config = SimConfig {
        listen: args.listen,
        merchants: args.merchants,
        closed_merchants: args.closed_merchants,
        rate: args.rate,
        backlog: args.backlog,
        seed: args.seed,
        api_key: args.api_key,
        username: args.username,
        password: args.password,
        jwt_ttl: args.jwt_ttl,
        decline_rate: args.decline_rate,
        late_fraction: args.late_fraction,
        max_lateness: Duration::from_secs(600),
        max_result_window: args.max_result_window,
        settlement: SettlementConfig {
            dispute_rate: args.dispute_rate,
            dispute_delay_ms: args.dispute_delay.as_millis() as i64,
            batch_every_ms: args.batch_every.as_millis() as i64,
            deposit_delay_ms: args.deposit_delay.as_millis() as i64,
            ..SettlementConfig::default()
        },
        faults,
    };
    let merchants = config.merchants;
    let running = sim::start(config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", running.base_url())?;
        stdout.flush()?;
    }
    let stats = running.stats();
    tracing::info!(
        merchants,
        records = stats.records_generated,
        "MXC simulator ready; control at {}/_sim/stats and {}/_sim/faults",
        running.base_url(),
        running.base_url()
    );
    tokio::select! {
        result = running.wait() => result.context("the simulator stopped")?,
        _ = super::shutdown_signal() => tracing::info!("stopping"),
    }
    Ok(ExitCode::SUCCESS)
}
