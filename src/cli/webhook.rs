//! `mxc-relay webhook …`: tools for the people who receive mxc-relay's webhooks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use mxc::Clock;

use http_kit::Limits;
use mxc_relay::admin::api::EndpointOutcome;
use mxc_relay::admin::ops;
use mxc_relay::config::Config;
use mxc_relay::receiver::{Delivery, Outcome, Receiver, ReceiverConfig};
use mxc_relay::signature::{self, WebhookSecret};
use mxc_relay::store::Store;

use super::service::Service;

#[derive(Args)]
pub struct WebhookArgs {
    #[command(subcommand)]
    command: WebhookCommand,
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Print a new signing secret (`whsec_` and base64 of 32 random bytes).
    Secret,
    /// Check one delivery's Standard Webhooks signature, as a receiver does.
    Verify(VerifyArgs),
    /// A small verifying receiver: prints each delivery, answers 204 when its signature holds
    /// and its body is a JSON object, 401 when the signature does not hold, 400 when the body
    /// is not a JSON object. `GET /metrics` counts them.
    Listen(ListenArgs),
    /// Enable a disabled webhook endpoint again (after a 410 Gone, or failing too long); its
    /// waiting events then go out (at once when the service runs).
    Enable(EnableArgs),
    /// Pause deliveries to an endpoint by hand (kept across restarts); events wait in its outbox.
    Pause(EnableArgs),
    /// Resume an endpoint paused by hand.
    Resume(EnableArgs),
}

#[derive(Args)]
struct EnableArgs {
    /// The webhook sink, by its name in [sinks].
    #[arg(long)]
    sink: String,
    /// The TOML configuration file (for the store path and the sinks).
    #[arg(long, short, default_value = "config/mxc-relay.toml")]
    config: PathBuf,
}

/// What a receiver checks a delivery with.
#[derive(Args)]
struct Checks {
    /// A `whsec_…` secret; repeat it (or separate with spaces in the variable) for rotation.
    #[arg(
        long = "secret",
        env = "MXC_WEBHOOK_SECRET",
        value_delimiter = ' ',
        required = true,
        hide_env_values = true
    )]
    secrets: Vec<String>,
    /// Refuse timestamps further than this from now.
    #[arg(long, default_value = "5m", value_parser = mxc_relay::config::parse_duration)]
    tolerance: Duration,
}

#[derive(Args)]
struct ListenArgs {
    #[command(flatten)]
    checks: Checks,
    /// Address to listen on; port 0 picks a free one. The first line on stdout is
    /// `listening on http://IP:PORT`.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    /// Close a connection whose request headers are not in this long after its first byte
    /// (or whose body is not in this long after it began to be read).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    header_read_timeout: Duration,
    /// Close a keep-alive connection idle this long (also one that never sends a byte).
    #[arg(long, default_value = "75s", value_parser = positive_duration)]
    idle_timeout: Duration,
    /// Connections at once; past it, each new one closes one that waits on its client: a
    /// request begun and unfinished first, then an idle connection (never one being answered).
    #[arg(long, default_value_t = http_kit::Limits::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    max_connections: usize,
}

fn positive_duration(text: &str) -> Result<Duration, super::ArgError> {
    match mxc_relay::config::parse_duration(text)? {
        Duration::ZERO => Err(super::ArgError::Zero),
        d => Ok(d),
    }
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    checks: Checks,
    /// The `webhook-id` header.
    #[arg(long)]
    id: String,
    /// The `webhook-timestamp` header (unix seconds).
    #[arg(long)]
    timestamp: String,
    /// The `webhook-signature` header (one or more `v1,…`, space-separated).
    #[arg(long)]
    signature: String,
    /// File holding the exact request body.
    #[arg(long)]
    body: PathBuf,
    /// Skip the timestamp check (to verify an old delivery).
    #[arg(long)]
    no_timestamp_check: bool,
}

