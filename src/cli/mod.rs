//! Subcommands. Each file is one command; a fatal error returns here and is printed once.

mod check_config;
mod fetch;
mod sim;

use std::process::ExitCode;

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
    /// Run the MX Connect simulator (for the demo, tests, benchmarks and your own tests).
    Sim(sim::SimArgs),
    /// Validate a configuration file and report every error at once.
    CheckConfig(check_config::CheckConfigArgs),
    /// One-shot query: print the authorizations of some XMIDs in a time window as JSON lines.
    Fetch(fetch::FetchArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Sim(args) => sim::run(args).await,
        Command::CheckConfig(args) => check_config::run(args),
        Command::Fetch(args) => fetch::run(args).await,
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
