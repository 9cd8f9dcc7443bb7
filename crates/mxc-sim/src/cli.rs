//! The simulator's command line, shared by its own binary (`mxc-sim`) and `mxc-relay sim`.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::{Faults, SettlementConfig, SimConfig};

/// The simulator's command-line options (`mxc-sim`, and `mxc-relay sim`).
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
    #[arg(long, default_value = crate::DEFAULT_API_KEY)]
    api_key: String,
    /// Username the Basic header must carry when present.
    #[arg(long, default_value = crate::DEFAULT_USERNAME)]
    username: String,
    /// Password the Basic header must carry when present.
    #[arg(long, default_value = crate::DEFAULT_PASSWORD)]
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
    /// MXC's rate limit on the API key (requests/s): API requests beyond it get 429 with
    /// Retry-After. None by default.
    #[arg(long)]
    key_requests_per_second: Option<f64>,
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
    /// Fault: report queries filtering on `created` are answered as if unfiltered.
    #[arg(long)]
    ignore_created_filter: bool,
    /// Fault: share of authorizations that queries on `created` never return (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    hide_from_created_rate: f64,
    /// Fault: the simulator's clock runs this far ahead of the machine's, e.g. 90s, or behind
    /// with a leading minus, e.g. -5m (`Date` header, `created`, arrivals, `dr_quick`).
    #[arg(long, default_value = "0s", value_parser = signed_duration, allow_hyphen_values = true)]
    clock_offset: i64,
}

/// Why a duration option is refused; clap prints the text after the option's name.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {text:?} ({source}); write it like 30s, 10m, 1h30m or 250ms")]
    Invalid {
        text: String,
        source: humantime::DurationError,
    },
    /// A signed duration beyond what milliseconds in an `i64` hold.
    #[error("{0:?} is too long")]
    TooLong(String),
}

/// A duration such as `30s`, `10m`, `1h30m` or `250ms`.
pub fn duration(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text.trim()).map_err(|source| DurationError::Invalid {
        text: text.to_string(),
        source,
    })
}

/// A duration with an optional sign, in milliseconds: `90s`, `-5m`, `+1h`.
fn signed_duration(text: &str) -> Result<i64, DurationError> {
    let text = text.trim();
    let (sign, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let ms = i64::try_from(duration(magnitude)?.as_millis())
        .map_err(|_| DurationError::TooLong(text.to_string()))?;
    Ok(sign * ms)
}

/// What stops the simulator's command.
#[derive(Debug, thiserror::Error)]
pub enum SimCliError {
    /// An option out of its range.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the simulator stopped: {0}")]
    Stopped(std::io::Error),
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
}

impl SimArgs {
    /// The simulator these options describe, or which option is out of range.
    pub fn config(&self) -> Result<SimConfig, SimCliError> {
        let args = self;
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
            ignore_created_filter: f.ignore_created_filter,
            hide_from_created_rate: f.hide_from_created_rate,
            clock_offset_ms: f.clock_offset,
            // Settable at run time through POST /_sim/faults.
            expire_scroll_every: 0,
        };
        faults
            .validate()
            .map_err(|m| SimCliError::Invalid(format!("fault options: {m}")))?;
        for (name, value) in [
            ("--decline-rate", args.decline_rate),
            ("--late-fraction", args.late_fraction),
            ("--dispute-rate", args.dispute_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SimCliError::Invalid(format!(
                    "{name} must be between 0 and 1, got {value}"
                )));
            }
        }
        if !(args.rate >= 0.0 && args.rate.is_finite()) {
            return Err(SimCliError::Invalid(format!(
                "--rate must be 0 or more, got {}",
                args.rate
            )));
        }
        if args.max_lateness < Duration::from_secs(1) {
            return Err(SimCliError::Invalid(format!(
                "--max-lateness must be at least 1s, got {}",
                humantime::format_duration(args.max_lateness)
            )));
        }
        if args.batch_every < Duration::from_secs(1) {
            return Err(SimCliError::Invalid(format!(
                "--batch-every must be at least 1s, got {}",
                humantime::format_duration(args.batch_every)
            )));
        }
        if let Some(rate) = args.key_requests_per_second {
            if !(rate > 0.0 && rate.is_finite()) {
                return Err(SimCliError::Invalid(format!(
                    "--key-requests-per-second must be above 0, got {rate}"
                )));
            }
        }
        let config = SimConfig {
            listen: args.listen,
            merchants: args.merchants,
            closed_merchants: args.closed_merchants,
            rate: args.rate,
            backlog: args.backlog,
            seed: args.seed,
            api_key: args.api_key.clone(),
            username: args.username.clone(),
            password: args.password.clone(),
            jwt_ttl: args.jwt_ttl,
            decline_rate: args.decline_rate,
            late_fraction: args.late_fraction,
            max_lateness: args.max_lateness,
            index_delay: args.index_delay,
            max_result_window: args.max_result_window,
            key_requests_per_second: args.key_requests_per_second,
            settlement: SettlementConfig {
                dispute_rate: args.dispute_rate,
                dispute_delay_ms: args.dispute_delay.as_millis() as i64,
                batch_every_ms: args.batch_every.as_millis() as i64,
                deposit_delay_ms: args.deposit_delay.as_millis() as i64,
                ..SettlementConfig::default()
            },
            faults,
            clock: mxc::SystemClock::shared(),
        };
        Ok(config)
    }
}

/// Serves the simulator these options describe until `stop` completes. The first line on
/// stdout is `listening on http://IP:PORT`.
pub async fn serve(args: SimArgs, stop: impl Future<Output = ()>) -> Result<(), SimCliError> {
    let config = args.config()?;
    let merchants = config.merchants;
    let running = crate::start(config)
        .await
        .map_err(|source| SimCliError::Listen {
            addr: args.listen,
            source,
        })?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", running.base_url())
            .and_then(|()| stdout.flush())
            .map_err(SimCliError::Stdout)?;
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
        result = running.wait() => result.map_err(SimCliError::Stopped)?,
        _ = stop => tracing::info!("stopping"),
    }
    Ok(())
}
