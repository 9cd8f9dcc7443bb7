//! `mxc-relay webhook …`: tools for the people who receive mxc-relay's webhooks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use mxc_relay::signature::{self, WebhookSecret};

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
    /// and 401 when it does not.
    Listen(ListenArgs),
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
    #[arg(long, default_value = "5m", value_parser = super::sim::duration)]
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
                    chrono::Utc::now().timestamp(),
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
    use std::sync::Arc;

    use axum::http::{HeaderMap, StatusCode};

    let secrets = Arc::new(parse_secrets(&args.checks.secrets)?);
    let tolerance = args.checks.tolerance.as_secs() as i64;
    let receive = move |headers: HeaderMap, body: axum::body::Bytes| {
        let secrets = secrets.clone();
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let id = header("webhook-id");
            let check = Some((chrono::Utc::now().timestamp(), tolerance));
            match signature::verify(
                &secrets,
                &id,
                &header("webhook-timestamp"),
                &header("webhook-signature"),
                &body,
                check,
            ) {
                Ok(index) => {
                    let event: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    let data = &event["data"];
                    let field = |v: &serde_json::Value, k: &str| {
                        v.get(k)
                            .map(|x| x.to_string().trim_matches('"').to_string())
                            .unwrap_or_default()
                    };
                    println!(
                        "verified (secret #{})  {id}  {}  xmid={}  {} {}  {}",
                        index + 1,
                        field(&event, "type"),
                        field(data, "accountNumber"),
                        field(data, "authorizedAmount"),
                        field(data, "authorizationResponseStatus"),
                        field(data, "authorizationResponseDescription"),
                    );
                    let _ = std::io::stdout().flush();
                    (StatusCode::NO_CONTENT, String::new())
                }
                Err(e) => {
                    eprintln!("refused {id}: {e}");
                    (StatusCode::UNAUTHORIZED, e.to_string())
                }
            }
        }
    };
    let app = axum::Router::new().fallback(axum::routing::post(receive));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("listening on http://{}", listener.local_addr()?);
    let _ = std::io::stdout().flush();
    axum::serve(listener, app)
        .with_graceful_shutdown(super::shutdown_signal())
        .await?;
    Ok(ExitCode::SUCCESS)
}
