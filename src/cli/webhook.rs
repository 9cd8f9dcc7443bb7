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
}

#[derive(Args)]
struct VerifyArgs {
    /// A `whsec_…` secret; repeat it (or separate with spaces in the variable) for rotation.
    #[arg(
        long = "secret",
        env = "MXC_WEBHOOK_SECRET",
        value_delimiter = ' ',
        required = true,
        hide_env_values = true
    )]
    secrets: Vec<String>,
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
    /// Refuse timestamps further than this from now.
    #[arg(long, default_value = "5m", value_parser = super::sim::duration)]
    tolerance: Duration,
    /// Skip the timestamp check (to verify an old delivery).
    #[arg(long)]
    no_timestamp_check: bool,
}

pub fn run(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        WebhookCommand::Secret => {
            println!("{}", WebhookSecret::generate().expose());
            Ok(ExitCode::SUCCESS)
        }
        WebhookCommand::Verify(v) => {
            let secrets = v
                .secrets
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    WebhookSecret::parse(s).map_err(|e| anyhow::anyhow!("secret #{}: {e}", i + 1))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let body = std::fs::read(&v.body)
                .with_context(|| format!("cannot read the body from {}", v.body.display()))?;
            let check = (!v.no_timestamp_check)
                .then(|| (chrono::Utc::now().timestamp(), v.tolerance.as_secs() as i64));
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
