//! Subcommands. Each file is one command; a fatal error returns here and is printed once.

mod backfill;
mod check_config;
mod cluster;
mod demo;
mod dlq;
mod fetch;
mod reload;
mod run;
mod schema;
mod service;
mod sim;
mod state;
mod top;
mod webhook;

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

/// Watches MX Connect for new card authorizations per merchant (XMID) and publishes each one
/// to Kafka and to signed webhooks.
#[derive(Parser)]
#[command(name = "mxc-relay", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The one-command demo: a simulator, 20 merchants, and each new authorization as it comes.
    Demo(demo::DemoArgs),
    /// Run the service: poll, deduplicate, deliver.
    Run(run::RunArgs),
    /// Several instances sharing the merchants: `cluster status`.
    Cluster(cluster::ClusterArgs),
    /// Apply the configuration file to the running service (checked first; a file with errors
    /// changes nothing) and say what changed.
    Reload(reload::ReloadArgs),
    /// Show the state: cursors and lag per XMID, seen ids, outboxes, dead letters, endpoints
    /// (from the running service's admin API, or from its store when it is stopped).
    State(state::StateArgs),
    /// The live picture of the running service in the terminal: records/s, lag, merchants,
    /// sinks, endpoints; keys to pause, resume, enable and replay (`--once`: one snapshot).
    Top(top::TopArgs),
    /// Run the MX Connect simulator (for the demo, tests, benchmarks and your own tests).
    Sim(sim::SimArgs),
    /// Validate a configuration file and report every error at once, with what `run` needs
    /// of this machine (the store's directory, librdkafka's acceptance of the properties);
    /// creates nothing.
    CheckConfig(check_config::CheckConfigArgs),
    /// Webhook tools: generate a signing secret, verify a delivery, run a verifying receiver,
    /// enable a disabled endpoint.
    Webhook(webhook::WebhookArgs),
    /// Dead letters: list them, or replay them into their sink's outbox.
    Dlq(dlq::DlqArgs),
    /// Replay history into the sinks, each record once (resumable; inside the running service
    /// through its admin API, or on its store when it is stopped).
    Backfill(backfill::BackfillArgs),
    /// The event contract: each event type's JSON Schema, or the AsyncAPI document of a
    /// configuration.
    Schema(schema::SchemaArgs),
    /// One-shot query: print the records (authorizations, disputes …) of some XMIDs in a time
    /// window as JSON lines.
    Fetch(fetch::FetchArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Reload(args) => reload::run(args).await,
        Command::Cluster(args) => cluster::run(args).await,
        Command::State(args) => state::run(args).await,
        Command::Top(args) => top::run(args).await,
        Command::Sim(args) => sim::run(args).await,
        Command::CheckConfig(args) => check_config::run(args),
        Command::Fetch(args) => fetch::run(args).await,
        Command::Schema(args) => schema::run(args),
        Command::Webhook(args) => webhook::run(args).await,
        Command::Dlq(args) => dlq::run(args).await,
        Command::Backfill(args) => backfill::run(args).await,
    }
}

pub use http_kit::shutdown_signal;

/// After the first signal: a second one exits at once. Safe: the outbox is durable, and
/// whatever was in flight is delivered again after a restart.
pub fn exit_on_second_signal() {
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}

/// Why a command-line value is refused; clap prints the text after the option's name.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    /// Not an instant, a date or a duration ago (the admin API's parser, shared with
    /// `backfill`, says why).
    #[error(transparent)]
    Instant(#[from] mxc_relay::admin::api::InstantError),
    /// `--resource` names no resource MXC serves; the text lists those it does.
    #[error("no resource named {0:?} (known: {known})", known = mxc::Resource::names())]
    UnknownResource(String),
    /// Not a duration as the configuration writes them (`30s`, `10m`, `1h30m`, `250ms`).
    #[error(transparent)]
    Duration(#[from] mxc_relay::config::ValueError),
    /// A duration that must be more than zero is zero.
    #[error("must be more than 0s")]
    Zero,
}

/// An ISO-8601 instant, a `YYYY-MM-DD` date (its start, UTC), or a duration before now.
pub fn instant(text: &str) -> Result<DateTime<Utc>, ArgError> {
    Ok(mxc_relay::admin::api::parse_instant(text)?)
}

/// A resource by name, for `--resource`.
pub fn resource(text: &str) -> Result<&'static mxc::Resource, ArgError> {
    mxc::Resource::named(text).ok_or_else(|| ArgError::UnknownResource(text.to_string()))
}