/// Enables, pauses or resumes an endpoint: through the running service, or in its store.
async fn endpoint(args: EnableArgs, action: &str) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let webhooks = super::state::webhook_names(&config);
    if !webhooks.contains(&args.sink) {
        anyhow::bail!(
            "{}: no webhook sink named {:?} (webhook sinks: {})",
            args.config.display(),
            args.sink,
            if webhooks.is_empty() {
                "none".to_string()
            } else {
                webhooks.join(", ")
            }
        );
    }
    let outcome: EndpointOutcome = match Service::find(&config)? {
        Service::Running(api) => {
            api.post(&format!("/v1/endpoints/{}/{action}", args.sink), &())
                .await?
        }
        Service::Stopped => ops::endpoint_action(&Store::open_for(&config)?, &args.sink, action)?,
    };
    println!(
        "{}: {}; {} events wait in its outbox",
        outcome.sink, outcome.message, outcome.outbox
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_secrets(texts: &[String]) -> anyhow::Result<Vec<WebhookSecret>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, s)| {
            WebhookSecret::parse(s).map_err(|e| anyhow::anyhow!("secret #{}: {e}", i + 1))
        })
        .collect()
}

pub async fn run(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        WebhookCommand::Listen(l) => listen(l).await,
        WebhookCommand::Enable(e) => endpoint(e, "enable").await,
        WebhookCommand::Pause(e) => endpoint(e, "pause").await,
        WebhookCommand::Resume(e) => endpoint(e, "resume").await,
        WebhookCommand::Secret => {
            println!("{}", WebhookSecret::generate().expose());
            Ok(ExitCode::SUCCESS)
        }
        WebhookCommand::Verify(v) => {
            let secrets = parse_secrets(&v.checks.secrets)?;
            let body = std::fs::read(&v.body)
                .with_context(|| format!("cannot read the body from {}", v.body.display()))?;
            let check = (!v.no_timestamp_check).then(|| {
                (
                    mxc::SystemClock.now().timestamp(),
                    v.checks.tolerance.as_secs() as i64,
                )
            });
            match signature::verify(&secrets, &v.id, &v.timestamp, &v.signature, &body, check) {
                Ok(index) => {
                    println!("valid: signed with secret #{}", index + 1);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("invalid: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// Serves until Ctrl-C / SIGTERM.
async fn listen(args: ListenArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;

    // Warnings (a full descriptor table, say) go to stderr beside the refusals.
    mxc_relay::telemetry::init_logging("warn", mxc_relay::config::LogFormat::Pretty);

    let config = ReceiverConfig {
        secrets: parse_secrets(&args.checks.secrets)?,
        tolerance: args.checks.tolerance,
        keep: false,
        // Refusals go to stderr, so stdout holds only verified deliveries.
        on_delivery: Some(Box::new(|d: &Delivery| match d.outcome() {
            Outcome::Verified => println!("{}", describe(d)),
            Outcome::BadSignature | Outcome::BadBody => eprintln!("{}", describe(d)),
        })),
    };
    let limits = Limits {
        header_read_timeout: args.header_read_timeout,
        idle_timeout: Some(args.idle_timeout),
        max_connections: args.max_connections,
    };
    let receiver = Receiver::start_with_limits(args.listen, config, limits)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("listening on http://{}", receiver.addr());
    let _ = std::io::stdout().flush();
    super::shutdown_signal().await;
    Ok(ExitCode::SUCCESS)
}

/// One line per delivery: verified or not, its id, and what the alert says.
pub fn describe(d: &Delivery) -> String {
    match (&d.verified, &d.body_error) {
        (Err(e), _) => format!("refused {}: {e}", d.id),
        (Ok(_), Some(e)) => format!("refused {}: {e}", d.id),
        (Ok(index), None) => {
            let event: serde_json::Value = serde_json::from_slice(&d.body).unwrap_or_default();
            let data = &event["data"];
            let field = |v: &serde_json::Value, k: &str| match v.get(k) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "-".into(),
            };
            // The amount and the reason, whichever resource the event is about.
            let first = |keys: &[&str]| {
                keys.iter()
                    .find(|k| data.get(**k).is_some_and(|v| !v.is_null()))
                    .map_or("-".to_string(), |k| field(data, k))
            };
            format!(
                "verified (secret #{})  {}  {}  xmid={}  {} {}  {}",
                index + 1,
                d.id,
                field(&event, "type"),
                field(data, "accountNumber"),
                first(&["authorizedAmount", "disputeAmount", "netAmount", "amount"]),
                first(&["authorizationResponseStatus", "disputeType", "status"]),
                first(&[
                    "authorizationResponseDescription",
                    "reasonDescription",
                    "rejectReason",
                    "returnReason",
                ]),
            )
        }
    }
}
