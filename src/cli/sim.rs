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
    /// Share of authorizations ingested (`created`) long after their transaction time (0 to
    /// 1); the others within 2 s of it.
    #[arg(long, default_value_t = 0.03)]
    late_fraction: f64,
    /// Longest lateness of those: log-uniform between 1m (a tenth of this if shorter) and this.
    #[arg(long, default_value = "3h", value_parser = duration)]
    max_lateness: Duration,
    /// A record created at T is searchable from T + this; 5 % of records up to 5 times this.
    #[arg(long, default_value = "1s", value_parser = duration)]
    index_delay: Duration,
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
    /// The faults to inject from the start (boxed: the other commands' arguments are small).
    #[command(flatten)]
    faults: Box<FaultArgs>,
}

/// Faults at start; `POST /_sim/faults` changes them at run time.
#[derive(Args)]
struct FaultArgs {
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
    /// Fault: report queries filtering or sorting on `created` get 400.
    #[arg(long)]
    refuse_created: bool,
    /// Fault: share of authorizations that queries on `created` never return (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    hide_from_created_rate: f64,
    /// Fault: the simulator's clock runs this far ahead of the machine's, e.g. 90s, or behind
    /// with a leading minus, e.g. -5m (`Date` header, `created`, arrivals, `dr_quick`).
    #[arg(long, default_value = "0s", value_parser = signed_duration, allow_hyphen_values = true)]
    clock_offset: i64,
}

pub fn duration(text: &str) -> Result<Duration, super::ArgError> {
    Ok(mxc_relay::config::parse_duration(text)?)
}

/// A duration with an optional sign, in milliseconds: `90s`, `-5m`, `+1h`.
fn signed_duration(text: &str) -> Result<i64, super::ArgError> {
    let text = text.trim();
    let (sign, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let ms = i64::try_from(duration(magnitude)?.as_millis())
        .map_err(|_| super::ArgError::TooLong(text.to_string()))?;
    Ok(sign * ms)
}

pub async fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    mxc_relay::telemetry::init_logging("info", LogFormat::Pretty);
    let f = &args.faults;
    let faults = Faults {
        throttle_rate: f.throttle_rate,
        retry_after_secs: f.retry_after,
        error_rate: f.error_rate,
        error_status: Some(f.error_status),
        latency_ms: f.latency.as_millis() as u64,
        truncate_rate: f.truncate_rate,
        malformed_rate: f.malformed_rate,
        jwt_max_age_secs: f.jwt_max_age.map(|d| d.as_secs()),
        fail_xmids: Vec::new(),
        refuse_created: f.refuse_created,
        hide_from_created_rate: f.hide_from_created_rate,
        clock_offset_ms: f.clock_offset,
        // Settable at run time through POST /_sim/faults.
        expire_scroll_every: 0,
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
        args.max_lateness >= Duration::from_secs(1),
        "--max-lateness must be at least 1s, got {}",
        humantime::format_duration(args.max_lateness)
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
        max_lateness: args.max_lateness,
        index_delay: args.index_delay,
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
